/* tests/testutil.h - tiny helpers for the test programs (exit 0 pass, 1 fail, 77 skip). */
#ifndef QS_TESTS_TESTUTIL_H
#define QS_TESTS_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>

extern int qs_test_failures;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);          \
            qs_test_failures++;                                                               \
        }                                                                                     \
    } while (0)
#define CHECKF(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            qs_test_failures++;                                                               \
        }                                                                                     \
    } while (0)

/* Seeded uniform values in [-1, 1), never 0 (0 becomes 0.5): an LCG whose state is
 * qs_test_seed (a test sets it to its own start, and again to repeat a draw); qs_test_rvec: n
 * of them times amp, malloc'd. */
#include <stdint.h>
extern uint64_t qs_test_seed;
float qs_test_rnd(void);
float *qs_test_rvec(size_t n, float amp);

/* $QS_SHARED (../shared), or exits 1: tests do not skip for missing data. */
const char *qs_test_shared(void);
/* path inside $QS_SHARED, malloc'd */
char *qs_test_shared_path(const char *rel);
/* $QS_SMOLLM_DIR (the imported default model) or exits 1 with how to fetch it. */
const char *qs_test_smollm_dir(void);
/* a fresh, empty scratch directory under $QS_TMP (or /tmp) for this test; malloc'd */
char *qs_test_tmpdir(const char *name);
/* QLLM-shaped reassembly maps of C >= 12 channels to C: channel 1 split three ways (coef 1/3)
 * and channel C-2 two ways (1/2), the three extra sub-channels paid back by merging (5, 4),
 * (6, 9) and (0, C-1) (coef 1/2, src_b >= 0; a pair is written where its lower channel was),
 * every other channel itself (src_b -1, coef 1); then rotated by shift, so that no output sits at
 * its source and sites differ. */
#include <stdint.h>
void qs_test_reasm_maps(int C, int shift, int32_t *sa, int32_t *sb, float *cf);
/* exit status for the end of main */
int qs_test_result(void);

#endif
