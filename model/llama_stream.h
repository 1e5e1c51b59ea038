/* model/llama_stream.h - running a whole LLaMA model streamed one block at a time: what
 * perplexity (model/eval.h) and logits (model/logits.h) share.
 *
 * The hidden states of every window live in host memory [n_win, seqlen, hidden]. Embedding rows
 * are read from the table in row chunks and gathered; then for each layer only that layer's
 * weights are loaded, every window runs through the block (a few windows per backend call),
 * and the weights are freed. Memory: one block's weights + the hidden states + one call's
 * activations; never the whole model. */
#ifndef QS_MODEL_LLAMA_STREAM_H
#define QS_MODEL_LLAMA_STREAM_H

#include <stdint.h>

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"

/* Where block weights come from: NULL = the model directory's safetensors (float weights);
 * a quantized run (quant/qmodel.h) supplies one that dequantizes its shards. */
typedef int (*qs_block_loader)(void *ctx, int layer, qs_llama_weights *w, qs_backend *be, qs_error *err);

#define QS_LLAMA_ROW_CHUNK 4096 /* rows of the embedding table / LM head read at a time */

typedef struct qs_llama_model {
    const char *dir;
    qs_model_config cfg;
    qs_catalog *cat;
    qs_backend *be;
    const qs_tensor_info *embed; /* model.embed_tokens.weight [vocab, hidden] */
    const qs_tensor_info *head;  /* lm_head.weight [vocab, hidden], or embed when tied */
    const qs_tensor_info *norm;  /* model.norm.weight [hidden] */
    int verbose;                 /* 1: one line per block on stderr */
    qs_block_loader load_block;  /* NULL: qs_llama_weights_load from the catalogue */
    void *load_ctx;
    double t_embed, t_blocks, t_load; /* seconds: embedding, block forward, weight loading */
} qs_llama_model;

/* Reads MODEL_DIR/config.json and the catalogue, checks the embedding, final norm and LM head,
 * and creates the backend (device "cpu"; threads 0 = all cores). dir is borrowed. On error
 * everything is released. */
int qs_llama_model_open(qs_llama_model *m, const char *dir, const char *device, int threads, qs_error *err);
void qs_llama_model_close(qs_llama_model *m); /* a zeroed *m is fine */

/* h [n, hidden] (host) = embedding rows of ids; an id outside the vocabulary is an error. */
int qs_llama_embed(qs_llama_model *m, const int32_t *ids, size_t n, float *h, qs_error *err);

/* h [n_win*seqlen, hidden] (host) through every block, then the final RMSNorm, in place. */
int qs_llama_run_blocks(qs_llama_model *m, float *h, int n_win, int seqlen, qs_error *err);

/* Rows [v0, v0+n) of the LM head (host, [n, hidden]). */
int qs_llama_head_rows(qs_llama_model *m, int v0, int n, float *dst, qs_error *err);

#endif
