/* tests/test_reader.c - the io_uring range reader against pread: unaligned and overlapping
 * ranges over two files, every mode (io_uring + O_DIRECT, io_uring buffered, pread), tmpfs
 * (O_DIRECT refused), injected short reads and EIO, truncated files; two threads planning reads
 * at once (the loader and the calibration spill do); and every tensor of
 * stories260k and of the default model read through the reader equals the catalogue's pread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "io/reader.h"
#include "io/safetensors.h"
#include "tests/testutil.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void write_random_file(const char *path, size_t n) {
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next_rand();
    qs_error err = {0};
    if (qs_file_write_durable(path, b, n, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    free(b);
}

static int expect_equal(const char *const *paths, qs_read_range *rs, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rs[i].len) continue;
        uint8_t *want = malloc(rs[i].len);
        int fd = open(paths[rs[i].file], O_RDONLY);
        ssize_t got = pread(fd, want, rs[i].len, (off_t)rs[i].offset);
        close(fd);
        if (got != (ssize_t)rs[i].len || memcmp(want, rs[i].data, rs[i].len) != 0) {
            fprintf(stderr, "range %zu (%s) differs from pread\n", i, rs[i].what);
            bad++;
        }
        free(want);
    }
    return bad;
}

/* ranges over two files: unaligned, overlapping, adjacent, zero-length, up to the last byte */
static size_t make_ranges(qs_read_range *rs, uint64_t size0, uint64_t size1) {
    size_t n = 0;
    static const char *names[] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10", "t11"};
    rs[n++] = (qs_read_range){.file = 0, .offset = 8 + 123, .len = 1000, .what = names[0]};
    rs[n++] = (qs_read_range){.file = 0, .offset = 1131, .len = 5000, .what = names[1]};  /* adjacent */
    rs[n++] = (qs_read_range){.file = 0, .offset = 3000, .len = 777, .what = names[2]};   /* overlaps */
    rs[n++] = (qs_read_range){.file = 1, .offset = 4095, .len = 2, .what = names[3]};     /* spans a page */
    rs[n++] = (qs_read_range){.file = 0, .offset = size0 - 17, .len = 17, .what = names[4]}; /* last byte */
    rs[n++] = (qs_read_range){.file = 1, .offset = 100000, .len = 2100000, .what = names[5]}; /* many requests */
    rs[n++] = (qs_read_range){.file = 0, .offset = 50, .len = 0, .what = names[6]};
    rs[n++] = (qs_read_range){.file = 1, .offset = size1 - 1, .len = 1, .what = names[7]};
    rs[n++] = (qs_read_range){.file = 0, .offset = 1 << 20, .len = (1 << 20) + 3, .what = names[8]};
    return n;
}

static void check_mode(const char *const *paths, qs_reader_opts opts, const char *label,
                       int expect_mode) {
    qs_reader *r;
    qs_error err = {0};
    int rc = qs_reader_open(&r, paths, 2, &opts, &err);
    CHECKF(rc == 0, "%s: open: %s", label, err.msg);
    if (rc) return;
    if (expect_mode >= 0)
        CHECKF((int)qs_reader_get_mode(r) == expect_mode, "%s: mode %s", label,
               qs_reader_mode_name(qs_reader_get_mode(r)));
    qs_read_range rs[16];
    size_t n = make_ranges(rs, qs_reader_file_size(r, 0), qs_reader_file_size(r, 1));
    size_t bytes = qs_reader_slab_bytes(r, rs, n);
    void *slab = qs_reader_slab_alloc(bytes);
    if (opts.queue_depth == 4) CHECK(qs_reader_register_slab(r, slab, bytes) == 0);
    rc = qs_reader_read(r, rs, n, slab, bytes, &err);
    CHECKF(rc == 0, "%s: read: %s", label, err.msg);
    if (rc == 0) CHECKF(expect_equal(paths, rs, n) == 0, "%s", label);
    free(slab);
    qs_reader_close(r);
}

