/* quant/reassembly.c - channel disassembly and bipartite assembly (quant/reassembly.h). */
#include "quant/reassembly.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void qs_reasm_free(qs_reasm *r) {
    free(r->src_a), free(r->src_b), free(r->coef);
    memset(r, 0, sizeof *r);
}

static int alloc_map(qs_reasm *r, int C, qs_error *err) {
    memset(r, 0, sizeof *r);
    r->C = C;
    r->src_a = malloc(sizeof(int32_t) * (size_t)C);
    r->src_b = malloc(sizeof(int32_t) * (size_t)C);
    r->coef = malloc(sizeof(float) * (size_t)C);
    if (r->src_a && r->src_b && r->coef) return 0;
    qs_reasm_free(r);
    return qs_error_set(err, -ENOMEM, "out of memory for a reassembly of %d channels", C);
}

int qs_reasm_identity(qs_reasm *r, int C, qs_error *err) {
    QS_FORWARD_IF_ERROR(alloc_map(r, C, err));
    for (int k = 0; k < C; k++) r->src_a[k] = k, r->src_b[k] = -1, r->coef[k] = 1.0f;
    return 0;
}

static int split_count(float xmax, float theta) {
    double t = ceil((double)xmax / theta);
    return t < 1 ? 1 : t > 1e6 ? 1000000 : (int)t;
}

int qs_reasm_candidates(const float *xmax, int C, float *theta, int cap) {
    float mx = xmax[0], mn = xmax[0];
    for (int c = 1; c < C; c++) mx = xmax[c] > mx ? xmax[c] : mx, mn = xmax[c] < mn ? xmax[c] : mn;
    if (!(mx > 0)) return 0;
    double step = (mx - mn) / fmax(100.0, mx / 0.5);
    int n = 0;
    for (double t = mx; t > 0 && n < cap && step > 0; t -= step) {
        long extra = 0;
        for (int c = 0; c < C; c++) extra += split_count(xmax[c], (float)t) - 1;
        if (extra > 0.2 * C) break;
        theta[n++] = (float)t;
    }
    return n;
}

typedef struct edge {
    double d;
    int a, b; /* channel indices */
} edge;

static int by_dist(const void *x, const void *y) {
    const edge *p = x, *q = y;
    if (p->d != q->d) return p->d < q->d ? -1 : 1;
    return p->a - q->a;
}

/* Gram matrices of the activations and (paper distance) of the weight columns, and the columns'
 * sums: ||x_i - x_j||^2 = G_ii + G_jj - 2 G_ij. They do not depend on the threshold, so a search
 * makes them once for all its candidates (the same values as each build making its own). */
typedef struct gram {
    float *gx, *gw, *wsum;
} gram;

static void gram_free(gram *g) {
    free(g->gx), free(g->gw), free(g->wsum);
    memset(g, 0, sizeof *g);
}

static int gram_make(gram *g, const float *x, int T, const float *w, int out, int C, qs_reasm_distance dist, qs_error *err) {
    g->gx = calloc((size_t)C * C, sizeof(float));
    g->gw = dist == QS_REASM_DIST_PAPER ? calloc((size_t)C * C, sizeof(float)) : NULL;
    g->wsum = calloc((size_t)C, sizeof(float));
    if (!g->gx || !g->wsum || (dist == QS_REASM_DIST_PAPER && !g->gw)) {
        gram_free(g);
        return qs_error_set(err, -ENOMEM, "reassembly: out of memory");
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, C, T, 1.0f, x, C, 0.0f, g->gx, C);
    if (g->gw) cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, C, out, 1.0f, w, C, 0.0f, g->gw, C);
    for (int o = 0; o < out; o++)
        for (int c = 0; c < C; c++) g->wsum[c] += w[(size_t)o * C + c];
    return 0;
}

