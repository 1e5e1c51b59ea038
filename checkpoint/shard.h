/* checkpoint/shard.h - the block shard file (blocks/block-NNNN.qsh).
 *
 * Little-endian layout:
 *   magic "QSHARD01" (8 bytes) | u32 header_len | header: JSON, UTF-8 (header_len bytes)
 *   frames: one zstd frame per tensor, each starting at a 4096-byte-aligned offset (zero padding)
 *   footer: u64 XXH3-64 of every byte before the footer | magic "QSEND001"
 * Header: {"format": 1, "block": N, "meta": {...method parameters, caller's JSON...},
 *          "tensors": [{"name", "role", "dtype", "shape", "offset", "csize", "size",
 *                       "shuffle": 0|1, "xxh3": "16 hex digits of the raw bytes"}]}
 * Float tensors (F32/F16/BF16) are byte-shuffled (byte planes, as Blosc does) before zstd;
 * integer codes are stored as they are. Hashes are written as 16 lower-case hex digits of the
 * canonical (big-endian) XXH3-64 value. A shard holds no timings or other run-dependent bytes:
 * the same inputs give the same file. */
#ifndef QS_CHECKPOINT_SHARD_H
#define QS_CHECKPOINT_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "io/dtype.h"

#define QS_SHARD_MAGIC "QSHARD01"
#define QS_SHARD_END_MAGIC "QSEND001"
#define QS_SHARD_ALIGN 4096u
#define QS_SHARD_MAX_HEADER (64u << 20)
#define QS_SHARD_MAX_DIMS 8

typedef struct qs_shard_tensor {
    const char *name;
    const char *role;   /* "codes", "scales", "zeros", "norm", "weight", "reassembly", ... */
    qs_dtype dtype;
    int n_dims;
    int64_t shape[QS_SHARD_MAX_DIMS];
    const void *data;   /* shape x dtype size bytes; borrowed */
} qs_shard_tensor;

typedef struct qs_shard_opts {
    int zstd_level;   /* 0 = 3 */
    int zstd_threads; /* 0 = single-threaded */
} qs_shard_opts;

typedef struct qs_shard_write_info {
    uint64_t file_bytes;
    uint64_t file_xxh3;  /* XXH3-64 of the whole file, as the manifest records it */
    uint64_t raw_bytes, compressed_bytes;
} qs_shard_write_info;

/* Writes a shard durably (PATH.tmp, fsync, rename, fsync of the directory). meta_json is a JSON
 * object (text) stored under "meta", or NULL. On error nothing is left at path. */
int qs_shard_write(const char *path, int block, const char *meta_json, const qs_shard_tensor *tensors,
                   size_t n, const qs_shard_opts *opts, qs_shard_write_info *info, qs_error *err);

typedef struct qs_shard_entry {
    char *name;
    char *role;
    qs_dtype dtype;
    int n_dims;
    int64_t shape[QS_SHARD_MAX_DIMS];
    uint64_t offset, csize, size; /* frame offset and compressed size in the file; raw size */
    int shuffle;
    uint64_t xxh3;                /* of the raw bytes */
} qs_shard_entry;

typedef struct qs_shard qs_shard;

/* Opens and validates the header and the frame table (magic, lengths, frames inside the file,
 * aligned and not overlapping, sizes consistent with shapes). Does not hash the file. */
int qs_shard_open(qs_shard **out, const char *path, qs_error *err);
/* The same on a memory image (fuzzer); data must outlive the shard. */
int qs_shard_open_memory(qs_shard **out, const void *data, size_t size, const char *name_for_errors,
                         qs_error *err);
void qs_shard_close(qs_shard *s); /* NULL is fine */

int qs_shard_block(const qs_shard *s);
const char *qs_shard_meta_json(const qs_shard *s); /* the "meta" object as compact JSON text */
size_t qs_shard_count(const qs_shard *s);
const qs_shard_entry *qs_shard_at(const qs_shard *s, size_t i);
const qs_shard_entry *qs_shard_find(const qs_shard *s, const char *name);

/* Decompresses tensor i into dst (entry->size bytes), unshuffles, and checks its hash.
 * QS_ECHECKSUM names the file, block and tensor when the bytes are damaged. */
int qs_shard_read(const qs_shard *s, size_t i, void *dst, qs_error *err);

/* Checks the footer hash of the whole file and every tensor's hash. 0 when intact; otherwise
 * QS_ECHECKSUM / QS_EFORMAT with a message naming the file, block and tensor. */
int qs_shard_verify(const qs_shard *s, qs_error *err);
/* XXH3-64 of the whole file, as the manifest records it. */
uint64_t qs_shard_file_xxh3(const qs_shard *s);

#endif
