/* pipeline/compute_gptq.c - COMPUTE for GPTQ: the block's weights as float in backend memory;
 * true-sequential stages {q, k, v} -> {o} -> {gate, up} -> {down}, each stage's Hessian taken
 * over every calibration token from inputs produced by the already-quantized earlier stages
 * (fake-quantized as the layer sees them in weight-activation settings), accumulated in backend
 * memory by the backend's GEMM and downloaded once per stage; then the calibration
 * states advance through the quantized block: the next block's input is this block's output. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/quantize_internal.h"
#include "quant/gptq.h"

typedef struct stage {
    qs_llama_stop stop;
    int lin[3], n;
} stage;

static const stage stages[4] = {
    {QS_STOP_QKV_IN, {0, 1, 2}, 3}, {QS_STOP_O_IN, {3}, 1}, {QS_STOP_GU_IN, {4, 5}, 2}, {QS_STOP_DOWN_IN, {6}, 1}};

static float **other_field(qs_llama_weights *w, int k) {
    float **f[QS_N_OTHER] = {&w->attn_norm, &w->ffn_norm, &w->bq, &w->bk, &w->bv};
    return f[k];
}

static int be_dtype(qs_dtype d) { return d == QS_DTYPE_F16 ? QS_BE_F16 : d == QS_DTYPE_BF16 ? QS_BE_BF16 : QS_BE_F32; }

int qs_weights_from_slot(qs_qrun *q, qs_qslot *s, int blk, qs_llama_weights *w, qs_error *err) {
    qs_backend *be = q->lm.be;
    memset(w, 0, sizeof *w);
    w->layer = blk;
    w->abits = q->o->abits;
    int rc = 0;
    for (size_t i = 0; i < s->n && !rc; i++) {
        const qs_tensor_info *t = s->t[i];
        size_t bytes = sizeof(float) * t->n_elems;
        /* the linears' host copy only where the tensor is not staged: LOAD put it on the
         * device as stored, and it widens there (norms and biases: a host copy for STORE too) */
        const int need_host = !s->staged || i >= QS_N_LINEAR;
        float *host = need_host ? malloc(bytes) : NULL, *dev = be->ops->alloc(be, bytes);
        if ((need_host && !host) || !dev) {
            free(host);
            be->ops->free(be, dev);
            rc = qs_error_set(err, -ENOMEM, "block %d: out of memory for tensor '%s' as float (%zu bytes)", blk, t->name, bytes);
            break;
        }
        if (host) qs_qrun_to_f32(t, s->r[i].data, t->n_elems, host);
        if (s->staged) rc = be->ops->to_f32(be, dev, (char *)s->staged + s->staged_off[i], t->n_elems, be_dtype(t->dtype), err);
        else rc = be->ops->upload(be, dev, host, bytes, err);
        if (i < QS_N_LINEAR) {
            *qs_llama_linear_slot(w, (int)i) = dev;
            free(host);
        } else {
            for (int k = 0; k < QS_N_OTHER; k++)
                if (strstr(t->name, qs_block_other_names[k])) *other_field(w, k) = dev, s->other[k] = host;
        }
    }
    if (s->staged) be->ops->free(be, s->staged); /* stream-ordered: after the conversions */
    s->staged = NULL;
    return rc;
}

int qs_gptq_weights_bf16(qs_qrun *q, qs_llama_weights *w, qs_error *err) {
    size_t n[QS_N_LINEAR];
    qs_llama_linear_sizes(&q->cfg, n);
    for (int i = 0; i < QS_N_LINEAR; i++) QS_FORWARD_IF_ERROR(qs_llama_weights_to_bf16(w, i, n[i], q->lm.be, err));
    return 0;
}

/* GPTQ of linear i with Hessian h (host, consumed) or hd (backend memory, kept); the dequantized
 * result replaces the float weights; the codes wait in out->codes for STORE */
