/* QLLM channel reassembly (quant/reassembly.h): disassembly is exact, assembly returns to C
 * channels and never merges outlier sub-channels, the search returns the lowest-scoring
 * candidate, and on a layer with outlier channels reassembly lowers the W4A4 output error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/affine.h"
#include "quant/reassembly.h"
#include "testutil.h"

static uint64_t seed = 7;
static double urand(void) {
    seed ^= seed >> 12, seed ^= seed << 25, seed ^= seed >> 27;
    return (double)((seed * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

enum { C = 32, T = 256, OUT = 12 };

static void matmul(const float *x, int t, const float *w, float *y) { /* y [t, OUT] = x w^T in double */
    for (int i = 0; i < t; i++)
        for (int o = 0; o < OUT; o++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)x[i * C + c] * w[o * C + c];
            y[i * OUT + o] = (float)s;
        }
}

static void xmax_of(const float *x, float *xm) {
    for (int c = 0; c < C; c++) xm[c] = 0;
    for (int i = 0; i < T; i++)
        for (int c = 0; c < C; c++) xm[c] = fmaxf(xm[c], fabsf(x[i * C + c]));
}

/* per-token 4-bit activations, per-channel 4-bit weights: the W4A4 output error of a gather */
typedef struct score_ctx { const float *x, *w, *y; } score_ctx;
static void act_quant(float *x, int t, int bits) {
    qs_qconfig q = {.bits = bits, .group = -1};
    uint8_t codes[C];
    float s, z;
    for (int i = 0; i < t; i++) {
        qs_quant_rtn(x + i * C, 1, C, &q, codes, &s, &z, "x", NULL);
        qs_dequant(codes, &s, &z, 1, C, -1, x + i * C);
    }
}
static int score(void *ctx, const qs_reasm *r, double *out, qs_error *err) {
    const score_ctx *c = ctx;
    float *x = malloc(sizeof(float) * T * C), *w = malloc(sizeof(float) * OUT * C), *y = malloc(sizeof(float) * T * OUT);
    if (r) qs_reasm_apply(r, c->x, T, x), qs_reasm_weight(r, c->w, OUT, w);
    else memcpy(x, c->x, sizeof(float) * T * C), memcpy(w, c->w, sizeof(float) * OUT * C);
    act_quant(x, T, 4);
    qs_qconfig q = {.bits = 4, .group = -1};
    uint8_t codes[OUT * C];
    float s[OUT], z[OUT];
    if (qs_quant_rtn(w, OUT, C, &q, codes, s, z, "w", err)) return -1;
    qs_dequant(codes, s, z, OUT, C, -1, w);
    matmul(x, T, w, y);
    double e = 0;
    for (int i = 0; i < T * OUT; i++) e += ((double)y[i] - c->y[i]) * ((double)y[i] - c->y[i]);
    *out = e / (T * OUT);
    free(x), free(w), free(y);
    return 0;
}

