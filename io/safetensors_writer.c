/* io/safetensors_writer.c - streaming safetensors writer: declare every tensor, then write their
 * bytes in order; the file appears at its path only when complete (durable rename).
 *
 * Layout written: u64 little-endian N | N bytes of compact JSON, padded with spaces so that the
 * data section starts at a multiple of 8 | tensors back to back in declaration order.
 * The header carries "__metadata__": {"format": "pt"} as torch's save_file does. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/safetensors.h"

struct qs_st_writer {
    qs_durable_file f; /* open from the header's write until commit / abort */
    char *path;
    size_t n, cap, next; /* declared, allocated, written */
    qs_tensor_info *t;   /* [n]; offset is relative to the data section */
    uint64_t data_bytes;
    int file_open;
};

int qs_st_writer_open(qs_st_writer **out, const char *path, qs_error *err) {
    *out = NULL;
    qs_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    }
    *out = w;
    return 0;
}

void qs_st_writer_abort(qs_st_writer *w) {
    if (!w) return;
    if (w->file_open) qs_durable_abort(&w->f);
    qs_tensor_infos_free(w->t, w->n);
    free(w->path);
    free(w);
}

int qs_st_writer_declare(qs_st_writer *w, const char *name, qs_dtype dtype, int n_dims,
                         const int64_t *shape, qs_error *err) {
    QS_RETURN_ERROR_IF(!w || !name, -EINVAL, "qs_st_writer_declare: no writer or no name");
    QS_RETURN_ERROR_IF(w->file_open || w->next, -EINVAL, "%s: tensor '%s' declared after data writing began", w->path,
                       name);
    QS_RETURN_ERROR_IF(!*name || !strcmp(name, "__metadata__"), -EINVAL, "%s: tensor name '%s' is not allowed",
                       w->path, name);
    QS_RETURN_ERROR_IF((int)dtype < 0 || dtype >= QS_DTYPE_COUNT, -EINVAL, "%s: tensor '%s': unknown dtype %d", w->path,
                       name, (int)dtype);
    QS_RETURN_ERROR_IF(n_dims < 0 || n_dims > QS_MAX_DIMS || (n_dims && !shape), -EINVAL,
                       "%s: tensor '%s': %d dimensions (0 to %d)", w->path, name, n_dims, QS_MAX_DIMS);
    /* O(n) per declare; models have ~1000 tensors, so this stays well under a millisecond */
    for (size_t i = 0; i < w->n; i++)
        QS_RETURN_ERROR_IF(!strcmp(w->t[i].name, name), -EINVAL, "%s: tensor '%s' declared twice", w->path, name);
    qs_tensor_info t = {.dtype = dtype, .n_dims = n_dims, .n_elems = 1, .offset = w->data_bytes};
    uint64_t esize = qs_dtype_size(dtype);
    for (int d = 0; d < n_dims; d++) {
        QS_RETURN_ERROR_IF(shape[d] < 0, -EINVAL, "%s: tensor '%s': dimension %d is negative (%lld)", w->path, name, d,
                           (long long)shape[d]);
        QS_RETURN_ERROR_IF(shape[d] && t.n_elems > UINT64_MAX / esize / (uint64_t)shape[d], -EINVAL,
                           "%s: tensor '%s': shape overflows 64 bits", w->path, name);
        t.shape[d] = shape[d];
        t.n_elems *= (uint64_t)shape[d];
    }
    t.nbytes = t.n_elems * esize;
    QS_RETURN_ERROR_IF(t.nbytes > (uint64_t)INT64_MAX - w->data_bytes, -EINVAL,
                       "%s: tensor '%s': file would exceed 2^63 bytes", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        qs_tensor_info *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) return qs_error_set(err, -ENOMEM, "%s: out of memory", w->path);
        w->t = nt;
        w->cap = cap;
    }
    t.name = strdup(name);
    if (!t.name) return qs_error_set(err, -ENOMEM, "%s: out of memory", w->path);
    w->t[w->n++] = t;
    w->data_bytes += t.nbytes;
    return 0;
}

