/* libFuzzer harness: the GGUF parser (qs_gguf_open_memory), then a walk over everything it
 * accepted: every key by type (scalars, strings, array elements), the tokenizer spec loader,
 * and dequantization of every tensor up to 1M elements. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "io/gguf_vocab.h"

static void walk_key(const qs_gguf *g, size_t k) {
    size_t len;
    const char *name = qs_gguf_key_name(g, k, &len);
    char key[256];
    if (!name || len >= sizeof key || memchr(name, 0, len)) return;
    memcpy(key, name, len);
    key[len] = 0;
    qs_error err;
    int64_t i64;
    uint64_t u64;
    float f;
    int b;
    const char *s;
    switch (qs_gguf_key_type(g, (int)k)) {
    case QS_GGUF_STRING:
        if (qs_gguf_get_str(g, key, &s, &len, &err) == 0 && len) (void)*(volatile const char *)&s[len - 1];
        break;
    case QS_GGUF_ARRAY: {
        qs_gguf_vtype et;
        uint64_t n;
        if (qs_gguf_get_arr(g, key, &et, &n, &err)) break;
        for (uint64_t i = 0; i < n && i < 4096; i++) {
            if (et == QS_GGUF_STRING) {
                if (qs_gguf_arr_str(g, key, i, &s, &len) == 0 && len) (void)*(volatile const char *)&s[len - 1];
            } else {
                qs_gguf_arr_i64(g, key, i, &i64);
                qs_gguf_arr_f32(g, key, i, &f);
            }
        }
        qs_gguf_arr_str(g, key, n, &s, &len); /* one past the end */
        break;
    }
    default:
        qs_gguf_get_i64(g, key, &i64, &err);
        qs_gguf_get_u64(g, key, &u64, &err);
        qs_gguf_get_f32(g, key, &f, &err);
        qs_gguf_get_bool(g, key, &b, &err);
        qs_gguf_get_str(g, key, &s, &len, &err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_gguf *g;
    qs_error err;
    if (qs_gguf_open_memory(&g, data, size, "fuzz.gguf", &err) != 0) return 0;
    for (size_t k = 0; k < qs_gguf_key_count(g); k++) walk_key(g, k);
    qs_tok_spec spec;
    if (qs_gguf_tok_spec_load(g, NULL, &spec, &err) == 0) qs_gguf_tok_spec_free(&spec);
    for (size_t i = 0; i < qs_gguf_tensor_count(g); i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        if (t->n_elems > (1u << 20)) continue;
        float *out = malloc(sizeof(float) * t->n_elems);
        if (out) qs_gguf_read_f32(g, t, out, &err);
        free(out);
    }
    qs_gguf_free(g);
    return 0;
}
