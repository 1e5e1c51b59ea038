/* pipeline/compute_eec.c - COMPUTE for QLLM with efficient error correction (EEC,
 * ../shared/METHODS.md): a unit of K consecutive blocks (--blocks-per-group) is one training group.
 *
 * 1. Per block of the group, in order: channel reassembly searched on the full-precision path's
 *    states (as the released code collects its statistics during the teacher forward), then the
 *    full-precision states advance through the float block (no reassembly, no activation
 *    quantization): after the group they are the training targets. The chosen gathers are
 *    applied to the float weights (consumers' columns reassembled).
 * 2. Rank-r LoRA corrections on the seven projections of every block and both norm gammas train
 *    on block reconstruction: the quantized path's group input (one window per step, batch 1, a
 *    seeded permutation per epoch) through the K trainable blocks, MSE to the full-precision
 *    group output, backward from the last block to the first, AdamW with the learning rate
 *    decaying linearly to 0 over epochs x nsamples steps.
 *    On a device that keeps frozen linears in bf16 (q->eec_bf16), Q(W) trains as bf16; where
 *    --gpu-mem cannot hold Q(W) beside W (q->eec_w_host), W waits on the host: with bf16 it
 *    leaves the device and Q(W) is made from the host's copy, else Q(W) is made in its place.
 * 3. W <- W + s B A and the trained gammas; all seven linears quantized (RTN at the run's
 *    setting); the quantized path's states advance through the merged, quantized blocks.
 * DL-QAT (--method dlqat) trains the same way without the reassembly: the trainer's DL-QAT form
 * (model/llama_train.h: magnitudes and LoRA on the fixed grid of each weight, gammas frozen),
 * and step 3 stores the trained codes with the scales m s_g instead of quantizing again.
 * Everything is seeded (the LoRA init by seed and layer, the permutations by seed, group and
 * epoch), so a resumed run gives the same bits. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/splitmix.h"
#include "model/llama_train.h"
#include "pipeline/quantize_internal.h"

void qs_tune_opts(const qs_qrun *q, qs_llama_train_opts *to) {
    const qs_quantize_opts *o = q->o;
    qs_llama_train_opts_default(to);
    to->rank = o->eec_rank;
    to->alpha = o->eec_alpha;
    to->seed = o->calib.seed;
    to->form = !strcmp(o->method, "dlqat")    ? QS_LORA_DLQAT
               : !strcmp(o->method, "slider") ? QS_LORA_SLIDER
               : o->eec_form                  ? QS_LORA_MERGED
                                              : QS_LORA_PAPER;
    to->clip_lr_mult = QS_SLIDER_CLIP_LR_MULT;
    to->smooth = to->form == QS_LORA_SLIDER && o->smooth;
    to->smooth_lr_mult = QS_SLIDER_SMOOTH_LR_MULT;
    to->half = q->slider_pass == 1;
    to->wbits = o->q.bits;
    to->group = o->q.group > 0 ? o->q.group : -1;
    to->sym = o->q.sym;
    to->abits = o->abits;
    to->base_in_place = q->eec_w_host;
    to->bf16_base = q->eec_bf16;
}

/* bytes of a block's seven linears as float */
static size_t linear_bytes(const qs_qrun *q) {
    size_t n[QS_N_LINEAR], total = 0;
    qs_llama_linear_sizes(&q->cfg, n);
    for (int i = 0; i < QS_N_LINEAR; i++) total += n[i];
    return sizeof(float) * total;
}

/* backend bytes of one group's training: K blocks' float weights and trainers (trainables,
 * AdamW state, tape of one window), and the window's input, target and gradient */
static size_t group_bytes(const qs_qrun *q, int K) {
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    const int L = q->calib.seqlen;
    return (size_t)K * (qs_llama_weights_bytes(&q->cfg) + qs_llama_train_bytes(&q->cfg, &to, L)) +
           3 * sizeof(float) * (size_t)L * q->cfg.hidden_size;
}

/* what the training adds to the forward's plan: the weights of the group's blocks but one (the
 * forward counts one block's; they are all there while the last one's search runs), and the
 * trainers less the channel reassembly search's memory, which the forward's plan counts and
 * which is free again before the trainers are allocated (qs_compute_qllm_eec: every block's
 * search, then the training), and (freed) what else the search held then. With bf16 Q(W) and the float weights on the host, the group's
 * linears are off the device while it trains, and only the trainables stay for the merge. */
