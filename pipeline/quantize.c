/* pipeline/quantize.c - `qstream quantize`: planning, OUT_DIR and manifest, resume, and the
 * LOAD and STORE stages; COMPUTE is per method (compute_rtn.c, compute_gptq.c). */
#include "pipeline/quantize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/half.h"
#include "checkpoint/shard.h"
#include "pipeline/engine.h"
#include "pipeline/outdir.h"
#include "backend/registry.h"
#include "model/llama_train.h"
#include "pipeline/quantize_internal.h"
#include "quant/slider.h"

#define ROWS_CHUNK 64

const char *const qs_block_other_names[QS_N_OTHER] = {"input_layernorm.weight", "post_attention_layernorm.weight",
                                                      "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                                      "self_attn.v_proj.bias"};

int qs_parse_bytes(const char *s, size_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    double m = 1;
    switch (*end) {
    case 'k': case 'K': m = 1024.0; end++; break;
    case 'm': case 'M': m = 1024.0 * 1024; end++; break;
    case 'g': case 'G': m = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': m = 1024.0 * 1024 * 1024 * 1024; end++; break;
    }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (size_t)(v * m);
    return 0;
}

static int is_gptq(const qs_quantize_opts *o) { return !strcmp(o->method, "gptq"); }
static int is_qllm(const qs_quantize_opts *o) { return !strcmp(o->method, "qllm"); }
static int is_dlqat(const qs_quantize_opts *o) { return !strcmp(o->method, "dlqat"); }
static int is_slider(const qs_quantize_opts *o) { return !strcmp(o->method, "slider"); }
/* block reconstruction (compute_eec.c): QLLM's EEC and DL-QAT train groups of blocks,
 * SliderQuant windows (compute_slider.c) */
static int tunes(const qs_quantize_opts *o) { return (is_qllm(o) && o->eec) || is_dlqat(o) || is_slider(o); }

static const qs_tensor_info *block_tensor(const qs_qrun *q, int layer, const char *suffix) {
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    return qs_catalog_find(q->cat, name);
}

/* the block's tensors in a fixed order: 7 linears, 2 norms, optional q/k/v biases */
static int block_ranges(const qs_qrun *q, int layer, qs_qslot *s, qs_error *err) {
    s->n = 0;
    for (int i = 0; i < QS_N_LINEAR + QS_N_OTHER; i++) {
        char suffix[96];
        if (i < QS_N_LINEAR) snprintf(suffix, sizeof suffix, "%s.weight", qs_linear_names[i]);
        else snprintf(suffix, sizeof suffix, "%s", qs_block_other_names[i - QS_N_LINEAR]);
        const qs_tensor_info *t = block_tensor(q, layer, suffix);
        if (!t && i < QS_N_LINEAR + 2)
            return qs_error_set(err, QS_EFORMAT, "%s: tensor 'model.layers.%d.%s' is missing", q->o->model_dir, layer, suffix);
        if (!t) continue;
        if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16)
            return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not a float type", q->o->model_dir, t->name,
                                qs_dtype_name(t->dtype));
        if ((i < QS_N_LINEAR) != (t->n_dims == 2))
            return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' has %d dimensions", q->o->model_dir, t->name, t->n_dims);
        s->t[s->n] = t;
        s->r[s->n] = (qs_read_range){.file = t->file_index, .offset = t->offset, .len = t->nbytes, .what = t->name};
        s->n++;
    }
    return 0;
}

float qs_qrun_stored_f32(const qs_tensor_info *t, const uint8_t *src, size_t i) {
    if (t->dtype == QS_DTYPE_F32) { /* memcpy: safetensors data need not be aligned */
        float f;
        memcpy(&f, src + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    return t->dtype == QS_DTYPE_F16 ? qs_f16_to_f32(h) : qs_bf16_to_f32(h);
}

void qs_qrun_to_f32(const qs_tensor_info *t, const uint8_t *src, size_t n, float *dst) {
#pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) dst[i] = qs_qrun_stored_f32(t, src, i);
}

void qs_qslot_release(qs_qslot *s) {
    for (int k = 0; k < QS_N_LINEAR; k++) {
        qs_qlin_out *l = &s->lin[k];
        if (l->own_packed) free(l->packed);
        free(l->scales), free(l->zeros), free(l->g_idx), free(l->codes);
        memset(l, 0, sizeof *l);
    }
    for (int k = 0; k < QS_N_OTHER; k++) {
        free(s->other[k]);
        s->other[k] = NULL;
    }
    for (int k = 0; k < 3; k++) qs_reasm_free(&s->ra[k]);
    s->ckpt = 0;
}

static int unit_blocks(const qs_qrun *q, int unit, int *b0) {
    *b0 = unit * q->K;
    return q->cfg.n_layers - *b0 < q->K ? q->cfg.n_layers - *b0 : q->K;
}

/* a block's part of a unit slab: its reader slab rounded to the reader's alignment */
static size_t block_slab_bytes(const qs_qslot *s) {
    size_t b = qs_reader_slab_bytes(NULL, s->r, s->n);
    return (b + QS_READER_ALIGN - 1) / QS_READER_ALIGN * QS_READER_ALIGN;
}

/* what a slot holds beside its slab until STORE has written it: each linear's quantizers, and
 * for GPTQ and QLLM its codes one a byte, then packed (RTN packs into the slab), and g_idx.
 * STORE's shard writer holds the compressed frames of them all, and a shuffle copy of the
 * largest float tensor (checkpoint/shard_write.c): *store */
static size_t block_result_bytes(const qs_qrun *q, const qs_qslot *s, size_t *store) {
    const int codes = q->o->method && strcmp(q->o->method, "rtn");
    size_t b = 0, out = 0, big = 0;
    for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++) {
        const size_t rows = (size_t)s->t[i]->shape[0], cols = (size_t)s->t[i]->shape[1];
        const size_t qz = sizeof(float) * rows * (size_t)qs_qconfig_groups(&q->o->q, (int)cols);
        const size_t packed = rows * qs_packed_size(cols, q->o->q.bits);
        b += 2 * qz;
        if (codes) b += rows * cols + packed + sizeof(int32_t) * cols;
        out += packed + 2 * qz + sizeof(int32_t) * cols;
        big = qz > big ? qz : big;
    }
    for (size_t i = QS_N_LINEAR; i < s->n; i++) out += s->t[i]->n_elems * sizeof(float); /* norms, biases */
    *store = out + out / 128 + (s->n + 4) * 65536 + big; /* zstd's bound, per frame */
    return b;
}

size_t qs_qslot_stage_layout(const qs_qslot *s, size_t *off) {
    size_t b = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (off) off[i] = b;
        b += (s->t[i]->nbytes + 255) / 256 * 256;
    }
    return b;
}

