/* quant/export_gguf.c - a finished run as one GGUF file that llama.cpp loads (quant/export.h).
 *
 * Each linear's codes go into the 32-column ggml block type that holds them exactly: the
 * block's scale d is the group's scale and, for the asymmetric types, its offset m is
 * -zero * scale (both rounded to half floats, as every GGUF stores them):
 *   symmetric  2..4 bits Q4_0 (q - zero + 8), 5 bits Q5_0 (q - zero + 16), 6..8 bits Q8_0 (q - zero)
 *   asymmetric 2..4 bits Q4_1 (q),             5 bits Q5_1 (q),              6..7 bits Q8_0 (q - zero)
 * A linear whose input width is not a multiple of 32 is written dequantized in --dtype. Q and K
 * rows go into llama.cpp's interleaved-RoPE order (the inverse of model/import_gguf.c's), which
 * moves whole rows and so their quantizers with them. The tokenizer comes from the run's
 * tokenizer.model or tokenizer.json (none: "no_vocab"), LLaMA-3 rope scaling as rope_freqs.
 * The embedding and LM head are in --dtype, or each in its own type (F32, F16, BF16 or Q8_0, the
 * ggml reference rounding); a head type given for tied embeddings writes the head as a copy.
 * Memory: one linear's codes and one row of blocks, 16M floats of the embedding or LM head, or
 * the float copy of a linear written dequantized. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/gguf_dequant.h"
#include "io/gguf_pack.h"
#include "io/gguf_write.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/rope.h"
#include "quant/export_internal.h"

static const char *const gguf_lin[QS_N_LINEAR] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                  "ffn_gate", "ffn_up", "ffn_down"};

typedef struct gg {
    const qs_export_opts *o;
    qs_qmodel qm;
    qs_catalog *cat;
    qs_qblock_meta m0;
    qs_gguf_writer *w;
    qs_lin_shape ls[QS_N_LINEAR];
    uint32_t type[QS_N_LINEAR]; /* each linear kind's ggml type (a float type: written dequantized) */
    uint32_t ftype;             /* the float type of --dtype */
    uint32_t etype, htype;      /* token_embd's and output.weight's types */
    int head_copy;              /* tied embeddings written a second time as output.weight */
    int n_float;                /* linears written dequantized */
} gg;

static uint32_t float_type(qs_dtype dt) {
    return dt == QS_DTYPE_F16 ? QS_GGML_F16 : dt == QS_DTYPE_BF16 ? QS_GGML_BF16 : QS_GGML_F32;
}

/* --token-embedding-type / --output-tensor-type: NULL keeps dflt */
static int table_type(const char *s, uint32_t dflt, const char *opt, uint32_t *t, qs_error *err) {
    static const char *const names[] = {"f32", "f16", "bf16", "q8_0"};
    static const uint32_t types[] = {QS_GGML_F32, QS_GGML_F16, QS_GGML_BF16, QS_GGML_Q8_0};
    *t = dflt;
    for (int i = 0; s && i < 4; i++)
        if (!strcmp(s, names[i])) {
            *t = types[i];
            return 0;
        }
    QS_RETURN_ERROR_IF(s, QS_EUSAGE, "%s %s: f32, f16, bf16 or q8_0", opt, s);
    return 0;
}

static uint32_t block_type(int bits, int sym) {
    if (sym) return bits <= 4 ? QS_GGML_Q4_0 : bits == 5 ? QS_GGML_Q5_0 : QS_GGML_Q8_0;
    return bits <= 4 ? QS_GGML_Q4_1 : bits == 5 ? QS_GGML_Q5_1 : QS_GGML_Q8_0;
}

/* the code offset of a block type: stored = q - zero + offset (Q4_1 / Q5_1 store q itself) */
static int type_offset(uint32_t t) { return t == QS_GGML_Q4_0 ? 8 : t == QS_GGML_Q5_0 ? 16 : 0; }
static int type_has_min(uint32_t t) { return t == QS_GGML_Q4_1 || t == QS_GGML_Q5_1; }

