/* model/llama_train.c - a trainable decoder block for EEC: the training forward with its tape,
 * the backward, AdamW and the merge, written on the backend ops.
 *
 * The merged form materializes W_eff = Q(W + s B A) at every forward; the paper form computes
 * x Q(W)^T + s (x A^T) B^T (Q(W) made once, fp32 or with bf16_base as bf16 through
 * linear_bf16), never forming Q(W) + s B A. With X the linear's (fake-quantized) input and dY
 * its output gradient, both backwards are
 *   dX = dY W_eff,   dB += s dY^T (X A^T),   dA += s (dY B)^T X
 * (the paper form's dX = dY Q(W) + s (dY B) A; for the merged form dW_eff = dY^T X reaches
 * W + s B A through the straight-through Q, and dW_eff A^T = dY^T (X A^T): the full [out, in]
 * gradient is never formed). Rebuilding W_eff costs about 2 r flops per weight against 2 T per
 * weight for the linear itself.
 *
 * Channel reassembly (w->ra, QLLM): the norms and the SwiGLU product are the deployed forward's
 * fused gathers (rmsnorm_gather, swiglu_gather: the same bits as qs_llama_block_forward), the
 * norms' rstd is taken by a plain rmsnorm beside them, and the backward runs gather_backward
 * (the gather's transpose) before rmsnorm_backward / swiglu_backward. The gammas trained are the
 * norms' own (indexed by source channel, before the gather). */
#include "model/llama_train.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/splitmix.h"
#include "model/rope.h"

void qs_llama_train_opts_default(qs_llama_train_opts *o) {
    *o = (qs_llama_train_opts){.rank = 4, .alpha = 1.0f, .seed = 0, .form = QS_LORA_PAPER, .wbits = 16, .group = -1,
                               .sym = 0, .abits = 16, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                               .weight_decay = 0.0f, .clip_lr_mult = 1.0f, .smooth = 0, .smooth_lr_mult = 1.0f};
}

static int quant_bits(int b) { return b >= 2 && b < 16 ? b : 0; }

static float *proj_weight(const qs_llama_weights *w, int p) {
    float *all[QS_PROJ_N] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
    return all[p];
}

/* 64-byte offsets inside the packed trainables */
static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

static int is_dlqat(const qs_llama_train_opts *o) { return o->form == QS_LORA_DLQAT; }
static int is_slider(const qs_llama_train_opts *o) { return o->form == QS_LORA_SLIDER; }
/* the forms whose gammas are frozen and whose grid moves per group (magnitudes or clipping) */
static int grid_form(const qs_llama_train_opts *o) { return is_dlqat(o) || is_slider(o); }

/* SliderQuant's smoothing scales at a site (0: off) */
static int smooth_count(const qs_model_config *c, const qs_llama_train_opts *o, int site) {
    if (!is_slider(o) || !o->smooth) return 0;
    const int kv = c->n_kv_heads * c->head_dim;
    switch (site) {
    case QS_SMOOTH_QKV:
    case QS_SMOOTH_GU: return c->hidden_size;
    case QS_SMOOTH_VO: return c->attention_bias ? 0 : kv;
    case QS_SMOOTH_QK: return c->attention_bias ? 0 : kv / 2;
    default: return c->intermediate_size;
    }
}

/* groups per row of a projection with in columns */
static int groups_of(const qs_llama_train_opts *o, int in) { return o->group > 0 ? (in + o->group - 1) / o->group : 1; }

/* the packed trainables: A and B of each projection (*n_lora floats, may be NULL), SliderQuant's
 * smoothing scales, DL-QAT's magnitudes or SliderQuant's clipping logits (all gam, then all
 * bet), then the two gammas;
 * *n_step (may be NULL): the floats before the gammas where they are frozen (DL-QAT,
 * SliderQuant), else all */
static size_t n_param_of(const qs_model_config *c, const qs_llama_train_opts *o, size_t *n_step, size_t *n_lora) {
    int in[QS_PROJ_N], out[QS_PROJ_N];
    qs_llama_linear_shapes(c, out, in);
    size_t n = 0;
    for (int p = 0; p < QS_PROJ_N; p++) n += pad16((size_t)o->rank * in[p]) + pad16((size_t)out[p] * o->rank);
    if (n_lora) *n_lora = n;
    for (int k = 0; k < QS_SMOOTH_N; k++) n += pad16((size_t)smooth_count(c, o, k));
    for (int p = 0; p < QS_PROJ_N && grid_form(o); p++)
        n += (is_slider(o) ? 2 : 1) * pad16((size_t)out[p] * groups_of(o, in[p]));
    const size_t gammas = 2 * pad16((size_t)c->hidden_size);
    if (n_step) *n_step = grid_form(o) ? n : n + gammas;
    return n + gammas;
}

/* Q(W) kept as bf16 (opts.bf16_base, paper form with weight quantization) */
static int bf16_base(const qs_llama_train *tr) {
    return tr->opts.bf16_base && tr->opts.form == QS_LORA_PAPER && quant_bits(tr->opts.wbits);
}

/* init's float scratch for Q(W) before bf16: whole rows, about opts.bf16_chunk floats (4 Mi,
 * 16 MiB, by default) a chunk, no more than the largest projection */
enum { CONV_FLOATS = 1 << 22 };
static size_t conv_floats(const qs_llama_train *tr) {
    size_t most = 0, in_max = 0;
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t wn = (size_t)tr->in[p] * tr->out[p];
        most = wn > most ? wn : most;
        in_max = (size_t)tr->in[p] > in_max ? (size_t)tr->in[p] : in_max;
    }
    size_t c = (tr->opts.bf16_chunk ? tr->opts.bf16_chunk : CONV_FLOATS) / in_max * in_max;
    c = c ? c : in_max;
    return c < most ? c : most;
}

/* Every buffer init allocates, with its size in floats (n_param of the trainables given).
 * Returns the count. tr's shapes and opts must be set. */