static size_t eec_extra(const qs_qrun *q, size_t freed) {
    const size_t wb = qs_llama_weights_bytes(&q->cfg), others = (size_t)(q->K - 1) * wb;
    const size_t cr = qs_calib_reassembly_bytes(q) + freed;
    size_t train = group_bytes(q, q->K) - (size_t)q->K * wb;
    if (q->eec_bf16 && q->eec_w_host) {
        qs_llama_train_opts to;
        qs_tune_opts(q, &to);
        const size_t gone = (size_t)q->K * linear_bytes(q), kept = (size_t)q->K * qs_llama_train_param_bytes(&q->cfg, &to);
        train = train > gone ? train - gone : 0;
        train = train > kept ? train : kept;
    }
    return others + (train > cr ? train - cr : 0);
}

size_t qs_eec_host_bytes(const qs_qrun *q) { return eec_extra(q, qs_calib_search_host_bytes(q)); }

int qs_eec_plan(qs_qrun *q, size_t gpu_mem, size_t *bytes, qs_error *err) {
    q->eec_w_host = 0;
    *bytes = eec_extra(q, 0);
    const size_t fwd = qs_calib_device_bytes(q, 1);
    /* too tight: the float weights wait on the host while Q(W) trains in their place (the paper
     * form with quantized weights, which reads W only at the merge) */
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    if (gpu_mem && fwd + *bytes > gpu_mem && to.form == QS_LORA_PAPER && q->o->q.bits < 16) {
        q->eec_w_host = 1;
        *bytes = eec_extra(q, 0);
    }
    QS_RETURN_ERROR_IF(gpu_mem && fwd + *bytes > gpu_mem, QS_ENOMEMBUDGET,
                       "--gpu-mem %.1f MiB cannot hold the error correction of a group of %d block(s) (%.1f MiB: the "
                       "other blocks' weights, LoRA trainables, AdamW state and the tape of one %d-token window%s%s) "
                       "beside the forward of one window with one block's weights (%.1f MiB); %s; nothing was written",
                       gpu_mem / 1048576.0, q->K, *bytes / 1048576.0, q->calib.seqlen,
                       q->eec_w_host ? ", the float weights on the host while it trains" : "",
                       qs_calib_reassembly_bytes(q) ? ", less the reassembly search's memory, free again by then" : "",
                       fwd / 1048576.0,
                       q->K > 1 ? "lower --blocks-per-group or --seqlen" : "lower --seqlen or raise --gpu-mem");
    return 0;
}

