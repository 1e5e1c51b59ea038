/* gpu/cuda_elementwise.cu - the ops whose outputs depend on their own inputs only (RoPE, SwiGLU
 * and its backward, add, scale, bias, row copies, the SwiGLU reassembly gather), the gather's
 * backward, and the optimizer side (MSE with its gradient, AdamW). Grid-stride loops over size_t
 * indices; the formulas are the CPU backend's operation for operation (no FMA contraction in
 * this library), so they round alike, up to CUDA's expf / sin / cos against glibc's. */
#include <math.h>

#include "gpu/cuda_internal.h"

#define NT 256
#define GRID_LOOP(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* rope: one thread per (token, pair index); the angle's cos / sin in double of the float32
 * angle, as the CPU's table */
__global__ static void k_rope(float *x, size_t T, int seqlen, int pos0, int nh, int hd, int stride, const float *inv_freq,
                              float sign) {
    const int half = hd / 2;
    GRID_LOOP(idx, T * half) {
        size_t t = idx / half;
        int i = (int)(idx % half);
        float ang = (float)(pos0 + (int)(t % (size_t)seqlen)) * inv_freq[i];
        float cs = (float)cos((double)ang), sn = sign * (float)sin((double)ang);
        for (int h = 0; h < nh; h++) {
            float *v = x + t * stride + (size_t)h * hd;
            float a = v[i], b = v[i + half];
            v[i] = a * cs - b * sn;
            v[i + half] = b * cs + a * sn;
        }
    }
}

extern "C" int qs_cuda_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int n_heads, int head_dim,
                            int row_stride, const float *inv_freq, int inverse, qs_error *err) {
    QS_RETURN_ERROR_IF(head_dim < 2 || head_dim % 2 || n_heads * head_dim > row_stride || seqlen < 1 || n_win < 0 ||
                           pos0 < 0,
                       QS_EUSAGE, "rope: bad shape (%d heads of %d in rows of %d, seqlen %d, pos0 %d)", n_heads,
                       head_dim, row_stride, seqlen, pos0);
    size_t T = (size_t)n_win * seqlen;
    if (!T) return 0;
    k_rope<<<qs_cuda_blocks(T * (head_dim / 2), NT), NT, 0, qs_cuda(be)->stream>>>(
        x, T, seqlen, pos0, n_heads, head_dim, row_stride, inv_freq, inverse ? -1.0f : 1.0f);
    QS_CUDA_LAUNCHED("rope");
    return 0;
}

__global__ static void k_swiglu(float *y, const float *g, const float *u, size_t n) {
    GRID_LOOP(i, n) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
extern "C" int qs_cuda_swiglu(qs_backend *be, float *y, const float *gate, const float *up, size_t n, qs_error *err) {
    if (!n) return 0;
    k_swiglu<<<qs_cuda_blocks(n, NT), NT, 0, qs_cuda(be)->stream>>>(y, gate, up, n);
    QS_CUDA_LAUNCHED("swiglu");
    return 0;
}

__global__ static void k_swiglu_backward(float *dgate, float *dup, const float *dy, const float *gate, const float *up,
                                         size_t n) {
    GRID_LOOP(i, n) {
        float g = gate[i], u = up[i], d = dy[i];
        float sig = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * (sig * (1.0f + g * (1.0f - sig)));
        dup[i] = d * (g * sig);
    }
}
extern "C" int qs_cuda_swiglu_backward(qs_backend *be, float *dgate, float *dup, const float *dy, const float *gate,
                                       const float *up, size_t n, qs_error *err) {
    if (!n) return 0;
    k_swiglu_backward<<<qs_cuda_blocks(n, NT), NT, 0, qs_cuda(be)->stream>>>(dgate, dup, dy, gate, up, n);
    QS_CUDA_LAUNCHED("swiglu_backward");
    return 0;
}

__global__ static void k_add(float *y, const float *a, const float *b, size_t n) { GRID_LOOP(i, n) y[i] = a[i] + b[i]; }
extern "C" int qs_cuda_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err) {
    if (!n) return 0;
    k_add<<<qs_cuda_blocks(n, NT), NT, 0, qs_cuda(be)->stream>>>(y, a, b, n);
    QS_CUDA_LAUNCHED("add");
    return 0;
}