typedef struct buf_slot {
    float **slot;
    size_t n;
} buf_slot;
enum { MAX_BUFS = 64 };
static int buffers(qs_llama_train *tr, const qs_model_config *c, buf_slot *b) {
    const size_t T = (size_t)tr->max_tokens, H = (size_t)c->hidden_size, Q = (size_t)c->n_heads * c->head_dim,
                 KV = (size_t)c->n_kv_heads * c->head_dim, I = (size_t)c->intermediate_size,
                 r = (size_t)tr->opts.rank;
    const int ab = quant_bits(tr->opts.abits), wq = quant_bits(tr->opts.wbits);
    int n = 0;
#define BUF(ptr, count) (b[n++] = (buf_slot){&(ptr), (count)})
    BUF(tr->param, tr->n_param);
    BUF(tr->grad, tr->n_param);
    BUF(tr->adam_m, tr->n_param);
    BUF(tr->adam_v, tr->n_param);
    const int b16 = bf16_base(tr);
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t wn = (size_t)tr->in[p] * tr->out[p];
        if (b16) BUF(tr->wq16[p], (wn + 1) / 2); /* bf16 bits in float-sized allocations */
        else if (tr->opts.form == QS_LORA_PAPER && wq && !tr->opts.base_in_place) BUF(tr->wq_own[p], wn);
        if (tr->opts.form != QS_LORA_PAPER) BUF(tr->weff[p], wn); /* the paper form keeps B A apart */
    }
    if (grid_form(&tr->opts)) {
        size_t most = 0;
        for (int p = 0; p < QS_PROJ_N; p++) {
            const size_t qn = (size_t)tr->out[p] * groups_of(&tr->opts, tr->in[p]), wn = (size_t)tr->in[p] * tr->out[p];
            if (is_dlqat(&tr->opts)) BUF(tr->gscale[p], qn);
            if (is_dlqat(&tr->opts)) BUF(tr->gzero[p], qn);
            most = wn > most ? wn : most;
        }
        BUF(tr->dlr, most);
        BUF(tr->dwt, most);
    }
    if (is_slider(&tr->opts) && tr->opts.smooth) {
        BUF(tr->geff[0], H);
        BUF(tr->geff[1], H);
        BUF(tr->dgeff, H);
    }
    if (b16) BUF(tr->conv, conv_floats(tr));
    BUF(tr->tape.x, T * H);
    BUF(tr->tape.rstd1, T);
    BUF(tr->tape.xn1, T * H);
    BUF(tr->tape.q, T * Q);
    BUF(tr->tape.k, T * KV);
    BUF(tr->tape.v, T * KV);
    BUF(tr->tape.lse, T * (size_t)c->n_heads);
    BUF(tr->tape.att, T * Q);
    if (ab) BUF(tr->tape.attq, T * Q); /* else attq is att */
    BUF(tr->tape.h, T * H);
    BUF(tr->tape.rstd2, T);
    BUF(tr->tape.xn2, T * H);
    BUF(tr->tape.gate, T * I);
    BUF(tr->tape.up, T * I);
    BUF(tr->tape.act, T * I);
    BUF(tr->d_h, T * H);
    BUF(tr->d_x, T * H);
    BUF(tr->d_xn, T * H);
    BUF(tr->d_att, T * Q);
    BUF(tr->d_q, T * Q);
    BUF(tr->d_k, T * KV);
    BUF(tr->d_v, T * KV);
    BUF(tr->d_gate, T * I);
    BUF(tr->d_up, T * I);
    BUF(tr->xa, T * r);
    BUF(tr->dyb, T * r);
    BUF(tr->inv_freq, (size_t)c->head_dim / 2);
#undef BUF
    return n;
}

size_t qs_llama_train_bytes(const qs_model_config *cfg, const qs_llama_train_opts *opts, int max_tokens) {
    qs_llama_train t = {0};
    qs_llama_train_opts_default(&t.opts);
    if (opts) t.opts = *opts;
    t.max_tokens = max_tokens;
    qs_llama_linear_shapes(cfg, t.out, t.in);
    t.n_param = n_param_of(cfg, &t.opts, NULL, NULL);
    buf_slot b[MAX_BUFS];
    int n = buffers(&t, cfg, b);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += sizeof(float) * (b[i].n ? b[i].n : 1);
    return bytes;
}

size_t qs_llama_train_param_bytes(const qs_model_config *cfg, const qs_llama_train_opts *opts) {
    qs_llama_train_opts o;
    qs_llama_train_opts_default(&o);
    if (opts) o = *opts;
    return sizeof(float) * n_param_of(cfg, &o, NULL, NULL);
}

/* what qs_llama_train_release keeps beside the trainables: DL-QAT's grid and the scratch its
 * merge uses (SliderQuant's too) */
static int kept_by_release(const qs_llama_train *tr, float *const *slot) {
    if (slot == &tr->param) return 1;
    if (!grid_form(&tr->opts)) return 0;
    if (slot == &tr->dlr) return 1;
    for (int p = 0; p < QS_PROJ_N; p++)
        if (slot == &tr->gscale[p] || slot == &tr->gzero[p]) return 1;
    return 0;
}

void qs_llama_train_release(qs_llama_train *tr) {
    if (!tr->be) return;
    if (tr->tape.attq == tr->tape.att) tr->tape.attq = NULL;
    buf_slot b[MAX_BUFS];
    int n = buffers(tr, tr->cfg, b);
    for (int i = 0; i < n; i++)
        if (*b[i].slot && !kept_by_release(tr, b[i].slot)) {
            tr->be->ops->free(tr->be, *b[i].slot);
            *b[i].slot = NULL;
        }
    for (int p = 0; p < QS_PROJ_N; p++) tr->base[p] = NULL, tr->base16[p] = NULL;
    tr->tape_tokens = 0;
}

void qs_llama_train_free(qs_llama_train *tr) {
    if (!tr->be) {
        free(tr->zeros_host);
        memset(tr, 0, sizeof *tr);
        return;
    }
    if (tr->tape.attq == tr->tape.att) tr->tape.attq = NULL;
    buf_slot b[MAX_BUFS];
    int n = buffers(tr, tr->cfg, b);
    for (int i = 0; i < n; i++)
        if (*b[i].slot) tr->be->ops->free(tr->be, *b[i].slot);
    free(tr->zeros_host);
    memset(tr, 0, sizeof *tr);
}

/* host values of the trainables: A Kaiming-uniform, B zero, DL-QAT's magnitudes 1, the gammas
 * filled in later */
static void init_host(const qs_llama_train *tr, float *h) {
    for (int p = 0; p < QS_PROJ_N; p++) {
        uint64_t s = tr->opts.seed + 0x632be59bd9b4e019ull * (uint64_t)(tr->w->layer * QS_PROJ_N + p + 1);
        float bound = (float)(1.0 / sqrt((double)tr->in[p])), *a = h + (tr->a[p] - tr->param);
        size_t na = (size_t)tr->opts.rank * tr->in[p];
        for (size_t i = 0; i < na; i++) /* 24 random bits -> [-1, 1) exactly, then the bound */
            a[i] = ((float)(qs_splitmix64(&s) >> 40) * (1.0f / 8388608.0f) - 1.0f) * bound;
        if (tr->mag[p])
            for (size_t i = 0, n = (size_t)tr->out[p] * tr->ng[p]; i < n; i++) h[(tr->mag[p] - tr->param) + i] = 1.0f;
        if (tr->gam[p])
            for (size_t i = 0, n = (size_t)tr->out[p] * tr->ng[p]; i < n; i++)
                h[(tr->gam[p] - tr->param) + i] = h[(tr->bet[p] - tr->param) + i] = QS_SLIDER_CLIP_INIT;
    }
    for (int k = 0; k < QS_SMOOTH_N; k++)
        for (int i = 0; i < tr->n_sm[k]; i++) h[(tr->sm[k] - tr->param) + i] = 1.0f;
}

/* DL-QAT: the fixed grid of each projection from its frozen W (quant_weight's quantizer; the
 * codes go to scratch) */