static const char *type_name(uint32_t t) {
    switch (t) {
    case QS_GGML_Q4_0: return "Q4_0";
    case QS_GGML_Q4_1: return "Q4_1";
    case QS_GGML_Q5_0: return "Q5_0";
    case QS_GGML_Q5_1: return "Q5_1";
    case QS_GGML_Q8_0: return "Q8_0";
    case QS_GGML_F16: return "F16";
    case QS_GGML_BF16: return "BF16";
    default: return "F32";
    }
}

/* llama.cpp's general.file_type of the linears' type */
static uint32_t file_type(uint32_t t) {
    switch (t) {
    case QS_GGML_Q4_0: return 2;
    case QS_GGML_Q4_1: return 3;
    case QS_GGML_Q8_0: return 7;
    case QS_GGML_Q5_0: return 8;
    case QS_GGML_Q5_1: return 9;
    case QS_GGML_F16: return 1;
    case QS_GGML_BF16: return 32;
    default: return 0;
    }
}

/* the source row of GGUF row g of a Q or K matrix: within a head, GGUF row 2i is HF row i and
 * row 2i + 1 is HF row i + head_dim / 2 */
static int src_row(int g, int head_dim) {
    const int h = g / head_dim, j = g % head_dim;
    return h * head_dim + (j % 2 ? j / 2 + head_dim / 2 : j / 2);
}
static int rope_rows(int lin) { return lin == 0 || lin == 1; }

/* ---- metadata ---- */

typedef struct tok_ref {
    const char *s;
    int32_t id;
} tok_ref;

