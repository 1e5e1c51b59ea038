/* libFuzzer harness: the safetensors header validator (the first 8 bytes give the file size). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    uint64_t file_size;
    memcpy(&file_size, data, 8);
    qs_tensor_info *t = NULL;
    size_t n = 0;
    qs_error err;
    if (qs_safetensors_parse_header((const char *)data + 8, size - 8, file_size, "fuzz.safetensors", 0, &t, &n, &err) == 0)
        qs_tensor_infos_free(t, n);
    else
        free(t);
    return 0;
}
