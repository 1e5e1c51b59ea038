/* model/logits.c - full logits of one window. */
#include "model/logits.h"

#include <errno.h>
#include <stdlib.h>

#include "model/llama_stream.h"

int qs_logits_compute(const char *dir, const int32_t *ids, int n, const char *device, int threads, float **out,
                      int *vocab, qs_error *err) {
    *out = NULL;
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "no token ids");
    qs_llama_model m;
    QS_FORWARD_IF_ERROR(qs_llama_model_open(&m, dir, device, threads, err));
    qs_backend *be = m.be;
    const int H = m.cfg.hidden_size, V = (int)m.head->shape[0], VC = QS_LLAMA_ROW_CHUNK;
    float *h = malloc(sizeof(float) * (size_t)n * H), *lg = malloc(sizeof(float) * (size_t)n * V);
    float *rows = malloc(sizeof(float) * (size_t)VC * H), *chunk = malloc(sizeof(float) * (size_t)n * VC);
    float *hd = be->ops->alloc(be, sizeof(float) * (size_t)n * H), *wd = be->ops->alloc(be, sizeof(float) * (size_t)VC * H);
    float *ld = be->ops->alloc(be, sizeof(float) * (size_t)n * VC);
    int rc = h && lg && rows && chunk && hd && wd && ld ? 0 : qs_error_set(err, -ENOMEM, "logits: out of memory for %d tokens", n);
    if (!rc) rc = qs_llama_embed(&m, ids, (size_t)n, h, err);
    if (!rc) rc = qs_llama_run_blocks(&m, h, 1, n, err);
    if (!rc) rc = be->ops->upload(be, hd, h, sizeof(float) * (size_t)n * H, err);
    for (int v0 = 0; v0 < V && !rc; v0 += VC) {
        int vc = V - v0 < VC ? V - v0 : VC;
        rc = qs_llama_head_rows(&m, v0, vc, rows, err);
        if (!rc) rc = be->ops->upload(be, wd, rows, sizeof(float) * (size_t)vc * H, err);
        if (!rc && be->ops->set_window_rows) rc = be->ops->set_window_rows(be, 0, err);
        if (!rc) rc = be->ops->gemm(be, 0, 1, n, vc, H, 1.0f, hd, H, wd, H, 0.0f, ld, vc, err); /* [n, vc] */
        if (!rc) rc = be->ops->download(be, chunk, ld, sizeof(float) * (size_t)n * vc, err);
        for (int t = 0; t < n && !rc; t++)
            for (int j = 0; j < vc; j++) lg[(size_t)t * V + v0 + j] = chunk[(size_t)t * vc + j];
    }
    free(h);
    free(rows);
    free(chunk);
    be->ops->free(be, hd);
    be->ops->free(be, wd);
    be->ops->free(be, ld);
    qs_llama_model_close(&m);
    if (rc) {
        free(lg);
        return rc;
    }
    *out = lg;
    *vocab = V;
    return 0;
}
