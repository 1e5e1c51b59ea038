/* pipeline/calib_state.c - the calibration hidden states of the quantized path: the embedding
 * rows of the calibration windows, then each finished block's output. On resume the finished
 * blocks are replayed forward from their shards (the same dequantized weights and the same calls
 * as the run that wrote them, so the states are bit-identical). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "backend/registry.h"
#include "base/fileio.h"
#include "checkpoint/shard.h"
#include "pipeline/quantize_internal.h"
#include "quant/gptq.h"
#include "quant/qmodel.h"

#define TOKENS_PER_CALL 4096 /* tokens of whole windows per backend call */

static int max_in(const qs_model_config *c) {
    int q = c->n_heads * c->head_dim, m = c->hidden_size;
    if (q > m) m = q;
    if (c->intermediate_size > m) m = c->intermediate_size;
    return m;
}

static int is_gptq(const qs_qrun *q) { return q->o && q->o->method && !strcmp(q->o->method, "gptq"); }

/* GPTQ's backend memory at its largest stage ({q, k, v}, {o}, {gate, up}, {down}): *weights the
 * block's weights then (the earlier stages' linears in bf16 where q->bf16_weights, the rest
 * float, and the norms and biases), and the return value the stage's own: its Hessian while it
 * accumulates, then a layer's working set (quant/gptq.h: its factor, codes, with act-order a
 * copy of it) with the Hessian beside it unless q->gptq_h_host, and (bf16) the layer's bf16
 * copy made once the working set is freed */
static size_t gptq_stage_bytes(const qs_qrun *q, size_t *weights) {
    *weights = qs_llama_weights_bytes(&q->cfg);
    if (!is_gptq(q)) return 0;
    int out[7], in[7];
    qs_llama_linear_shapes(&q->cfg, out, in);
    const int stage_of[7] = {0, 0, 0, 1, 2, 2, 3}, in_of[4] = {in[0], in[3], in[4], in[6]}; /* each stage's input */
    const qs_gptq_opts go = {.q = q->o->q, .block_size = q->o->gptq_block, .act_order = q->o->act_order,
                             .in_place_reorder = q->gptq_reorder_in_place};
    size_t lin = 0;
    for (int i = 0; i < 7; i++) lin += sizeof(float) * (size_t)out[i] * in[i];
    const size_t other = *weights - lin;
    size_t best = 0, best_w = *weights, best_work = 0;
    for (int st = 0; st < 4; st++) {
        size_t w = other, ws = 0;
        const size_t hess = sizeof(float) * (size_t)in_of[st] * in_of[st];
        for (int i = 0; i < 7; i++) {
            const size_t n = (size_t)out[i] * in[i];
            w += (stage_of[i] < st && q->bf16_weights ? sizeof(uint16_t) : sizeof(float)) * n;
            if (stage_of[i] != st) continue;
            size_t b = qs_gptq_backend_bytes(out[i], in[i], &go, 1); /* compute_gptq passes the layer */
            if (q->bf16_weights && sizeof(uint16_t) * n > b) b = sizeof(uint16_t) * n;
            ws = b > ws ? b : ws;
        }
        size_t work = (q->gptq_h_host ? 0 : hess) + ws;
        if (work < hess) work = hess;
        if (w + work > best) best = w + work, best_w = w, best_work = work;
    }
    *weights = best_w;
    return best_work;
}

/* GPTQ's host memory at its largest stage (n inputs): where the Hessian comes to the host
 * (q->gptq_h_host) the stage's Hessian and, for a stage of several linears, the copy all but the
 * last work on; and the matrix to factor, unless the device factors it where it is (cuda's
 * cuSOLVER; the CPU backends hand it to the host's LAPACK: quant/gptq.c) */
static size_t gptq_host_bytes(const qs_qrun *q) {
    if (!is_gptq(q)) return 0;
    const qs_model_config *c = &q->cfg;
    const size_t n[4] = {(size_t)c->hidden_size, (size_t)c->n_heads * c->head_dim, (size_t)c->hidden_size,
                         (size_t)c->intermediate_size};
    const int layers[4] = {3, 1, 2, 1}, h_host = q->gptq_h_host, host_factor = qs_backend_host_memory(q->o->device);
    size_t b = 0;
    for (int st = 0; st < 4; st++) {
        const size_t m = (size_t)(h_host + (h_host && layers[st] > 1) + (h_host || host_factor)) * n[st] * n[st];
        b = m > b ? m : b;
    }
    return sizeof(float) * b;
}

static size_t reassembly_bytes(const qs_qrun *q);
static int reassembly_windows(const qs_qrun *q);

/* QLLM's threshold search keeps on the host its consumers' float weights, a site's
 * concatenation of them and the sample's inputs and outputs (compute_qllm.c qs_qllm_cr_search),
 * all freed when it returns */
size_t qs_calib_search_host_bytes(const qs_qrun *q) {
    if (!reassembly_bytes(q)) return 0;
    const qs_model_config *c = &q->cfg;
    const size_t Ts = (size_t)reassembly_windows(q) * q->calib.seqlen, I = (size_t)c->intermediate_size;
    return qs_llama_weights_bytes(c) + sizeof(float) * (2 * I * c->hidden_size + 3 * Ts * I);
}