/* perm = a seeded Fisher-Yates shuffle of 0..n-1 */
static void permutation(int *perm, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(qs_splitmix64(&seed) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}

int qs_train_group(qs_qrun *q, int b0, int key, qs_llama_train *const *tr, int K, double loss[2], qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_backend_ops *o = be->ops;
    const qs_quantize_opts *opt = q->o;
    const int L = q->calib.seqlen, H = q->cfg.hidden_size, N = q->calib.nsamples;
    const size_t n = (size_t)L * H, bytes = sizeof(float) * n;
    float *xb = o->alloc(be, bytes), *tg = o->alloc(be, bytes), *dout = o->alloc(be, bytes);
    int *perm = malloc(sizeof(int) * (size_t)N);
    int rc = xb && tg && dout && perm ? 0 : qs_error_set(err, -ENOMEM, "block %d: out of memory for training buffers", b0);
    /* SliderQuant's incremental passes share the epochs: the first half, then the rest */
    const int E = q->slider_pass == 1 ? opt->eec_epochs / 2 : q->slider_pass == 2 ? opt->eec_epochs - opt->eec_epochs / 2
                                                                                   : opt->eec_epochs;
    const long total = (long)E * N;
    long t = 0;
    loss[0] = loss[1] = 0;
    for (int e = 0; e < E && !rc; e++) {
        permutation(perm, N, opt->calib.seed ^ (0x5851f42d4c957f2dull * (uint64_t)(key + 1)) ^ ((uint64_t)e << 32));
        double sum = 0;
        for (int i = 0; i < N && !rc; i++, t++) {
            float *xs, *ys;
            double l = 0;
            rc = qs_calib_state_get(q, QS_STATE_Q, perm[i], 1, &xs, err);
            if (!rc) rc = o->upload(be, xb, xs, bytes, err);
            for (int j = 0; j < K && !rc; j++) rc = qs_llama_train_forward(tr[j], xb, xb, 1, L, err);
            if (!rc) rc = qs_calib_state_get(q, QS_STATE_FP, perm[i], 1, &ys, err);
            if (!rc) rc = o->upload(be, tg, ys, bytes, err);
            if (!rc) rc = o->mse_grad(be, dout, xb, tg, n, &l, err);
            for (int j = K - 1; j >= 0 && !rc; j--) rc = qs_llama_train_backward(tr[j], dout, j ? dout : NULL, err);
            const float lr = (float)((double)opt->eec_lr * (double)(total - t) / (double)total); /* linear decay, no warmup */
            for (int j = 0; j < K && !rc; j++) rc = qs_llama_train_step(tr[j], lr, err);
            sum += l;
        }
        if (rc) break;
        if (e == 0) loss[0] = sum / N;
        loss[1] = sum / N;
        if (opt->progress == 3)
            fprintf(stderr, "blocks %d..%d: epoch %d/%d, loss %.6g\n", b0, b0 + K - 1, e + 1, E, sum / N);
    }
    o->free(be, xb), o->free(be, tg), o->free(be, dout);
    free(perm);
    return rc;
}

/* the seven linears of w (backend memory) to one host buffer *h (down = 1, allocated; with
 * drop their backend memory is freed, the slots NULL, and to->base_host points into *h), or
 * back from it (down = 0, allocating dropped slots; then freed) */
static int weights_to_host(qs_qrun *q, qs_llama_weights *w, float **h, int down, int drop, qs_llama_train_opts *to,
                           qs_error *err) {
    qs_backend *be = q->lm.be;
    size_t n[QS_N_LINEAR], total = 0;
    qs_llama_linear_sizes(&q->cfg, n);
    for (int i = 0; i < QS_N_LINEAR; i++) total += n[i];
    if (down && !(*h = malloc(sizeof(float) * total)))
        return qs_error_set(err, -ENOMEM, "block %d: out of host memory for its float weights during training (%zu bytes)",
                            w->layer, sizeof(float) * total);
    float *p = *h;
    for (int i = 0; i < QS_N_LINEAR; i++) {
        float **d = qs_llama_linear_slot(w, i);
        if (!down && !*d && !(*d = be->ops->alloc(be, sizeof(float) * n[i])))
            return qs_error_set(err, -ENOMEM, "block %d: out of %s memory for its float weights after training (%zu bytes)",
                                w->layer, be->ops->name, sizeof(float) * n[i]);
        QS_FORWARD_IF_ERROR(down ? be->ops->download(be, p, *d, sizeof(float) * n[i], err)
                                 : be->ops->upload(be, *d, p, sizeof(float) * n[i], err));
        if (down && drop) be->ops->free(be, *d), *d = NULL, to->base_host[i] = p;
        p += n[i];
    }
    if (!down) free(*h), *h = NULL;
    return 0;
}

int qs_tuned_linear(qs_qrun *q, qs_qslot *s, qs_llama_train *tr, int i, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_tensor_info *t = s->t[i];
    const int rows = (int)t->shape[0], cols = (int)t->shape[1];
    const size_t n = (size_t)rows * cols, qb = sizeof(float) * (size_t)rows * tr->ng[i], eb = sizeof(double) * (size_t)rows;
    qs_qlin_out *out = &s->lin[i];
    out->codes = malloc(n);
    out->scales = malloc(qb);
    out->zeros = malloc(qb);
    const int dl = tr->opts.form == QS_LORA_DLQAT; /* SliderQuant's mse: STORE's, against the stored W */
    double *row_err = malloc(eb), *de = dl ? be->ops->alloc(be, eb) : NULL;
    uint8_t *dc = be->ops->alloc(be, n);
    int rc = out->codes && out->scales && out->zeros && row_err
                 ? 0
                 : qs_error_set(err, -ENOMEM, "block %d: out of memory for the codes of %s", tr->w->layer, t->name);
    if (!rc && (!dc || (dl && !de)))
        rc = qs_error_set(err, -ENOMEM, "block %d: out of %s memory for the codes of %s (%zu bytes)", tr->w->layer,
                          be->ops->name, t->name, n + eb);
    if (!rc) rc = dl ? qs_llama_train_dlqat_codes(tr, i, dc, de, out->scales, out->zeros, err)
                     : qs_llama_train_slider_codes(tr, i, dc, NULL, out->scales, out->zeros, err);
    if (!rc && dl) rc = be->ops->download(be, row_err, de, eb, err);
    double total = 0;
    for (int r = 0; !rc && dl && r < rows; r++) total += row_err[r];
    if (!rc && !isfinite(total)) rc = qs_error_set(err, QS_EFORMAT, "%s: the trained weights are not finite", t->name);
    if (!rc) rc = qs_result_defer(q, out->codes, dc, n, err), dc = NULL; /* its own now */
    out->mse = total / ((double)rows * cols);
    be->ops->free(be, dc), be->ops->free(be, de);
    free(row_err);
    return rc;
}

int qs_compute_qllm_eec(qs_qrun *q, qs_qunit *u, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_quantize_opts *o = q->o;
    const int K = u->nb, b0 = u->b0;
    const size_t hb = sizeof(float) * (size_t)q->cfg.hidden_size;
    qs_llama_weights w[QS_GROUP_MAX];
    qs_llama_train tr[QS_GROUP_MAX];
    memset(w, 0, sizeof w);
    memset(tr, 0, sizeof tr);
    int rc = 0;
    /* 1. reassembly from the full-precision path; the targets */
    for (int j = 0; j < K && !rc; j++) {
        qs_qslot *s = &u->blk[j];
        rc = qs_weights_from_slot(q, s, b0 + j, &w[j], err);
        if (!rc && o->cr) rc = qs_qllm_cr_search(q, b0 + j, s, &w[j], QS_STATE_FP, err);
        const int abits = w[j].abits;
        w[j].abits = 16;
        if (!rc) rc = qs_calib_state_advance(q, QS_STATE_FP, &w[j], err);
        w[j].abits = abits;
        if (!rc && o->cr) rc = qs_qllm_cr_apply(q, s, &w[j], err);
    }
    /* 2. training (q->eec_w_host: the float weights to the host first; Q(W) takes their place,
     * or with q->eec_bf16 they leave the device and Q(W) is made in bf16 from the host's copy) */
    float *wh[QS_GROUP_MAX] = {0};
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    const int drop = q->eec_w_host && q->eec_bf16;
    for (int j = 0; j < K && !rc; j++) {
        if (q->eec_w_host) rc = weights_to_host(q, &w[j], &wh[j], 1, drop, &to, err);
        if (!rc) rc = qs_llama_train_init(&tr[j], &q->cfg, &w[j], &to, q->calib.seqlen, be, err);
    }
    double loss[2] = {0, 0};
    qs_llama_train *trp[QS_GROUP_MAX] = {0};
    for (int j = 0; j < K; j++) trp[j] = &tr[j];
    if (!rc) rc = qs_train_group(q, b0, b0, trp, K, loss, err);
    /* 3. merge, quantize, advance the quantized path (dropped float weights come back once
     * every trainer is down to its trainables) */
    for (int j = 0; j < K && !rc && drop; j++) qs_llama_train_release(&tr[j]);
    for (int j = 0; j < K && !rc; j++) {
        qs_qslot *s = &u->blk[j];
        if (wh[j]) rc = weights_to_host(q, &w[j], &wh[j], 0, drop, &to, err);
        /* DL-QAT: the trained codes, then the merge writes what they dequantize to (the next
         * forward's weights) and nothing is quantized again */
        for (int i = 0; i < QS_N_LINEAR && !rc && to.form == QS_LORA_DLQAT; i++) rc = qs_tuned_linear(q, s, &tr[j], i, err);
        if (!rc) rc = qs_llama_train_merge(&tr[j], &w[j], err);
        if (!rc) rc = be->ops->download(be, s->other[0], w[j].attn_norm, hb, err);
        if (!rc) rc = be->ops->download(be, s->other[1], w[j].ffn_norm, hb, err);
        qs_llama_train_free(&tr[j]);
        if (!rc && to.form != QS_LORA_DLQAT) rc = qs_qllm_quantize(q, s, &w[j], err);
        if (!rc) rc = qs_result_flush(q, err); /* a block's codes at a time, not the group's */
        s->eec_loss[0] = loss[0], s->eec_loss[1] = loss[1];
    }
    for (int j = 0; j < K && !rc; j++) rc = qs_calib_state_advance(q, QS_STATE_Q, &w[j], err);
    rc = qs_results_end(q, rc, err);
    if (!rc) rc = qs_calib_checkpoint_write(q, b0 + K - 1, &u->blk[K - 1], err);
    for (int j = 0; j < K; j++) {
        qs_llama_train_free(&tr[j]);
        qs_llama_weights_free(&w[j], be);
        free(wh[j]);
    }
    return rc;
}
