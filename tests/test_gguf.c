/* tests/test_gguf.c - the GGUF reader and the ggml dequantizers.
 *  1. fixtures from tests/gguf_writer.h (v2 and v3, every value type, nested arrays, a custom
 *     alignment; F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 tensors whose values are known exactly);
 *  2. K-quant known answers (Q2_K..Q6_K blocks from an LCG, figures from the gguf package);
 *  3. damaged variants and every truncation: refused with a non-zero code and the file name;
 *  4. the default model's GGUF: metadata, tokenizer, 272 tensors, dequantized spot values.
 * With QS_GGUF_SEEDS=DIR it also writes the fuzz seeds (tests/fuzz/corpus/gguf/). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/fileio.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
#include "io/gguf_vocab.h"
#include "tests/gguf_writer.h"
#include "tests/testutil.h"

static char *dir;

/* ---- 1. a fixture with every value type and exactly known tensors ---- */

enum { NT = 8 };
static uint8_t tdata[NT][128];
static gw_tensor ts[NT];

static void fill_tensors(void) {
    memset(tdata, 0, sizeof tdata);
    float f[4] = {1.5f, -2.0f, 0.25f, 3.0f};
    memcpy(tdata[0], f, 16);
    uint16_t h[8] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000, 0x3555, 0x4248}; /* 1 -2 .5 2^-24 65504 -0 ~1/3 ~3.14 */
    memcpy(tdata[1], h, 16);
    uint16_t bf[4] = {0x3f80, 0xc040, 0x4049, 0x0001}; /* 1, -3, 3.140625, smallest subnormal */
    memcpy(tdata[2], bf, 8);
    uint8_t *q8 = tdata[3]; /* d = 0.5; q = j - 16 */
    q8[0] = 0x00, q8[1] = 0x38;
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    for (int blk = 0; blk < 2; blk++) { /* d = 0.25 (block 1: 0.5); low nibbles j, high nibbles 15 - j */
        uint8_t *q4 = tdata[4] + 18 * blk;
        q4[0] = 0x00, q4[1] = blk ? 0x38 : 0x34;
        for (int j = 0; j < 16; j++) q4[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    }
    uint8_t *q41 = tdata[5]; /* d = 0.5, m = -1; nibble j % 16 */
    q41[0] = 0x00, q41[1] = 0x38, q41[2] = 0x00, q41[3] = 0xbc;
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (j << 4));
    uint8_t *q50 = tdata[6]; /* d = 1; low nibble j % 16, fifth bit set on odd j: q = j%16 + 16*(j&1) - 16 */
    q50[0] = 0x00, q50[1] = 0x3c;
    uint32_t qh = 0xAAAAAAAAu;
    memcpy(q50 + 2, &qh, 4);
    for (int j = 0; j < 16; j++) q50[6 + j] = (uint8_t)(j | (j << 4));
    uint8_t *q51 = tdata[7]; /* d = 2, m = 0.5; fifth bit on j >= 16 */
    q51[0] = 0x00, q51[1] = 0x40, q51[2] = 0x00, q51[3] = 0x38;
    qh = 0xFFFF0000u;
    memcpy(q51 + 4, &qh, 4);
    for (int j = 0; j < 16; j++) q51[8 + j] = (uint8_t)(j | ((15 - j) << 4));
    gw_tensor t[NT] = {
        {"t.f32", 1, {4}, QS_GGML_F32, tdata[0], 16},          {"t.f16", 1, {8}, QS_GGML_F16, tdata[1], 16},
        {"t.bf16", 1, {4}, QS_GGML_BF16, tdata[2], 8},         {"t.q8_0", 1, {32}, QS_GGML_Q8_0, tdata[3], 34},
        {"t.q4_0", 2, {32, 2}, QS_GGML_Q4_0, tdata[4], 36},    {"t.q4_1", 3, {32, 1, 1}, QS_GGML_Q4_1, tdata[5], 20},
        {"t.q5_0", 1, {32}, QS_GGML_Q5_0, tdata[6], 22},       {"blk.3.attn_q.weight", 4, {32, 1, 1, 1}, QS_GGML_Q5_1, tdata[7], 24},
    };
    memcpy(ts, t, sizeof t);
}

