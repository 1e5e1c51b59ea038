/* tests/test_gguf.c - the GGUF reader on files written by a small GGUF writer inside this test
 * (v2 and v3, every value type, F32/F16/Q8_0/Q4_0/Q4_1/Q5_0 tensors with values whose
 * dequantization is known exactly), damaged variants (each refused with the file name), and the
 * default model's GGUF. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/fileio.h"
#include "io/gguf.h"
#include "tests/testutil.h"

typedef struct buf { uint8_t *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) b->p = realloc(b->p, b->cap = 2 * (b->n + n) + 256);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void kv_u32(buf *b, const char *k, uint32_t v) { str(b, k); u32(b, QS_GGUF_U32); u32(b, v); }
static void kv_f32(buf *b, const char *k, float v) { str(b, k); u32(b, QS_GGUF_F32); put(b, &v, 4); }

/* offsets of tensor info fields patched by the damage tests */
static size_t off_first_tensor_type, off_first_tensor_offset, off_version, off_ntensors, off_first_str_len;

static buf make(uint32_t version) {
    buf b = {0};
    put(&b, "GGUF", 4);
    off_version = b.n;
    u32(&b, version);
    off_ntensors = b.n;
    u64(&b, 5); /* tensors */
    u64(&b, 8); /* kv */
    off_first_str_len = b.n;
    str(&b, "general.architecture"); u32(&b, QS_GGUF_STRING); str(&b, "llama");
    kv_u32(&b, "llama.block_count", 2);
    kv_f32(&b, "llama.rope.freq_base", 100000.0f);
    str(&b, "tokenizer.ggml.add_bos_token"); u32(&b, QS_GGUF_BOOL); put(&b, "\1", 1);
    str(&b, "test.i64"); u32(&b, QS_GGUF_I64); u64(&b, (uint64_t)-5);
    str(&b, "test.f64"); u32(&b, QS_GGUF_F64); double d = 2.5; put(&b, &d, 8);
    str(&b, "tokenizer.ggml.tokens"); u32(&b, QS_GGUF_ARRAY); u32(&b, QS_GGUF_STRING); u64(&b, 3);
    str(&b, "a"); str(&b, "bc"); str(&b, "\xc4\xa0the");
    str(&b, "tokenizer.ggml.token_type"); u32(&b, QS_GGUF_ARRAY); u32(&b, QS_GGUF_I32); u64(&b, 3);
    int32_t ty[3] = {1, 3, 1}; put(&b, ty, 12);
    /* tensor infos: name, n_dims, ne..., type, offset (relative, aligned to 32) */
    struct { const char *name; uint64_t ne0, ne1; uint32_t type; uint64_t bytes; } ts[5] = {
        {"t.f32", 4, 1, QS_GGML_F32, 16}, {"t.f16", 8, 1, QS_GGML_F16, 16}, {"t.q8_0", 32, 1, QS_GGML_Q8_0, 34},
        {"t.q4_0", 32, 2, QS_GGML_Q4_0, 36}, {"t.q4_1", 32, 1, QS_GGML_Q4_1, 20}};
    uint64_t off = 0;
    for (int i = 0; i < 5; i++) {
        str(&b, ts[i].name);
        u32(&b, ts[i].ne1 > 1 ? 2 : 1);
        u64(&b, ts[i].ne0);
        if (ts[i].ne1 > 1) u64(&b, ts[i].ne1);
        if (i == 0) off_first_tensor_type = b.n;
        u32(&b, ts[i].type);
        if (i == 0) off_first_tensor_offset = b.n;
        u64(&b, off);
        off += (ts[i].bytes + 31) / 32 * 32;
    }
    while (b.n % 32) put(&b, "\0", 1);
    size_t base = b.n;
    uint8_t *data = calloc(1, off);
    float f[4] = {1.5f, -2.0f, 0.25f, 3.0f};
    memcpy(data, f, 16);
    uint16_t h[8] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000, 0x3555, 0x4248}; /* 1, -2, .5, 2^-24, 65504, -0, ~1/3, 3.14 */
    memcpy(data + 32, h, 16);
    uint8_t *q8 = data + 64; /* d = 0.5 */
    q8[0] = 0x00, q8[1] = 0x38;
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    for (int blk = 0; blk < 2; blk++) { /* d = 0.25 (block 1: 0.5); nibble j % 16 */
        uint8_t *q4 = data + 128 + 18 * blk;
        q4[0] = 0x00, q4[1] = blk ? 0x38 : 0x34;
        for (int j = 0; j < 16; j++) q4[2 + j] = (uint8_t)((j & 15) | ((15 - j) << 4));
    }
    uint8_t *q41 = data + 192; /* d = 0.5, m = -1 */
    q41[0] = 0x00, q41[1] = 0x38, q41[2] = 0x00, q41[3] = 0xbc;
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (j << 4));
    (void)base;
    put(&b, data, off);
    free(data);
    return b;
}

