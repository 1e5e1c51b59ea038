/* io/safetensors_header.c - validation of one safetensors header.
 *
 * File layout: u64 little-endian N | N bytes of JSON (an object) | data section.
 * JSON: { "__metadata__": {...} (optional, ignored),
 *         "NAME": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ... }
 * Offsets are relative to the data section (which starts at 8 + N). Everything a reader later
 * trusts is checked here: known dtype, at most QS_MAX_DIMS non-negative dims, shape x dtype size
 * == end - begin without overflow, end inside the file, no two tensors overlapping. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

void qs_tensor_infos_free(qs_tensor_info *infos, size_t count) {
    if (!infos) return;
    for (size_t i = 0; i < count; i++) free(infos[i].name);
    free(infos);
}

/* by offset, then by size, so that an empty tensor sorts before a non-empty one at its offset */
static int cmp_offset(const void *a, const void *b) {
    const qs_tensor_info *x = *(const qs_tensor_info *const *)a, *y = *(const qs_tensor_info *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)

/* shape -> t->shape, t->n_dims, t->n_elems; refuses products that do not fit 64 bits in bytes */
static int parse_shape(json_t *shape, const char *fn, const char *name, qs_tensor_info *t, qs_error *err) {
    size_t nd = json_array_size(shape);
    if (nd > QS_MAX_DIMS) return BAD("%s: tensor '%s': %zu dimensions (at most %d)", fn, name, nd, QS_MAX_DIMS);
    uint64_t elems = 1, esize = qs_dtype_size(t->dtype);
    for (size_t i = 0; i < nd; i++) {
        json_t *s = json_array_get(shape, i);
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            return BAD("%s: tensor '%s': shape[%zu] is not a non-negative integer", fn, name, i);
        uint64_t dim = (uint64_t)json_integer_value(s);
        if (dim && elems > UINT64_MAX / esize / dim)
            return BAD("%s: tensor '%s': shape overflows 64 bits (dimension %zu is %llu)", fn, name, i,
                       (unsigned long long)dim);
        elems *= dim;
        t->shape[i] = (int64_t)dim;
    }
    t->n_dims = (int)nd;
    t->n_elems = elems;
    return 0;
}

static int parse_tensor(const char *name, json_t *v, uint64_t data_start, uint64_t file_size,
                        const char *fn, int file_index, qs_tensor_info *t, qs_error *err) {
    memset(t, 0, sizeof *t);
    if (!json_is_object(v)) return BAD("%s: tensor '%s': entry is not a JSON object", fn, name);
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return BAD("%s: tensor '%s': missing or non-string 'dtype'", fn, name);
    if (!json_is_array(shape)) return BAD("%s: tensor '%s': missing or non-array 'shape'", fn, name);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return BAD("%s: tensor '%s': 'data_offsets' must be an array [begin, end]", fn, name);
    int d = qs_dtype_from_name(json_string_value(dt));
    if (d < 0) return BAD("%s: tensor '%s': unknown dtype '%s'", fn, name, json_string_value(dt));
    t->dtype = (qs_dtype)d;
    t->file_index = file_index;
    QS_FORWARD_IF_ERROR(parse_shape(shape, fn, name, t, err));
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return BAD("%s: tensor '%s': data_offsets must be integers with 0 <= begin <= end", fn, name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    if (end > file_size - data_start)
        return BAD("%s: tensor '%s': data_offsets [%llu, %llu] extend past the end of the file (%llu bytes)", fn,
                   name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)file_size);
    t->nbytes = end - begin;
    uint64_t want = t->n_elems * qs_dtype_size(t->dtype); /* no overflow: parse_shape checked */
    if (want != t->nbytes)
        return BAD("%s: tensor '%s': shape x %s size = %llu bytes, but data_offsets [%llu, %llu] span %llu", fn,
                   name, qs_dtype_name(t->dtype), (unsigned long long)want, (unsigned long long)begin,
                   (unsigned long long)end, (unsigned long long)t->nbytes);
    t->offset = data_start + begin;
    t->name = strdup(name);
    if (!t->name) return qs_error_set(err, -ENOMEM, "%s: out of memory", fn);
    return 0;
}

/* no two non-empty tensors of t[0..m) share a byte */
static int check_overlap(qs_tensor_info *t, size_t m, uint64_t data_start, const char *fn, qs_error *err) {
    qs_tensor_info **by = malloc((m ? m : 1) * sizeof *by);
    if (!by) return qs_error_set(err, -ENOMEM, "%s: out of memory", fn);
    for (size_t i = 0; i < m; i++) by[i] = &t[i];
    qsort(by, m, sizeof *by, cmp_offset);
    int rc = 0;
    const qs_tensor_info *reach = NULL; /* the tensor that ends last among those seen */
    for (size_t i = 0; i < m && !rc; i++) {
        if (!by[i]->nbytes) continue;
        if (reach && reach->offset + reach->nbytes > by[i]->offset)
            rc = BAD("%s: tensors '%s' and '%s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])", fn,
                     reach->name, by[i]->name, (unsigned long long)(reach->offset - data_start),
                     (unsigned long long)(reach->offset + reach->nbytes - data_start),
                     (unsigned long long)(by[i]->offset - data_start),
                     (unsigned long long)(by[i]->offset + by[i]->nbytes - data_start));
        if (!reach || by[i]->offset + by[i]->nbytes > reach->offset + reach->nbytes) reach = by[i];
    }
    free(by);
    return rc;
}

int qs_safetensors_parse_header(const char *json, size_t json_len, uint64_t file_size,
                                const char *fn, int file_index, qs_tensor_info **infos,
                                size_t *count, qs_error *err) {
    if (json_len == 0 || json_len > QS_ST_MAX_HEADER || file_size < 8 || json_len > file_size - 8)
        return BAD("%s: header length %zu is invalid for a %llu-byte file (1 to %u and at most the file size - 8)",
                   fn, json_len, (unsigned long long)file_size, QS_ST_MAX_HEADER);
    uint64_t data_start = 8 + (uint64_t)json_len;
    json_error_t je;
    json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &je);
    if (!root && json_error_code(&je) == json_error_duplicate_key)
        return BAD("%s: a tensor name appears twice in the header (%s)", fn, je.text);
    if (!root) return BAD("%s: header is not valid JSON (byte %d: %s)", fn, je.position, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return BAD("%s: header is not a JSON object", fn);
    }
    size_t n0 = *count, n_new = json_object_size(root);
    qs_tensor_info *arr = realloc(*infos, (n0 + n_new + 1) * sizeof *arr);
    if (!arr) {
        json_decref(root);
        return qs_error_set(err, -ENOMEM, "%s: out of memory", fn);
    }
    *infos = arr;
    int rc = 0;
    const char *key;
    json_t *v;
    size_t n = n0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) continue; /* string -> string map; nothing qstream needs */
        rc = parse_tensor(key, v, data_start, file_size, fn, file_index, &arr[n], err);
        if (rc) break;
        n++;
    }
    json_decref(root);
    if (!rc) rc = check_overlap(arr + n0, n - n0, data_start, fn, err);
    if (rc) {
        for (size_t i = n0; i < n; i++) free(arr[i].name);
        return rc;
    }
    *count = n;
    return 0;
}
