/* model/llama_train.h - one LLaMA decoder block made trainable for QLLM's efficient error
 * correction (EEC, ../shared/METHODS.md): the block of model/llama_forward.h with its weights W
 * frozen, a rank-r LoRA correction on each of the seven projections and both RMSNorm gammas
 * trained by block reconstruction, on a backend's ops (backend/backend.h).
 *
 * Trainables (fp32, backend memory): per projection p, A_p [r, in] (Kaiming-uniform,
 * U(-1/sqrt(in), 1/sqrt(in)) as PyTorch's kaiming_uniform_(a = sqrt(5)), from a seeded
 * splitmix64: the same seed, layer and shapes give the same bits) and B_p [out, r] (zeros), with
 * scaling s = alpha / r; the gammas start from the block's norms. Each linear computes
 *   QS_LORA_PAPER:  y = Q(x) (Q(W) + s B A)^T   (the paper's and released code's training form)
 *   QS_LORA_MERGED: y = Q(x) Q(W + s B A)^T     (what is deployed; Q straight-through: the
 *                                                gradient reaches W + s B A as if Q were identity)
 *   QS_LORA_DLQAT:  y = Q(x) W_hat^T, W_hat = m_g s_g (clamp(rint(W / s_g + s B A) + z_g, 0, qmax) - z_g)
 *                   (DL-QAT, ../shared/METHODS.md: s_g, z_g the fixed min-max grid of W at wbits /
 *                   group / sym, m_g a trained magnitude per group, init 1; B A moves W in grid
 *                   steps; straight-through round, no gradient where the clamp bites; the gammas
 *                   are frozen: m, A and B are the trainables)
 *   QS_LORA_SLIDER: y = Q(x) Q_lwc(W + s B A)^T (SliderQuant's weight quantizer: the LoRA inside
 *                   it, and per group the range's max and min scaled by sigmoid(gam),
 *                   sigmoid(beta), backend.h lwc_weight, init QS_SLIDER_CLIP_INIT; straight-
 *                   through round; the gammas are frozen: A, B, gam and beta train, the
 *                   clipping at clip_lr_mult times the learning rate). With opts.smooth,
 *                   SliderQuant's learnable per-channel scales (init 1, held to |a| >= 1e-2,
 *                   backend.h chan_scale) at five sites: the quantizer's input is
 *                   D_out W D_in + s B A, D_in scaling the consumer's input columns by a,
 *                   D_out the producer's output rows by 1 / a (k's by a), and
 *                     QS_SMOOTH_QKV [hidden]: norm 1's gamma / a, q, k, v columns * a
 *                     QS_SMOOTH_GU  [hidden]: norm 2's gamma / a, gate, up columns * a
 *                     QS_SMOOTH_VO  [kv dim]: v rows / a, o columns * a (a query head's
 *                                   columns take its key/value head's scales)
 *                     QS_SMOOTH_QK  [kv dim / 2]: q rows / a, k rows * a (per key/value head,
 *                                   a query head takes its group's; the two halves of a
 *                                   rotate-half pair share one: it commutes with RoPE)
 *                     QS_SMOOTH_UD  [intermediate]: up rows / a, down columns * a
 *                   so the block computes the same function at a = 1 and its deployed weights
 *                   are the quantizer's output and the scaled gammas, nothing else (the
 *                   activation divided by a is folded into its producer). VO and QK are off
 *                   with attention biases (the bias would need the scale too). The scales step
 *                   at smooth_lr_mult times the learning rate.
 * where Q(W) is the affine weight quantizer (wbits, group, sym; fake_quant_weight) and Q(x) the
 * per-token activation fake-quant at abits, at the same places as qs_llama_block_forward (the
 * inputs of the seven linears; Q and K after RoPE and V per (head, token)), all with a
 * straight-through gradient. Biases (attention_bias) are frozen. Channel reassembly maps
 * (w->ra, each dim channels to dim: hidden at sites 0, 1, intermediate at site 2) are applied as
 * qs_llama_block_forward applies them (the consumers' W already reassembled, the gathers fused
 * into the norms and the SwiGLU product) and are frozen; the gammas trained are the norms' own,
 * before the gather. With B = 0 the training forward gives the block forward's bits (over Q(W)
 * in the paper form with weight quantization), maps or not.
 *
 * Use (a group of K blocks: forward each block on the previous one's output, one loss, then
 * backward from the last block to the first passing dx along):
 *   qs_llama_train_init(&tr, cfg, w, &opts, max_tokens, be, err);
 *   for each step:  qs_llama_train_forward(&tr, x, out, n_win, seqlen, err);
 *                   be->ops->mse_grad(be, dout, out, target, n, &loss, err);
 *                   qs_llama_train_backward(&tr, dout, NULL, err);   (gradients accumulate)
 *                   qs_llama_train_step(&tr, lr, err);               (AdamW, then zero gradients)
 *   qs_llama_train_merge(&tr, &w_out, err);   W + s B A and the gammas; the caller re-quantizes
 *   qs_llama_train_free(&tr);
 * The paper form computes each linear as x Q(W)^T + s (x A^T) B^T, never forming Q(W) + s B A
 * (and its backward dx = dy Q(W) + s (dy B) A); the merged form's effective weights are rebuilt
 * from the trainables at every forward. Either way a caller may write
 * the trainables (upload into a[p], b[p], gamma[i]) between steps. A forward's tape serves the
 * backwards that follow it until the next step. Steady state (forward, backward, step) allocates
 * nothing. */
