/* io/tokenizer.c - building a tokenizer from a qs_tok_spec, encoding and decoding. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "io/tokenizer_internal.h"

#define SPM_SPACE "\xe2\x96\x81"

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
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

size_t qs_tokenizer_vocab_size(const qs_tokenizer *t) { return t->n_tokens; }
int32_t qs_tokenizer_bos(const qs_tokenizer *t) { return t->bos_id; }

/* the byte of a "<0xNN>" token (two upper-case hex digits), or -1 */
static int byte_token(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    const char *h, *l;
    if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || !s[3] || !s[4] || !(h = strchr(hex, s[3])) || !(l = strchr(hex, s[4])))
        return -1;
    return (int)(h - hex) * 16 + (int)(l - hex);
}

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
    t->spm_words = 1;
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
        int byte = byte_token(t->tok[i], len);
        if (byte >= 0 && t->byte_tok[byte] < 0) t->byte_tok[byte] = (int32_t)i;
        for (const char *p = t->tok[i]; (p = strstr(p, SPM_SPACE)) != NULL; p += 3)
            if (p > t->tok[i] && (p - t->tok[i] < 3 || memcmp(p - 3, SPM_SPACE, 3))) t->spm_words = 0;
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
    }
    *out = t;
    return 0;
fail:
    qs_tokenizer_free(t);
    return rc;
}

/* ---- encoding ----
 * One encoder state per call (the tokenizer itself is only read, so several threads may encode
 * with it at once). Pre-tokens repeat a lot in text: a per-call memo maps a pre-token's bytes to
 * the ids it gave (kept in the output, which is only appended to). */

enum { MEMO_MAX_KEY = 64, ENC_NOMEM = -1 }; /* other negative codes: PCRE2's */

typedef struct enc {
    const qs_tokenizer *t;
    ivec out;
    int32_t *scratch; /* symbols of one word */
    size_t scap;
    pcre2_match_data *md;
    int jit;              /* the regex was JIT-compiled: pcre2_jit_match skips pcre2_match's checks */
    int32_t byte_id[256]; /* byte-level: id of each byte's mapped code point, or -1 */
    size_t mcap, mused;   /* memo: open addressing, mcap a power of two (0: no memo) */
    uint64_t *mh;         /* 0 = empty */
    uint32_t *mkoff, *mklen, *mioff, *min;
    char *pool; /* memo keys */
    size_t npool, cpool;
} enc;

static uint64_t word_hash(const uint8_t *w, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * 1099511628211ull;
    return h | 1;
}

static int scratch_fit(enc *e, size_t n) {
    if (n <= e->scap) return 0;
    size_t cap = n < 256 ? 256 : n;
    int32_t *s = realloc(e->scratch, cap * sizeof *s);
    if (!s) return -1;
    e->scratch = s;
    e->scap = cap;
    return 0;
}

/* appends the memoized ids of w and returns 1, or returns 0 with *slot where w goes */
static int memo_get(enc *e, const uint8_t *w, size_t n, size_t *slot, uint64_t *hash) {
    if (!e->mcap || n > MEMO_MAX_KEY) return 0;
    uint64_t h = word_hash(w, n);
    size_t i = h & (e->mcap - 1);
    for (; e->mh[i]; i = (i + 1) & (e->mcap - 1)) {
        if (e->mh[i] != h || e->mklen[i] != n || memcmp(e->pool + e->mkoff[i], w, n)) continue;
        for (uint32_t k = 0; k < e->min[i]; k++)
            if (ivec_push(&e->out, e->out.a[e->mioff[i] + k])) return -1;
        return 1;
    }
    *slot = i;
    *hash = h;
    return 0;
}

/* records that w gave out.a[start..] (best effort: a full memo or no memory just skips it) */
static void memo_put(enc *e, const uint8_t *w, size_t n, size_t slot, uint64_t h, size_t start) {
    if (!e->mcap || n > MEMO_MAX_KEY || 2 * (e->mused + 1) > e->mcap || e->out.n > UINT32_MAX) return;
    if (e->npool + n > e->cpool) {
        size_t cap = e->cpool ? 2 * e->cpool : 4096;
        char *p = realloc(e->pool, cap);
        if (!p) return;
        e->pool = p;
        e->cpool = cap;
    }
    memcpy(e->pool + e->npool, w, n);
    e->mh[slot] = h;
    e->mkoff[slot] = (uint32_t)e->npool;
    e->mklen[slot] = (uint32_t)n;
    e->mioff[slot] = (uint32_t)start;
    e->min[slot] = (uint32_t)(e->out.n - start);
    e->npool += n;
    e->mused++;
}

