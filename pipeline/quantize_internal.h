/* pipeline/quantize_internal.h - what the parts of `qstream quantize` share: the block slot that
 * travels through the three stages and the run state. Not for use outside pipeline/. */
#ifndef QS_PIPELINE_QUANTIZE_INTERNAL_H
#define QS_PIPELINE_QUANTIZE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint/manifest.h"
#include "io/config.h"
#include "io/reader.h"
#include "io/safetensors.h"
#include "model/llama_forward.h"
#include "model/llama_stream.h"
#include "model/llama_train.h"
#include "pipeline/calib.h"
#include "pipeline/progress.h"
#include "pipeline/quantize.h"
#include "quant/qblock.h"
#include "quant/reassembly.h"

#define QS_BLOCK_MAX_T 12 /* 7 linears, 2 norms, 3 biases */
#define QS_N_OTHER 5

extern const char *const qs_block_other_names[QS_N_OTHER]; /* norms, then q/k/v biases */

/* one quantized linear, as STORE writes it */
typedef struct qs_qlin_out {
    uint8_t *packed;      /* packed codes: inside the slab (RTN) or malloc'd (own_packed) */
    int own_packed;
    size_t packed_bytes;
    float *scales, *zeros; /* [rows, groups] malloc'd */
    int32_t *g_idx;        /* [cols] or NULL */
    double mse;            /* mean squared weight error */
    double loss;           /* GPTQ: the error the Hessian weighs (sum err^2 / U_ii^2); 0 for RTN */
    /* GPTQ and QLLM: the codes [rows, cols] one a byte (malloc'd), which STORE packs
     * (quantize.c qlin_finish), off the compute thread; NULL once done. With GPTQ STORE also
     * measures mse, against the stored weights (QLLM's came with the codes) */
    uint8_t *codes;
} qs_qlin_out;

/* finished codes in backend memory, on their way into their slot's host buffer */
#define QS_MAX_PENDING 8
typedef struct qs_pending_result {
    void *dst;       /* host */
    void *src;       /* backend memory, freed once down */
    size_t bytes;
} qs_pending_result;

typedef struct qs_qslot {
    void *slab;
    size_t cap;
    qs_read_range r[QS_BLOCK_MAX_T];
    const qs_tensor_info *t[QS_BLOCK_MAX_T];
    size_t n;
    qs_qlin_out lin[QS_N_LINEAR];
    float *other[QS_N_OTHER]; /* norms and biases as F32 (NULL when absent) */
    qs_reasm ra[3];           /* QLLM channel reassembly per site (src_a NULL: none) */
    double eec_loss[2];       /* QLLM EEC: the group's mean training loss in the first and last epoch */
    int ckpt;                 /* COMPUTE wrote the activation checkpoint after this block */
    /* staged (q->stage): the tensors as stored, copied into backend memory by LOAD at
     * staged_off[i]; COMPUTE widens them there and frees them */
    void *staged;
    size_t staged_off[QS_BLOCK_MAX_T];
} qs_qslot;

/* What travels through the pipeline: a unit of nb consecutive blocks b0.. (one block, or a
 * group of --blocks-per-group blocks that QLLM's error correction trains together), each block's
 * bytes in its own part of the unit's slab. */
typedef struct qs_qunit {
    void *slab;
    size_t cap;
    int b0, nb;
    qs_qslot blk[QS_GROUP_MAX];
} qs_qunit;