static int cmp_ref(const void *a, const void *b) {
    const tok_ref *x = a, *y = b;
    const int c = strcmp(x->s, y->s);
    return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* a SentencePiece vocabulary without scores (a tokenizer.json): each token that a merge makes
 * scores -rank of its first merge, so llama.cpp's best-score-first merging follows the ranks */
static int merge_scores(const qs_tok_spec *s, float *sc, qs_error *err) {
    tok_ref *ref = malloc(sizeof *ref * s->n_tokens + 1);
    char *ab = NULL;
    size_t cap = 0;
    QS_RETURN_ERROR_IF(!ref, -ENOMEM, "out of memory for %zu tokens", s->n_tokens);
    for (size_t i = 0; i < s->n_tokens; i++) ref[i] = (tok_ref){s->tokens[i], (int32_t)i};
    qsort(ref, s->n_tokens, sizeof *ref, cmp_ref);
    int rc = 0;
    for (size_t r = s->n_merges; !rc && r-- > 0;) { /* backwards: the first merge's rank stays */
        const char *m = s->merges[r], *sp = strchr(m, ' ');
        const size_t n = strlen(m);
        if (!sp) continue;
        if (n > cap) {
            char *t = realloc(ab, n + 1);
            if (!t) {
                rc = qs_error_set(err, -ENOMEM, "out of memory");
                break;
            }
            ab = t, cap = n;
        }
        memcpy(ab, m, (size_t)(sp - m));
        strcpy(ab + (sp - m), sp + 1);
        const tok_ref key = {ab, -1};
        /* the first entry with that text: ids break ties, and -1 sorts before them all */
        size_t lo = 0, hi = s->n_tokens;
        while (lo < hi) {
            const size_t mid = (lo + hi) / 2;
            if (cmp_ref(&ref[mid], &key) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < s->n_tokens && !strcmp(ref[lo].s, ab)) sc[ref[lo].id] = -(float)r;
    }
    free(ab), free(ref);
    return rc;
}

static int tok_kv(const qs_tok_spec *s, void *ctx, qs_error *err) {
    gg *g = ctx;
    qs_gguf_writer *w = g->w;
    const int spm = s->kind == QS_TOK_BPE_SPM;
    static const char *const pre[] = {[QS_TOK_PRE_GPT2] = "gpt-2", [QS_TOK_PRE_LLAMA3] = "llama-bpe",
                                      [QS_TOK_PRE_SMOLLM] = "smollm", [QS_TOK_PRE_QWEN2] = "qwen2"};
    qs_gguf_kv_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) qs_gguf_kv_str(w, "tokenizer.ggml.pre", s->pre <= QS_TOK_PRE_QWEN2 ? pre[s->pre] : "default");
    qs_gguf_kv_strs(w, "tokenizer.ggml.tokens", s->tokens, s->n_tokens);
    int32_t *ty = malloc(sizeof *ty * s->n_tokens + 4);
    float *sc = spm ? malloc(sizeof *sc * s->n_tokens + 4) : NULL;
    int rc = !ty || (spm && !sc) ? qs_error_set(err, -ENOMEM, "out of memory for %zu tokens", s->n_tokens) : 0;
    for (size_t i = 0; !rc && i < s->n_tokens; i++) ty[i] = s->types ? s->types[i] : 1;
    if (!rc) qs_gguf_kv_i32s(w, "tokenizer.ggml.token_type", ty, s->n_tokens);
    if (!rc && spm) { /* llama.cpp's SentencePiece merges by score: the model's, or -rank of the merge making the token */
        for (size_t i = 0; i < s->n_tokens; i++) sc[i] = s->scores ? s->scores[i] : -1e9f;
        if (!s->scores && s->n_merges) rc = merge_scores(s, sc, err);
        if (!rc) qs_gguf_kv_f32s(w, "tokenizer.ggml.scores", sc, s->n_tokens);
    } else if (!rc) {
        qs_gguf_kv_strs(w, "tokenizer.ggml.merges", s->merges, s->n_merges);
    }
    free(ty), free(sc);
    if (rc) return rc;
    const qs_model_config *c = &g->qm.cfg;
    const int32_t bos = c->bos_token_id >= 0 ? c->bos_token_id : s->bos_id, eos = c->eos_token_id >= 0 ? c->eos_token_id : s->eos_id;
    const int32_t nt = (int32_t)s->n_tokens; /* an id the token list does not have is left out */
    if (bos >= 0 && bos < nt) qs_gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && eos < nt) qs_gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (s->unk_id >= 0) qs_gguf_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)s->unk_id);
    qs_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", s->add_bos);
    qs_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", 0);
    if (spm) qs_gguf_kv_bool(w, "tokenizer.ggml.add_space_prefix", s->add_space_prefix);
    return 0;
}

/* tokenizer_config.json's chat_template, when there is one */
static void chat_template(gg *g) {
    char *p = qs_path_join(g->qm.dir, "tokenizer_config.json");
    json_t *j = p ? json_load_file(p, 0, NULL) : NULL;
    json_t *t = json_object_get(j, "chat_template");
    if (json_is_string(t)) qs_gguf_kv_str(g->w, "tokenizer.chat_template", json_string_value(t));
    json_decref(j);
    free(p);
}

static int write_meta(gg *g, qs_error *err) {
    const qs_model_config *c = &g->qm.cfg;
    qs_gguf_writer *w = g->w;
    const char *name = strrchr(g->qm.dir, '/');
    qs_gguf_kv_str(w, "general.architecture", "llama");
    qs_gguf_kv_str(w, "general.name", name && name[1] ? name + 1 : g->qm.dir);
    qs_gguf_kv_u32(w, "general.file_type", file_type(g->type[4]));
    qs_gguf_kv_u32(w, "general.quantization_version", 2);
    qs_gguf_kv_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size);
    qs_gguf_kv_u32(w, "llama.context_length", (uint32_t)c->max_position_embeddings);
    qs_gguf_kv_u32(w, "llama.embedding_length", (uint32_t)c->hidden_size);
    qs_gguf_kv_u32(w, "llama.block_count", (uint32_t)c->n_layers);
    qs_gguf_kv_u32(w, "llama.feed_forward_length", (uint32_t)c->intermediate_size);
    qs_gguf_kv_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads);
    qs_gguf_kv_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    qs_gguf_kv_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim);
    qs_gguf_kv_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim);
    qs_gguf_kv_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    qs_gguf_kv_f32(w, "llama.rope.freq_base", c->rope_theta);
    qs_gguf_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_eps);
    int rc = qs_tok_spec_visit(g->qm.dir, tok_kv, g, err);
    if (rc == -ENOENT) { /* weights only: llama.cpp loads it, text needs token ids */
        qs_gguf_kv_str(w, "tokenizer.ggml.model", "no_vocab");
        rc = 0;
    }
    if (!rc) chat_template(g);
    return rc;
}

