/* model/llama_forward.c - one decoder block's forward pass, written on the backend ops. */
#include "model/llama_forward.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "model/rope.h"

size_t qs_llama_scratch_bytes(const qs_model_config *c, int max_tokens) {
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    return sizeof(float) * ((size_t)max_tokens * (c->hidden_size + 2 * Q + 2 * KV + 3 * (size_t)c->intermediate_size) +
                            (size_t)c->head_dim / 2);
}

void qs_llama_scratch_free(qs_llama_scratch *s, qs_backend *be) {
    float **all[] = {&s->xn, &s->q, &s->k, &s->v, &s->att, &s->gate, &s->up, &s->act, &s->inv_freq};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i]) be->ops->free(be, *all[i]);
        *all[i] = NULL;
    }
}

int qs_llama_scratch_init(qs_llama_scratch *s, const qs_model_config *c, int T, qs_backend *be, qs_error *err) {
    memset(s, 0, sizeof *s);
    QS_RETURN_ERROR_IF(T < 1, QS_EUSAGE, "block scratch for %d tokens", T);
    QS_RETURN_ERROR_IF(c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads, QS_EUNSUPPORTED,
                       "config: %d attention heads are not a multiple of %d key/value heads", c->n_heads, c->n_kv_heads);
    float inv_freq[1024];
    QS_RETURN_ERROR_IF(c->head_dim > 2048, QS_EUNSUPPORTED, "config: head_dim %d is over 2048", c->head_dim);
    QS_FORWARD_IF_ERROR(qs_rope_inv_freq(c, inv_freq, err));
    s->max_tokens = T;
    size_t t = (size_t)T, Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim,
           I = (size_t)c->intermediate_size;
    const qs_backend_ops *o = be->ops;
    s->xn = o->alloc(be, sizeof(float) * t * c->hidden_size);
    s->q = o->alloc(be, sizeof(float) * t * Q);
    s->k = o->alloc(be, sizeof(float) * t * KV);
    s->v = o->alloc(be, sizeof(float) * t * KV);
    s->att = o->alloc(be, sizeof(float) * t * Q);
    s->gate = o->alloc(be, sizeof(float) * t * I);
    s->up = o->alloc(be, sizeof(float) * t * I);
    s->act = o->alloc(be, sizeof(float) * t * I);
    s->inv_freq = o->alloc(be, sizeof(float) * (size_t)(c->head_dim / 2));
    int rc = 0;
    if (!s->xn || !s->q || !s->k || !s->v || !s->att || !s->gate || !s->up || !s->act || !s->inv_freq)
        rc = qs_error_set(err, -ENOMEM, "out of %s memory for the activations of %d tokens (%zu bytes)", o->name, T,
                          qs_llama_scratch_bytes(c, T));
    if (!rc) rc = o->upload(be, s->inv_freq, inv_freq, sizeof(float) * (size_t)(c->head_dim / 2), err);
    if (rc) qs_llama_scratch_free(s, be);
    return rc;
}

int qs_llama_block_forward(qs_backend *be, const qs_model_config *c, const qs_llama_weights *w, float *x, int n_win,
                           int L, qs_llama_scratch *s, qs_error *err) {
    return qs_llama_block_forward_until(be, c, w, x, n_win, L, s, QS_STOP_NONE, err);
}

/* y [T, out] = x [T, in] W_i^T + beta y for linear i of w, float or bf16 (w->bf16[i]) */
static int linear(qs_backend *be, const qs_llama_weights *w, int i, const float *wf, int T, int out, int in,
                  const float *x, float beta, float *y, qs_error *err) {
    if (w->bf16[i]) {
        QS_RETURN_ERROR_IF(!be->ops->linear_bf16, QS_EUNSUPPORTED, "bf16 weights are not implemented on %s", be->ops->name);
        return be->ops->linear_bf16(be, 1, T, out, in, x, in, w->bf16[i], in, beta, y, out, err);
    }
    return be->ops->gemm(be, 0, 1, T, out, in, 1.0f, x, in, wf, in, beta, y, out, err);
}

