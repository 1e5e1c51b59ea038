/* quant/reassembly.h - QLLM's adaptive channel reassembly (../shared/METHODS.md), the
 * device-independent part: disassembly of outlier channels for a threshold, bipartite assembly
 * of similar channels back to C, the reassembled consumer weight, and the threshold candidates.
 *
 * The result is a gather from C input channels to C output channels: output k is
 *   coef[k] * (x[src_a[k]] + (src_b[k] >= 0 ? x[src_b[k]] : 0))
 * - a sub-channel of an outlier c split T_c ways: src_a = c, coef = 1 / T_c, weight column W_c
 *   (repeated unscaled: exact);
 * - a merged pair (i, j): coef = 1/2, weight column W_i + W_j (error (x_i - x_j)(W_i - W_j) / 2);
 * - any other channel: coef = 1, its own column.
 * Sub-channels of outliers are never merged. */
#ifndef QS_QUANT_REASSEMBLY_H
#define QS_QUANT_REASSEMBLY_H

#include <stdint.h>

#include "base/error.h"

typedef enum qs_reasm_distance {
    QS_REASM_DIST_PAPER, /* ||x_i - x_j||^2 ||W_i - W_j||^2 / 4 (paper, Eq. 5) */
    QS_REASM_DIST_CODE   /* ((sum_o W[o,i] + sum_o W[o,j]) * ||x_i - x_j||)^2 (released code) */
} qs_reasm_distance;

typedef struct qs_reasm {
    int C;
    int32_t *src_a, *src_b; /* [C] */
    float *coef;            /* [C] */
    float theta;            /* 0: identity (no reassembly) */
    int n_outliers;         /* channels split */
    int n_merged;           /* pairs merged (= sub-channels added) */
} qs_reasm;

/* the identity gather (no reassembly) */
int qs_reasm_identity(qs_reasm *r, int C, qs_error *err);
/* Reassembly for threshold theta > 0: T_c = max(1, ceil(xmax_c / theta)); the sum(T_c) - C extra
 * sub-channels are paid back by merging that many pairs of non-outlier channels chosen by
 * bipartite soft matching (even / odd positions among the mergeable channels; each even channel
 * takes its nearest odd one; edges by ascending distance; a pair is used once). x [T, C] are
 * calibration activations (for distances), w [out, C] the consumer weight. Error when there are
 * not enough mergeable channels. */
int qs_reasm_build(qs_reasm *r, const float *xmax, int C, float theta, const float *x, int T, const float *w, int out,
                   qs_reasm_distance dist, qs_error *err);
void qs_reasm_free(qs_reasm *r); /* a zeroed *r is fine */

/* y [T, C] = gather(x [T, C]) */
void qs_reasm_apply(const qs_reasm *r, const float *x, int T, float *y);
/* wr [out, C]: column k = W[:, a] or W[:, a] + W[:, b] for a merged pair */
void qs_reasm_weight(const qs_reasm *r, const float *w, int out, float *wr);

/* Threshold candidates: from max(xmax) downward in steps of (max - min) / max(100, max / 0.5),
 * stopping before sum(T_c) - C exceeds 0.2 C. Writes at most cap values; returns the count. */
int qs_reasm_candidates(const float *xmax, int C, float *theta, int cap);

/* Scores a reassembly (NULL: none) by the site's output error; lower is better. */
typedef int (*qs_reasm_score_fn)(void *ctx, const qs_reasm *r, double *score, qs_error *err);

/* The adaptive threshold search: scores "no reassembly" and up to max_eval of the candidates
 * (evenly spaced when there are more), and returns in *best the lowest-scoring one (the
 * identity with theta 0 when nothing beats "no reassembly"; ties keep the earlier). */
int qs_reasm_search(const float *xmax, int C, const float *x, int T, const float *w, int out, qs_reasm_distance dist,
                    int max_eval, qs_reasm_score_fn score, void *ctx, qs_reasm *best, double *best_score,
                    int *n_candidates, qs_error *err);

#endif
