/* cpu/cpu_fence.c - "cpu-fenced": the CPU backend with backend memory the host cannot touch.
 *
 * A GPU backend's memory is not host memory, and a caller that reads or writes a backend
 * pointer directly (instead of through upload / download) works on the CPU backend and crashes
 * on CUDA. Without a GPU such a bug is invisible; this backend makes it visible on any machine.
 * Every pointer it hands out is the real host pointer plus 2^63, a non-canonical address on
 * x86-64 and AArch64: the host faults on any access, while pointer arithmetic by the caller
 * (offsets into a buffer) stays valid. Each op subtracts the fence and calls the CPU op. The
 * ops give the CPU backend's bits. Tests run whole pipelines with --device cpu-fenced. */
#include "cpu/cpu_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FENCE ((uintptr_t)1 << 63)

typedef struct fence_ctx {
    qs_backend *cpu;
} fence_ctx;

static qs_backend *inner(qs_backend *be) { return ((fence_ctx *)be->ctx)->cpu; }
/* the host address of a fenced pointer (NULL stays NULL: optional outputs, identity indices) */
#define H(p) ((p) ? (void *)((uintptr_t)(p) - FENCE) : NULL)
#define FH(p) ((float *)H(p))
#define CFH(p) ((const float *)H(p))
#define CIH(p) ((const int32_t *)H(p))
#define OPS (inner(be)->ops)

static void fence_destroy(qs_backend *be) {
    if (!be) return;
    if (be->ctx && inner(be)) inner(be)->ops->destroy(inner(be));
    free(be->ctx);
    free(be);
}

static void *fence_alloc(qs_backend *be, size_t bytes) {
    void *p = OPS->alloc(inner(be), bytes);
    return p ? (void *)((uintptr_t)p + FENCE) : NULL;
}
static void fence_free(qs_backend *be, void *p) { OPS->free(inner(be), H(p)); }
static int fence_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return OPS->upload(inner(be), H(dst), src, bytes, err);
}
static int fence_download(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return OPS->download(inner(be), dst, H(src), bytes, err);
}
static int fence_copy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return OPS->copy(inner(be), H(dst), H(src), bytes, err);
}
static int fence_sync(qs_backend *be, qs_error *err) { return OPS->synchronize(inner(be), err); }
static int fence_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc, qs_error *err) {
    return OPS->gemm(inner(be), ta, tb, m, n, k, alpha, CFH(a), lda, CFH(b), ldb, beta, FH(c), ldc, err);
}
static int fence_rmsnorm(qs_backend *be, float *y, const float *x, const float *g, int rows, int dim, float eps,
                         float *rstd, qs_error *err) {
    return OPS->rmsnorm(inner(be), FH(y), CFH(x), CFH(g), rows, dim, eps, FH(rstd), err);
}
static int fence_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int nh, int hd, int stride,
                      const float *inv_freq, int inverse, qs_error *err) {
    return OPS->rope(inner(be), FH(x), n_win, seqlen, pos0, nh, hd, stride, CFH(inv_freq), inverse, err);
}
static int fence_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                           int seqlen, int nh, int nkv, int hd, float scale, float *lse, qs_error *err) {
    return OPS->attention(inner(be), FH(out), CFH(q), CFH(k), CFH(v), n_win, seqlen, nh, nkv, hd, scale, FH(lse),
                          err);
}
static int fence_swiglu(qs_backend *be, float *y, const float *g, const float *u, size_t n, qs_error *err) {
    return OPS->swiglu(inner(be), FH(y), CFH(g), CFH(u), n, err);
}
static int fence_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err) {
    return OPS->add(inner(be), FH(y), CFH(a), CFH(b), n, err);
}
static int fence_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err) {
    return OPS->scale(inner(be), FH(y), CFH(x), alpha, n, err);
}
static int fence_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err) {
    return OPS->add_bias(inner(be), FH(y), CFH(bias), rows, cols, err);
}
static int fence_copy_rows(qs_backend *be, float *dst, const int32_t *dr, const float *src, const int32_t *sr, int n,
                           int cols, qs_error *err) {
    return OPS->copy_rows(inner(be), FH(dst), CIH(dr), CFH(src), CIH(sr), n, cols, err);
}
static int fence_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err) {
    return OPS->act_quant(inner(be), FH(x), rows, cols, seg, bits, err);
}
static int fence_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *g, int rows, int dim, float eps,
                                const int32_t *a, const int32_t *b, const float *coef, qs_error *err) {
    return OPS->rmsnorm_gather(inner(be), FH(y), CFH(x), CFH(g), rows, dim, eps, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_swiglu_gather(qs_backend *be, float *y, const float *g, const float *u, int rows, int dim,
                               const int32_t *a, const int32_t *b, const float *coef, qs_error *err) {
    return OPS->swiglu_gather(inner(be), FH(y), CFH(g), CFH(u), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                            float *run_max, float *run_sum, float *tgt, qs_error *err) {
    return OPS->lse_update(inner(be), CFH(logits), n, vc, v0, CIH(target), FH(run_max), FH(run_sum), FH(tgt), err);
}
static int fence_rmsnorm_backward(qs_backend *be, float *dx, float *dg, const float *dy, const float *x,
                                  const float *g, const float *rstd, int rows, int dim, qs_error *err) {
    return OPS->rmsnorm_backward(inner(be), FH(dx), FH(dg), CFH(dy), CFH(x), CFH(g), CFH(rstd), rows, dim, err);
}
static int fence_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                    const float *q, const float *k, const float *v, const float *out,
                                    const float *lse, int n_win, int seqlen, int nh, int nkv, int hd, float scale,
                                    qs_error *err) {
    return OPS->attention_backward(inner(be), FH(dq), FH(dk), FH(dv), CFH(dout), CFH(q), CFH(k), CFH(v), CFH(out),
                                   CFH(lse), n_win, seqlen, nh, nkv, hd, scale, err);
}
static int fence_swiglu_backward(qs_backend *be, float *dg, float *du, const float *dy, const float *g,
                                 const float *u, size_t n, qs_error *err) {
    return OPS->swiglu_backward(inner(be), FH(dg), FH(du), CFH(dy), CFH(g), CFH(u), n, err);
}
static int fence_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                                   int sym, qs_error *err) {
    return OPS->fake_quant_weight(inner(be), FH(y), CFH(w), rows, cols, group, bits, sym, err);
}
static int fence_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                          qs_error *err) {
    return OPS->mse_grad(inner(be), FH(grad), CFH(a), CFH(b), n, loss_host, err);
}
static int fence_adamw_step(qs_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                            float b2, float eps, float wd, int step, qs_error *err) {
    return OPS->adamw_step(inner(be), FH(p), CFH(g), FH(m), FH(v), n, lr, b1, b2, eps, wd, step, err);
}
static int fence_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *a,
                                 const int32_t *b, const float *coef, qs_error *err) {
    return OPS->gather_backward(inner(be), FH(dv), CFH(dy), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_set_window_rows(qs_backend *be, int rows, qs_error *err) {
    return OPS->set_window_rows(inner(be), rows, err);
}

static int fence_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u,
                            const int32_t *perm, int group, int bits, int sym, int static_groups, float *scales,
                            float *zeros, uint8_t *codes, float *err1, double *loss, qs_error *err) {
    return OPS->gptq_batch(inner(be), FH(w), rows, cols, i1, i2, CFH(u), CIH(perm), group, bits, sym, static_groups,
                           FH(scales), FH(zeros), (uint8_t *)H(codes), FH(err1), (double *)H(loss), err);
}

/* staging: the CPU has no copy stream, but the fenced device stages like a GPU so that the
 * pipeline's staged path runs (and faults where it touches backend memory) without one */
static void *fence_stage_alloc(qs_backend *be, size_t bytes) { return fence_alloc(be, bytes); }
static int fence_stage_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return fence_upload(be, dst, src, bytes, err);
}
static int fence_mark(qs_backend *be, int slot, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(slot < 0 || slot > 1, QS_EUSAGE, "mark: slot %d", slot);
    return 0; /* every CPU op has finished when it returns */
}
static int fence_stage_download(qs_backend *be, int slot, void *dst, const void *src, size_t bytes, qs_error *err) {
    (void)slot;
    return fence_download(be, dst, src, bytes, err);
}
static int fence_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err) {
    return OPS->to_f32(inner(be), FH(dst), H(src), n, dtype, err);
}

