/* io/gguf_vocab.c - a qs_tok_spec from a GGUF file's tokenizer.ggml.* metadata (tokens, scores,
 * token types, merges, special ids, add_bos / add_space_prefix with the defaults of each model
 * kind). Every string is copied; qs_gguf_tok_spec_free releases them. */
#include "io/gguf_vocab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void qs_gguf_tok_spec_free(qs_tok_spec *s) {
    if (!s) return;
    for (size_t i = 0; s->tokens && i < s->n_tokens; i++) free((char *)s->tokens[i]);
    for (size_t i = 0; s->merges && i < s->n_merges; i++) free((char *)s->merges[i]);
    free((void *)s->tokens);
    free((void *)s->merges);
    free((void *)s->scores);
    free((void *)s->types);
    memset(s, 0, sizeof *s);
}

static int str_array(const qs_gguf *g, const char *key, const char *fn, size_t *n_out, const char ***out, qs_error *err) {
    qs_gguf_vtype et;
    uint64_t n;
    QS_FORWARD_IF_ERROR(qs_gguf_get_arr(g, key, &et, &n, err));
    if (et != QS_GGUF_STRING || n > (1u << 24)) return qs_error_set(err, QS_EFORMAT, "%s: %s must be an array of strings", fn, key);
    const char **a = calloc(n ? n : 1, sizeof *a);
    if (!a) return qs_error_set(err, -ENOMEM, "out of memory");
    *out = a;
    *n_out = (size_t)n;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (qs_gguf_arr_str(g, key, i, &s, &len) || memchr(s, 0, len)) {
            *n_out = (size_t)i;
            return qs_error_set(err, QS_EFORMAT, "%s: %s[%llu] is damaged", fn, key, (unsigned long long)i);
        }
        if (!(a[i] = strndup(s, len))) {
            *n_out = (size_t)i;
            return qs_error_set(err, -ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* an optional token id: -1 when absent; an error when present but not a valid id */
static int opt_id(const qs_gguf *g, const char *fn, const char *key, size_t n_tokens, int32_t *id, qs_error *err) {
    int64_t v;
    *id = -1;
    if (qs_gguf_find_key(g, key) < 0) return 0;
    if (qs_gguf_get_i64(g, key, &v, NULL) || v < 0 || (uint64_t)v >= n_tokens)
        return qs_error_set(err, QS_EFORMAT, "%s: %s is not a token id below %zu", fn, key, n_tokens);
    *id = (int32_t)v;
    return 0;
}

static int opt_bool(const qs_gguf *g, const char *key, int dflt) {
    int v;
    return qs_gguf_find_key(g, key) >= 0 && qs_gguf_get_bool(g, key, &v, NULL) == 0 ? v : dflt;
}

int qs_gguf_tok_spec_load(const qs_gguf *g, const char *fn, qs_tok_spec *s, qs_error *err) {
    memset(s, 0, sizeof *s);
    if (!fn) fn = qs_gguf_name(g);
    const char *model, *pre = "default";
    size_t mlen, plen = 7;
    QS_FORWARD_IF_ERROR(qs_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen, err));
    if (qs_gguf_find_key(g, "tokenizer.ggml.pre") >= 0) QS_FORWARD_IF_ERROR(qs_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &plen, err));
    if (mlen == 4 && !memcmp(model, "gpt2", 4)) {
        s->kind = QS_TOK_BPE_BYTELEVEL;
        if (plen == 6 && !memcmp(pre, "smollm", 6)) s->pre = QS_TOK_PRE_SMOLLM;
        else if ((plen == 9 && !memcmp(pre, "llama-bpe", 9)) || (plen == 6 && !memcmp(pre, "llama3", 6))) s->pre = QS_TOK_PRE_LLAMA3;
        else if (plen == 5 && !memcmp(pre, "qwen2", 5)) s->pre = QS_TOK_PRE_QWEN2;
        else if ((plen == 5 && !memcmp(pre, "gpt-2", 5)) || (plen == 7 && !memcmp(pre, "default", 7))) s->pre = QS_TOK_PRE_GPT2;
        else return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported tokenizer pre-tokenizer '%.*s'", fn, (int)plen, pre);
    } else if (mlen == 5 && !memcmp(model, "llama", 5)) {
        s->kind = QS_TOK_BPE_SPM;
        s->pre = QS_TOK_PRE_NONE;
    } else {
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported tokenizer model '%.*s'", fn, (int)mlen, model);
    }
    int rc = str_array(g, "tokenizer.ggml.tokens", fn, &s->n_tokens, &s->tokens, err);
    if (!rc && qs_gguf_find_key(g, "tokenizer.ggml.merges") >= 0)
        rc = str_array(g, "tokenizer.ggml.merges", fn, &s->n_merges, &s->merges, err);
    if (!rc && qs_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        float *sc = calloc(s->n_tokens ? s->n_tokens : 1, sizeof *sc);
        s->scores = sc;
        for (size_t i = 0; !rc && sc && i < s->n_tokens; i++)
            if (qs_gguf_arr_f32(g, "tokenizer.ggml.scores", i, &sc[i])) rc = qs_error_set(err, QS_EFORMAT, "%s: tokenizer.ggml.scores is too short", fn);
        if (!sc) rc = qs_error_set(err, -ENOMEM, "out of memory");
    }
    if (!rc && qs_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        int32_t *ty = calloc(s->n_tokens ? s->n_tokens : 1, sizeof *ty);
        s->types = ty;
        for (size_t i = 0; !rc && ty && i < s->n_tokens; i++) {
            int64_t v;
            if (qs_gguf_arr_i64(g, "tokenizer.ggml.token_type", i, &v)) rc = qs_error_set(err, QS_EFORMAT, "%s: tokenizer.ggml.token_type is too short", fn);
            else ty[i] = (int32_t)v;
        }
        if (!ty) rc = qs_error_set(err, -ENOMEM, "out of memory");
    }
    if (!rc && s->kind == QS_TOK_BPE_BYTELEVEL && !s->n_merges) rc = qs_error_set(err, QS_EFORMAT, "%s: byte-level tokenizer without merges", fn);
    if (!rc && !s->n_tokens) rc = qs_error_set(err, QS_EFORMAT, "%s: tokenizer.ggml.tokens is empty", fn);
    if (!rc) rc = opt_id(g, fn, "tokenizer.ggml.bos_token_id", s->n_tokens, &s->bos_id, err);
    if (!rc) rc = opt_id(g, fn, "tokenizer.ggml.eos_token_id", s->n_tokens, &s->eos_id, err);
    if (!rc) rc = opt_id(g, fn, "tokenizer.ggml.unknown_token_id", s->n_tokens, &s->unk_id, err);
    if (rc) {
        qs_gguf_tok_spec_free(s);
        return rc;
    }
    s->add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", s->kind == QS_TOK_BPE_SPM);
    s->add_space_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix", s->kind == QS_TOK_BPE_SPM);
    return 0;
}
