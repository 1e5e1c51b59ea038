/* libFuzzer harness: the GGUF parser, metadata access and dequantization of small tensors. */
#include <stdint.h>
#include <stdlib.h>

#include "io/gguf.h"
#include "io/gguf_vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_gguf *g;
    qs_error err;
    if (qs_gguf_open_memory(&g, data, size, "fuzz.gguf", &err) != 0) return 0;
    uint64_t u;
    float f;
    const char *s;
    size_t len;
    qs_gguf_get_u64(g, "llama.block_count", &u, &err);
    qs_gguf_get_f32(g, "llama.rope.freq_base", &f, &err);
    qs_gguf_get_str(g, "general.architecture", &s, &len, &err);
    qs_tok_spec spec;
    if (qs_gguf_tok_spec_load(g, "fuzz.gguf", &spec, &err) == 0) qs_gguf_tok_spec_free(&spec);
    for (size_t i = 0; i < qs_gguf_tensor_count(g); i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        if (t->n_elems > (1u << 20)) continue;
        float *out = malloc(sizeof(float) * (t->n_elems ? t->n_elems : 1));
        qs_gguf_read_f32(g, t, out, &err);
        free(out);
    }
    qs_gguf_free(g);
    return 0;
}
