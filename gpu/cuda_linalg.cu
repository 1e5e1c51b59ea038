/* gpu/cuda_linalg.cu - GPTQ's Hessian factor with cuSOLVER's 64-bit API: U upper with
 * U^T U = A^-1 (the factor quant/gptq.c computes with LAPACK's potrf, potri, potrf).
 * Cholesky factors are unique, so it is computed by a shorter road with the same result up to
 * rounding: with J the reversal (J A J reverses the rows and the columns), factor
 * J A J = L L^T, then U = J L^-1 J, since U^T U = J L^-T L^-1 J = (J (J A J) J)^-1 = A^-1, and
 * J (lower) J is upper. That is one potrf and one trtri (2/3 n^3 flops) instead of potrf, potri
 * and potrf (4/3 n^3), and nothing is limited to 32-bit sizes (Llama 3.1 405B's down_proj has
 * n = 53248 > 46340). A row-major n x n matrix reversed is its n^2 floats in reverse order. In
 * place, column-major views (the transpose of ours): potrf and trtri UPPER there are our lower
 * L and L^-1; the stale half is cleared after the last reversal. cuSOLVER runs in deterministic
 * mode. */
#include "gpu/cuda_backend.h"
#include <stdio.h>

#include "gpu/cuda_internal.h"

#include <stdlib.h>

static int solver_fail(qs_error *err, cusolverStatus_t s, const char *what) {
    return qs_error_set(err, s == CUSOLVER_STATUS_ALLOC_FAILED ? -12 : QS_EUNSUPPORTED,
                        "cuda cholesky_inverse: cuSOLVER %s failed (status %d)", what, (int)s);
}

/* row-major: zero below the diagonal */
__global__ static void k_zero_lower(float *a, size_t n) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n * n; idx += (size_t)gridDim.x * blockDim.x)
        if (idx / n > idx % n) a[idx] = 0.0f;
}

/* a[i] <-> a[len - 1 - i]: J A J of a row-major square matrix */
__global__ static void k_reverse(float *a, size_t len) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len / 2; i += (size_t)gridDim.x * blockDim.x) {
        float t = a[i];
        a[i] = a[len - 1 - i];
        a[len - 1 - i] = t;
    }
}

static int solver_ready(qs_cuda_ctx *c, qs_error *err) {
    if (c->solver) return 0;
    cusolverStatus_t s;
    const char *what = "create";
    if ((s = cusolverDnCreate(&c->solver)) != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, what);
    if ((s = cusolverDnSetStream(c->solver, c->stream)) != CUSOLVER_STATUS_SUCCESS) what = "set stream";
    else if ((s = cusolverDnSetDeterministicMode(c->solver, CUSOLVER_DETERMINISTIC_RESULTS)) != CUSOLVER_STATUS_SUCCESS)
        what = "set deterministic mode";
    else if ((s = cusolverDnCreateParams(&c->solver_params)) != CUSOLVER_STATUS_SUCCESS) what = "create params";
    if (s == CUSOLVER_STATUS_SUCCESS) return 0;
    cusolverDnDestroy(c->solver); /* not half made: the next call starts over */
    c->solver = NULL;
    c->solver_params = NULL;
    return solver_fail(err, s, what);
}

/* the workspaces of potrf and trtri at order n (the queries do not read a) */
static int workspace(qs_cuda_ctx *c, int64_t n, float *a, size_t *dev_bytes, size_t *host_bytes, qs_error *err) {
    QS_FORWARD_IF_ERROR(solver_ready(c, err));
    size_t d1 = 0, h1 = 0, d2 = 0, h2 = 0;
    const cublasFillMode_t up = CUBLAS_FILL_MODE_UPPER;
    cusolverStatus_t s = cusolverDnXpotrf_bufferSize(c->solver, c->solver_params, up, n, CUDA_R_32F, a, n, CUDA_R_32F,
                                                     &d1, &h1);
    if (s != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, "potrf_bufferSize");
    s = cusolverDnXtrtri_bufferSize(c->solver, up, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, a, n, &d2, &h2);
    if (s != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, "trtri_bufferSize");
    *dev_bytes = d1 > d2 ? d1 : d2;
    *host_bytes = h1 > h2 ? h1 : h2;
    return 0;
}

