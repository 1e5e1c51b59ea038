#include "gpu/cuda_info.h"

#include <cstdio>
#include <cuda_runtime.h>

extern "C" int qs_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n;
}

extern "C" int qs_cuda_device_describe(int dev, char *buf, int len) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return -1;
    snprintf(buf, (size_t)len, "%s (sm_%d%d, %zu MiB)", p.name, p.major, p.minor,
             (size_t)(p.totalGlobalMem >> 20));
    return 0;
}

extern "C" int qs_cuda_device_memory(int dev, size_t *free_bytes, size_t *total_bytes) {
    if (cudaSetDevice(dev) != cudaSuccess || cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return 0;
}
