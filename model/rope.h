/* model/rope.h - the rotary embedding's inverse frequencies of a model: theta and, for LLaMA-3
 * configs, the frequency scaling (transformers' _compute_llama3_parameters). The backend's
 * rope op turns them into per-position angles. */
#ifndef QS_MODEL_ROPE_H
#define QS_MODEL_ROPE_H

#include "base/error.h"
#include "io/config.h"

/* inv_freq [head_dim/2] (host memory): theta^(-2i/head_dim), computed in double and rounded to
 * float, then LLaMA-3-scaled when cfg->rope_scaling says so. Errors on an odd head_dim or a
 * non-positive theta / scaling factor. */
int qs_rope_inv_freq(const qs_model_config *cfg, float *inv_freq, qs_error *err);

/* div [head_dim/2]: what LLaMA-3 scaling divides each inverse frequency by (1 where it keeps
 * it; all 1 without scaling), as llama.cpp's rope_freqs.weight holds it. */
int qs_rope_llama3_divisors(const qs_model_config *cfg, float *div, qs_error *err);

#endif
