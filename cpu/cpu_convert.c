/* cpu/cpu_convert.c - stored weights to fp32 on the CPU backend (backend.h to_f32), fp32 to bf16
 * (to_bf16) and the linear layer on bf16 weights (linear_bf16: widened, then gemm): base/half.h's
 * conversions, elements in parallel. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "cpu/cpu_internal.h"

int qs_cpu_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(dtype != QS_BE_F32 && dtype != QS_BE_F16 && dtype != QS_BE_BF16, QS_EUSAGE,
                       "to_f32: element type %d", dtype);
    if (dtype == QS_BE_F32) {
        if (n) memmove(dst, src, sizeof(float) * n);
        return 0;
    }
    const uint16_t *h = src;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] = dtype == QS_BE_F16 ? qs_f16_to_f32(h[i]) : qs_bf16_to_f32(h[i]);
    return 0;
}

int qs_cpu_to_bf16(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err) {
    (void)be, (void)err;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] = qs_f32_to_bf16(src[i]);
    return 0;
}

int qs_cpu_linear_bf16(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx, const uint16_t *w,
                       int ldw, float beta, float *y, int ldy, qs_error *err) {
    const int wr = tw ? n : k, wc = tw ? k : n; /* w's stored shape */
    QS_RETURN_ERROR_IF(m < 0 || n < 0 || k < 0 || ldw < wc, QS_EUSAGE, "linear_bf16: shape [%d, %d] x [%d] (ldw %d)", m,
                       n, k, ldw);
    float *wf = malloc(sizeof(float) * ((size_t)wr * wc + 1));
    QS_RETURN_ERROR_IF(!wf, -ENOMEM, "linear_bf16: out of memory widening [%d, %d] weights", wr, wc);
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < (size_t)wr; r++)
        for (size_t c = 0; c < (size_t)wc; c++) wf[r * wc + c] = qs_bf16_to_f32(w[r * (size_t)ldw + c]);
    int rc = qs_cpu_gemm(be, 0, tw, m, n, k, 1.0f, x, ldx, wf, wc > 0 ? wc : 1, beta, y, ldy, err);
    free(wf);
    return rc;
}