/* byte-level: one pre-token -> ids */
static int encode_word_bl(enc *e, const uint8_t *w, size_t n) {
    const qs_tokenizer *t = e->t;
    size_t slot = 0, start = e->out.n;
    uint64_t h = 0;
    int r = memo_get(e, w, n, &slot, &h);
    if (r) return r < 0 ? -1 : 0;
    if (t->ignore_merges) {
        char buf[1024];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 4 < sizeof buf; i++) {
            size_t l = strlen(t->byte_enc[w[i]]);
            memcpy(buf + k, t->byte_enc[w[i]], l);
            k += l;
        }
        int32_t id = k + 4 < sizeof buf ? qs_strmap_get(&t->vocab, buf, k) : -1;
        if (id >= 0) {
            if (ivec_push(&e->out, id)) return -1;
            memo_put(e, w, n, slot, h, start);
            return 0;
        }
    }
    if (scratch_fit(e, n)) return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (e->byte_id[w[i]] >= 0) e->scratch[m++] = e->byte_id[w[i]];
    size_t k = qs_bpe_word(t, e->scratch, m);
    for (size_t i = 0; i < k; i++)
        if (ivec_push(&e->out, e->scratch[i])) return -1;
    memo_put(e, w, n, slot, h, start);
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

static int regex_split(enc *e, const uint8_t *s, size_t n) {
    size_t pos = 0;
    while (pos < n) {
        int r = e->jit ? pcre2_jit_match(e->t->re, s, n, pos, 0, e->md, NULL) : pcre2_match(e->t->re, s, n, pos, 0, e->md, NULL);
        size_t ms = n, me = n;
        if (r < 0 && r != PCRE2_ERROR_NOMATCH) return r; /* e.g. a JIT stack limit: an error, never wrong ids */
        if (r > 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            ms = ov[0], me = ov[1];
        }
        if (ms > pos && encode_word_bl(e, s + pos, ms - pos)) return ENC_NOMEM; /* bytes no rule matches */
        if (me > ms && encode_word_bl(e, s + ms, me - ms)) return ENC_NOMEM;
        pos = me > ms ? me : ms + (ms < n);
    }
    return 0;
}

static int encode_segment_bl(enc *e, const uint8_t *s, size_t n) {
    if (e->t->pre != QS_TOK_PRE_SMOLLM) return regex_split(e, s, n);
    /* HF Digits(individual_digits): every numeric character alone, the runs between them to the regex */
    size_t run = 0, i = 0;
    while (i < n) {
        size_t l;
        if (s[i] >= 0x80 || (s[i] >= '0' && s[i] <= '9') ? is_numeric_at(s + i, n - i, &l) : (l = 1, 0)) {
            int r = i > run ? regex_split(e, s + run, i - run) : 0;
            if (r) return r;
            if (encode_word_bl(e, s + i, l)) return -1;
            run = i + l;
        }
        i += l;
    }
    return n > run ? regex_split(e, s + run, n - run) : 0;
}

static const uint8_t spm_space[3] = {0xe2, 0x96, 0x81};