int main(void) {
    qs_error err = {0};
    float *x = malloc(sizeof(float) * T * C), *w = malloc(sizeof(float) * OUT * C);
    float *y = malloc(sizeof(float) * T * OUT), *y2 = malloc(sizeof(float) * T * OUT);
    float *xr = malloc(sizeof(float) * T * C), *wr = malloc(sizeof(float) * OUT * C), xm[C];
    /* channels 0..3: outliers (x 3); 4..31 in duplicate pairs (4,5), (6,7), ...: a merged pair
     * of equal activations is exact too, so the whole reassembly must reproduce the output */
    for (int i = 0; i < T; i++)
        for (int c = 0; c < C; c++) {
            double v = nrand() * (c < 4 ? 3.0 : 1.0);
            x[i * C + c] = c >= 4 && c % 2 ? x[i * C + c - 1] : (float)v;
        }
    for (int i = 0; i < OUT * C; i++) w[i] = (float)nrand();
    xmax_of(x, xm);
    matmul(x, T, w, y);
    float big = 0;
    for (int c = 4; c < C; c++) big = fmaxf(big, xm[c]);
    float theta = big * 1.01f; /* every outlier splits, no other channel does */
    qs_reasm r;
    if (qs_reasm_build(&r, xm, C, theta, x, T, w, OUT, QS_REASM_DIST_PAPER, &err)) {
        CHECKF(0, "%s", err.msg);
        return qs_test_result();
    }
    qs_reasm_apply(&r, x, T, xr);
    qs_reasm_weight(&r, w, OUT, wr);
    matmul(xr, T, wr, y2);
    double worst = 0, scale = 0;
    for (int i = 0; i < T * OUT; i++) worst = fmax(worst, fabs((double)y2[i] - y[i])), scale = fmax(scale, fabs((double)y[i]));
    /* float rounding of x / T_c and of the pair sums only: 1e-5 of the output scale */
    CHECKF(worst <= 1e-5 * scale, "disassembly + exact merges changed the output by %.3g (scale %.3g)", worst, scale);
    float after = 0;
    for (int i = 0; i < T * C; i++) after = fmaxf(after, fabsf(xr[i]));
    CHECKF(after <= theta * 1.0001f, "largest activation %.4g after reassembly, threshold %.4g", after, theta);
    /* C channels; every source accounted for; outliers never merged; merged pairs are the duplicates */
    int uses[C] = {0}, split = 0;
    for (int k = 0; k < C; k++) {
        int a = r.src_a[k], b = r.src_b[k];
        uses[a]++;
        if (b >= 0) {
            uses[b]++;
            CHECKF(a >= 4 && b >= 4, "outlier channel merged (%d, %d)", a, b);
            CHECKF(b == a + 1 && a % 2 == 0, "merged (%d, %d), not a duplicate pair", a, b);
            CHECK(r.coef[k] == 0.5f);
        }
    }
    for (int c = 0; c < C; c++) {
        int want = c < 4 ? (int)ceilf(xm[c] / theta) : 1;
        if (c < 4) split += want - 1;
        CHECKF(uses[c] == want, "channel %d used %d times, expected %d", c, uses[c], want);
    }
    CHECK(r.n_outliers == 4 && r.n_merged == split);
    printf("reassembly: %d outliers split into %d extra channels, %d pairs merged, output error %.3g of %.3g\n",
           r.n_outliers, split, r.n_merged, worst, scale);
    qs_reasm_free(&r);
    /* too many sub-channels for the mergeable pairs: a clear error */
    CHECK(qs_reasm_build(&r, xm, C, big * 0.05f, x, T, w, OUT, QS_REASM_DIST_PAPER, &err) != 0 && strstr(err.msg, "mergeable"));
    /* the released code's distance works too */
    CHECK(qs_reasm_build(&r, xm, C, theta, x, T, w, OUT, QS_REASM_DIST_CODE, &err) == 0);
    qs_reasm_free(&r);
    /* the search: on distinct (not duplicated) channels, compare with scoring every candidate here */
    /* outliers 8x; the other channels in near-duplicate pairs (as many small LLM channels are),
     * so that merges cost little and splitting the outliers pays */
    for (int i = 0; i < T; i++)
        for (int c = 0; c < C; c++)
            x[i * C + c] = c >= 4 && c % 2 ? x[i * C + c - 1] + (float)(0.05 * nrand()) : (float)(nrand() * (c < 4 ? 8.0 : 1.0));
    xmax_of(x, xm);
    matmul(x, T, w, y);
    score_ctx sc = {x, w, y};
    qs_reasm best;
    double best_score, none;
    int nc;
    CHECK(qs_reasm_search(xm, C, x, T, w, OUT, QS_REASM_DIST_PAPER, 0, score, &sc, &best, &best_score, &nc, &err) == 0);
    CHECK(score(&sc, NULL, &none, &err) == 0);
    float cand[512];
    int n2 = qs_reasm_candidates(xm, C, cand, 512);
    CHECK(n2 == nc && nc > 0);
    double lowest = none;
    float lowest_theta = 0;
    for (int i = 0; i < n2; i++) {
        qs_reasm rr;
        if (qs_reasm_build(&rr, xm, C, cand[i], x, T, w, OUT, QS_REASM_DIST_PAPER, NULL)) continue;
        double m;
        CHECK(score(&sc, &rr, &m, &err) == 0);
        if (m < lowest) lowest = m, lowest_theta = cand[i];
        qs_reasm_free(&rr);
    }
    CHECKF(best_score == lowest && best.theta == lowest_theta, "search chose theta %g (%.5g), lowest is theta %g (%.5g)",
           (double)best.theta, best_score, (double)lowest_theta, lowest);
    /* with 8x outlier channels and cheap merges, reassembly must beat "no reassembly" at W4A4 */
    CHECKF(best_score < 0.8 * none, "W4A4 error with reassembly %.4g vs none %.4g", best_score, none);
    printf("search: %d candidates, chose theta %.3g, W4A4 output MSE %.4g vs %.4g without reassembly\n", nc,
           (double)best.theta, best_score, none);
    /* candidates stop before 20%% extra channels */
    for (int i = 0; i < n2; i++) {
        long extra = 0;
        for (int c = 0; c < C; c++) extra += (long)fmaxf(1.0f, ceilf(xm[c] / cand[i])) - 1;
        CHECK(extra <= 0.2 * C);
    }
    qs_reasm_free(&best);
    free(x), free(w), free(y), free(y2), free(xr), free(wr);
    return qs_test_result();
}
