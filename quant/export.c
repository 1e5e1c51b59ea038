/* quant/export.c - gptq and fakequant exports of a quantized run (quant/export.h). */
#include "quant/export.h"

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

static const char *const tokenizer_files[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                              "special_tokens_map.json", "generation_config.json"};

static int dir_ready(const char *dir, int force, qs_error *err) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        int n = 0;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
        closedir(d);
        QS_RETURN_ERROR_IF(n && !force, QS_EUSAGE, "%s is not empty (use --force to write into it)", dir);
        return 0;
    }
    return qs_mkdir_p(dir, err);
}

static int copy_if_present(const char *from, const char *to, const char *name, qs_error *err) {
    char *src = qs_path_join(from, name), *dst = qs_path_join(to, name), *buf = NULL;
    size_t len;
    struct stat st;
    int rc = 0;
    if (stat(src, &st) == 0) {
        rc = qs_file_read_all(src, (size_t)1 << 30, &buf, &len, err);
        if (!rc) rc = qs_file_write_durable(dst, buf, len, err);
    }
    free(src), free(dst), free(buf);
    return rc;
}

/* config.json of the run, with torch_dtype and (gptq) quantization_config */
static int write_config(const char *out_dir, const char *hf_dir, json_t *qcfg, const char *dtype, qs_error *err) {
    char *p = qs_path_join(out_dir, "config.json");
    json_error_t je;
    json_t *cfg = json_load_file(p, 0, &je);
    free(p);
    QS_RETURN_ERROR_IF(!json_is_object(cfg), QS_EFORMAT, "%s/config.json: %s", out_dir, je.text);
    json_object_set_new(cfg, "torch_dtype", json_string(dtype));
    json_object_del(cfg, "quantization_config");
    if (qcfg) json_object_set(cfg, "quantization_config", qcfg);
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    char *dst = qs_path_join(hf_dir, "config.json");
    int rc = text ? qs_file_write_durable(dst, text, strlen(text), err) : qs_error_set(err, -ENOMEM, "out of memory");
    free(dst), free(text);
    return rc;
}

typedef struct lin_shape {
    int rows, cols;
} lin_shape;

static void lin_shapes(const qs_model_config *c, lin_shape s[QS_N_LINEAR]) {
    int H = c->hidden_size, Q = c->n_heads * c->head_dim, KV = c->n_kv_heads * c->head_dim, I = c->intermediate_size;
    lin_shape t[QS_N_LINEAR] = {{Q, H}, {KV, H}, {KV, H}, {H, Q}, {I, H}, {I, H}, {H, I}};
    memcpy(s, t, sizeof t);
}

/* a block's float vector tensors (norms, biases) as dtype bytes */
static void *vec_as(const float *x, size_t n, qs_dtype dt) {
    void *out = malloc(n * qs_dtype_size(dt) + 1);
    if (!out) return NULL;
    if (dt == QS_DTYPE_F32) memcpy(out, x, n * 4);
    else if (dt == QS_DTYPE_F16) qs_f32_to_f16_n(x, out, n);
    else
        for (size_t i = 0; i < n; i++) ((uint16_t *)out)[i] = qs_f32_to_bf16(x[i]);
    return out;
}

static const char *const vec_names[5] = {"input_layernorm.weight", "post_attention_layernorm.weight",
                                         "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"};

