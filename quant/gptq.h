/* quant/gptq.h - GPTQ (Frantar et al. 2022) for one linear layer, as ../shared/METHODS.md states
 * it, and the Hessian accumulator it needs.
 *
 * H = (2/N) sum_t x_t x_t^T over the N calibration tokens of the layer's input, kept as a
 * running mean in fp32 (as the reference code: H *= N / (N + t); N += t; H += (2/N) X^T X).
 * Quantization: dead inputs (H_jj = 0) get H_jj = 1 and a zero weight column; optional
 * act-order (columns by descending diag H, ties by index); dampening H_jj += damp * mean(diag H);
 * U = the upper Cholesky factor of H^-1 (LAPACK spotrf / spotri / spotrf); columns in lazy
 * batches of block_size: each column is quantized (for groups, a group's quantizer is taken
 * from the current, error-updated weights when the column starts it, or from the original W
 * with static groups), its error divided by U_ii is spread over the batch's later columns, and
 * after the batch one GEMM updates every later column. Deterministic for any thread count. */
#ifndef QS_QUANT_GPTQ_H
#define QS_QUANT_GPTQ_H

#include <stdint.h>

#include "base/error.h"
#include "quant/affine.h"

typedef struct qs_gptq_opts {
    qs_qconfig q;      /* bits 2..8, group (<= 0: per output channel), sym */
    float damp;        /* fraction of mean(diag H); 0 -> 0.01 */
    int block_size;    /* lazy batch columns; 0 -> 128; with groups rounded to a multiple of the group */
    int act_order;     /* 1: columns by descending diag(H) */
    int static_groups; /* 1 (with groups): group quantizers from the original W, before permuting */
    /* optional: a backend with a gptq_batch op runs the column batches and their lazy updates
     * in its memory (the weights and the factor are uploaded once, codes and quantizers come
     * back), and with a cholesky_inverse op (a GPU's solver) it factors the Hessian too; NULL or
     * a backend without them: the host (OpenMP rows, OpenBLAS, LAPACK) */
    struct qs_backend *be;
    /* optional, with such a backend and its gptq_hessian op: the Hessian in backend memory (upper
     * triangle, [cols, cols], not changed); the H argument is then not read (may be NULL) */
    const float *h_be;
    /* optional, with such a backend: the layer's weights in its memory [rows, cols], which then
     * receive the dequantized weights there too (the same bits as w: the batches' own results,
     * back in the original column order, with no host upload; without act-order the batches
     * run in them); stats->w_be_done says so */
    float *w_be;
    /* with w_be and act-order: the batches run in w_be too (the host's permuted copy uploaded
     * into it, the host's dequantized weights uploaded back): no second copy of the layer in
     * backend memory, two uploads of it instead (a tight --gpu-mem) */
    int in_place_reorder;
    /* with w_be: w need not receive the dequantized weights where w_be does (stats->w_be_done;
     * w's values are then undefined on return): the host skips a pass over the layer */
    int w_be_only;
    /* with w_be_only, where w_be receives the dequantized weights: the codes are left in
     * backend memory, *codes_be (the caller's to download and free), and codes is not written */
    uint8_t **codes_be;
} qs_gptq_opts;

typedef struct qs_hessian {
    int n;
    long long count; /* tokens added */
    float *h;        /* [n, n] row-major; the upper triangle is kept (qs_gptq_quantize mirrors it) */
} qs_hessian;

int qs_hessian_init(qs_hessian *h, int n, qs_error *err);
/* adds tokens rows of x [tokens, n] (leading dimension ld >= n) */
int qs_hessian_add(qs_hessian *h, const float *x, int tokens, int ld, qs_error *err);
void qs_hessian_free(qs_hessian *h); /* a zeroed or freed *h is fine */

typedef struct qs_gptq_stats {
    double loss;     /* sum over weights of (w - q)^2 / U_ii^2 / 2, the reference's Losses */
    float damp_used; /* the dampening fraction that made H positive definite */
    int w_be_done;   /* o->w_be holds the dequantized weights */
} qs_gptq_stats;

/* GPTQ of W [rows = out, cols = in] (row-major) in place: on return w holds the dequantized
 * weights. H [cols, cols] (upper triangle read) is consumed; with o->h_be the backend's Hessian
 * is used instead (and kept). codes [rows, cols] one per byte in
 * the original column order; scales, zeros [rows, groups]; g_idx [cols] the group of each
 * original column (c / group, or with act-order and dynamic groups the column's position in
 * the processed order / group; 0 for per-channel). w[r][c] = (codes[r][c] - zeros[r][g]) *
 * scales[r][g], g = g_idx[c]. Errors (naming `what`): NaN/Inf in W or H, H not positive
 * definite even after raising the dampening x10 three times. stats may be NULL. */
int qs_gptq_quantize(float *w, int rows, int cols, float *H, const qs_gptq_opts *o, uint8_t *codes, float *scales,
                     float *zeros, int32_t *g_idx, qs_gptq_stats *stats, const char *what, qs_error *err);

/* One lazy batch's columns i1 .. i2-1 on the host, rows in parallel (OpenMP): the column loop
 * of the backends' gptq_batch op (backend/backend.h, where the arguments are described), without
 * its lazy update of the later columns. */
void qs_gptq_batch_rows(float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                        const qs_qconfig *q, int static_groups, float *scales, float *zeros, uint8_t *codes,
                        float *err1, double *loss);

/* Backend memory qs_gptq_quantize takes on a backend with gptq_batch for a [rows, cols] layer:
 * the weights in processing order, the factor, codes, quantizers, a batch's errors, the order
 * and the losses (the --gpu-mem plan counts the largest layer's). w_be: the layer's weights will
 * be in backend memory (o->w_be); without act-order the batches then run in them, no copy. */
size_t qs_gptq_backend_bytes(int rows, int cols, const qs_gptq_opts *o, int w_be);

/* w [rows, cols] from codes, scales, zeros and g_idx (NULL g_idx: c / group) */
void qs_dequant_gidx(const uint8_t *codes, const float *scales, const float *zeros, const int32_t *g_idx, int rows,
                     int cols, int group, float *w);

#endif
