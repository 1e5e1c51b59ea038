/* io/config.h - config.json of LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM. */
#ifndef QS_IO_CONFIG_H
#define QS_IO_CONFIG_H

#include <stddef.h>

#include "base/error.h"

typedef enum qs_arch { QS_ARCH_LLAMA = 0, QS_ARCH_MISTRAL, QS_ARCH_QWEN2 } qs_arch;
typedef enum qs_rope_scaling { QS_ROPE_SCALING_NONE = 0, QS_ROPE_SCALING_LLAMA3 } qs_rope_scaling;

typedef struct qs_model_config {
    qs_arch arch;
    int hidden_size;       /* dim */
    int intermediate_size; /* SwiGLU hidden */
    int n_layers;
    int n_heads;
    int n_kv_heads;        /* defaults to n_heads */
    int head_dim;          /* defaults to hidden_size / n_heads */
    int vocab_size;
    int max_position_embeddings;
    float rms_eps;
    float rope_theta;      /* default 10000 */
    qs_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_original_max_position;                                  /* llama3 */
    int tie_word_embeddings; /* 1: lm_head = embed_tokens */
    int attention_bias;      /* 1: q/k/v have biases (Qwen2) */
    int sliding_window;      /* Mistral; 0 = none */
    int bos_token_id, eos_token_id; /* -1 when absent */
} qs_model_config;

/* Parses config.json text. Unknown architectures, rope_scaling types other than llama3,
 * non-silu activations and missing required fields are clear errors naming the file. */
int qs_config_parse(qs_model_config *cfg, const char *json, size_t len, const char *path_for_errors,
                    qs_error *err);
/* Reads MODEL_DIR/config.json (or a path to a .json file). */
int qs_config_load(qs_model_config *cfg, const char *path, qs_error *err);
/* Writes a Hugging Face config.json for cfg, durably. */
int qs_config_write(const qs_model_config *cfg, const char *path, qs_error *err);

#endif
