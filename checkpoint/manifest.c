#include "checkpoint/manifest.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "checkpoint/shuffle.h"

#define MANIFEST_MAX_BYTES (256u << 20)

static void block_free(qs_manifest_block *b) {
    free(b->file);
    free(b->metrics_json);
}

void qs_manifest_free(qs_manifest *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) block_free(&m->blocks[i]);
    free(m->blocks);
    free(m->fingerprint_json);
    memset(m, 0, sizeof *m);
}

static char *compact(json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY); }

int qs_manifest_init(qs_manifest *m, int n_blocks, const char *fingerprint_json, qs_error *err) {
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *fp = json_loads(fingerprint_json, 0, &je);
    QS_RETURN_ERROR_IF(!json_is_object(fp), -EINVAL, "run fingerprint is not a JSON object");
    m->n_blocks = n_blocks;
    m->fingerprint_json = compact(fp);
    json_decref(fp);
    return m->fingerprint_json ? 0 : qs_error_set(err, -ENOMEM, "out of memory");
}

const qs_manifest_block *qs_manifest_find(const qs_manifest *m, int block) {
    for (size_t i = 0; i < m->n; i++)
        if (m->blocks[i].block == block) return &m->blocks[i];
    return NULL;
}

int qs_manifest_set_block(qs_manifest *m, const qs_manifest_block *b, qs_error *err) {
    qs_manifest_block c = *b;
    c.file = strdup(b->file);
    c.metrics_json = b->metrics_json ? strdup(b->metrics_json) : NULL;
    if (!c.file || (b->metrics_json && !c.metrics_json)) {
        block_free(&c);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < m->n; i++)
        if (m->blocks[i].block == b->block) {
            block_free(&m->blocks[i]);
            m->blocks[i] = c;
            return 0;
        }
    qs_manifest_block *nb = realloc(m->blocks, (m->n + 1) * sizeof *nb);
    if (!nb) {
        block_free(&c);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    m->blocks = nb;
    m->blocks[m->n++] = c;
    return 0;
}

static int safe_relative(const char *f) {
    if (!*f || f[0] == '/' || strstr(f, "..") || strlen(f) > 255) return 0;
    for (const char *p = f; *p; p++)
        if ((unsigned char)*p < 0x20) return 0;
    return 1;
}

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)

static int parse_block(qs_manifest *m, json_t *b, size_t i, const char *name, qs_error *err) {
    json_t *blk = json_object_get(b, "block"), *file = json_object_get(b, "file"),
           *bytes = json_object_get(b, "bytes"), *hx = json_object_get(b, "xxh3"),
           *sec = json_object_get(b, "seconds"), *met = json_object_get(b, "metrics");
    if (!json_is_object(b) || !json_is_integer(blk) || !json_is_string(file) || !json_is_integer(bytes) ||
        !json_is_string(hx) || (sec && !json_is_number(sec)) || (met && !json_is_object(met)))
        return BAD("%s: blocks[%zu] is missing a field or has a wrong type", name, i);
    json_int_t k = json_integer_value(blk);
    if (k < 0 || k >= m->n_blocks) return BAD("%s: blocks[%zu]: block %lld outside 0..%d", name, i, (long long)k, m->n_blocks - 1);
    if (qs_manifest_find(m, (int)k)) return BAD("%s: block %lld is recorded twice", name, (long long)k);
    if (!safe_relative(json_string_value(file))) return BAD("%s: block %lld: bad file name", name, (long long)k);
    if (json_integer_value(bytes) < 0) return BAD("%s: block %lld: negative size", name, (long long)k);
    qs_manifest_block r = {.block = (int)k, .bytes = (uint64_t)json_integer_value(bytes),
                           .seconds = sec ? json_number_value(sec) : 0, .file = (char *)json_string_value(file)};
    if (qs_hash_from_hex(json_string_value(hx), &r.xxh3)) return BAD("%s: block %lld: bad xxh3", name, (long long)k);
    char *mj = met ? compact(met) : NULL;
    r.metrics_json = mj;
    int rc = qs_manifest_set_block(m, &r, err);
    free(mj);
    return rc;
}