static void check_error(const char *const *paths, qs_reader_opts opts, qs_read_range *rs, size_t n,
                        const char *want1, const char *want2, const char *label) {
    qs_reader *r;
    qs_error err = {0};
    opts.quiet = 1;
    if (qs_reader_open(&r, paths, 2, &opts, &err)) {
        CHECKF(0, "%s: open: %s", label, err.msg);
        return;
    }
    size_t bytes = qs_reader_slab_bytes(r, rs, n);
    void *slab = qs_reader_slab_alloc(bytes);
    int rc = qs_reader_read(r, rs, n, slab, bytes, &err);
    CHECKF(rc < 0, "%s: expected an error", label);
    CHECKF(strstr(err.msg, want1) && strstr(err.msg, want2), "%s: message '%s' lacks '%s' / '%s'",
           label, err.msg, want1, want2);
    free(slab);
    qs_reader_close(r);
}

static void check_catalog(const char *model) {
    qs_catalog *c;
    qs_error err = {0};
    if (qs_catalog_open(&c, model, &err)) {
        CHECKF(0, "%s", err.msg);
        return;
    }
    size_t nf = qs_catalog_file_count(c), nt = qs_catalog_count(c);
    const char **paths = malloc(sizeof(char *) * nf);
    for (size_t i = 0; i < nf; i++) paths[i] = qs_catalog_file_path(c, (int)i);
    qs_read_range *rs = calloc(nt, sizeof *rs);
    for (size_t i = 0; i < nt; i++) {
        const qs_tensor_info *t = qs_catalog_at(c, i);
        rs[i] = (qs_read_range){.file = t->file_index, .offset = t->offset, .len = t->nbytes, .what = t->name};
    }
    qs_reader *r;
    CHECK(qs_reader_open(&r, paths, (int)nf, NULL, &err) == 0);
    size_t bytes = qs_reader_slab_bytes(r, rs, nt);
    void *slab = qs_reader_slab_alloc(bytes);
    CHECKF(qs_reader_read(r, rs, nt, slab, bytes, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < nt; i++) {
        const qs_tensor_info *t = qs_catalog_at(c, i);
        void *want = malloc(t->nbytes ? t->nbytes : 1);
        CHECK(qs_catalog_read_raw(c, t, want, &err) == 0);
        CHECKF(memcmp(want, rs[i].data, t->nbytes) == 0, "%s: tensor %s differs", model, t->name);
        free(want);
    }
    printf("%s: %zu tensors, %zu bytes through %s equal pread\n", model, nt, bytes,
           qs_reader_mode_name(qs_reader_get_mode(r)));
    free(slab);
    qs_reader_close(r);
    free(rs);
    free(paths);
    qs_catalog_free(c);
}

/* two threads plan reads at once (the loader's blocks, the calibration states' spill): each one's
 * slab size must stay its own. One lists its ranges in file order, the other in reverse, so a
 * sort that compared the other thread's ranges would leave them unmerged (a larger slab). */
typedef struct plan_job {
    qs_read_range rs[9];
    size_t want, wrong;
} plan_job;

static void *plan_loop(void *arg) {
    plan_job *j = arg;
    for (int it = 0; it < 200000; it++) j->wrong += qs_reader_slab_bytes(NULL, j->rs, 9) != j->want;
    return NULL;
}

static void check_threads(void) {
    plan_job jobs[2];
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < 9; i++) /* adjacent 1000-byte ranges: thread 0 lists them from the last */
            jobs[t].rs[i] = (qs_read_range){.file = 0, .offset = (uint64_t)(t * 7 + 1) * 1000000 + (uint64_t)(t ? i : 8 - i) * 1000,
                                            .len = 1000, .what = "t"};
        jobs[t].want = qs_reader_slab_bytes(NULL, jobs[t].rs, 9), jobs[t].wrong = 0;
        CHECKF(jobs[t].want <= 3 * 4096, "thread %d: 9 kB in a %zu-byte slab", t, jobs[t].want);
    }
    pthread_t th[2];
    for (int t = 0; t < 2; t++) CHECK(pthread_create(&th[t], NULL, plan_loop, &jobs[t]) == 0);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECKF(jobs[0].wrong + jobs[1].wrong == 0, "two threads planning at once: %zu and %zu wrong slab sizes",
           jobs[0].wrong, jobs[1].wrong);
    printf("two threads, 200000 plans each: slab sizes %zu and %zu every time\n", jobs[0].want, jobs[1].want);
}

