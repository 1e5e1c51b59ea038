/* gpu/cuda_lwc.cu - SliderQuant's learnable weight clipping (backend.h lwc_weight): one thread
 * per (row, group) takes the group's range and grid (backend/lwc_grid.h, as on the CPU) and
 * walks its columns in order, for the forward and for the straight-through backward; the rows'
 * errors one thread a row, column after column (the CPU's order). cpu/cpu_lwc.c operation for
 * operation (built with --fmad=false: the CPU's bits). */
#include <math.h>

#include "backend/lwc_grid.h"
#include "gpu/cuda_internal.h"

__device__ static qs_lwc_grid group_grid(const float *x, int c0, int c1, float gam, float bet, int bits, int sym) {
    float hi = x[c0], lo = x[c0];
    for (int c = c0 + 1; c < c1; c++) {
        hi = x[c] > hi ? x[c] : hi;
        lo = x[c] < lo ? x[c] : lo;
    }
    return qs_lwc_grid_of(hi, lo, gam, bet, bits, sym);
}

__device__ static float lwc_value(float w, const qs_lwc_grid &gr, float maxq, float *code) {
    float v = rintf(w / gr.scale) + gr.zero;
    v = v > maxq ? maxq : v >= 0 ? v : 0; /* a NaN's 0 */
    *code = v;
    return gr.scale * (v - gr.zero);
}

__global__ static void k_lwc_weight(float *y, uint8_t *codes, float *scales, float *zeros, const float *w,
                                    const float *gam, const float *bet, int rows, int cols, int g, int ng, int bits,
                                    int sym, float maxq, int qcols) {
    const size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= (size_t)rows * ng) return;
    const int r = (int)(q / ng), k = (int)(q % ng), c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
    const float *x = w + (size_t)r * cols;
    const qs_lwc_grid gr = group_grid(x, c0, c1, gam[q], bet[q], bits, sym);
    if (scales) scales[q] = gr.scale;
    if (zeros) zeros[q] = gr.zero;
    for (int c = c0; c < c1; c++) {
        const size_t i = (size_t)r * cols + c;
        float code;
        const float yi = c < qcols ? lwc_value(x[c], gr, maxq, &code) : x[c];
        if (codes) codes[i] = (uint8_t)code;
        if (y) y[i] = yi; /* after x[c] is read: y may be w */
    }
}

__global__ static void k_lwc_row_err(double *row_err, const float *w, const float *gam, const float *bet, int rows,
                                     int cols, int g, int ng, int bits, int sym, float maxq, int qcols) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float *x = w + (size_t)r * cols;
    double e = 0;
    for (int k = 0; k < ng; k++) {
        const int c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
        const size_t q = (size_t)r * ng + k;
        const qs_lwc_grid gr = group_grid(x, c0, c1, gam[q], bet[q], bits, sym);
        for (int c = c0; c < c1; c++) {
            float code;
            const double d = c < qcols ? (double)lwc_value(x[c], gr, maxq, &code) - (double)x[c] : 0.0;
            e += d * d;
        }
    }
    row_err[r] = e;
}

__global__ static void k_lwc_backward(float *dw, float *dgam, float *dbet, const float *dy, const float *w,
                                      const float *gam, const float *bet, int rows, int cols, int g, int ng, int bits,
                                      int sym, float maxq, int qcols) {
    const size_t q = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= (size_t)rows * ng) return;
    const int r = (int)(q / ng), k = (int)(q % ng), c0 = k * g, c1 = c0 + g < cols ? c0 + g : cols;
    const float *x = w + (size_t)r * cols;
    const qs_lwc_grid gr = group_grid(x, c0, c1, gam[q], bet[q], bits, sym);
    double gs = 0;
    for (int c = c0; c < c1; c++) {
        const size_t i = (size_t)r * cols + c;
        if (c >= qcols) { /* not quantized */
            dw[i] = dy[i];
            continue;
        }
        const float t = x[c] / gr.scale, rt = rintf(t), v = rt + gr.zero, gy = dy[i];
        const int inside = v >= 0 && v <= maxq;
        gs += (double)gy * (inside ? (double)rt - (double)t : (double)((v > maxq ? maxq : 0) - gr.zero));
        dw[i] = inside ? gy : 0.0f; /* after gy is read: dw may be dy */
    }
    dgam[q] += (float)(gs * gr.ds_dgam);
    dbet[q] += (float)(gs * gr.ds_dbet);
}

static int check(const char *op, int rows, int cols, int group, int bits, int qcols, int *g, int *ng, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > 8 || qcols < 0, QS_EUSAGE,
                       "%s: [%d, %d] at %d bits, %d columns quantized", op, rows, cols, bits, qcols);
    *g = group > 0 ? group : cols, *ng = (cols + *g - 1) / *g;
    return 0;
}

extern "C" int qs_cuda_lwc_weight(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros,
                                  double *row_err, const float *w, const float *gam, const float *bet, int rows,
                                  int cols, int group, int bits, int sym, int qcols, qs_error *err) {
    int g = 0, ng = 0;
    QS_FORWARD_IF_ERROR(check("lwc_weight", rows, cols, group, bits, qcols, &g, &ng, err));
    QS_RETURN_ERROR_IF(codes && qcols < cols, QS_EUSAGE, "lwc_weight: codes of %d columns of %d", qcols, cols);
    const size_t groups = (size_t)rows * ng;
    const float maxq = (float)((1 << bits) - 1);
    if (!groups) return 0;
    cudaStream_t st = qs_cuda(be)->stream;
    if (row_err) { /* first: y may overwrite w */
        k_lwc_row_err<<<(unsigned)((rows + 127) / 128), 128, 0, st>>>(row_err, w, gam, bet, rows, cols, g, ng, bits, sym,
                                                                       maxq, qcols);
        QS_CUDA_LAUNCHED("lwc_weight (row errors)");
    }
    if (y || codes || scales || zeros) {
        k_lwc_weight<<<(unsigned)((groups + 127) / 128), 128, 0, st>>>(y, codes, scales, zeros, w, gam, bet, rows, cols, g,
                                                                        ng, bits, sym, maxq, qcols);
        QS_CUDA_LAUNCHED("lwc_weight");
    }
    return 0;
}

extern "C" int qs_cuda_lwc_weight_backward(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy,
                                           const float *w, const float *gam, const float *bet, int rows, int cols,
                                           int group, int bits, int sym, int qcols, qs_error *err) {
    int g = 0, ng = 0;
    QS_FORWARD_IF_ERROR(check("lwc_weight_backward", rows, cols, group, bits, qcols, &g, &ng, err));
    const size_t groups = (size_t)rows * ng;
    if (!groups) return 0;
    k_lwc_backward<<<(unsigned)((groups + 127) / 128), 128, 0, qs_cuda(be)->stream>>>(
        dw, dgam, dbet, dy, w, gam, bet, rows, cols, g, ng, bits, sym, (float)((1 << bits) - 1), qcols);
    QS_CUDA_LAUNCHED("lwc_weight_backward");
    return 0;
}
