/* cpu/cpu_fence.c - "cpu-fenced": the CPU backend with backend memory the host cannot touch.
 *
 * A GPU backend's memory is not host memory, and a caller that reads or writes a backend
 * pointer directly (instead of through upload / download) works on the CPU backend and crashes
 * on CUDA. Without a GPU such a bug is invisible; this backend makes it visible on any machine.
 * Every pointer it hands out is the real host pointer plus 2^63, a non-canonical address on
 * x86-64 and AArch64: the host faults on any access, while pointer arithmetic by the caller
 * (offsets into a buffer) stays valid. Each op subtracts the fence and calls the CPU op. The
 * ops give the CPU backend's bits. Tests run whole pipelines with --device cpu-fenced.
 *
 * It also checks the ordering contract of a GPU's two streams (backend.h), which the CPU's
 * synchronous ops would otherwise hide. The ops are numbered as a GPU's compute stream would
 * queue them; each buffer remembers the last op that read or wrote it; the host knows the
 * ops up to `done` have finished (upload, download, synchronize, an op with host outputs,
 * stage_download or wait_mark after a mark). stage_upload (a copy beside the compute) into a
 * buffer that a later op may still use, and stage_download of a buffer that ops after its mark
 * use, are errors: on a GPU they race. */
#include "cpu/cpu_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define FENCE ((uintptr_t)1 << 63)

/* a live allocation (fenced address) and the last op that used it */
typedef struct fence_buf {
    uintptr_t base;
    size_t bytes;
    unsigned long long last;
} fence_buf;

typedef struct fence_ctx {
    qs_backend *cpu;
    pthread_mutex_t mu; /* the loader thread stages beside the compute thread */
    fence_buf *bufs;    /* sorted by base */
    size_t n, cap;
    unsigned long long seq, done, marks[QS_BE_MARKS];
} fence_ctx;

static fence_ctx *fctx(qs_backend *be) { return (fence_ctx *)be->ctx; }
static qs_backend *inner(qs_backend *be) { return fctx(be)->cpu; }

/* the allocation holding fenced address a, or NULL (the caller holds mu) */
static fence_buf *find(fence_ctx *c, uintptr_t a) {
    size_t lo = 0, hi = c->n;
    while (lo < hi) { /* first with base > a */
        size_t mid = (lo + hi) / 2;
        if (c->bufs[mid].base <= a) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return NULL;
    fence_buf *b = &c->bufs[lo - 1];
    return a < b->base + (b->bytes ? b->bytes : 1) ? b : NULL;
}

/* a new allocation; last: the op that made it (alloc is ordered on a GPU's compute stream: a
 * copy beside the compute must wait for it too), 0 for the copy stream's own (stage_alloc) */
static void track(qs_backend *be, void *p, size_t bytes, int on_compute) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        fence_buf *nb = realloc(c->bufs, cap * sizeof *nb);
        if (!nb) { /* untracked: no checks on this buffer */
            pthread_mutex_unlock(&c->mu);
            return;
        }
        c->bufs = nb, c->cap = cap;
    }
    size_t i = c->n;
    while (i > 0 && c->bufs[i - 1].base > (uintptr_t)p) i--;
    memmove(&c->bufs[i + 1], &c->bufs[i], (c->n - i) * sizeof *c->bufs);
    c->bufs[i] = (fence_buf){(uintptr_t)p, bytes, on_compute ? c->seq : 0};
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

static void untrack(qs_backend *be, void *p) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    fence_buf *b = find(c, (uintptr_t)p);
    if (b && b->base == (uintptr_t)p) {
        size_t i = (size_t)(b - c->bufs);
        memmove(&c->bufs[i], &c->bufs[i + 1], (c->n - i - 1) * sizeof *c->bufs);
        c->n--;
    }
    pthread_mutex_unlock(&c->mu);
}

/* an op queued on the compute stream */
static void begin(qs_backend *be) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    c->seq++;
    pthread_mutex_unlock(&c->mu);
}
/* the host has waited for the ops queued so far (upto: the current op), or up to a mark */
static void finished(qs_backend *be, unsigned long long upto) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    if (upto > c->done) c->done = upto;
    pthread_mutex_unlock(&c->mu);
}
static void all_finished(qs_backend *be) { finished(be, fctx(be)->seq); }