/* ---- tensors ---- */

/* HF name of a non-block tensor -> GGUF name, or NULL */
static const char *global_name(const char *hf) {
    if (!strcmp(hf, "model.embed_tokens.weight")) return "token_embd.weight";
    if (!strcmp(hf, "model.norm.weight")) return "output_norm.weight";
    if (!strcmp(hf, "lm_head.weight")) return "output.weight";
    return NULL;
}

static int declare(gg *g, const char *name, uint32_t type, int nd, uint64_t n0, uint64_t n1, qs_error *err) {
    const uint64_t ne[2] = {n0, n1};
    return qs_gguf_writer_declare(g->w, name, (qs_ggml_type)type, nd, ne, err);
}

static int table_is(const qs_tensor_info *t, const char *hf) { return !strcmp(t->name, hf); }

/* the ggml type of a non-block tensor */
static uint32_t table_of(const gg *g, const qs_tensor_info *t) {
    if (t->n_dims == 1) return QS_GGML_F32;
    return table_is(t, "model.embed_tokens.weight") ? g->etype : table_is(t, "lm_head.weight") ? g->htype : g->ftype;
}

static int nvec(const gg *g) { return g->qm.cfg.attention_bias ? 5 : 2; }
static const char *const vec_gguf[5] = {"attn_norm.weight", "ffn_norm.weight", "attn_q.bias", "attn_k.bias",
                                        "attn_v.bias"};

static int declare_all(gg *g, qs_error *err) {
    const qs_model_config *c = &g->qm.cfg;
    for (size_t i = 0; i < qs_catalog_count(g->cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(g->cat, i);
        const char *n = global_name(t->name);
        QS_RETURN_ERROR_IF(!n, QS_EUNSUPPORTED, "%s/model.safetensors: tensor %s has no GGUF name", g->qm.dir, t->name);
        const int vec = t->n_dims == 1;
        QS_FORWARD_IF_ERROR(declare(g, n, table_of(g, t), t->n_dims, (uint64_t)t->shape[t->n_dims - 1],
                                    vec ? 0 : (uint64_t)t->shape[0], err));
        if (g->head_copy && table_is(t, "model.embed_tokens.weight"))
            QS_FORWARD_IF_ERROR(declare(g, "output.weight", g->htype, 2, (uint64_t)t->shape[1], (uint64_t)t->shape[0], err));
    }
    if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3)
        QS_FORWARD_IF_ERROR(declare(g, "rope_freqs.weight", QS_GGML_F32, 1, (uint64_t)c->head_dim / 2, 0, err));
    char name[96];
    const int64_t vlen[5] = {c->hidden_size, c->hidden_size, (int64_t)c->n_heads * c->head_dim,
                             (int64_t)c->n_kv_heads * c->head_dim, (int64_t)c->n_kv_heads * c->head_dim};
    for (int b = 0; b < c->n_layers; b++) {
        for (int i = 0; i < QS_N_LINEAR; i++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", b, gguf_lin[i]);
            QS_FORWARD_IF_ERROR(declare(g, name, g->type[i], 2, (uint64_t)g->ls[i].cols, (uint64_t)g->ls[i].rows, err));
        }
        for (int k = 0; k < nvec(g); k++) {
            snprintf(name, sizeof name, "blk.%d.%s", b, vec_gguf[k]);
            QS_FORWARD_IF_ERROR(declare(g, name, QS_GGML_F32, 1, (uint64_t)vlen[k], 0, err));
        }
    }
    return 0;
}