/* qs_reasm_build with the Grams in *gm, made there on first need */
static int build(qs_reasm *r, const float *xmax, int C, float theta, const float *x, int T, const float *w, int out,
                 qs_reasm_distance dist, gram *gm, qs_error *err) {
    QS_RETURN_ERROR_IF(!(theta > 0), QS_EUSAGE, "reassembly threshold %g", (double)theta);
    int *split = malloc(sizeof(int) * (size_t)C), *elig = malloc(sizeof(int) * (size_t)C),
        *partner = malloc(sizeof(int) * (size_t)C);
    float *gx = NULL, *gw = NULL, *wsum = NULL;
    edge *edges = NULL;
    int rc = split && elig && partner ? 0 : qs_error_set(err, -ENOMEM, "reassembly: out of memory");
    long extra = 0;
    int ne = 0, outliers = 0;
    for (int c = 0; !rc && c < C; c++) {
        split[c] = split_count(xmax[c], theta);
        extra += split[c] - 1;
        partner[c] = -1;
        if (split[c] > 1) outliers++;
        else elig[ne++] = c;
    }
    int na = (ne + 1) / 2, nb = ne / 2;
    if (!rc && extra > nb)
        rc = qs_error_set(err, QS_EUSAGE, "reassembly at threshold %g: %ld sub-channels to pay back, %d mergeable pairs",
                          (double)theta, extra, nb);
    if (!rc && extra > 0) {
        edges = malloc(sizeof(edge) * (size_t)(na ? na : 1));
        if (!edges) rc = qs_error_set(err, -ENOMEM, "reassembly: out of memory");
        if (!rc && !gm->gx) rc = gram_make(gm, x, T, w, out, C, dist, err);
        gx = gm->gx, gw = gm->gw, wsum = gm->wsum;
    }
    if (!rc && extra > 0) {
#define UP(g, i, j) ((i) <= (j) ? (g)[(size_t)(i) * C + (j)] : (g)[(size_t)(j) * C + (i)])
        /* every even-position channel's nearest odd-position channel */
        char *taken = calloc((size_t)C, 1);
        for (int ia = 0; ia < na; ia++) {
            int a = elig[2 * ia];
            double best = INFINITY;
            int bb = -1;
            for (int ib = 0; ib < nb; ib++) {
                int b = elig[2 * ib + 1];
                double dx = (double)UP(gx, a, a) + UP(gx, b, b) - 2.0 * UP(gx, a, b);
                if (dx < 0) dx = 0;
                double d = gw ? dx * fmax(0.0, (double)UP(gw, a, a) + UP(gw, b, b) - 2.0 * UP(gw, a, b)) / 4.0
                              : ((double)wsum[a] + wsum[b]) * ((double)wsum[a] + wsum[b]) * dx;
                if (d < best) best = d, bb = b;
            }
            edges[ia] = (edge){best, a, bb};
        }
        qsort(edges, (size_t)na, sizeof(edge), by_dist);
        /* the best edges, each odd channel used once (a taken one sends its even channel to the
         * nearest free odd channel, placed back in order) */
        long merged = 0;
        for (int e = 0; e < na && merged < extra; e++) {
            int a = edges[e].a, b = edges[e].b;
            if (b >= 0 && !taken[b]) {
                taken[b] = 1, partner[a] = b, partner[b] = a, merged++;
                continue;
            }
            double best = INFINITY;
            int bb = -1;
            for (int ib = 0; ib < nb; ib++) {
                int c = elig[2 * ib + 1];
                if (taken[c]) continue;
                double dx = (double)UP(gx, a, c) * -2.0 + UP(gx, a, a) + UP(gx, c, c);
                if (dx < 0) dx = 0;
                double d = gw ? dx * fmax(0.0, (double)UP(gw, a, a) + UP(gw, c, c) - 2.0 * UP(gw, a, c)) / 4.0
                              : ((double)wsum[a] + wsum[c]) * ((double)wsum[a] + wsum[c]) * dx;
                if (d < best) best = d, bb = c;
            }
            if (bb < 0) continue;
            edges[e].b = bb, edges[e].d = best;
            int k = e + 1; /* keep the remaining edges sorted: move this one forward to its place */
            edge moved = edges[e];
            while (k < na && by_dist(&edges[k], &moved) < 0) edges[k - 1] = edges[k], k++;
            edges[k - 1] = moved;
            e--; /* look at position e again */
        }
#undef UP
        free(taken);
        if (merged < extra)
            rc = qs_error_set(err, QS_EUSAGE, "reassembly at threshold %g: only %ld of %ld merges", (double)theta, merged, extra);
    }
    if (!rc) rc = alloc_map(r, C, err);
    if (!rc) {
        int k = 0;
        for (int c = 0; c < C; c++) {
            if (split[c] > 1) {
                for (int t = 0; t < split[c]; t++) r->src_a[k] = c, r->src_b[k] = -1, r->coef[k++] = 1.0f / (float)split[c];
            } else if (partner[c] < 0) {
                r->src_a[k] = c, r->src_b[k] = -1, r->coef[k++] = 1.0f;
            } else if (partner[c] > c) {
                r->src_a[k] = c, r->src_b[k] = partner[c], r->coef[k++] = 0.5f;
            }
        }
        r->theta = theta;
        r->n_outliers = outliers;
        r->n_merged = (int)extra;
        if (k != C) rc = qs_error_set(err, QS_EFORMAT, "reassembly: %d channels instead of %d", k, C), qs_reasm_free(r);
    }
    free(split), free(elig), free(partner), free(edges);
    return rc;
}

