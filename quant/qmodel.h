/* quant/qmodel.h - a finished quantized run (OUT_DIR) opened as a model: manifest.json with
 * every block recorded, config.json, the non-block tensors in model.safetensors (embedding,
 * final norm, LM head, as the source model stored them) and the block shards. Used by
 * `qstream eval OUT_DIR`, export, and resume replay. */
#ifndef QS_QUANT_QMODEL_H
#define QS_QUANT_QMODEL_H

#include "checkpoint/manifest.h"
#include "io/config.h"
#include "model/llama_weights.h"

typedef struct qs_qmodel {
    const char *dir; /* borrowed */
    qs_manifest man;
    qs_model_config cfg;
} qs_qmodel;

/* 1 when dir holds a quantized run (a manifest.json) */
int qs_qmodel_is_run(const char *dir);
/* Loads the manifest and config; require_all: every block must be recorded ("run is not
 * finished: blocks 12..29 missing; resume it with qstream quantize"). */
int qs_qmodel_open(qs_qmodel *q, const char *dir, int require_all, qs_error *err);
void qs_qmodel_close(qs_qmodel *q);
/* qs_block_loader (model/llama_stream.h) over ctx = qs_qmodel * */
int qs_qmodel_load_block(void *ctx, int layer, qs_llama_weights *w, qs_backend *be, qs_error *err);

#endif
