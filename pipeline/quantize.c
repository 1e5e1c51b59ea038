#include "pipeline/quantize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/half.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "pipeline/engine.h"

#define N_LIN 7
#define MAX_T 12
#define ROWS_CHUNK 64 /* rows converted to float at a time */

static const char *lin_names[N_LIN] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
static const char *other_names[5] = {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.bias",
                                     "self_attn.k_proj.bias", "self_attn.v_proj.bias"};

typedef struct slot {
    void *slab;
    size_t cap;
    qs_read_range r[MAX_T];
    const qs_tensor_info *t[MAX_T];
    size_t n;
    /* outputs of COMPUTE (packed codes live in the slab, over their source) */
    uint8_t *packed[N_LIN];
    size_t packed_bytes[N_LIN];
    float *scales[N_LIN], *zeros[N_LIN]; /* [rows, groups] */
    float *other[5];                     /* norms and biases as F32 (NULL when absent) */
    double mse[N_LIN];
} slot;

typedef struct qrun {
    const qs_quantize_opts *o;
    qs_catalog *cat;
    qs_model_config cfg;
    qs_reader *reader;
    qs_manifest man;
    char *man_path;
    float *rows;     /* [ROWS_CHUNK, max cols] scratch of COMPUTE */
    uint8_t *codes;  /* [ROWS_CHUNK, max cols] */
    float *deq;      /* [max cols] */
    double t_start;
    int done_now;
    unsigned long long raw_bytes, shard_bytes;
} qrun;

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

static const qs_tensor_info *block_tensor(const qrun *q, int layer, const char *suffix) {
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", layer, suffix);
    return qs_catalog_find(q->cat, name);
}

/* the block's tensors in a fixed order: 7 linears, 2 norms, optional q/k/v biases */
static int block_ranges(const qrun *q, int layer, slot *s, qs_error *err) {
    s->n = 0;
    for (int i = 0; i < N_LIN + 5; i++) {
        char suffix[96];
        if (i < N_LIN) snprintf(suffix, sizeof suffix, "%s.weight", lin_names[i]);
        else snprintf(suffix, sizeof suffix, "%s", other_names[i - N_LIN]);
        const qs_tensor_info *t = block_tensor(q, layer, suffix);
        if (!t && i < N_LIN + 2)
            return qs_error_set(err, QS_EFORMAT, "%s: tensor 'model.layers.%d.%s' is missing", q->o->model_dir, layer, suffix);
        if (!t) continue;
        if (t->dtype != QS_DTYPE_F32 && t->dtype != QS_DTYPE_F16 && t->dtype != QS_DTYPE_BF16)
            return qs_error_set(err, QS_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not a float type", q->o->model_dir, t->name,
                                qs_dtype_name(t->dtype));
        if ((i < N_LIN) != (t->n_dims == 2))
            return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s' has %d dimensions", q->o->model_dir, t->name, t->n_dims);
        s->t[s->n] = t;
        s->r[s->n] = (qs_read_range){.file = t->file_index, .offset = t->offset, .len = t->nbytes, .what = t->name};
        s->n++;
    }
    return 0;
}

