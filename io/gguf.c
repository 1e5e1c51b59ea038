/* io/gguf.c - GGUF v2/v3 reader: open (mmap) or borrow an image, validate the header, the
 * metadata key/value table and the tensor table; tensor lookup and dequantizing reads.
 * Every length is checked against the bytes left before it is used. Metadata access is in
 * io/gguf_meta.c. */
#include "io/gguf.h"
#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/gguf_dequant.h"
#include "io/gguf_internal.h"

#define MAX_ARRAY_DEPTH 3        /* arrays of arrays of arrays; deeper nesting is refused */
#define MAX_ENTRIES (1ull << 24) /* keys or tensors: far above any real model */
#define MAX_ALIGNMENT (1u << 20)

size_t qs_gguf_scalar_size(uint32_t t) {
    switch (t) {
    case QS_GGUF_U8: case QS_GGUF_I8: case QS_GGUF_BOOL: return 1;
    case QS_GGUF_U16: case QS_GGUF_I16: return 2;
    case QS_GGUF_U32: case QS_GGUF_I32: case QS_GGUF_F32: return 4;
    case QS_GGUF_U64: case QS_GGUF_I64: case QS_GGUF_F64: return 8;
    default: return 0;
    }
}

int qs_gguf_skip_value(qs_gguf_cur *c, uint32_t t, int depth) {
    if (t == QS_GGUF_STRING) {
        const char *s;
        size_t n;
        return qs_gguf_str(c, &s, &n);
    }
    if (t == QS_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (depth >= MAX_ARRAY_DEPTH || qs_gguf_u32(c, &et) || qs_gguf_u64(c, &n)) return -1;
        size_t es = qs_gguf_scalar_size(et);
        if (es) {
            const uint8_t *b;
            if (n > (uint64_t)(c->end - c->p) / es) return -1;
            return qs_gguf_take(c, (size_t)(n * es), &b);
        }
        if (et != QS_GGUF_STRING && et != QS_GGUF_ARRAY) return -1;
        if (n > (uint64_t)(c->end - c->p) / 8) return -1; /* each element needs >= 8 bytes */
        for (uint64_t i = 0; i < n; i++)
            if (qs_gguf_skip_value(c, et, depth + 1)) return -1;
        return 0;
    }
    size_t es = qs_gguf_scalar_size(t);
    const uint8_t *b;
    return es ? qs_gguf_take(c, es, &b) : -1;
}

void qs_gguf_free(qs_gguf *g) {
    if (!g) return;
    if (g->mapped) munmap((void *)g->data, g->size);
    if (g->t)
        for (uint64_t i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->t);
    free(g->kvs);
    free(g->name);
    free(g);
}

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)

static int parse_header(qs_gguf *g, qs_gguf_cur *c, qs_error *err) {
    const uint8_t *magic;
    if (qs_gguf_take(c, 4, &magic) || memcmp(magic, "GGUF", 4)) return BAD("%s: not a GGUF file (bad magic)", g->name);
    if (qs_gguf_u32(c, &g->version)) return BAD("%s: truncated header", g->name);
    uint32_t v = g->version, swapped = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
    if (swapped == 2 || swapped == 3)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: big-endian GGUF files are not supported", g->name);
    if (v != 2 && v != 3)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3)", g->name, v);
    if (qs_gguf_u64(c, &g->n_t) || qs_gguf_u64(c, &g->n_kv)) return BAD("%s: truncated header", g->name);
    /* a key/value needs >= 13 bytes (key length, type, one byte), a tensor info >= 32 */
    uint64_t left = (uint64_t)(c->end - c->p);
    if (g->n_kv > left / 13 || g->n_t > left / 32 || g->n_kv > MAX_ENTRIES || g->n_t > MAX_ENTRIES)
        return BAD("%s: %llu keys / %llu tensors cannot fit a %zu-byte file", g->name, (unsigned long long)g->n_kv,
                   (unsigned long long)g->n_t, g->size);
    g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs);
    g->t = calloc(g->n_t ? g->n_t : 1, sizeof *g->t);
    if (!g->kvs || !g->t) return qs_error_set(err, -ENOMEM, "%s: out of memory", g->name);
    return 0;
}

