/* pipeline/compute_qllm.c - COMPUTE for QLLM: adaptive channel reassembly (CR) at the three sites
 * of the block, then per-channel RTN of the (reassembled) weights. With efficient error correction
 * (--eec on) compute_eec.c uses these parts around its training.
 *
 * 1. Statistics: the block runs in float on a calibration state (the quantized path's without
 *    EEC; the full-precision path's with EEC, as the released code collects them); per site the
 *    largest |x| of every input channel over all tokens, and the first windows (up to
 *    --cr-tokens tokens) as the search sample.
 * 2. Search per site (independently, against the float block): every threshold candidate and
 *    "no reassembly" are scored by the site's output under fake quantization (weights per
 *    channel at --wbits, activations per token at --abits): the attention output before o_proj
 *    (RoPE, GQA, Q/K/V quantized per head), silu(gate) * up, down's output. Lowest MSE wins.
 * 3. The chosen gathers go into the block (fused into the norms and the SwiGLU product), the
 *    consumers' weights are reassembled, all seven linears quantized, and the calibration states
 *    advance through the quantized block. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "pipeline/quantize_internal.h"

static const qs_llama_stop site_stop[3] = {QS_STOP_QKV_IN, QS_STOP_GU_IN, QS_STOP_DOWN_IN};
static const int site_lins[3][3] = {{0, 1, 2}, {4, 5, -1}, {6, -1, -1}};

typedef struct site_data {
    int C;          /* input channels */
    float *xmax;    /* [C] */
    float *sample;  /* [Ts, C] float inputs of the search sample */
    float *dsample; /* the same in backend memory */
    float *target;  /* the site's float output on the sample */
    size_t target_n;
} site_data;

/* backend buffer helpers (the CPU backend's memory is host memory, but go through the ops) */
static float *dev_from(qs_backend *be, const float *h, size_t n, qs_error *err) {
    float *d = be->ops->alloc(be, sizeof(float) * (n ? n : 1));
    if (!d) {
        qs_error_set(err, -ENOMEM, "out of %s memory (%zu floats)", be->ops->name, n);
        return NULL;
    }
    if (be->ops->upload(be, d, h, sizeof(float) * n, err)) {
        be->ops->free(be, d);
        return NULL;
    }
    return d;
}

/* float weights of linear i (host copy) */
static float *host_weight(qs_backend *be, qs_llama_weights *w, const qs_tensor_info *t, int i, qs_error *err) {
    size_t n = (size_t)t->n_elems;
    float *h = malloc(sizeof(float) * n);
    if (!h) {
        qs_error_set(err, -ENOMEM, "out of memory for %s", t->name);
        return NULL;
    }
    if (be->ops->download(be, h, *qs_llama_linear_slot(w, i), sizeof(float) * n, err)) {
        free(h);
        return NULL;
    }
    return h;
}

/* a candidate's maps in backend memory (NULL r: none); 0 or an error */
static int maps_to_backend(qs_backend *be, const qs_reasm *r, int32_t **a, int32_t **b, float **coef, qs_error *err) {
    *a = *b = NULL, *coef = NULL;
    if (!r) return 0;
    const size_t ib = sizeof(int32_t) * (size_t)r->C;
    *a = be->ops->alloc(be, ib), *b = be->ops->alloc(be, ib);
    QS_RETURN_ERROR_IF(!*a || !*b, -ENOMEM, "out of %s memory for reassembly maps of %d channels", be->ops->name, r->C);
    QS_FORWARD_IF_ERROR(be->ops->upload(be, *a, r->src_a, ib, err));
    QS_FORWARD_IF_ERROR(be->ops->upload(be, *b, r->src_b, ib, err));
    *coef = dev_from(be, r->coef, (size_t)r->C, err);
    return *coef ? 0 : err && err->code ? err->code : -ENOMEM;
}

/* rows per chunk when a consumer's weights become bf16 (about 4 Mi floats, whole rows) */
int qs_qllm_cr_chunk_rows(int cols) {
    const int r = (1 << 22) / cols;
    return r > 0 ? r : 1;
}

/* a consumer's weights for a candidate: wsrc [R, C] gathered by the maps (NULL ma: as they are)
 * and fake-quantized (quant), into float *dw, or on a bf16 device (q->cr_bf16) into bf16 *dw16
 * through a float scratch of whole row chunks (gather and fake-quant are row-wise) */