int qs_manifest_parse(qs_manifest *m, const char *json, size_t len, const char *name, qs_error *err) {
    memset(m, 0, sizeof *m);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return BAD("%s: not valid JSON (line %d: %s)", name, je.line, je.text);
    int rc = 0;
    json_t *fmt = json_object_get(root, "format"), *nb = json_object_get(root, "n_blocks"),
           *fp = json_object_get(root, "fingerprint"), *blocks = json_object_get(root, "blocks");
    if (!json_is_object(root)) rc = BAD("%s: not a JSON object", name);
    else if (!json_is_integer(fmt) || json_integer_value(fmt) != 1) rc = BAD("%s: unsupported manifest format", name);
    else if (!json_is_integer(nb) || json_integer_value(nb) <= 0 || json_integer_value(nb) > 100000)
        rc = BAD("%s: n_blocks missing or out of range", name);
    else if (!json_is_object(fp)) rc = BAD("%s: fingerprint missing or not an object", name);
    else if (!json_is_array(blocks)) rc = BAD("%s: blocks missing or not an array", name);
    if (!rc) {
        m->n_blocks = (int)json_integer_value(nb);
        m->fingerprint_json = compact(fp);
        if (!m->fingerprint_json) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(blocks) && !rc; i++)
            rc = parse_block(m, json_array_get(blocks, i), i, name, err);
    }
    json_decref(root);
    if (rc) qs_manifest_free(m);
    return rc;
}

int qs_manifest_load(qs_manifest *m, const char *path, qs_error *err) {
    char *buf;
    size_t len;
    memset(m, 0, sizeof *m);
    QS_FORWARD_IF_ERROR(qs_file_read_all(path, MANIFEST_MAX_BYTES, &buf, &len, err));
    int rc = qs_manifest_parse(m, buf, len, path, err);
    free(buf);
    return rc;
}

static int cmp_block(const void *a, const void *b) {
    return ((const qs_manifest_block *)a)->block - ((const qs_manifest_block *)b)->block;
}

int qs_manifest_save(const qs_manifest *m, const char *path, qs_error *err) {
    json_error_t je;
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "format", json_integer(1));
    json_object_set_new(root, "n_blocks", json_integer(m->n_blocks));
    json_object_set_new(root, "fingerprint", json_loads(m->fingerprint_json, 0, &je));
    qs_manifest_block *sorted = malloc((m->n ? m->n : 1) * sizeof *sorted);
    if (!sorted) {
        json_decref(root);
        json_decref(arr);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    if (m->n) memcpy(sorted, m->blocks, m->n * sizeof *sorted);
    qsort(sorted, m->n, sizeof *sorted, cmp_block);
    for (size_t i = 0; i < m->n; i++) {
        json_t *b = json_object();
        char hex[17];
        qs_hash_to_hex(sorted[i].xxh3, hex);
        json_object_set_new(b, "block", json_integer(sorted[i].block));
        json_object_set_new(b, "file", json_string(sorted[i].file));
        json_object_set_new(b, "bytes", json_integer((json_int_t)sorted[i].bytes));
        json_object_set_new(b, "xxh3", json_string(hex));
        json_object_set_new(b, "seconds", json_real(sorted[i].seconds));
        if (sorted[i].metrics_json) json_object_set_new(b, "metrics", json_loads(sorted[i].metrics_json, 0, &je));
        json_array_append_new(arr, b);
    }
    free(sorted);
    json_object_set_new(root, "blocks", arr);
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    json_decref(root);
    if (!text) return qs_error_set(err, -ENOMEM, "out of memory");
    size_t len = strlen(text);
    int rc = qs_file_write_durable(path, text, len, err);
    free(text);
    return rc;
}

/* depth-first comparison that reports the first differing key path */
static int diff(json_t *a, json_t *b, char *path, size_t plen, char *what, size_t what_len) {
    if (json_equal(a, b)) return 0;
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        size_t base = strlen(path);
        json_object_foreach(a, k, v) {
            snprintf(path + base, plen - base, "%s%s", base ? "." : "", k);
            json_t *w = json_object_get(b, k);
            if (!w) {
                snprintf(what, what_len, "%s: present before, absent now", path);
                return 1;
            }
            if (diff(v, w, path, plen, what, what_len)) return 1;
        }
        json_object_foreach(b, k, v) {
            if (!json_object_get(a, k)) {
                snprintf(path + base, plen - base, "%s%s", base ? "." : "", k);
                snprintf(what, what_len, "%s: absent before, present now", path);
                return 1;
            }
        }
        path[base] = 0;
    }
    char *x = compact(a), *y = compact(b);
    snprintf(what, what_len, "%s: %.80s -> %.80s", *path ? path : "(fingerprint)", x ? x : "?", y ? y : "?");
    free(x);
    free(y);
    return 1;
}

int qs_fingerprint_diff(const char *old_json, const char *new_json, char *what, size_t what_len) {
    json_error_t je;
    json_t *a = json_loads(old_json, 0, &je), *b = json_loads(new_json, 0, &je);
    char path[512] = "";
    int d = diff(a, b, path, sizeof path, what, what_len);
    json_decref(a);
    json_decref(b);
    return d;
}