/* the host's copies beside it: one linear as float (a tensor widened for its upload, GPTQ's
 * layer as stored), and the search's */
static size_t host_copies_bytes(const qs_qrun *q) {
    int out[7], in[7];
    qs_llama_linear_shapes(&q->cfg, out, in);
    size_t lin = 0;
    for (int i = 0; i < 7; i++) lin = (size_t)out[i] * in[i] > lin ? (size_t)out[i] * in[i] : lin;
    return sizeof(float) * lin + qs_calib_search_host_bytes(q);
}

/* the search sample's windows (compute_qllm.c qs_qllm_cr_search) */
static int reassembly_windows(const qs_qrun *q) {
    int n = q->o->cr_tokens / q->calib.seqlen;
    if (n < 1) n = 1;
    return n < q->calib.nsamples ? n : q->calib.nsamples;
}

/* a consumer's [rows, cols] weights for a candidate (compute_qllm.c consumer_weights), in floats:
 * float, or bf16 (half) with a float row chunk beside it while it converts */
static size_t consumer_floats(const qs_qrun *q, size_t rows, size_t cols) {
    if (!q->cr_bf16) return rows * cols;
    size_t chunk = (size_t)qs_qllm_cr_chunk_rows((int)cols);
    return (rows * cols + 1) / 2 + (chunk < rows ? chunk : rows) * cols;
}

/* QLLM's channel reassembly search beside them: a site's output on the search sample
 * (compute_qllm.c site_output) holds the sample, a candidate's input, the site's weights
 * reassembled, their outputs and (attention) the attention output, the largest of the three
 * sites, and a candidate's maps (3 x C values) */
static size_t reassembly_bytes(const qs_qrun *q) {
    if (!q->o || !q->o->method || strcmp(q->o->method, "qllm") || !q->o->cr) return 0;
    const qs_model_config *c = &q->cfg;
    const size_t L = (size_t)q->calib.seqlen, H = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    const size_t Qd = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    const size_t T = (size_t)reassembly_windows(q) * L;
    /* per site: the sample kept there and a candidate's input (2 T C), its weights (each
     * consumer's stays until the site's output is taken; with bf16, each counted with a
     * conversion chunk, though one is there at a time), outputs */
    const size_t wq = consumer_floats(q, Qd, H), wkv = consumer_floats(q, KV, H), wi = consumer_floats(q, I, H),
                 wd = consumer_floats(q, H, I);
    size_t s0 = 2 * T * H + wq + 2 * wkv + (Qd + 2 * KV) * T + T * Qd, s1 = 2 * T * H + 2 * wi + 2 * I * T,
           s2 = 2 * T * I + wd + H * T;
    size_t most = s0 > s1 ? s0 : s1;
    return sizeof(float) * ((most > s2 ? most : s2) + 3 * (H > I ? H : I));
}

size_t qs_calib_reassembly_bytes(const qs_qrun *q) { return reassembly_bytes(q); }

/* QLLM's final quantization of its largest linear where it is (compute_qllm.c quantize_linear):
 * the codes (with q->defer_codes counted with the block's), quantizers and rows' errors; after
 * the search, so the two share memory */
static size_t qllm_codes_bytes(const qs_qrun *q) {
    if (!q->o || !q->o->method || strcmp(q->o->method, "qllm")) return 0;
    int out[7], in[7];
    qs_llama_linear_shapes(&q->cfg, out, in);
    size_t most = 0;
    for (int i = 0; i < 7; i++) {
        const size_t ng = (size_t)qs_qconfig_groups(&q->o->q, in[i]);
        const size_t b = (q->defer_codes ? 0 : (size_t)out[i] * in[i]) + 8 * (size_t)out[i] * ng + 8 * (size_t)out[i];
        most = b > most ? b : most;
    }
    return most;
}

/* what a block step holds beside its weights and activations for a while: QLLM's search, or its
 * final quantization */
static size_t qllm_bytes(const qs_qrun *q) {
    const size_t ra = reassembly_bytes(q), co = qllm_codes_bytes(q);
    return ra > co ? ra : co;
}

/* what the device's ops keep for themselves (cuda: the cuBLAS workspace, attention scratch,
 * and with GPTQ cuSOLVER's workspace for the largest factor) */
static size_t reserve_bytes(const qs_qrun *q, int per) {
    const qs_model_config *c = &q->cfg;
    /* linear_bf16's input scratch grows to its largest call and stays: the search sample's too */
    const int calls = q->cr_bf16 && reassembly_windows(q) > per ? reassembly_windows(q) : per;
    return qs_backend_reserve_bytes(q->o ? q->o->device : NULL, q->calib.seqlen, c->n_heads, c->n_kv_heads, c->head_dim,
                                    max_in(c), calls * q->calib.seqlen, is_gptq(q) ? max_in(c) : 0,
                                    q->bf16_weights || q->eec_bf16 || q->cr_bf16);
}

#define STAGED_UNITS 3 /* one per pipeline slot: LOAD may stage two units ahead of COMPUTE's */

