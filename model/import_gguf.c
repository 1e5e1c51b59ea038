#include "model/import_gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* GGUF tensor name -> HF name; returns 0 and fills hf, or -1 for names qstream does not know */
static int hf_name(const char *g, char *hf, size_t len, int *rope_kind /* 1 q, 2 k */) {
    static const char *map[][2] = {
        {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},       {"attn_v", "self_attn.v_proj"},
        {"attn_output", "self_attn.o_proj"}, {"ffn_gate", "mlp.gate_proj"},     {"ffn_up", "mlp.up_proj"},
        {"ffn_down", "mlp.down_proj"},    {"attn_norm", "input_layernorm"},     {"ffn_norm", "post_attention_layernorm"},
    };
    *rope_kind = 0;
    if (!strcmp(g, "token_embd.weight")) return snprintf(hf, len, "model.embed_tokens.weight"), 0;
    if (!strcmp(g, "output_norm.weight")) return snprintf(hf, len, "model.norm.weight"), 0;
    if (!strcmp(g, "output.weight")) return snprintf(hf, len, "lm_head.weight"), 0;
    int layer, n = 0;
    char kind[32], suffix[16];
    if (sscanf(g, "blk.%d.%31[a-z_].%15[a-z]%n", &layer, kind, suffix, &n) != 3 || g[n] || layer < 0) return -1;
    if (strcmp(suffix, "weight") && strcmp(suffix, "bias")) return -1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(kind, map[i][0])) {
            snprintf(hf, len, "model.layers.%d.%s.%s", layer, map[i][1], suffix);
            *rope_kind = i == 0 ? 1 : i == 1 ? 2 : 0;
            return 0;
        }
    return -1;
}

static int read_config(const qs_gguf *g, const char *fn, qs_model_config *c, qs_error *err) {
    const char *arch;
    size_t alen;
    QS_FORWARD_IF_ERROR(qs_gguf_get_str(g, "general.architecture", &arch, &alen, err));
    if (alen != 5 || memcmp(arch, "llama", 5))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported architecture '%.*s' (qstream imports llama GGUF files)", fn, (int)alen, arch);
    memset(c, 0, sizeof *c);
    uint64_t v;
    c->arch = QS_ARCH_LLAMA;
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.embedding_length", &v, err)); c->hidden_size = (int)v;
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.feed_forward_length", &v, err)); c->intermediate_size = (int)v;
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.block_count", &v, err)); c->n_layers = (int)v;
    QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.attention.head_count", &v, err)); c->n_heads = (int)v;
    c->n_kv_heads = c->n_heads;
    if (qs_gguf_find_key(g, "llama.attention.head_count_kv") >= 0) {
        QS_FORWARD_IF_ERROR(qs_gguf_get_u64(g, "llama.attention.head_count_kv", &v, err));
        c->n_kv_heads = (int)v;
    }
    c->max_position_embeddings = 2048;
    if (qs_gguf_find_key(g, "llama.context_length") >= 0 && !qs_gguf_get_u64(g, "llama.context_length", &v, NULL))
        c->max_position_embeddings = (int)v;
    QS_FORWARD_IF_ERROR(qs_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps, err));
    c->rope_theta = 10000.0f;
    if (qs_gguf_find_key(g, "llama.rope.freq_base") >= 0) QS_FORWARD_IF_ERROR(qs_gguf_get_f32(g, "llama.rope.freq_base", &c->rope_theta, err));
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->hidden_size <= 0 || c->hidden_size % c->n_heads || c->n_heads % c->n_kv_heads ||
        c->n_layers <= 0 || c->n_layers > 100000)
        return qs_error_set(err, QS_EFORMAT, "%s: inconsistent llama.* hyper-parameters", fn);
    c->head_dim = c->hidden_size / c->n_heads;
    if (qs_gguf_find_key(g, "llama.rope.dimension_count") >= 0 && !qs_gguf_get_u64(g, "llama.rope.dimension_count", &v, NULL) &&
        (int)v != c->head_dim)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: partial rotary embeddings (%d of %d dims) are not supported", fn, (int)v, c->head_dim);
    const qs_gguf_tensor *emb = qs_gguf_tensor_find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return qs_error_set(err, QS_EFORMAT, "%s: token_embd.weight is missing", fn);
    c->vocab_size = (int)emb->ne[1];
    c->tie_word_embeddings = qs_gguf_tensor_find(g, "output.weight") == NULL;
    c->attention_bias = qs_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL;
    c->bos_token_id = c->eos_token_id = -1;
    int64_t id;
    if (qs_gguf_find_key(g, "tokenizer.ggml.bos_token_id") >= 0 && !qs_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &id, NULL)) c->bos_token_id = (int)id;
    if (qs_gguf_find_key(g, "tokenizer.ggml.eos_token_id") >= 0 && !qs_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &id, NULL)) c->eos_token_id = (int)id;
    return 0;
}

