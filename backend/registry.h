/* backend/registry.h - which compute backends this build has. Only backend/registry.c looks at
 * QS_HAVE_CUDA; everything else asks here. */
#ifndef QS_BACKEND_REGISTRY_H
#define QS_BACKEND_REGISTRY_H

/* "cpu" or "cpu, cuda" */
const char *qs_backends_compiled(void);
/* 1 when the CUDA backend is compiled in and a device is usable now. */
int qs_cuda_usable(void);

#endif
