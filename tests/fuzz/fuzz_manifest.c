/* libFuzzer harness: the manifest parser on arbitrary bytes. */
#include <stdint.h>

#include "checkpoint/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_manifest m;
    qs_error err;
    if (qs_manifest_parse(&m, (const char *)data, size, "fuzz.json", &err) == 0) qs_manifest_free(&m);
    return 0;
}
