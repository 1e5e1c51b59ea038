/* tools/cmd_tokenize.c - `qstream tokenize MODEL_DIR (--text FILE | --string S) [-o FILE]` */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/tokenizer.h"
#include "tools/commands.h"

int qs_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *str = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--string") && i + 1 < argc) str = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "qstream tokenize: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model || !!file == !!str) {
        fprintf(stderr, "usage: qstream tokenize MODEL_DIR (--text FILE | --string S) [-o FILE]\n");
        return 2;
    }
    qs_error err = {0};
    qs_tokenizer *t;
    char *text = NULL;
    size_t len = str ? strlen(str) : 0;
    if (qs_tokenizer_load(&t, model, &err) || (file && qs_file_read_all(file, (size_t)1 << 34, &text, &len, &err))) {
        fprintf(stderr, "qstream tokenize: %s\n", err.msg);
        return 1;
    }
    int32_t *ids;
    size_t n;
    if (qs_tokenizer_encode(t, file ? text : str, len, &ids, &n, &err)) {
        fprintf(stderr, "qstream tokenize: %s\n", err.msg);
        return 1;
    }
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        perror(out);
        return 1;
    }
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%" PRId32, i ? " " : "", ids[i]);
    fputc('\n', f);
    if (out && fclose(f) != 0) {
        perror(out);
        return 1;
    }
    fprintf(stderr, "%zu tokens\n", n);
    free(ids);
    free(text);
    qs_tokenizer_free(t);
    return 0;
}