static int dlqat_grid(qs_llama_train *tr, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_llama_train_opts *o = &tr->opts;
    for (int p = 0; p < QS_PROJ_N; p++) {
        QS_RETURN_ERROR_IF(!proj_weight(tr->w, p), QS_EUSAGE, "block %d training: projection %d has no weights",
                           tr->w->layer, p);
        QS_FORWARD_IF_ERROR(be->ops->quant_weight(be, proj_weight(tr->w, p), tr->out[p], tr->in[p], o->group, o->wbits,
                                                  o->sym, (uint8_t *)tr->dwt, tr->gscale[p], tr->gzero[p], NULL, err));
    }
    return 0;
}

/* base16[p] = bf16(Q(W_p)), row chunk by row chunk through conv: from W_p on the backend, or
 * uploaded from o->base_host[p] where the linear is not there (fake_quant_weight is row-wise) */
static int make_base16(qs_llama_train *tr, int p, const qs_llama_train_opts *o, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *ops = be->ops;
    const float *wd = proj_weight(tr->w, p), *wh = o->base_host[p];
    const int in = tr->in[p], out = tr->out[p];
    QS_RETURN_ERROR_IF(!wd && !wh, QS_EUSAGE, "block %d training: projection %d has no weights", tr->w->layer, p);
    uint16_t *dst = (uint16_t *)tr->wq16[p];
    const int rows = (int)(conv_floats(tr) / (size_t)in);
    for (int r0 = 0; r0 < out; r0 += rows) {
        const int nr = out - r0 < rows ? out - r0 : rows;
        const size_t off = (size_t)r0 * in, n = (size_t)nr * in;
        const float *src = wd ? wd + off : tr->conv;
        if (!wd) QS_FORWARD_IF_ERROR(ops->upload(be, tr->conv, wh + off, sizeof(float) * n, err));
        QS_FORWARD_IF_ERROR(ops->fake_quant_weight(be, tr->conv, src, nr, in, o->group, o->wbits, o->sym, err));
        QS_FORWARD_IF_ERROR(ops->to_bf16(be, dst + off, tr->conv, n, err));
    }
    tr->base16[p] = dst;
    return 0;
}

int qs_llama_train_init(qs_llama_train *tr, const qs_model_config *c, const qs_llama_weights *w,
                        const qs_llama_train_opts *opts, int max_tokens, qs_backend *be, qs_error *err) {
    memset(tr, 0, sizeof *tr);
    qs_llama_train_opts o;
    qs_llama_train_opts_default(&o);
    if (opts) o = *opts;
    const qs_backend_ops *ops = be->ops;
    QS_RETURN_ERROR_IF(max_tokens < 1, QS_EUSAGE, "block %d training: %d tokens", w->layer, max_tokens);
    QS_RETURN_ERROR_IF(o.rank < 1 || !isfinite(o.alpha), QS_EUSAGE, "block %d training: LoRA rank %d, alpha %g",
                       w->layer, o.rank, o.alpha);
    QS_RETURN_ERROR_IF(o.form != QS_LORA_PAPER && o.form != QS_LORA_MERGED && o.form != QS_LORA_DLQAT &&
                           o.form != QS_LORA_SLIDER,
                       QS_EUSAGE, "block %d training: unknown LoRA form %d", w->layer, (int)o.form);
    QS_RETURN_ERROR_IF(grid_form(&o) && (o.wbits < 2 || o.wbits > 8), QS_EUSAGE,
                       "block %d training: %s needs 2..8-bit weights, not %d", w->layer,
                       is_dlqat(&o) ? "DL-QAT" : "SliderQuant", o.wbits);
    QS_RETURN_ERROR_IF(is_slider(&o) && o.smooth && (!ops->chan_scale || !ops->chan_scale_backward), QS_EUNSUPPORTED,
                       "block %d training: SliderQuant's smoothing scales are not implemented on %s", w->layer, ops->name);
    QS_RETURN_ERROR_IF(is_slider(&o) && (!ops->lwc_weight || !ops->lwc_weight_backward), QS_EUNSUPPORTED,
                       "block %d training: SliderQuant's weight clipping is not implemented on %s", w->layer, ops->name);
    QS_RETURN_ERROR_IF(is_dlqat(&o) && (!ops->dlqat_weight || !ops->dlqat_weight_backward || !ops->quant_weight),
                       QS_EUNSUPPORTED, "block %d training: DL-QAT is not implemented on %s", w->layer, ops->name);
    QS_RETURN_ERROR_IF(c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads || c->head_dim < 2 || c->head_dim % 2 ||
                           c->head_dim > 2048,
                       QS_EUNSUPPORTED, "config: %d heads on %d key/value heads of %d cannot be trained", c->n_heads,
                       c->n_kv_heads, c->head_dim);
    const int norm_maps = w->ra[0].src_a || w->ra[1].src_a, maps = norm_maps || w->ra[2].src_a;
    QS_RETURN_ERROR_IF(maps && (!ops->gather_backward || (norm_maps && !ops->rmsnorm_gather) ||
                                (w->ra[2].src_a && !ops->swiglu_gather)),
                       QS_EUNSUPPORTED, "block %d training: channel reassembly is not implemented on %s", w->layer,
                       ops->name);
    QS_RETURN_ERROR_IF(!ops->rmsnorm_backward || !ops->attention_backward || !ops->swiglu_backward ||
                           !ops->fake_quant_weight || !ops->adamw_step || (quant_bits(o.abits) && !ops->act_quant) ||
                           (quant_bits(o.abits) && o.half && !ops->act_quant_part),
                       QS_EUNSUPPORTED, "block training is not implemented on %s", ops->name);
    QS_RETURN_ERROR_IF(o.bf16_base && o.form == QS_LORA_PAPER && quant_bits(o.wbits) && (!ops->to_bf16 || !ops->linear_bf16),
                       QS_EUNSUPPORTED, "block %d training: bf16 base weights are not implemented on %s", w->layer, ops->name);
    float inv_freq[1024];
    QS_FORWARD_IF_ERROR(qs_rope_inv_freq(c, inv_freq, err));

    tr->be = be;
    tr->cfg = c;
    tr->w = w;
    tr->opts = o;
    tr->max_tokens = max_tokens;
    tr->s = o.alpha / (float)o.rank;
    qs_llama_linear_shapes(c, tr->out, tr->in);
    tr->n_param = n_param_of(c, &o, &tr->n_step, &tr->n_lora);
    for (int p = 0; p < QS_PROJ_N; p++) tr->ng[p] = groups_of(&o, tr->in[p]);
    for (int k = 0; k < QS_SMOOTH_N; k++) tr->n_sm[k] = smooth_count(c, &o, k);
    buf_slot b[MAX_BUFS];
    int nb = buffers(tr, c, b), rc = 0;
    size_t bytes = qs_llama_train_bytes(c, &o, max_tokens);
    for (int i = 0; i < nb && !rc; i++)
        if (!(*b[i].slot = ops->alloc(be, sizeof(float) * (b[i].n ? b[i].n : 1))))
            rc = qs_error_set(err, -ENOMEM, "block %d training: out of %s memory (%zu bytes for %d tokens)", w->layer,
                              ops->name, bytes, max_tokens);
    tr->zeros_host = calloc(tr->n_param, sizeof(float));
    float *host = calloc(tr->n_param, sizeof(float));
    if (!rc && (!tr->zeros_host || !host))
        rc = qs_error_set(err, -ENOMEM, "block %d training: out of host memory", w->layer);
    if (rc) goto fail;
    if (!quant_bits(o.abits)) tr->tape.attq = tr->tape.att;
    /* views into the packed trainables */
    size_t off = 0;
    for (int p = 0; p < QS_PROJ_N; p++) {
        tr->a[p] = tr->param + off, tr->da[p] = tr->grad + off;
        off += pad16((size_t)o.rank * tr->in[p]);
        tr->b[p] = tr->param + off, tr->db[p] = tr->grad + off;
        off += pad16((size_t)tr->out[p] * o.rank);
    }
    for (int k = 0; k < QS_SMOOTH_N; k++) {
        if (tr->n_sm[k]) tr->sm[k] = tr->param + off, tr->dsm[k] = tr->grad + off;
        off += pad16((size_t)tr->n_sm[k]);
        tr->n_smooth += pad16((size_t)tr->n_sm[k]);
    }
    for (int p = 0; p < QS_PROJ_N && is_dlqat(&o); p++) {
        tr->mag[p] = tr->param + off, tr->dmag[p] = tr->grad + off;
        off += pad16((size_t)tr->out[p] * tr->ng[p]);
    }
    for (int p = 0; p < QS_PROJ_N && is_slider(&o); p++) {
        tr->gam[p] = tr->param + off, tr->dgam[p] = tr->grad + off;
        off += pad16((size_t)tr->out[p] * tr->ng[p]);
    }
    for (int p = 0; p < QS_PROJ_N && is_slider(&o); p++) {
        tr->bet[p] = tr->param + off, tr->dbet[p] = tr->grad + off;
        off += pad16((size_t)tr->out[p] * tr->ng[p]);
    }
    for (int i = 0; i < 2; i++) {
        tr->gamma[i] = tr->param + off, tr->dgamma[i] = tr->grad + off;
        off += pad16((size_t)c->hidden_size);
    }
    init_host(tr, host);
    size_t pb = sizeof(float) * tr->n_param, hb = sizeof(float) * (size_t)c->hidden_size;
    rc = ops->upload(be, tr->param, host, pb, err);
    if (!rc) rc = ops->upload(be, tr->grad, tr->zeros_host, pb, err);
    if (!rc) rc = ops->upload(be, tr->adam_m, tr->zeros_host, pb, err);
    if (!rc) rc = ops->upload(be, tr->adam_v, tr->zeros_host, pb, err);
    if (!rc) rc = ops->copy(be, tr->gamma[0], w->attn_norm, hb, err);
    if (!rc) rc = ops->copy(be, tr->gamma[1], w->ffn_norm, hb, err);
    if (!rc) rc = ops->upload(be, tr->inv_freq, inv_freq, sizeof(float) * (size_t)(c->head_dim / 2), err);
    for (int p = 0; p < QS_PROJ_N && !rc && bf16_base(tr); p++) rc = make_base16(tr, p, &o, err);
    if (tr->conv) ops->free(be, tr->conv), tr->conv = NULL;
    if (!rc && is_dlqat(&o)) rc = dlqat_grid(tr, err);
    for (int p = 0; p < QS_PROJ_N && !rc && !bf16_base(tr); p++) {
        tr->base[p] = proj_weight(w, p);
        float *qw = tr->wq_own[p] ? tr->wq_own[p]
                    : o.form == QS_LORA_PAPER && quant_bits(o.wbits) && o.base_in_place ? proj_weight(w, p) : NULL;
        if (qw) { /* fake_quant_weight may write over its input: the same bits either way */
            rc = ops->fake_quant_weight(be, qw, tr->base[p], tr->out[p], tr->in[p], o.group, o.wbits, o.sym, err);
            tr->base[p] = qw;
        }
    }
    free(host);
    host = NULL;
    if (rc) goto fail;
    return 0;
fail:
    free(host);
    qs_llama_train_free(tr);
    return rc;
}

