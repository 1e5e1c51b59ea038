/* tests/test_pipeline.c - the three-stage engine: every block goes through load, compute and
 * store in order, on the slot it was loaded into; slots in use and queue depths never exceed
 * the slot count; the first error of any stage stops the run and comes back with its message;
 * nothing deadlocks with 1..4 slots. (No timing assertions: bench/ measures overlap.) */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "pipeline/engine.h"
#include "tests/testutil.h"

typedef struct ctx {
    int fail_stage, fail_block; /* 0 none, 1 load, 2 compute, 3 store */
    int next_compute, next_store, order_errors, done_count;
    pthread_mutex_t mu;
} ctx;

typedef struct slot { int block; int stage; } slot;

static void nap(long us) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

static int load(void *c_, int b, void *s_, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    nap(1000 + (b % 3) * 700);
    if (c->fail_stage == 1 && c->fail_block == b) return qs_error_set(err, -EIO, "load of block %d failed", b);
    s->block = b;
    s->stage = 1;
    return 0;
}

static int compute(void *c_, int b, void *s_, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    if (s->block != b || s->stage != 1 || c->next_compute != b) c->order_errors++;
    c->next_compute = b + 1;
    nap(1500);
    if (c->fail_stage == 2 && c->fail_block == b) return qs_error_set(err, -EINVAL, "compute of block %d failed", b);
    s->stage = 2;
    return 0;
}

static int store(void *c_, int b, void *s_, const qs_block_times *t, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    pthread_mutex_lock(&c->mu);
    if (s->block != b || s->stage != 2 || c->next_store != b || t->load <= 0 || t->compute <= 0)
        c->order_errors++;
    c->next_store = b + 1;
    pthread_mutex_unlock(&c->mu);
    nap(500 + (b % 2) * 1500);
    if (c->fail_stage == 3 && c->fail_block == b) return qs_error_set(err, -ENOSPC, "store of block %d failed", b);
    s->stage = 3;
    return 0;
}

static void done(void *c_, int b, const qs_block_times *t) {
    ctx *c = c_;
    (void)b;
    (void)t;
    c->done_count++;
}

static void run_case(size_t n_slots, int first, int last, int fail_stage, int fail_block) {
    ctx c = {.fail_stage = fail_stage, .fail_block = fail_block, .next_compute = first, .next_store = first};
    pthread_mutex_init(&c.mu, NULL);
    slot slots[8];
    void *ptrs[8];
    for (size_t i = 0; i < n_slots; i++) ptrs[i] = &slots[i];
    qs_pipeline_stages st = {.ctx = &c, .load = load, .compute = compute, .store = store, .done = done};
    qs_block_times times[64];
    memset(times, 0, sizeof times);
    qs_pipeline_stats stats;
    qs_error err = {0};
    int rc = qs_pipeline_run(&st, first, last, ptrs, n_slots, times, &stats, &err);
    CHECKF(c.order_errors == 0, "slots=%zu: %d order/ownership errors", n_slots, c.order_errors);
    CHECKF(stats.max_slots_in_use <= n_slots, "slots in use %zu > %zu", stats.max_slots_in_use, n_slots);
    CHECKF(stats.max_compute_queue <= n_slots && stats.max_store_queue <= n_slots, "queue depth over slots");
    if (fail_stage == 0) {
        CHECKF(rc == 0, "slots=%zu: %s", n_slots, err.msg);
        CHECKF(c.done_count == last - first, "done %d of %d", c.done_count, last - first);
        CHECK(c.next_store == last);
        for (int b = first; b < last; b++) CHECK(times[b].load > 0 && times[b].compute > 0 && times[b].store > 0);
    } else {
        static const char *what[] = {"", "load", "compute", "store"};
        char want[64];
        snprintf(want, sizeof want, "%s of block %d failed", what[fail_stage], fail_block);
        CHECKF(rc < 0 && strstr(err.msg, want), "slots=%zu fail %s@%d: rc %d msg '%s'", n_slots,
               what[fail_stage], fail_block, rc, err.msg);
        CHECKF(c.next_store <= fail_block + (fail_stage == 3), "stored past the failure (%d)", c.next_store);
    }
    pthread_mutex_destroy(&c.mu);
}

int main(void) {
    for (size_t slots = 1; slots <= 4; slots++) {
        run_case(slots, 0, 12, 0, 0);
        run_case(slots, 5, 9, 0, 0); /* resume-like start in the middle */
        for (int stage = 1; stage <= 3; stage++) {
            run_case(slots, 0, 10, stage, 0);
            run_case(slots, 0, 10, stage, 4);
            run_case(slots, 0, 10, stage, 9);
        }
    }
    run_case(3, 0, 0, 0, 0); /* nothing to do */
    return qs_test_result();
}