/* the host address of a fenced pointer that the current op reads or writes (NULL stays NULL:
 * optional outputs, identity indices) */
static void *touch(qs_backend *be, const void *p) {
    if (!p) return NULL;
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    fence_buf *b = find(c, (uintptr_t)p);
    if (b) b->last = c->seq;
    pthread_mutex_unlock(&c->mu);
    return (void *)((uintptr_t)p - FENCE);
}

/* 0 when the ops that used the buffer at p have finished by point `upto` (or the host's known
 * point, if later), else a race error naming the op */
static int check_done(qs_backend *be, const void *p, unsigned long long upto, const char *what, qs_error *err) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    fence_buf *b = find(c, (uintptr_t)p);
    unsigned long long last = b ? b->last : 0, done = c->done > upto ? c->done : upto;
    size_t bytes = b ? b->bytes : 0;
    pthread_mutex_unlock(&c->mu);
    QS_RETURN_ERROR_IF(last > done, QS_EUSAGE,
                       "cpu-fenced: %s of a %zu-byte backend buffer that op %llu may still be using (the host has "
                       "waited for the ops up to %llu only): on a GPU this races",
                       what, bytes, last, done);
    return 0;
}

#define H(p) touch(be, (const void *)(p))
#define FH(p) ((float *)H(p))
#define CFH(p) ((const float *)H(p))
#define CIH(p) ((const int32_t *)H(p))
#define OPS (inner(be)->ops)

static void fence_destroy(qs_backend *be) {
    if (!be) return;
    if (be->ctx && inner(be)) inner(be)->ops->destroy(inner(be));
    if (be->ctx) {
        pthread_mutex_destroy(&fctx(be)->mu);
        free(fctx(be)->bufs);
    }
    free(be->ctx);
    free(be);
}

