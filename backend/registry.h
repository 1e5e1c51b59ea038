/* backend/registry.h - which compute backends this build has, and creating one. Only
 * backend/registry.c looks at QS_HAVE_CUDA; everything else asks here. */
#ifndef QS_BACKEND_REGISTRY_H
#define QS_BACKEND_REGISTRY_H

#include "backend/backend.h"

/* "cpu" or "cpu, cuda" */
const char *qs_backends_compiled(void);
/* 1 when the CUDA backend is compiled in and a device is usable now. */
int qs_cuda_usable(void);
/* Creates a backend by name: "cpu" (always built), "cpu-fenced" (the CPU backend behind
 * pointers the host cannot touch: a test of the host / device separation), "cuda" (when built
 * with the CUDA toolkit and a device is usable). threads: CPU threads for the CPU backend, 0 = all cores. On error *out is NULL and
 * err names the device. Free with qs_backend_free. */
int qs_backend_create(qs_backend **out, const char *name, int threads, qs_error *err);
/* 0 when qs_backend_create(name) can succeed on this machine (the name is known, a CUDA device
 * is there); else the error qs_backend_create would give. Checks before a run writes anything. */
int qs_backend_check(const char *name, qs_error *err);
/* The most backend memory held at once since the backend was created, in bytes (cuda: the
 * stream-ordered pool's high-water mark; cpu: the bytes allocated through ops->alloc, which is
 * what --gpu-mem plans; the CPU ops' own scratch is not counted). */
size_t qs_backend_peak_bytes(qs_backend *be);
/* The most memory the backend held from its device at once: cuda's pools keep what is freed
 * into them and reserve in granules, so this can exceed the peak above (which --gpu-mem plans);
 * the peak itself elsewhere. */
size_t qs_backend_held_bytes(qs_backend *be);
/* Backend memory a device's ops keep for themselves (scratch, library workspaces) when blocks of
 * this shape run with up to `tokens` rows per call and channels up to max_dim, and (factor_n >
 * 0) cholesky_inverse runs on orders up to factor_n: --gpu-mem plans it beside the pipeline's
 * allocations. 0 for cpu and cpu-fenced (their scratch is host memory). */
size_t qs_backend_reserve_bytes(const char *name, int seqlen, int n_heads, int n_kv_heads, int head_dim, int max_dim,
                                int tokens, int factor_n, int bf16_linear);
/* 1 when frozen linears are better kept as bf16 on this device (linear_bf16): cuda with its
 * default bf16 GEMM math (which rounds fp32 operands to bf16 anyway), and cpu-fenced with
 * QS_FENCED_BF16=1 in the environment (the same road without a GPU, for the tests); 0 for cpu.
 * bf16_linear above: linear_bf16's own scratch (the input in bf16) is planned too. */
int qs_backend_bf16_weights(const char *name);
/* cholesky_inverse's library workspace at order n on this device: *need what the library asks
 * for now, *allowance what qs_backend_reserve_bytes plans for it. 0, or 1 when the backend's
 * factor needs no workspace of its own (cpu), or an error. */
int qs_backend_factor_workspace(qs_backend *be, long long n, size_t *need, size_t *allowance, qs_error *err);
/* 1 when the device stages the loader's uploads (its ops have stage_upload: cuda, and cpu-fenced
 * so that the staged path runs without a GPU); 0 for cpu, whose memory is host memory. */
int qs_backend_stages(const char *name);
/* 1 when the device's memory is the host's (cpu, and cpu-fenced, which stands in for a GPU but
 * allocates host memory): --host-mem then holds what --gpu-mem plans too. 0 for cuda. */
int qs_backend_host_memory(const char *name);
/* The --gpu-mem a run on this device gets when none is given: on cuda the device's free memory
 * now (QS_CUDA_DEVICE's) less 5% and 256 MiB (the libraries' handles and the pool's
 * fragmentation), with *free_bytes what was free; 0 (no budget) for cpu and cpu-fenced, whose
 * memory --host-mem bounds. */
size_t qs_backend_default_gpu_mem(const char *name, size_t *free_bytes);
/* Frees a backend and its context; NULL is fine. Memory it allocated must be freed first. */
void qs_backend_free(qs_backend *be);

#endif
