/* quant/qblock.c - reading quantized blocks back from their shards. */
#include "quant/qblock.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "quant/affine.h"

const char *const qs_linear_names[QS_N_LINEAR] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                  "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                  "mlp.down_proj"};

static int meta_int(json_t *meta, const char *key, int lo, int hi, int *out, const qs_shard *s, qs_error *err) {
    json_t *v = json_object_get(meta, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return qs_error_set(err, QS_EFORMAT, "block %d shard: meta '%s' is missing or not an integer in %d..%d",
                            qs_shard_block(s), key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

int qs_qblock_meta_read(const qs_shard *s, qs_qblock_meta *m, qs_error *err) {
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *meta = json_loads(qs_shard_meta_json(s), 0, &je);
    int rc = json_is_object(meta) ? 0 : qs_error_set(err, QS_EFORMAT, "block %d shard: meta is not a JSON object", qs_shard_block(s));
    json_t *method = json_object_get(meta, "method");
    if (!rc && !json_is_string(method))
        rc = qs_error_set(err, QS_EFORMAT, "block %d shard: meta 'method' is missing", qs_shard_block(s));
    if (!rc) snprintf(m->method, sizeof m->method, "%s", json_string_value(method));
    if (!rc) rc = meta_int(meta, "wbits", 2, 8, &m->wbits, s, err);
    if (!rc) rc = meta_int(meta, "group", -1, 1 << 20, &m->group, s, err);
    m->abits = 16;
    if (!rc && json_object_get(meta, "abits")) rc = meta_int(meta, "abits", 2, 16, &m->abits, s, err);
    if (!rc) m->sym = json_is_true(json_object_get(meta, "sym"));
    json_decref(meta);
    return rc;
}

static int read_entry(const qs_shard *s, const char *name, qs_dtype dtype, size_t want_bytes, void **out, qs_error *err) {
    *out = NULL;
    for (size_t i = 0; i < qs_shard_count(s); i++) {
        const qs_shard_entry *e = qs_shard_at(s, i);
        if (strcmp(e->name, name)) continue;
        QS_RETURN_ERROR_IF(e->dtype != dtype || (want_bytes && e->size != want_bytes), QS_EFORMAT,
                           "block %d shard: tensor '%s' is %s of %llu bytes, expected %s of %zu", qs_shard_block(s), name,
                           qs_dtype_name(e->dtype), (unsigned long long)e->size, qs_dtype_name(dtype), want_bytes);
        void *p = malloc(e->size ? e->size : 1);
        if (!p) return qs_error_set(err, -ENOMEM, "block %d: out of memory for tensor '%s'", qs_shard_block(s), name);
        int rc = qs_shard_read(s, i, p, err);
        if (rc) {
            free(p);
            return rc;
        }
        *out = p;
        return 0;
    }
    return qs_error_set(err, QS_EFORMAT, "block %d shard: tensor '%s' is missing", qs_shard_block(s), name);
}

int qs_shard_read_f32(const qs_shard *s, const char *name, float **out, size_t *n, qs_error *err) {
    const qs_shard_entry *e = qs_shard_find(s, name);
    QS_RETURN_ERROR_IF(!e, QS_EFORMAT, "block %d shard: tensor '%s' is missing", qs_shard_block(s), name);
    QS_FORWARD_IF_ERROR(read_entry(s, name, QS_DTYPE_F32, 0, (void **)out, err));
    *n = e->size / sizeof(float);
    return 0;
}

int qs_qlinear_groups(const qs_qlinear *q) { return q->group > 0 ? (q->cols + q->group - 1) / q->group : 1; }

void qs_qlinear_free(qs_qlinear *q) {
    free(q->codes), free(q->scales), free(q->zeros), free(q->g_idx);
    memset(q, 0, sizeof *q);
}

int qs_qlinear_read(qs_qlinear *q, const qs_shard *s, const char *lin, qs_error *err) {
    memset(q, 0, sizeof *q);
    qs_qblock_meta m;
    QS_FORWARD_IF_ERROR(qs_qblock_meta_read(s, &m, err));
    json_error_t je;
    json_t *meta = json_loads(qs_shard_meta_json(s), 0, &je);
    json_t *shape = json_object_get(json_object_get(meta, "shapes"), lin);
    json_int_t rows = json_integer_value(json_array_get(shape, 0)), cols = json_integer_value(json_array_get(shape, 1));
    json_decref(meta);
    QS_RETURN_ERROR_IF(rows < 1 || cols < 1 || rows > (1 << 24) || cols > (1 << 24), QS_EFORMAT,
                       "block %d shard: meta has no shape for '%s'", qs_shard_block(s), lin);
    q->rows = (int)rows, q->cols = (int)cols, q->bits = m.wbits, q->group = m.group;
    size_t ng = (size_t)qs_qlinear_groups(q), rp = qs_packed_size((size_t)cols, m.wbits);
    char name[128];
    uint8_t *packed = NULL;
    snprintf(name, sizeof name, "%s.codes", lin);
    int rc = read_entry(s, name, QS_DTYPE_U8, rp * (size_t)rows, (void **)&packed, err);
    snprintf(name, sizeof name, "%s.scales", lin);
    if (!rc) rc = read_entry(s, name, QS_DTYPE_F32, sizeof(float) * ng * (size_t)rows, (void **)&q->scales, err);
    snprintf(name, sizeof name, "%s.zeros", lin);
    if (!rc) rc = read_entry(s, name, QS_DTYPE_F32, sizeof(float) * ng * (size_t)rows, (void **)&q->zeros, err);
    snprintf(name, sizeof name, "%s.g_idx", lin);
    if (!rc && qs_shard_find(s, name)) {
        rc = read_entry(s, name, QS_DTYPE_I32, sizeof(int32_t) * (size_t)cols, (void **)&q->g_idx, err);
        for (int c = 0; !rc && c < q->cols; c++)
            if (q->g_idx[c] < 0 || (size_t)q->g_idx[c] >= ng)
                rc = qs_error_set(err, QS_EFORMAT, "block %d shard: %s[%d] = %d is outside %zu groups", qs_shard_block(s),
                                  name, c, q->g_idx[c], ng);
    }
    if (!rc) {
        q->codes = malloc((size_t)rows * (size_t)cols);
        if (!q->codes) rc = qs_error_set(err, -ENOMEM, "block %d: out of memory for the codes of %s", qs_shard_block(s), lin);
        for (size_t r = 0; !rc && r < (size_t)rows; r++)
            qs_unpack_codes(packed + r * rp, (size_t)cols, m.wbits, q->codes + r * (size_t)cols);
    }
    free(packed);
    if (rc) qs_qlinear_free(q);
    return rc;
}

void qs_qlinear_dequant(const qs_qlinear *q, float *w) {
    const int ng = qs_qlinear_groups(q), g = q->group > 0 ? q->group : q->cols;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < (size_t)q->rows; r++) {
        const float *sc = q->scales + r * ng, *ze = q->zeros + r * ng;
        const uint8_t *c = q->codes + r * q->cols;
        float *o = w + r * q->cols;
        for (int i = 0; i < q->cols; i++) {
            int k = q->g_idx ? q->g_idx[i] : i / g;
            o[i] = ((float)c[i] - ze[k]) * sc[k];
        }
    }
}

/* backend copy of host floats; *dst NULL on error */
static int to_backend(float **dst, const float *src, size_t n, qs_backend *be, const char *what, qs_error *err) {
    *dst = be->ops->alloc(be, sizeof(float) * n);
    QS_RETURN_ERROR_IF(!*dst, -ENOMEM, "out of %s memory for %s (%zu bytes)", be->ops->name, what, sizeof(float) * n);
    return be->ops->upload(be, *dst, src, sizeof(float) * n, err);
}

static const char *const sites[3] = {"attn_in", "mlp_in", "down_in"};

int qs_qblock_reasm_read(const qs_shard *s, int site, int C, int32_t **src_a, int32_t **src_b, float **coef,
                         const char *path, qs_error *err) {
    char na[64], nb[64], nc[64];
    *src_a = *src_b = NULL, *coef = NULL;
    snprintf(na, sizeof na, "reassembly.%s.src_a", sites[site]);
    snprintf(nb, sizeof nb, "reassembly.%s.src_b", sites[site]);
    snprintf(nc, sizeof nc, "reassembly.%s.coef", sites[site]);
    if (!qs_shard_find(s, na)) return 0;
    int rc = read_entry(s, na, QS_DTYPE_I32, sizeof(int32_t) * (size_t)C, (void **)src_a, err);
    if (!rc) rc = read_entry(s, nb, QS_DTYPE_I32, sizeof(int32_t) * (size_t)C, (void **)src_b, err);
    if (!rc) rc = read_entry(s, nc, QS_DTYPE_F32, sizeof(float) * (size_t)C, (void **)coef, err);
    for (int j = 0; !rc && j < C; j++)
        if ((*src_a)[j] < 0 || (*src_a)[j] >= C || (*src_b)[j] < -1 || (*src_b)[j] >= C || !isfinite((*coef)[j]))
            rc = qs_error_set(err, QS_EFORMAT, "%s: reassembly map %s has a bad entry at %d", path, sites[site], j);
    if (rc) {
        free(*src_a), free(*src_b), free(*coef);
        *src_a = *src_b = NULL, *coef = NULL;
    }
    return rc;
}

int qs_qblock_load(qs_llama_weights *w, const char *out_dir, const qs_manifest *man, const qs_model_config *c,
                   int layer, qs_backend *be, qs_error *err) {
    memset(w, 0, sizeof *w);
    w->layer = layer;
    const qs_manifest_block *b = qs_manifest_find(man, layer);
    QS_RETURN_ERROR_IF(!b, QS_EFORMAT, "%s: block %d is not finished (not in manifest.json)", out_dir, layer);
    char *path = qs_path_join(out_dir, b->file);
    qs_shard *s = NULL;
    int rc = qs_shard_open(&s, path, err);
    if (!rc && qs_shard_file_xxh3(s) != b->xxh3)
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: file hash differs from manifest.json's record of block %d", path, layer);
    if (!rc && qs_shard_block(s) != layer)
        rc = qs_error_set(err, QS_EFORMAT, "%s: holds block %d, manifest.json says %d", path, qs_shard_block(s), layer);
    qs_qblock_meta m;
    if (!rc) rc = qs_qblock_meta_read(s, &m, err);
    if (!rc) w->abits = m.abits;
    const int H = c->hidden_size, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate_size;
    const int shapes[QS_N_LINEAR][2] = {{Q, H}, {KV, H}, {KV, H}, {H, Q}, {I, H}, {I, H}, {H, I}};
    float **lin[QS_N_LINEAR] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    for (int i = 0; i < QS_N_LINEAR && !rc; i++) {
        qs_qlinear ql;
        rc = qs_qlinear_read(&ql, s, qs_linear_names[i], err);
        if (rc) break;
        if (ql.rows != shapes[i][0] || ql.cols != shapes[i][1])
            rc = qs_error_set(err, QS_EFORMAT, "%s: %s is [%d, %d], config.json says [%d, %d]", path, qs_linear_names[i],
                              ql.rows, ql.cols, shapes[i][0], shapes[i][1]);
        float *host = rc ? NULL : malloc(sizeof(float) * (size_t)ql.rows * ql.cols);
        if (!rc && !host) rc = qs_error_set(err, -ENOMEM, "%s: out of memory for %s", path, qs_linear_names[i]);
        if (!rc) {
            qs_qlinear_dequant(&ql, host);
            rc = to_backend(lin[i], host, (size_t)ql.rows * ql.cols, be, qs_linear_names[i], err);
        }
        free(host);
        qs_qlinear_free(&ql);
    }
    const char *vec_names[5] = {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.bias",
                                "self_attn.k_proj.bias", "self_attn.v_proj.bias"};
    float **vec[5] = {&w->attn_norm, &w->ffn_norm, &w->bq, &w->bk, &w->bv};
    const int len[5] = {H, H, Q, KV, KV};
    for (int i = 0; i < (c->attention_bias ? 5 : 2) && !rc; i++) {
        float *host = NULL;
        size_t n = 0;
        rc = qs_shard_read_f32(s, vec_names[i], &host, &n, err);
        if (!rc && n != (size_t)len[i])
            rc = qs_error_set(err, QS_EFORMAT, "%s: %s has %zu values, config.json says %d", path, vec_names[i], n, len[i]);
        if (!rc) rc = to_backend(vec[i], host, n, be, vec_names[i], err);
        free(host);
    }
    /* channel reassembly (QLLM): gathers fused into the norms and the SwiGLU product */
    const int site_dim[3] = {H, H, I};
    for (int k = 0; k < 3 && !rc; k++) {
        const size_t C = (size_t)site_dim[k];
        int32_t *a = NULL, *bb = NULL;
        float *cf = NULL;
        rc = qs_qblock_reasm_read(s, k, (int)C, &a, &bb, &cf, path, err);
        if (!rc && !a) continue; /* no gather at this site */
        if (!rc) {
            w->ra[k].src_a = be->ops->alloc(be, sizeof(int32_t) * C);
            w->ra[k].src_b = be->ops->alloc(be, sizeof(int32_t) * C);
            w->ra[k].coef = be->ops->alloc(be, sizeof(float) * C);
            if (!w->ra[k].src_a || !w->ra[k].src_b || !w->ra[k].coef) rc = qs_error_set(err, -ENOMEM, "out of memory");
        }
        if (!rc) rc = be->ops->upload(be, w->ra[k].src_a, a, sizeof(int32_t) * C, err);
        if (!rc) rc = be->ops->upload(be, w->ra[k].src_b, bb, sizeof(int32_t) * C, err);
        if (!rc) rc = be->ops->upload(be, w->ra[k].coef, cf, sizeof(float) * C, err);
        free(a), free(bb), free(cf);
    }
    qs_shard_close(s);
    free(path);
    if (rc) {
        int keep = w->layer;
        qs_llama_weights_free(w, be);
        w->layer = keep;
    }
    return rc;
}
