/* io/gguf.c - GGUF v2/v3 reader (the file is mapped read-only; every length is checked against
 * its size before use). */
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/gguf_dequant.h"

typedef struct kv {
    const char *key;
    size_t key_len;
    uint32_t type;
    uint32_t arr_type; /* for arrays */
    uint64_t arr_n;
    const uint8_t *val; /* value bytes (array: first element) */
} kv;

struct qs_gguf {
    char *name;
    const uint8_t *data;
    size_t size;
    int mapped;
    uint32_t version;
    uint64_t n_kv, n_t;
    kv *kvs;
    qs_gguf_tensor *t;
    uint64_t alignment;
    /* cursor cache for walking string arrays in order (not thread-safe) */
    const kv *last_k;
    uint64_t last_i;
    const uint8_t *last_p;
};

typedef struct cur {
    const uint8_t *p, *end;
} cur;

static int take(cur *c, size_t n, const uint8_t **out) {
    if ((size_t)(c->end - c->p) < n) return -1;
    *out = c->p;
    c->p += n;
    return 0;
}
static int u32(cur *c, uint32_t *v) {
    const uint8_t *b;
    if (take(c, 4, &b)) return -1;
    memcpy(v, b, 4);
    return 0;
}
static int u64(cur *c, uint64_t *v) {
    const uint8_t *b;
    if (take(c, 8, &b)) return -1;
    memcpy(v, b, 8);
    return 0;
}
static int str(cur *c, const char **s, size_t *len) {
    uint64_t n;
    const uint8_t *b;
    if (u64(c, &n) || n > (uint64_t)(c->end - c->p) || take(c, (size_t)n, &b)) return -1;
    *s = (const char *)b;
    *len = (size_t)n;
    return 0;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case QS_GGUF_U8: case QS_GGUF_I8: case QS_GGUF_BOOL: return 1;
    case QS_GGUF_U16: case QS_GGUF_I16: return 2;
    case QS_GGUF_U32: case QS_GGUF_I32: case QS_GGUF_F32: return 4;
    case QS_GGUF_U64: case QS_GGUF_I64: case QS_GGUF_F64: return 8;
    default: return 0;
    }
}