int qs_reasm_build(qs_reasm *r, const float *xmax, int C, float theta, const float *x, int T, const float *w, int out,
                   qs_reasm_distance dist, qs_error *err) {
    gram g = {0};
    int rc = build(r, xmax, C, theta, x, T, w, out, dist, &g, err);
    gram_free(&g);
    return rc;
}

void qs_reasm_apply(const qs_reasm *r, const float *x, int T, float *y) {
    const int C = r->C;
    for (size_t t = 0; t < (size_t)T; t++)
        for (int k = 0; k < C; k++) {
            float v = x[t * C + r->src_a[k]];
            if (r->src_b[k] >= 0) v += x[t * C + r->src_b[k]];
            y[t * C + k] = r->coef[k] * v;
        }
}

void qs_reasm_weight(const qs_reasm *r, const float *w, int out, float *wr) {
    const int C = r->C;
    for (size_t o = 0; o < (size_t)out; o++)
        for (int k = 0; k < C; k++) {
            float v = w[o * C + r->src_a[k]];
            if (r->src_b[k] >= 0) v += w[o * C + r->src_b[k]];
            wr[o * C + k] = v;
        }
}

int qs_reasm_search(const float *xmax, int C, const float *x, int T, const float *w, int out, qs_reasm_distance dist,
                    int max_eval, qs_reasm_score_fn score, void *ctx, qs_reasm *best, double *best_score,
                    int *n_candidates, qs_error *err) {
    float cand[512];
    int nc = qs_reasm_candidates(xmax, C, cand, 512);
    if (n_candidates) *n_candidates = nc;
    double b;
    QS_FORWARD_IF_ERROR(score(ctx, NULL, &b, err));
    QS_FORWARD_IF_ERROR(qs_reasm_identity(best, C, err));
    int stride = max_eval > 0 && nc > max_eval ? (nc + max_eval - 1) / max_eval : 1;
    gram g = {0}; /* made by the first candidate that merges, used by all */
    for (int i = 0; i < nc; i += stride) {
        qs_reasm r;
        if (build(&r, xmax, C, cand[i], x, T, w, out, dist, &g, NULL)) continue; /* too few mergeable channels */
        double m;
        int rc = score(ctx, &r, &m, err);
        if (rc) {
            qs_reasm_free(&r);
            qs_reasm_free(best);
            gram_free(&g);
            return rc;
        }
        if (m < b) {
            b = m;
            qs_reasm_free(best);
            *best = r;
        } else {
            qs_reasm_free(&r);
        }
    }
    gram_free(&g);
    if (best_score) *best_score = b;
    return 0;
}
