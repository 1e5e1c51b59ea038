/* model/eval.c - streamed perplexity: embedding, blocks one at a time (model/llama_stream.c),
 * then the LM head over vocabulary chunks with an online log-sum-exp per position. */
#include "model/eval.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "base/clock.h"
#include "model/llama_stream.h"

#define HEAD_TOKENS 2048 /* tokens per LM-head GEMM: logits scratch [HEAD_TOKENS, ROW_CHUNK] */

/* the LM head's NLL: nll[t] = logsumexp(logits[t, :]) - logits[t, target[t]] for every t whose
 * target >= 0; h [T, hidden] (host) holds the final-normed hidden states */
static int head_nll(qs_llama_model *m, const float *h, size_t T, const int32_t *target, float *nll, qs_error *err) {
    qs_backend *be = m->be;
    const qs_backend_ops *o = be->ops;
    const int H = m->cfg.hidden_size, V = (int)m->head->shape[0], VC = QS_LLAMA_ROW_CHUNK;
    const int G = T < HEAD_TOKENS ? (int)T : HEAD_TOKENS;
    float *rows = malloc(sizeof(float) * (size_t)VC * H), *mx = malloc(sizeof(float) * T),
          *se = malloc(sizeof(float) * T), *tl = malloc(sizeof(float) * T);
    float *wd = o->alloc(be, sizeof(float) * (size_t)VC * H), *hd = o->alloc(be, sizeof(float) * (size_t)G * H),
          *ld = o->alloc(be, sizeof(float) * (size_t)G * VC);
    float *mxd = o->alloc(be, sizeof(float) * T), *sed = o->alloc(be, sizeof(float) * T),
          *tld = o->alloc(be, sizeof(float) * T);
    int32_t *tgd = o->alloc(be, sizeof(int32_t) * T);
    int rc = rows && mx && se && tl && wd && hd && ld && mxd && sed && tld && tgd
                 ? 0
                 : qs_error_set(err, -ENOMEM, "LM head: out of memory for %zu tokens", T);
    for (size_t t = 0; t < T && !rc; t++) mx[t] = -INFINITY, se[t] = 0.0f, tl[t] = NAN;
    if (!rc) rc = o->upload(be, mxd, mx, sizeof(float) * T, err);
    if (!rc) rc = o->upload(be, sed, se, sizeof(float) * T, err);
    if (!rc) rc = o->upload(be, tld, tl, sizeof(float) * T, err);
    if (!rc) rc = o->upload(be, tgd, target, sizeof(int32_t) * T, err);
    if (!rc && o->set_window_rows) rc = o->set_window_rows(be, 0, err); /* chunks of G tokens from token 0 */
    /* vocabulary outer, tokens inner: every LM-head row is read from disk once */
    for (int v0 = 0; v0 < V && !rc; v0 += VC) {
        int vc = V - v0 < VC ? V - v0 : VC;
        rc = qs_llama_head_rows(m, v0, vc, rows, err);
        if (!rc) rc = o->upload(be, wd, rows, sizeof(float) * (size_t)vc * H, err);
        for (size_t t0 = 0; t0 < T && !rc; t0 += (size_t)G) {
            int g = T - t0 < (size_t)G ? (int)(T - t0) : G;
            rc = o->upload(be, hd, h + t0 * H, sizeof(float) * (size_t)g * H, err);
            if (!rc) rc = o->gemm(be, 0, 1, g, vc, H, 1.0f, hd, H, wd, H, 0.0f, ld, vc, err); /* [g, vc] logits */
            if (!rc) rc = o->lse_update(be, ld, g, vc, v0, tgd + t0, mxd + t0, sed + t0, tld + t0, err);
        }
    }
    if (!rc) rc = o->download(be, mx, mxd, sizeof(float) * T, err);
    if (!rc) rc = o->download(be, se, sed, sizeof(float) * T, err);
    if (!rc) rc = o->download(be, tl, tld, sizeof(float) * T, err);
    for (size_t t = 0; t < T && !rc; t++)
        nll[t] = target[t] >= 0 ? (float)((double)mx[t] + log((double)se[t]) - tl[t]) : 0.0f;
    free(rows), free(mx), free(se), free(tl);
    o->free(be, wd), o->free(be, hd), o->free(be, ld);
    o->free(be, mxd), o->free(be, sed), o->free(be, tld), o->free(be, tgd);
    return rc;
}

int qs_eval_perplexity(const char *dir, const int32_t *ids, size_t n_ids, const qs_eval_opts *opts,
                       qs_eval_result *res, qs_error *err) {
    double t_start = qs_now();
    const int L = opts->seqlen;
    QS_RETURN_ERROR_IF(L < 2, QS_EUSAGE, "seqlen %d: a window needs at least 2 tokens", L);
    size_t n_win = n_ids / (size_t)L; /* the tail that does not fill a window is dropped */
    if (opts->max_windows > 0 && n_win > (size_t)opts->max_windows) n_win = (size_t)opts->max_windows;
    QS_RETURN_ERROR_IF(n_win < 1, QS_EUSAGE, "the text has %zu tokens, fewer than one window of %d", n_ids, L);
    QS_RETURN_ERROR_IF(n_win > (size_t)(0x7fffffff / L), QS_EUSAGE, "%zu windows of %d tokens are too many", n_win, L);
    qs_llama_model m;
    QS_FORWARD_IF_ERROR(qs_llama_model_open(&m, dir, opts->device, opts->threads, err));
    m.verbose = opts->progress;
    m.load_block = opts->load_block;
    m.load_ctx = opts->load_ctx;
    const size_t T = n_win * (size_t)L;
    const int H = m.cfg.hidden_size;
    float *h = malloc(sizeof(float) * T * H); /* [n_win, L, hidden] hidden states of every window */
    float *nll = malloc(sizeof(float) * T);
    int32_t *target = malloc(sizeof(int32_t) * T); /* next token, -1 at the last position of a window */
    int rc = h && nll && target ? 0
                                : qs_error_set(err, -ENOMEM, "out of memory for the hidden states of %zu tokens (%zu bytes)",
                                               T, sizeof(float) * T * H);
    for (size_t t = 0; t < T && !rc; t++) target[t] = t % (size_t)L == (size_t)L - 1 ? -1 : ids[t + 1];
    if (!rc) rc = qs_llama_embed(&m, ids, T, h, err);
    if (!rc) rc = qs_llama_run_blocks(&m, h, (int)n_win, L, err);
    double t_head = qs_now();
    if (!rc) rc = head_nll(&m, h, T, target, nll, err);
    if (!rc) {
        double sum = 0; /* in token order: the same bits whatever the thread count */
        long count = 0;
        for (size_t t = 0; t < T; t++)
            if (target[t] >= 0) sum += nll[t], count++;
        res->nll = sum / (double)count;
        res->ppl = exp(res->nll);
        res->tokens = (long)T;
        res->predicted = count;
        res->windows = (int)n_win;
        res->seconds_load = m.t_load;
        res->seconds_blocks = m.t_blocks;
        res->seconds_head = qs_now() - t_head;
        res->seconds = qs_now() - t_start;
        if (!isfinite(res->ppl))
            rc = qs_error_set(err, QS_EFORMAT, "%s: perplexity is not finite (NaN or Inf in the weights?)", dir);
    }
    free(h), free(nll), free(target);
    qs_llama_model_close(&m);
    return rc;
}
