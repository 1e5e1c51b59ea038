/* tests/test_affine.c - the affine quantizer: every in-range value within half a step of its
 * reconstruction, codes inside [0, 2^b - 1], all-equal and all-zero groups reproduced exactly
 * without NaN, NaN / Inf rejected naming the position, symmetric mode, packing round trips. */
#include <math.h>
#include <string.h>

#include "quant/affine.h"
#include "tests/testutil.h"

int main(void) {
    enum { R = 13, C = 300 };
    static float w[R * C], back[R * C];
    static uint8_t codes[R * C], unpacked[R * C], packed[R * C];
    static float scales[R * 10], zeros[R * 10];
    uint32_t x = 1;
    for (int i = 0; i < R * C; i++) {
        x = x * 1664525u + 1013904223u;
        w[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * (1 + (i % 7));
    }
    for (int i = 0; i < C; i++) w[5 * C + i] = 0.0f;       /* an all-zero row */
    for (int i = 0; i < C; i++) w[6 * C + i] = -3.25f;     /* an all-equal row */
    qs_error err = {0};
    for (int bits = 2; bits <= 8; bits++)
        for (int sym = 0; sym < 2; sym++)
            for (int gi = 0; gi < 3; gi++) {
                qs_qconfig q = {.bits = bits, .group = gi == 0 ? -1 : gi == 1 ? 32 : 128, .sym = sym};
                int ng = qs_qconfig_groups(&q, C), maxq = (1 << bits) - 1;
                CHECK(qs_quant_rtn(w, R, C, &q, codes, scales, zeros, "w", &err) == 0);
                qs_dequant(codes, scales, zeros, R, C, q.group, back);
                int bad = 0;
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < C; c++) {
                        int g = q.group > 0 ? c / q.group : 0;
                        float s = scales[r * ng + g], z = zeros[r * ng + g];
                        float lo = (0 - z) * s, hi = (maxq - z) * s, v = w[r * C + c];
                        if (!isfinite(back[r * C + c]) || codes[r * C + c] > maxq) bad++;
                        /* inside the grid's range the error is at most half a step (+ rounding) */
                        else if (v >= lo && v <= hi && fabsf(back[r * C + c] - v) > 0.5f * s * (1 + 1e-5f) + 1e-7f) bad++;
                    }
                CHECKF(bad == 0, "bits %d sym %d group %d: %d values out of bounds", bits, sym, q.group, bad);
                if (!sym) {
                    for (int c = 0; c < C; c++) CHECK(back[5 * C + c] == 0.0f && fabsf(back[6 * C + c] + 3.25f) < 1e-4f);
                }
                size_t np = qs_pack_codes(codes, R * C, bits, packed);
                CHECK(np == qs_packed_size(R * C, bits));
                qs_unpack_codes(packed, R * C, bits, unpacked);
                CHECK(memcmp(codes, unpacked, R * C) == 0);
            }
    /* asymmetric 4-bit per-channel on a known row: min -1, max 2 -> scale 0.2, zero 5 */
    float row[4] = {-1.0f, 2.0f, 0.0f, 0.5f};
    qs_qconfig q4 = {.bits = 4, .group = -1};
    uint8_t c4[4];
    float s4, z4;
    CHECK(qs_quant_rtn(row, 1, 4, &q4, c4, &s4, &z4, "row", &err) == 0);
    CHECK(fabsf(s4 - 0.2f) < 1e-7f && z4 == 5.0f && c4[0] == 0 && c4[1] == 15 && c4[2] == 5);
    /* NaN / Inf */
    w[3 * C + 17] = NAN;
    qs_qconfig q = {.bits = 4, .group = 128};
    CHECK(qs_quant_rtn(w, R, C, &q, codes, scales, zeros, "layer.q_proj", &err) != 0);
    CHECKF(strstr(err.msg, "layer.q_proj") && strstr(err.msg, "[3, 17]") && strstr(err.msg, "NaN"), "%s", err.msg);
    w[3 * C + 17] = INFINITY;
    CHECK(qs_quant_rtn(w, R, C, &q, codes, scales, zeros, "w", &err) != 0 && strstr(err.msg, "infinite"));
    q.bits = 9;
    CHECK(qs_quant_rtn(w, R, C, &q, codes, scales, zeros, "w", &err) != 0);
    return qs_test_result();
}
