/* checkpoint/manifest.h - OUT_DIR/manifest.json: the run fingerprint and one record per finished
 * block. Saved durably (manifest.json.tmp, fsync, rename, fsync of the directory); a block is
 * added only after its shard's rename is durable.
 *
 * {"format": 1, "n_blocks": 30,
 *  "fingerprint": {...model catalogue digest, config, method and parameters, calibration digest,
 *                  seed...},
 *  "blocks": [{"block": 0, "file": "blocks/block-0000.qsh", "bytes": N, "xxh3": "16 hex",
 *              "seconds": 1.5, "metrics": {...}}, ...]} */
#ifndef QS_CHECKPOINT_MANIFEST_H
#define QS_CHECKPOINT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct qs_manifest_block {
    int block;
    char *file;         /* relative to OUT_DIR */
    uint64_t bytes;
    uint64_t xxh3;      /* of the whole shard file */
    double seconds;
    char *metrics_json; /* JSON object text, or NULL */
} qs_manifest_block;

typedef struct qs_manifest {
    int n_blocks;           /* blocks in the model */
    char *fingerprint_json; /* JSON object text (compact, keys in insertion order) */
    size_t n;               /* finished blocks recorded */
    qs_manifest_block *blocks;
} qs_manifest;

/* Initializes m for a new run; copies fingerprint_json (must be a JSON object). */
int qs_manifest_init(qs_manifest *m, int n_blocks, const char *fingerprint_json, qs_error *err);
void qs_manifest_free(qs_manifest *m);

/* Loads and validates path (object shape, types, block indices in range and unique, relative
 * file names without "..", 16-hex hashes). Errors name the file and the field. */
int qs_manifest_load(qs_manifest *m, const char *path, qs_error *err);
int qs_manifest_parse(qs_manifest *m, const char *json, size_t len, const char *name_for_errors,
                      qs_error *err);
/* Saves durably. */
int qs_manifest_save(const qs_manifest *m, const char *path, qs_error *err);

/* Appends (or replaces) the record of a finished block; copies the strings. */
int qs_manifest_set_block(qs_manifest *m, const qs_manifest_block *b, qs_error *err);
const qs_manifest_block *qs_manifest_find(const qs_manifest *m, int block);

/* Compares two fingerprints. 0 when equal; otherwise 1 and what[] describes the first difference
 * as "key.path: OLD -> NEW" (values shortened). */
int qs_fingerprint_diff(const char *old_json, const char *new_json, char *what, size_t what_len);

#endif
