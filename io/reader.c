/* io/reader.c - see io/reader.h. */
#include "io/reader.h"

#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define A ((uint64_t)QS_READER_ALIGN)
#define ALIGN_DOWN(x) ((x) & ~(A - 1))
#define ALIGN_UP(x) (((x) + A - 1) & ~(A - 1))

struct qs_reader {
    int n_files;
    int *fds;          /* [n_files] */
    int *direct;       /* [n_files] 1 when the fd has O_DIRECT */
    uint64_t *sizes;   /* [n_files] */
    char **paths;      /* [n_files] owned copies */
    qs_reader_mode mode;
    struct io_uring ring;
    int ring_ok;
    unsigned qd;
    size_t req;
    qs_reader_opts opts;
    void *reg_slab;    /* registered fixed buffer, or NULL */
    size_t reg_bytes;
    unsigned completions; /* for fault injection */
    uint64_t last_bytes;
};

/* one read request: a piece of an extent; re-queued in place after a short read */
typedef struct chunk {
    int file;
    uint64_t off;      /* file offset of the next byte to read */
    size_t len;        /* bytes still to read */
    char *dst;
    uint64_t need_end; /* the read is complete once off reaches this (EOF-clipped) */
} chunk;

typedef struct extent {
    int file;
    uint64_t start, end; /* aligned file range */
    size_t slab_off;
} extent;

const char *qs_reader_mode_name(qs_reader_mode m) {
    switch (m) {
    case QS_READER_MODE_URING_DIRECT: return "io_uring+O_DIRECT";
    case QS_READER_MODE_URING_BUFFERED: return "io_uring";
    default: return "pread";
    }
}

qs_reader_mode qs_reader_get_mode(const qs_reader *r) { return r->mode; }
uint64_t qs_reader_file_size(const qs_reader *r, int file) { return r->sizes[file]; }
uint64_t qs_reader_last_bytes(const qs_reader *r) { return r->last_bytes; }

void *qs_reader_slab_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, QS_READER_ALIGN, bytes ? ALIGN_UP(bytes) : A) != 0) return NULL;
    return p;
}

void qs_reader_close(qs_reader *r) {
    if (!r) return;
    if (r->ring_ok) io_uring_queue_exit(&r->ring);
    for (int i = 0; i < r->n_files; i++) {
        if (r->fds && r->fds[i] >= 0) close(r->fds[i]);
        if (r->paths) free(r->paths[i]);
    }
    free(r->fds);
    free(r->direct);
    free(r->sizes);
    free(r->paths);
    free(r);
}

/* Opens path with O_DIRECT when allowed and a probe read succeeds; else buffered. */
static int open_file(qs_reader *r, int i, const char *path, qs_error *err) {
    int fd = -1;
    uint64_t size = 0;
    r->direct[i] = 0;
    if (!r->opts.no_direct) {
        fd = qs_file_open_read(path, O_DIRECT, &size, NULL);
        if (fd >= 0) {
            void *probe = qs_reader_slab_alloc(A);
            ssize_t n = probe ? pread(fd, probe, A, 0) : -1;
            free(probe);
            if (n < 0) { /* e.g. EINVAL: the filesystem refuses direct reads */
                close(fd);
                fd = -1;
            } else {
                r->direct[i] = 1;
            }
        }
    }
    if (fd < 0) fd = qs_file_open_read(path, 0, &size, err);
    if (fd < 0) return fd;
    r->fds[i] = fd;
    r->sizes[i] = size;
    return 0;
}