/* metadata with every value type; extra_alignment: write general.alignment */
static void fill_meta(gw *m, uint32_t alignment) {
    m->n = 0, m->count = 0;
    gw_kv_str(m, "general.architecture", "llama");
    gw_key(m, "test.u8", QS_GGUF_U8); gw_u8(m, 200);
    gw_key(m, "test.i8", QS_GGUF_I8); gw_u8(m, (uint8_t)(int8_t)-100);
    gw_key(m, "test.u16", QS_GGUF_U16); gw_u16(m, 60000);
    gw_key(m, "test.i16", QS_GGUF_I16); gw_u16(m, (uint16_t)(int16_t)-30000);
    gw_kv_u32(m, "llama.block_count", 2);
    gw_key(m, "test.i32", QS_GGUF_I32); gw_u32(m, (uint32_t)(int32_t)-2000000000);
    gw_kv_f32(m, "llama.rope.freq_base", 100000.0f);
    gw_kv_bool(m, "tokenizer.ggml.add_bos_token", 1);
    gw_key(m, "test.u64", QS_GGUF_U64); gw_u64(m, 1ull << 40);
    gw_key(m, "test.u64big", QS_GGUF_U64); gw_u64(m, ~0ull);
    gw_key(m, "test.i64", QS_GGUF_I64); gw_u64(m, (uint64_t)-5);
    gw_key(m, "test.f64", QS_GGUF_F64); gw_f64(m, 2.5);
    gw_kv_str(m, "test.empty", "");
    const char *toks[3] = {"a", "bc", "\xc4\xa0the"};
    gw_kv_strs(m, "tokenizer.ggml.tokens", toks, 3);
    gw_kv_arr_hdr(m, "tokenizer.ggml.token_type", QS_GGUF_I32, 3);
    int32_t ty[3] = {1, 3, 1};
    gw_put(m, ty, 12);
    gw_kv_arr_hdr(m, "tokenizer.ggml.scores", QS_GGUF_F32, 3);
    float sc[3] = {0.0f, -1.5f, -2.0f};
    gw_put(m, sc, 12);
    gw_kv_arr_hdr(m, "test.empty_arr", QS_GGUF_U8, 0);
    /* an array of arrays: [[1, 2], ["x"]] */
    gw_kv_arr_hdr(m, "test.nested", QS_GGUF_ARRAY, 2);
    gw_u32(m, QS_GGUF_U16), gw_u64(m, 2), gw_u16(m, 1), gw_u16(m, 2);
    gw_u32(m, QS_GGUF_STRING), gw_u64(m, 1), gw_str(m, "x");
    if (alignment) gw_kv_u32(m, "general.alignment", alignment);
}

static void make(gw *out, uint32_t version, uint32_t alignment, gw_marks *mk) {
    gw meta = {0};
    fill_meta(&meta, alignment);
    gw_file(out, version, &meta, ts, NT, alignment ? alignment : 32, mk);
    free(meta.p);
}

