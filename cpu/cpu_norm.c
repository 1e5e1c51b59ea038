/* cpu/cpu_norm.c - RMSNorm: one row per iteration, its sum of squares in double in column
 * order, so the result does not depend on the thread count. */
#include <math.h>

#include "cpu/cpu_internal.h"

int qs_cpu_rmsnorm(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                   float *rstd, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm: bad shape [%d, %d]", rows, dim);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        float inv = qs_cpu_row_inv_rms(xr, dim, eps);
        /* (x * inv) * gamma: the order transformers' LlamaRMSNorm uses */
        for (int i = 0; i < dim; i++) yr[i] = (xr[i] * inv) * gamma[i];
        if (rstd) rstd[r] = inv;
    }
    return 0;
}