static int consumer_weights(qs_qrun *q, const float *wsrc, int R, int C, const int32_t *ma, const int32_t *mb,
                            int quant, float **dw, uint16_t **dw16, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_backend_ops *o = be->ops;
    const qs_qconfig qc = q->o->q;
    const int chunk = qs_qllm_cr_chunk_rows(C), rows = q->cr_bf16 && chunk < R ? chunk : R;
    float *f = o->alloc(be, sizeof(float) * (size_t)rows * C);
    uint16_t *h = q->cr_bf16 ? o->alloc(be, sizeof(uint16_t) * (size_t)R * C) : NULL;
    if (!f || (q->cr_bf16 && !h)) {
        o->free(be, f), o->free(be, h);
        return qs_error_set(err, -ENOMEM, "out of %s memory for a candidate's [%d, %d] weights", o->name, R, C);
    }
    int rc = 0;
    for (int r0 = 0; r0 < R && !rc; r0 += rows) {
        const int nr = R - r0 < rows ? R - r0 : rows;
        const float *src = wsrc + (size_t)r0 * C;
        rc = ma ? o->gather(be, f, src, nr, C, ma, mb, NULL, err) : o->copy(be, f, src, sizeof(float) * (size_t)nr * C, err);
        if (!rc && quant) rc = o->fake_quant_weight(be, f, f, nr, C, qc.group, qc.bits, qc.sym, err);
        if (!rc && h) rc = o->to_bf16(be, h + (size_t)r0 * C, f, (size_t)nr * C, err);
    }
    if (h) o->free(be, f), f = NULL; /* stream-ordered: after the conversions */
    *dw = f, *dw16 = h;
    return rc;
}

/* The site's output on the sample with gather r (NULL: none) and weights quantized (quant = 1)
 * or float (0), all in backend memory: the sample (sd->dsample) and the block's float weights
 * are gathered there, the weights fake-quantized there (fake_quant_weight: the bits of RTN with
 * the run's grid). out (host) receives [Ts, out_cols]. */
