#include "tests/testutil.h"

#include <string.h>

#include "base/error.h"
#include "base/fileio.h"

int qs_test_failures = 0;

const char *qs_test_shared(void) {
    const char *s = getenv("QS_SHARED");
    if (!s || !*s) {
        fprintf(stderr, "QS_SHARED is not set (run the tests through ctest)\n");
        exit(1);
    }
    return s;
}

char *qs_test_shared_path(const char *rel) { return qs_path_join(qs_test_shared(), rel); }

const char *qs_test_smollm_dir(void) {
    const char *s = getenv("QS_SMOLLM_DIR");
    char *cfg = s ? qs_path_join(s, "config.json") : NULL;
    FILE *f = cfg ? fopen(cfg, "r") : NULL;
    free(cfg);
    if (!f) {
        fprintf(stderr, "the default model is not at QS_SMOLLM_DIR=%s; run scripts/fetch-default-model.sh\n",
                s ? s : "(unset)");
        exit(1);
    }
    fclose(f);
    return s;
}

char *qs_test_tmpdir(const char *name) {
    const char *base = getenv("QS_TMP");
    if (!base || !*base) base = "/tmp";
    char *dir = qs_path_join(base, name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) { fprintf(stderr, "cannot clean %s\n", dir); exit(1); }
    qs_error err = {0};
    if (qs_mkdir_p(dir, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return dir;
}

int qs_test_result(void) {
    if (qs_test_failures) {
        fprintf(stderr, "%d check(s) failed\n", qs_test_failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}

void qs_test_reasm_maps(int C, int shift, int32_t *sa, int32_t *sb, float *cf) {
    int pa[3] = {5, 6, 0}, pb[3] = {4, 9, C - 1}, n = 0;
    for (int c = 0; c < C; c++) {
        int T = c == 1 ? 3 : c == C - 2 ? 2 : 1, paired = 0;
        for (int i = 0; i < 3; i++) {
            if (c == (pa[i] < pb[i] ? pa[i] : pb[i])) sa[n] = pa[i], sb[n] = pb[i], cf[n++] = 0.5f;
            paired |= c == pa[i] || c == pb[i];
        }
        for (int t = 0; t < T && !paired; t++) sa[n] = c, sb[n] = -1, cf[n++] = 1.0f / (float)T;
    }
    CHECK(n == C);
    for (int k = 0; k < C; k++) {
        sa[k] = (sa[k] + shift) % C;
        if (sb[k] >= 0) sb[k] = (sb[k] + shift) % C;
    }
}

uint64_t qs_test_seed = 0x9e3779b97f4a7c15ull;

float qs_test_rnd(void) {
    qs_test_seed = qs_test_seed * 6364136223846793005ull + 1442695040888963407ull;
    float v = (float)((qs_test_seed >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
    return v == 0 ? 0.5f : v;
}

float *qs_test_rvec(size_t n, float amp) {
    float *v = malloc(n * sizeof *v);
    if (!v) {
        fprintf(stderr, "out of memory for %zu test values\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) v[i] = amp * qs_test_rnd();
    return v;
}
