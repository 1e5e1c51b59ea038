/* io/safetensors_writer.c - streaming safetensors writer: declare every tensor, then write their
 * bytes in order; the file appears at its path only when complete (durable rename). */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/safetensors.h"

struct qs_st_writer {
    qs_durable_file f;
    char *path;
    size_t n, cap, next;
    qs_tensor_info *t; /* offsets relative to the data section */
    uint64_t data_bytes;
    int header_written;
};

int qs_st_writer_open(qs_st_writer **out, const char *path, qs_error *err) {
    *out = NULL;
    qs_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    *out = w;
    return 0;
}

void qs_st_writer_abort(qs_st_writer *w) {
    if (!w) return;
    if (w->header_written) qs_durable_abort(&w->f);
    qs_tensor_infos_free(w->t, w->n);
    free(w->path);
    free(w);
}

int qs_st_writer_declare(qs_st_writer *w, const char *name, qs_dtype dtype, int n_dims,
                         const int64_t *shape, qs_error *err) {
    QS_RETURN_ERROR_IF(w->header_written, -EINVAL, "%s: tensor '%s' declared after data writing began", w->path, name);
    QS_RETURN_ERROR_IF(n_dims < 0 || n_dims > QS_MAX_DIMS, -EINVAL, "%s: tensor '%s': %d dimensions", w->path, name, n_dims);
    for (size_t i = 0; i < w->n; i++)
        QS_RETURN_ERROR_IF(!strcmp(w->t[i].name, name), -EINVAL, "%s: tensor '%s' declared twice", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        qs_tensor_info *t = realloc(w->t, cap * sizeof *t);
        if (!t) return qs_error_set(err, -ENOMEM, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    qs_tensor_info *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return qs_error_set(err, -ENOMEM, "out of memory");
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->n_elems = 1;
    for (int d = 0; d < n_dims; d++) {
        QS_RETURN_ERROR_IF(shape[d] < 0, -EINVAL, "%s: tensor '%s': negative dimension", w->path, name);
        t->shape[d] = shape[d];
        t->n_elems *= (uint64_t)shape[d];
    }
    t->nbytes = t->n_elems * qs_dtype_size(dtype);
    t->offset = w->data_bytes;
    w->data_bytes += t->nbytes;
    w->n++;
    return 0;
}

static int write_header(qs_st_writer *w, qs_error *err) {
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    for (size_t i = 0; i < w->n; i++) {
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; d < w->t[i].n_dims; d++) json_array_append_new(shape, json_integer(w->t[i].shape[d]));
        json_array_append_new(offs, json_integer((json_int_t)w->t[i].offset));
        json_array_append_new(offs, json_integer((json_int_t)(w->t[i].offset + w->t[i].nbytes)));
        json_object_set_new(e, "dtype", json_string(qs_dtype_name(w->t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(root, w->t[i].name, e);
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) return qs_error_set(err, -ENOMEM, "out of memory");
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7; /* data starts 8-byte aligned */
    char *hdr = malloc(8 + padded);
    if (!hdr) {
        free(text);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    for (int b = 0; b < 8; b++) hdr[b] = (char)((uint64_t)padded >> (8 * b));
    memcpy(hdr + 8, text, len);
    memset(hdr + 8 + len, ' ', padded - len);
    free(text);
    int rc = qs_durable_open(&w->f, w->path, err);
    if (!rc) {
        w->header_written = 1;
        rc = qs_durable_write(&w->f, hdr, 8 + padded, err);
    }
    free(hdr);
    return rc;
}

int qs_st_writer_write(qs_st_writer *w, const void *data, qs_error *err) {
    QS_RETURN_ERROR_IF(w->next >= w->n, -EINVAL, "%s: more tensors written than declared", w->path);
    if (!w->header_written) QS_FORWARD_IF_ERROR(write_header(w, err));
    const qs_tensor_info *t = &w->t[w->next++];
    return qs_durable_write(&w->f, data, t->nbytes, err);
}

int qs_st_writer_close(qs_st_writer *w, qs_error *err) {
    int rc = 0;
    if (w->next != w->n)
        rc = qs_error_set(err, -EINVAL, "%s: %zu of %zu declared tensors written", w->path, w->next, w->n);
    else if (!w->header_written)
        rc = write_header(w, err);
    if (!rc) {
        rc = qs_durable_commit(&w->f, err);
        w->header_written = 0; /* commit frees the file either way */
    }
    qs_st_writer_abort(w);
    return rc;
}