static void check_values(qs_gguf *g) {
    qs_error err = {0};
    float out[64];
    const qs_gguf_tensor *t = qs_gguf_tensor_find(g, "t.f32");
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0 && out[0] == 1.5f && out[1] == -2.0f && out[2] == 0.25f && out[3] == 3.0f);
    t = qs_gguf_tensor_find(g, "t.f16");
    const float f16w[8] = {1, -2, 0.5f, 5.9604644775390625e-08f, 65504, -0.0f, 0.333251953125f, 3.140625f};
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; t && j < 8; j++) CHECKF(out[j] == f16w[j] && signbit(out[j]) == signbit(f16w[j]), "f16[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "t.bf16");
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0 && out[0] == 1.0f && out[1] == -3.0f && out[2] == 3.140625f &&
          out[3] == ldexpf(1.0f, -133));
    t = qs_gguf_tensor_find(g, "t.q8_0");
    CHECK(t && t->nbytes == 34 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; t && j < 32; j++) CHECKF(out[j] == 0.5f * (float)(j - 16), "q8_0[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "t.q4_0");
    CHECK(t && t->n_dims == 2 && t->ne[1] == 2 && t->n_elems == 64 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int blk = 0; t && blk < 2; blk++)
        for (int j = 0; j < 32; j++) {
            int q = j < 16 ? j : 15 - (j - 16);
            CHECKF(out[blk * 32 + j] == (blk ? 0.5f : 0.25f) * (float)(q - 8), "q4_0[%d][%d] = %g", blk, j, out[blk * 32 + j]);
        }
    t = qs_gguf_tensor_find(g, "t.q4_1");
    CHECK(t && t->n_dims == 3 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; t && j < 32; j++) CHECKF(out[j] == 0.5f * (float)(j % 16) - 1.0f, "q4_1[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "t.q5_0");
    CHECK(t && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; t && j < 32; j++) CHECKF(out[j] == (float)(j % 16 + 16 * (j & 1) - 16), "q5_0[%d] = %g", j, out[j]);
    t = qs_gguf_tensor_find(g, "blk.3.attn_q.weight");
    CHECK(t && t->n_dims == 4 && t->type == QS_GGML_Q5_1 && qs_gguf_read_f32(g, t, out, &err) == 0);
    for (int j = 0; t && j < 32; j++) {
        int q = j < 16 ? j : (15 - (j - 16)) + 16;
        CHECKF(out[j] == 2.0f * (float)q + 0.5f, "q5_1[%d] = %g", j, out[j]);
    }
}

static void check_meta(qs_gguf *g) {
    qs_error err = {0};
    const char *s;
    size_t len;
    uint64_t u;
    int64_t i64;
    float f;
    int bo;
    CHECK(qs_gguf_get_str(g, "general.architecture", &s, &len, &err) == 0 && len == 5 && !memcmp(s, "llama", 5));
    CHECK(qs_gguf_get_i64(g, "test.u8", &i64, &err) == 0 && i64 == 200);
    CHECK(qs_gguf_get_i64(g, "test.i8", &i64, &err) == 0 && i64 == -100);
    CHECK(qs_gguf_get_i64(g, "test.u16", &i64, &err) == 0 && i64 == 60000);
    CHECK(qs_gguf_get_i64(g, "test.i16", &i64, &err) == 0 && i64 == -30000);
    CHECK(qs_gguf_get_u64(g, "llama.block_count", &u, &err) == 0 && u == 2);
    CHECK(qs_gguf_get_i64(g, "test.i32", &i64, &err) == 0 && i64 == -2000000000);
    CHECK(qs_gguf_get_f32(g, "llama.rope.freq_base", &f, &err) == 0 && f == 100000.0f);
    CHECK(qs_gguf_get_f32(g, "test.i16", &f, &err) == 0 && f == -30000.0f);
    CHECK(qs_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bo, &err) == 0 && bo == 1);
    CHECK(qs_gguf_get_u64(g, "test.u64", &u, &err) == 0 && u == 1ull << 40);
    CHECK(qs_gguf_get_i64(g, "test.u64big", &i64, &err) != 0 && strstr(err.msg, "test.u64big"));
    CHECK(qs_gguf_get_i64(g, "test.i64", &i64, &err) == 0 && i64 == -5);
    CHECK(qs_gguf_get_u64(g, "test.i64", &u, &err) != 0 && strstr(err.msg, "negative"));
    CHECK(qs_gguf_get_f32(g, "test.f64", &f, &err) == 0 && f == 2.5f);
    CHECK(qs_gguf_get_i64(g, "test.f64", &i64, &err) != 0);
    CHECK(qs_gguf_get_str(g, "test.empty", &s, &len, &err) == 0 && len == 0);
    CHECK(qs_gguf_get_u64(g, "general.architecture", &u, &err) != 0 && strstr(err.msg, "not an integer"));
    CHECK(qs_gguf_get_str(g, "test.u8", &s, &len, &err) != 0 && strstr(err.msg, "not a string"));
    CHECK(qs_gguf_get_u64(g, "no.such.key", &u, &err) != 0 && strstr(err.msg, "missing") && strstr(err.msg, "no.such.key"));
    qs_gguf_vtype et;
    CHECK(qs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &u, &err) == 0 && et == QS_GGUF_STRING && u == 3);
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 2, &s, &len) == 0 && len == 5 && !memcmp(s, "\xc4\xa0the", 5));
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &len) == 0 && len == 2 && !memcmp(s, "bc", 2));
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 0, &s, &len) == 0 && len == 1 && s[0] == 'a');
    CHECK(qs_gguf_arr_str(g, "tokenizer.ggml.tokens", 3, &s, &len) != 0);
    CHECK(qs_gguf_arr_i64(g, "tokenizer.ggml.token_type", 1, &i64) == 0 && i64 == 3);
    CHECK(qs_gguf_arr_f32(g, "tokenizer.ggml.scores", 1, &f) == 0 && f == -1.5f);
    CHECK(qs_gguf_arr_f32(g, "tokenizer.ggml.token_type", 1, &f) == 0 && f == 3.0f);
    CHECK(qs_gguf_arr_i64(g, "tokenizer.ggml.tokens", 0, &i64) != 0);
    CHECK(qs_gguf_get_arr(g, "test.empty_arr", &et, &u, &err) == 0 && et == QS_GGUF_U8 && u == 0);
    CHECK(qs_gguf_get_arr(g, "test.nested", &et, &u, &err) == 0 && et == QS_GGUF_ARRAY && u == 2);
    CHECK(qs_gguf_arr_i64(g, "test.nested", 0, &i64) != 0);
    CHECK(qs_gguf_get_arr(g, "test.u8", &et, &u, &err) != 0 && strstr(err.msg, "not an array"));
    /* walking every key */
    size_t nk = qs_gguf_key_count(g), found = 0;
    for (size_t k = 0; k < nk; k++) {
        const char *name = qs_gguf_key_name(g, k, &len);
        found += name && len == 11 && !memcmp(name, "test.nested", 11) && qs_gguf_key_type(g, (int)k) == QS_GGUF_ARRAY;
    }
    CHECK(nk >= 19 && found == 1 && qs_gguf_key_name(g, nk, &len) == NULL && (int)qs_gguf_key_type(g, -1) == -1);
    int k = qs_gguf_find_key(g, "test.f64");
    CHECK(k >= 0 && qs_gguf_key_type(g, k) == QS_GGUF_F64 && qs_gguf_find_key(g, "test.f6") < 0);
    /* the tokenizer loader on this metadata: "gpt2" is absent, so it refuses clearly */
    qs_tok_spec spec;
    CHECK(qs_gguf_tok_spec_load(g, NULL, &spec, &err) != 0 && strstr(err.msg, "tokenizer.ggml.model") &&
          strstr(err.msg, qs_gguf_name(g)));
}