static int parse_kvs(qs_gguf *g, qs_gguf_cur *c, qs_error *err) {
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        qs_gguf_kv *k = &g->kvs[i];
        if (qs_gguf_str(c, &k->key, &k->key_len) || qs_gguf_u32(c, &k->type))
            return BAD("%s: metadata entry %llu is truncated", g->name, (unsigned long long)i);
        int kl = k->key_len > 200 ? 200 : (int)k->key_len; /* for messages */
        if (k->type > QS_GGUF_F64) return BAD("%s: key '%.*s': unknown value type %u", g->name, kl, k->key, k->type);
        for (uint64_t j = 0; j < i; j++)
            if (g->kvs[j].key_len == k->key_len && !memcmp(g->kvs[j].key, k->key, k->key_len))
                return BAD("%s: key '%.*s' appears twice", g->name, kl, k->key);
        k->val = c->p;
        if (k->type == QS_GGUF_ARRAY) {
            qs_gguf_cur a = *c;
            if (qs_gguf_u32(&a, &k->arr_type) || qs_gguf_u64(&a, &k->arr_n))
                return BAD("%s: key '%.*s': truncated array", g->name, kl, k->key);
            if (k->arr_type > QS_GGUF_F64)
                return BAD("%s: key '%.*s': unknown array element type %u", g->name, kl, k->key, k->arr_type);
            k->val = a.p;
        }
        if (qs_gguf_skip_value(c, k->type, 0))
            return BAD("%s: key '%.*s': value extends past the end of the file%s", g->name, kl, k->key,
                       k->type == QS_GGUF_ARRAY ? " (or arrays nested too deep)" : "");
        if (k->key_len == 17 && !memcmp(k->key, "general.alignment", 17)) {
            if (k->type != QS_GGUF_U32) return BAD("%s: general.alignment must be a u32", g->name);
            uint32_t a;
            memcpy(&a, k->val, 4);
            if (a == 0 || (a & (a - 1)) || a > MAX_ALIGNMENT)
                return BAD("%s: general.alignment %u is not a power of two up to %u", g->name, a, MAX_ALIGNMENT);
            g->alignment = a;
        }
    }
    return 0;
}

static int parse_tensor_infos(qs_gguf *g, qs_gguf_cur *c, qs_error *err) {
    for (uint64_t i = 0; i < g->n_t; i++) {
        qs_gguf_tensor *t = &g->t[i];
        const char *name;
        size_t nlen;
        uint32_t nd;
        if (qs_gguf_str(c, &name, &nlen)) return BAD("%s: tensor entry %llu is truncated", g->name, (unsigned long long)i);
        if (nlen == 0 || nlen > 1024 || memchr(name, 0, nlen))
            return BAD("%s: tensor entry %llu has a bad name (%zu bytes)", g->name, (unsigned long long)i, nlen);
        if (!(t->name = strndup(name, nlen))) return qs_error_set(err, -ENOMEM, "%s: out of memory", g->name);
        if (qs_gguf_u32(c, &nd)) return BAD("%s: tensor '%s': truncated", g->name, t->name);
        if (nd < 1 || nd > 4) return BAD("%s: tensor '%s': %u dimensions (1 to 4)", g->name, t->name, nd);
        t->n_dims = (int)nd;
        t->n_elems = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (qs_gguf_u64(c, &t->ne[d])) return BAD("%s: tensor '%s': truncated", g->name, t->name);
            /* bounding the product by 2^50 keeps every byte count below 2^63 */
            if (t->ne[d] == 0 || t->ne[d] > (1ull << 50) || t->n_elems > (1ull << 50) / t->ne[d])
                return BAD("%s: tensor '%s': dimension %u of %llu is zero or makes the tensor too large", g->name, t->name,
                           d, (unsigned long long)t->ne[d]);
            t->n_elems *= t->ne[d];
        }
        for (uint32_t d = nd; d < 4; d++) t->ne[d] = 1;
        if (qs_gguf_u32(c, &t->type) || qs_gguf_u64(c, &t->offset)) return BAD("%s: tensor '%s': truncated", g->name, t->name);
        size_t bs = qs_ggml_block_size(t->type), bb = qs_ggml_block_bytes(t->type);
        if (!bs)
            return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': unsupported ggml type %u", g->name, t->name, t->type);
        if (t->ne[0] % bs)
            return BAD("%s: tensor '%s': row of %llu is not a multiple of the block size %zu", g->name, t->name,
                       (unsigned long long)t->ne[0], bs);
        t->nbytes = t->n_elems / bs * bb;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->t[j].name, t->name)) return BAD("%s: tensor '%s' appears twice", g->name, t->name);
    }
    return 0;
}

