/* tests/test_slider.c - SliderQuant's parts below the pipeline:
 *  1. the window schedule (quant/slider.h): the phases spelled out for 8, 5 and 4 blocks, and
 *     for 1..64 blocks that starts and ends never decrease, windows hold 1..4 consecutive blocks,
 *     every block is in one, no window repeats, and the count agrees;
 *  2. the clipping op (backend.h lwc_weight) on the CPU: with saturated logits it is RTN
 *     (qs_quant_rtn's codes, scales and zeros, and their dequantization, bit for bit; asymmetric
 *     and symmetric); at the initial logits, the grid of the formula written out here, the clamp
 *     biting at both edges (counted), y written over w, row errors as documented;
 *  3. its backward: dw = dy inside the grid and 0 where the clamp bites; dgam, dbet against
 *     central differences (double) of sum(dy .* y) with the rounding, the zero point and the
 *     range frozen (the function whose exact gradient is the straight-through one), tolerance
 *     1e-4 relative (double sums of fp32 terms: ~1e-7); dgam, dbet accumulate;
 *  4. cpu-fenced gives the CPU's bits (CUDA: test_backend_ops cuda compares it there);
 *  5. the trainer's SliderQuant form (model/llama_train.h): with random B, A and logits (W3 g8,
 *     and W4 sym g8 A6, q/k/v biases) every gradient, dgam and dbeta included, against finite
 *     differences of the float64 reference block with the quantizers frozen (tests/ref_block.c
 *     ref_slider), tolerance TOL (ref_block.h); a step moves the logits and not the frozen norm
 *     gammas; after a fresh optimizer the step count restarts. With the smoothing scales
 *     (opts.smooth: W3, W4 sym A6, and W4 A8 with biases, where v->o and q/k are off): at a = 1
 *     the forward's bits are the plain form's; with random scales in [0.6, 1.4] every gradient,
 *     dalpha of each site included, against the reference (which writes the sites out itself);
 *     the merged block (its weights and scaled gammas) computes the training forward;
 *  6. the smoothing op (backend.h chan_scale) on GQA and RoPE-tied maps: forward and dx as
 *     written out, dalpha against central differences and, bit for bit, against backend.h's
 *     sums written out (also over 700 columns, several of the CPU's bands), a held scale,
 *     cpu-fenced's bits. */
#include <math.h>
#include <string.h>

#include "backend/registry.h"
#include "base/sigmoid.h"
#include "model/llama_forward.h"
#include "quant/affine.h"
#include "quant/slider.h"
#include "tests/ref_block.h"
#include "tests/testutil.h"

static void test_schedule(void) {
    const int want8[][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {3, 4}, {4, 7}, {5, 7}, {6, 7}, {7, 7}};
    const int want5[][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 4}, {2, 4}, {3, 4}, {4, 4}};
    const int want4[][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 3}, {2, 3}, {3, 3}};
    const struct { int L, n; const int (*w)[2]; } cases[] = {{8, 9, want8}, {5, 8, want5}, {4, 7, want4}};
    qs_slider_window w[300];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = qs_slider_schedule(cases[c].L, w);
        CHECKF(n == cases[c].n, "%d blocks: %d windows", cases[c].L, n);
        for (int i = 0; i < n && i < cases[c].n; i++)
            CHECKF(w[i].first == cases[c].w[i][0] && w[i].last == cases[c].w[i][1], "%d blocks: window %d is [%d, %d]",
                   cases[c].L, i, w[i].first, w[i].last);
    }
    /* 30 blocks (SmolLM2): the middle phase slides [3,4] .. [25,26] */
    int n = qs_slider_schedule(30, w);
    CHECK(n == 4 + 23 + 4 && w[4].first == 3 && w[26].first == 25 && w[26].last == 26 && w[27].first == 26);
    CHECK(qs_slider_count(0) == 0 && qs_slider_schedule(0, w) == 0);
    for (int L = 1; L <= 64; L++) {
        n = qs_slider_schedule(L, w);
        CHECKF(n == qs_slider_count(L) && n >= 1, "%d blocks: %d windows, count %d", L, n, qs_slider_count(L));
        for (int i = 0; i < n; i++) {
            const int k = w[i].last - w[i].first + 1;
            CHECKF(k >= 1 && k <= QS_SLIDER_MAX_WINDOW && w[i].first >= 0 && w[i].last < L, "%d blocks: window %d [%d, %d]",
                   L, i, w[i].first, w[i].last);
            if (i) {
                CHECKF(w[i].first >= w[i - 1].first && w[i].last >= w[i - 1].last, "%d blocks: window %d goes back", L, i);
                CHECKF(w[i].first != w[i - 1].first || w[i].last != w[i - 1].last, "%d blocks: window %d repeats", L, i);
            }
        }
        for (int b = 0; b < L; b++) CHECKF(qs_slider_last_window(w, n, b) >= 0, "%d blocks: block %d in no window", L, b);
    }
}

typedef struct op_case {
    int rows, cols, group, bits, sym;
} op_case;

static float *up(qs_backend *be, const void *h, size_t bytes) {
    float *d = be->ops->alloc(be, bytes);
    qs_error err = {0};
    CHECKF(d && be->ops->upload(be, d, h, bytes, &err) == 0, "upload %s", err.msg);
    return d;
}
static void down(qs_backend *be, void *h, const void *d, size_t bytes) {
    qs_error err = {0};
    CHECKF(be->ops->download(be, h, d, bytes, &err) == 0, "download %s", err.msg);
}

