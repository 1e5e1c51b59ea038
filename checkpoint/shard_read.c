/* checkpoint/shard_read.c - opens, reads and verifies block shards; format in checkpoint/shard.h.
 * The same code serves resume, `qstream verify` and `qstream inspect`, so the checker checks
 * what the program really reads. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "base/fileio.h"
#include "checkpoint/shard.h"
#include "checkpoint/shuffle.h"

struct qs_shard {
    char *name;            /* path, for messages */
    int fd;                /* -1 for a memory image */
    const uint8_t *mem;
    uint64_t size;
    int block;
    char *meta;
    size_t n;
    qs_shard_entry *e;
    uint64_t footer_hash;
};

static int src_read(const qs_shard *s, uint64_t off, void *dst, size_t len, qs_error *err) {
    if (off > s->size || len > s->size - off)
        return qs_error_set(err, QS_EFORMAT, "%s: read past the end of the file", s->name);
    if (s->fd < 0) {
        memcpy(dst, s->mem + off, len);
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(s->fd, (char *)dst + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return qs_error_errno(err, errno, "%s: read failed", s->name);
        if (r == 0) return qs_error_set(err, QS_EFORMAT, "%s: file shrank while reading", s->name);
        done += (size_t)r;
    }
    return 0;
}

void qs_shard_close(qs_shard *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    for (size_t i = 0; i < s->n; i++) {
        free(s->e[i].name);
        free(s->e[i].role);
    }
    free(s->e);
    free(s->meta);
    free(s->name);
    free(s);
}

static int cmp_offset(const void *a, const void *b) {
    const qs_shard_entry *x = *(const qs_shard_entry *const *)a, *y = *(const qs_shard_entry *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

#define BAD(...) (rc = qs_error_set(err, QS_EFORMAT, __VA_ARGS__))

static int parse_entry(qs_shard *s, json_t *t, size_t i, uint64_t data_min, qs_error *err) {
    int rc = 0;
    qs_shard_entry *e = &s->e[i];
    json_t *name = json_object_get(t, "name"), *role = json_object_get(t, "role"),
           *dtype = json_object_get(t, "dtype"), *shape = json_object_get(t, "shape"),
           *off = json_object_get(t, "offset"), *cs = json_object_get(t, "csize"),
           *sz = json_object_get(t, "size"), *sh = json_object_get(t, "shuffle"),
           *hx = json_object_get(t, "xxh3");
    if (!json_is_object(t) || !json_is_string(name) || !json_is_string(role) || !json_is_string(dtype) ||
        !json_is_array(shape) || !json_is_integer(off) || !json_is_integer(cs) || !json_is_integer(sz) ||
        !json_is_integer(sh) || !json_is_string(hx))
        return BAD("%s: block %d: tensor entry %zu is missing a field or has a wrong type", s->name, s->block, i);
    e->name = strdup(json_string_value(name));
    e->role = strdup(json_string_value(role));
    if (!e->name || !e->role) return qs_error_set(err, -ENOMEM, "out of memory");
    int dt = qs_dtype_from_name(json_string_value(dtype));
    if (dt < 0) return BAD("%s: block %d: tensor '%s': unknown dtype", s->name, s->block, e->name);
    e->dtype = (qs_dtype)dt;
    size_t nd = json_array_size(shape);
    if (nd > QS_SHARD_MAX_DIMS) return BAD("%s: block %d: tensor '%s': %zu dimensions", s->name, s->block, e->name, nd);
    e->n_dims = (int)nd;
    uint64_t elems = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *v = json_array_get(shape, d);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > ((json_int_t)1 << 40))
            return BAD("%s: block %d: tensor '%s': bad shape", s->name, s->block, e->name);
        e->shape[d] = json_integer_value(v);
        if (e->shape[d] && elems > (UINT64_MAX >> 4) / (uint64_t)e->shape[d])
            return BAD("%s: block %d: tensor '%s': shape overflows", s->name, s->block, e->name);
        elems *= (uint64_t)e->shape[d];
    }
    if (json_integer_value(off) < 0 || json_integer_value(cs) < 0 || json_integer_value(sz) < 0)
        return BAD("%s: block %d: tensor '%s': negative offset or size", s->name, s->block, e->name);
    e->offset = (uint64_t)json_integer_value(off);
    e->csize = (uint64_t)json_integer_value(cs);
    e->size = (uint64_t)json_integer_value(sz);
    e->shuffle = (int)json_integer_value(sh);
    if (e->size != elems * qs_dtype_size(e->dtype))
        return BAD("%s: block %d: tensor '%s': size %llu does not match its shape", s->name, s->block, e->name,
                   (unsigned long long)e->size);
    if (e->shuffle != 0 && e->shuffle != 1)
        return BAD("%s: block %d: tensor '%s': bad shuffle flag", s->name, s->block, e->name);
    if (e->offset % QS_SHARD_ALIGN || e->offset < data_min || e->offset > s->size - 16 ||
        e->csize > s->size - 16 - e->offset)
        return BAD("%s: block %d: tensor '%s': frame [%llu, +%llu) is misaligned or outside the file (%llu bytes)",
                   s->name, s->block, e->name, (unsigned long long)e->offset, (unsigned long long)e->csize,
                   (unsigned long long)s->size);
    if (qs_hash_from_hex(json_string_value(hx), &e->xxh3))
        return BAD("%s: block %d: tensor '%s': bad xxh3 text", s->name, s->block, e->name);
    return 0;
}

static int parse(qs_shard *s, qs_error *err) {
    int rc = 0;
    uint8_t head[12], foot[16];
    if (s->size < 12 + 16) return BAD("%s: %llu bytes is too short for a shard (truncated?)", s->name, (unsigned long long)s->size);
    if ((rc = src_read(s, 0, head, 12, err)) || (rc = src_read(s, s->size - 16, foot, 16, err))) return rc;
    if (memcmp(head, QS_SHARD_MAGIC, 8)) return BAD("%s: not a qstream shard (bad magic)", s->name);
    if (memcmp(foot + 8, QS_SHARD_END_MAGIC, 8))
        return BAD("%s: footer magic missing (truncated or damaged)", s->name);
    s->footer_hash = 0;
    for (int b = 7; b >= 0; b--) s->footer_hash = s->footer_hash << 8 | foot[b];
    uint32_t hlen = (uint32_t)head[8] | (uint32_t)head[9] << 8 | (uint32_t)head[10] << 16 | (uint32_t)head[11] << 24;
    if (hlen > QS_SHARD_MAX_HEADER || hlen > s->size - 12 - 16)
        return BAD("%s: header length %u does not fit the file (%llu bytes)", s->name, hlen, (unsigned long long)s->size);
    char *text = malloc((size_t)hlen + 1);
    if (!text) return qs_error_set(err, -ENOMEM, "out of memory");
    if ((rc = src_read(s, 12, text, hlen, err))) {
        free(text);
        return rc;
    }
    text[hlen] = 0;
    json_error_t je;
    json_t *root = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return BAD("%s: header is not a JSON object (%s)", s->name, root ? "wrong type" : je.text);
    }
    json_t *fmt = json_object_get(root, "format"), *blk = json_object_get(root, "block"),
           *meta = json_object_get(root, "meta"), *tensors = json_object_get(root, "tensors");
    if (!json_is_integer(fmt) || json_integer_value(fmt) != 1) BAD("%s: unsupported shard format version", s->name);
    else if (!json_is_integer(blk) || json_integer_value(blk) < 0 || json_integer_value(blk) > 1000000)
        BAD("%s: header has no valid block index", s->name);
    else if (!json_is_object(meta) || !json_is_array(tensors)) BAD("%s: header lacks meta or tensors", s->name);
    if (rc) {
        json_decref(root);
        return rc;
    }
    s->block = (int)json_integer_value(blk);
    s->meta = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
    s->n = json_array_size(tensors);
    s->e = calloc(s->n ? s->n : 1, sizeof *s->e);
    if (!s->meta || !s->e) rc = qs_error_set(err, -ENOMEM, "out of memory");
    uint64_t data_min = 12 + (uint64_t)hlen;
    for (size_t i = 0; i < s->n && !rc; i++) rc = parse_entry(s, json_array_get(tensors, i), i, data_min, err);
    json_decref(root);
    if (rc) return rc;
    /* frames must not overlap; names must be unique */
    qs_shard_entry **by_off = malloc(sizeof(*by_off) * (s->n ? s->n : 1));
    if (!by_off) return qs_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n; i++) by_off[i] = &s->e[i];
    qsort(by_off, s->n, sizeof *by_off, cmp_offset);
    for (size_t i = 1; i < s->n && !rc; i++)
        if (by_off[i - 1]->offset + by_off[i - 1]->csize > by_off[i]->offset)
            BAD("%s: block %d: frames of '%s' and '%s' overlap", s->name, s->block, by_off[i - 1]->name, by_off[i]->name);
    free(by_off);
    for (size_t i = 0; i < s->n && !rc; i++)
        for (size_t j = i + 1; j < s->n && !rc; j++)
            if (!strcmp(s->e[i].name, s->e[j].name)) BAD("%s: block %d: tensor '%s' appears twice", s->name, s->block, s->e[i].name);
    return rc;
}

