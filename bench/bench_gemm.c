/* bench/bench_gemm.c - the GEMM rate of a backend, the baseline for "achieved TFLOP/s" figures:
 * `bench_gemm [DEVICE] [M N K] [REPS]` (default cpu, 4096 x 4096 x 4096, 5 reps) times
 * C = A B^T (the linear layer's shape, trans_b = 1) through the backend's gemm op on seeded
 * random data, after one untimed warm-up, with a synchronize before the clock stops; prints
 * the best and median rate. On cuda the math is QS_CUDA_GEMM's (bf16 by default): the rate of
 * cuBLAS's bf16 tensor-core GEMM with fp32 accumulation that every method's GEMMs use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/registry.h"
#include "base/clock.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *dev = argc > 1 ? argv[1] : "cpu";
    int M = argc > 4 ? atoi(argv[2]) : 4096, N = argc > 4 ? atoi(argv[3]) : 4096, K = argc > 4 ? atoi(argv[4]) : 4096;
    int reps = argc > 5 ? atoi(argv[5]) : 5;
    if (M < 1 || N < 1 || K < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: bench_gemm [DEVICE] [M N K] [REPS]\n");
        return 2;
    }
    qs_error err = {0};
    qs_backend *be = NULL;
    if (qs_backend_check(dev, &err) || qs_backend_create(&be, dev, 0, &err)) {
        fprintf(stderr, "bench_gemm: %s\n", err.msg);
        return !strcmp(dev, "cuda") ? 77 : 1;
    }
    const qs_backend_ops *o = be->ops;
    size_t na = (size_t)M * K, nb = (size_t)N * K, nc = (size_t)M * N;
    float *h = malloc(sizeof(float) * (na > nb ? na : nb));
    float *a = o->alloc(be, sizeof(float) * na), *b = o->alloc(be, sizeof(float) * nb), *c = o->alloc(be, sizeof(float) * nc);
    if (!h || !a || !b || !c) {
        fprintf(stderr, "bench_gemm: out of memory for %d x %d x %d\n", M, N, K);
        return 1;
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < (na > nb ? na : nb); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f;
    }
    int rc = o->upload(be, a, h, sizeof(float) * na, &err);
    if (!rc) rc = o->upload(be, b, h, sizeof(float) * nb, &err);
    if (!rc && o->set_window_rows) rc = o->set_window_rows(be, 0, &err);
    if (!rc) rc = o->gemm(be, 0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N, &err);
    if (!rc) rc = o->synchronize(be, &err);
    double *t = calloc((size_t)reps, sizeof *t);
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = qs_now();
        rc = o->gemm(be, 0, 1, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N, &err);
        if (!rc) rc = o->synchronize(be, &err);
        t[r] = qs_now() - t0;
    }
    if (rc) {
        fprintf(stderr, "bench_gemm: %s\n", err.msg);
        return 1;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double fl = 2.0 * M * N * K;
    const char *math = getenv("QS_CUDA_GEMM");
    printf("gemm %s%s%s %d x %d x %d: best %.2f TFLOP/s, median %.2f TFLOP/s (%d reps)\n", dev,
           !strcmp(dev, "cuda") ? " math " : "", !strcmp(dev, "cuda") ? (math ? math : "bf16") : "", M, N, K,
           fl / t[0] / 1e12, fl / t[reps / 2] / 1e12, reps);
    o->free(be, a), o->free(be, b), o->free(be, c);
    qs_backend_free(be);
    free(h), free(t);
    return 0;
}