/* n floats as ggml type t: F32, F16, BF16, or Q8_0 (n a multiple of 32) */
static int write_floats(gg *g, const float *x, size_t n, uint32_t t, const char *what, qs_error *err) {
    if (t == QS_GGML_F32) return qs_gguf_writer_write(g->w, x, n * 4, err);
    const qs_dtype dt = t == QS_GGML_F16 ? QS_DTYPE_F16 : QS_DTYPE_BF16;
    const size_t bytes = t == QS_GGML_Q8_0 ? n / QS_GGML_QK * qs_ggml_block_bytes(t) : n * qs_dtype_size(dt);
    void *h = t == QS_GGML_Q8_0 ? malloc(bytes + 1) : qs_export_vec_as(x, n, dt);
    int rc = h ? 0 : qs_error_set(err, -ENOMEM, "out of memory for %zu values", n);
    if (!rc && t == QS_GGML_Q8_0 && qs_ggml_quantize_q8_0(x, n, h))
        rc = qs_error_set(err, QS_EFORMAT, "%s: %s has a value that is not finite", g->qm.dir, what);
    if (!rc) rc = qs_gguf_writer_write(g->w, h, bytes, err);
    free(h);
    return rc;
}

/* one non-block tensor as type t, in pieces of rows (a 70B embedding is 4 GiB in floats) */
static int write_table(gg *g, const qs_tensor_info *t, uint32_t type, qs_error *err) {
    const int64_t rows = t->shape[0], per = (int64_t)(t->n_elems / (size_t)(rows ? rows : 1));
    const int64_t chunk = per ? (((int64_t)16 << 20) / per > 0 ? ((int64_t)16 << 20) / per : 1) : rows;
    float *x = malloc(sizeof(float) * (size_t)(chunk < rows ? chunk : rows) * (size_t)per + 4);
    int rc = x ? 0 : qs_error_set(err, -ENOMEM, "out of memory for %s", t->name);
    for (int64_t r0 = 0; !rc && r0 < rows; r0 += chunk) {
        const int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        rc = qs_catalog_read_rows_f32(g->cat, t, r0, n, x, err);
        if (!rc) rc = write_floats(g, x, (size_t)(n * per), type, t->name, err);
    }
    free(x);
    return rc;
}

