/* backend/lwc_grid.h - the grid of SliderQuant's learnable weight clipping (backend.h
 * lwc_weight), shared by the CPU and CUDA implementations so that they give the same bits: a
 * group's scale and zero point from its range and clipping logits, and the scale's derivatives
 * in them (0 where the scale is clamped). */
#ifndef QS_BACKEND_LWC_GRID_H
#define QS_BACKEND_LWC_GRID_H

#include <math.h>

#include "base/sigmoid.h"

typedef struct qs_lwc_grid {
    float scale, zero;
    double ds_dgam, ds_dbet;
} qs_lwc_grid;

QS_HOST_DEVICE static inline qs_lwc_grid qs_lwc_grid_of(float mx, float mn, float gam, float bet, int bits, int sym) {
    const float sg = qs_sigmoidf(gam), sb = qs_sigmoidf(bet), hi = sg * mx, lo = sb * mn;
    const double dsg = (double)sg * (1.0 - (double)sg), dsb = (double)sb * (1.0 - (double)sb);
    qs_lwc_grid g;
    if (sym) {
        const float qh = (float)((1 << (bits - 1)) - 1), ah = fabsf(hi), al = fabsf(lo);
        g.scale = (ah >= al ? ah : al) / qh;
        g.ds_dgam = ah >= al ? dsg * fabs((double)mx) / qh : 0.0;
        g.ds_dbet = ah >= al ? 0.0 : dsb * fabs((double)mn) / qh;
    } else {
        const float qmax = (float)((1 << bits) - 1);
        g.scale = (hi - lo) / qmax;
        g.ds_dgam = dsg * (double)mx / qmax;
        g.ds_dbet = -dsb * (double)mn / qmax;
    }
    if (g.scale < 1e-5f || g.scale > 1e4f) { /* quant/affine.h's clamp */
        g.scale = g.scale < 1e-5f ? 1e-5f : 1e4f;
        g.ds_dgam = g.ds_dbet = 0.0;
    }
    g.zero = sym ? (float)(1 << (bits - 1)) : rintf(-lo / g.scale);
    return g;
}

#endif
