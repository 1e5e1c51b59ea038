/* io/tokenizer_internal.h - shared between the tokenizer files; not a public header. */
#ifndef QS_IO_TOKENIZER_INTERNAL_H
#define QS_IO_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "io/tokenizer.h"

/* SPM: where U+2581 is put in front of a segment of text (the text between special tokens) */
enum {
    QS_SPACE_PREFIX_NONE = 0,
    QS_SPACE_PREFIX_EVERY = 1,  /* normalizer Prepend("\u2581"): every segment */
    QS_SPACE_PREFIX_ALWAYS = 2, /* pre-tokenizer Metaspace, prepend_scheme "always": every segment
                                   that does not start with a space */
    QS_SPACE_PREFIX_FIRST = 3   /* Metaspace "first": the same, for the segment at offset 0 only */
};

/* string -> id, open addressing */
typedef struct qs_strmap {
    size_t cap;       /* power of two */
    const char **key; /* borrowed from the tokenizer's token table */
    uint32_t *klen;
    int32_t *val;
} qs_strmap;

/* (left id, right id) -> (rank, merged id) */
typedef struct qs_pairmap {
    size_t cap;
    uint64_t *key; /* UINT64_MAX = empty */
    int32_t *rank, *merged;
} qs_pairmap;

typedef struct qs_special {
    char *text;
    size_t len;
    int32_t id;
} qs_special;

struct qs_tokenizer {
    qs_tok_kind kind;
    qs_tok_pre pre;
    size_t n_tokens;
    char **tok;        /* [n_tokens] as in the vocabulary (byte-level: mapped code points) */
    uint32_t *tok_len;
    qs_strmap vocab;
    qs_pairmap merges; /* for SPM vocabularies with scores and no merges: derived from the scores */
    int ignore_merges; /* a whole pre-token found in the vocabulary is taken as is */
    int byte_fallback;
    int spm_words;     /* no token has U+2581 after another character: BPE runs word by word */
    int32_t byte_tok[256]; /* SPM: id of <0xNN>, or -1 */
    qs_special *special;
    size_t n_special;
    int32_t bos_id, eos_id, unk_id;
    int add_bos, nfc;
    int add_space_prefix;    /* SPM: QS_SPACE_PREFIX_* */
    pcre2_code *re;          /* pre-tokenizer regex (byte-level) */
    char byte_enc[256][4];   /* byte -> UTF-8 of its mapped code point (byte-level) */
    int16_t byte_dec[512];   /* mapped code point -> byte, -1 when none */
};

int qs_strmap_init(qs_strmap *m, size_t n);
void qs_strmap_free(qs_strmap *m);
int qs_strmap_put(qs_strmap *m, const char *k, uint32_t len, int32_t v); /* 1 when k was present */
int32_t qs_strmap_get(const qs_strmap *m, const char *k, size_t len);  /* -1 when absent */
int qs_pairmap_init(qs_pairmap *m, size_t n);
void qs_pairmap_free(qs_pairmap *m);
void qs_pairmap_put(qs_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
int qs_pairmap_get(const qs_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);

/* GPT-2's byte <-> printable code point table */
void qs_bytelevel_tables(char enc[256][4], int16_t dec[512]);

/* the regex of a byte-level pre-tokenizer (NULL for SMOLLM's digit split, handled in code) */
const char *qs_tok_pre_regex(qs_tok_pre pre);

/* SentencePiece merges from scores (io/tokenizer_spm_merges.c): calls fn for each merge, best
 * first: token `merged` = tokens[a] + tokens[b], split at byte `cut`. Returns 0, -ENOMEM, or the
 * first nonzero value fn returned. */
typedef int (*qs_spm_merge_fn)(void *ctx, int32_t merged, uint32_t cut, int32_t a, int32_t b);
int qs_spm_merges_derive(size_t n, const char *const *tokens, const float *scores, qs_spm_merge_fn fn, void *ctx);

/* BPE of one word given as initial symbol ids; writes ids to out (capacity n), returns count */
size_t qs_bpe_word(const struct qs_tokenizer *t, int32_t *sym, size_t n);

#endif