/* skips one value of type t; depth bounds nested arrays */
static int skip_value(cur *c, uint32_t t, int depth) {
    if (t == QS_GGUF_STRING) {
        const char *s;
        size_t n;
        return str(c, &s, &n);
    }
    if (t == QS_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (depth > 2 || u32(c, &et) || u64(c, &n)) return -1;
        size_t es = scalar_size(et);
        if (es) {
            const uint8_t *b;
            if (n > (uint64_t)(c->end - c->p) / es) return -1;
            return take(c, (size_t)(n * es), &b);
        }
        if (et != QS_GGUF_STRING && et != QS_GGUF_ARRAY) return -1;
        if (n > (uint64_t)(c->end - c->p) / 8) return -1; /* each element needs >= 8 bytes */
        for (uint64_t i = 0; i < n; i++)
            if (skip_value(c, et, depth + 1)) return -1;
        return 0;
    }
    size_t es = scalar_size(t);
    const uint8_t *b;
    return es ? take(c, es, &b) : -1;
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

static int parse(qs_gguf *g, qs_error *err) {
    cur c = {g->data, g->data + g->size};
    const uint8_t *magic;
    if (take(&c, 4, &magic) || memcmp(magic, "GGUF", 4)) return BAD("%s: not a GGUF file (bad magic)", g->name);
    if (u32(&c, &g->version)) return BAD("%s: truncated header", g->name);
    if (g->version != 2 && g->version != 3)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3)", g->name, g->version);
    if (u64(&c, &g->n_t) || u64(&c, &g->n_kv)) return BAD("%s: truncated header", g->name);
    if (g->n_kv > g->size / 12 || g->n_t > g->size / 24)
        return BAD("%s: %llu keys / %llu tensors cannot fit a %zu-byte file", g->name, (unsigned long long)g->n_kv,
                   (unsigned long long)g->n_t, g->size);
    g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs);
    g->t = calloc(g->n_t ? g->n_t : 1, sizeof *g->t);
    if (!g->kvs || !g->t) return qs_error_set(err, -ENOMEM, "out of memory");
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        kv *k = &g->kvs[i];
        if (str(&c, &k->key, &k->key_len) || u32(&c, &k->type))
            return BAD("%s: metadata entry %llu is truncated", g->name, (unsigned long long)i);
        if (k->type == QS_GGUF_ARRAY) {
            const uint8_t *save = c.p;
            if (u32(&c, &k->arr_type) || u64(&c, &k->arr_n)) return BAD("%s: key '%.*s': truncated array", g->name, (int)k->key_len, k->key);
            k->val = c.p;
            c.p = save;
        } else {
            k->val = c.p;
        }
        if (k->type > QS_GGUF_F64) return BAD("%s: key '%.*s': unknown value type %u", g->name, (int)k->key_len, k->key, k->type);
        if (skip_value(&c, k->type, 0)) return BAD("%s: key '%.*s': value extends past the end of the file", g->name, (int)k->key_len, k->key);
        if (k->key_len == 17 && !memcmp(k->key, "general.alignment", 17)) {
            if (k->type != QS_GGUF_U32) return BAD("%s: general.alignment must be u32", g->name);
            uint32_t a;
            memcpy(&a, k->val, 4);
            if (a == 0 || (a & (a - 1)) || a > (1u << 20)) return BAD("%s: general.alignment %u is not a power of two", g->name, a);
            g->alignment = a;
        }
    }
    for (uint64_t i = 0; i < g->n_t; i++) {
        qs_gguf_tensor *t = &g->t[i];
        const char *name;
        size_t nlen;
        uint32_t nd;
        if (str(&c, &name, &nlen) || u32(&c, &nd)) return BAD("%s: tensor entry %llu is truncated", g->name, (unsigned long long)i);
        t->name = strndup(name, nlen);
        if (!t->name) return qs_error_set(err, -ENOMEM, "out of memory");
        if (nd < 1 || nd > 4) return BAD("%s: tensor '%s': %u dimensions (1 to 4)", g->name, t->name, nd);
        t->n_dims = (int)nd;
        t->n_elems = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (u64(&c, &t->ne[d])) return BAD("%s: tensor '%s': truncated", g->name, t->name);
            if (t->ne[d] == 0 || t->ne[d] > (1ull << 40) || t->n_elems > (1ull << 50) / t->ne[d])
                return BAD("%s: tensor '%s': bad dimension %llu", g->name, t->name, (unsigned long long)t->ne[d]);
            t->n_elems *= t->ne[d];
        }
        for (uint32_t d = nd; d < 4; d++) t->ne[d] = 1;
        uint64_t off;
        if (u32(&c, &t->type) || u64(&c, &off)) return BAD("%s: tensor '%s': truncated", g->name, t->name);
        size_t bs = qs_ggml_block_size(t->type), bb = qs_ggml_block_bytes(t->type);
        if (!bs) return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': unsupported ggml type %u", g->name, t->name, t->type);
        if (t->ne[0] % bs) return BAD("%s: tensor '%s': row of %llu is not a multiple of the block size %zu", g->name, t->name, (unsigned long long)t->ne[0], bs);
        t->nbytes = t->n_elems / bs * bb;
        t->offset = off; /* relative for now */
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->t[j].name, t->name)) return BAD("%s: tensor '%s' appears twice", g->name, t->name);
    }
    uint64_t data_start = (uint64_t)(c.p - g->data);
    data_start = (data_start + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_t; i++) {
        qs_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment) return BAD("%s: tensor '%s': offset %llu is not aligned to %llu", g->name, t->name,
                                                 (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (data_start > g->size || t->offset > g->size - data_start || t->nbytes > g->size - data_start - t->offset)
            return BAD("%s: tensor '%s': data extends past the end of the file", g->name, t->name);
        t->offset += data_start;
    }
    return 0;
}

static int finish(qs_gguf **out, qs_gguf *g, qs_error *err) {
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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qs_error_errno(err, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return qs_error_errno(err, e, "%s: cannot stat", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return qs_error_set(err, QS_EFORMAT, "%s: too short for a GGUF file (%lld bytes)", path, (long long)st.st_size);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return qs_error_errno(err, e, "%s: cannot map", path);
    qs_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(p, (size_t)st.st_size);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    g->name = strdup(path);
    g->data = p;
    g->size = (size_t)st.st_size;
    g->mapped = 1;
    return finish(out, g, err);
}

uint32_t qs_gguf_version(const qs_gguf *g) { return g->version; }

int qs_gguf_find_key(const qs_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key_len == n && !memcmp(g->kvs[i].key, key, n)) return (int)i;
    return -1;
}

qs_gguf_vtype qs_gguf_key_type(const qs_gguf *g, int k) { return (qs_gguf_vtype)g->kvs[k].type; }

static const kv *need(const qs_gguf *g, const char *key, qs_error *err) {
    int k = qs_gguf_find_key(g, key);
    if (k < 0) {
        qs_error_set(err, QS_EFORMAT, "%s: metadata key '%s' is missing", g->name, key);
        return NULL;
    }
    return &g->kvs[k];
}

static int scalar_i64(uint32_t t, const uint8_t *p, int64_t *v) {
    switch (t) {
    case QS_GGUF_U8: *v = *p; return 0;
    case QS_GGUF_I8: *v = (int8_t)*p; return 0;
    case QS_GGUF_BOOL: *v = *p != 0; return 0;
    case QS_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); *v = x; return 0; }
    case QS_GGUF_I16: { int16_t x; memcpy(&x, p, 2); *v = x; return 0; }
    case QS_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); *v = x; return 0; }
    case QS_GGUF_I32: { int32_t x; memcpy(&x, p, 4); *v = x; return 0; }
    case QS_GGUF_U64: { uint64_t x; memcpy(&x, p, 8); if (x > INT64_MAX) return -1; *v = (int64_t)x; return 0; }
    case QS_GGUF_I64: memcpy(v, p, 8); return 0;
    default: return -1;
    }
}

