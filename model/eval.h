/* model/eval.h - perplexity of a full-precision model, streamed (model/llama_stream.h): memory
 * holds one block's weights and the hidden states of the windows, never the whole model; the LM
 * head runs over vocabulary chunks with an online log-sum-exp, so the [tokens, vocab] logits
 * never exist. */
#ifndef QS_MODEL_EVAL_H
#define QS_MODEL_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "model/llama_stream.h"

typedef struct qs_eval_opts {
    int seqlen;         /* tokens per window (2048 in the papers) */
    int max_windows;    /* 0 = all; else the first max_windows windows */
    int threads;        /* 0 = all cores */
    const char *device; /* "cpu" (NULL = "cpu") */
    int progress;       /* 1: one line per block on stderr */
    qs_block_loader load_block; /* NULL: float weights of model_dir; else e.g. a quantized run */
    void *load_ctx;
} qs_eval_opts;

typedef struct qs_eval_result {
    double ppl, nll;  /* exp(mean NLL) and the mean NLL (nats per predicted token) */
    long tokens;      /* tokens in the windows evaluated: windows x seqlen */
    long predicted;   /* predicted positions: windows x (seqlen - 1) */
    int windows;
    double seconds;   /* all of it: model open, embedding, blocks, LM head */
    double seconds_load, seconds_blocks, seconds_head; /* weight loading; block forward; LM head */
} qs_eval_result;

/* Perplexity of ids (the whole text tokenized once), cut into non-overlapping windows of
 * seqlen tokens with the tail dropped. Each window predicts its positions 1..seqlen-1 from the
 * prefix; position 0 is not predicted (nothing precedes it in the window). This is what the
 * GPTQ / OmniQuant / QLLM evaluation code computes with labels = input_ids (the loss shifts
 * logits and labels by one). ppl = exp(mean NLL over every predicted position of every window).
 * Errors: seqlen < 2, fewer ids than one window, an id outside the vocabulary, a bad model. */
int qs_eval_perplexity(const char *model_dir, const int32_t *ids, size_t n_ids, const qs_eval_opts *opts,
                       qs_eval_result *res, qs_error *err);

#endif
