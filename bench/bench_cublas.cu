/* bench/bench_cublas.cu - the cuBLAS bf16 GEMM rate, the baseline the issue names for "achieved
 * TFLOP/s": `bench_cublas [M N K] [REPS]` (default 8192^3, 10 reps) times C = A B^T with A, B
 * bf16 in device memory and C fp32 (cublasGemmEx, CUBLAS_COMPUTE_32F: bf16 inputs, fp32
 * accumulation), after one untimed warm-up, with CUDA events; prints the best and median rate.
 * bench_gemm cuda times the backend's own gemm op (fp32 operands that cuBLAS rounds to bf16) on
 * the same shape, so the two lines side by side give what keeping fp32 operands costs. Built
 * only with the CUDA toolkit; exits 77 without a usable device. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK_CUDA(x)                                                                                  \
    do {                                                                                               \
        cudaError_t e_ = (x);                                                                          \
        if (e_ != cudaSuccess) {                                                                       \
            fprintf(stderr, "bench_cublas: %s: %s\n", #x, cudaGetErrorString(e_));                     \
            return 1;                                                                                  \
        }                                                                                              \
    } while (0)
#define CHECK_BLAS(x)                                                                                  \
    do {                                                                                               \
        cublasStatus_t s_ = (x);                                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
            fprintf(stderr, "bench_cublas: %s: status %d\n", #x, (int)s_);                             \
            return 1;                                                                                  \
        }                                                                                              \
    } while (0)

int main(int argc, char **argv) {
    int M = argc > 3 ? atoi(argv[1]) : 8192, N = argc > 3 ? atoi(argv[2]) : 8192, K = argc > 3 ? atoi(argv[3]) : 8192;
    int reps = argc > 4 ? atoi(argv[4]) : 10;
    if (M < 1 || N < 1 || K < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: bench_cublas [M N K] [REPS]\n");
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        fprintf(stderr, "bench_cublas: no usable CUDA device: skipped\n");
        return 77;
    }
    const size_t na = (size_t)M * K, nb = (size_t)N * K, most = std::max(na, nb);
    std::vector<__nv_bfloat16> h(most);
    uint64_t s = 12345;
    for (size_t i = 0; i < most; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = __float2bfloat16((float)((s >> 40) & 0xffff) / 65536.0f - 0.5f);
    }
    __nv_bfloat16 *a = nullptr, *b = nullptr;
    float *c = nullptr;
    void *ws = nullptr;
    const size_t ws_bytes = (size_t)32 << 20; /* the backend's workspace size (gpu/cuda_internal.h) */
    CHECK_CUDA(cudaMalloc(&a, sizeof *a * na));
    CHECK_CUDA(cudaMalloc(&b, sizeof *b * nb));
    CHECK_CUDA(cudaMalloc(&c, sizeof *c * (size_t)M * N));
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    CHECK_CUDA(cudaMemcpy(a, h.data(), sizeof *a * na, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(b, h.data(), sizeof *b * nb, cudaMemcpyHostToDevice));
    cublasHandle_t blas;
    CHECK_BLAS(cublasCreate(&blas));
    CHECK_BLAS(cublasSetWorkspace(blas, ws, ws_bytes));
    const float one = 1.0f, zero = 0.0f;
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    std::vector<double> t((size_t)reps);
    for (int r = -1; r < reps; r++) { /* row-major C = A B^T is column-major C^T = B A^T: B^T op, A plain */
        CHECK_CUDA(cudaEventRecord(e0));
        CHECK_BLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, b, CUDA_R_16BF, K, a, CUDA_R_16BF, K, &zero,
                                c, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        CHECK_CUDA(cudaEventRecord(e1));
        CHECK_CUDA(cudaEventSynchronize(e1));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0) t[(size_t)r] = ms / 1e3;
    }
    std::sort(t.begin(), t.end());
    const double fl = 2.0 * M * N * K;
    printf("cublas bf16 %d x %d x %d: best %.2f TFLOP/s, median %.2f TFLOP/s (%d reps)\n", M, N, K, fl / t[0] / 1e12,
           fl / t[(size_t)reps / 2] / 1e12, reps);
    cublasDestroy(blas);
    cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(ws);
    return 0;
}
