/* tools/cmd_logits.c - `qstream logits MODEL_DIR --ids "1 67 89 ..." -o FILE [--threads N]`:
 * raw float32 logits, row-major [n_ids, vocab], no header (for comparing with other
 * implementations: numpy.fromfile(FILE, "<f4").reshape(n_ids, vocab)). Prints the first six
 * logits of position 0 on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "model/logits.h"
#include "tools/commands.h"
#include "io/token_ids.h"

#define USAGE "usage: qstream logits MODEL_DIR --ids \"1 67 89\" -o FILE [--threads N] [--device cpu|cuda]\n"

int qs_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL, *out = NULL, *device = "cpu";
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ids") && v) ids_s = v, i++;
        else if (!strcmp(a, "-o") && v) out = v, i++;
        else if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "--device") && v) device = v, i++;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "qstream logits: unexpected argument '%s'\n" USAGE, a);
            return 2;
        }
    }
    if (!model || !ids_s || !out || threads < 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    struct stat st;
    if (stat(model, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "qstream logits: %s: not a model directory\n", model);
        return 1;
    }
    qs_error err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    float *lg = NULL;
    int vocab = 0;
    int rc = qs_token_ids_parse(ids_s, "--ids", &ids, &n, &err);
    if (!rc && (n < 1 || n > 1u << 20)) rc = qs_error_set(&err, QS_EUSAGE, "--ids: %zu ids (1 to 1048576)", n);
    if (!rc) rc = qs_logits_compute(model, ids, (int)n, device, threads, &lg, &vocab, &err);
    if (!rc) rc = qs_file_write_durable(out, lg, sizeof(float) * n * (size_t)vocab, &err);
    if (rc) {
        fprintf(stderr, "qstream logits: %s\n", err.msg);
        free(ids);
        free(lg);
        return 1;
    }
    fprintf(stderr, "qstream logits: %zu x %d float32 -> %s; position 0:", n, vocab, out);
    for (int j = 0; j < 6 && j < vocab; j++) fprintf(stderr, " %.6f", lg[j]);
    fputc('\n', stderr);
    free(ids);
    free(lg);
    return 0;
}
