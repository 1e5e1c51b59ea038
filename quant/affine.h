/* quant/affine.h - the affine (min-max) quantizer of ../shared/METHODS.md and RTN.
 *   scale = (max - min) / (2^b - 1), clamped to [1e-5, 1e4]; zero = round(-min / scale)
 *   q = clamp(round(x / scale) + zero, 0, 2^b - 1);          x_hat = (q - zero) * scale
 * Symmetric: scale = max|x| / (2^(b-1) - 1) (same clamp), zero = 2^(b-1).
 * The range is taken per output row (group <= 0) or per group of `group` input columns. An
 * all-equal group gets the smallest scale and reproduces its value; nothing becomes NaN. */
#ifndef QS_QUANT_AFFINE_H
#define QS_QUANT_AFFINE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define QS_QUANT_SCALE_MIN 1e-5f
#define QS_QUANT_SCALE_MAX 1e4f

typedef struct qs_qconfig {
    int bits;  /* 2..8 */
    int group; /* columns per group; <= 0: one group per row */
    int sym;   /* 1: symmetric */
} qs_qconfig;

/* The quantizer of n values x (finite): scale and zero as above. */
void qs_quant_params(const float *x, int n, const qs_qconfig *q, float *scale, float *zero);
/* one value's code: clamp(round(x / scale) + zero, 0, 2^bits - 1) */
static inline uint8_t qs_quant_code(float x, float scale, float zero, int bits) {
    float v = __builtin_rintf(x / scale) + zero, maxq = (float)((1 << bits) - 1);
    return (uint8_t)(v < 0 ? 0 : v > maxq ? maxq : v);
}

/* number of groups per row */
int qs_qconfig_groups(const qs_qconfig *q, int cols);

/* Quantizes w [rows, cols] to nearest: codes [rows, cols] (one code per byte), scales and
 * zeros [rows, groups]. NaN or Inf in w is an error naming the row and column (what names the
 * tensor). */
int qs_quant_rtn(const float *w, int rows, int cols, const qs_qconfig *q, uint8_t *codes, float *scales,
                 float *zeros, const char *what, qs_error *err);

/* the index of x's first NaN or infinity, or n when every value is finite */
size_t qs_first_nonfinite(const float *x, size_t n);

/* sum over [rows, cols] of (a - b)^2 in double: rows summed in parallel, then in row order (the
 * same bits for any thread count) */
double qs_sq_err(const float *a, const float *b, int rows, int cols);
/* the same for the dequantized codes ((codes - zero) * scale, as qs_dequant) against ref, without
 * the dequantized copy */
double qs_dequant_sq_err(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group,
                         const float *ref);
/* the same per row: row_err [rows] (rows in parallel) */
void qs_dequant_row_sq_err(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group,
                           const float *ref, double *row_err);

/* w [rows, cols] = (codes - zero) * scale */
void qs_dequant(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group, float *w);

/* Packs codes of `bits` bits (<= 8) little-endian into bytes: 2 per byte for bits <= 4, else 1.
 * Returns the packed size; unpack reverses it. */
size_t qs_pack_codes(const uint8_t *codes, size_t n, int bits, uint8_t *out);
void qs_unpack_codes(const uint8_t *packed, size_t n, int bits, uint8_t *codes);
size_t qs_packed_size(size_t n, int bits);

#endif