static void check_good(const char *name, uint32_t version, uint32_t alignment) {
    gw b = {0};
    make(&b, version, alignment, NULL);
    char *p = qs_path_join(dir, name);
    CHECK(gw_save(&b, p) == 0);
    qs_gguf *g;
    qs_error err = {0};
    CHECKF(qs_gguf_open(&g, p, &err) == 0, "%s", err.msg);
    if (g) {
        CHECK(qs_gguf_version(g) == version && qs_gguf_tensor_count(g) == NT && !strcmp(qs_gguf_name(g), p));
        CHECK(qs_gguf_alignment(g) == (alignment ? alignment : 32));
        for (size_t i = 0; i < NT; i++) {
            const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
            CHECKF(t && t->offset % (alignment ? alignment : 32) == 0 && !strcmp(t->name, ts[i].name) && t->nbytes == ts[i].nbytes,
                   "%s: tensor %zu", name, i);
        }
        CHECK(qs_gguf_tensor_at(g, NT) == NULL && qs_gguf_tensor_find(g, "nope") == NULL);
        check_meta(g);
        check_values(g);
        qs_gguf_free(g);
    }
    /* the same image parsed from memory */
    CHECK(qs_gguf_open_memory(&g, b.p, b.n, "mem.gguf", &err) == 0);
    if (g) check_values(g);
    qs_gguf_free(g);
    qs_gguf_free(NULL);
    free(b.p);
    free(p);
}

/* ---- 2. K-quants: known answers ---- */

static uint8_t lcg_byte(uint64_t *x) {
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (uint8_t)(*x >> 56);
}

