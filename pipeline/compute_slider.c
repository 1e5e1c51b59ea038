/* pipeline/compute_slider.c - COMPUTE for SliderQuant (--method slider, ../shared/METHODS.md):
 * windows of consecutive blocks (quant/slider.h's schedule) trained one after another by block
 * reconstruction, with the trainer's SliderQuant form (model/llama_train.h: LoRA inside the
 * weight quantizer and learnable clipping; the norms frozen).
 *
 * Blocks arrive one at a time (units of one) and COMPUTE holds them (pipeline/engine.h holds)
 * with their float weights and trainers, at most four. When a window's last block arrives the
 * window trains: the full-precision path's states advance (original float weights) to its last
 * block's output, the targets; its input is the quantized path's states, which are the output of
 * the final blocks before its first; each of its trainers gets a fresh AdamW, the parameters
 * carry over from the windows before (the learning rate decays to 0 over each window's steps).
 * After a window, every block the next window no longer holds is final: its codes and grid (the
 * quantizer it trained) go to its slot, the merge writes what they dequantize to, the quantized
 * path advances through it and the slot goes to STORE (at once, qs_pipeline_release, when it
 * is not the block this call is for).
 *
 * Resume: before final blocks are released, the trained parameters of the blocks still held are
 * written durably to OUT_DIR/acts/slider-WWWW.qsh (WWWW the window just trained; tagged with the
 * run's fingerprint hash); a resumed run (the finished blocks replayed from their shards, the
 * full-precision path from the source model) loads the one after the last window that held a
 * finished block, and gives the same bits as an uninterrupted run. STORE removes the older ones.
 *
 * Incremental quantization (q->slider_pass): the first pass runs the whole schedule with the
 * trainer's half form and stores nothing; a final block's parameters go durably to
 * acts/slider-p1-block-NNNN.qsh and the quantized path passes through its half-quantized weights
 * (a_half); its carried parameters are acts/slider-p1-WWWW.qsh. A resumed first pass streams
 * from block 0: the blocks with their parameters on disk are final at once (replayed through
 * them). The second pass starts every block from its first-pass parameters. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "checkpoint/shard.h"
#include "model/llama_train.h"
#include "pipeline/engine.h"
#include "pipeline/quantize_internal.h"
#include "quant/slider.h"

typedef struct slider_blk {
    int layer;
    qs_qslot *s;
    qs_llama_weights w;
    qs_llama_train tr;
    double loss[2]; /* its last window's */
} slider_blk;

typedef struct qs_slider_run {
    qs_slider_window *win;
    int pass;        /* q->slider_pass: 1 the incremental first pass, 2 its second, 0 one pass */
    int trained;     /* blocks before this one are final in this pass (a resume) */
    int n_win, next; /* the next window to train */
    int fp_at;       /* the full-precision states are the output of this block (-1: the embedding) */
    slider_blk *held[QS_SLIDER_MAX_WINDOW + 1]; /* each its own allocation: a trainer borrows its w */
    int n_held;
    /* resume: the carried parameters (host) of blocks carry_layer[k] */
    float *carry[QS_SLIDER_MAX_WINDOW];
    int carry_layer[QS_SLIDER_MAX_WINDOW], n_carry;
} qs_slider_run;

/* the parameters carried after window win (the first pass's have their own names) */
static char *carry_path(const qs_qrun *q, int win) {
    char rel[64];
    snprintf(rel, sizeof rel, q->slider_pass == 1 ? "acts/slider-p1-%04d.qsh" : "acts/slider-%04d.qsh", win);
    return qs_path_join(q->o->out_dir, rel);
}

/* block b's parameters at the end of the first pass */
static char *pass1_path(const qs_qrun *q, int b) {
    char rel[64];
    snprintf(rel, sizeof rel, "acts/slider-p1-block-%04d.qsh", b);
    return qs_path_join(q->o->out_dir, rel);
}

