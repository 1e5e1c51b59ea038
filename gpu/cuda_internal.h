/* gpu/cuda_internal.h - the CUDA backend's context, its error checks, its shared device
 * helpers (deterministic block reductions) and the op functions of each file. Not for use
 * outside gpu/. */
#ifndef QS_GPU_CUDA_INTERNAL_H
#define QS_GPU_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cusolverDn.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "base/error.h"
}

enum qs_cuda_math { QS_CUDA_FP32, QS_CUDA_TF32, QS_CUDA_BF16 };

/* a device buffer grown on demand (stream-ordered; contents not kept) */
typedef struct qs_cuda_scratch {
    void *p;
    size_t cap; /* bytes */
} qs_cuda_scratch;

typedef struct qs_cuda_ctx {
    int device;
    cudaStream_t stream;
    cudaStream_t copy; /* stage_alloc / stage_upload: the loader's copies beside the compute */
    /* stage_upload from the thread that made the backend (the compute thread's next windows):
     * its own stream, so that it never waits behind the loader's block */
    cudaStream_t copy_own;
    pthread_t owner;
    cudaStream_t down; /* stage_download: results after a mark, beside the compute and the loader */
    cudaEvent_t marks[QS_BE_MARKS]; /* mark / stage_download */
    cublasHandle_t blas;
    void *blas_ws; /* cuBLAS workspace of our own: its kernels choice does not vary with what the pool holds */
    size_t blas_ws_bytes;
    cudaMemPool_t pool;
    /* stage_alloc's own pool: a block freed on the compute stream is never handed to the copy
     * stream, which would make the loader's copy wait for the compute it should overlap */
    cudaMemPool_t stage_pool;
    enum qs_cuda_math math;
    int window_rows; /* set_window_rows */
    /* attention forward / backward: scores, probabilities and packed rows */
    qs_cuda_scratch attn;
    /* rmsnorm_backward: double partial column sums; mse_grad: double partial sums; gptq_hessian:
     * the diagonal and the flag */
    qs_cuda_scratch part;
    double *part_host; /* pinned copy of mse_grad's partial sums */
    /* gather_backward: the inverse of the reassembly maps (CSR) */
    qs_cuda_scratch inv;
    /* linear_bf16: the input rounded to bf16 */
    qs_cuda_scratch xb;
    /* cholesky_inverse: cuSOLVER (created on first use), its 64-bit API's parameters, its
     * device workspace and info, its host workspace */
    cusolverDnHandle_t solver;
    cusolverDnParams_t solver_params;
    qs_cuda_scratch solve;
    void *solve_host;
    size_t solve_host_cap;
} qs_cuda_ctx;

static inline qs_cuda_ctx *qs_cuda(qs_backend *be) { return (qs_cuda_ctx *)be->ctx; }

/* error from a CUDA runtime call, naming the op and the call */
int qs_cuda_fail(qs_error *err, cudaError_t e, const char *op, const char *what);
int qs_cuda_blas_fail(qs_error *err, cublasStatus_t s, const char *op);
/* after a kernel launch: launch errors (bad configuration) and earlier asynchronous faults */
#define QS_CUDA_LAUNCHED(op)                                                                   \
    do {                                                                                       \
        cudaError_t e_ = cudaGetLastError();                                                   \
        if (e_ != cudaSuccess) return qs_cuda_fail(err, e_, (op), "kernel launch");           \
    } while (0)
#define QS_CUDA_CALL(call, op)                                                                 \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) return qs_cuda_fail(err, e_, (op), #call);                      \
    } while (0)

/* grows s to at least bytes (stream-ordered free + alloc); 0 or an out-of-memory error naming
 * op and the size */
int qs_cuda_scratch_grow(qs_backend *be, qs_cuda_scratch *s, size_t bytes, const char *op, qs_error *err);

/* query positions per block of the attention ops (cuda_attention.cu); rows per partial sum of
 * rmsnorm_backward's dgamma (cuda_rows.cu); chunks of mse_grad's sum (cuda_elementwise.cu): the
 * sizes of their scratch, which qs_cuda_reserve_bytes counts */
#define QS_CUDA_ATTN_QB 512
#define QS_CUDA_NORM_RB 256
#define QS_CUDA_MSE_CHUNKS 1024
#define QS_CUDA_BLAS_WS ((size_t)32 << 20)
/* the --gpu-mem plan's allowance for cuSOLVER's workspace in cholesky_inverse of order n:
 * QS_CUDA_SOLVE_COLS floats per row + 4 MiB (qs_cuda_factor_allowance; test_backend_ops holds
 * the workspace cuSOLVER asks for below it at the orders of real models) */
#define QS_CUDA_SOLVE_COLS 1024

/* threads per block of the row kernels (the reductions' tree shape depends on it: fixed) */
#define QS_CUDA_ROW_THREADS 256

#ifdef __CUDACC__
/* Sum of v over the block, the same tree for every launch (deterministic); every thread gets
 * the result. sh: QS_CUDA_ROW_THREADS doubles of shared memory. blockDim.x must be
 * QS_CUDA_ROW_THREADS. */
