/* cpu/cpu_chan_scale.c - SliderQuant's per-channel smoothing scales (backend.h chan_scale): the
 * scaled weights and their backward to the scales. Each sum runs in backend.h's order (a
 * column's over rows, a row's over columns, then an index's over its elements), a band of
 * columns or one row index a thread: any thread count gives the same bits, those of
 * gpu/cuda_chan_scale.cu. */
#include <errno.h>
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

/* the row side's dalpha (map ms, n_s elements) += D * qs_chan_grad_sum, one index a thread
 * (each walks its rows, contiguous); o the column side (NULL or off: factor 1) */
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

/* the column side's sums (map mc) into dalpha: each column's sum over rows, as qs_chan_grad_sum
 * makes it, runs row by row over a band of columns (contiguous reads), so the bits are the same;
 * then each index adds its columns' sums in increasing order */
#define COL_BAND 256
static int col_grad(const float *dy, const float *x, int rows, int cols, const qs_chan_scale *col, qs_chan_map mc,
                    const qs_chan_scale *row, qs_chan_map mr, qs_error *err) {
    double *sum = malloc(sizeof(double) * (size_t)cols);
    QS_RETURN_ERROR_IF(!sum, -ENOMEM, "chan_scale_backward: out of memory for %d column sums", cols);
    const float *ao = on(row) ? row->alpha : NULL;
    const int po = on(row) ? row->pow : 1, nband = (cols + COL_BAND - 1) / COL_BAND;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nband; b++) {
        const int c0 = b * COL_BAND, c1 = c0 + COL_BAND < cols ? c0 + COL_BAND : cols;
        for (int c = c0; c < c1; c++) sum[c] = 0;
        for (int r = 0; r < rows; r++) {
            const double f = ao ? (double)qs_chan_factor(ao[qs_chan_index(mr, r)], po) : 1.0;
            const float *dyr = dy + (size_t)r * cols, *xr = x + (size_t)r * cols;
            for (int c = c0; c < c1; c++) sum[c] += ((double)dyr[c] * (double)xr[c]) * f;
        }
    }
    const int nk = qs_chan_count(mc, cols);
    for (int k = 0; k < nk; k++) {
        const double d = qs_chan_dfactor(col->alpha[k], col->pow);
        if (d == 0.0) continue;
        double acc = 0;
        for (int j = 0; j < mc.mult; j++) acc += sum[qs_chan_elem(mc, k, j)];
        col->dalpha[k] += (float)(d * acc);
    }
    free(sum);
    return 0;
}

int qs_cpu_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                               const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale_backward", rows, cols, row, col, err));
    if (!rows || !cols) return 0;
    const qs_chan_map mr = qs_chan_side_map(row, rows), mc = qs_chan_side_map(col, cols);
    /* the column side's indices sum over rows, the row side's over columns */
    if (on(col) && col->dalpha) QS_FORWARD_IF_ERROR(col_grad(dy, x, rows, cols, col, mc, row, mr, err));
    if (on(row) && row->dalpha) side_grad(dy, x, row, mr, col, mc, cols, (size_t)cols, 1, rows);
    if (dx) scale_into(dx, dy, rows, cols, row, col, 1);
    return 0;
}