/* the block's stored tensors into backend memory on the device's copy stream (this is the
 * loader's thread: the copies overlap the previous block's compute) */
static int stage_block(qs_qrun *q, qs_qslot *s, int blk, qs_error *err) {
    qs_backend *be = q->lm.be;
    const size_t bytes = qs_qslot_stage_layout(s, s->staged_off);
    s->staged = be->ops->stage_alloc(be, bytes);
    QS_RETURN_ERROR_IF(!s->staged, -ENOMEM, "block %d: out of %s memory for its stored weights (%zu bytes)", blk,
                       be->ops->name, bytes);
    for (size_t i = 0; i < s->n; i++)
        QS_FORWARD_IF_ERROR(be->ops->stage_upload(be, (char *)s->staged + s->staged_off[i], s->r[i].data, s->t[i]->nbytes, err));
    return 0;
}

static int st_load(void *ctx, int unit, void *slot_, qs_error *err) {
    qs_qrun *q = ctx;
    qs_qunit *u = slot_;
    u->nb = unit_blocks(q, unit, &u->b0);
    size_t off = 0;
    for (int j = 0; j < u->nb; j++) {
        qs_qslot *s = &u->blk[j];
        QS_FORWARD_IF_ERROR(block_ranges(q, u->b0 + j, s, err));
        size_t b = block_slab_bytes(s);
        QS_RETURN_ERROR_IF(off + b > u->cap, QS_EUSAGE, "block %d does not fit its slot", u->b0 + j);
        s->slab = (char *)u->slab + off, s->cap = b;
        off += b;
        QS_FORWARD_IF_ERROR(qs_reader_read(q->reader, s->r, s->n, s->slab, s->cap, err));
        if (q->stage) QS_FORWARD_IF_ERROR(stage_block(q, s, u->b0 + j, err));
    }
    return 0;
}

static void st_begin(void *ctx, qs_pipeline_ctl *ctl) { ((qs_qrun *)ctx)->ctl = ctl; }

static int st_compute(void *ctx, int unit, void *slot_, qs_error *err) {
    qs_qrun *q = ctx;
    qs_qunit *u = slot_;
    for (int j = 0; j < u->nb; j++) qs_qslot_release(&u->blk[j]);
    (void)unit;
    if (is_slider(q->o)) return qs_compute_slider(q, u->b0, &u->blk[0], err);
    if (tunes(q->o)) return qs_compute_qllm_eec(q, u, err);
    qs_qslot *s = &u->blk[0]; /* the other methods work block by block: units of one */
    return is_gptq(q->o) ? qs_compute_gptq(q, u->b0, s, err)
           : is_qllm(q->o) ? qs_compute_qllm(q, u->b0, s, err)
                           : qs_compute_rtn(q, u->b0, s, err);
}

/* the shard's meta object: everything needed to read the block back */
static void block_meta(const qs_qrun *q, const qs_qslot *s, char *meta, size_t cap) {
    const qs_quantize_opts *o = q->o;
    size_t m = (size_t)snprintf(meta, cap, "{\"method\":\"%s\",\"wbits\":%d,\"abits\":%d,\"group\":%d,\"sym\":%s,\"pack\":\"%s\"",
                                o->method, o->q.bits, o->abits, o->q.group, o->q.sym ? "true" : "false",
                                o->q.bits <= 4 ? "2-per-byte" : "1-per-byte");
    if (is_gptq(o))
        m += (size_t)snprintf(meta + m, cap - m, ",\"damp\":%g,\"act_order\":%s,\"static_groups\":%s,\"block_size\":%d",
                              (double)o->damp, o->act_order ? "true" : "false", o->static_groups ? "true" : "false",
                              o->gptq_block);
    if (is_qllm(o)) {
        m += (size_t)snprintf(meta + m, cap - m, ",\"cr\":%s,\"eec\":%s", o->cr ? "true" : "false", o->eec ? "true" : "false");
        if (o->eec)
            m += (size_t)snprintf(meta + m, cap - m, ",\"eec_rank\":%d,\"eec_alpha\":%g,\"eec_form\":\"%s\",\"blocks_per_group\":%d",
                                  o->eec_rank, (double)o->eec_alpha, o->eec_form ? "merged" : "paper", q->K);
        m += (size_t)snprintf(meta + m, cap - m, ",\"theta\":[");
        for (int k = 0; k < 3; k++) m += (size_t)snprintf(meta + m, cap - m, "%s%.9g", k ? "," : "", (double)s->ra[k].theta);
        m += (size_t)snprintf(meta + m, cap - m, "]");
    }
    if (is_dlqat(o))
        m += (size_t)snprintf(meta + m, cap - m, ",\"rank\":%d,\"lora_alpha\":%g,\"blocks_per_group\":%d", o->eec_rank,
                              (double)o->eec_alpha, q->K);
    if (is_slider(o))
        m += (size_t)snprintf(meta + m, cap - m, ",\"rank\":%d,\"lora_alpha\":%g,\"clip_init\":%g", o->eec_rank,
                              (double)o->eec_alpha, (double)QS_SLIDER_CLIP_INIT);
    m += (size_t)snprintf(meta + m, cap - m, ",\"shapes\":{");
    for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++)
        m += (size_t)snprintf(meta + m, cap - m, "%s\"%s\":[%lld,%lld]", i ? "," : "", qs_linear_names[i],
                              (long long)s->t[i]->shape[0], (long long)s->t[i]->shape[1]);
    snprintf(meta + m, cap - m, "}}");
}

