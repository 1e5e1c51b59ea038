/* model/llama_weights.c - loading one block's weights, shape-checked, into backend memory. */
#include "model/llama_weights.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spec {
    const char *suffix; /* after "model.layers.L." */
    int64_t rows, cols; /* cols 0: a vector of rows values */
    size_t field;       /* offset of the float * in qs_llama_weights */
} spec;

static int block_specs(const qs_model_config *c, spec *s) {
    int64_t H = c->hidden_size, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim,
            I = c->intermediate_size;
    int n = 0;
#define SPEC(suf, r, cl, f) s[n++] = (spec){suf, r, cl, offsetof(qs_llama_weights, f)}
    SPEC("self_attn.q_proj.weight", Q, H, wq);
    SPEC("self_attn.k_proj.weight", KV, H, wk);
    SPEC("self_attn.v_proj.weight", KV, H, wv);
    SPEC("self_attn.o_proj.weight", H, Q, wo);
    SPEC("mlp.gate_proj.weight", I, H, w_gate);
    SPEC("mlp.up_proj.weight", I, H, w_up);
    SPEC("mlp.down_proj.weight", H, I, w_down);
    SPEC("input_layernorm.weight", H, 0, attn_norm);
    SPEC("post_attention_layernorm.weight", H, 0, ffn_norm);
    if (c->attention_bias) {
        SPEC("self_attn.q_proj.bias", Q, 0, bq);
        SPEC("self_attn.k_proj.bias", KV, 0, bk);
        SPEC("self_attn.v_proj.bias", KV, 0, bv);
    }
#undef SPEC
    return n;
}

static float **slot(qs_llama_weights *w, size_t field) { return (float **)((char *)w + field); }

void qs_llama_linear_shapes(const qs_model_config *c, int out[7], int in[7]) {
    const int H = c->hidden_size, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate_size;
    const int outs[7] = {Q, KV, KV, H, I, I, H}, ins[7] = {H, H, H, Q, H, H, I};
    memcpy(out, outs, sizeof outs);
    memcpy(in, ins, sizeof ins);
}

void qs_llama_linear_sizes(const qs_model_config *c, size_t n[7]) {
    int out[7], in[7];
    qs_llama_linear_shapes(c, out, in);
    for (int i = 0; i < 7; i++) n[i] = (size_t)out[i] * (size_t)in[i];
}

float **qs_llama_linear_slot(qs_llama_weights *w, int i) {
    float **f[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    return f[i];
}

size_t qs_llama_weights_bytes(const qs_model_config *c) {
    spec s[12];
    int n = block_specs(c, s);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += sizeof(float) * (size_t)s[i].rows * (size_t)(s[i].cols ? s[i].cols : 1);
    return total;
}

void qs_llama_weights_free(qs_llama_weights *w, qs_backend *be) {
    float **all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down, &w->attn_norm, &w->ffn_norm,
                     &w->bq, &w->bk, &w->bv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i]) be->ops->free(be, *all[i]);
        *all[i] = NULL;
    }
    for (int k = 0; k < 3; k++) {
        be->ops->free(be, w->ra[k].src_a), be->ops->free(be, w->ra[k].src_b), be->ops->free(be, w->ra[k].coef);
        w->ra[k].src_a = w->ra[k].src_b = NULL, w->ra[k].coef = NULL;
    }
    for (int i = 0; i < 7; i++) {
        if (w->bf16[i]) be->ops->free(be, w->bf16[i]);
        w->bf16[i] = NULL;
    }
}

int qs_llama_weights_to_bf16(qs_llama_weights *w, int i, size_t n, qs_backend *be, qs_error *err) {
    QS_RETURN_ERROR_IF(i < 0 || i > 6 || !*qs_llama_linear_slot(w, i) || !be->ops->to_bf16 || !be->ops->linear_bf16, QS_EUSAGE,
                       "block %d: linear %d cannot be kept as bf16 on %s", w->layer, i, be->ops->name);
    uint16_t *h = be->ops->alloc(be, sizeof(uint16_t) * n);
    QS_RETURN_ERROR_IF(!h, -ENOMEM, "block %d: out of %s memory for a bf16 copy of linear %d (%zu bytes)", w->layer,
                       be->ops->name, i, sizeof(uint16_t) * n);
    float **f = qs_llama_linear_slot(w, i);
    int rc = be->ops->to_bf16(be, h, *f, n, err);
    if (rc) {
        be->ops->free(be, h);
        return rc;
    }
    be->ops->free(be, *f); /* stream-ordered: after the conversion */
    *f = NULL;
    w->bf16[i] = h;
    return 0;
}

/* the catalogue entry of "model.layers.L.<suffix>", checked against the expected shape */
static int find_checked(const qs_tensor_info **out, const qs_catalog *cat, int layer, const spec *s, qs_error *err) {
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, s->suffix);
    const qs_tensor_info *t = qs_catalog_find(cat, name);
    if (!t)
        return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is missing", qs_catalog_file_path(cat, 0), name);
    int ok = s->cols ? t->n_dims == 2 && t->shape[0] == s->rows && t->shape[1] == s->cols
                     : t->n_dims == 1 && t->shape[0] == s->rows;
    if (!ok) {
        char have[96] = "", want[64];
        for (int d = 0; d < t->n_dims; d++) {
            size_t len = strlen(have);
            snprintf(have + len, sizeof have - len, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        }
        if (s->cols) snprintf(want, sizeof want, "%lld, %lld", (long long)s->rows, (long long)s->cols);
        else snprintf(want, sizeof want, "%lld", (long long)s->rows);
        return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' has shape [%s], config.json says [%s]",
                            qs_catalog_file_path(cat, t->file_index), name, have, want);
    }
    *out = t;
    return 0;
}

int qs_llama_weights_load(qs_llama_weights *w, const qs_catalog *cat, const qs_model_config *c, int layer,
                          qs_backend *be, qs_error *err) {
    memset(w, 0, sizeof *w);
    w->layer = layer;
    QS_RETURN_ERROR_IF(layer < 0 || layer >= c->n_layers, QS_EUSAGE, "layer %d is outside the model's %d layers", layer,
                       c->n_layers);
    spec s[12];
    const qs_tensor_info *t[12];
    int n = block_specs(c, s);
    size_t staging = 0;
    for (int i = 0; i < n; i++) { /* every name and shape first: a bad file fails before any read */
        QS_FORWARD_IF_ERROR(find_checked(&t[i], cat, layer, &s[i], err));
        if (t[i]->n_elems > staging) staging = t[i]->n_elems;
    }
    float *host = malloc(sizeof(float) * staging); /* one host buffer, reused for every tensor */
    if (!host) return qs_error_set(err, -ENOMEM, "layer %d: out of memory for a %zu-float staging buffer", layer, staging);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        size_t bytes = sizeof(float) * (size_t)t[i]->n_elems;
        float *dev = be->ops->alloc(be, bytes);
        if (!dev) {
            rc = qs_error_set(err, -ENOMEM, "%s: out of %s memory for tensor '%s' (%zu bytes)",
                              qs_catalog_file_path(cat, t[i]->file_index), be->ops->name, t[i]->name, bytes);
            break;
        }
        *slot(w, s[i].field) = dev;
        rc = qs_catalog_read_f32(cat, t[i], host, err);
        if (!rc) rc = be->ops->upload(be, dev, host, bytes, err);
    }
    free(host);
    if (rc) qs_llama_weights_free(w, be);
    return rc;
}
