/* model/logits.h - full logits of one short token sequence (one window at positions 0..n-1),
 * for comparing with reference implementations. The model runs streamed (one block in memory);
 * the LM head in row chunks; only the [n, vocab] output is whole. */
#ifndef QS_MODEL_LOGITS_H
#define QS_MODEL_LOGITS_H

#include <stdint.h>

#include "base/error.h"

/* *logits = malloc'd [n, vocab] float32 row-major (caller frees); *vocab its row length.
 * device NULL = "cpu"; threads 0 = all cores. On error *logits is NULL. */
int qs_logits_compute(const char *model_dir, const int32_t *ids, int n, const char *device, int threads,
                      float **logits, int *vocab, qs_error *err);

#endif
