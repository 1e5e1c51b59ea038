#include "model/eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/registry.h"
#include "base/clock.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/llama_block.h"
#include "model/rope.h"

#define ROW_CHUNK 4096   /* embedding / LM-head rows read at a time */
#define TOKEN_CHUNK 8192 /* tokens per block call (a multiple of whole windows) */

typedef struct run {
    qs_catalog *cat;
    qs_model_config cfg;
    qs_backend *be;
    float *h;     /* [n_seq * seqlen, hidden] hidden states of every window */
    int n_seq, seqlen;
    const qs_tensor_info *head; /* [vocab, hidden]: lm_head or the tied embedding */
} run;

static void run_free(run *r) {
    if (r->be) {
        if (r->h) r->be->ops->free(r->be, r->h);
        r->be->ops->destroy(r->be);
    }
    qs_catalog_free(r->cat);
    memset(r, 0, sizeof *r);
}

/* h[t] = embed_tokens[ids[t]], reading the table ROW_CHUNK rows at a time */
static int embed(run *r, const int32_t *ids, qs_error *err) {
    const qs_tensor_info *e = qs_catalog_find(r->cat, "model.embed_tokens.weight");
    int H = r->cfg.hidden_size;
    long T = (long)r->n_seq * r->seqlen;
    if (!e || e->n_dims != 2 || e->shape[1] != H || e->shape[0] < r->cfg.vocab_size)
        return qs_error_set(err, QS_EFORMAT, "%s: model.embed_tokens.weight is missing or not [%d, %d]",
                            qs_catalog_file_path(r->cat, 0), r->cfg.vocab_size, H);
    for (long t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= e->shape[0])
            return qs_error_set(err, -EINVAL, "token id %d at position %ld is outside the vocabulary (%lld)", ids[t], t,
                                (long long)e->shape[0]);
    float *rows = malloc(sizeof(float) * ROW_CHUNK * (size_t)H);
    if (!rows) return qs_error_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    for (int64_t r0 = 0; r0 < e->shape[0] && !rc; r0 += ROW_CHUNK) {
        int64_t n = e->shape[0] - r0 < ROW_CHUNK ? e->shape[0] - r0 : ROW_CHUNK;
        rc = qs_catalog_read_rows_f32(r->cat, e, r0, n, rows, err);
        for (long t = 0; t < T && !rc; t++)
            if (ids[t] >= r0 && ids[t] < r0 + n)
                rc = r->be->ops->upload(r->be, r->h + (size_t)t * H, rows + (size_t)(ids[t] - r0) * H, sizeof(float) * H, err);
    }
    free(rows);
    return rc;
}

