/* pipeline/outdir.h - the files of OUT_DIR besides the block shards, written durably at the start
 * of a run so that OUT_DIR is a self-contained quantized model: config.json and the tokenizer
 * files copied from MODEL_DIR, and model.safetensors with the tensors outside the decoder blocks
 * (embedding, final norm, LM head) exactly as the source stores them. */
#ifndef QS_PIPELINE_OUTDIR_H
#define QS_PIPELINE_OUTDIR_H

#include "base/error.h"
#include "io/safetensors.h"

/* Writes what is missing (all of it when force). Memory: the largest non-block tensor. */
int qs_outdir_write_model_files(const char *model_dir, const qs_catalog *cat, const char *out_dir, int force,
                                qs_error *err);

#endif
