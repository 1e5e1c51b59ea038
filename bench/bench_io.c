/* bench/bench_io.c - loader throughput vs a raw io_uring O_DIRECT sequential read.
 *
 * usage: bench_io MODEL_DIR [--repeat N]
 * Baseline: every safetensors file of the model read whole, sequentially, with io_uring,
 * O_DIRECT, 1 MiB requests, 32 in flight. Loader: the model read block by block (the tensors of
 * model.layers.N, then the rest) through qs_reader, as the pipeline's LOAD stage does. Both bypass
 * the page cache (O_DIRECT), so both are cold reads of the same bytes. Prints MB/s of each and the
 * ratio loader / raw (target >= 0.9). */
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "io/reader.h"
#include "io/safetensors.h"

static double raw_read(const char *path, size_t *bytes_out) {
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); exit(1); }
    off_t size = lseek(fd, 0, SEEK_END);
    const unsigned qd = 32;
    const size_t req = 1u << 20;
    char *buf = qs_reader_slab_alloc(req * qd);
    struct io_uring ring;
    if (io_uring_queue_init(qd, &ring, 0) < 0) { fprintf(stderr, "io_uring unavailable\n"); exit(1); }
    double t0 = qs_now();
    off_t next = 0;
    unsigned inflight = 0;
    size_t done = 0;
    int slot_free[32];
    for (unsigned i = 0; i < qd; i++) slot_free[i] = 1;
    while (next < size || inflight) {
        while (inflight < qd && next < size) {
            unsigned s = 0;
            while (!slot_free[s]) s++;
            slot_free[s] = 0;
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, fd, buf + s * req, (unsigned)req, (uint64_t)next);
            io_uring_sqe_set_data(sqe, (void *)(uintptr_t)s);
            next += (off_t)req;
            inflight++;
        }
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            if (cqe->res < 0) { fprintf(stderr, "%s: read failed\n", path); exit(1); }
            done += (size_t)cqe->res;
            slot_free[(uintptr_t)io_uring_cqe_get_data(cqe)] = 1;
            io_uring_cqe_seen(&ring, cqe);
            inflight--;
        }
    }
    double t = qs_now() - t0;
    io_uring_queue_exit(&ring);
    free(buf);
    close(fd);
    *bytes_out = done;
    return t;
}

/* block index of a tensor name: N for model.layers.N.*, -1 for the rest */
static int block_of(const char *name) {
    const char *p = strstr(name, "layers.");
    return p ? atoi(p + 7) : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_io MODEL_DIR [--repeat N]\n");
        return 2;
    }
    int repeat = argc > 3 && !strcmp(argv[2], "--repeat") ? atoi(argv[3]) : 3;
    qs_catalog *c;
    qs_error err = {0};
    if (qs_catalog_open(&c, argv[1], &err)) {
        fprintf(stderr, "bench_io: %s\n", err.msg);
        return 1;
    }
    size_t nf = qs_catalog_file_count(c), nt = qs_catalog_count(c);
    const char **paths = malloc(sizeof(char *) * nf);
    for (size_t i = 0; i < nf; i++) paths[i] = qs_catalog_file_path(c, (int)i);
    int max_block = -1;
    for (size_t i = 0; i < nt; i++) {
        int b = block_of(qs_catalog_at(c, i)->name);
        if (b > max_block) max_block = b;
    }
    qs_reader *r;
    if (qs_reader_open(&r, paths, (int)nf, NULL, &err)) {
        fprintf(stderr, "bench_io: %s\n", err.msg);
        return 1;
    }
    qs_read_range *rs = calloc(nt, sizeof *rs);
    double best_raw = 1e30, best_loader = 1e30;
    size_t raw_bytes = 0, loader_bytes = 0;
    for (int rep = 0; rep < 2 * repeat; rep++) {
        /* alternate which goes first, so neither profits from caches below the page cache
         * (O_DIRECT bypasses ours; a virtual disk's host may still cache) */
        if ((rep & 1) == (rep / 2 & 1)) {
            double t_raw = 0;
            raw_bytes = 0;
            for (size_t i = 0; i < nf; i++) {
                size_t b;
                t_raw += raw_read(paths[i], &b);
                raw_bytes += b;
            }
            if (t_raw < best_raw) best_raw = t_raw;
            continue;
        }
        double t0 = qs_now();
        loader_bytes = 0;
        for (int blk = -1; blk <= max_block; blk++) {
            size_t n = 0;
            for (size_t i = 0; i < nt; i++) {
                const qs_tensor_info *t = qs_catalog_at(c, i);
                if (block_of(t->name) != blk) continue;
                rs[n++] = (qs_read_range){.file = t->file_index, .offset = t->offset, .len = t->nbytes, .what = t->name};
            }
            size_t bytes = qs_reader_slab_bytes(r, rs, n);
            void *slab = qs_reader_slab_alloc(bytes);
            if (qs_reader_read(r, rs, n, slab, bytes, &err)) {
                fprintf(stderr, "bench_io: %s\n", err.msg);
                return 1;
            }
            loader_bytes += qs_reader_last_bytes(r);
            free(slab);
        }
        double t_loader = qs_now() - t0;
        if (t_loader < best_loader) best_loader = t_loader;
    }
    double raw_mbs = (double)raw_bytes / best_raw / 1e6, ld_mbs = (double)loader_bytes / best_loader / 1e6;
    printf("bench_io: %s, %zu files, %d blocks, mode %s\n", argv[1], nf, max_block + 1,
           qs_reader_mode_name(qs_reader_get_mode(r)));
    printf("raw io_uring O_DIRECT sequential: %.1f MB in %.3f s = %.1f MB/s\n", raw_bytes / 1e6, best_raw, raw_mbs);
    printf("loader, block by block:           %.1f MB in %.3f s = %.1f MB/s\n", loader_bytes / 1e6, best_loader, ld_mbs);
    printf("ratio loader/raw: %.3f (best of %d)\n", ld_mbs / raw_mbs, repeat);
    free(rs);
    free(paths);
    qs_reader_close(r);
    qs_catalog_free(c);
    return 0;
}