typedef struct qs_qrun {
    const qs_quantize_opts *o;
    qs_catalog *cat;
    qs_model_config cfg;
    qs_reader *reader;
    qs_manifest man;
    char *man_path;
    qs_progress prog;
    /* RTN scratch */
    float *rows;    /* [ROWS_CHUNK, max cols] */
    uint8_t *codes; /* [ROWS_CHUNK, max cols] */
    /* calibration (methods with data): the quantized path's hidden states, host memory */
    int calibrated;
    qs_llama_model lm;   /* backend + embedding of the source model */
    qs_calib calib;
    float *x;            /* [nsamples * seqlen, hidden]; NULL when spilled */
    float *x_fp;         /* the full-precision path's states (n_states 2: QLLM with EEC), same shape */
    int n_states;        /* 1: x; 2: x and x_fp (QS_STATE_Q, QS_STATE_FP) */
    int spill;           /* 1: the states live in OUT_DIR/acts/spill.f32 (x, then x_fp), read through io_uring */
    int spill_fd;
    char *spill_path;
    qs_reader *spill_reader;
    void *spill_slab[2];  /* one per state: a window of each can be held at once */
    size_t spill_slab_bytes;
    int per;             /* windows per backend call */
    /* 1: LOAD copies each block's stored tensors into backend memory (the device's copy stream,
     * overlapping the previous block's compute) and COMPUTE widens them there; 0: COMPUTE
     * converts on the host and uploads. stage_block: the largest block's staged bytes. */
    int stage;
    int pin_warned; /* a host_register failed (warned once; copies run unpinned) */
    /* GPTQ under a --gpu-mem that cannot hold a stage's Hessian beside a layer's factor: each
     * Hessian goes to the host once accumulated, and each layer's matrix to factor is made there
     * and uploaded into the factor's place (the same bits; the device holds one n x n at a time) */
    int gptq_h_host;
    /* and if that is not enough either, with act-order: the column batches run in the layer's
     * own copy (quant/gptq.h in_place_reorder) */
    int gptq_reorder_in_place;
    /* GPTQ on a device that keeps frozen linears in bf16 (qs_backend_bf16_weights): each layer
     * once quantized, and on resume each replayed block's, becomes bf16 there */
    int bf16_weights;
    /* EEC (paper form, quantized weights) under a --gpu-mem that cannot hold Q(W) beside W: the
     * group's float weights wait on the host during training, Q(W) made in their place on the
     * device (the same bits) */
    int eec_w_host;
    /* EEC (paper form, quantized weights) on a device that keeps frozen linears in bf16: Q(W)
     * trains as bf16 (model/llama_train.h bf16_base); with eec_w_host the float weights leave
     * the device during training instead of holding Q(W) */
    int eec_bf16;
    /* QLLM's channel reassembly search on such a device: a candidate's consumer weights are
     * reassembled (and fake-quantized) in row chunks into bf16 (qs_qllm_cr_chunk_rows) and read
     * through linear_bf16 */
    int cr_bf16;
    /* GPTQ's and QLLM's finished codes stay in backend memory until the next calibration pass
     * has ops queued, and come down beside them, one a call (pipeline/results.c); given up
     * first under a --gpu-mem that cannot hold a block's codes beside the step */
    int defer_codes;
    qs_pending_result pending[QS_MAX_PENDING];
    int n_pending;
    unsigned long long codes_beside; /* bytes of them that came down beside a call's compute */
    size_t stage_block;
    int K;               /* blocks per pipeline unit (--blocks-per-group with EEC, else 1) */
    struct qs_slider_run *slider; /* SliderQuant's windows in flight (compute_slider.c) */
    struct qs_pipeline_ctl *ctl;  /* the pipeline's run, while it runs: blocks go to STORE mid-call */
    /* SliderQuant's incremental quantization (--incremental on): 1 while the first pass runs
     * (half of each weight's columns quantized, nothing stored), 2 in the second; 0: one pass */
    int slider_pass;
    qs_llama_scratch scr;
    float *xbuf;         /* backend [per * seqlen, hidden] */
    float *xbuf2;        /* the same, the next call's (q->stage: uploaded while this one computes) */
    float *hx;           /* host [per * seqlen, max input dim] */
    unsigned long long fp_hash; /* XXH3 of the fingerprint JSON: tags activation checkpoints */
    int act_ckpt;               /* 1: write activation checkpoints (o->act_checkpoints says when) */
    int ckpt_units;             /* units computed since the last one (or the start) */
    double ckpt_cost, ckpt_end; /* the last one's seconds (-1: none yet) and when it ended */
    int ckpts;                  /* written, in ckpt_s seconds */
    double ckpt_s;
    int replayed, ckpt_from;    /* the resume: blocks replayed, after the checkpoint of block ckpt_from (-1: none) */
    double t_start;
    int done_now;
    unsigned long long raw_bytes, shard_bytes, read_bytes;
} qs_qrun;

