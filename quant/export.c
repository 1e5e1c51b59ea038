/* quant/export.c - gptq and fakequant exports of a quantized run (quant/export.h).
 *
 * One pass: every tensor of model.safetensors is declared first (shapes from config.json), then
 * the non-block tensors are copied and the blocks written one at a time from their shards, so
 * at most one linear's codes and its packed form are in memory. The JSON files and tokenizer
 * files follow once model.safetensors is in place. */
#include "quant/export.h"
#include "quant/export_internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/safetensors.h"
#include "quant/qblock.h"
#include "quant/qmodel.h"

void qs_gptq_pack(const uint32_t *v, size_t n, int bits, uint32_t *out, size_t v_stride, size_t out_stride) {
    size_t words = (n * (size_t)bits + 31) / 32;
    for (size_t k = 0; k < words; k++) out[k * out_stride] = 0;
    for (size_t j = 0; j < n; j++) { /* one little-endian bit stream: value j at bit bits * j */
        size_t p = (size_t)bits * j, w = p / 32, s = p % 32;
        uint32_t x = v[j * v_stride] & ((1u << bits) - 1);
        out[w * out_stride] |= x << s;
        if (s + (size_t)bits > 32) out[(w + 1) * out_stride] |= x >> (32 - s);
    }
}

/* every file an export may write into HF_DIR */
enum { F_CONFIG, F_QCONFIG, F_TOK0, F_MODEL = F_TOK0 + 5, F_COUNT };
static const char *const out_files[F_COUNT] = {"config.json",           "quantize_config.json",   "tokenizer.json",
                                               "tokenizer.model",       "tokenizer_config.json",  "special_tokens_map.json",
                                               "generation_config.json", "model.safetensors"};

const char *const qs_export_vec_names[5] = {"input_layernorm.weight", "post_attention_layernorm.weight",
                                         "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"};

typedef struct export_run {
    const qs_export_opts *o;
    const char *hf_dir;
    qs_qmodel qm;
    qs_catalog *cat;      /* OUT_DIR/model.safetensors */
    qs_qblock_meta m0;    /* block 0's settings (check_blocks: every block has them) */
    qs_lin_shape ls[QS_N_LINEAR];
    int gptq, nvec;       /* nvec: norms, and the q/k/v biases when the model has them */
    int64_t vlen[5];
    qs_dtype vdt, ldt;    /* dtype of norms / biases, of fakequant linears */
    int desc_act;         /* gptq: some linear's g_idx is not c / group */
    int made_dir;         /* HF_DIR did not exist before */
    int wrote[F_COUNT];   /* the files this export wrote, removed again on error */
} export_run;

/* HF_DIR: created when missing; an existing one must be empty unless force, and never the run
 * itself (--force would replace the run's model.safetensors and config.json) */
static int dir_ready(export_run *r, qs_error *err) {
    struct stat a, b;
    QS_RETURN_ERROR_IF(stat(r->hf_dir, &a) == 0 && stat(r->qm.dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino,
                       QS_EUSAGE, "%s is the run's own directory; export to another one", r->hf_dir);
    DIR *d = opendir(r->hf_dir);
    if (!d) {
        if (errno != ENOENT) return qs_error_errno(err, errno, "%s", r->hf_dir);
        QS_FORWARD_IF_ERROR(qs_mkdir_p(r->hf_dir, err));
        r->made_dir = 1;
        return 0;
    }
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    QS_RETURN_ERROR_IF(n && !r->o->force, QS_EUSAGE, "%s is not empty (use --force to write into it)", r->hf_dir);
    return 0;
}

static int write_file(export_run *r, int f, const char *text, size_t len, qs_error *err) {
    char *dst = qs_path_join(r->hf_dir, out_files[f]);
    int rc = dst ? qs_file_write_durable(dst, text, len, err) : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) r->wrote[f] = 1;
    free(dst);
    return rc;
}