/* the header JSON of every declared tensor; malloc'd, NULL with err set on failure */
static char *header_json(const qs_st_writer *w, qs_error *err) {
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    int bad = json_object_set_new(root, "__metadata__", meta); /* steals meta, also on failure */
    for (size_t i = 0; i < w->n && !bad; i++) {
        const qs_tensor_info *t = &w->t[i];
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        bad = !e || !shape || !offs;
        for (int d = 0; d < t->n_dims && !bad; d++) bad = json_array_append_new(shape, json_integer(t->shape[d]));
        bad = bad || json_array_append_new(offs, json_integer((json_int_t)t->offset)) ||
              json_array_append_new(offs, json_integer((json_int_t)(t->offset + t->nbytes))) ||
              json_object_set_new(e, "dtype", json_string(qs_dtype_name(t->dtype)));
        if (bad) {
            json_decref(e), json_decref(shape), json_decref(offs);
            break;
        }
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        /* fails only for a name that is not UTF-8 (or out of memory) */
        if (json_object_set_new(root, t->name, e)) {
            json_decref(root);
            qs_error_set(err, -EINVAL, "%s: tensor '%s': name is not valid UTF-8", w->path, t->name);
            return NULL;
        }
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) qs_error_set(err, -ENOMEM, "%s: out of memory building the header", w->path);
    return text;
}

static int write_header(qs_st_writer *w, qs_error *err) {
    char *text = header_json(w, err);
    if (!text) return err ? err->code : -ENOMEM;
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7; /* data starts 8-byte aligned */
    if (padded > QS_ST_MAX_HEADER) {
        free(text);
        return qs_error_set(err, -EINVAL, "%s: header of %zu bytes exceeds the %u allowed", w->path, padded,
                            QS_ST_MAX_HEADER);
    }
    char *hdr = malloc(8 + padded);
    if (!hdr) {
        free(text);
        return qs_error_set(err, -ENOMEM, "%s: out of memory", w->path);
    }
    for (int b = 0; b < 8; b++) hdr[b] = (char)((uint64_t)padded >> (8 * b));
    memcpy(hdr + 8, text, len);
    memset(hdr + 8 + len, ' ', padded - len);
    free(text);
    int rc = qs_durable_open(&w->f, w->path, err);
    if (!rc) {
        w->file_open = 1;
        rc = qs_durable_write(&w->f, hdr, 8 + padded, err);
    }
    free(hdr);
    return rc;
}

int qs_st_writer_write(qs_st_writer *w, const void *data, qs_error *err) {
    QS_RETURN_ERROR_IF(!w, -EINVAL, "qs_st_writer_write: no writer");
    QS_RETURN_ERROR_IF(w->next >= w->n, -EINVAL, "%s: more tensors written than the %zu declared", w->path, w->n);
    const qs_tensor_info *t = &w->t[w->next];
    QS_RETURN_ERROR_IF(!data && t->nbytes, -EINVAL, "%s: tensor '%s': no data", w->path, t->name);
    if (!w->file_open) QS_FORWARD_IF_ERROR(write_header(w, err));
    QS_FORWARD_IF_ERROR(qs_durable_write(&w->f, data, t->nbytes, err));
    w->next++;
    return 0;
}

int qs_st_writer_close(qs_st_writer *w, qs_error *err) {
    QS_RETURN_ERROR_IF(!w, -EINVAL, "qs_st_writer_close: no writer");
    int rc = 0;
    if (w->next != w->n)
        rc = qs_error_set(err, -EINVAL, "%s: %zu of %zu declared tensors written", w->path, w->next, w->n);
    else if (!w->file_open)
        rc = write_header(w, err); /* no tensors: a file with only the header */
    if (!rc) {
        rc = qs_durable_commit(&w->f, err);
        w->file_open = 0; /* commit frees the file either way */
    }
    qs_st_writer_abort(w);
    return rc;
}
