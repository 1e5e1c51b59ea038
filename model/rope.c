/* model/rope.c - rotary inverse frequencies with LLaMA-3 scaling. */
#include "model/rope.h"

#include <math.h>

/* LLaMA-3's band of inverse frequency f: 0 divided by the factor (long wavelengths), 1 the
 * interpolation (smooth set), 2 kept */
static int llama3_band(const qs_model_config *c, double f, double *smooth) {
    double old = c->rope_original_max_position, wavelen = 2.0 * M_PI / f;
    double lo_wl = old / c->rope_low_freq_factor, hi_wl = old / c->rope_high_freq_factor;
    *smooth = (old / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return wavelen > lo_wl ? 0 : wavelen >= hi_wl ? 1 : 2;
}

static int check(const qs_model_config *c, qs_error *err) {
    QS_RETURN_ERROR_IF(c->head_dim < 2 || c->head_dim % 2, QS_EUNSUPPORTED, "rope: head_dim %d is not even",
                       c->head_dim);
    QS_RETURN_ERROR_IF(!(c->rope_theta > 0), QS_EFORMAT, "rope: rope_theta %g is not positive", c->rope_theta);
    int llama3 = c->rope_scaling == QS_ROPE_SCALING_LLAMA3;
    QS_RETURN_ERROR_IF(llama3 && !(c->rope_factor > 0 && c->rope_low_freq_factor > 0 &&
                                   c->rope_high_freq_factor > c->rope_low_freq_factor &&
                                   c->rope_original_max_position > 0),
                       QS_EFORMAT, "rope: llama3 scaling parameters are inconsistent (factor %g, low %g, high %g, "
                       "original max position %d)", c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                       c->rope_original_max_position);
    return 0;
}

int qs_rope_inv_freq(const qs_model_config *c, float *inv_freq, qs_error *err) {
    QS_FORWARD_IF_ERROR(check(c, err));
    const int llama3 = c->rope_scaling == QS_ROPE_SCALING_LLAMA3;
    for (int i = 0; i < c->head_dim / 2; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim), smooth;
        if (llama3) {
            /* wavelengths shorter than old/high keep f; longer than old/low are divided by the
             * factor; in between, a smooth interpolation of the two */
            const int band = llama3_band(c, f, &smooth);
            if (band == 0) f = f / c->rope_factor;
            else if (band == 1) f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
        }
        inv_freq[i] = (float)f;
    }
    return 0;
}

int qs_rope_llama3_divisors(const qs_model_config *c, float *div, qs_error *err) {
    QS_FORWARD_IF_ERROR(check(c, err));
    for (int i = 0; i < c->head_dim / 2; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim), smooth;
        const int band = c->rope_scaling == QS_ROPE_SCALING_LLAMA3 ? llama3_band(c, f, &smooth) : 2;
        div[i] = band == 0 ? c->rope_factor : band == 1 ? (float)(1.0 / ((1.0 - smooth) / c->rope_factor + smooth)) : 1.0f;
    }
    return 0;
}
