/* gpu/cuda_dlqat.cu - DL-QAT's weight on a fixed grid (backend.h dlqat_weight): the forward, one
 * thread a weight (the rows' errors one thread a row, column after column: the CPU's order), and
 * the straight-through backward, one thread per (row, group) summing its columns in order. The
 * formulas are cpu/cpu_dlqat.c's operation for operation (no FMA contraction: the CPU's bits). */
#include <math.h>

#include "gpu/cuda_internal.h"

/* rint(w / scale + d) + zero, unclamped */
__device__ static float grid_value(float w, float d, float scale, float zero) { return rintf(w / scale + d) + zero; }

__device__ static float grid_weight(const float *w, const float *d, const float *scales, const float *zeros,
                                    const float *mag, size_t i, size_t k, float maxq, float *code) {
    float v = grid_value(w[i], d[i], scales[k], zeros[k]);
    v = v > maxq ? maxq : v >= 0 ? v : 0; /* a NaN's 0 */
    *code = v;
    return (mag[k] * scales[k]) * (v - zeros[k]);
}

__global__ static void k_dlqat_weight(float *y, uint8_t *codes, const float *w, const float *d, const float *scales,
                                      const float *zeros, const float *mag, int cols, int g, int ng, size_t n, float maxq) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const size_t r = i / (size_t)cols, k = r * ng + (i % (size_t)cols) / g;
    float code;
    const float yi = grid_weight(w, d, scales, zeros, mag, i, k, maxq, &code);
    if (codes) codes[i] = (uint8_t)code;
    if (y) y[i] = yi; /* after this thread read w[i] and d[i]: y may be d */
}

__global__ static void k_dlqat_row_err(double *row_err, const float *w, const float *d, const float *scales,
                                       const float *zeros, const float *mag, int rows, int cols, int g, int ng,
                                       float maxq) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double e = 0;
    for (int c = 0; c < cols; c++) {
        const size_t i = (size_t)r * cols + c, k = (size_t)r * ng + c / g;
        float code;
        const double diff = (double)grid_weight(w, d, scales, zeros, mag, i, k, maxq, &code) - (double)w[i];
        e += diff * diff;
    }
    row_err[r] = e;
}

__global__ static void k_dlqat_backward(float *dd, float *dmag, const float *dy, const float *w, const float *d,
                                        const float *scales, const float *zeros, const float *mag, int rows, int cols,
                                        int g, int ng, float maxq) {
    const size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= (size_t)rows * ng) return;
    const int r = (int)(q / ng), k = (int)(q % ng);
    const float scale = scales[q], zero = zeros[q], ms = mag[q] * scale;
    double sum = 0;
    for (int c = k * g; c < cols && c < (k + 1) * g; c++) {
        const size_t i = (size_t)r * cols + c;
        const float v = grid_value(w[i], d[i], scale, zero), gy = dy[i];
        const int inside = v >= 0 && v <= maxq;
        sum += (double)gy * scale * (double)((inside ? v : v > maxq ? maxq : 0) - zero);
        dd[i] = inside ? gy * ms : 0.0f; /* after gy is read: dd may be dy */
    }
    dmag[q] += (float)sum;
}

static int check(const char *op, int rows, int cols, int group, int bits, int *g, int *ng, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 8, QS_EUSAGE, "%s: [%d, %d] at %d bits", op, rows, cols,
                       bits);
    *g = group > 0 ? group : cols, *ng = (cols + *g - 1) / *g;
    return 0;
}

extern "C" int qs_cuda_dlqat_weight(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w,
                                    const float *d, const float *scales, const float *zeros, const float *mag, int rows,
                                    int cols, int group, int bits, qs_error *err) {
    int g = 0, ng = 0;
    QS_FORWARD_IF_ERROR(check("dlqat_weight", rows, cols, group, bits, &g, &ng, err));
    const size_t n = (size_t)rows * cols;
    const float maxq = (float)((1 << bits) - 1);
    if (!n) return 0;
    cudaStream_t st = qs_cuda(be)->stream;
    if (row_err) { /* first: y may overwrite d */
        k_dlqat_row_err<<<(unsigned)((rows + 127) / 128), 128, 0, st>>>(row_err, w, d, scales, zeros, mag, rows, cols, g,
                                                                         ng, maxq);
        QS_CUDA_LAUNCHED("dlqat_weight (row errors)");
    }
    if (y || codes) {
        QS_RETURN_ERROR_IF((n + 255) / 256 > 0x7fffffff, QS_EUSAGE, "dlqat_weight: %zu weights in one call", n);
        k_dlqat_weight<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(y, codes, w, d, scales, zeros, mag, cols, g, ng, n, maxq);
        QS_CUDA_LAUNCHED("dlqat_weight");
    }
    return 0;
}

extern "C" int qs_cuda_dlqat_weight_backward(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w,
                                             const float *d, const float *scales, const float *zeros, const float *mag,
                                             int rows, int cols, int group, int bits, qs_error *err) {
    int g = 0, ng = 0;
    QS_FORWARD_IF_ERROR(check("dlqat_weight_backward", rows, cols, group, bits, &g, &ng, err));
    const size_t groups = (size_t)rows * ng;
    if (!groups) return 0;
    k_dlqat_backward<<<(unsigned)((groups + 127) / 128), 128, 0, qs_cuda(be)->stream>>>(dd, dmag, dy, w, d, scales, zeros,
                                                                                         mag, rows, cols, g, ng,
                                                                                         (float)((1 << bits) - 1));
    QS_CUDA_LAUNCHED("dlqat_weight_backward");
    return 0;
}
