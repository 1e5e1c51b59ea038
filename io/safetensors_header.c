/* io/safetensors_header.c - validation of one safetensors header. */
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

static int cmp_off(const void *a, const void *b) {
    const qs_tensor_info *x = *(const qs_tensor_info *const *)a, *y = *(const qs_tensor_info *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

#define BAD(...) (rc = qs_error_set(err, QS_EFORMAT, __VA_ARGS__))

static int parse_tensor(const char *name, json_t *v, uint64_t data_start, uint64_t file_size,
                        const char *fn, int file_index, qs_tensor_info *t, qs_error *err) {
    int rc = 0;
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) ||
        json_array_size(offs) != 2)
        return BAD("%s: tensor '%s': entry needs dtype, shape and data_offsets [begin, end]", fn, name);
    int d = qs_dtype_from_name(json_string_value(dt));
    if (d < 0) return BAD("%s: tensor '%s': unknown dtype '%s'", fn, name, json_string_value(dt));
    size_t nd = json_array_size(shape);
    if (nd > QS_MAX_DIMS) return BAD("%s: tensor '%s': %zu dimensions (at most %d)", fn, name, nd, QS_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->dtype = (qs_dtype)d;
    t->n_dims = (int)nd;
    t->file_index = file_index;
    uint64_t elems = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *s = json_array_get(shape, i);
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            return BAD("%s: tensor '%s': shape[%zu] is not a non-negative integer", fn, name, i);
        uint64_t dim = (uint64_t)json_integer_value(s);
        if (dim && elems > UINT64_MAX / 16 / dim) return BAD("%s: tensor '%s': shape overflows", fn, name);
        elems *= dim;
        t->shape[i] = (int64_t)dim;
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return BAD("%s: tensor '%s': data_offsets must be integers with 0 <= begin <= end", fn, name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    uint64_t data_len = file_size - data_start;
    if (end > data_len)
        return BAD("%s: tensor '%s': data_offsets [%llu, %llu] extend past the end of the file (%llu bytes)", fn,
                   name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)file_size);
    t->n_elems = elems;
    t->nbytes = end - begin;
    if (elems * qs_dtype_size(t->dtype) != t->nbytes)
        return BAD("%s: tensor '%s': shape x %s size = %llu bytes, but data_offsets span %llu", fn, name,
                   qs_dtype_name(t->dtype), (unsigned long long)(elems * qs_dtype_size(t->dtype)),
                   (unsigned long long)t->nbytes);
    t->offset = data_start + begin;
    t->name = strdup(name);
    if (!t->name) return qs_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

int qs_safetensors_parse_header(const char *json, size_t json_len, uint64_t file_size,
                                const char *fn, int file_index, qs_tensor_info **infos,
                                size_t *count, qs_error *err) {
    int rc = 0;
    uint64_t data_start = 8 + (uint64_t)json_len;
    if (json_len > QS_ST_MAX_HEADER || data_start > file_size)
        return BAD("%s: header length %zu does not fit the file (%llu bytes)", fn, json_len, (unsigned long long)file_size);
    json_error_t je;
    json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return BAD("%s: header is not valid JSON (%s)", fn, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return BAD("%s: header is not a JSON object", fn);
    }
    size_t n0 = *count, n_new = json_object_size(root);
    qs_tensor_info *arr = realloc(*infos, (n0 + n_new + 1) * sizeof *arr);
    if (!arr) {
        json_decref(root);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    *infos = arr;
    const char *key;
    json_t *v;
    size_t n = n0;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        rc = parse_tensor(key, v, data_start, file_size, fn, file_index, &arr[n], err);
        if (rc) break;
        n++;
    }
    json_decref(root);
    if (!rc) { /* no two tensors of this file overlap */
        size_t m = n - n0;
        qs_tensor_info **by = malloc((m ? m : 1) * sizeof *by);
        if (!by) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < m; i++) by[i] = &arr[n0 + i];
        if (!rc) qsort(by, m, sizeof *by, cmp_off);
        for (size_t i = 1; !rc && i < m; i++)
            if (by[i - 1]->offset + by[i - 1]->nbytes > by[i]->offset)
                BAD("%s: tensors '%s' and '%s' overlap", fn, by[i - 1]->name, by[i]->name);
        free(by);
    }
    if (rc) {
        for (size_t i = n0; i < n; i++) free(arr[i].name);
        return rc;
    }
    *count = n;
    return 0;
}
