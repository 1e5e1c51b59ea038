/* io/tokenizer.c - building a tokenizer from a qs_tok_spec, encoding and decoding. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "io/tokenizer_internal.h"

typedef struct ivec {
    int32_t *a;
    size_t n, cap;
} ivec;

static int ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        int32_t *a = realloc(v->a, cap * sizeof *a);
        if (!a) return -1;
        v->a = a;
        v->cap = cap;
    }
    v->a[v->n++] = x;
    return 0;
}

void qs_tokenizer_free(qs_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; t->tok && i < t->n_tokens; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    qs_strmap_free(&t->vocab);
    qs_pairmap_free(&t->merges);
    for (size_t i = 0; i < t->n_special; i++) free(t->special[i].text);
    free(t->special);
    if (t->md) pcre2_match_data_free(t->md);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

size_t qs_tokenizer_vocab_size(const qs_tokenizer *t) { return t->n_tokens; }
int32_t qs_tokenizer_bos(const qs_tokenizer *t) { return t->bos_id; }

static int cmp_special(const void *a, const void *b) { /* longest first, so the longest match wins */
    const qs_special *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0;
}

static int count_merge(void *ctx, int32_t merged, uint32_t cut, int32_t a, int32_t b) {
    (void)merged, (void)cut, (void)a, (void)b;
    ++*(size_t *)ctx;
    return 0;
}

static int put_merge(void *ctx, int32_t merged, uint32_t cut, int32_t a, int32_t b) {
    qs_pairmap *m = ((void **)ctx)[0];
    size_t *rank = ((void **)ctx)[1];
    (void)cut;
    qs_pairmap_put(m, a, b, (int32_t)(*rank)++, merged);
    return 0;
}