static int site_output(qs_qrun *q, int site, const site_data *sd, int n_win, qs_llama_weights *w, const qs_reasm *r,
                       int quant, float *out, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_backend_ops *o = be->ops;
    const qs_model_config *c = &q->cfg;
    const int L = q->calib.seqlen, T = n_win * L, C = sd->C, ab = quant ? q->o->abits : 16;
    const int hd = c->head_dim, Qd = c->n_heads * hd, KV = c->n_kv_heads * hd, I = c->intermediate_size;
    int32_t *ma, *mb;
    float *mc;
    int rc = maps_to_backend(be, r, &ma, &mb, &mc, err);
    float *dx = rc ? NULL : o->alloc(be, sizeof(float) * (size_t)T * C);
    if (!rc && !dx) rc = qs_error_set(err, -ENOMEM, "out of %s memory for the search sample", o->name);
    if (!rc) rc = r ? o->gather(be, dx, sd->dsample, T, C, ma, mb, mc, err)
                    : o->copy(be, dx, sd->dsample, sizeof(float) * (size_t)T * C, err);
    if (!rc && ab < 16) rc = o->act_quant(be, dx, T, C, C, ab, err);
    if (!rc && o->set_window_rows) rc = o->set_window_rows(be, L, err); /* rows are windows of L */
    /* the consumers' weights: reassembled and (for quant) fake-quantized per channel */
    float *dw[3] = {NULL, NULL, NULL}, *dy[3] = {NULL, NULL, NULL};
    uint16_t *dw16[3] = {NULL, NULL, NULL};
    int rows[3] = {0, 0, 0};
    for (int j = 0; j < 3 && !rc && site_lins[site][j] >= 0; j++) {
        int li = site_lins[site][j];
        const int R = li == 0 ? Qd : li == 1 || li == 2 ? KV : li == 6 ? c->hidden_size : I;
        rows[j] = R;
        rc = consumer_weights(q, *qs_llama_linear_slot(w, li), R, C, r ? ma : NULL, mb, quant, &dw[j], &dw16[j], err);
        dy[j] = rc ? NULL : o->alloc(be, sizeof(float) * (size_t)T * R);
        if (!rc && !dy[j]) rc = qs_error_set(err, -ENOMEM, "out of %s memory for the search of %s", o->name, qs_linear_names[li]);
        if (!rc) rc = dw16[j] ? o->linear_bf16(be, 1, T, R, C, dx, C, dw16[j], C, 0.0f, dy[j], R, err)
                              : o->gemm(be, 0, 1, T, R, C, 1.0f, dx, C, dw[j], C, 0.0f, dy[j], R, err);
    }
    if (!rc && site == 0) { /* q, k, v -> biases, RoPE, quantization per head, attention */
        if (w->bq) {
            rc = o->add_bias(be, dy[0], w->bq, T, Qd, err);
            if (!rc) rc = o->add_bias(be, dy[1], w->bk, T, KV, err);
            if (!rc) rc = o->add_bias(be, dy[2], w->bv, T, KV, err);
        }
        if (!rc) rc = o->rope(be, dy[0], n_win, L, 0, c->n_heads, hd, Qd, q->scr.inv_freq, 0, err);
        if (!rc) rc = o->rope(be, dy[1], n_win, L, 0, c->n_kv_heads, hd, KV, q->scr.inv_freq, 0, err);
        for (int j = 0; j < 3 && !rc && ab < 16; j++) rc = o->act_quant(be, dy[j], T, rows[j], hd, ab, err);
        float *att = rc ? NULL : o->alloc(be, sizeof(float) * (size_t)T * Qd);
        if (!rc && !att) rc = qs_error_set(err, -ENOMEM, "out of memory");
        if (!rc) rc = o->attention(be, att, dy[0], dy[1], dy[2], n_win, L, c->n_heads, c->n_kv_heads, hd,
                                   (float)(1.0 / sqrt((double)hd)), NULL, err);
        if (!rc) rc = o->download(be, out, att, sizeof(float) * (size_t)T * Qd, err);
        o->free(be, att);
    } else if (!rc && site == 1) {
        rc = o->swiglu(be, dy[0], dy[0], dy[1], (size_t)T * I, err);
        if (!rc) rc = o->download(be, out, dy[0], sizeof(float) * (size_t)T * I, err);
    } else if (!rc) {
        rc = o->download(be, out, dy[0], sizeof(float) * (size_t)T * c->hidden_size, err);
    }
    for (int j = 0; j < 3; j++) o->free(be, dw[j]), o->free(be, dw16[j]), o->free(be, dy[j]);
    o->free(be, dx), o->free(be, ma), o->free(be, mb), o->free(be, mc);
    return rc;
}

static double mse(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s / (double)n;
}

typedef struct search_ctx {
    qs_qrun *q;
    int site;
    const site_data *d;
    int n_sample;
    qs_llama_weights *w;
    const float *target;
    float *got;
    size_t n;
} search_ctx;

/* qs_reasm_score_fn: MSE of the site's fake-quantized output to its float output */
static int score_site(void *ctx, const qs_reasm *r, double *score, qs_error *err) {
    search_ctx *c = ctx;
    QS_FORWARD_IF_ERROR(site_output(c->q, c->site, c->d, c->n_sample, c->w, r, 1, c->got, err));
    *score = mse(c->got, c->target, c->n);
    return 0;
}

/* one site's statistics over a call's windows: the float block up to the site, then on the
 * host the channels' max |x| and the search sample's rows */
typedef struct collect_ctx {
    qs_llama_weights *w;
    site_data *sd;
    int site, n_sample;
} collect_ctx;

static int collect_issue(qs_qrun *q, void *ctx, int s0, int k, float *x, qs_error *err) {
    (void)s0;
    collect_ctx *cc = ctx;
    return qs_llama_block_forward_until(q->lm.be, &q->cfg, cc->w, x, k, q->calib.seqlen, &q->scr, site_stop[cc->site], err);
}