static int copy_if_present(export_run *r, int f, qs_error *err) {
    char *src = qs_path_join(r->qm.dir, out_files[f]), *buf = NULL;
    size_t len;
    struct stat st;
    int rc = 0;
    if (stat(src, &st) == 0) {
        rc = qs_file_read_all(src, (size_t)1 << 30, &buf, &len, err);
        if (!rc) rc = write_file(r, f, buf, len, err);
    }
    free(src), free(buf);
    return rc;
}

/* config.json of the run with torch_dtype set and quantization_config replaced by qcfg (or
 * dropped when NULL) */
static int write_config(export_run *r, json_t *qcfg, const char *dtype, qs_error *err) {
    char *p = qs_path_join(r->qm.dir, "config.json");
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    free(p);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return qs_error_set(err, QS_EFORMAT, "%s/config.json: %s", r->qm.dir, je.text);
    }
    json_object_set_new(cfg, "torch_dtype", json_string(dtype));
    json_object_del(cfg, "quantization_config");
    if (qcfg) json_object_set(cfg, "quantization_config", qcfg);
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    int rc = text ? write_file(r, F_CONFIG, text, strlen(text), err) : qs_error_set(err, -ENOMEM, "out of memory");
    free(text);
    return rc;
}

void qs_export_lin_shapes(const qs_model_config *c, qs_lin_shape s[QS_N_LINEAR]) {
    int H = c->hidden_size, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate_size;
    qs_lin_shape t[QS_N_LINEAR] = {{Q, H}, {KV, H}, {KV, H}, {H, Q}, {I, H}, {I, H}, {H, I}};
    memcpy(s, t, sizeof t);
}

/* float values as dtype bytes, new malloc'd memory */
void *qs_export_vec_as(const float *x, size_t n, qs_dtype dt) {
    void *out = malloc(n * qs_dtype_size(dt) + 1);
    if (!out) return NULL;
    if (dt == QS_DTYPE_F32) memcpy(out, x, n * 4);
    else if (dt == QS_DTYPE_F16) qs_f32_to_f16_n(x, out, n);
    else
        for (size_t i = 0; i < n; i++) ((uint16_t *)out)[i] = qs_f32_to_bf16(x[i]);
    return out;
}

int qs_export_open_block(const qs_qmodel *qm, int b, qs_shard **s, char **path, qs_error *err) {
    const qs_manifest_block *rec = qs_manifest_find(&qm->man, b);
    *path = qs_path_join(qm->dir, rec->file);
    int rc = *path ? qs_shard_open(s, *path, err) : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc && qs_shard_file_xxh3(*s) != rec->xxh3)
        rc = qs_error_set(err, QS_ECHECKSUM, "%s: file hash differs from manifest.json's record", *path);
    return rc;
}

int qs_export_check_blocks(const qs_qmodel *qm, const char *format, int refuse_reasm, qs_qblock_meta *m0,
                           qs_error *err) {
    for (int b = 0; b < qm->cfg.n_layers; b++) {
        qs_shard *s = NULL;
        char *p = NULL;
        qs_qblock_meta m;
        int rc = qs_export_open_block(qm, b, &s, &p, err), reasm = 0;
        if (!rc) rc = qs_qblock_meta_read(s, &m, err);
        for (size_t i = 0; !rc && i < qs_shard_count(s); i++) reasm |= !strcmp(qs_shard_at(s, i)->role, "reassembly");
        qs_shard_close(s);
        free(p);
        if (rc) return rc;
        if (b == 0) *m0 = m;
        QS_RETURN_ERROR_IF(reasm && refuse_reasm, QS_EUNSUPPORTED,
                           "%s: block %d uses channel reassembly, which the %s format cannot express (fakequant folds "
                           "it into the weights; the shards keep it)",
                           qm->dir, b, format);
        QS_RETURN_ERROR_IF(m.wbits != m0->wbits || m.abits != m0->abits || m.group != m0->group || m.sym != m0->sym,
                           QS_EFORMAT, "%s: block %d's settings differ from block 0's", qm->dir, b);
    }
    return 0;
}

/* every block: the same settings, and (gptq) no channel reassembly and weight-only at 2/3/4/8
 * bits with shapes that pack into whole words. Runs before anything is written. */
