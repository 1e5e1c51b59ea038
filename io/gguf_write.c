/* io/gguf_write.c - the streaming GGUF v3 writer of io/gguf_write.h, written from the GGUF
 * specification: "GGUF" | u32 3 | u64 n_tensors | u64 n_kv | key/values | tensor infos
 * (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset from the data section) | zero
 * padding to the alignment | tensor data, each tensor padded to the alignment. */
#include "io/gguf_write.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/gguf_dequant.h"

#define ALIGN 32

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

struct qs_gguf_writer {
    qs_durable_file f;
    char *path;
    buf kv, info;
    uint64_t n_kv, n_tensors, data_off; /* data_off: the next tensor's offset in the data section */
    uint64_t *sizes;                    /* [n_tensors] bytes of each tensor */
    size_t cap_sizes;
    uint64_t cur, cur_done; /* the tensor being written and its bytes so far */
    int started, oom;
};

static void put(qs_gguf_writer *w, buf *b, const void *d, size_t n) {
    if (w->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = 2 * (b->n + n) + 4096;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(qs_gguf_writer *w, buf *b, uint32_t v) { put(w, b, &v, 4); }
static void put_u64(qs_gguf_writer *w, buf *b, uint64_t v) { put(w, b, &v, 8); }
static void put_str(qs_gguf_writer *w, buf *b, const char *s) {
    put_u64(w, b, strlen(s));
    put(w, b, s, strlen(s));
}
static void key(qs_gguf_writer *w, const char *k, qs_gguf_vtype t) {
    put_str(w, &w->kv, k);
    put_u32(w, &w->kv, t);
    w->n_kv++;
}

int qs_gguf_writer_open(qs_gguf_writer **out, const char *path, qs_error *err) {
    qs_gguf_writer *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    int rc = qs_durable_open(&w->f, path, err);
    if (rc) {
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void qs_gguf_kv_u32(qs_gguf_writer *w, const char *k, uint32_t v) { key(w, k, QS_GGUF_U32), put_u32(w, &w->kv, v); }
void qs_gguf_kv_f32(qs_gguf_writer *w, const char *k, float v) { key(w, k, QS_GGUF_F32), put(w, &w->kv, &v, 4); }
void qs_gguf_kv_bool(qs_gguf_writer *w, const char *k, int v) {
    uint8_t b = v != 0;
    key(w, k, QS_GGUF_BOOL), put(w, &w->kv, &b, 1);
}
void qs_gguf_kv_str(qs_gguf_writer *w, const char *k, const char *v) { key(w, k, QS_GGUF_STRING), put_str(w, &w->kv, v); }
static void arr(qs_gguf_writer *w, const char *k, qs_gguf_vtype et, size_t n) {
    key(w, k, QS_GGUF_ARRAY);
    put_u32(w, &w->kv, et);
    put_u64(w, &w->kv, n);
}
void qs_gguf_kv_strs(qs_gguf_writer *w, const char *k, const char *const *v, size_t n) {
    arr(w, k, QS_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) put_str(w, &w->kv, v[i]);
}
void qs_gguf_kv_f32s(qs_gguf_writer *w, const char *k, const float *v, size_t n) {
    arr(w, k, QS_GGUF_F32, n);
    put(w, &w->kv, v, 4 * n);
}
void qs_gguf_kv_i32s(qs_gguf_writer *w, const char *k, const int32_t *v, size_t n) {
    arr(w, k, QS_GGUF_I32, n);
    put(w, &w->kv, v, 4 * n);
}

size_t qs_gguf_tensor_nbytes(qs_ggml_type type, int n_dims, const uint64_t *ne) {
    const size_t bs = qs_ggml_block_size(type), bb = qs_ggml_block_bytes(type);
    if (!bs || n_dims < 1 || n_dims > 4 || ne[0] % bs) return 0;
    size_t n = (size_t)ne[0] / bs * bb;
    for (int d = 1; d < n_dims; d++) n *= (size_t)ne[d];
    return n;
}

int qs_gguf_writer_declare(qs_gguf_writer *w, const char *name, qs_ggml_type type, int n_dims, const uint64_t *ne,
                           qs_error *err) {
    QS_RETURN_ERROR_IF(w->started, QS_EUSAGE, "%s: tensor %s declared after the data began", w->path, name);
    const size_t nb = qs_gguf_tensor_nbytes(type, n_dims, ne);
    QS_RETURN_ERROR_IF(!nb, QS_EUSAGE, "%s: tensor %s: type %u cannot hold %d dimensions of %llu", w->path, name,
                       (unsigned)type, n_dims, (unsigned long long)(n_dims > 0 ? ne[0] : 0));
    if (w->n_tensors == w->cap_sizes) {
        size_t cap = 2 * w->cap_sizes + 64;
        uint64_t *s = realloc(w->sizes, cap * sizeof *s);
        if (!s) w->oom = 1;
        else w->sizes = s, w->cap_sizes = cap;
    }
    QS_RETURN_ERROR_IF(w->oom, -ENOMEM, "%s: out of memory for the tensor table", w->path);
    put_str(w, &w->info, name);
    put_u32(w, &w->info, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) put_u64(w, &w->info, ne[d]);
    put_u32(w, &w->info, type);
    put_u64(w, &w->info, w->data_off);
    w->sizes[w->n_tensors++] = nb;
    w->data_off += (nb + ALIGN - 1) / ALIGN * ALIGN;
    QS_RETURN_ERROR_IF(w->oom, -ENOMEM, "%s: out of memory for the tensor table", w->path);
    return 0;
}

static int pad(qs_gguf_writer *w, uint64_t n, qs_error *err) {
    static const uint8_t zero[ALIGN];
    return n % ALIGN ? qs_durable_write(&w->f, zero, ALIGN - n % ALIGN, err) : 0;
}

static int header(qs_gguf_writer *w, qs_error *err) {
    QS_RETURN_ERROR_IF(w->oom, -ENOMEM, "%s: out of memory for the metadata", w->path);
    uint8_t h[24];
    const uint32_t version = 3;
    memcpy(h, "GGUF", 4);
    memcpy(h + 4, &version, 4);
    memcpy(h + 8, &w->n_tensors, 8);
    memcpy(h + 16, &w->n_kv, 8);
    w->started = 1;
    QS_FORWARD_IF_ERROR(qs_durable_write(&w->f, h, sizeof h, err));
    QS_FORWARD_IF_ERROR(qs_durable_write(&w->f, w->kv.p, w->kv.n, err));
    QS_FORWARD_IF_ERROR(qs_durable_write(&w->f, w->info.p, w->info.n, err));
    return pad(w, sizeof h + w->kv.n + w->info.n, err);
}

int qs_gguf_writer_write(qs_gguf_writer *w, const void *data, size_t n, qs_error *err) {
    if (!w->started) QS_FORWARD_IF_ERROR(header(w, err));
    while (n) {
        QS_RETURN_ERROR_IF(w->cur >= w->n_tensors, QS_EUSAGE, "%s: more bytes than the declared tensors hold", w->path);
        const uint64_t left = w->sizes[w->cur] - w->cur_done, k = n < left ? n : left;
        QS_FORWARD_IF_ERROR(qs_durable_write(&w->f, data, (size_t)k, err));
        data = (const uint8_t *)data + k, n -= (size_t)k, w->cur_done += k;
        if (w->cur_done == w->sizes[w->cur]) {
            QS_FORWARD_IF_ERROR(pad(w, w->cur_done, err));
            w->cur++, w->cur_done = 0;
        }
    }
    return 0;
}

static void release(qs_gguf_writer *w) {
    free(w->kv.p), free(w->info.p), free(w->sizes), free(w->path);
    free(w);
}

int qs_gguf_writer_close(qs_gguf_writer *w, qs_error *err) {
    int rc = w->started ? 0 : header(w, err);
    if (!rc && w->cur != w->n_tensors)
        rc = qs_error_set(err, QS_EUSAGE, "%s: %llu of %llu tensors written", w->path, (unsigned long long)w->cur,
                          (unsigned long long)w->n_tensors);
    if (!rc) rc = qs_durable_commit(&w->f, err);
    else qs_durable_abort(&w->f);
    release(w);
    return rc;
}

void qs_gguf_writer_abort(qs_gguf_writer *w) {
    if (!w) return;
    qs_durable_abort(&w->f);
    release(w);
}
