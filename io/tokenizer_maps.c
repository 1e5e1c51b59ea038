/* io/tokenizer_maps.c - hash maps of the tokenizer (vocabulary and merge ranks) and GPT-2's
 * byte-to-code-point table. */
#include <stdlib.h>
#include <string.h>

#include "io/tokenizer_internal.h"

static uint64_t hash_bytes(const char *s, size_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < 2 * n) c <<= 1;
    return c;
}

int qs_strmap_init(qs_strmap *m, size_t n) {
    m->cap = pow2_at_least(n);
    m->key = calloc(m->cap, sizeof *m->key);
    m->klen = calloc(m->cap, sizeof *m->klen);
    m->val = calloc(m->cap, sizeof *m->val);
    return m->key && m->klen && m->val ? 0 : -1;
}

void qs_strmap_free(qs_strmap *m) {
    free(m->key);
    free(m->klen);
    free(m->val);
    memset(m, 0, sizeof *m);
}

int qs_strmap_put(qs_strmap *m, const char *k, uint32_t len, int32_t v) {
    size_t i = hash_bytes(k, len) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == len && !memcmp(m->key[i], k, len)) return 1;
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->klen[i] = len;
    m->val[i] = v;
    return 0;
}

int32_t qs_strmap_get(const qs_strmap *m, const char *k, size_t len) {
    size_t i = hash_bytes(k, len) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == len && !memcmp(m->key[i], k, len)) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

int qs_pairmap_init(qs_pairmap *m, size_t n) {
    m->cap = pow2_at_least(n);
    m->key = malloc(m->cap * sizeof *m->key);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->merged = malloc(m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return -1;
    memset(m->key, 0xff, m->cap * sizeof *m->key);
    return 0;
}

void qs_pairmap_free(qs_pairmap *m) {
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

void qs_pairmap_put(qs_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = mix(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return; /* the first (lowest-rank) merge of a pair wins */
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

int qs_pairmap_get(const qs_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->cap) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = mix(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

void qs_bytelevel_tables(char enc[256][4], int16_t dec[512]) {
    int n = 0;
    for (int i = 0; i < 512; i++) dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + n++;
        memset(enc[b], 0, 4);
        if (cp < 0x80) {
            enc[b][0] = (char)cp;
        } else {
            enc[b][0] = (char)(0xc0 | (cp >> 6));
            enc[b][1] = (char)(0x80 | (cp & 0x3f));
        }
        dec[cp] = (int16_t)b;
    }
}

const char *qs_tok_pre_regex(qs_tok_pre pre) {
    switch (pre) {
    case QS_TOK_PRE_GPT2:
    case QS_TOK_PRE_SMOLLM:
        return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    case QS_TOK_PRE_LLAMA3:
        return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    case QS_TOK_PRE_QWEN2:
        return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    default:
        return NULL;
    }
}