__global__ static void k_scale(float *y, const float *x, float alpha, size_t n) { GRID_LOOP(i, n) y[i] = alpha * x[i]; }
extern "C" int qs_cuda_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err) {
    if (!n) return 0;
    k_scale<<<qs_cuda_blocks(n, NT), NT, 0, qs_cuda(be)->stream>>>(y, x, alpha, n);
    QS_CUDA_LAUNCHED("scale");
    return 0;
}

__global__ static void k_add_bias(float *y, const float *bias, size_t rows, int cols) {
    GRID_LOOP(i, rows * cols) y[i] += bias[i % cols];
}
extern "C" int qs_cuda_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 0, QS_EUSAGE, "add_bias: bad shape [%d, %d]", rows, cols);
    if (!rows || !cols) return 0;
    k_add_bias<<<qs_cuda_blocks((size_t)rows * cols, NT), NT, 0, qs_cuda(be)->stream>>>(y, bias, (size_t)rows, cols);
    QS_CUDA_LAUNCHED("add_bias");
    return 0;
}

__global__ static void k_copy_rows(float *dst, const int32_t *dr, const float *src, const int32_t *sr, size_t n,
                                   int cols) {
    GRID_LOOP(idx, n * cols) {
        size_t i = idx / cols, j = idx % cols;
        size_t d = dr ? (size_t)dr[i] : i, s = sr ? (size_t)sr[i] : i;
        dst[d * cols + j] = src[s * cols + j];
    }
}
extern "C" int qs_cuda_copy_rows(qs_backend *be, float *dst, const int32_t *dst_rows, const float *src,
                                 const int32_t *src_rows, int n, int cols, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 0 || cols < 0, QS_EUSAGE, "copy_rows: bad shape (%d rows of %d)", n, cols);
    if (!n || !cols) return 0;
    k_copy_rows<<<qs_cuda_blocks((size_t)n * cols, NT), NT, 0, qs_cuda(be)->stream>>>(dst, dst_rows, src, src_rows,
                                                                                       (size_t)n, cols);
    QS_CUDA_LAUNCHED("copy_rows");
    return 0;
}

__global__ static void k_swiglu_gather(float *y, const float *gate, const float *up, size_t rows, int dim,
                                       const int32_t *sa, const int32_t *sb, const float *coef) {
    GRID_LOOP(idx, rows * dim) {
        size_t r = idx / dim;
        int k = (int)(idx % dim), a = sa[k], b = sb[k];
        const float *g = gate + r * dim, *u = up + r * dim;
        float v = g[a] / (1.0f + expf(-g[a])) * u[a];
        if (b >= 0) v += g[b] / (1.0f + expf(-g[b])) * u[b];
        y[idx] = coef[k] * v;
    }
}
extern "C" int qs_cuda_swiglu_gather(qs_backend *be, float *y, const float *gate, const float *up, int rows, int dim,
                                     const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "swiglu_gather: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    k_swiglu_gather<<<qs_cuda_blocks((size_t)rows * dim, NT), NT, 0, qs_cuda(be)->stream>>>(y, gate, up, (size_t)rows,
                                                                                             dim, src_a, src_b, coef);
    QS_CUDA_LAUNCHED("swiglu_gather");
    return 0;
}

/* gather: one thread per output (row, channel) */
__global__ static void k_gather(float *y, const float *x, size_t rows, int dim, const int32_t *sa, const int32_t *sb,
                                const float *coef) {
    GRID_LOOP(idx, rows * dim) {
        const size_t r = idx / dim;
        const int k = (int)(idx % dim);
        const float *xr = x + r * dim;
        float v = xr[sa[k]];
        if (sb[k] >= 0) v += xr[sb[k]];
        y[idx] = coef ? coef[k] * v : v;
    }
}
extern "C" int qs_cuda_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *src_a,
                              const int32_t *src_b, const float *coef, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "gather: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    k_gather<<<qs_cuda_blocks((size_t)rows * dim, NT), NT, 0, qs_cuda(be)->stream>>>(y, x, (size_t)rows, dim, src_a,
                                                                                      src_b, coef);
    QS_CUDA_LAUNCHED("gather");
    return 0;
}

