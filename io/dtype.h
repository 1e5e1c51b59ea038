/* io/dtype.h - element types of tensors stored in files. */
#ifndef QS_IO_DTYPE_H
#define QS_IO_DTYPE_H

#include <stddef.h>

typedef enum qs_dtype {
    QS_DTYPE_F32 = 0,
    QS_DTYPE_F16,
    QS_DTYPE_BF16,
    QS_DTYPE_F64,
    QS_DTYPE_I8,
    QS_DTYPE_U8,
    QS_DTYPE_I16,
    QS_DTYPE_I32,
    QS_DTYPE_I64,
    QS_DTYPE_BOOL,
    QS_DTYPE_COUNT
} qs_dtype;

size_t qs_dtype_size(qs_dtype t);           /* bytes per element */
const char *qs_dtype_name(qs_dtype t);      /* safetensors spelling: "F32", "BF16", ... */
int qs_dtype_from_name(const char *name);   /* qs_dtype, or -1 when unknown */

#endif