static int check_blocks(export_run *r, qs_error *err) {
    const char *dir = r->qm.dir;
    QS_FORWARD_IF_ERROR(qs_export_check_blocks(&r->qm, r->o->format, r->gptq, &r->m0, err));
    const int bits = r->m0.wbits;
    if (!r->gptq) return 0;
    QS_RETURN_ERROR_IF(r->m0.abits < 16, QS_EUNSUPPORTED,
                       "%s: a W%dA%d run: the gptq format is weight-only (use fakequant, or the shards)", dir, bits,
                       r->m0.abits);
    QS_RETURN_ERROR_IF(bits != 2 && bits != 3 && bits != 4 && bits != 8, QS_EUNSUPPORTED,
                       "%s: %d-bit weights: the gptq format packs 2, 3, 4 or 8 bits", dir, bits);
    for (int i = 0; i < QS_N_LINEAR; i++)
        QS_RETURN_ERROR_IF((r->ls[i].rows * bits) % 32 || (r->ls[i].cols * bits) % 32, QS_EUNSUPPORTED,
                           "%s: %s [%d, %d] does not pack into 32-bit words at %d bits", dir, qs_linear_names[i],
                           r->ls[i].rows, r->ls[i].cols, bits);
    return 0;
}

static int groups_of(const export_run *r, int cols) {
    return r->m0.group > 0 ? (cols + r->m0.group - 1) / r->m0.group : 1;
}

/* model.safetensors' table: the non-block tensors, then each block's linears and vectors */
static int declare_all(export_run *r, qs_st_writer *w, qs_error *err) {
    const int bits = r->m0.wbits;
    for (size_t i = 0; i < qs_catalog_count(r->cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(r->cat, i);
        QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, t->name, r->gptq ? QS_DTYPE_F16 : t->dtype, t->n_dims, t->shape, err));
    }
    char name[192];
    for (int b = 0; b < r->qm.cfg.n_layers; b++) {
        for (int i = 0; i < QS_N_LINEAR; i++) {
            const int64_t R = r->ls[i].rows, C = r->ls[i].cols, ng = groups_of(r, (int)C);
            const char *lin = qs_linear_names[i];
            if (!r->gptq) {
                int64_t sh[2] = {R, C};
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", b, lin);
                QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, r->ldt, 2, sh, err));
                continue;
            }
            int64_t sq[2] = {C * bits / 32, R}, sz[2] = {ng, R * bits / 32}, ss[2] = {ng, R}, sg[1] = {C};
            snprintf(name, sizeof name, "model.layers.%d.%s.qweight", b, lin);
            QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, QS_DTYPE_I32, 2, sq, err));
            snprintf(name, sizeof name, "model.layers.%d.%s.qzeros", b, lin);
            QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, QS_DTYPE_I32, 2, sz, err));
            snprintf(name, sizeof name, "model.layers.%d.%s.scales", b, lin);
            QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, QS_DTYPE_F16, 2, ss, err));
            snprintf(name, sizeof name, "model.layers.%d.%s.g_idx", b, lin);
            QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, QS_DTYPE_I32, 1, sg, err));
        }
        for (int k = 0; k < r->nvec; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", b, qs_export_vec_names[k]);
            QS_FORWARD_IF_ERROR(qs_st_writer_declare(w, name, r->vdt, 1, &r->vlen[k], err));
        }
    }
    return 0;
}