/* STORE's part of linear i of s (GPTQ, QLLM): out->codes packed into out->packed, and with
 * with GPTQ out->mse from them against the stored weights (the slab); codes freed */
static int qlin_finish(qs_qrun *q, qs_qslot *s, int i, int blk, qs_error *err) {
    const qs_qconfig *qc = &q->o->q;
    const qs_tensor_info *t = s->t[i];
    const int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(qc, cols);
    const int g = qc->group > 0 ? qc->group : cols;
    qs_qlin_out *out = &s->lin[i];
    const size_t rp = qs_packed_size((size_t)cols, qc->bits);
    out->packed_bytes = rp * (size_t)rows;
    out->packed = malloc(out->packed_bytes);
    out->own_packed = 1;
    const int measure = is_gptq(q->o) || is_slider(q->o); /* QLLM's and DL-QAT's mse came with their codes */
    double *part = measure ? malloc(sizeof(double) * (size_t)rows) : NULL;
    if (!out->packed || (measure && !part)) {
        free(part);
        return qs_error_set(err, -ENOMEM, "block %d: out of memory packing %s", blk, t->name);
    }
    const uint8_t *codes = out->codes, *src = s->r[i].data;
    const int32_t *gi = out->g_idx;
    /* per row in column order, then the rows in order: qs_sq_err's sums of the dequantized
     * weights (qs_dequant_gidx's formula) against the stored ones */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * cols;
        double e = 0;
        for (int c = 0; c < cols && measure; c++) {
            const size_t k = (size_t)r * ng + (size_t)(gi ? gi[c] : c / g);
            const float deq = ((float)codes[o + c] - out->zeros[k]) * out->scales[k];
            const double d = (double)deq - qs_qrun_stored_f32(t, src, o + c);
            e += d * d;
        }
        if (measure) part[r] = e;
        qs_pack_codes(codes + o, (size_t)cols, qc->bits, out->packed + (size_t)r * rp);
    }
    if (measure) {
        double total = 0;
        for (int r = 0; r < rows; r++) total += part[r];
        out->mse = total / ((double)rows * cols);
    }
    free(part);
    free(out->codes), out->codes = NULL;
    return 0;
}