#ifndef QS_MODEL_LLAMA_TRAIN_H
#define QS_MODEL_LLAMA_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "io/config.h"
#include "model/llama_weights.h"

typedef enum qs_lora_form {
    QS_LORA_PAPER = 0,  /* y = Q(x) (Q(W) + s B A)^T */
    QS_LORA_MERGED = 1, /* y = Q(x) Q(W + s B A)^T, straight-through */
    QS_LORA_DLQAT = 2,  /* y = Q(x) (m s (clamp(rint(W / s + s' B A) + z) - z))^T, wbits 2..8 */
    QS_LORA_SLIDER = 3, /* y = Q(x) Q_lwc(W + s B A)^T, wbits 2..8 */
} qs_lora_form;

/* SliderQuant's clipping logits start here (sigmoid(4) = 0.982 of the range) */
#define QS_SLIDER_CLIP_INIT 4.0f

/* the seven projections, in this order everywhere */
enum { QS_PROJ_Q, QS_PROJ_K, QS_PROJ_V, QS_PROJ_O, QS_PROJ_GATE, QS_PROJ_UP, QS_PROJ_DOWN, QS_PROJ_N };
/* SliderQuant's smoothing sites (opts.smooth), in this order in the trainables */
enum { QS_SMOOTH_QKV, QS_SMOOTH_GU, QS_SMOOTH_VO, QS_SMOOTH_QK, QS_SMOOTH_UD, QS_SMOOTH_N };

typedef struct qs_llama_train_opts {
    int rank;              /* r >= 1; default 4 */
    float alpha;           /* s = alpha / r; default 1 */
    uint64_t seed;         /* LoRA A initialization; default 0 */
    qs_lora_form form;     /* default QS_LORA_PAPER */
    int wbits;             /* Q(W) at 2..15 bits; anything else: no weight quantization. Default 16 */
    int group;             /* columns per weight group; <= 0: one range per output row (default) */
    int sym;               /* symmetric weight quantizer; default 0 */
    int abits;             /* activation fake-quant at 2..15 bits; anything else: none. Default 16 */
    float beta1, beta2;    /* AdamW; default 0.9, 0.999 */
    float eps;             /* default 1e-8 */
    float weight_decay;    /* default 0 (QLLM) */
    float clip_lr_mult;    /* SliderQuant: the clipping logits' learning rate over the LoRA's; default 1 */
    int smooth;            /* SliderQuant: the learnable smoothing scales; default 0 */
    /* SliderQuant's first pass (incremental quantization): only the first half (rounded up) of
     * each weight's input columns (lwc_weight's qcols) and of each activation segment's channels
     * (act_quant_part) are quantized; the rest pass through. Its codes cannot be taken
     * (qs_llama_train_slider_codes refuses); its merge writes the half-quantized weights, whose
     * forward wants the weights' a_half. Default 0 */
    int half;
    float smooth_lr_mult;  /* their learning rate over the LoRA's; default 1 */
    /* paper form with weight quantization: Q(W) is made in W's own buffers instead of copies (W
     * is not read again until qs_llama_train_merge, before which the caller puts W back); one
     * copy of the block's weights less. Default 0 */
    int base_in_place;
    /* paper form with weight quantization: Q(W) kept as bf16 (to_bf16), its products on bf16
     * operands (linear_bf16): half an fp32 copy's memory, for a backend whose GEMMs round to
     * bf16 anyway (backend/registry.h qs_backend_bf16_weights). base_in_place is then unused.
     * Q(W) is made row chunk by row chunk from W on the backend or, where a linear of w is
     * NULL (its float weights wait on the host), from base_host[p] (host, [out, in], read only
     * during init). Default 0 */
    int bf16_base;
    const float *base_host[QS_PROJ_N];
    size_t bf16_chunk; /* floats of init's row-chunk scratch for that (whole rows); 0: 4 Mi */
} qs_llama_train_opts;

/* the defaults above */
void qs_llama_train_opts_default(qs_llama_train_opts *o);

/* A trainable block. Fields are read-only for callers except the trainable values themselves
 * (a, b, gamma), which may be written between steps. Everything is backend memory unless said. */