/* the window after the last one that holds block b (the next window to train once b is final) */
static int after_block(const qs_slider_run *sl, int b) {
    int i = 0;
    while (i < sl->n_win && sl->win[i].first <= b) i++;
    return i;
}

static size_t param_bytes(const qs_qrun *q) {
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    return qs_llama_train_param_bytes(&q->cfg, &to);
}

/* opens and verifies the parameters file p, whose meta must hold want */
static int params_open(qs_shard **s, const char *p, const char *want, qs_error *err) {
    int rc = qs_shard_open(s, p, err);
    if (!rc) rc = qs_shard_verify(*s, err);
    if (!rc && !strstr(qs_shard_meta_json(*s), want))
        rc = qs_error_set(err, QS_EMISMATCH, "%s: not this run's SliderQuant parameters", p);
    return rc;
}

/* block b's parameters from the open file s (at p) into a new host buffer *h */
static int params_read(qs_qrun *q, qs_shard *s, const char *p, int b, float **h, qs_error *err) {
    const size_t pb = param_bytes(q);
    char name[32];
    snprintf(name, sizeof name, "block.%d", b);
    const qs_shard_entry *e = qs_shard_find(s, name);
    QS_RETURN_ERROR_IF(!e || e->dtype != QS_DTYPE_F32 || e->size != pb, QS_EFORMAT,
                       "%s: tensor '%s' is missing or not %zu bytes of F32", p, name, pb);
    *h = malloc(pb);
    QS_RETURN_ERROR_IF(!*h, -ENOMEM, "out of memory for %s", p);
    int rc = 0;
    for (size_t i = 0; !rc && i < qs_shard_count(s); i++)
        if (qs_shard_at(s, i) == e) rc = qs_shard_read(s, i, *h, err);
    if (rc) free(*h), *h = NULL;
    return rc;
}

/* the meta of a carry file and of a first-pass block file */
static void carry_meta(const qs_qrun *q, int win, char *m, size_t cap) {
    snprintf(m, cap, "\"kind\":\"slider_carry\",\"run_xxh3\":\"%016llx\",\"window\":%d,\"pass\":%d", q->fp_hash, win,
             q->slider_pass);
}
static void pass1_meta(const qs_qrun *q, int b, char *m, size_t cap) {
    snprintf(m, cap, "\"kind\":\"slider_pass1\",\"run_xxh3\":\"%016llx\",\"block\":%d", q->fp_hash, b);
}

/* loads acts/slider-<win>.qsh: the parameters of the blocks at or after first it holds */
static int carry_load(qs_qrun *q, qs_slider_run *sl, int win, int first, qs_error *err) {
    char *p = carry_path(q, win), want[192];
    carry_meta(q, win, want, sizeof want);
    qs_shard *s = NULL;
    int rc = params_open(&s, p, want, err);
    for (int b = first; !rc && b <= sl->win[win].last; b++) {
        float *h = NULL;
        rc = params_read(q, s, p, b, &h, err);
        if (!rc) sl->carry[sl->n_carry] = h, sl->carry_layer[sl->n_carry++] = b;
    }
    qs_shard_close(s);
    free(p);
    return rc;
}

/* block b's first-pass parameters into a new host buffer *h */
static int pass1_load(qs_qrun *q, int b, float **h, qs_error *err) {
    char *p = pass1_path(q, b), want[192];
    pass1_meta(q, b, want, sizeof want);
    qs_shard *s = NULL;
    int rc = params_open(&s, p, want, err);
    if (!rc) rc = params_read(q, s, p, b, h, err);
    qs_shard_close(s);
    free(p);
    return rc;
}

/* block b's first-pass file is there and this run's (its data is verified when it is read) */
static int pass1_present(const qs_qrun *q, int b) {
    char *p = pass1_path(q, b), want[192];
    pass1_meta(q, b, want, sizeof want);
    qs_shard *s = NULL;
    qs_error e = {0};
    int ok = qs_shard_open(&s, p, &e) == 0 && strstr(qs_shard_meta_json(s), want) != NULL;
    qs_shard_close(s);
    free(p);
    return ok;
}

