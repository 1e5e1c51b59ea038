/* tools/qstream.c - the `qstream` command: dispatches to subcommands. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/registry.h"
#include "tools/commands.h"

typedef struct qs_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} qs_command;

static const qs_command commands[] = {
    {"eval", qs_cmd_eval, "eval MODEL_DIR|OUT_DIR --text FILE [--seqlen 2048] [--max-windows K] [--json]"},
    {"logits", qs_cmd_logits, "logits MODEL_DIR --ids \"1 2 3\" -o FILE"},
    {"import-gguf", qs_cmd_import_gguf, "import-gguf FILE.gguf -o HF_DIR"},
    {"tokenize", qs_cmd_tokenize, "tokenize MODEL_DIR (--text FILE | --string S) [-o FILE]"},
    {"quantize", qs_cmd_quantize, "quantize MODEL_DIR -o OUT_DIR --method rtn|gptq|qllm|dlqat|slider --wbits 4 [--abits 16] [--group 128] [--calib FILE] ... (--help)"},
    {"verify", qs_cmd_verify, "verify OUT_DIR"},
    {"inspect", qs_cmd_inspect, "inspect OUT_DIR [--block N] [--json]"},
    {"export", qs_cmd_export, "export OUT_DIR --format gptq|fakequant -o HF_DIR [--dtype f32|f16|bf16] [--gptq-v2] [--force]"},
    {"dump", qs_cmd_dump, "dump OUT_DIR --block N --tensor NAME -o FILE(.npy|.safetensors)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: qstream <command> [options]\n       qstream --version\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  qstream %s\n", commands[i].usage);
}

int main(int argc, char **argv) {
    /* OpenMP regions and OpenBLAS's own threads take turns on the same cores; libgomp's default
     * spin-waiting between regions steals OpenBLAS's time (about 30% here). libgomp reads the
     * policy before main runs, so set it and start again once, unless the user chose one. */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execv("/proc/self/exe", argv);
        /* exec failed (no /proc): carry on with the default policy */
    }
    /* a file-size limit (RLIMIT_FSIZE) becomes an EFBIG write error with a clear message, like a
     * full disk, instead of killing the process */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("qstream %s (backends: %s)\n", QS_VERSION, qs_backends_compiled());
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qstream: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
