/* gpu/cuda_attention.cu - causal GQA attention and its backward with cuBLAS products, in the
 * CPU backend's structure (cpu/cpu_attention.c, cpu/cpu_backward.c): for each window, kv head
 * and block of QB query positions [i0, i1), the query rows of the group's heads are packed into
 * one [group * nb, head_dim] matrix, one GEMM gives all their scores against keys [0, i1), a row
 * kernel takes the causal softmax (fp32, max subtracted, the sum in double over a fixed tree)
 * and one GEMM the outputs. The backward's sums over query heads and positions are GEMM k
 * dimensions and accumulations issued in a fixed order: no atomics anywhere. */
#include <math.h>

#include "gpu/cuda_internal.h"

#define QB QS_CUDA_ATTN_QB /* the scores of 8 heads x 512 x 4096 keys are 64 MiB */
#define NT QS_CUDA_ROW_THREADS
#define GRID_LOOP(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* dst[j*nb + r, :] = src[(row0 + r) * stride + (h0 + j) * hd + :], j < grp, r < nb (pack);
 * unpack is the reverse */
__global__ static void k_pack(float *dst, const float *src, size_t row0, int nb, int grp, int hd, size_t stride, int h0) {
    GRID_LOOP(idx, (size_t)grp * nb * hd) {
        size_t e = idx % hd, jr = idx / hd, j = jr / nb, r = jr % nb;
        dst[idx] = src[(row0 + r) * stride + (h0 + j) * hd + e];
    }
}
__global__ static void k_unpack(float *dst, const float *src, size_t row0, int nb, int grp, int hd, size_t stride, int h0) {
    GRID_LOOP(idx, (size_t)grp * nb * hd) {
        size_t e = idx % hd, jr = idx / hd, j = jr / nb, r = jr % nb;
        dst[(row0 + r) * stride + (h0 + j) * hd + e] = src[idx];
    }
}
static int pack(qs_cuda_ctx *c, float *dst, const float *src, size_t row0, int nb, int grp, int hd, size_t stride, int h0,
                int un) {
    size_t n = (size_t)grp * nb * hd;
    if (un) k_unpack<<<qs_cuda_blocks(n, 256), 256, 0, c->stream>>>(dst, src, row0, nb, grp, hd, stride, h0);
    else k_pack<<<qs_cuda_blocks(n, 256), 256, 0, c->stream>>>(dst, src, row0, nb, grp, hd, stride, h0);
    return 0;
}

/* row = j * nb + r of the scores [grp*nb, nk]: softmax of columns 0..i0+r, zeros after; lse of
 * head h0 + j at position i0 + r */
__global__ static void k_softmax(float *S, int nb, int nk, int i0, float *lse, size_t lse_base, int L) {
    __shared__ double sh[NT];
    __shared__ float shf[NT];
    const int row = blockIdx.x, j = row / nb, r = row % nb, n = i0 + r + 1;
    float *s = S + (size_t)row * nk;
    float m = s[0];
    for (int c = threadIdx.x; c < n; c += NT) m = s[c] > m ? s[c] : m; /* qs_cpu_row_max's comparison: a NaN seed stays */
    m = qs_block_max(m, shf);
    double sum = 0;
    for (int c = threadIdx.x; c < n; c += NT) {
        float e = expf(s[c] - m);
        s[c] = e;
        sum += e;
    }
    sum = qs_block_sum(sum, sh);
    float inv = (float)(1.0 / sum);
    for (int c = threadIdx.x; c < nk; c += NT) s[c] = c < n ? s[c] * inv : 0.0f;
    if (lse && threadIdx.x == 0) lse[lse_base + (size_t)j * L + i0 + r] = m + (float)log(sum);
}

extern "C" int qs_cuda_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                                 int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, float *lse,
                                 qs_error *err) {
    QS_RETURN_ERROR_IF(n_win < 0 || seqlen < 1 || head_dim < 1 || n_kv_heads < 1 || n_heads % n_kv_heads, QS_EUSAGE,
                       "attention: bad shape (%d windows of %d, %d heads, %d kv heads of %d)", n_win, seqlen, n_heads,
                       n_kv_heads, head_dim);
    qs_cuda_ctx *c = qs_cuda(be);
    const int L = seqlen, hd = head_dim, grp = n_heads / n_kv_heads, qb = L < QB ? L : QB;
    const size_t qs = (size_t)n_heads * hd, ks = (size_t)n_kv_heads * hd, sz = (size_t)grp * qb * L,
                 pk = (size_t)grp * qb * hd;
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->attn, sizeof(float) * (sz + 2 * pk), "attention", err));
    float *S = (float *)c->attn.p, *Qp = S + sz, *Op = Qp + pk;
    for (int w = 0; w < n_win; w++)
        for (int g = 0; g < n_kv_heads; g++) {
            const float *kg = k + (size_t)w * L * ks + (size_t)g * hd, *vg = v + (size_t)w * L * ks + (size_t)g * hd;
            for (int i0 = 0; i0 < L; i0 += qb) {
                int nb = L - i0 < qb ? L - i0 : qb, nk = i0 + nb, rows = grp * nb;
                size_t row0 = (size_t)w * L + i0;
                pack(c, Qp, q, row0, nb, grp, hd, qs, g * grp, 0);
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 0, 1, rows, nk, hd, scale, Qp, hd, kg, (int)ks, 0.0f, S, nk,
                                                    "attention", err));
                k_softmax<<<rows, NT, 0, c->stream>>>(S, nb, nk, i0, lse, ((size_t)w * n_heads + g * grp) * L, L);
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 0, 0, rows, hd, nk, 1.0f, S, nk, vg, (int)ks, 0.0f, Op, hd,
                                                    "attention", err));
                pack(c, out, Op, row0, nb, grp, hd, qs, g * grp, 1);
            }
            QS_CUDA_LAUNCHED("attention");
        }
    return 0;
}