/* embeddings -> every block -> final norm, in r->h */
static int forward_all(run *r, const char *dir, const int32_t *ids, int n_seq, int seqlen, int threads,
                       const char *device, int progress, qs_error *err) {
    memset(r, 0, sizeof *r);
    r->n_seq = n_seq, r->seqlen = seqlen;
    int rc = qs_config_load(&r->cfg, dir, err);
    if (!rc) rc = qs_catalog_open(&r->cat, dir, err);
    if (!rc) rc = qs_backend_create(&r->be, device ? device : "cpu", threads, err);
    if (rc) return rc;
    const qs_model_config *c = &r->cfg;
    if (c->sliding_window > 0 && seqlen > c->sliding_window)
        fprintf(stderr, "qstream: warning: seqlen %d exceeds the sliding window %d, which is not applied\n", seqlen, c->sliding_window);
    size_t T = (size_t)n_seq * seqlen;
    r->h = r->be->ops->alloc(r->be, sizeof(float) * T * c->hidden_size);
    if (!r->h) return qs_error_set(err, -ENOMEM, "out of memory for the hidden states of %zu tokens", T);
    r->head = qs_catalog_find(r->cat, c->tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    if (!r->head || r->head->n_dims != 2 || r->head->shape[1] != c->hidden_size)
        return qs_error_set(err, QS_EFORMAT, "%s: %s is missing or has the wrong shape", dir,
                            c->tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    QS_FORWARD_IF_ERROR(embed(r, ids, err));
    qs_rope_table rope;
    QS_FORWARD_IF_ERROR(qs_rope_table_init(&rope, c, seqlen, err));
    int per_call = TOKEN_CHUNK / seqlen > 0 ? TOKEN_CHUNK / seqlen : 1;
    if (per_call > n_seq) per_call = n_seq;
    qs_block_scratch s;
    rc = qs_block_scratch_init(&s, c, per_call * seqlen, r->be, err);
    for (int L = 0; L < c->n_layers && !rc; L++) {
        double t0 = qs_now();
        qs_block_weights w;
        rc = qs_block_weights_load(&w, r->cat, c, L, r->be, err);
        for (int q = 0; q < n_seq && !rc; q += per_call) {
            int n = n_seq - q < per_call ? n_seq - q : per_call;
            rc = qs_block_forward(r->be, c, &w, &rope, r->h + (size_t)q * seqlen * c->hidden_size, n, seqlen, &s, err);
        }
        if (!rc) qs_block_weights_free(&w, r->be);
        if (progress && !rc) fprintf(stderr, "eval: block %d/%d %.2f s\n", L + 1, c->n_layers, qs_now() - t0);
    }
    qs_block_scratch_free(&s, r->be);
    qs_rope_table_free(&rope);
    if (rc) return rc;
    float *g = malloc(sizeof(float) * c->hidden_size), *gd = r->be->ops->alloc(r->be, sizeof(float) * c->hidden_size);
    const qs_tensor_info *nt = qs_catalog_find(r->cat, "model.norm.weight");
    if (!g || !gd) rc = qs_error_set(err, -ENOMEM, "out of memory");
    else if (!nt || nt->n_elems != (uint64_t)c->hidden_size) rc = qs_error_set(err, QS_EFORMAT, "%s: model.norm.weight is missing", dir);
    else rc = qs_catalog_read_f32(r->cat, nt, g, err);
    if (!rc) rc = r->be->ops->upload(r->be, gd, g, sizeof(float) * c->hidden_size, err);
    if (!rc) r->be->ops->rmsnorm(r->be, r->h, r->h, gd, (int)T, c->hidden_size, c->rms_eps);
    free(g);
    if (gd) r->be->ops->free(r->be, gd);
    return rc;
}

int qs_eval_perplexity(const char *dir, const int32_t *ids, size_t n_ids, const qs_eval_opts *o, qs_eval_result *res,
                       qs_error *err) {
    double t_start = qs_now();
    int L = o->seqlen;
    QS_RETURN_ERROR_IF(L < 2, QS_EUSAGE, "seqlen must be at least 2");
    long n_seq = (long)(n_ids / (size_t)L);
    if (o->max_windows > 0 && n_seq > o->max_windows) n_seq = o->max_windows;
    QS_RETURN_ERROR_IF(n_seq < 1, QS_EUSAGE, "the text has %zu tokens, fewer than one window of %d", n_ids, L);
    run r;
    int rc = forward_all(&r, dir, ids, (int)n_seq, L, o->threads, o->device, o->progress, err);
    if (rc) {
        run_free(&r);
        return rc;
    }
    const qs_model_config *c = &r.cfg;
    int H = c->hidden_size, V = (int)r.head->shape[0];
    size_t T = (size_t)n_seq * L;
    double *mx = malloc(sizeof(double) * T), *se = malloc(sizeof(double) * T), *tgt = malloc(sizeof(double) * T);
    float *w = malloc(sizeof(float) * ROW_CHUNK * (size_t)H);
    const int G = 2048; /* tokens per LM-head GEMM */
    float *lg = malloc(sizeof(float) * (size_t)G * ROW_CHUNK);
    float *wd = r.be->ops->alloc(r.be, sizeof(float) * ROW_CHUNK * (size_t)H);
    if (!mx || !se || !tgt || !w || !lg || !wd) rc = qs_error_set(err, -ENOMEM, "out of memory for the LM head");
    for (size_t t = 0; !rc && t < T; t++) mx[t] = -INFINITY, se[t] = 0, tgt[t] = NAN;
    for (int v0 = 0; v0 < V && !rc; v0 += ROW_CHUNK) {
        int vc = V - v0 < ROW_CHUNK ? V - v0 : ROW_CHUNK;
        rc = qs_catalog_read_rows_f32(r.cat, r.head, v0, vc, w, err);
        if (!rc) rc = r.be->ops->upload(r.be, wd, w, sizeof(float) * (size_t)vc * H, err);
        for (size_t t0 = 0; t0 < T && !rc; t0 += G) {
            int g = T - t0 < (size_t)G ? (int)(T - t0) : G;
            r.be->ops->gemm(r.be, 0, 1, g, vc, H, 1.0f, r.h + t0 * H, H, wd, H, 0.0f, lg, vc); /* CPU: host memory */
#pragma omp parallel for schedule(static)
            for (int i = 0; i < g; i++) {
                size_t t = t0 + (size_t)i;
                if ((long)(t % L) == L - 1) continue; /* the last position of a window predicts nothing */
                const float *row = lg + (size_t)i * vc;
                float m = row[0];
                for (int j = 1; j < vc; j++) m = row[j] > m ? row[j] : m;
                double s = 0;
                for (int j = 0; j < vc; j++) s += expf(row[j] - m);
                if (m > mx[t]) { /* online log-sum-exp */
                    se[t] = se[t] * exp(mx[t] - m) + s;
                    mx[t] = m;
                } else {
                    se[t] += s * exp(m - mx[t]);
                }
                int32_t y = ids[t + 1];
                if (y >= v0 && y < v0 + vc) tgt[t] = row[y - v0];
            }
        }
    }
    double nll = 0;
    long count = 0;
    for (size_t t = 0; !rc && t < T; t++) {
        if ((long)(t % L) == L - 1) continue;
        nll += mx[t] + log(se[t]) - tgt[t];
        count++;
    }
    if (!rc) {
        res->nll = nll / count;
        res->ppl = exp(res->nll);
        res->tokens = count;
        res->windows = (int)n_seq;
        res->seconds = qs_now() - t_start;
        if (!isfinite(res->ppl)) rc = qs_error_set(err, QS_EFORMAT, "%s: perplexity is not finite (NaN or Inf in the model?)", dir);
    }
    free(mx);
    free(se);
    free(tgt);
    free(w);
    free(lg);
    if (wd) r.be->ops->free(r.be, wd);
    run_free(&r);
    return rc;
}

int qs_eval_logits(const char *dir, const int32_t *ids, int n, int threads, float **out, int *vocab, qs_error *err) {
    *out = NULL;
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "no token ids");
    run r;
    int rc = forward_all(&r, dir, ids, 1, n, threads, "cpu", 0, err);
    if (!rc) {
        int H = r.cfg.hidden_size, V = (int)r.head->shape[0];
        float *w = malloc(sizeof(float) * (size_t)V * H), *lg = malloc(sizeof(float) * (size_t)n * V);
        if (!w || !lg) rc = qs_error_set(err, -ENOMEM, "out of memory");
        if (!rc) rc = qs_catalog_read_f32(r.cat, r.head, w, err);
        if (!rc) r.be->ops->gemm(r.be, 0, 1, n, V, H, 1.0f, r.h, H, w, H, 0.0f, lg, V);
        free(w);
        if (rc) free(lg);
        else *out = lg, *vocab = V;
    }
    run_free(&r);
    return rc;
}
