/* pipeline/calib.c - calibration token windows: source ids, seeded window draws, digest. */
#include "pipeline/calib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/fileio.h"
#include "base/splitmix.h"
#include "io/token_ids.h"
#include "io/tokenizer.h"

#define MAX_SOURCE_BYTES ((size_t)1 << 34) /* as `qstream eval --text` */

/* ---- PRNG: splitmix64 -> xoshiro256** ---- */

void qs_calib_rng_seed(qs_calib_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = qs_splitmix64(&seed); /* never all zero */
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t qs_calib_rng_next(qs_calib_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t qs_calib_rng_below(qs_calib_rng *r, uint64_t n) {
    uint64_t reject = (0 - n) % n; /* 2^64 mod n: the draws below it would bias x % n */
    for (;;) {
        uint64_t x = qs_calib_rng_next(r);
        if (x >= reject) return x % n;
    }
}

/* ---- sources ---- */

/* the text of path tokenized whole with model_dir's tokenizer (as cmd_eval does for --text) */
static int tokenize_file(const char *path, const char *model_dir, int32_t **ids, size_t *n, qs_error *err) {
    qs_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = qs_tokenizer_load(&t, model_dir, err);
    if (rc) qs_error_prefix(err, "calibration text %s", path);
    if (!rc) rc = qs_file_read_all(path, MAX_SOURCE_BYTES, &text, &len, err);
    if (!rc && (rc = qs_tokenizer_encode(t, text, len, ids, n, err)) != 0) qs_error_prefix(err, "%s", path);
    free(text);
    qs_tokenizer_free(t);
    return rc;
}

static int parse_ids_file(const char *path, int32_t **ids, size_t *n, qs_error *err) {
    char *text = NULL;
    size_t len = 0;
    QS_FORWARD_IF_ERROR(qs_file_read_all(path, MAX_SOURCE_BYTES, &text, &len, err));
    int rc = qs_token_ids_parse(text, path, ids, n, err);
    free(text);
    return rc;
}

/* XXH3-64 of ids as int32 little-endian whatever the host's byte order (a big-endian host swaps
 * the ids in place and back) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static void bswap_all(int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)__builtin_bswap32((uint32_t)ids[i]);
}
static unsigned long long digest_le(int32_t *ids, size_t n) {
    bswap_all(ids, n);
    unsigned long long h = XXH3_64bits(ids, sizeof *ids * n);
    bswap_all(ids, n);
    return h;
}
#else
static unsigned long long digest_le(int32_t *ids, size_t n) { return XXH3_64bits(ids, sizeof *ids * n); }
#endif

int qs_calib_load(qs_calib *c, const qs_calib_opts *o, const char *model_dir, int vocab_size, qs_error *err) {
    memset(c, 0, sizeof *c);
    const char *src = o->source;
    QS_RETURN_ERROR_IF(!src || !*src, QS_EUSAGE, "no calibration source (a text file, an ids file or \"random\")");
    QS_RETURN_ERROR_IF(o->nsamples < 1 || o->seqlen < 2, QS_EUSAGE,
                       "calibration %s: nsamples must be >= 1 and seqlen >= 2 (got %d and %d)", src, o->nsamples,
                       o->seqlen);
    QS_RETURN_ERROR_IF(vocab_size < 1, QS_EUSAGE, "calibration %s: the model's vocabulary size is %d", src,
                       vocab_size);
    int is_random = !o->source_is_ids && !strcmp(src, "random");
    size_t total = (size_t)o->nsamples * (size_t)o->seqlen;
    int32_t *w = malloc(sizeof *w * total);
    QS_RETURN_ERROR_IF(!w, -ENOMEM, "calibration %s: out of memory for %d x %d token ids", src, o->nsamples,
                       o->seqlen);
    qs_calib_rng r;
    qs_calib_rng_seed(&r, o->seed);
    int rc = 0;
    char what[200];
    if (is_random) {
        for (size_t i = 0; i < total; i++) w[i] = (int32_t)qs_calib_rng_below(&r, (uint64_t)vocab_size);
        snprintf(what, sizeof what, "random ids in [0, %d)", vocab_size);
    } else {
        int32_t *all = NULL;
        size_t n = 0;
        rc = o->source_is_ids ? parse_ids_file(src, &all, &n, err) : tokenize_file(src, model_dir, &all, &n, err);
        for (size_t i = 0; !rc && i < n; i++)
            if (all[i] >= vocab_size) /* the parser refuses negative ids */
                rc = qs_error_set(err, QS_EFORMAT,
                                  "%s: token id %d at position %zu is outside the model's vocabulary [0, %d)%s", src,
                                  (int)all[i], i, vocab_size, o->source_is_ids ? "" : " (from its tokenizer)");
        if (!rc && n < (size_t)o->seqlen)
            rc = qs_error_set(err, QS_EFORMAT, "%s: %zu %s, fewer than the calibration window length (seqlen) %d",
                              src, n, o->source_is_ids ? "token ids" : "tokens", o->seqlen);
        for (int s = 0; !rc && s < o->nsamples; s++) {
            uint64_t start = qs_calib_rng_below(&r, (uint64_t)(n - (size_t)o->seqlen) + 1);
            memcpy(w + (size_t)s * o->seqlen, all + start, sizeof *w * (size_t)o->seqlen);
        }
        snprintf(what, sizeof what, "%s %.150s (%zu %s)", o->source_is_ids ? "ids" : "text", src, n,
                 o->source_is_ids ? "ids" : "tokens");
        free(all);
    }
    if (rc) {
        free(w);
        return rc;
    }
    c->nsamples = o->nsamples;
    c->seqlen = o->seqlen;
    c->ids = w;
    c->digest = digest_le(w, total);
    snprintf(c->desc, sizeof c->desc, "%s, %d x %d, seed %llu", what, o->nsamples, o->seqlen, o->seed);
    return 0;
}

void qs_calib_free(qs_calib *c) {
    if (!c) return;
    free(c->ids);
    memset(c, 0, sizeof *c);
}
