/* backend/registry.h - which compute backends this build has, and creating one. Only
 * backend/registry.c looks at QS_HAVE_CUDA; everything else asks here. */
#ifndef QS_BACKEND_REGISTRY_H
#define QS_BACKEND_REGISTRY_H

#include "backend/backend.h"

/* "cpu" or "cpu, cuda" */
const char *qs_backends_compiled(void);
/* 1 when the CUDA backend is compiled in and a device is usable now. */
int qs_cuda_usable(void);
/* Creates a backend by name: "cpu" (always built), "cuda" (a clear "not implemented yet" error
 * for now). threads: CPU threads for the CPU backend, 0 = all cores. On error *out is NULL and
 * err names the device. Free with qs_backend_free. */
int qs_backend_create(qs_backend **out, const char *name, int threads, qs_error *err);
/* Frees a backend and its context; NULL is fine. Memory it allocated must be freed first. */
void qs_backend_free(qs_backend *be);

#endif
