/* io/gguf_internal.h - the parsed GGUF image shared by io/gguf.c (parsing, tensors) and
 * io/gguf_meta.c (metadata access). Not a public header. */
#ifndef QS_IO_GGUF_INTERNAL_H
#define QS_IO_GGUF_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "io/gguf.h"

typedef struct qs_gguf_kv {
    const char *key;    /* points into the image; not NUL-terminated */
    size_t key_len;
    uint32_t type;      /* qs_gguf_vtype */
    uint32_t arr_type;  /* arrays: element type */
    uint64_t arr_n;     /* arrays: element count */
    const uint8_t *val; /* value bytes (string: its u64 length; array: the first element) */
} qs_gguf_kv;

struct qs_gguf {
    char *name;          /* file name for messages */
    const uint8_t *data; /* the whole image (mapped or borrowed) */
    size_t size;
    int mapped;
    uint32_t version;
    uint64_t n_kv, n_t;
    qs_gguf_kv *kvs;     /* [n_kv] */
    qs_gguf_tensor *t;   /* [n_t] */
    uint64_t alignment;
    /* cursor cache for walking string arrays in order (the only mutable state: a qs_gguf is
     * not safe for concurrent metadata access) */
    const qs_gguf_kv *last_k;
    uint64_t last_i;
    const uint8_t *last_p;
};

/* bounded little-endian cursor over [p, end) */
typedef struct qs_gguf_cur {
    const uint8_t *p, *end;
} qs_gguf_cur;

static inline int qs_gguf_take(qs_gguf_cur *c, size_t n, const uint8_t **out) {
    if ((size_t)(c->end - c->p) < n) return -1;
    *out = c->p;
    c->p += n;
    return 0;
}
static inline int qs_gguf_u32(qs_gguf_cur *c, uint32_t *v) {
    const uint8_t *b;
    if (qs_gguf_take(c, 4, &b)) return -1;
    memcpy(v, b, 4);
    return 0;
}
static inline int qs_gguf_u64(qs_gguf_cur *c, uint64_t *v) {
    const uint8_t *b;
    if (qs_gguf_take(c, 8, &b)) return -1;
    memcpy(v, b, 8);
    return 0;
}
/* a GGUF string: u64 length, then that many bytes */
static inline int qs_gguf_str(qs_gguf_cur *c, const char **s, size_t *len) {
    uint64_t n;
    const uint8_t *b;
    if (qs_gguf_u64(c, &n) || n > (uint64_t)(c->end - c->p) || qs_gguf_take(c, (size_t)n, &b)) return -1;
    *s = (const char *)b;
    *len = (size_t)n;
    return 0;
}

/* bytes of a fixed-size value type; 0 for strings, arrays and unknown types */
size_t qs_gguf_scalar_size(uint32_t type);
/* Skips one value of type t (depth: array nesting so far); -1 when it does not fit or the
 * type is unknown. */
int qs_gguf_skip_value(qs_gguf_cur *c, uint32_t type, int depth);

#endif
