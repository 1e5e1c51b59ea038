/* pipeline/calib.h - calibration token windows (the GPTQ protocol).
 *
 * A source of token ids (a text file tokenized whole with the model's tokenizer, a file of token
 * ids, or uniform random ids) and nsamples windows of seqlen consecutive tokens drawn from it at
 * seeded random start positions, uniform in [0, n - seqlen]. The draws come from a small PRNG
 * defined here (splitmix64 seeding xoshiro256**, unbiased bounded draws by rejection), so one seed
 * gives the same windows on every machine and every build; the digest of the windows goes into
 * the run fingerprint. */
#ifndef QS_PIPELINE_CALIB_H
#define QS_PIPELINE_CALIB_H

#include <stdint.h>

#include "base/error.h"

typedef struct qs_calib_opts {
    const char *source;       /* "random" (with source_is_ids 0), or a path */
    int source_is_ids;        /* 1: the file holds token ids as text (io/token_ids.h: whitespace or
                                 comma separated); 0: text to tokenize with MODEL_DIR's tokenizer */
    int nsamples, seqlen;     /* windows, and tokens per window; >= 1 and >= 2 */
    unsigned long long seed;
} qs_calib_opts;

typedef struct qs_calib {
    int nsamples, seqlen;
    int32_t *ids;               /* [nsamples * seqlen], window s at ids + s * seqlen; owned */
    unsigned long long digest;  /* XXH3-64 (seed 0) of ids as int32 little-endian: part of the run
                                   fingerprint */
    char desc[256];             /* e.g. "text wiki.txt (304832 tokens), 128 x 2048, seed 0" */
} qs_calib;

/* Fills *c with the calibration windows of o for the model in model_dir (whose vocabulary has
 * vocab_size ids):
 *  - text (source_is_ids 0): the file is tokenized in one piece with MODEL_DIR's tokenizer
 *    (tokenizer.json, or tokenizer.model), as `qstream eval --text` does, BOS included when the
 *    tokenizer adds one; then the windows are drawn.
 *  - ids (source_is_ids 1): the ids are parsed, checked to be in [0, vocab_size), and the windows
 *    drawn the same way.
 *  - "random": every id uniform in [0, vocab_size).
 * Every id of the windows is in [0, vocab_size). Returns 0, or a negative code with err one line
 * naming the file and what is wrong (a source shorter than seqlen tokens gives both numbers; an id
 * out of range gives its position). On error *c is zeroed and owns nothing. model_dir is only
 * read for text. */
int qs_calib_load(qs_calib *c, const qs_calib_opts *o, const char *model_dir, int vocab_size, qs_error *err);

/* Frees c's ids and zeroes it; a zeroed or already freed c (and NULL) is fine. */
void qs_calib_free(qs_calib *c);

/* The PRNG, public for tests and for anyone who needs the same stream: xoshiro256** (Blackman and
 * Vigna) with its state filled by four splitmix64 outputs from the seed. */
typedef struct qs_calib_rng {
    uint64_t s[4];
} qs_calib_rng;
void qs_calib_rng_seed(qs_calib_rng *r, uint64_t seed);
uint64_t qs_calib_rng_next(qs_calib_rng *r);
/* uniform in [0, n), n >= 1, without modulo bias (draws below 2^64 mod n are rejected) */
uint64_t qs_calib_rng_below(qs_calib_rng *r, uint64_t n);

#endif