int qs_llama_block_forward_until(qs_backend *be, const qs_model_config *c, const qs_llama_weights *w, float *x,
                                 int n_win, int L, qs_llama_scratch *s, qs_llama_stop stop, qs_error *err) {
    const qs_backend_ops *o = be->ops;
    const int T = n_win * L, H = c->hidden_size, hd = c->head_dim, Q = c->n_heads * hd, KV = c->n_kv_heads * hd,
              I = c->intermediate_size;
    const float eps = c->rms_eps;
    const int ab = w->abits >= 2 && w->abits < 16 ? w->abits : 0;
    QS_RETURN_ERROR_IF(ab && (!o->act_quant || (w->a_half && !o->act_quant_part)), QS_EUNSUPPORTED,
                       "activation quantization is not implemented on %s", o->name);
#define AQ(buf, cols, seg) \
    do { \
        if (ab && w->a_half) QS_FORWARD_IF_ERROR(o->act_quant_part(be, buf, T, cols, seg, ((seg) + 1) / 2, ab, err)); \
        else if (ab) QS_FORWARD_IF_ERROR(o->act_quant(be, buf, T, cols, seg, ab, err)); \
    } while (0)
    QS_RETURN_ERROR_IF(n_win < 1 || L < 1 || T > s->max_tokens, QS_EUSAGE,
                       "block %d forward: %d windows of %d tokens do not fit the scratch of %d tokens", w->layer, n_win,
                       L, s->max_tokens);
    if (o->set_window_rows) QS_FORWARD_IF_ERROR(o->set_window_rows(be, L, err)); /* rows are windows of L */
    /* attention: x += o_proj(attn(...)) */
    if (w->ra[0].src_a)
        QS_FORWARD_IF_ERROR(o->rmsnorm_gather(be, s->xn, x, w->attn_norm, T, H, eps, w->ra[0].src_a, w->ra[0].src_b,
                                              w->ra[0].coef, err));
    else
        QS_FORWARD_IF_ERROR(o->rmsnorm(be, s->xn, x, w->attn_norm, T, H, eps, NULL, err));
    if (stop == QS_STOP_QKV_IN) return 0;
    AQ(s->xn, H, H);
    QS_FORWARD_IF_ERROR(linear(be, w, 0, w->wq, T, Q, H, s->xn, 0.0f, s->q, err));
    QS_FORWARD_IF_ERROR(linear(be, w, 1, w->wk, T, KV, H, s->xn, 0.0f, s->k, err));
    QS_FORWARD_IF_ERROR(linear(be, w, 2, w->wv, T, KV, H, s->xn, 0.0f, s->v, err));
    if (w->bq) {
        QS_FORWARD_IF_ERROR(o->add_bias(be, s->q, w->bq, T, Q, err));
        QS_FORWARD_IF_ERROR(o->add_bias(be, s->k, w->bk, T, KV, err));
        QS_FORWARD_IF_ERROR(o->add_bias(be, s->v, w->bv, T, KV, err));
    }
    QS_FORWARD_IF_ERROR(o->rope(be, s->q, n_win, L, 0, c->n_heads, hd, Q, s->inv_freq, 0, err));
    QS_FORWARD_IF_ERROR(o->rope(be, s->k, n_win, L, 0, c->n_kv_heads, hd, KV, s->inv_freq, 0, err));
    AQ(s->q, Q, hd);
    AQ(s->k, KV, hd);
    AQ(s->v, KV, hd);
    QS_FORWARD_IF_ERROR(o->attention(be, s->att, s->q, s->k, s->v, n_win, L, c->n_heads, c->n_kv_heads, hd,
                                     (float)(1.0 / sqrt((double)hd)), NULL, err));
    if (stop == QS_STOP_O_IN) return 0;
    AQ(s->att, Q, Q);
    QS_FORWARD_IF_ERROR(linear(be, w, 3, w->wo, T, H, Q, s->att, 1.0f, x, err));
    /* SwiGLU MLP: x += down_proj(silu(gate_proj(n2)) * up_proj(n2)) */
    if (w->ra[1].src_a)
        QS_FORWARD_IF_ERROR(o->rmsnorm_gather(be, s->xn, x, w->ffn_norm, T, H, eps, w->ra[1].src_a, w->ra[1].src_b,
                                              w->ra[1].coef, err));
    else
        QS_FORWARD_IF_ERROR(o->rmsnorm(be, s->xn, x, w->ffn_norm, T, H, eps, NULL, err));
    if (stop == QS_STOP_GU_IN) return 0;
    AQ(s->xn, H, H);
    QS_FORWARD_IF_ERROR(linear(be, w, 4, w->w_gate, T, I, H, s->xn, 0.0f, s->gate, err));
    QS_FORWARD_IF_ERROR(linear(be, w, 5, w->w_up, T, I, H, s->xn, 0.0f, s->up, err));
    if (w->ra[2].src_a) /* reassembly fused into the product: act[k] = coef (act[a] + act[b]) */
        QS_FORWARD_IF_ERROR(o->swiglu_gather(be, s->act, s->gate, s->up, T, I, w->ra[2].src_a, w->ra[2].src_b,
                                             w->ra[2].coef, err));
    else
        QS_FORWARD_IF_ERROR(o->swiglu(be, s->act, s->gate, s->up, (size_t)T * I, err));
    if (stop == QS_STOP_DOWN_IN) return 0;
    AQ(s->act, I, I);
#undef AQ
    QS_FORWARD_IF_ERROR(linear(be, w, 6, w->w_down, T, H, I, s->act, 1.0f, x, err));
    return 0;
}