/* DL-QAT's W_hat of projection p into y (may be tr->dlr, not W): dlr = s B A, then dlqat_weight;
 * codes and row_err as there */
static int dlqat_weight(qs_llama_train *tr, int p, float *y, uint8_t *codes, double *row_err, qs_error *err) {
    qs_backend *be = tr->be;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    QS_FORWARD_IF_ERROR(be->ops->gemm(be, 0, 0, out, in, r, tr->s, tr->b[p], r, tr->a[p], in, 0.0f, tr->dlr, in, err));
    return be->ops->dlqat_weight(be, y, codes, row_err, proj_weight(tr->w, p), tr->dlr, tr->gscale[p], tr->gzero[p],
                                 tr->mag[p], out, in, tr->opts.group, tr->opts.wbits, err);
}

/* a smoothing side: scales at site k (off: alpha NULL) with their gradient, power and map */
static qs_chan_scale smooth_side(const qs_llama_train *tr, int k, int pow, int hd, int rep, int half) {
    qs_chan_scale c = {.alpha = tr->sm[k], .dalpha = tr->dsm[k], .pow = pow, .hd = hd, .rep = rep, .half = half};
    return c;
}

/* the smoothing of projection p's rows (D_out) and columns (D_in), llama_train.h's sites; 0
 * where it has none */
static int smooth_sides(const qs_llama_train *tr, int p, qs_chan_scale *row, qs_chan_scale *col) {
    const int hd = tr->cfg->head_dim, rep = tr->cfg->n_heads / tr->cfg->n_kv_heads;
    const qs_chan_scale none = {0};
    *row = none, *col = none;
    if (!tr->opts.smooth || !is_slider(&tr->opts)) return 0;
    /* the consumers' columns */
    const int in_site[QS_PROJ_N] = {QS_SMOOTH_QKV, QS_SMOOTH_QKV, QS_SMOOTH_QKV, QS_SMOOTH_VO,
                                    QS_SMOOTH_GU,  QS_SMOOTH_GU,  QS_SMOOTH_UD};
    *col = p == QS_PROJ_O ? smooth_side(tr, QS_SMOOTH_VO, 1, hd, rep, 0) : smooth_side(tr, in_site[p], 1, 0, 1, 0);
    /* the producers' rows */
    if (p == QS_PROJ_Q) *row = smooth_side(tr, QS_SMOOTH_QK, -1, hd, rep, 1);
    if (p == QS_PROJ_K) *row = smooth_side(tr, QS_SMOOTH_QK, 1, hd, 1, 1);
    if (p == QS_PROJ_V) *row = smooth_side(tr, QS_SMOOTH_VO, -1, 0, 1, 0);
    if (p == QS_PROJ_UP) *row = smooth_side(tr, QS_SMOOTH_UD, -1, 0, 1, 0);
    return row->alpha || col->alpha;
}

/* norm i's gamma over its site's scales (smoothing: gamma / a) into y */
static int smooth_gamma(qs_llama_train *tr, int i, float *y, qs_error *err) {
    const qs_chan_scale col = smooth_side(tr, i ? QS_SMOOTH_GU : QS_SMOOTH_QKV, -1, 0, 1, 0);
    return tr->be->ops->chan_scale(tr->be, y, tr->gamma[i], 1, tr->cfg->hidden_size, NULL, &col, err);
}

