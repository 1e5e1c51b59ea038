/* tests/test_gguf_write.c - io/gguf_write.c and io/gguf_pack.c:
 *  1. every 32-element block type packed from random codes and half floats, then read by
 *     io/gguf_dequant.c (checked against the gguf package's dequantizer, scripts/
 *     check_gguf_dequant.py): the format's value for every element, bit for bit; codes out of
 *     a type's range and other types refused;
 *  1b. floats rounded to Q8_0 (the embedding and LM head): per block the largest code is +-127
 *     and every value within d / 2 of the float (d = max |x| / 127) plus |q| times d's
 *     half-float rounding; an all-zero block is d = 0; a value that is not finite is refused;
 *  2. a file with every kind of key/value and tensors of three types (one written in pieces,
 *     sizes that need padding) read back by io/gguf.c: values, shapes, aligned offsets, bytes;
 *  3. misuse (a declaration after the data, too many bytes, a tensor left out, a shape that is
 *     not whole blocks) is an error, and nothing is left at the path, nor a .tmp. */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/gguf.h"
#include "io/gguf_dequant.h"
#include "io/gguf_pack.h"
#include "io/gguf_write.h"
#include "tests/testutil.h"

static int urand(int n) { return (int)((qs_test_rnd() + 1.0f) * 0.5f * (float)n) % n; }

static void pack_types(void) {
    const uint32_t types[5] = {QS_GGML_Q4_0, QS_GGML_Q4_1, QS_GGML_Q5_0, QS_GGML_Q5_1, QS_GGML_Q8_0};
    const int lo[5] = {0, 0, 0, 0, -128}, n[5] = {16, 16, 32, 32, 256}, off[5] = {8, 0, 16, 0, 0}, has_m[5] = {0, 1, 0, 1, 0};
    qs_test_seed = 11;
    for (int t = 0; t < 5; t++)
        for (int rep = 0; rep < 200; rep++) {
            int q[32];
            for (int j = 0; j < 32; j++) q[j] = lo[t] + urand(n[t]);
            if (rep == 0) q[0] = lo[t], q[31] = lo[t] + n[t] - 1; /* both ends of the range */
            const uint16_t d = qs_f32_to_f16(qs_test_rnd() * 0.1f), m = qs_f32_to_f16(qs_test_rnd());
            uint8_t blk[64];
            float y[32];
            CHECK(qs_ggml_pack_block(types[t], q, d, m, blk) == 0);
            CHECK(qs_ggml_dequantize(types[t], blk, y, 32) == 0);
            const float df = qs_f16_to_f32(d), mf = has_m[t] ? qs_f16_to_f32(m) : 0.0f;
            for (int j = 0; j < 32; j++) {
                const float want = has_m[t] ? (float)q[j] * df + mf : (float)(q[j] - off[t]) * df;
                CHECKF(memcmp(&y[j], &want, 4) == 0, "type %u rep %d element %d: %g, want %g", types[t], rep, j,
                       (double)y[j], (double)want);
            }
            q[urand(32)] = rep % 2 ? lo[t] - 1 : lo[t] + n[t];
            CHECKF(qs_ggml_pack_block(types[t], q, d, m, blk) == -1, "type %u took a code out of range", types[t]);
        }
    int q[32] = {0};
    uint8_t blk[256];
    CHECK(qs_ggml_pack_block(QS_GGML_Q4_K, q, 0, 0, blk) == -1);
    CHECK(qs_ggml_pack_block(QS_GGML_F16, q, 0, 0, blk) == -1);
}

static void q8_0_floats(void) {
    enum { NB = 300 };
    static float x[NB * 32], y[NB * 32];
    static uint8_t out[NB * 34];
    for (int i = 0; i < NB * 32; i++) x[i] = qs_test_rnd() * (i / 32 % 7 == 3 ? 1e-3f : 1.5f);
    for (int j = 0; j < 32; j++) x[5 * 32 + j] = 0.0f; /* an all-zero block */
    CHECK(qs_ggml_quantize_q8_0(x, NB * 32, out) == 0);
    CHECK(qs_ggml_dequantize(QS_GGML_Q8_0, out, y, NB * 32) == 0);
    int bad = 0;
    for (int b = 0; b < NB; b++) {
        float amax = 0.0f;
        int qmax = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            const int q = (int8_t)out[b * 34 + 2 + j];
            qmax = abs(q) > qmax ? abs(q) : qmax;
        }
        uint16_t h;
        memcpy(&h, out + b * 34, 2);
        const float d = amax / 127.0f, dh = qs_f16_to_f32(h);
        bad += qmax != (amax > 0.0f ? 127 : 0) || (amax == 0.0f && h != 0);
        for (int j = 0; j < 32; j++) {
            const float q = (float)(int8_t)out[b * 34 + 2 + j];
            const float tol = 0.5f * d * (1.0f + 1e-6f) + fabsf(q) * fabsf(dh - d) + 1e-30f;
            bad += !(fabsf(y[b * 32 + j] - x[b * 32 + j]) <= tol);
        }
    }
    CHECKF(bad == 0, "%d Q8_0 values or blocks off", bad);
    x[77] = NAN;
    CHECK(qs_ggml_quantize_q8_0(x, NB * 32, out) == -1);
    x[77] = INFINITY;
    CHECK(qs_ggml_quantize_q8_0(x, NB * 32, out) == -1);
}