static int collect_finish(qs_qrun *q, void *ctx, int s0, int k, float *x, float *xs, qs_error *err) {
    (void)x, (void)xs;
    collect_ctx *cc = ctx;
    site_data *d = cc->sd;
    const int L = q->calib.seqlen, C = d->C, n_sample = cc->n_sample;
    float *buf = cc->site == 2 ? q->scr.act : q->scr.xn;
    QS_FORWARD_IF_ERROR(q->lm.be->ops->download(q->lm.be, q->hx, buf, sizeof(float) * (size_t)k * L * C, err));
    for (size_t t = 0; t < (size_t)k * L; t++)
        for (int c = 0; c < C; c++) {
            float v = fabsf(q->hx[t * C + c]);
            if (v > d->xmax[c]) d->xmax[c] = v;
        }
    int take = s0 < n_sample ? (n_sample - s0 < k ? n_sample - s0 : k) : 0;
    if (take) memcpy(d->sample + (size_t)s0 * L * C, q->hx, sizeof(float) * (size_t)take * L * C);
    return 0;
}

/* statistics of every site on all calibration windows of state `which`, with the float block */
static int collect(qs_qrun *q, qs_llama_weights *w, site_data sd[3], int n_sample, int which, qs_error *err) {
    int rc = 0;
    for (int site = 0; site < 3 && !rc; site++) {
        for (int c = 0; c < sd[site].C; c++) sd[site].xmax[c] = 0;
        collect_ctx cc = {w, &sd[site], site, n_sample};
        const qs_calib_pass pass = {.which = which, .issue = collect_issue, .finish = collect_finish, .ctx = &cc};
        rc = qs_calib_run(q, &pass, err);
    }
    return rc;
}

static int site_of(int lin) { return lin <= 2 ? 0 : lin == 4 || lin == 5 ? 1 : lin == 6 ? 2 : -1; }

int qs_qllm_cr_search(qs_qrun *q, int blk, qs_qslot *s, qs_llama_weights *w, int which, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_quantize_opts *o = q->o;
    const qs_model_config *c = &q->cfg;
    const int L = q->calib.seqlen, H = c->hidden_size, I = c->intermediate_size;
    int n_sample = o->cr_tokens / L;
    if (n_sample < 1) n_sample = 1;
    if (n_sample > q->calib.nsamples) n_sample = q->calib.nsamples;
    const int Ts = n_sample * L, abits = w->abits;
    w->abits = 16; /* statistics and targets in float */
    site_data sd[3] = {{.C = H}, {.C = H}, {.C = I}};
    float *wf[3][3] = {{NULL}};
    int rc = 0;
    for (int site = 0; site < 3 && !rc; site++) {
        sd[site].xmax = malloc(sizeof(float) * sd[site].C);
        sd[site].sample = malloc(sizeof(float) * (size_t)Ts * sd[site].C);
        if (!sd[site].xmax || !sd[site].sample) rc = qs_error_set(err, -ENOMEM, "out of memory for reassembly statistics");
        for (int j = 0; j < 3 && !rc && site_lins[site][j] >= 0; j++) {
            wf[site][j] = host_weight(be, w, s->t[site_lins[site][j]], site_lins[site][j], err);
            if (!wf[site][j]) rc = err->code ? err->code : -ENOMEM;
        }
    }
    if (!rc) rc = collect(q, w, sd, n_sample, which, err);
    for (int site = 0; site < 3 && !rc; site++) {
        site_data *d = &sd[site];
        const size_t on = (size_t)Ts * (site == 0 ? (size_t)c->n_heads * c->head_dim : site == 1 ? (size_t)I : (size_t)H);
        float *target = malloc(sizeof(float) * on), *got = malloc(sizeof(float) * on);
        if (!target || !got) rc = qs_error_set(err, -ENOMEM, "out of memory");
        d->dsample = rc ? NULL : dev_from(be, d->sample, (size_t)Ts * d->C, err);
        if (!rc && !d->dsample) rc = err->code ? err->code : -ENOMEM;
        if (!rc) rc = site_output(q, site, d, n_sample, w, NULL, 0, target, err);
        /* the consumer for distances: rows of all the site's linears, concatenated */
        int cat_rows = 0;
        for (int j = 0; j < 3 && site_lins[site][j] >= 0; j++) cat_rows += (int)s->t[site_lins[site][j]]->shape[0];
        float *wcat = rc ? NULL : malloc(sizeof(float) * (size_t)cat_rows * d->C);
        if (!rc && !wcat) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (int j = 0, r0 = 0; !rc && j < 3 && site_lins[site][j] >= 0; j++) {
            int R = (int)s->t[site_lins[site][j]]->shape[0];
            memcpy(wcat + (size_t)r0 * d->C, wf[site][j], sizeof(float) * (size_t)R * d->C);
            r0 += R;
        }
        search_ctx sc = {q, site, d, n_sample, w, target, got, on};
        double best = 0;
        int nc = 0;
        qs_reasm best_r = {0};
        if (!rc) rc = qs_reasm_search(d->xmax, d->C, d->sample, Ts, wcat, cat_rows, (qs_reasm_distance)o->cr_distance,
                                      o->cr_candidates > 0 ? o->cr_candidates : 40, score_site, &sc, &best_r, &best, &nc, err);
        if (!rc) s->ra[site] = best_r;
        else qs_reasm_free(&best_r);
        if (!rc && q->o->progress == 3)
            fprintf(stderr, "block %d site %d: %d candidates, theta %g (%d outliers split, %d pairs merged), mse %.4g\n", blk,
                    site, nc, (double)s->ra[site].theta, s->ra[site].n_outliers, s->ra[site].n_merged, best);
        free(target), free(got), free(wcat);
        be->ops->free(be, d->dsample), d->dsample = NULL;
    }
    for (int site = 0; site < 3; site++) {
        free(sd[site].xmax), free(sd[site].sample);
        for (int j = 0; j < 3; j++) free(wf[site][j]);
    }
    w->abits = abits;
    return rc;
}