/* the input columns of projection p that SliderQuant quantizes: the first half (rounded up) in
 * its first pass (opts.half), else all */
static int slider_qcols(const qs_llama_train *tr, int p) { return tr->opts.half ? (tr->in[p] + 1) / 2 : tr->in[p]; }

/* SliderQuant's W_hat = Q_lwc(D_out W D_in + s B A) of projection p into y (may be tr->dlr): dlr
 * = D_out W D_in + s B A (smooth_sides; without smoothing W + s B A), then lwc_weight; codes,
 * scales, zeros (backend) and row_err as there */
static int slider_pre(qs_llama_train *tr, int p, qs_error *err) {
    qs_backend *be = tr->be;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    qs_chan_scale row, col;
    if (smooth_sides(tr, p, &row, &col))
        QS_FORWARD_IF_ERROR(be->ops->chan_scale(be, tr->dlr, proj_weight(tr->w, p), out, in, &row, &col, err));
    else QS_FORWARD_IF_ERROR(be->ops->copy(be, tr->dlr, proj_weight(tr->w, p), sizeof(float) * (size_t)in * out, err));
    return be->ops->gemm(be, 0, 0, out, in, r, tr->s, tr->b[p], r, tr->a[p], in, 1.0f, tr->dlr, in, err);
}
static int slider_weight(qs_llama_train *tr, int p, float *y, uint8_t *codes, float *scales, float *zeros,
                         double *row_err, qs_error *err) {
    QS_FORWARD_IF_ERROR(slider_pre(tr, p, err));
    return tr->be->ops->lwc_weight(tr->be, y, codes, scales, zeros, row_err, tr->dlr, tr->gam[p], tr->bet[p], tr->out[p],
                                   tr->in[p], tr->opts.group, tr->opts.wbits, tr->opts.sym, slider_qcols(tr, p), err);
}

/* the merged form's W_eff = Q(base + s B A), DL-QAT's W_hat (the paper form forms no W_eff:
 * proj_forward) */
static int rebuild_weights(qs_llama_train *tr, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank;
    if (tr->opts.form == QS_LORA_PAPER) return 0;
    for (int p = 0; p < QS_PROJ_N && is_dlqat(&tr->opts); p++) QS_FORWARD_IF_ERROR(dlqat_weight(tr, p, tr->weff[p], NULL, NULL, err));
    for (int p = 0; p < QS_PROJ_N && is_slider(&tr->opts); p++)
        QS_FORWARD_IF_ERROR(slider_weight(tr, p, tr->weff[p], NULL, NULL, NULL, NULL, err));
    for (int i = 0; i < 2 && tr->geff[0]; i++) QS_FORWARD_IF_ERROR(smooth_gamma(tr, i, tr->geff[i], err));
    for (int p = 0; p < QS_PROJ_N && tr->opts.form == QS_LORA_MERGED; p++) {
        int in = tr->in[p], out = tr->out[p];
        QS_FORWARD_IF_ERROR(o->copy(be, tr->weff[p], tr->base[p], sizeof(float) * (size_t)in * out, err));
        QS_FORWARD_IF_ERROR(o->gemm(be, 0, 0, out, in, r, tr->s, tr->b[p], r, tr->a[p], in, 1.0f, tr->weff[p], in, err));
        if (quant_bits(tr->opts.wbits))
            QS_FORWARD_IF_ERROR(o->fake_quant_weight(be, tr->weff[p], tr->weff[p], out, in, tr->opts.group,
                                                     tr->opts.wbits, tr->opts.sym, err));
    }
    return 0;
}

/* Y [T, out] = X W_eff^T + beta Y for projection p, X [T, in]: over the merged form's rebuilt
 * W_eff, or in the paper form X base^T + s (X A^T) B^T, the low-rank path on its own through
 * xa: no [out, in] W_eff is formed or stored (a copy of the block's weights less in memory, and
 * no pass over them per step) */
static int proj_forward(qs_llama_train *tr, int p, const float *X, int T, float beta, float *Y, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    if (tr->opts.form != QS_LORA_PAPER) return o->gemm(be, 0, 1, T, out, in, 1.0f, X, in, tr->weff[p], in, beta, Y, out, err);
    if (tr->base16[p]) QS_FORWARD_IF_ERROR(o->linear_bf16(be, 1, T, out, in, X, in, tr->base16[p], in, beta, Y, out, err));
    else QS_FORWARD_IF_ERROR(o->gemm(be, 0, 1, T, out, in, 1.0f, X, in, tr->base[p], in, beta, Y, out, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 1, T, r, in, 1.0f, X, in, tr->a[p], in, 0.0f, tr->xa, r, err));
    return o->gemm(be, 0, 1, T, out, r, tr->s, tr->xa, r, tr->b[p], r, 1.0f, Y, out, err);
}

/* xn [T, hidden] = norm i of x with the trained gamma i, gathered with the maps of site i when
 * set; rstd [T] its inverse RMS. With maps, a plain rmsnorm into d_xn (free during the forward)
 * gives rstd and rmsnorm_gather gives xn: the deployed forward's op, so the same bits. */
static int norm_forward(qs_llama_train *tr, int i, float *xn, const float *x, float *rstd, int T, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int H = tr->cfg->hidden_size;
    const float eps = tr->cfg->rms_eps, *g = tr->geff[i] ? tr->geff[i] : tr->gamma[i];
    if (!tr->w->ra[i].src_a) return o->rmsnorm(be, xn, x, g, T, H, eps, rstd, err);
    QS_FORWARD_IF_ERROR(o->rmsnorm(be, tr->d_xn, x, g, T, H, eps, rstd, err));
    return o->rmsnorm_gather(be, xn, x, g, T, H, eps, tr->w->ra[i].src_a, tr->w->ra[i].src_b, tr->w->ra[i].coef, err);
}

/* Backward of norm_forward i from d_xn = dL/d(xn) [T, hidden] (gathered): dx = dL/dx, dgamma i +=.
 * With maps, gather_backward puts dL/d(rmsnorm output) into dx, which rmsnorm_backward then
 * overwrites in place. With smoothing the norm's gamma is geff = gamma / a: its gradient goes
 * to dgeff (zeroed first), then through chan_scale's backward to dgamma and the site's scales. */
static int norm_backward(qs_llama_train *tr, int i, float *dx, float *d_xn, const float *x, const float *rstd, int T,
                         qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int H = tr->cfg->hidden_size;
    const float *dy = d_xn;
    if (tr->w->ra[i].src_a) {
        QS_FORWARD_IF_ERROR(o->gather_backward(be, dx, d_xn, T, H, tr->w->ra[i].src_a, tr->w->ra[i].src_b,
                                               tr->w->ra[i].coef, err));
        dy = dx;
    }
    if (!tr->geff[i]) return o->rmsnorm_backward(be, dx, tr->dgamma[i], dy, x, tr->gamma[i], rstd, T, H, err);
    QS_FORWARD_IF_ERROR(o->upload(be, tr->dgeff, tr->zeros_host, sizeof(float) * (size_t)H, err));
    QS_FORWARD_IF_ERROR(o->rmsnorm_backward(be, dx, tr->dgeff, dy, x, tr->geff[i], rstd, T, H, err));
    const qs_chan_scale col = smooth_side(tr, i ? QS_SMOOTH_GU : QS_SMOOTH_QKV, -1, 0, 1, 0);
    return o->chan_scale_backward(be, tr->dgamma[i], tr->dgeff, tr->gamma[i], 1, H, NULL, &col, err);
}

