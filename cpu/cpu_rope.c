/* cpu/cpu_rope.c - rotary embedding (rotate-half). The cos / sin of the window's positions are
 * computed once per call into the context's scratch and shared by every window and head. */
#include <errno.h>
#include <math.h>

#include "cpu/cpu_internal.h"

int qs_cpu_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int n_heads, int head_dim, int row_stride,
                const float *inv_freq, int inverse, qs_error *err) {
    qs_cpu_ctx *c = be->ctx;
    int half = head_dim / 2;
    QS_RETURN_ERROR_IF(head_dim < 2 || head_dim % 2 || n_heads * head_dim > row_stride || seqlen < 1 || n_win < 0 ||
                           pos0 < 0,
                       QS_EUSAGE, "rope: bad shape (%d heads of %d in rows of %d, seqlen %d, pos0 %d)", n_heads,
                       head_dim, row_stride, seqlen, pos0);
    size_t need = (size_t)seqlen * half;
    if (qs_cpu_scratch_grow(&c->rope_tab, &c->rope_cap, 2 * need))
        return qs_error_set(err, -ENOMEM, "rope: out of memory for the tables of %d positions", seqlen);
    float *cos_t = c->rope_tab, *sin_t = c->rope_tab + need; /* [seqlen, half] each */
    float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < seqlen; p++)
        for (int i = 0; i < half; i++) {
            float ang = (float)(pos0 + p) * inv_freq[i]; /* float32 angle, as transformers */
            cos_t[(size_t)p * half + i] = (float)cos((double)ang);
            sin_t[(size_t)p * half + i] = sign * (float)sin((double)ang);
        }
    size_t T = (size_t)n_win * seqlen;
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        const float *cs = cos_t + (t % (size_t)seqlen) * half, *sn = sin_t + (t % (size_t)seqlen) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + t * row_stride + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
    return 0;
}
