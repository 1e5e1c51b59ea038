/* gpu/cuda_backend.h - the CUDA backend: the ops of backend/backend.h on one GPU, with cuBLAS for
 * every GEMM and kernels for the rest, on one stream. Create it through backend/registry.h
 * (qs_backend_create(&be, "cuda", 0, &err)); only the registry includes this header.
 *
 * GEMM math (environment QS_CUDA_GEMM): bf16 (the default: cuBLAS converts the fp32 operands to
 * bf16 for the tensor cores and accumulates in fp32), tf32, or fp32 (exact fp32, no tensor-core
 * conversion). Everything else is fp32, with double sums where the CPU backend sums in double.
 * Device: QS_CUDA_DEVICE (default 0). */
#ifndef QS_GPU_CUDA_BACKEND_H
#define QS_GPU_CUDA_BACKEND_H

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif
/* On error *out is NULL and err says why (no device, unknown QS_CUDA_GEMM, cuBLAS init). */
int qs_cuda_backend_create(qs_backend **out, qs_error *err);
/* The most device memory the backend held at once since it was created: the stream-ordered
 * pool's high-water mark (every allocation and the ops' scratch) and the cuBLAS workspace. */
size_t qs_cuda_peak_bytes(qs_backend *be);
/* Device memory the ops keep for themselves beside the callers' allocations, for blocks of this
 * shape with up to `tokens` rows per call and channels up to max_dim: the cuBLAS workspace and
 * the attention, rmsnorm_backward, mse_grad and gather_backward scratch. cuSOLVER's workspace
 * (GPTQ's factor) is not in it: it is allocated when the factor runs, and an out-of-memory
 * error there gives its size. */
size_t qs_cuda_reserve_bytes(int seqlen, int n_heads, int n_kv_heads, int head_dim, int max_dim, int tokens);
#ifdef __cplusplus
}
#endif
#endif