static void check_kquants(void) {
    /* Produced once by `python3 scripts/check_gguf_dequant.py --constants` (gguf 0.19.0,
     * gguf.quants.dequantize on the same LCG bytes): sum, sum of v[i] * (i % 7 + 1), v[1], v[300]. */
    static const struct { uint32_t type; double sum, wsum; float v1, v300; } want[] = {
        {QS_GGML_Q2_K, 238.0479736328125, 961.46759033203125, 0.6875f, 0.124267578f},
        {QS_GGML_Q3_K, 15.42327880859375, 80.34039306640625, -7.0f, 0.625610352f},
        {QS_GGML_Q4_K, 6247.8716430664062, 24693.130187988281, 1.96875f, -0.971954346f},
        {QS_GGML_Q5_K, 15955.212036132812, 61155.071899414062, 34.9375f, 30.6218567f},
        {QS_GGML_Q6_K, 807.115966796875, 1324.9944458007812, 14.0625f, -51.0498047f},
    };
    static const int f16_offsets[][2] = {{80, 82}, {108, -1}, {0, 2}, {0, 2}, {208, -1}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        uint32_t t = want[k].type;
        size_t bs = qs_ggml_block_size(t), bb = qs_ggml_block_bytes(t);
        CHECK(bs == 256 && bb > 0 && bb <= 210);
        uint8_t raw[2 * 210];
        uint64_t x = 12345 + t;
        for (size_t i = 0; i < 2 * bb; i++) raw[i] = lcg_byte(&x);
        for (int blk = 0; blk < 2; blk++)
            for (int j = 0; j < 2; j++) {
                if (f16_offsets[k][j] < 0) continue;
                uint16_t h = (uint16_t)(j == 0 ? 0x2C00 + blk : 0x2800 + 3 * blk);
                memcpy(raw + blk * bb + f16_offsets[k][j], &h, 2);
            }
        float y[512];
        CHECK(qs_ggml_dequantize(t, raw, y, 512) == 0);
        double s = 0, ws = 0;
        for (int i = 0; i < 512; i++) s += y[i], ws += (double)y[i] * (i % 7 + 1);
        CHECKF(fabs(s - want[k].sum) < 1e-9 * (1 + fabs(want[k].sum)) && fabs(ws - want[k].wsum) < 1e-9 * (1 + fabs(want[k].wsum)) &&
                   y[1] == want[k].v1 && y[300] == want[k].v300,
               "ggml type %u: sum %.17g wsum %.17g v1 %.9g v300 %.9g", t, s, ws, y[1], y[300]);
    }
    CHECK(qs_ggml_block_size(QS_GGML_Q8_K) == 0 && qs_ggml_dequantize(99, NULL, NULL, 0) != 0);
}

/* ---- 3. damage ---- */

static int n_bad;

/* the image must be refused from a file (message names the file and contains want) and from memory */
static void expect_bad(const char *name, const uint8_t *img, size_t n, const char *want) {
    char *p = qs_path_join(dir, name);
    gw b = {(uint8_t *)img, n, n, 0};
    CHECK(gw_save(&b, p) == 0);
    qs_gguf *g = NULL;
    qs_error err = {0};
    int rc = qs_gguf_open(&g, p, &err);
    CHECKF(rc < 0 && g == NULL, "%s accepted", name);
    CHECKF(strstr(err.msg, name) && (!want || strstr(err.msg, want)), "%s: '%s' lacks '%s'", name, err.msg, want ? want : "");
    qs_gguf_free(g);
    rc = qs_gguf_open_memory(&g, img, n, name, &err);
    CHECKF(rc < 0 && g == NULL, "%s accepted from memory", name);
    remove(p);
    free(p);
    n_bad++;
}

/* a copy of base with bytes [at, at + len) replaced */
static void patched(const char *name, const gw *base, size_t at, const void *bytes, size_t len, const char *want) {
    uint8_t *c = malloc(base->n);
    memcpy(c, base->p, base->n);
    memcpy(c + at, bytes, len);
    expect_bad(name, c, base->n, want);
    free(c);
}

