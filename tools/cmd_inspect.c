/* tools/cmd_inspect.c - `qstream inspect OUT_DIR [--block N] [--json]`: run settings, a per-block
 * table, and with --block the tensors of one shard. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "tools/commands.h"

/* sum over the values of a metrics object ({"q_proj": x, ...}); -1 when absent */
static double metric_sum(json_t *metrics, const char *key, int *n) {
    json_t *o = json_object_get(metrics, key), *v;
    const char *k;
    double sum = 0;
    *n = 0;
    if (!json_is_object(o)) return -1;
    json_object_foreach(o, k, v) sum += json_number_value(v), (*n)++;
    return sum;
}

static void print_block_row(const qs_manifest_block *b) {
    json_error_t je;
    json_t *m = b->metrics_json ? json_loads(b->metrics_json, 0, &je) : NULL;
    int n_mse, n_loss;
    double mse = metric_sum(m, "mse", &n_mse), loss = metric_sum(m, "gptq_loss", &n_loss);
    double raw = json_number_value(json_object_get(m, "raw_bytes")), comp = json_number_value(json_object_get(m, "compressed_bytes"));
    json_t *eec = json_object_get(m, "eec_loss"); /* QLLM EEC or DL-QAT: the group's loss, first -> last epoch */
    if (!eec) eec = json_object_get(m, "train_loss");
    char eec_s[48] = "-";
    if (json_is_object(eec))
        snprintf(eec_s, sizeof eec_s, "%.4g -> %.4g", json_number_value(json_object_get(eec, "first_epoch")),
                 json_number_value(json_object_get(eec, "last_epoch")));
    printf("%6d %10.2f %10.2f %7.2fx %8.2f %9.2f %12.4g %12.4g %22s\n", b->block, raw / 1e6, b->bytes / 1e6,
           comp > 0 ? raw / comp : 0.0, json_number_value(json_object_get(m, "load_s")),
           json_number_value(json_object_get(m, "compute_s")), n_mse ? mse / n_mse : 0.0, n_loss ? loss : 0.0, eec_s);
    json_decref(m);
}

/* zstd compression by tensor role over every recorded shard (headers only) */
static void print_roles(const char *dir, const qs_manifest *m) {
    const char *roles[16];
    unsigned long long raw[16] = {0}, comp[16] = {0};
    int nr = 0;
    for (size_t i = 0; i < m->n; i++) {
        char *p = qs_path_join(dir, m->blocks[i].file);
        qs_shard *s;
        if (qs_shard_open(&s, p, NULL) == 0) {
            for (size_t k = 0; k < qs_shard_count(s); k++) {
                const qs_shard_entry *e = qs_shard_at(s, k);
                int r = 0;
                while (r < nr && strcmp(roles[r], e->role)) r++;
                if (r == nr && nr < 16) roles[nr++] = strdup(e->role);
                if (r < nr) raw[r] += e->size, comp[r] += e->csize;
            }
            qs_shard_close(s);
        }
        free(p);
    }
    printf("compression by role (raw -> zstd):");
    for (int r = 0; r < nr; r++) {
        printf(" %s %.1f -> %.1f MB (%.2fx)%s", roles[r], raw[r] / 1e6, comp[r] / 1e6, comp[r] ? (double)raw[r] / comp[r] : 0.0,
               r + 1 < nr ? "," : "");
        free((char *)roles[r]);
    }
    printf("\n");
}

int qs_cmd_inspect(int argc, char **argv) {
    const char *dir = NULL;
    int block = -1, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--block") && i + 1 < argc) block = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "qstream inspect: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: qstream inspect OUT_DIR [--block N] [--json]\n");
        return 2;
    }
    char *mp = qs_path_join(dir, "manifest.json");
    qs_manifest m;
    qs_error err = {0};
    if (qs_manifest_load(&m, mp, &err)) {
        fprintf(stderr, "qstream inspect: %s\n", err.msg);
        free(mp);
        return 1;
    }
    free(mp);
    if (block < 0) {
        if (json) {
            printf("{\"n_blocks\": %d, \"fingerprint\": %s, \"blocks\": [", m.n_blocks, m.fingerprint_json);
            for (size_t i = 0; i < m.n; i++)
                printf("%s{\"block\": %d, \"file\": \"%s\", \"bytes\": %llu, \"seconds\": %.3f, \"metrics\": %s}", i ? ", " : "",
                       m.blocks[i].block, m.blocks[i].file, (unsigned long long)m.blocks[i].bytes, m.blocks[i].seconds,
                       m.blocks[i].metrics_json ? m.blocks[i].metrics_json : "null");
            printf("]}\n");
        } else {
            printf("run: %s\nblocks: %zu of %d done\n", m.fingerprint_json, m.n, m.n_blocks);
            printf("%6s %10s %10s %8s %8s %9s %12s %12s %22s\n", "block", "raw MB", "shard MB", "ratio", "load s", "compute s",
                   "weight mse", "gptq loss", "train loss");
            for (size_t i = 0; i < m.n; i++) print_block_row(&m.blocks[i]);
            print_roles(dir, &m);
        }
        qs_manifest_free(&m);
        return 0;
    }
    const qs_manifest_block *b = qs_manifest_find(&m, block);
    if (!b) {
        fprintf(stderr, "qstream inspect: %s: block %d is not recorded\n", dir, block);
        qs_manifest_free(&m);
        return 1;
    }
    char *p = qs_path_join(dir, b->file);
    qs_shard *s;
    int rc = qs_shard_open(&s, p, &err);
    free(p);
    if (rc) {
        fprintf(stderr, "qstream inspect: %s\n", err.msg);
        qs_manifest_free(&m);
        return 1;
    }
    if (json) printf("{\"block\": %d, \"meta\": %s, \"tensors\": [", block, qs_shard_meta_json(s));
    else printf("block %d: %s\n%-32s %-8s %-5s %-16s %12s %12s\n", block, qs_shard_meta_json(s), "tensor", "role", "dtype", "shape", "raw", "compressed");
    for (size_t i = 0; i < qs_shard_count(s); i++) {
        const qs_shard_entry *e = qs_shard_at(s, i);
        char shape[64] = "";
        for (int d = 0, k = 0; d < e->n_dims; d++) k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%lld", d ? "x" : "", (long long)e->shape[d]);
        if (json)
            printf("%s{\"name\": \"%s\", \"role\": \"%s\", \"dtype\": \"%s\", \"shape\": \"%s\", \"size\": %llu, \"csize\": %llu}", i ? ", " : "",
                   e->name, e->role, qs_dtype_name(e->dtype), shape, (unsigned long long)e->size, (unsigned long long)e->csize);
        else
            printf("%-32s %-8s %-5s %-16s %12llu %12llu\n", e->name, e->role, qs_dtype_name(e->dtype), shape, (unsigned long long)e->size,
                   (unsigned long long)e->csize);
    }
    if (json) printf("]}\n");
    qs_shard_close(s);
    qs_manifest_free(&m);
    return 0;
}
