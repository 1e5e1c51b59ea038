/* model/llama_stream.c - embedding gather, streamed blocks, final norm. */
#include "model/llama_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/registry.h"
#include "base/clock.h"
#include "model/llama_forward.h"
#include "model/llama_weights.h"

#define TOKENS_PER_CALL 4096 /* tokens of whole windows per block call (at least one window) */

void qs_llama_model_close(qs_llama_model *m) {
    qs_backend_free(m->be);
    qs_catalog_free(m->cat);
    memset(m, 0, sizeof *m);
}

/* the [rows, hidden] matrix or [hidden] vector `name`, or a clear error */
static int find_matrix(const qs_tensor_info **out, qs_llama_model *m, const char *name, int64_t rows, qs_error *err) {
    const qs_tensor_info *t = qs_catalog_find(m->cat, name);
    const char *file = qs_catalog_file_path(m->cat, t ? t->file_index : 0);
    QS_RETURN_ERROR_IF(!t, QS_EFORMAT, "%s: tensor '%s' is missing", file, name);
    int H = m->cfg.hidden_size;
    int ok = rows ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == H : t->n_dims == 1 && t->shape[0] == H;
    QS_RETURN_ERROR_IF(!ok, QS_EFORMAT, "%s: tensor '%s' has %d dims [%lld, ...], config.json says [%lld%s%d]", file, name,
                       t->n_dims, (long long)t->shape[0], (long long)(rows ? rows : H), rows ? ", " : "",
                       rows ? H : 0);
    *out = t;
    return 0;
}

int qs_llama_model_open(qs_llama_model *m, const char *dir, const char *device, int threads, qs_error *err) {
    memset(m, 0, sizeof *m);
    m->dir = dir;
    int rc = qs_config_load(&m->cfg, dir, err);
    if (!rc) rc = qs_catalog_open(&m->cat, dir, err);
    const qs_model_config *c = &m->cfg;
    if (!rc && (c->hidden_size < 1 || c->n_layers < 1 || c->vocab_size < 1 || c->head_dim < 2))
        rc = qs_error_set(err, QS_EFORMAT, "%s/config.json: hidden %d, layers %d, vocab %d, head_dim %d", dir,
                          c->hidden_size, c->n_layers, c->vocab_size, c->head_dim);
    if (!rc) rc = find_matrix(&m->embed, m, "model.embed_tokens.weight", c->vocab_size, err);
    if (!rc) rc = find_matrix(&m->norm, m, "model.norm.weight", 0, err);
    if (!rc) {
        if (c->tie_word_embeddings && !qs_catalog_find(m->cat, "lm_head.weight")) m->head = m->embed;
        else rc = find_matrix(&m->head, m, "lm_head.weight", c->vocab_size, err);
    }
    if (!rc) rc = qs_backend_create(&m->be, device ? device : "cpu", threads, err);
    if (rc) qs_llama_model_close(m);
    return rc;
}

int qs_llama_head_rows(qs_llama_model *m, int v0, int n, float *dst, qs_error *err) {
    return qs_catalog_read_rows_f32(m->cat, m->head, v0, n, dst, err);
}

int qs_llama_embed(qs_llama_model *m, const int32_t *ids, size_t n, float *h, qs_error *err) {
    double t0 = qs_now();
    const int H = m->cfg.hidden_size;
    const int64_t V = m->embed->shape[0];
    for (size_t t = 0; t < n; t++)
        QS_RETURN_ERROR_IF(ids[t] < 0 || ids[t] >= V, QS_EUSAGE,
                           "token id %d at position %zu is outside the vocabulary of %lld", ids[t], t, (long long)V);
    /* read only the row chunks that hold a used id; gather each token's row from its chunk */
    float *rows = malloc(sizeof(float) * QS_LLAMA_ROW_CHUNK * (size_t)H);
    if (!rows) return qs_error_set(err, -ENOMEM, "embedding: out of memory for %d rows", QS_LLAMA_ROW_CHUNK);
    int rc = 0;
    for (int64_t r0 = 0; r0 < V && !rc; r0 += QS_LLAMA_ROW_CHUNK) {
        int64_t nr = V - r0 < QS_LLAMA_ROW_CHUNK ? V - r0 : QS_LLAMA_ROW_CHUNK;
        int used = 0;
        for (size_t t = 0; t < n && !used; t++) used = ids[t] >= r0 && ids[t] < r0 + nr;
        if (!used) continue;
        rc = qs_catalog_read_rows_f32(m->cat, m->embed, r0, nr, rows, err);
        for (size_t t = 0; t < n && !rc; t++)
            if (ids[t] >= r0 && ids[t] < r0 + nr)
                memcpy(h + t * H, rows + (size_t)(ids[t] - r0) * H, sizeof(float) * H);
    }
    free(rows);
    m->t_embed += qs_now() - t0;
    return rc;
}

