/* cpu/cpu_chan_scale.c - SliderQuant's per-channel smoothing scales (backend.h chan_scale): the
 * scaled weights and their backward to the scales. Each sum runs in backend.h's order (a
 * column's over rows, a row's over columns, then an index's over its elements), one index a
 * thread: any thread count gives the same bits, those of gpu/cuda_chan_scale.cu. */
#include <stdlib.h>

#include "backend/chan_scale.h"
#include "cpu/cpu_internal.h"

static int on(const qs_chan_scale *c) { return c && c->alpha; }

int qs_cpu_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                      const qs_chan_scale *col, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale", rows, cols, row, col, err));
    if (!rows || !cols) return 0;
    const qs_chan_map mr = qs_chan_map_of(on(row) ? row->hd : 0, on(row) ? row->rep : 1, on(row) && row->half, rows);
    const qs_chan_map mc = qs_chan_map_of(on(col) ? col->hd : 0, on(col) ? col->rep : 1, on(col) && col->half, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float fr = on(row) ? qs_chan_factor(row->alpha[qs_chan_index(mr, r)], row->pow) : 1.0f;
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            float v = x[i];
            if (on(row)) v = v * fr;
            if (on(col)) v = v * qs_chan_factor(col->alpha[qs_chan_index(mc, c)], col->pow);
            y[i] = v;
        }
    }
    return 0;
}

int qs_cpu_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                               const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err) {
    (void)be;
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale_backward", rows, cols, row, col, err));
    const qs_chan_map mr = qs_chan_map_of(on(row) ? row->hd : 0, on(row) ? row->rep : 1, on(row) && row->half, rows);
    const qs_chan_map mc = qs_chan_map_of(on(col) ? col->hd : 0, on(col) ? col->rep : 1, on(col) && col->half, cols);
    if (dx)
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float fr = on(row) ? qs_chan_factor(row->alpha[qs_chan_index(mr, r)], row->pow) : 1.0f;
            for (int c = 0; c < cols; c++) {
                const size_t i = (size_t)r * cols + c;
                float v = dy[i];
                if (on(row)) v = v * fr;
                if (on(col)) v = v * qs_chan_factor(col->alpha[qs_chan_index(mc, c)], col->pow);
                dx[i] += v;
            }
        }
    if (on(col) && col->dalpha) {
        const int nk = qs_chan_count(mc, cols);
#pragma omp parallel for schedule(static)
        for (int k = 0; k < nk; k++) {
            double acc = 0;
            for (int j = 0; j < mc.mult; j++) {
                const int c = qs_chan_elem(mc, k, j);
                double s = 0;
                for (int r = 0; r < rows; r++) {
                    const double fr = on(row) ? (double)qs_chan_factor(row->alpha[qs_chan_index(mr, r)], row->pow) : 1.0;
                    s += ((double)dy[(size_t)r * cols + c] * (double)x[(size_t)r * cols + c]) * fr;
                }
                acc += s;
            }
            const double d = qs_chan_dfactor(col->alpha[k], col->pow);
            if (d != 0.0) col->dalpha[k] += (float)(d * acc);
        }
    }
    if (on(row) && row->dalpha) {
        const int nk = qs_chan_count(mr, rows);
#pragma omp parallel for schedule(static)
        for (int k = 0; k < nk; k++) {
            double acc = 0;
            for (int j = 0; j < mr.mult; j++) {
                const int r = qs_chan_elem(mr, k, j);
                double s = 0;
                for (int c = 0; c < cols; c++) {
                    const double fc = on(col) ? (double)qs_chan_factor(col->alpha[qs_chan_index(mc, c)], col->pow) : 1.0;
                    s += ((double)dy[(size_t)r * cols + c] * (double)x[(size_t)r * cols + c]) * fc;
                }
                acc += s;
            }
            const double d = qs_chan_dfactor(row->alpha[k], row->pow);
            if (d != 0.0) row->dalpha[k] += (float)(d * acc);
        }
    }
    return 0;
}
