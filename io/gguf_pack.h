/* io/gguf_pack.h - one 32-element block of the ggml formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
 * from integer codes (the inverse of io/gguf_dequant.c for these types). */
#ifndef QS_IO_GGUF_PACK_H
#define QS_IO_GGUF_PACK_H

#include <stdint.h>

#define QS_GGML_QK 32

/* q[32]: the block's codes in the type's range (Q4_0 / Q4_1: 0..15, Q5_0 / Q5_1: 0..31, Q8_0:
 * -128..127; value = d * (q - 8), d * q + m, d * (q - 16), d * q + m, d * q); d and m are the
 * half-float bits (m unused by the _0 types). Writes qs_ggml_block_bytes(type) bytes to out;
 * returns -1 for another type or a code out of range. */
int qs_ggml_pack_block(uint32_t type, const int *q, uint16_t d, uint16_t m, uint8_t *out);

#endif