int qs_llama_train_forward(qs_llama_train *tr, const float *x, float *out, int n_win, int L, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const qs_model_config *c = tr->cfg;
    const qs_llama_weights *w = tr->w;
    const int T = n_win * L, H = c->hidden_size, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd,
              I = c->intermediate_size;
    const int ab = quant_bits(tr->opts.abits);
    QS_RETURN_ERROR_IF(n_win < 1 || L < 1 || T > tr->max_tokens, QS_EUSAGE,
                       "block %d training forward: %d windows of %d tokens do not fit %d tokens", w->layer, n_win, L,
                       tr->max_tokens);
#define AQ(buf, cols, seg) \
    do { \
        if (ab && tr->opts.half) QS_FORWARD_IF_ERROR(o->act_quant_part(be, buf, T, cols, seg, ((seg) + 1) / 2, ab, err)); \
        else if (ab) QS_FORWARD_IF_ERROR(o->act_quant(be, buf, T, cols, seg, ab, err)); \
    } while (0)
    tr->tape_tokens = 0; /* no valid tape until this forward completes */
    QS_FORWARD_IF_ERROR(rebuild_weights(tr, err));
    if (o->set_window_rows) QS_FORWARD_IF_ERROR(o->set_window_rows(be, L, err)); /* token rows are windows of L */
    QS_FORWARD_IF_ERROR(o->copy(be, tr->tape.x, x, sizeof(float) * (size_t)T * H, err));
    /* attention: h = x + o_proj(attn(rope(q), rope(k), v)) */
    QS_FORWARD_IF_ERROR(norm_forward(tr, 0, tr->tape.xn1, tr->tape.x, tr->tape.rstd1, T, err));
    AQ(tr->tape.xn1, H, H);
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_Q, tr->tape.xn1, T, 0.0f, tr->tape.q, err));
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_K, tr->tape.xn1, T, 0.0f, tr->tape.k, err));
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_V, tr->tape.xn1, T, 0.0f, tr->tape.v, err));
    if (w->bq) {
        QS_FORWARD_IF_ERROR(o->add_bias(be, tr->tape.q, w->bq, T, Q, err));
        QS_FORWARD_IF_ERROR(o->add_bias(be, tr->tape.k, w->bk, T, KV, err));
        QS_FORWARD_IF_ERROR(o->add_bias(be, tr->tape.v, w->bv, T, KV, err));
    }
    QS_FORWARD_IF_ERROR(o->rope(be, tr->tape.q, n_win, L, 0, c->n_heads, hd, Q, tr->inv_freq, 0, err));
    QS_FORWARD_IF_ERROR(o->rope(be, tr->tape.k, n_win, L, 0, c->n_kv_heads, hd, KV, tr->inv_freq, 0, err));
    AQ(tr->tape.q, Q, hd);
    AQ(tr->tape.k, KV, hd);
    AQ(tr->tape.v, KV, hd);
    QS_FORWARD_IF_ERROR(o->attention(be, tr->tape.att, tr->tape.q, tr->tape.k, tr->tape.v, n_win, L, c->n_heads,
                                     c->n_kv_heads, hd, (float)(1.0 / sqrt((double)hd)), tr->tape.lse, err));
    if (ab) {
        QS_FORWARD_IF_ERROR(o->copy(be, tr->tape.attq, tr->tape.att, sizeof(float) * (size_t)T * Q, err));
        AQ(tr->tape.attq, Q, Q);
    }
    QS_FORWARD_IF_ERROR(o->copy(be, tr->tape.h, tr->tape.x, sizeof(float) * (size_t)T * H, err));
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_O, tr->tape.attq, T, 1.0f, tr->tape.h, err));
    /* SwiGLU MLP: out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)) */
    QS_FORWARD_IF_ERROR(norm_forward(tr, 1, tr->tape.xn2, tr->tape.h, tr->tape.rstd2, T, err));
    AQ(tr->tape.xn2, H, H);
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_GATE, tr->tape.xn2, T, 0.0f, tr->tape.gate, err));
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_UP, tr->tape.xn2, T, 0.0f, tr->tape.up, err));
    if (w->ra[2].src_a) /* act[k] = coef (act[a] + act[b]), as qs_llama_block_forward */
        QS_FORWARD_IF_ERROR(o->swiglu_gather(be, tr->tape.act, tr->tape.gate, tr->tape.up, T, I, w->ra[2].src_a,
                                             w->ra[2].src_b, w->ra[2].coef, err));
    else
        QS_FORWARD_IF_ERROR(o->swiglu(be, tr->tape.act, tr->tape.gate, tr->tape.up, (size_t)T * I, err));
    AQ(tr->tape.act, I, I);
#undef AQ
    QS_FORWARD_IF_ERROR(o->copy(be, out, tr->tape.h, sizeof(float) * (size_t)T * H, err));
    QS_FORWARD_IF_ERROR(proj_forward(tr, QS_PROJ_DOWN, tr->tape.act, T, 1.0f, out, err));
    tr->tape_tokens = T, tr->tape_win = n_win, tr->tape_len = L, tr->tape_step = tr->step;
    return 0;
}

/* LoRA gradients of projection p from its input X [T, in] and output gradient dY [T, out]:
 * dB += s dY^T (X A^T), dA += s (dY B)^T X */
static int lora_grads(qs_llama_train *tr, int p, const float *X, const float *dY, int T, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 1, T, r, in, 1.0f, X, in, tr->a[p], in, 0.0f, tr->xa, r, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 1, 0, out, r, T, tr->s, dY, out, tr->xa, r, 1.0f, tr->db[p], r, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 0, T, r, out, 1.0f, dY, out, tr->b[p], r, 0.0f, tr->dyb, r, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 1, 0, r, in, T, tr->s, tr->dyb, r, X, in, 1.0f, tr->da[p], in, err));
    return 0;
}

/* DL-QAT's gradients of projection p: dW_hat = dY^T X [out, in] (dwt), through dlqat_weight's
 * backward to d = s B A (dwt again) and dm += ; then dB += s dD A^T, dA += s B^T dD. The full
 * [out, in] gradient is formed (the mask and dm need it): one more GEMM of the linear's size. */