/* embedding, final norm, LM head: as stored (fakequant) or as F16 (gptq) */
static int write_nonblock(export_run *r, qs_st_writer *w, qs_error *err) {
    int rc = 0;
    for (size_t i = 0; !rc && i < qs_catalog_count(r->cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(r->cat, i);
        void *buf = malloc(r->gptq ? sizeof(float) * t->n_elems + 1 : t->nbytes + 1);
        uint16_t *h = r->gptq ? malloc(sizeof(uint16_t) * t->n_elems + 1) : NULL;
        if (!buf || (r->gptq && !h)) rc = qs_error_set(err, -ENOMEM, "out of memory for %s", t->name);
        if (!rc && r->gptq) {
            rc = qs_catalog_read_f32(r->cat, t, buf, err);
            if (!rc) qs_f32_to_f16_n(buf, h, t->n_elems);
        } else if (!rc) {
            rc = qs_catalog_read_raw(r->cat, t, buf, err);
        }
        if (!rc) rc = qs_st_writer_write(w, r->gptq ? (void *)h : buf, err);
        free(buf), free(h);
    }
    return rc;
}

/* The GPTQ tensors of one linear (codes may be changed: see below).
 *   qweight [cols * bits / 32, rows]: column o holds output row o's codes along the input
 *   qzeros [groups, rows * bits / 32]: v1 stores zero - 1, v2 the zero itself
 *   scales [groups, rows] F16, g_idx [cols]
 * The format holds zero points in [1, 2^bits] (v1) or [0, 2^bits - 1] (v2). A zero outside is
 * moved in by shifting its group's codes (exact: (q + d) - (z + d) = q - z) when the codes leave
 * room; otherwise the error names the block, linear, row and group. Returns 1 in *ordered when
 * g_idx[c] == c / group throughout. */
static int gptq_tensors(qs_qlinear *l, const char *what, int v2, uint32_t *qweight, uint32_t *qzeros, uint16_t *scales,
                        int32_t *g_idx, int *ordered, qs_error *err) {
    const int R = l->rows, C = l->cols, ng = qs_qlinear_groups(l), bits = l->bits, maxq = (1 << bits) - 1;
    const size_t zcols = (size_t)R * bits / 32;
    *ordered = 1;
    for (int c = 0; c < C; c++) {
        g_idx[c] = l->g_idx ? l->g_idx[c] : (l->group > 0 ? c / l->group : 0);
        *ordered &= g_idx[c] == (l->group > 0 ? c / l->group : 0);
    }
    int *minc = malloc(sizeof(int) * (size_t)ng * 2), *maxc = minc ? minc + ng : NULL;
    uint32_t *v = malloc(sizeof(uint32_t) * (size_t)(C > R ? C : R));
    if (!v || !minc) {
        free(v), free(minc);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    const int lo = v2 ? 0 : 1, hi = v2 ? maxq : maxq + 1; /* the zero points the format can hold */
    int rc = 0;
    for (int o = 0; o < R && !rc; o++) {
        uint8_t *row = l->codes + (size_t)o * C;
        float *z = l->zeros + (size_t)o * ng;
        for (int k = 0; k < ng; k++) minc[k] = maxq, maxc[k] = 0;
        for (int c = 0; c < C; c++) {
            if (row[c] < minc[g_idx[c]]) minc[g_idx[c]] = row[c];
            if (row[c] > maxc[g_idx[c]]) maxc[g_idx[c]] = row[c];
        }
        for (int k = 0; k < ng && !rc; k++) {
            if (!(z[k] >= -4096.0f && z[k] <= 4096.0f) || z[k] != (float)(int)z[k]) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: zero point %g (row %d, group %d) is not a small integer", what,
                                  (double)z[k], o, k);
                break;
            }
            const int zi = (int)z[k], d = zi < lo ? lo - zi : zi > hi ? hi - zi : 0;
            if (maxc[k] + d > maxq || minc[k] + d < 0) {
                /* v2 helps only a zero of 0; one outside [0, 2^bits - 1] (a group whose weights
                 * are all on one side of zero) needs a quantizer that keeps 0 in range, as --sym */
                const int v2_helps = !v2 && zi == 0;
                rc = qs_error_set(err, QS_EUNSUPPORTED,
                                  "%s: zero point %d (row %d, group %d, codes %d..%d) cannot be stored in the %s format; %s",
                                  what, zi, o, k, minc[k], maxc[k], v2 ? "gptq_v2" : "gptq (v1: zero - 1)",
                                  v2_helps ? "export with --gptq-v2 (GPTQModel loads it) or quantize with --sym"
                                           : "quantize with --sym");
                break;
            }
            if (d) {
                for (int c = 0; c < C; c++)
                    if (g_idx[c] == k) row[c] = (uint8_t)(row[c] + d);
                z[k] = (float)(zi + d);
            }
        }
    }
    for (int o = 0; o < R && !rc; o++) {
        for (int c = 0; c < C; c++) v[c] = l->codes[(size_t)o * C + c];
        qs_gptq_pack(v, (size_t)C, bits, qweight + o, 1, (size_t)R);
    }
    for (int k = 0; k < ng && !rc; k++) {
        for (int o = 0; o < R && !rc; o++) {
            const float sc = l->scales[(size_t)o * ng + k];
            v[o] = (uint32_t)(int)l->zeros[(size_t)o * ng + k] - (uint32_t)lo;
            scales[(size_t)k * R + o] = qs_f32_to_f16(sc);
            if ((scales[(size_t)k * R + o] & 0x7c00) == 0x7c00) /* inf or NaN in F16 */
                rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: scale %g (row %d, group %d) does not fit in F16", what,
                                  (double)sc, o, k);
        }
        if (rc) break;
        qs_gptq_pack(v, (size_t)R, bits, qzeros + (size_t)k * zcols, 1, 1);
    }
    free(v), free(minc);
    return rc;
}

