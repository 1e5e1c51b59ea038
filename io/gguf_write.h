/* io/gguf_write.h - a streaming GGUF v3 writer (for `qstream export --format gguf`).
 *
 * The key/values and the tensor table are collected in memory first (the table's offsets follow
 * from each tensor's type and shape), then the tensors' bytes are written one at a time in the
 * order they were declared, each at an offset aligned to 32 bytes (general.alignment's default).
 * The file goes to PATH.tmp and is renamed durably on close; on any error, or abort, nothing is
 * left at PATH. Memory: the metadata and the table, never a tensor. */
#ifndef QS_IO_GGUF_WRITE_H
#define QS_IO_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/gguf.h"

typedef struct qs_gguf_writer qs_gguf_writer;

int qs_gguf_writer_open(qs_gguf_writer **out, const char *path, qs_error *err);

/* Key/values (before the first tensor's bytes). An allocation failure is remembered and
 * reported by the next declare, write or close. */
void qs_gguf_kv_u32(qs_gguf_writer *w, const char *key, uint32_t v);
void qs_gguf_kv_f32(qs_gguf_writer *w, const char *key, float v);
void qs_gguf_kv_bool(qs_gguf_writer *w, const char *key, int v);
void qs_gguf_kv_str(qs_gguf_writer *w, const char *key, const char *v);
void qs_gguf_kv_strs(qs_gguf_writer *w, const char *key, const char *const *v, size_t n);
void qs_gguf_kv_f32s(qs_gguf_writer *w, const char *key, const float *v, size_t n);
void qs_gguf_kv_i32s(qs_gguf_writer *w, const char *key, const int32_t *v, size_t n);

/* A tensor: ne in ggml order (ne[0] contiguous), 1 to 4 dimensions, ne[0] a multiple of the
 * type's block size. */
int qs_gguf_writer_declare(qs_gguf_writer *w, const char *name, qs_ggml_type type, int n_dims, const uint64_t *ne,
                           qs_error *err);
/* the bytes of a declared tensor */
size_t qs_gguf_tensor_nbytes(qs_ggml_type type, int n_dims, const uint64_t *ne);
/* Appends bytes of the current tensor (declaration order); a tensor may come in several pieces.
 * The first call writes the header. */
int qs_gguf_writer_write(qs_gguf_writer *w, const void *data, size_t n, qs_error *err);
/* Every declared tensor must be complete; commits the file and frees w either way. */
int qs_gguf_writer_close(qs_gguf_writer *w, qs_error *err);
void qs_gguf_writer_abort(qs_gguf_writer *w); /* NULL is fine */

#endif