static void check_damage(void) {
    gw b = {0};
    gw_marks mk;
    make(&b, 3, 0, &mk);
    uint32_t v32;
    uint64_t v64;
    patched("magic.gguf", &b, 0, "GGUX", 4, "bad magic");
    v32 = 1, patched("v1.gguf", &b, mk.version, &v32, 4, "version 1");
    v32 = 4, patched("v4.gguf", &b, mk.version, &v32, 4, "version 4");
    v32 = 0x03000000u, patched("bigendian.gguf", &b, mk.version, &v32, 4, "big-endian");
    v64 = 1ull << 40, patched("ntensors.gguf", &b, mk.n_tensors, &v64, 8, "cannot fit");
    v64 = 1ull << 40, patched("nkv.gguf", &b, mk.n_kv, &v64, 8, "cannot fit");
    v64 = 1000, patched("nkv-past.gguf", &b, mk.n_kv, &v64, 8, NULL);   /* fits the bound, runs off the end */
    v64 = 30, patched("nt-past.gguf", &b, mk.n_tensors, &v64, 8, NULL); /* tensor infos read from tensor data */
    v64 = 1ull << 40, patched("strlen.gguf", &b, mk.kvs, &v64, 8, "truncated");
    v64 = ~0ull, patched("strlen-max.gguf", &b, mk.kvs, &v64, 8, "truncated");
    size_t first_type = mk.kvs + 8 + strlen("general.architecture");
    v32 = 13, patched("vtype.gguf", &b, first_type, &v32, 4, "unknown value type 13");
    v32 = QS_GGUF_ARRAY, patched("vtype-arr.gguf", &b, first_type, &v32, 4, NULL); /* a string read as an array */
    v64 = 1ull << 40, patched("str-past.gguf", &b, first_type + 4, &v64, 8, "general.architecture");
    v32 = 77, patched("ttype.gguf", &b, mk.t0_type, &v32, 4, "unsupported ggml type 77");
    v32 = QS_GGML_Q8_K, patched("ttype-q8k.gguf", &b, mk.t0_type, &v32, 4, "t.f32");
    v32 = QS_GGML_Q4_0, patched("ttype-row.gguf", &b, mk.t0_type, &v32, 4, "block size");
    v64 = 3, patched("misaligned.gguf", &b, mk.t0_offset, &v64, 8, "not aligned");
    v64 = 1ull << 30, patched("outside.gguf", &b, mk.t0_offset, &v64, 8, "'t.f32': data extends past the end of the file");
    v64 = ~0ull << 5, patched("outside-wrap.gguf", &b, mk.t0_offset, &v64, 8, "past the end");
    v32 = 5, patched("ndims5.gguf", &b, mk.t0_ndims, &v32, 4, "5 dimensions");
    v32 = 0, patched("ndims0.gguf", &b, mk.t0_ndims, &v32, 4, "0 dimensions");
    v64 = 0, patched("ne0.gguf", &b, mk.t0_ne0, &v64, 8, "dimension");
    v64 = 1ull << 62, patched("ne-huge.gguf", &b, mk.t0_ne0, &v64, 8, "too large");
    v64 = 4096, patched("tensor-data-past.gguf", &b, mk.t0_ne0, &v64, 8, "'t.f32': data extends past the end of the file");
    {
        qs_gguf *g; /* the base image itself is fine */
        CHECK(qs_gguf_open_memory(&g, b.p, b.n, "ok.gguf", NULL) == 0);
        qs_gguf_free(g);
    }
    /* variants needing a rebuilt image */
    gw meta = {0}, img = {0};
    fill_meta(&meta, 0);
    gw_kv_u32(&meta, "llama.block_count", 3);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("dupkey.gguf", img.p, img.n, "appears twice");
    fill_meta(&meta, 0);
    gw_tensor dup[2] = {ts[0], ts[0]};
    gw_file(&img, 3, &meta, dup, 2, 32, NULL);
    expect_bad("duptensor.gguf", img.p, img.n, "appears twice");
    fill_meta(&meta, 0);
    gw_key(&meta, "general.alignment", QS_GGUF_U32), gw_u32(&meta, 24);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("align24.gguf", img.p, img.n, "power of two");
    fill_meta(&meta, 0);
    gw_key(&meta, "general.alignment", QS_GGUF_U64), gw_u64(&meta, 32);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("align-u64.gguf", img.p, img.n, "general.alignment");
    fill_meta(&meta, 0);
    gw_kv_arr_hdr(&meta, "test.deep", QS_GGUF_ARRAY, 1); /* [[[[1]]]]: 4 levels, 3 allowed */
    gw_u32(&meta, QS_GGUF_ARRAY), gw_u64(&meta, 1), gw_u32(&meta, QS_GGUF_ARRAY), gw_u64(&meta, 1);
    gw_u32(&meta, QS_GGUF_ARRAY), gw_u64(&meta, 1);
    gw_u32(&meta, QS_GGUF_U8), gw_u64(&meta, 1), gw_u8(&meta, 1);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("deep.gguf", img.p, img.n, "test.deep");
    fill_meta(&meta, 0);
    gw_kv_arr_hdr(&meta, "test.badelem", 42, 1);
    gw_u32(&meta, 0);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("arrtype.gguf", img.p, img.n, "unknown array element type 42");
    fill_meta(&meta, 0);
    gw_kv_arr_hdr(&meta, "test.longarr", QS_GGUF_U32, 1ull << 61);
    gw_file(&img, 3, &meta, ts, NT, 32, NULL);
    expect_bad("arrlen.gguf", img.p, img.n, "test.longarr");
    fill_meta(&meta, 0);
    gw_tensor big = {"t.big", 2, {1ull << 20, 1ull << 20}, QS_GGML_F32, tdata[0], 16};
    gw_file(&img, 3, &meta, &big, 1, 32, NULL);
    expect_bad("bigtensor.gguf", img.p, img.n, "past the end");
    free(meta.p);
    free(img.p);

    /* every truncation before the end of the last tensor's data: from memory at every byte
     * (the name must be in the message), from a file at every 13th */
    const gw_tensor *last = &ts[NT - 1];
    size_t end = b.n - ((last->nbytes + 31) / 32 * 32 - last->nbytes);
    int missed = 0;
    for (size_t cut = 0; cut < end; cut++) {
        char name[64];
        snprintf(name, sizeof name, "cut-%zu.gguf", cut);
        qs_gguf *g = NULL;
        qs_error err = {0};
        uint8_t *copy = malloc(cut ? cut : 1); /* exact-size heap copy: ASan sees any overread */
        memcpy(copy, b.p, cut);
        int rc = qs_gguf_open_memory(&g, copy, cut, name, &err);
        if (rc == 0 || g || !strstr(err.msg, name)) {
            missed++;
            fprintf(stderr, "truncation at %zu: rc %d '%s'\n", cut, rc, err.msg);
        }
        qs_gguf_free(g);
        free(copy);
        if (cut % 13 == 0) expect_bad(name, b.p, cut, NULL);
    }
    CHECKF(missed == 0, "%d truncations accepted or unnamed", missed);
    char *nofile = qs_path_join(dir, "absent.gguf");
    qs_gguf *g = NULL;
    qs_error err = {0};
    CHECK(qs_gguf_open(&g, nofile, &err) < 0 && g == NULL && strstr(err.msg, "absent.gguf"));
    CHECK(qs_gguf_open(&g, dir, &err) < 0 && g == NULL && strstr(err.msg, dir)); /* a directory */
    free(nofile);
    free(b.p);
    printf("damage: %d damaged images refused\n", n_bad);
}