/* the grid written out from backend.h's formula (double where it says so) */
static void grid_ref(const float *x, int n, float gam, float bet, const op_case *k, float *sc, float *z, double *dg,
                     double *db) {
    float mx = x[0], mn = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx, mn = x[i] < mn ? x[i] : mn;
    const float sg = qs_sigmoidf(gam), sb = qs_sigmoidf(bet), hi = sg * mx, lo = sb * mn;
    if (k->sym) {
        const float qh = (float)((1 << (k->bits - 1)) - 1);
        const int g = fabsf(hi) >= fabsf(lo);
        *sc = (g ? fabsf(hi) : fabsf(lo)) / qh;
        *dg = g ? (double)sg * (1 - (double)sg) * fabs((double)mx) / qh : 0;
        *db = g ? 0 : (double)sb * (1 - (double)sb) * fabs((double)mn) / qh;
        *z = (float)(1 << (k->bits - 1));
    } else {
        const float qmax = (float)((1 << k->bits) - 1);
        *sc = (hi - lo) / qmax;
        *dg = (double)sg * (1 - (double)sg) * mx / qmax;
        *db = -(double)sb * (1 - (double)sb) * mn / qmax;
        *z = rintf(-lo / *sc);
    }
}

/* sum(dy .* y) of one group with the grid at logits (gam, bet) and everything else frozen at
 * (gam0, bet0): the scale moves, the rounding offsets, clamped codes and zero do not */
static double frozen_loss(const float *x, const float *dy, int n, double gam, double bet, float gam0, float bet0,
                          const op_case *k) {
    float mx = x[0], mn = x[0], sc0, z0;
    double dg, db;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx, mn = x[i] < mn ? x[i] : mn;
    grid_ref(x, n, gam0, bet0, k, &sc0, &z0, &dg, &db);
    const double sg = 1 / (1 + exp(-gam)), sb = 1 / (1 + exp(-bet)), hi = sg * mx, lo = sb * mn;
    const double s = k->sym ? fmax(fabs(hi), fabs(lo)) / ((1 << (k->bits - 1)) - 1) : (hi - lo) / ((1 << k->bits) - 1);
    const float qmax = (float)((1 << k->bits) - 1);
    double l = 0;
    for (int i = 0; i < n; i++) {
        const float t = x[i] / sc0, rt = rintf(t), v = rt + z0;
        const int inside = v >= 0 && v <= qmax;
        const double y = inside ? x[i] + s * ((double)rt - (double)t) : s * ((double)(v > qmax ? qmax : 0) - z0);
        l += dy[i] * y;
    }
    return l;
}

