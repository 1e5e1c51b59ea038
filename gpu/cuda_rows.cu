/* gpu/cuda_rows.cu - the ops that reduce along a row: RMSNorm (plain, with the reassembly
 * gather, backward), per-token activation fake-quant, weight fake-quant and codes, and the LM head's
 * log-sum-exp chunk. One block of QS_CUDA_ROW_THREADS threads per row (or row segment); sums in
 * double over a fixed tree (gpu/cuda_internal.h), min / max exact: the same bits run to run. The
 * formulas are the CPU backend's, operation for operation (the library is built without FMA
 * contraction), so where no sum is reordered the bits agree with the CPU too. */
#include <math.h>

#include "gpu/cuda_internal.h"

#define NT QS_CUDA_ROW_THREADS

/* 1 / sqrt(mean(x^2) + eps) of the block's row, as qs_cpu_row_inv_rms */
__device__ static float row_inv_rms(const float *xr, int dim, float eps, double *sh) {
    double ss = 0;
    for (int i = threadIdx.x; i < dim; i += NT) ss += (double)xr[i] * xr[i];
    ss = qs_block_sum(ss, sh);
    return (float)(1.0 / sqrt(ss / dim + (double)eps));
}

__global__ static void k_rmsnorm(float *y, const float *x, const float *g, int dim, float eps, float *rstd) {
    __shared__ double sh[NT];
    const size_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    float inv = row_inv_rms(xr, dim, eps, sh);
    /* every thread reads and writes only its own columns, after the sum: y may be x */
    for (int i = threadIdx.x; i < dim; i += NT) yr[i] = (xr[i] * inv) * g[i];
    if (rstd && threadIdx.x == 0) rstd[r] = inv;
}

extern "C" int qs_cuda_rmsnorm(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim,
                               float eps, float *rstd, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    k_rmsnorm<<<rows, NT, 0, qs_cuda(be)->stream>>>(y, x, gamma, dim, eps, rstd);
    QS_CUDA_LAUNCHED("rmsnorm");
    return 0;
}

__global__ static void k_rmsnorm_gather(float *y, const float *x, const float *g, int dim, float eps,
                                        const int32_t *sa, const int32_t *sb, const float *coef) {
    __shared__ double sh[NT];
    const size_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    float inv = row_inv_rms(xr, dim, eps, sh);
    for (int k = threadIdx.x; k < dim; k += NT) {
        int a = sa[k], b = sb[k];
        float v = (xr[a] * inv) * g[a];
        if (b >= 0) v += (xr[b] * inv) * g[b];
        yr[k] = coef[k] * v;
    }
}

extern "C" int qs_cuda_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim,
                                      float eps, const int32_t *src_a, const int32_t *src_b, const float *coef,
                                      qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm_gather: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    k_rmsnorm_gather<<<rows, NT, 0, qs_cuda(be)->stream>>>(y, x, gamma, dim, eps, src_a, src_b, coef);
    QS_CUDA_LAUNCHED("rmsnorm_gather");
    return 0;
}

/* rmsnorm_backward. dgamma: the rows in fixed chunks of RB; part[chunk, col] = the chunk's sum
 * (double, in row order), then each column adds its chunks in order. dx: one block per row. */
