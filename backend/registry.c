#include "backend/registry.h"

#ifdef QS_HAVE_CUDA
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