static int tmp_left(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp$'", dir);
    return system(cmd) == 0;
}

static void round_trip(const char *dir) {
    char *path = qs_path_join(dir, "t.gguf");
    qs_error err = {0};
    qs_gguf_writer *w;
    CHECK(qs_gguf_writer_open(&w, path, &err) == 0);
    const char *strs[3] = {"a", "", "\xe2\x96\x81hello"};
    const float fs[4] = {1.5f, -2.0f, 0.0f, 1e-3f};
    const int32_t is[2] = {-7, 123456};
    qs_gguf_kv_u32(w, "k.u32", 4000000000u);
    qs_gguf_kv_f32(w, "k.f32", 0.25f);
    qs_gguf_kv_bool(w, "k.bool", 1);
    qs_gguf_kv_str(w, "k.str", "llama");
    qs_gguf_kv_strs(w, "k.strs", strs, 3);
    qs_gguf_kv_f32s(w, "k.f32s", fs, 4);
    qs_gguf_kv_i32s(w, "k.i32s", is, 2);
    const uint64_t ne_a[2] = {5, 3}, ne_b[2] = {64, 2}, ne_c[1] = {7};
    CHECK(qs_gguf_writer_declare(w, "a", QS_GGML_F32, 2, ne_a, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "b", QS_GGML_Q4_1, 2, ne_b, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "c", QS_GGML_F16, 1, ne_c, &err) == 0);
    CHECK(qs_gguf_tensor_nbytes(QS_GGML_Q4_1, 2, ne_b) == 4 * 20);
    float a[15];
    for (int i = 0; i < 15; i++) a[i] = qs_test_rnd();
    uint8_t b[80];
    for (int i = 0; i < 80; i++) b[i] = (uint8_t)(i * 37 + 5);
    for (int i = 0; i < 4; i++) memcpy(b + 20 * i, &(uint16_t){qs_f32_to_f16(0.5f + (float)i)}, 2); /* finite d */
    for (int i = 0; i < 4; i++) memcpy(b + 20 * i + 2, &(uint16_t){qs_f32_to_f16(-1.0f)}, 2);
    uint16_t c[7];
    for (int i = 0; i < 7; i++) c[i] = qs_f32_to_f16((float)i - 3.0f);
    CHECK(qs_gguf_writer_write(w, a, 24, &err) == 0); /* "a" in two pieces, the second runs into "b" */
    uint8_t ab[36 + 80];
    memcpy(ab, (uint8_t *)a + 24, 36), memcpy(ab + 36, b, 80);
    CHECK(qs_gguf_writer_write(w, ab, sizeof ab, &err) == 0);
    CHECK(qs_gguf_writer_write(w, c, sizeof c, &err) == 0);
    CHECKF(qs_gguf_writer_close(w, &err) == 0, "%s", err.msg);
    CHECK(!tmp_left(dir));

    qs_gguf *g;
    CHECKF(qs_gguf_open(&g, path, &err) == 0, "%s", err.msg);
    if (!g) return;
    uint64_t u;
    float f;
    int bo;
    const char *s;
    size_t len;
    CHECK(qs_gguf_version(g) == 3 && qs_gguf_key_count(g) == 7 && qs_gguf_tensor_count(g) == 3);
    CHECK(qs_gguf_get_u64(g, "k.u32", &u, &err) == 0 && u == 4000000000u);
    CHECK(qs_gguf_get_f32(g, "k.f32", &f, &err) == 0 && f == 0.25f);
    CHECK(qs_gguf_get_bool(g, "k.bool", &bo, &err) == 0 && bo == 1);
    CHECK(qs_gguf_get_str(g, "k.str", &s, &len, &err) == 0 && len == 5 && !memcmp(s, "llama", 5));
    qs_gguf_vtype et;
    uint64_t n;
    CHECK(qs_gguf_get_arr(g, "k.strs", &et, &n, &err) == 0 && et == QS_GGUF_STRING && n == 3);
    for (int i = 0; i < 3; i++)
        CHECK(qs_gguf_arr_str(g, "k.strs", (uint64_t)i, &s, &len) == 0 && len == strlen(strs[i]) && !memcmp(s, strs[i], len));
    for (int i = 0; i < 4; i++) CHECK(qs_gguf_arr_f32(g, "k.f32s", (uint64_t)i, &f) == 0 && f == fs[i]);
    int64_t iv;
    for (int i = 0; i < 2; i++) CHECK(qs_gguf_arr_i64(g, "k.i32s", (uint64_t)i, &iv) == 0 && iv == is[i]);
    const qs_gguf_tensor *ta = qs_gguf_tensor_find(g, "a"), *tb = qs_gguf_tensor_find(g, "b"), *tc = qs_gguf_tensor_find(g, "c");
    CHECK(ta && tb && tc);
    if (ta && tb && tc) {
        CHECK(ta->type == QS_GGML_F32 && ta->n_dims == 2 && ta->ne[0] == 5 && ta->ne[1] == 3);
        CHECK(tb->type == QS_GGML_Q4_1 && tb->ne[0] == 64 && tb->ne[1] == 2 && tb->nbytes == 80);
        CHECK(tc->type == QS_GGML_F16 && tc->n_dims == 1 && tc->ne[0] == 7);
        CHECK(ta->offset % 32 == 0 && tb->offset % 32 == 0 && tc->offset % 32 == 0);
        CHECK(tb->offset >= ta->offset + 60 && tc->offset >= tb->offset + 80);
        float ra[15], rb[128], rc[7], wb[128];
        CHECK(qs_gguf_read_f32(g, ta, ra, &err) == 0 && !memcmp(ra, a, sizeof a));
        CHECK(qs_gguf_read_f32(g, tb, rb, &err) == 0);
        qs_ggml_dequantize(QS_GGML_Q4_1, b, wb, 128);
        CHECK(!memcmp(rb, wb, sizeof rb));
        CHECK(qs_gguf_read_f32(g, tc, rc, &err) == 0);
        for (int i = 0; i < 7; i++) CHECK(rc[i] == (float)i - 3.0f);
    }
    qs_gguf_free(g);
    unlink(path);
    free(path);
}