/* the final RMSNorm of h [n, hidden] (host), through the backend in calls of `per` rows */
static int final_norm(qs_llama_model *m, float *h, size_t n, float *dev, int per, qs_error *err) {
    qs_backend *be = m->be;
    const int H = m->cfg.hidden_size;
    float *g = malloc(sizeof(float) * H), *gd = be->ops->alloc(be, sizeof(float) * H);
    int rc = g && gd ? qs_catalog_read_f32(m->cat, m->norm, g, err)
                     : qs_error_set(err, -ENOMEM, "final norm: out of memory");
    if (!rc) rc = be->ops->upload(be, gd, g, sizeof(float) * H, err);
    for (size_t t0 = 0; t0 < n && !rc; t0 += (size_t)per) {
        int k = n - t0 < (size_t)per ? (int)(n - t0) : per;
        size_t bytes = sizeof(float) * (size_t)k * H;
        rc = be->ops->upload(be, dev, h + t0 * H, bytes, err);
        if (!rc) rc = be->ops->rmsnorm(be, dev, dev, gd, k, H, m->cfg.rms_eps, NULL, err);
        if (!rc) rc = be->ops->download(be, h + t0 * H, dev, bytes, err);
    }
    free(g);
    be->ops->free(be, gd);
    return rc;
}

int qs_llama_run_blocks(qs_llama_model *m, float *h, int n_win, int L, qs_error *err) {
    const qs_model_config *c = &m->cfg;
    qs_backend *be = m->be;
    const int H = c->hidden_size;
    QS_RETURN_ERROR_IF(n_win < 1 || L < 1, QS_EUSAGE, "%d windows of %d tokens", n_win, L);
    int per = TOKENS_PER_CALL / L > 0 ? TOKENS_PER_CALL / L : 1; /* windows per block call */
    if (per > n_win) per = n_win;
    qs_llama_scratch s;
    QS_FORWARD_IF_ERROR(qs_llama_scratch_init(&s, c, per * L, be, err));
    float *x = be->ops->alloc(be, sizeof(float) * (size_t)per * L * H); /* [per*L, hidden] */
    int rc = x ? 0 : qs_error_set(err, -ENOMEM, "out of %s memory for %d tokens of hidden states", be->ops->name, per * L);
    for (int layer = 0; layer < c->n_layers && !rc; layer++) {
        double t0 = qs_now();
        qs_llama_weights w;
        rc = m->load_block ? m->load_block(m->load_ctx, layer, &w, be, err)
                           : qs_llama_weights_load(&w, m->cat, c, layer, be, err);
        double t1 = qs_now();
        m->t_load += t1 - t0;
        for (int q = 0; q < n_win && !rc; q += per) {
            int k = n_win - q < per ? n_win - q : per;
            size_t bytes = sizeof(float) * (size_t)k * L * H;
            float *hq = h + (size_t)q * L * H;
            rc = be->ops->upload(be, x, hq, bytes, err);
            if (!rc) rc = qs_llama_block_forward(be, c, &w, x, k, L, &s, err);
            if (!rc) rc = be->ops->download(be, hq, x, bytes, err);
        }
        qs_llama_weights_free(&w, be);
        m->t_blocks += qs_now() - t1;
        if (m->verbose && !rc)
            fprintf(stderr, "block %d/%d: load %.2f s, forward %.2f s\n", layer + 1, c->n_layers, t1 - t0, qs_now() - t1);
    }
    if (!rc) rc = final_norm(m, h, (size_t)n_win * L, x, per * L, err);
    be->ops->free(be, x);
    qs_llama_scratch_free(&s, be);
    return rc;
}
