/* model/eval.h - streamed evaluation of a full-precision model: perplexity and raw logits.
 *
 * Memory holds one block's weights and the hidden states of all windows, never the whole model:
 * the embedding rows of the tokens used are gathered in row chunks, each block is loaded, run on
 * every window and freed, and the LM head is applied in vocabulary chunks with an online
 * log-sum-exp, so the [tokens, vocab] logits never exist. */
#ifndef QS_MODEL_EVAL_H
#define QS_MODEL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct qs_eval_opts {
    int seqlen;        /* tokens per window (2048 in the papers) */
    int max_windows;   /* 0 = all */
    int threads;       /* 0 = all cores */
    const char *device;/* "cpu" (default) */
    int progress;      /* 1: one line per block on stderr */
} qs_eval_opts;

typedef struct qs_eval_result {
    double ppl, nll;   /* exp(mean NLL) and the mean NLL */
    long tokens;       /* predicted tokens: windows x (seqlen - 1) */
    int windows;
    double seconds;
} qs_eval_result;

/* Perplexity on ids cut into non-overlapping windows of seqlen (tail dropped); each window
 * predicts its positions 1..seqlen-1 from the prefix (labels = inputs, as the GPTQ / OmniQuant /
 * QLLM evaluation code computes it). */
int qs_eval_perplexity(const char *model_dir, const int32_t *ids, size_t n_ids, const qs_eval_opts *opts,
                       qs_eval_result *res, qs_error *err);

/* Logits [n, vocab] (malloc'd, caller frees) of one sequence at positions 0..n-1. */
int qs_eval_logits(const char *model_dir, const int32_t *ids, int n, int threads, float **logits, int *vocab,
                   qs_error *err);

#endif