typedef struct qs_llama_train {
    qs_backend *be;                /* borrowed */
    const qs_model_config *cfg;    /* borrowed */
    const qs_llama_weights *w;     /* borrowed: the frozen W, biases and layer; must outlive tr */
    qs_llama_train_opts opts;
    int max_tokens;
    float s;                       /* alpha / rank */
    int in[QS_PROJ_N], out[QS_PROJ_N];
    /* trainables, packed into one buffer param [n_param] (each tensor at a 64-byte offset,
     * the padding zero); grad, adam_m, adam_v have the same layout */
    float *param, *grad, *adam_m, *adam_v;
    size_t n_param;
    float *a[QS_PROJ_N], *b[QS_PROJ_N];     /* A_p [r, in[p]], B_p [out[p], r] inside param */
    float *da[QS_PROJ_N], *db[QS_PROJ_N];   /* their gradients inside grad */
    float *gamma[2], *dgamma[2];            /* [hidden]: input_layernorm, post_attention_layernorm */
    /* DL-QAT: the magnitudes m [out[p], ng[p]] inside param (after the B's, before the gammas)
     * and their gradients; the fixed grid gscale, gzero [out[p], ng[p]] (own); dlr, dwt [the
     * largest out * in] scratch: s B A, and a projection's weight gradient. n_step: the
     * trainables AdamW moves (param's first n_step floats: all but the frozen gammas) */
    float *mag[QS_PROJ_N], *dmag[QS_PROJ_N], *gscale[QS_PROJ_N], *gzero[QS_PROJ_N], *dlr, *dwt;
    int ng[QS_PROJ_N];
    size_t n_step;
    /* SliderQuant: the clipping logits gam, bet [out[p], ng[p]] inside param (after the B's) and
     * their gradients; dlr holds W + s B A, dwt a weight gradient. n_lora: the floats of the A's
     * and B's (param's first), which step at lr, the logits after them at lr * clip_lr_mult */
    float *gam[QS_PROJ_N], *bet[QS_PROJ_N], *dgam[QS_PROJ_N], *dbet[QS_PROJ_N];
    size_t n_lora;
    /* SliderQuant's smoothing scales sm[site] [n_sm[site]] inside param, after the B's (before
     * the logits; n_sm 0 and sm NULL at a site that is off), n_smooth floats of them that step
     * at lr * smooth_lr_mult; geff[2] the norms' gammas over them, rebuilt at each forward
     * (own); dgeff [hidden] scratch: a backward's gradient of one */
    float *sm[QS_SMOOTH_N], *dsm[QS_SMOOTH_N], *geff[2], *dgeff;
    int n_sm[QS_SMOOTH_N];
    size_t n_smooth;
    int step;                               /* AdamW steps taken */
    /* frozen base weights: Q(W) (own copies) in the paper form with weight quantization, else
     * W itself (borrowed); the merged form's effective weights rebuilt at each forward (own;
     * the paper form adds s (x A^T) B^T on its own and forms none: weff[p] NULL) */
    const float *base[QS_PROJ_N];
    float *wq_own[QS_PROJ_N];
    /* opts.bf16_base: Q(W) as bf16 instead (base[p] NULL); wq16 holds the allocation, conv the
     * row chunks' float scratch during init */
    const uint16_t *base16[QS_PROJ_N];
    float *wq16[QS_PROJ_N], *conv;
    float *weff[QS_PROJ_N];
    /* the tape of the last forward: tape_tokens = n_win * seqlen tokens (0: none) */
    int tape_tokens, tape_win, tape_len, tape_step;
    struct {
        float *x;     /* [T, hidden] block input */
        float *rstd1; /* [T] */
        float *xn1;   /* [T, hidden] rmsnorm(x) as q, k, v see it (gathered by ra[0], fake-quantized) */
        float *q;     /* [T, n_heads*head_dim] after RoPE and fake-quant, as attention sees it */
        float *k;     /* [T, n_kv_heads*head_dim] likewise */
        float *v;     /* [T, n_kv_heads*head_dim] likewise */
        float *lse;   /* [n_win, n_heads, seqlen] */
        float *att;   /* [T, n_heads*head_dim] attention output */
        float *attq;  /* [T, n_heads*head_dim] as o sees it (att itself without fake-quant) */
        float *h;     /* [T, hidden] x + o_proj(...) */
        float *rstd2; /* [T] */
        float *xn2;   /* [T, hidden] rmsnorm(h) as gate, up see it (gathered by ra[1]) */
        float *gate;  /* [T, intermediate] */
        float *up;    /* [T, intermediate] */
        float *act;   /* [T, intermediate] silu(gate) * up as down sees it (gathered by ra[2]) */
    } tape;
    /* backward scratch */
    float *d_h, *d_x, *d_xn, *d_att, *d_q, *d_k, *d_v, *d_gate, *d_up; /* shapes as their tape values */
    float *xa, *dyb;       /* [T, rank] */
    float *inv_freq;       /* [head_dim/2] */
    float *zeros_host;     /* host memory, n_param zeros (gradient reset) */
} qs_llama_train;

