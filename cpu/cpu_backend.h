/* cpu/cpu_backend.h - the CPU backend: OpenBLAS for GEMM, OpenMP for the elementwise ops.
 * Always built; the reference for every other backend. */
#ifndef QS_CPU_CPU_BACKEND_H
#define QS_CPU_CPU_BACKEND_H

#include "backend/backend.h"

/* threads: 0 = all cores */
int qs_cpu_backend_create(qs_backend **out, int threads, qs_error *err);

#endif
