/* quant/export_internal.h - what the exports (quant/export.c, quant/export_gguf.c) share. */
#ifndef QS_QUANT_EXPORT_INTERNAL_H
#define QS_QUANT_EXPORT_INTERNAL_H

#include "checkpoint/shard.h"
#include "quant/export.h"
#include "quant/qblock.h"
#include "quant/qmodel.h"

/* a linear's [out, in], in qs_linear_names' order */
typedef struct qs_lin_shape {
    int rows, cols;
} qs_lin_shape;
void qs_export_lin_shapes(const qs_model_config *c, qs_lin_shape s[QS_N_LINEAR]);
/* a block's vectors in the shards: the two norms, then (attention_bias) the q, k, v biases */
extern const char *const qs_export_vec_names[5];
/* n floats as dtype (F32, F16 or BF16) bytes in new malloc'd memory, or NULL */
void *qs_export_vec_as(const float *x, size_t n, qs_dtype dt);

/* block b's shard, its file hash checked against the manifest; *path malloc'd (free it) */
int qs_export_open_block(const qs_qmodel *qm, int b, qs_shard **s, char **path, qs_error *err);
/* every block: readable, block 0's settings (into m0), and no channel reassembly when
 * refuse_reasm (the error names format) */
int qs_export_check_blocks(const qs_qmodel *qm, const char *format, int refuse_reasm, qs_qblock_meta *m0,
                           qs_error *err);
/* the gguf format (quant/export_gguf.c): o->dtype (checked by qs_export) for the tensors it
 * keeps in floats */
int qs_export_gguf(const char *out_dir, const char *path, const qs_export_opts *o, qs_export_info *info,
                   qs_error *err);

#endif
