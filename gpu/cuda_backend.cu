/* gpu/cuda_backend.cu - the CUDA backend's context, memory and ops table.
 *
 * One stream carries every op in issue order. Memory comes from the device's stream-ordered
 * pool (cudaMallocAsync / cudaFreeAsync on that stream), so the pipeline's per-block allocations
 * neither synchronize the device nor return memory to the driver between blocks; the pool's
 * high-water mark is the backend's peak. upload and download return when the host buffer may be
 * reused (download: when the data is on the host), so callers may free or refill it at once.
 * A second stream carries the loader's staged copies (stage_alloc / stage_upload, from the
 * LOAD thread), so that the next block's bytes cross the bus while this block's kernels run;
 * the loader waits for its copy before it hands the slot on, which orders it before the
 * compute stream's use. A third carries stage_download (the compute thread's results, after a
 * mark), so that its wait for the compute stream never holds up the loader's copies. */
#include "gpu/cuda_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/cuda_internal.h"

int qs_cuda_fail(qs_error *err, cudaError_t e, const char *op, const char *what) {
    int code = e == cudaErrorMemoryAllocation ? -12 /* ENOMEM */ : QS_EUNSUPPORTED;
    return qs_error_set(err, code, "cuda %s: %s failed: %s (%s)", op, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int qs_cuda_blas_fail(qs_error *err, cublasStatus_t s, const char *op) {
    return qs_error_set(err, s == CUBLAS_STATUS_ALLOC_FAILED ? -12 : QS_EUNSUPPORTED, "cuda %s: cuBLAS: %s", op,
                        cublasGetStatusString(s));
}

/* cudaMallocAsync on the compute stream (stage = 0) or from the staging pool on the loader's
 * stream (stage = 1). Each pool keeps what is freed into it (the next block's allocations are
 * the same sizes), so memory one holds is not at the other's or cuBLAS's disposal: when an
 * allocation finds the device full, the pools give back what they hold unused (the compute
 * stream's pending frees first completed, from the compute thread) and it is tried once more. */
/* the stream the calling thread stages on: the compute thread's own, or the loader's */
static cudaStream_t stage_stream(const qs_cuda_ctx *c) {
    return pthread_equal(pthread_self(), c->owner) ? c->copy_own : c->copy;
}

static cudaError_t pool_alloc(qs_cuda_ctx *c, void **p, size_t bytes, int stage) {
    /* a staged buffer is ordered on the stream its upload will use */
    cudaError_t e = stage ? cudaMallocFromPoolAsync(p, bytes, c->stage_pool, stage_stream(c)) : cudaMallocAsync(p, bytes, c->stream);
    if (e != cudaErrorMemoryAllocation) return e;
    cudaGetLastError();
    if (!stage) cudaStreamSynchronize(c->stream);
    cudaMemPoolTrimTo(c->pool, 0);
    cudaMemPoolTrimTo(c->stage_pool, 0);
    cudaGetLastError(); /* the retry's result is what counts */
    *p = NULL;
    return stage ? cudaMallocFromPoolAsync(p, bytes, c->stage_pool, stage_stream(c)) : cudaMallocAsync(p, bytes, c->stream);
}

int qs_cuda_scratch_grow(qs_backend *be, qs_cuda_scratch *s, size_t bytes, const char *op, qs_error *err) {
    if (bytes <= s->cap) return 0;
    qs_cuda_ctx *c = qs_cuda(be);
    if (s->p && cudaFreeAsync(s->p, c->stream) != cudaSuccess) cudaGetLastError();
    s->p = NULL;
    s->cap = 0;
    cudaError_t e = pool_alloc(c, &s->p, bytes, 0);
    if (e != cudaSuccess) s->p = NULL;
    if (e != cudaSuccess && e != cudaErrorMemoryAllocation) return qs_cuda_fail(err, e, op, "cudaMallocAsync (scratch)");
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return qs_error_set(err, -12, "cuda %s: out of device memory for %zu bytes of scratch (%zu of %zu MiB free)",
                            op, bytes, fr >> 20, tot >> 20);
    }
    s->cap = bytes;
    return 0;
}

static void *cuda_alloc(qs_backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t e = pool_alloc(qs_cuda(be), &p, bytes ? bytes : 64, 0);
    if (e != cudaSuccess) {
        /* out of memory is not sticky: clear it, the caller reports the size; anything else
         * (an earlier kernel's fault) would be reported as out of memory too: say what it is */
        if (e != cudaErrorMemoryAllocation)
            fprintf(stderr, "qstream: cuda: cudaMallocAsync of %zu bytes failed: %s (%s)\n", bytes, cudaGetErrorString(e),
                    cudaGetErrorName(e));
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_free(qs_backend *be, void *p) {
    /* a failed free must not stay as the last error: the next op's launch check would report it */
    if (p && cudaFreeAsync(p, qs_cuda(be)->stream) != cudaSuccess) cudaGetLastError();
}

/* a copy between host and device on stream s that returns when it is done: a pinned source is
 * read by DMA after cudaMemcpyAsync returns, so the caller may reuse its buffer only then */
static int copy_wait(cudaStream_t s, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, const char *op,
                     qs_error *err) {
    if (!bytes) return 0;
    QS_CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, kind, s), op);
    QS_CUDA_CALL(cudaStreamSynchronize(s), op);
    return 0;
}

static int cuda_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return copy_wait(qs_cuda(be)->stream, dst, src, bytes, cudaMemcpyHostToDevice, "upload", err);
}