static void misuse(const char *dir) {
    char *path = qs_path_join(dir, "bad.gguf");
    qs_error err = {0};
    const uint64_t ne[1] = {32}, odd[1] = {48};
    float x[32] = {0};
    qs_gguf_writer *w;
    /* a declaration after the data began */
    CHECK(qs_gguf_writer_open(&w, path, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "x", QS_GGML_F32, 1, ne, &err) == 0);
    CHECK(qs_gguf_writer_write(w, x, 8, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "y", QS_GGML_F32, 1, ne, &err) == QS_EUSAGE && strstr(err.msg, "after the data"));
    qs_gguf_writer_abort(w);
    CHECK(access(path, F_OK) != 0 && !tmp_left(dir));
    /* more bytes than declared */
    CHECK(qs_gguf_writer_open(&w, path, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "x", QS_GGML_F32, 1, ne, &err) == 0);
    CHECK(qs_gguf_writer_write(w, x, 128, &err) == 0);
    CHECK(qs_gguf_writer_write(w, x, 4, &err) == QS_EUSAGE && strstr(err.msg, "more bytes"));
    qs_gguf_writer_abort(w);
    CHECK(access(path, F_OK) != 0 && !tmp_left(dir));
    /* a tensor left out: close fails and leaves nothing */
    CHECK(qs_gguf_writer_open(&w, path, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "x", QS_GGML_F32, 1, ne, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "y", QS_GGML_F32, 1, ne, &err) == 0);
    CHECK(qs_gguf_writer_write(w, x, 128, &err) == 0);
    CHECK(qs_gguf_writer_close(w, &err) == QS_EUSAGE && strstr(err.msg, "1 of 2 tensors"));
    CHECK(access(path, F_OK) != 0 && !tmp_left(dir));
    /* whole blocks only; no dimensions; an unknown type */
    CHECK(qs_gguf_writer_open(&w, path, &err) == 0);
    CHECK(qs_gguf_writer_declare(w, "q", QS_GGML_Q8_0, 1, odd, &err) == QS_EUSAGE);
    CHECK(qs_gguf_writer_declare(w, "q", QS_GGML_F32, 0, ne, &err) == QS_EUSAGE);
    CHECK(qs_gguf_writer_declare(w, "q", (qs_ggml_type)99, 1, ne, &err) == QS_EUSAGE);
    qs_gguf_writer_abort(w);
    CHECK(access(path, F_OK) != 0 && !tmp_left(dir));
    /* an unwritable place is an error naming it */
    CHECK(qs_gguf_writer_open(&w, "/nonexistent-dir/x.gguf", &err) != 0 && strstr(err.msg, "/nonexistent-dir/x.gguf"));
    free(path);
}

int main(void) {
    char *dir = qs_test_tmpdir("gguf_write");
    pack_types();
    q8_0_floats();
    round_trip(dir);
    misuse(dir);
    free(dir);
    return qs_test_result();
}