static int quantize_linear(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, int i, float *h, const float *hd, qs_error *err) {
    const qs_quantize_opts *o = q->o;
    qs_backend *be = q->lm.be;
    const qs_tensor_info *t = s->t[i];
    const int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(&o->q, cols);
    const size_t n = (size_t)rows * cols;
    qs_qlin_out *out = &s->lin[i];
    float *wh = malloc(sizeof(float) * n);
    out->codes = malloc(n);
    out->scales = malloc(sizeof(float) * (size_t)rows * ng);
    out->zeros = malloc(sizeof(float) * (size_t)rows * ng);
    out->g_idx = malloc(sizeof(int32_t) * (size_t)cols);
    int rc = wh && out->codes && out->scales && out->zeros && out->g_idx
                 ? 0
                 : qs_error_set(err, -ENOMEM, "block %d: out of memory for GPTQ of %s", w->layer, t->name);
    qs_gptq_stats st = {0};
    uint8_t *codes_be = NULL;
    if (!rc) {
        /* the layer as stored, widened on the host: the bits of the backend's copy (to_f32 or
         * this same conversion uploaded), which GPTQ has not touched yet, without a download */
        qs_qrun_to_f32(t, s->r[i].data, n, wh);
        qs_gptq_opts go = {.q = o->q, .damp = o->damp, .block_size = o->gptq_block, .act_order = o->act_order,
                           .static_groups = o->static_groups, .be = be, .h_be = hd, .w_be = *qs_llama_linear_slot(w, i),
                           .in_place_reorder = q->gptq_reorder_in_place, .w_be_only = 1,
                           .codes_be = q->defer_codes ? &codes_be : NULL};
        rc = qs_gptq_quantize(wh, rows, cols, h, &go, out->codes, out->scales, out->zeros, out->g_idx, &st, t->name, err);
        out->loss = st.loss;
        if (codes_be) { /* out->codes is filled once they are down */
            if (!rc) rc = qs_result_defer(q, out->codes, codes_be, n, err);
            else be->ops->free(be, codes_be);
        }
    }
    if (!rc) {
        int in_order = 1;
        int g = o->q.group > 0 ? o->q.group : cols;
        for (int c = 0; c < cols && in_order; c++) in_order = out->g_idx[c] == c / g;
        if (in_order) free(out->g_idx), out->g_idx = NULL;
        /* the weights the next stages and blocks see are exactly what the shard dequantizes to
         * (wh holds them where the backend's copy does not: qs_qlinear_dequant's formula) */
        if (!st.w_be_done) rc = be->ops->upload(be, *qs_llama_linear_slot(w, i), wh, sizeof(float) * n, err);
    }
    free(wh);
    return rc;
}

/* one call's windows into the stage's Hessian: the block up to the stage's input, quantized as
 * the layers see it, then one GEMM per window (rows of H are not tokens: no window hint) */
typedef struct hess_ctx {
    qs_llama_weights *w;
    const stage *st;
    float *inbuf, *hd;
    int in;
    long long *count;
} hess_ctx;

static int hess_issue(qs_qrun *q, void *ctx, int s0, int k, float *x, qs_error *err) {
    (void)s0;
    hess_ctx *h = ctx;
    qs_backend *be = q->lm.be;
    const int L = q->calib.seqlen, in = h->in;
    QS_FORWARD_IF_ERROR(qs_llama_block_forward_until(be, &q->cfg, h->w, x, k, L, &q->scr, h->st->stop, err));
    if (h->w->abits < 16) /* the linears' inputs are quantized per token */
        QS_FORWARD_IF_ERROR(be->ops->act_quant(be, h->inbuf, k * L, in, in, h->w->abits, err));
    if (be->ops->set_window_rows) QS_FORWARD_IF_ERROR(be->ops->set_window_rows(be, 0, err));
    for (int j = 0; j < k; j++) {
        float keep = (float)*h->count / (float)(*h->count + L);
        *h->count += L;
        const float *xj = h->inbuf + (size_t)j * L * in;
        QS_FORWARD_IF_ERROR(be->ops->gemm(be, 1, 0, in, in, L, 2.0f / (float)*h->count, xj, in, xj, in, keep, h->hd, in, err));
    }
    return 0;
}