/* backend memory of a block step with per windows a call: the block's float weights, the
 * forward's activations, the call's hidden states, GPTQ's working set or QLLM's search, the
 * device's own scratch, the staged units, and the codes on their way down (q->defer_codes:
 * all of a block's, though GPTQ's working set counts its layer's once more) */
size_t qs_calib_device_bytes(const qs_qrun *q, int per) {
    size_t call = (size_t)per * q->calib.seqlen;
    /* the staged units, and the next call's windows */
    size_t staged = q->stage ? (size_t)STAGED_UNITS * q->K * q->stage_block + sizeof(float) * call * q->cfg.hidden_size : 0;
    size_t weights;
    const size_t gptq = gptq_stage_bytes(q, &weights);
    return weights + qs_llama_scratch_bytes(&q->cfg, (int)call) + sizeof(float) * call * q->cfg.hidden_size + gptq +
           qllm_bytes(q) + reserve_bytes(q, per) + staged + qs_results_defer_bytes(q);
}

void qs_calib_plan_stage(qs_qrun *q, size_t stage_block, size_t gpu_mem) {
    q->stage_block = stage_block;
    q->gptq_h_host = q->gptq_reorder_in_place = 0;
    q->stage = qs_backend_stages(q->o->device);
    q->defer_codes = qs_results_can_defer(q);
    if (!gpu_mem) return;
    if (q->defer_codes && qs_calib_device_bytes(q, 1) > gpu_mem) q->defer_codes = 0;
    /* given up in this order where one window's step does not fit, each costing more time than
     * the one before and none changing a bit: the codes' deferred download (each comes down
     * at once, the compute stream waiting for it), the staging (an upload per block moves into
     * COMPUTE), GPTQ's act-order copy of a layer (two uploads of it instead), GPTQ's Hessians
     * on the device (the matrix to factor made on the host and uploaded); after each the staging
     * is tried again */
    int *gives[2] = {&q->gptq_reorder_in_place, &q->gptq_h_host};
    const int applies[2] = {is_gptq(q) && q->o->act_order, is_gptq(q)};
    if (q->stage && qs_calib_device_bytes(q, 1) > gpu_mem) q->stage = 0;
    for (int g = 0; g < 2; g++) {
        if (!applies[g] || qs_calib_device_bytes(q, 1) <= gpu_mem) continue;
        *gives[g] = 1;
        q->stage = qs_backend_stages(q->o->device);
        if (q->stage && qs_calib_device_bytes(q, 1) > gpu_mem) q->stage = 0;
    }
}

int qs_calib_pin(qs_qrun *q, void *p, size_t bytes, qs_error *err) {
    qs_backend *be = q->lm.be;
    (void)err;
    if (!p || !be || !be->ops->host_register) return 0;
    qs_error e = {0};
    if (be->ops->host_register(be, p, bytes, &e)) { /* only slower: copies from pageable memory are staged by the driver */
        if (!q->pin_warned)
            fprintf(stderr, "qstream: warning: could not pin %.1f MiB of host memory (%s); its copies run unpinned\n",
                    bytes / 1048576.0, e.msg);
        q->pin_warned = 1;
    }
    return 0;
}

void qs_calib_unpin(qs_qrun *q, void *p) {
    qs_backend *be = q->lm.be;
    if (p && be && be->ops->host_unregister) be->ops->host_unregister(be, p);
}

int qs_calib_plan_per(qs_qrun *q, size_t gpu_mem, qs_error *err) {
    int per = TOKENS_PER_CALL / q->calib.seqlen;
    if (per < 1) per = 1;
    if (per > q->calib.nsamples) per = q->calib.nsamples;
    while (gpu_mem && per > 1 && qs_calib_device_bytes(q, per) > gpu_mem) per--;
    size_t wb;
    const size_t hess = gptq_stage_bytes(q, &wb), one = qs_calib_device_bytes(q, 1);
    const size_t ra = qllm_bytes(q), res = reserve_bytes(q, 1);
    char hs[128] = "", rs[80] = "", ws[64] = "float weights";
    if (hess && q->bf16_weights) snprintf(ws, sizeof ws, "weights at GPTQ's largest stage, the earlier ones in bf16");
    if (hess)
        snprintf(hs, sizeof hs, ", GPTQ's largest layer with %s (%.1f MiB)",
                 q->gptq_h_host ? "its factor, its Hessian on the host" : "its Hessian and factor", hess / 1048576.0);
    if (ra) snprintf(hs, sizeof hs, ", %s (%.1f MiB)", reassembly_bytes(q) >= ra ? "the channel reassembly search" : "a linear's codes", ra / 1048576.0);
    if (res) snprintf(rs, sizeof rs, ", the %s ops' own scratch (%.1f MiB)", q->o->device, res / 1048576.0);
    QS_RETURN_ERROR_IF(gpu_mem && one > gpu_mem, QS_ENOMEMBUDGET,
                       "--gpu-mem %.1f MiB cannot hold one block's %s (%.1f MiB)%s%s and the activations of "
                       "one calibration window of %d tokens (%.1f MiB); nothing was written",
                       gpu_mem / 1048576.0, ws, wb / 1048576.0, hs, rs, q->calib.seqlen,
                       (one - wb - hess - ra - res) / 1048576.0);
    q->per = per;
    return 0;
}