/* gather_backward. The CPU adds coef[k] dy[r, k] into dv[r, src_a[k]] (and src_b[k]) for
 * k = 0, 1, ...; so output column c receives its contributions in increasing k. The maps are
 * inverted into lists (CSR: off[c] .. off[c+1] in list) in parallel: counts, one block's prefix
 * sum, the lists filled in any order, then each list sorted by k (lists are a few entries long).
 * The integer counts and the sorted lists do not depend on the order the atomics ran in. Then
 * one thread per (row, column) adds its list in k order: the CPU's sums, bit for bit. */
__global__ static void k_map_count(int32_t *cnt, const int32_t *sa, const int32_t *sb, int dim) {
    GRID_LOOP(k, (size_t)dim) {
        atomicAdd(&cnt[sa[k] + 1], 1);
        if (sb[k] >= 0) atomicAdd(&cnt[sb[k] + 1], 1);
    }
}
/* off[0..n) inclusive prefix sums in place, one block of NT threads, chunk by chunk; fill = a copy */
__global__ static void k_map_scan(int32_t *off, int32_t *fill, int n) {
    __shared__ int32_t sh[NT];
    __shared__ int32_t carry;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (int c0 = 0; c0 < n; c0 += NT) {
        const int i = c0 + (int)threadIdx.x;
        sh[threadIdx.x] = i < n ? off[i] : 0;
        __syncthreads();
        for (int s = 1; s < NT; s <<= 1) {
            int32_t v = threadIdx.x >= (unsigned)s ? sh[threadIdx.x - s] : 0;
            __syncthreads();
            sh[threadIdx.x] += v;
            __syncthreads();
        }
        if (i < n) off[i] = sh[threadIdx.x] + carry;
        __syncthreads();
        if (threadIdx.x == NT - 1) carry += sh[NT - 1];
        __syncthreads();
    }
    for (int i = (int)threadIdx.x; i < n - 1; i += NT) fill[i] = off[i];
}
__global__ static void k_map_fill(int32_t *list, int32_t *fill, const int32_t *sa, const int32_t *sb, int dim) {
    GRID_LOOP(k, (size_t)dim) {
        list[atomicAdd(&fill[sa[k]], 1)] = (int32_t)k;
        if (sb[k] >= 0) list[atomicAdd(&fill[sb[k]], 1)] = (int32_t)k;
    }
}
__global__ static void k_map_sort(int32_t *list, const int32_t *off, int dim) {
    GRID_LOOP(c, (size_t)dim) {
        for (int j = off[c] + 1; j < off[c + 1]; j++) { /* insertion sort */
            int32_t v = list[j];
            int i = j - 1;
            for (; i >= off[c] && list[i] > v; i--) list[i + 1] = list[i];
            list[i + 1] = v;
        }
    }
}
__global__ static void k_gather_backward(float *dv, const float *dy, size_t rows, int dim, const int32_t *off,
                                         const int32_t *list, const float *coef) {
    GRID_LOOP(idx, rows * dim) {
        size_t r = idx / dim;
        int c = (int)(idx % dim);
        const float *dyr = dy + r * dim;
        float acc = 0.0f;
        for (int j = off[c]; j < off[c + 1]; j++) {
            int k = list[j];
            acc += coef[k] * dyr[k];
        }
        dv[idx] = acc;
    }
}
extern "C" int qs_cuda_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim,
                                       const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "gather_backward: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    qs_cuda_ctx *c = qs_cuda(be);
    /* off [dim + 1], list [2 dim], fill [dim] */
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->inv, sizeof(int32_t) * (4 * (size_t)dim + 1), "gather_backward", err));
    int32_t *list = (int32_t *)c->inv.p, *off = list + 3 * (size_t)dim;
    int32_t *fill = list + 2 * (size_t)dim;
    QS_CUDA_CALL(cudaMemsetAsync(off, 0, sizeof(int32_t) * ((size_t)dim + 1), c->stream), "gather_backward");
    /* each step checked before the next: the fill writes where the scan's offsets say */
    k_map_count<<<qs_cuda_blocks((size_t)dim, NT), NT, 0, c->stream>>>(off, src_a, src_b, dim);
    QS_CUDA_LAUNCHED("gather_backward (count)");
    k_map_scan<<<1, NT, 0, c->stream>>>(off, fill, dim + 1);
    QS_CUDA_LAUNCHED("gather_backward (scan)");
    k_map_fill<<<qs_cuda_blocks((size_t)dim, NT), NT, 0, c->stream>>>(list, fill, src_a, src_b, dim);
    QS_CUDA_LAUNCHED("gather_backward (fill)");
    k_map_sort<<<qs_cuda_blocks((size_t)dim, NT), NT, 0, c->stream>>>(list, off, dim);
    k_gather_backward<<<qs_cuda_blocks((size_t)rows * dim, NT), NT, 0, c->stream>>>(dv, dy, (size_t)rows, dim, off, list,
                                                                                     coef);
    QS_CUDA_LAUNCHED("gather_backward");
    return 0;
}

