/* libFuzzer harness: the shard parser and frame reader on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>

#include "checkpoint/shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_shard *s;
    qs_error err;
    if (qs_shard_open_memory(&s, data, size, "fuzz.qsh", &err) != 0) return 0;
    for (size_t i = 0; i < qs_shard_count(s); i++) {
        const qs_shard_entry *e = qs_shard_at(s, i);
        if (e->size > (16u << 20)) continue; /* the harness's own allocation bound */
        void *dst = malloc(e->size ? e->size : 1);
        qs_shard_read(s, i, dst, &err);
        free(dst);
    }
    qs_shard_verify(s, &err);
    qs_shard_close(s);
    return 0;
}