__device__ __forceinline__ double qs_block_sum(double v, double *sh) {
    const int t = threadIdx.x;
    __syncthreads(); /* sh may still be read by an earlier reduction */
    sh[t] = v;
    __syncthreads();
    for (int s = QS_CUDA_ROW_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    return sh[0];
}
/* max (is_max) or min of the block (exact in any order); every thread gets the result */
__device__ __forceinline__ float qs_block_extreme(float v, float *sh, bool is_max) {
    const int t = threadIdx.x;
    __syncthreads();
    sh[t] = v;
    __syncthreads();
    for (int s = QS_CUDA_ROW_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) /* comparisons as the CPU's loops: a NaN seed stays, a later NaN is passed over */
            sh[t] = is_max ? (sh[t + s] > sh[t] ? sh[t + s] : sh[t]) : (sh[t + s] < sh[t] ? sh[t + s] : sh[t]);
        __syncthreads();
    }
    return sh[0];
}
__device__ __forceinline__ float qs_block_max(float v, float *sh) { return qs_block_extreme(v, sh, true); }
__device__ __forceinline__ float qs_block_min(float v, float *sh) { return qs_block_extreme(v, sh, false); }
/* blocks of n / per elements, at most 65535 * 32 (grid-stride loops cover the rest) */
static inline unsigned qs_cuda_blocks(size_t n, int per) {
    size_t b = (n + per - 1) / per;
    return (unsigned)(b < 1 ? 1 : b > 2097120 ? 2097120 : b);
}
#endif

/* the row-major GEMM of backend.h on the context's stream, without the window split (the
 * attention ops call it for their own products) */
int qs_cuda_gemm_rm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc, const char *op, qs_error *err);

/* the same with an explicit math (GPTQ's lazy update is fp32 whatever QS_CUDA_GEMM says) */
int qs_cuda_gemm_math(qs_backend *be, enum qs_cuda_math math, int ta, int tb, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc, const char *op,
                      qs_error *err);

extern "C" {
int qs_cuda_set_window_rows(qs_backend *be, int rows, qs_error *err);
int qs_cuda_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc, qs_error *err);
/* cuda_rows.cu */
int qs_cuda_rmsnorm(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                    float *rstd, qs_error *err);
int qs_cuda_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                           const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);
int qs_cuda_rmsnorm_backward(qs_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                             const float *gamma, const float *rstd, int rows, int dim, qs_error *err);
int qs_cuda_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err);
int qs_cuda_act_quant_part(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits, qs_error *err);
int qs_cuda_dlqat_weight(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w, const float *d,
                         const float *scales, const float *zeros, const float *mag, int rows, int cols, int group, int bits,
                         qs_error *err);
int qs_cuda_dlqat_weight_backward(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w, const float *d,
                                  const float *scales, const float *zeros, const float *mag, int rows, int cols, int group,
                                  int bits, qs_error *err);
int qs_cuda_lwc_weight(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros, double *row_err,
                       const float *w, const float *gam, const float *bet, int rows, int cols, int group, int bits,
                       int sym, int qcols, qs_error *err);
int qs_cuda_lwc_weight_backward(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy, const float *w,
                                const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                                int qcols, qs_error *err);
int qs_cuda_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                       const qs_chan_scale *col, qs_error *err);
int qs_cuda_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                                const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err);
int qs_cuda_quant_weight(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym,
                         uint8_t *codes, float *scales, float *zeros, double *row_err, qs_error *err);
int qs_cuda_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                              int sym, qs_error *err);
int qs_cuda_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                       float *run_max, float *run_sum, float *tgt_logit, qs_error *err);
/* cuda_elementwise.cu */
int qs_cuda_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int n_heads, int head_dim, int row_stride,
                 const float *inv_freq, int inverse, qs_error *err);
int qs_cuda_swiglu(qs_backend *be, float *y, const float *gate, const float *up, size_t n, qs_error *err);
int qs_cuda_swiglu_backward(qs_backend *be, float *dgate, float *dup, const float *dy, const float *gate,
                            const float *up, size_t n, qs_error *err);
int qs_cuda_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err);
int qs_cuda_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err);
int qs_cuda_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err);
int qs_cuda_copy_rows(qs_backend *be, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                      int n, int cols, qs_error *err);
int qs_cuda_swiglu_gather(qs_backend *be, float *y, const float *gate, const float *up, int rows, int dim,
                          const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);
int qs_cuda_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *src_a,
                   const int32_t *src_b, const float *coef, qs_error *err);
int qs_cuda_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *src_a,
                            const int32_t *src_b, const float *coef, qs_error *err);
int qs_cuda_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                     qs_error *err);
int qs_cuda_adamw_step(qs_backend *be, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int step, qs_error *err);
/* cuda_linalg.cu */
int qs_cuda_cholesky_inverse(qs_backend *be, float *a, int n, int *info_host, qs_error *err);
/* cuda_convert.cu */
int qs_cuda_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err);
int qs_cuda_to_bf16(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err);
/* dst [rows, cols] bf16 (packed) = src [rows, cols] fp32 (leading dimension lds), as to_bf16 */
int qs_cuda_rows_to_bf16(qs_backend *be, uint16_t *dst, const float *src, int rows, int cols, int lds, qs_error *err);
/* cuda_gemm.cu */
int qs_cuda_linear_bf16(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx, const uint16_t *w, int ldw,
                        float beta, float *y, int ldy, qs_error *err);
/* cuda_gptq.cu */
int qs_cuda_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                       int group, int bits, int sym, int static_groups, float *scales, float *zeros, uint8_t *codes,
                       float *err1, double *loss, qs_error *err);
int qs_cuda_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                         float *diag_host, int *nonfinite_host, qs_error *err);
/* cuda_attention.cu */
int qs_cuda_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                      int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, float *lse, qs_error *err);
int qs_cuda_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse, int n_win,
                               int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, qs_error *err);
}

#endif
