/* io/safetensors.h - safetensors reading (single file or sharded with
 * model.safetensors.index.json) and writing.
 *
 * A qs_catalog is the table of every tensor of a model directory: name -> (file, absolute
 * byte offset, dtype, shape). Opening validates every header: 8-byte length within limits
 * (QS_ST_MAX_HEADER), JSON object, known dtypes, shape x dtype size = byte length, offsets
 * inside the file, no two tensors overlapping. Errors name the file and the tensor. */
#ifndef QS_IO_SAFETENSORS_H
#define QS_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/dtype.h"

#define QS_ST_MAX_HEADER (100u << 20) /* 100 MiB, as the reference implementation */
#define QS_MAX_DIMS 8

typedef struct qs_tensor_info {
    char *name;
    qs_dtype dtype;
    int n_dims;
    int64_t shape[QS_MAX_DIMS]; /* row-major, outermost first (as in the file) */
    uint64_t n_elems;
    uint64_t offset; /* absolute byte offset in its file */
    uint64_t nbytes;
    int file_index;  /* index into the catalogue's files */
} qs_tensor_info;

typedef struct qs_catalog qs_catalog;

/* Opens MODEL_DIR/model.safetensors.index.json when present, else MODEL_DIR/model.safetensors,
 * or a path to one .safetensors file. On error *out is NULL. */
int qs_catalog_open(qs_catalog **out, const char *path, qs_error *err);
void qs_catalog_free(qs_catalog *c); /* NULL is fine */

size_t qs_catalog_count(const qs_catalog *c);
const qs_tensor_info *qs_catalog_at(const qs_catalog *c, size_t i);
const qs_tensor_info *qs_catalog_find(const qs_catalog *c, const char *name); /* NULL if absent */
size_t qs_catalog_file_count(const qs_catalog *c);
const char *qs_catalog_file_path(const qs_catalog *c, int file_index);

/* Reads one tensor with pread and converts it to float32 (F32/F16/BF16 sources).
 * dst holds t->n_elems floats. */
int qs_catalog_read_f32(const qs_catalog *c, const qs_tensor_info *t, float *dst, qs_error *err);
/* Reads rows [row0, row0 + n_rows) of a tensor (first dimension) as float32;
 * dst holds n_rows x (n_elems / shape[0]) floats. */
int qs_catalog_read_rows_f32(const qs_catalog *c, const qs_tensor_info *t, int64_t row0, int64_t n_rows,
                             float *dst, qs_error *err);
/* Reads the raw bytes (t->nbytes) as stored. */
int qs_catalog_read_raw(const qs_catalog *c, const qs_tensor_info *t, void *dst, qs_error *err);

/* Parses one safetensors header (the JSON bytes after the 8-byte length) of a file of
 * file_size bytes; appends the tensors to *infos (realloc'd; *count updated). Exposed for
 * tests and the fuzzer. name_for_errors prefixes messages. Frees nothing on error except
 * what it allocated itself. */
int qs_safetensors_parse_header(const char *json, size_t json_len, uint64_t file_size,
                                const char *name_for_errors, int file_index,
                                qs_tensor_info **infos, size_t *count, qs_error *err);
void qs_tensor_infos_free(qs_tensor_info *infos, size_t count);

/* Writer. Declare every tensor first (name, dtype, shape), then write their data in the
 * order declared, then close: the file is written as PATH.tmp and renamed durably on
 * close. On any error, or qs_st_writer_abort, nothing is left at PATH. */
typedef struct qs_st_writer qs_st_writer;
int qs_st_writer_open(qs_st_writer **out, const char *path, qs_error *err);
int qs_st_writer_declare(qs_st_writer *w, const char *name, qs_dtype dtype, int n_dims,
                         const int64_t *shape, qs_error *err);
/* data is the tensor's full bytes (shape x dtype size). The first call writes the header. */
int qs_st_writer_write(qs_st_writer *w, const void *data, qs_error *err);
int qs_st_writer_close(qs_st_writer *w, qs_error *err); /* commits; frees w either way */
void qs_st_writer_abort(qs_st_writer *w);               /* NULL is fine */

#endif
