/* libFuzzer harness: a quantized block read back from arbitrary shard bytes (meta parsing,
 * linear shapes, codes / scales / zeros / g_idx sizes and ranges). */
#include <stdint.h>
#include <stdlib.h>

#include "checkpoint/shard.h"
#include "quant/qblock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qs_shard *s;
    qs_error err;
    if (qs_shard_open_memory(&s, data, size, "fuzz.qsh", &err) != 0) return 0;
    for (size_t i = 0; i < qs_shard_count(s); i++)
        if (qs_shard_at(s, i)->size > (16u << 20)) { /* the harness's own allocation bound */
            qs_shard_close(s);
            return 0;
        }
    qs_qblock_meta m;
    if (qs_qblock_meta_read(s, &m, &err) == 0)
        for (int k = 0; k < QS_N_LINEAR; k++) {
            qs_qlinear l;
            if (qs_qlinear_read(&l, s, qs_linear_names[k], &err) == 0) {
                if ((size_t)l.rows * l.cols <= (4u << 20)) {
                    float *w = malloc(sizeof(float) * (size_t)l.rows * l.cols);
                    if (w) qs_qlinear_dequant(&l, w);
                    free(w);
                }
                qs_qlinear_free(&l);
            }
        }
    qs_shard_close(s);
    return 0;
}
