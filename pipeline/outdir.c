/* pipeline/outdir.c - config, tokenizer and non-block tensors of OUT_DIR. */
#include "pipeline/outdir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"

static const char *copied[] = {"config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                               "special_tokens_map.json", "generation_config.json"};

static int exists(const char *dir, const char *name) {
    char *p = qs_path_join(dir, name);
    int yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name, qs_error *err) {
    char *src = qs_path_join(from_dir, name), *dst = qs_path_join(to_dir, name), *buf = NULL;
    size_t len = 0;
    int rc = qs_file_read_all(src, (size_t)1 << 30, &buf, &len, err);
    if (!rc) rc = qs_file_write_durable(dst, buf, len, err);
    free(buf), free(src), free(dst);
    return rc;
}

static int is_block_tensor(const char *name) { return !strncmp(name, "model.layers.", 13); }

int qs_outdir_write_model_files(const char *model_dir, const qs_catalog *cat, const char *out_dir, int force,
                                qs_error *err) {
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++)
        if (exists(model_dir, copied[i]) && (force || !exists(out_dir, copied[i])))
            QS_FORWARD_IF_ERROR(copy_file(model_dir, out_dir, copied[i], err));
    if (!force && exists(out_dir, "model.safetensors")) return 0;
    char *path = qs_path_join(out_dir, "model.safetensors");
    qs_st_writer *w = NULL;
    int rc = qs_st_writer_open(&w, path, err);
    for (size_t i = 0; !rc && i < qs_catalog_count(cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(cat, i);
        if (!is_block_tensor(t->name)) rc = qs_st_writer_declare(w, t->name, t->dtype, t->n_dims, t->shape, err);
    }
    for (size_t i = 0; !rc && i < qs_catalog_count(cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(cat, i);
        if (is_block_tensor(t->name)) continue;
        void *buf = malloc(t->nbytes ? t->nbytes : 1);
        if (!buf) rc = qs_error_set(err, -ENOMEM, "%s: out of memory for tensor '%s' (%llu bytes)", model_dir, t->name,
                                    (unsigned long long)t->nbytes);
        if (!rc) rc = qs_catalog_read_raw(cat, t, buf, err);
        if (!rc) rc = qs_st_writer_write(w, buf, err);
        free(buf);
    }
    if (!rc) rc = qs_st_writer_close(w, err);
    else qs_st_writer_abort(w);
    free(path);
    return rc;
}
