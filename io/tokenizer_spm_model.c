/* io/tokenizer_spm_model.c - a SentencePiece model file (tokenizer.model of LLaMA-1/2, Mistral)
 * read into a qs_tok_spec. The file is a protobuf ModelProto; only the fields a BPE tokenizer
 * needs are read:
 *   ModelProto      1: pieces (repeated SentencePiece)  2: trainer_spec  3: normalizer_spec
 *   SentencePiece   1: piece (string)  2: score (float)  3: type (1 normal, 2 unknown,
 *                   3 control, 4 user-defined, 5 unused, 6 byte)
 *   TrainerSpec     3: model_type (1 unigram, 2 BPE)  35: byte_fallback
 *                   40: unk_id (0)  41: bos_id (1)  42: eos_id (2)
 *   NormalizerSpec  2: precompiled_charsmap  3: add_dummy_prefix (true)
 * The rest is skipped by wire type. Like Hugging Face's LlamaConverter, a normalization charsmap
 * is ignored (LLaMA's and Mistral's are empty: "identity"). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "io/tokenizer_internal.h"

struct qs_tok_spm_model {
    char **piece;    /* [n] NUL-terminated copies of the pieces */
    float *score;    /* [n] */
    int32_t *type;   /* [n] */
    size_t n, cap;
};

void qs_tok_spm_model_free(qs_tok_spm_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) free(m->piece[i]);
    free(m->piece);
    free(m->score);
    free(m->type);
    free(m);
}

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static int pb_varint(pb *b, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        uint8_t c = *b->p++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return -1;
}

/* next field: number, wire type; for wire type 2 the payload in *sub, for 0 the value in *v */
static int pb_field(pb *b, uint32_t *field, uint32_t *wt, uint64_t *v, pb *sub) {
    uint64_t key;
    if (pb_varint(b, &key) || key >> 35) return -1;
    *field = (uint32_t)(key >> 3), *wt = (uint32_t)(key & 7);
    switch (*wt) {
    case 0:
        return pb_varint(b, v);
    case 1:
        if (b->end - b->p < 8) return -1;
        b->p += 8;
        return 0;
    case 2:
        if (pb_varint(b, v) || *v > (uint64_t)(b->end - b->p)) return -1;
        sub->p = b->p, sub->end = b->p + *v;
        b->p += *v;
        return 0;
    case 5:
        if (b->end - b->p < 4) return -1;
        *v = (uint64_t)b->p[0] | (uint64_t)b->p[1] << 8 | (uint64_t)b->p[2] << 16 | (uint64_t)b->p[3] << 24;
        b->p += 4;
        return 0;
    default:
        return -1;
    }
}

static int add_piece(qs_tok_spm_model *m, pb sub) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        if (cap > (1u << 24)) return -2;
        char **p = realloc(m->piece, cap * sizeof *p);
        if (p) m->piece = p;
        float *s = realloc(m->score, cap * sizeof *s);
        if (s) m->score = s;
        int32_t *t = realloc(m->type, cap * sizeof *t);
        if (t) m->type = t;
        if (!p || !s || !t) return -ENOMEM;
        m->cap = cap;
    }
    const uint8_t *text = NULL;
    size_t len = 0;
    float score = 0;
    int32_t type = 1;
    uint32_t f, wt;
    uint64_t v;
    pb inner;
    while (sub.p < sub.end) {
        if (pb_field(&sub, &f, &wt, &v, &inner)) return -1;
        if (f == 1 && wt == 2) text = inner.p, len = (size_t)v;
        else if (f == 2 && wt == 5) {
            uint32_t u = (uint32_t)v;
            memcpy(&score, &u, sizeof score);
        } else if (f == 3 && wt == 0) type = v <= 6 ? (int32_t)v : 1;
    }
    if (!text || !len || memchr(text, 0, len)) return -1;
    char *s = malloc(len + 1);
    if (!s) return -ENOMEM;
    memcpy(s, text, len);
    s[len] = 0;
    m->piece[m->n] = s, m->score[m->n] = score, m->type[m->n] = type;
    m->n++;
    return 0;
}

int qs_tok_spm_model_parse(qs_tok_spm_model **out, qs_tok_spec *spec, const void *data, size_t len, const char *fn,
                           qs_error *err) {
    *out = NULL;
    memset(spec, 0, sizeof *spec);
    qs_tok_spm_model *m = calloc(1, sizeof *m);
    if (!m) return qs_error_set(err, -ENOMEM, "out of memory");
    int64_t model_type = 1, unk = 0, bos = 1, eos = 2;
    int byte_fallback = 0, dummy_prefix = 1, rc = 0;
    pb b = {data, (const uint8_t *)data + len}, sub, inner;
    uint32_t f, wt, g, wt2;
    uint64_t v, w;
    while (!rc && b.p < b.end) {
        if (pb_field(&b, &f, &wt, &v, &sub)) {
            rc = -1;
            break;
        }
        if (wt != 2) continue;
        if (f == 1) {
            rc = add_piece(m, sub);
        } else if (f == 2 || f == 3) {
            while (!rc && sub.p < sub.end) {
                if (pb_field(&sub, &g, &wt2, &w, &inner)) rc = -1;
                else if (wt2 != 0) continue;
                else if (f == 2 && g == 3) model_type = (int64_t)w;
                else if (f == 2 && g == 35) byte_fallback = w != 0;
                else if (f == 2 && g == 40) unk = (int32_t)w;
                else if (f == 2 && g == 41) bos = (int32_t)w;
                else if (f == 2 && g == 42) eos = (int32_t)w;
                else if (f == 3 && g == 3) dummy_prefix = w != 0;
            }
        }
    }
    if (rc == -ENOMEM) rc = qs_error_set(err, -ENOMEM, "out of memory");
    else if (rc == -2) rc = qs_error_set(err, QS_EFORMAT, "%s: too many pieces", fn);
    else if (rc) rc = qs_error_set(err, QS_EFORMAT, "%s: not a SentencePiece model (damaged protobuf)", fn);
    else if (!m->n) rc = qs_error_set(err, QS_EFORMAT, "%s: a SentencePiece model without pieces", fn);
    else if (model_type != 2)
        rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported tokenizer: SentencePiece model type %lld (qstream reads BPE)", fn,
                          (long long)model_type);
    if (rc) {
        qs_tok_spm_model_free(m);
        return rc;
    }
    spec->kind = QS_TOK_BPE_SPM;
    spec->pre = QS_TOK_PRE_NONE;
    spec->n_tokens = m->n;
    spec->tokens = (const char **)m->piece;
    spec->scores = m->score;
    spec->types = m->type;
    spec->bos_id = bos >= 0 && (size_t)bos < m->n ? (int32_t)bos : -1;
    spec->eos_id = eos >= 0 && (size_t)eos < m->n ? (int32_t)eos : -1;
    spec->unk_id = unk >= 0 && (size_t)unk < m->n ? (int32_t)unk : -1;
    spec->add_bos = spec->bos_id >= 0; /* LlamaTokenizer's default */
    spec->add_space_prefix = dummy_prefix;
    (void)byte_fallback; /* qs_tokenizer_from_spec falls back to bytes when the <0xNN> pieces exist */
    *out = m;
    return 0;
}

int qs_tok_spm_model_load(qs_tok_spm_model **out, qs_tok_spec *spec, const char *path, qs_error *err) {
    *out = NULL;
    char *data;
    size_t len;
    QS_FORWARD_IF_ERROR(qs_file_read_all(path, 256u << 20, &data, &len, err));
    int rc = qs_tok_spm_model_parse(out, spec, data, len, path, err);
    free(data);
    return rc;
}
