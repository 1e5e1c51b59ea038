/* checkpoint/shard_write.c - writes a block shard; format in checkpoint/shard.h. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "base/fileio.h"
#include "checkpoint/shard.h"
#include "checkpoint/shuffle.h"

typedef struct frame {
    void *buf;     /* compressed bytes */
    size_t csize, size;
    uint64_t xxh3; /* of the raw bytes */
    int shuffle;
    uint64_t offset;
} frame;

static int is_float(qs_dtype t) { return t == QS_DTYPE_F32 || t == QS_DTYPE_F16 || t == QS_DTYPE_BF16 || t == QS_DTYPE_F64; }

static uint64_t align_up(uint64_t x) { return (x + QS_SHARD_ALIGN - 1) & ~(uint64_t)(QS_SHARD_ALIGN - 1); }

/* the header JSON for the current frame offsets (caller frees) */
static char *header_text(int block, json_t *meta, const qs_shard_tensor *ts, const frame *fr, size_t n) {
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "format", json_integer(1));
    json_object_set_new(root, "block", json_integer(block));
    json_object_set(root, "meta", meta);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_object(), *shape = json_array();
        char hex[17];
        qs_hash_to_hex(fr[i].xxh3, hex);
        for (int d = 0; d < ts[i].n_dims; d++) json_array_append_new(shape, json_integer(ts[i].shape[d]));
        json_object_set_new(t, "name", json_string(ts[i].name));
        json_object_set_new(t, "role", json_string(ts[i].role ? ts[i].role : "tensor"));
        json_object_set_new(t, "dtype", json_string(qs_dtype_name(ts[i].dtype)));
        json_object_set_new(t, "shape", shape);
        json_object_set_new(t, "offset", json_integer((json_int_t)fr[i].offset));
        json_object_set_new(t, "csize", json_integer((json_int_t)fr[i].csize));
        json_object_set_new(t, "size", json_integer((json_int_t)fr[i].size));
        json_object_set_new(t, "shuffle", json_integer(fr[i].shuffle));
        json_object_set_new(t, "xxh3", json_string(hex));
        json_array_append_new(arr, t);
    }
    json_object_set_new(root, "tensors", arr);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

static int write_hashed(qs_durable_file *f, XXH3_state_t *st, const void *p, size_t n, qs_error *err) {
    XXH3_64bits_update(st, p, n);
    return qs_durable_write(f, p, n, err);
}