static char *dir;

static void expect_bad(const char *name, const buf *b, const char *want) {
    char *p = qs_path_join(dir, name);
    qs_error err = {0};
    qs_file_write_durable(p, b->p, b->n, &err);
    qs_gguf *g;
    CHECKF(qs_gguf_open(&g, p, &err) != 0, "%s accepted", name);
    CHECKF(strstr(err.msg, name) && strstr(err.msg, want), "%s: '%s' lacks '%s'", name, err.msg, want);
    free(p);
}

static void check_good(const char *name, uint32_t version) {
    buf b = make(version);
    char *p = qs_path_join(dir, name);
    qs_error err = {0};
    qs_file_write_durable(p, b.p, b.n, &err);
    qs_gguf *g;
    CHECKF(qs_gguf_open(&g, p, &err) == 0, "%s", err.msg);
    if (!g) return;
    CHECK(qs_gguf_version(g) == version && qs_gguf_tensor_count(g) == 5);
    const char *s;
    size_t len;
    uint64_t u;
    int64_t i64;
    float f;
    int bo;
    CHECK(qs_gguf_get_str(g, "general.architecture", &s, &len, &err) == 0 && len == 5 && !memcmp(s, "llama", 5));
    CHECK(qs_gguf_get_u64(g, "llama.block_count", &u, &err) == 0 && u == 2);
    CHECK(qs_gguf_get_f32(g, "llama.rope.freq_base", &f, &err) == 0 && f == 100000.0f);
    CHECK(qs_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bo, &err) == 0 && bo == 1);
    CHECK(qs_gguf_get_i64(g, "test.i64", &i64, &err) == 0 && i64 == -5);
    CHECK(qs_gguf_get_u64(g, "test.i64", &u, &err) != 0);
    CHECK(qs_gguf_get_f32(g, "test.f64", &f, &err) == 0 && f == 2.5f);
    CHECK(qs_gguf_get_u64(g, "general.architecture", &u, &err) != 0 && strstr(err.msg, "not an integer"));
    CHECK(qs_gguf_get_u64(g, "no.such.key", &u, &err) != 0 && strstr(err.msg, "missing"));
    qs_gguf_vtype et;
    CHECK(qs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &u, &err) == 0 && et == QS_GGUF_STRING && u == 3);
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 2, &s, &len) == 0 && len == 5 && !memcmp(s, "\xc4\xa0the", 5));
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &len) == 0 && len == 2 && !memcmp(s, "bc", 2));
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 3, &s, &len) != 0);
    CHECK(qs_gguf_arr_i64(g, "tokenizer.ggml.token_type", 1, &i64) == 0 && i64 == 3);
    float out[64];
    const qs_gguf_tensor *t = qs_gguf_tensor_find(g, "t.f32");
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0 && out[0] == 1.5f && out[1] == -2.0f && out[3] == 3.0f);
    t = qs_gguf_tensor_find(g, "t.f16");
    const float f16w[8] = {1, -2, 0.5f, 5.9604644775390625e-08f, 65504, -0.0f, 0.333251953125f, 3.140625f};
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; j < 8; j++) CHECKF(out[j] == f16w[j], "f16[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "t.q8_0");
    CHECK(t && t->nbytes == 34 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; j < 32; j++) CHECKF(out[j] == 0.5f * (j - 16), "q8_0[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "t.q4_0");
    CHECK(t && t->n_dims == 2 && t->ne[1] == 2 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int blk = 0; blk < 2; blk++)
        for (int j = 0; j < 32; j++) {
            int nib = j < 16 ? j : 15 - (j - 16);
            CHECKF(out[blk * 32 + j] == (blk ? 0.5f : 0.25f) * (nib - 8), "q4_0[%d][%d] = %g", blk, j, out[blk * 32 + j]);
        }
    t = qs_gguf_tensor_find(g, "t.q4_1");
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; j < 32; j++) CHECKF(out[j] == 0.5f * (j % 16) - 1.0f, "q4_1[%d] = %g", j, out[j]);
    qs_gguf_free(g);
    /* the same image parsed from memory */
    CHECK(qs_gguf_open_memory(&g, b.p, b.n, "mem.gguf", &err) == 0);
    qs_gguf_free(g);
    free(b.p);
    free(p);
}