/* tensor offsets are relative to the data section, which starts at the next multiple of the
 * alignment after the tensor infos; make them absolute after checking them */
static int place_tensors(qs_gguf *g, uint64_t info_end, qs_error *err) {
    uint64_t data_start = (info_end + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_t; i++) {
        qs_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment)
            return BAD("%s: tensor '%s': offset %llu is not aligned to %llu", g->name, t->name, (unsigned long long)t->offset,
                       (unsigned long long)g->alignment);
        if (data_start > g->size || t->offset > g->size - data_start || t->nbytes > g->size - data_start - t->offset)
            return BAD("%s: tensor '%s': data extends past the end of the file", g->name, t->name);
        t->offset += data_start;
    }
    return 0;
}

static int parse(qs_gguf *g, qs_error *err) {
    qs_gguf_cur c = {g->data, g->data + g->size};
    QS_FORWARD_IF_ERROR(parse_header(g, &c, err));
    QS_FORWARD_IF_ERROR(parse_kvs(g, &c, err));
    QS_FORWARD_IF_ERROR(parse_tensor_infos(g, &c, err));
    return place_tensors(g, (uint64_t)(c.p - g->data), err);
}

/* takes g; on error frees it and leaves *out NULL */
static int finish(qs_gguf **out, qs_gguf *g, qs_error *err) {
    if (!g->name) {
        qs_gguf_free(g);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    int rc = parse(g, err);
    if (rc) {
        qs_gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int qs_gguf_open_memory(qs_gguf **out, const void *data, size_t size, const char *name, qs_error *err) {
    *out = NULL;
    qs_gguf *g = calloc(1, sizeof *g);
    if (!g) return qs_error_set(err, -ENOMEM, "out of memory");
    g->name = strdup(name ? name : "(memory)");
    g->data = data;
    g->size = size;
    return finish(out, g, err);
}

int qs_gguf_open(qs_gguf **out, const char *path, qs_error *err) {
    *out = NULL;
    uint64_t size;
    int fd = qs_file_open_read(path, 0, &size, err);
    if (fd < 0) return fd;
    if (size < 24) {
        close(fd);
        return qs_error_set(err, QS_EFORMAT, "%s: too short for a GGUF file (%llu bytes)", path, (unsigned long long)size);
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return qs_error_errno(err, e, "%s: cannot map", path);
    qs_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(p, (size_t)size);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    g->name = strdup(path);
    g->data = p;
    g->size = (size_t)size;
    g->mapped = 1;
    return finish(out, g, err);
}

const char *qs_gguf_name(const qs_gguf *g) { return g->name; }
uint32_t qs_gguf_version(const qs_gguf *g) { return g->version; }
uint64_t qs_gguf_alignment(const qs_gguf *g) { return g->alignment; }

size_t qs_gguf_tensor_count(const qs_gguf *g) { return (size_t)g->n_t; }
const qs_gguf_tensor *qs_gguf_tensor_at(const qs_gguf *g, size_t i) { return i < g->n_t ? &g->t[i] : NULL; }
const qs_gguf_tensor *qs_gguf_tensor_find(const qs_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}

int qs_gguf_read_f32(const qs_gguf *g, const qs_gguf_tensor *t, float *dst, qs_error *err) {
    if (qs_ggml_dequantize(t->type, g->data + t->offset, dst, t->n_elems))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': cannot dequantize ggml type %u", g->name, t->name, t->type);
    if (g->mapped) {
        /* streaming a model tensor by tensor: drop the pages just read from this process so the
         * resident set holds one tensor, not the whole file (they stay in the page cache) */
        long pg = sysconf(_SC_PAGESIZE);
        uintptr_t a = (uintptr_t)(g->data + t->offset), b = a + t->nbytes;
        a = (a + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
        b = b / (uintptr_t)pg * (uintptr_t)pg;
        if (pg > 0 && b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    }
    return 0;
}