/* the loader's side (another thread, whose current device is its own setting: set it): its own
 * stream, so its copies overlap the kernels */
static void *cuda_stage_alloc(qs_backend *be, size_t bytes) {
    void *p = NULL;
    qs_cuda_ctx *c = qs_cuda(be);
    if (cudaSetDevice(c->device) != cudaSuccess || pool_alloc(c, &p, bytes ? bytes : 64, 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static int cuda_stage_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    qs_cuda_ctx *c = qs_cuda(be);
    QS_CUDA_CALL(cudaSetDevice(c->device), "stage_upload");
    return copy_wait(stage_stream(c), dst, src, bytes, cudaMemcpyHostToDevice, "stage_upload", err);
}

static int cuda_mark(qs_backend *be, int slot, qs_error *err) {
    qs_cuda_ctx *c = qs_cuda(be);
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "mark: slot %d", slot);
    QS_CUDA_CALL(cudaEventRecord(c->marks[slot], c->stream), "mark");
    return 0;
}

static int cuda_stage_download(qs_backend *be, int slot, void *dst, const void *src, size_t bytes, qs_error *err) {
    qs_cuda_ctx *c = qs_cuda(be);
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "stage_download: slot %d", slot);
    if (!bytes) return 0;
    QS_CUDA_CALL(cudaStreamWaitEvent(c->down, c->marks[slot], 0), "stage_download");
    return copy_wait(c->down, dst, src, bytes, cudaMemcpyDeviceToHost, "stage_download", err);
}

static int cuda_wait_mark(qs_backend *be, int slot, qs_error *err) {
    qs_cuda_ctx *c = qs_cuda(be);
    QS_RETURN_ERROR_IF(slot < 0 || slot >= QS_BE_MARKS, QS_EUSAGE, "wait_mark: slot %d", slot);
    QS_CUDA_CALL(cudaEventSynchronize(c->marks[slot]), "wait_mark");
    return 0;
}

static int cuda_host_register(qs_backend *be, void *p, size_t bytes, qs_error *err) {
    (void)be;
    if (!p || !bytes) return 0;
    cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterPortable);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky: the caller goes on unpinned, and later checks must not see it */
        return qs_cuda_fail(err, e, "host_register", "cudaHostRegister");
    }
    return 0;
}

static void cuda_host_unregister(qs_backend *be, void *p) {
    (void)be;
    if (p && cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();
}

static int cuda_download(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    return copy_wait(qs_cuda(be)->stream, dst, src, bytes, cudaMemcpyDeviceToHost, "download", err);
}

static int cuda_copy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    if (!bytes) return 0;
    QS_CUDA_CALL(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, qs_cuda(be)->stream), "copy");
    return 0;
}

static int cuda_synchronize(qs_backend *be, qs_error *err) {
    QS_CUDA_CALL(cudaStreamSynchronize(qs_cuda(be)->stream), "synchronize");
    QS_CUDA_LAUNCHED("synchronize");
    return 0;
}

