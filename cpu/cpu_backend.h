/* cpu/cpu_backend.h - the CPU backend: every op in C, OpenBLAS for GEMM, OpenMP for threads.
 * Always built; the reference every other backend is tested against. Create it through
 * backend/registry.h (qs_backend_create(&be, "cpu", threads, &err)). */
#ifndef QS_CPU_CPU_BACKEND_H
#define QS_CPU_CPU_BACKEND_H

#include "backend/backend.h"

/* threads: 0 = all cores. Sets the OpenMP and OpenBLAS thread counts of the process (both are
 * process-wide settings). On error *out is NULL. */
int qs_cpu_backend_create(qs_backend **out, int threads, qs_error *err);
/* "cpu-fenced" (cpu/cpu_fence.c): the CPU backend behind pointers the host faults on, so that
 * a host access of backend memory (which would crash on a GPU) crashes here too. For tests. */
int qs_cpu_fenced_backend_create(qs_backend **out, int threads, qs_error *err);
/* the high-water mark of the bytes allocated through ops->alloc (not the ops' own scratch), of
 * a "cpu" or a "cpu-fenced" backend */
size_t qs_cpu_peak_bytes(qs_backend *be);
size_t qs_cpu_fenced_peak_bytes(qs_backend *be);

#endif