/* one site's channel reassembly gather (QLLM), or src_a NULL */
typedef struct gather {
    int32_t *src_a, *src_b;
    float *coef;
} gather;

/* The gather folded into its consumer (fakequant): the linear sees gathered inputs,
 * y = sum_k W[:, k] coef_k (x_a(k) + x_b(k)), which is x W'^T with W'[:, c] the sum of
 * coef_k W[:, k] over the k reading c. x [R, C] in, y [R, C] out (k in order). */
static void fold_gather(const gather *g, const float *x, size_t R, size_t C, float *y) {
    memset(y, 0, sizeof(float) * R * C);
    for (size_t o = 0; o < R; o++) {
        const float *xr = x + o * C;
        float *yr = y + o * C;
        for (size_t k = 0; k < C; k++) {
            yr[g->src_a[k]] += g->coef[k] * xr[k];
            if (g->src_b[k] >= 0) yr[g->src_b[k]] += g->coef[k] * xr[k];
        }
    }
}

static int write_linear(export_run *r, qs_st_writer *w, qs_qlinear *l, const gather *g, const char *what, qs_error *err) {
    const size_t R = (size_t)l->rows, C = (size_t)l->cols, ng = (size_t)qs_qlinear_groups(l);
    int rc = 0;
    if (!r->gptq) {
        float *x = malloc(sizeof(float) * R * C + 1), *y = g && g->src_a ? malloc(sizeof(float) * R * C + 1) : NULL;
        void *out = NULL;
        if (x && (y || !g || !g->src_a)) {
            qs_qlinear_dequant(l, x);
            if (y) fold_gather(g, x, R, C, y);
            out = qs_export_vec_as(y ? y : x, R * C, r->ldt);
        }
        rc = out ? qs_st_writer_write(w, out, err) : qs_error_set(err, -ENOMEM, "out of memory");
        free(x), free(y), free(out);
        return rc;
    }
    const int bits = l->bits;
    uint32_t *qw = malloc(sizeof(uint32_t) * C * bits / 32 * R + 4), *qz = malloc(sizeof(uint32_t) * ng * R * bits / 32 + 4);
    uint16_t *sc = malloc(sizeof(uint16_t) * ng * R + 2);
    int32_t *gi = malloc(sizeof(int32_t) * C + 4);
    int ordered = 1;
    rc = qw && qz && sc && gi ? gptq_tensors(l, what, r->o->gptq_v2, qw, qz, sc, gi, &ordered, err)
                              : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) rc = qs_st_writer_write(w, qw, err);
    if (!rc) rc = qs_st_writer_write(w, qz, err);
    if (!rc) rc = qs_st_writer_write(w, sc, err);
    if (!rc) rc = qs_st_writer_write(w, gi, err);
    r->desc_act |= !ordered;
    free(qw), free(qz), free(sc), free(gi);
    return rc;
}

