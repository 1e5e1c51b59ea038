/* gpu/cuda_linalg.cu - GPTQ's Hessian factor with cuSOLVER: U upper with U^T U = A^-1, as
 * quant/gptq.c computes it with LAPACK (potrf, potri, zero the lower part, potrf). Row-major
 * upper is column-major lower, so every call is CUBLAS_FILL_MODE_LOWER. cuSOLVER's potrf / potri
 * are deterministic (no atomics in their reductions). */
#include "gpu/cuda_internal.h"

static int solver_fail(qs_error *err, cusolverStatus_t s, const char *what) {
    return qs_error_set(err, s == CUSOLVER_STATUS_ALLOC_FAILED ? -12 : QS_EUNSUPPORTED,
                        "cuda cholesky_inverse: cuSOLVER %s failed (status %d)", what, (int)s);
}

/* row-major: zero below the diagonal */
__global__ static void k_zero_lower(float *a, int n) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < (size_t)n * n;
         idx += (size_t)gridDim.x * blockDim.x)
        if (idx / n > idx % n) a[idx] = 0.0f;
}

extern "C" int qs_cuda_cholesky_inverse(qs_backend *be, float *a, int n, int *info_host, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "cholesky_inverse: n = %d", n);
    qs_cuda_ctx *c = qs_cuda(be);
    cusolverStatus_t s;
    if (!c->solver) {
        if ((s = cusolverDnCreate(&c->solver)) != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, "create");
        if ((s = cusolverDnSetStream(c->solver, c->stream)) != CUSOLVER_STATUS_SUCCESS) {
            cusolverDnDestroy(c->solver); /* not half made: the next call starts over */
            c->solver = NULL;
            return solver_fail(err, s, "set stream");
        }
    }
    int lw1 = 0, lw2 = 0;
    const cublasFillMode_t lo = CUBLAS_FILL_MODE_LOWER;
    if ((s = cusolverDnSpotrf_bufferSize(c->solver, lo, n, a, n, &lw1)) != CUSOLVER_STATUS_SUCCESS)
        return solver_fail(err, s, "potrf_bufferSize");
    if ((s = cusolverDnSpotri_bufferSize(c->solver, lo, n, a, n, &lw2)) != CUSOLVER_STATUS_SUCCESS)
        return solver_fail(err, s, "potri_bufferSize");
    size_t lw = (size_t)(lw1 > lw2 ? lw1 : lw2);
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->solve, sizeof(float) * lw + 256, "cholesky_inverse", err));
    float *work = (float *)c->solve.p;
    int *dinfo = (int *)((char *)c->solve.p + sizeof(float) * lw + 128);
    *info_host = 0;
    for (int stage = 0; stage < 3; stage++) {
        if (stage == 1) s = cusolverDnSpotri(c->solver, lo, n, a, n, work, (int)lw, dinfo);
        else s = cusolverDnSpotrf(c->solver, lo, n, a, n, work, (int)lw, dinfo);
        if (s != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, stage == 1 ? "potri" : "potrf");
        QS_CUDA_CALL(cudaMemcpyAsync(info_host, dinfo, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "cholesky_inverse");
        QS_CUDA_CALL(cudaStreamSynchronize(c->stream), "cholesky_inverse");
        if (*info_host) return 0;
        if (stage == 1) { /* potri leaves the inverse in the upper triangle (row-major); clear the rest */
            k_zero_lower<<<qs_cuda_blocks((size_t)n * n, 256), 256, 0, c->stream>>>(a, n);
            QS_CUDA_LAUNCHED("cholesky_inverse");
        }
    }
    return 0;
}