/* checks every block: weight-only (gptq), no reassembly, bits; returns the first block's meta */
static int check_blocks(const qs_qmodel *qm, const char *format, qs_qblock_meta *m0, qs_error *err) {
    for (int b = 0; b < qm->cfg.n_layers; b++) {
        const qs_manifest_block *rec = qs_manifest_find(&qm->man, b);
        char *p = qs_path_join(qm->dir, rec->file);
        qs_shard *s = NULL;
        qs_qblock_meta m;
        int rc = qs_shard_open(&s, p, err);
        if (!rc) rc = qs_qblock_meta_read(s, &m, err);
        int reasm = 0;
        for (size_t i = 0; !rc && i < qs_shard_count(s); i++) reasm |= !strcmp(qs_shard_at(s, i)->role, "reassembly");
        qs_shard_close(s);
        free(p);
        if (rc) return rc;
        if (b == 0) *m0 = m;
        QS_RETURN_ERROR_IF(reasm, QS_EUNSUPPORTED,
                           "%s: block %d uses channel reassembly, which the %s format cannot express (the shards can)",
                           qm->dir, b, format);
        QS_RETURN_ERROR_IF(!strcmp(format, "gptq") && m.abits < 16, QS_EUNSUPPORTED,
                           "%s: a W%dA%d run: the gptq format is weight-only (use fakequant, or the shards)", qm->dir,
                           m.wbits, m.abits);
        QS_RETURN_ERROR_IF(!strcmp(format, "gptq") && m.wbits != 2 && m.wbits != 3 && m.wbits != 4 && m.wbits != 8,
                           QS_EUNSUPPORTED, "%s: %d-bit weights: the gptq format packs 2, 3, 4 or 8 bits", qm->dir, m.wbits);
        QS_RETURN_ERROR_IF(m.wbits != m0->wbits || m.group != m0->group || m.sym != m0->sym, QS_EFORMAT,
                           "%s: block %d's settings differ from block 0's", qm->dir, b);
    }
    return 0;
}

/* The GPTQ tensors of one linear. v1 stores zero - 1, so a zero point below 1 is moved up by
 * shifting its group's codes (exact: (q + d) - (z + d) = q - z) when the codes leave room;
 * otherwise the group cannot be expressed and the export is refused. */
static int gptq_tensors(qs_qlinear *l, const char *what, int v2, uint32_t *qweight, uint32_t *qzeros, uint16_t *scales,
                        int32_t *g_idx, qs_error *err) {
    const int R = l->rows, Cc = l->cols, ng = qs_qlinear_groups(l), bits = l->bits, g = l->group > 0 ? l->group : Cc;
    const int maxq = (1 << bits) - 1;
    const size_t zcols = (size_t)R * bits / 32;
    for (int c = 0; c < Cc; c++) g_idx[c] = l->g_idx ? l->g_idx[c] : (l->group > 0 ? c / g : 0);
    int *maxc = malloc(sizeof(int) * (size_t)ng);
    uint32_t *v = malloc(sizeof(uint32_t) * (size_t)(Cc > R ? Cc : R));
    if (!v || !maxc) {
        free(v), free(maxc);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    int rc = 0;
    for (int o = 0; o < R && !rc; o++) {
        uint8_t *row = l->codes + (size_t)o * Cc;
        float *z = l->zeros + (size_t)o * ng;
        for (int k = 0; k < ng; k++) maxc[k] = 0;
        for (int c = 0; c < Cc; c++) maxc[g_idx[c]] = row[c] > maxc[g_idx[c]] ? row[c] : maxc[g_idx[c]];
        for (int k = 0; k < ng && !rc; k++) {
            if (z[k] != (float)(int)z[k])
                rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: zero point %g (row %d, group %d) is not an integer", what,
                                  (double)z[k], o, k);
            const int lo = v2 ? 0 : 1, hi = v2 ? maxq : maxq + 1; /* v1 stores zero - 1 */
            int d = z[k] < lo ? lo - (int)z[k] : 0;
            if (!rc && (maxc[k] + d > maxq || z[k] > (float)hi))
                rc = qs_error_set(err, QS_EUNSUPPORTED,
                                  "%s: zero point %g (row %d, group %d) cannot be stored in the %s format%s", what,
                                  (double)z[k], o, k, v2 ? "gptq_v2" : "gptq (v1: zero - 1)",
                                  v2 ? "" : "; export with --gptq-v2 (GPTQModel loads it) or quantize with --sym");
            if (!rc && d) {
                for (int c = 0; c < Cc; c++)
                    if (g_idx[c] == k) row[c] = (uint8_t)(row[c] + d);
                z[k] += (float)d;
            }
        }
    }
    for (int o = 0; o < R && !rc; o++) { /* column o of qweight: the codes of output row o along the input */
        for (int c = 0; c < Cc; c++) v[c] = l->codes[(size_t)o * Cc + c];
        qs_gptq_pack(v, (size_t)Cc, bits, qweight + o, 1, (size_t)R);
    }
    for (int k = 0; k < ng && !rc; k++) {
        for (int o = 0; o < R; o++) {
            v[o] = (uint32_t)(int)l->zeros[(size_t)o * ng + k] - (v2 ? 0u : 1u);
            scales[(size_t)k * R + o] = qs_f32_to_f16(l->scales[(size_t)o * ng + k]);
        }
        qs_gptq_pack(v, (size_t)R, bits, qzeros + (size_t)k * zcols, 1, 1);
    }
    free(v), free(maxc);
    return rc;
}