static int dlqat_grads(qs_llama_train *tr, int p, const float *X, const float *dY, int T, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    QS_FORWARD_IF_ERROR(o->gemm(be, 1, 0, out, in, T, 1.0f, dY, out, X, in, 0.0f, tr->dwt, in, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 0, out, in, r, tr->s, tr->b[p], r, tr->a[p], in, 0.0f, tr->dlr, in, err));
    QS_FORWARD_IF_ERROR(o->dlqat_weight_backward(be, tr->dwt, tr->dmag[p], tr->dwt, proj_weight(tr->w, p), tr->dlr,
                                                 tr->gscale[p], tr->gzero[p], tr->mag[p], out, in, tr->opts.group,
                                                 tr->opts.wbits, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 1, out, r, in, tr->s, tr->dwt, in, tr->a[p], in, 1.0f, tr->db[p], r, err));
    return o->gemm(be, 1, 0, r, in, out, tr->s, tr->b[p], r, tr->dwt, in, 1.0f, tr->da[p], in, err);
}

/* SliderQuant's gradients of projection p: dW_hat = dY^T X [out, in] (dwt), through
 * lwc_weight's backward to D_out W D_in + s B A (dlr, rebuilt) and dgam, dbet +=, through
 * chan_scale's backward to the smoothing scales; then dB += s dD A^T, dA += s B^T dD as
 * DL-QAT's */
static int slider_grads(qs_llama_train *tr, int p, const float *X, const float *dY, int T, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    QS_FORWARD_IF_ERROR(o->gemm(be, 1, 0, out, in, T, 1.0f, dY, out, X, in, 0.0f, tr->dwt, in, err));
    QS_FORWARD_IF_ERROR(slider_pre(tr, p, err));
    QS_FORWARD_IF_ERROR(o->lwc_weight_backward(be, tr->dwt, tr->dgam[p], tr->dbet[p], tr->dwt, tr->dlr, tr->gam[p],
                                               tr->bet[p], out, in, tr->opts.group, tr->opts.wbits, tr->opts.sym,
                                               slider_qcols(tr, p), err));
    qs_chan_scale row, col; /* dwt is now dL/d(D_out W D_in + s B A) */
    if (smooth_sides(tr, p, &row, &col))
        QS_FORWARD_IF_ERROR(o->chan_scale_backward(be, NULL, tr->dwt, proj_weight(tr->w, p), out, in, &row, &col, err));
    QS_FORWARD_IF_ERROR(o->gemm(be, 0, 1, out, r, in, tr->s, tr->dwt, in, tr->a[p], in, 1.0f, tr->db[p], r, err));
    return o->gemm(be, 1, 0, r, in, out, tr->s, tr->b[p], r, tr->dwt, in, 1.0f, tr->da[p], in, err);
}

/* Backward of proj_forward p: the LoRA gradients (lora_grads, which leaves dY B in dyb; DL-QAT:
 * dlqat_grads), then dX [T, in] = dY W_eff + beta dX: over the merged form's W_eff (DL-QAT's
 * W_hat), or dY base + s (dY B) A */
static int proj_backward(qs_llama_train *tr, int p, const float *X, const float *dY, int T, float beta, float *dX,
                         qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank, in = tr->in[p], out = tr->out[p];
    if (grid_form(&tr->opts)) {
        QS_FORWARD_IF_ERROR(is_dlqat(&tr->opts) ? dlqat_grads(tr, p, X, dY, T, err) : slider_grads(tr, p, X, dY, T, err));
        return o->gemm(be, 0, 0, T, in, out, 1.0f, dY, out, tr->weff[p], in, beta, dX, in, err);
    }
    QS_FORWARD_IF_ERROR(lora_grads(tr, p, X, dY, T, err));
    if (tr->opts.form == QS_LORA_MERGED) return o->gemm(be, 0, 0, T, in, out, 1.0f, dY, out, tr->weff[p], in, beta, dX, in, err);
    if (tr->base16[p]) QS_FORWARD_IF_ERROR(o->linear_bf16(be, 0, T, in, out, dY, out, tr->base16[p], in, beta, dX, in, err));
    else QS_FORWARD_IF_ERROR(o->gemm(be, 0, 0, T, in, out, 1.0f, dY, out, tr->base[p], in, beta, dX, in, err));
    return o->gemm(be, 0, 0, T, in, r, tr->s, tr->dyb, r, tr->a[p], in, 1.0f, dX, in, err);
}

int qs_llama_train_backward(qs_llama_train *tr, const float *dout, float *dx, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const qs_model_config *c = tr->cfg;
    const int T = tr->tape_tokens, n_win = tr->tape_win, L = tr->tape_len, H = c->hidden_size, hd = c->head_dim,
              Q = c->n_heads * hd, KV = c->n_kv_heads * hd, I = c->intermediate_size;
    QS_RETURN_ERROR_IF(T == 0, QS_EUSAGE, "block %d training backward: no forward tape", tr->w->layer);
    QS_RETURN_ERROR_IF(tr->tape_step != tr->step, QS_EUSAGE,
                       "block %d training backward: an optimizer step came after the forward", tr->w->layer);
    if (o->set_window_rows) QS_FORWARD_IF_ERROR(o->set_window_rows(be, L, err));
    const qs_llama_weights *w = tr->w;
    const size_t TH = (size_t)T * H;
    /* MLP: out = h + down(act); the residual passes dout to h */
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_DOWN, tr->tape.act, dout, T, 0.0f, tr->d_gate, err));
    /* d_act (in d_gate; straight-through act_quant) -> dgate, dup; with maps d_act is of the
     * gathered product: its transpose into d_up gives that of silu(gate) * up first */
    const float *d_prod = tr->d_gate;
    if (w->ra[2].src_a) {
        QS_FORWARD_IF_ERROR(o->gather_backward(be, tr->d_up, tr->d_gate, T, I, w->ra[2].src_a, w->ra[2].src_b,
                                               w->ra[2].coef, err));
        d_prod = tr->d_up;
    }
    QS_FORWARD_IF_ERROR(
        o->swiglu_backward(be, tr->d_gate, tr->d_up, d_prod, tr->tape.gate, tr->tape.up, (size_t)T * I, err));
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_GATE, tr->tape.xn2, tr->d_gate, T, 0.0f, tr->d_xn, err));
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_UP, tr->tape.xn2, tr->d_up, T, 1.0f, tr->d_xn, err));
    QS_FORWARD_IF_ERROR(norm_backward(tr, 1, tr->d_x, tr->d_xn, tr->tape.h, tr->tape.rstd2, T, err));
    QS_FORWARD_IF_ERROR(o->add(be, tr->d_h, dout, tr->d_x, TH, err));
    /* attention: h = x + o(attq) */
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_O, tr->tape.attq, tr->d_h, T, 0.0f, tr->d_att, err));
    QS_FORWARD_IF_ERROR(o->attention_backward(be, tr->d_q, tr->d_k, tr->d_v, tr->d_att, tr->tape.q, tr->tape.k,
                                              tr->tape.v, tr->tape.att, tr->tape.lse, n_win, L, c->n_heads,
                                              c->n_kv_heads, hd, (float)(1.0 / sqrt((double)hd)), err));
    /* straight-through Q/K/V fake-quant; RoPE's backward is the inverse rotation */
    QS_FORWARD_IF_ERROR(o->rope(be, tr->d_q, n_win, L, 0, c->n_heads, hd, Q, tr->inv_freq, 1, err));
    QS_FORWARD_IF_ERROR(o->rope(be, tr->d_k, n_win, L, 0, c->n_kv_heads, hd, KV, tr->inv_freq, 1, err));
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_Q, tr->tape.xn1, tr->d_q, T, 0.0f, tr->d_xn, err));
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_K, tr->tape.xn1, tr->d_k, T, 1.0f, tr->d_xn, err));
    QS_FORWARD_IF_ERROR(proj_backward(tr, QS_PROJ_V, tr->tape.xn1, tr->d_v, T, 1.0f, tr->d_xn, err));
    QS_FORWARD_IF_ERROR(norm_backward(tr, 0, tr->d_x, tr->d_xn, tr->tape.x, tr->tape.rstd1, T, err));
    if (dx) QS_FORWARD_IF_ERROR(o->add(be, dx, tr->d_h, tr->d_x, TH, err));
    return 0;
}