static void *alloc_tracked(qs_backend *be, size_t bytes, int on_compute) {
    void *p = OPS->alloc(inner(be), bytes);
    if (!p) return NULL;
    p = (void *)((uintptr_t)p + FENCE);
    if (on_compute) begin(be);
    track(be, p, bytes, on_compute);
    return p;
}
static void *fence_alloc(qs_backend *be, size_t bytes) { return alloc_tracked(be, bytes, 1); }
static void fence_free(qs_backend *be, void *p) { /* stream-ordered on a GPU: after the ops before it */
    if (!p) return;
    untrack(be, p);
    OPS->free(inner(be), (void *)((uintptr_t)p - FENCE));
}
static int fence_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    begin(be);
    int rc = OPS->upload(inner(be), H(dst), src, bytes, err);
    all_finished(be); /* returns when the bytes are there: after every op before it */
    return rc;
}
static int fence_download(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    begin(be);
    int rc = OPS->download(inner(be), dst, H(src), bytes, err);
    all_finished(be);
    return rc;
}
static int fence_copy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    begin(be);
    return OPS->copy(inner(be), H(dst), H(src), bytes, err);
}
static int fence_sync(qs_backend *be, qs_error *err) {
    all_finished(be);
    return OPS->synchronize(inner(be), err);
}
static int fence_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      const float *b, int ldb, float beta, float *c, int ldc, qs_error *err) {
    begin(be);
    return OPS->gemm(inner(be), ta, tb, m, n, k, alpha, CFH(a), lda, CFH(b), ldb, beta, FH(c), ldc, err);
}
static int fence_rmsnorm(qs_backend *be, float *y, const float *x, const float *g, int rows, int dim, float eps,
                         float *rstd, qs_error *err) {
    begin(be);
    return OPS->rmsnorm(inner(be), FH(y), CFH(x), CFH(g), rows, dim, eps, FH(rstd), err);
}
static int fence_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int nh, int hd, int stride,
                      const float *inv_freq, int inverse, qs_error *err) {
    begin(be);
    return OPS->rope(inner(be), FH(x), n_win, seqlen, pos0, nh, hd, stride, CFH(inv_freq), inverse, err);
}
static int fence_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                           int seqlen, int nh, int nkv, int hd, float scale, float *lse, qs_error *err) {
    begin(be);
    return OPS->attention(inner(be), FH(out), CFH(q), CFH(k), CFH(v), n_win, seqlen, nh, nkv, hd, scale, FH(lse),
                          err);
}
static int fence_swiglu(qs_backend *be, float *y, const float *g, const float *u, size_t n, qs_error *err) {
    begin(be);
    return OPS->swiglu(inner(be), FH(y), CFH(g), CFH(u), n, err);
}
static int fence_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err) {
    begin(be);
    return OPS->add(inner(be), FH(y), CFH(a), CFH(b), n, err);
}
static int fence_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err) {
    begin(be);
    return OPS->scale(inner(be), FH(y), CFH(x), alpha, n, err);
}
static int fence_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err) {
    begin(be);
    return OPS->add_bias(inner(be), FH(y), CFH(bias), rows, cols, err);
}
static int fence_copy_rows(qs_backend *be, float *dst, const int32_t *dr, const float *src, const int32_t *sr, int n,
                           int cols, qs_error *err) {
    begin(be);
    return OPS->copy_rows(inner(be), FH(dst), CIH(dr), CFH(src), CIH(sr), n, cols, err);
}
static int fence_act_quant_part(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits, qs_error *err) {
    begin(be);
    return OPS->act_quant_part(inner(be), FH(x), rows, cols, seg, qn, bits, err);
}
static int fence_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err) {
    begin(be);
    return OPS->act_quant(inner(be), FH(x), rows, cols, seg, bits, err);
}
static int fence_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *g, int rows, int dim, float eps,
                                const int32_t *a, const int32_t *b, const float *coef, qs_error *err) {
    begin(be);
    return OPS->rmsnorm_gather(inner(be), FH(y), CFH(x), CFH(g), rows, dim, eps, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_swiglu_gather(qs_backend *be, float *y, const float *g, const float *u, int rows, int dim,
                               const int32_t *a, const int32_t *b, const float *coef, qs_error *err) {
    begin(be);
    return OPS->swiglu_gather(inner(be), FH(y), CFH(g), CFH(u), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                            float *run_max, float *run_sum, float *tgt, qs_error *err) {
    begin(be);
    return OPS->lse_update(inner(be), CFH(logits), n, vc, v0, CIH(target), FH(run_max), FH(run_sum), FH(tgt), err);
}
static int fence_rmsnorm_backward(qs_backend *be, float *dx, float *dg, const float *dy, const float *x,
                                  const float *g, const float *rstd, int rows, int dim, qs_error *err) {
    begin(be);
    return OPS->rmsnorm_backward(inner(be), FH(dx), FH(dg), CFH(dy), CFH(x), CFH(g), CFH(rstd), rows, dim, err);
}
static int fence_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                    const float *q, const float *k, const float *v, const float *out,
                                    const float *lse, int n_win, int seqlen, int nh, int nkv, int hd, float scale,
                                    qs_error *err) {
    begin(be);
    return OPS->attention_backward(inner(be), FH(dq), FH(dk), FH(dv), CFH(dout), CFH(q), CFH(k), CFH(v), CFH(out),
                                   CFH(lse), n_win, seqlen, nh, nkv, hd, scale, err);
}
static int fence_swiglu_backward(qs_backend *be, float *dg, float *du, const float *dy, const float *g,
                                 const float *u, size_t n, qs_error *err) {
    begin(be);
    return OPS->swiglu_backward(inner(be), FH(dg), FH(du), CFH(dy), CFH(g), CFH(u), n, err);
}
static int fence_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                                   int sym, qs_error *err) {
    begin(be);
    return OPS->fake_quant_weight(inner(be), FH(y), CFH(w), rows, cols, group, bits, sym, err);
}
static int fence_quant_weight(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym,
                              uint8_t *codes, float *scales, float *zeros, double *row_err, qs_error *err) {
    begin(be);
    return OPS->quant_weight(inner(be), CFH(w), rows, cols, group, bits, sym, (uint8_t *)H(codes), FH(scales), FH(zeros),
                             (double *)H(row_err), err);
}
static int fence_dlqat_weight(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w, const float *d,
                              const float *scales, const float *zeros, const float *mag, int rows, int cols, int group,
                              int bits, qs_error *err) {
    begin(be);
    return OPS->dlqat_weight(inner(be), FH(y), (uint8_t *)H(codes), (double *)H(row_err), CFH(w), CFH(d), CFH(scales),
                             CFH(zeros), CFH(mag), rows, cols, group, bits, err);
}
static int fence_dlqat_weight_backward(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w,
                                       const float *d, const float *scales, const float *zeros, const float *mag, int rows,
                                       int cols, int group, int bits, qs_error *err) {
    begin(be);
    return OPS->dlqat_weight_backward(inner(be), FH(dd), FH(dmag), CFH(dy), CFH(w), CFH(d), CFH(scales), CFH(zeros),
                                      CFH(mag), rows, cols, group, bits, err);
}
static int fence_lwc_weight(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros, double *row_err,
                            const float *w, const float *gam, const float *bet, int rows, int cols, int group, int bits,
                            int sym, int qcols, qs_error *err) {
    begin(be);
    return OPS->lwc_weight(inner(be), FH(y), (uint8_t *)H(codes), FH(scales), FH(zeros), (double *)H(row_err), CFH(w),
                           CFH(gam), CFH(bet), rows, cols, group, bits, sym, qcols, err);
}
static int fence_lwc_weight_backward(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy,
                                     const float *w, const float *gam, const float *bet, int rows, int cols, int group,
                                     int bits, int sym, int qcols, qs_error *err) {
    begin(be);
    return OPS->lwc_weight_backward(inner(be), FH(dw), FH(dgam), FH(dbet), CFH(dy), CFH(w), CFH(gam), CFH(bet), rows,
                                    cols, group, bits, sym, qcols, err);
}
/* a side of chan_scale with its scales' addresses unfenced (NULL stays NULL) */
static const qs_chan_scale *unfence_side(qs_backend *be, const qs_chan_scale *c, qs_chan_scale *tmp) {
    if (!c) return NULL;
    *tmp = *c;
    tmp->alpha = CFH(c->alpha), tmp->dalpha = FH(c->dalpha);
    return tmp;
}
static int fence_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                            const qs_chan_scale *col, qs_error *err) {
    begin(be);
    qs_chan_scale tr, tc;
    return OPS->chan_scale(inner(be), FH(y), CFH(x), rows, cols, unfence_side(be, row, &tr), unfence_side(be, col, &tc),
                           err);
}
static int fence_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                                     const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err) {
    begin(be);
    qs_chan_scale tr, tc;
    return OPS->chan_scale_backward(inner(be), FH(dx), CFH(dy), CFH(x), rows, cols, unfence_side(be, row, &tr),
                                    unfence_side(be, col, &tc), err);
}
static int fence_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                          qs_error *err) {
    begin(be);
    int rc = OPS->mse_grad(inner(be), FH(grad), CFH(a), CFH(b), n, loss_host, err);
    if (loss_host) all_finished(be); /* a host output: it waited */
    return rc;
}
static int fence_adamw_step(qs_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                            float b2, float eps, float wd, int step, qs_error *err) {
    begin(be);
    return OPS->adamw_step(inner(be), FH(p), CFH(g), FH(m), FH(v), n, lr, b1, b2, eps, wd, step, err);
}
static int fence_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *a,
                                 const int32_t *b, const float *coef, qs_error *err) {
    begin(be);
    return OPS->gather_backward(inner(be), FH(dv), CFH(dy), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}
static int fence_set_window_rows(qs_backend *be, int rows, qs_error *err) {
    begin(be);
    return OPS->set_window_rows(inner(be), rows, err);
}

static int fence_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u,
                            const int32_t *perm, int group, int bits, int sym, int static_groups, float *scales,
                            float *zeros, uint8_t *codes, float *err1, double *loss, qs_error *err) {
    begin(be);
    return OPS->gptq_batch(inner(be), FH(w), rows, cols, i1, i2, CFH(u), CIH(perm), group, bits, sym, static_groups,
                           FH(scales), FH(zeros), (uint8_t *)H(codes), FH(err1), (double *)H(loss), err);
}

