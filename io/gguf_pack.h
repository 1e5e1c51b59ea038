/* io/gguf_pack.h - one 32-element block of the ggml formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
 * from integer codes (the inverse of io/gguf_dequant.c for these types), and floats rounded to
 * Q8_0. */
#ifndef QS_IO_GGUF_PACK_H
#define QS_IO_GGUF_PACK_H

#include <stddef.h>
#include <stdint.h>

#define QS_GGML_QK 32

/* q[32]: the block's codes in the type's range (Q4_0 / Q4_1: 0..15, Q5_0 / Q5_1: 0..31, Q8_0:
 * -128..127; value = d * (q - 8), d * q + m, d * (q - 16), d * q + m, d * q); d and m are the
 * half-float bits (m unused by the _0 types). Writes qs_ggml_block_bytes(type) bytes to out;
 * returns -1 for another type or a code out of range. */
int qs_ggml_pack_block(uint32_t type, const int *q, uint16_t d, uint16_t m, uint8_t *out);

/* n floats (a multiple of 32) as Q8_0 blocks (n / 32 * 34 bytes at out), the ggml reference
 * rounding: d = max |x| / 127 per block, stored as a half float, q = round(x / d) with the float d
 * (0 for an all-zero block). Returns -1 (out partly written) for a value that is not finite. */
int qs_ggml_quantize_q8_0(const float *x, size_t n, uint8_t *out);

#endif