static int write_block(export_run *r, qs_st_writer *w, int b, qs_error *err) {
    qs_shard *s = NULL;
    char *p = NULL;
    int rc = qs_export_open_block(&r->qm, b, &s, &p, err);
    gather g[3] = {{0}};
    const int site_dim[3] = {r->ls[0].cols, r->ls[4].cols, r->ls[6].cols}; /* hidden, hidden, intermediate */
    for (int k = 0; !rc && k < 3; k++) rc = qs_qblock_reasm_read(s, k, site_dim[k], &g[k].src_a, &g[k].src_b, &g[k].coef, p, err);
    for (int i = 0; !rc && i < QS_N_LINEAR; i++) {
        const int site = i <= 2 ? 0 : i == 4 || i == 5 ? 1 : i == 6 ? 2 : -1; /* o_proj's input is not reassembled */
        qs_qlinear l = {0};
        char what[192];
        snprintf(what, sizeof what, "%s: block %d %s", r->qm.dir, b, qs_linear_names[i]);
        rc = qs_qlinear_read(&l, s, qs_linear_names[i], err);
        if (!rc && (l.rows != r->ls[i].rows || l.cols != r->ls[i].cols))
            rc = qs_error_set(err, QS_EFORMAT, "%s is [%d, %d], config.json says [%d, %d]", what, l.rows, l.cols,
                              r->ls[i].rows, r->ls[i].cols);
        if (!rc) rc = write_linear(r, w, &l, site >= 0 ? &g[site] : NULL, what, err);
        qs_qlinear_free(&l);
    }
    for (int k = 0; !rc && k < r->nvec; k++) {
        float *x = NULL;
        size_t n = 0;
        rc = qs_shard_read_f32(s, qs_export_vec_names[k], &x, &n, err);
        if (!rc && n != (size_t)r->vlen[k]) rc = qs_error_set(err, QS_EFORMAT, "%s: %s has %zu values", p, qs_export_vec_names[k], n);
        void *out = rc ? NULL : qs_export_vec_as(x, n, r->vdt);
        if (!rc) rc = out ? qs_st_writer_write(w, out, err) : qs_error_set(err, -ENOMEM, "out of memory");
        free(x), free(out);
    }
    for (int k = 0; k < 3; k++) free(g[k].src_a), free(g[k].src_b), free(g[k].coef);
    qs_shard_close(s);
    free(p);
    return rc;
}

