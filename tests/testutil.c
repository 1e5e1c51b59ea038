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