int qs_reader_open(qs_reader **out, const char *const *paths, int n_files,
                   const qs_reader_opts *opts, qs_error *err) {
    *out = NULL;
    qs_reader *r = calloc(1, sizeof *r);
    if (!r) return qs_error_set(err, -ENOMEM, "out of memory");
    if (opts) r->opts = *opts;
    r->qd = r->opts.queue_depth ? r->opts.queue_depth : 32;
    r->req = r->opts.request_bytes ? ALIGN_UP(r->opts.request_bytes) : (1u << 20);
    if (r->req > (1u << 30)) r->req = 1u << 30;
    r->n_files = n_files;
    r->fds = malloc(sizeof(int) * (size_t)n_files);
    r->direct = calloc((size_t)n_files, sizeof(int));
    r->sizes = calloc((size_t)n_files, sizeof(uint64_t));
    r->paths = calloc((size_t)n_files, sizeof(char *));
    if (!r->fds || !r->direct || !r->sizes || !r->paths) {
        r->n_files = 0;
        qs_reader_close(r);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < n_files; i++) r->fds[i] = -1;
    int all_direct = 1;
    for (int i = 0; i < n_files; i++) {
        r->paths[i] = strdup(paths[i]);
        int rc = r->paths[i] ? open_file(r, i, paths[i], err)
                             : qs_error_set(err, -ENOMEM, "out of memory");
        if (rc) {
            qs_reader_close(r);
            return rc;
        }
        all_direct &= r->direct[i];
    }
    if (!all_direct && !r->opts.no_direct && !r->opts.quiet)
        fprintf(stderr, "qstream: notice: O_DIRECT refused for %s, using buffered reads\n",
                n_files ? paths[0] : "?");
    r->mode = all_direct ? QS_READER_MODE_URING_DIRECT : QS_READER_MODE_URING_BUFFERED;
    if (r->opts.no_uring) {
        r->mode = QS_READER_MODE_PREAD;
    } else {
        int rc = io_uring_queue_init(r->qd, &r->ring, 0);
        if (rc < 0) {
            if (!r->opts.quiet)
                fprintf(stderr, "qstream: notice: io_uring unavailable (%s), reading with pread\n",
                        strerror(-rc));
            r->mode = QS_READER_MODE_PREAD;
        } else {
            r->ring_ok = 1;
        }
    }
    *out = r;
    return 0;
}

int qs_reader_register_slab(qs_reader *r, void *slab, size_t bytes) {
    if (!r->ring_ok) return -ENOTSUP;
    if (r->reg_slab) {
        io_uring_unregister_buffers(&r->ring);
        r->reg_slab = NULL;
    }
    struct iovec iov = {.iov_base = slab, .iov_len = bytes};
    int rc = io_uring_register_buffers(&r->ring, &iov, 1);
    if (rc < 0) return rc;
    r->reg_slab = slab;
    r->reg_bytes = bytes;
    return 0;
}

/* a range's sort key, (file, offset), with its index: qsort has no context argument in C11, and a global one
 * would race (the loader and the calibration spill plan reads on two threads at once) */
typedef struct range_key {
    int file;
    uint64_t offset;
    size_t i;
} range_key;
static int cmp_range(const void *a, const void *b) {
    const range_key *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i; /* ties by index: one order on every run */
}

/* Builds merged aligned extents; returns their count (or -ENOMEM); *order is the sorted index. */
static long plan(const qs_read_range *ranges, size_t n, extent **ext_out, size_t **order_out) {
    size_t *order = malloc(sizeof(size_t) * (n ? n : 1));
    extent *ext = malloc(sizeof(extent) * (n ? n : 1));
    range_key *keys = malloc(sizeof(range_key) * (n ? n : 1));
    if (!order || !ext || !keys) {
        free(order);
        free(ext);
        free(keys);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) keys[i] = (range_key){ranges[i].file, ranges[i].offset, i};
    qsort(keys, n, sizeof *keys, cmp_range);
    for (size_t i = 0; i < n; i++) order[i] = keys[i].i;
    free(keys);
    long ne = 0;
    size_t slab = 0;
    for (size_t k = 0; k < n; k++) {
        const qs_read_range *q = &ranges[order[k]];
        if (q->len == 0) continue;
        uint64_t s = ALIGN_DOWN(q->offset), e = ALIGN_UP(q->offset + q->len);
        if (ne && ext[ne - 1].file == q->file && s <= ext[ne - 1].end) {
            if (e > ext[ne - 1].end) {
                slab += e - ext[ne - 1].end;
                ext[ne - 1].end = e;
            }
            continue;
        }
        ext[ne] = (extent){.file = q->file, .start = s, .end = e, .slab_off = slab};
        slab += e - s;
        ne++;
    }
    *ext_out = ext;
    *order_out = order;
    return ne;
}

size_t qs_reader_slab_bytes(const qs_reader *r, const qs_read_range *ranges, size_t n) {
    (void)r;
    extent *ext;
    size_t *order;
    long ne = plan(ranges, n, &ext, &order);
    if (ne < 0) return SIZE_MAX;
    size_t total = ne ? ext[ne - 1].slab_off + (ext[ne - 1].end - ext[ne - 1].start) : 0;
    free(ext);
    free(order);
    return total;
}

