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

#define QS_ST_INDEX_NAME "model.safetensors.index.json"
#define QS_ST_SINGLE_NAME "model.safetensors"
#define QS_ST_MAX_INDEX (64u << 20)

struct qs_catalog {
    size_t n_files;
    char **paths;             /* [n_files], owned */
    int *fds;                 /* [n_files], -1 when not open */
    size_t n;
    qs_tensor_info *t;        /* [n], in file order, files in the order first opened */
    qs_tensor_info **by_name; /* [n], sorted by name, for qs_catalog_find */
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
    size_t lo = 0, hi = c->by_name ? c->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(c->by_name[mid]->name, name);
        if (!d) return c->by_name[mid];
        if (d < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* reads exactly len bytes at off; a file shorter than expected is -EIO */
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

/* opens one safetensors file, validates its header and appends its tensors */
static int add_file(qs_catalog *c, const char *path, qs_error *err) {
    size_t i = c->n_files;
    char **np = realloc(c->paths, (i + 1) * sizeof *np);
    if (np) c->paths = np;
    int *nf = realloc(c->fds, (i + 1) * sizeof *nf);
    if (nf) c->fds = nf;
    if (!np || !nf) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    c->paths[i] = strdup(path);
    c->fds[i] = -1;
    c->n_files++;
    if (!c->paths[i]) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    struct stat st;
    if (stat(path, &st) != 0) return qs_error_errno(err, errno, "%s: cannot open", path);
    if (!S_ISREG(st.st_mode)) return qs_error_set(err, QS_EFORMAT, "%s: not a regular file", path);
    c->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (c->fds[i] < 0) return qs_error_errno(err, errno, "%s: cannot open", path);
    if (fstat(c->fds[i], &st) != 0) return qs_error_errno(err, errno, "%s: cannot stat", path);
    uint64_t size = (uint64_t)st.st_size;
    uint8_t lenb[8];
    if (size < 8 || full_pread(c->fds[i], lenb, 8, 0))
        return qs_error_set(err, QS_EFORMAT, "%s: %llu bytes, too short for a safetensors file", path,
                            (unsigned long long)size);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | lenb[b];
    if (hlen == 0 || hlen > QS_ST_MAX_HEADER || hlen > size - 8)
        return qs_error_set(err, QS_EFORMAT,
                            "%s: header length %llu is invalid for a %llu-byte file "
                            "(1 to %u and at most the file size - 8)",
                            path, (unsigned long long)hlen, (unsigned long long)size, QS_ST_MAX_HEADER);
    char *hdr = malloc(hlen);
    if (!hdr)
        return qs_error_set(err, -ENOMEM, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hlen);
    int rc = full_pread(c->fds[i], hdr, hlen, 8);
    if (rc) rc = qs_error_errno(err, -rc, "%s: cannot read the header", path);
    if (!rc) rc = qs_safetensors_parse_header(hdr, hlen, size, path, (int)i, &c->t, &c->n, err);
    free(hdr);
    return rc;
}

/* c->by_name from c->t; a name in two files is an error */
static int index_names(qs_catalog *c, const char *path, qs_error *err) {
    c->by_name = malloc((c->n ? c->n : 1) * sizeof *c->by_name);
    if (!c->by_name) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < c->n; i++) c->by_name[i] = &c->t[i];
    qsort(c->by_name, c->n, sizeof *c->by_name, cmp_name);
    for (size_t i = 1; i < c->n; i++)
        if (!strcmp(c->by_name[i - 1]->name, c->by_name[i]->name))
            return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is in both %s and %s", path, c->by_name[i]->name,
                                c->paths[c->by_name[i - 1]->file_index], c->paths[c->by_name[i]->file_index]);
    return 0;
}

/* a weight_map value: a plain file name beside the index (no directories, no "..") */
static int plain_file_name(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

/* opens every file the index's weight_map names (each once, in order of first mention) and
 * checks that each mapped tensor is in the file the map names. Tensors a file holds that the
 * map does not list are kept. */
static int open_index(qs_catalog *c, const char *dir, const char *index_path, qs_error *err) {
    char *text;
    size_t len;
    QS_FORWARD_IF_ERROR(qs_file_read_all(index_path, QS_ST_MAX_INDEX, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) return qs_error_set(err, QS_EFORMAT, "%s: not valid JSON (line %d: %s)", index_path, je.line, je.text);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map)) rc = qs_error_set(err, QS_EFORMAT, "%s: no 'weight_map' object", index_path);
    else if (!json_object_size(map)) rc = qs_error_set(err, QS_EFORMAT, "%s: 'weight_map' is empty", index_path);
    const char *name;
    json_t *v;
    if (!rc) {
        json_object_foreach(map, name, v) {
            if (!json_is_string(v) || !plain_file_name(json_string_value(v))) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s': file must be a plain file name", index_path, name);
                break;
            }
            char *p = qs_path_join(dir, json_string_value(v));
            if (!p) {
                rc = qs_error_set(err, -ENOMEM, "%s: out of memory", index_path);
                break;
            }
            int seen = 0;
            for (size_t i = 0; i < c->n_files && !seen; i++) seen = !strcmp(c->paths[i], p);
            if (!seen && (rc = add_file(c, p, err)) != 0) qs_error_prefix(err, "%s: tensor '%s'", index_path, name);
            free(p);
            if (rc) break;
        }
    }
    if (!rc) rc = index_names(c, index_path, err);
    if (!rc) {
        json_object_foreach(map, name, v) {
            const qs_tensor_info *t = qs_catalog_find(c, name);
            const char *want = json_string_value(v);
            if (!t) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is not in %s", index_path, name, want);
                break;
            }
            char *p = qs_path_join(dir, want);
            if (!p) rc = qs_error_set(err, -ENOMEM, "%s: out of memory", index_path);
            else if (strcmp(p, c->paths[t->file_index]))
                rc = qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' is not in %s (it is in %s)", index_path, name,
                                  want, c->paths[t->file_index]);
            free(p);
            if (rc) break;
        }
    }
    json_decref(root);
    return rc;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* the directory part of path ("." when there is none); malloc'd */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) memcpy(d, path, n), d[n] = 0;
    return d;
}

