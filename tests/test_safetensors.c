/* tests/test_safetensors.c - the safetensors catalogue and writer: stories260k read, written back
 * bit-equal, F16/BF16 conversion bounds, a two-shard copy with an index equal to the single file,
 * and damaged files (each refused with a message naming the file, no crash). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/safetensors.h"
#include "tests/testutil.h"

static char *dir;

/* writes a safetensors file from a header string and data size */
static char *raw_file(const char *name, const char *header, size_t data_len, uint64_t fake_len) {
    char *p = qs_path_join(dir, name);
    size_t hl = strlen(header), n = 8 + hl + data_len;
    uint8_t *b = calloc(1, n);
    uint64_t len = fake_len ? fake_len : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
    memcpy(b + 8, header, hl);
    qs_error err;
    qs_file_write_durable(p, b, n, &err);
    free(b);
    return p;
}

static void expect_bad(const char *name, const char *header, size_t data_len, uint64_t fake_len, const char *want) {
    char *p = raw_file(name, header, data_len, fake_len);
    qs_catalog *c;
    qs_error err = {0};
    int rc = qs_catalog_open(&c, p, &err);
    CHECKF(rc != 0, "%s accepted", name);
    CHECKF(strstr(err.msg, name) && strstr(err.msg, want), "%s: message '%s' lacks '%s'", name, err.msg, want);
    free(p);
}

static int write_all(const qs_catalog *c, const char *path, qs_dtype as, int from, int to) {
    qs_st_writer *w;
    qs_error err = {0};
    if (qs_st_writer_open(&w, path, &err)) return -1;
    for (int i = from; i < to; i++) {
        const qs_tensor_info *t = qs_catalog_at(c, (size_t)i);
        if (qs_st_writer_declare(w, t->name, as, t->n_dims, t->shape, &err)) {
            qs_st_writer_abort(w);
            return -1;
        }
    }
    for (int i = from; i < to; i++) {
        const qs_tensor_info *t = qs_catalog_at(c, (size_t)i);
        float *f = malloc(t->n_elems * 4 + 4);
        uint16_t *h = malloc(t->n_elems * 2 + 2);
        qs_catalog_read_f32(c, t, f, &err);
        if (as == QS_DTYPE_F16) qs_f32_to_f16_n(f, h, t->n_elems);
        if (as == QS_DTYPE_BF16) qs_f32_to_bf16_n(f, h, t->n_elems);
        int rc = qs_st_writer_write(w, as == QS_DTYPE_F32 ? (void *)f : (void *)h, &err);
        free(f);
        free(h);
        if (rc) {
            qs_st_writer_abort(w);
            return -1;
        }
    }
    return qs_st_writer_close(w, &err);
}

/* max of |x - y| / (rel |x| + floor); with rel = 0, floor = 1: the max abs difference */
static double max_diff(const qs_catalog *a, const qs_catalog *b, double rel, double floor_) {
    double worst = 0;
    qs_error err;
    for (size_t i = 0; i < qs_catalog_count(a); i++) {
        const qs_tensor_info *t = qs_catalog_at(a, i), *u = qs_catalog_find(b, t->name);
        if (!u || u->n_elems != t->n_elems) return INFINITY;
        float *x = malloc(t->n_elems * 4), *y = malloc(t->n_elems * 4);
        qs_catalog_read_f32(a, t, x, &err);
        qs_catalog_read_f32(b, u, y, &err);
        for (uint64_t k = 0; k < t->n_elems; k++) {
            double d = fabs((double)x[k] - y[k]) / (rel * fabs(x[k]) + floor_);
            worst = fmax(worst, d);
        }
        free(x);
        free(y);
    }
    return worst;
}

/* s with the first occurrence of from replaced by to; malloc'd */
static char *replace_first(const char *s, const char *from, const char *to) {
    const char *hit = strstr(s, from);
    size_t a = hit ? (size_t)(hit - s) : strlen(s), fl = hit ? strlen(from) : 0, tl = hit ? strlen(to) : 0;
    char *r = malloc(strlen(s) - fl + tl + 1);
    memcpy(r, s, a);
    memcpy(r + a, to, tl);
    strcpy(r + a + tl, s + a + fl);
    return r;
}

