/* tests/gguf_writer.h - a tiny GGUF writer for test fixtures (header-only; used by
 * tests/test_gguf.c and tests/test_import_gguf.c). Written from the GGUF specification:
 * "GGUF" | u32 version | u64 n_tensors | u64 n_kv | key/values | tensor infos | padding to the
 * alignment | tensor data (each tensor at an aligned offset relative to the data start).
 * Allocation failures abort: this is test code. */
#ifndef QS_TESTS_GGUF_WRITER_H
#define QS_TESTS_GGUF_WRITER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"

typedef struct gw {
    uint8_t *p;
    size_t n, cap;
    uint64_t count; /* key/values added (for a metadata buffer) */
} gw;

static inline void gw_put(gw *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n) + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static inline void gw_u8(gw *b, uint8_t v) { gw_put(b, &v, 1); }
static inline void gw_u16(gw *b, uint16_t v) { gw_put(b, &v, 2); }
static inline void gw_u32(gw *b, uint32_t v) { gw_put(b, &v, 4); }
static inline void gw_u64(gw *b, uint64_t v) { gw_put(b, &v, 8); }
static inline void gw_f32(gw *b, float v) { gw_put(b, &v, 4); }
static inline void gw_f64(gw *b, double v) { gw_put(b, &v, 8); }
static inline void gw_strn(gw *b, const char *s, size_t n) { gw_u64(b, n); gw_put(b, s, n); }
static inline void gw_str(gw *b, const char *s) { gw_strn(b, s, strlen(s)); }

/* metadata: key and type; the caller then appends the value */
static inline void gw_key(gw *m, const char *key, uint32_t type) {
    gw_str(m, key);
    gw_u32(m, type);
    m->count++;
}
static inline void gw_kv_u32(gw *m, const char *k, uint32_t v) { gw_key(m, k, QS_GGUF_U32); gw_u32(m, v); }
static inline void gw_kv_f32(gw *m, const char *k, float v) { gw_key(m, k, QS_GGUF_F32); gw_f32(m, v); }
static inline void gw_kv_bool(gw *m, const char *k, int v) { gw_key(m, k, QS_GGUF_BOOL); gw_u8(m, (uint8_t)v); }
static inline void gw_kv_str(gw *m, const char *k, const char *v) { gw_key(m, k, QS_GGUF_STRING); gw_str(m, v); }
static inline void gw_kv_arr_hdr(gw *m, const char *k, uint32_t et, uint64_t n) {
    gw_key(m, k, QS_GGUF_ARRAY);
    gw_u32(m, et);
    gw_u64(m, n);
}
static inline void gw_kv_strs(gw *m, const char *k, const char *const *v, size_t n) {
    gw_kv_arr_hdr(m, k, QS_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) gw_str(m, v[i]);
}

typedef struct gw_tensor {
    const char *name;
    int n_dims;
    uint64_t ne[4];
    uint32_t type;
    const void *data;
    size_t nbytes;
} gw_tensor;

/* byte offsets of fields inside the written image, for damage tests */
typedef struct gw_marks {
    size_t version, n_tensors, n_kv, kvs;   /* kvs: the first key's length */
    size_t t0_ndims, t0_ne0, t0_type, t0_offset; /* first tensor's info fields */
    size_t data;                            /* start of the data section */
} gw_marks;

/* The whole file image into *out (reset first). */
static inline void gw_file(gw *out, uint32_t version, const gw *meta, const gw_tensor *ts, size_t nt, uint64_t alignment,
                           gw_marks *mk) {
    gw_marks m = {0};
    out->n = 0;
    gw_put(out, "GGUF", 4);
    m.version = out->n;
    gw_u32(out, version);
    m.n_tensors = out->n;
    gw_u64(out, nt);
    m.n_kv = out->n;
    gw_u64(out, meta->count);
    m.kvs = out->n;
    gw_put(out, meta->p, meta->n);
    uint64_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        gw_str(out, ts[i].name);
        if (i == 0) m.t0_ndims = out->n;
        gw_u32(out, (uint32_t)ts[i].n_dims);
        if (i == 0) m.t0_ne0 = out->n;
        for (int d = 0; d < ts[i].n_dims; d++) gw_u64(out, ts[i].ne[d]);
        if (i == 0) m.t0_type = out->n;
        gw_u32(out, ts[i].type);
        if (i == 0) m.t0_offset = out->n;
        gw_u64(out, off);
        off += (ts[i].nbytes + alignment - 1) / alignment * alignment;
    }
    while (out->n % alignment) gw_u8(out, 0);
    m.data = out->n;
    for (size_t i = 0; i < nt; i++) {
        gw_put(out, ts[i].data, ts[i].nbytes);
        while ((out->n - m.data) % alignment) gw_u8(out, 0);
    }
    if (mk) *mk = m;
}

static inline int gw_save(const gw *b, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b->p, 1, b->n, f);
    return fclose(f) == 0 && w == b->n ? 0 : -1;
}

#endif
