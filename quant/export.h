/* quant/export.h - a finished quantized run (OUT_DIR) written as a Hugging Face directory.
 *
 * gptq: the GPTQ v1 checkpoint layout that transformers, vLLM, AutoGPTQ and GPTQModel load.
 *   Per linear <p> = model.layers.L.<lin>:
 *     <p>.qweight I32 [in * bits / 32, out]  codes packed along the input dimension, 32 / bits
 *                                           per word, lowest bits first (3 bits: 32 codes in 3
 *                                           words, straddling word boundaries as AutoGPTQ packs)
 *     <p>.qzeros  I32 [groups, out * bits / 32]  zero points minus one (v1), packed the same way
 *                                           along the output dimension
 *     <p>.scales  F16 [groups, out]
 *     <p>.g_idx   I32 [in]                 group of each input column
 *   w[o, c] = scales[g_idx[c], o] * (q[c, o] - (qzeros[g_idx[c], o] + 1)).
 *   Norms, embedding and LM head as F16; config.json with "quantization_config"; quantize_config.json.
 *   Weight-only runs without channel reassembly; bits 2, 3, 4 or 8. A zero point of 0 is moved to
 *   1 by shifting its group's codes when they leave room (exact); otherwise v1 cannot express the
 *   group and the export is refused, unless gptq_v2 (zeros stored as they are, GPTQModel's
 *   format) is asked for.
 * fakequant: a plain LLaMA checkpoint: every linear dequantized (F32, or F16 / BF16), norms and
 *   biases, the non-block tensors as stored; config.json without quantization settings.
 *   A run with activation quantization (abits < 16) exports its weights only; the caller warns.
 * Both copy the tokenizer files; the output is written durably and nothing is left on error.
 * gguf: one GGUF file (hf_dir is its path) for llama.cpp: each linear's codes in the 32-column
 *   block type that holds them exactly (quant/export_gguf.c: Q4_0 / Q5_0 / Q8_0 for symmetric,
 *   Q4_1 / Q5_1 / Q8_0 for asymmetric runs; scales and offsets as half floats), Q/K rows in
 *   llama.cpp's RoPE order, norms and biases F32, embedding and LM head in dtype (or embed_type /
 *   head_type, which may also be Q8_0), the tokenizer,
 *   LLaMA-3 rope scaling as rope_freqs.weight. Refused: channel reassembly, groups that are not
 *   a multiple of 32, act-order without static groups, asymmetric 8 bits. */
#ifndef QS_QUANT_EXPORT_H
#define QS_QUANT_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/dtype.h"

typedef struct qs_export_opts {
    const char *format;  /* "gptq", "fakequant" or "gguf" */
    qs_dtype dtype;      /* fakequant linears, gguf's float tensors: F32 (default), F16 or BF16 */
    int force;           /* 1: write into a non-empty output directory */
    int gptq_v2;         /* gptq: zero points stored as they are ("checkpoint_format": "gptq_v2", GPTQModel) */
    const char *embed_type; /* gguf: token_embd's type, "f32", "f16", "bf16" or "q8_0" (NULL: dtype) */
    const char *head_type;  /* gguf: output.weight's type, the same names (NULL: dtype); given for a
                               model with tied embeddings, the LM head is written as its own copy */
} qs_export_opts;

/* What the export found in the run, for the caller's messages. */
typedef struct qs_export_info {
    int wbits, abits, group, sym; /* the run's settings (abits < 16: activations were quantized) */
    int desc_act;                 /* gptq: some g_idx is not c / group (act-order) */
    int float_linears;            /* gguf: linears written dequantized (input width not a multiple of 32) */
} qs_export_info;

/* Exports the finished run out_dir into hf_dir (created when missing; refused when it is not
 * empty unless o->force). Everything that can be refused (unfinished run, settings the format
 * cannot hold) is checked before hf_dir is touched; on a later error the files this export
 * wrote are removed again, and hf_dir too when the export created it. info may be NULL; it is
 * filled once the run's settings are read. Returns 0 or a negative code with err set. */
int qs_export(const char *out_dir, const char *hf_dir, const qs_export_opts *o, qs_export_info *info, qs_error *err);

/* GPTQ packing of values v[n] (each < 2^bits) into words: 32 / bits per word for 2, 4, 8 bits,
 * 32 values per 3 words for 3 bits (n a multiple of 32). stride: distance between consecutive
 * values in v and between consecutive words in out (1 for contiguous). */
void qs_gptq_pack(const uint32_t *v, size_t n, int bits, uint32_t *out, size_t v_stride, size_t out_stride);

#endif