static int write_nonblock(gg *g, qs_error *err) {
    int rc = 0;
    for (size_t i = 0; !rc && i < qs_catalog_count(g->cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(g->cat, i);
        rc = write_table(g, t, table_of(g, t), err);
        if (!rc && g->head_copy && table_is(t, "model.embed_tokens.weight")) rc = write_table(g, t, g->htype, err);
    }
    if (!rc && g->qm.cfg.rope_scaling == QS_ROPE_SCALING_LLAMA3) {
        float *d = malloc(sizeof(float) * (size_t)g->qm.cfg.head_dim / 2 + 4);
        rc = d ? qs_rope_llama3_divisors(&g->qm.cfg, d, err) : qs_error_set(err, -ENOMEM, "out of memory");
        if (!rc) rc = qs_gguf_writer_write(g->w, d, sizeof(float) * (size_t)g->qm.cfg.head_dim / 2, err);
        free(d);
    }
    return rc;
}

/* one linear in blocks of type t, row by row in GGUF order */
static int write_blocks(gg *g, const qs_qlinear *l, int lin, uint32_t t, const char *what, qs_error *err) {
    const int R = l->rows, C = l->cols, ng = qs_qlinear_groups(l), nb = C / QS_GGML_QK, off = type_offset(t);
    const size_t bb = qs_ggml_block_bytes(t);
    uint8_t *row = malloc(bb * (size_t)nb + 1);
    QS_RETURN_ERROR_IF(!row, -ENOMEM, "out of memory");
    int rc = 0;
    for (int r = 0; !rc && r < R; r++) {
        const int o = rope_rows(lin) ? src_row(r, g->qm.cfg.head_dim) : r;
        for (int b = 0; !rc && b < nb; b++) {
            const int k = l->group > 0 ? b * QS_GGML_QK / l->group : 0;
            const float s = l->scales[(size_t)o * ng + k], z = l->zeros[(size_t)o * ng + k];
            const uint8_t *cq = l->codes + (size_t)o * C + (size_t)b * QS_GGML_QK;
            int q[QS_GGML_QK];
            for (int j = 0; j < QS_GGML_QK; j++) q[j] = type_has_min(t) ? cq[j] : cq[j] - (int)z + off;
            const uint16_t d = qs_f32_to_f16(s), m = qs_f32_to_f16(-z * s);
            if ((!type_has_min(t) && z != (float)(int)z) || (d & 0x7c00) == 0x7c00 || (m & 0x7c00) == 0x7c00 ||
                qs_ggml_pack_block(t, q, d, m, row + (size_t)b * bb))
                rc = qs_error_set(err, QS_EUNSUPPORTED,
                                  "%s: row %d, group %d (scale %g, zero %g) does not fit %s; use %s", what, o, k,
                                  (double)s, (double)z, type_name(t), g->m0.sym ? "--format fakequant" : "--sym");
        }
        if (!rc) rc = qs_gguf_writer_write(g->w, row, bb * (size_t)nb, err);
    }
    free(row);
    return rc;
}

/* one linear dequantized, rows in GGUF order */
static int write_dequant(gg *g, const qs_qlinear *l, int lin, qs_error *err) {
    const size_t R = (size_t)l->rows, C = (size_t)l->cols;
    float *x = malloc(sizeof(float) * R * C + 4), *y = rope_rows(lin) ? malloc(sizeof(float) * R * C + 4) : NULL;
    int rc = x && (y || !rope_rows(lin)) ? 0 : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) {
        qs_qlinear_dequant(l, x);
        for (size_t r = 0; y && r < R; r++) memcpy(y + r * C, x + (size_t)src_row((int)r, g->qm.cfg.head_dim) * C, C * 4);
        rc = write_floats(g, y ? y : x, R * C, g->type[lin], qs_linear_names[lin], err);
    }
    free(x), free(y);
    return rc;
}

static int write_block(gg *g, int b, qs_error *err) {
    qs_shard *s = NULL;
    char *p = NULL, what[192];
    int rc = qs_export_open_block(&g->qm, b, &s, &p, err);
    for (int i = 0; !rc && i < QS_N_LINEAR; i++) {
        qs_qlinear l = {0};
        snprintf(what, sizeof what, "%s: block %d %s", g->qm.dir, b, qs_linear_names[i]);
        rc = qs_qlinear_read(&l, s, qs_linear_names[i], err);
        if (!rc && (l.rows != g->ls[i].rows || l.cols != g->ls[i].cols))
            rc = qs_error_set(err, QS_EFORMAT, "%s is [%d, %d], config.json says [%d, %d]", what, l.rows, l.cols,
                              g->ls[i].rows, g->ls[i].cols);
        for (int c = 0; !rc && l.g_idx && c < l.cols; c++)
            if (l.g_idx[c] != (l.group > 0 ? c / l.group : 0))
                rc = qs_error_set(err, QS_EUNSUPPORTED,
                                  "%s: act-order groups (g_idx) cannot be stored in GGUF's 32-column blocks; quantize "
                                  "with --static-groups, or export to gptq",
                                  what);
        if (!rc) rc = g->type[i] == g->ftype ? write_dequant(g, &l, i, err) : write_blocks(g, &l, i, g->type[i], what, err);
        qs_qlinear_free(&l);
    }
    const int64_t hd = g->qm.cfg.head_dim;
    for (int k = 0; !rc && k < nvec(g); k++) {
        float *x = NULL, *y = NULL;
        size_t n = 0;
        rc = qs_shard_read_f32(s, qs_export_vec_names[k], &x, &n, err);
        if (!rc && k >= 2 && k <= 3) { /* q and k biases follow their rows */
            y = malloc(sizeof(float) * n + 4);
            if (!y) rc = qs_error_set(err, -ENOMEM, "out of memory");
            for (size_t r = 0; !rc && r < n; r++) y[r] = x[src_row((int)r, (int)hd)];
        }
        if (!rc) rc = qs_gguf_writer_write(g->w, y ? y : x, n * 4, err);
        free(x), free(y);
    }
    qs_shard_close(s);
    free(p);
    return rc;
}

