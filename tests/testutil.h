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

/* $QS_SHARED (../shared), or exits 1: tests do not skip for missing data. */
const char *qs_test_shared(void);
/* path inside $QS_SHARED, malloc'd */
char *qs_test_shared_path(const char *rel);
/* $QS_SMOLLM_DIR (the imported default model) or exits 1 with how to fetch it. */
const char *qs_test_smollm_dir(void);
/* a fresh, empty scratch directory under $QS_TMP (or /tmp) for this test; malloc'd */
char *qs_test_tmpdir(const char *name);
/* exit status for the end of main */
int qs_test_result(void);

#endif