static void test_op(qs_backend *be, qs_backend *fenced, const op_case *k) {
    const int rows = k->rows, cols = k->cols, g = k->group > 0 ? k->group : cols, ng = (cols + g - 1) / g;
    const size_t n = (size_t)rows * cols, qn = (size_t)rows * ng;
    qs_error err = {0};
    float *w = qs_test_rvec(n, 0.3f), *dy = qs_test_rvec(n, 1.0f), *lg = malloc(sizeof(float) * qn),
          *lb = malloc(sizeof(float) * qn), *sat = malloc(sizeof(float) * qn);
    const float l0 = k->sym ? 1.0f : 4.0f; /* symmetric: clipped harder, so that the clamp bites */
    for (size_t i = 0; i < qn; i++) lg[i] = l0 + 0.5f * qs_test_rnd(), lb[i] = l0 + 0.5f * qs_test_rnd(), sat[i] = 100.0f;
    /* 1. saturated: RTN */
    qs_qconfig qc = {.bits = k->bits, .group = k->group, .sym = k->sym};
    uint8_t *rc = malloc(n), *c1 = malloc(n);
    float *rs = malloc(sizeof(float) * qn), *rz = malloc(sizeof(float) * qn), *deq = malloc(sizeof(float) * n);
    CHECK(qs_quant_rtn(w, rows, cols, &qc, rc, rs, rz, "w", &err) == 0);
    qs_dequant(rc, rs, rz, rows, cols, k->group, deq);
    float *dw = up(be, w, sizeof(float) * n), *dsat = up(be, sat, sizeof(float) * qn), *dlg = up(be, lg, sizeof(float) * qn),
          *dlb = up(be, lb, sizeof(float) * qn), *dyy = be->ops->alloc(be, sizeof(float) * n),
          *dsc = be->ops->alloc(be, sizeof(float) * qn), *dz = be->ops->alloc(be, sizeof(float) * qn);
    uint8_t *dc = be->ops->alloc(be, n);
    double *de = be->ops->alloc(be, sizeof(double) * rows);
    CHECKF(be->ops->lwc_weight(be, dyy, dc, dsc, dz, de, dw, dsat, dsat, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0,
           "%s", err.msg);
    float *y = malloc(sizeof(float) * n), *sc = malloc(sizeof(float) * qn), *z = malloc(sizeof(float) * qn);
    double *re = malloc(sizeof(double) * rows);
    down(be, y, dyy, sizeof(float) * n), down(be, c1, dc, n), down(be, sc, dsc, sizeof(float) * qn), down(be, z, dz, sizeof(float) * qn);
    CHECKF(!memcmp(c1, rc, n) && !memcmp(sc, rs, sizeof(float) * qn) && !memcmp(z, rz, sizeof(float) * qn) &&
               !memcmp(y, deq, sizeof(float) * n),
           "[%d, %d] g%d W%d%s: saturated clipping is not RTN", rows, cols, k->group, k->bits, k->sym ? " sym" : "");
    /* 2. at logits near 4 (1 with sym): the grid, codes, y, row errors; the clamp bites */
    CHECKF(be->ops->lwc_weight(be, dyy, dc, dsc, dz, de, dw, dlg, dlb, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0,
           "%s", err.msg);
    down(be, y, dyy, sizeof(float) * n), down(be, c1, dc, n), down(be, sc, dsc, sizeof(float) * qn);
    down(be, z, dz, sizeof(float) * qn), down(be, re, de, sizeof(double) * rows);
    const float qmax = (float)((1 << k->bits) - 1);
    int bad = 0, lo_edge = 0, hi_edge = 0, bad_err = 0;
    for (int r = 0; r < rows; r++) {
        double e = 0;
        for (int j = 0; j < ng; j++) {
            const int c0 = j * g, m = cols - c0 < g ? cols - c0 : g;
            const size_t q = (size_t)r * ng + j;
            float s, zz;
            double dg, db;
            grid_ref(w + (size_t)r * cols + c0, m, lg[q], lb[q], k, &s, &zz, &dg, &db);
            bad += s != sc[q] || zz != z[q];
            for (int c = c0; c < c0 + m; c++) {
                const size_t i = (size_t)r * cols + c;
                const float v = rintf(w[i] / s) + zz, cl = v < 0 ? 0 : v > qmax ? qmax : v;
                lo_edge += v < 0, hi_edge += v > qmax;
                bad += c1[i] != (uint8_t)cl || y[i] != s * (cl - zz);
                e += ((double)y[i] - w[i]) * ((double)y[i] - w[i]);
            }
        }
        bad_err += e != re[r];
    }
    CHECKF(!bad && !bad_err, "[%d, %d] g%d W%d: %d grid/code mismatches, %d row errors", rows, cols, k->group, k->bits, bad,
           bad_err);
    CHECKF(hi_edge > 0 && (k->sym || lo_edge > 0), "the clamp never bit (low %d, high %d)", lo_edge, hi_edge);
    float *dw2 = up(be, w, sizeof(float) * n);
    CHECK(be->ops->lwc_weight(be, dw2, NULL, NULL, NULL, NULL, dw2, dlg, dlb, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0);
    float *y2 = malloc(sizeof(float) * n);
    down(be, y2, dw2, sizeof(float) * n);
    CHECK(!memcmp(y, y2, sizeof(float) * n)); /* y over w */
    /* 3. backward */
    float *ddy = up(be, dy, sizeof(float) * n), *dgg = up(be, lg, sizeof(float) * qn), *dbb = up(be, lb, sizeof(float) * qn);
    float zero_q[4096] = {0};
    float *gg = up(be, zero_q, sizeof(float) * qn), *gb = up(be, zero_q, sizeof(float) * qn);
    (void)dgg, (void)dbb;
    CHECK(be->ops->lwc_weight_backward(be, ddy, gg, gb, ddy, dw, dlg, dlb, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0);
    float *gw = malloc(sizeof(float) * n), *hg = malloc(sizeof(float) * qn), *hb = malloc(sizeof(float) * qn);
    down(be, gw, ddy, sizeof(float) * n), down(be, hg, gg, sizeof(float) * qn), down(be, hb, gb, sizeof(float) * qn);
    int bad_mask = 0;
    double worst = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < ng; j++) {
            const int c0 = j * g, m = cols - c0 < g ? cols - c0 : g;
            const size_t q = (size_t)r * ng + j;
            const float *x = w + (size_t)r * cols + c0, *d = dy + (size_t)r * cols + c0;
            for (int c = 0; c < m; c++) {
                const float v = rintf(x[c] / sc[q]) + z[q];
                bad_mask += gw[(size_t)r * cols + c0 + c] != (v >= 0 && v <= qmax ? d[c] : 0.0f);
            }
            const double h = 1e-4;
            const double fg = (frozen_loss(x, d, m, lg[q] + h, lb[q], lg[q], lb[q], k) -
                               frozen_loss(x, d, m, lg[q] - h, lb[q], lg[q], lb[q], k)) / (2 * h);
            const double fb = (frozen_loss(x, d, m, lg[q], lb[q] + h, lg[q], lb[q], k) -
                               frozen_loss(x, d, m, lg[q], lb[q] - h, lg[q], lb[q], k)) / (2 * h);
            const double eg = fabs(hg[q] - fg) / (1e-3 + fabs(fg)), eb = fabs(hb[q] - fb) / (1e-3 + fabs(fb));
            worst = eg > worst ? eg : worst;
            worst = eb > worst ? eb : worst;
        }
    printf("lwc [%d, %d] g%d W%d%s: clamp low %d high %d; dgam, dbet vs finite differences: worst %.2e\n", rows, cols,
           k->group, k->bits, k->sym ? " sym" : "", lo_edge, hi_edge, worst);
    CHECKF(!bad_mask, "%d dw outside the straight-through mask", bad_mask);
    CHECKF(worst < 1e-4, "dgam/dbet off by %.2e", worst);
    /* accumulate */
    CHECK(be->ops->upload(be, ddy, dy, sizeof(float) * n, &err) == 0);
    CHECK(be->ops->lwc_weight_backward(be, ddy, gg, gb, ddy, dw, dlg, dlb, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0);
    float *hg2 = malloc(sizeof(float) * qn);
    down(be, hg2, gg, sizeof(float) * qn);
    int acc_bad = 0;
    for (size_t i = 0; i < qn; i++) acc_bad += fabsf(hg2[i] - 2 * hg[i]) > 1e-6f * (1 + fabsf(hg[i])) && hg[i] != 0;
    CHECKF(!acc_bad, "dgam does not accumulate (%d)", acc_bad);
    /* 4. cpu-fenced: the same bits */
    float *fw = up(fenced, w, sizeof(float) * n), *fg_ = up(fenced, lg, sizeof(float) * qn), *fb_ = up(fenced, lb, sizeof(float) * qn),
          *fy = fenced->ops->alloc(fenced, sizeof(float) * n);
    CHECK(fenced->ops->lwc_weight(fenced, fy, NULL, NULL, NULL, NULL, fw, fg_, fb_, rows, cols, k->group, k->bits, k->sym, cols, &err) == 0);
    down(fenced, y2, fy, sizeof(float) * n);
    CHECK(!memcmp(y, y2, sizeof(float) * n));
    fenced->ops->free(fenced, fw), fenced->ops->free(fenced, fg_), fenced->ops->free(fenced, fb_), fenced->ops->free(fenced, fy);
    void *dev[] = {dw, dsat, dlg, dlb, dyy, dsc, dz, dc, de, dw2, ddy, dgg, dbb, gg, gb};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) be->ops->free(be, dev[i]);
    void *host[] = {w, dy, lg, lb, sat, rc, c1, rs, rz, deq, y, sc, z, re, y2, gw, hg, hb, hg2};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++) free(host[i]);
}

/* ======== 6. the smoothing scales' op ======== */

/* a side's index of element i, written out from backend.h (not backend/chan_scale.h) */
static int side_index(const qs_chan_scale *c, int i, int n) {
    const int hd = c->hd ? c->hd : n, rep = c->hd ? c->rep : 1, hh = c->hd && c->half ? hd / 2 : hd;
    return ((i / hd) / rep) * hh + (i % hd) % hh;
}
static double side_f(const qs_chan_scale *c, const double *a, int i, int n) {
    if (!c) return 1.0;
    double v = a[side_index(c, i, n)];
    v = fabs(v) < 1e-2 ? copysign(1e-2, v) : v;
    return c->pow > 0 ? v : 1.0 / v;
}
/* sum(dy .* x .* fr .* fc) in double over the scales ar, ac */
static double scaled_dot(const float *dy, const float *x, int rows, int cols, const qs_chan_scale *row,
                         const double *ar, const qs_chan_scale *col, const double *ac) {
    double f = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            f += (double)dy[(size_t)r * cols + c] * x[(size_t)r * cols + c] * side_f(row, ar, r, rows) * side_f(col, ac, c, cols);
    return f;
}

/* a side's float factor (backend.h: held to |a| >= 1e-2, a or 1 / a) and D = d factor / d a */
static float side_ff(float a, int pow) {
    const float h = fabsf(a) < 1e-2f ? copysignf(1e-2f, a) : a;
    return pow > 0 ? h : 1.0f / h;
}
/* dalpha[k] of side s (side 0: rows, 1: columns; host scales as, ao) in backend.h's order: over
 * the elements of index k in increasing order, each one's sum over the other side's elements in
 * increasing order of (double dy * double x) * double factor, times D, rounded once */
static float ordered_dalpha(const float *dy, const float *x, int rows, int cols, int side, const qs_chan_scale *s,
                            const float *as, const qs_chan_scale *o, const float *ao, int k) {
    const int ns = side ? cols : rows, no = side ? rows : cols;
    const float a = as[k];
    if (fabsf(a) < 1e-2f) return 0.0f;
    const double d = s->pow > 0 ? 1.0 : -1.0 / ((double)a * (double)a);
    double acc = 0;
    for (int e = 0; e < ns; e++) {
        if (side_index(s, e, ns) != k) continue;
        double sum = 0;
        for (int j = 0; j < no; j++) {
            const size_t i = side ? (size_t)j * cols + e : (size_t)e * cols + j;
            const double f = o ? (double)side_ff(ao[side_index(o, j, no)], o->pow) : 1.0;
            sum += ((double)dy[i] * (double)x[i]) * f;
        }
        acc += sum;
    }
    return (float)(d * acc);
}
/* the column side's dalpha over 3 bands of 256 columns (cpu/cpu_chan_scale.c), GQA-mapped,
 * against backend.h's sums written out: the same bits, with the rows scaled and unscaled (the
 * double sums' order rarely shows through the one float rounding; their precision does) */
static void test_chan_scale_wide(qs_backend *be) {
    const int rows = 5, cols = 700, nc = 700 / 5;
    const qs_chan_scale col0 = {.pow = 1, .hd = 4, .rep = 5}, row0 = {.pow = -1};
    float *x = qs_test_rvec((size_t)rows * cols, 1), *dy = qs_test_rvec((size_t)rows * cols, 1);
    float *ac = qs_test_rvec((size_t)nc, 0.4f), *ar = qs_test_rvec((size_t)rows, 0.4f), *gc = malloc(sizeof(float) * nc);
    for (int i = 0; i < nc; i++) ac[i] += 1.0f;
    for (int i = 0; i < rows; i++) ar[i] += 1.0f;
    const size_t n = sizeof(float) * rows * cols;
    float *xd = up(be, x, n), *dyd = up(be, dy, n), *zc = calloc(nc, sizeof(float));
    int same = 1;
    for (int with_rows = 0; with_rows < 2; with_rows++) {
        qs_chan_scale col = col0, row = row0;
        qs_error err = {0};
        col.alpha = up(be, ac, sizeof(float) * nc), col.dalpha = up(be, zc, sizeof(float) * nc);
        row.alpha = up(be, ar, sizeof(float) * rows);
        CHECKF(be->ops->chan_scale_backward(be, NULL, dyd, xd, rows, cols, with_rows ? &row : NULL, &col, &err) == 0,
               "%s", err.msg);
        down(be, gc, col.dalpha, sizeof(float) * nc);
        for (int k = 0; k < nc; k++)
            same = same && gc[k] == ordered_dalpha(dy, x, rows, cols, 1, &col0, ac, with_rows ? &row0 : NULL, ar, k);
        be->ops->free(be, (void *)col.alpha), be->ops->free(be, col.dalpha), be->ops->free(be, (void *)row.alpha);
    }
    CHECKF(same, "chan_scale_backward's column dalpha over %d columns is not backend.h's sums", cols);
    printf("chan_scale_backward: column dalpha over %d columns (3 bands), rows scaled and not: backend.h's sums, bit "
           "for bit\n", cols);
    be->ops->free(be, xd), be->ops->free(be, dyd);
    free(x), free(dy), free(ac), free(ar), free(gc), free(zc);
}

/* chan_scale on the sites' maps (GQA columns of o, RoPE-tied rows of q): y against the product
 * written out (float, backend.h's order: the same bits); dx += dy fr fc likewise; dalpha of
 * both sides against central differences (double, h 1e-4: the function is a rational of degree
 * 1 in each scale, the differences good to ~1e-9) of sum(dy .* y), 1e-5 relative (double sums,
 * one float rounding); a scale held at 1e-2 (0.004) gets no gradient; cpu-fenced's bits. */
static void test_chan_scale(qs_backend *be, qs_backend *fenced) {
    const int rows = 24, cols = 32; /* rows: q of 6 heads of 4 over 3 kv heads; cols: 8 heads of 4 over 2 */
    const qs_chan_scale row0 = {.pow = -1, .hd = 4, .rep = 2, .half = 1}, col0 = {.pow = 1, .hd = 4, .rep = 4};
    const int nr = 3 * 2, nc = 2 * 4;
    float *x = qs_test_rvec((size_t)rows * cols, 1), *dy = qs_test_rvec((size_t)rows * cols, 1);
    float *ar = qs_test_rvec((size_t)nr, 0.4f), *ac = qs_test_rvec((size_t)nc, 0.4f);
    for (int i = 0; i < nr; i++) ar[i] += 1.0f;
    for (int i = 0; i < nc; i++) ac[i] += i == 3 ? -1.0f : 1.0f; /* a negative scale */
    ar[4] = 0.004f;                                              /* held at 1e-2 */
    qs_backend *bes[2] = {be, fenced};
    float *got[2][4] = {{0}};
    for (int b = 0; b < 2; b++) {
        qs_backend *e = bes[b];
        qs_error err = {0};
        const size_t n = sizeof(float) * rows * cols;
        float *dx = up(e, x, n), *dyd = up(e, dy, n), *yd = e->ops->alloc(e, n), *zr = calloc(nr, sizeof(float)),
              *zc = calloc(nc, sizeof(float));
        qs_chan_scale row = row0, col = col0;
        row.alpha = up(e, ar, sizeof(float) * nr), col.alpha = up(e, ac, sizeof(float) * nc);
        row.dalpha = up(e, zr, sizeof(float) * nr), col.dalpha = up(e, zc, sizeof(float) * nc);
        CHECKF(e->ops->chan_scale(e, yd, dx, rows, cols, &row, &col, &err) == 0, "%s", err.msg);
        float *gx = up(e, x, n); /* dx += dy fr fc over a copy of x */
        CHECKF(e->ops->chan_scale_backward(e, gx, dyd, dx, rows, cols, &row, &col, &err) == 0, "%s", err.msg);
        got[b][0] = malloc(n), got[b][1] = malloc(n), got[b][2] = malloc(sizeof(float) * nr), got[b][3] = malloc(sizeof(float) * nc);
        down(e, got[b][0], yd, n), down(e, got[b][1], gx, n);
        down(e, got[b][2], row.dalpha, sizeof(float) * nr), down(e, got[b][3], col.dalpha, sizeof(float) * nc);
        CHECK(e->ops->chan_scale(e, dx, dx, rows, cols, &row, NULL, &err) == 0); /* in place, one side */
        float *inpl = malloc(n);
        down(e, inpl, dx, n);
        int ok = 1;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                const float fr = 1.0f / (ar[side_index(&row0, r, rows)] == 0.004f ? 0.01f : ar[side_index(&row0, r, rows)]);
                ok = ok && inpl[(size_t)r * cols + c] == x[(size_t)r * cols + c] * fr;
            }
        CHECKF(ok, "chan_scale in place over one side is not x / a");
        free(inpl);
        qs_error e2 = {0};
        const qs_chan_scale bad = {.alpha = row.alpha, .pow = -1, .hd = 5, .rep = 1};
        CHECK(e->ops->chan_scale(e, yd, dx, rows, cols, &bad, NULL, &e2) == QS_EUSAGE); /* 24 rows by heads of 5 */
        void *d[] = {dx, dyd, yd, gx, (void *)row.alpha, (void *)col.alpha, row.dalpha, col.dalpha};
        for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) e->ops->free(e, d[i]);
        free(zr), free(zc);
    }
    /* the forward and dx written out */
    int fw = 1, bx = 1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            float a = ar[side_index(&row0, r, rows)], fr = 1.0f / (fabsf(a) < 1e-2f ? 1e-2f : a), fc = ac[side_index(&col0, c, cols)];
            fw = fw && got[0][0][i] == (x[i] * fr) * fc;
            bx = bx && got[0][1][i] == x[i] + (dy[i] * fr) * fc;
        }
    CHECKF(fw, "chan_scale differs from (x * fr) * fc");
    CHECKF(bx, "chan_scale_backward's dx is not dx + (dy * fr) * fc");
    /* dalpha against central differences */
    double *dr = malloc(sizeof(double) * nr), *dc = malloc(sizeof(double) * nc), worst = 0;
    for (int i = 0; i < nr; i++) dr[i] = ar[i];
    for (int i = 0; i < nc; i++) dc[i] = ac[i];
    for (int side = 0; side < 2; side++) {
        double *a = side ? dc : dr;
        const int na = side ? nc : nr;
        for (int k = 0; k < na; k++) {
            const double a0 = a[k], h = 1e-4;
            a[k] = a0 + h;
            double fp = scaled_dot(dy, x, rows, cols, &row0, dr, &col0, dc);
            a[k] = a0 - h;
            double fm = scaled_dot(dy, x, rows, cols, &row0, dr, &col0, dc);
            a[k] = a0;
            double fd = side == 0 && k == 4 ? 0.0 : (fp - fm) / (2 * h), g = got[0][side ? 3 : 2][k];
            double e = fabs(g - fd) / (1 + fabs(fd));
            worst = e > worst ? e : worst;
        }
    }
    CHECKF(got[0][2][4] == 0.0f, "a scale held at 1e-2 got a gradient (%g)", got[0][2][4]);
    int ordered = 1;
    for (int k = 0; k < nr; k++)
        ordered = ordered && got[0][2][k] == ordered_dalpha(dy, x, rows, cols, 0, &row0, ar, &col0, ac, k);
    for (int k = 0; k < nc; k++)
        ordered = ordered && got[0][3][k] == ordered_dalpha(dy, x, rows, cols, 1, &col0, ac, &row0, ar, k);
    CHECKF(ordered, "chan_scale_backward's dalpha is not backend.h's sums written out");
    CHECKF(worst <= 1e-5, "chan_scale_backward dalpha: worst rel error %.3g against central differences", worst);
    int same = 1;
    for (int k = 0; k < 4; k++)
        same = same && !memcmp(got[0][k], got[1][k], sizeof(float) * (k < 2 ? (size_t)rows * cols : k == 2 ? (size_t)nr : (size_t)nc));
    CHECKF(same, "cpu-fenced's chan_scale differs from the CPU's");
    printf("chan_scale: q rows (GQA, RoPE-tied) / a, o columns (GQA) * a: forward and dx as written; dalpha worst %.2e "
           "against central differences; held scale passes none; cpu-fenced identical\n",
           worst);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 4; k++) free(got[b][k]);
    free(x), free(dy), free(ar), free(ac), free(dr), free(dc);
}