#define RB QS_CUDA_NORM_RB
__global__ static void k_dgamma_part(double *part, const float *dy, const float *x, const float *rstd, int rows,
                                     int dim, int nch) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= dim) return;
    for (int ch = blockIdx.y; ch < nch; ch += gridDim.y) { /* grid y is at most 65535 */
        int r0 = ch * RB, r1 = rows - r0 > RB ? r0 + RB : rows;
        double acc = 0;
        for (int r = r0; r < r1; r++) acc += (double)dy[(size_t)r * dim + col] * x[(size_t)r * dim + col] * (double)rstd[r];
        part[(size_t)ch * dim + col] = acc;
    }
}
__global__ static void k_dgamma_sum(float *dgamma, const double *part, int nch, int dim) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= dim) return;
    double acc = 0;
    for (int ch = 0; ch < nch; ch++) acc += part[(size_t)ch * dim + col];
    dgamma[col] = (float)((double)dgamma[col] + acc);
}
__global__ static void k_rmsnorm_dx(float *dx, const float *dy, const float *x, const float *g, const float *rstd,
                                    int dim) {
    __shared__ double sh[NT];
    const size_t r = blockIdx.x;
    const float *dyr = dy + r * dim, *xr = x + r * dim;
    float *dxr = dx + r * dim;
    double s = 0;
    for (int i = threadIdx.x; i < dim; i += NT) s += (double)g[i] * dyr[i] * xr[i];
    s = qs_block_sum(s, sh);
    double rs = rstd[r];
    float a = (float)rs, b = (float)(rs * rs * rs * s / dim);
    for (int i = threadIdx.x; i < dim; i += NT) dxr[i] = a * (g[i] * dyr[i]) - b * xr[i]; /* own columns: dx may be dy */
}

extern "C" int qs_cuda_rmsnorm_backward(qs_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                                        const float *gamma, const float *rstd, int rows, int dim, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm_backward: bad shape [%d, %d]", rows, dim);
    if (!rows) return 0;
    qs_cuda_ctx *c = qs_cuda(be);
    const int nch = (rows + RB - 1) / RB;
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->part, sizeof(double) * (size_t)nch * dim, "rmsnorm_backward", err));
    dim3 grid((dim + 127) / 128, nch < 65535 ? nch : 65535);
    /* dgamma first: dx may overwrite dy */
    k_dgamma_part<<<grid, 128, 0, c->stream>>>((double *)c->part.p, dy, x, rstd, rows, dim, nch);
    k_dgamma_sum<<<(dim + 127) / 128, 128, 0, c->stream>>>(dgamma, (const double *)c->part.p, nch, dim);
    k_rmsnorm_dx<<<rows, NT, 0, c->stream>>>(dx, dy, x, gamma, rstd, dim);
    QS_CUDA_LAUNCHED("rmsnorm_backward");
    return 0;
}

/* act_quant: one block per (row, segment) */
__global__ static void k_act_quant(float *x, int cols, int seg, int qn, float maxq) {
    __shared__ float sh[NT];
    const int nseg = cols / seg;
    float *v = x + (size_t)(blockIdx.x / nseg) * cols + (size_t)(blockIdx.x % nseg) * seg;
    float mn = v[0], mx = v[0];
    for (int i = threadIdx.x; i < seg; i += NT) mn = v[i] < mn ? v[i] : mn, mx = v[i] > mx ? v[i] : mx;
    mn = qs_block_min(mn, sh);
    mx = qs_block_max(mx, sh);
    float scale = (mx - mn) / maxq;
    scale = scale < 1e-5f ? 1e-5f : scale > 1e4f ? 1e4f : scale;
    float zero = rintf(-mn / scale);
    for (int i = threadIdx.x; i < qn; i += NT) {
        float q = rintf(v[i] / scale) + zero;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        v[i] = (q - zero) * scale;
    }
}

extern "C" int qs_cuda_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err) {
    return qs_cuda_act_quant_part(be, x, rows, cols, seg, seg, bits, err);
}

extern "C" int qs_cuda_act_quant_part(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits,
                                      qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || seg < 1 || cols % seg || qn < 1 || qn > seg || bits < 2 || bits > 16,
                       QS_EUSAGE, "act_quant: rows %d, cols %d, segment %d (%d rounded), %d bits", rows, cols, seg, qn,
                       bits);
    size_t blocks = (size_t)rows * (cols / seg);
    QS_RETURN_ERROR_IF(blocks > 0x7fffffff, QS_EUSAGE, "act_quant: %zu segments in one call", blocks);
    if (!blocks) return 0;
    k_act_quant<<<(unsigned)blocks, NT, 0, qs_cuda(be)->stream>>>(x, cols, seg, qn, (float)((1 << bits) - 1));
    QS_CUDA_LAUNCHED("act_quant");
    return 0;
}