int main(void) {
    char *dir = qs_test_tmpdir("reader");
    char *p0 = qs_path_join(dir, "a.bin"), *p1 = qs_path_join(dir, "b.bin");
    write_random_file(p0, 3 * 1024 * 1024 + 77);
    write_random_file(p1, 2300001);
    const char *paths[2] = {p0, p1};

    qs_reader_opts o = {0};
    check_mode(paths, o, "default", -1);
    check_threads();
    o = (qs_reader_opts){.request_bytes = 8192, .queue_depth = 4};
    check_mode(paths, o, "small requests, registered slab", -1);
    o = (qs_reader_opts){.no_direct = 1};
    check_mode(paths, o, "buffered", QS_READER_MODE_URING_BUFFERED);
    o = (qs_reader_opts){.no_uring = 1};
    check_mode(paths, o, "pread", QS_READER_MODE_PREAD);
    o = (qs_reader_opts){.inject_short_every = 2, .request_bytes = 65536};
    check_mode(paths, o, "short reads", -1);
    o = (qs_reader_opts){.inject_short_every = 1, .no_uring = 1};
    check_mode(paths, o, "short reads, pread", QS_READER_MODE_PREAD);

    /* tmpfs: before Linux 6.6 it refuses O_DIRECT and the reader falls back to buffered reads;
     * newer kernels accept it. Either way the bytes must equal pread. */
    if (access("/dev/shm", W_OK) == 0) {
        char s0[] = "/dev/shm/qs-reader-a-XXXXXX", s1[] = "/dev/shm/qs-reader-b-XXXXXX";
        int f0 = mkstemp(s0), f1 = mkstemp(s1);
        close(f0);
        close(f1);
        write_random_file(s0, 3 * 1024 * 1024 + 77);
        write_random_file(s1, 2300001);
        const char *shm[2] = {s0, s1};
        o = (qs_reader_opts){.quiet = 1};
        check_mode(shm, o, "tmpfs", -1);
        unlink(s0);
        unlink(s1);
    }

    /* EIO on the third completion (which read that is depends on completion order), and on
     * the first pread: the message names the file and a tensor */
    qs_read_range rs[16];
    size_t n = make_ranges(rs, 3 * 1024 * 1024 + 77, 2300001);
    o = (qs_reader_opts){.inject_eio_at = 3, .request_bytes = 65536};
    check_error(paths, o, rs, n, "/reader/", "tensor 't", "EIO io_uring");
    o = (qs_reader_opts){.inject_eio_at = 1, .no_uring = 1};
    check_error(paths, o, rs, n, "a.bin", "tensor 't0'", "EIO pread");

    /* a range past the end of the file (a truncated model) */
    qs_read_range past[1] = {{.file = 1, .offset = 2300000, .len = 10, .what = "lm_head.weight"}};
    o = (qs_reader_opts){0};
    check_error(paths, o, past, 1, "b.bin", "lm_head.weight", "past EOF");

    char *model = qs_test_shared_path("models/stories260k");
    check_catalog(model);
    check_catalog(qs_test_smollm_dir()); /* the default model: 272 tensors, 538 MB */
    free(model);
    free(p0);
    free(p1);
    free(dir);
    return qs_test_result();
}
