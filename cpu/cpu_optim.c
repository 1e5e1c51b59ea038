/* cpu/cpu_optim.c - the training-side ops of block-wise tuning on the CPU: weight fake
 * quantization (the forward of a straight-through quantizer), the MSE loss with its gradient,
 * and the AdamW step. Rows / elements are independent except the MSE sum, which is taken over
 * fixed chunks (boundaries from n only) summed in order: any thread count gives the same bits. */
#include <math.h>

#include "cpu/cpu_internal.h"

static float clamp_scale(float s) { return s < 1e-5f ? 1e-5f : s > 1e4f ? 1e4f : s; }

/* the formula of quant/affine.c (qs_quant_params, qs_quant_code, then (q - zero) * scale),
 * written out here so the ops stay the backend's own; tests hold the two to the same bits */
static void quantizer(const float *x, int n, int bits, int sym, float *scale, float *zero) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        *scale = clamp_scale(amax / (float)((1 << (bits - 1)) - 1));
        *zero = (float)(1 << (bits - 1));
    } else {
        *scale = clamp_scale((mx - mn) / (float)((1 << bits) - 1));
        *zero = rintf(-mn / *scale);
    }
}

/* a value's code as a float: clamp(round(x / scale) + zero, 0, maxq), a NaN's 0 (the cast of a
 * NaN would be undefined) */
static float code_of(float x, float scale, float zero, float maxq) {
    float q = rintf(x / scale) + zero;
    return q > maxq ? maxq : q >= 0 ? q : 0;
}

int qs_cpu_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                             int sym, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 16, QS_EUSAGE,
                       "fake_quant_weight: [%d, %d] at %d bits", rows, cols, bits);
    const int g = group > 0 ? group : cols;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int c0 = 0; c0 < cols; c0 += g) {
            int n = cols - c0 < g ? cols - c0 : g;
            const float *x = w + (size_t)r * cols + c0;
            float *o = y + (size_t)r * cols + c0;
            float scale, zero;
            quantizer(x, n, bits, sym, &scale, &zero);
            for (int i = 0; i < n; i++) {
                float q = rintf(x[i] / scale) + zero;
                q = q < 0 ? 0 : q > maxq ? maxq : q; /* NaN stays NaN */
                o[i] = (q - zero) * scale;
            }
        }
    return 0;
}

int qs_cpu_quant_weight(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym, uint8_t *codes,
                        float *scales, float *zeros, double *row_err, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 8, QS_EUSAGE, "quant_weight: [%d, %d] at %d bits",
                       rows, cols, bits);
    const int g = group > 0 ? group : cols, ng = (cols + g - 1) / g;
    const float maxq = (float)((1 << bits) - 1);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        double e = 0;
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, n = cols - c0 < g ? cols - c0 : g;
            const float *x = w + (size_t)r * cols + c0;
            uint8_t *c = codes + (size_t)r * cols + c0;
            float scale, zero;
            quantizer(x, n, bits, sym, &scale, &zero);
            scales[(size_t)r * ng + k] = scale, zeros[(size_t)r * ng + k] = zero;
            for (int i = 0; i < n; i++) {
                c[i] = (uint8_t)code_of(x[i], scale, zero, maxq);
                double d = (double)(((float)c[i] - zero) * scale) - x[i];
                e += d * d;
            }
        }
        if (row_err) row_err[r] = e;
    }
    return 0;
}

/* fixed chunks of the MSE sum (not a thread count: the boundaries depend on n only) */
#define MSE_CHUNKS 64

int qs_cpu_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                    qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(n == 0, QS_EUSAGE, "mse_grad: no values");
    double part[MSE_CHUNKS], g2 = 2.0 / (double)n;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < MSE_CHUNKS; ch++) {
        size_t lo = n * (size_t)ch / MSE_CHUNKS, hi = n * (size_t)(ch + 1) / MSE_CHUNKS;
        double s = 0;
        for (size_t i = lo; i < hi; i++) {
            double d = (double)a[i] - b[i];
            s += d * d;
            if (grad) grad[i] = (float)(g2 * d);
        }
        part[ch] = s;
    }
    if (loss_host) {
        double s = 0;
        for (int ch = 0; ch < MSE_CHUNKS; ch++) s += part[ch];
        *loss_host = s / (double)n;
    }
    return 0;
}

int qs_cpu_adamw_step(qs_backend *be, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, int step, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(step < 1 || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0), QS_EUSAGE,
                       "adamw_step: step %d, betas %g %g, eps %g", step, beta1, beta2, eps);
    /* bias corrections in double, as PyTorch computes them on the host */
    const float step_size = (float)((double)lr / (1.0 - pow(beta1, step)));
    const float inv_bc2 = (float)(1.0 / sqrt(1.0 - pow(beta2, step)));
    const float decay = 1.0f - lr * weight_decay, b1 = beta1, b2 = beta2;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = b1 * m[i] + (1.0f - b1) * g, vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
    }
    return 0;
}
