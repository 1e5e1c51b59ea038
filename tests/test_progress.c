/* tests/test_progress.c - progress reports (pipeline/progress.h) on synthetic blocks with the
 * time passed in: the exact bar, line and JSON output, ETA formatting (seconds, minutes, hours),
 * a resumed run (blocks done before do not count toward the ETA's mean), the bar cut to the
 * terminal width, quiet mode, and the automatic choice off a terminal. */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "pipeline/progress.h"
#include "tests/testutil.h"

typedef struct memout {
    FILE *f;
    char *buf;
    size_t len;
} memout;

static void mem_open(memout *m) {
    m->buf = NULL;
    m->len = 0;
    m->f = open_memstream(&m->buf, &m->len);
    if (!m->f) {
        perror("open_memstream");
        exit(1);
    }
}

/* closes the stream and checks everything written to it */
static void mem_expect(memout *m, const char *want, const char *what) {
    fclose(m->f);
    CHECKF(!strcmp(m->buf, want), "%s:\n got: '%s'\nwant: '%s'", what, m->buf, want);
    free(m->buf);
}

static qs_progress_block blk(int block, double load, double wait, double compute, double store,
                             unsigned long long read, unsigned long long shard) {
    return (qs_progress_block){.block = block, .load = load, .wait_load = wait, .compute = compute, .store = store,
                               .read_bytes = read, .shard_bytes = shard};
}

static void test_eta(void) {
    static const struct {
        double s;
        const char *want;
    } cases[] = {{0, "0s"},        {0.4, "0s"},        {59.4, "59s"},     {59.5, "1m00s"},   {61, "1m01s"},
                 {725, "12m05s"},  {3599.4, "59m59s"}, {3600, "1h00m"},   {3720, "1h02m"},   {3779, "1h02m"},
                 {90061, "25h01m"}, {-1, "--"},        {NAN, "--"},       {INFINITY, "--"},  {1e12, "--"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        qs_progress_fmt_eta(buf, sizeof buf, cases[i].s);
        CHECKF(!strcmp(buf, cases[i].want), "%g s -> '%s', want '%s'", cases[i].s, buf, cases[i].want);
    }
}

static void test_lines(void) {
    memout m;
    mem_open(&m);
    qs_progress p;
    qs_progress_start(&p, QS_PROGRESS_LINES, m.f, 80, 0, 100.0);
    qs_progress_block b = blk(0, 1.2, 0, 40.1, 2.3, 1000000000ull, 12300000ull);
    qs_progress_block_done(&p, &b, 150.0); /* 50 s a block, 79 left: 3950 s */
    b = blk(1, 0.5, 0.25, 30, 1, 1000, 4000000);
    qs_progress_block_done(&p, &b, 160.0); /* 30 s a block, 78 left: 2340 s */
    b = blk(2, 0, 0, 0, 0, 0, 0);
    for (int i = 2; i < 79; i++) b.block = i, qs_progress_block_done(&p, &b, 160.0);
    b.block = 79;
    qs_progress_block_done(&p, &b, 260.0); /* 80 of 80: 0 left */
    qs_progress_finish(&p, 261.0);
    CHECK(p.done_run == 80 && p.bytes_in == 1000001000ull && p.bytes_out == 16300000ull);
    char want[16384];
    size_t k = (size_t)snprintf(want, sizeof want,
        "block 1/80: load 1.20 s, wait 0.00 s, compute 40.10 s, store 2.30 s, shard 12.3 MB, elapsed 50.0 s, ETA 1h05m\n"
        "block 2/80: load 0.50 s, wait 0.25 s, compute 30.00 s, store 1.00 s, shard 4.0 MB, elapsed 60.0 s, ETA 39m00s\n");
    for (int i = 2; i < 79; i++) {
        char eta[32];
        qs_progress_fmt_eta(eta, sizeof eta, 60.0 / (i + 1) * (80 - i - 1));
        k += (size_t)snprintf(want + k, sizeof want - k,
                              "block %d/80: load 0.00 s, wait 0.00 s, compute 0.00 s, store 0.00 s, shard 0.0 MB, "
                              "elapsed 60.0 s, ETA %s\n", i + 1, eta);
    }
    snprintf(want + k, sizeof want - k,
             "block 80/80: load 0.00 s, wait 0.00 s, compute 0.00 s, store 0.00 s, shard 0.0 MB, elapsed 160.0 s, ETA 0s\n");
    mem_expect(&m, want, "lines");
}

/* resumed at block 11 of 80: the mean is over this run's blocks only */
static void test_resume(void) {
    memout m;
    mem_open(&m);
    qs_progress p;
    qs_progress_start(&p, QS_PROGRESS_LINES, m.f, 80, 11, 0.0);
    qs_progress_block b = blk(11, 2, 1, 400, 3, 0, 100000);
    qs_progress_block_done(&p, &b, 500.0); /* 68 left x 500 s = 34000 s */
    b.block = 12;
    qs_progress_block_done(&p, &b, 560.0); /* 67 left x 280 s = 18760 s */
    qs_progress_finish(&p, 560.0);
    mem_expect(&m,
               "block 12/80: load 2.00 s, wait 1.00 s, compute 400.00 s, store 3.00 s, shard 0.1 MB, elapsed 500.0 s, ETA 9h26m\n"
               "block 13/80: load 2.00 s, wait 1.00 s, compute 400.00 s, store 3.00 s, shard 0.1 MB, elapsed 560.0 s, ETA 5h12m\n",
               "resumed lines");

    /* JSON, resumed: eta_s from this run's mean */
    mem_open(&m);
    qs_progress_start(&p, QS_PROGRESS_JSON, m.f, 30, 28, 10.0);
    b = blk(28, 0.5, 0.125, 12.25, 1.5, 1234567, 89012);
    qs_progress_block_done(&p, &b, 25.0);
    b = blk(29, 0.25, 0, 2, 0.75, 7, 8);
    qs_progress_block_done(&p, &b, 30.0);
    qs_progress_finish(&p, 31.0);
    const char *want =
        "{\"block\":28,\"blocks\":30,\"load_s\":0.500,\"wait_load_s\":0.125,\"compute_s\":12.250,\"store_s\":1.500,"
        "\"read_bytes\":1234567,\"shard_bytes\":89012,\"elapsed_s\":15.000,\"eta_s\":15.000}\n"
        "{\"block\":29,\"blocks\":30,\"load_s\":0.250,\"wait_load_s\":0.000,\"compute_s\":2.000,\"store_s\":0.750,"
        "\"read_bytes\":7,\"shard_bytes\":8,\"elapsed_s\":20.000,\"eta_s\":0.000}\n";
    fflush(m.f);
    /* every line is one JSON object with the fields a machine reads */
    for (const char *line = m.buf; line && *line;) {
        const char *nl = strchr(line, '\n');
        json_error_t je;
        json_t *o = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, &je);
        CHECKF(o && json_is_object(o), "not JSON: %s", je.text);
        static const char *keys[] = {"block", "blocks", "load_s", "wait_load_s", "compute_s", "store_s",
                                     "read_bytes", "shard_bytes", "elapsed_s", "eta_s"};
        for (size_t i = 0; o && i < sizeof keys / sizeof keys[0]; i++) CHECKF(json_object_get(o, keys[i]), "no %s", keys[i]);
        CHECK(o && json_object_size(o) == 10);
        json_decref(o);
        line = nl ? nl + 1 : NULL;
    }
    mem_expect(&m, want, "json");
}

