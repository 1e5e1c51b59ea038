/* io/safetensors_catalog.c - the tensor catalogue of a model: one safetensors file or a sharded
 * set listed by model.safetensors.index.json. Reads use pread (the streaming loader, io/reader.h,
 * reads the same ranges with io_uring). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/safetensors.h"

struct qs_catalog {
    size_t n_files;
    char **paths;
    int *fds;
    size_t n;
    qs_tensor_info *t;
    qs_tensor_info **by_name; /* sorted by name */
};

void qs_catalog_free(qs_catalog *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_files; i++) {
        if (c->fds[i] >= 0) close(c->fds[i]);
        free(c->paths[i]);
    }
    free(c->paths);
    free(c->fds);
    qs_tensor_infos_free(c->t, c->n);
    free(c->by_name);
    free(c);
}

size_t qs_catalog_count(const qs_catalog *c) { return c->n; }
const qs_tensor_info *qs_catalog_at(const qs_catalog *c, size_t i) { return i < c->n ? &c->t[i] : NULL; }
size_t qs_catalog_file_count(const qs_catalog *c) { return c->n_files; }
const char *qs_catalog_file_path(const qs_catalog *c, int i) {
    return i >= 0 && (size_t)i < c->n_files ? c->paths[i] : NULL;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const qs_tensor_info *const *)a)->name, (*(const qs_tensor_info *const *)b)->name);
}

const qs_tensor_info *qs_catalog_find(const qs_catalog *c, const char *name) {
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int d = strcmp(c->by_name[mid]->name, name);
        if (!d) return c->by_name[mid];
        if (d < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int full_pread(int fd, void *dst, size_t len, uint64_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)dst + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -EIO;
        done += (size_t)r;
    }
    return 0;
}