int qs_slider_pass1_done(const qs_qrun *q) {
    int b = 0;
    while (b < q->cfg.n_layers && pass1_present(q, b)) b++;
    return b;
}

int qs_slider_can_resume(qs_qrun *q, int first) {
    qs_slider_run *keep = q->slider;
    qs_error e = {0};
    q->slider = NULL;
    int ok = qs_slider_begin(q, first, first, &e) == 0;
    qs_slider_end(q);
    q->slider = keep;
    for (int b = first; ok && q->slider_pass == 2 && b < q->cfg.n_layers; b++) ok = pass1_present(q, b);
    return ok;
}

int qs_slider_begin(qs_qrun *q, int first, int trained, qs_error *err) {
    qs_slider_run *sl = calloc(1, sizeof *sl);
    const int L = q->cfg.n_layers;
    QS_RETURN_ERROR_IF(!sl, -ENOMEM, "out of memory for the window schedule");
    q->slider = sl;
    sl->n_win = qs_slider_count(L);
    sl->win = malloc(sizeof *sl->win * (size_t)(sl->n_win ? sl->n_win : 1));
    QS_RETURN_ERROR_IF(!sl->win, -ENOMEM, "out of memory for the window schedule");
    qs_slider_schedule(L, sl->win);
    sl->pass = q->slider_pass;
    sl->trained = trained;
    sl->fp_at = first - 1;
    sl->next = after_block(sl, trained - 1);
    /* the last trained window still holds blocks at or after `trained`: their parameters */
    if (trained > 0 && sl->next > 0 && sl->win[sl->next - 1].last >= trained)
        QS_FORWARD_IF_ERROR(carry_load(q, sl, sl->next - 1, trained, err));
    return 0;
}

void qs_slider_end(qs_qrun *q) {
    qs_slider_run *sl = q->slider;
    if (!sl) return;
    for (int i = 0; i < sl->n_held; i++) {
        qs_llama_train_free(&sl->held[i]->tr);
        qs_llama_weights_free(&sl->held[i]->w, q->lm.be);
        free(sl->held[i]);
    }
    for (int k = 0; k < sl->n_carry; k++) free(sl->carry[k]);
    free(sl->win);
    free(sl);
    q->slider = NULL;
}

void qs_slider_prune(const qs_qrun *q, int blk) {
    /* stored through blk: a resume starts at blk + 1 and reads the file of the window before
     * after_block(blk) at the earliest; the files before it are stale. The schedule is read only
     * once qs_slider_begin made it (this runs on STORE's thread, within the pipeline's run). */
    const qs_slider_run *sl = q->slider;
    const int done = blk + 1 >= q->cfg.n_layers, keep = done ? sl->n_win + 1 : after_block(sl, blk) - 1; /* finished: none */
    const char *pat = sl->pass == 1 ? "slider-p1-%d.qs%c" : "slider-%d.qs%c";
    char *dir = qs_path_join(q->o->out_dir, "acts");
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        int k;
        char tail;
        if (sscanf(e->d_name, pat, &k, &tail) == 2 && tail == 'h' && k < keep) {
            char *p = carry_path(q, k);
            unlink(p);
            free(p);
        }
        /* the run is finished: the first pass's block parameters go too */
        if (done && sl->pass == 2 && sscanf(e->d_name, "slider-p1-block-%d.qs%c", &k, &tail) == 2 && tail == 'h') {
            char *p = pass1_path(q, k);
            unlink(p);
            free(p);
        }
    }
    if (d) closedir(d);
    free(dir);
}

/* the held block of layer b */
static slider_blk *held_of(qs_slider_run *sl, int b) {
    for (int i = 0; i < sl->n_held; i++)
        if (sl->held[i]->layer == b) return sl->held[i];
    return NULL;
}

/* the full-precision states advanced through the held blocks up to block b (float weights, no
 * activation quantization) */