int qs_cuda_factor_workspace(qs_backend *be, int64_t n, size_t *dev_bytes, size_t *host_bytes, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "cholesky_inverse workspace: n = %lld", (long long)n);
    return workspace(qs_cuda(be), n, (float *)qs_cuda(be)->blas_ws, dev_bytes, host_bytes, err);
}

size_t qs_cuda_factor_allowance(int64_t n) { return n > 0 ? QS_CUDA_SOLVE_COLS * sizeof(float) * (size_t)n + ((size_t)4 << 20) : 0; }

extern "C" int qs_cuda_cholesky_inverse(qs_backend *be, float *a, int n, int *info_host, qs_error *err) {
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "cholesky_inverse: n = %d", n);
    qs_cuda_ctx *c = qs_cuda(be);
    size_t dw = 0, hw = 0;
    QS_FORWARD_IF_ERROR(workspace(c, n, a, &dw, &hw, err));
    static int warned; /* the plan's allowance is a bound test_backend_ops checks; say so if it does not hold */
    if (dw + 256 > qs_cuda_factor_allowance(n) && !warned++)
        fprintf(stderr, "qstream: warning: cuSOLVER's workspace for a %d x %d factor is %.1f MiB, more than the --gpu-mem "
                "plan's allowance of %.1f MiB\n", n, n, (dw + 256) / 1048576.0, qs_cuda_factor_allowance(n) / 1048576.0);
    QS_FORWARD_IF_ERROR(qs_cuda_scratch_grow(be, &c->solve, dw + 256, "cholesky_inverse", err));
    if (hw > c->solve_host_cap) {
        void *p = realloc(c->solve_host, hw);
        QS_RETURN_ERROR_IF(!p, -12, "cuda cholesky_inverse: out of host memory for cuSOLVER's %zu bytes", hw);
        c->solve_host = p, c->solve_host_cap = hw;
    }
    int *dinfo = (int *)((char *)c->solve.p + ((dw + 127) & ~(size_t)127));
    const size_t len = (size_t)n * n;
    const cublasFillMode_t up = CUBLAS_FILL_MODE_UPPER;
    *info_host = 0;
    k_reverse<<<qs_cuda_blocks(len / 2, 256), 256, 0, c->stream>>>(a, len);
    QS_CUDA_LAUNCHED("cholesky_inverse");
    cusolverStatus_t s = cusolverDnXpotrf(c->solver, c->solver_params, up, n, CUDA_R_32F, a, n, CUDA_R_32F, c->solve.p,
                                          dw, c->solve_host, hw, dinfo);
    if (s != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, "potrf");
    QS_CUDA_CALL(cudaMemcpyAsync(info_host, dinfo, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "cholesky_inverse");
    QS_CUDA_CALL(cudaStreamSynchronize(c->stream), "cholesky_inverse");
    QS_RETURN_ERROR_IF(*info_host < 0, QS_EUNSUPPORTED, "cuda cholesky_inverse: cuSOLVER potrf: parameter %d is invalid (n %d)",
                       -*info_host, n);
    if (*info_host) return 0; /* > 0: a leading minor of J A J (a trailing one of A) is not positive definite */
    s = cusolverDnXtrtri(c->solver, up, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, a, n, c->solve.p, dw, c->solve_host, hw,
                         dinfo);
    if (s != CUSOLVER_STATUS_SUCCESS) return solver_fail(err, s, "trtri");
    k_reverse<<<qs_cuda_blocks(len / 2, 256), 256, 0, c->stream>>>(a, len);
    QS_CUDA_LAUNCHED("cholesky_inverse");
    k_zero_lower<<<qs_cuda_blocks(len, 256), 256, 0, c->stream>>>(a, (size_t)n);
    QS_CUDA_LAUNCHED("cholesky_inverse");
    QS_CUDA_CALL(cudaMemcpyAsync(info_host, dinfo, sizeof(int), cudaMemcpyDeviceToHost, c->stream), "cholesky_inverse");
    QS_CUDA_CALL(cudaStreamSynchronize(c->stream), "cholesky_inverse");
    return 0; /* trtri's info (a zero diagonal) cannot be non-zero after potrf succeeded; kept as the result */
}