/* mse_grad: fixed chunks (boundaries from n only), one block each; the partial sums come back
 * to the host and are added there in order */
#define MSE_CHUNKS QS_CUDA_MSE_CHUNKS
__global__ static void k_mse(float *grad, const float *a, const float *b, size_t n, double *part) {
    __shared__ double sh[QS_CUDA_ROW_THREADS];
    const size_t ch = blockIdx.x, lo = n * ch / MSE_CHUNKS, hi = n * (ch + 1) / MSE_CHUNKS;
    const double g2 = 2.0 / (double)n;
    double s = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += QS_CUDA_ROW_THREADS) {
        double d = (double)a[i] - b[i];
        s += d * d;
        if (grad) grad[i] = (float)(g2 * d);
    }
    s = qs_block_sum(s, sh);
    if (threadIdx.x == 0) part[ch] = s;
}
extern "C" int qs_cuda_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n,
                                double *loss_host, qs_error *err) {
    QS_RETURN_ERROR_IF(n == 0, QS_EUSAGE, "mse_grad: no values");
    qs_cuda_ctx *c = qs_cuda(be);
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->part, sizeof(double) * MSE_CHUNKS, "mse_grad", err));
    k_mse<<<MSE_CHUNKS, QS_CUDA_ROW_THREADS, 0, c->stream>>>(grad, a, b, n, (double *)c->part.p);
    QS_CUDA_LAUNCHED("mse_grad");
    if (loss_host) {
        QS_CUDA_CALL(cudaMemcpyAsync(c->part_host, c->part.p, sizeof(double) * MSE_CHUNKS, cudaMemcpyDeviceToHost, c->stream),
                     "mse_grad");
        QS_CUDA_CALL(cudaStreamSynchronize(c->stream), "mse_grad");
        double s = 0;
        for (int i = 0; i < MSE_CHUNKS; i++) s += c->part_host[i];
        *loss_host = s / (double)n;
    }
    return 0;
}

__global__ static void k_adamw(float *param, const float *grad, float *m, float *v, size_t n, float b1, float b2,
                               float step_size, float inv_bc2, float eps, float decay) {
    GRID_LOOP(i, n) {
        float g = grad[i];
        float mi = b1 * m[i] + (1.0f - b1) * g, vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        param[i] = param[i] * decay - step_size * mi / (sqrtf(vi) * inv_bc2 + eps);
    }
}
extern "C" int qs_cuda_adamw_step(qs_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                                  float lr, float beta1, float beta2, float eps, float weight_decay, int step,
                                  qs_error *err) {
    QS_RETURN_ERROR_IF(step < 1 || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0), QS_EUSAGE,
                       "adamw_step: step %d, betas %g %g, eps %g", step, beta1, beta2, eps);
    if (!n) return 0;
    /* the bias corrections in double on the host, as the CPU backend (and PyTorch) */
    const float step_size = (float)((double)lr / (1.0 - pow(beta1, step)));
    const float inv_bc2 = (float)(1.0 / sqrt(1.0 - pow(beta2, step)));
    const float decay = 1.0f - lr * weight_decay;
    k_adamw<<<qs_cuda_blocks(n, NT), NT, 0, qs_cuda(be)->stream>>>(param, grad, m, v, n, beta1, beta2, step_size,
                                                                    inv_bc2, eps, decay);
    QS_CUDA_LAUNCHED("adamw_step");
    return 0;
}