/* SPM: one word of normalized text (or the whole segment) -> ids */
static int encode_word_spm(enc *e, const uint8_t *w, size_t n) {
    const qs_tokenizer *t = e->t;
    size_t slot = 0, start = e->out.n, ns = 0;
    uint64_t h = 0;
    int r = memo_get(e, w, n, &slot, &h);
    if (r) return r < 0 ? -1 : 0;
    if (scratch_fit(e, n)) return -1;
    int32_t *sym = e->scratch;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t l = utf8proc_iterate(w + i, (utf8proc_ssize_t)(n - i), &cp);
        if (l <= 0) l = 1;
        int32_t id = qs_strmap_get(&t->vocab, (const char *)w + i, (size_t)l);
        int bytes = t->byte_fallback && id < 0;
        for (utf8proc_ssize_t b = 0; bytes && b < l; b++) bytes = t->byte_tok[w[i + b]] >= 0;
        if (id >= 0) sym[ns++] = id;
        else if (bytes)
            for (utf8proc_ssize_t b = 0; b < l; b++) sym[ns++] = t->byte_tok[w[i + b]];
        else if (t->unk_id >= 0 && !(ns && sym[ns - 1] == t->unk_id)) sym[ns++] = t->unk_id; /* fuse unk */
        i += (size_t)l;
    }
    size_t m = qs_bpe_word(t, sym, ns);
    for (size_t i = 0; i < m; i++)
        if (ivec_push(&e->out, sym[i])) return -1;
    memo_put(e, w, n, slot, h, start);
    return 0;
}

static int encode_segment_spm(enc *e, const uint8_t *s, size_t n, int at_start) {
    const qs_tokenizer *t = e->t;
    /* normalize: every space -> U+2581 (3 bytes), and maybe a leading U+2581 */
    size_t k = 0;
    uint8_t *norm = malloc(3 * n + 4);
    if (!norm) return -1;
    int prefix = t->add_space_prefix == QS_SPACE_PREFIX_EVERY ||
                 ((t->add_space_prefix == QS_SPACE_PREFIX_ALWAYS || (t->add_space_prefix == QS_SPACE_PREFIX_FIRST && at_start)) &&
                  s[0] != ' ' && !(n >= 3 && !memcmp(s, spm_space, 3)));
    if (prefix) memcpy(norm, spm_space, 3), k = 3;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ') memcpy(norm + k, spm_space, 3), k += 3;
        else norm[k++] = s[i];
    int rc = 0;
    size_t word = 0;
    /* no token has U+2581 after another character: no merge crosses a word start (and with U+2581
     * known, no unknown character fuses across one) */
    if (t->spm_words && (t->byte_fallback || qs_strmap_get(&t->vocab, (const char *)spm_space, 3) >= 0)) {
        int prev_space = 1;
        for (size_t i = 0; i < k && !rc;) {
            int space = i + 3 <= k && !memcmp(norm + i, spm_space, 3);
            if (space && !prev_space && i > word) {
                rc = encode_word_spm(e, norm + word, i - word);
                word = i;
            }
            prev_space = space;
            i += space ? 3 : 1; /* any other byte is not a space's start, continuation or not */
        }
    }
    if (!rc && k > word) rc = encode_word_spm(e, norm + word, k - word);
    free(norm);
    return rc;
}

static void enc_free(enc *e) {
    free(e->scratch);
    if (e->md) pcre2_match_data_free(e->md);
    free(e->mh);
    free(e->mkoff);
    free(e->mklen);
    free(e->mioff);
    free(e->min);
    free(e->pool);
}

/* NFC of s[0..n), or NULL when it is s itself (or on no memory: raw, like invalid UTF-8). Code
 * points below U+0300 (lead bytes below 0xCC) are NFC and compose with nothing before them, and
 * an ASCII character never composes with what precedes it: only the stretches from an ASCII
 * character before a byte >= 0xCC up to the next ASCII character go through utf8proc (a stretch
 * that is not valid UTF-8 stays as is). */
static uint8_t *nfc_of(const uint8_t *s, size_t n, size_t *out_n) {
    size_t i = 0;
    while (i < n && s[i] < 0xcc) i++;
    if (i == n) return NULL;
    size_t cap = n + n / 2 + 16, k = 0;
    uint8_t *o = malloc(cap);
    if (!o) return NULL;
    for (i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] < 0xcc) j++;
        size_t a = j, b = j;
        while (a > i && s[a - 1] >= 0x80) a--; /* back to an ASCII character (or i) */
        if (a > i) a--;
        while (b < n && s[b] >= 0x80) b++;
        utf8proc_uint8_t *m = NULL;
        utf8proc_ssize_t ml = b > a ? utf8proc_map(s + a, (utf8proc_ssize_t)(b - a), &m, UTF8PROC_STABLE | UTF8PROC_COMPOSE) : -1;
        size_t need = k + (a - i) + (ml >= 0 ? (size_t)ml : b - a);
        if (need > cap) {
            cap = 2 * need;
            uint8_t *g = realloc(o, cap);
            if (!g) {
                free(m);
                free(o);
                return NULL;
            }
            o = g;
        }
        memcpy(o + k, s + i, a - i), k += a - i;
        if (ml >= 0) memcpy(o + k, m, (size_t)ml), k += (size_t)ml; /* the length, not strlen: NUL bytes */
        else memcpy(o + k, s + a, b - a), k += b - a;
        free(m);
        i = b;
    }
    *out_n = k;
    return o;
}