/* the name of the first range that overlaps c's remaining bytes, for error messages */
static const char *range_name(const qs_read_range *ranges, size_t n, const chunk *c) {
    for (size_t i = 0; i < n; i++)
        if (ranges[i].file == c->file && ranges[i].offset < c->off + c->len &&
            ranges[i].offset + ranges[i].len > c->off)
            return ranges[i].what ? ranges[i].what : "?";
    return "?";
}

/* Applies one completion result: 0 done, 1 resubmit the (updated) chunk, < 0 error. */
static int complete(qs_reader *r, chunk *c, long res, const qs_read_range *ranges, size_t n,
                    qs_error *err) {
    r->completions++;
    if (r->opts.inject_eio_at && r->completions == r->opts.inject_eio_at) res = -EIO;
    if (r->opts.inject_short_every && r->completions % r->opts.inject_short_every == 0 && res > 1) {
        long cut = res / 2;
        if (r->direct[c->file]) cut = (long)ALIGN_DOWN((uint64_t)cut);
        if (cut > 0) res = cut;
    }
    if (res == -EAGAIN || res == -EINTR) return 1;
    if (res < 0)
        return qs_error_errno(err, (int)-res, "%s: tensor '%s': read of %zu bytes at offset %llu failed",
                              r->paths[c->file], range_name(ranges, n, c), c->len,
                              (unsigned long long)c->off);
    uint64_t got = (uint64_t)res;
    if (c->off + got >= c->need_end) return 0;
    if (got == 0)
        return qs_error_set(err, QS_EFORMAT, "%s: tensor '%s': file ends at byte %llu, expected %llu (truncated?)",
                            r->paths[c->file], range_name(ranges, n, c), (unsigned long long)c->off,
                            (unsigned long long)c->need_end);
    if (r->direct[c->file]) got = ALIGN_DOWN(got); /* direct reads resume on a block boundary */
    c->off += got;
    c->dst += got;
    c->len -= (size_t)got;
    return 1;
}

static int run_pread(qs_reader *r, chunk *chunks, size_t nc, const qs_read_range *ranges, size_t n,
                     qs_error *err) {
    for (size_t i = 0; i < nc; i++) {
        chunk *c = &chunks[i];
        for (;;) {
            ssize_t got = pread(r->fds[c->file], c->dst, c->len, (off_t)c->off);
            int rc = complete(r, c, got < 0 ? -errno : (long)got, ranges, n, err);
            if (rc <= 0) {
                if (rc < 0) return rc;
                break;
            }
        }
    }
    return 0;
}

static void prep(qs_reader *r, chunk *c) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    char *base = r->reg_slab;
    if (base && c->dst >= base && c->dst + c->len <= base + r->reg_bytes)
        io_uring_prep_read_fixed(sqe, r->fds[c->file], c->dst, (unsigned)c->len, c->off, 0);
    else
        io_uring_prep_read(sqe, r->fds[c->file], c->dst, (unsigned)c->len, c->off);
    io_uring_sqe_set_data(sqe, c);
}

static int run_uring(qs_reader *r, chunk *chunks, size_t nc, const qs_read_range *ranges, size_t n,
                     qs_error *err) {
    chunk **retry = malloc(sizeof(chunk *) * (nc ? nc : 1));
    if (!retry) return qs_error_set(err, -ENOMEM, "out of memory");
    size_t next = 0, n_retry = 0;
    unsigned inflight = 0;
    int first_err = 0;
    while (inflight > 0 || (!first_err && (next < nc || n_retry > 0))) {
        unsigned queued = 0;
        while (!first_err && inflight + queued < r->qd && (n_retry > 0 || next < nc)) {
            chunk *c = n_retry ? retry[--n_retry] : &chunks[next++];
            prep(r, c);
            queued++;
        }
        inflight += queued;
        int rc = io_uring_submit_and_wait(&r->ring, 1);
        if (rc < 0 && rc != -EINTR) {
            /* the kernel refused the submission: wait for what is already in flight, drop the
             * ring (its unsubmitted entries with it) and finish with pread */
            inflight -= queued;
            while (inflight > 0) {
                struct io_uring_cqe *w;
                if (io_uring_wait_cqe(&r->ring, &w) == 0) io_uring_cqe_seen(&r->ring, w);
                inflight--;
            }
            io_uring_queue_exit(&r->ring);
            r->ring_ok = 0;
            r->reg_slab = NULL;
            r->mode = QS_READER_MODE_PREAD;
            if (!r->opts.quiet)
                fprintf(stderr, "qstream: notice: io_uring submit failed (%s), reading with pread\n",
                        strerror(-rc));
            free(retry);
            return first_err ? first_err : run_pread(r, chunks, nc, ranges, n, err);
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe) {
            chunk *c = io_uring_cqe_get_data(cqe);
            int res = cqe->res;
            seen++;
            inflight--;
            if (first_err) continue; /* drain: buffers stay borrowed until every read is back */
            int crc = complete(r, c, res, ranges, n, err);
            if (crc < 0) first_err = crc;
            else if (crc == 1) retry[n_retry++] = c;
        }
        io_uring_cq_advance(&r->ring, seen);
    }
    free(retry);
    return first_err;
}

