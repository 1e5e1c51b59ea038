/* cpu/cpu_backend.c - the CPU backend's ops table, context and memory: backend memory is
 * 64-byte aligned host memory, so upload / download / copy are memcpy. */
#include "cpu/cpu_backend.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* each allocation carries its size in a 64-byte header, so that the live bytes and their
 * high-water mark (qs_cpu_peak_bytes: what --gpu-mem plans on a GPU) are counted; allocations
 * may come from several threads */
#define HEADER 64

static void *cpu_alloc(qs_backend *be, size_t bytes) {
    qs_cpu_ctx *c = be->ctx;
    void *p = NULL;
    if (bytes > SIZE_MAX - HEADER || posix_memalign(&p, 64, HEADER + (bytes ? bytes : 64))) return NULL;
    *(size_t *)p = bytes;
    size_t live = __atomic_add_fetch(&c->live, bytes, __ATOMIC_RELAXED), peak = __atomic_load_n(&c->peak, __ATOMIC_RELAXED);
    while (live > peak && !__atomic_compare_exchange_n(&c->peak, &peak, live, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return (char *)p + HEADER;
}

static void cpu_free(qs_backend *be, void *p) {
    if (!p) return;
    qs_cpu_ctx *c = be->ctx;
    void *base = (char *)p - HEADER;
    __atomic_sub_fetch(&c->live, *(size_t *)base, __ATOMIC_RELAXED);
    free(base);
}

size_t qs_cpu_peak_bytes(qs_backend *be) { return __atomic_load_n(&((qs_cpu_ctx *)be->ctx)->peak, __ATOMIC_RELAXED); }

static int cpu_memcpy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    (void)be;
    (void)err;
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}

static int cpu_synchronize(qs_backend *be, qs_error *err) {
    (void)be;
    (void)err;
    return 0; /* every CPU op has finished when it returns */
}

int qs_cpu_scratch_grow(float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    free(*buf);
    *buf = NULL;
    *cap = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float))) return -ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

static void cpu_destroy(qs_backend *be) {
    if (!be) return;
    qs_cpu_ctx *c = be->ctx;
    if (c) {
        free(c->scores);
        free(c->pack);
        free(c->rope_tab);
        free(c->attn_bwd);
        for (int i = 0; c->gemm_scr && i < c->threads; i++) free(c->gemm_scr[i]);
        free(c->gemm_scr), free(c->gemm_cap);
        free(c);
    }
    free(be);
}

static const qs_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .synchronize = cpu_synchronize,
    .gemm = qs_cpu_gemm,
    .rmsnorm = qs_cpu_rmsnorm,
    .rope = qs_cpu_rope,
    .attention = qs_cpu_attention,
    .swiglu = qs_cpu_swiglu,
    .add = qs_cpu_add,
    .scale = qs_cpu_scale,
    .add_bias = qs_cpu_add_bias,
    .act_quant = qs_cpu_act_quant,
    .act_quant_part = qs_cpu_act_quant_part,
    .rmsnorm_gather = qs_cpu_rmsnorm_gather,
    .swiglu_gather = qs_cpu_swiglu_gather,
    .copy_rows = qs_cpu_copy_rows,
    .lse_update = qs_cpu_lse_update,
    .rmsnorm_backward = qs_cpu_rmsnorm_backward,
    .attention_backward = qs_cpu_attention_backward,
    .swiglu_backward = qs_cpu_swiglu_backward,
    .fake_quant_weight = qs_cpu_fake_quant_weight,
    .mse_grad = qs_cpu_mse_grad,
    .adamw_step = qs_cpu_adamw_step,
    .gather_backward = qs_cpu_gather_backward,
    .set_window_rows = qs_cpu_set_window_rows,
    .gptq_batch = qs_cpu_gptq_batch,
    .gptq_hessian = qs_cpu_gptq_hessian,
    .to_f32 = qs_cpu_to_f32, /* no staging ops: its memory is host memory */
    .gather = qs_cpu_gather,
    .to_bf16 = qs_cpu_to_bf16,
    .linear_bf16 = qs_cpu_linear_bf16,
    .quant_weight = qs_cpu_quant_weight,
    .dlqat_weight = qs_cpu_dlqat_weight,
    .dlqat_weight_backward = qs_cpu_dlqat_weight_backward,
    .lwc_weight = qs_cpu_lwc_weight,
    .lwc_weight_backward = qs_cpu_lwc_weight_backward,
    .chan_scale = qs_cpu_chan_scale,
    .chan_scale_backward = qs_cpu_chan_scale_backward,
};

int qs_cpu_backend_create(qs_backend **out, int threads, qs_error *err) {
    *out = NULL;
    QS_RETURN_ERROR_IF(threads < 0, QS_EUSAGE, "cpu backend: thread count %d is negative", threads);
    qs_backend *be = calloc(1, sizeof *be);
    qs_cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return qs_error_set(err, -ENOMEM, "cpu backend: out of memory for its context");
    }
    c->threads = threads > 0 ? threads : omp_get_num_procs();
    c->gemm_scr = calloc((size_t)c->threads, sizeof *c->gemm_scr);
    c->gemm_cap = calloc((size_t)c->threads, sizeof *c->gemm_cap);
    if (!c->gemm_scr || !c->gemm_cap) {
        free(c->gemm_scr), free(c->gemm_cap), free(c), free(be);
        return qs_error_set(err, -ENOMEM, "cpu backend: out of memory for its context");
    }
    omp_set_num_threads(c->threads);
    /* OpenBLAS runs single-threaded: cpu_gemm.c splits the rows over OpenMP threads itself, so
     * that results do not depend on the thread count or the rows sharing a call */
    openblas_set_num_threads(1);
    be->ops = &cpu_ops;
    be->ctx = c;
    *out = be;
    return 0;
}