static int fp_to(qs_qrun *q, qs_slider_run *sl, int b, qs_error *err) {
    while (sl->fp_at < b) {
        slider_blk *h = held_of(sl, sl->fp_at + 1);
        QS_RETURN_ERROR_IF(!h, QS_EUSAGE, "SliderQuant: block %d is not held", sl->fp_at + 1);
        const int abits = h->w.abits;
        h->w.abits = 16;
        int rc = qs_calib_state_advance(q, QS_STATE_FP, &h->w, err);
        h->w.abits = abits;
        QS_FORWARD_IF_ERROR(rc);
        sl->fp_at++;
    }
    return 0;
}

static int train_window(qs_qrun *q, qs_slider_run *sl, int i, qs_error *err) {
    const qs_slider_window *w = &sl->win[i];
    const int K = w->last - w->first + 1;
    qs_llama_train *tr[QS_SLIDER_MAX_WINDOW];
    slider_blk *h[QS_SLIDER_MAX_WINDOW];
    QS_FORWARD_IF_ERROR(fp_to(q, sl, w->last, err));
    for (int j = 0; j < K; j++) {
        h[j] = held_of(sl, w->first + j);
        QS_RETURN_ERROR_IF(!h[j], QS_EUSAGE, "SliderQuant: block %d of window %d is not held", w->first + j, i);
        tr[j] = &h[j]->tr;
        QS_FORWARD_IF_ERROR(qs_llama_train_reset_optim(tr[j], err));
    }
    double loss[2] = {0, 0};
    QS_FORWARD_IF_ERROR(qs_train_group(q, w->first, sl->pass == 2 ? sl->n_win + i : i, tr, K, loss, err));
    for (int j = 0; j < K; j++) h[j]->loss[0] = loss[0], h[j]->loss[1] = loss[1];
    return 0;
}

/* the trained parameters of the held blocks at or after block f, durably, after window i */
static int carry_write(qs_qrun *q, qs_slider_run *sl, int i, int f, qs_error *err) {
    const size_t pb = param_bytes(q);
    qs_shard_tensor t[QS_SLIDER_MAX_WINDOW + 1];
    char names[QS_SLIDER_MAX_WINDOW + 1][32];
    float *host[QS_SLIDER_MAX_WINDOW + 1] = {0};
    int n = 0, rc = 0;
    for (int k = 0; k < sl->n_held && !rc; k++) {
        slider_blk *h = sl->held[k];
        if (h->layer < f) continue;
        if (!(host[n] = malloc(pb))) rc = qs_error_set(err, -ENOMEM, "out of memory for block %d's parameters", h->layer);
        if (!rc) rc = q->lm.be->ops->download(q->lm.be, host[n], h->tr.param, pb, err);
        snprintf(names[n], sizeof names[n], "block.%d", h->layer);
        t[n] = (qs_shard_tensor){.name = names[n], .role = "parameters", .dtype = QS_DTYPE_F32, .n_dims = 1,
                                 .shape = {(int64_t)(pb / sizeof(float))}, .data = host[n]};
        n++;
    }
    char *dir = qs_path_join(q->o->out_dir, "acts");
    if (!rc && n) rc = qs_mkdir_p(dir, err);
    free(dir);
    if (!rc && n) {
        char meta[200], body[192];
        carry_meta(q, i, body, sizeof body);
        snprintf(meta, sizeof meta, "{%s}", body);
        qs_shard_opts so = {.zstd_level = 1, .zstd_threads = q->o->zstd_threads};
        char *p = carry_path(q, i);
        rc = qs_shard_write(p, i, meta, t, (size_t)n, &so, NULL, err);
        free(p);
    }
    for (int k = 0; k < n; k++) free(host[k]);
    return rc;
}

