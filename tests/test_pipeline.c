/* tests/test_pipeline.c - the three-stage engine: every block goes through load, compute and
 * store in order, on the slot it was loaded into; slots in use and queue depths never exceed
 * the slot count; the first error of any stage stops the run and comes back with its message;
 * nothing deadlocks with 1..4 slots. A compute that holds blocks (SliderQuant's windows) and
 * releases some during a call: STORE writes them before that call returns, in order, and a
 * release of more than it held before the call is refused. (No timing assertions: bench/
 * measures overlap.) */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/engine.h"
#include "tests/testutil.h"

typedef struct ctx {
    int fail_stage, fail_block; /* 0 none, 1 load, 2 compute, 3 store */
    int next_compute, next_store, order_errors, done_count;
    pthread_mutex_t mu;
    pthread_cond_t stored;  /* signalled by store (the holds case) */
    qs_pipeline_ctl *ctl;   /* from begin */
    int begun, mid_stored;  /* begin calls; blocks STORE had written when a release returned */
    int bad_release;        /* the holds case: a call releases more than it held */
    char release_msg[256];
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
    pthread_cond_broadcast(&c->stored);
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

static void begin(void *c_, qs_pipeline_ctl *ctl) {
    ctx *c = c_;
    c->ctl = ctl;
    c->begun++;
}

/* the holds case: blocks 3k and 3k+1 are held; the call for 3k+2 releases them one at a time,
 * waiting (at most 10 s) for STORE to have started on each, then returns 1 for itself. The
 * last block releases whatever is left. */
static int compute_holds(void *c_, int b, void *s_, qs_error *err) {
    ctx *c = c_;
    slot *s = s_;
    if (s->block != b || s->stage != 1 || c->next_compute != b) c->order_errors++;
    c->next_compute = b + 1;
    s->stage = 2;
    nap(800);
    if (c->bad_release && b == 1) {
        int rc = qs_pipeline_release(c->ctl, 2, err); /* holds block 0 from before: 2 is one too many */
        snprintf(c->release_msg, sizeof c->release_msg, "%s", rc ? err->msg : "");
        return rc ? rc : 2;
    }
    if (b % 3 != 2 && b != c->fail_block) return 0;
    const int first = b - (b % 3 == 2 ? 2 : b % 3);
    for (int k = first; k < b; k++) {
        int rc = qs_pipeline_release(c->ctl, 1, err);
        if (rc) return rc;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&c->mu);
        while (c->next_store <= k && pthread_cond_timedwait(&c->stored, &c->mu, &until) == 0) {}
        c->mid_stored += c->next_store > k;
        pthread_mutex_unlock(&c->mu);
    }
    return 1;
}

static void run_holds(size_t n_slots, int last, int bad) {
    ctx c = {.next_compute = 0, .next_store = 0, .fail_block = last - 1, .bad_release = bad};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.stored, NULL);
    slot slots[8];
    void *ptrs[8];
    for (size_t i = 0; i < n_slots; i++) ptrs[i] = &slots[i];
    qs_pipeline_stages st = {.ctx = &c, .begin = begin, .load = load, .compute = compute_holds, .store = store,
                             .done = done, .holds = 1};
    qs_pipeline_stats stats;
    qs_error err = {0};
    int rc = qs_pipeline_run(&st, 0, last, ptrs, n_slots, NULL, &stats, &err);
    CHECKF(c.begun == 1, "begin called %d times", c.begun);
    CHECKF(c.order_errors == 0, "holds, slots=%zu: %d order/ownership errors", n_slots, c.order_errors);
    CHECKF(stats.max_slots_in_use <= n_slots, "slots in use %zu > %zu", stats.max_slots_in_use, n_slots);
    if (bad) {
        CHECKF(rc == -EINVAL && strstr(err.msg, "2 block(s) released during the compute of block 1, 1 held before it"),
               "an over-release: rc %d '%s'", rc, err.msg);
        CHECKF(strcmp(c.release_msg, err.msg) == 0, "the run's error '%s' is not the release's '%s'", err.msg,
               c.release_msg);
    } else {
        const int want = 2 * (last / 3) + (last % 3 ? last % 3 - 1 : 0); /* blocks released mid-call */
        CHECKF(rc == 0, "holds, slots=%zu: %s", n_slots, err.msg);
        CHECKF(c.done_count == last && c.next_store == last, "holds: done %d, stored to %d of %d", c.done_count,
               c.next_store, last);
        CHECKF(c.mid_stored == want, "holds: STORE had %d of the %d blocks released mid-call before the call returned",
               c.mid_stored, want);
    }
    pthread_cond_destroy(&c.stored);
    pthread_mutex_destroy(&c.mu);
}

static void run_case(size_t n_slots, int first, int last, int fail_stage, int fail_block) {
    ctx c = {.fail_stage = fail_stage, .fail_block = fail_block, .next_compute = first, .next_store = first};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.stored, NULL);
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
    pthread_cond_destroy(&c.stored);
    pthread_mutex_destroy(&c.mu);
}

/* a deadlock (or a held block STORE never gets) fails here instead of hanging until ctest's
 * timeout: the whole program takes well under a second when it works */
static void hung(int sig) {
    (void)sig;
    static const char msg[] = "test_pipeline: FAIL: still running after 60 s (a stage is stuck)\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(1);
}

int main(void) {
    signal(SIGALRM, hung);
    alarm(60);
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
    for (size_t slots = 4; slots <= 5; slots++) {
        run_holds(slots, 9, 0);
        run_holds(slots, 11, 0); /* the last call releases the two before it */
    }
    run_holds(4, 9, 1);
    return qs_test_result();
}
