/* tools/cmd_import_gguf.c - `qstream import-gguf FILE.gguf -o HF_DIR` */
#include <stdio.h>
#include <string.h>

#include "model/import_gguf.h"
#include "tools/commands.h"

int qs_cmd_import_gguf(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: qstream import-gguf FILE.gguf -o HF_DIR\n"
                   "  dequantizes a llama GGUF (F32/F16/BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q2_K..Q6_K) into HF_DIR:\n"
                   "  config.json, model.safetensors (F32), tokenizer.json\n");
            return 0;
        }
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (argv[i][0] != '-' && !in) in = argv[i];
        else {
            fprintf(stderr, "qstream import-gguf: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "usage: qstream import-gguf FILE.gguf -o HF_DIR\n");
        return 2;
    }
    qs_error err = {0};
    qs_import_summary s;
    if (qs_import_gguf(in, out, &s, &err)) {
        fprintf(stderr, "qstream import-gguf: %s\n", err.msg);
        return 1;
    }
    printf("imported %d tensors, %d layers, vocab %d -> %s\n", s.n_tensors, s.n_layers, s.vocab, out);
    return 0;
}