int qs_llama_train_zero_grad(qs_llama_train *tr, qs_error *err) {
    return tr->be->ops->upload(tr->be, tr->grad, tr->zeros_host, sizeof(float) * tr->n_param, err);
}

int qs_llama_train_reset_optim(qs_llama_train *tr, qs_error *err) {
    const size_t pb = sizeof(float) * tr->n_param;
    QS_FORWARD_IF_ERROR(tr->be->ops->upload(tr->be, tr->adam_m, tr->zeros_host, pb, err));
    QS_FORWARD_IF_ERROR(tr->be->ops->upload(tr->be, tr->adam_v, tr->zeros_host, pb, err));
    tr->step = 0;
    return qs_llama_train_zero_grad(tr, err);
}

int qs_llama_train_step(qs_llama_train *tr, float lr, qs_error *err) {
    const qs_llama_train_opts *p = &tr->opts;
    /* SliderQuant: the smoothing scales at smooth_lr_mult, the clipping logits at clip_lr_mult
     * times the LoRA's rate */
    const int sl = is_slider(p);
    const size_t end[3] = {sl ? tr->n_lora : tr->n_step, sl ? tr->n_lora + tr->n_smooth : tr->n_step, tr->n_step};
    const float rate[3] = {lr, lr * p->smooth_lr_mult, lr * p->clip_lr_mult};
    size_t o = 0;
    for (int k = 0; k < 3; o = end[k], k++) {
        if (end[k] <= o) continue;
        QS_FORWARD_IF_ERROR(tr->be->ops->adamw_step(tr->be, tr->param + o, tr->grad + o, tr->adam_m + o, tr->adam_v + o,
                                                    end[k] - o, rate[k], p->beta1, p->beta2, p->eps, p->weight_decay,
                                                    tr->step + 1, err));
    }
    tr->step++;
    return qs_llama_train_zero_grad(tr, err);
}

int qs_llama_train_merge(qs_llama_train *tr, qs_llama_weights *w_out, qs_error *err) {
    qs_backend *be = tr->be;
    const qs_backend_ops *o = be->ops;
    const int r = tr->opts.rank;
    for (int p = 0; p < QS_PROJ_N; p++) {
        int in = tr->in[p], out = tr->out[p];
        float *dst = proj_weight(w_out, p), *src = proj_weight(tr->w, p);
        if (grid_form(&tr->opts)) { /* W_hat through dlr: dst may be the frozen W */
            QS_FORWARD_IF_ERROR(is_dlqat(&tr->opts) ? dlqat_weight(tr, p, tr->dlr, NULL, NULL, err)
                                                    : slider_weight(tr, p, tr->dlr, NULL, NULL, NULL, NULL, err));
            QS_FORWARD_IF_ERROR(o->copy(be, dst, tr->dlr, sizeof(float) * (size_t)in * out, err));
            continue;
        }
        if (dst != src) QS_FORWARD_IF_ERROR(o->copy(be, dst, src, sizeof(float) * (size_t)in * out, err));
        QS_FORWARD_IF_ERROR(o->gemm(be, 0, 0, out, in, r, tr->s, tr->b[p], r, tr->a[p], in, 1.0f, dst, in, err));
    }
    size_t hb = sizeof(float) * (size_t)tr->cfg->hidden_size;
    if (tr->n_smooth) { /* the forward's gamma / a */
        QS_FORWARD_IF_ERROR(smooth_gamma(tr, 0, w_out->attn_norm, err));
        return smooth_gamma(tr, 1, w_out->ffn_norm, err);
    }
    QS_FORWARD_IF_ERROR(o->copy(be, w_out->attn_norm, tr->gamma[0], hb, err));
    QS_FORWARD_IF_ERROR(o->copy(be, w_out->ffn_norm, tr->gamma[1], hb, err));
    return 0;
}

int qs_llama_train_dlqat_codes(qs_llama_train *tr, int p, uint8_t *codes, double *row_err, float *scales_host,
                               float *zeros_host, qs_error *err) {
    qs_backend *be = tr->be;
    QS_RETURN_ERROR_IF(!is_dlqat(&tr->opts) || p < 0 || p >= QS_PROJ_N, QS_EUSAGE,
                       "block %d training: no DL-QAT codes for projection %d", tr->w->layer, p);
    const size_t n = (size_t)tr->out[p] * tr->ng[p], bytes = sizeof(float) * n;
    QS_FORWARD_IF_ERROR(dlqat_weight(tr, p, NULL, codes, row_err, err));
    float *mag = malloc(bytes);
    QS_RETURN_ERROR_IF(!mag, -ENOMEM, "block %d: out of host memory for the DL-QAT scales", tr->w->layer);
    int rc = be->ops->download(be, mag, tr->mag[p], bytes, err);
    if (!rc) rc = be->ops->download(be, scales_host, tr->gscale[p], bytes, err);
    if (!rc) rc = be->ops->download(be, zeros_host, tr->gzero[p], bytes, err);
    for (size_t i = 0; !rc && i < n; i++) scales_host[i] = mag[i] * scales_host[i]; /* the ops' product: the same bits */
    free(mag);
    return rc;
}

int qs_llama_train_slider_codes(qs_llama_train *tr, int p, uint8_t *codes, double *row_err, float *scales_host,
                                float *zeros_host, qs_error *err) {
    qs_backend *be = tr->be;
    QS_RETURN_ERROR_IF(!is_slider(&tr->opts) || p < 0 || p >= QS_PROJ_N, QS_EUSAGE,
                       "block %d training: no SliderQuant codes for projection %d", tr->w->layer, p);
    const size_t bytes = sizeof(float) * (size_t)tr->out[p] * tr->ng[p];
    float *sc = be->ops->alloc(be, bytes), *z = be->ops->alloc(be, bytes);
    int rc = sc && z ? 0
                     : qs_error_set(err, -ENOMEM, "block %d: out of %s memory for the grid of projection %d (%zu bytes)",
                                    tr->w->layer, be->ops->name, p, 2 * bytes);
    if (!rc) rc = slider_weight(tr, p, NULL, codes, sc, z, row_err, err);
    if (!rc) rc = be->ops->download(be, scales_host, sc, bytes, err);
    if (!rc) rc = be->ops->download(be, zeros_host, z, bytes, err);
    be->ops->free(be, sc), be->ops->free(be, z);
    return rc;
}
