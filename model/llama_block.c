#include "model/llama_block.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* reads "model.layers.L.<suffix>" with the expected shape into new backend memory */
static int load_one(float **dst, const qs_catalog *cat, int layer, const char *suffix, int64_t rows, int64_t cols,
                    qs_backend *be, qs_error *err) {
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    const qs_tensor_info *t = qs_catalog_find(cat, name);
    if (!t) return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is missing", qs_catalog_file_path(cat, 0), name);
    const char *file = qs_catalog_file_path(cat, t->file_index);
    int ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols : t->n_dims == 1 && t->shape[0] == rows;
    if (!ok)
        return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' has shape [%lld%s%lld], the config says [%lld%s%lld]", file, name,
                            (long long)t->shape[0], t->n_dims > 1 ? ", " : "", t->n_dims > 1 ? (long long)t->shape[1] : 0LL,
                            (long long)rows, cols ? ", " : "", (long long)cols);
    size_t bytes = sizeof(float) * (size_t)t->n_elems;
    float *host = malloc(bytes), *dev = be->ops->alloc(be, bytes);
    int rc = host && dev ? qs_catalog_read_f32(cat, t, host, err)
                         : qs_error_set(err, -ENOMEM, "%s: out of memory for tensor '%s' (%zu bytes)", file, name, bytes);
    if (!rc) rc = be->ops->upload(be, dev, host, bytes, err);
    free(host);
    if (rc) {
        if (dev) be->ops->free(be, dev);
        return rc;
    }
    *dst = dev;
    return 0;
}

void qs_block_weights_free(qs_block_weights *w, qs_backend *be) {
    float **all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down, &w->attn_norm, &w->ffn_norm,
                     &w->bq, &w->bk, &w->bv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i]) be->ops->free(be, *all[i]);
        *all[i] = NULL;
    }
}

int qs_block_weights_load(qs_block_weights *w, const qs_catalog *cat, const qs_model_config *c, int L, qs_backend *be,
                          qs_error *err) {
    memset(w, 0, sizeof *w);
    int64_t H = c->hidden_size, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim,
            I = c->intermediate_size;
    int rc = load_one(&w->wq, cat, L, "self_attn.q_proj.weight", Q, H, be, err);
    if (!rc) rc = load_one(&w->wk, cat, L, "self_attn.k_proj.weight", KV, H, be, err);
    if (!rc) rc = load_one(&w->wv, cat, L, "self_attn.v_proj.weight", KV, H, be, err);
    if (!rc) rc = load_one(&w->wo, cat, L, "self_attn.o_proj.weight", H, Q, be, err);
    if (!rc) rc = load_one(&w->w_gate, cat, L, "mlp.gate_proj.weight", I, H, be, err);
    if (!rc) rc = load_one(&w->w_up, cat, L, "mlp.up_proj.weight", I, H, be, err);
    if (!rc) rc = load_one(&w->w_down, cat, L, "mlp.down_proj.weight", H, I, be, err);
    if (!rc) rc = load_one(&w->attn_norm, cat, L, "input_layernorm.weight", H, 0, be, err);
    if (!rc) rc = load_one(&w->ffn_norm, cat, L, "post_attention_layernorm.weight", H, 0, be, err);
    if (!rc && c->attention_bias) {
        rc = load_one(&w->bq, cat, L, "self_attn.q_proj.bias", Q, 0, be, err);
        if (!rc) rc = load_one(&w->bk, cat, L, "self_attn.k_proj.bias", KV, 0, be, err);
        if (!rc) rc = load_one(&w->bv, cat, L, "self_attn.v_proj.bias", KV, 0, be, err);
    }
    if (rc) qs_block_weights_free(w, be);
    return rc;
}

void qs_block_scratch_free(qs_block_scratch *s, qs_backend *be) {
    float **all[] = {&s->xn, &s->q, &s->k, &s->v, &s->att, &s->gate, &s->up};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i]) be->ops->free(be, *all[i]);
        *all[i] = NULL;
    }
    free(s->pos);
    s->pos = NULL;
}

