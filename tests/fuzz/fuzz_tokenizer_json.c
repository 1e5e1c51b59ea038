/* libFuzzer harness: tokenizer.json parsing and SentencePiece tokenizer.model parsing of the
 * input, encoding the input bytes with whatever parsed, and encoding them with a small built-in
 * byte-level tokenizer (encode, then decode: the bytes come back). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/tokenizer.h"

static qs_tokenizer *builtin(void) {
    static qs_tokenizer *t;
    if (t) return t;
    /* the 256 byte symbols of GPT-2's table plus one merge */
    static char store[257][4];
    static const char *tok[258];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + n++;
        memset(store[b], 0, 4);
        if (cp < 0x80) store[b][0] = (char)cp;
        else store[b][0] = (char)(0xc0 | (cp >> 6)), store[b][1] = (char)(0x80 | (cp & 0x3f));
        tok[b] = store[b];
    }
    tok[256] = "th";
    const char *merges[1] = {"t h"};
    qs_tok_spec s = {.kind = QS_TOK_BPE_BYTELEVEL, .pre = QS_TOK_PRE_SMOLLM, .n_tokens = 257, .tokens = tok,
                     .n_merges = 1, .merges = merges, .bos_id = -1, .eos_id = -1, .unk_id = -1};
    qs_error err;
    qs_tokenizer_from_spec(&t, &s, &err);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_tokenizer *t;
    qs_error err;
    int32_t *ids;
    size_t n;
    if (qs_tokenizer_parse_json(&t, (const char *)data, size, "fuzz.json", &err) == 0) {
        if (qs_tokenizer_encode(t, (const char *)data, size < 4096 ? size : 4096, &ids, &n, &err) == 0) free(ids);
        qs_tokenizer_free(t);
    }
    qs_tok_spm_model *m;
    qs_tok_spec spec;
    if (qs_tok_spm_model_parse(&m, &spec, data, size, "fuzz.model", &err) == 0) {
        if (spec.n_tokens <= 4096 && qs_tokenizer_from_spec(&t, &spec, &err) == 0) {
            if (qs_tokenizer_encode(t, (const char *)data, size < 4096 ? size : 4096, &ids, &n, &err) == 0) free(ids);
            qs_tokenizer_free(t);
        }
        qs_tok_spm_model_free(m);
    }
    t = builtin();
    if (t && qs_tokenizer_encode(t, (const char *)data, size, &ids, &n, &err) == 0) {
        char *back;
        if (qs_tokenizer_decode(t, ids, n, &back, &err) == 0) {
            if (memcmp(back, data, size) || back[size]) __builtin_trap(); /* byte-level: decode(encode(x)) == x */
            free(back);
        }
        free(ids);
    }
    return 0;
}
