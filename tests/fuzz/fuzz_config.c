/* libFuzzer harness: config.json parsing. An accepted config must be consistent (what the model
 * code divides by is positive and divides); a refused one names the file. */
#include <stdint.h>
#include <string.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_model_config c;
    qs_error err;
    if (qs_config_parse(&c, (const char *)data, size, "fuzz.json", &err) == 0) {
        if (c.hidden_size <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.n_layers <= 0 ||
            c.vocab_size <= 0 || c.intermediate_size <= 0 || c.n_heads % c.n_kv_heads || !(c.rms_eps > 0) ||
            !(c.rope_theta > 0))
            __builtin_trap();
    } else if (!strstr(err.msg, "fuzz.json")) {
        __builtin_trap();
    }
    return 0;
}
