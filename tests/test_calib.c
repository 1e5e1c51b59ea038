/* tests/test_calib.c - calibration windows (pipeline/calib.h):
 *  - the PRNG: xoshiro256** reference outputs, splitmix64 seeding, bounded draws (known answers
 *    from an independent Python implementation), so a seed means the same windows everywhere;
 *  - text: a slice of wikitext-2 tokenized with a small trained byte-level BPE tokenizer.json
 *    (tests/fixtures) in a model folder: every window is the run of tokens at the start position
 *    the seed gives, same seed -> same ids and digest, another seed -> others; text of exactly
 *    seqlen tokens; too short text, a missing tokenizer or file -> one line naming the file;
 *  - ids files: the same sampling over parsed ids; ids out of range or not numbers -> errors
 *    naming the file and position; random ids in range; bad sizes rejected;
 *  - the default model (SmolLM2 tokenizer) over the whole wikitext-2 test set, as `qstream eval
 *    --text` tokenizes it. */
#include <stdint.h>
#include <string.h>
#include <xxhash.h>

#include "base/clock.h"
#include "base/error.h"
#include "base/fileio.h"
#include "io/tokenizer.h"
#include "pipeline/calib.h"
#include "tests/testutil.h"

static char *tmp;

static char *write_file(const char *name, const char *data, size_t len) {
    char *p = qs_path_join(tmp, name);
    qs_error err = {0};
    if (qs_file_write_durable(p, data, len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return p;
}

static char *read_or_die(const char *path, size_t *len) {
    char *s = NULL;
    qs_error err = {0};
    if (qs_file_read_all(path, (size_t)1 << 30, &s, len, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return s;
}

static int load(qs_calib *c, const char *src, int is_ids, int ns, int sl, unsigned long long seed, const char *model,
                int vocab, qs_error *err) {
    qs_calib_opts o = {.source = src, .source_is_ids = is_ids, .nsamples = ns, .seqlen = sl, .seed = seed};
    memset(err, 0, sizeof *err);
    return qs_calib_load(c, &o, model, vocab, err);
}

/* the windows of c are all[start_s .. start_s + seqlen) with the starts drawn from seed */
static int windows_match(const qs_calib *c, const int32_t *all, size_t n, unsigned long long seed) {
    qs_calib_rng r;
    qs_calib_rng_seed(&r, seed);
    for (int s = 0; s < c->nsamples; s++) {
        uint64_t start = qs_calib_rng_below(&r, n - (size_t)c->seqlen + 1);
        if (memcmp(c->ids + (size_t)s * c->seqlen, all + start, sizeof(int32_t) * (size_t)c->seqlen)) return 0;
    }
    return 1;
}

/* every window is a run of consecutive tokens somewhere in all (the protocol, independent of the PRNG) */
static int windows_are_substrings(const qs_calib *c, const int32_t *all, size_t n) {
    for (int s = 0; s < c->nsamples; s++) {
        const int32_t *w = c->ids + (size_t)s * c->seqlen;
        int found = 0;
        for (size_t i = 0; !found && i + (size_t)c->seqlen <= n; i++)
            found = !memcmp(w, all + i, sizeof(int32_t) * (size_t)c->seqlen);
        if (!found) return 0;
    }
    return 1;
}

static int has(const char *msg, const char *what) {
    if (strstr(msg, what)) return 1;
    fprintf(stderr, "message '%s' lacks '%s'\n", msg, what);
    return 0;
}

static void test_rng(void) {
    qs_calib_rng r = {{1, 2, 3, 4}}; /* the reference xoshiro256** from state {1, 2, 3, 4} */
    CHECK(qs_calib_rng_next(&r) == 11520);
    CHECK(qs_calib_rng_next(&r) == 0);
    CHECK(qs_calib_rng_next(&r) == 1509978240);
    qs_calib_rng_seed(&r, 0);
    CHECK(qs_calib_rng_next(&r) == 0x99ec5f36cb75f2b4ull);
    CHECK(qs_calib_rng_next(&r) == 0xbf6e1f784956452aull);
    qs_calib_rng_seed(&r, 42);
    CHECK(qs_calib_rng_next(&r) == 0x15780b2e0c2ec716ull);
    static const uint64_t below7[8] = {13914, 11474, 14742, 29248, 33560, 19529, 22612, 8668};
    qs_calib_rng_seed(&r, 7);
    for (int i = 0; i < 8; i++) CHECK(qs_calib_rng_below(&r, 49152) == below7[i]);
    qs_calib_rng_seed(&r, 3);
    for (int i = 0; i < 1000; i++) CHECK(qs_calib_rng_below(&r, 1) == 0);
    int hist[3] = {0};
    for (int i = 0; i < 30000; i++) hist[qs_calib_rng_below(&r, 3)]++;
    for (int i = 0; i < 3; i++) CHECKF(hist[i] > 9500 && hist[i] < 10500, "bucket %d: %d of 30000", i, hist[i]);
}

static void test_random(void) {
    qs_calib a, b, c;
    qs_error err;
    CHECK(!load(&a, "random", 0, 2, 4, 0, NULL, 1000, &err));
    static const int32_t want[8] = {420, 82, 768, 532, 737, 498, 344, 103}; /* seed 0, below 1000 */
    CHECK(a.nsamples == 2 && a.seqlen == 4 && !memcmp(a.ids, want, sizeof want));
    CHECK(a.digest == XXH3_64bits(want, sizeof want)); /* little-endian host */
    CHECKF(!strcmp(a.desc, "random ids in [0, 1000), 2 x 4, seed 0"), "%s", a.desc);
    qs_calib_free(&a);
    qs_calib_free(&a); /* twice is fine */
    qs_calib_free(NULL);

    CHECK(!load(&a, "random", 0, 16, 512, 5, NULL, 49152, &err));
    CHECK(!load(&b, "random", 0, 16, 512, 5, "/nonexistent", 49152, &err)); /* model_dir unused */
    CHECK(!load(&c, "random", 0, 16, 512, 6, NULL, 49152, &err));
    CHECK(a.digest == b.digest && !memcmp(a.ids, b.ids, sizeof(int32_t) * 16 * 512));
    CHECK(a.digest != c.digest && memcmp(a.ids, c.ids, sizeof(int32_t) * 16 * 512));
    int32_t lo = INT32_MAX, hi = -1;
    for (int i = 0; i < 16 * 512; i++) lo = a.ids[i] < lo ? a.ids[i] : lo, hi = a.ids[i] > hi ? a.ids[i] : hi;
    CHECKF(lo >= 0 && hi < 49152 && hi > 40000 && lo < 9000, "random ids in [%d, %d]", lo, hi);
    qs_calib_free(&a);
    qs_calib_free(&b);
    qs_calib_free(&c);
    /* a tiny vocabulary: every id is 0 */
    CHECK(!load(&a, "random", 0, 3, 7, 1, NULL, 1, &err));
    for (int i = 0; i < 21; i++) CHECK(a.ids[i] == 0);
    qs_calib_free(&a);
}

static void test_bad_opts(void) {
    qs_calib c;
    qs_error err;
    memset(&c, 0x5a, sizeof c);
    CHECK(load(&c, "random", 0, 0, 16, 0, NULL, 100, &err) == QS_EUSAGE && has(err.msg, "nsamples"));
    CHECK(c.ids == NULL && c.nsamples == 0); /* zeroed on error */
    CHECK(load(&c, "random", 0, 4, 1, 0, NULL, 100, &err) == QS_EUSAGE && has(err.msg, "seqlen"));
    CHECK(load(&c, NULL, 0, 4, 16, 0, NULL, 100, &err) == QS_EUSAGE && has(err.msg, "calibration source"));
    CHECK(load(&c, "random", 0, 4, 16, 0, NULL, 0, &err) == QS_EUSAGE && has(err.msg, "vocabulary"));
    CHECK(c.ids == NULL);
}

static void test_text(void) {
    /* a model folder holding just a tokenizer.json (a small trained byte-level BPE) */
    char *model = qs_path_join(tmp, "model"), *fix = qs_path_join(getenv("QS_SRC"), "tests/fixtures/gpt2_tokenizer.json");
    qs_error err = {0};
    size_t len;
    char *tj = read_or_die(fix, &len);
    CHECK(!qs_mkdir_p(model, &err));
    char *tjp = qs_path_join(model, "tokenizer.json");
    CHECK(!qs_file_write_durable(tjp, tj, len, &err));
    qs_tokenizer *t = NULL;
    CHECK(!qs_tokenizer_load(&t, model, &err));
    int vocab = (int)qs_tokenizer_vocab_size(t);

    /* 40 KB of wikitext-2 */
    char *wpath = qs_test_shared_path("data/wikitext2-test.raw.txt");
    char *wiki = read_or_die(wpath, &len);
    CHECK(len > 40000);
    char *text = write_file("calib.txt", wiki, 40000);
    int32_t *all = NULL;
    size_t n = 0;
    CHECK(!qs_tokenizer_encode(t, wiki, 40000, &all, &n, &err));
    CHECKF(n > 5000, "%zu tokens", n);

    qs_calib a, b, c;
    CHECK(!load(&a, text, 0, 8, 256, 0, model, vocab, &err));
    CHECK(!load(&b, text, 0, 8, 256, 0, model, vocab, &err));
    CHECK(!load(&c, text, 0, 8, 256, 1, model, vocab, &err));
    CHECK(a.nsamples == 8 && a.seqlen == 256);
    CHECK(a.digest == b.digest && !memcmp(a.ids, b.ids, sizeof(int32_t) * 8 * 256));
    CHECK(a.digest != c.digest && memcmp(a.ids, c.ids, sizeof(int32_t) * 8 * 256));
    CHECK(a.digest == XXH3_64bits(a.ids, sizeof(int32_t) * 8 * 256));
    CHECK(windows_are_substrings(&a, all, n) && windows_are_substrings(&c, all, n));
    CHECK(windows_match(&a, all, n, 0) && windows_match(&c, all, n, 1));
    char want[512];
    snprintf(want, sizeof want, "text %s (%zu tokens), 8 x 256, seed 0", text, n);
    CHECKF(!strcmp(a.desc, want), "'%s' != '%s'", a.desc, want);
    qs_calib_free(&a);
    qs_calib_free(&b);
    qs_calib_free(&c);

    /* exactly seqlen tokens: every window is the whole text; one token fewer is too short */
    CHECK(!load(&a, text, 0, 3, (int)n, 9, model, vocab, &err));
    for (int s = 0; s < 3; s++) CHECK(!memcmp(a.ids + (size_t)s * n, all, sizeof(int32_t) * n));
    qs_calib_free(&a);
    CHECK(load(&a, text, 0, 3, (int)n + 1, 9, model, vocab, &err) == QS_EFORMAT);
    char num[64];
    snprintf(num, sizeof num, "%zu tokens", n);
    CHECK(has(err.msg, text) && has(err.msg, num));
    snprintf(num, sizeof num, "%zu", n + 1);
    CHECK(has(err.msg, num) && !strchr(err.msg, '\n'));
    CHECK(a.ids == NULL);

    /* a vocabulary smaller than the tokenizer's */
    CHECK(load(&a, text, 0, 1, 16, 0, model, 10, &err) == QS_EFORMAT && has(err.msg, text) && has(err.msg, "position"));
    /* a missing text file, a missing tokenizer */
    char *missing = qs_path_join(tmp, "missing.txt");
    CHECK(load(&a, missing, 0, 1, 16, 0, model, vocab, &err) < 0 && has(err.msg, missing));
    CHECK(load(&a, text, 0, 1, 16, 0, tmp, vocab, &err) < 0 && has(err.msg, text) && has(err.msg, "tokenizer.json"));

    /* the same tokens as an ids file, commas and newlines between: the same windows */
    size_t cap = n * 12 + 16, k = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) k += (size_t)snprintf(s + k, cap - k, "%d%s", (int)all[i], i % 10 == 9 ? "\n" : ", ");
    char *idsf = write_file("calib.ids", s, k);
    CHECK(!load(&a, idsf, 1, 8, 256, 0, NULL, vocab, &err));
    CHECK(!load(&b, text, 0, 8, 256, 0, model, vocab, &err));
    CHECK(a.digest == b.digest && !memcmp(a.ids, b.ids, sizeof(int32_t) * 8 * 256));
    snprintf(want, sizeof want, "ids %s (%zu ids), 8 x 256, seed 0", idsf, n);
    CHECKF(!strcmp(a.desc, want), "'%s' != '%s'", a.desc, want);
    qs_calib_free(&a);
    qs_calib_free(&b);
    free(s);
    free(idsf);
    free(missing);
    free(all);
    free(wiki);
    free(wpath);
    free(text);
    qs_tokenizer_free(t);
    free(tjp);
    free(tj);
    free(fix);
    free(model);
}

static void test_ids_file(void) {
    qs_calib a, b;
    qs_error err;
    char *f = write_file("small.ids", "5 6 7 8 9\n10 11 12", 18);
    CHECK(!load(&a, f, 1, 50, 3, 11, NULL, 13, &err));
    for (int s = 0; s < 50; s++) { /* consecutive runs starting at 5..10 */
        int32_t *w = a.ids + s * 3;
        CHECKF(w[0] >= 5 && w[0] <= 10 && w[1] == w[0] + 1 && w[2] == w[0] + 2, "window %d: %d %d %d", s, w[0], w[1],
               w[2]);
    }
    static const int32_t all[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    CHECK(windows_match(&a, all, 8, 11));
    int seen[6] = {0}; /* every start is drawn, the last one (n - seqlen) included */
    for (int s = 0; s < 50; s++) seen[a.ids[s * 3] - 5] = 1;
    for (int i = 0; i < 6; i++) CHECKF(seen[i], "start %d never drawn in 50 windows", i);
    CHECK(!load(&b, f, 1, 50, 3, 12, NULL, 13, &err));
    CHECK(a.digest != b.digest);
    qs_calib_free(&a);
    qs_calib_free(&b);

    /* id 12 at position 7 is outside a vocabulary of 12 */
    CHECK(load(&a, f, 1, 1, 3, 0, NULL, 12, &err) == QS_EFORMAT);
    CHECK(has(err.msg, f) && has(err.msg, "12") && has(err.msg, "position 7") && has(err.msg, "[0, 12)"));
    /* too few ids */
    CHECK(load(&a, f, 1, 1, 9, 0, NULL, 13, &err) == QS_EFORMAT);
    CHECK(has(err.msg, f) && has(err.msg, "8 token ids") && has(err.msg, "9"));
    /* not ids */
    char *g = write_file("bad.ids", "1 2 x3 4", 8);
    CHECK(load(&a, g, 1, 1, 2, 0, NULL, 13, &err) == QS_EFORMAT && has(err.msg, g) && has(err.msg, "byte 4"));
    char *h = write_file("neg.ids", "1 2 -3 4", 8);
    CHECK(load(&a, h, 1, 1, 2, 0, NULL, 13, &err) == QS_EFORMAT && has(err.msg, h));
    char *e = write_file("empty.ids", "", 0);
    CHECK(load(&a, e, 1, 1, 2, 0, NULL, 13, &err) == QS_EFORMAT && has(err.msg, e) && has(err.msg, "0 token ids"));
    /* "random" names a file when the source holds ids */
    CHECK(load(&a, "random", 1, 1, 2, 0, NULL, 13, &err) < 0 && has(err.msg, "random"));
    free(e);
    free(h);
    free(g);
    free(f);
}

/* the default model's tokenizer over the whole wikitext-2 test set (what `qstream quantize
 * --calib` gets from a real model folder) */
static void test_smollm(void) {
    const char *model = qs_test_smollm_dir();
    char *wpath = qs_test_shared_path("data/wikitext2-test.raw.txt");
    qs_error err = {0};
    qs_tokenizer *t = NULL;
    size_t len, n = 0;
    char *wiki = read_or_die(wpath, &len);
    int32_t *all = NULL;
    double t0 = qs_now();
    CHECK(!qs_tokenizer_load(&t, model, &err) && !qs_tokenizer_encode(t, wiki, len, &all, &n, &err));
    qs_calib c;
    CHECKF(!load(&c, wpath, 0, 32, 2048, 0, model, 49152, &err), "%s", err.msg);
    printf("smollm2: wikitext-2 test, %zu tokens, 32 x 2048 windows in %.2f s: %s, digest %016llx\n", n, qs_now() - t0,
           c.desc, c.digest);
    CHECK(n > 250000 && c.ids && windows_match(&c, all, n, 0));
    qs_calib_free(&c);
    qs_tokenizer_free(t);
    free(all);
    free(wiki);
    free(wpath);
}

int main(void) {
    tmp = qs_test_tmpdir("calib");
    test_rng();
    test_random();
    test_bad_opts();
    test_text();
    test_ids_file();
    test_smollm();
    free(tmp);
    return qs_test_result();
}