/* opens file i and appends its tensors */
static int add_file(qs_catalog *c, const char *path, qs_error *err) {
    size_t i = c->n_files;
    char **np = realloc(c->paths, (i + 1) * sizeof *np);
    if (np) c->paths = np;
    int *nf = realloc(c->fds, (i + 1) * sizeof *nf);
    if (nf) c->fds = nf;
    if (!np || !nf) return qs_error_set(err, -ENOMEM, "out of memory");
    c->paths[i] = strdup(path);
    c->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    c->n_files++;
    if (!c->paths[i]) return qs_error_set(err, -ENOMEM, "out of memory");
    if (c->fds[i] < 0) return qs_error_errno(err, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(c->fds[i], &st) != 0) return qs_error_errno(err, errno, "%s: cannot stat", path);
    uint64_t size = (uint64_t)st.st_size;
    uint8_t lenb[8];
    if (size < 8 || full_pread(c->fds[i], lenb, 8, 0))
        return qs_error_set(err, QS_EFORMAT, "%s: too short for a safetensors file (%llu bytes)", path,
                            (unsigned long long)size);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | lenb[b];
    if (hlen == 0 || hlen > QS_ST_MAX_HEADER || hlen > size - 8)
        return qs_error_set(err, QS_EFORMAT, "%s: header length %llu is invalid for a %llu-byte file", path,
                            (unsigned long long)hlen, (unsigned long long)size);
    char *hdr = malloc(hlen);
    if (!hdr) return qs_error_set(err, -ENOMEM, "out of memory");
    int rc = full_pread(c->fds[i], hdr, hlen, 8);
    if (rc) {
        free(hdr);
        return qs_error_errno(err, -rc, "%s: cannot read the header", path);
    }
    rc = qs_safetensors_parse_header(hdr, hlen, size, path, (int)i, &c->t, &c->n, err);
    free(hdr);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int open_index(qs_catalog *c, const char *dir, const char *index_path, qs_error *err) {
    char *text;
    size_t len;
    QS_FORWARD_IF_ERROR(qs_file_read_all(index_path, 64u << 20, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    json_t *map = root ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(map)) {
        json_decref(root);
        return qs_error_set(err, QS_EFORMAT, "%s: no weight_map object%s%s", index_path, root ? "" : ": ",
                            root ? "" : je.text);
    }
    int rc = 0;
    const char *name;
    json_t *v;
    /* open each shard file once, in order of first mention */
    json_object_foreach(map, name, v) {
        if (!json_is_string(v) || strchr(json_string_value(v), '/') || strstr(json_string_value(v), "..")) {
            rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s': bad file name", index_path, name);
            break;
        }
        char *p = qs_path_join(dir, json_string_value(v));
        int seen = 0;
        for (size_t i = 0; i < c->n_files && !seen; i++) seen = !strcmp(c->paths[i], p);
        if (!seen) rc = add_file(c, p, err);
        free(p);
        if (rc) break;
    }
    if (!rc) { /* every tensor of the map is in its file */
        json_object_foreach(map, name, v) {
            int found = 0;
            for (size_t i = 0; i < c->n && !found; i++)
                if (!strcmp(c->t[i].name, name)) {
                    found = 1;
                    if (!ends_with(c->paths[c->t[i].file_index], json_string_value(v))) found = 2;
                }
            if (found != 1) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is not in %s", index_path, name, json_string_value(v));
                break;
            }
        }
    }
    json_decref(root);
    return rc;
}

int qs_catalog_open(qs_catalog **out, const char *path, qs_error *err) {
    *out = NULL;
    qs_catalog *c = calloc(1, sizeof *c);
    if (!c) return qs_error_set(err, -ENOMEM, "out of memory");
    struct stat st;
    int rc;
    if (stat(path, &st) != 0) {
        rc = qs_error_errno(err, errno, "%s: cannot open model", path);
    } else if (S_ISDIR(st.st_mode)) {
        char *idx = qs_path_join(path, "model.safetensors.index.json");
        char *single = qs_path_join(path, "model.safetensors");
        if (access(idx, F_OK) == 0) rc = open_index(c, path, idx, err);
        else if (access(single, F_OK) == 0) rc = add_file(c, single, err);
        else rc = qs_error_set(err, -ENOENT, "%s: no model.safetensors or model.safetensors.index.json", path);
        free(idx);
        free(single);
    } else {
        rc = add_file(c, path, err);
    }
    if (!rc) {
        c->by_name = malloc((c->n ? c->n : 1) * sizeof *c->by_name);
        if (!c->by_name) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < c->n; i++) c->by_name[i] = &c->t[i];
        if (!rc) qsort(c->by_name, c->n, sizeof *c->by_name, cmp_name);
        for (size_t i = 1; !rc && i < c->n; i++)
            if (!strcmp(c->by_name[i - 1]->name, c->by_name[i]->name))
                rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' appears in two files", path, c->by_name[i]->name);
    }
    if (rc) {
        qs_catalog_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int qs_catalog_read_raw(const qs_catalog *c, const qs_tensor_info *t, void *dst, qs_error *err) {
    int rc = full_pread(c->fds[t->file_index], dst, t->nbytes, t->offset);
    if (rc)
        return qs_error_errno(err, -rc, "%s: tensor '%s': read of %llu bytes failed", c->paths[t->file_index],
                              t->name, (unsigned long long)t->nbytes);
    return 0;
}

int qs_catalog_read_rows_f32(const qs_catalog *c, const qs_tensor_info *t, int64_t row0, int64_t n_rows,
                             float *dst, qs_error *err) {
    const char *path = c->paths[t->file_index];
    if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as float", path, t->name,
                            qs_dtype_name(t->dtype));
    int64_t rows = t->n_dims ? t->shape[0] : 1;
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > rows)
        return qs_error_set(err, -EINVAL, "%s: tensor '%s': rows [%lld, %lld) outside [0, %lld)", path, t->name,
                            (long long)row0, (long long)(row0 + n_rows), (long long)rows);
    uint64_t row_elems = rows ? t->n_elems / (uint64_t)rows : 0, es = qs_dtype_size(t->dtype);
    uint64_t n = row_elems * (uint64_t)n_rows;
    /* 2-byte values are read into the first half of dst and widened from the back */
    int rc = full_pread(c->fds[t->file_index], dst, n * es, t->offset + (uint64_t)row0 * row_elems * es);
    if (rc)
        return qs_error_errno(err, -rc, "%s: tensor '%s': read of %llu bytes failed", path, t->name,
                              (unsigned long long)(n * es));
    const uint16_t *half = (const uint16_t *)dst;
    if (t->dtype != QS_DTYPE_F32)
        for (uint64_t i = n; i-- > 0;) dst[i] = t->dtype == QS_DTYPE_F16 ? qs_f16_to_f32(half[i]) : qs_bf16_to_f32(half[i]);
    return 0;
}

int qs_catalog_read_f32(const qs_catalog *c, const qs_tensor_info *t, float *dst, qs_error *err) {
    return qs_catalog_read_rows_f32(c, t, 0, t->n_dims ? t->shape[0] : 1, dst, err);
}
