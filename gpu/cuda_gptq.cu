/* gpu/cuda_gptq.cu - GPTQ on the GPU: the lazy batch (backend.h gptq_batch) and the matrix to
 * factor from the Hessian (gptq_hessian: the Hessian never leaves the device).
 *
 * The column loop: every row is independent, so one thread runs one row through the batch's
 * columns in order, with the operations of quant/gptq.c's host loop in the same order (no FMA
 * contraction: the library is built with --fmad=false; IEEE division and rint), so its codes,
 * quantizers, errors and loss are the host's bits. A block of T rows first copies its rows of the
 * batch into shared memory (coalesced), column-major so that the T threads touching column j hit
 * T consecutive words; the factor's row i is read by every thread at once (a broadcast). A batch
 * too wide for shared memory works on global memory directly (slower, the same bits).
 * The lazy update of the later columns is one cuBLAS GEMM in pedantic fp32. */
#include "gpu/cuda_internal.h"

#define GPTQ_SHARED_BYTES (48 * 1024)
#define GPTQ_MAX_ROWS 64

/* qs_quant_params of quant/affine.c on n values x[0], x[xs], ... */
__device__ static void quant_params(const float *x, size_t xs, int n, int bits, int sym, float *scale, float *zero) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * xs];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    float s;
    if (sym) {
        float amax = fmaxf(fabsf(mn), fabsf(mx));
        s = amax / (float)((1 << (bits - 1)) - 1);
    } else {
        s = (mx - mn) / (float)((1 << bits) - 1);
    }
    s = s < 1e-5f ? 1e-5f : s > 1e4f ? 1e4f : s;
    *scale = s;
    *zero = sym ? (float)(1 << (bits - 1)) : rintf(-mn / s);
}

template <bool TILE>
__global__ static void k_gptq_batch(float *w, int rows, int cols, int i1, int cnt, const float *u, const int32_t *perm,
                                    int G, int ng, int bits, int sym, int mode, float *scales, float *zeros,
                                    uint8_t *codes, float *err1, double *loss) {
    /* [cnt][T + 1] when TILE: the pad puts a copy's consecutive columns (one row) in different
     * banks, and the batch loop's threads (rows) read consecutive words */
    extern __shared__ float tile[];
    const int T = blockDim.x, TS = T + 1, t = threadIdx.x, r0 = blockIdx.x * T;
    const int nr = rows - r0 < T ? rows - r0 : T;
    const size_t C = (size_t)cols;
    if (TILE) {
        for (int idx = t; idx < nr * cnt; idx += T) {
            int rr = idx / cnt, c = idx % cnt;
            tile[(size_t)c * TS + rr] = w[(size_t)(r0 + rr) * C + i1 + c];
        }
        __syncthreads();
    }
    if (t < nr) {
        const size_t r = (size_t)(r0 + t);
        float *x = TILE ? tile + t : w + r * C + i1; /* column c of the batch: x[c * xs] */
        const size_t xs = TILE ? (size_t)TS : 1;
        const float maxq = (float)((1 << bits) - 1);
        float sc = scales[r * ng], ze = zeros[r * ng];
        double ls = loss[r];
        for (int c = 0; c < cnt; c++) {
            const int i = i1 + c;
            if (mode == 1) { /* static groups */
                size_t k = r * ng + (size_t)(perm[i] / G);
                sc = scales[k], ze = zeros[k];
            } else if (mode == 2 && i % G == 0) { /* dynamic groups: from the current values */
                int len = cols - i < G ? cols - i : G;
                quant_params(x + (size_t)c * xs, xs, len, bits, sym, &sc, &ze);
                scales[r * ng + i / G] = sc, zeros[r * ng + i / G] = ze;
            }
            const float wi = x[(size_t)c * xs];
            float v = rintf(wi / sc) + ze;
            const uint8_t code = (uint8_t)(v < 0 ? 0 : v > maxq ? maxq : v);
            const float deq = ((float)code - ze) * sc, uii = u[(size_t)i * C + i];
            const float ei = (wi - deq) / uii;
            ls += (double)(wi - deq) * (wi - deq) / ((double)uii * uii) / 2.0;
            codes[r * C + perm[i]] = code;
            x[(size_t)c * xs] = deq;
            const float *urow = u + (size_t)i * C + i1;
            for (int j = c + 1; j < cnt; j++) x[(size_t)j * xs] -= ei * urow[j];
            err1[r * cnt + c] = ei;
        }
        loss[r] = ls;
    }
    if (TILE) {
        __syncthreads();
        for (int idx = t; idx < nr * cnt; idx += T) {
            int rr = idx / cnt, c = idx % cnt;
            w[(size_t)(r0 + rr) * C + i1 + c] = tile[(size_t)c * TS + rr];
        }
    }
}

