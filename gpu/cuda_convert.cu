/* gpu/cuda_convert.cu - stored weights to fp32 on the GPU (backend.h to_f32): the bf16 or f16
 * bytes cross the bus as stored (half the bytes of fp32) and widen here, with base/half.c's
 * bit operations (exact: every f16 and bf16 value is a float; f16 subnormals are man * 2^-24,
 * an exact product); and fp32 to bf16 (to_bf16, linear_bf16's input) with base/half.c's
 * rounding (integer operations: nearest even, NaN quieted). */
#include "gpu/cuda_internal.h"

__device__ static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return __uint_as_float(sign);
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

__global__ static void k_to_f32(float *dst, const uint16_t *src, size_t n, int f16) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f16 ? f16_to_f32(src[i]) : __uint_as_float((uint32_t)src[i] << 16);
}

extern "C" int qs_cuda_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err) {
    QS_RETURN_ERROR_IF(dtype != QS_BE_F32 && dtype != QS_BE_F16 && dtype != QS_BE_BF16, QS_EUSAGE,
                       "to_f32: element type %d", dtype);
    if (!n) return 0;
    cudaStream_t s = qs_cuda(be)->stream;
    if (dtype == QS_BE_F32) {
        if ((const void *)dst == src) return 0;
        QS_CUDA_CALL(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, s), "to_f32");
        return 0;
    }
    k_to_f32<<<qs_cuda_blocks(n, 256), 256, 0, s>>>(dst, (const uint16_t *)src, n, dtype == QS_BE_F16);
    QS_CUDA_LAUNCHED("to_f32");
    return 0;
}

__device__ static uint16_t f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* dst [rows, cols] packed = src [rows, cols] (leading dimension lds); packed rows need no 64-bit
 * division per element (linear_bf16 converts its whole input at every call) */
__global__ static void k_rows_to_bf16(uint16_t *dst, const float *src, size_t rows, size_t cols, size_t lds) {
    const size_t n = rows * cols;
    const bool packed = lds == cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f32_to_bf16(src[packed ? i : (i / cols) * lds + i % cols]);
}

int qs_cuda_rows_to_bf16(qs_backend *be, uint16_t *dst, const float *src, int rows, int cols, int lds, qs_error *err) {
    const size_t n = (size_t)rows * cols;
    if (!n) return 0;
    k_rows_to_bf16<<<qs_cuda_blocks(n, 256), 256, 0, qs_cuda(be)->stream>>>(dst, src, (size_t)rows, (size_t)cols,
                                                                            (size_t)lds);
    QS_CUDA_LAUNCHED("to_bf16");
    return 0;
}

extern "C" int qs_cuda_to_bf16(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err) {
    if (!n) return 0;
    k_rows_to_bf16<<<qs_cuda_blocks(n, 256), 256, 0, qs_cuda(be)->stream>>>(dst, src, 1, n, n);
    QS_CUDA_LAUNCHED("to_bf16");
    return 0;
}