int qs_export(const char *out_dir, const char *hf_dir, const qs_export_opts *o, qs_error *err) {
    const int gptq = !strcmp(o->format, "gptq");
    QS_RETURN_ERROR_IF(!gptq && strcmp(o->format, "fakequant"), QS_EUSAGE, "--format %s: gptq or fakequant", o->format);
    qs_qmodel qm;
    QS_FORWARD_IF_ERROR(qs_qmodel_open(&qm, out_dir, 1, err));
    const qs_model_config *c = &qm.cfg;
    qs_qblock_meta m0 = {.wbits = 4};
    lin_shape ls[QS_N_LINEAR];
    lin_shapes(c, ls);
    qs_catalog *cat = NULL;
    int rc = check_blocks(&qm, o->format, &m0, err);
    const int bits = m0.wbits;
    for (int i = 0; gptq && !rc && i < QS_N_LINEAR; i++)
        if ((ls[i].rows * bits) % 32 || (ls[i].cols * bits) % 32)
            rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: %s [%d, %d] does not pack into 32-bit words at %d bits", out_dir,
                              qs_linear_names[i], ls[i].rows, ls[i].cols, bits);
    if (!rc) rc = qs_catalog_open(&cat, out_dir, err);
    if (!rc) rc = dir_ready(hf_dir, o->force, err);
    const qs_dtype vdt = gptq ? QS_DTYPE_F16 : QS_DTYPE_F32;
    const qs_dtype ldt = gptq ? QS_DTYPE_F16 : o->dtype;
    char *st_path = qs_path_join(hf_dir, "model.safetensors");
    qs_st_writer *w = NULL;
    if (!rc) rc = qs_st_writer_open(&w, st_path, err);
    /* declare: the non-block tensors, then every block's */
    for (size_t i = 0; !rc && i < qs_catalog_count(cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(cat, i);
        rc = qs_st_writer_declare(w, t->name, gptq ? QS_DTYPE_F16 : t->dtype, t->n_dims, t->shape, err);
    }
    const int nvec = c->attention_bias ? 5 : 2;
    const int64_t vlen[5] = {c->hidden_size, c->hidden_size, (int64_t)c->n_heads * c->head_dim,
                             (int64_t)c->n_kv_heads * c->head_dim, (int64_t)c->n_kv_heads * c->head_dim};
    for (int b = 0; !rc && b < c->n_layers; b++) {
        char name[192];
        for (int i = 0; !rc && i < QS_N_LINEAR; i++) {
            const int R = ls[i].rows, Cc = ls[i].cols, ng = m0.group > 0 ? (Cc + m0.group - 1) / m0.group : 1;
            if (gptq) {
                int64_t sq[2] = {(int64_t)Cc * bits / 32, R}, sz[2] = {ng, (int64_t)R * bits / 32}, ss[2] = {ng, R}, sg[1] = {Cc};
                snprintf(name, sizeof name, "model.layers.%d.%s.qweight", b, qs_linear_names[i]);
                rc = qs_st_writer_declare(w, name, QS_DTYPE_I32, 2, sq, err);
                snprintf(name, sizeof name, "model.layers.%d.%s.qzeros", b, qs_linear_names[i]);
                if (!rc) rc = qs_st_writer_declare(w, name, QS_DTYPE_I32, 2, sz, err);
                snprintf(name, sizeof name, "model.layers.%d.%s.scales", b, qs_linear_names[i]);
                if (!rc) rc = qs_st_writer_declare(w, name, QS_DTYPE_F16, 2, ss, err);
                snprintf(name, sizeof name, "model.layers.%d.%s.g_idx", b, qs_linear_names[i]);
                if (!rc) rc = qs_st_writer_declare(w, name, QS_DTYPE_I32, 1, sg, err);
            } else {
                int64_t sh[2] = {R, Cc};
                snprintf(name, sizeof name, "model.layers.%d.%s.weight", b, qs_linear_names[i]);
                rc = qs_st_writer_declare(w, name, ldt, 2, sh, err);
            }
        }
        for (int k = 0; !rc && k < nvec; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", b, vec_names[k]);
            rc = qs_st_writer_declare(w, name, vdt, 1, &vlen[k], err);
        }
    }
    /* data in the declared order */
    for (size_t i = 0; !rc && i < qs_catalog_count(cat); i++) {
        const qs_tensor_info *t = qs_catalog_at(cat, i);
        void *buf = malloc(gptq ? sizeof(float) * t->n_elems : t->nbytes + 1);
        uint16_t *h = gptq ? malloc(sizeof(uint16_t) * t->n_elems + 1) : NULL;
        if (!buf || (gptq && !h)) rc = qs_error_set(err, -ENOMEM, "out of memory for %s", t->name);
        if (!rc && gptq) {
            rc = qs_catalog_read_f32(cat, t, buf, err);
            if (!rc) qs_f32_to_f16_n(buf, h, t->n_elems);
        } else if (!rc) {
            rc = qs_catalog_read_raw(cat, t, buf, err);
        }
        if (!rc) rc = qs_st_writer_write(w, gptq ? (void *)h : buf, err);
        free(buf), free(h);
    }
    for (int b = 0; !rc && b < c->n_layers; b++) {
        const qs_manifest_block *rec = qs_manifest_find(&qm.man, b);
        char *p = qs_path_join(out_dir, rec->file);
        qs_shard *s = NULL;
        rc = qs_shard_open(&s, p, err);
        if (!rc && qs_shard_file_xxh3(s) != rec->xxh3)
            rc = qs_error_set(err, QS_ECHECKSUM, "%s: file hash differs from manifest.json's record", p);
        for (int i = 0; !rc && i < QS_N_LINEAR; i++) {
            qs_qlinear l;
            char what[192];
            snprintf(what, sizeof what, "%s: block %d %s", out_dir, b, qs_linear_names[i]);
            rc = qs_qlinear_read(&l, s, qs_linear_names[i], err);
            if (rc) break;
            const int R = l.rows, Cc = l.cols, ng = qs_qlinear_groups(&l);
            if (gptq) {
                uint32_t *qw = malloc(sizeof(uint32_t) * (size_t)Cc * bits / 32 * R);
                uint32_t *qz = malloc(sizeof(uint32_t) * (size_t)ng * R * bits / 32 + 4);
                uint16_t *sc = malloc(sizeof(uint16_t) * (size_t)ng * R);
                int32_t *gi = malloc(sizeof(int32_t) * (size_t)Cc);
                rc = qw && qz && sc && gi ? gptq_tensors(&l, what, o->gptq_v2, qw, qz, sc, gi, err) : qs_error_set(err, -ENOMEM, "out of memory");
                if (!rc) rc = qs_st_writer_write(w, qw, err);
                if (!rc) rc = qs_st_writer_write(w, qz, err);
                if (!rc) rc = qs_st_writer_write(w, sc, err);
                if (!rc) rc = qs_st_writer_write(w, gi, err);
                free(qw), free(qz), free(sc), free(gi);
            } else {
                float *x = malloc(sizeof(float) * (size_t)R * Cc);
                void *out = NULL;
                if (!x) rc = qs_error_set(err, -ENOMEM, "out of memory");
                if (!rc) {
                    qs_qlinear_dequant(&l, x);
                    out = vec_as(x, (size_t)R * Cc, ldt);
                    rc = out ? qs_st_writer_write(w, out, err) : qs_error_set(err, -ENOMEM, "out of memory");
                }
                free(x), free(out);
            }
            qs_qlinear_free(&l);
        }
        for (int k = 0; !rc && k < nvec; k++) {
            float *x = NULL;
            size_t n = 0;
            rc = qs_shard_read_f32(s, vec_names[k], &x, &n, err);
            if (!rc && n != (size_t)vlen[k]) rc = qs_error_set(err, QS_EFORMAT, "%s: %s has %zu values", p, vec_names[k], n);
            void *out = rc ? NULL : vec_as(x, n, vdt);
            if (!rc) rc = out ? qs_st_writer_write(w, out, err) : qs_error_set(err, -ENOMEM, "out of memory");
            free(x), free(out);
        }
        qs_shard_close(s);
        free(p);
    }
    if (!rc) rc = qs_st_writer_close(w, err);
    else qs_st_writer_abort(w);
    /* config and tokenizer */
    json_t *qcfg = NULL;
    if (!rc && gptq) {
        int desc_act = 0; /* act-order with dynamic groups: g_idx not in order */
        for (int b = 0; b < c->n_layers && !desc_act; b++) {
            const qs_manifest_block *rec = qs_manifest_find(&qm.man, b);
            char *p = qs_path_join(out_dir, rec->file);
            qs_shard *s = NULL;
            if (qs_shard_open(&s, p, NULL) == 0) {
                for (size_t i = 0; i < qs_shard_count(s); i++) desc_act |= !strcmp(qs_shard_at(s, i)->role, "g_idx");
                qs_shard_close(s);
            }
            free(p);
        }
        qcfg = json_pack("{s:s, s:i, s:i, s:b, s:b, s:f, s:b, s:s}", "quant_method", "gptq", "bits", bits, "group_size",
                         m0.group > 0 ? m0.group : -1, "desc_act", desc_act, "sym", m0.sym, "damp_percent", 0.01,
                         "true_sequential", 1, "checkpoint_format", o->gptq_v2 ? "gptq_v2" : "gptq");
        char *text = json_dumps(qcfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        char *dst = qs_path_join(hf_dir, "quantize_config.json");
        rc = qs_file_write_durable(dst, text, strlen(text), err);
        free(dst), free(text);
    }
    if (!rc) rc = write_config(out_dir, hf_dir, qcfg, gptq ? "float16" : o->dtype == QS_DTYPE_F32 ? "float32" : o->dtype == QS_DTYPE_F16 ? "float16" : "bfloat16", err);
    json_decref(qcfg);
    for (size_t i = 0; !rc && i < sizeof tokenizer_files / sizeof tokenizer_files[0]; i++)
        rc = copy_if_present(out_dir, hf_dir, tokenizer_files[i], err);
    if (rc) { /* nothing half-written: the safetensors file was aborted; remove what else was written */
        const char *made[] = {"config.json", "quantize_config.json", "tokenizer.json", "tokenizer.model",
                              "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "model.safetensors"};
        for (size_t i = 0; i < sizeof made / sizeof made[0] && !o->force; i++) {
            char *p = qs_path_join(hf_dir, made[i]);
            remove(p);
            free(p);
        }
        if (!o->force) rmdir(hf_dir);
    }
    free(st_path);
    qs_catalog_free(cat);
    qs_qmodel_close(&qm);
    return rc;
}
