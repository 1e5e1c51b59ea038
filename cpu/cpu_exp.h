/* cpu/cpu_exp.h - exp() for softmax and log-sum-exp rows, written so the compiler vectorizes it
 * (no libm call inside the loop): Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, the
 * Cephes degree-7 polynomial for e^r, and 2^n built in the exponent bits. Relative error about
 * 2 ulp over [-87, 88]; below -87.3 it returns 0 (those terms are < 1e-38 of the row maximum's
 * term in a softmax). Deterministic: no table, no rounding-mode dependence beyond the default. */
#ifndef QS_CPU_CPU_EXP_H
#define QS_CPU_CPU_EXP_H

#include <stdint.h>

#include "base/sigmoid.h"

/* the polynomial is base/sigmoid.h's qs_exp_poly, shared with the CUDA kernels that must give
 * the CPU's bits */
static inline float qs_cpu_expf(float x) { return qs_exp_poly(x); }

/* max of row[0..n), n >= 1 */
float qs_cpu_row_max(const float *row, int n);
/* row[j] <- exp(row[j] - m) for j < n; returns their sum (double) */
double qs_cpu_row_exp(float *row, int n, float m);
/* sum of exp(row[j] - m), j < n, in double; row unchanged */
double qs_cpu_row_sumexp(const float *row, int n, float m);

#endif