int qs_qllm_cr_apply(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, qs_error *err) {
    qs_backend *be = q->lm.be;
    int rc = 0;
    for (int i = 0; i < QS_N_LINEAR && !rc; i++) {
        const int site = site_of(i);
        if (site < 0 || !s->ra[site].src_a || s->ra[site].theta == 0) continue;
        const qs_tensor_info *t = s->t[i];
        const int rows = (int)t->shape[0], cols = (int)t->shape[1];
        float *wh = host_weight(be, w, t, i, err), *wr = malloc(sizeof(float) * (size_t)rows * cols);
        if (!wh || !wr) rc = qs_error_set(err, -ENOMEM, "out of memory");
        if (!rc) qs_reasm_weight(&s->ra[site], wh, rows, wr);
        if (!rc) rc = be->ops->upload(be, *qs_llama_linear_slot(w, i), wr, sizeof(float) * (size_t)rows * cols, err);
        free(wh), free(wr);
    }
    for (int site = 0; site < 3 && !rc; site++) {
        const qs_reasm *r = &s->ra[site];
        if (!r->src_a || r->theta == 0) continue; /* "no reassembly" won: plain ops */
        w->ra[site].src_a = be->ops->alloc(be, sizeof(int32_t) * r->C);
        w->ra[site].src_b = be->ops->alloc(be, sizeof(int32_t) * r->C);
        w->ra[site].coef = be->ops->alloc(be, sizeof(float) * r->C);
        if (!w->ra[site].src_a || !w->ra[site].src_b || !w->ra[site].coef) rc = qs_error_set(err, -ENOMEM, "out of memory");
        if (!rc) rc = be->ops->upload(be, w->ra[site].src_a, r->src_a, sizeof(int32_t) * r->C, err);
        if (!rc) rc = be->ops->upload(be, w->ra[site].src_b, r->src_b, sizeof(int32_t) * r->C, err);
        if (!rc) rc = be->ops->upload(be, w->ra[site].coef, r->coef, sizeof(float) * r->C, err);
    }
    return rc;
}

/* a weight that is not finite, named as qs_quant_rtn names it (the layer comes to the host) */
static int nonfinite_weight(qs_backend *be, qs_llama_weights *w, const qs_tensor_info *t, int i, qs_error *err) {
    float *wh = host_weight(be, w, t, i, err);
    if (!wh) return err && err->code ? err->code : -ENOMEM;
    const size_t C = (size_t)t->shape[1], bad = qs_first_nonfinite(wh, (size_t)t->n_elems);
    int rc = bad < (size_t)t->n_elems ? qs_error_set(err, QS_EFORMAT, "%s: weight [%zu, %zu] is %s", t->name, bad / C, bad % C,
                                                     isnan(wh[bad]) ? "NaN" : "infinite")
                                      : qs_error_set(err, QS_EFORMAT, "%s: the rounding error is not finite", t->name);
    free(wh);
    return rc;
}

