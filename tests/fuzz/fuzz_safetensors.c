/* libFuzzer harness: the safetensors header validator. Input: u64 little-endian file size (fake)
 * | header JSON bytes. Whatever is accepted must satisfy what readers later trust: every tensor
 * inside the file, bytes = elements x dtype size, dims non-negative; parsing the same header
 * again appends to the list. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

static void check(const qs_tensor_info *t, size_t n, uint64_t json_len, uint64_t file_size) {
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || t[i].n_dims < 0 || t[i].n_dims > QS_MAX_DIMS || t[i].dtype >= QS_DTYPE_COUNT) __builtin_trap();
        uint64_t elems = 1;
        for (int d = 0; d < t[i].n_dims; d++) {
            if (t[i].shape[d] < 0) __builtin_trap();
            elems *= (uint64_t)t[i].shape[d];
        }
        if (elems != t[i].n_elems || elems * qs_dtype_size(t[i].dtype) != t[i].nbytes) __builtin_trap();
        if (t[i].offset < 8 + json_len || t[i].offset > file_size || t[i].nbytes > file_size - t[i].offset)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t file_size = 0;
    for (int b = 7; b >= 0; b--) file_size = file_size << 8 | data[b];
    const char *json = (const char *)data + 8;
    size_t len = size - 8;
    qs_tensor_info *t = NULL;
    size_t n = 0;
    qs_error err;
    if (qs_safetensors_parse_header(json, len, file_size, "fuzz.safetensors", 0, &t, &n, &err) == 0) {
        check(t, n, len, file_size);
        size_t n1 = n;
        if (qs_safetensors_parse_header(json, len, file_size, "fuzz.safetensors", 1, &t, &n, &err) != 0 || n != 2 * n1)
            __builtin_trap();
    } else if (n != 0 || !strstr(err.msg, "fuzz.safetensors")) {
        __builtin_trap(); /* errors leave the list as it was and name the file */
    }
    qs_tensor_infos_free(t, n);
    return 0;
}
