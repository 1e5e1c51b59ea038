/* io/reader.h - batched reads of byte ranges (tensors) of one or more files into one aligned
 * slab: io_uring with many reads in flight, O_DIRECT where the filesystem allows it,
 * registered buffers; buffered pread as the fallback.
 *
 * safetensors data offsets are not aligned. The reader reads the aligned superset of each
 * range (ranges of one file that touch after alignment are merged into one extent) into the
 * slab and hands out a pointer to the exact bytes inside it: no extra copy.
 *
 * Modes, chosen at open: io_uring + O_DIRECT; io_uring buffered (O_DIRECT refused, e.g. tmpfs);
 * pread (io_uring unavailable: ENOSYS / EPERM / disabled by sysctl). Each fallback prints one
 * notice line to stderr. Short reads are resubmitted; EIO and truncated files are errors that
 * name the file and the tensor. */
#ifndef QS_IO_READER_H
#define QS_IO_READER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define QS_READER_ALIGN 4096u

typedef struct qs_reader_opts {
    unsigned queue_depth;   /* reads in flight; 0 = 32 */
    size_t request_bytes;   /* bytes per read request; 0 = 1 MiB (rounded up to 4096) */
    int no_direct;          /* 1: never O_DIRECT */
    int no_uring;           /* 1: pread only */
    int quiet;              /* 1: no fallback notices */
    /* fault injection, for tests only: every Nth completion is cut short to half its bytes;
     * the Nth completion (1-based) fails with EIO */
    unsigned inject_short_every;
    unsigned inject_eio_at;
} qs_reader_opts;

typedef enum qs_reader_mode {
    QS_READER_MODE_URING_DIRECT = 0,
    QS_READER_MODE_URING_BUFFERED,
    QS_READER_MODE_PREAD
} qs_reader_mode;

typedef struct qs_read_range {
    int file;          /* index into the paths given at open */
    uint64_t offset;   /* absolute byte offset in the file */
    uint64_t len;      /* bytes */
    const char *what;  /* name for errors (tensor name); borrowed */
    const void *data;  /* out: the exact bytes, inside the slab */
} qs_read_range;

typedef struct qs_reader qs_reader;

/* Opens every file (O_DIRECT when allowed) and sets up the ring. opts may be NULL. */
int qs_reader_open(qs_reader **out, const char *const *paths, int n_files,
                   const qs_reader_opts *opts, qs_error *err);
void qs_reader_close(qs_reader *r); /* NULL is fine */
qs_reader_mode qs_reader_get_mode(const qs_reader *r);
const char *qs_reader_mode_name(qs_reader_mode m);
uint64_t qs_reader_file_size(const qs_reader *r, int file);

/* Slab bytes needed to read ranges (aligned supersets, merged per file). */
size_t qs_reader_slab_bytes(const qs_reader *r, const qs_read_range *ranges, size_t n);

/* Allocates a QS_READER_ALIGN-aligned slab (free with free()). */
void *qs_reader_slab_alloc(size_t bytes);

/* Registers slab as a fixed buffer for the ring (optional; reads then use READ_FIXED).
 * Only one slab at a time; a new call replaces the old one. Returns 0 or -errno (the reader
 * then keeps working without registered buffers). */
int qs_reader_register_slab(qs_reader *r, void *slab, size_t bytes);

/* Reads every range into slab (slab_bytes >= qs_reader_slab_bytes) and sets ranges[i].data.
 * ranges may be in any order and may overlap. Blocks until all reads finish. */
int qs_reader_read(qs_reader *r, qs_read_range *ranges, size_t n, void *slab, size_t slab_bytes,
                   qs_error *err);

/* Bytes read from disk by the last qs_reader_read (aligned supersets). */
uint64_t qs_reader_last_bytes(const qs_reader *r);

#endif