static void to_f32(const qs_tensor_info *t, const uint8_t *src, size_t n, float *dst) {
    for (size_t i = 0; i < n; i++) { /* memcpy: safetensors data need not be aligned */
        if (t->dtype == QS_DTYPE_F32) {
            memcpy(&dst[i], src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == QS_DTYPE_F16 ? qs_f16_to_f32(h) : qs_bf16_to_f32(h);
        }
    }
}

static int st_load(void *ctx, int blk, void *slot_, qs_error *err) {
    qrun *q = ctx;
    slot *s = slot_;
    QS_FORWARD_IF_ERROR(block_ranges(q, blk, s, err));
    return qs_reader_read(q->reader, s->r, s->n, s->slab, s->cap, err);
}

static int st_compute(void *ctx, int blk, void *slot_, qs_error *err) {
    qrun *q = ctx;
    slot *s = slot_;
    const qs_qconfig *qc = &q->o->q;
    memset(s->other, 0, sizeof s->other);
    for (size_t i = 0; i < s->n; i++) {
        const qs_tensor_info *t = s->t[i];
        const uint8_t *src = s->r[i].data;
        size_t es = qs_dtype_size(t->dtype);
        if (t->n_dims == 1) { /* norms and biases stay float: converted into the slot's side buffers */
            int which = -1;
            for (int k = 0; k < 5; k++)
                if (strstr(t->name, other_names[k])) which = k;
            s->other[which] = malloc(sizeof(float) * t->n_elems);
            if (!s->other[which]) return qs_error_set(err, -ENOMEM, "out of memory");
            to_f32(t, src, t->n_elems, s->other[which]);
            continue;
        }
        int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(qc, cols);
        uint8_t *packed = (uint8_t *)s->r[i].data; /* written behind the rows still to be read */
        size_t row_packed = qs_packed_size((size_t)cols, qc->bits);
        free(s->scales[i]);
        free(s->zeros[i]);
        s->scales[i] = malloc(sizeof(float) * (size_t)rows * ng);
        s->zeros[i] = malloc(sizeof(float) * (size_t)rows * ng);
        if (!s->scales[i] || !s->zeros[i]) return qs_error_set(err, -ENOMEM, "out of memory");
        double se = 0;
        for (int r0 = 0; r0 < rows; r0 += ROWS_CHUNK) {
            int nr = rows - r0 < ROWS_CHUNK ? rows - r0 : ROWS_CHUNK;
            to_f32(t, src + (size_t)r0 * cols * es, (size_t)nr * cols, q->rows);
            QS_FORWARD_IF_ERROR(qs_quant_rtn(q->rows, nr, cols, qc, q->codes, s->scales[i] + (size_t)r0 * ng,
                                             s->zeros[i] + (size_t)r0 * ng, t->name, err));
            for (int r = 0; r < nr; r++) {
                qs_dequant(q->codes + (size_t)r * cols, s->scales[i] + (size_t)(r0 + r) * ng, s->zeros[i] + (size_t)(r0 + r) * ng,
                           1, cols, qc->group, q->deq);
                for (int c = 0; c < cols; c++) {
                    double d = (double)q->deq[c] - q->rows[(size_t)r * cols + c];
                    se += d * d;
                }
                /* row r0+r of packed output ends at or before row r0+r+1 of the source: no overlap */
                qs_pack_codes(q->codes + (size_t)r * cols, (size_t)cols, qc->bits, packed + (size_t)(r0 + r) * row_packed);
            }
        }
        s->packed[i] = packed;
        s->packed_bytes[i] = row_packed * (size_t)rows;
        /* the source bytes behind the packed codes are dead: give their pages back, so a slot
         * waiting for STORE holds about a quarter of its block (the next LOAD refills them) */
        uintptr_t dead0 = ((uintptr_t)packed + s->packed_bytes[i] + 4095) & ~(uintptr_t)4095,
                  dead1 = ((uintptr_t)src + t->nbytes) & ~(uintptr_t)4095;
        if (dead1 > dead0) madvise((void *)dead0, dead1 - dead0, MADV_DONTNEED);
        s->mse[i] = se / ((double)rows * cols);
    }
    (void)blk;
    return 0;
}

static int st_store(void *ctx, int blk, void *slot_, const qs_block_times *tm, qs_error *err) {
    qrun *q = ctx;
    slot *s = slot_;
    const qs_qconfig *qc = &q->o->q;
    qs_shard_tensor ts[N_LIN * 3 + 5];
    char names[N_LIN * 3][96];
    size_t n = 0;
    for (size_t i = 0; i < s->n && i < N_LIN; i++) {
        const qs_tensor_info *t = s->t[i];
        int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(qc, cols);
        snprintf(names[3 * i], 96, "%s.codes", lin_names[i]);
        snprintf(names[3 * i + 1], 96, "%s.scales", lin_names[i]);
        snprintf(names[3 * i + 2], 96, "%s.zeros", lin_names[i]);
        ts[n++] = (qs_shard_tensor){.name = names[3 * i], .role = "codes", .dtype = QS_DTYPE_U8, .n_dims = 1,
                                    .shape = {(int64_t)s->packed_bytes[i]}, .data = s->packed[i]};
        ts[n++] = (qs_shard_tensor){.name = names[3 * i + 1], .role = "scales", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                    .shape = {rows, ng}, .data = s->scales[i]};
        ts[n++] = (qs_shard_tensor){.name = names[3 * i + 2], .role = "zeros", .dtype = QS_DTYPE_F32, .n_dims = 2,
                                    .shape = {rows, ng}, .data = s->zeros[i]};
    }
    for (size_t i = N_LIN; i < s->n; i++) {
        const qs_tensor_info *t = s->t[i];
        for (int k = 0; k < 5; k++)
            if (strstr(t->name, other_names[k]))
                ts[n++] = (qs_shard_tensor){.name = other_names[k], .role = k < 2 ? "norm" : "bias", .dtype = QS_DTYPE_F32,
                                            .n_dims = 1, .shape = {t->shape[0]}, .data = s->other[k]};
    }
    /* meta: everything needed to read the block back (shapes of the packed codes) */
    char meta[2048];
    size_t m = (size_t)snprintf(meta, sizeof meta, "{\"method\":\"%s\",\"wbits\":%d,\"group\":%d,\"sym\":%s,\"pack\":\"%s\",\"shapes\":{",
                                q->o->method, qc->bits, qc->group, qc->sym ? "true" : "false", qc->bits <= 4 ? "2-per-byte" : "1-per-byte");
    for (size_t i = 0; i < s->n && i < N_LIN; i++)
        m += (size_t)snprintf(meta + m, sizeof meta - m, "%s\"%s\":[%lld,%lld]", i ? "," : "", lin_names[i],
                              (long long)s->t[i]->shape[0], (long long)s->t[i]->shape[1]);
    snprintf(meta + m, sizeof meta - m, "}}");
    char rel[64], *path;
    snprintf(rel, sizeof rel, "blocks/block-%04d.qsh", blk);
    path = qs_path_join(q->o->out_dir, rel);
    qs_shard_opts so = {.zstd_level = q->o->zstd_level, .zstd_threads = q->o->zstd_threads};
    qs_shard_write_info info;
    int rc = qs_shard_write(path, blk, meta, ts, n, &so, &info, err);
    free(path);
    for (int k = 0; k < 5; k++) {
        free(s->other[k]);
        s->other[k] = NULL;
    }
    if (rc) return rc;
    /* the shard's rename is durable: record it */
    char metrics[512];
    size_t k = (size_t)snprintf(metrics, sizeof metrics, "{\"mse\":{");
    for (size_t i = 0; i < s->n && i < N_LIN; i++)
        k += (size_t)snprintf(metrics + k, sizeof metrics - k, "%s\"%s\":%.6g", i ? "," : "", lin_names[i], s->mse[i]);
    snprintf(metrics + k, sizeof metrics - k, "},\"raw_bytes\":%llu,\"compressed_bytes\":%llu,\"load_s\":%.3f,\"compute_s\":%.3f}",
             (unsigned long long)info.raw_bytes, (unsigned long long)info.compressed_bytes, tm->load, tm->compute);
    qs_manifest_block rec = {.block = blk, .file = rel, .bytes = info.file_bytes, .xxh3 = info.file_xxh3,
                             .seconds = tm->load + tm->compute, .metrics_json = metrics};
    QS_FORWARD_IF_ERROR(qs_manifest_set_block(&q->man, &rec, err));
    QS_FORWARD_IF_ERROR(qs_manifest_save(&q->man, q->man_path, err));
    q->done_now++;
    q->raw_bytes += info.raw_bytes;
    q->shard_bytes += info.file_bytes;
    if (q->o->progress == 1)
        fprintf(stderr, "block %d/%d: load %.2f s, wait %.2f s, compute %.2f s, shard %.1f MB, elapsed %.1f s\n", blk + 1,
                q->cfg.n_layers, tm->load, tm->wait_load, tm->compute, info.file_bytes / 1e6, qs_now() - q->t_start);
    else if (q->o->progress == 2)
        fprintf(stderr, "{\"block\":%d,\"blocks\":%d,\"load_s\":%.3f,\"wait_load_s\":%.3f,\"compute_s\":%.3f,\"shard_bytes\":%llu}\n", blk,
                q->cfg.n_layers, tm->load, tm->wait_load, tm->compute, (unsigned long long)info.file_bytes);
    return 0;
}

/* the run fingerprint: what the result depends on */
static char *fingerprint(const qrun *q) {
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
    char *fp = malloc(1024);
    snprintf(fp, 1024,
             "{\"format\":1,\"model\":{\"catalog_xxh3\":\"%016llx\",\"hidden\":%d,\"intermediate\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d},"
             "\"method\":{\"name\":\"%s\",\"wbits\":%d,\"group\":%d,\"sym\":%s}}",
             h, c->hidden_size, c->intermediate_size, c->n_layers, c->n_heads, c->n_kv_heads, q->o->method, q->o->q.bits,
             q->o->q.group, q->o->q.sym ? "true" : "false");
    return fp;
}

/* 1 when the recorded shard is on disk with the recorded size and hash */
static int shard_intact(const qrun *q, const qs_manifest_block *b) {
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

int qs_quantize_run(const qs_quantize_opts *o, qs_quantize_summary *sum, qs_error *err) {
    QS_RETURN_ERROR_IF(strcmp(o->method, "rtn"), QS_EUNSUPPORTED, "method '%s' is not implemented yet (rtn is)", o->method);
    QS_RETURN_ERROR_IF(o->q.bits < 2 || o->q.bits > 8, QS_EUSAGE, "--wbits %d: 2..8 are supported", o->q.bits);
    qrun q = {.o = o, .t_start = qs_now()};
    slot slots[3];
    memset(slots, 0, sizeof slots);
    void *ptrs[3];
    int n_slots = 0, rc = qs_config_load(&q.cfg, o->model_dir, err);
    if (!rc) rc = qs_catalog_open(&q.cat, o->model_dir, err);
    char *fp = NULL;
    size_t slot_bytes = 0, max_cols = 0;
    /* plan: the largest block decides the slot size */
    for (int L = 0; !rc && L < q.cfg.n_layers; L++) {
        slot tmp;
        rc = block_ranges(&q, L, &tmp, err);
        if (rc) break;
        size_t b = qs_reader_slab_bytes(NULL, tmp.r, tmp.n);
        if (b > slot_bytes) slot_bytes = b;
        for (size_t i = 0; i < N_LIN; i++)
            if ((size_t)tmp.t[i]->shape[1] > max_cols) max_cols = (size_t)tmp.t[i]->shape[1];
    }
    if (!rc) {
        size_t scratch = max_cols * (ROWS_CHUNK * 5 + 4);
        n_slots = 3;
        if (o->host_mem)
            while (n_slots > 0 && (size_t)n_slots * slot_bytes + scratch > o->host_mem) n_slots--;
        if (n_slots == 0)
            rc = qs_error_set(err, QS_ENOMEMBUDGET,
                              "--host-mem %.2f GiB cannot hold one block of %s (%.2f GiB as stored, plus %.1f MiB scratch); nothing was written",
                              o->host_mem / 1073741824.0, o->model_dir, slot_bytes / 1073741824.0, scratch / 1048576.0);
    }
    /* output directory and manifest: resume or start */
    if (!rc) {
        char *blocks = qs_path_join(o->out_dir, "blocks");
        rc = qs_mkdir_p(blocks, err);
        free(blocks);
        q.man_path = qs_path_join(o->out_dir, "manifest.json");
        fp = fingerprint(&q);
    }
    if (!rc) {
        if (!o->restart && access(q.man_path, F_OK) == 0) {
            rc = qs_manifest_load(&q.man, q.man_path, err);
            char what[512];
            if (!rc && qs_fingerprint_diff(q.man.fingerprint_json, fp, what, sizeof what))
                rc = qs_error_set(err, QS_EMISMATCH, "%s holds a different run (%s); use --restart to start over", o->out_dir, what);
            if (!rc && q.man.n_blocks != q.cfg.n_layers)
                rc = qs_error_set(err, QS_EMISMATCH, "%s: manifest has %d blocks, the model %d", q.man_path, q.man.n_blocks, q.cfg.n_layers);
        } else {
            rc = qs_manifest_init(&q.man, q.cfg.n_layers, fp, err);
            if (!rc) rc = qs_manifest_save(&q.man, q.man_path, err);
        }
    }
    /* resume after the last block that is recorded and intact (blocks are independent for RTN,
     * so every intact block is kept and the first missing one starts the run) */
    int first = 0;
    if (!rc) {
        while (first < q.cfg.n_layers) {
            const qs_manifest_block *b = qs_manifest_find(&q.man, first);
            if (!b || !shard_intact(&q, b)) break;
            first++;
        }
        /* forget records at or after `first` that were not verified */
        size_t keep = 0;
        for (size_t i = 0; i < q.man.n; i++) {
            if (q.man.blocks[i].block < first) q.man.blocks[keep++] = q.man.blocks[i];
            else free(q.man.blocks[i].file), free(q.man.blocks[i].metrics_json);
        }
        q.man.n = keep;
    }
    if (!rc && first < q.cfg.n_layers) {
        const char **paths = malloc(sizeof(char *) * qs_catalog_file_count(q.cat));
        for (size_t i = 0; i < qs_catalog_file_count(q.cat); i++) paths[i] = qs_catalog_file_path(q.cat, (int)i);
        rc = qs_reader_open(&q.reader, paths, (int)qs_catalog_file_count(q.cat), &o->reader, err);
        free(paths);
        q.rows = malloc(sizeof(float) * ROWS_CHUNK * max_cols);
        q.codes = malloc(ROWS_CHUNK * max_cols);
        q.deq = malloc(sizeof(float) * max_cols);
        if (!rc && (!q.rows || !q.codes || !q.deq)) rc = qs_error_set(err, -ENOMEM, "out of memory");
        for (int i = 0; !rc && i < n_slots; i++) {
            slots[i].slab = qs_reader_slab_alloc(slot_bytes);
            slots[i].cap = slot_bytes;
            ptrs[i] = &slots[i];
            if (!slots[i].slab) rc = qs_error_set(err, -ENOMEM, "out of memory for a %zu-byte block slot", slot_bytes);
        }
        qs_pipeline_stages st = {.ctx = &q, .load = st_load, .compute = st_compute, .store = st_store};
        if (!rc) rc = qs_pipeline_run(&st, first, q.cfg.n_layers, ptrs, (size_t)n_slots, NULL, NULL, err);
    }
    if (sum) {
        *sum = (qs_quantize_summary){.n_blocks = q.cfg.n_layers, .done_before = first, .done_now = q.done_now,
                                     .n_slots = n_slots, .slot_bytes = slot_bytes, .seconds = qs_now() - q.t_start,
                                     .raw_bytes = q.raw_bytes, .shard_bytes = q.shard_bytes};
    }
    for (int i = 0; i < 3; i++) {
        free(slots[i].slab);
        for (int k = 0; k < N_LIN; k++) free(slots[i].scales[k]), free(slots[i].zeros[k]);
        for (int k = 0; k < 5; k++) free(slots[i].other[k]);
    }
    free(q.rows);
    free(q.codes);
    free(q.deq);
    free(fp);
    free(q.man_path);
    qs_manifest_free(&q.man);
    qs_reader_close(q.reader);
    qs_catalog_free(q.cat);
    return rc;
}