/* fake_quant_weight: one block per (row, group); the quantizer of quant/affine.c */
/* the quantizer of n values x (one group of a row) for the whole block: qs_quant_params */
__device__ static void group_quantizer(const float *x, int n, int bits, int sym, float *sh, float *scale, float *zero) {
    float mn = x[0], mx = x[0];
    for (int i = threadIdx.x; i < n; i += NT) mn = x[i] < mn ? x[i] : mn, mx = x[i] > mx ? x[i] : mx;
    mn = qs_block_min(mn, sh);
    mx = qs_block_max(mx, sh);
    float s, z = 0;
    if (sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        s = amax / (float)((1 << (bits - 1)) - 1);
        z = (float)(1 << (bits - 1));
    } else {
        s = (mx - mn) / (float)((1 << bits) - 1);
    }
    s = s < 1e-5f ? 1e-5f : s > 1e4f ? 1e4f : s;
    if (!sym) z = rintf(-mn / s);
    *scale = s, *zero = z;
}

__global__ static void k_fake_quant_weight(float *y, const float *w, int cols, int g, int ng, int bits, int sym) {
    __shared__ float sh[NT];
    const int r = blockIdx.x / ng, c0 = (blockIdx.x % ng) * g, n = cols - c0 < g ? cols - c0 : g;
    const float *x = w + (size_t)r * cols + c0;
    float *o = y + (size_t)r * cols + c0;
    const float maxq = (float)((1 << bits) - 1);
    float scale, zero;
    group_quantizer(x, n, bits, sym, sh, &scale, &zero);
    __syncthreads(); /* every thread has read its x before any writes y (y may be w) */
    for (int i = threadIdx.x; i < n; i += NT) {
        float q = rintf(x[i] / scale) + zero;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        o[i] = (q - zero) * scale;
    }
}

/* a weight op's groups: g columns each (group <= 0: the row), ng a row, one block each */
static int weight_groups(const char *op, int rows, int cols, int group, int bits, int max_bits, int *g, int *ng,
                         size_t *blocks, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0 || cols < 1 || bits < 2 || bits > max_bits, QS_EUSAGE, "%s: [%d, %d] at %d bits", op, rows,
                       cols, bits);
    *g = group > 0 ? group : cols, *ng = (cols + *g - 1) / *g;
    *blocks = (size_t)rows * *ng;
    QS_RETURN_ERROR_IF(*blocks > 0x7fffffff, QS_EUSAGE, "%s: %zu groups in one call", op, *blocks);
    return 0;
}

extern "C" int qs_cuda_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group,
                                         int bits, int sym, qs_error *err) {
    int g = 0, ng = 0;
    size_t blocks = 0;
    QS_FORWARD_IF_ERROR(weight_groups("fake_quant_weight", rows, cols, group, bits, 16, &g, &ng, &blocks, err));
    if (!blocks) return 0;
    k_fake_quant_weight<<<(unsigned)blocks, NT, 0, qs_cuda(be)->stream>>>(y, w, cols, g, ng, bits, sym);
    QS_CUDA_LAUNCHED("fake_quant_weight");
    return 0;
}

/* quant_weight: one block per (row, group) for the quantizer and the codes, then one thread per
 * row for its squared error, column after column (the CPU's order of the double sum) */
