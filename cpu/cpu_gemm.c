/* cpu/cpu_gemm.c - GEMM through OpenBLAS, with bits that depend on a row's own inputs only.
 *
 * OpenBLAS alone does not give that: with its own threads the output is split by thread count,
 * and even single-threaded (OpenBLAS 0.3.21's Haswell / Zen sgemm kernels, measured) the rows of
 * c are computed in groups of 12 from the call's first row, and a row rounds differently
 * depending on its place in its group and on whether the last group is partial. So a token's
 * result would depend on how many tokens share its call (a prefix, --gpu-mem's windows per call,
 * the thread count). Therefore the backend runs OpenBLAS single-threaded (cpu_backend.c) and
 * splits the rows of c itself, over its OpenMP threads, into chunks that start at canonical rows:
 * a window start (set_window_rows; windows of seqlen rows are the pipeline's unit) or a multiple
 * of GEMM_ALIGN rows after one, and never cross a window's end. Each chunk is computed from a
 * copy of its rows of op(a), padded with zero rows to a multiple of GEMM_GROUP rows, so that no
 * real row is in a partial group. The copies cost O(m (k + n)) against the GEMM's O(m n k), which
 * is much when k is small (GPTQ's lazy updates: k = 128), so a chunk that is already whole
 * groups (every chunk but a window's last, usually) runs in place: OpenBLAS packs a and b into
 * its own buffers, so where the rows come from does not change their bits (the tests that
 * compare runs with different windows per call hold this). */
#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

#define GEMM_ALIGN 48 /* chunk starts after a window start: a multiple of the 12-row groups (and of 16) */
#define GEMM_GROUP 24 /* chunks padded to a multiple of this (covers groups of 8, 12, 24) */

int qs_cpu_set_window_rows(qs_backend *be, int rows, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0, QS_EUSAGE, "set_window_rows: %d rows", rows);
    ((qs_cpu_ctx *)be->ctx)->window_rows = rows;
    return 0;
}

int qs_cpu_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc, qs_error *err) {
    qs_cpu_ctx *cx = be->ctx;
    QS_RETURN_ERROR_IF(m < 0 || n < 0 || k < 0, QS_EUSAGE, "gemm: negative size [%d, %d] x [%d]", m, n, k);
    QS_RETURN_ERROR_IF(lda < (ta ? m : k) || ldb < (tb ? k : n) || ldc < n, QS_EUSAGE,
                       "gemm: a leading dimension is smaller than its row (lda %d, ldb %d, ldc %d for m %d n %d k %d)",
                       lda, ldb, ldc, m, n, k);
    if (m == 0 || n == 0) return 0;
    if (k == 0) { /* BLAS leaves c * beta; with beta = 0 make it exactly zero */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return 0;
    }
    /* chunks: windows of P rows, each cut every `piece` rows (a multiple of GEMM_ALIGN) */
    const int P = cx->window_rows > 0 && cx->window_rows < m ? cx->window_rows : m;
    const int n_win = (m + P - 1) / P;
    int piece = (m + cx->threads - 1) / cx->threads;
    piece = (piece + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
    if (piece >= P) piece = P;
    const int per_win = (P + piece - 1) / piece, chunks = n_win * per_win;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(cx->threads < chunks ? cx->threads : chunks) reduction(| : failed)
    for (int ch = 0; ch < chunks; ch++) {
        const int w = ch / per_win, wend = (w + 1) * P < m ? (w + 1) * P : m;
        const int r0 = w * P + (ch % per_win) * piece, r1 = r0 + piece < wend ? r0 + piece : wend, mr = r1 - r0;
        if (mr <= 0) continue;
        /* the chunk's whole groups straight into c (from a copy of op(a)'s rows when transposed),
         * then the rest, fewer than GEMM_GROUP rows, padded to one group in a copy: the same
         * groups from the chunk's start as one padded call, without a copy of c's chunk */
        const int main = mr / GEMM_GROUP * GEMM_GROUP, rest = mr - main;
        const int tid = omp_get_thread_num();
        const size_t need = (size_t)(ta ? main : 0) * k + (rest ? (size_t)GEMM_GROUP * ((size_t)k + n) : 0);
        if (need && qs_cpu_scratch_grow(&cx->gemm_scr[tid], &cx->gemm_cap[tid], need)) {
            failed = 1;
            continue;
        }
        float *ap = need ? cx->gemm_scr[tid] : NULL;
        if (main > 0 && !ta) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, main, n, k, alpha,
                        a + (size_t)r0 * lda, lda, b, ldb, beta, c + (size_t)r0 * ldc, ldc);
        } else if (main > 0) {
            for (int i = 0; i < main; i++) { /* op(a) rows, row-major [main, k] */
                float *dst = ap + (size_t)i * k;
                for (int j = 0; j < k; j++) dst[j] = a[(size_t)j * lda + r0 + i];
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, main, n, k, alpha, ap, k, b,
                        ldb, beta, c + (size_t)r0 * ldc, ldc);
        }
        if (!rest) continue;
        const int q0 = r0 + main;
        float *rp = ap + (size_t)(ta ? main : 0) * k, *cp = rp + (size_t)GEMM_GROUP * k;
        for (int i = 0; i < rest; i++) { /* op(a) rows q0.., row-major [rest, k], padded with zero rows */
            float *dst = rp + (size_t)i * k;
            if (!ta) memcpy(dst, a + (size_t)(q0 + i) * lda, sizeof(float) * (size_t)k);
            else
                for (int j = 0; j < k; j++) dst[j] = a[(size_t)j * lda + q0 + i];
        }
        memset(rp + (size_t)rest * k, 0, sizeof(float) * (size_t)(GEMM_GROUP - rest) * k);
        if (beta != 0.0f) {
            for (int i = 0; i < rest; i++) memcpy(cp + (size_t)i * n, c + (size_t)(q0 + i) * ldc, sizeof(float) * (size_t)n);
            memset(cp + (size_t)rest * n, 0, sizeof(float) * (size_t)(GEMM_GROUP - rest) * n);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, GEMM_GROUP, n, k, alpha, rp, k, b,
                    ldb, beta, cp, n);
        for (int i = 0; i < rest; i++) memcpy(c + (size_t)(q0 + i) * ldc, cp + (size_t)i * n, sizeof(float) * (size_t)n);
    }
    QS_RETURN_ERROR_IF(failed, -ENOMEM, "gemm: out of memory for the row copies of [%d, %d] x [%d]", m, n, k);
    return 0;
}
