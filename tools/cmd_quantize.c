/* tools/cmd_quantize.c - `qstream quantize MODEL_DIR -o OUT_DIR --method rtn|gptq|qllm ...`: the
 * options into qs_quantize_opts (pipeline/quantize.h), the run, a one-line summary. The usage
 * text below lists every option; QLLM's error correction (--eec) is on by default for qllm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/registry.h"
#include "pipeline/quantize.h"
#include "tools/commands.h"

#define USAGE                                                                                                        \
    "usage: qstream quantize MODEL_DIR -o OUT_DIR --method rtn|gptq|qllm|dlqat|slider --wbits 4 [--abits 16] [--group 128|-1] [--sym]\n" \
    "         [--calib FILE | --calib-ids FILE | --calib random] [--nsamples 128] [--seqlen 2048] [--seed 0]\n"      \
    "         [--damp 0.01] [--act-order] [--static-groups] [--cr on|off] [--cr-distance paper|code]\n"             \
    "         [--cr-tokens 2048] [--cr-candidates 40] [--eec on|off] [--rank 4] [--lora-alpha 1] [--epochs 10 (slider: 20)]\n"     \
    "         [--lr 5e-4 (dlqat: 1e-2, slider: 1e-3)] [--blocks-per-group 4 (dlqat: 1)] [--eec-form paper|merged] [--smooth on|off] [--incremental off|on] (slider)\n" \
    "         [--device cpu|cuda] [--threads N] [--host-mem 24G]\n" \
    "         [--gpu-mem 20G]\n"         \
    "         [--restart] [--act-checkpoints auto|on|off|N] [--spill] [--zstd-level 3] [--zstd-threads 0]\n"                          \
    "         [--json-progress | --progress-lines | --quiet]\n"

static int int_arg(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) {
        fprintf(stderr, "qstream quantize: %s '%s': give an integer in %d..%d\n", flag, v, lo, hi);
        return 2;
    }
    *out = (int)x;
    return 0;
}

int qs_cmd_quantize(int argc, char **argv) {
    qs_quantize_opts o = {.method = "rtn", .q = {.bits = 4, .group = 128}, .abits = 16, .progress = 1, .damp = 0.01f,
                          .gptq_block = 128, .device = "cpu", .act_checkpoints = QS_ACT_CKPT_AUTO,
                          .cr = 1, .cr_tokens = 2048, .cr_candidates = 40, .eec = 1, .eec_rank = 4, .eec_alpha = 1.0f,
                          .eec_epochs = 10, .eec_lr = 5e-4f, .eec_form = 0, .blocks_per_group = 0, .smooth = 1, .incremental = 0,
                          .calib = {.source = NULL, .nsamples = 128, .seqlen = 2048, .seed = 0}};
    int gpu_mem_given = 0, cr_given = 0, lr_given = 0, form_given = 0, epochs_given = 0, smooth_given = 0; /* --gpu-mem 0: no budget */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t bytes;
        int bad = 0, tmp = 0;
        if (!strcmp(a, "-o") && v) o.out_dir = v, i++;
        else if (!strcmp(a, "--method") && v) o.method = v, i++;
        else if (!strcmp(a, "--wbits") && v) bad = int_arg(a, v, 2, 8, &o.q.bits), i++;
        else if (!strcmp(a, "--abits") && v) bad = int_arg(a, v, 2, 16, &o.abits), i++;
        else if (!strcmp(a, "--group") && v) bad = int_arg(a, v, -1, 1 << 20, &o.q.group), i++;
        else if (!strcmp(a, "--sym")) o.q.sym = 1;
        else if (!strcmp(a, "--calib") && v) o.calib.source = v, o.calib.source_is_ids = 0, i++;
        else if (!strcmp(a, "--calib-ids") && v) o.calib.source = v, o.calib.source_is_ids = 1, i++;
        else if (!strcmp(a, "--nsamples") && v) bad = int_arg(a, v, 1, 1 << 20, &o.calib.nsamples), i++;
        else if (!strcmp(a, "--seqlen") && v) bad = int_arg(a, v, 2, 1 << 20, &o.calib.seqlen), i++;
        else if (!strcmp(a, "--seed") && v) o.calib.seed = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--damp") && v) o.damp = strtof(v, NULL), i++;
        else if (!strcmp(a, "--act-order")) o.act_order = 1;
        else if ((!strcmp(a, "--cr") || !strcmp(a, "--eec") || !strcmp(a, "--smooth") || !strcmp(a, "--incremental")) &&
                 v && (!strcmp(v, "on") || !strcmp(v, "off"))) {
            if (!strcmp(a, "--cr")) o.cr = !strcmp(v, "on"), cr_given = 1;
            else if (!strcmp(a, "--smooth")) o.smooth = !strcmp(v, "on"), smooth_given = 1;
            else if (!strcmp(a, "--incremental")) o.incremental = !strcmp(v, "on"), smooth_given = 1;
            else o.eec = !strcmp(v, "on");
            i++;
        } else if (!strcmp(a, "--cr-distance") && v && (!strcmp(v, "paper") || !strcmp(v, "code")))
            o.cr_distance = !strcmp(v, "code"), i++;
        else if (!strcmp(a, "--cr-tokens") && v) bad = int_arg(a, v, 2, 1 << 24, &o.cr_tokens), i++;
        else if (!strcmp(a, "--cr-candidates") && v) bad = int_arg(a, v, 1, 512, &o.cr_candidates), i++;
        else if (!strcmp(a, "--static-groups")) o.static_groups = 1;
        else if (!strcmp(a, "--rank") && v) bad = int_arg(a, v, 1, 1024, &o.eec_rank), i++;
        else if (!strcmp(a, "--epochs") && v) bad = int_arg(a, v, 0, 100000, &o.eec_epochs), epochs_given = 1, i++;
        else if (!strcmp(a, "--blocks-per-group") && v) bad = int_arg(a, v, 1, QS_GROUP_MAX, &o.blocks_per_group), i++;
        else if ((!strcmp(a, "--lr") || !strcmp(a, "--lora-alpha")) && v) {
            char *end;
            float x = strtof(v, &end);
            if (*end || end == v || !(x >= 0) || x > 1e3f) {
                fprintf(stderr, "qstream quantize: %s '%s': give a number >= 0\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--lr")) o.eec_lr = x, lr_given = 1;
            else o.eec_alpha = x;
            i++;
        } else if (!strcmp(a, "--eec-form") && v && (!strcmp(v, "paper") || !strcmp(v, "merged")))
            o.eec_form = !strcmp(v, "merged"), form_given = 1, i++;
        else if (!strcmp(a, "--device") && v) o.device = v, i++;
        else if (!strcmp(a, "--threads") && v) bad = int_arg(a, v, 0, 4096, &o.threads), i++;
        else if (!strcmp(a, "--restart")) o.restart = 1;
        else if (!strcmp(a, "--spill")) o.spill = 1;
        else if (!strcmp(a, "--act-checkpoints") && v && (!strcmp(v, "auto") || !strcmp(v, "on") || !strcmp(v, "off")))
            o.act_checkpoints = !strcmp(v, "auto") ? QS_ACT_CKPT_AUTO : !strcmp(v, "on"), i++;
        else if (!strcmp(a, "--act-checkpoints") && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 1 || n > (1 << 20)) {
                fprintf(stderr, "qstream quantize: --act-checkpoints '%s': give auto, on, off or N (after every N-th block or EEC group, "
                                "N >= 1)\n", v);
                bad = 2;
            }
            o.act_checkpoints = (int)n, i++;
        }
        else if (!strcmp(a, "--zstd-level") && v) bad = int_arg(a, v, -7, 22, &o.zstd_level), i++;
        else if (!strcmp(a, "--zstd-threads") && v) bad = int_arg(a, v, 0, 256, &o.zstd_threads), i++;
        else if (!strcmp(a, "--queue-depth") && v) bad = int_arg(a, v, 1, 4096, &tmp), o.reader.queue_depth = (unsigned)tmp, i++;
        else if (!strcmp(a, "--json-progress")) o.progress = 2;
        else if (!strcmp(a, "--progress-lines")) o.progress = 3;
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if ((!strcmp(a, "--host-mem") || !strcmp(a, "--gpu-mem") || !strcmp(a, "--request-size")) && v) {
            if (qs_parse_bytes(v, &bytes)) {
                fprintf(stderr, "qstream quantize: %s: '%s' is not a size (e.g. 24G, 512M)\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--host-mem")) o.host_mem = bytes;
            else if (!strcmp(a, "--gpu-mem")) o.gpu_mem = bytes, gpu_mem_given = 1;
            else o.reader.request_bytes = bytes;
            i++;
        } else if (a[0] != '-' && !o.model_dir) o.model_dir = a;
        else {
            fprintf(stderr, "qstream quantize: unexpected argument '%s'\n" USAGE, a);
            return 2;
        }
        if (bad) return bad;
    }
    if (!o.model_dir || !o.out_dir) {
        fprintf(stderr, "qstream quantize: give MODEL_DIR and -o OUT_DIR\n" USAGE);
        return 2;
    }
    const int dlqat = !strcmp(o.method, "dlqat"), slider = !strcmp(o.method, "slider");
    if ((dlqat || slider) && ((cr_given && o.cr) || form_given)) {
        fprintf(stderr, "qstream quantize: %s: %s is QLLM's (--method qllm), not %s's\n", form_given ? "--eec-form" : "--cr on",
                form_given ? "the error correction's training form" : "channel reassembly", dlqat ? "DL-QAT" : "SliderQuant");
        return 2;
    }
    if (smooth_given && !slider) {
        fprintf(stderr, "qstream quantize: --smooth and --incremental are SliderQuant's (--method slider), not %s's\n",
                o.method);
        return 2;
    }
    if (!slider) o.smooth = 0, o.incremental = 0;
    if (dlqat) o.cr = 0, o.eec_lr = lr_given ? o.eec_lr : QS_DLQAT_LR;
    if (slider) o.cr = 0, o.eec_lr = lr_given ? o.eec_lr : QS_SLIDER_LR, o.eec_epochs = epochs_given ? o.eec_epochs : QS_SLIDER_EPOCHS;
    if ((!strcmp(o.method, "gptq") || !strcmp(o.method, "qllm") || dlqat || slider) && !o.calib.source) {
        fprintf(stderr, "qstream quantize: --method %s needs calibration data: --calib FILE, --calib-ids FILE or --calib random\n", o.method);
        return 2;
    }
    if (!(o.damp > 0 && o.damp < 1)) {
        fprintf(stderr, "qstream quantize: --damp must be in (0, 1)\n");
        return 2;
    }
    if (o.calib.source && !strcmp(o.calib.source, "random")) o.calib.source_is_ids = 0;
    if (strcmp(o.method, "qllm")) o.eec = 0; /* --eec is QLLM's (on by default there) */
    qs_error err = {0};
    if (qs_backend_check(o.device, &err)) {
        fprintf(stderr, "qstream quantize: %s\n", err.msg);
        return 1;
    }
    if (!gpu_mem_given && strcmp(o.method, "rtn")) { /* the GPU's free memory, so that a run fits without flags */
        size_t fr = 0;
        o.gpu_mem = qs_backend_default_gpu_mem(o.device, &fr);
        if (o.gpu_mem && o.progress)
            fprintf(stderr, "qstream: --gpu-mem not given: planning for %.0f MiB (%.0f MiB free on the %s device, less 5%% and 256 MiB)\n",
                    o.gpu_mem / 1048576.0, fr / 1048576.0, o.device);
    }
    qs_quantize_summary s;
    int rc = qs_quantize_run(&o, &s, &err);
    if (rc) {
        fprintf(stderr, "qstream quantize: %s\n", err.msg);
        return 1;
    }
    if (o.progress)
        fprintf(stderr, "quantized %d blocks (%d kept from an earlier run, %d slots of %.1f MB) in %.1f s: %.1f MB -> %.1f MB in %s\n",
                s.n_blocks, s.done_before, s.n_slots, s.slot_bytes / 1e6, s.seconds, s.raw_bytes / 1e6, s.shard_bytes / 1e6, o.out_dir);
    char held[80] = "", beside[80] = "";
    if (s.codes_beside)
        snprintf(beside, sizeof beside, "; %.1f MiB of finished codes came down beside the compute", s.codes_beside / 1048576.0);
    if (s.device_held > s.device_peak)
        snprintf(held, sizeof held, "; its memory pools held at most %.1f MiB", s.device_held / 1048576.0);
    if (o.progress && s.device_peak)
        fprintf(stderr, "%s memory peak %.1f MiB (%zu bytes)%s; %d of %d calibration windows per call%s%s%s%s%s\n", o.device,
                s.device_peak / 1048576.0, s.device_peak, held, s.per, s.windows,
                s.staged ? "; stored weights staged there by the loader" : "", beside,
                s.gptq_h_host ? "; GPTQ's Hessians on the host" : "",
                s.eec_w_host ? "; EEC's float weights on the host while it trains" : "",
                s.gptq_reorder_in_place ? "; GPTQ's act-order batches in the layers themselves" : "");
    if (o.progress && s.act_ckpts)
        fprintf(stderr, "activation checkpoints: %d written in %.1f s (%.1f%% of the run)\n", s.act_ckpts, s.act_ckpt_s,
                s.seconds > 0 ? 100.0 * s.act_ckpt_s / s.seconds : 0.0);
    return 0;
}