static void cuda_destroy(qs_backend *be) {
    if (!be) return;
    qs_cuda_ctx *c = qs_cuda(be);
    if (c) {
        qs_cuda_scratch *s[] = {&c->attn, &c->part, &c->inv, &c->solve, &c->xb};
        if (c->solver_params) cusolverDnDestroyParams(c->solver_params);
        if (c->solver) cusolverDnDestroy(c->solver);
        free(c->solve_host);
        for (size_t i = 0; i < sizeof s / sizeof *s; i++)
            if (s[i]->p) cudaFreeAsync(s[i]->p, c->stream);
        if (c->blas) cublasDestroy(c->blas);
        if (c->blas_ws) cudaFree(c->blas_ws);
        if (c->part_host) cudaFreeHost(c->part_host);
        for (int i = 0; i < QS_BE_MARKS; i++)
            if (c->marks[i]) cudaEventDestroy(c->marks[i]);
        if (c->down) {
            cudaStreamSynchronize(c->down);
            cudaStreamDestroy(c->down);
        }
        cudaStream_t copies[2] = {c->copy, c->copy_own};
        for (int i = 0; i < 2; i++)
            if (copies[i]) {
                cudaStreamSynchronize(copies[i]);
                cudaStreamDestroy(copies[i]);
            }
        if (c->stream) {
            cudaStreamSynchronize(c->stream);
            cudaStreamDestroy(c->stream);
        }
        /* the staging pool goes; the device's default pool outlives the backend: what it kept
         * (the release threshold keeps everything) goes back to the device, so that later
         * allocations and the next backend's free-memory reading see it */
        if (c->stage_pool || c->pool) cudaDeviceSynchronize();
        if (c->stage_pool) cudaMemPoolDestroy(c->stage_pool);
        if (c->pool) cudaMemPoolTrimTo(c->pool, 0);
        cudaGetLastError();
        free(c);
    }
    free(be);
}

/* a pool's high-water mark: of what its allocations used (attr UsedMemHigh), or of what it held
 * from the device (ReservedMemHigh: the used memory in the pool's granules, and what it kept
 * after frees) */
static unsigned long long pool_high(cudaMemPool_t p, cudaMemPoolAttr attr) {
    unsigned long long v = 0;
    if (p && cudaMemPoolGetAttribute(p, attr, &v) != cudaSuccess) cudaGetLastError(), v = 0;
    return v;
}

size_t qs_cuda_peak_bytes(qs_backend *be) {
    qs_cuda_ctx *c = qs_cuda(be);
    /* the two pools' high-water marks (an upper bound of their sum's) and the workspace */
    return (size_t)(pool_high(c->pool, cudaMemPoolAttrUsedMemHigh) + pool_high(c->stage_pool, cudaMemPoolAttrUsedMemHigh)) +
           c->blas_ws_bytes;
}

size_t qs_cuda_reserved_peak_bytes(qs_backend *be) {
    qs_cuda_ctx *c = qs_cuda(be);
    return (size_t)(pool_high(c->pool, cudaMemPoolAttrReservedMemHigh) +
                    pool_high(c->stage_pool, cudaMemPoolAttrReservedMemHigh)) +
           c->blas_ws_bytes;
}

size_t qs_cuda_reserve_bytes(int seqlen, int n_heads, int n_kv_heads, int head_dim, int max_dim, int tokens) {
    const size_t L = (size_t)seqlen, grp = (size_t)(n_kv_heads > 0 ? n_heads / n_kv_heads : 1);
    const size_t qb = L < QS_CUDA_ATTN_QB ? L : QS_CUDA_ATTN_QB, sz = grp * qb * L, pk = grp * qb * (size_t)head_dim;
    const size_t attn = sizeof(float) * (2 * sz + 3 * pk); /* attention_backward's (the forward's is smaller) */
    const size_t nch = ((size_t)tokens + QS_CUDA_NORM_RB - 1) / QS_CUDA_NORM_RB;
    size_t part = sizeof(double) * nch * (size_t)max_dim;
    if (part < sizeof(double) * QS_CUDA_MSE_CHUNKS) part = sizeof(double) * QS_CUDA_MSE_CHUNKS;
    if (part < sizeof(float) * (size_t)max_dim + 64) part = sizeof(float) * (size_t)max_dim + 64; /* gptq_hessian */
    const size_t inv = sizeof(int32_t) * (4 * (size_t)max_dim + 1); /* gather_backward's lists */
    return QS_CUDA_BLAS_WS + attn + part + inv;
}

