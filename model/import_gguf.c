/* model/import_gguf.c - a llama-architecture GGUF -> OUT_DIR/{model.safetensors (F32, Hugging
 * Face names and shapes), tokenizer.json, config.json}.
 *
 * Everything is checked before the first byte is written: the hyper-parameters, the tokenizer,
 * every tensor's name and shape, and that every layer is complete. Then tensors are declared,
 * and dequantized and written one at a time (memory: one tensor, two for Q/K). Each output file
 * is written as PATH.tmp and renamed durably; config.json goes last, so a directory with a
 * config.json holds a finished import. */
#include "model/import_gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "io/config.h"
#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"

void qs_unpermute_rope_rows(const float *src, float *dst, int n_head, int head_dim, int cols) {
    int half = head_dim / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++) {
            const float *a = src + ((size_t)h * head_dim + 2 * i) * cols;
            memcpy(dst + ((size_t)h * head_dim + i) * cols, a, sizeof(float) * (size_t)cols);
            memcpy(dst + ((size_t)h * head_dim + i + half) * cols, a + cols, sizeof(float) * (size_t)cols);
        }
}

/* per-layer tensor kinds: GGUF name part, HF name part, whether a bias may exist */
enum { K_Q, K_K, K_V, K_O, K_GATE, K_UP, K_DOWN, K_ATTN_NORM, K_FFN_NORM, K_COUNT };
static const struct {
    const char *gguf, *hf;
    int bias_ok;
} kinds[K_COUNT] = {
    [K_Q] = {"attn_q", "self_attn.q_proj", 1},       [K_K] = {"attn_k", "self_attn.k_proj", 1},
    [K_V] = {"attn_v", "self_attn.v_proj", 1},       [K_O] = {"attn_output", "self_attn.o_proj", 0},
    [K_GATE] = {"ffn_gate", "mlp.gate_proj", 0},     [K_UP] = {"ffn_up", "mlp.up_proj", 0},
    [K_DOWN] = {"ffn_down", "mlp.down_proj", 0},     [K_ATTN_NORM] = {"attn_norm", "input_layernorm", 0},
    [K_FFN_NORM] = {"ffn_norm", "post_attention_layernorm", 0},
};
enum { G_EMBED = 100, G_NORM, G_OUTPUT }; /* kinds outside the layers */

typedef struct slot {
    int layer; /* -1 outside the layers */
    int kind;  /* K_* or G_* */
    int bias;
    char hf[128];
} slot;

/* GGUF tensor name -> slot; -1 for names that are not part of a llama model */
static int classify(const char *g, slot *s) {
    static const char *globals[][2] = {{"token_embd.weight", "model.embed_tokens.weight"},
                                       {"output_norm.weight", "model.norm.weight"},
                                       {"output.weight", "lm_head.weight"}};
    memset(s, 0, sizeof *s);
    s->layer = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(g, globals[i][0])) {
            s->kind = G_EMBED + i;
            snprintf(s->hf, sizeof s->hf, "%s", globals[i][1]);
            return 0;
        }
    int layer, n = 0;
    char kind[32], suffix[16];
    if (sscanf(g, "blk.%9d.%31[a-z_].%15[a-z]%n", &layer, kind, suffix, &n) != 3 || g[n] || layer < 0) return -1;
    if (strcmp(suffix, "weight") && strcmp(suffix, "bias")) return -1;
    for (int k = 0; k < K_COUNT; k++)
        if (!strcmp(kind, kinds[k].gguf)) {
            s->layer = layer;
            s->kind = k;
            s->bias = !strcmp(suffix, "bias");
            if (s->bias && !kinds[k].bias_ok) return -1;
            snprintf(s->hf, sizeof s->hf, "model.layers.%d.%s.%s", layer, kinds[k].hf, suffix);
            return 0;
        }
    return -1;
}

