/* gpu/cuda_gemm.cu - the row-major GEMM of backend.h through cublasGemmEx.
 *
 * cuBLAS is column-major: a row-major [r, c] matrix with leading dimension ld is its transpose
 * in column-major with the same ld, so C = op(A) op(B) row-major is C^T = op(B)^T op(A)^T
 * column-major: the operands swap and keep their transpose flags.
 * Math (QS_CUDA_GEMM): fp32 inputs always; bf16 lets cuBLAS round them to bf16 for the tensor
 * cores (fp32 accumulation), tf32 to tf32, fp32 computes in fp32 (pedantic: no conversion).
 * Determinism: cuBLAS gives the same bits for the same shapes, pointers' alignment class and
 * workspace on one GPU model. A row's result can depend on the other rows of the call (split
 * and tile choices depend on m), so with set_window_rows the call is issued one window at a
 * time: a window's bits then do not depend on how many windows share a call. */
#include "gpu/cuda_internal.h"

extern "C" int qs_cuda_set_window_rows(qs_backend *be, int rows, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 0, QS_EUSAGE, "set_window_rows: %d rows", rows);
    qs_cuda(be)->window_rows = rows;
    return 0;
}

int qs_cuda_gemm_rm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc, const char *op, qs_error *err) {
    return qs_cuda_gemm_math(be, qs_cuda(be)->math, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, op, err);
}

int qs_cuda_gemm_math(qs_backend *be, enum qs_cuda_math math, int ta, int tb, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc, const char *op,
                      qs_error *err) {
    qs_cuda_ctx *cx = qs_cuda(be);
    if (m == 0 || n == 0) return 0;
    cublasComputeType_t ct = math == QS_CUDA_FP32   ? CUBLAS_COMPUTE_32F_PEDANTIC
                             : math == QS_CUDA_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                    : CUBLAS_COMPUTE_32F_FAST_16BF;
    if (k == 0) { /* C = beta C here: beta = 0 exact zeros, and cuBLAS would refuse a leading dimension of 0 */
        if (beta == 0.0f) {
            cudaError_t e = cudaMemset2DAsync(c, sizeof(float) * (size_t)ldc, 0, sizeof(float) * (size_t)n, (size_t)m,
                                              cx->stream);
            if (e != cudaSuccess) return qs_cuda_fail(err, e, op, "cudaMemset2DAsync");
            return 0;
        }
        if (beta == 1.0f) return 0;
        if (ldc == n) return qs_cuda_scale(be, c, c, beta, (size_t)m * n, err);
        for (int r = 0; r < m; r++) QS_FORWARD_IF_ERROR(qs_cuda_scale(be, c + (size_t)r * ldc, c + (size_t)r * ldc, beta, (size_t)n, err));
        return 0;
    }
    cublasStatus_t s = cublasGemmEx(cx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                    &alpha, b, CUDA_R_32F, ldb, a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, ct,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return qs_cuda_blas_fail(err, s, op);
    return 0;
}

extern "C" int qs_cuda_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc, qs_error *err) {
    QS_RETURN_ERROR_IF(m < 0 || n < 0 || k < 0, QS_EUSAGE, "gemm: negative size [%d, %d] x [%d]", m, n, k);
    QS_RETURN_ERROR_IF(lda < (ta ? m : k) || ldb < (tb ? k : n) || ldc < n, QS_EUSAGE,
                       "gemm: a leading dimension is smaller than its row (lda %d, ldb %d, ldc %d for m %d n %d k %d)",
                       lda, ldb, ldc, m, n, k);
    const int P = qs_cuda(be)->window_rows;
    if (P <= 0 || P >= m) return qs_cuda_gemm_rm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, "gemm", err);
    for (int r0 = 0; r0 < m; r0 += P) {
        int mr = m - r0 < P ? m - r0 : P;
        /* rows r0.. of op(a): row offset r0 * lda, or column offset r0 when a is stored transposed */
        const float *ar = ta ? a + r0 : a + (size_t)r0 * lda;
        QS_FORWARD_IF_ERROR(qs_cuda_gemm_rm(be, ta, tb, mr, n, k, alpha, ar, lda, b, ldb, beta, c + (size_t)r0 * ldc, ldc,
                                            "gemm", err));
    }
    return 0;
}

/* y = x w^T (tw) or x w + beta y with w bf16: x rounded to bf16 (to_bf16's rounding) into
 * scratch, then cublasGemmEx on bf16 operands with fp32 accumulation and output, window by
 * window as gemm. Column-major, w [n, k] row-major is [k, n] (op T gives n x k) and w [k, n] is
 * [n, k] (op N). */
extern "C" int qs_cuda_linear_bf16(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx,
                                   const uint16_t *w, int ldw, float beta, float *y, int ldy, qs_error *err) {
    QS_RETURN_ERROR_IF(m < 0 || n < 0 || k < 0, QS_EUSAGE, "linear_bf16: negative size [%d, %d] x [%d]", m, n, k);
    QS_RETURN_ERROR_IF(ldx < k || ldw < (tw ? k : n) || ldy < n, QS_EUSAGE,
                       "linear_bf16: a leading dimension is smaller than its row (ldx %d, ldw %d, ldy %d for m %d n %d k %d)",
                       ldx, ldw, ldy, m, n, k);
    qs_cuda_ctx *cx = qs_cuda(be);
    if (m == 0 || n == 0) return 0;
    if (k == 0) return qs_cuda_gemm_rm(be, 0, 1, m, n, 0, 1.0f, x, ldx, NULL, 1, beta, y, ldy, "linear_bf16", err);
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &cx->xb, sizeof(uint16_t) * (size_t)m * k, "linear_bf16", err));
    uint16_t *xb = (uint16_t *)cx->xb.p;
    QS_FORWARD_IF_ERROR(qs_cuda_rows_to_bf16(be, xb, x, m, k, ldx, err));
    const float one = 1.0f;
    const int P = cx->window_rows > 0 && cx->window_rows < m ? cx->window_rows : m;
    for (int r0 = 0; r0 < m; r0 += P) {
        const int mr = m - r0 < P ? m - r0 : P;
        cublasStatus_t s = cublasGemmEx(cx->blas, tw ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, n, mr, k, &one, w,
                                        CUDA_R_16BF, ldw, xb + (size_t)r0 * k, CUDA_R_16BF, k, &beta,
                                        y + (size_t)r0 * ldy, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) return qs_cuda_blas_fail(err, s, "linear_bf16");
    }
    return 0;
}