/* backward rows: P = exp(P - lse) (causal), dS = P (dS - D), D = dout . out of the row's head
 * and position */
__global__ static void k_attn_bwd_rows(float *P, float *dS, int nb, int nk, int i0, const float *lse, size_t lse_base,
                                       int L, const float *dout, const float *out, size_t row0, size_t qs, int h0,
                                       int hd) {
    __shared__ double sh[NT];
    const int row = blockIdx.x, j = row / nb, r = row % nb, i = i0 + r;
    const size_t t = (row0 + r) * qs + (size_t)(h0 + j) * hd;
    double D = 0;
    for (int e = threadIdx.x; e < hd; e += NT) D += (double)dout[t + e] * out[t + e];
    D = qs_block_sum(D, sh);
    const float l = lse[lse_base + (size_t)j * L + i], Df = (float)D;
    float *pr = P + (size_t)row * nk, *sr = dS + (size_t)row * nk;
    for (int col = threadIdx.x; col < nk; col += NT) {
        if (col <= i) {
            float p = expf(pr[col] - l);
            pr[col] = p;
            sr[col] = p * (sr[col] - Df);
        } else {
            pr[col] = sr[col] = 0.0f;
        }
    }
}

extern "C" int qs_cuda_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout,
                                          const float *q, const float *k, const float *v, const float *out,
                                          const float *lse, int n_win, int seqlen, int n_heads, int n_kv_heads,
                                          int head_dim, float scale, qs_error *err) {
    QS_RETURN_ERROR_IF(n_win < 0 || seqlen < 1 || head_dim < 1 || n_kv_heads < 1 || n_heads % n_kv_heads, QS_EUSAGE,
                       "attention_backward: bad shape (%d windows of %d, %d heads, %d kv heads of %d)", n_win, seqlen,
                       n_heads, n_kv_heads, head_dim);
    qs_cuda_ctx *c = qs_cuda(be);
    const int L = seqlen, hd = head_dim, grp = n_heads / n_kv_heads, qb = L < QB ? L : QB;
    const size_t qs = (size_t)n_heads * hd, ks = (size_t)n_kv_heads * hd, sz = (size_t)grp * qb * L,
                 pk = (size_t)grp * qb * hd, T = (size_t)n_win * L;
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->attn, sizeof(float) * (2 * sz + 3 * pk), "attention_backward", err));
    float *P = (float *)c->attn.p, *dS = P + sz, *Qp = dS + sz, *dOp = Qp + pk, *dQp = dOp + pk;
    QS_CUDA_CALL(cudaMemsetAsync(dk, 0, sizeof(float) * T * ks, c->stream), "attention_backward");
    QS_CUDA_CALL(cudaMemsetAsync(dv, 0, sizeof(float) * T * ks, c->stream), "attention_backward");
    for (int w = 0; w < n_win; w++)
        for (int g = 0; g < n_kv_heads; g++) {
            const size_t base = (size_t)w * L * ks + (size_t)g * hd;
            const float *kg = k + base, *vg = v + base;
            float *dkg = dk + base, *dvg = dv + base;
            for (int i0 = 0; i0 < L; i0 += qb) {
                int nb = L - i0 < qb ? L - i0 : qb, nk = i0 + nb, rows = grp * nb;
                size_t row0 = (size_t)w * L + i0;
                pack(c, Qp, q, row0, nb, grp, hd, qs, g * grp, 0);
                pack(c, dOp, dout, row0, nb, grp, hd, qs, g * grp, 0);
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 0, 1, rows, nk, hd, scale, Qp, hd, kg, (int)ks, 0.0f, P, nk,
                                                    "attention_backward", err));
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 0, 1, rows, nk, hd, 1.0f, dOp, hd, vg, (int)ks, 0.0f, dS, nk,
                                                    "attention_backward", err));
                k_attn_bwd_rows<<<rows, NT, 0, c->stream>>>(P, dS, nb, nk, i0, lse, ((size_t)w * n_heads + g * grp) * L,
                                                            L, dout, out, row0, qs, g * grp, hd);
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 1, 0, nk, hd, rows, 1.0f, P, nk, dOp, hd, 1.0f, dvg, (int)ks,
                                                    "attention_backward", err));
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 1, 0, nk, hd, rows, scale, dS, nk, Qp, hd, 1.0f, dkg, (int)ks,
                                                    "attention_backward", err));
                QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, 0, 0, rows, hd, nk, scale, dS, nk, kg, (int)ks, 0.0f, dQp, hd,
                                                    "attention_backward", err));
                pack(c, dq, dQp, row0, nb, grp, hd, qs, g * grp, 1);
            }
            QS_CUDA_LAUNCHED("attention_backward");
        }
    return 0;
}