/* block h's parameters at the end of the first pass, durably */
static int pass1_write(qs_qrun *q, slider_blk *h, qs_error *err) {
    const size_t pb = param_bytes(q);
    float *host = malloc(pb);
    QS_RETURN_ERROR_IF(!host, -ENOMEM, "out of memory for block %d's parameters", h->layer);
    char name[32], meta[224], body[192];
    snprintf(name, sizeof name, "block.%d", h->layer);
    pass1_meta(q, h->layer, body, sizeof body);
    snprintf(meta, sizeof meta, "{%s}", body);
    qs_shard_tensor t = {.name = name, .role = "parameters", .dtype = QS_DTYPE_F32, .n_dims = 1,
                         .shape = {(int64_t)(pb / sizeof(float))}, .data = host};
    int rc = q->lm.be->ops->download(q->lm.be, host, h->tr.param, pb, err);
    char *dir = qs_path_join(q->o->out_dir, "acts"), *p = pass1_path(q, h->layer);
    if (!rc) rc = qs_mkdir_p(dir, err);
    qs_shard_opts so = {.zstd_level = 1, .zstd_threads = q->o->zstd_threads};
    if (!rc) rc = qs_shard_write(p, h->layer, meta, &t, 1, &so, NULL, err);
    free(dir), free(p), free(host);
    return rc;
}

/* block h (the oldest held) is final: codes, merge, the quantized path through it. In the
 * first pass it has no codes: its parameters go to acts/slider-p1-block-NNNN.qsh, and the
 * quantized path passes through the half-quantized block (activations too, a_half). */
static int finalize(qs_qrun *q, qs_slider_run *sl, qs_error *err) {
    slider_blk *h = sl->held[0];
    int rc = 0;
    /* a later window's targets pass through this block's float weights, which the merge replaces */
    if (sl->next < sl->n_win && h->layer > sl->fp_at) rc = fp_to(q, sl, h->layer, err);
    if (!rc && sl->pass == 1 && h->layer >= sl->trained) rc = pass1_write(q, h, err);
    for (int i = 0; i < QS_N_LINEAR && !rc && sl->pass != 1; i++) rc = qs_tuned_linear(q, h->s, &h->tr, i, err);
    if (!rc) rc = qs_llama_train_merge(&h->tr, &h->w, err);
    h->w.a_half = sl->pass == 1;
    /* the norms as stored: with smoothing the gammas over the scales (the merge's) */
    const size_t hb = sizeof(float) * (size_t)q->cfg.hidden_size;
    if (!rc) rc = q->lm.be->ops->download(q->lm.be, h->s->other[0], h->w.attn_norm, hb, err);
    if (!rc) rc = q->lm.be->ops->download(q->lm.be, h->s->other[1], h->w.ffn_norm, hb, err);
    qs_llama_train_free(&h->tr);
    if (!rc) rc = qs_result_flush(q, err);
    h->s->eec_loss[0] = h->loss[0], h->s->eec_loss[1] = h->loss[1];
    if (!rc && h->layer < q->cfg.n_layers - 1) rc = qs_calib_state_advance(q, QS_STATE_Q, &h->w, err);
    qs_llama_weights_free(&h->w, q->lm.be);
    free(h);
    memmove(&sl->held[0], &sl->held[1], sizeof sl->held[0] * (size_t)(sl->n_held - 1));
    sl->held[--sl->n_held] = NULL;
    return rc;
}

/* the oldest held block is final (finalize): an earlier block than blk, the call's, goes to
 * STORE now, while the windows after it train (the last block's call trains the schedule's
 * last four windows at K = 4: a kill then loses only the window in flight); blk itself
 * when the call returns (*at_return) */
static int release(qs_qrun *q, qs_slider_run *sl, int blk, int *at_return, qs_error *err) {
    const int b = sl->held[0]->layer;
    QS_FORWARD_IF_ERROR(finalize(q, sl, err));
    if (b == blk) return ++*at_return, 0;
    return qs_pipeline_release(q->ctl, 1, err);
}

/* the start of the next window (n_layers past the last) */
static int next_first(const qs_qrun *q, const qs_slider_run *sl) {
    return sl->next < sl->n_win ? sl->win[sl->next].first : q->cfg.n_layers;
}