int qs_catalog_open(qs_catalog **out, const char *path, qs_error *err) {
    *out = NULL;
    qs_catalog *c = calloc(1, sizeof *c);
    if (!c) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    struct stat st;
    int rc;
    if (stat(path, &st) != 0) {
        rc = qs_error_errno(err, errno, "%s: cannot open model", path);
    } else if (S_ISDIR(st.st_mode)) {
        char *idx = qs_path_join(path, QS_ST_INDEX_NAME), *single = qs_path_join(path, QS_ST_SINGLE_NAME);
        if (!idx || !single) rc = qs_error_set(err, -ENOMEM, "%s: out of memory", path);
        else if (access(idx, F_OK) == 0) rc = open_index(c, path, idx, err);
        else if (access(single, F_OK) == 0) rc = add_file(c, single, err);
        else rc = qs_error_set(err, -ENOENT, "%s: no %s or %s", path, QS_ST_SINGLE_NAME, QS_ST_INDEX_NAME);
        free(idx);
        free(single);
    } else if (ends_with(path, ".index.json")) {
        char *dir = dir_of(path);
        rc = dir ? open_index(c, dir, path, err) : qs_error_set(err, -ENOMEM, "%s: out of memory", path);
        free(dir);
    } else {
        rc = add_file(c, path, err);
    }
    if (!rc && !c->by_name) rc = index_names(c, path, err);
    if (rc) {
        qs_catalog_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* t must be one of c's tensors (or an equal copy) */
static int check_tensor(const qs_catalog *c, const qs_tensor_info *t, qs_error *err) {
    if (!t || t->file_index < 0 || (size_t)t->file_index >= c->n_files)
        return qs_error_set(err, -EINVAL, "tensor '%s' does not belong to this catalogue",
                            t && t->name ? t->name : "?");
    return 0;
}

int qs_catalog_read_raw(const qs_catalog *c, const qs_tensor_info *t, void *dst, qs_error *err) {
    QS_FORWARD_IF_ERROR(check_tensor(c, t, err));
    int rc = full_pread(c->fds[t->file_index], dst, t->nbytes, t->offset);
    if (rc)
        return qs_error_errno(err, -rc, "%s: tensor '%s': read of %llu bytes at %llu failed", c->paths[t->file_index],
                              t->name, (unsigned long long)t->nbytes, (unsigned long long)t->offset);
    return 0;
}

int qs_catalog_read_rows_f32(const qs_catalog *c, const qs_tensor_info *t, int64_t row0, int64_t n_rows,
                             float *dst, qs_error *err) {
    QS_FORWARD_IF_ERROR(check_tensor(c, t, err));
    const char *path = c->paths[t->file_index];
    if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': dtype %s cannot be read as float32", path, t->name,
                            qs_dtype_name(t->dtype));
    int64_t rows = t->n_dims ? t->shape[0] : 1; /* a 0-d tensor is one row of one element */
    if (row0 < 0 || n_rows < 0 || row0 > rows || n_rows > rows - row0)
        return qs_error_set(err, -EINVAL, "%s: tensor '%s': rows [%lld, %lld + %lld) outside [0, %lld)", path, t->name,
                            (long long)row0, (long long)row0, (long long)n_rows, (long long)rows);
    uint64_t row_elems = rows ? t->n_elems / (uint64_t)rows : 0, es = qs_dtype_size(t->dtype);
    uint64_t n = row_elems * (uint64_t)n_rows, off = t->offset + (uint64_t)row0 * row_elems * es;
    int rc = 0;
    if (t->dtype == QS_DTYPE_F32) {
        rc = full_pread(c->fds[t->file_index], dst, n * es, off);
    } else {
        /* 2-byte values: read in chunks into a small buffer, widen into dst */
        uint16_t buf[8192];
        for (uint64_t done = 0; !rc && done < n;) {
            size_t k = n - done < 8192 ? (size_t)(n - done) : 8192;
            rc = full_pread(c->fds[t->file_index], buf, k * 2, off + done * 2);
            if (rc) break;
            if (t->dtype == QS_DTYPE_F16) qs_f16_to_f32_n(buf, dst + done, k);
            else qs_bf16_to_f32_n(buf, dst + done, k);
            done += k;
        }
    }
    if (rc)
        return qs_error_errno(err, -rc, "%s: tensor '%s': read of %llu bytes at %llu failed", path, t->name,
                              (unsigned long long)(n * es), (unsigned long long)off);
    return 0;
}

int qs_catalog_read_f32(const qs_catalog *c, const qs_tensor_info *t, float *dst, qs_error *err) {
    QS_FORWARD_IF_ERROR(check_tensor(c, t, err));
    return qs_catalog_read_rows_f32(c, t, 0, t->n_dims ? t->shape[0] : 1, dst, err);
}
