/* io/gguf_dequant.c - dequantization of the ggml block formats (layouts of the GGUF/ggml
 * specification): F32, F16, BF16; the 32-element blocks Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; the
 * 256-element "K" super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. All multi-byte fields are
 * little-endian; d / dmin are IEEE half floats. */
#include "io/gguf_dequant.h"

#include <string.h>

#include "base/half.h"
#include "io/gguf.h"

#define QK 32   /* elements per block of the simple formats */
#define QKK 256 /* elements per K super-block */

size_t qs_ggml_block_size(uint32_t t) {
    switch (t) {
    case QS_GGML_F32: case QS_GGML_F16: case QS_GGML_BF16: return 1;
    case QS_GGML_Q4_0: case QS_GGML_Q4_1: case QS_GGML_Q5_0: case QS_GGML_Q5_1: case QS_GGML_Q8_0: return QK;
    case QS_GGML_Q2_K: case QS_GGML_Q3_K: case QS_GGML_Q4_K: case QS_GGML_Q5_K: case QS_GGML_Q6_K: return QKK;
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
    case QS_GGML_Q2_K: return 16 + 64 + 2 + 2;       /* scales|mins 4+4 bit x16, 256 x 2-bit, d, dmin */
    case QS_GGML_Q3_K: return 32 + 64 + 12 + 2;      /* high-bit mask, 256 x 2-bit, 16 x 6-bit scales, d */
    case QS_GGML_Q4_K: return 2 + 2 + 12 + 128;      /* d, dmin, 8 x (6-bit scale, 6-bit min), 256 x 4-bit */
    case QS_GGML_Q5_K: return 2 + 2 + 12 + 32 + 128; /* as Q4_K + a fifth bit per element */
    case QS_GGML_Q6_K: return 128 + 64 + 16 + 2;     /* low 4 bits, high 2 bits, 16 x int8 scales, d */
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

static void deq_q4_0(const uint8_t *p, float *y) { /* d | qs[16] */
    float d = h2f(p);
    for (int j = 0; j < QK; j++) y[j] = (float)(nib(p + 2, j) - 8) * d;
}

static void deq_q4_1(const uint8_t *p, float *y) { /* d | m | qs[16] */
    float d = h2f(p), m = h2f(p + 2);
    for (int j = 0; j < QK; j++) y[j] = (float)nib(p + 4, j) * d + m;
}

static void deq_q5_0(const uint8_t *p, float *y) { /* d | qh (bit j = 5th bit of element j) | qs[16] */
    float d = h2f(p);
    uint32_t qh;
    memcpy(&qh, p + 2, 4);
    for (int j = 0; j < QK; j++) y[j] = (float)((nib(p + 6, j) | (int)((qh >> j) & 1) << 4) - 16) * d;
}

static void deq_q5_1(const uint8_t *p, float *y) { /* d | m | qh | qs[16] */
    float d = h2f(p), m = h2f(p + 2);
    uint32_t qh;
    memcpy(&qh, p + 4, 4);
    for (int j = 0; j < QK; j++) y[j] = (float)(nib(p + 8, j) | (int)((qh >> j) & 1) << 4) * d + m;
}

static void deq_q8_0(const uint8_t *p, float *y) { /* d | qs[32] int8 */
    float d = h2f(p);
    for (int j = 0; j < QK; j++) y[j] = (float)(int8_t)p[2 + j] * d;
}

/* Q2_K: scales[16] (low nibble: scale, high nibble: min, one per 16 elements) | qs[64] | d | dmin.
 * Each 128-element half uses 32 bytes of qs; bit pair s (0..3) of byte l holds element
 * 32*s + l of that half. */
static void deq_q2_k(const uint8_t *p, float *y) {
    const uint8_t *sc = p, *qs = p + 16;
    float d = h2f(p + 80), dmin = h2f(p + 82);
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int g = 0; g < 2; g++) { /* 16-element group */
                int is = half * 8 + s * 2 + g;
                float dl = d * (float)(sc[is] & 15), ml = dmin * (float)(sc[is] >> 4);
                for (int l = 0; l < 16; l++) {
                    int q = (qs[half * 32 + g * 16 + l] >> (2 * s)) & 3;
                    y[half * 128 + s * 32 + g * 16 + l] = dl * (float)q - ml;
                }
            }
}

/* The 12-byte packing of sixteen 6-bit values used by Q3_K: bytes 0..7 hold the low 4 bits
 * (value i < 8 in the low nibble of byte i, value i >= 8 in the high nibble of byte i - 8),
 * bytes 8..11 the high 2 bits (value i: bits 2*(i/4)..+1 of byte 8 + i % 4). */
static void unpack_q3_k_scales(const uint8_t *s, int *out) {
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? s[i] & 15 : s[i - 8] >> 4;
        int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        out[i] = (lo | hi << 4) - 32;
    }
}

