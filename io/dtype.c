#include "io/dtype.h"

#include <string.h>

static const struct { const char *name; size_t size; } dtypes[QS_DTYPE_COUNT] = {
    [QS_DTYPE_F32] = {"F32", 4}, [QS_DTYPE_F16] = {"F16", 2},   [QS_DTYPE_BF16] = {"BF16", 2},
    [QS_DTYPE_F64] = {"F64", 8}, [QS_DTYPE_I8] = {"I8", 1},     [QS_DTYPE_U8] = {"U8", 1},
    [QS_DTYPE_I16] = {"I16", 2}, [QS_DTYPE_I32] = {"I32", 4},   [QS_DTYPE_I64] = {"I64", 8},
    [QS_DTYPE_BOOL] = {"BOOL", 1},
};

size_t qs_dtype_size(qs_dtype t) { return (unsigned)t < QS_DTYPE_COUNT ? dtypes[t].size : 0; }
const char *qs_dtype_name(qs_dtype t) { return (unsigned)t < QS_DTYPE_COUNT ? dtypes[t].name : "?"; }
int qs_dtype_from_name(const char *name) {
    for (int i = 0; i < QS_DTYPE_COUNT; i++)
        if (!strcmp(dtypes[i].name, name)) return i;
    return -1;
}