/* one segment of text between special tokens; Qwen2's NFC applies to segments (HF matches added
 * tokens in the raw text, then normalizes the rest) */
static int encode_segment(enc *e, const uint8_t *s, size_t n, int at_start) {
    const qs_tokenizer *t = e->t;
    size_t nn = 0;
    uint8_t *nfc = t->nfc ? nfc_of(s, n, &nn) : NULL;
    if (nfc) s = nfc, n = nn;
    int rc = t->kind == QS_TOK_BPE_SPM ? encode_segment_spm(e, s, n, at_start) : encode_segment_bl(e, s, n);
    free(nfc);
    return rc;
}

int qs_tokenizer_encode(const qs_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids, qs_error *err) {
    *ids = NULL;
    *n_ids = 0;
    const uint8_t *s = (const uint8_t *)text;
    enc e = {.t = t};
    int rc = 0;
    if (t->kind == QS_TOK_BPE_BYTELEVEL) {
        e.md = pcre2_match_data_create_from_pattern(t->re, NULL);
        rc = e.md ? 0 : -1;
        size_t jit_size = 0;
        e.jit = pcre2_pattern_info(t->re, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size > 0;
        for (int b = 0; b < 256; b++) e.byte_id[b] = qs_strmap_get(&t->vocab, t->byte_enc[b], strlen(t->byte_enc[b]));
    }
    if (len >= 512) { /* the memo pays off on longer texts */
        e.mcap = 1024;
        while (e.mcap < len / 4 && e.mcap < (1u << 17)) e.mcap <<= 1;
        e.mh = calloc(e.mcap, sizeof *e.mh);
        e.mkoff = malloc(e.mcap * sizeof *e.mkoff);
        e.mklen = malloc(e.mcap * sizeof *e.mklen);
        e.mioff = malloc(e.mcap * sizeof *e.mioff);
        e.min = malloc(e.mcap * sizeof *e.min);
        if (!e.mh || !e.mkoff || !e.mklen || !e.mioff || !e.min) rc = -1;
    }
    uint8_t first[256] = {0}; /* first bytes of special tokens */
    for (size_t k = 0; k < t->n_special; k++) first[(uint8_t)t->special[k].text[0]] = 1;
    if (!rc && t->add_bos) rc = ivec_push(&e.out, t->bos_id);
    size_t seg = 0;
    for (size_t i = 0; !rc && i <= len; i++) {
        const qs_special *hit = NULL;
        if (i < len && first[s[i]])
            for (size_t k = 0; k < t->n_special && !hit; k++)
                if (t->special[k].text[0] == (char)s[i] && t->special[k].len <= len - i &&
                    !memcmp(s + i, t->special[k].text, t->special[k].len))
                    hit = &t->special[k];
        if (!hit && i < len) continue;
        if (i > seg) rc = encode_segment(&e, s + seg, i - seg, seg == 0);
        if (hit && !rc) {
            rc = ivec_push(&e.out, hit->id);
            i += hit->len - 1;
            seg = i + 1;
        }
    }
    enc_free(&e);
    if (rc) {
        free(e.out.a);
        if (rc != ENC_NOMEM) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return qs_error_set(err, -EINVAL, "tokenizer: pre-tokenizer regex failed on %zu bytes: %s", len, (const char *)msg);
        }
        return qs_error_set(err, -ENOMEM, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = e.out.a ? e.out.a : malloc(sizeof(int32_t));
    *n_ids = e.out.n;
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
            int byte = byte_token(s, l);
            if (byte >= 0) {
                o[k++] = (char)byte;
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
