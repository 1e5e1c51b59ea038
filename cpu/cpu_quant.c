/* cpu/cpu_quant.c - per-token activation fake quantization (the weight-activation settings of
 * ../shared/METHODS.md): each segment of a row gets its own min-max range, dynamically. Rows are
 * independent: any thread count gives the same bits. */
#include <math.h>

#include "cpu/cpu_internal.h"

int qs_cpu_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err) {
    return qs_cpu_act_quant_part(be, x, rows, cols, seg, seg, bits, err);
}

int qs_cpu_act_quant_part(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || seg < 1 || cols % seg || qn < 1 || qn > seg || bits < 2 || bits > 16,
                       QS_EUSAGE, "act_quant: rows %d, cols %d, segment %d (%d rounded), %d bits", rows, cols, seg, qn,
                       bits);
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int s0 = 0; s0 < cols; s0 += seg) {
            float *v = x + (size_t)r * cols + s0;
            float mn = v[0], mx = v[0];
            for (int i = 1; i < seg; i++) {
                mn = v[i] < mn ? v[i] : mn;
                mx = v[i] > mx ? v[i] : mx;
            }
            float scale = (mx - mn) / maxq;
            scale = scale < 1e-5f ? 1e-5f : scale > 1e4f ? 1e4f : scale;
            float zero = rintf(-mn / scale);
            for (int i = 0; i < qn; i++) {
                float q = rintf(v[i] / scale) + zero;
                q = q < 0 ? 0 : q > maxq ? maxq : q;
                v[i] = (q - zero) * scale;
            }
        }
    return 0;
}
