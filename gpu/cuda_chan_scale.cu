/* gpu/cuda_chan_scale.cu - SliderQuant's per-channel smoothing scales (backend.h chan_scale):
 * the scaled weights one thread an element; the backward's sums one thread a scale index,
 * walking its elements and each element's row or column in backend.h's order (adjacent
 * threads read adjacent columns in the column sums). cpu/cpu_chan_scale.c operation for
 * operation (built with --fmad=false: the CPU's bits). */
#include "backend/chan_scale.h"
#include "gpu/cuda_internal.h"

/* a side by value for the kernels: on 0 means no scaling */
typedef struct side {
    const float *alpha;
    float *dalpha;
    int pow, on;
    qs_chan_map m;
} side;

static side side_of(const qs_chan_scale *c, int n) {
    side s;
    s.on = c && c->alpha;
    s.alpha = s.on ? c->alpha : NULL;
    s.dalpha = s.on ? c->dalpha : NULL;
    s.pow = s.on ? c->pow : 1;
    s.m = qs_chan_side_map(c, n);
    return s;
}

__device__ static float scaled(float v, const side &sr, const side &sc, int r, int c) {
    if (sr.on) v = v * qs_chan_factor(sr.alpha[qs_chan_index(sr.m, r)], sr.pow);
    if (sc.on) v = v * qs_chan_factor(sc.alpha[qs_chan_index(sc.m, c)], sc.pow);
    return v;
}

__global__ static void k_scale(float *y, const float *x, int rows, int cols, side sr, side sc, int acc) {
    const size_t n = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = scaled(x[i], sr, sc, (int)(i / cols), (int)(i % cols));
        y[i] = acc ? y[i] + v : v;
    }
}

/* dalpha of side s (n_s elements) += D * qs_chan_grad_sum, one thread an index; o the other side */
__global__ static void k_side_grad(const float *dy, const float *x, side s, side o, int n_o, size_t se, size_t so,
                                   int n_s) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= qs_chan_count(s.m, n_s)) return;
    const double d = qs_chan_dfactor(s.alpha[k], s.pow);
    if (d == 0.0) return;
    s.dalpha[k] += (float)(d * qs_chan_grad_sum(dy, x, s.m, k, o.on ? o.alpha : NULL, o.pow, o.m, n_o, se, so));
}

static unsigned elem_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b > 65535 ? 65535 : b ? b : 1);
}

extern "C" int qs_cuda_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                                  const qs_chan_scale *col, qs_error *err) {
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale", rows, cols, row, col, err));
    if (!rows || !cols) return 0;
    k_scale<<<elem_blocks((size_t)rows * cols), 256, 0, qs_cuda(be)->stream>>>(y, x, rows, cols, side_of(row, rows),
                                                                                side_of(col, cols), 0);
    QS_CUDA_LAUNCHED("chan_scale");
    return 0;
}

extern "C" int qs_cuda_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows,
                                           int cols, const qs_chan_scale *row, const qs_chan_scale *col,
                                           qs_error *err) {
    QS_FORWARD_IF_ERROR(qs_chan_scale_check("chan_scale_backward", rows, cols, row, col, err));
    if (!rows || !cols) return 0;
    cudaStream_t st = qs_cuda(be)->stream;
    const side sr = side_of(row, rows), sc = side_of(col, cols);
    if (sc.on && sc.dalpha) { /* the column side's indices sum over rows (adjacent threads, adjacent columns) */
        const int nk = qs_chan_count(sc.m, cols);
        k_side_grad<<<(unsigned)((nk + 127) / 128), 128, 0, st>>>(dy, x, sc, sr, rows, 1, (size_t)cols, cols);
        QS_CUDA_LAUNCHED("chan_scale_backward (columns)");
    }
    if (sr.on && sr.dalpha) { /* the row side's over columns */
        const int nk = qs_chan_count(sr.m, rows);
        k_side_grad<<<(unsigned)((nk + 127) / 128), 128, 0, st>>>(dy, x, sr, sc, cols, (size_t)cols, 1, rows);
        QS_CUDA_LAUNCHED("chan_scale_backward (rows)");
    }
    if (dx) {
        k_scale<<<elem_blocks((size_t)rows * cols), 256, 0, st>>>(dx, dy, rows, cols, sr, sc, 1);
        QS_CUDA_LAUNCHED("chan_scale_backward");
    }
    return 0;
}
