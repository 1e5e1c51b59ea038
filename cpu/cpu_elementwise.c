/* cpu/cpu_elementwise.c - SwiGLU, add, scale, bias add and row copies (gather / scatter).
 * Each output element depends on its inputs only: no reductions, any thread count. */
#include <math.h>
#include <string.h>

#include "cpu/cpu_internal.h"

int qs_cpu_swiglu(qs_backend *be, float *y, const float *gate, const float *up, size_t n, qs_error *err) {
    (void)be;
    (void)err;
    /* silu(g) = g / (1 + exp(-g)); libm expf here: this is not the hot loop (attention's is) */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
    return 0;
}

int qs_cpu_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err) {
    (void)be;
    (void)err;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return 0;
}

int qs_cpu_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err) {
    (void)be;
    (void)err;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = alpha * x[i];
    return 0;
}

int qs_cpu_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || cols < 0, QS_EUSAGE, "add_bias: bad shape [%d, %d]", rows, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols;
        for (int i = 0; i < cols; i++) yr[i] += bias[i];
    }
    return 0;
}

int qs_cpu_copy_rows(qs_backend *be, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                     int n, int cols, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(n < 0 || cols < 0, QS_EUSAGE, "copy_rows: bad shape (%d rows of %d)", n, cols);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        size_t d = dst_rows ? (size_t)dst_rows[i] : (size_t)i, s = src_rows ? (size_t)src_rows[i] : (size_t)i;
        memcpy(dst + d * cols, src + s * cols, sizeof(float) * (size_t)cols);
    }
    return 0;
}
