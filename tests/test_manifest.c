/* tests/test_manifest.c - manifest round trip, validation of damaged manifests (clear messages
 * naming the file), and the fingerprint difference that resume reports. */
#include <string.h>

#include "base/fileio.h"
#include "checkpoint/manifest.h"
#include "tests/testutil.h"

static const char *FP =
    "{\"format\":1,\"model\":{\"catalog_xxh3\":\"0123456789abcdef\",\"hidden\":576},"
    "\"method\":{\"name\":\"rtn\",\"wbits\":4,\"group\":128},\"calib\":{\"xxh3\":\"aa\"},\"seed\":0}";

static void expect_bad(const char *dir, const char *name, const char *text, const char *want) {
    char *p = qs_path_join(dir, name);
    qs_error err = {0};
    qs_file_write_durable(p, text, strlen(text), &err);
    qs_manifest m;
    int rc = qs_manifest_load(&m, p, &err);
    CHECKF(rc != 0, "%s accepted", name);
    CHECKF(strstr(err.msg, name) && strstr(err.msg, want), "%s: message '%s' lacks '%s'", name, err.msg, want);
    free(p);
}

int main(void) {
    char *dir = qs_test_tmpdir("manifest");
    char *path = qs_path_join(dir, "manifest.json");
    qs_manifest m;
    qs_error err = {0};
    CHECK(qs_manifest_init(&m, 30, FP, &err) == 0);
    for (int b = 2; b >= 0; b--) {
        char file[64];
        snprintf(file, sizeof file, "blocks/block-%04d.qsh", b);
        qs_manifest_block r = {.block = b, .file = file, .bytes = 1000u + (unsigned)b, .xxh3 = 0xfedcba9876543210ull + (unsigned)b,
                               .seconds = 1.5, .metrics_json = "{\"mse\":0.25}"};
        CHECK(qs_manifest_set_block(&m, &r, &err) == 0);
    }
    CHECK(qs_manifest_save(&m, path, &err) == 0);
    qs_manifest l;
    CHECKF(qs_manifest_load(&l, path, &err) == 0, "%s", err.msg);
    CHECK(l.n == 3 && l.n_blocks == 30 && !strcmp(l.fingerprint_json, m.fingerprint_json));
    const qs_manifest_block *b1 = qs_manifest_find(&l, 1);
    CHECK(b1 && b1->bytes == 1001 && b1->xxh3 == 0xfedcba9876543211ull && !strcmp(b1->file, "blocks/block-0001.qsh"));
    CHECK(b1 && b1->metrics_json && strstr(b1->metrics_json, "0.25"));
    CHECK(qs_manifest_find(&l, 3) == NULL);
    qs_manifest_free(&l);

    /* the fingerprint difference names the key */
    char what[256];
    CHECK(qs_fingerprint_diff(FP, FP, what, sizeof what) == 0);
    char other[1024];
    strcpy(other, FP);
    memcpy(strstr(other, "\"wbits\":4"), "\"wbits\":3", 9);
    CHECK(qs_fingerprint_diff(FP, other, what, sizeof what) == 1);
    CHECKF(!strcmp(what, "method.wbits: 4 -> 3"), "diff: %s", what);
    CHECK(qs_fingerprint_diff(FP, "{\"format\":1}", what, sizeof what) == 1 && strstr(what, "model"));

    /* damaged manifests */
    char *text;
    size_t len;
    CHECK(qs_file_read_all(path, 1 << 20, &text, &len, &err) == 0);
    for (size_t cut = 0; cut < len; cut += 7) {
        char *t = strndup(text, cut);
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.json", cut);
        expect_bad(dir, name, t, "");
        free(t);
    }
    expect_bad(dir, "array.json", "[1,2]", "not a JSON object");
    expect_bad(dir, "format.json", "{\"format\":2,\"n_blocks\":3,\"fingerprint\":{},\"blocks\":[]}", "format");
    expect_bad(dir, "noblocks.json", "{\"format\":1,\"n_blocks\":3,\"fingerprint\":{}}", "blocks");
    expect_bad(dir, "range.json",
               "{\"format\":1,\"n_blocks\":3,\"fingerprint\":{},\"blocks\":[{\"block\":3,\"file\":\"b\",\"bytes\":1,\"xxh3\":\"0123456789abcdef\"}]}",
               "outside");
    expect_bad(dir, "twice.json",
               "{\"format\":1,\"n_blocks\":3,\"fingerprint\":{},\"blocks\":[{\"block\":1,\"file\":\"b\",\"bytes\":1,\"xxh3\":\"0123456789abcdef\"},"
               "{\"block\":1,\"file\":\"b\",\"bytes\":1,\"xxh3\":\"0123456789abcdef\"}]}",
               "twice");
    expect_bad(dir, "escape.json",
               "{\"format\":1,\"n_blocks\":3,\"fingerprint\":{},\"blocks\":[{\"block\":1,\"file\":\"../../etc/passwd\",\"bytes\":1,\"xxh3\":\"0123456789abcdef\"}]}",
               "bad file name");
    expect_bad(dir, "hash.json",
               "{\"format\":1,\"n_blocks\":3,\"fingerprint\":{},\"blocks\":[{\"block\":1,\"file\":\"b\",\"bytes\":1,\"xxh3\":\"xyz\"}]}",
               "xxh3");
    free(text);
    qs_manifest_free(&m);
    free(path);
    free(dir);
    return qs_test_result();
}
