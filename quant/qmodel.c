/* quant/qmodel.c - a quantized run opened as a model. */
#include "quant/qmodel.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "quant/qblock.h"

int qs_qmodel_is_run(const char *dir) {
    char *p = qs_path_join(dir, "manifest.json");
    int yes = access(p, F_OK) == 0;
    free(p);
    return yes;
}

void qs_qmodel_close(qs_qmodel *q) {
    if (q->man.fingerprint_json) qs_manifest_free(&q->man);
    memset(q, 0, sizeof *q);
}

int qs_qmodel_open(qs_qmodel *q, const char *dir, int require_all, qs_error *err) {
    memset(q, 0, sizeof *q);
    q->dir = dir;
    char *p = qs_path_join(dir, "manifest.json");
    int rc = qs_manifest_load(&q->man, p, err);
    free(p);
    if (!rc) rc = qs_config_load(&q->cfg, dir, err);
    if (!rc && q->man.n_blocks != q->cfg.n_layers)
        rc = qs_error_set(err, QS_EFORMAT, "%s: manifest.json has %d blocks, config.json %d layers", dir, q->man.n_blocks,
                          q->cfg.n_layers);
    if (!rc && require_all && q->man.n < (size_t)q->man.n_blocks) {
        int first = 0;
        while (qs_manifest_find(&q->man, first)) first++;
        rc = qs_error_set(err, QS_EUSAGE,
                          "%s: the run is not finished (%zu of %d blocks; block %d is missing): resume it with qstream quantize",
                          dir, q->man.n, q->man.n_blocks, first);
    }
    if (rc) qs_qmodel_close(q);
    return rc;
}

int qs_qmodel_load_block(void *ctx, int layer, qs_llama_weights *w, qs_backend *be, qs_error *err) {
    qs_qmodel *q = ctx;
    return qs_qblock_load(w, q->dir, &q->man, &q->cfg, layer, be, err);
}
