/* cpu/cpu_dlqat.c - DL-QAT's weight on a fixed grid (../shared/METHODS.md, backend.h
 * dlqat_weight): the forward with its codes and the rows' errors, and the straight-through
 * backward to the low-rank term and the group magnitudes. Rows are independent and every sum
 * runs in column order: any thread count gives the same bits. */
#include <math.h>

#include "cpu/cpu_internal.h"

/* rint(w / scale + d) + zero, unclamped (a NaN stays NaN) */
static float grid_value(float w, float d, float scale, float zero) { return rintf(w / scale + d) + zero; }

static int check(const char *op, int rows, int cols, int bits, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 8, QS_EUSAGE, "%s: [%d, %d] at %d bits", op, rows, cols,
                       bits);
    return 0;
}

int qs_cpu_dlqat_weight(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w, const float *d,
                        const float *scales, const float *zeros, const float *mag, int rows, int cols, int group, int bits,
                        qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(check("dlqat_weight", rows, cols, bits, err));
    const int g = group > 0 ? group : cols, ng = (cols + g - 1) / g;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        double e = 0;
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c, k = (size_t)r * ng + c / g;
            float v = grid_value(w[i], d[i], scales[k], zeros[k]);
            v = v > maxq ? maxq : v >= 0 ? v : 0; /* a NaN's 0 */
            const float yi = (mag[k] * scales[k]) * (v - zeros[k]);
            if (codes) codes[i] = (uint8_t)v;
            if (row_err) e += ((double)yi - w[i]) * ((double)yi - w[i]);
            if (y) y[i] = yi; /* after w[i] and d[i] are read: y may be d */
        }
        if (row_err) row_err[r] = e;
    }
    return 0;
}

int qs_cpu_dlqat_weight_backward(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w, const float *d,
                                 const float *scales, const float *zeros, const float *mag, int rows, int cols, int group,
                                 int bits, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(check("dlqat_weight_backward", rows, cols, bits, err));
    const int g = group > 0 ? group : cols, ng = (cols + g - 1) / g;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < ng; k++) {
            const size_t q = (size_t)r * ng + k;
            const float scale = scales[q], zero = zeros[q], ms = mag[q] * scale;
            double sum = 0;
            for (int c = k * g; c < cols && c < (k + 1) * g; c++) {
                const size_t i = (size_t)r * cols + c;
                const float v = grid_value(w[i], d[i], scale, zero), gy = dy[i];
                const int inside = v >= 0 && v <= maxq;
                sum += (double)gy * scale * (double)((inside ? v : v > maxq ? maxq : 0) - zero);
                dd[i] = inside ? gy * ms : 0.0f;
            }
            dmag[q] += (float)sum;
        }
    return 0;
}