/* quantize_config.json (gptq), config.json, the tokenizer files */
static int write_meta(export_run *r, qs_error *err) {
    json_t *qcfg = NULL;
    int rc = 0;
    if (r->gptq) {
        double damp = 0.01; /* GPTQ's dampening from the run's fingerprint; the usual default for RTN */
        json_t *fp = r->qm.man.fingerprint_json ? json_loads(r->qm.man.fingerprint_json, 0, NULL) : NULL;
        json_t *jd = json_object_get(json_object_get(fp, "method"), "damp");
        if (json_is_number(jd)) damp = json_number_value(jd);
        json_decref(fp);
        qcfg = json_pack("{s:s, s:i, s:i, s:b, s:b, s:f, s:b, s:s}", "quant_method", "gptq", "bits", r->m0.wbits,
                         "group_size", r->m0.group > 0 ? r->m0.group : -1, "desc_act", r->desc_act, "sym", r->m0.sym,
                         "damp_percent", damp, "true_sequential", 1, "checkpoint_format",
                         r->o->gptq_v2 ? "gptq_v2" : "gptq");
        char *text = qcfg ? json_dumps(qcfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        rc = text ? write_file(r, F_QCONFIG, text, strlen(text), err) : qs_error_set(err, -ENOMEM, "out of memory");
        free(text);
    } else if (r->o->force) { /* a quantize_config.json left from an earlier gptq export would contradict */
        char *p = qs_path_join(r->hf_dir, out_files[F_QCONFIG]);
        if (unlink(p) && errno != ENOENT) rc = qs_error_errno(err, errno, "%s", p);
        free(p);
    }
    const char *dt = r->ldt == QS_DTYPE_F32 ? "float32" : r->ldt == QS_DTYPE_F16 ? "float16" : "bfloat16";
    if (!rc) rc = write_config(r, qcfg, dt, err);
    json_decref(qcfg);
    for (int f = F_TOK0; !rc && f < F_MODEL; f++) rc = copy_if_present(r, f, err);
    return rc;
}

int qs_export(const char *out_dir, const char *hf_dir, const qs_export_opts *o, qs_export_info *info, qs_error *err) {
    QS_RETURN_ERROR_IF(o->dtype != QS_DTYPE_F32 && o->dtype != QS_DTYPE_F16 && o->dtype != QS_DTYPE_BF16, QS_EUSAGE,
                       "--dtype: f32, f16 or bf16");
    if (o->format && !strcmp(o->format, "gguf")) return qs_export_gguf(out_dir, hf_dir, o, info, err);
    export_run r = {.o = o, .hf_dir = hf_dir, .gptq = o->format && !strcmp(o->format, "gptq")};
    QS_RETURN_ERROR_IF(!r.gptq && (!o->format || strcmp(o->format, "fakequant")), QS_EUSAGE,
                       "--format %s: gptq, fakequant or gguf", o->format ? o->format : "(none)");
    QS_RETURN_ERROR_IF(o->embed_type || o->head_type, QS_EUSAGE,
                       "--token-embedding-type and --output-tensor-type are for --format gguf only");
    QS_FORWARD_IF_ERROR(qs_qmodel_open(&r.qm, out_dir, 1, err));
    const qs_model_config *c = &r.qm.cfg;
    qs_export_lin_shapes(c, r.ls);
    r.nvec = c->attention_bias ? 5 : 2;
    const int64_t vlen[5] = {c->hidden_size, c->hidden_size, (int64_t)c->n_heads * c->head_dim,
                             (int64_t)c->n_kv_heads * c->head_dim, (int64_t)c->n_kv_heads * c->head_dim};
    memcpy(r.vlen, vlen, sizeof vlen);
    r.vdt = r.gptq ? QS_DTYPE_F16 : QS_DTYPE_F32;
    r.ldt = r.gptq ? QS_DTYPE_F16 : o->dtype;

    /* everything that can be refused is checked before HF_DIR is touched */
    int rc = check_blocks(&r, err);
    if (!rc && info) *info = (qs_export_info){r.m0.wbits, r.m0.abits, r.m0.group, r.m0.sym, 0, 0};
    if (!rc) rc = qs_catalog_open(&r.cat, out_dir, err);
    if (!rc) rc = dir_ready(&r, err);
    const int touched = !rc;
    char *st_path = qs_path_join(hf_dir, out_files[F_MODEL]);
    qs_st_writer *w = NULL;
    if (!rc) rc = qs_st_writer_open(&w, st_path, err);
    if (!rc) rc = declare_all(&r, w, err);
    if (!rc) rc = write_nonblock(&r, w, err);
    for (int b = 0; !rc && b < c->n_layers; b++) rc = write_block(&r, w, b, err);
    if (!rc) {
        rc = qs_st_writer_close(w, err);
        r.wrote[F_MODEL] = !rc;
    } else {
        qs_st_writer_abort(w);
    }
    if (!rc) rc = write_meta(&r, err);
    if (!rc && info) info->desc_act = r.desc_act;
    if (rc && touched) { /* nothing half-written: remove what this export wrote, and HF_DIR if it made it */
        for (int f = 0; f < F_COUNT; f++) {
            if (!r.wrote[f]) continue;
            char *p = qs_path_join(hf_dir, out_files[f]);
            unlink(p);
            free(p);
        }
        if (r.made_dir) rmdir(hf_dir);
    }
    free(st_path);
    qs_catalog_free(r.cat);
    qs_qmodel_close(&r.qm);
    return rc;
}