int qs_shard_write(const char *path, int block, const char *meta_json, const qs_shard_tensor *ts,
                   size_t n, const qs_shard_opts *opts, qs_shard_write_info *info, qs_error *err) {
    json_t *meta;
    if (meta_json) {
        json_error_t je;
        meta = json_loads(meta_json, 0, &je);
        QS_RETURN_ERROR_IF(!meta || !json_is_object(meta), -EINVAL, "%s: shard meta is not a JSON object", path);
    } else {
        meta = json_object();
    }
    frame *fr = calloc(n ? n : 1, sizeof *fr);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    XXH3_state_t *st = XXH3_createState();
    char *hdr = NULL;
    void *tmp = NULL;
    size_t tmp_cap = 0;
    int rc = 0;
    qs_durable_file f = {0};
    int f_open = 0;
    if (!fr || !cctx || !st) {
        rc = qs_error_set(err, -ENOMEM, "%s: out of memory", path);
        goto done;
    }
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, opts && opts->zstd_level ? opts->zstd_level : 3);
    if (opts && opts->zstd_threads > 0) ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, opts->zstd_threads);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0); /* we hash the raw bytes ourselves */
    uint64_t raw_total = 0, comp_total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t elems = 1;
        for (int d = 0; d < ts[i].n_dims; d++) elems *= (uint64_t)ts[i].shape[d];
        size_t size = (size_t)(elems * qs_dtype_size(ts[i].dtype));
        fr[i].size = size;
        fr[i].xxh3 = XXH3_64bits(ts[i].data, size);
        fr[i].shuffle = is_float(ts[i].dtype) && qs_dtype_size(ts[i].dtype) > 1;
        const void *src = ts[i].data;
        if (fr[i].shuffle) {
            if (size > tmp_cap) {
                free(tmp);
                tmp = malloc(size);
                tmp_cap = tmp ? size : 0;
                if (!tmp) {
                    rc = qs_error_set(err, -ENOMEM, "%s: out of memory", path);
                    goto done;
                }
            }
            qs_shuffle(ts[i].data, tmp, size, qs_dtype_size(ts[i].dtype));
            src = tmp;
        }
        size_t bound = ZSTD_compressBound(size);
        fr[i].buf = malloc(bound ? bound : 1);
        if (!fr[i].buf) {
            rc = qs_error_set(err, -ENOMEM, "%s: out of memory", path);
            goto done;
        }
        size_t c = ZSTD_compress2(cctx, fr[i].buf, bound, src, size);
        if (ZSTD_isError(c)) {
            rc = qs_error_set(err, -EIO, "%s: tensor '%s': zstd: %s", path, ts[i].name, ZSTD_getErrorName(c));
            goto done;
        }
        fr[i].csize = c;
        raw_total += size;
        comp_total += c;
    }
    /* frame offsets depend on the header length, which depends on the offsets: iterate */
    uint64_t data_start = align_up(12), prev = 0;
    for (int iter = 0; iter < 8 && data_start != prev; iter++) {
        prev = data_start;
        uint64_t off = data_start;
        for (size_t i = 0; i < n; i++) {
            fr[i].offset = off;
            off = align_up(off + fr[i].csize);
        }
        free(hdr);
        hdr = header_text(block, meta, ts, fr, n);
        if (!hdr) {
            rc = qs_error_set(err, -ENOMEM, "%s: out of memory", path);
            goto done;
        }
        data_start = align_up(12 + strlen(hdr));
    }
    rc = qs_durable_open(&f, path, err);
    if (rc) goto done;
    f_open = 1;
    XXH3_64bits_reset(st);
    uint32_t hlen = (uint32_t)strlen(hdr);
    uint8_t head[12];
    memcpy(head, QS_SHARD_MAGIC, 8);
    for (int b = 0; b < 4; b++) head[8 + b] = (uint8_t)(hlen >> (8 * b));
    static const uint8_t zeros[QS_SHARD_ALIGN];
    uint64_t pos = 0;
    rc = write_hashed(&f, st, head, 12, err);
    if (!rc) rc = write_hashed(&f, st, hdr, hlen, err);
    pos = 12 + hlen;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = write_hashed(&f, st, zeros, (size_t)(fr[i].offset - pos), err);
        if (!rc) rc = write_hashed(&f, st, fr[i].buf, fr[i].csize, err);
        pos = fr[i].offset + fr[i].csize;
    }
    if (rc) goto done;
    uint64_t body_hash = XXH3_64bits_digest(st);
    uint8_t foot[16];
    for (int b = 0; b < 8; b++) foot[b] = (uint8_t)(body_hash >> (8 * b));
    memcpy(foot + 8, QS_SHARD_END_MAGIC, 8);
    rc = write_hashed(&f, st, foot, 16, err);
    if (rc) goto done;
    if (info) {
        info->file_bytes = pos + 16;
        info->file_xxh3 = XXH3_64bits_digest(st);
        info->raw_bytes = raw_total;
        info->compressed_bytes = comp_total;
    }
    f_open = 0;
    rc = qs_durable_commit(&f, err);
done:
    if (f_open) qs_durable_abort(&f);
    for (size_t i = 0; fr && i < n; i++) free(fr[i].buf);
    free(fr);
    free(tmp);
    free(hdr);
    json_decref(meta);
    ZSTD_freeCCtx(cctx);
    XXH3_freeState(st);
    return rc;
}
