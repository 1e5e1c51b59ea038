#include "quant/affine.h"

#include <math.h>
#include <stdlib.h>

int qs_qconfig_groups(const qs_qconfig *q, int cols) {
    return q->group > 0 ? (cols + q->group - 1) / q->group : 1;
}

static float clamp_scale(float s) {
    return s < QS_QUANT_SCALE_MIN ? QS_QUANT_SCALE_MIN : s > QS_QUANT_SCALE_MAX ? QS_QUANT_SCALE_MAX : s;
}

void qs_quant_params(const float *x, int n, const qs_qconfig *q, float *scale, float *zero) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (q->sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        *scale = clamp_scale(amax / (float)((1 << (q->bits - 1)) - 1));
        *zero = (float)(1 << (q->bits - 1));
    } else {
        *scale = clamp_scale((mx - mn) / (float)((1 << q->bits) - 1));
        *zero = rintf(-mn / *scale);
    }
}

size_t qs_first_nonfinite(const float *x, size_t n) {
    size_t first = n;
#pragma omp parallel for schedule(static) reduction(min : first)
    for (size_t k = 0; k < n; k++)
        if (!isfinite(x[k]) && k < first) first = k;
    return first;
}

int qs_quant_rtn(const float *w, int rows, int cols, const qs_qconfig *q, uint8_t *codes, float *scales, float *zeros,
                 const char *what, qs_error *err) {
    QS_RETURN_ERROR_IF(q->bits < 2 || q->bits > 8, QS_EUSAGE, "%d-bit weights are not supported (2..8)", q->bits);
    const size_t C = (size_t)cols, bad = qs_first_nonfinite(w, (size_t)rows * C);
    QS_RETURN_ERROR_IF(bad < (size_t)rows * C, QS_EFORMAT, "%s: weight [%zu, %zu] is %s", what, bad / C, bad % C,
                       isnan(w[bad]) ? "NaN" : "infinite");
    int g = q->group > 0 ? q->group : cols, ng = qs_qconfig_groups(q, cols);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) /* rows are independent: the same bits for any thread count */
        for (int k = 0; k < ng; k++) {
            const float *x = w + (size_t)r * cols + (size_t)k * g;
            int n = cols - k * g < g ? cols - k * g : g;
            float scale, zero;
            qs_quant_params(x, n, q, &scale, &zero);
            scales[(size_t)r * ng + k] = scale;
            zeros[(size_t)r * ng + k] = zero;
            uint8_t *c = codes + (size_t)r * cols + (size_t)k * g;
            for (int i = 0; i < n; i++) c[i] = qs_quant_code(x[i], scale, zero, q->bits);
        }
    return 0;
}

void qs_dequant(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group, float *w) {
    int g = group > 0 ? group : cols, ng = group > 0 ? (cols + group - 1) / group : 1;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < cols; i++) {
            size_t s = (size_t)r * ng + (size_t)(i / g);
            w[(size_t)r * cols + i] = ((float)codes[(size_t)r * cols + i] - zeros[s]) * scales[s];
        }
}

size_t qs_packed_size(size_t n, int bits) { return bits <= 4 ? (n + 1) / 2 : n; }

size_t qs_pack_codes(const uint8_t *codes, size_t n, int bits, uint8_t *out) {
    if (bits > 4) {
        for (size_t i = 0; i < n; i++) out[i] = codes[i];
        return n;
    }
    for (size_t i = 0; i < n; i += 2) out[i / 2] = (uint8_t)(codes[i] | (i + 1 < n ? codes[i + 1] << 4 : 0));
    return (n + 1) / 2;
}

void qs_unpack_codes(const uint8_t *p, size_t n, int bits, uint8_t *codes) {
    if (bits > 4) {
        for (size_t i = 0; i < n; i++) codes[i] = p[i];
        return;
    }
    for (size_t i = 0; i < n; i++) codes[i] = i & 1 ? p[i / 2] >> 4 : p[i / 2] & 15;
}

double qs_sq_err(const float *a, const float *b, int rows, int cols) {
    double *part = malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1)), total = 0;
    if (!part) { /* in order, one thread */
        for (size_t k = 0; k < (size_t)rows * cols; k++) total += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
        return total;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (size_t c = 0, o = (size_t)r * cols; c < (size_t)cols; c++) s += ((double)a[o + c] - b[o + c]) * ((double)a[o + c] - b[o + c]);
        part[r] = s;
    }
    for (int r = 0; r < rows; r++) total += part[r];
    free(part);
    return total;
}

void qs_dequant_row_sq_err(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group,
                           const float *ref, double *row_err) {
    const int g = group > 0 ? group : cols, ng = group > 0 ? (cols + group - 1) / group : 1;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * cols;
        const float *sc = scales + (size_t)r * ng, *ze = zeros + (size_t)r * ng;
        double e = 0;
        for (int c0 = 0, k = 0; c0 < cols; c0 += g, k++)
            for (int c = c0; c < cols && c < c0 + g; c++) {
                double d = (double)(((float)codes[o + c] - ze[k]) * sc[k]) - ref[o + c];
                e += d * d;
            }
        row_err[r] = e;
    }
}

double qs_dequant_sq_err(const uint8_t *codes, const float *scales, const float *zeros, int rows, int cols, int group,
                         const float *ref) {
    const int ng = group > 0 ? (cols + group - 1) / group : 1;
    double *part = malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1)), total = 0, one;
    for (int r = 0; !part && r < rows; r++) { /* one row at a time, one thread */
        qs_dequant_row_sq_err(codes + (size_t)r * cols, scales + (size_t)r * ng, zeros + (size_t)r * ng, 1, cols, group,
                              ref + (size_t)r * cols, &one);
        total += one;
    }
    if (!part) return total;
    qs_dequant_row_sq_err(codes, scales, zeros, rows, cols, group, ref, part);
    for (int r = 0; r < rows; r++) total += part[r];
    free(part);
    return total;
}