static const qs_backend_ops cuda_ops = {
    /* .name */ "cuda",
    /* .destroy */ cuda_destroy,
    /* .alloc */ cuda_alloc,
    /* .free */ cuda_free,
    /* .upload */ cuda_upload,
    /* .download */ cuda_download,
    /* .copy */ cuda_copy,
    /* .synchronize */ cuda_synchronize,
    /* .gemm */ qs_cuda_gemm,
    /* .rmsnorm */ qs_cuda_rmsnorm,
    /* .rope */ qs_cuda_rope,
    /* .attention */ qs_cuda_attention,
    /* .swiglu */ qs_cuda_swiglu,
    /* .add */ qs_cuda_add,
    /* .scale */ qs_cuda_scale,
    /* .add_bias */ qs_cuda_add_bias,
    /* .copy_rows */ qs_cuda_copy_rows,
    /* .act_quant */ qs_cuda_act_quant,
    /* .act_quant_part */ qs_cuda_act_quant_part,
    /* .rmsnorm_gather */ qs_cuda_rmsnorm_gather,
    /* .swiglu_gather */ qs_cuda_swiglu_gather,
    /* .lse_update */ qs_cuda_lse_update,
    /* .rmsnorm_backward */ qs_cuda_rmsnorm_backward,
    /* .attention_backward */ qs_cuda_attention_backward,
    /* .swiglu_backward */ qs_cuda_swiglu_backward,
    /* .fake_quant_weight */ qs_cuda_fake_quant_weight,
    /* .mse_grad */ qs_cuda_mse_grad,
    /* .adamw_step */ qs_cuda_adamw_step,
    /* .gather_backward */ qs_cuda_gather_backward,
    /* .set_window_rows */ qs_cuda_set_window_rows,
    /* .cholesky_inverse */ qs_cuda_cholesky_inverse,
    /* .gptq_batch */ qs_cuda_gptq_batch,
    /* .gptq_hessian */ qs_cuda_gptq_hessian,
    /* .host_register */ cuda_host_register,
    /* .host_unregister */ cuda_host_unregister,
    /* .stage_alloc */ cuda_stage_alloc,
    /* .stage_upload */ cuda_stage_upload,
    /* .mark */ cuda_mark,
    /* .stage_download */ cuda_stage_download,
    /* .to_f32 */ qs_cuda_to_f32,
    /* .gather */ qs_cuda_gather,
    /* .wait_mark */ cuda_wait_mark,
    /* .to_bf16 */ qs_cuda_to_bf16,
    /* .linear_bf16 */ qs_cuda_linear_bf16,
    /* .quant_weight */ qs_cuda_quant_weight,
    /* .dlqat_weight */ qs_cuda_dlqat_weight,
    /* .dlqat_weight_backward */ qs_cuda_dlqat_weight_backward,
    /* .lwc_weight */ qs_cuda_lwc_weight,
    /* .lwc_weight_backward */ qs_cuda_lwc_weight_backward,
    /* .chan_scale */ qs_cuda_chan_scale,
    /* .chan_scale_backward */ qs_cuda_chan_scale_backward,
};

/* the loader's pool on the device, keeping its freed blocks like the default pool */
static cudaError_t marks_create(qs_cuda_ctx *c) {
    cudaError_t e = cudaSuccess;
    for (int i = 0; i < QS_BE_MARKS && e == cudaSuccess; i++) e = cudaEventCreateWithFlags(&c->marks[i], cudaEventDisableTiming);
    return e;
}

static cudaError_t stage_pool_create(qs_cuda_ctx *c, int dev) {
    cudaMemPoolProps pp;
    memset(&pp, 0, sizeof pp);
    pp.allocType = cudaMemAllocationTypePinned;
    pp.handleTypes = cudaMemHandleTypeNone;
    pp.location.type = cudaMemLocationTypeDevice;
    pp.location.id = dev;
    uint64_t keep = UINT64_MAX;
    cudaError_t e = cudaMemPoolCreate(&c->stage_pool, &pp);
    if (e == cudaSuccess) e = cudaMemPoolSetAttribute(c->stage_pool, cudaMemPoolAttrReleaseThreshold, &keep);
    /* staged blocks are freed on the compute stream: without this the pool could hand such a
     * block to the copy stream with a wait on that compute inserted, and the upload would no
     * longer overlap it */
    int no = 0;
    if (e == cudaSuccess) e = cudaMemPoolSetAttribute(c->stage_pool, cudaMemPoolReuseAllowInternalDependencies, &no);
    return e;
}

