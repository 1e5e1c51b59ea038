/* cpu/cpu_gemm.c - GEMM through OpenBLAS (threaded by OpenBLAS itself). OpenBLAS splits the
 * output among threads, never the k sum, so a result does not depend on the thread count. */
#include <cblas.h>

#include "cpu/cpu_internal.h"

int qs_cpu_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc, qs_error *err) {
    (void)be;
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
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                b, ldb, beta, c, ldc);
    return 0;
}
