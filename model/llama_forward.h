/* model/llama_forward.h - the forward pass of one LLaMA decoder block on a backend, for a batch
 * of independent windows [n_win, seqlen, hidden], each at positions 0..seqlen-1:
 *   h   = x + o_proj(attn(rope(q_proj(n1) + bq), rope(k_proj(n1) + bk), v_proj(n1) + bv))
 *                                                            n1 = rmsnorm(x) * input_layernorm
 *   out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))   n2 = rmsnorm(h) * post_attention_layernorm
 * Causal grouped-query attention with scale 1/sqrt(head_dim); biases only with attention_bias.
 * Every projection is one GEMM over all tokens of the batch.
 * With w->abits in 2..15 (weight-activation settings, ../shared/METHODS.md) the inputs of all
 * seven linears are fake-quantized per token, and Q and K after RoPE and V per (head, token);
 * the softmax output, norms, SiLU and residual adds stay in floating point.
 * With channel reassembly (w->ra[site].src_a set; QLLM) the RMSNorm outputs (sites 0, 1) and
 * the SwiGLU product (site 2) are gathered by the fused ops rmsnorm_gather / swiglu_gather. */
#ifndef QS_MODEL_LLAMA_FORWARD_H
#define QS_MODEL_LLAMA_FORWARD_H

#include "backend/backend.h"
#include "io/config.h"
#include "model/llama_weights.h"

/* Activation scratch in backend memory for up to max_tokens tokens per call. */
typedef struct qs_llama_scratch {
    int max_tokens;
    float *xn;       /* [max_tokens, hidden] normed input */
    float *q;        /* [max_tokens, n_heads*head_dim] */
    float *k;        /* [max_tokens, n_kv_heads*head_dim] */
    float *v;        /* [max_tokens, n_kv_heads*head_dim] */
    float *att;      /* [max_tokens, n_heads*head_dim] attention output */
    float *gate;     /* [max_tokens, intermediate] */
    float *up;       /* [max_tokens, intermediate] */
    float *act;      /* [max_tokens, intermediate] silu(gate) * up (gathered with reassembly), down's input */
    float *inv_freq; /* [head_dim/2] rotary inverse frequencies (model/rope.h) */
} qs_llama_scratch;

/* On error nothing stays allocated. */
int qs_llama_scratch_init(qs_llama_scratch *s, const qs_model_config *cfg, int max_tokens, qs_backend *be,
                          qs_error *err);
void qs_llama_scratch_free(qs_llama_scratch *s, qs_backend *be); /* a zeroed *s is fine */
/* Bytes of scratch for max_tokens tokens (the backend's attention scratch not included). */
size_t qs_llama_scratch_bytes(const qs_model_config *cfg, int max_tokens);

/* x [n_win*seqlen, hidden] (backend memory) in place: the block's output replaces its input.
 * n_win * seqlen <= s->max_tokens. */
int qs_llama_block_forward(qs_backend *be, const qs_model_config *cfg, const qs_llama_weights *w, float *x, int n_win,
                           int seqlen, qs_llama_scratch *s, qs_error *err);

/* Where a partial forward stops: the input of a group of linears before its activation
 * fake-quantization (callers apply act_quant when they need it as the linears see it). */
typedef enum qs_llama_stop { /* each stop is before the input's activation fake-quantization */
    QS_STOP_QKV_IN,  /* s->xn: rmsnorm(x) (gathered with reassembly), the input of q, k, v */
    QS_STOP_O_IN,    /* s->att: attention output, the input of o */
    QS_STOP_GU_IN,   /* s->xn: rmsnorm(h) (gathered), the input of gate and up; x holds h */
    QS_STOP_DOWN_IN, /* s->act: silu(gate) * up (gathered), the input of down; x holds h */
    QS_STOP_NONE     /* the whole block: x holds its output */
} qs_llama_stop;

/* qs_llama_block_forward stopped at `stop` */
int qs_llama_block_forward_until(qs_backend *be, const qs_model_config *cfg, const qs_llama_weights *w, float *x,
                                 int n_win, int seqlen, qs_llama_scratch *s, qs_llama_stop stop, qs_error *err);

#endif