/* F32 / F16 / BF16 bytes (unaligned) to float */
void qs_qrun_to_f32(const qs_tensor_info *t, const uint8_t *src, size_t n, float *dst);
float qs_qrun_stored_f32(const qs_tensor_info *t, const uint8_t *src, size_t i); /* element i of it */
void qs_qslot_release(qs_qslot *s); /* frees what COMPUTE made; keeps the slab */

/* the slot's tensors as float in backend memory (w->abits = --abits); norms and biases also
 * kept on the host in s->other for STORE */
int qs_weights_from_slot(qs_qrun *q, qs_qslot *s, int blk, qs_llama_weights *w, qs_error *err);
/* the rows of a chunk of a [rows, cols] consumer's weights on their way to bf16 (q->cr_bf16) */
int qs_qllm_cr_chunk_rows(int cols);
/* all seven linears of w to bf16 (q->bf16_weights: a replayed GPTQ block, as COMPUTE left it) */
int qs_gptq_weights_bf16(qs_qrun *q, qs_llama_weights *w, qs_error *err);

/* COMPUTE of one block, by method */
int qs_compute_rtn(qs_qrun *q, int blk, qs_qslot *s, qs_error *err);
int qs_compute_gptq(qs_qrun *q, int blk, qs_qslot *s, qs_error *err);
int qs_compute_qllm(qs_qrun *q, int blk, qs_qslot *s, qs_error *err);
/* QLLM with efficient error correction: CR (statistics on the full-precision path) and the
 * LoRA reconstruction of the unit's group of blocks (compute_eec.c) */
int qs_compute_qllm_eec(qs_qrun *q, qs_qunit *u, qs_error *err);
/* the trainer's options of a tuning method (EEC, DL-QAT, SliderQuant) at the run's settings */
void qs_tune_opts(const qs_qrun *q, qs_llama_train_opts *to);
/* trains tr[0..K-1], consecutive blocks from b0, on the calibration windows: the quantized path's
 * input through them, MSE to the full-precision state, backward, AdamW at --lr decaying linearly
 * over --epochs x nsamples steps; the permutations seeded by key and epoch. loss[0], loss[1] =
 * the mean loss of the first and last epoch */
int qs_train_group(qs_qrun *q, int b0, int key, qs_llama_train *const *tr, int K, double loss[2], qs_error *err);
/* the trained codes of linear i of tr (DL-QAT or SliderQuant form, before its merge) deferred
 * into s->lin[i] with the stored quantizer (DL-QAT: and the mse against the frozen W) */
int qs_tuned_linear(qs_qrun *q, qs_qslot *s, qs_llama_train *tr, int i, qs_error *err);
/* SliderQuant (compute_slider.c): qs_slider_begin after qs_calib_setup (the schedule of the
 * pass q->slider_pass, its blocks streamed from block first, those before block trained final
 * in this pass: resumed with the carried parameters of acts/slider-WWWW.qsh, in the first pass
 * acts/slider-p1-WWWW.qsh, the final ones' from acts/slider-p1-block-NNNN.qsh); qs_compute_slider takes
 * block blk's slot and returns how many of the oldest held blocks are final (engine.h holds);
 * qs_slider_end frees what is left; qs_slider_prune after block blk is stored; the backend bytes
 * of training the largest window (qs_slider_plan refuses a --gpu-mem that cannot hold it) */
int qs_slider_begin(qs_qrun *q, int first, int trained, qs_error *err);
/* the blocks 0.. whose first-pass parameters are on disk and of this run */
int qs_slider_pass1_done(const qs_qrun *q);
int qs_compute_slider(qs_qrun *q, int blk, qs_qslot *s, qs_error *err);
void qs_slider_end(qs_qrun *q);
/* whether a run can resume at block first (the parameters it carries there are on disk, intact
 * and of this run; in the second pass, the first pass's of every block from first on too) */
int qs_slider_can_resume(qs_qrun *q, int first);
void qs_slider_prune(const qs_qrun *q, int blk);
int qs_slider_plan(qs_qrun *q, size_t gpu_mem, size_t *bytes, qs_error *err);

