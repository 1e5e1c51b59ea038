/* io/gguf_pack.c - packing of the 32-element ggml blocks (layouts as io/gguf_dequant.c reads
 * them: little-endian half floats d (and m), element j < 16 in the low nibble of qs[j] and
 * element j + 16 in its high nibble, the fifth bits of Q5 in a u32 whose bit j is element j's). */
#include "io/gguf_pack.h"

#include <math.h>
#include <string.h>

#include "base/half.h"

#include "io/gguf.h"

static int nibbles(const int *q, int hi, uint8_t *qs, uint32_t *qh) {
    const int lim = hi ? 32 : 16;
    *qh = 0;
    for (int j = 0; j < QS_GGML_QK; j++)
        if (q[j] < 0 || q[j] >= lim) return -1;
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
    for (int j = 0; j < QS_GGML_QK; j++) *qh |= (uint32_t)(q[j] >> 4 & 1) << j;
    return 0;
}

int qs_ggml_pack_block(uint32_t type, const int *q, uint16_t d, uint16_t m, uint8_t *out) {
    uint32_t qh;
    memcpy(out, &d, 2);
    switch (type) {
    case QS_GGML_Q4_0: return nibbles(q, 0, out + 2, &qh);
    case QS_GGML_Q4_1: memcpy(out + 2, &m, 2); return nibbles(q, 0, out + 4, &qh);
    case QS_GGML_Q5_0:
        if (nibbles(q, 1, out + 6, &qh)) return -1;
        memcpy(out + 2, &qh, 4);
        return 0;
    case QS_GGML_Q5_1:
        memcpy(out + 2, &m, 2);
        if (nibbles(q, 1, out + 8, &qh)) return -1;
        memcpy(out + 4, &qh, 4);
        return 0;
    case QS_GGML_Q8_0:
        for (int j = 0; j < QS_GGML_QK; j++) {
            if (q[j] < -128 || q[j] > 127) return -1;
            out[2 + j] = (uint8_t)(int8_t)q[j];
        }
        return 0;
    default: return -1;
    }
}

int qs_ggml_quantize_q8_0(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / QS_GGML_QK; b++, x += QS_GGML_QK, out += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QS_GGML_QK; j++) {
            if (!isfinite(x[j])) return -1;
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        const uint16_t h = qs_f32_to_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < QS_GGML_QK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
    return 0;
}