static int finish_open(qs_shard **out, qs_shard *s, qs_error *err) {
    int rc = parse(s, err);
    if (rc) {
        qs_shard_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int qs_shard_open(qs_shard **out, const char *path, qs_error *err) {
    *out = NULL;
    qs_shard *s = calloc(1, sizeof *s);
    if (!s) return qs_error_set(err, -ENOMEM, "out of memory");
    s->fd = -1;
    s->name = strdup(path);
    int fd = qs_file_open_read(path, 0, &s->size, err);
    if (fd < 0) {
        qs_shard_close(s);
        return fd;
    }
    s->fd = fd;
    return finish_open(out, s, err);
}

int qs_shard_open_memory(qs_shard **out, const void *data, size_t size, const char *name, qs_error *err) {
    *out = NULL;
    qs_shard *s = calloc(1, sizeof *s);
    if (!s) return qs_error_set(err, -ENOMEM, "out of memory");
    s->fd = -1;
    s->mem = data;
    s->size = size;
    s->name = strdup(name ? name : "(memory)");
    return finish_open(out, s, err);
}

int qs_shard_block(const qs_shard *s) { return s->block; }
const char *qs_shard_meta_json(const qs_shard *s) { return s->meta; }
size_t qs_shard_count(const qs_shard *s) { return s->n; }
const qs_shard_entry *qs_shard_at(const qs_shard *s, size_t i) { return i < s->n ? &s->e[i] : NULL; }
const qs_shard_entry *qs_shard_find(const qs_shard *s, const char *name) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->e[i].name, name)) return &s->e[i];
    return NULL;
}