/* ======== 7. the first pass's partial quantizers ======== */

/* lwc_weight with qcols (a prefix of each row, mid-group) against the full op: the same grid, y
 * the full op's before qcols and w after; its backward dw = dy after qcols and the logits'
 * gradient that of the full op with dy zeroed there (those columns add nothing), bit for bit;
 * codes refused. act_quant_part against the formula written out (act_fq_part), and with qn =
 * seg act_quant's bits; cpu-fenced's bits for both. */
static void test_partial(qs_backend *be, qs_backend *fenced) {
    const int rows = 12, cols = 96, group = 32, bits = 3, qc = 41, ng = 3;
    const size_t n = (size_t)rows * cols, qn = (size_t)rows * ng;
    qs_error err = {0};
    float *w = qs_test_rvec(n, 0.3f), *dy = qs_test_rvec(n, 1), *lg = qs_test_rvec(2 * qn, 1);
    for (size_t i = 0; i < 2 * qn; i++) lg[i] += 2.0f;
    float *dw = up(be, w, sizeof(float) * n), *dl = up(be, lg, sizeof(float) * qn), *db = up(be, lg + qn, sizeof(float) * qn);
    float *y1 = be->ops->alloc(be, sizeof(float) * n), *y2 = be->ops->alloc(be, sizeof(float) * n);
    float *s1 = be->ops->alloc(be, sizeof(float) * qn), *s2 = be->ops->alloc(be, sizeof(float) * qn);
    CHECK(be->ops->lwc_weight(be, y1, NULL, s1, NULL, NULL, dw, dl, db, rows, cols, group, bits, 0, cols, &err) == 0);
    CHECK(be->ops->lwc_weight(be, y2, NULL, s2, NULL, NULL, dw, dl, db, rows, cols, group, bits, 0, qc, &err) == 0);
    uint8_t *dc = be->ops->alloc(be, n);
    CHECK(be->ops->lwc_weight(be, y2, dc, NULL, NULL, NULL, dw, dl, db, rows, cols, group, bits, 0, qc, &err) == QS_EUSAGE);
    float *h1 = malloc(sizeof(float) * n), *h2 = malloc(sizeof(float) * n), *g1 = malloc(sizeof(float) * qn),
          *g2 = malloc(sizeof(float) * qn);
    down(be, h1, y1, sizeof(float) * n), down(be, h2, y2, sizeof(float) * n);
    down(be, g1, s1, sizeof(float) * qn), down(be, g2, s2, sizeof(float) * qn);
    int ok = !memcmp(g1, g2, sizeof(float) * qn);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            ok = ok && (c < qc ? h2[i] == h1[i] : h2[i] == w[i]);
        }
    CHECKF(ok, "lwc_weight over the first %d columns is not the full op there and w after", qc);
    /* backward */
    float *dz = malloc(sizeof(float) * n);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dz[(size_t)r * cols + c] = c < qc ? dy[(size_t)r * cols + c] : 0.0f;
    float *d1 = up(be, dz, sizeof(float) * n), *d2 = up(be, dy, sizeof(float) * n), *zq = calloc(qn, sizeof(float));
    float *gg1 = up(be, zq, sizeof(float) * qn), *gb1 = up(be, zq, sizeof(float) * qn), *gg2 = up(be, zq, sizeof(float) * qn),
          *gb2 = up(be, zq, sizeof(float) * qn);
    CHECK(be->ops->lwc_weight_backward(be, d1, gg1, gb1, d1, dw, dl, db, rows, cols, group, bits, 0, cols, &err) == 0);
    CHECK(be->ops->lwc_weight_backward(be, d2, gg2, gb2, d2, dw, dl, db, rows, cols, group, bits, 0, qc, &err) == 0);
    float *e1 = malloc(sizeof(float) * n), *e2 = malloc(sizeof(float) * n);
    down(be, e1, d1, sizeof(float) * n), down(be, e2, d2, sizeof(float) * n);
    int okb = 1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const size_t i = (size_t)r * cols + c;
            okb = okb && (c < qc ? e2[i] == e1[i] : e2[i] == dy[i]);
        }
    down(be, g1, gg1, sizeof(float) * qn), down(be, g2, gg2, sizeof(float) * qn);
    okb = okb && !memcmp(g1, g2, sizeof(float) * qn);
    down(be, g1, gb1, sizeof(float) * qn), down(be, g2, gb2, sizeof(float) * qn);
    okb = okb && !memcmp(g1, g2, sizeof(float) * qn);
    CHECKF(okb, "lwc_weight_backward over the first %d columns differs from the full op's on dy zeroed after them", qc);
    /* act_quant_part */
    const int T = 5, C = 48, seg = 16, q2 = 8;
    float *a = qs_test_rvec((size_t)T * C, 2), *want = malloc(sizeof(float) * T * C), *got = malloc(sizeof(float) * T * C);
    memcpy(want, a, sizeof(float) * T * C);
    for (int t = 0; t < T; t++)
        for (int s0 = 0; s0 < C; s0 += seg) act_fq_part(want + (size_t)t * C + s0, seg, q2, 4);
    qs_backend *bes[2] = {be, fenced};
    for (int b = 0; b < 2; b++) {
        float *da = up(bes[b], a, sizeof(float) * T * C);
        CHECK(bes[b]->ops->act_quant_part(bes[b], da, T, C, seg, q2, 4, &err) == 0);
        down(bes[b], got, da, sizeof(float) * T * C);
        CHECKF(!memcmp(got, want, sizeof(float) * T * C), "%s: act_quant_part differs from the formula", bes[b]->ops->name);
        CHECK(bes[b]->ops->upload(bes[b], da, a, sizeof(float) * T * C, &err) == 0);
        CHECK(bes[b]->ops->act_quant_part(bes[b], da, T, C, seg, seg, 4, &err) == 0);
        down(bes[b], got, da, sizeof(float) * T * C);
        CHECK(bes[b]->ops->upload(bes[b], da, a, sizeof(float) * T * C, &err) == 0);
        CHECK(bes[b]->ops->act_quant(bes[b], da, T, C, seg, 4, &err) == 0);
        down(bes[b], want, da, sizeof(float) * T * C);
        CHECKF(!memcmp(got, want, sizeof(float) * T * C), "%s: act_quant_part of all is not act_quant", bes[b]->ops->name);
        CHECK(bes[b]->ops->act_quant_part(bes[b], da, T, C, seg, seg + 1, 4, &err) == QS_EUSAGE);
        bes[b]->ops->free(bes[b], da);
        memcpy(want, a, sizeof(float) * T * C);
        for (int t = 0; t < T; t++)
            for (int s0 = 0; s0 < C; s0 += seg) act_fq_part(want + (size_t)t * C + s0, seg, q2, 4);
    }
    /* cpu-fenced: the partial lwc */
    float *fw = up(fenced, w, sizeof(float) * n), *fl = up(fenced, lg, sizeof(float) * qn), *fb = up(fenced, lg + qn, sizeof(float) * qn);
    float *fy = fenced->ops->alloc(fenced, sizeof(float) * n);
    CHECK(fenced->ops->lwc_weight(fenced, fy, NULL, NULL, NULL, NULL, fw, fl, fb, rows, cols, group, bits, 0, qc, &err) == 0);
    down(fenced, h1, fy, sizeof(float) * n);
    CHECKF(!memcmp(h1, h2, sizeof(float) * n), "cpu-fenced's partial lwc_weight differs from the CPU's");
    printf("partial quantizers: lwc_weight over %d of %d columns (grid, values, gradients) and act_quant_part (%d of %d) as "
           "specified; cpu-fenced identical\n", qc, cols, q2, seg);
    void *bd[] = {dw, dl, db, y1, y2, s1, s2, dc, d1, d2, gg1, gb1, gg2, gb2};
    for (size_t i = 0; i < sizeof bd / sizeof bd[0]; i++) be->ops->free(be, bd[i]);
    void *fd[] = {fw, fl, fb, fy};
    for (size_t i = 0; i < sizeof fd / sizeof fd[0]; i++) fenced->ops->free(fenced, fd[i]);
    void *hh[] = {w, dy, lg, h1, h2, g1, g2, dz, zq, e1, e2, a, want, got};
    for (size_t i = 0; i < sizeof hh / sizeof hh[0]; i++) free(hh[i]);
}