/* "[a, b]" (outermost first) into buf */
static const char *fmt_shape(char *buf, size_t len, int nd, const int64_t *shape) {
    int n = snprintf(buf, len, "[");
    for (int d = 0; d < nd && n > 0 && (size_t)n < len; d++) n += snprintf(buf + n, len - (size_t)n, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
    return buf;
}

/* the HF shape a slot must have (outermost first) */
static int expected_shape(const slot *s, const qs_model_config *c, int64_t shape[2]) {
    int64_t H = c->hidden_size, I = c->intermediate_size, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim, V = c->vocab_size;
    switch (s->kind) {
    case G_EMBED: case G_OUTPUT: shape[0] = V, shape[1] = H; return 2;
    case G_NORM: case K_ATTN_NORM: case K_FFN_NORM: shape[0] = H; return 1;
    case K_Q: shape[0] = Q, shape[1] = H; break;
    case K_K: case K_V: shape[0] = KV, shape[1] = H; break;
    case K_O: shape[0] = H, shape[1] = Q; break;
    case K_GATE: case K_UP: shape[0] = I, shape[1] = H; break;
    case K_DOWN: shape[0] = H, shape[1] = I; break;
    }
    return s->bias ? 1 : 2;
}

static int opt_u64(const qs_gguf *g, const char *key, uint64_t *v, qs_error *err) {
    return qs_gguf_find_key(g, key) >= 0 ? qs_gguf_get_u64(g, key, v, err) : 0;
}

static int read_config(const qs_gguf *g, const char *fn, qs_model_config *c, qs_error *err) {
    const char *arch;
    size_t alen;
    QS_FORWARD_IF_ERROR(qs_gguf_get_str(g, "general.architecture", &arch, &alen, err));
    if (alen != 5 || memcmp(arch, "llama", 5))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported architecture '%.*s' (qstream imports llama GGUF files)", fn,
                            (int)(alen > 64 ? 64 : alen), arch);
    memset(c, 0, sizeof *c);
    uint64_t hidden, inter, layers, heads, kv_heads, ctx = 2048, head_dim = 0, rope_dims = 0;
    c->arch = QS_ARCH_LLAMA;
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.embedding_length", &hidden, err));
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.feed_forward_length", &inter, err));
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.block_count", &layers, err));
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.attention.head_count", &heads, err));
    kv_heads = heads;
    QS_FORWARD_IF_ERROR(opt_u64(g, "llama.attention.head_count_kv", &kv_heads, err));
    QS_FORWARD_IF_ERROR(opt_u64(g, "llama.context_length", &ctx, err));
    QS_FORWARD_IF_ERROR(opt_u64(g, "llama.attention.key_length", &head_dim, err));
    QS_FORWARD_IF_ERROR(opt_u64(g, "llama.rope.dimension_count", &rope_dims, err));
    QS_FORWARD_IF_ERROR(qs_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps, err));
    c->rope_theta = 10000.0f;
    if (qs_gguf_find_key(g, "llama.rope.freq_base") >= 0) QS_FORWARD_IF_ERROR(qs_gguf_get_f32(g, "llama.rope.freq_base", &c->rope_theta, err));
    const uint64_t lim = 1u << 20;
    if (!hidden || hidden > lim || !inter || inter > lim || !layers || layers > 100000 || !heads || heads > hidden ||
        !kv_heads || heads % kv_heads || ctx > (1u << 30) || head_dim > lim || !(c->rms_eps > 0) || !(c->rope_theta > 0))
        return qs_error_set(err, QS_EFORMAT, "%s: inconsistent llama.* hyper-parameters", fn);
    if (!head_dim) {
        if (hidden % heads) return qs_error_set(err, QS_EFORMAT, "%s: embedding_length %llu is not a multiple of head_count %llu", fn,
                                                (unsigned long long)hidden, (unsigned long long)heads);
        head_dim = hidden / heads;
    }
    if (head_dim % 2) return qs_error_set(err, QS_EFORMAT, "%s: odd head dimension %llu", fn, (unsigned long long)head_dim);
    if (rope_dims && rope_dims != head_dim)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: partial rotary embeddings (%llu of %llu dims) are not supported", fn,
                            (unsigned long long)rope_dims, (unsigned long long)head_dim);
    if (qs_gguf_find_key(g, "llama.rope.scaling.type") >= 0) {
        const char *st;
        size_t sl;
        QS_FORWARD_IF_ERROR(qs_gguf_get_str(g, "llama.rope.scaling.type", &st, &sl, err));
        if (!(sl == 4 && !memcmp(st, "none", 4)))
            return qs_error_set(err, QS_EUNSUPPORTED, "%s: rope scaling '%.*s' is not supported by import-gguf", fn, (int)(sl > 32 ? 32 : sl), st);
    }
    if (qs_gguf_tensor_find(g, "rope_freqs.weight"))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: rope_freqs.weight (LLaMA-3.1-style rope scaling) is not supported by import-gguf", fn);
    c->hidden_size = (int)hidden, c->intermediate_size = (int)inter, c->n_layers = (int)layers;
    c->n_heads = (int)heads, c->n_kv_heads = (int)kv_heads, c->head_dim = (int)head_dim;
    c->max_position_embeddings = (int)ctx;
    c->tie_word_embeddings = qs_gguf_tensor_find(g, "output.weight") == NULL;
    c->attention_bias = qs_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL;
    c->bos_token_id = c->eos_token_id = -1;
    return 0;
}

