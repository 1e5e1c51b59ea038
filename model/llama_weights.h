/* model/llama_weights.h - the weights of one LLaMA decoder block (layer L) in backend memory,
 * loaded from the tensor catalogue as float32 (F32, F16 or BF16 on disk) and checked against the
 * config. Hugging Face names: model.layers.L.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
 * input_layernorm, post_attention_layernorm}.weight, and self_attn.{q,k,v}_proj.bias when
 * config.attention_bias (Qwen2). */
#ifndef QS_MODEL_LLAMA_WEIGHTS_H
#define QS_MODEL_LLAMA_WEIGHTS_H

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct qs_llama_weights {
    int layer;
    float *wq;        /* [n_heads*head_dim, hidden] */
    float *wk;        /* [n_kv_heads*head_dim, hidden] */
    float *wv;        /* [n_kv_heads*head_dim, hidden] */
    float *wo;        /* [hidden, n_heads*head_dim] */
    float *w_gate;    /* [intermediate, hidden] */
    float *w_up;      /* [intermediate, hidden] */
    float *w_down;    /* [hidden, intermediate] */
    float *attn_norm; /* [hidden] input_layernorm */
    float *ffn_norm;  /* [hidden] post_attention_layernorm */
    float *bq;        /* [n_heads*head_dim] or NULL (no attention_bias) */
    float *bk;        /* [n_kv_heads*head_dim] or NULL */
    float *bv;        /* [n_kv_heads*head_dim] or NULL */
    int abits;        /* < 16: weight-activation simulation at this width (qs_llama_block_forward) */
    int a_half;       /* with abits: only the first ceil(seg / 2) channels of each activation segment are
                       * rounded (SliderQuant's first pass; backend.h act_quant_part) */
    /* linear i (wq .. w_down in this order) kept as bf16 instead (its float pointer then NULL):
     * the forward reads it through the backend's linear_bf16 (qs_llama_weights_to_bf16) */
    uint16_t *bf16[7];
    /* channel reassembly (QLLM) in backend memory, or src_a NULL: site 0 the input norm -> q, k, v;
     * site 1 the post-attention norm -> gate, up; site 2 silu(gate) * up -> down.
     * Output channel k = coef[k] * (in[src_a[k]] + (src_b[k] >= 0 ? in[src_b[k]] : 0)). */
    struct {
        int32_t *src_a, *src_b;
        float *coef;
    } ra[3];
} qs_llama_weights;

/* Loads layer's tensors into new backend memory. Every shape is checked against cfg; an error
 * names the file and the tensor ("FILE: tensor 'model.layers.3.mlp.up_proj.weight' has shape
 * [..], config.json says [..]"). On error nothing stays allocated and *w is zeroed. */
int qs_llama_weights_load(qs_llama_weights *w, const qs_catalog *cat, const qs_model_config *cfg, int layer,
                          qs_backend *be, qs_error *err);
/* Frees what was loaded; a zeroed or already freed *w is fine. */
void qs_llama_weights_free(qs_llama_weights *w, qs_backend *be);
/* Linear i of w (0..6: wq .. w_down) from float to bf16 in new backend memory (to_bf16), the
 * float copy freed: a frozen layer at half the memory. 0 or an error (out of memory: w is
 * unchanged). */
int qs_llama_weights_to_bf16(qs_llama_weights *w, int i, size_t n, qs_backend *be, qs_error *err);
/* The seven linears (wq .. w_down, in this order everywhere): their [out, in] shapes from the
 * config, their elements, and the field that holds linear i as float. */
void qs_llama_linear_shapes(const qs_model_config *cfg, int out[7], int in[7]);
void qs_llama_linear_sizes(const qs_model_config *cfg, size_t n[7]);
float **qs_llama_linear_slot(qs_llama_weights *w, int i);
/* Bytes the weights of one block take as float32 (for memory planning and reports). */
size_t qs_llama_weights_bytes(const qs_model_config *cfg);

#endif