/* staging: the CPU has no copy stream, but the fenced device stages like a GPU so that the
 * pipeline's staged path runs (and faults where it touches backend memory) without one */
static void *fence_stage_alloc(qs_backend *be, size_t bytes) { return alloc_tracked(be, bytes, 0); }
/* on the copy stream: waits for nothing on the compute stream */
static int fence_stage_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    QS_FORWARD_IF_ERROR(check_done(be, dst, 0, "stage_upload", err));
    return OPS->upload(inner(be), (void *)((uintptr_t)dst - FENCE), src, bytes, err);
}
static int fence_mark(qs_backend *be, int slot, qs_error *err) {
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "mark: slot %d", slot);
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    c->marks[slot] = c->seq; /* every CPU op has finished when it returns; a GPU's need not have */
    pthread_mutex_unlock(&c->mu);
    return 0;
}
static unsigned long long mark_of(qs_backend *be, int slot) {
    fence_ctx *c = fctx(be);
    pthread_mutex_lock(&c->mu);
    unsigned long long m = c->marks[slot];
    pthread_mutex_unlock(&c->mu);
    return m;
}
/* after the mark: the ops issued since must not use src */
static int fence_stage_download(qs_backend *be, int slot, void *dst, const void *src, size_t bytes, qs_error *err) {
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "stage_download: slot %d", slot);
    const unsigned long long m = mark_of(be, slot);
    QS_FORWARD_IF_ERROR(check_done(be, src, m, "stage_download", err));
    int rc = OPS->download(inner(be), dst, (const void *)((uintptr_t)src - FENCE), bytes, err);
    finished(be, m);
    return rc;
}
static int fence_wait_mark(qs_backend *be, int slot, qs_error *err) {
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "wait_mark: slot %d", slot);
    finished(be, mark_of(be, slot));
    return 0;
}
static int fence_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err) {
    begin(be);
    return OPS->to_f32(inner(be), FH(dst), H(src), n, dtype, err);
}

