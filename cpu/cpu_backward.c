/* cpu/cpu_backward.c - backward passes of RMSNorm, causal GQA attention and SwiGLU on the CPU
 * (block-wise tuning; the conventions are in backend/backend.h).
 *
 * Determinism. Every sum has one fixed order whatever the thread count: RMSNorm's row sums and
 * the gamma gradient's column sums (in row order, a column belongs to one thread) are taken in
 * double; attention's sums over keys, query heads and query positions are GEMMs (OpenBLAS
 * splits the output, never the k sum) issued in a fixed order, and its row loops are
 * independent. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cpu/cpu_exp.h"
#include "cpu/cpu_internal.h"

/* columns of dgamma one thread sums over all rows (its partial sums stay in registers / L1) */
#define DGAMMA_COLS 64

int qs_cpu_rmsnorm_backward(qs_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                            const float *gamma, const float *rstd, int rows, int dim, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(rows < 0 || dim < 1, QS_EUSAGE, "rmsnorm_backward: bad shape [%d, %d]", rows, dim);
    /* dgamma first: dx may overwrite dy */
    int nchunk = (dim + DGAMMA_COLS - 1) / DGAMMA_COLS;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nchunk; ch++) {
        int c0 = ch * DGAMMA_COLS, nc = dim - c0 < DGAMMA_COLS ? dim - c0 : DGAMMA_COLS;
        double acc[DGAMMA_COLS] = {0};
        for (int r = 0; r < rows; r++) {
            const float *dyr = dy + (size_t)r * dim + c0, *xr = x + (size_t)r * dim + c0;
            double rs = rstd[r];
            for (int i = 0; i < nc; i++) acc[i] += (double)dyr[i] * xr[i] * rs;
        }
        for (int i = 0; i < nc; i++) dgamma[c0 + i] = (float)((double)dgamma[c0 + i] + acc[i]);
    }
    /* dx = rstd (gamma dy) - rstd^3 / dim x sum(gamma dy x) */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + (size_t)r * dim, *xr = x + (size_t)r * dim;
        float *dxr = dx + (size_t)r * dim;
        double s = 0;
        for (int i = 0; i < dim; i++) s += (double)gamma[i] * dyr[i] * xr[i];
        double rs = rstd[r];
        float a = (float)rs, b = (float)(rs * rs * rs * s / dim);
        for (int i = 0; i < dim; i++) dxr[i] = a * (gamma[i] * dyr[i]) - b * xr[i];
    }
    return 0;
}

/* For each window, kv head and block of query positions [i0, i1) (as the forward): the query
 * rows of the group's heads are packed into Qp and their output gradients into dOp, then
 *   P  = exp(scale Qp K[0:i1]^T - lse)   (causal: zero above the diagonal)
 *   dS = P * (dOp V[0:i1]^T - D),        D = rowsum(dout * out)
 *   dV[0:i1] += P^T dOp,  dK[0:i1] += scale dS^T Qp,  dQ = scale dS K[0:i1]
 * dK / dV accumulate over the query blocks in order; the query heads of a group are summed
 * inside one GEMM's k dimension. */
