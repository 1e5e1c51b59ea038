/* base/sigmoid.h - the logistic function 1 / (1 + e^-t) in float with the same bits in C and
 * in CUDA (built with --fmad=false): e^x by cpu/cpu_exp.h's range reduction and polynomial
 * (about 2 ulp), no libm call, so a CPU and a GPU run quantize to the same codes. Saturates to
 * 0 below t = -87.3 and to 1 above 88.3 (where 1 + e^-t rounds to 1 anyway above 17). */
#ifndef QS_BASE_SIGMOID_H
#define QS_BASE_SIGMOID_H

#include <stdint.h>

#ifdef __CUDACC__
#define QS_HOST_DEVICE __host__ __device__
#else
#define QS_HOST_DEVICE
#endif

QS_HOST_DEVICE static inline float qs_exp_poly(float x) {
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
    } two_n;
    two_n.i = ((int32_t)n + 127) << 23;
    return x < -87.3f ? 0.0f : p * two_n.f;
}

QS_HOST_DEVICE static inline float qs_sigmoidf(float t) {
    if (t != t) return t;
    if (t > 88.3f) return 1.0f;
    return 1.0f / (1.0f + qs_exp_poly(-t));
}

#endif
