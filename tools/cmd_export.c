/* tools/cmd_export.c - `qstream export OUT_DIR --format gptq|fakequant -o HF_DIR [--dtype f32|f16|bf16]
 * [--gptq-v2] [--force]` or `--format gguf -o FILE.gguf [--token-embedding-type T]
 * [--output-tensor-type T]`: a finished quantized run as a Hugging
 * Face directory or one GGUF file (quant/export.h). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "quant/export.h"
#include "tools/commands.h"

#define USAGE                                                                                                      \
    "usage: qstream export OUT_DIR --format gptq|fakequant -o HF_DIR [--dtype f32|f16|bf16] [--gptq-v2] [--force]\n" \
    "       qstream export OUT_DIR --format gguf -o FILE.gguf [--dtype f32|f16|bf16] [--force]\n"                    \
    "                      [--token-embedding-type f32|f16|bf16|q8_0] [--output-tensor-type f32|f16|bf16|q8_0]\n"

int qs_cmd_export(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    qs_export_opts o = {.format = NULL, .dtype = QS_DTYPE_F32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--format") && v) o.format = v, i++;
        else if (!strcmp(a, "-o") && v) out = v, i++;
        else if (!strcmp(a, "--force")) o.force = 1;
        else if (!strcmp(a, "--gptq-v2")) o.gptq_v2 = 1;
        else if (!strcmp(a, "--token-embedding-type") && v) o.embed_type = v, i++;
        else if (!strcmp(a, "--output-tensor-type") && v) o.head_type = v, i++;
        else if (!strcmp(a, "--dtype") && v && (!strcmp(v, "f32") || !strcmp(v, "f16") || !strcmp(v, "bf16"))) {
            o.dtype = !strcmp(v, "f32") ? QS_DTYPE_F32 : !strcmp(v, "f16") ? QS_DTYPE_F16 : QS_DTYPE_BF16;
            i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (a[0] != '-' && !dir) dir = a;
        else {
            fprintf(stderr, "qstream export: unexpected argument '%s'\n" USAGE, a);
            return 2;
        }
    }
    if (!dir || !out || !o.format) {
        fprintf(stderr, "qstream export: give OUT_DIR, --format and -o HF_DIR\n" USAGE);
        return 2;
    }
    if (!strcmp(o.format, "gguf") && !o.force && access(out, F_OK) == 0) {
        fprintf(stderr, "qstream export: %s exists (use --force to replace it)\n", out);
        return 1;
    }
    qs_error err = {0};
    qs_export_info info = {0};
    if (qs_export(dir, out, &o, &info, &err)) {
        fprintf(stderr, "qstream export: %s\n", err.msg);
        return 1;
    }
    if (info.abits < 16) /* gptq refuses these runs; fakequant keeps the weights only */
        fprintf(stderr,
                "qstream export: warning: %s is a W%dA%d run; activation quantization is not part of the %s format "
                "(weights only)\n",
                dir, info.wbits, info.abits, o.format);
    if (info.float_linears)
        fprintf(stderr,
                "qstream export: note: %d linears have an input width that is not a multiple of 32 and are stored "
                "dequantized\n",
                info.float_linears);
    char group[32] = "per-channel";
    if (info.group > 0) snprintf(group, sizeof group, "group %d", info.group);
    fprintf(stderr, "exported %s (W%d, %s, %s%s) as %s to %s\n", dir, info.wbits, group, info.sym ? "sym" : "asym",
            info.desc_act ? ", act-order" : "", o.format, out);
    return 0;
}