/* ---- 4. the default model ---- */

static void check_default_model(void) {
    const char *src = getenv("QS_SRC");
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache/SmolLM2-135M-Instruct.Q4_1.gguf", src ? src : ".");
    qs_gguf *g;
    qs_error err = {0};
    CHECKF(qs_gguf_open(&g, path, &err) == 0, "%s (run scripts/fetch-default-model.sh)", err.msg);
    if (!g) return;
    uint64_t u;
    float f;
    const char *s;
    size_t len;
    CHECK(qs_gguf_tensor_count(g) == 272 && qs_gguf_version(g) == 3);
    CHECK(qs_gguf_get_str(g, "general.architecture", &s, &len, &err) == 0 && len == 5 && !memcmp(s, "llama", 5));
    CHECK(qs_gguf_get_u64(g, "llama.embedding_length", &u, &err) == 0 && u == 576);
    CHECK(qs_gguf_get_u64(g, "llama.feed_forward_length", &u, &err) == 0 && u == 1536);
    CHECK(qs_gguf_get_u64(g, "llama.block_count", &u, &err) == 0 && u == 30);
    CHECK(qs_gguf_get_u64(g, "llama.attention.head_count", &u, &err) == 0 && u == 9);
    CHECK(qs_gguf_get_u64(g, "llama.attention.head_count_kv", &u, &err) == 0 && u == 3);
    CHECK(qs_gguf_get_f32(g, "llama.rope.freq_base", &f, &err) == 0 && f == 100000.0f);
    CHECK(qs_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err) == 0 && f == 1e-5f);
    CHECK(qs_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, &err) == 0 && len == 4 && !memcmp(s, "gpt2", 4));
    CHECK(qs_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len, &err) == 0 && len == 6 && !memcmp(s, "smollm", 6));
    qs_gguf_vtype et;
    CHECK(qs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &u, &err) == 0 && et == QS_GGUF_STRING && u == 49152);
    qs_tok_spec spec;
    CHECKF(qs_gguf_tok_spec_load(g, NULL, &spec, &err) == 0, "%s", err.msg);
    CHECK(spec.kind == QS_TOK_BPE_BYTELEVEL && spec.pre == QS_TOK_PRE_SMOLLM && spec.n_tokens == 49152 && spec.n_merges > 40000);
    CHECK(spec.bos_id == 1 && spec.eos_id == 2 && spec.add_bos == 0 && spec.add_space_prefix == 0);
    CHECK(spec.tokens && !strcmp(spec.tokens[0], "<|endoftext|>") && !strcmp(spec.tokens[1], "<|im_start|>") && spec.types &&
          spec.types[0] == 3);
    qs_gguf_tok_spec_free(&spec);
    qs_gguf_tok_spec_free(&spec); /* a freed (zeroed) spec is fine */
    size_t n_q41 = 0;
    for (size_t i = 0; i < qs_gguf_tensor_count(g); i++) n_q41 += qs_gguf_tensor_at(g, i)->type == QS_GGML_Q4_1;
    CHECK(n_q41 == 30 * 7);
    const qs_gguf_tensor *t = qs_gguf_tensor_find(g, "blk.0.ffn_down.weight");
    CHECK(t && t->type == QS_GGML_Q4_1 && t->ne[0] == 1536 && t->ne[1] == 576);
    CHECK(qs_gguf_tensor_find(g, "output.weight") == NULL);
    /* Spot values, produced once by `python3 scripts/check_gguf_dequant.py --constants`
     * (gguf.quants.dequantize of gguf 0.19.0), GGUF order (ne[0] fastest). */
    static const struct { const char *name; uint32_t type; uint64_t start; float v[8]; } spots[] = {
        {"token_embd.weight", QS_GGML_Q8_0, 1000 * 576,
         {-0.111938477f, -0.0739593506f, 0.037979126f, -0.0179901123f, -0.161911011f, -0.00999450684f, 0.0299835205f, 0.239868164f}},
        {"blk.0.attn_q.weight", QS_GGML_Q4_1, 12,
         {-0.476806641f, 0.157348633f, -0.0963134766f, 0.537841797f, -0.223144531f, 0.284179688f, 0.0305175781f, -0.223144531f}},
        {"blk.7.ffn_down.weight", QS_GGML_Q4_1, 1536 * 100 + 64 + 12,
         {0.0135498047f, -0.0252227783f, 0.0393981934f, -0.0639953613f, -0.051071167f, -0.08984375f, 0.0135498047f, 0.0135498047f}},
        {"output_norm.weight", QS_GGML_F32, 0, {1.7578125f, 1.8203125f, 1.78125f, 1.6015625f, 1.7421875f, 1.71875f, 1.828125f, 1.75f}},
    };
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        t = qs_gguf_tensor_find(g, spots[k].name);
        CHECKF(t && t->type == spots[k].type, "%s", spots[k].name);
        if (!t) continue;
        float *w = malloc(sizeof(float) * t->n_elems);
        CHECK(w && qs_gguf_read_f32(g, t, w, &err) == 0);
        for (int j = 0; w && j < 8; j++)
            CHECKF(w[spots[k].start + j] == spots[k].v[j], "%s[%llu] = %.9g, want %.9g", spots[k].name,
                   (unsigned long long)(spots[k].start + j), w[spots[k].start + j], spots[k].v[j]);
        free(w);
    }
    qs_gguf_free(g);
}