static int checkpoint_load(qs_qrun *q, int blk);
static int ckpt_parts(const qs_qrun *q);

size_t qs_calib_plan_bytes(const qs_qrun *q, int spill) {
    const qs_model_config *c = &q->cfg;
    size_t tok = (size_t)q->calib.nsamples * q->calib.seqlen, call = (size_t)q->per * q->calib.seqlen;
    size_t mi = (size_t)max_in(c);
    const size_t ns = q->n_states > 1 ? 2 : 1;
    /* where the device's memory is the host's, all of a block step's backend memory (the codes
     * each slot keeps for STORE are the slot's: quantize.c) */
    const size_t backend = qs_backend_host_memory(q->o->device) ? qs_calib_device_bytes(q, q->per) : 0;
    return sizeof(float) * (ns * (spill ? call + 2048 : tok) * c->hidden_size /* x (and x_fp), or a call's slab each */
                            + call * mi)                                      /* hx */
           + gptq_host_bytes(q) + host_copies_bytes(q) + backend +
           (!spill && q->o->act_checkpoints ? qs_calib_checkpoint_scratch(q) : 0); /* a checkpoint's part */
}

static size_t chunk_bytes(const qs_qrun *q, int k) {
    return sizeof(float) * (size_t)k * q->calib.seqlen * q->cfg.hidden_size;
}

int qs_calib_state_get(qs_qrun *q, int which, int s0, int k, float **xs, qs_error *err) {
    if (!q->spill) {
        *xs = (which == QS_STATE_FP ? q->x_fp : q->x) + (size_t)s0 * q->calib.seqlen * q->cfg.hidden_size;
        return 0;
    }
    /* state `which` starts at which * (all windows) in the spill file */
    qs_read_range r = {.file = 0, .offset = chunk_bytes(q, which * q->calib.nsamples + s0), .len = chunk_bytes(q, k),
                       .what = which == QS_STATE_FP ? "full-precision calibration states" : "calibration states"};
    QS_FORWARD_IF_ERROR(qs_reader_read(q->spill_reader, &r, 1, q->spill_slab[which], q->spill_slab_bytes, err));
    *xs = (float *)r.data; /* 4-byte aligned: offsets are multiples of 4 inside a page-aligned slab */
    return 0;
}

int qs_calib_x_get(qs_qrun *q, int s0, int k, float **xs, qs_error *err) {
    return qs_calib_state_get(q, QS_STATE_Q, s0, k, xs, err);
}

int qs_calib_x_put(qs_qrun *q, int s0, int k, const float *xs, qs_error *err) {
    return qs_calib_state_put(q, QS_STATE_Q, s0, k, xs, err);
}

int qs_calib_state_put(qs_qrun *q, int which, int s0, int k, const float *xs, qs_error *err) {
    if (!q->spill) return 0;
    const char *p = (const char *)xs;
    size_t left = chunk_bytes(q, k);
    off_t off = (off_t)chunk_bytes(q, which * q->calib.nsamples + s0);
    while (left) {
        ssize_t n = pwrite(q->spill_fd, p, left, off);
        if (n < 0 && errno == EINTR) continue;
        QS_RETURN_ERROR_IF(n <= 0, -(n < 0 ? errno : EIO), "%s: writing calibration states: %s", q->spill_path,
                           strerror(n < 0 ? errno : EIO));
        p += n, left -= (size_t)n, off += n;
    }
    return 0;
}