/* backend bytes of one group's training (*bytes, groups of q->K); refuses a --gpu-mem that
 * cannot hold it beside the forward of one calibration window (the forward's windows per call
 * are then planned in what is left) */
int qs_eec_plan(qs_qrun *q, size_t gpu_mem, size_t *bytes, qs_error *err);
/* where the backend's memory is the host's: what the training adds to qs_calib_plan_bytes (the
 * plan's *bytes, less the search's host copies too, which are freed before the training) */
size_t qs_eec_host_bytes(const qs_qrun *q);

/* QLLM's parts (compute_qllm.c). w holds block blk's float weights in backend memory.
 * qs_qllm_cr_search: the reassembly of the three sites into s->ra from the statistics of
 * calibration state `which`. qs_qllm_cr_apply: the consumers' float weights in w reassembled
 * and the gathers uploaded into w->ra (sites where "none" won stay plain).
 * qs_qllm_quantize: all seven linears of w quantized (RTN at the run's setting) into s->lin, and
 * w's weights replaced by what the shard dequantizes to. */
int qs_qllm_cr_search(qs_qrun *q, int blk, qs_qslot *s, qs_llama_weights *w, int which, qs_error *err);
int qs_qllm_cr_apply(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, qs_error *err);
int qs_qllm_quantize(qs_qrun *q, qs_qslot *s, qs_llama_weights *w, qs_error *err);

/* calibration state: set up (embedding of the calibration windows) and replay of finished
 * blocks 0..first-1 from their shards; host bytes it will take */
/* windows per backend call within --gpu-mem (0 = no limit): q->per; refuses when one window
 * does not fit. Then the host bytes of the calibration state. */
int qs_calib_plan_per(qs_qrun *q, size_t gpu_mem, qs_error *err);
size_t qs_calib_device_bytes(const qs_qrun *q, int per);
/* the part of it that QLLM's channel reassembly search holds while it runs (0 without CR) */
size_t qs_calib_reassembly_bytes(const qs_qrun *q);
/* the host memory of QLLM's threshold search (qs_calib_plan_bytes counts it) */
size_t qs_calib_search_host_bytes(const qs_qrun *q);
/* q->stage: on where the device stages uploads (qs_backend_stages) and one window's step and
 * the staged units (one per slot) fit gpu_mem; stage_block: the largest block's staged bytes.
 * GPTQ: q->gptq_h_host when one window's step does not fit with the Hessian on the device (the
 * staging goes first: it saves only an upload per block), then q->gptq_reorder_in_place */
void qs_calib_plan_stage(qs_qrun *q, size_t stage_block, size_t gpu_mem);
/* the staged bytes of a block's tensors: each at a 256-byte aligned offset (NULL off: size only) */
size_t qs_qslot_stage_layout(const qs_qslot *s, size_t *off);
/* pins (host_register) the host memory uploads come from: the calibration states and spill
 * slabs (qs_calib_setup does), and the slots (the pipeline); unpinned before it is freed */
int qs_calib_pin(qs_qrun *q, void *p, size_t bytes, qs_error *err);
void qs_calib_unpin(qs_qrun *q, void *p);
size_t qs_calib_plan_bytes(const qs_qrun *q, int spill);
int qs_calib_setup(qs_qrun *q, int first, qs_error *err);
void qs_calib_teardown(qs_qrun *q);
/* both states back to the embedding of the calibration windows (SliderQuant's second pass) */
int qs_calib_reembed(qs_qrun *q, qs_error *err);
/* Windows [s0, s0 + k) of the calibration states as host floats (*xs: inside x, or the spill
 * slab read through io_uring); put writes them back (a no-op in memory). */
int qs_calib_x_get(qs_qrun *q, int s0, int k, float **xs, qs_error *err);
int qs_calib_x_put(qs_qrun *q, int s0, int k, const float *xs, qs_error *err);
/* the same for state `which` (QS_STATE_Q: x, QS_STATE_FP: x_fp); a get of one state does not
 * invalidate what a get of the other returned */
enum { QS_STATE_Q = 0, QS_STATE_FP = 1 };
int qs_calib_state_get(qs_qrun *q, int which, int s0, int k, float **xs, qs_error *err);
int qs_calib_state_put(qs_qrun *q, int which, int s0, int k, const float *xs, qs_error *err);