/* Q3_K: hmask[32] | qs[64] | scales[12] | d. Element value = 2-bit low part (laid out as in
 * Q2_K) minus 4 unless its bit in hmask is set; hmask bit b of byte l covers element 32*b + l. */
static void deq_q3_k(const uint8_t *p, float *y) {
    const uint8_t *hm = p, *qs = p + 32;
    float d = h2f(p + 108);
    int sc[16];
    unpack_q3_k_scales(p + 96, sc);
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int g = 0; g < 2; g++) {
                int is = half * 8 + s * 2 + g, bit = half * 4 + s;
                float dl = d * (float)sc[is];
                for (int l = 0; l < 16; l++) {
                    int li = g * 16 + l;
                    int q = (qs[half * 32 + li] >> (2 * s)) & 3;
                    if (!((hm[li] >> bit) & 1)) q -= 4;
                    y[half * 128 + s * 32 + li] = dl * (float)q;
                }
            }
}

/* The 12-byte packing of eight 6-bit scales and eight 6-bit mins used by Q4_K and Q5_K:
 * for j < 4, scale j and min j are the low 6 bits of bytes j and j + 4; for j >= 4 their low
 * 4 bits are the low / high nibble of byte j + 4 and their high 2 bits the top bits of bytes
 * j - 4 (scale) and j (min). */
static void scale_min_k4(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

/* Q4_K / Q5_K: d | dmin | scales[12] | [Q5_K: qh[32]] | qs[128]. 64-element chunk c uses qs
 * bytes 32c..32c+31: low nibbles are its first 32 elements (sub-block 2c), high nibbles the next
 * 32 (sub-block 2c+1); value = d*scale*q - dmin*min. Q5_K's fifth bit of element 32*b + l is
 * bit b of qh[l]. */
static void deq_q45_k(const uint8_t *p, float *y, int five) {
    float d = h2f(p), dmin = h2f(p + 2);
    const uint8_t *scales = p + 4, *qh = p + 16, *qs = p + (five ? 48 : 16);
    for (int c = 0; c < 4; c++)
        for (int h = 0; h < 2; h++) {
            int sb = 2 * c + h, sc, m;
            scale_min_k4(scales, sb, &sc, &m);
            float dl = d * (float)sc, ml = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                int q = h ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
                if (five) q |= ((qh[l] >> sb) & 1) << 4;
                y[32 * sb + l] = dl * (float)q - ml;
            }
        }
}

/* Q6_K: ql[128] | qh[64] | scales[16] int8 | d. In each 128-element half (ql 64 bytes, qh 32
 * bytes), element 32*s + l (s 0..3, l 0..31) has low 4 bits from ql[l + 32*(s&1)] (low nibble
 * for s < 2, high for s >= 2) and high 2 bits from qh[l] bits 2s..2s+1; value = d * scale *
 * (q - 32), one int8 scale per 16 elements. */
static void deq_q6_k(const uint8_t *p, float *y) {
    const uint8_t *ql = p, *qh = p + 128;
    const int8_t *sc = (const int8_t *)(p + 192);
    float d = h2f(p + 208);
    for (int half = 0; half < 2; half++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int e = 32 * s + l;
                uint8_t lb = ql[64 * half + l + 32 * (s & 1)];
                int q = (s < 2 ? lb & 15 : lb >> 4) | ((qh[32 * half + l] >> (2 * s)) & 3) << 4;
                y[128 * half + e] = d * (float)sc[8 * half + e / 16] * (float)(q - 32);
            }
}

int qs_ggml_dequantize(uint32_t t, const void *src_, float *dst, uint64_t n) {
    const uint8_t *src = src_;
    size_t bs = qs_ggml_block_size(t), bb = qs_ggml_block_bytes(t);
    if (!bs) return -1;
    uint64_t nb = n / bs;
    if (t == QS_GGML_F32) {
        memcpy(dst, src, n * sizeof(float));
        return 0;
    }
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *p = src + b * bb;
        float *y = dst + b * bs;
        switch (t) {
        case QS_GGML_F16: y[0] = h2f(p); break;
        case QS_GGML_BF16: { uint16_t v; memcpy(&v, p, 2); y[0] = qs_bf16_to_f32(v); break; }
        case QS_GGML_Q4_0: deq_q4_0(p, y); break;
        case QS_GGML_Q4_1: deq_q4_1(p, y); break;
        case QS_GGML_Q5_0: deq_q5_0(p, y); break;
        case QS_GGML_Q5_1: deq_q5_1(p, y); break;
        case QS_GGML_Q8_0: deq_q8_0(p, y); break;
        case QS_GGML_Q2_K: deq_q2_k(p, y); break;
        case QS_GGML_Q3_K: deq_q3_k(p, y); break;
        case QS_GGML_Q4_K: deq_q45_k(p, y, 0); break;
        case QS_GGML_Q5_K: deq_q45_k(p, y, 1); break;
        case QS_GGML_Q6_K: deq_q6_k(p, y); break;
        }
    }
    return 0;
}