int qs_compute_slider(qs_qrun *q, int blk, qs_qslot *s, qs_error *err) {
    qs_slider_run *sl = q->slider;
    qs_backend *be = q->lm.be;
    QS_RETURN_ERROR_IF(sl->n_held > QS_SLIDER_MAX_WINDOW, QS_EUSAGE, "SliderQuant: %d blocks held", sl->n_held);
    slider_blk *h = calloc(1, sizeof *h);
    QS_RETURN_ERROR_IF(!h, -ENOMEM, "block %d: out of memory", blk);
    h->layer = blk, h->s = s;
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    int rc = qs_weights_from_slot(q, s, blk, &h->w, err);
    if (!rc) rc = qs_llama_train_init(&h->tr, &q->cfg, &h->w, &to, q->calib.seqlen, be, err);
    if (rc) {
        qs_llama_weights_free(&h->w, be);
        free(h);
        return qs_results_end(q, rc, err);
    }
    sl->held[sl->n_held++] = h;
    /* the second pass starts from the first's parameters, and a resumed first pass's final
     * blocks come back from them; a carried window's parameters are later still */
    if (sl->pass == 2 || (sl->pass == 1 && blk < sl->trained)) {
        float *p1 = NULL;
        rc = pass1_load(q, blk, &p1, err);
        if (!rc) rc = be->ops->upload(be, h->tr.param, p1, param_bytes(q), err);
        free(p1);
    }
    for (int k = 0; k < sl->n_carry && !rc; k++)
        if (sl->carry_layer[k] == blk) {
            rc = be->ops->upload(be, h->tr.param, sl->carry[k], param_bytes(q), err);
            free(sl->carry[k]), sl->carry[k] = NULL, sl->carry_layer[k] = -1;
        }
    int released = 0;
    /* resumed blocks whose windows were all trained are final at once */
    while (!rc && sl->n_held && sl->held[0]->layer < next_first(q, sl)) rc = release(q, sl, blk, &released, err);
    while (!rc && sl->next < sl->n_win && sl->win[sl->next].last == blk) {
        rc = train_window(q, sl, sl->next, err);
        if (rc) break;
        sl->next++;
        const int f = next_first(q, sl);
        if (sl->n_held && sl->held[0]->layer < f && sl->held[sl->n_held - 1]->layer >= f)
            rc = carry_write(q, sl, sl->next - 1, f, err);
        while (!rc && sl->n_held && sl->held[0]->layer < f) rc = release(q, sl, blk, &released, err);
    }
    rc = qs_results_end(q, rc, err);
    return rc ? rc : released;
}

int qs_slider_plan(qs_qrun *q, size_t gpu_mem, size_t *bytes, qs_error *err) {
    qs_llama_train_opts to;
    qs_tune_opts(q, &to);
    const int K = q->cfg.n_layers < QS_SLIDER_MAX_WINDOW ? q->cfg.n_layers : QS_SLIDER_MAX_WINDOW;
    const int L = q->calib.seqlen;
    /* the window's blocks' weights but the one the forward counts, their trainers, and the
     * window's input, target and gradient */
    *bytes = (size_t)(K - 1) * qs_llama_weights_bytes(&q->cfg) + (size_t)K * qs_llama_train_bytes(&q->cfg, &to, L) +
             3 * sizeof(float) * (size_t)L * q->cfg.hidden_size;
    const size_t fwd = qs_calib_device_bytes(q, 1);
    QS_RETURN_ERROR_IF(gpu_mem && fwd + *bytes > gpu_mem, QS_ENOMEMBUDGET,
                       "--gpu-mem %.1f MiB cannot hold SliderQuant's window of %d blocks (%.1f MiB: their weights, "
                       "trainers and the tape of one %d-token window) beside the forward of one window (%.1f MiB); lower "
                       "--seqlen or raise --gpu-mem; nothing was written",
                       gpu_mem / 1048576.0, K, *bytes / 1048576.0, L, fwd / 1048576.0);
    return 0;
}
