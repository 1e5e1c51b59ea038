/* tools/cmd_dump.c - `qstream dump OUT_DIR --block N --tensor NAME -o FILE(.npy|.safetensors)`:
 * one tensor of a shard as float32; a quantized linear ("mlp.down_proj") is dequantized from its
 * codes, scales and zeros. Read through the same shard reader as resume and verify. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "io/safetensors.h"
#include "quant/qblock.h"
#include "tools/commands.h"

static void *read_entry(const qs_shard *s, const char *name, const qs_shard_entry **e, qs_error *err) {
    *e = qs_shard_find(s, name);
    if (!*e) {
        qs_error_set(err, QS_EFORMAT, "block %d has no tensor '%s'", qs_shard_block(s), name);
        return NULL;
    }
    void *p = malloc((*e)->size ? (*e)->size : 1);
    for (size_t i = 0; p && i < qs_shard_count(s); i++)
        if (qs_shard_at(s, i) == *e && qs_shard_read(s, i, p, err)) {
            free(p);
            return NULL;
        }
    return p;
}

static int write_npy(const char *path, const float *x, int64_t rows, int64_t cols, qs_error *err) {
    char hdr[128];
    int n = cols ? snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }", (long long)rows, (long long)cols)
                 : snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld,), }", (long long)rows);
    size_t total = 10 + (size_t)n + 1, pad = (64 - total % 64) % 64;
    qs_durable_file f;
    QS_FORWARD_IF_ERROR(qs_durable_open(&f, path, err));
    uint8_t magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    uint16_t hl = (uint16_t)(n + pad + 1);
    magic[8] = (uint8_t)hl, magic[9] = (uint8_t)(hl >> 8);
    char tail[80];
    memset(tail, ' ', pad);
    tail[pad] = '\n';
    int rc = qs_durable_write(&f, magic, 10, err);
    if (!rc) rc = qs_durable_write(&f, hdr, (size_t)n, err);
    if (!rc) rc = qs_durable_write(&f, tail, pad + 1, err);
    if (!rc) rc = qs_durable_write(&f, x, sizeof(float) * (size_t)rows * (size_t)(cols ? cols : 1), err);
    if (rc) {
        qs_durable_abort(&f);
        return rc;
    }
    return qs_durable_commit(&f, err);
}

int qs_cmd_dump(int argc, char **argv) {
    const char *dir = NULL, *name = NULL, *out = NULL;
    int block = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--block") && i + 1 < argc) block = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tensor") && i + 1 < argc) name = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "qstream dump: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir || block < 0 || !name || !out) {
        fprintf(stderr, "usage: qstream dump OUT_DIR --block N --tensor NAME -o FILE(.npy|.safetensors)\n");
        return 2;
    }
    qs_error err = {0};
    qs_manifest m;
    char *mp = qs_path_join(dir, "manifest.json");
    int rc = qs_manifest_load(&m, mp, &err);
    free(mp);
    const qs_manifest_block *b = rc ? NULL : qs_manifest_find(&m, block);
    if (!rc && !b) rc = qs_error_set(&err, QS_EUSAGE, "%s: block %d is not recorded", dir, block);
    qs_shard *s = NULL;
    if (!rc) {
        char *p = qs_path_join(dir, b->file);
        rc = qs_shard_open(&s, p, &err);
        free(p);
    }
    float *x = NULL;
    int64_t rows = 0, cols = 0;
    if (!rc) {
        json_error_t je;
        json_t *meta = json_loads(qs_shard_meta_json(s), 0, &je);
        json_t *shape = json_object_get(json_object_get(meta, "shapes"), name);
        if (json_is_array(shape)) { /* a quantized linear: codes, scales, zeros (and g_idx) dequantized */
            qs_qlinear l;
            rc = qs_qlinear_read(&l, s, name, &err);
            if (!rc) {
                rows = l.rows, cols = l.cols;
                x = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
                if (x) qs_qlinear_dequant(&l, x);
                else rc = qs_error_set(&err, -12, "out of memory");
                qs_qlinear_free(&l);
            }
        } else {
            const qs_shard_entry *e;
            x = read_entry(s, name, &e, &err);
            if (!x) rc = err.code ? err.code : -1;
            else if (e->dtype != QS_DTYPE_F32) rc = qs_error_set(&err, QS_EUNSUPPORTED, "'%s' is %s, not a float tensor", name, qs_dtype_name(e->dtype));
            else rows = e->n_dims ? e->shape[0] : 1, cols = e->n_dims > 1 ? e->shape[1] : 0;
        }
        json_decref(meta);
    }
    if (!rc) {
        size_t n = strlen(out);
        if (n > 4 && !strcmp(out + n - 4, ".npy")) {
            rc = write_npy(out, x, rows, cols, &err);
        } else {
            qs_st_writer *w;
            int64_t shp[2] = {rows, cols};
            rc = qs_st_writer_open(&w, out, &err);
            if (!rc) rc = qs_st_writer_declare(w, name, QS_DTYPE_F32, cols ? 2 : 1, shp, &err);
            if (!rc) rc = qs_st_writer_write(w, x, &err);
            if (!rc) rc = qs_st_writer_close(w, &err);
            else qs_st_writer_abort(w);
        }
    }
    free(x);
    qs_shard_close(s);
    if (m.fingerprint_json) qs_manifest_free(&m);
    if (rc) {
        fprintf(stderr, "qstream dump: %s\n", err.msg);
        return 1;
    }
    if (cols) fprintf(stderr, "block %d %s [%lld, %lld] -> %s\n", block, name, (long long)rows, (long long)cols, out);
    else fprintf(stderr, "block %d %s [%lld] -> %s\n", block, name, (long long)rows, out);
    return 0;
}