static int spill_open(qs_qrun *q, qs_error *err) {
    char *dir = qs_path_join(q->o->out_dir, "acts");
    int rc = qs_mkdir_p(dir, err);
    free(dir);
    if (rc) return rc;
    q->spill_path = qs_path_join(q->o->out_dir, "acts/spill.f32");
    q->spill_fd = open(q->spill_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    QS_RETURN_ERROR_IF(q->spill_fd < 0, -errno, "%s: %s", q->spill_path, strerror(errno));
    const int ns = q->n_states > 1 ? 2 : 1;
    QS_RETURN_ERROR_IF(ftruncate(q->spill_fd, (off_t)chunk_bytes(q, ns * q->calib.nsamples)) != 0, -errno,
                       "%s: cannot size the spill file to %zu bytes: %s", q->spill_path,
                       chunk_bytes(q, ns * q->calib.nsamples), strerror(errno));
    const char *paths[1] = {q->spill_path};
    QS_FORWARD_IF_ERROR(qs_reader_open(&q->spill_reader, paths, 1, &q->o->reader, err));
    qs_read_range r = {.file = 0, .offset = 4, .len = chunk_bytes(q, q->per)}; /* worst alignment */
    q->spill_slab_bytes = qs_reader_slab_bytes(q->spill_reader, &r, 1) + QS_READER_ALIGN;
    for (int i = 0; i < ns; i++) {
        q->spill_slab[i] = qs_reader_slab_alloc(q->spill_slab_bytes);
        QS_RETURN_ERROR_IF(!q->spill_slab[i], -ENOMEM, "out of memory for a %zu-byte spill slab", q->spill_slab_bytes);
    }
    return 0;
}

void qs_calib_teardown(qs_qrun *q) {
    void *pinned[] = {q->x, q->x_fp, q->hx, q->spill_slab[0], q->spill_slab[1]};
    for (size_t i = 0; i < sizeof pinned / sizeof *pinned; i++) qs_calib_unpin(q, pinned[i]);
    if (q->spill_reader) qs_reader_close(q->spill_reader);
    if (q->spill_fd > 0) close(q->spill_fd);
    if (q->spill_path) unlink(q->spill_path);
    free(q->spill_path);
    free(q->spill_slab[0]), free(q->spill_slab[1]);
    q->spill_reader = NULL, q->spill_fd = 0, q->spill_path = NULL, q->spill_slab[0] = q->spill_slab[1] = NULL;
    if (q->lm.be) {
        q->lm.be->ops->free(q->lm.be, q->xbuf);
        q->lm.be->ops->free(q->lm.be, q->xbuf2);
        qs_llama_scratch_free(&q->scr, q->lm.be);
    }
    free(q->x), free(q->x_fp);
    free(q->hx);
    q->x = q->x_fp = q->hx = q->xbuf = q->xbuf2 = NULL;
    qs_llama_model_close(&q->lm);
}

int qs_calib_advance(qs_qrun *q, const qs_llama_weights *w, qs_error *err) {
    return qs_calib_state_advance(q, QS_STATE_Q, w, err);
}

/* out passes on a staging backend: call i+1 is issued before call i's result comes down on the
 * copy stream (after call i's mark), so the bus and the kernels work at once. Buffer i % 2 is
 * refilled (call i+2) only after call i's download, which waited for call i's ops. */
static int run_overlapped(qs_qrun *q, const qs_calib_pass *p, qs_error *err) {
    qs_backend *be = q->lm.be;
    const int ns = q->calib.nsamples, per = q->per;
    const size_t win = sizeof(float) * (size_t)q->calib.seqlen * q->cfg.hidden_size;
    float *buf[2] = {q->xbuf, q->xbuf2}, *xs = NULL, *next = NULL;
    int k = ns < per ? ns : per;
    QS_FORWARD_IF_ERROR(qs_calib_state_get(q, p->which, 0, k, &xs, err));
    QS_FORWARD_IF_ERROR(be->ops->upload(be, buf[0], xs, win * (size_t)k, err));
    QS_FORWARD_IF_ERROR(p->issue(q, p->ctx, 0, k, buf[0], err));
    QS_FORWARD_IF_ERROR(be->ops->mark(be, 0, err));
    QS_FORWARD_IF_ERROR(qs_result_flush_beside(q, k >= ns, err));
    for (int i = 0, s0 = 0; s0 < ns; i++) {
        const int s1 = s0 + k, k1 = ns - s1 < per ? ns - s1 : per, b = i & 1;
        if (k1 > 0) {
            QS_FORWARD_IF_ERROR(qs_calib_state_get(q, p->which, s1, k1, &next, err));
            QS_FORWARD_IF_ERROR(be->ops->stage_upload(be, buf[!b], next, win * (size_t)k1, err));
            QS_FORWARD_IF_ERROR(p->issue(q, p->ctx, s1, k1, buf[!b], err));
            QS_FORWARD_IF_ERROR(be->ops->mark(be, !b, err));
            QS_FORWARD_IF_ERROR(qs_result_flush_beside(q, s1 + k1 >= ns, err));
        }
        QS_FORWARD_IF_ERROR(be->ops->stage_download(be, b, xs, buf[b], win * (size_t)k, err));
        QS_FORWARD_IF_ERROR(qs_calib_state_put(q, p->which, s0, k, xs, err));
        /* spilled: the call's windows come back from the file into the slab the put just wrote
         * out (next and xs are the same slab; the next call's input is on the device already) */
        s0 = s1, k = k1, xs = next;
    }
    return be->ops->synchronize(be, err);
}

int qs_calib_run(qs_qrun *q, const qs_calib_pass *p, qs_error *err) {
    qs_backend *be = q->lm.be;
    if (p->out && q->xbuf2 && be->ops->mark && be->ops->stage_download) return run_overlapped(q, p, err);
    const int ns = q->calib.nsamples, per = q->per;
    const size_t win = sizeof(float) * (size_t)q->calib.seqlen * q->cfg.hidden_size;
    const int two = q->xbuf2 && be->ops->mark && be->ops->wait_mark;
    float *buf[2] = {q->xbuf, two ? q->xbuf2 : q->xbuf}, *xs = NULL;
    int k = ns < per ? ns : per;
    QS_FORWARD_IF_ERROR(qs_calib_state_get(q, p->which, 0, k, &xs, err));
    QS_FORWARD_IF_ERROR(be->ops->upload(be, buf[0], xs, win * (size_t)k, err));
    for (int i = 0, s0 = 0; s0 < ns; i++) {
        const int s1 = s0 + k, k1 = ns - s1 < per ? ns - s1 : per;
        float *x = buf[i & 1], *next = NULL;
        QS_FORWARD_IF_ERROR(p->issue(q, p->ctx, s0, k, x, err));
        if (two) QS_FORWARD_IF_ERROR(be->ops->mark(be, i & 1, err));
        QS_FORWARD_IF_ERROR(qs_result_flush_beside(q, s1 >= ns, err));
        if (two && k1 > 0) { /* the next call crosses the bus while this one computes */
            QS_FORWARD_IF_ERROR(qs_calib_state_get(q, p->which, s1, k1, &next, err));
            /* into the buffer of call i - 1, which may still run (a pass without host results
             * never waits): after its ops, whose mark is the other slot */
            if (i > 0) QS_FORWARD_IF_ERROR(be->ops->wait_mark(be, (i + 1) & 1, err));
            QS_FORWARD_IF_ERROR(be->ops->stage_upload(be, buf[(i + 1) & 1], next, win * (size_t)k1, err));
        }
        if (p->finish) QS_FORWARD_IF_ERROR(p->finish(q, p->ctx, s0, k, x, xs, err));
        if (p->out) {
            QS_FORWARD_IF_ERROR(be->ops->download(be, xs, x, win * (size_t)k, err));
            QS_FORWARD_IF_ERROR(qs_calib_state_put(q, p->which, s0, k, xs, err));
        }
        if (!two && k1 > 0) {
            QS_FORWARD_IF_ERROR(qs_calib_state_get(q, p->which, s1, k1, &next, err));
            QS_FORWARD_IF_ERROR(be->ops->upload(be, buf[0], next, win * (size_t)k1, err));
        }
        s0 = s1, k = k1, xs = next;
    }
    return 0;
}

static int advance_issue(qs_qrun *q, void *ctx, int s0, int k, float *x, qs_error *err) {
    (void)s0;
    return qs_llama_block_forward(q->lm.be, &q->cfg, (const qs_llama_weights *)ctx, x, k, q->calib.seqlen, &q->scr, err);
}

int qs_calib_state_advance(qs_qrun *q, int which, const qs_llama_weights *w, qs_error *err) {
    const qs_calib_pass p = {.which = which, .out = 1, .issue = advance_issue, .ctx = (void *)w};
    return qs_calib_run(q, &p, err);
}

int qs_calib_reembed(qs_qrun *q, qs_error *err) {
    const int L = q->calib.seqlen, H = q->cfg.hidden_size;
    const size_t tok = (size_t)q->calib.nsamples * L;
    int rc = 0;
    if (!q->spill) rc = qs_llama_embed(&q->lm, q->calib.ids, tok, q->x, err);
    if (!rc && !q->spill && q->x_fp) memcpy(q->x_fp, q->x, sizeof(float) * tok * H); /* both paths start at the embedding */
    for (int s0 = 0; !rc && q->spill && s0 < q->calib.nsamples; s0 += q->per) { /* embed a call's windows at a time */
        int k = q->calib.nsamples - s0 < q->per ? q->calib.nsamples - s0 : q->per;
        rc = qs_llama_embed(&q->lm, q->calib.ids + (size_t)s0 * L, (size_t)k * L, q->hx, err);
        if (!rc) rc = qs_calib_x_put(q, s0, k, q->hx, err);
        if (!rc && q->n_states > 1) rc = qs_calib_state_put(q, QS_STATE_FP, s0, k, q->hx, err);
    }
    return rc;
}

int qs_calib_setup(qs_qrun *q, int first, qs_error *err) {
    const qs_quantize_opts *o = q->o;
    const int L = q->calib.seqlen, H = q->cfg.hidden_size;
    int rc = qs_llama_model_open(&q->lm, o->model_dir, o->device, o->threads, err);
    size_t tok = (size_t)q->calib.nsamples * L;
    if (!rc) {
        q->x = q->spill ? NULL : malloc(sizeof(float) * tok * H);
        if (q->n_states > 1 && !q->spill && q->x && !(q->x_fp = malloc(sizeof(float) * tok * H))) free(q->x), q->x = NULL;
        q->hx = malloc(sizeof(float) * (size_t)q->per * L * max_in(&q->cfg));
        q->xbuf = q->lm.be->ops->alloc(q->lm.be, sizeof(float) * (size_t)q->per * L * H);
        if (q->stage && q->lm.be->ops->stage_upload) { /* the copy stream writes it: ready first */
            q->xbuf2 = q->lm.be->ops->alloc(q->lm.be, sizeof(float) * (size_t)q->per * L * H);
            if (q->xbuf2) rc = q->lm.be->ops->synchronize(q->lm.be, err);
        }
        if (!rc && ((!q->x && !q->spill) || !q->hx || !q->xbuf || (q->stage && q->lm.be->ops->stage_upload && !q->xbuf2)))
            rc = qs_error_set(err, -ENOMEM, "out of memory for the calibration states (%zu tokens x %d)", tok, H);
    }
    if (!rc && q->spill) rc = spill_open(q, err);
    const size_t sb = sizeof(float) * tok * H;
    /* every call uploads from and downloads to these: pinned (on a GPU) they move at the bus's rate */
    if (!rc) rc = qs_calib_pin(q, q->x, sb, err);
    if (!rc) rc = qs_calib_pin(q, q->x_fp, sb, err);
    if (!rc) rc = qs_calib_pin(q, q->hx, sizeof(float) * (size_t)q->per * L * max_in(&q->cfg), err);
    for (int i = 0; i < 2 && !rc; i++) rc = qs_calib_pin(q, q->spill_slab[i], q->spill_slab_bytes, err);
    if (!rc) rc = qs_llama_scratch_init(&q->scr, &q->cfg, q->per * L, q->lm.be, err);
    if (!rc) rc = qs_calib_reembed(q, err);
    if (!rc && q->spill && o->progress)
        fprintf(stderr, "calibration states (%.2f GiB) spill to %s\n", chunk_bytes(q, q->calib.nsamples) / 1073741824.0,
                q->spill_path);
    /* the latest intact checkpoint at or before the last finished block, then the blocks after
     * it replayed from their shards */
    q->ckpt_from = -1;
    int touched = 0;
    for (int b = first - 1; !rc && q->act_ckpt && b >= 0 && q->ckpt_from < 0; b--) {
        int lr = checkpoint_load(q, b);
        if (lr == 0) q->ckpt_from = b;
        touched |= lr == -2;
    }
    if (!rc && q->ckpt_from < 0 && touched) { /* a checkpoint that failed half read: the embedding again */
        rc = qs_llama_embed(&q->lm, q->calib.ids, tok, q->x, err);
        if (!rc && q->x_fp) memcpy(q->x_fp, q->x, sizeof(float) * tok * H);
    }
    if (!rc && q->ckpt_from >= 0 && o->progress)
        fprintf(stderr, "resumed the calibration states from the checkpoint after block %d (acts/acts-%04d-*.qsh, %d part%s)\n",
                q->ckpt_from, q->ckpt_from, ckpt_parts(q), ckpt_parts(q) > 1 ? "s" : "");
    if (!rc && q->ckpt_from < first - 1) { /* replay the finished blocks from their shards */
        q->replayed = first - 1 - q->ckpt_from;
        qs_qmodel qm = {.dir = o->out_dir, .man = q->man, .cfg = q->cfg};
        double t0 = qs_now();
        for (int b = q->ckpt_from + 1; b < first && !rc; b++) {
            qs_llama_weights w;
            rc = qs_qmodel_load_block(&qm, b, &w, q->lm.be, err);
            if (!rc && q->bf16_weights) rc = qs_gptq_weights_bf16(q, &w, err); /* as the run that wrote it */
            if (!rc) rc = qs_calib_advance(q, &w, err);
            qs_llama_weights_free(&w, q->lm.be);
            if (rc || q->n_states < 2) continue;
            /* the full-precision path: the source model's block, as COMPUTE ran it (float, no
             * activation quantization, no reassembly) */
            rc = qs_llama_weights_load(&w, q->cat, &q->cfg, b, q->lm.be, err);
            if (!rc) rc = qs_calib_state_advance(q, QS_STATE_FP, &w, err);
            qs_llama_weights_free(&w, q->lm.be);
        }
        if (!rc && o->progress)
            fprintf(stderr, "replayed %d finished blocks on the calibration data in %.1f s\n", q->replayed, qs_now() - t0);
    }
    if (rc) qs_calib_teardown(q);
    return rc;
}

/* A checkpoint is written in parts of whole windows, each a shard of at most QS_CKPT_PART_BYTES
 * per state: writing or reading one part at a time holds a few of its sizes beside the states
 * (a shuffle copy and the compressed frames), not a few of the states' (8.6 GB each at 70B). */
static int ckpt_part_windows(const qs_qrun *q) {
    const size_t win = sizeof(float) * (size_t)q->calib.seqlen * q->cfg.hidden_size;
    const char *e = getenv("QS_ACT_CKPT_PART_BYTES"); /* the tests' small parts */
    size_t w = (e && *e ? strtoull(e, NULL, 10) : QS_CKPT_PART_BYTES) / win;
    return w < 1 ? 1 : w > (size_t)q->calib.nsamples ? q->calib.nsamples : (int)w;
}
static int ckpt_parts(const qs_qrun *q) { return (q->calib.nsamples + ckpt_part_windows(q) - 1) / ckpt_part_windows(q); }
/* part k's windows w0 .. w0 + *nw - 1 */
static int ckpt_part_range(const qs_qrun *q, int k, int *nw) {
    const int wpp = ckpt_part_windows(q), w0 = k * wpp;
    *nw = q->calib.nsamples - w0 < wpp ? q->calib.nsamples - w0 : wpp;
    return w0;
}

size_t qs_calib_checkpoint_scratch(const qs_qrun *q) {
    /* a part's shuffle copy of one state and the compressed frames of both (qs_shard_write), or
     * its compressed and unshuffled copies (qs_shard_read) */
    const size_t part = sizeof(float) * (size_t)ckpt_part_windows(q) * q->calib.seqlen * q->cfg.hidden_size;
    return part + 2 * (part + part / 128 + 4096);
}

static char *ckpt_path(const qs_qrun *q, int blk, int part) {
    char rel[64];
    snprintf(rel, sizeof rel, "acts/acts-%04d-%04d.qsh", blk, part);
    return qs_path_join(q->o->out_dir, rel);
}

/* o->act_checkpoints: write one after this unit? */
static int checkpoint_due(qs_qrun *q) {
    const int every = q->o->act_checkpoints;
    q->ckpt_units++;
    if (every > 0) return q->ckpt_units >= every;
    /* auto: after the first unit (which measures what one costs), then once the run has gone on
     * QS_ACT_CKPT_RATIO times that long: at most 1 / RATIO of the time goes to them, and a resume
     * replays at most the blocks computed since the last one */
    return q->ckpt_cost < 0 || qs_now() - q->ckpt_end >= QS_ACT_CKPT_RATIO * q->ckpt_cost;
}

int qs_calib_checkpoint_write(qs_qrun *q, int blk, qs_qslot *s, qs_error *err) {
    s->ckpt = 0;
    if (!q->act_ckpt || !checkpoint_due(q)) return 0;
    const double t0 = qs_now();
    char *dir = qs_path_join(q->o->out_dir, "acts");
    int rc = qs_mkdir_p(dir, err);
    free(dir);
    if (rc) return rc;
    const int parts = ckpt_parts(q), L = q->calib.seqlen, H = q->cfg.hidden_size;
    qs_shard_opts so = {.zstd_level = 1, .zstd_threads = q->o->zstd_threads};
    /* each part durable on its own; the checkpoint counts only with all of them (checkpoint_load) */
    for (int k = 0; k < parts && !rc; k++) {
        int nw;
        const int w0 = ckpt_part_range(q, k, &nw);
        const size_t off = (size_t)w0 * L * H;
        char meta[200];
        snprintf(meta, sizeof meta,
                 "{\"kind\":\"activations\",\"after_block\":%d,\"run_xxh3\":\"%016llx\",\"part\":%d,\"parts\":%d,"
                 "\"windows\":[%d,%d]}",
                 blk, q->fp_hash, k, parts, w0, w0 + nw);
        qs_shard_tensor t[2] = {{.name = "x", .role = "activations", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                 .shape = {(int64_t)nw * L, H}, .data = q->x + off},
                                {.name = "x_fp", .role = "activations", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                 .shape = {(int64_t)nw * L, H}, .data = q->x_fp ? q->x_fp + off : NULL}};
        char *p = ckpt_path(q, blk, k);
        rc = qs_shard_write(p, blk, meta, t, q->n_states > 1 ? 2 : 1, &so, NULL, err);
        free(p);
    }
    if (rc) return rc;
    s->ckpt = 1;
    q->ckpt_units = 0;
    q->ckpt_end = qs_now();
    q->ckpt_cost = q->ckpt_end - t0;
    q->ckpts++;
    q->ckpt_s += q->ckpt_cost;
    return 0;
}

void qs_calib_checkpoint_prune(const qs_qrun *q, int keep_blk) {
    if (!q->act_ckpt) return;
    const int parts = ckpt_parts(q);
    for (int b = keep_blk - 1; b >= 0; b--) /* the older ones may be any number of blocks back */
        for (int k = 0; k < parts; k++) {
            char *p = ckpt_path(q, b, k);
            unlink(p);
            free(p);
        }
}

/* loads the checkpoint after block blk into q->x (and q->x_fp), part by part; 0 when every part
 * was intact and of this run, -1 when one was not (or is not there) before any state was
 * written, -2 after */
static int checkpoint_load(qs_qrun *q, int blk) {
    const int parts = ckpt_parts(q), L = q->calib.seqlen, H = q->cfg.hidden_size;
    int ok = 1, touched = 0;
    for (int k = 0; k < parts && ok; k++) {
        int nw;
        const int w0 = ckpt_part_range(q, k, &nw);
        char *p = ckpt_path(q, blk, k);
        qs_shard *s = NULL;
        ok = qs_shard_open(&s, p, NULL) == 0 && qs_shard_block(s) == blk && qs_shard_verify(s, NULL) == 0;
        free(p);
        char want[200];
        snprintf(want, sizeof want, "\"run_xxh3\":\"%016llx\",\"part\":%d,\"parts\":%d,\"windows\":[%d,%d]", q->fp_hash,
                 k, parts, w0, w0 + nw);
        ok = ok && strstr(qs_shard_meta_json(s), want) != NULL;
        const size_t want_bytes = sizeof(float) * (size_t)nw * L * H, off = (size_t)w0 * L * H;
        for (int st = 0; ok && st < (q->n_states > 1 ? 2 : 1); st++) {
            const qs_shard_entry *e = qs_shard_find(s, st ? "x_fp" : "x");
            ok = e && e->dtype == QS_DTYPE_F32 && e->size == want_bytes;
            for (size_t i = 0; ok && i < qs_shard_count(s); i++)
                if (qs_shard_at(s, i) == e) ok = qs_shard_read(s, i, (st ? q->x_fp : q->x) + off, NULL) == 0, touched = 1;
        }
        qs_shard_close(s);
    }
    return ok ? 0 : touched ? -2 : -1;
}