int qs_compute_gptq(qs_qrun *q, int blk, qs_qslot *s, qs_error *err) {
    qs_backend *be = q->lm.be;
    qs_llama_weights w;
    int rc = qs_weights_from_slot(q, s, blk, &w, err);
    for (int si = 0; si < 4 && !rc; si++) {
        const stage *st = &stages[si];
        const qs_tensor_info *t0 = s->t[st->lin[0]];
        const int in = (int)t0->shape[1];
        float *inbuf = st->stop == QS_STOP_O_IN ? q->scr.att : st->stop == QS_STOP_DOWN_IN ? q->scr.act : q->scr.xn;
        /* H in backend memory: its GEMMs run where the activations are (on a GPU the host never
         * sees the calibration activations); the same running mean as qs_hessian_add, one window
         * at a time so that the rounding does not depend on windows per call (the first with
         * beta 0, which ignores what the buffer held). Where the backend makes GPTQ's matrix to
         * factor itself (gptq_hessian), H never leaves it unless --gpu-mem cannot hold it beside
         * a layer's factor (q->gptq_h_host); else it is downloaded once. */
        const int h_stays = be->ops->gptq_hessian && be->ops->gptq_batch && !q->gptq_h_host;
        qs_hessian hs = {.n = in};
        const size_t hbytes = sizeof(float) * (size_t)in * in;
        float *hd = be->ops->alloc(be, hbytes);
        if (!hd) rc = qs_error_set(err, -ENOMEM, "block %d: out of %s memory for a %d x %d Hessian (%zu bytes)", blk, be->ops->name, in, in, hbytes);
        hess_ctx hc = {&w, st, inbuf, hd, in, &hs.count};
        const qs_calib_pass pass = {.which = QS_STATE_Q, .issue = hess_issue, .ctx = &hc};
        if (!rc) rc = qs_calib_run(q, &pass, err);
        if (!rc && !h_stays) {
            long long count = hs.count;
            rc = qs_hessian_init(&hs, in, err);
            hs.count = count;
            if (!rc) rc = be->ops->download(be, hs.h, hd, hbytes, err);
        }
        if (!h_stays) be->ops->free(be, hd), hd = NULL;
        float *hcopy = !rc && !h_stays && st->n > 1 ? malloc(sizeof(float) * (size_t)in * in) : NULL;
        if (!rc && !h_stays && st->n > 1 && !hcopy) rc = qs_error_set(err, -ENOMEM, "block %d: out of memory for a Hessian copy", blk);
        for (int j = 0; j < st->n && !rc; j++) {
            float *h = hs.h;
            if (!h_stays && j + 1 < st->n) { /* every linear but the last of the stage works on a copy */
                memcpy(hcopy, hs.h, sizeof(float) * (size_t)in * in);
                h = hcopy;
            }
            rc = quantize_linear(q, s, &w, st->lin[j], h, hd, err);
            /* frozen from here on: the later stages' and the next block's forwards read it */
            if (!rc && q->bf16_weights) rc = qs_llama_weights_to_bf16(&w, st->lin[j], s->t[st->lin[j]]->n_elems, be, err);
        }
        be->ops->free(be, hd);
        free(hcopy);
        qs_hessian_free(&hs);
    }
    /* the quantized block's output is the next block's input (the last codes come down beside
     * its calls, the earlier stages' beside the next stage's Hessian pass) */
    if (!rc) rc = qs_calib_advance(q, &w, err);
    rc = qs_results_end(q, rc, err);
    if (!rc) rc = qs_calib_checkpoint_write(q, blk, s, err);
    qs_llama_weights_free(&w, be);
    return rc;
}
