/* libFuzzer harness: config.json parsing. */
#include <stdint.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_model_config c;
    qs_error err;
    qs_config_parse(&c, (const char *)data, size, "fuzz.json", &err);
    return 0;
}
