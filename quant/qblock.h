/* quant/qblock.h - a quantized decoder block as its shard (checkpoint/shard.h) holds it, and
 * loading it back as float weights for the forward pass (evaluation, resume replay, export).
 *
 * Tensors of blocks/block-NNNN.qsh, named relative to the block:
 *   <lin>.codes   U8  [rows * packed_row]  each row's codes packed by qs_pack_codes (2 per byte
 *                                          for <= 4 bits, low nibble first; else 1 per byte)
 *   <lin>.scales  F32 [rows, groups]       w = (code - zero) * scale
 *   <lin>.zeros   F32 [rows, groups]
 *   <lin>.g_idx   I32 [cols]               group of each input column; only when the columns are
 *                                          not grouped in order (GPTQ act-order without static
 *                                          groups); absent: group of column c is c / group
 *   input_layernorm.weight, post_attention_layernorm.weight   F32 [hidden]
 *   self_attn.{q,k,v}_proj.bias                               F32, when the model has them
 * <lin>: self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj. The shard's meta object holds
 * {"method", "wbits", "abits", "group", "sym", "pack", "shapes": {<lin>: [rows, cols]}} and the
 * method's own parameters. abits < 16 means the block runs with activation quantization. */
#ifndef QS_QUANT_QBLOCK_H
#define QS_QUANT_QBLOCK_H

#include <stdint.h>

#include "backend/backend.h"
#include "base/error.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "io/config.h"
#include "model/llama_weights.h"

#define QS_N_LINEAR 7
extern const char *const qs_linear_names[QS_N_LINEAR]; /* "self_attn.q_proj", ... in the order above */

typedef struct qs_qblock_meta {
    char method[32];
    int wbits, abits, group, sym;
} qs_qblock_meta;

/* The meta object of a block shard; a missing or mistyped field is an error naming the file. */
int qs_qblock_meta_read(const qs_shard *s, qs_qblock_meta *m, qs_error *err);

typedef struct qs_qlinear {
    int rows, cols, bits, group; /* group <= 0: one group per row */
    uint8_t *codes;              /* [rows, cols], one code per byte */
    float *scales, *zeros;       /* [rows, groups] */
    int32_t *g_idx;              /* [cols], or NULL */
} qs_qlinear;

/* Reads linear `lin` of an open block shard, unpacks its codes, checks every size against the
 * meta's shape and every g_idx entry against the group count. */
int qs_qlinear_read(qs_qlinear *q, const qs_shard *s, const char *lin, qs_error *err);
void qs_qlinear_free(qs_qlinear *q); /* a zeroed *q is fine */
int qs_qlinear_groups(const qs_qlinear *q);
/* w [rows, cols] = (codes - zero[g]) * scale[g], g = g_idx[c] or c / group */
void qs_qlinear_dequant(const qs_qlinear *q, float *w);

/* Reads a float tensor of the shard into new malloc'd memory (*n elements); error when missing. */
int qs_shard_read_f32(const qs_shard *s, const char *name, float **out, size_t *n, qs_error *err);

/* The channel reassembly gather of site 0 (input norm -> q/k/v), 1 (post-attention norm ->
 * gate/up) or 2 (silu(gate) * up -> down) of a block shard, C channels, in new malloc'd arrays:
 * output k = coef[k] * (in[src_a[k]] + (src_b[k] >= 0 ? in[src_b[k]] : 0)). All NULL (and 0
 * returned) when the site has none; an entry out of range is an error naming path. */
int qs_qblock_reasm_read(const qs_shard *s, int site, int C, int32_t **src_a, int32_t **src_b, float **coef,
                         const char *path, qs_error *err);

/* Block `layer` of OUT_DIR: its manifest record, its shard (file hash checked against the
 * record), the dequantized linears, norms and biases in new backend memory, w->abits from the
 * meta. Every shape is checked against cfg. On error nothing stays allocated. */
int qs_qblock_load(qs_llama_weights *w, const char *out_dir, const qs_manifest *man, const qs_model_config *cfg,
                   int layer, qs_backend *be, qs_error *err);

#endif
