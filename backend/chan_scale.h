/* backend/chan_scale.h - the index maps and factors of chan_scale (backend.h), shared by the CPU
 * and CUDA implementations so that they give the same bits. */
#ifndef QS_BACKEND_CHAN_SCALE_H
#define QS_BACKEND_CHAN_SCALE_H

#include <math.h>

#include "backend/backend.h"
#include "base/sigmoid.h"

/* a side's map over n elements: k(i) = ((i / hd) / rep) * hh + (i % hd) % hh */
typedef struct qs_chan_map {
    int hd, rep, hh, mult; /* mult: the elements per index, rep * (hd / hh) */
} qs_chan_map;

QS_HOST_DEVICE static inline qs_chan_map qs_chan_map_of(int hd, int rep, int half, int n) {
    qs_chan_map m;
    m.hd = hd > 0 ? hd : n;
    m.rep = hd > 0 && rep > 0 ? rep : 1;
    m.hh = hd > 0 && half ? m.hd / 2 : m.hd;
    m.mult = m.rep * (m.hd / m.hh);
    return m;
}
/* the map of side c over n elements (c NULL or its alpha NULL: the identity) */
static inline qs_chan_map qs_chan_side_map(const qs_chan_scale *c, int n) {
    const int on = c && c->alpha;
    return qs_chan_map_of(on ? c->hd : 0, on ? c->rep : 1, on && c->half, n);
}
/* the number of indices over n elements */
QS_HOST_DEVICE static inline int qs_chan_count(qs_chan_map m, int n) { return n / m.mult; }
QS_HOST_DEVICE static inline int qs_chan_index(qs_chan_map m, int i) {
    return ((i / m.hd) / m.rep) * m.hh + (i % m.hd) % m.hh;
}
/* the j-th (0 <= j < mult) element of index k, in increasing order */
QS_HOST_DEVICE static inline int qs_chan_elem(qs_chan_map m, int k, int j) {
    const int blk = k / m.hh, d = k % m.hh, per = m.hd / m.hh; /* per: 1, or 2 with half */
    return (blk * m.rep + j / per) * m.hd + d + (j % per) * m.hh;
}
/* alpha held to |a| >= QS_CHAN_SCALE_MIN */
QS_HOST_DEVICE static inline float qs_chan_alpha(float a) {
    return fabsf(a) < QS_CHAN_SCALE_MIN ? copysignf(QS_CHAN_SCALE_MIN, a) : a;
}
QS_HOST_DEVICE static inline float qs_chan_factor(float a, int pow) {
    const float h = qs_chan_alpha(a);
    return pow > 0 ? h : 1.0f / h;
}
/* d f / d a (0 where a is held) */
QS_HOST_DEVICE static inline double qs_chan_dfactor(float a, int pow) {
    if (!(fabsf(a) >= QS_CHAN_SCALE_MIN)) return 0.0;
    return pow > 0 ? 1.0 : -1.0 / ((double)a * (double)a);
}

/* index k's sum in chan_scale_backward (before D): over the elements e of index k on its side
 * (map ms) in increasing order, each e's sum over the other side's n_o elements o (scales ao,
 * power po, map mo; ao NULL: factor 1) in increasing order, element (e, o) at e * se + o * so */
QS_HOST_DEVICE static inline double qs_chan_grad_sum(const float *dy, const float *x, qs_chan_map ms, int k,
                                                     const float *ao, int po, qs_chan_map mo, int n_o, size_t se,
                                                     size_t so) {
    double acc = 0;
    for (int j = 0; j < ms.mult; j++) {
        const size_t e = (size_t)qs_chan_elem(ms, k, j) * se;
        double s = 0;
        for (int o = 0; o < n_o; o++) {
            const double f = ao ? (double)qs_chan_factor(ao[qs_chan_index(mo, o)], po) : 1.0;
            s += ((double)dy[e + (size_t)o * so] * (double)x[e + (size_t)o * so]) * f;
        }
        acc += s;
    }
    return acc;
}

/* the op's arguments (host code): 0 or QS_EUSAGE naming op */
static inline int qs_chan_scale_check(const char *op, int rows, int cols, const qs_chan_scale *row,
                                      const qs_chan_scale *col, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 0, QS_EUSAGE, "%s: [%d, %d]", op, rows, cols);
    const qs_chan_scale *side[2] = {row, col};
    const int n[2] = {rows, cols};
    for (int s = 0; s < 2; s++) {
        if (!side[s] || !side[s]->alpha || !n[s]) continue;
        const qs_chan_scale *c = side[s];
        const qs_chan_map m = qs_chan_map_of(c->hd, c->rep, c->half, n[s]);
        QS_RETURN_ERROR_IF((c->pow != 1 && c->pow != -1) || c->hd < 0 || c->rep < 0 || m.hh < 1 || m.hd % m.hh ||
                               n[s] % (m.hd * m.rep),
                           QS_EUSAGE, "%s: a %s scale of power %d over %d elements by heads of %d (%d per group%s)", op,
                           s ? "column" : "row", c->pow, n[s], c->hd, c->rep, c->half ? ", halves tied" : "");
    }
    return 0;
}

#endif
