/* cpu/cpu_exp.h - exp() for softmax and log-sum-exp rows, written so the compiler vectorizes it
 * (no libm call inside the loop): Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, the
 * Cephes degree-7 polynomial for e^r, and 2^n built in the exponent bits. Relative error about
 * 2 ulp over [-87, 88]; below -87.3 it returns 0 (those terms are < 1e-38 of the row maximum's
 * term in a softmax). Deterministic: no table, no rounding-mode dependence beyond the default. */
#ifndef QS_CPU_CPU_EXP_H
#define QS_CPU_CPU_EXP_H

#include <stdint.h>

static inline float qs_cpu_expf(float x) {
    const float big = 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds to an integer */
    float xc = x > 88.3f ? 88.3f : x;
    xc = xc < -87.3f ? -87.3f : xc;
    float n = (xc * 1.44269504088896341f + big) - big;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3333519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    union {
        int32_t i;
        float f;
    } two_n = {.i = ((int32_t)n + 127) << 23};
    return x < -87.3f ? 0.0f : p * two_n.f;
}

/* max of row[0..n), n >= 1 */
float qs_cpu_row_max(const float *row, int n);
/* row[j] <- exp(row[j] - m) for j < n; returns their sum (double) */
double qs_cpu_row_exp(float *row, int n, float m);
/* sum of exp(row[j] - m), j < n, in double; row unchanged */
double qs_cpu_row_sumexp(const float *row, int n, float m);

#endif