int qs_shard_read(const qs_shard *s, size_t i, void *dst, qs_error *err) {
    const qs_shard_entry *e = &s->e[i];
    void *comp = malloc(e->csize ? e->csize : 1);
    void *raw = e->shuffle ? malloc(e->size ? e->size : 1) : dst;
    int rc = 0;
    if (!comp || !raw) {
        rc = qs_error_set(err, -ENOMEM, "%s: out of memory reading tensor '%s'", s->name, e->name);
        goto done;
    }
    if ((rc = src_read(s, e->offset, comp, e->csize, err))) goto done;
    unsigned long long content = ZSTD_getFrameContentSize(comp, e->csize);
    if (content != e->size) {
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: block %d: tensor '%s': damaged frame (bad zstd header)", s->name,
                          s->block, e->name);
        goto done;
    }
    size_t got = ZSTD_decompress(raw, e->size, comp, e->csize);
    if (ZSTD_isError(got) || got != e->size) {
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: block %d: tensor '%s': damaged frame (%s)", s->name, s->block,
                          e->name, ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
        goto done;
    }
    if (e->shuffle) qs_unshuffle(raw, dst, e->size, qs_dtype_size(e->dtype));
    if (XXH3_64bits(dst, e->size) != e->xxh3)
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: block %d: tensor '%s': checksum mismatch", s->name, s->block, e->name);
done:
    free(comp);
    if (e->shuffle) free(raw);
    return rc;
}

uint64_t qs_shard_file_xxh3(const qs_shard *s) {
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    uint8_t buf[1 << 16];
    for (uint64_t off = 0; off < s->size;) {
        size_t n = s->size - off < sizeof buf ? (size_t)(s->size - off) : sizeof buf;
        if (src_read(s, off, buf, n, NULL)) break;
        XXH3_64bits_update(st, buf, n);
        off += n;
    }
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

int qs_shard_verify(const qs_shard *s, qs_error *err) {
    XXH3_state_t *st = XXH3_createState();
    if (!st) return qs_error_set(err, -ENOMEM, "out of memory");
    XXH3_64bits_reset(st);
    uint8_t *buf = malloc(1 << 20);
    int rc = buf ? 0 : qs_error_set(err, -ENOMEM, "out of memory");
    uint64_t body = s->size - 16;
    for (uint64_t off = 0; off < body && !rc;) {
        size_t n = body - off < (1u << 20) ? (size_t)(body - off) : (1u << 20);
        rc = src_read(s, off, buf, n, err);
        XXH3_64bits_update(st, buf, n);
        off += n;
    }
    free(buf);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (rc) return rc;
    /* name the damaged tensor when one is, else the file as a whole */
    size_t max = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].size > max) max = (size_t)s->e[i].size;
    void *dst = malloc(max ? max : 1);
    if (!dst) return qs_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n && !rc; i++) rc = qs_shard_read(s, i, dst, err);
    free(dst);
    if (!rc && h != s->footer_hash)
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: block %d: file checksum mismatch (header or padding damaged)",
                          s->name, s->block);
    return rc;
}
