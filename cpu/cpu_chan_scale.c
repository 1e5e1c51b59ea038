/* cpu/cpu_chan_scale.c - SliderQuant's per-channel smoothing scales (backend.h chan_scale): the
 * scaled weights and their backward to the scales. Each sum runs in backend.h's order (a
 * column's over rows, a row's over columns, then an index's over its elements), one index a
 * thread: any thread count gives the same bits, those of gpu/cuda_chan_scale.cu. */
#include <stdlib.h>

#include "backend/chan_scale.h"
#include "cpu/cpu_internal.h"

static int on(const qs_chan_scale *c) { return c && c->alpha; }

/* y = (x * fr) * fc, or y += that (acc) */
static void scale_into(float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                       const qs_chan_scale *col, int acc) {
    const qs_chan_map mr = qs_chan_side_map(row, rows), mc = qs_chan_side_map(col, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float fr = on(row) ? qs_chan_factor(row->alpha[qs_chan_index(mr, r)], row->pow) : 1.0f;
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            float v = x[i];
            if (on(row)) v = v * fr;
            if (on(col)) v = v * qs_chan_factor(col->alpha[qs_chan_index(mc, c)], col->pow);
            y[i] = acc ? y[i] + v : v;
        }
    }
}

int qs_cpu_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                      const qs_chan_scale *col, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale", rows, cols, row, col, err));
    if (rows && cols) scale_into(y, x, rows, cols, row, col, 0);
    return 0;
}

/* dalpha of side s (map ms, n_s elements) += D * qs_chan_grad_sum, one index a thread; o the
 * other side (NULL or off: factor 1) */
static void side_grad(const float *dy, const float *x, const qs_chan_scale *s, qs_chan_map ms, const qs_chan_scale *o,
                      qs_chan_map mo, int n_o, size_t se, size_t so, int n_s) {
    const int nk = qs_chan_count(ms, n_s);
    const float *ao = on(o) ? o->alpha : NULL;
    const int po = on(o) ? o->pow : 1;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nk; k++) {
        const double d = qs_chan_dfactor(s->alpha[k], s->pow);
        if (d != 0.0) s->dalpha[k] += (float)(d * qs_chan_grad_sum(dy, x, ms, k, ao, po, mo, n_o, se, so));
    }
}

int qs_cpu_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                               const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale_backward", rows, cols, row, col, err));
    if (!rows || !cols) return 0;
    if (dx) scale_into(dx, dy, rows, cols, row, col, 1);
    const qs_chan_map mr = qs_chan_side_map(row, rows), mc = qs_chan_side_map(col, cols);
    /* the column side's indices sum over rows, the row side's over columns */
    if (on(col) && col->dalpha) side_grad(dy, x, col, mc, row, mr, rows, 1, (size_t)cols, cols);
    if (on(row) && row->dalpha) side_grad(dy, x, row, mr, col, mc, cols, (size_t)cols, 1, rows);
    return 0;
}