/* vocabulary size and special ids from the embedding and the tokenizer */
static int finish_config(const qs_gguf *g, const char *fn, const qs_tok_spec *spec, qs_model_config *c, qs_error *err) {
    const qs_gguf_tensor *emb = qs_gguf_tensor_find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return qs_error_set(err, QS_EFORMAT, "%s: token_embd.weight is missing or not 2-D", fn);
    if (emb->ne[1] > (1u << 30)) return qs_error_set(err, QS_EFORMAT, "%s: token_embd.weight has %llu rows", fn, (unsigned long long)emb->ne[1]);
    /* HF needs vocab_size = embedding rows; the token list may be shorter (padded embeddings) */
    if (spec->n_tokens > emb->ne[1])
        return qs_error_set(err, QS_EFORMAT, "%s: %zu tokens but token_embd.weight has only %llu rows", fn, spec->n_tokens,
                            (unsigned long long)emb->ne[1]);
    c->vocab_size = (int)emb->ne[1];
    c->bos_token_id = spec->bos_id;
    c->eos_token_id = spec->eos_id;
    return 0;
}

/* every tensor known and shaped as expected; every layer complete; biases all or none */
static int check_tensors(const qs_gguf *g, const char *fn, const qs_model_config *c, qs_error *err) {
    size_t nt = qs_gguf_tensor_count(g);
    unsigned char *seen = calloc((size_t)c->n_layers * K_COUNT * 2, 1); /* [layer][kind][bias] */
    int has_norm = 0, rc = 0;
    if (!seen) return qs_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nt; i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        slot s;
        int64_t want[2];
        if (classify(t->name, &s)) {
            const size_t nl = strlen(t->name);
            if (nl > 17 && !strcmp(t->name + nl - 17, ".attn_output.bias")) /* the model has biases on q, k and v only */
                rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': a bias on the attention output is not supported", fn, t->name);
            else
                rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s' is not part of a llama model", fn, t->name);
            break;
        }
        if (s.layer >= c->n_layers) {
            rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s': layer %d but block_count is %d", fn, t->name, s.layer, c->n_layers);
            break;
        }
        int nd = expected_shape(&s, c, want);
        int64_t have[4];
        for (int d = 0; d < t->n_dims; d++) have[d] = (int64_t)t->ne[t->n_dims - 1 - d]; /* ggml order is reversed */
        int ok = t->n_dims == nd;
        for (int d = 0; ok && d < nd; d++) ok = have[d] == want[d];
        if (!ok) {
            char a[96], b[96];
            rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s': shape %s, expected %s", fn, t->name,
                              fmt_shape(a, sizeof a, t->n_dims, have), fmt_shape(b, sizeof b, nd, want));
            break;
        }
        if (s.layer >= 0) seen[((size_t)s.layer * K_COUNT + (size_t)s.kind) * 2 + (size_t)s.bias] = 1;
        if (s.kind == G_NORM) has_norm = 1;
    }
    for (int l = 0; !rc && l < c->n_layers; l++)
        for (int k = 0; !rc && k < K_COUNT; k++) {
            const unsigned char *p = &seen[((size_t)l * K_COUNT + (size_t)k) * 2];
            if (!p[0]) rc = qs_error_set(err, QS_EFORMAT, "%s: tensor 'blk.%d.%s.weight' is missing", fn, l, kinds[k].gguf);
            else if (kinds[k].bias_ok && p[1] != c->attention_bias)
                rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor 'blk.%d.%s.bias' is %s: attention biases must be on q, k and v of every layer or none",
                                  fn, l, kinds[k].gguf, p[1] ? "present" : "missing");
        }
    if (!rc && !has_norm) rc = qs_error_set(err, QS_EFORMAT, "%s: tensor 'output_norm.weight' is missing", fn);
    free(seen);
    return rc;
}