/* ======== 5. the trainer's form ======== */

static void test_trainer(qs_backend *be, int bits, int sym, int abits, int smooth, int bias, int half) {
    const int n_win = 2, L = 7, T = 14, H = 16;
    qs_error err = {0};
    block b;
    block_make(&b, be, bias);
    float *xh = qs_test_rvec((size_t)T * H, 1), *douth = qs_test_rvec((size_t)T * H, 1);
    float *d_x = up_new(be, xh, (size_t)T * H), *d_dout = up_new(be, douth, (size_t)T * H);
    float *d_out = be->ops->alloc(be, sizeof(float) * T * H), *d_dx = be->ops->alloc(be, sizeof(float) * T * H);
    double *x = to_d(xh, (size_t)T * H);
    qs_llama_train_opts o;
    qs_llama_train_opts_default(&o);
    o.form = QS_LORA_SLIDER, o.wbits = bits, o.group = 8, o.sym = sym, o.abits = abits, o.seed = 9, o.clip_lr_mult = 100;
    o.smooth = smooth, o.smooth_lr_mult = 10, o.half = half;
    qs_llama_train tr;
    train_setup(&tr, &b, &o, T, be, 1);
    float *out1 = NULL; /* smoothing at a = 1: the plain form's bits */
    if (smooth) {
        qs_llama_train plain;
        qs_llama_train_opts po = o;
        po.smooth = 0;
        qs_test_seed = 77;
        train_setup(&plain, &b, &po, T, be, 1);
        CHECK(be->ops->copy(be, plain.param, tr.param, sizeof(float) * tr.n_lora, &err) == 0); /* the same A, B */
        for (int p = 0; p < QS_PROJ_N; p++) {
            const size_t qn = sizeof(float) * (size_t)tr.out[p] * tr.ng[p];
            CHECK(be->ops->copy(be, plain.gam[p], tr.gam[p], qn, &err) == 0 && be->ops->copy(be, plain.bet[p], tr.bet[p], qn, &err) == 0);
        }
        CHECKF(qs_llama_train_forward(&plain, d_x, d_out, n_win, L, &err) == 0, "%s", err.msg);
        out1 = down_new(be, d_out, (size_t)T * H);
        CHECKF(qs_llama_train_forward(&tr, d_x, d_out, n_win, L, &err) == 0, "%s", err.msg);
        float *o2 = down_new(be, d_out, (size_t)T * H);
        CHECKF(!memcmp(out1, o2, sizeof(float) * T * H), "smoothing at a = 1 changed the forward's bits");
        free(o2);
        qs_llama_train_free(&plain);
        const int want[QS_SMOOTH_N] = {H, H, bias ? 0 : 8, bias ? 0 : 4, 24};
        for (int k = 0; k < QS_SMOOTH_N; k++)
            CHECKF(tr.n_sm[k] == want[k], "smoothing site %d: %d scales, not %d", k, tr.n_sm[k], want[k]);
        for (int k = 0; k < QS_SMOOTH_N; k++) { /* scales in [0.6, 1.4] */
            if (!tr.n_sm[k]) continue;
            float *a = qs_test_rvec((size_t)tr.n_sm[k], 0.4f);
            for (int i = 0; i < tr.n_sm[k]; i++) a[i] += 1.0f;
            CHECK(be->ops->upload(be, tr.sm[k], a, sizeof(float) * tr.n_sm[k], &err) == 0);
            free(a);
        }
    }
    for (int p = 0; p < QS_PROJ_N; p++) { /* logits around 2: the clipping bites */
        const size_t qn = (size_t)tr.out[p] * tr.ng[p];
        float *g = qs_test_rvec(2 * qn, 1.0f);
        for (size_t i = 0; i < 2 * qn; i++) g[i] += 2.0f;
        CHECK(be->ops->upload(be, tr.gam[p], g, sizeof(float) * qn, &err) == 0);
        CHECK(be->ops->upload(be, tr.bet[p], g + qn, sizeof(float) * qn, &err) == 0);
        free(g);
    }
    run_fwd_bwd(&tr, d_x, d_out, d_dout, d_dx, n_win, L);
    grads g;
    grads_get(&g, &tr, d_dx, (size_t)T * H);
    ref R;
    ref_init(&R, &b, &tr);
    R.mode = REF_RECORD;
    double *out = malloc(sizeof(double) * T * H), sc;
    ref_forward(&R, x, n_win, L, out, NULL);
    float *got = down_new(be, d_out, (size_t)T * H);
    double fe = rel_err(got, out, (size_t)T * H, &sc);
    CHECKF(fe <= TOL, "SliderQuant forward: rel error %.3g against the float64 reference", fe);
    R.mode = REF_APPLY;
    char what[32];
    snprintf(what, sizeof what, "slider W%d%s A%d%s%s", bits, sym ? "s" : "", abits, smooth ? " sm" : "", half ? " half" : "");
    double worst = check_grads(what, &R, &g, x, n_win, L, douth);
    CHECKF(worst <= TOL, "%s: worst gradient rel error %.3g", what, worst);
    printf("%s g8 (STE, clipping%s%s): forward rel error %.2e, worst gradient error %.2e (dgam, dbeta%s included)\n",
           what, smooth ? ", smoothing" : "", bias ? ", biases" : "", fe, worst, smooth ? ", dalpha" : "");
    float *g0 = down_new(be, tr.gamma[0], H), *c0 = down_new(be, tr.gam[QS_PROJ_Q], 4);
    CHECK(qs_llama_train_step(&tr, 1e-3f, &err) == 0 && tr.step == 1);
    float *g1 = down_new(be, tr.gamma[0], H), *c1 = down_new(be, tr.gam[QS_PROJ_Q], 4);
    CHECKF(!memcmp(g0, g1, sizeof(float) * H), "a step moved the frozen norm gamma");
    CHECKF(memcmp(c0, c1, sizeof(float) * 4), "a step did not move the clipping logits");
    free(g0), free(g1), free(c0), free(c1);
    if (smooth) { /* the deployed block (the codes' grid, the merged weights and
                   * gammas) computes what the training forward does */
        CHECK(qs_llama_train_forward(&tr, d_x, d_out, n_win, L, &err) == 0);
        float *trained = down_new(be, d_out, (size_t)T * H);
        CHECK(qs_llama_train_merge(&tr, &b.dw, &err) == 0);
        qs_llama_scratch s;
        CHECK(qs_llama_scratch_init(&s, &b.c, T, be, &err) == 0);
        b.dw.abits = abits, b.dw.a_half = half;
        CHECK(be->ops->copy(be, d_out, d_x, sizeof(float) * T * H, &err) == 0);
        CHECKF(qs_llama_block_forward(be, &b.c, &b.dw, d_out, n_win, L, &s, &err) == 0, "%s", err.msg);
        float *dep = down_new(be, d_out, (size_t)T * H);
        double de = 0, sc2 = 0;
        for (int i = 0; i < T * H; i++) de = fmax(de, fabs((double)dep[i] - trained[i])), sc2 = fmax(sc2, fabs(trained[i]));
        CHECKF(de <= 1e-5 * (1 + sc2), "%s: the merged block's forward is %.3g from the training forward's", what, de);
        printf("%s: merged block forward within %.2e of the training forward (scale %.2f)\n", what, de, sc2);
        qs_llama_scratch_free(&s, be);
        free(trained), free(dep);
        qs_llama_train_free(&tr);
        free(out), free(got), free(x), free(xh), free(douth), free(out1);
        grads_free(&g);
        ref_free(&R);
        be->ops->free(be, d_x), be->ops->free(be, d_dout), be->ops->free(be, d_out), be->ops->free(be, d_dx);
        block_free(&b, be);
        return;
    }
    CHECK(qs_llama_train_reset_optim(&tr, &err) == 0 && tr.step == 0);
    free(out), free(got), free(x), free(xh), free(douth);
    grads_free(&g);
    ref_free(&R);
    qs_llama_train_free(&tr);
    be->ops->free(be, d_x), be->ops->free(be, d_dout), be->ops->free(be, d_out), be->ops->free(be, d_dx);
    block_free(&b, be);
}

