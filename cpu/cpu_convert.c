/* cpu/cpu_convert.c - stored weights to fp32 on the CPU backend (backend.h to_f32): base/half.h's
 * conversions, elements in parallel. */
#include <string.h>

#include "base/half.h"
#include "cpu/cpu_internal.h"

int qs_cpu_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(dtype != QS_BE_F32 && dtype != QS_BE_F16 && dtype != QS_BE_BF16, QS_EUSAGE,
                       "to_f32: element type %d", dtype);
    if (dtype == QS_BE_F32) {
        if (n) memmove(dst, src, sizeof(float) * n);
        return 0;
    }
    const uint16_t *h = src;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] = dtype == QS_BE_F16 ? qs_f16_to_f32(h[i]) : qs_bf16_to_f32(h[i]);
    return 0;
}
