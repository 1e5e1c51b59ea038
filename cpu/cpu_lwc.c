/* cpu/cpu_lwc.c - SliderQuant's learnable weight clipping (backend.h lwc_weight): the forward
 * with codes, grid and the rows' errors, and the straight-through backward to the weights and
 * the clipping logits, with a row's columns past qcols left as they are (incremental
 * quantization). Rows are independent and every sum runs in column order: any thread count
 * gives the same bits; the grid is backend/lwc_grid.h's, as on CUDA. */
#include <math.h>

#include "backend/lwc_grid.h"
#include "cpu/cpu_internal.h"

static int check(const char *op, int rows, int cols, int bits, int qcols, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 8 || qcols < 0, QS_EUSAGE,
                       "%s: [%d, %d] at %d bits, %d columns quantized", op, rows, cols, bits, qcols);
    return 0;
}

/* the range of columns [c0, c1) of a row */
static void range(const float *x, int c0, int c1, float *mx, float *mn) {
    float hi = x[c0], lo = x[c0];
    for (int c = c0 + 1; c < c1; c++) {
        hi = x[c] > hi ? x[c] : hi;
        lo = x[c] < lo ? x[c] : lo;
    }
    *mx = hi, *mn = lo;
}

int qs_cpu_lwc_weight(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros, double *row_err,
                      const float *w, const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                      int qcols, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(check("lwc_weight", rows, cols, bits, qcols, err));
    QS_RETURN_ERROR_IF(codes && qcols < cols, QS_EUSAGE, "lwc_weight: codes of %d columns of %d", qcols, cols);
    const int g = group > 0 ? group : cols, ng = (cols + g - 1) / g;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *x = w + (size_t)r * cols;
        double e = 0;
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
            const size_t q = (size_t)r * ng + k;
            float mx, mn;
            range(x, c0, c1, &mx, &mn);
            const qs_lwc_grid gr = qs_lwc_grid_of(mx, mn, gam[q], bet[q], bits, sym);
            if (scales) scales[q] = gr.scale;
            if (zeros) zeros[q] = gr.zero;
            for (int c = c0; c < c1; c++) {
                const size_t i = (size_t)r * cols + c;
                float v = rintf(x[c] / gr.scale) + gr.zero;
                v = v > maxq ? maxq : v >= 0 ? v : 0; /* a NaN's 0 */
                const float yi = c < qcols ? gr.scale * (v - gr.zero) : x[c];
                if (codes) codes[i] = (uint8_t)v;
                if (row_err) e += ((double)yi - x[c]) * ((double)yi - x[c]);
                if (y) y[i] = yi; /* after x[c] is read: y may be w */
            }
        }
        if (row_err) row_err[r] = e;
    }
    return 0;
}

int qs_cpu_lwc_weight_backward(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy, const float *w,
                               const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                               int qcols, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(check("lwc_weight_backward", rows, cols, bits, qcols, err));
    const int g = group > 0 ? group : cols, ng = (cols + g - 1) / g;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
            const size_t q = (size_t)r * ng + k;
            const float *x = w + (size_t)r * cols;
            float mx, mn;
            range(x, c0, c1, &mx, &mn);
            const qs_lwc_grid gr = qs_lwc_grid_of(mx, mn, gam[q], bet[q], bits, sym);
            double gs = 0;
            for (int c = c0; c < c1; c++) {
                const size_t i = (size_t)r * cols + c;
                if (c >= qcols) { /* not quantized */
                    dw[i] = dy[i];
                    continue;
                }
                const float t = x[c] / gr.scale, rt = rintf(t), v = rt + gr.zero, gy = dy[i];
                const int inside = v >= 0 && v <= maxq;
                gs += (double)gy * (inside ? (double)rt - (double)t : (double)((v > maxq ? maxq : 0) - gr.zero));
                dw[i] = inside ? gy : 0.0f;
            }
            dgam[q] += (float)(gs * gr.ds_dgam);
            dbet[q] += (float)(gs * gr.ds_dbet);
        }
    return 0;
}