static int fence_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                              float *diag_host, int *nonfinite_host, qs_error *err) {
    return OPS->gptq_hessian(inner(be), FH(hp), CFH(h), n, CIH(perm), damp, diag_host, nonfinite_host, err);
}

static int fence_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *a, const int32_t *b,
                        const float *coef, qs_error *err) {
    return OPS->gather(inner(be), FH(y), CFH(x), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}

static const qs_backend_ops fence_ops = {
    .name = "cpu-fenced",
    .destroy = fence_destroy,
    .alloc = fence_alloc,
    .free = fence_free,
    .upload = fence_upload,
    .download = fence_download,
    .copy = fence_copy,
    .synchronize = fence_sync,
    .gemm = fence_gemm,
    .rmsnorm = fence_rmsnorm,
    .rope = fence_rope,
    .attention = fence_attention,
    .swiglu = fence_swiglu,
    .add = fence_add,
    .scale = fence_scale,
    .add_bias = fence_add_bias,
    .act_quant = fence_act_quant,
    .rmsnorm_gather = fence_rmsnorm_gather,
    .swiglu_gather = fence_swiglu_gather,
    .copy_rows = fence_copy_rows,
    .lse_update = fence_lse_update,
    .rmsnorm_backward = fence_rmsnorm_backward,
    .attention_backward = fence_attention_backward,
    .swiglu_backward = fence_swiglu_backward,
    .fake_quant_weight = fence_fake_quant_weight,
    .mse_grad = fence_mse_grad,
    .adamw_step = fence_adamw_step,
    .gather_backward = fence_gather_backward,
    .set_window_rows = fence_set_window_rows,
    .cholesky_inverse = NULL, /* as the CPU backend: GPTQ uses the host's LAPACK */
    .gptq_batch = fence_gptq_batch,
    .gptq_hessian = fence_gptq_hessian,
    .stage_alloc = fence_stage_alloc,
    .stage_upload = fence_stage_upload,
    .mark = fence_mark,
    .stage_download = fence_stage_download,
    .to_f32 = fence_to_f32,
    .gather = fence_gather,
};

size_t qs_cpu_fenced_peak_bytes(qs_backend *be) { return qs_cpu_peak_bytes(inner(be)); }

int qs_cpu_fenced_backend_create(qs_backend **out, int threads, qs_error *err) {
    *out = NULL;
    qs_backend *be = calloc(1, sizeof *be);
    fence_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be), free(c);
        return qs_error_set(err, -ENOMEM, "cpu-fenced backend: out of memory for its context");
    }
    int rc = qs_cpu_backend_create(&c->cpu, threads, err);
    if (rc) {
        free(be), free(c);
        return rc;
    }
    be->ops = &fence_ops;
    be->ctx = c;
    *out = be;
    return 0;
}
