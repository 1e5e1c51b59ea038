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

#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif
/* On error *out is NULL and err says why (no device, unknown QS_CUDA_GEMM, cuBLAS init). */
int qs_cuda_backend_create(qs_backend **out, qs_error *err);
/* The most device memory the backend held at once since it was created: the stream-ordered
 * pool's high-water mark (every allocation and the ops' scratch) and the cuBLAS workspace. */
size_t qs_cuda_peak_bytes(qs_backend *be);
/* The same with the pools' reserved memory (what they held from the device, in granules, with
 * what they kept after frees) in place of what their allocations used. */
size_t qs_cuda_reserved_peak_bytes(qs_backend *be);
/* Device memory the ops keep for themselves beside the callers' allocations, for blocks of this
 * shape with up to `tokens` rows per call and channels up to max_dim: the cuBLAS workspace and
 * the attention, rmsnorm_backward, mse_grad and gather_backward scratch. */
size_t qs_cuda_reserve_bytes(int seqlen, int n_heads, int n_kv_heads, int head_dim, int max_dim, int tokens);
/* cholesky_inverse (GPTQ's factor) at order n: the plan's allowance for cuSOLVER's workspace
 * (0 for n <= 0), and what cuSOLVER asks for on this device (device and host bytes). */
size_t qs_cuda_factor_allowance(int64_t n);
int qs_cuda_factor_workspace(qs_backend *be, int64_t n, size_t *dev_bytes, size_t *host_bytes, qs_error *err);
#ifdef __cplusplus
}
#endif
#endif
