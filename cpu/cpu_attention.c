/* cpu/cpu_attention.c - causal grouped-query attention on the CPU.
 *
 * For each window, kv head and block of QS_CPU_ATTN_QB query positions [i0, i1): the query rows
 * of every query head that shares the kv head are packed into one matrix, so one GEMM computes
 * all their scores S = scale * Q K[0:i1]^T and one GEMM their outputs P V[0:i1] (few large GEMMs
 * rather than many per-token ones). A block only meets keys [0, i1), so the masked upper triangle
 * costs at most one block's width. Softmax rows are independent (parallel over rows), each in
 * fp32 with the row maximum subtracted and its sum in double, in a fixed order. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cpu/cpu_exp.h"
#include "cpu/cpu_internal.h"

/* row[0..n) <- softmax(row[0..n)), row[n..width) <- 0; returns max + log(sum) */
static float softmax_row(float *row, int n, int width) {
    float m = qs_cpu_row_max(row, n);
    double s = qs_cpu_row_exp(row, n, m);
    float inv = (float)(1.0 / s);
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    if (width > n) memset(row + n, 0, sizeof(float) * (size_t)(width - n));
    return m + (float)log(s);
}

int qs_cpu_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                     int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, float *lse, qs_error *err) {
    qs_cpu_ctx *c = be->ctx;
    QS_RETURN_ERROR_IF(n_win < 0 || seqlen < 1 || head_dim < 1 || n_kv_heads < 1 || n_heads % n_kv_heads, QS_EUSAGE,
                       "attention: bad shape (%d windows of %d, %d heads, %d kv heads of %d)", n_win, seqlen, n_heads,
                       n_kv_heads, head_dim);
    const int L = seqlen, hd = head_dim, grp = n_heads / n_kv_heads, QB = QS_CPU_ATTN_QB;
    const size_t qs = (size_t)n_heads * hd, ks = (size_t)n_kv_heads * hd;
    int qb = L < QB ? L : QB;
    size_t pack = (size_t)grp * qb * hd;
    if (qs_cpu_scratch_grow(&c->scores, &c->scores_cap, (size_t)grp * qb * L) ||
        qs_cpu_scratch_grow(&c->pack, &c->pack_cap, 2 * pack))
        return qs_error_set(err, -ENOMEM, "attention: out of memory for the scores of %d x %d x %d", grp, qb, L);
    float *S = c->scores, *Qp = c->pack, *Op = c->pack + pack;
    /* the packed rows are nb-row windows, one per query head (a head's rows then round the same
     * whatever the length: cpu_gemm.c); the caller's window length comes back at the end */
    const int saved_window = c->window_rows;
    for (int w = 0; w < n_win; w++)
        for (int g = 0; g < n_kv_heads; g++) {
            const float *kg = k + (size_t)w * L * ks + (size_t)g * hd, *vg = v + (size_t)w * L * ks + (size_t)g * hd;
            for (int i0 = 0; i0 < L; i0 += qb) {
                int nb = L - i0 < qb ? L - i0 : qb, nk = i0 + nb, rows = grp * nb;
                /* Qp[j*nb + r, :] = q of head g*grp + j at position i0 + r */
                for (int j = 0; j < grp; j++)
                    for (int r = 0; r < nb; r++)
                        memcpy(Qp + ((size_t)j * nb + r) * hd,
                               q + ((size_t)w * L + i0 + r) * qs + (size_t)(g * grp + j) * hd, sizeof(float) * hd);
                c->window_rows = nb;
                int rc = qs_cpu_gemm(be, 0, 1, rows, nk, hd, scale, Qp, hd, kg, (int)ks, 0.0f, S, nk, err);
                if (rc) return c->window_rows = saved_window, rc;
#pragma omp parallel for schedule(static)
                for (int row = 0; row < rows; row++) {
                    int j = row / nb, r = row % nb;
                    float l = softmax_row(S + (size_t)row * nk, i0 + r + 1, nk);
                    if (lse) lse[((size_t)w * n_heads + g * grp + j) * L + i0 + r] = l;
                }
                rc = qs_cpu_gemm(be, 0, 0, rows, hd, nk, 1.0f, S, nk, vg, (int)ks, 0.0f, Op, hd, err);
                if (rc) return c->window_rows = saved_window, rc;
                for (int j = 0; j < grp; j++)
                    for (int r = 0; r < nb; r++)
                        memcpy(out + ((size_t)w * L + i0 + r) * qs + (size_t)(g * grp + j) * hd,
                               Op + ((size_t)j * nb + r) * hd, sizeof(float) * hd);
            }
        }
    c->window_rows = saved_window;
    return 0;
}
