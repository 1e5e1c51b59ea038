/* tools/cmd_eval.c - `qstream eval MODEL_DIR|OUT_DIR (--text FILE | --ids-file FILE) [--seqlen 2048]
 *                     [--max-windows K] [--threads N] [--device cpu|cuda] [--json] [--progress]`
 * Perplexity, streamed one block at a time (model/eval.h). --text is tokenized as it is, in one
 * piece (its lines joined by the file's own "\n"), with MODEL_DIR/tokenizer.json; --ids-file
 * holds whitespace-separated token ids (for models without a tokenizer). An OUT_DIR of
 * `qstream quantize` is evaluated from its shards, with the activation quantization it was
 * quantized with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "io/config.h"
#include "io/tokenizer.h"
#include "model/eval.h"
#include "quant/qmodel.h"
#include "tools/commands.h"
#include "io/token_ids.h"

#define USAGE                                                                                                     \
    "usage: qstream eval MODEL_DIR (--text FILE | --ids-file FILE) [--seqlen 2048] [--max-windows K]\n"         \
    "                    [--threads N] [--device cpu|cuda] [--json] [--progress]\n"                                     \
    "  prints ppl, the predicted tokens (windows x (seqlen - 1)), windows, seconds and forward\n"                  \
    "  throughput (windows x seqlen tokens per second)\n"

#define MAX_TEXT ((size_t)1 << 34)

static int load_ids(const char *model, const char *text, const char *ids_file, int32_t **ids, size_t *n,
                    qs_error *err) {
    char *buf = NULL;
    size_t len;
    QS_FORWARD_IF_ERROR(qs_file_read_all(text ? text : ids_file, MAX_TEXT, &buf, &len, err));
    int rc;
    if (text) {
        qs_tokenizer *t = NULL;
        rc = qs_tokenizer_load(&t, model, err);
        if (!rc) rc = qs_tokenizer_encode(t, buf, len, ids, n, err);
        qs_tokenizer_free(t);
    } else {
        rc = qs_token_ids_parse(buf, ids_file, ids, n, err);
    }
    free(buf);
    return rc;
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
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "qstream eval: unexpected argument '%s'\n" USAGE, a);
            return 2;
        }
    }
    if (!model || !!text == !!ids_file) {
        fprintf(stderr, "qstream eval: give MODEL_DIR and one of --text or --ids-file\n" USAGE);
        return 2;
    }
    if (o.seqlen < 2 || o.max_windows < 0 || o.threads < 0) {
        fprintf(stderr, "qstream eval: --seqlen must be >= 2, --max-windows and --threads >= 0\n");
        return 2;
    }
    struct stat st;
    if (stat(model, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "qstream eval: %s: not a model directory\n", model);
        return 1;
    }
    qs_error err = {0};
    qs_model_config cfg;
    if (qs_config_load(&cfg, model, &err)) {
        fprintf(stderr, "qstream eval: %s\n", err.msg);
        return 1;
    }
    if (cfg.max_position_embeddings > 0 && o.seqlen > cfg.max_position_embeddings)
        fprintf(stderr, "qstream eval: warning: seqlen %d is over the model's max_position_embeddings %d\n", o.seqlen,
                cfg.max_position_embeddings);
    if (cfg.sliding_window > 0 && o.seqlen > cfg.sliding_window)
        fprintf(stderr, "qstream eval: warning: seqlen %d is over the sliding window %d, which eval does not apply\n",
                o.seqlen, cfg.sliding_window);
    int32_t *ids = NULL;
    size_t n = 0;
    qs_eval_result r;
    qs_qmodel qm = {0};
    int rc = 0;
    if (qs_qmodel_is_run(model)) { /* a quantized run: blocks come from its shards */
        rc = qs_qmodel_open(&qm, model, 1, &err);
        o.load_block = qs_qmodel_load_block;
        o.load_ctx = &qm;
    }
    if (!rc) rc = load_ids(model, text, ids_file, &ids, &n, &err);
    if (!rc) rc = qs_eval_perplexity(model, ids, n, &o, &r, &err);
    qs_qmodel_close(&qm);
    free(ids);
    if (rc) {
        fprintf(stderr, "qstream eval: %s\n", err.msg);
        return 1;
    }
    double tps = (double)r.tokens / r.seconds;
    if (json)
        printf("{\"ppl\": %.6f, \"nll\": %.8f, \"tokens\": %ld, \"windows\": %d, \"seqlen\": %d, \"seconds\": %.3f, "
               "\"tokens_per_second\": %.1f, \"seconds_load\": %.3f, \"seconds_blocks\": %.3f, \"seconds_head\": %.3f}\n",
               r.ppl, r.nll, r.predicted, r.windows, o.seqlen, r.seconds, tps, r.seconds_load, r.seconds_blocks,
               r.seconds_head);
    else
        printf("ppl %.4f (tokens %ld, windows %d, seqlen %d, %.1f s, %.0f tok/s)\n", r.ppl, r.predicted, r.windows,
               o.seqlen, r.seconds, tps);
    return 0;
}
