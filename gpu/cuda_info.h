/* gpu/cuda_info.h - plain C view of the CUDA runtime (device discovery). */
#ifndef QS_GPU_CUDA_INFO_H
#define QS_GPU_CUDA_INFO_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
/* Number of usable CUDA devices; 0 when there is no driver or device. */
int qs_cuda_device_count(void);
/* Writes "NAME (sm_XY, N MiB)" of device dev into buf; 0 on success, -1 otherwise. */
int qs_cuda_device_describe(int dev, char *buf, int len);
/* Free and total memory of device dev now (cudaMemGetInfo); 0 on success, -1 otherwise. */
int qs_cuda_device_memory(int dev, size_t *free_bytes, size_t *total_bytes);
#ifdef __cplusplus
}
#endif
#endif