/* RTN of linear i where it is (quant_weight): its codes (1 byte a weight: on their way down
 * beside the next ops, pipeline/results.c), quantizers and rows' errors come down, not the
 * layer; STORE packs the codes (quantize.c qlin_finish) */
static int quantize_linear(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, int i, qs_error *err) {
    qs_backend *be = q->lm.be;
    const qs_quantize_opts *o = q->o;
    const qs_tensor_info *t = s->t[i];
    const int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(&o->q, cols);
    const size_t n = (size_t)rows * cols, qb = sizeof(float) * (size_t)rows * ng, eb = sizeof(double) * (size_t)rows;
    QS_RETURN_ERROR_IF(!be->ops->quant_weight, QS_EUNSUPPORTED, "quant_weight is not implemented on %s", be->ops->name);
    qs_qlin_out *out = &s->lin[i];
    out->codes = malloc(n);
    out->scales = malloc(qb);
    out->zeros = malloc(qb);
    double *row_err = malloc(eb);
    uint8_t *dc = be->ops->alloc(be, n);
    float *ds = be->ops->alloc(be, qb), *dz = be->ops->alloc(be, qb);
    double *de = be->ops->alloc(be, eb);
    int rc = out->codes && out->scales && out->zeros && row_err
                 ? 0
                 : qs_error_set(err, -ENOMEM, "block %d: out of memory for the codes of %s", w->layer, t->name);
    if (!rc && (!dc || !ds || !dz || !de))
        rc = qs_error_set(err, -ENOMEM, "block %d: out of %s memory for the codes of %s (%zu bytes)", w->layer,
                          be->ops->name, t->name, n + 2 * qb + eb);
    float *wd = *qs_llama_linear_slot(w, i);
    if (!rc) rc = be->ops->quant_weight(be, wd, rows, cols, o->q.group, o->q.bits, o->q.sym, dc, ds, dz, de, err);
    if (!rc) rc = be->ops->download(be, row_err, de, eb, err);
    double total = 0;
    for (int r = 0; !rc && r < rows; r++) total += row_err[r]; /* qs_dequant_sq_err's order */
    if (!rc && !isfinite(total)) rc = nonfinite_weight(be, w, t, i, err);
    if (!rc) rc = be->ops->download(be, out->scales, ds, qb, err);
    if (!rc) rc = be->ops->download(be, out->zeros, dz, qb, err);
    if (!rc) rc = qs_result_defer(q, out->codes, dc, n, err), dc = NULL; /* its own now */
    /* against the weights as given (reassembled, corrected): the rounding error */
    out->mse = total / ((double)rows * cols);
    /* the weights the next forward sees, where they are: fake_quant_weight gives the bits of
     * qs_quant_rtn + qs_dequant, so nothing goes up */
    if (!rc) rc = be->ops->fake_quant_weight(be, wd, wd, rows, cols, o->q.group, o->q.bits, o->q.sym, err);
    be->ops->free(be, dc), be->ops->free(be, ds), be->ops->free(be, dz), be->ops->free(be, de);
    free(row_err);
    return rc;
}

int qs_qllm_quantize(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, qs_error *err) {
    int rc = 0;
    for (int i = 0; i < QS_N_LINEAR && !rc; i++) rc = quantize_linear(q, s, w, i, err);
    return rc;
}

int qs_compute_qllm(qs_qrun *q, int blk, qs_qslot *s, qs_error *err) {
    qs_llama_weights w;
    int rc = qs_weights_from_slot(q, s, blk, &w, err);
    if (!rc && q->o->cr) rc = qs_qllm_cr_search(q, blk, s, &w, QS_STATE_Q, err);
    if (!rc && q->o->cr) rc = qs_qllm_cr_apply(q, s, &w, err);
    if (!rc) rc = qs_qllm_quantize(q, s, &w, err);
    if (!rc) rc = qs_calib_advance(q, &w, err); /* the codes come down beside its calls */
    rc = qs_results_end(q, rc, err);
    if (!rc) rc = qs_calib_checkpoint_write(q, blk, s, err);
    qs_llama_weights_free(&w, q->lm.be);
    return rc;
}
