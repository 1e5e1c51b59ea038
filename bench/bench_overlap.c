/* bench/bench_overlap.c - how well the three-stage pipeline overlaps its stages.
 *
 * usage: bench_overlap MODEL_DIR OUT_DIR [--compute-ms MS] [--slots N]
 * LOAD reads block k's tensors through qs_reader (O_DIRECT io_uring); COMPUTE busy-waits a known
 * time (default: the mean load time measured first, the hardest balance to overlap); STORE writes
 * the block's bytes durably (temp file, fsync, rename) into OUT_DIR. Ideal wall time is the sum over
 * blocks of the slowest stage of that block; prints ideal / measured (target >= 0.9). The first
 * load and the last store cannot be hidden, so with N balanced blocks the best is about N/(N+2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "io/reader.h"
#include "io/safetensors.h"
#include "pipeline/engine.h"

typedef struct slot {
    void *slab;
    size_t cap, used;
} slot;

typedef struct ctx {
    qs_catalog *cat;
    qs_reader *reader;
    qs_read_range *ranges;
    size_t nt;
    double compute_s;
    const char *out;
} ctx;

static int block_of(const char *name) {
    const char *p = strstr(name, "layers.");
    return p ? atoi(p + 7) : -1;
}

static size_t block_ranges(ctx *c, int blk, qs_read_range *rs) {
    size_t n = 0;
    for (size_t i = 0; i < c->nt; i++) {
        const qs_tensor_info *t = qs_catalog_at(c->cat, i);
        if (block_of(t->name) == blk)
            rs[n++] = (qs_read_range){.file = t->file_index, .offset = t->offset, .len = t->nbytes, .what = t->name};
    }
    return n;
}

static int load(void *c_, int blk, void *s_, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    size_t n = block_ranges(c, blk, c->ranges);
    s->used = qs_reader_slab_bytes(c->reader, c->ranges, n);
    if (s->used > s->cap) return qs_error_set(err, -1, "block %d needs %zu bytes > slot %zu", blk, s->used, s->cap);
    return qs_reader_read(c->reader, c->ranges, n, s->slab, s->cap, err);
}

static int compute(void *c_, int blk, void *s_, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    double t0 = qs_now();
    volatile unsigned acc = 0;
    while (qs_now() - t0 < c->compute_s)
        for (size_t i = 0; i < s->used; i += 4096) acc += ((unsigned char *)s->slab)[i];
    (void)acc;
    (void)blk;
    (void)err;
    return 0;
}

static int store(void *c_, int blk, void *s_, const qs_block_times *t, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    char name[64];
    snprintf(name, sizeof name, "block-%04d.bin", blk);
    char *path = qs_path_join(c->out, name);
    int rc = qs_file_write_durable(path, s->slab, s->used, err);
    free(path);
    (void)t;
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_overlap MODEL_DIR OUT_DIR [--compute-ms MS] [--slots N]\n");
        return 2;
    }
    double compute_ms = -1;
    size_t n_slots = 3;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--compute-ms")) compute_ms = atof(argv[i + 1]);
        if (!strcmp(argv[i], "--slots")) n_slots = (size_t)atoi(argv[i + 1]);
    }
    qs_error err = {0};
    ctx c = {.out = argv[2]};
    if (qs_catalog_open(&c.cat, argv[1], &err) || qs_mkdir_p(argv[2], &err)) {
        fprintf(stderr, "bench_overlap: %s\n", err.msg);
        return 1;
    }
    c.nt = qs_catalog_count(c.cat);
    size_t nf = qs_catalog_file_count(c.cat);
    const char **paths = malloc(sizeof(char *) * nf);
    for (size_t i = 0; i < nf; i++) paths[i] = qs_catalog_file_path(c.cat, (int)i);
    if (qs_reader_open(&c.reader, paths, (int)nf, NULL, &err)) {
        fprintf(stderr, "bench_overlap: %s\n", err.msg);
        return 1;
    }
    c.ranges = calloc(c.nt, sizeof *c.ranges);
    int n_blocks = 0;
    size_t cap = 0;
    for (size_t i = 0; i < c.nt; i++) {
        int b = block_of(qs_catalog_at(c.cat, i)->name);
        if (b + 1 > n_blocks) n_blocks = b + 1;
    }
    for (int b = 0; b < n_blocks; b++) {
        size_t n = block_ranges(&c, b, c.ranges);
        size_t need = qs_reader_slab_bytes(c.reader, c.ranges, n);
        if (need > cap) cap = need;
    }
    slot slots[8];
    void *ptrs[8];
    if (n_slots < 1 || n_slots > 8) n_slots = 3;
    for (size_t i = 0; i < n_slots; i++) {
        slots[i] = (slot){.slab = qs_reader_slab_alloc(cap), .cap = cap};
        ptrs[i] = &slots[i];
    }
    if (compute_ms < 0) { /* measure the mean load time */
        double t0 = qs_now();
        for (int b = 0; b < n_blocks; b++) load(&c, b, &slots[0], &err);
        compute_ms = 1000.0 * (qs_now() - t0) / n_blocks;
    }
    c.compute_s = compute_ms / 1000.0;
    qs_pipeline_stages st = {.ctx = &c, .load = load, .compute = compute, .store = store};
    qs_block_times *times = calloc((size_t)n_blocks, sizeof *times);
    qs_pipeline_stats stats;
    if (qs_pipeline_run(&st, 0, n_blocks, ptrs, n_slots, times, &stats, &err)) {
        fprintf(stderr, "bench_overlap: %s\n", err.msg);
        return 1;
    }
    double ideal = 0, serial = 0;
    for (int b = 0; b < n_blocks; b++) {
        double m = times[b].load;
        if (times[b].compute > m) m = times[b].compute;
        if (times[b].store > m) m = times[b].store;
        ideal += m;
        serial += times[b].load + times[b].compute + times[b].store;
    }
    printf("bench_overlap: %d blocks of %.1f MB, %zu slots, compute %.1f ms/block\n", n_blocks,
           cap / 1e6, n_slots, compute_ms);
    printf("sum of stages (no overlap) %.3f s; ideal (slowest stage per block) %.3f s; measured %.3f s\n",
           serial, ideal, stats.seconds);
    printf("ratio ideal/measured: %.3f\n", ideal / stats.seconds);
    for (size_t i = 0; i < n_slots; i++) free(slots[i].slab);
    free(times);
    free(c.ranges);
    free(paths);
    qs_reader_close(c.reader);
    qs_catalog_free(c.cat);
    return 0;
}