int qs_export_gguf(const char *out_dir, const char *path, const qs_export_opts *o, qs_export_info *info,
                   qs_error *err) {
    gg g = {.o = o, .ftype = float_type(o->dtype)};
    QS_FORWARD_IF_ERROR(qs_qmodel_open(&g.qm, out_dir, 1, err));
    const qs_model_config *c = &g.qm.cfg;
    qs_export_lin_shapes(c, g.ls);
    int rc = qs_export_check_blocks(&g.qm, "gguf", 1, &g.m0, err);
    const int bits = g.m0.wbits, grp = g.m0.group;
    if (!rc && !g.m0.sym && bits == 8)
        rc = qs_error_set(err, QS_EUNSUPPORTED,
                          "%s: asymmetric 8-bit codes do not fit GGUF's Q8_0 (int8 around zero); quantize with --sym",
                          out_dir);
    if (!rc && grp > 0 && grp % QS_GGML_QK)
        rc = qs_error_set(err, QS_EUNSUPPORTED,
                          "%s: --group %d: GGUF's blocks are 32 columns with one scale; quantize with a group that is "
                          "a multiple of 32, or -1",
                          out_dir, grp);
    if (!rc) rc = table_type(o->embed_type, g.ftype, "--token-embedding-type", &g.etype, err);
    if (!rc) rc = table_type(o->head_type, g.ftype, "--output-tensor-type", &g.htype, err);
    if (!rc && (g.etype == QS_GGML_Q8_0 || g.htype == QS_GGML_Q8_0) && c->hidden_size % QS_GGML_QK)
        rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: hidden size %d is not a multiple of 32, as Q8_0 needs", out_dir,
                          c->hidden_size);
    g.head_copy = c->tie_word_embeddings && o->head_type;
    for (int i = 0; !rc && i < QS_N_LINEAR; i++) {
        g.type[i] = g.ls[i].cols % QS_GGML_QK ? g.ftype : block_type(bits, g.m0.sym);
        g.n_float += g.type[i] == g.ftype ? c->n_layers : 0;
    }
    if (!rc && info) *info = (qs_export_info){bits, g.m0.abits, grp, g.m0.sym, 0, g.n_float};
    if (!rc) rc = qs_catalog_open(&g.cat, out_dir, err);
    if (!rc) rc = qs_gguf_writer_open(&g.w, path, err);
    if (!rc) rc = write_meta(&g, err);
    if (!rc) rc = declare_all(&g, err);
    if (!rc) rc = write_nonblock(&g, err);
    for (int b = 0; !rc && b < c->n_layers; b++) rc = write_block(&g, b, err);
    if (!rc) {
        rc = qs_gguf_writer_close(g.w, err);
        g.w = NULL;
    }
    qs_gguf_writer_abort(g.w);
    qs_catalog_free(g.cat);
    qs_qmodel_close(&g.qm);
    return rc;
}