static int store_block(qs_qrun *q, int blk, qs_qslot *s, const qs_block_times *tm, qs_error *err) {
    const qs_qconfig *qc = &q->o->q;
    const double t0 = qs_now();
    qs_shard_tensor ts[QS_N_LINEAR * 4 + QS_N_OTHER + 9];
    char names[QS_N_LINEAR * 4][96];
    size_t n = 0;
    for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++)
        if (s->lin[i].codes) QS_FORWARD_IF_ERROR(qlin_finish(q, s, (int)i, blk, err));
    for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++) {
        const qs_tensor_info *t = s->t[i];
        const qs_qlin_out *l = &s->lin[i];
        int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(qc, cols);
        snprintf(names[4 * i], 96, "%s.codes", qs_linear_names[i]);
        snprintf(names[4 * i + 1], 96, "%s.scales", qs_linear_names[i]);
        snprintf(names[4 * i + 2], 96, "%s.zeros", qs_linear_names[i]);
        snprintf(names[4 * i + 3], 96, "%s.g_idx", qs_linear_names[i]);
        ts[n++] = (qs_shard_tensor){.name = names[4 * i], .role = "codes", .dtype = QS_DTYPE_U8, .n_dims = 1,
                                    .shape = {(int64_t)l->packed_bytes}, .data = l->packed};
        ts[n++] = (qs_shard_tensor){.name = names[4 * i + 1], .role = "scales", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                    .shape = {rows, ng}, .data = l->scales};
        ts[n++] = (qs_shard_tensor){.name = names[4 * i + 2], .role = "zeros", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                    .shape = {rows, ng}, .data = l->zeros};
        if (l->g_idx)
            ts[n++] = (qs_shard_tensor){.name = names[4 * i + 3], .role = "g_idx", .dtype = QS_DTYPE_I32, .n_dims = 1,
                                        .shape = {cols}, .data = l->g_idx};
    }
    for (size_t i = QS_N_LINEAR; i < s->n; i++) {
        const qs_tensor_info *t = s->t[i];
        for (int k = 0; k < QS_N_OTHER; k++)
            if (strstr(t->name, qs_block_other_names[k]))
                ts[n++] = (qs_shard_tensor){.name = qs_block_other_names[k], .role = k < 2 ? "norm" : "bias",
                                            .dtype = QS_DTYPE_F32, .n_dims = 1, .shape = {t->shape[0]},
                                            .data = s->other[k]};
    }
    static const char *const ra_names[3][3] = {{"reassembly.attn_in.src_a", "reassembly.attn_in.src_b", "reassembly.attn_in.coef"},
                                               {"reassembly.mlp_in.src_a", "reassembly.mlp_in.src_b", "reassembly.mlp_in.coef"},
                                               {"reassembly.down_in.src_a", "reassembly.down_in.src_b", "reassembly.down_in.coef"}};
    for (int k = 0; k < 3; k++) {
        const qs_reasm *r = &s->ra[k];
        if (!r->src_a || r->theta == 0) continue;
        ts[n++] = (qs_shard_tensor){.name = ra_names[k][0], .role = "reassembly", .dtype = QS_DTYPE_I32, .n_dims = 1, .shape = {r->C}, .data = r->src_a};
        ts[n++] = (qs_shard_tensor){.name = ra_names[k][1], .role = "reassembly", .dtype = QS_DTYPE_I32, .n_dims = 1, .shape = {r->C}, .data = r->src_b};
        ts[n++] = (qs_shard_tensor){.name = ra_names[k][2], .role = "reassembly", .dtype = QS_DTYPE_F32, .n_dims = 1, .shape = {r->C}, .data = r->coef};
    }
    char meta[2048];
    block_meta(q, s, meta, sizeof meta);
    char rel[64], *path;
    snprintf(rel, sizeof rel, "blocks/block-%04d.qsh", blk);
    path = qs_path_join(q->o->out_dir, rel);
    qs_shard_opts so = {.zstd_level = q->o->zstd_level, .zstd_threads = q->o->zstd_threads};
    qs_shard_write_info info;
    int rc = qs_shard_write(path, blk, meta, ts, n, &so, &info, err);
    free(path);
    if (rc) return rc;
    /* the shard's rename is durable: record it */
    char metrics[1024];
    size_t k = (size_t)snprintf(metrics, sizeof metrics, "{\"mse\":{");
    for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++)
        k += (size_t)snprintf(metrics + k, sizeof metrics - k, "%s\"%s\":%.6g", i ? "," : "", qs_linear_names[i], s->lin[i].mse);
    if (tunes(q->o)) /* the group's training loss, first and last epoch */
        k += (size_t)snprintf(metrics + k, sizeof metrics - k, "},\"%s\":{",
                              is_dlqat(q->o) || is_slider(q->o) ? "train_loss" : "eec_loss");
    if (tunes(q->o))
        k += (size_t)snprintf(metrics + k, sizeof metrics - k, "\"first_epoch\":%.6g,\"last_epoch\":%.6g",
                              s->eec_loss[0], s->eec_loss[1]);
    if (is_gptq(q->o)) {
        k += (size_t)snprintf(metrics + k, sizeof metrics - k, "},\"gptq_loss\":{");
        for (size_t i = 0; i < s->n && i < QS_N_LINEAR; i++)
            k += (size_t)snprintf(metrics + k, sizeof metrics - k, "%s\"%s\":%.6g", i ? "," : "", qs_linear_names[i],
                                  s->lin[i].loss);
    }
    snprintf(metrics + k, sizeof metrics - k, "},\"raw_bytes\":%llu,\"compressed_bytes\":%llu,\"load_s\":%.3f,\"compute_s\":%.3f}",
             (unsigned long long)info.raw_bytes, (unsigned long long)info.compressed_bytes, tm->load, tm->compute);
    qs_manifest_block rec = {.block = blk, .file = rel, .bytes = info.file_bytes, .xxh3 = info.file_xxh3,
                             .seconds = tm->load + tm->compute, .metrics_json = metrics};
    QS_FORWARD_IF_ERROR(qs_manifest_set_block(&q->man, &rec, err));
    QS_FORWARD_IF_ERROR(qs_manifest_save(&q->man, q->man_path, err));
    qs_qslot_release(s);
    q->done_now++;
    q->raw_bytes += info.raw_bytes;
    q->shard_bytes += info.file_bytes;
    double store_s = qs_now() - t0;
    size_t read = 0;
    for (size_t i = 0; i < s->n; i++) read += s->t[i]->nbytes;
    qs_progress_block b = {.block = blk, .load = tm->load, .wait_load = tm->wait_load, .compute = tm->compute,
                           .store = store_s, .read_bytes = read, .shard_bytes = info.file_bytes};
    qs_progress_block_done(&q->prog, &b, qs_now());
    return 0;
}

static int st_store(void *ctx, int unit, void *slot_, const qs_block_times *tm, qs_error *err) {
    qs_qrun *q = ctx;
    qs_qunit *u = slot_;
    (void)unit;
    if (q->slider_pass == 1) { /* SliderQuant's first pass stores nothing: its parameters are in acts/ */
        for (int j = 0; j < u->nb; j++) {
            qs_qslot_release(&u->blk[j]);
            qs_progress_block b = {.block = u->b0 + j, .load = tm->load, .wait_load = tm->wait_load,
                                   .compute = tm->compute};
            qs_progress_block_done(&q->prog, &b, qs_now());
        }
        qs_slider_prune(q, u->b0 + u->nb - 1);
        return 0;
    }
    qs_block_times per = *tm; /* a group's times, shared out evenly over its blocks */
    per.load /= u->nb, per.wait_load /= u->nb, per.compute /= u->nb;
    for (int j = 0; j < u->nb; j++) QS_FORWARD_IF_ERROR(store_block(q, u->b0 + j, &u->blk[j], &per, err));
    if (is_slider(q->o)) qs_slider_prune(q, u->b0 + u->nb - 1); /* the parameters carried before it are stale */
    /* the unit's last block is recorded: with a checkpoint after it, the older ones are stale */
    if (u->blk[u->nb - 1].ckpt) qs_calib_checkpoint_prune(q, u->b0 + u->nb - 1);
    return 0;
}