int qs_cpu_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse, int n_win, int seqlen,
                              int n_heads, int n_kv_heads, int head_dim, float scale, qs_error *err) {
    qs_cpu_ctx *c = be->ctx;
    QS_RETURN_ERROR_IF(n_win < 0 || seqlen < 1 || head_dim < 1 || n_kv_heads < 1 || n_heads % n_kv_heads, QS_EUSAGE,
                       "attention_backward: bad shape (%d windows of %d, %d heads, %d kv heads of %d)", n_win, seqlen,
                       n_heads, n_kv_heads, head_dim);
    const int L = seqlen, hd = head_dim, grp = n_heads / n_kv_heads, QB = QS_CPU_ATTN_QB;
    const size_t qs = (size_t)n_heads * hd, ks = (size_t)n_kv_heads * hd;
    int qb = L < QB ? L : QB;
    size_t sz = (size_t)grp * qb * L, pk = (size_t)grp * qb * hd;
    if (qs_cpu_scratch_grow(&c->attn_bwd, &c->attn_bwd_cap, 2 * sz + 3 * pk))
        return qs_error_set(err, -ENOMEM, "attention_backward: out of memory for the scores of %d x %d x %d", grp, qb,
                            L);
    float *P = c->attn_bwd, *dS = P + sz, *Qp = dS + sz, *dOp = Qp + pk, *dQp = dOp + pk;
    size_t T = (size_t)n_win * L;
    memset(dk, 0, sizeof(float) * T * ks);
    memset(dv, 0, sizeof(float) * T * ks);
    for (int w = 0; w < n_win; w++)
        for (int g = 0; g < n_kv_heads; g++) {
            size_t base = (size_t)w * L * ks + (size_t)g * hd;
            const float *kg = k + base, *vg = v + base;
            float *dkg = dk + base, *dvg = dv + base;
            for (int i0 = 0; i0 < L; i0 += qb) {
                int nb = L - i0 < qb ? L - i0 : qb, nk = i0 + nb, rows = grp * nb;
                for (int j = 0; j < grp; j++)
                    for (int r = 0; r < nb; r++) {
                        size_t src = ((size_t)w * L + i0 + r) * qs + (size_t)(g * grp + j) * hd,
                               dst = ((size_t)j * nb + r) * hd;
                        memcpy(Qp + dst, q + src, sizeof(float) * hd);
                        memcpy(dOp + dst, dout + src, sizeof(float) * hd);
                    }
                int rc = qs_cpu_gemm(be, 0, 1, rows, nk, hd, scale, Qp, hd, kg, (int)ks, 0.0f, P, nk, err);
                if (!rc) rc = qs_cpu_gemm(be, 0, 1, rows, nk, hd, 1.0f, dOp, hd, vg, (int)ks, 0.0f, dS, nk, err);
                if (rc) return rc;
#pragma omp parallel for schedule(static)
                for (int row = 0; row < rows; row++) {
                    int j = row / nb, r = row % nb, i = i0 + r, h = g * grp + j;
                    size_t t = ((size_t)w * L + i) * qs + (size_t)h * hd;
                    double D = 0;
                    for (int e = 0; e < hd; e++) D += (double)dout[t + e] * out[t + e];
                    float l = lse[((size_t)w * n_heads + h) * L + i], Df = (float)D;
                    float *pr = P + (size_t)row * nk, *sr = dS + (size_t)row * nk;
#pragma omp simd
                    for (int col = 0; col <= i; col++) {
                        float p = qs_cpu_expf(pr[col] - l);
                        pr[col] = p;
                        sr[col] = p * (sr[col] - Df);
                    }
                    for (int col = i + 1; col < nk; col++) pr[col] = sr[col] = 0.0f;
                }
                rc = qs_cpu_gemm(be, 1, 0, nk, hd, rows, 1.0f, P, nk, dOp, hd, 1.0f, dvg, (int)ks, err);
                if (!rc) rc = qs_cpu_gemm(be, 1, 0, nk, hd, rows, scale, dS, nk, Qp, hd, 1.0f, dkg, (int)ks, err);
                if (!rc) rc = qs_cpu_gemm(be, 0, 0, rows, hd, nk, scale, dS, nk, kg, (int)ks, 0.0f, dQp, hd, err);
                if (rc) return rc;
                for (int j = 0; j < grp; j++)
                    for (int r = 0; r < nb; r++)
                        memcpy(dq + ((size_t)w * L + i0 + r) * qs + (size_t)(g * grp + j) * hd,
                               dQp + ((size_t)j * nb + r) * hd, sizeof(float) * hd);
            }
        }
    return 0;
}

int qs_cpu_swiglu_backward(qs_backend *be, float *dgate, float *dup, const float *dy, const float *gate,
                           const float *up, size_t n, qs_error *err) {
    (void)be;
    (void)err;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i], d = dy[i]; /* read before writing: dgate or dup may be dy */
        float sig = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * (sig * (1.0f + g * (1.0f - sig)));
        dup[i] = d * (g * sig);
    }
    return 0;
}