/* QS_GGUF_SEEDS=DIR: small valid images for the fuzzer's corpus */
static void write_seeds(const char *out) {
    gw b = {0}, meta = {0};
    make(&b, 3, 0, NULL);
    char *p = qs_path_join(out, "v3-all-types.seed");
    gw_save(&b, p), free(p);
    make(&b, 2, 64, NULL);
    p = qs_path_join(out, "v2-align64.seed");
    gw_save(&b, p), free(p);
    /* a tiny llama-like image with a tokenizer */
    const char *toks[4] = {"<unk>", "<s>", "</s>", ("\xe2\x96\x81" "a")};
    gw_kv_str(&meta, "general.architecture", "llama");
    gw_kv_str(&meta, "tokenizer.ggml.model", "llama");
    gw_kv_strs(&meta, "tokenizer.ggml.tokens", toks, 4);
    gw_kv_arr_hdr(&meta, "tokenizer.ggml.scores", QS_GGUF_F32, 4);
    float sc[4] = {0, 0, 0, -1};
    gw_put(&meta, sc, 16);
    gw_kv_u32(&meta, "tokenizer.ggml.bos_token_id", 1);
    gw_file(&b, 3, &meta, ts + 3, 2, 32, NULL);
    p = qs_path_join(out, "v3-spm-vocab.seed");
    gw_save(&b, p), free(p);
    free(meta.p);
    free(b.p);
}

int main(void) {
    dir = qs_test_tmpdir("gguf");
    fill_tensors();
    check_good("v3.gguf", 3, 0);
    check_good("v2.gguf", 2, 0);
    check_good("v3-align64.gguf", 3, 64);
    check_good("v2-align1.gguf", 2, 1);
    check_kquants();
    check_damage();
    check_default_model();
    const char *seeds = getenv("QS_GGUF_SEEDS");
    if (seeds) write_seeds(seeds);
    free(dir);
    return qs_test_result();
}