/* declares every tensor, then dequantizes and writes them in the same order */
static int write_weights(const qs_gguf *g, const char *fn, const qs_model_config *c, const char *path, qs_error *err) {
    size_t nt = qs_gguf_tensor_count(g), max_elems = 0, max_qk = 0;
    qs_st_writer *w = NULL;
    float *buf = NULL, *tmp = NULL;
    int rc = qs_st_writer_open(&w, path, err);
    for (size_t i = 0; !rc && i < nt; i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        slot s;
        classify(t->name, &s);
        int64_t shape[2];
        int nd = expected_shape(&s, c, shape);
        rc = qs_st_writer_declare(w, s.hf, QS_DTYPE_F32, nd, shape, err);
        if (t->n_elems > max_elems) max_elems = (size_t)t->n_elems;
        if ((s.kind == K_Q || s.kind == K_K) && t->n_elems > max_qk) max_qk = (size_t)t->n_elems;
    }
    if (!rc) {
        buf = malloc(max_elems * sizeof(float));
        tmp = malloc((max_qk ? max_qk : 1) * sizeof(float));
        if (!buf || !tmp) rc = qs_error_set(err, -ENOMEM, "%s: out of memory (%zu floats)", fn, max_elems + max_qk);
    }
    for (size_t i = 0; !rc && i < nt; i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        slot s;
        classify(t->name, &s);
        rc = qs_gguf_read_f32(g, t, buf, err);
        if (rc) break;
        const float *out = buf;
        if (s.kind == K_Q || s.kind == K_K) { /* undo llama.cpp's interleaved-RoPE row order */
            int heads = s.kind == K_Q ? c->n_heads : c->n_kv_heads;
            qs_unpermute_rope_rows(buf, tmp, heads, c->head_dim, s.bias ? 1 : (int)t->ne[0]);
            out = tmp;
        }
        rc = qs_st_writer_write(w, out, err);
    }
    if (!rc) {
        rc = qs_st_writer_close(w, err);
        w = NULL;
    }
    qs_st_writer_abort(w);
    free(buf);
    free(tmp);
    return rc;
}

/* tokenizer.ggml.model "no_vocab" (or "none"): weights only, no tokenizer.json */
static int vocab_free(const qs_gguf *g) {
    const char *m;
    size_t n;
    if (qs_gguf_find_key(g, "tokenizer.ggml.model") < 0 || qs_gguf_get_str(g, "tokenizer.ggml.model", &m, &n, NULL)) return 0;
    return (n == 8 && !memcmp(m, "no_vocab", 8)) || (n == 4 && !memcmp(m, "none", 4));
}

int qs_import_gguf(const char *path, const char *out_dir, qs_import_summary *sum, qs_error *err) {
    qs_gguf *g;
    QS_FORWARD_IF_ERROR(qs_gguf_open(&g, path, err));
    qs_model_config cfg;
    qs_tok_spec spec;
    memset(&spec, 0, sizeof spec);
    char *p_cfg = qs_path_join(out_dir, "config.json"), *p_st = qs_path_join(out_dir, "model.safetensors"),
         *p_tok = qs_path_join(out_dir, "tokenizer.json"), *p_idx = qs_path_join(out_dir, "model.safetensors.index.json");
    int rc = p_cfg && p_st && p_tok && p_idx ? 0 : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) rc = read_config(g, path, &cfg, err);
    const int no_vocab = !rc && vocab_free(g);
    if (!rc && !no_vocab) rc = qs_gguf_tok_spec_load(g, path, &spec, err);
    if (no_vocab) spec.bos_id = spec.eos_id = spec.unk_id = -1;
    if (!rc) rc = finish_config(g, path, &spec, &cfg, err);
    if (!rc) rc = check_tensors(g, path, &cfg, err);
    /* a sharded index would be read instead of the model.safetensors written here */
    if (!rc && access(p_idx, F_OK) == 0)
        rc = qs_error_set(err, QS_EUSAGE, "%s: already holds a sharded model (model.safetensors.index.json); import into an empty directory", out_dir);
    if (!rc) rc = qs_mkdir_p(out_dir, err);
    if (!rc) rc = write_weights(g, path, &cfg, p_st, err);
    if (!rc && !no_vocab) rc = qs_tok_spec_write_json(&spec, p_tok, err);
    if (!rc) rc = qs_config_write(&cfg, p_cfg, err);
    if (!rc && sum) *sum = (qs_import_summary){.n_tensors = (int)qs_gguf_tensor_count(g), .n_layers = cfg.n_layers, .vocab = cfg.vocab_size};
    free(p_cfg);
    free(p_st);
    free(p_tok);
    free(p_idx);
    qs_gguf_tok_spec_free(&spec);
    qs_gguf_free(g);
    return rc;
}