int qs_block_scratch_init(qs_block_scratch *s, const qs_model_config *c, int T, qs_backend *be, qs_error *err) {
    memset(s, 0, sizeof *s);
    s->max_tokens = T;
    size_t t = (size_t)T, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    s->xn = be->ops->alloc(be, sizeof(float) * t * c->hidden_size);
    s->q = be->ops->alloc(be, sizeof(float) * t * Q);
    s->k = be->ops->alloc(be, sizeof(float) * t * KV);
    s->v = be->ops->alloc(be, sizeof(float) * t * KV);
    s->att = be->ops->alloc(be, sizeof(float) * t * Q);
    s->gate = be->ops->alloc(be, sizeof(float) * t * c->intermediate_size);
    s->up = be->ops->alloc(be, sizeof(float) * t * c->intermediate_size);
    s->pos = malloc(sizeof(int) * t);
    if (!s->xn || !s->q || !s->k || !s->v || !s->att || !s->gate || !s->up || !s->pos) {
        qs_block_scratch_free(s, be);
        return qs_error_set(err, -ENOMEM, "out of memory for the activations of %d tokens", T);
    }
    return 0;
}

int qs_block_forward(qs_backend *be, const qs_model_config *c, const qs_block_weights *w, const qs_rope_table *rope,
                     float *x, int n_seq, int L, qs_block_scratch *s, qs_error *err) {
    const qs_backend_ops *o = be->ops;
    int T = n_seq * L, H = c->hidden_size, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd,
        I = c->intermediate_size;
    QS_RETURN_ERROR_IF(T > s->max_tokens || L > rope->n_pos, -EINVAL, "block forward: %d tokens over the scratch size", T);
    for (int t = 0; t < T; t++) s->pos[t] = t % L;
    /* attention */
    o->rmsnorm(be, s->xn, x, w->attn_norm, T, H, c->rms_eps);
    o->gemm(be, 0, 1, T, Q, H, 1.0f, s->xn, H, w->wq, H, 0.0f, s->q, Q);
    o->gemm(be, 0, 1, T, KV, H, 1.0f, s->xn, H, w->wk, H, 0.0f, s->k, KV);
    o->gemm(be, 0, 1, T, KV, H, 1.0f, s->xn, H, w->wv, H, 0.0f, s->v, KV);
    if (w->bq) {
        o->add_bias(be, s->q, w->bq, T, Q);
        o->add_bias(be, s->k, w->bk, T, KV);
        o->add_bias(be, s->v, w->bv, T, KV);
    }
    o->rope(be, s->q, T, c->n_heads, hd, Q, s->pos, rope->cos_t, rope->sin_t);
    o->rope(be, s->k, T, c->n_kv_heads, hd, KV, s->pos, rope->cos_t, rope->sin_t);
    for (int q = 0; q < n_seq; q++) {
        size_t r = (size_t)q * L;
        if (o->attention(be, s->att + r * Q, s->q + r * Q, s->k + r * KV, s->v + r * KV, L, c->n_heads, c->n_kv_heads, hd))
            return qs_error_set(err, -ENOMEM, "out of memory for attention scores (%d x %d)", L, L);
    }
    o->gemm(be, 0, 1, T, H, Q, 1.0f, s->att, Q, w->wo, Q, 1.0f, x, H); /* x += o_proj(att) */
    /* SwiGLU MLP */
    o->rmsnorm(be, s->xn, x, w->ffn_norm, T, H, c->rms_eps);
    o->gemm(be, 0, 1, T, I, H, 1.0f, s->xn, H, w->w_gate, H, 0.0f, s->gate, I);
    o->gemm(be, 0, 1, T, I, H, 1.0f, s->xn, H, w->w_up, H, 0.0f, s->up, I);
    o->swiglu(be, s->gate, s->gate, s->up, (size_t)T * I);
    o->gemm(be, 0, 1, T, H, I, 1.0f, s->gate, I, w->w_down, I, 1.0f, x, H); /* x += down_proj(...) */
    return 0;
}
