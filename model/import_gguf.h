/* model/import_gguf.h - a llama-architecture GGUF -> a Hugging Face model directory
 * (config.json, model.safetensors in F32, tokenizer.json), so everything downstream reads one
 * layout. Tensors are dequantized and written one at a time: memory holds one tensor. Q and K
 * rows are un-permuted from llama.cpp's interleaved RoPE layout back to rotate-half. */
#ifndef QS_MODEL_IMPORT_GGUF_H
#define QS_MODEL_IMPORT_GGUF_H

#include "base/error.h"

typedef struct qs_import_summary {
    int n_tensors, n_layers, vocab;
} qs_import_summary;

/* Imports gguf_path into out_dir (created when missing). Refuses, before writing anything, other
 * architectures, rope scaling, partial rotary dims, unknown / missing / misshapen tensors and
 * an out_dir holding a sharded index. A file whose tokenizer.ggml.model is "no_vocab" (llama.cpp's
 * weights-only model) imports without a tokenizer.json. vocab_size is the embedding's row count (the token list
 * may be shorter, never longer); tie_word_embeddings when there is no output.weight. sum may be
 * NULL. Each output file is written durably via PATH.tmp + rename, config.json last; on error
 * no .tmp is left, though files committed before the failure stay. */
int qs_import_gguf(const char *gguf_path, const char *out_dir, qs_import_summary *sum, qs_error *err);

/* Inverse of llama.cpp's Q/K row permutation for one [n_head * head_dim, cols] matrix:
 * within each head, stored row 2i (i < head_dim/2) is HF row i, stored row 2i+1 is HF row
 * i + head_dim/2. src and dst must not overlap. */
void qs_unpermute_rope_rows(const float *src, float *dst, int n_head, int head_dim, int cols);

#endif
