/* cpu/cpu_gptq.c - GPTQ on the CPU backend: the lazy batch (backend.h gptq_batch: the host's
 * column loop of quant/gptq.c, rows over OpenMP, and the lazy update through the backend's own
 * GEMM without windows, whose rows are split at fixed boundaries over the threads,
 * cpu/cpu_gemm.c: the same bits for any thread count), and the matrix to factor from the
 * Hessian (gptq_hessian: mirror, dead inputs, order, dampening; every element a copy). */
#include "cpu/cpu_internal.h"
#include "quant/gptq.h"

int qs_cpu_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                      int group, int bits, int sym, int static_groups, float *scales, float *zeros, uint8_t *codes,
                      float *err1, double *loss, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 1 || cols < 1 || i1 < 0 || i2 <= i1 || i2 > cols || bits < 2 || bits > 8, QS_EUSAGE,
                       "gptq_batch: columns %d..%d of [%d, %d] at %d bits", i1, i2, rows, cols, bits);
    QS_RETURN_ERROR_IF(group > 0 && (i1 % group || (i2 < cols && i2 % group)), QS_EUSAGE,
                       "gptq_batch: columns %d..%d are not whole groups of %d", i1, i2, group);
    const qs_qconfig q = {.bits = bits, .group = group, .sym = sym};
    qs_gptq_batch_rows(w, rows, cols, i1, i2, u, perm, &q, static_groups, scales, zeros, codes, err1, loss);
    if (i2 == cols) return 0;
    qs_cpu_ctx *cx = be->ctx;
    const int windows = cx->window_rows; /* the rows of W are not tokens */
    cx->window_rows = 0;
    const int cnt = i2 - i1;
    int rc = qs_cpu_gemm(be, 0, 0, rows, cols - i2, cnt, -1.0f, err1, cnt, u + (size_t)i1 * cols + i2, cols, 1.0f, w + i2,
                         cols, err);
    cx->window_rows = windows;
    return rc;
}

int qs_cpu_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                        float *diag_host, int *nonfinite_host, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "gptq_hessian: n = %d", n);
    const size_t N = (size_t)n;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (size_t i = 0; i < N; i++)
        for (size_t j = i; j < N; j++) bad |= !__builtin_isfinite(h[i * N + j]);
    *nonfinite_host = bad;
    if (diag_host)
        for (size_t j = 0; j < N; j++) diag_host[j] = h[j * N + j];
    if (!hp || bad) return 0;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const size_t pi = (size_t)perm[i];
        for (size_t j = 0; j < N; j++) {
            const size_t pj = (size_t)perm[j];
            float v = pi <= pj ? h[pi * N + pj] : h[pj * N + pi];
            if (pi == pj && v == 0.0f) v = 1.0f; /* a dead input */
            hp[i * N + j] = i == j ? v + damp : v;
        }
    }
    return 0;
}
