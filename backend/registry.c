#include "backend/registry.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#ifdef QS_HAVE_CUDA
#include "gpu/cuda_backend.h"
#include "gpu/cuda_info.h"
#endif

const char *qs_backends_compiled(void) {
#ifdef QS_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

int qs_cuda_usable(void) {
#ifdef QS_HAVE_CUDA
    return qs_cuda_device_count() > 0;
#else
    return 0;
#endif
}

int qs_backend_check(const char *name, qs_error *err) {
    if (!name || !strcmp(name, "cpu") || !strcmp(name, "cpu-fenced")) return 0;
    if (!strcmp(name, "cuda")) {
#ifdef QS_HAVE_CUDA
        QS_RETURN_ERROR_IF(!qs_cuda_usable(), QS_EUNSUPPORTED, "cuda: no usable CUDA device (driver or GPU missing); use --device cpu");
        return 0;
#else
        return qs_error_set(err, QS_EUNSUPPORTED, "this build has no CUDA backend (built without the CUDA toolkit)");
#endif
    }
    return qs_error_set(err, QS_EUSAGE, "unknown device '%s' (cpu%s)", name,
#ifdef QS_HAVE_CUDA
                        ", cuda"
#else
                        ""
#endif
    );
}

int qs_backend_create(qs_backend **out, const char *name, int threads, qs_error *err) {
    *out = NULL;
    if (!name) name = "cpu";
    QS_FORWARD_IF_ERROR(qs_backend_check(name, err)); /* unknown names, no CUDA build or device */
    if (!strcmp(name, "cpu-fenced")) return qs_cpu_fenced_backend_create(out, threads, err);
#ifdef QS_HAVE_CUDA
    if (!strcmp(name, "cuda")) return qs_cuda_backend_create(out, err);
#endif
    return qs_cpu_backend_create(out, threads, err);
}

size_t qs_backend_peak_bytes(qs_backend *be) {
#ifdef QS_HAVE_CUDA
    if (be && !strcmp(be->ops->name, "cuda")) return qs_cuda_peak_bytes(be);
#endif
    if (be && !strcmp(be->ops->name, "cpu-fenced")) return qs_cpu_fenced_peak_bytes(be);
    return be ? qs_cpu_peak_bytes(be) : 0;
}

size_t qs_backend_held_bytes(qs_backend *be) {
#ifdef QS_HAVE_CUDA
    if (be && !strcmp(be->ops->name, "cuda")) return qs_cuda_reserved_peak_bytes(be);
#endif
    return qs_backend_peak_bytes(be);
}

size_t qs_backend_reserve_bytes(const char *name, int seqlen, int n_heads, int n_kv_heads, int head_dim, int max_dim,
                                int tokens, int factor_n, int bf16_linear) {
#ifdef QS_HAVE_CUDA
    if (name && !strcmp(name, "cuda"))
        return qs_cuda_reserve_bytes(seqlen, n_heads, n_kv_heads, head_dim, max_dim, tokens) +
               qs_cuda_factor_allowance(factor_n) + (bf16_linear ? sizeof(uint16_t) * (size_t)tokens * max_dim : 0);
#endif
    (void)name, (void)seqlen, (void)n_heads, (void)n_kv_heads, (void)head_dim, (void)max_dim, (void)tokens, (void)factor_n;
    (void)bf16_linear;
    return 0;
}

int qs_backend_bf16_weights(const char *name) {
    if (!name) return 0;
    if (!strcmp(name, "cuda")) {
        const char *m = getenv("QS_CUDA_GEMM");
        return !m || !*m || !strcmp(m, "bf16");
    }
    if (!strcmp(name, "cpu-fenced")) {
        const char *f = getenv("QS_FENCED_BF16");
        return f && !strcmp(f, "1");
    }
    return 0;
}

int qs_backend_factor_workspace(qs_backend *be, long long n, size_t *need, size_t *allowance, qs_error *err) {
#ifdef QS_HAVE_CUDA
    if (be && !strcmp(be->ops->name, "cuda")) {
        size_t host = 0;
        *allowance = qs_cuda_factor_allowance(n);
        return qs_cuda_factor_workspace(be, n, need, &host, err);
    }
#endif
    (void)be, (void)n, (void)err;
    *need = *allowance = 0;
    return 1;
}

size_t qs_backend_default_gpu_mem(const char *name, size_t *free_bytes) {
    *free_bytes = 0;
#ifdef QS_HAVE_CUDA
    if (name && !strcmp(name, "cuda")) {
        const char *dv = getenv("QS_CUDA_DEVICE");
        size_t fr = 0, tot = 0;
        if (qs_cuda_device_memory(dv && *dv ? atoi(dv) : 0, &fr, &tot)) return 0;
        *free_bytes = fr;
        const size_t keep = fr / 20 + ((size_t)256 << 20);
        return fr > keep ? fr - keep : 1;
    }
#endif
    (void)name;
    return 0;
}

int qs_backend_stages(const char *name) { return name && (!strcmp(name, "cuda") || !strcmp(name, "cpu-fenced")); }

int qs_backend_host_memory(const char *name) { return !name || !strcmp(name, "cpu") || !strcmp(name, "cpu-fenced"); }

void qs_backend_free(qs_backend *be) {
    if (be) be->ops->destroy(be);
}
