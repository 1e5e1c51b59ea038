/* libFuzzer harness: a quantized block read back from arbitrary shard bytes (meta parsing,
 * linear shapes, codes / scales / zeros / g_idx sizes and ranges, reassembly maps). */
#include <stdint.h>
#include <stdio.h>
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
    static const char *const sites[3] = {"attn_in", "mlp_in", "down_in"};
    for (int k = 0; k < 3; k++) { /* C from the map's own length: the reader checks the rest */
        char name[64];
        snprintf(name, sizeof name, "reassembly.%s.src_a", sites[k]);
        const qs_shard_entry *e = qs_shard_find(s, name);
        int32_t *a, *b;
        float *c;
        if (e && e->size / 4 <= (1u << 20) &&
            qs_qblock_reasm_read(s, k, (int)(e->size / 4), &a, &b, &c, "fuzz.qsh", &err) == 0)
            free(a), free(b), free(c);
    }
    qs_shard_close(s);
    return 0;
}