extern "C" int qs_cuda_backend_create(qs_backend **out, qs_error *err) {
    *out = NULL;
    const char *dv = getenv("QS_CUDA_DEVICE"), *mv = getenv("QS_CUDA_GEMM");
    int dev = dv && *dv ? atoi(dv) : 0, n = 0;
    enum qs_cuda_math math = QS_CUDA_BF16;
    if (mv && *mv) {
        if (!strcmp(mv, "fp32")) math = QS_CUDA_FP32;
        else if (!strcmp(mv, "tf32")) math = QS_CUDA_TF32;
        else if (strcmp(mv, "bf16"))
            return qs_error_set(err, QS_EUSAGE, "QS_CUDA_GEMM='%s': expected bf16, tf32 or fp32", mv);
    }
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError();
        return qs_error_set(err, QS_EUNSUPPORTED, "cuda: no usable CUDA device (driver or GPU missing); use --device cpu");
    }
    QS_RETURN_ERROR_IF(dev < 0 || dev >= n, QS_EUSAGE, "QS_CUDA_DEVICE=%d: this machine has %d CUDA device%s", dev, n,
                       n == 1 ? "" : "s");
    qs_backend *be = (qs_backend *)calloc(1, sizeof *be);
    qs_cuda_ctx *c = (qs_cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be), free(c);
        return qs_error_set(err, -12, "cuda: out of memory for the backend context");
    }
    be->ops = &cuda_ops;
    be->ctx = c;
    c->device = dev;
    c->math = math;
    c->owner = pthread_self();
    int rc = 0;
    cudaError_t e;
    cublasStatus_t s;
    uint64_t keep = UINT64_MAX;
    if ((e = cudaSetDevice(dev)) != cudaSuccess) rc = qs_cuda_fail(err, e, "init", "cudaSetDevice");
    else if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaStreamCreate");
    else if ((e = cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking)) != cudaSuccess ||
             (e = cudaStreamCreateWithFlags(&c->copy_own, cudaStreamNonBlocking)) != cudaSuccess ||
             (e = cudaStreamCreateWithFlags(&c->down, cudaStreamNonBlocking)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaStreamCreate (copies)");
    else if ((e = cudaDeviceGetDefaultMemPool(&c->pool, dev)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaDeviceGetDefaultMemPool");
    /* keep freed blocks in the pool between blocks instead of returning them at each sync */
    else if ((e = cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaMemPoolSetAttribute");
    else if ((e = marks_create(c)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaEventCreate");
    else if ((e = stage_pool_create(c, dev)) != cudaSuccess)
        rc = qs_cuda_fail(err, e, "init", "cudaMemPoolCreate (the staging pool)");
    else if ((s = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) rc = qs_cuda_blas_fail(err, s, "init");
    else if ((s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) rc = qs_cuda_blas_fail(err, s, "init");
    else {
        /* a fixed workspace (32 MiB, cuBLAS's recommendation for Hopper) */
        c->blas_ws_bytes = QS_CUDA_BLAS_WS;
        if ((e = cudaMalloc(&c->blas_ws, c->blas_ws_bytes)) != cudaSuccess)
            rc = qs_cuda_fail(err, e, "init", "cudaMalloc of the cuBLAS workspace");
        else if ((s = cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes)) != CUBLAS_STATUS_SUCCESS)
            rc = qs_cuda_blas_fail(err, s, "init");
        else if ((s = cublasSetMathMode(c->blas, math == QS_CUDA_FP32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH)) !=
                 CUBLAS_STATUS_SUCCESS)
            rc = qs_cuda_blas_fail(err, s, "init");
        else if ((e = cudaMallocHost((void **)&c->part_host, sizeof(double) * 4096)) != cudaSuccess)
            rc = qs_cuda_fail(err, e, "init", "cudaMallocHost");
    }
    if (!rc) {
        unsigned long long zero = 0; /* the peak counts from this backend's start */
        cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &zero);
        cudaMemPoolSetAttribute(c->stage_pool, cudaMemPoolAttrUsedMemHigh, &zero);
        cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReservedMemHigh, &zero);
        cudaMemPoolSetAttribute(c->stage_pool, cudaMemPoolAttrReservedMemHigh, &zero);
    }
    if (rc) {
        cuda_destroy(be);
        return rc;
    }
    *out = be;
    return 0;
}
