/* io/gguf.h - GGUF v2/v3 reader: metadata key/values, tensor table, dequantization.
 *
 * Opening validates the header: magic, version 2 or 3, counts and string lengths bounded by the
 * file size, known value and tensor types, tensor data inside the file and aligned to
 * general.alignment (default 32), 1 to 4 dimensions, no element-count overflow, unique keys and
 * tensor names, arrays of arrays nested at most 3 deep. Errors are QS_EFORMAT (damaged) or
 * QS_EUNSUPPORTED (valid but not handled: version, big-endian, tensor type), with one line
 * naming the file and the key or tensor. The file is mapped read-only; a qs_gguf is not safe
 * for concurrent metadata access (string arrays keep a walk cursor). */
#ifndef QS_IO_GGUF_H
#define QS_IO_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum qs_gguf_vtype {
    QS_GGUF_U8 = 0, QS_GGUF_I8 = 1, QS_GGUF_U16 = 2, QS_GGUF_I16 = 3, QS_GGUF_U32 = 4,
    QS_GGUF_I32 = 5, QS_GGUF_F32 = 6, QS_GGUF_BOOL = 7, QS_GGUF_STRING = 8, QS_GGUF_ARRAY = 9,
    QS_GGUF_U64 = 10, QS_GGUF_I64 = 11, QS_GGUF_F64 = 12
} qs_gguf_vtype;

/* ggml tensor types (values as in the GGUF spec) */
typedef enum qs_ggml_type {
    QS_GGML_F32 = 0, QS_GGML_F16 = 1, QS_GGML_Q4_0 = 2, QS_GGML_Q4_1 = 3, QS_GGML_Q5_0 = 6,
    QS_GGML_Q5_1 = 7, QS_GGML_Q8_0 = 8, QS_GGML_Q8_1 = 9, QS_GGML_Q2_K = 10, QS_GGML_Q3_K = 11,
    QS_GGML_Q4_K = 12, QS_GGML_Q5_K = 13, QS_GGML_Q6_K = 14, QS_GGML_Q8_K = 15,
    QS_GGML_BF16 = 30
} qs_ggml_type;

typedef struct qs_gguf qs_gguf;

typedef struct qs_gguf_tensor {
    char *name;
    uint32_t type;      /* qs_ggml_type */
    int n_dims;
    uint64_t ne[4];     /* ggml order: ne[0] is the innermost (contiguous) dimension */
    uint64_t n_elems;
    uint64_t offset;    /* absolute byte offset in the file */
    uint64_t nbytes;
} qs_gguf_tensor;

int qs_gguf_open(qs_gguf **out, const char *path, qs_error *err);
void qs_gguf_free(qs_gguf *g); /* NULL is fine */
/* Parses a GGUF image already in memory (for the fuzzer); the buffer must outlive g. */
int qs_gguf_open_memory(qs_gguf **out, const void *data, size_t size, const char *name_for_errors,
                        qs_error *err);

uint32_t qs_gguf_version(const qs_gguf *g);
const char *qs_gguf_name(const qs_gguf *g); /* the path (or name_for_errors) used in messages */
uint64_t qs_gguf_alignment(const qs_gguf *g); /* general.alignment, default 32 */

/* metadata: key lookup returns the key index or -1 */
int qs_gguf_find_key(const qs_gguf *g, const char *key);
/* type of key index k; (qs_gguf_vtype)-1 when k is out of range */
qs_gguf_vtype qs_gguf_key_type(const qs_gguf *g, int k);
/* walking every key: count, and the name of key k (points into g, NOT NUL-terminated; a name
 * may even contain NUL bytes) or NULL when k is out of range */
size_t qs_gguf_key_count(const qs_gguf *g);
const char *qs_gguf_key_name(const qs_gguf *g, size_t k, size_t *len);
/* Scalars with conversion between integer widths; return QS_EFORMAT when the type does not
 * fit (e.g. a string asked as u32) or the key is absent (k < 0). */
int qs_gguf_get_u64(const qs_gguf *g, const char *key, uint64_t *v, qs_error *err);
int qs_gguf_get_i64(const qs_gguf *g, const char *key, int64_t *v, qs_error *err);
int qs_gguf_get_f32(const qs_gguf *g, const char *key, float *v, qs_error *err);
int qs_gguf_get_bool(const qs_gguf *g, const char *key, int *v, qs_error *err);
/* String value; *s points into g (not NUL-terminated), *len its length. */
int qs_gguf_get_str(const qs_gguf *g, const char *key, const char **s, size_t *len, qs_error *err);
/* Arrays: element type and count; element access by index (0, or QS_EFORMAT when the key is
 * absent, not an array of a fitting type, or i is out of range). Arrays of arrays are
 * parsed (nesting bounded) but their elements are not accessible. */
int qs_gguf_get_arr(const qs_gguf *g, const char *key, qs_gguf_vtype *elem_type, uint64_t *n,
                    qs_error *err);
int qs_gguf_arr_str(const qs_gguf *g, const char *key, uint64_t i, const char **s, size_t *len);
int qs_gguf_arr_i64(const qs_gguf *g, const char *key, uint64_t i, int64_t *v);
int qs_gguf_arr_f32(const qs_gguf *g, const char *key, uint64_t i, float *v);

size_t qs_gguf_tensor_count(const qs_gguf *g);
const qs_gguf_tensor *qs_gguf_tensor_at(const qs_gguf *g, size_t i);
const qs_gguf_tensor *qs_gguf_tensor_find(const qs_gguf *g, const char *name);
/* Reads and dequantizes one tensor into dst (n_elems floats, caller-owned), in ggml order
 * (ne[0] fastest). For a mapped file the tensor's pages are released from this process
 * afterwards, so streaming a model tensor by tensor keeps one tensor resident. */
int qs_gguf_read_f32(const qs_gguf *g, const qs_gguf_tensor *t, float *dst, qs_error *err);

#endif