/* A pass over the calibration windows of state `which`, per windows a call: each call's windows
 * are uploaded into a backend buffer x, issue puts its ops on them (they may still run when it
 * returns), and finish (optional) does what needs their results on the host (downloads). Where
 * the backend stages (q->xbuf2), the next call's upload runs on the copy stream between the two,
 * overlapping this call's ops, into the buffer of the call before, once that call's ops have
 * finished (its mark: a pass without finish never waits for its calls otherwise). xs is the host copy of the call's windows (in the states, or the
 * spill slab); finish may write it (and put it back), but with staging and spilled states it no
 * longer holds the input. out = 1 instead of finish: the call's x is the result, written back
 * into the state (download and put), and where the backend stages that download overlaps the
 * next call's ops (issued before it). The same ops in the same order either way: the same bits. */
typedef struct qs_calib_pass {
    int which, out;
    int (*issue)(qs_qrun *q, void *ctx, int s0, int k, float *x, qs_error *err);
    int (*finish)(qs_qrun *q, void *ctx, int s0, int k, float *x, float *xs, qs_error *err);
    void *ctx;
} qs_calib_pass;
int qs_calib_run(qs_qrun *q, const qs_calib_pass *p, qs_error *err);

/* Finished results (pipeline/results.c). qs_result_defer hands over src (backend memory, bytes
 * long, made by the ops issued so far and used by none after) for dst (host): with
 * q->defer_codes it waits, the point marked (QS_BE_MARK_RESULTS), and qs_calib_run brings one
 * down after each call it issues (after its last, all that are left), so that the copy
 * crosses the bus while that call computes
 * (qs_result_flush_beside; q->codes_beside counts them); else it comes down now. src is freed once down. qs_result_flush brings down all that wait;
 * qs_results_end, at the end of a block step, flushes them (rc 0) or frees them unread (rc
 * non-zero: their host buffers go with the failed slot) and returns rc or the flush's error. */
int qs_result_defer(qs_qrun *q, void *dst, void *src, size_t bytes, qs_error *err);
int qs_result_flush_beside(qs_qrun *q, int last, qs_error *err);
int qs_result_flush(qs_qrun *q, qs_error *err);
int qs_results_end(qs_qrun *q, int rc, qs_error *err);
/* whether deferring the codes can apply (a backend that stages downloads, GPTQ or QLLM), and
 * the backend memory they hold: a block's codes, one byte a weight */
int qs_results_can_defer(const qs_qrun *q);
size_t qs_results_defer_bytes(const qs_qrun *q);

/* x <- block(x) for every calibration window, w in backend memory */
int qs_calib_advance(qs_qrun *q, const qs_llama_weights *w, qs_error *err);
/* the same for state `which` */
int qs_calib_state_advance(qs_qrun *q, int which, const qs_llama_weights *w, qs_error *err);

/* Activation checkpoint OUT_DIR/acts/acts-NNNN-KKKK.qsh (parts K of whole windows): the
 * calibration states after block blk (the last of its unit, in slot s), in the shard format
 * (tensors "x" and with EEC "x_fp", hashed),
 * tagged with the run fingerprint's hash. Written durably by COMPUTE after the unit when
 * o->act_checkpoints says so (s->ckpt = 1 then); once the unit is recorded STORE removes the
 * older ones (qs_calib_checkpoint_prune: every one before keep_blk). On resume qs_calib_setup
 * loads the latest intact one at or before block first-1 and replays the finished blocks after
 * it from their shards (all of them without one): the same bits either way. */
int qs_calib_checkpoint_write(qs_qrun *q, int blk, qs_qslot *s, qs_error *err);
/* a checkpoint is written and read in parts of at most this many bytes per state; the host
 * memory the writer or the reader holds beside the states for a part */
#define QS_CKPT_PART_BYTES ((size_t)64 << 20)
size_t qs_calib_checkpoint_scratch(const qs_qrun *q);
void qs_calib_checkpoint_prune(const qs_qrun *q, int keep_blk);

#endif