/* the run fingerprint: what the result depends on */
static char *fingerprint(const qs_qrun *q) {
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (size_t i = 0; i < qs_catalog_count(q->cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(q->cat, i);
        XXH3_64bits_update(st, t->name, strlen(t->name) + 1);
        XXH3_64bits_update(st, &t->dtype, sizeof t->dtype);
        XXH3_64bits_update(st, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
        XXH3_64bits_update(st, &t->nbytes, sizeof t->nbytes);
    }
    unsigned long long h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    const qs_model_config *c = &q->cfg;
    const qs_quantize_opts *o = q->o;
    char *fp = malloc(2048);
    size_t n = (size_t)snprintf(fp, 2048,
                                "{\"format\":1,\"model\":{\"catalog_xxh3\":\"%016llx\",\"hidden\":%d,\"intermediate\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d},"
                                "\"method\":{\"name\":\"%s\",\"wbits\":%d,\"abits\":%d,\"group\":%d,\"sym\":%s",
                                h, c->hidden_size, c->intermediate_size, c->n_layers, c->n_heads, c->n_kv_heads, o->method,
                                o->q.bits, o->abits, o->q.group, o->q.sym ? "true" : "false");
    if (is_gptq(o))
        n += (size_t)snprintf(fp + n, 2048 - n, ",\"damp\":%g,\"act_order\":%s,\"static_groups\":%s,\"block_size\":%d}",
                              (double)o->damp, o->act_order ? "true" : "false", o->static_groups ? "true" : "false",
                              o->gptq_block);
    else if (is_qllm(o)) {
        n += (size_t)snprintf(fp + n, 2048 - n, ",\"cr\":%s,\"eec\":%s,\"cr_tokens\":%d,\"cr_candidates\":%d,\"cr_distance\":\"%s\"",
                              o->cr ? "true" : "false", o->eec ? "true" : "false", o->cr_tokens, o->cr_candidates,
                              o->cr_distance == QS_REASM_DIST_CODE ? "code" : "paper");
        if (o->eec)
            n += (size_t)snprintf(fp + n, 2048 - n, ",\"eec_rank\":%d,\"eec_alpha\":%g,\"eec_epochs\":%d,\"eec_lr\":%g,\"eec_form\":\"%s\",\"blocks_per_group\":%d",
                                  o->eec_rank, (double)o->eec_alpha, o->eec_epochs, (double)o->eec_lr,
                                  o->eec_form ? "merged" : "paper", q->K);
        n += (size_t)snprintf(fp + n, 2048 - n, "}");
    } else if (is_dlqat(o))
        n += (size_t)snprintf(fp + n, 2048 - n, ",\"rank\":%d,\"lora_alpha\":%g,\"epochs\":%d,\"lr\":%g,\"blocks_per_group\":%d}",
                              o->eec_rank, (double)o->eec_alpha, o->eec_epochs, (double)o->eec_lr, q->K);
    else if (is_slider(o))
        n += (size_t)snprintf(fp + n, 2048 - n,
                              ",\"rank\":%d,\"lora_alpha\":%g,\"epochs\":%d,\"lr\":%g,\"clip_lr\":%g,\"clip_init\":%g,"
                              "\"smooth_lr\":%g,\"incremental\":%s}",
                              o->eec_rank, (double)o->eec_alpha, o->eec_epochs, (double)o->eec_lr,
                              (double)(o->eec_lr * QS_SLIDER_CLIP_LR_MULT), (double)QS_SLIDER_CLIP_INIT,
                              o->smooth ? (double)(o->eec_lr * QS_SLIDER_SMOOTH_LR_MULT) : 0.0, /* 0: off */
                              o->incremental ? "true" : "false");
    else
        n += (size_t)snprintf(fp + n, 2048 - n, "}");
    if (q->calibrated)
        n += (size_t)snprintf(fp + n, 2048 - n, ",\"calibration\":{\"nsamples\":%d,\"seqlen\":%d,\"seed\":%llu,\"ids_xxh3\":\"%016llx\"}",
                              q->calib.nsamples, q->calib.seqlen, (unsigned long long)o->calib.seed,
                              (unsigned long long)q->calib.digest);
    snprintf(fp + n, 2048 - n, "}");
    return fp;
}

/* 1 when the recorded shard is on disk with the recorded size and hash */
static int shard_intact(const qs_qrun *q, const qs_manifest_block *b) {
    char *p = qs_path_join(q->o->out_dir, b->file);
    qs_shard *s;
    int ok = 0;
    if (qs_shard_open(&s, p, NULL) == 0) {
        ok = qs_shard_file_xxh3(s) == b->xxh3;
        qs_shard_close(s);
    }
    free(p);
    return ok;
}

static qs_progress_mode progress_mode(int p) {
    switch (p) {
    case 0: return QS_PROGRESS_QUIET;
    case 2: return QS_PROGRESS_JSON;
    case 3: return QS_PROGRESS_LINES;
    default: return qs_progress_auto(stderr);
    }
}

int qs_quantize_run(const qs_quantize_opts *o, qs_quantize_summary *sum, qs_error *err) {
    QS_RETURN_ERROR_IF(strcmp(o->method, "rtn") && strcmp(o->method, "gptq") && strcmp(o->method, "qllm") && !is_dlqat(o) &&
                           !is_slider(o),
                       QS_EUNSUPPORTED, "method '%s' is not implemented (rtn, gptq, qllm, dlqat and slider are)", o->method);
    QS_RETURN_ERROR_IF(is_slider(o) && o->blocks_per_group > 0, QS_EUSAGE,
                       "--blocks-per-group: SliderQuant trains its own windows of 1 to 4 blocks");
    QS_RETURN_ERROR_IF(is_slider(o) && o->cr, QS_EUSAGE, "--method slider has no channel reassembly (it is QLLM's)");
    const int eec = tunes(o);
    QS_RETURN_ERROR_IF(!eec && o->blocks_per_group > 1, QS_EUSAGE,
                       "--blocks-per-group %d: groups of blocks are trained by QLLM's error correction (--method qllm --eec on) "
                       "and DL-QAT only",
                       o->blocks_per_group);
    QS_RETURN_ERROR_IF(is_dlqat(o) && o->cr, QS_EUSAGE, "--method dlqat has no channel reassembly (it is QLLM's)");
    QS_RETURN_ERROR_IF(eec && (o->blocks_per_group < 0 || o->blocks_per_group > QS_GROUP_MAX), QS_EUSAGE,
                       "--blocks-per-group %d: 1..%d are supported", o->blocks_per_group, QS_GROUP_MAX);
    QS_RETURN_ERROR_IF(eec && (o->eec_rank < 1 || o->eec_epochs < 0 || !(o->eec_lr >= 0) || !(o->eec_alpha > 0)), QS_EUSAGE,
                       "--rank %d, --epochs %d, --lr %g: give a rank >= 1, epochs >= 0 and a learning rate >= 0",
                       o->eec_rank, o->eec_epochs, (double)o->eec_lr);
    QS_RETURN_ERROR_IF(o->q.bits < 2 || o->q.bits > 8, QS_EUSAGE, "--wbits %d: 2..8 are supported", o->q.bits);
    QS_RETURN_ERROR_IF(o->abits < 2 || o->abits > 16, QS_EUSAGE, "--abits %d: 2..16 are supported (16: weight-only)", o->abits);
    QS_RETURN_ERROR_IF(o->q.group != -1 && o->q.group != 0 && o->q.group < 2, QS_EUSAGE, "--group %d: give -1 (per channel) or a size >= 2", o->q.group);
    qs_qrun q = {.o = o, .t_start = qs_now(), .K = eec && o->blocks_per_group ? o->blocks_per_group : 1,
                 .n_states = eec ? 2 : 1};
    /* SliderQuant's COMPUTE holds up to a window of blocks: one more slot for LOAD, one for STORE */
    enum { MAX_SLOTS = QS_SLIDER_MAX_WINDOW + 2 };
    qs_qunit slots[MAX_SLOTS];
    memset(slots, 0, sizeof slots);
    void *ptrs[MAX_SLOTS];
    const int most_slots = is_slider(o) ? MAX_SLOTS : 3, least_slots = is_slider(o) ? QS_SLIDER_MAX_WINDOW : 1;
    int n_slots = 0, rc = qs_config_load(&q.cfg, o->model_dir, err);
    q.bf16_weights = is_gptq(o) && qs_backend_bf16_weights(o->device);
    q.eec_bf16 = is_qllm(o) && eec && !o->eec_form && o->q.bits < 16 && qs_backend_bf16_weights(o->device);
    q.cr_bf16 = is_qllm(o) && o->cr && qs_backend_bf16_weights(o->device);
    if (!rc) rc = qs_catalog_open(&q.cat, o->model_dir, err);
    char *fp = NULL;
    size_t slot_bytes = 0, max_cols = 0, calib_bytes = 0, eec_bytes = 0;
    if (!rc && (is_gptq(o) || is_qllm(o) || is_dlqat(o) || is_slider(o))) { /* calibration ids (small) now: their digest is part of the fingerprint */
        rc = qs_calib_load(&q.calib, &o->calib, o->model_dir, q.cfg.vocab_size, err);
        /* EEC: groups of --blocks-per-group blocks; by default 4 (the paper's), fewer when one
         * group's training does not fit --gpu-mem; the forward's windows per call get the rest */
        if (!rc && is_dlqat(o) && !o->blocks_per_group) q.K = 1; /* DL-QAT: block reconstruction by default */
        if (!rc && is_qllm(o) && eec && !o->blocks_per_group) {
            qs_error e2 = {0};
            for (q.K = 4; q.K > 1 && qs_eec_plan(&q, o->gpu_mem, &eec_bytes, &e2); q.K--) {}
            if (q.K < 4 && o->progress)
                fprintf(stderr, "qstream: --gpu-mem holds the error correction of %d block%s at a time: groups of %d\n", q.K,
                        q.K > 1 ? "s" : "", q.K);
        }
        if (!rc && eec) rc = is_slider(o) ? qs_slider_plan(&q, o->gpu_mem, &eec_bytes, err) : qs_eec_plan(&q, o->gpu_mem, &eec_bytes, err);
        /* staging the next blocks' stored weights on the device, where the budget holds it too
         * (after the group size: that is worth more than the overlap) */
        size_t stage_block = 0;
        for (int L = 0; !rc && L < q.cfg.n_layers; L++) {
            qs_qslot tmp;
            rc = block_ranges(&q, L, &tmp, err);
            size_t b = rc ? 0 : qs_qslot_stage_layout(&tmp, NULL);
            if (b > stage_block) stage_block = b;
        }
        if (!rc) qs_calib_plan_stage(&q, stage_block, o->gpu_mem ? o->gpu_mem - eec_bytes : 0);
        if (!rc) rc = qs_calib_plan_per(&q, o->gpu_mem ? o->gpu_mem - eec_bytes : 0, err);
        if (!rc) q.calibrated = 1, calib_bytes = qs_calib_plan_bytes(&q, 0);
    }
    /* plan: the largest unit (block or group of blocks) decides the slot size */
    size_t unit_bytes = 0, unit_held = 0, slot_held = 0, store_bytes = 0; /* held: the slab and the results for STORE */
    for (int L = 0; !rc && L < q.cfg.n_layers; L++) {
        qs_qslot tmp;
        rc = block_ranges(&q, L, &tmp, err);
        if (rc) break;
        if (L % q.K == 0) unit_bytes = unit_held = 0;
        unit_bytes += block_slab_bytes(&tmp);
        size_t st = 0;
        unit_held += block_slab_bytes(&tmp) + block_result_bytes(&q, &tmp, &st);
        if (st > store_bytes) store_bytes = st;
        if (unit_bytes > slot_bytes) slot_bytes = unit_bytes;
        if (unit_held > slot_held) slot_held = unit_held;
        for (size_t i = 0; i < QS_N_LINEAR; i++)
            if ((size_t)tmp.t[i]->shape[1] > max_cols) max_cols = (size_t)tmp.t[i]->shape[1];
    }
    if (!rc) {
        /* 3 slots overlap load, compute and store; fewer slots cost overlap only; when even one
         * slot and the calibration states do not fit, the states spill to disk */
        /* EEC's training lives in the device's memory: host memory on the CPU */
        size_t rows_scratch = max_cols * (ROWS_CHUNK * 5 + 4) + (qs_backend_host_memory(o->device) && eec ? (is_slider(o) ? eec_bytes : qs_eec_host_bytes(&q)) : 0) +
                              (q.eec_w_host ? (size_t)q.K * qs_llama_weights_bytes(&q.cfg) : 0) /* compute_eec.c */ +
                              store_bytes;
        size_t scratch = rows_scratch + calib_bytes;
        q.spill = q.calibrated && o->spill;
        if (q.spill) scratch = rows_scratch + qs_calib_plan_bytes(&q, 1);
        n_slots = most_slots;
        if (o->host_mem) {
            while (n_slots >= least_slots && (size_t)n_slots * slot_held + scratch > o->host_mem) n_slots--;
            if (n_slots < least_slots && q.calibrated && !q.spill) {
                q.spill = 1;
                scratch = rows_scratch + qs_calib_plan_bytes(&q, 1);
                n_slots = most_slots;
                while (n_slots >= least_slots && (size_t)n_slots * slot_held + scratch > o->host_mem) n_slots--;
            }
        }
        if (n_slots < least_slots) n_slots = 0;
        if (n_slots == 0)
            rc = qs_error_set(err, QS_ENOMEMBUDGET,
                              "--host-mem %.2f GiB cannot hold %s of %s (%.2f GiB as stored, %.2f GiB with its "
                              "quantized result%s) plus %.2f GiB of %sscratch; nothing was written",
                              o->host_mem / 1073741824.0, least_slots > 1 ? "the four blocks SliderQuant holds" : "one block",
                              o->model_dir,
                              slot_bytes / 1073741824.0,
                              slot_held / 1073741824.0, least_slots > 1 ? ", each" : "", scratch / 1073741824.0,
                              q.calibrated ? "calibration buffers (states spilled to disk) and " : "");
    }
    /* output directory and manifest: resume or start */
    if (!rc) {
        char *blocks = qs_path_join(o->out_dir, "blocks");
        rc = qs_mkdir_p(blocks, err);
        free(blocks);
        q.man_path = qs_path_join(o->out_dir, "manifest.json");
        fp = fingerprint(&q);
        q.fp_hash = XXH3_64bits(fp, strlen(fp));
        /* a spilled run resumes by replay, and so does SliderQuant (its two paths are at different blocks) */
        q.act_ckpt = q.calibrated && o->act_checkpoints && !q.spill && !is_slider(o);
        q.ckpt_cost = -1;
    }
    int fresh = 0;
    if (!rc) {
        if (!o->restart && access(q.man_path, F_OK) == 0) {
            rc = qs_manifest_load(&q.man, q.man_path, err);
            char what[512];
            if (!rc && qs_fingerprint_diff(q.man.fingerprint_json, fp, what, sizeof what))
                rc = qs_error_set(err, QS_EMISMATCH, "%s holds a different run (%s); use --restart to start over", o->out_dir, what);
            if (!rc && q.man.n_blocks != q.cfg.n_layers)
                rc = qs_error_set(err, QS_EMISMATCH, "%s: manifest has %d blocks, the model %d", q.man_path, q.man.n_blocks, q.cfg.n_layers);
        } else {
            fresh = 1;
            rc = qs_manifest_init(&q.man, q.cfg.n_layers, fp, err);
        }
    }
    /* the manifest, then config, tokenizer and the non-block tensors so that OUT_DIR is a model
     * (each file durable on its own; a resume writes whichever is missing) */
    if (!rc && fresh) rc = qs_manifest_save(&q.man, q.man_path, err);
    if (!rc) rc = qs_outdir_write_model_files(o->model_dir, q.cat, o->out_dir, fresh, err);
    /* resume after the last block that is recorded and intact: blocks run in order, and a block's
     * calibration input is the previous blocks' output, so the first missing block starts the run
     * (the start of its group when groups of blocks are trained together) */
    int first = 0;
    const int incremental = is_slider(o) && o->incremental;
    q.slider_pass = incremental ? 2 : 0; /* a recorded block is the second pass's */
    if (!rc) {
        while (first < q.cfg.n_layers) {
            const qs_manifest_block *b = qs_manifest_find(&q.man, first);
            if (!b || !shard_intact(&q, b)) break;
            first++;
        }
        if (first < q.cfg.n_layers) first -= first % q.K;
        if (is_slider(o) && first > 0 && first < q.cfg.n_layers && !qs_slider_can_resume(&q, first)) {
            if (o->progress)
                fprintf(stderr, "qstream: the SliderQuant parameters carried into block %d are not in %s/acts: starting over\n",
                        first, o->out_dir);
            first = 0;
        }
        size_t keep = 0; /* forget records at or after `first`: they were not verified */
        for (size_t i = 0; i < q.man.n; i++) {
            if (q.man.blocks[i].block < first) q.man.blocks[keep++] = q.man.blocks[i];
            else free(q.man.blocks[i].file), free(q.man.blocks[i].metrics_json);
        }
        q.man.n = keep;
    }
    if (!rc && first < q.cfg.n_layers && q.calibrated) rc = qs_calib_setup(&q, first, err);
    /* SliderQuant's incremental first pass: still to run (all of it, or from the first block
     * without its parameters on disk: the ones before it are replayed through COMPUTE; a
     * --restart runs all of it) */
    int p1 = q.cfg.n_layers;
    if (incremental && first == 0 && !rc) p1 = fresh ? 0 : qs_slider_pass1_done(&q);
    if (!rc && p1 < q.cfg.n_layers) {
        q.slider_pass = 1;
        rc = qs_slider_begin(&q, 0, p1, err);
        if (rc && p1 > 0) { /* its carried parameters are gone: the first pass over */
            qs_slider_end(&q);
            if (o->progress)
                fprintf(stderr, "qstream: the SliderQuant parameters carried into block %d (first pass) are not in %s/acts: "
                                "starting the first pass over\n", p1, o->out_dir);
            memset(err, 0, sizeof *err);
            rc = qs_slider_begin(&q, 0, 0, err);
        }
    } else if (!rc && first < q.cfg.n_layers && is_slider(o))
        rc = qs_slider_begin(&q, first, first, err);
    if (!rc && first < q.cfg.n_layers) {
        const char **paths = malloc(sizeof(char *) * qs_catalog_file_count(q.cat));
        for (size_t i = 0; i < qs_catalog_file_count(q.cat); i++) paths[i] = qs_catalog_file_path(q.cat, (int)i);
        rc = qs_reader_open(&q.reader, paths, (int)qs_catalog_file_count(q.cat), &o->reader, err);
        free(paths);
        q.rows = malloc(sizeof(float) * ROWS_CHUNK * max_cols);
        q.codes = malloc(ROWS_CHUNK * max_cols);
        if (!rc && (!q.rows || !q.codes)) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (int i = 0; !rc && i < n_slots; i++) {
            slots[i].slab = qs_reader_slab_alloc(slot_bytes);
            slots[i].cap = slot_bytes;
            ptrs[i] = &slots[i];
            if (!slots[i].slab) rc = qs_error_set(err, -ENOMEM, "out of memory for a %zu-byte block slot", slot_bytes);
            if (!rc) rc = qs_calib_pin(&q, slots[i].slab, slot_bytes, err); /* the loader uploads from them */
        }
        qs_pipeline_stages st = {.ctx = &q, .begin = st_begin, .load = st_load, .compute = st_compute,
                                 .store = st_store, .holds = is_slider(o)};
        const int n_units = (q.cfg.n_layers + q.K - 1) / q.K;
        if (!rc && q.slider_pass == 1) { /* the first pass streams every block; nothing is stored */
            if (o->progress)
                fprintf(stderr, "qstream: SliderQuant pass 1 of 2 (half of each weight's columns quantized, %d epochs a "
                                "window)%s\n", o->eec_epochs / 2, p1 > 0 ? ", resumed" : "");
            qs_progress_start(&q.prog, progress_mode(o->progress), stderr, q.cfg.n_layers, 0, qs_now());
            q.prog.pass = 1;
            rc = qs_pipeline_run(&st, 0, n_units, ptrs, (size_t)n_slots, NULL, NULL, err);
            qs_progress_finish(&q.prog, qs_now());
            qs_slider_end(&q);
            q.slider_pass = 2;
            if (!rc) rc = qs_calib_reembed(&q, err); /* the second pass starts at the embedding again */
            if (!rc) rc = qs_slider_begin(&q, 0, 0, err);
            if (!rc && o->progress)
                fprintf(stderr, "qstream: SliderQuant pass 2 of 2 (all quantized, %d epochs a window)\n",
                        o->eec_epochs - o->eec_epochs / 2);
        }
        qs_progress_start(&q.prog, progress_mode(o->progress), stderr, q.cfg.n_layers, first, qs_now());
        q.prog.pass = incremental ? 2 : 0;
        if (!rc) rc = qs_pipeline_run(&st, first / q.K, n_units, ptrs, (size_t)n_slots, NULL, NULL, err);
        if (!rc) qs_calib_checkpoint_prune(&q, q.cfg.n_layers); /* finished: no state left to resume */
        qs_progress_finish(&q.prog, qs_now());
    }
    if (sum) {
        *sum = (qs_quantize_summary){.n_blocks = q.cfg.n_layers, .done_before = first, .done_now = q.done_now,
                                     .n_slots = n_slots, .slot_bytes = slot_bytes, .seconds = qs_now() - q.t_start,
                                     .raw_bytes = q.raw_bytes, .shard_bytes = q.shard_bytes,
                                     .device_peak = q.lm.be ? qs_backend_peak_bytes(q.lm.be) : 0,
                                     .device_held = q.lm.be ? qs_backend_held_bytes(q.lm.be) : 0, .staged = q.stage,
                                     .gptq_h_host = q.gptq_h_host, .eec_w_host = q.eec_w_host, .codes_beside = q.codes_beside,
                                     .gptq_reorder_in_place = q.gptq_reorder_in_place,
                                     .per = q.calibrated ? q.per : 0, .windows = q.calibrated ? q.calib.nsamples : 0,
                                     .act_ckpts = q.ckpts, .act_ckpt_s = q.ckpt_s, .ckpt_from = q.ckpt_from,
                                     .replayed = q.replayed};
    }
    qs_slider_end(&q);
    for (int i = 0; i < MAX_SLOTS; i++) {
        qs_calib_unpin(&q, slots[i].slab);
        free(slots[i].slab);
        for (int j = 0; j < QS_GROUP_MAX; j++) {
            qs_qslot_release(&slots[i].blk[j]);
            if (slots[i].blk[j].staged) q.lm.be->ops->free(q.lm.be, slots[i].blk[j].staged); /* a run that stopped early */
        }
    }
    qs_calib_teardown(&q);
    qs_calib_free(&q.calib);
    free(q.rows);
    free(q.codes);
    free(fp);
    free(q.man_path);
    qs_manifest_free(&q.man);
    qs_reader_close(q.reader);
    qs_catalog_free(q.cat);
    return rc;
}