int qs_tokenizer_from_spec(qs_tokenizer **out, const qs_tok_spec *s, qs_error *err) {
    *out = NULL;
    QS_RETURN_ERROR_IF(!s->n_tokens || s->n_tokens > (1u << 24), QS_EFORMAT, "tokenizer: %zu tokens", s->n_tokens);
    qs_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return qs_error_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    t->kind = s->kind;
    t->pre = s->kind == QS_TOK_BPE_SPM ? QS_TOK_PRE_NONE : s->pre;
    t->n_tokens = s->n_tokens;
    t->bos_id = s->bos_id, t->eos_id = s->eos_id, t->unk_id = s->unk_id;
    t->add_bos = s->add_bos && s->bos_id >= 0;
    t->add_space_prefix = s->add_space_prefix ? QS_SPACE_PREFIX_EVERY : QS_SPACE_PREFIX_NONE;
    t->ignore_merges = t->pre == QS_TOK_PRE_LLAMA3;
    t->nfc = t->pre == QS_TOK_PRE_QWEN2;
    t->tok = calloc(s->n_tokens, sizeof *t->tok);
    t->tok_len = calloc(s->n_tokens, sizeof *t->tok_len);
    t->special = calloc(s->n_tokens, sizeof *t->special);
    if (!t->tok || !t->tok_len || !t->special || qs_strmap_init(&t->vocab, s->n_tokens)) {
        rc = qs_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    for (size_t i = 0; i < s->n_tokens; i++) {
        if (!s->tokens[i]) {
            rc = qs_error_set(err, QS_EFORMAT, "tokenizer: token %zu is missing", i);
            goto fail;
        }
        size_t len = strlen(s->tokens[i]);
        t->tok[i] = strdup(s->tokens[i]);
        if (!t->tok[i]) {
            rc = qs_error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        t->tok_len[i] = (uint32_t)len;
        qs_strmap_put(&t->vocab, t->tok[i], (uint32_t)len, (int32_t)i); /* a duplicate keeps its first id */
        int type = s->types ? s->types[i] : 1;
        if ((type == 2 || type == 3 || type == 4) && len > 0) { /* unknown, control, user-defined: matched literally */
            t->special[t->n_special++] = (qs_special){.text = strdup(t->tok[i]), .len = len, .id = (int32_t)i};
            if (!t->special[t->n_special - 1].text) {
                rc = qs_error_set(err, -ENOMEM, "out of memory");
                goto fail;
            }
        }
        unsigned v;
        if (len == 6 && sscanf(t->tok[i], "<0x%02X>", &v) == 1) t->byte_tok[v] = (int32_t)i;
    }
    qsort(t->special, t->n_special, sizeof *t->special, cmp_special);
    for (int b = 0; b < 256 && t->kind == QS_TOK_BPE_SPM; b++) t->byte_fallback |= t->byte_tok[b] >= 0; /* per character: all its bytes, or unk */
    if (s->n_merges) {
        if (qs_pairmap_init(&t->merges, s->n_merges)) {
            rc = qs_error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        char buf[1024];
        for (size_t i = 0; i < s->n_merges; i++) {
            const char *m = s->merges[i], *sp = m ? strchr(m, ' ') : NULL;
            size_t la = sp ? (size_t)(sp - m) : 0, lb = sp ? strlen(sp + 1) : 0;
            int32_t a = sp ? qs_strmap_get(&t->vocab, m, la) : -1, b = sp ? qs_strmap_get(&t->vocab, sp + 1, lb) : -1;
            if (a < 0 || b < 0 || la + lb > sizeof buf) {
                rc = qs_error_set(err, QS_EFORMAT, "tokenizer: merge %zu ('%.60s') refers to an unknown token", i, m ? m : "");
                goto fail;
            }
            memcpy(buf, m, la);
            memcpy(buf + la, sp + 1, lb);
            int32_t merged = qs_strmap_get(&t->vocab, buf, la + lb);
            if (merged < 0) {
                rc = qs_error_set(err, QS_EFORMAT, "tokenizer: merge %zu ('%.60s') gives a token not in the vocabulary", i, m);
                goto fail;
            }
            qs_pairmap_put(&t->merges, a, b, (int32_t)i, merged);
        }
    } else if (t->kind == QS_TOK_BPE_SPM && s->scores) {
        size_t n = 0; /* count, then fill */
        int r = qs_spm_merges_derive(s->n_tokens, s->tokens, s->scores, count_merge, &n);
        if (!r && !(r = qs_pairmap_init(&t->merges, n) ? -ENOMEM : 0)) {
            n = 0;
            void *ctx[2] = {&t->merges, &n};
            r = qs_spm_merges_derive(s->n_tokens, s->tokens, s->scores, put_merge, ctx);
        }
        if (r) {
            rc = qs_error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
    } else {
        rc = qs_error_set(err, QS_EFORMAT, "tokenizer: no merges%s", t->kind == QS_TOK_BPE_SPM ? " and no scores" : "");
        goto fail;
    }
    if (t->kind == QS_TOK_BPE_BYTELEVEL) {
        qs_bytelevel_tables(t->byte_enc, t->byte_dec); /* bytes missing from the vocabulary are dropped, as HF does without unk */
        int ecode;
        PCRE2_SIZE eoff;
        t->re = pcre2_compile((PCRE2_SPTR)qs_tok_pre_regex(t->pre), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ecode, &eoff, NULL);
        if (!t->re) {
            rc = qs_error_set(err, -EINVAL, "tokenizer: pre-tokenizer regex does not compile (%d)", ecode);
            goto fail;
        }
        pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is unavailable */
        t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    }
    *out = t;
    return 0;
fail:
    qs_tokenizer_free(t);
    return rc;
}

/* byte-level: one pre-token -> ids */
static int encode_word_bl(const qs_tokenizer *t, const uint8_t *w, size_t n, ivec *out, int32_t *scratch) {
    if (t->ignore_merges) {
        char buf[1024];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 4 < sizeof buf; i++) {
            size_t l = strlen(t->byte_enc[w[i]]);
            memcpy(buf + k, t->byte_enc[w[i]], l);
            k += l;
        }
        int32_t id = k + 4 < sizeof buf ? qs_strmap_get(&t->vocab, buf, k) : -1;
        if (id >= 0) return ivec_push(out, id);
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = qs_strmap_get(&t->vocab, t->byte_enc[w[i]], strlen(t->byte_enc[w[i]]));
        if (id >= 0) scratch[m++] = id;
    }
    size_t k = qs_bpe_word(t, scratch, m);
    for (size_t i = 0; i < k; i++)
        if (ivec_push(out, scratch[i])) return -1;
    return 0;
}

static int is_numeric_at(const uint8_t *s, size_t n, size_t *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t l = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
    if (l <= 0) {
        *len = 1;
        return 0;
    }
    *len = (size_t)l;
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

static int regex_split(const qs_tokenizer *t, const uint8_t *s, size_t n, ivec *out, int32_t *scratch) {
    size_t pos = 0;
    while (pos < n) {
        int r = pcre2_match(t->re, s, n, pos, 0, t->md, NULL);
        size_t ms = n, me = n;
        if (r > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
            ms = ov[0], me = ov[1];
        }
        if (ms > pos && encode_word_bl(t, s + pos, ms - pos, out, scratch)) return -1; /* bytes no rule matches */
        if (me > ms && encode_word_bl(t, s + ms, me - ms, out, scratch)) return -1;
        pos = me > ms ? me : ms + (ms < n);
    }
    return 0;
}

static int encode_segment_bl(const qs_tokenizer *t, const uint8_t *s, size_t n, ivec *out, int32_t *scratch) {
    if (t->pre != QS_TOK_PRE_SMOLLM) return regex_split(t, s, n, out, scratch);
    /* HF Digits(individual_digits): every numeric character alone, the runs between them to the regex */
    size_t run = 0, i = 0;
    while (i < n) {
        size_t l;
        if (is_numeric_at(s + i, n - i, &l)) {
            if (i > run && regex_split(t, s + run, i - run, out, scratch)) return -1;
            if (encode_word_bl(t, s + i, l, out, scratch)) return -1;
            run = i + l;
        }
        i += l;
    }
    return n > run ? regex_split(t, s + run, n - run, out, scratch) : 0;
}

static int encode_segment_spm(const qs_tokenizer *t, const uint8_t *s, size_t n, int at_start, ivec *out) {
    /* normalize: every space -> U+2581 (3 bytes), and maybe a leading U+2581 */
    size_t cap = 3 * n + 4, k = 0;
    uint8_t *norm = malloc(cap);
    int32_t *sym = malloc(cap * sizeof *sym);
    if (!norm || !sym) {
        free(norm);
        free(sym);
        return -1;
    }
    static const uint8_t sp[3] = {0xe2, 0x96, 0x81};
    int prefix = t->add_space_prefix == QS_SPACE_PREFIX_EVERY ||
                 ((t->add_space_prefix == QS_SPACE_PREFIX_ALWAYS || (t->add_space_prefix == QS_SPACE_PREFIX_FIRST && at_start)) &&
                  s[0] != ' ' && !(n >= 3 && !memcmp(s, sp, 3)));
    if (prefix) memcpy(norm, sp, 3), k = 3;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ') memcpy(norm + k, sp, 3), k += 3;
        else norm[k++] = s[i];
    size_t ns = 0;
    for (size_t i = 0; i < k;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate(norm + i, (utf8proc_ssize_t)(k - i), &cp);
        if (l <= 0) l = 1;
        int32_t id = qs_strmap_get(&t->vocab, (const char *)norm + i, (size_t)l);
        int bytes = t->byte_fallback && id < 0;
        for (utf8proc_ssize_t b = 0; bytes && b < l; b++) bytes = t->byte_tok[norm[i + b]] >= 0;
        if (id >= 0) sym[ns++] = id;
        else if (bytes)
            for (utf8proc_ssize_t b = 0; b < l; b++) sym[ns++] = t->byte_tok[norm[i + b]];
        else if (t->unk_id >= 0 && !(ns && sym[ns - 1] == t->unk_id)) sym[ns++] = t->unk_id; /* fuse unk */
        i += (size_t)l;
    }
    size_t m = qs_bpe_word(t, sym, ns);
    int rc = 0;
    for (size_t i = 0; i < m && !rc; i++) rc = ivec_push(out, sym[i]);
    free(norm);
    free(sym);
    return rc;
}

int qs_tokenizer_encode(const qs_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids, qs_error *err) {
    *ids = NULL;
    *n_ids = 0;
    ivec out = {0};
    uint8_t *nfc = NULL;
    const uint8_t *s = (const uint8_t *)text;
    if (t->nfc && len) {
        utf8proc_uint8_t *o = NULL;
        if (utf8proc_map(s, (utf8proc_ssize_t)len, &o, UTF8PROC_STABLE | UTF8PROC_COMPOSE) >= 0) {
            nfc = o;
            s = nfc;
            len = strlen((char *)nfc);
        }
    }
    int32_t *scratch = malloc((len + 1) * sizeof *scratch);
    int rc = scratch ? 0 : -1;
    if (!rc && t->add_bos) rc = ivec_push(&out, t->bos_id);
    size_t seg = 0;
    for (size_t i = 0; !rc && i <= len; i++) {
        const qs_special *hit = NULL;
        if (i < len)
            for (size_t k = 0; k < t->n_special && !hit; k++)
                if (t->special[k].text[0] == (char)s[i] && t->special[k].len <= len - i &&
                    !memcmp(s + i, t->special[k].text, t->special[k].len))
                    hit = &t->special[k];
        if (!hit && i < len) continue;
        if (i > seg)
            rc = t->kind == QS_TOK_BPE_SPM ? encode_segment_spm(t, s + seg, i - seg, seg == 0, &out)
                                           : encode_segment_bl(t, s + seg, i - seg, &out, scratch);
        if (hit && !rc) {
            rc = ivec_push(&out, hit->id);
            i += hit->len - 1;
            seg = i + 1;
        }
    }
    free(scratch);
    free(nfc);
    if (rc) {
        free(out.a);
        return qs_error_set(err, -ENOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = out.a ? out.a : malloc(sizeof(int32_t));
    *n_ids = out.n;
    return 0;
}

int qs_tokenizer_decode(const qs_tokenizer *t, const int32_t *ids, size_t n, char **text, qs_error *err) {
    size_t cap = 16;
    for (size_t i = 0; i < n; i++) cap += ids[i] >= 0 && (size_t)ids[i] < t->n_tokens ? t->tok_len[ids[i]] : 0;
    char *o = malloc(cap);
    if (!o) return qs_error_set(err, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_tokens) {
            free(o);
            return qs_error_set(err, -EINVAL, "tokenizer: id %d is outside the vocabulary", ids[i]);
        }
        const char *s = t->tok[ids[i]];
        size_t l = t->tok_len[ids[i]];
        if (ids[i] == t->bos_id && i == 0 && t->add_bos) continue;
        if (t->kind == QS_TOK_BPE_BYTELEVEL) {
            int special = 0;
            for (size_t j = 0; j < t->n_special && !special; j++) special = t->special[j].id == ids[i];
            for (size_t p = 0; p < l;) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t cl = utf8proc_iterate((const uint8_t *)s + p, (utf8proc_ssize_t)(l - p), &cp);
                if (!special && cl > 0 && cp < 512 && t->byte_dec[cp] >= 0) o[k++] = (char)t->byte_dec[cp];
                else {
                    if (cl <= 0) cl = 1;
                    memcpy(o + k, s + p, (size_t)cl);
                    k += (size_t)cl;
                }
                p += (size_t)cl;
            }
        } else {
            unsigned v;
            if (l == 6 && sscanf(s, "<0x%02X>", &v) == 1) {
                o[k++] = (char)v;
                continue;
            }
            for (size_t p = 0; p < l; p++) {
                if (p + 2 < l && (uint8_t)s[p] == 0xe2 && (uint8_t)s[p + 1] == 0x96 && (uint8_t)s[p + 2] == 0x81) {
                    if (!(k == 0 && t->add_space_prefix)) o[k++] = ' ';
                    p += 2;
                } else {
                    o[k++] = s[p];
                }
            }
        }
    }
    o[k] = 0;
    *text = o;
    return 0;
}