int main(void) {
    test_schedule();
    qs_backend *be = NULL, *fenced = NULL;
    qs_error err = {0};
    CHECKF(qs_backend_create(&be, "cpu", 0, &err) == 0, "%s", err.msg);
    CHECKF(qs_backend_create(&fenced, "cpu-fenced", 0, &err) == 0, "%s", err.msg);
    qs_test_seed = 20261202;
    const op_case cases[] = {{24, 96, 32, 3, 0}, {16, 70, 32, 4, 0}, {12, 64, -1, 2, 0}, {20, 128, 64, 4, 1}};
    for (size_t i = 0; be && fenced && i < sizeof cases / sizeof cases[0]; i++) test_op(be, fenced, &cases[i]);
    if (be && fenced) test_chan_scale(be, fenced);
    if (be) test_chan_scale_wide(be);
    if (be && fenced) test_partial(be, fenced);
    if (be) test_trainer(be, 3, 0, 16, 0, 1, 0), test_trainer(be, 4, 1, 6, 0, 1, 0);
    if (be) test_trainer(be, 3, 0, 16, 1, 0, 0), test_trainer(be, 4, 1, 6, 1, 0, 0), test_trainer(be, 4, 0, 8, 1, 1, 0);
    if (be) test_trainer(be, 4, 0, 6, 1, 0, 1), test_trainer(be, 3, 0, 16, 1, 0, 1);
    /* bad sizes refused */
    if (be) CHECK(be->ops->lwc_weight(be, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2, 4, -1, 9, 0, 4, &err) == QS_EUSAGE);
    qs_backend_free(be);
    qs_backend_free(fenced);
    return qs_test_result();
}
