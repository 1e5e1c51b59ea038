/* tools/cmd_eval.c - `qstream eval MODEL_DIR (--text FILE | --ids-file FILE) [--seqlen 2048]
 *                     [--max-windows K] [--threads N] [--json] [--progress]` */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/tokenizer.h"
#include "model/eval.h"
#include "tools/commands.h"

/* whitespace-separated token ids; *ids malloc'd */
static int read_ids(const char *path, int32_t **ids, size_t *n, qs_error *err) {
    char *text;
    size_t len;
    QS_FORWARD_IF_ERROR(qs_file_read_all(path, (size_t)1 << 32, &text, &len, err));
    size_t cap = len / 2 + 1, k = 0;
    int32_t *a = malloc(sizeof *a * cap);
    char *p = text;
    int rc = a ? 0 : qs_error_set(err, -12, "out of memory");
    while (!rc) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff) rc = qs_error_set(err, QS_EFORMAT, "%s: not a token id at byte %ld", path, (long)(p - text));
        else a[k++] = (int32_t)v, p = end;
    }
    free(text);
    if (rc) {
        free(a);
        return rc;
    }
    *ids = a;
    *n = k;
    return 0;
}

int qs_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *ids_file = NULL;
    qs_eval_opts o = {.seqlen = 2048, .device = "cpu"};
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--text") && v) text = v, i++;
        else if (!strcmp(a, "--ids-file") && v) ids_file = v, i++;
        else if (!strcmp(a, "--seqlen") && v) o.seqlen = atoi(v), i++;
        else if (!strcmp(a, "--max-windows") && v) o.max_windows = atoi(v), i++;
        else if (!strcmp(a, "--threads") && v) o.threads = atoi(v), i++;
        else if (!strcmp(a, "--device") && v) o.device = v, i++;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--progress")) o.progress = 1;
        else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "qstream eval: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model || !!text == !!ids_file) {
        fprintf(stderr, "usage: qstream eval MODEL_DIR (--text FILE | --ids-file FILE) [--seqlen 2048] [--max-windows K] [--json]\n");
        return 2;
    }
    qs_error err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;
    if (text) {
        qs_tokenizer *t = NULL;
        char *buf = NULL;
        size_t len;
        rc = qs_tokenizer_load(&t, model, &err);
        if (!rc) rc = qs_file_read_all(text, (size_t)1 << 34, &buf, &len, &err);
        if (!rc) rc = qs_tokenizer_encode(t, buf, len, &ids, &n, &err);
        free(buf);
        qs_tokenizer_free(t);
    } else {
        rc = read_ids(ids_file, &ids, &n, &err);
    }
    qs_eval_result r;
    if (!rc) rc = qs_eval_perplexity(model, ids, n, &o, &r, &err);
    free(ids);
    if (rc) {
        fprintf(stderr, "qstream eval: %s\n", err.msg);
        return 1;
    }
    if (json)
        printf("{\"ppl\": %.6f, \"nll\": %.8f, \"tokens\": %ld, \"windows\": %d, \"seqlen\": %d, \"seconds\": %.3f, "
               "\"tokens_per_second\": %.1f}\n",
               r.ppl, r.nll, r.tokens, r.windows, o.seqlen, r.seconds, (r.tokens + r.windows) / r.seconds);
    else
        printf("ppl %.4f (tokens %ld, windows %d, seqlen %d, %.1f s, %.0f tok/s)\n", r.ppl, r.tokens, r.windows, o.seqlen,
               r.seconds, (r.tokens + r.windows) / r.seconds);
    return 0;
}