int main(void) {
    dir = qs_test_tmpdir("gguf");
    check_good("v3.gguf", 3);
    check_good("v2.gguf", 2);
    buf b = make(3);
    buf x = {0};
    put(&x, b.p, b.n);
    memcpy(x.p, "GGUX", 4);
    expect_bad("magic.gguf", &x, "bad magic");
    memcpy(x.p, "GGUF", 4);
    uint32_t v = 1;
    memcpy(x.p + off_version, &v, 4);
    expect_bad("v1.gguf", &x, "version 1");
    v = 4;
    memcpy(x.p + off_version, &v, 4);
    expect_bad("v4.gguf", &x, "version 4");
    v = 3;
    memcpy(x.p + off_version, &v, 4);
    uint64_t big = 1ull << 40;
    memcpy(x.p + off_ntensors, &big, 8);
    expect_bad("counts.gguf", &x, "cannot fit");
    memcpy(x.p + off_ntensors, b.p + off_ntensors, 8);
    memcpy(x.p + off_first_str_len, &big, 8);
    expect_bad("strlen.gguf", &x, "truncated");
    memcpy(x.p + off_first_str_len, b.p + off_first_str_len, 8);
    v = 77;
    memcpy(x.p + off_first_tensor_type, &v, 4);
    expect_bad("ttype.gguf", &x, "unsupported ggml type 77");
    memcpy(x.p + off_first_tensor_type, b.p + off_first_tensor_type, 4);
    uint64_t o = 3;
    memcpy(x.p + off_first_tensor_offset, &o, 8);
    expect_bad("misaligned.gguf", &x, "not aligned");
    o = 1ull << 30;
    memcpy(x.p + off_first_tensor_offset, &o, 8);
    expect_bad("outside.gguf", &x, "past the end");
    /* every truncation point of the whole file */
    int missed = 0;
    for (size_t cut = 0; cut < b.n - 12; cut += 3) { /* the last 12 bytes are padding after the last tensor */
        buf t = {0};
        put(&t, b.p, cut ? cut : 1);
        t.n = cut;
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.gguf", cut);
        char *p = qs_path_join(dir, name);
        qs_error err = {0};
        qs_file_write_durable(p, t.p, t.n, &err);
        qs_gguf *g;
        if (qs_gguf_open(&g, p, &err) == 0) {
            missed++;
            qs_gguf_free(g);
        } else if (!strstr(err.msg, name)) {
            missed++;
        }
        free(p);
        free(t.p);
    }
    CHECKF(missed == 0, "%d truncations accepted or unnamed", missed);
    free(x.p);
    free(b.p);

    /* the default model's GGUF */
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("QS_SRC"));
    qs_gguf *g;
    qs_error err = {0};
    CHECKF(qs_gguf_open(&g, path, &err) == 0, "%s (run scripts/fetch-default-model.sh)", err.msg);
    if (g) {
        uint64_t u;
        CHECK(qs_gguf_tensor_count(g) == 272 && qs_gguf_version(g) == 3);
        CHECK(qs_gguf_get_u64(g, "llama.embedding_length", &u, &err) == 0 && u == 576);
        CHECK(qs_gguf_get_u64(g, "llama.attention.head_count_kv", &u, &err) == 0 && u == 3);
        const qs_gguf_tensor *t = qs_gguf_tensor_find(g, "blk.0.ffn_down.weight");
        CHECK(t && t->type == QS_GGML_Q4_1 && t->ne[0] == 1536 && t->ne[1] == 576);
        t = qs_gguf_tensor_find(g, "token_embd.weight");
        CHECK(t && t->type == QS_GGML_Q8_0 && t->ne[1] == 49152);
        float *w = malloc(sizeof(float) * t->n_elems);
        CHECK(qs_gguf_read_f32(g, t, w, &err) == 0);
        double ss = 0;
        for (uint64_t i = 0; i < t->n_elems; i++) ss += (double)w[i] * w[i];
        CHECKF(isfinite(ss) && ss > 0, "token_embd sum of squares %g", ss);
        free(w);
        qs_gguf_free(g);
    }
    free(dir);
    return qs_test_result();
}
