/* pipeline/quantize.h - `qstream quantize`: a model streamed block by block through the
 * three-stage pipeline (LOAD: io_uring reads of block k+1; COMPUTE: quantize block k; STORE:
 * shard k-1 written durably and recorded in the manifest), resumable after any interruption.
 *
 * Host memory: n_slots block slabs (the block's bytes as stored, read by io_uring) plus a few
 * rows of scratch; each quantized tensor is packed back into the slab space its source
 * occupied, so a slot never grows beyond the block's own bytes. The planner picks 3 slots
 * (full overlap), fewer when --host-mem is tight, and refuses a budget below one block before
 * anything is read or written. */
#ifndef QS_PIPELINE_QUANTIZE_H
#define QS_PIPELINE_QUANTIZE_H

#include <stddef.h>

#include "base/error.h"
#include "io/reader.h"
#include "pipeline/calib.h"
#include "quant/affine.h"

#define QS_GROUP_MAX 8 /* most blocks trained together (--blocks-per-group) */

typedef struct qs_quantize_opts {
    const char *model_dir, *out_dir;
    const char *method;     /* "rtn", "gptq", "qllm", "dlqat" */
    qs_qconfig q;
    int abits;              /* 16: weight-only; 2..15: activations fake-quantized per token */
    qs_calib_opts calib;    /* methods with data (gptq) */
    float damp;             /* gptq: dampening fraction of mean(diag H) (0.01) */
    int act_order, static_groups, gptq_block; /* gptq options */
    int cr, eec;            /* qllm: channel reassembly, efficient error correction */
    int cr_tokens;          /* qllm: tokens of the threshold search sample (2048) */
    int cr_candidates;      /* qllm: thresholds scored per site at most (40) */
    int cr_distance;        /* qllm: qs_reasm_distance */
    /* qllm efficient error correction (with eec): rank-r LoRA on the seven projections and the
     * norm gammas, trained by reconstruction of groups of blocks_per_group blocks */
    int eec_rank;           /* 4 */
    float eec_alpha;        /* 1: scaling alpha / rank */
    int eec_epochs;         /* 10 */
    float eec_lr;           /* 5e-4, linear decay to 0 */
    int eec_form;           /* qs_lora_form: 0 paper Q(W) + sBA, 1 merged Q(W + sBA) */
    /* dlqat: the same rank, alpha, epochs, lr (QS_DLQAT_LR by default) and blocks_per_group (1
     * by default), cr off: magnitudes and LoRA on each weight's fixed grid (model/llama_train.h) */
    int blocks_per_group;   /* K: 1..QS_GROUP_MAX; 0: 4, fewer when --gpu-mem cannot hold 4 */
    int smooth;             /* slider: SliderQuant's learnable smoothing scales (model/llama_train.h) */
    /* slider: SliderQuant's intra-layer incremental quantization: a first pass over the whole
     * schedule with only the first half of each weight's input columns and activation segment's
     * channels quantized (epochs / 2 per window), then a second with all (the other epochs) */
    int incremental;
    const char *device;     /* "cpu" */
    int threads;            /* 0 = all cores */
    size_t host_mem;        /* bytes; 0 = no limit */
    size_t gpu_mem;         /* backend (device) bytes for a block step; 0 = no limit */
    int restart;            /* 1: discard an existing run in out_dir */
    int spill;              /* 1: calibration states on disk even when --host-mem would hold them */
    /* activation checkpoints (methods with data: the calibration states after a unit, so that a
     * resume need not replay the finished blocks): QS_ACT_CKPT_AUTO (-1) when the time since the
     * last one is at least QS_ACT_CKPT_RATIO times what that one took to write (and after the
     * first unit); 0 none; N >= 1 after every N-th unit */
    int act_checkpoints;
    int zstd_level, zstd_threads;
    int progress;           /* 0 quiet, 1 bar on a terminal / lines otherwise, 2 JSON lines, 3 lines */
    qs_reader_opts reader;
} qs_quantize_opts;

#define QS_DLQAT_LR 1e-2f /* DL-QAT's default learning rate (bench/README.md: how it was chosen) */
#define QS_SLIDER_LR 1e-3f /* SliderQuant: the LoRA's learning rate (bench/README.md: 10 x the paper's) */
#define QS_SLIDER_CLIP_LR_MULT 100.0f /* the clipping logits' rate over it (the paper's ratio, 1e-2 / 1e-4) */
#define QS_SLIDER_EPOCHS 20          /* the paper's W4A4 epochs (60 at W2A16) */
#define QS_SLIDER_SMOOTH_LR_MULT 10.0f /* the smoothing scales' rate over it (the paper's ratio, 1e-3 / 1e-4) */
#define QS_ACT_CKPT_AUTO (-1)
#define QS_ACT_CKPT_RATIO 20

typedef struct qs_quantize_summary {
    int n_blocks, done_before, done_now, n_slots;
    size_t slot_bytes;
    double seconds;
    unsigned long long raw_bytes, shard_bytes;
    size_t device_peak; /* the backend's peak memory (0: no backend, e.g. RTN) */
    size_t device_held; /* the most it held from the device (cuda's pools: >= device_peak) */
    int staged;         /* 1: the loader staged the stored weights in backend memory (a copy stream) */
    int gptq_h_host;    /* 1: GPTQ's Hessians went to the host (--gpu-mem held one n x n at a time) */
    int gptq_reorder_in_place; /* 1: GPTQ's act-order batches ran in the layers themselves (--gpu-mem) */
    int eec_w_host;     /* 1: EEC's float weights waited on the host during training (--gpu-mem) */
    unsigned long long codes_beside; /* bytes of finished codes that came down beside a call's compute */
    int per, windows;   /* calibration windows per backend call (the --gpu-mem plan), of all */
    int act_ckpts;      /* activation checkpoints written, and the seconds they took */
    double act_ckpt_s;
    int ckpt_from, replayed; /* the resume: the checkpoint after block ckpt_from (-1: none), then blocks replayed */
} qs_quantize_summary;

int qs_quantize_run(const qs_quantize_opts *o, qs_quantize_summary *sum, qs_error *err);

/* Parses "24G", "512M", "1.5G", "1000000" into bytes; 0 on success. */
int qs_parse_bytes(const char *s, size_t *out);

#endif