/* writes text as the index of sdir and expects the catalogue to refuse it naming the index and want */
static void expect_bad_index(const char *sdir, const char *text, const char *want) {
    char *ip = qs_path_join(sdir, "model.safetensors.index.json");
    qs_error err = {0};
    qs_file_write_durable(ip, text, strlen(text), &err);
    qs_catalog *c = (qs_catalog *)1;
    int rc = qs_catalog_open(&c, sdir, &err);
    CHECKF(rc != 0 && c == NULL, "index accepted (want '%s')", want);
    CHECKF(strstr(err.msg, "model.safetensors.index.json") && strstr(err.msg, want), "message '%s' lacks '%s'", err.msg,
           want);
    free(ip);
}

static uint64_t le64(const unsigned char *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* the writer's layout (length, compact JSON with __metadata__, space padding, 8-aligned data),
 * 0-d and empty tensors, other dtypes read raw, row reads */
static void test_writer_layout(void) {
    char *p = qs_path_join(dir, "layout.safetensors");
    qs_st_writer *w;
    qs_error err = {0};
    int64_t sa[2] = {2, 3}, se[2] = {0, 5}, sb[1] = {3};
    float a[6] = {1, 2, 3, 4, 5, 6};
    int32_t scalar = -7;
    uint8_t bytes[3] = {1, 2, 3};
    CHECK(qs_st_writer_open(&w, p, &err) == 0);
    CHECK(qs_st_writer_declare(w, "a", QS_DTYPE_F32, 2, sa, &err) == 0);
    CHECK(qs_st_writer_declare(w, "empty", QS_DTYPE_BF16, 2, se, &err) == 0);
    CHECK(qs_st_writer_declare(w, "scalar", QS_DTYPE_I32, 0, NULL, &err) == 0);
    CHECK(qs_st_writer_declare(w, "bytes", QS_DTYPE_U8, 1, sb, &err) == 0);
    CHECK(qs_st_writer_write(w, a, &err) == 0 && qs_st_writer_write(w, NULL, &err) == 0 &&
          qs_st_writer_write(w, &scalar, &err) == 0 && qs_st_writer_write(w, bytes, &err) == 0);
    CHECKF(qs_st_writer_close(w, &err) == 0, "%s", err.msg);
    char *text;
    size_t len;
    CHECK(qs_file_read_all(p, 1 << 20, &text, &len, &err) == 0);
    if (text) {
        uint64_t hl = le64((unsigned char *)text);
        CHECK(hl % 8 == 0 && 8 + hl + 24 + 4 + 3 == len);
        CHECK(strstr(text + 8, "\"__metadata__\":{\"format\":\"pt\"}") != NULL);
        CHECK(text[8] == '{' && (text[8 + hl - 1] == ' ' || text[8 + hl - 1] == '}'));
        free(text);
    }
    qs_catalog *c;
    CHECKF(qs_catalog_open(&c, p, &err) == 0, "%s", err.msg);
    if (!c) goto out;
    CHECK(qs_catalog_count(c) == 4 && qs_catalog_file_count(c) == 1 && !strcmp(qs_catalog_file_path(c, 0), p));
    const qs_tensor_info *t = qs_catalog_find(c, "scalar"), *e = qs_catalog_find(c, "empty"),
                         *ta = qs_catalog_find(c, "a"), *tb = qs_catalog_find(c, "bytes");
    CHECK(t && t->n_dims == 0 && t->n_elems == 1 && t->nbytes == 4 && t->dtype == QS_DTYPE_I32);
    CHECK(e && e->n_elems == 0 && e->nbytes == 0 && e->shape[1] == 5);
    CHECK(ta && ta->offset % 8 == 0 && tb && tb->dtype == QS_DTYPE_U8);
    CHECK(qs_catalog_find(c, "__metadata__") == NULL && qs_catalog_find(c, "b") == NULL);
    int32_t got = 0;
    uint8_t gb[3] = {0};
    CHECK(t && qs_catalog_read_raw(c, t, &got, &err) == 0 && got == -7);
    CHECK(tb && qs_catalog_read_raw(c, tb, gb, &err) == 0 && !memcmp(gb, bytes, 3));
    float f[6] = {0};
    CHECK(t && qs_catalog_read_f32(c, t, f, &err) == QS_EUNSUPPORTED && strstr(err.msg, "layout.safetensors") &&
          strstr(err.msg, "'scalar'"));
    CHECK(e && qs_catalog_read_f32(c, e, f, &err) == 0);
    CHECK(ta && qs_catalog_read_rows_f32(c, ta, 1, 1, f, &err) == 0 && f[0] == 4 && f[1] == 5 && f[2] == 6);
    CHECK(ta && qs_catalog_read_rows_f32(c, ta, 1, 2, f, &err) != 0 && strstr(err.msg, "'a'"));
    CHECK(ta && qs_catalog_read_rows_f32(c, ta, -1, 1, f, &err) != 0);
    CHECK(ta && qs_catalog_read_rows_f32(c, ta, 2, 0, f, &err) == 0);
    qs_catalog_free(c);
out:
    qs_catalog_free(NULL);
    free(p);
}

static int exists(const char *p) {
    FILE *f = fopen(p, "r");
    if (f) fclose(f);
    return f != NULL;
}

/* the writer refuses bad declarations and misuse, and leaves nothing behind when it fails */
static void test_writer_misuse(void) {
    char *p = qs_path_join(dir, "misuse.safetensors");
    qs_st_writer *w;
    qs_error err = {0};
    int64_t s2[1] = {2}, neg[1] = {-1}, big[2] = {(int64_t)1 << 40, (int64_t)1 << 40}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    float x[2] = {1, 2};
    CHECK(qs_st_writer_open(&w, p, &err) == 0);
    CHECK(qs_st_writer_declare(w, "x", QS_DTYPE_F32, 1, s2, &err) == 0);
    CHECK(qs_st_writer_declare(w, "x", QS_DTYPE_F32, 1, s2, &err) != 0 && strstr(err.msg, "twice"));
    CHECK(qs_st_writer_declare(w, "__metadata__", QS_DTYPE_F32, 1, s2, &err) != 0);
    CHECK(qs_st_writer_declare(w, "", QS_DTYPE_F32, 1, s2, &err) != 0);
    CHECK(qs_st_writer_declare(w, "neg", QS_DTYPE_F32, 1, neg, &err) != 0 && strstr(err.msg, "negative"));
    CHECK(qs_st_writer_declare(w, "big", QS_DTYPE_F32, 2, big, &err) != 0 && strstr(err.msg, "overflow"));
    CHECK(qs_st_writer_declare(w, "nine", QS_DTYPE_U8, 9, nine, &err) != 0);
    CHECK(qs_st_writer_declare(w, "dtype", (qs_dtype)99, 1, s2, &err) != 0);
    CHECK(qs_st_writer_write(w, x, &err) == 0);
    CHECK(qs_st_writer_declare(w, "late", QS_DTYPE_F32, 1, s2, &err) != 0 && strstr(err.msg, "after"));
    CHECK(qs_st_writer_write(w, x, &err) != 0 && strstr(err.msg, "more tensors"));
    CHECK(!exists(p)); /* PATH.tmp until close */
    CHECKF(qs_st_writer_close(w, &err) == 0, "%s", err.msg);
    qs_catalog *c;
    CHECK(qs_catalog_open(&c, p, &err) == 0 && qs_catalog_count(c) == 1);
    qs_catalog_free(c);
    /* closed before every tensor was written: refused, nothing at the path */
    char *q = qs_path_join(dir, "short.safetensors");
    CHECK(qs_st_writer_open(&w, q, &err) == 0 && qs_st_writer_declare(w, "y", QS_DTYPE_F32, 1, s2, &err) == 0);
    CHECK(qs_st_writer_declare(w, "z", QS_DTYPE_F32, 1, s2, &err) == 0 && qs_st_writer_write(w, x, &err) == 0);
    CHECK(qs_st_writer_close(w, &err) != 0 && strstr(err.msg, "1 of 2"));
    CHECK(!exists(q));
    /* a name that is not UTF-8 cannot go into the JSON header */
    CHECK(qs_st_writer_open(&w, q, &err) == 0 && qs_st_writer_declare(w, "bad\xff", QS_DTYPE_F32, 1, s2, &err) == 0);
    CHECK(qs_st_writer_write(w, x, &err) != 0 && strstr(err.msg, "UTF-8"));
    qs_st_writer_abort(w);
    CHECK(!exists(q));
    /* no tensors at all: a valid, empty file */
    CHECK(qs_st_writer_open(&w, q, &err) == 0 && qs_st_writer_close(w, &err) == 0);
    CHECK(qs_catalog_open(&c, q, &err) == 0 && qs_catalog_count(c) == 0);
    qs_catalog_free(c);
    qs_st_writer_abort(NULL);
    free(p);
    free(q);
}

/* qs_safetensors_parse_header directly: appending, absolute offsets, empty tensors sharing an
 * offset with a neighbour, __metadata__ ignored */
static void test_parse_header(void) {
    const char *h = "{\"__metadata__\": {\"format\": \"pt\"},"
                    "\"e\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [4, 4]},"
                    "\"a\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 4]},"
                    "\"b\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [4, 12]},"
                    "\"z\": {\"dtype\": \"BOOL\", \"shape\": [0], \"data_offsets\": [6, 6]}}";
    size_t hl = strlen(h);
    uint64_t fsize = 8 + hl + 12;
    qs_tensor_info *t = NULL;
    size_t n = 0;
    qs_error err = {0};
    CHECKF(qs_safetensors_parse_header(h, hl, fsize, "x.safetensors", 0, &t, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 4 && t && !strcmp(t[1].name, "a") && t[1].offset == 8 + hl && t[2].offset == 8 + hl + 4 &&
          t[2].n_dims == 0 && t[2].n_elems == 1 && t[0].n_elems == 0);
    CHECK(qs_safetensors_parse_header(h, hl, fsize, "y.safetensors", 3, &t, &n, &err) == 0);
    CHECK(n == 8 && t[7].file_index == 3 && t[0].file_index == 0);
    /* one byte short: refused, the list unchanged */
    CHECK(qs_safetensors_parse_header(h, hl, fsize - 1, "y.safetensors", 4, &t, &n, &err) == QS_EFORMAT && n == 8);
    CHECKF(strstr(err.msg, "y.safetensors: tensor 'b': data_offsets [4, 12] extend past the end of the file"), "%s",
           err.msg);
    CHECK(qs_safetensors_parse_header(h, hl, hl, "y.safetensors", 4, &t, &n, &err) != 0 && strstr(err.msg, "header length"));
    CHECK(qs_safetensors_parse_header(h, 0, fsize, "y.safetensors", 4, &t, &n, &err) != 0 && n == 8);
    qs_tensor_infos_free(t, n);
    qs_tensor_infos_free(NULL, 0);
}

int main(void) {
    dir = qs_test_tmpdir("safetensors");
    char *model = qs_test_shared_path("models/stories260k");
    qs_catalog *c;
    qs_error err = {0};
    CHECKF(qs_catalog_open(&c, model, &err) == 0, "%s", err.msg);
    if (!c) return qs_test_result();
    /* 5 layers x 9 tensors + embedding + final norm (tied: no lm_head) */
    CHECK(qs_catalog_count(c) == 47);
    const qs_tensor_info *t = qs_catalog_find(c, "model.layers.4.mlp.down_proj.weight");
    CHECK(t && t->dtype == QS_DTYPE_F32 && t->n_dims == 2 && t->shape[0] == 64 && t->shape[1] == 172);
    t = qs_catalog_find(c, "model.embed_tokens.weight");
    CHECK(t && t->shape[0] == 512 && t->shape[1] == 64);
    CHECK(qs_catalog_find(c, "lm_head.weight") == NULL);
    for (size_t i = 0; i < qs_catalog_count(c); i++) {
        t = qs_catalog_at(c, i);
        float *f = malloc(t->n_elems * 4);
        CHECK(qs_catalog_read_f32(c, t, f, &err) == 0);
        for (uint64_t k = 0; k < t->n_elems; k++) CHECKF(isfinite(f[k]), "%s[%llu] not finite", t->name, (unsigned long long)k);
        free(f);
    }
    /* written back as F32: bit-equal; F16 / BF16: relative error within half an ulp */
    char *p32 = qs_path_join(dir, "f32.safetensors"), *p16 = qs_path_join(dir, "f16.safetensors"),
         *pbf = qs_path_join(dir, "bf16.safetensors");
    int n = (int)qs_catalog_count(c);
    CHECK(write_all(c, p32, QS_DTYPE_F32, 0, n) == 0 && write_all(c, p16, QS_DTYPE_F16, 0, n) == 0 &&
          write_all(c, pbf, QS_DTYPE_BF16, 0, n) == 0);
    qs_catalog *c32, *c16, *cbf;
    CHECK(qs_catalog_open(&c32, p32, &err) == 0 && qs_catalog_open(&c16, p16, &err) == 0 && qs_catalog_open(&cbf, pbf, &err) == 0);
    CHECK(max_diff(c, c32, 0, 1) == 0);
    /* round to nearest: at most half an ulp (2^-11 relative for F16, 2^-8 for BF16), and half the
     * F16 subnormal step (2^-25) for values below 2^-14 */
    double e16 = max_diff(c, c16, 1.0 / 2048, 1.0 / 33554432), ebf = max_diff(c, cbf, 1.0 / 256, 1e-38);
    printf("stories260k: F16 / BF16 error in units of the rounding bound: %.3f / %.3f\n", e16, ebf);
    CHECK(e16 <= 1.0 && ebf <= 1.0);
    /* two shards + index */
    char *sdir = qs_path_join(dir, "sharded"), *s1, *s2;
    qs_mkdir_p(sdir, &err);
    s1 = qs_path_join(sdir, "model-00001-of-00002.safetensors");
    s2 = qs_path_join(sdir, "model-00002-of-00002.safetensors");
    CHECK(write_all(c, s1, QS_DTYPE_F32, 0, 20) == 0 && write_all(c, s2, QS_DTYPE_F32, 20, n) == 0);
    char idx[65536];
    size_t k = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(idx + k, sizeof idx - k, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                              qs_catalog_at(c, (size_t)i)->name, i < 20 ? 1 : 2);
    k += (size_t)snprintf(idx + k, sizeof idx - k, "}}");
    char *ip = qs_path_join(sdir, "model.safetensors.index.json");
    qs_file_write_durable(ip, idx, k, &err);
    qs_catalog *cs;
    CHECKF(qs_catalog_open(&cs, sdir, &err) == 0, "%s", err.msg);
    if (cs) {
        CHECK(qs_catalog_file_count(cs) == 2 && qs_catalog_count(cs) == (size_t)n && max_diff(c, cs, 0, 1) == 0);
        qs_catalog_free(cs);
    }
    /* the index file itself as the path */
    CHECKF(qs_catalog_open(&cs, ip, &err) == 0, "%s", err.msg);
    if (cs) {
        CHECK(qs_catalog_file_count(cs) == 2 && max_diff(c, cs, 0, 1) == 0);
        qs_catalog_free(cs);
    }
    /* tensors a shard holds that the map does not list are kept */
    const char *first = qs_catalog_at(c, 0)->name;
    char entry[256];
    snprintf(entry, sizeof entry, "\"%s\": \"model-00001-of-00002.safetensors\", ", first);
    char *fewer = replace_first(idx, entry, "");
    qs_file_write_durable(ip, fewer, strlen(fewer), &err);
    CHECKF(qs_catalog_open(&cs, sdir, &err) == 0, "%s", err.msg);
    if (cs) {
        CHECK(qs_catalog_count(cs) == (size_t)n && qs_catalog_find(cs, first) != NULL);
        qs_catalog_free(cs);
    }
    free(fewer);
    /* damaged indexes: a tensor its file lacks, a missing file, a tensor in the other file, ... */
    char *bad = replace_first(idx, "model.norm.weight", "model.nope.weight");
    expect_bad_index(sdir, bad, "tensor 'model.nope.weight' is not in model-0000");
    free(bad);
    bad = replace_first(idx, "model-00002-of-00002", "model-00003-of-00002");
    expect_bad_index(sdir, bad, "model-00003-of-00002.safetensors: cannot open");
    free(bad);
    snprintf(entry, sizeof entry, "\"%s\": \"model-00001-of-00002.safetensors\"", first);
    char moved[256];
    snprintf(moved, sizeof moved, "\"%s\": \"model-00002-of-00002.safetensors\"", first);
    bad = replace_first(idx, entry, moved);
    expect_bad_index(sdir, bad, "(it is in ");
    free(bad);
    bad = replace_first(idx, "model-00002-of-00002", "../model-00002-of-00002");
    expect_bad_index(sdir, bad, "plain file name");
    free(bad);
    expect_bad_index(sdir, "{\"metadata\": {}, \"weight_map\": {}}", "empty");
    expect_bad_index(sdir, "{\"metadata\": {}}", "weight_map");
    expect_bad_index(sdir, "[]", "weight_map");
    expect_bad_index(sdir, "{\"weight_map\": {\"a\": 3}}", "plain file name");
    expect_bad_index(sdir, "{\"weight_map\": ", "not valid JSON");
    test_writer_layout();
    test_writer_misuse();
    test_parse_header();

    /* damaged files */
    expect_bad("hdrlen.safetensors", "{}", 0, 1000, "header length");
    expect_bad("zero.safetensors", "", 0, 0, "header length");
    expect_bad("notjson.safetensors", "{\"a\": ", 0, 0, "not valid JSON");
    expect_bad("array.safetensors", "[1, 2]", 0, 0, "not a JSON object");
    expect_bad("dtype.safetensors", "{\"a\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, 0, "unknown dtype");
    expect_bad("shape.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, 0, "shape");
    expect_bad("past.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, 0,
               "past.safetensors: tensor 'a': data_offsets [0, 16] extend past the end of the file (78 bytes)");
    expect_bad("overlap.safetensors",
               "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
               12, 0, "overlap");
    expect_bad("negdim.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, 0, "shape");
    expect_bad("dims.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1, 0, "dimensions");
    expect_bad("huge.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4, 0, "overflow");
    expect_bad("dup.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2, 0, "appears twice");
    expect_bad("huge8.safetensors", "{\"a\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952], \"data_offsets\": [0, 8]}}", 8, 0, "overflow");
    expect_bad("bigdim.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1e30], \"data_offsets\": [0, 1]}}", 1, 0, "shape[0]");
    expect_bad("nodtype.safetensors", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 1]}}", 1, 0, "'dtype'");
    expect_bad("noshape.safetensors", "{\"a\": {\"dtype\": \"U8\", \"data_offsets\": [0, 1]}}", 1, 0, "'shape'");
    expect_bad("nooffs.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1, 2]}}", 2, 0, "data_offsets");
    expect_bad("entry.safetensors", "{\"a\": [1]}", 0, 0, "tensor 'a'");
    expect_bad("maxhdr.safetensors", "{}", 0, (uint64_t)QS_ST_MAX_HEADER + 8, "header length");
    expect_bad("negoff.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [-1, 0]}}", 2, 0, "data_offsets");
    expect_bad("overlap3.safetensors",
               "{\"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]}, \"e\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [2, 2]},"
               " \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]}}", 8, 0, "'a' and 'b' overlap (data_offsets [0, 8] and [2, 4])");
    {
        char *tiny = qs_path_join(dir, "tiny.safetensors");
        qs_file_write_durable(tiny, "\x02\0\0\0", 4, &err);
        qs_catalog *cc;
        CHECK(qs_catalog_open(&cc, tiny, &err) != 0 && strstr(err.msg, "tiny.safetensors") && strstr(err.msg, "too short"));
        CHECK(qs_catalog_open(&cc, dir, &err) != 0 && strstr(err.msg, "no model.safetensors"));
        char *missing = qs_path_join(dir, "missing.safetensors");
        CHECK(qs_catalog_open(&cc, missing, &err) != 0 && strstr(err.msg, "missing.safetensors"));
        free(missing);
        free(tiny);
    }
    expect_bad("offsets.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [2, 1]}}", 2, 0, "data_offsets");
    /* truncations of a real file */
    char *text;
    size_t len;
    CHECK(qs_file_read_all(p32, 1 << 24, &text, &len, &err) == 0);
    size_t hlen = text && len >= 8 ? (size_t)le64((unsigned char *)text) : 0;
    size_t cuts[32] = {0, 4, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1, len - 1}, n_cuts = 10;
    for (size_t cut = len / 13; cut < len && n_cuts < 32; cut += len / 13 + 1) cuts[n_cuts++] = cut;
    for (size_t ci = 0; ci < n_cuts; ci++) {
        size_t cut = cuts[ci];
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.safetensors", cut);
        char *p = qs_path_join(dir, name);
        qs_file_write_durable(p, text, cut, &err);
        qs_catalog *cc;
        qs_error e2 = {0};
        CHECKF(qs_catalog_open(&cc, p, &e2) != 0 && strstr(e2.msg, name), "truncation at %zu accepted (%s)", cut, e2.msg);
        free(p);
    }
    free(text);
    /* the writer leaves nothing behind when aborted */
    qs_st_writer *w;
    char *pa = qs_path_join(dir, "aborted.safetensors");
    int64_t shp[1] = {4};
    CHECK(qs_st_writer_open(&w, pa, &err) == 0 && qs_st_writer_declare(w, "x", QS_DTYPE_F32, 1, shp, &err) == 0);
    qs_st_writer_abort(w);
    FILE *f = fopen(pa, "r");
    CHECK(f == NULL);
    qs_catalog_free(c32), qs_catalog_free(c16), qs_catalog_free(cbf), qs_catalog_free(c);
    free(p32), free(p16), free(pbf), free(sdir), free(s1), free(s2), free(ip), free(pa), free(model), free(dir);
    return qs_test_result();
}