static void test_bar(void) {
    memout m;
    mem_open(&m);
    qs_progress p;
    qs_progress_start(&p, QS_PROGRESS_BAR, m.f, 80, 10, 0.0);
    qs_progress_block b = blk(10, 1.2, 0, 40.1, 2.3, 3120000000ull, 5);
    qs_progress_block_done(&p, &b, 60.0); /* 52 MB/s; 69 left x 60 s */
    b = blk(11, 1.0, 0.2, 39.9, 2.5, 6000000, 5);
    qs_progress_block_done(&p, &b, 120.0); /* 3126 MB / 120 s = 26 MB/s; means 1.1 0.1 40.0 2.4 */
    b = blk(12, 0, 0, 0, 0, 0, 0);
    qs_progress_block_done(&p, &b, 4000.0); /* 3126 MB / 4000 s: 0.8 MB/s; 67 x 1333.3 s */
    qs_progress_finish(&p, 4000.0);
    mem_expect(&m,
               "\r[##------------------] 10/80 blocks  ETA --\033[K"
               "\r[##------------------] 11/80 blocks  ETA 1h09m  52 MB/s  load 1.2s wait 0.0s compute 40.1s store 2.3s\033[K"
               "\r[###-----------------] 12/80 blocks  ETA 1h08m  26 MB/s  load 1.1s wait 0.1s compute 40.0s store 2.4s\033[K"
               "\r[###-----------------] 13/80 blocks  ETA 24h48m  0.8 MB/s  load 0.7s wait 0.1s compute 26.7s store 1.6s\033[K"
               "\n",
               "bar");

    /* all done: a full bar; cut to the terminal's width */
    mem_open(&m);
    qs_progress_start(&p, QS_PROGRESS_BAR, m.f, 3, 2, 0.0);
    p.width = 30;
    b = blk(2, 1, 1, 1, 1, 0, 0);
    qs_progress_block_done(&p, &b, 2.0);
    qs_progress_finish(&p, 2.0);
    qs_progress_finish(&p, 2.0); /* once is enough */
    mem_expect(&m,
               "\r[#############-------] 2/3 blocks  ETA --\033[K"
               "\r[####################] 3/3 bl\033[K\n",
               "bar, done, 30 columns");
}

static void test_quiet_auto(void) {
    memout m;
    mem_open(&m);
    qs_progress p;
    qs_progress_start(&p, QS_PROGRESS_QUIET, m.f, 4, 0, 0.0);
    qs_progress_block b = blk(0, 1, 1, 1, 1, 1, 1);
    qs_progress_block_done(&p, &b, 1.0);
    qs_progress_finish(&p, 1.0);
    CHECK(p.done_run == 1);
    mem_expect(&m, "", "quiet");
    mem_open(&m);
    CHECK(qs_progress_auto(m.f) == QS_PROGRESS_LINES); /* not a terminal */
    qs_progress_start(&p, QS_PROGRESS_LINES, m.f, 0, 0, 0.0); /* nothing to do */
    qs_progress_finish(&p, 0.0);
    mem_expect(&m, "", "lines, no blocks");
    /* no stream: nothing, no crash */
    qs_progress_start(&p, QS_PROGRESS_BAR, NULL, 4, 0, 0.0);
    qs_progress_block_done(&p, &b, 1.0);
    qs_progress_finish(&p, 1.0);
}

int main(void) {
    test_eta();
    test_lines();
    test_resume();
    test_bar();
    test_quiet_auto();
    return qs_test_result();
}