static int fence_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                              float *diag_host, int *nonfinite_host, qs_error *err) {
    begin(be);
    int rc = OPS->gptq_hessian(inner(be), FH(hp), CFH(h), n, CIH(perm), damp, diag_host, nonfinite_host, err);
    all_finished(be); /* host outputs: it waited */
    return rc;
}

static int fence_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *a, const int32_t *b,
                        const float *coef, qs_error *err) {
    begin(be);
    return OPS->gather(inner(be), FH(y), CFH(x), rows, dim, CIH(a), CIH(b), CFH(coef), err);
}

static int fence_to_bf16(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err) {
    begin(be);
    return OPS->to_bf16(inner(be), (uint16_t *)H(dst), CFH(src), n, err);
}
static int fence_linear_bf16(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx, const uint16_t *w, int ldw,
                             float beta, float *y, int ldy, qs_error *err) {
    begin(be);
    return OPS->linear_bf16(inner(be), tw, m, n, k, CFH(x), ldx, (const uint16_t *)H(w), ldw, beta, FH(y), ldy, err);
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
    .act_quant_part = fence_act_quant_part,
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
    .wait_mark = fence_wait_mark,
    .to_f32 = fence_to_f32,
    .gather = fence_gather,
    .to_bf16 = fence_to_bf16,
    .linear_bf16 = fence_linear_bf16,
    .quant_weight = fence_quant_weight,
    .dlqat_weight = fence_dlqat_weight,
    .dlqat_weight_backward = fence_dlqat_weight_backward,
    .lwc_weight = fence_lwc_weight,
    .lwc_weight_backward = fence_lwc_weight_backward,
    .chan_scale = fence_chan_scale,
    .chan_scale_backward = fence_chan_scale_backward,
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
    pthread_mutex_init(&c->mu, NULL);
    be->ops = &fence_ops;
    be->ctx = c;
    *out = be;
    return 0;
}