int qs_reader_read(qs_reader *r, qs_read_range *ranges, size_t n, void *slab, size_t slab_bytes,
                   qs_error *err) {
    for (size_t i = 0; i < n; i++) {
        const qs_read_range *q = &ranges[i];
        QS_RETURN_ERROR_IF(q->file < 0 || q->file >= r->n_files, -EINVAL,
                           "tensor '%s': file index %d out of range", q->what ? q->what : "?", q->file);
        QS_RETURN_ERROR_IF(q->offset > r->sizes[q->file] || q->len > r->sizes[q->file] - q->offset,
                           QS_EFORMAT,
                           "%s: tensor '%s': bytes [%llu, %llu) lie past the end of the file (%llu bytes): truncated?",
                           r->paths[q->file], q->what ? q->what : "?", (unsigned long long)q->offset,
                           (unsigned long long)(q->offset + q->len), (unsigned long long)r->sizes[q->file]);
    }
    extent *ext;
    size_t *order;
    long ne = plan(ranges, n, &ext, &order);
    if (ne < 0) return qs_error_set(err, -ENOMEM, "out of memory");
    size_t need = ne ? ext[ne - 1].slab_off + (ext[ne - 1].end - ext[ne - 1].start) : 0;
    if (need > slab_bytes || ((uintptr_t)slab & (A - 1))) {
        free(ext);
        free(order);
        return qs_error_set(err, -EINVAL, "reader: slab of %zu bytes (needs %zu, %u-aligned)",
                            slab_bytes, need, QS_READER_ALIGN);
    }
    /* hand out the exact slices: walk ranges in sorted order alongside the extents */
    long e = -1;
    for (size_t k = 0; k < n; k++) {
        qs_read_range *q = &ranges[order[k]];
        if (q->len == 0) {
            q->data = slab;
            continue;
        }
        while (e < 0 || ext[e].file != q->file || q->offset + q->len > ext[e].end) e++;
        q->data = (char *)slab + ext[e].slab_off + (q->offset - ext[e].start);
    }
    size_t nc = 0;
    for (long i = 0; i < ne; i++) nc += (size_t)((ext[i].end - ext[i].start + r->req - 1) / r->req);
    chunk *chunks = malloc(sizeof(chunk) * (nc ? nc : 1));
    if (!chunks) {
        free(ext);
        free(order);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    size_t ci = 0;
    r->last_bytes = 0;
    for (long i = 0; i < ne; i++) {
        uint64_t fsz = r->sizes[ext[i].file];
        for (uint64_t off = ext[i].start; off < ext[i].end; off += r->req) {
            uint64_t len = ext[i].end - off < r->req ? ext[i].end - off : r->req;
            uint64_t need_end = off + len < fsz ? off + len : fsz;
            chunks[ci++] = (chunk){.file = ext[i].file, .off = off, .len = (size_t)len,
                                   .dst = (char *)slab + ext[i].slab_off + (off - ext[i].start),
                                   .need_end = need_end};
            r->last_bytes += need_end > off ? need_end - off : 0;
        }
    }
    int rc = r->mode == QS_READER_MODE_PREAD ? run_pread(r, chunks, nc, ranges, n, err)
                                             : run_uring(r, chunks, nc, ranges, n, err);
    free(chunks);
    free(ext);
    free(order);
    return rc;
}
