/* tools/cmd_logits.c - `qstream logits MODEL_DIR --ids "1 67 89 ..." -o FILE`: raw float32
 * logits, row-major [n_ids, vocab], for comparing with other implementations. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "model/eval.h"
#include "tools/commands.h"

int qs_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL, *out = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ids") && v) ids_s = v, i++;
        else if (!strcmp(a, "-o") && v) out = v, i++;
        else if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "qstream logits: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model || !ids_s || !out) {
        fprintf(stderr, "usage: qstream logits MODEL_DIR --ids \"1 67 89\" -o FILE\n");
        return 2;
    }
    int32_t ids[65536];
    int n = 0;
    for (const char *p = ids_s; *p && n < 65536;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) {
            if (*p == ' ' || *p == ',') { p++; continue; }
            fprintf(stderr, "qstream logits: --ids: not a token id at '%.10s'\n", p);
            return 2;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    qs_error err = {0};
    float *lg;
    int vocab;
    if (qs_eval_logits(model, ids, n, threads, &lg, &vocab, &err) ||
        qs_file_write_durable(out, lg, sizeof(float) * (size_t)n * vocab, &err)) {
        fprintf(stderr, "qstream logits: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "%d x %d logits -> %s; position 0:", n, vocab, out);
    for (int j = 0; j < 6 && j < vocab; j++) fprintf(stderr, " %.6f", lg[j]);
    fputc('\n', stderr);
    free(lg);
    return 0;
}
