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
        if (qs_st_writer_declare(w, t->name, as, t->n_dims, t->shape, &err)) return -1;
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
        if (rc) return -1;
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
    /* the index names a tensor its file lacks */
    char *bad_idx = strdup(idx);
    char *hit = strstr(bad_idx, "model.norm.weight");
    if (hit) memcpy(hit, "model.nope.weight", 17);
    qs_file_write_durable(ip, bad_idx, strlen(bad_idx), &err);
    CHECK(qs_catalog_open(&cs, sdir, &err) != 0 && strstr(err.msg, "model.nope.weight"));
    free(bad_idx);

    /* damaged files */
    expect_bad("hdrlen.safetensors", "{}", 0, 1000, "header length");
    expect_bad("zero.safetensors", "", 0, 0, "header length");
    expect_bad("notjson.safetensors", "{\"a\": ", 0, 0, "not valid JSON");
    expect_bad("array.safetensors", "[1, 2]", 0, 0, "not a JSON object");
    expect_bad("dtype.safetensors", "{\"a\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, 0, "unknown dtype");
    expect_bad("shape.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, 0, "shape");
    expect_bad("past.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, 0, "past the end");
    expect_bad("overlap.safetensors",
               "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
               12, 0, "overlap");
    expect_bad("negdim.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, 0, "shape");
    expect_bad("dims.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1, 0, "dimensions");
    expect_bad("huge.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4, 0, "overflow");
    expect_bad("dup.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}, \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2, 0, "");
    expect_bad("offsets.safetensors", "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [2, 1]}}", 2, 0, "data_offsets");
    /* truncations of a real file */
    char *text;
    size_t len;
    CHECK(qs_file_read_all(p32, 1 << 24, &text, &len, &err) == 0);
    for (size_t cut = 0; cut < len; cut += len / 13 + 1) {
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
