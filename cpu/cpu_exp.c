/* cpu/cpu_exp.c - the exp loops of softmax and log-sum-exp rows, vectorized. GCC if-converts
 * the clamps of qs_cpu_expf (and so vectorizes the loop) only without -ftrapping-math; these
 * loops raise no floating-point exception anyone observes, so it is turned off for this file
 * alone. The sums are taken in double, lane by lane in a fixed order: the same bits for the same
 * binary, whatever the thread count. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "cpu/cpu_exp.h"


/* wider vectors where the CPU has them, chosen at load time (GCC / clang function multiversioning
 * on x86-64 Linux); one binary, and a given CPU always runs the same clone */
#if defined(__x86_64__) && defined(__linux__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) /* clang 14 cannot link C clones */
#define QS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

QS_VECTOR_CLONES float qs_cpu_row_max(const float *row, int n) {
    /* 16 running maxima side by side (the compiler packs them into vectors; a max is exact in
     * any order), then the tail */
    float acc[16];
    for (int l = 0; l < 16; l++) acc[l] = row[0];
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) acc[l] = row[j + l] > acc[l] ? row[j + l] : acc[l];
    for (; j < n; j++) acc[0] = row[j] > acc[0] ? row[j] : acc[0];
    float m = acc[0];
    for (int l = 1; l < 16; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

QS_VECTOR_CLONES double qs_cpu_row_exp(float *row, int n, float m) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < n; j++) {
        float e = qs_cpu_expf(row[j] - m);
        row[j] = e;
        s += e;
    }
    return s;
}

QS_VECTOR_CLONES double qs_cpu_row_sumexp(const float *row, int n, float m) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < n; j++) s += qs_cpu_expf(row[j] - m);
    return s;
}
