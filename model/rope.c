#include "model/rope.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* inverse frequency of pair i with LLaMA-3 scaling (transformers' _compute_llama3_parameters) */
static double inv_freq(const qs_model_config *c, int i) {
    double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
    if (c->rope_scaling != QS_ROPE_SCALING_LLAMA3) return f;
    double old = c->rope_original_max_position, lo = old / c->rope_low_freq_factor, hi = old / c->rope_high_freq_factor;
    double wavelen = 2.0 * M_PI / f;
    if (wavelen < hi) return f;
    if (wavelen > lo) return f / c->rope_factor;
    double smooth = (old / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1.0 - smooth) * f / c->rope_factor + smooth * f;
}

int qs_rope_table_init(qs_rope_table *r, const qs_model_config *c, int n_pos, qs_error *err) {
    r->n_pos = n_pos;
    r->half = c->head_dim / 2;
    r->cos_t = malloc(sizeof(float) * (size_t)n_pos * r->half);
    r->sin_t = malloc(sizeof(float) * (size_t)n_pos * r->half);
    if (!r->cos_t || !r->sin_t) {
        qs_rope_table_free(r);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < r->half; i++) {
        double f = inv_freq(c, i);
        for (int p = 0; p < n_pos; p++) {
            r->cos_t[(size_t)p * r->half + i] = (float)cos(p * f);
            r->sin_t[(size_t)p * r->half + i] = (float)sin(p * f);
        }
    }
    return 0;
}

void qs_rope_table_free(qs_rope_table *r) {
    free(r->cos_t);
    free(r->sin_t);
    r->cos_t = r->sin_t = NULL;
}
