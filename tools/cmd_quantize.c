/* tools/cmd_quantize.c - `qstream quantize MODEL_DIR -o OUT_DIR --method rtn --wbits 4
 *   [--group 128] [--sym] [--host-mem 24G] [--restart] [--zstd-level 3] [--zstd-threads 0]
 *   [--queue-depth 32] [--request-size 1M] [--json-progress] [--quiet]` */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline/quantize.h"
#include "tools/commands.h"

int qs_cmd_quantize(int argc, char **argv) {
    qs_quantize_opts o = {.method = "rtn", .q = {.bits = 4, .group = 128}, .progress = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t bytes;
        if (!strcmp(a, "-o") && v) o.out_dir = v, i++;
        else if (!strcmp(a, "--method") && v) o.method = v, i++;
        else if (!strcmp(a, "--wbits") && v) o.q.bits = atoi(v), i++;
        else if (!strcmp(a, "--group") && v) o.q.group = atoi(v), i++;
        else if (!strcmp(a, "--sym")) o.q.sym = 1;
        else if (!strcmp(a, "--restart")) o.restart = 1;
        else if (!strcmp(a, "--zstd-level") && v) o.zstd_level = atoi(v), i++;
        else if (!strcmp(a, "--zstd-threads") && v) o.zstd_threads = atoi(v), i++;
        else if (!strcmp(a, "--queue-depth") && v) o.reader.queue_depth = (unsigned)atoi(v), i++;
        else if (!strcmp(a, "--json-progress")) o.progress = 2;
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else if ((!strcmp(a, "--host-mem") || !strcmp(a, "--request-size")) && v) {
            if (qs_parse_bytes(v, &bytes)) {
                fprintf(stderr, "qstream quantize: %s: '%s' is not a size (e.g. 24G, 512M)\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--host-mem")) o.host_mem = bytes;
            else o.reader.request_bytes = bytes;
            i++;
        } else if (a[0] != '-' && !o.model_dir) o.model_dir = a;
        else {
            fprintf(stderr, "qstream quantize: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!o.model_dir || !o.out_dir) {
        fprintf(stderr, "usage: qstream quantize MODEL_DIR -o OUT_DIR --method rtn --wbits 4 [--group 128] [--sym] [--host-mem 24G] [--restart]\n");
        return 2;
    }
    qs_error err = {0};
    qs_quantize_summary s;
    int rc = qs_quantize_run(&o, &s, &err);
    if (rc) {
        fprintf(stderr, "qstream quantize: %s\n", err.msg);
        return 1;
    }
    if (o.progress)
        fprintf(stderr, "quantized %d blocks (%d kept from an earlier run, %d slots of %.1f MB) in %.1f s: %.1f MB -> %.1f MB in %s\n",
                s.n_blocks, s.done_before, s.n_slots, s.slot_bytes / 1e6, s.seconds, s.raw_bytes / 1e6, s.shard_bytes / 1e6, o.out_dir);
    return 0;
}