/* Bytes of backend memory qs_llama_train_init allocates (trainables, optimizer state, own
 * weights, tape and scratch for max_tokens tokens), for memory planning. */
size_t qs_llama_train_bytes(const qs_model_config *cfg, const qs_llama_train_opts *opts, int max_tokens);

/* Bytes of the trainables alone (what qs_llama_train_release keeps; opts NULL: the defaults) */
size_t qs_llama_train_param_bytes(const qs_model_config *cfg, const qs_llama_train_opts *opts);

/* Sets up a trainable block over the frozen weights w (backend memory, borrowed: w and cfg
 * must outlive tr) for up to max_tokens tokens per forward. opts NULL: the defaults. Errors:
 * QS_EUSAGE for a bad rank / token count, QS_EUNSUPPORTED for a backend without the tuning ops
 * (with reassembly maps: the gathers and gather_backward too) or an unsupported config,
 * -ENOMEM. On error nothing stays allocated and *tr is zeroed. */
int qs_llama_train_init(qs_llama_train *tr, const qs_model_config *cfg, const qs_llama_weights *w,
                        const qs_llama_train_opts *opts, int max_tokens, qs_backend *be, qs_error *err);

/* After the last step: frees all but the trainables (base weights, optimizer state, tape,
 * scratch), so that the caller can put W back before qs_llama_train_merge, which still works;
 * nothing else does. */
void qs_llama_train_release(qs_llama_train *tr);

/* Frees what init allocated; a zeroed or freed *tr is fine. */
void qs_llama_train_free(qs_llama_train *tr);

/* The block's training forward of x [n_win*seqlen, hidden] into out (same shape; out may equal
 * x), rebuilding the effective weights from the trainables and saving the tape for backward. */
int qs_llama_train_forward(qs_llama_train *tr, const float *x, float *out, int n_win, int seqlen, qs_error *err);

/* Backward of the last forward from dout = dL/d(out) [T, hidden]: accumulates (+=) dA, dB of the
 * seven projections and both dgammas into grad, and writes dx = dL/dx [T, hidden] when dx is not
 * NULL (dx may equal dout). QS_EUSAGE when there is no tape, or a step came after its forward. */
int qs_llama_train_backward(qs_llama_train *tr, const float *dout, float *dx, qs_error *err);

/* One AdamW step of every trainable with learning rate lr (opts' betas, eps, weight decay),
 * then zeroes the gradients. */
int qs_llama_train_step(qs_llama_train *tr, float lr, qs_error *err);

/* Zeroes the gradients. */
int qs_llama_train_zero_grad(qs_llama_train *tr, qs_error *err);

/* A fresh optimizer for the trainables as they are: AdamW's moments zeroed, its step count 0
 * (SliderQuant's next window carries the parameters over, not the optimizer) */
int qs_llama_train_reset_optim(qs_llama_train *tr, qs_error *err);

/* Writes W + s B A of each projection into w_out's seven weight tensors and the trained gammas
 * into its two norms (backend memory of the same shapes; nothing else of w_out is touched). The
 * caller quantizes the result. w_out may be the frozen weights themselves; tr is then stale
 * and only qs_llama_train_free may follow. */
int qs_llama_train_merge(qs_llama_train *tr, qs_llama_weights *w_out, qs_error *err);
/* (In the DL-QAT and SliderQuant forms the merge writes W_hat, the stored weights'
 * dequantization, and the frozen gammas; with SliderQuant's smoothing the gammas over the
 * scales, gamma / a, the norms to store. In the half form W_hat is half-quantized.) */

/* DL-QAT form, projection p, before the merge: the codes [out, in] (backend memory, one a byte),
 * row_err [out] (backend, NULL: not wanted; dlqat_weight's, against the frozen W) and on the
 * host the stored quantizer: scales_host = m * s_g and zeros_host = z_g [out, ng]. */
int qs_llama_train_dlqat_codes(qs_llama_train *tr, int p, uint8_t *codes, double *row_err, float *scales_host,
                               float *zeros_host, qs_error *err);

/* SliderQuant form, projection p, before the merge: codes [out, in] (backend, one a byte),
 * row_err [out] (backend, NULL: not wanted; against W + s B A's quantizer input, lwc_weight's)
 * and on the host the grid scales_host, zeros_host [out, ng]: the stored quantizer. */
int qs_llama_train_slider_codes(qs_llama_train *tr, int p, uint8_t *codes, double *row_err, float *scales_host,
                                float *zeros_host, qs_error *err);

#endif
