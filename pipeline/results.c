/* pipeline/results.c - a block's finished codes on their way from backend memory to the host.
 * GPTQ and QLLM make a layer's codes (one byte a weight: about 0.85 GB for a 70B block) where
 * the layer is. Brought down at once, the copy would hold up the compute stream; instead each
 * waits, behind a mark, until the next calibration pass (the next stage's Hessians, or the
 * block's advance) has queued a call, and comes down on the copy stream while that call
 * computes (one a call; after the pass's last call, all that are left). The same bytes arrive
 * either way; only when differs. */
#include <string.h>

#include "backend/registry.h"
#include "pipeline/quantize_internal.h"

static int is_method(const qs_qrun *q, const char *m) { return q->o && q->o->method && !strcmp(q->o->method, m); }

int qs_results_can_defer(const qs_qrun *q) {
    /* the staging download is what lets a copy run beside the compute; QLLM with EEC flushes
     * each block of its group as it is quantized (compute_eec.c) */
    return q->o && qs_backend_stages(q->o->device) && (is_method(q, "gptq") || is_method(q, "qllm") || is_method(q, "dlqat"));
}

size_t qs_results_defer_bytes(const qs_qrun *q) {
    if (!q->defer_codes) return 0;
    int out[QS_N_LINEAR], in[QS_N_LINEAR];
    qs_llama_linear_shapes(&q->cfg, out, in);
    size_t b = 0;
    for (int i = 0; i < QS_N_LINEAR; i++) b += (size_t)out[i] * in[i];
    return b;
}

static int bring_down(qs_qrun *q, const qs_pending_result *p, int staged, qs_error *err) {
    qs_backend *be = q->lm.be;
    int rc = staged ? be->ops->stage_download(be, QS_BE_MARK_RESULTS, p->dst, p->src, p->bytes, err)
                    : be->ops->download(be, p->dst, p->src, p->bytes, err);
    be->ops->free(be, p->src);
    return rc;
}

int qs_result_defer(qs_qrun *q, void *dst, void *src, size_t bytes, qs_error *err) {
    qs_backend *be = q->lm.be;
    if (!q->defer_codes || q->n_pending == QS_MAX_PENDING) {
        const qs_pending_result p = {dst, src, bytes};
        return bring_down(q, &p, 0, err);
    }
    q->pending[q->n_pending++] = (qs_pending_result){dst, src, bytes};
    /* the latest point covers every earlier result too */
    return be->ops->mark(be, QS_BE_MARK_RESULTS, err);
}

static int flush_first(qs_qrun *q, int beside, qs_error *err) {
    if (!q->n_pending) return 0;
    const qs_pending_result p = q->pending[0];
    for (int i = 1; i < q->n_pending; i++) q->pending[i - 1] = q->pending[i];
    q->n_pending--;
    const int rc = bring_down(q, &p, 1, err);
    if (!rc && beside) q->codes_beside += p.bytes;
    return rc;
}

/* beside the call just queued: one, or after a pass's last call all that are left */
static int flush(qs_qrun *q, int all, int beside, qs_error *err) {
    int rc = flush_first(q, beside, err);
    while (all && q->n_pending && !rc) rc = flush_first(q, beside, err);
    return rc;
}

int qs_result_flush_beside(qs_qrun *q, int last, qs_error *err) { return flush(q, last, 1, err); }

int qs_result_flush(qs_qrun *q, qs_error *err) { return flush(q, 1, 0, err); }

int qs_results_end(qs_qrun *q, int rc, qs_error *err) {
    if (!rc) rc = qs_result_flush(q, err);
    for (int i = 0; i < q->n_pending; i++) q->lm.be->ops->free(q->lm.be, q->pending[i].src);
    q->n_pending = 0;
    return rc;
}