__global__ static void k_quant_weight(const float *w, int cols, int g, int ng, int bits, int sym, uint8_t *codes,
                                      float *scales, float *zeros) {
    __shared__ float sh[NT];
    const int r = blockIdx.x / ng, k = blockIdx.x % ng, c0 = k * g, n = cols - c0 < g ? cols - c0 : g;
    const float *x = w + (size_t)r * cols + c0;
    uint8_t *c = codes + (size_t)r * cols + c0;
    const float maxq = (float)((1 << bits) - 1);
    float scale, zero;
    group_quantizer(x, n, bits, sym, sh, &scale, &zero);
    if (threadIdx.x == 0) scales[(size_t)r * ng + k] = scale, zeros[(size_t)r * ng + k] = zero;
    for (int i = threadIdx.x; i < n; i += NT) {
        float q = rintf(x[i] / scale) + zero;
        c[i] = (uint8_t)(q > maxq ? maxq : q >= 0 ? q : 0); /* a NaN's 0 */
    }
}

__global__ static void k_quant_row_err(const float *w, int rows, int cols, int g, int ng, const uint8_t *codes,
                                       const float *scales, const float *zeros, double *row_err) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const size_t o = (size_t)r * cols;
    double e = 0;
    for (int c = 0; c < cols; c++) {
        const size_t k = (size_t)r * ng + c / g;
        double d = (double)(((float)codes[o + c] - zeros[k]) * scales[k]) - (double)w[o + c];
        e += d * d; /* no contraction (--fmad=false): the CPU's bits */
    }
    row_err[r] = e;
}

extern "C" int qs_cuda_quant_weight(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym,
                                    uint8_t *codes, float *scales, float *zeros, double *row_err, qs_error *err) {
    int g = 0, ng = 0;
    size_t blocks = 0;
    QS_FORWARD_IF_ERROR(weight_groups("quant_weight", rows, cols, group, bits, 8, &g, &ng, &blocks, err));
    if (!blocks) return 0;
    cudaStream_t st = qs_cuda(be)->stream;
    k_quant_weight<<<(unsigned)blocks, NT, 0, st>>>(w, cols, g, ng, bits, sym, codes, scales, zeros);
    QS_CUDA_LAUNCHED("quant_weight");
    if (row_err) {
        k_quant_row_err<<<(unsigned)((rows + 127) / 128), 128, 0, st>>>(w, rows, cols, g, ng, codes, scales, zeros, row_err);
        QS_CUDA_LAUNCHED("quant_weight (row errors)");
    }
    return 0;
}

/* lse_update: one block per row */
__global__ static void k_lse_update(const float *logits, int vc, int v0, const int32_t *target, float *run_max,
                                    float *run_sum, float *tgt) {
    __shared__ double sh[NT];
    __shared__ float shf[NT];
    const size_t r = blockIdx.x;
    const float *row = logits + r * vc;
    float m = row[0];
    for (int j = threadIdx.x; j < vc; j += NT) m = row[j] > m ? row[j] : m; /* qs_cpu_row_max's comparison */
    m = qs_block_max(m, shf);
    double s = 0;
    for (int j = threadIdx.x; j < vc; j += NT) s += (double)expf(row[j] - m);
    s = qs_block_sum(s, sh);
    if (threadIdx.x == 0) {
        float M = run_max[r];
        if (m > M) {
            run_sum[r] = (float)((double)run_sum[r] * exp((double)M - m) + s);
            run_max[r] = m;
        } else {
            run_sum[r] = (float)((double)run_sum[r] + s * exp((double)m - M));
        }
        int y = target ? target[r] : -1;
        if (y >= v0 && y < v0 + vc) tgt[r] = row[y - v0];
    }
}

extern "C" int qs_cuda_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                                  float *run_max, float *run_sum, float *tgt_logit, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 0 || vc < 1, QS_EUSAGE, "lse_update: bad shape [%d, %d]", n, vc);
    if (!n) return 0;
    k_lse_update<<<n, NT, 0, qs_cuda(be)->stream>>>(logits, vc, v0, target, run_max, run_sum, tgt_logit);
    QS_CUDA_LAUNCHED("lse_update");
    return 0;
}