extern "C" int qs_cuda_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u,
                                  const int32_t *perm, int group, int bits, int sym, int static_groups, float *scales,
                                  float *zeros, uint8_t *codes, float *err1, double *loss, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 1 || cols < 1 || i1 < 0 || i2 <= i1 || i2 > cols || bits < 2 || bits > 8, QS_EUSAGE,
                       "gptq_batch: columns %d..%d of [%d, %d] at %d bits", i1, i2, rows, cols, bits);
    QS_RETURN_ERROR_IF(group > 0 && (i1 % group || (i2 < cols && i2 % group)), QS_EUSAGE,
                       "gptq_batch: columns %d..%d are not whole groups of %d", i1, i2, group);
    qs_cuda_ctx *c = qs_cuda(be);
    const int cnt = i2 - i1, G = group > 0 ? group : cols, ng = group > 0 ? (cols + group - 1) / group : 1;
    const int mode = group <= 0 ? 0 : static_groups ? 1 : 2;
    int T = GPTQ_MAX_ROWS;
    while (T > 8 && sizeof(float) * (size_t)cnt * (T + 1) > GPTQ_SHARED_BYTES) T /= 2;
    const size_t shared = sizeof(float) * (size_t)cnt * (T + 1);
    if (shared > GPTQ_SHARED_BYTES) T = GPTQ_MAX_ROWS; /* global memory: no tile to fit */
    const unsigned blocks = (unsigned)((rows + T - 1) / T);
    if (shared <= GPTQ_SHARED_BYTES)
        k_gptq_batch<true><<<blocks, T, shared, c->stream>>>(w, rows, cols, i1, cnt, u, perm, G, ng, bits, sym, mode,
                                                             scales, zeros, codes, err1, loss);
    else
        k_gptq_batch<false><<<blocks, T, 0, c->stream>>>(w, rows, cols, i1, cnt, u, perm, G, ng, bits, sym, mode,
                                                         scales, zeros, codes, err1, loss);
    QS_CUDA_LAUNCHED("gptq_batch");
    if (i2 == cols) return 0;
    /* W[:, i2:] -= Err1 U[i1:i2, i2:] */
    return qs_cuda_gemm_math(be, QS_CUDA_FP32, 0, 0, rows, cols - i2, cnt, -1.0f, err1, cnt, u + (size_t)i1 * cols + i2,
                             cols, 1.0f, w + i2, cols, "gptq_batch", err);
}

/* gptq_hessian: the upper triangle's finiteness (every writer stores 1: the flag does not depend
 * on the order), the diagonal, and the ordered, mirrored, dampened copy */
__global__ static void k_hessian_check(const float *h, size_t n, float *diag, int *bad) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n * n; idx += (size_t)gridDim.x * blockDim.x) {
        const size_t i = idx / n, j = idx % n;
        if (j >= i && !isfinite(h[idx])) *bad = 1;
        if (i == j) diag[i] = h[idx];
    }
}

__global__ static void k_hessian_order(float *hp, const float *h, size_t n, const int32_t *perm, float damp) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n * n; idx += (size_t)gridDim.x * blockDim.x) {
        const size_t i = idx / n, j = idx % n, pi = (size_t)perm[i], pj = (size_t)perm[j];
        float v = pi <= pj ? h[pi * n + pj] : h[pj * n + pi];
        if (pi == pj && v == 0.0f) v = 1.0f; /* a dead input */
        hp[idx] = i == j ? v + damp : v;
    }
}

extern "C" int qs_cuda_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                                    float *diag_host, int *nonfinite_host, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "gptq_hessian: n = %d", n);
    qs_cuda_ctx *c = qs_cuda(be);
    const size_t N = (size_t)n;
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->part, sizeof(float) * N + 64, "gptq_hessian", err));
    float *diag = (float *)c->part.p;
    int *bad = (int *)((char *)c->part.p + sizeof(float) * N + 32);
    QS_CUDA_CALL(cudaMemsetAsync(bad, 0, sizeof(int), c->stream), "gptq_hessian");
    k_hessian_check<<<qs_cuda_blocks(N * N, 256), 256, 0, c->stream>>>(h, N, diag, bad);
    QS_CUDA_LAUNCHED("gptq_hessian");
    QS_CUDA_CALL(cudaMemcpyAsync(nonfinite_host, bad, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "gptq_hessian");
    if (diag_host)
        QS_CUDA_CALL(cudaMemcpyAsync(diag_host, diag, sizeof(float) * N, cudaMemcpyDeviceToHost, c->stream), "gptq_hessian");
    QS_CUDA_CALL(cudaStreamSynchronize(c->stream), "gptq_hessian");
    if (!hp || *nonfinite_host) return 0;
    k_hessian_order<<<qs_cuda_blocks(N * N, 256), 256, 0, c->stream>>>(hp, h, N, perm, damp);
    QS_CUDA_LAUNCHED("gptq_hessian");
    return 0;
}