int qs_import_gguf(const char *path, const char *out_dir, qs_import_summary *sum, qs_error *err) {
    qs_gguf *g;
    QS_FORWARD_IF_ERROR(qs_gguf_open(&g, path, err));
    qs_model_config cfg;
    qs_tok_spec spec;
    memset(&spec, 0, sizeof spec);
    qs_st_writer *w = NULL;
    float *buf = NULL, *tmp = NULL;
    char *p_cfg = qs_path_join(out_dir, "config.json"), *p_st = qs_path_join(out_dir, "model.safetensors"),
         *p_tok = qs_path_join(out_dir, "tokenizer.json");
    int rc = read_config(g, path, &cfg, err);
    if (!rc) rc = qs_gguf_tok_spec_load(g, path, &spec, err);
    /* declare every tensor (HF name, shape) before writing anything */
    size_t nt = qs_gguf_tensor_count(g), max_elems = 0;
    if (!rc) rc = qs_mkdir_p(out_dir, err);
    if (!rc) rc = qs_st_writer_open(&w, p_st, err);
    for (size_t i = 0; !rc && i < nt; i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        char hf[160];
        int rk;
        if (hf_name(t->name, hf, sizeof hf, &rk)) {
            rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s' is not part of a llama model", path, t->name);
            break;
        }
        int64_t shape[4];
        for (int d = 0; d < t->n_dims; d++) shape[d] = (int64_t)t->ne[t->n_dims - 1 - d]; /* ggml order is reversed */
        int heads = rk == 1 ? cfg.n_heads : cfg.n_kv_heads;
        if (rk && shape[0] != (int64_t)heads * cfg.head_dim) {
            rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' has %lld rows, expected %d", path, t->name, (long long)shape[0], heads * cfg.head_dim);
            break;
        }
        rc = qs_st_writer_declare(w, hf, QS_DTYPE_F32, t->n_dims, shape, err);
        if (t->n_elems > max_elems) max_elems = (size_t)t->n_elems;
    }
    if (!rc) {
        buf = malloc(max_elems * sizeof(float));
        tmp = malloc(max_elems * sizeof(float));
        if (!buf || !tmp) rc = qs_error_set(err, -ENOMEM, "%s: out of memory (%zu floats)", path, max_elems);
    }
    for (size_t i = 0; !rc && i < nt; i++) {
        const qs_gguf_tensor *t = qs_gguf_tensor_at(g, i);
        char hf[160];
        int rk;
        hf_name(t->name, hf, sizeof hf, &rk);
        rc = qs_gguf_read_f32(g, t, buf, err);
        if (rc) break;
        const float *out = buf;
        if (rk) {
            int heads = rk == 1 ? cfg.n_heads : cfg.n_kv_heads;
            int cols = t->n_dims == 2 ? (int)t->ne[0] : 1; /* a bias is one column */
            qs_unpermute_rope_rows(buf, tmp, heads, cfg.head_dim, cols);
            out = tmp;
        }
        rc = qs_st_writer_write(w, out, err);
    }
    if (!rc) {
        rc = qs_st_writer_close(w, err);
        w = NULL;
    }
    if (!rc) rc = qs_config_write(&cfg, p_cfg, err);
    if (!rc) rc = qs_tok_spec_write_json(&spec, p_tok, err);
    if (!rc && sum) *sum = (qs_import_summary){.n_tensors = (int)nt, .n_layers = cfg.n_layers, .vocab = cfg.vocab_size};
    qs_st_writer_abort(w);
    free(buf);
    free(tmp);
    free(p_cfg);
    free(p_st);
    free(p_tok);
    qs_gguf_tok_spec_free(&spec);
    qs_gguf_free(g);
    return rc;
}
