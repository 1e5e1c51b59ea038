/* io/gguf_dequant.c - dequantization of the ggml block formats F32, F16, BF16, Q4_0, Q4_1,
 * Q5_0, Q5_1 and Q8_0 (layouts from the GGUF specification). */
#include "io/gguf_dequant.h"

#include <string.h>

#include "base/half.h"
#include "io/gguf.h"

size_t qs_ggml_block_size(uint32_t t) {
    switch (t) {
    case QS_GGML_F32: case QS_GGML_F16: case QS_GGML_BF16: return 1;
    case QS_GGML_Q4_0: case QS_GGML_Q4_1: case QS_GGML_Q5_0: case QS_GGML_Q5_1: case QS_GGML_Q8_0: return 32;
    default: return 0;
    }
}

size_t qs_ggml_block_bytes(uint32_t t) {
    switch (t) {
    case QS_GGML_F32: return 4;
    case QS_GGML_F16: case QS_GGML_BF16: return 2;
    case QS_GGML_Q4_0: return 2 + 16;         /* d, 32 x 4-bit */
    case QS_GGML_Q4_1: return 2 + 2 + 16;     /* d, m, 32 x 4-bit */
    case QS_GGML_Q5_0: return 2 + 4 + 16;     /* d, high bits, low nibbles */
    case QS_GGML_Q5_1: return 2 + 2 + 4 + 16; /* d, m, high bits, low nibbles */
    case QS_GGML_Q8_0: return 2 + 32;         /* d, 32 x int8 */
    default: return 0;
    }
}

static float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return qs_f16_to_f32(h);
}

/* nibble j of a 32-element block: elements 0..15 are the low nibbles of qs[0..15], 16..31 the high */
static inline int nib(const uint8_t *qs, int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }

int qs_ggml_dequantize(uint32_t t, const void *src_, float *dst, uint64_t n) {
    const uint8_t *src = src_;
    size_t bs = qs_ggml_block_size(t), bb = qs_ggml_block_bytes(t);
    if (!bs) return -1;
    uint64_t nb = n / bs;
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *p = src + b * bb;
        float *y = dst + b * bs;
        switch (t) {
        case QS_GGML_F32: memcpy(y, p, 4); break;
        case QS_GGML_F16: y[0] = h2f(p); break;
        case QS_GGML_BF16: { uint16_t v; memcpy(&v, p, 2); y[0] = qs_bf16_to_f32(v); break; }
        case QS_GGML_Q4_0: {
            float d = h2f(p);
            for (int j = 0; j < 32; j++) y[j] = (float)(nib(p + 2, j) - 8) * d;
            break;
        }
        case QS_GGML_Q4_1: {
            float d = h2f(p), m = h2f(p + 2);
            for (int j = 0; j < 32; j++) y[j] = (float)nib(p + 4, j) * d + m;
            break;
        }
        case QS_GGML_Q5_0: {
            float d = h2f(p);
            uint32_t qh;
            memcpy(&qh, p + 2, 4);
            for (int j = 0; j < 32; j++) y[j] = (float)((nib(p + 6, j) | (int)((qh >> j) & 1) << 4) - 16) * d;
            break;
        }
        case QS_GGML_Q5_1: {
            float d = h2f(p), m = h2f(p + 2);
            uint32_t qh;
            memcpy(&qh, p + 4, 4);
            for (int j = 0; j < 32; j++) y[j] = (float)(nib(p + 8, j) | (int)((qh >> j) & 1) << 4) * d + m;
            break;
        }
        case QS_GGML_Q8_0: {
            float d = h2f(p);
            for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)p[2 + j] * d;
            break;
        }
        }
    }
    return 0;
}
