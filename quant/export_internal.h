/* quant/export_internal.h - what the exports (quant/export.c, quant/export_gguf.c) share. */
#ifndef QS_QUANT_EXPORT_INTERNAL_H
#define QS_QUANT_EXPORT_INTERNAL_H

#include "checkpoint/shard.h"
#include "quant/export.h"
#include "quant/qblock.h"
#include "quant/qmodel.h"

/* block b's shard, its file hash checked against the manifest; *path malloc'd (free it) */
int qs_export_open_block(const qs_qmodel *qm, int b, qs_shard **s, char **path, qs_error *err);
/* every block: readable, block 0's settings (into m0), and no channel reassembly when
 * refuse_reasm (the error names format) */
int qs_export_check_blocks(const qs_qmodel *qm, const char *format, int refuse_reasm, qs_qblock_meta *m0,
                           qs_error *err);
/* the gguf format (quant/export_gguf.c): o->dtype for the tensors it keeps in floats */
int qs_export_gguf(const char *out_dir, const char *path, const qs_export_opts *o, qs_export_info *info,
                   qs_error *err);

#endif