int qs_gguf_get_i64(const qs_gguf *g, const char *key, int64_t *v, qs_error *err) {
    const kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (scalar_i64(k->type, k->val, v)) return BAD("%s: key '%s' is not an integer", g->name, key);
    return 0;
}

int qs_gguf_get_u64(const qs_gguf *g, const char *key, uint64_t *v, qs_error *err) {
    int64_t x = 0;
    QS_FORWARD_IF_ERROR(qs_gguf_get_i64(g, key, &x, err));
    if (x < 0) return BAD("%s: key '%s' is negative", g->name, key);
    *v = (uint64_t)x;
    return 0;
}

int qs_gguf_get_f32(const qs_gguf *g, const char *key, float *v, qs_error *err) {
    const kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (k->type == QS_GGUF_F32) memcpy(v, k->val, 4);
    else if (k->type == QS_GGUF_F64) { double d; memcpy(&d, k->val, 8); *v = (float)d; }
    else {
        int64_t x;
        if (scalar_i64(k->type, k->val, &x)) return BAD("%s: key '%s' is not a number", g->name, key);
        *v = (float)x;
    }
    return 0;
}

int qs_gguf_get_bool(const qs_gguf *g, const char *key, int *v, qs_error *err) {
    int64_t x = 0;
    QS_FORWARD_IF_ERROR(qs_gguf_get_i64(g, key, &x, err));
    *v = x != 0;
    return 0;
}

int qs_gguf_get_str(const qs_gguf *g, const char *key, const char **s, size_t *len, qs_error *err) {
    const kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (k->type != QS_GGUF_STRING) return BAD("%s: key '%s' is not a string", g->name, key);
    cur c = {k->val, g->data + g->size};
    str(&c, s, len);
    return 0;
}

int qs_gguf_get_arr(const qs_gguf *g, const char *key, qs_gguf_vtype *et, uint64_t *n, qs_error *err) {
    const kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (k->type != QS_GGUF_ARRAY) return BAD("%s: key '%s' is not an array", g->name, key);
    *et = (qs_gguf_vtype)k->arr_type;
    *n = k->arr_n;
    return 0;
}

/* element i of an array key: strings are walked; in-order iteration is O(1) per element */
static const uint8_t *elem(const qs_gguf *g, const kv *k, uint64_t i) {
    if (i >= k->arr_n) return NULL;
    size_t es = scalar_size(k->arr_type);
    if (es) return k->val + i * es;
    if (k->arr_type != QS_GGUF_STRING) return NULL;
    qs_gguf *m = (qs_gguf *)g; /* the cache is the only mutable state */
    cur c = {k->val, g->data + g->size};
    uint64_t j = 0;
    if (m->last_k == k && m->last_i <= i) {
        c.p = m->last_p;
        j = m->last_i;
    }
    for (; j < i; j++)
        if (skip_value(&c, QS_GGUF_STRING, 0)) return NULL;
    m->last_k = k;
    m->last_i = i;
    m->last_p = c.p;
    return c.p;
}

int qs_gguf_arr_str(const qs_gguf *g, const char *key, uint64_t i, const char **s, size_t *len) {
    int k = qs_gguf_find_key(g, key);
    if (k < 0 || g->kvs[k].type != QS_GGUF_ARRAY || g->kvs[k].arr_type != QS_GGUF_STRING) return QS_EFORMAT;
    const uint8_t *p = elem(g, &g->kvs[k], i);
    if (!p) return QS_EFORMAT;
    cur c = {p, g->data + g->size};
    return str(&c, s, len) ? QS_EFORMAT : 0;
}

int qs_gguf_arr_i64(const qs_gguf *g, const char *key, uint64_t i, int64_t *v) {
    int k = qs_gguf_find_key(g, key);
    if (k < 0 || g->kvs[k].type != QS_GGUF_ARRAY) return QS_EFORMAT;
    const uint8_t *p = elem(g, &g->kvs[k], i);
    return p && !scalar_i64(g->kvs[k].arr_type, p, v) ? 0 : QS_EFORMAT;
}

int qs_gguf_arr_f32(const qs_gguf *g, const char *key, uint64_t i, float *v) {
    int k = qs_gguf_find_key(g, key);
    if (k < 0 || g->kvs[k].type != QS_GGUF_ARRAY) return QS_EFORMAT;
    const uint8_t *p = elem(g, &g->kvs[k], i);
    if (!p) return QS_EFORMAT;
    if (g->kvs[k].arr_type == QS_GGUF_F32) { memcpy(v, p, 4); return 0; }
    int64_t x = 0;
    if (scalar_i64(g->kvs[k].arr_type, p, &x)) return QS_EFORMAT;
    *v = (float)x;
    return 0;
}

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
    return 0;
}
