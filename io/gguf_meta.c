/* io/gguf_meta.c - GGUF metadata access: key lookup, scalars with integer-width conversion,
 * strings, arrays (element access; in-order walks of string arrays are O(1) per element).
 * The image was validated by io/gguf.c, so values are known to lie inside it. */
#include <stdint.h>
#include <string.h>

#include "io/gguf.h"
#include "io/gguf_internal.h"

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)

size_t qs_gguf_key_count(const qs_gguf *g) { return (size_t)g->n_kv; }

const char *qs_gguf_key_name(const qs_gguf *g, size_t k, size_t *len) {
    if (k >= g->n_kv) return NULL;
    *len = g->kvs[k].key_len;
    return g->kvs[k].key;
}

int qs_gguf_find_key(const qs_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key_len == n && !memcmp(g->kvs[i].key, key, n)) return (int)i;
    return -1;
}

qs_gguf_vtype qs_gguf_key_type(const qs_gguf *g, int k) {
    return k >= 0 && (uint64_t)k < g->n_kv ? (qs_gguf_vtype)g->kvs[k].type : (qs_gguf_vtype)-1;
}

static const qs_gguf_kv *need(const qs_gguf *g, const char *key, qs_error *err) {
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

static int scalar_f32(uint32_t t, const uint8_t *p, float *v) {
    if (t == QS_GGUF_F32) {
        memcpy(v, p, 4);
        return 0;
    }
    if (t == QS_GGUF_F64) {
        double d;
        memcpy(&d, p, 8);
        *v = (float)d;
        return 0;
    }
    int64_t x;
    if (scalar_i64(t, p, &x)) return -1;
    *v = (float)x;
    return 0;
}

int qs_gguf_get_i64(const qs_gguf *g, const char *key, int64_t *v, qs_error *err) {
    const qs_gguf_kv *k = need(g, key, err);
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
    const qs_gguf_kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (scalar_f32(k->type, k->val, v)) return BAD("%s: key '%s' is not a number", g->name, key);
    return 0;
}

int qs_gguf_get_bool(const qs_gguf *g, const char *key, int *v, qs_error *err) {
    int64_t x = 0;
    QS_FORWARD_IF_ERROR(qs_gguf_get_i64(g, key, &x, err));
    *v = x != 0;
    return 0;
}

int qs_gguf_get_str(const qs_gguf *g, const char *key, const char **s, size_t *len, qs_error *err) {
    const qs_gguf_kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (k->type != QS_GGUF_STRING) return BAD("%s: key '%s' is not a string", g->name, key);
    qs_gguf_cur c = {k->val, g->data + g->size};
    return qs_gguf_str(&c, s, len) ? BAD("%s: key '%s' is damaged", g->name, key) : 0;
}

int qs_gguf_get_arr(const qs_gguf *g, const char *key, qs_gguf_vtype *et, uint64_t *n, qs_error *err) {
    const qs_gguf_kv *k = need(g, key, err);
    if (!k) return QS_EFORMAT;
    if (k->type != QS_GGUF_ARRAY) return BAD("%s: key '%s' is not an array", g->name, key);
    *et = (qs_gguf_vtype)k->arr_type;
    *n = k->arr_n;
    return 0;
}

/* element i of an array key (NULL for nested arrays or i out of range): strings are walked,
 * resuming from the last element asked for when walking forward */
static const uint8_t *elem(const qs_gguf *g, const qs_gguf_kv *k, uint64_t i) {
    if (i >= k->arr_n) return NULL;
    size_t es = qs_gguf_scalar_size(k->arr_type);
    if (es) return k->val + i * es;
    if (k->arr_type != QS_GGUF_STRING) return NULL;
    qs_gguf *m = (qs_gguf *)g; /* the cache is the only mutable state */
    qs_gguf_cur c = {k->val, g->data + g->size};
    uint64_t j = 0;
    if (m->last_k == k && m->last_i <= i) {
        c.p = m->last_p;
        j = m->last_i;
    }
    for (; j < i; j++)
        if (qs_gguf_skip_value(&c, QS_GGUF_STRING, 0)) return NULL;
    m->last_k = k;
    m->last_i = i;
    m->last_p = c.p;
    return c.p;
}

static const qs_gguf_kv *array_key(const qs_gguf *g, const char *key) {
    int k = qs_gguf_find_key(g, key);
    return k >= 0 && g->kvs[k].type == QS_GGUF_ARRAY ? &g->kvs[k] : NULL;
}

int qs_gguf_arr_str(const qs_gguf *g, const char *key, uint64_t i, const char **s, size_t *len) {
    const qs_gguf_kv *k = array_key(g, key);
    if (!k || k->arr_type != QS_GGUF_STRING) return QS_EFORMAT;
    const uint8_t *p = elem(g, k, i);
    if (!p) return QS_EFORMAT;
    qs_gguf_cur c = {p, g->data + g->size};
    return qs_gguf_str(&c, s, len) ? QS_EFORMAT : 0;
}

int qs_gguf_arr_i64(const qs_gguf *g, const char *key, uint64_t i, int64_t *v) {
    const qs_gguf_kv *k = array_key(g, key);
    const uint8_t *p = k ? elem(g, k, i) : NULL;
    return p && !scalar_i64(k->arr_type, p, v) ? 0 : QS_EFORMAT;
}

int qs_gguf_arr_f32(const qs_gguf *g, const char *key, uint64_t i, float *v) {
    const qs_gguf_kv *k = array_key(g, key);
    const uint8_t *p = k ? elem(g, k, i) : NULL;
    return p && !scalar_f32(k->arr_type, p, v) ? 0 : QS_EFORMAT;
}
