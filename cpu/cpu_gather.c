/* cpu/cpu_gather.c - channel reassembly fused into RMSNorm and into the SwiGLU product: each
 * output channel is one source, or the mean of a merged pair, times its coefficient. A row's
 * normalization is the same computation as qs_cpu_rmsnorm, so a gather of identity maps gives
 * the same bits as the plain op. The gather's backward (its transpose) is here too. */
#include <math.h>

#include "cpu/cpu_internal.h"

int qs_cpu_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                          const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm_gather: bad shape [%d, %d]", rows, dim);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        float inv = qs_cpu_row_inv_rms(xr, dim, eps);
        for (int k = 0; k < dim; k++) {
            int a = src_a[k], b = src_b[k];
            float v = (xr[a] * inv) * gamma[a];
            if (b >= 0) v += (xr[b] * inv) * gamma[b];
            yr[k] = coef[k] * v;
        }
    }
    return 0;
}

int qs_cpu_swiglu_gather(qs_backend *be, float *y, const float *gate, const float *up, int rows, int dim,
                         const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "swiglu_gather: bad shape [%d, %d]", rows, dim);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *g = gate + (size_t)r * dim, *u = up + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        for (int k = 0; k < dim; k++) {
            int a = src_a[k], b = src_b[k];
            float v = g[a] / (1.0f + expf(-g[a])) * u[a];
            if (b >= 0) v += g[b] / (1.0f + expf(-g[b])) * u[b];
            yr[k] = coef[k] * v;
        }
    }
    return 0;
}

/* dv[r, :] = 0, then for k in order dv[r, src_a[k]] += coef[k] dy[r, k] (and at src_b[k]): one
 * thread per row, so the sums' order does not depend on the thread count */
int qs_cpu_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *src_a,
                           const int32_t *src_b, const float *coef, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "gather_backward: bad shape [%d, %d]", rows, dim);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + (size_t)r * dim;
        float *dvr = dv + (size_t)r * dim;
        for (int c = 0; c < dim; c++) dvr[c] = 0.0f;
        for (int k = 0; k < dim; k++) {
            float d = coef[k] * dyr[k];
            dvr[src_a[k]] += d;
            if (src_b[k] >= 0) dvr[src_b[k]] += d;
        }
    }
    return 0;
}

int qs_cpu_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *src_a,
                  const int32_t *src_b, const float *coef, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "gather: bad shape [%d, %d]", rows, dim);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        for (int k = 0; k < dim; k++) {
            float v = xr[src_a[k]];
            if (src_b[k] >= 0) v += xr[src_b[k]];
            yr[k] = coef ? coef[k] * v : v;
        }
    }
    return 0;
}
