/* model/llama_block.h - one LLaMA decoder block: its weights and its forward pass on a backend.
 *   h   = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = rmsnorm(x) * g1
 *   out = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))                     n2 = rmsnorm(h) * g2 */
#ifndef QS_MODEL_LLAMA_BLOCK_H
#define QS_MODEL_LLAMA_BLOCK_H

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/rope.h"

typedef struct qs_block_weights {
    float *wq;        /* [n_heads*head_dim, hidden] */
    float *wk;        /* [n_kv_heads*head_dim, hidden] */
    float *wv;        /* [n_kv_heads*head_dim, hidden] */
    float *wo;        /* [hidden, n_heads*head_dim] */
    float *w_gate;    /* [intermediate, hidden] */
    float *w_up;      /* [intermediate, hidden] */
    float *w_down;    /* [hidden, intermediate] */
    float *attn_norm; /* [hidden] */
    float *ffn_norm;  /* [hidden] */
    float *bq, *bk, *bv; /* [rows] when config.attention_bias, else NULL */
} qs_block_weights;

/* Loads layer's tensors (any of F32/F16/BF16) into backend memory, checking every shape against
 * the config; errors name the file and tensor. */
int qs_block_weights_load(qs_block_weights *w, const qs_catalog *cat, const qs_model_config *cfg, int layer,
                          qs_backend *be, qs_error *err);
void qs_block_weights_free(qs_block_weights *w, qs_backend *be);

/* Activation scratch for up to max_tokens tokens per call. */
typedef struct qs_block_scratch {
    int max_tokens;
    float *xn;   /* [T, hidden] */
    float *q;    /* [T, n_heads*head_dim] */
    float *k, *v; /* [T, n_kv_heads*head_dim] */
    float *att;  /* [T, n_heads*head_dim] */
    float *gate, *up; /* [T, intermediate] */
    int *pos;    /* [T] */
} qs_block_scratch;

int qs_block_scratch_init(qs_block_scratch *s, const qs_model_config *cfg, int max_tokens, qs_backend *be, qs_error *err);
void qs_block_scratch_free(qs_block_scratch *s, qs_backend *be);

/* x [n_seq * seqlen, hidden] in place; each sequence has positions 0..seqlen-1, causal.
 * n_seq * seqlen <= scratch->max_tokens. */
int qs_block_forward(qs_backend *be, const qs_model_config *cfg, const qs_block_weights *w, const qs_rope_table *rope,
                     float *x, int n_seq, int seqlen, qs_block_scratch *s, qs_error *err);

#endif
