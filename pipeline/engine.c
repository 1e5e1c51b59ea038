#include "pipeline/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "pipeline/queue.h"

typedef struct item {
    int block;
    void *slot;
    qs_block_times t;
} item;

typedef struct run {
    const qs_pipeline_stages *st;
    int first, last;
    qs_queue *free_q, *compute_q, *store_q;
    pthread_mutex_t mu;
    int failed;
    qs_error err; /* the first error */
    size_t in_use, max_in_use;
    qs_block_times *times;
    double *wait_store; /* [last - first], written by COMPUTE only (the item belongs to STORE by then) */
} run;

static void fail(run *r, const qs_error *e, int code) {
    pthread_mutex_lock(&r->mu);
    if (!r->failed) {
        r->failed = code ? code : -EIO;
        r->err = *e;
        r->err.code = r->failed;
    }
    pthread_mutex_unlock(&r->mu);
    qs_queue_close(r->free_q);
    qs_queue_close(r->compute_q);
    qs_queue_close(r->store_q);
}

static void *load_thread(void *arg) {
    run *r = arg;
    for (int b = r->first; b < r->last; b++) {
        void *p;
        double t0 = qs_now();
        if (qs_queue_pop(r->free_q, &p) != 0) break;
        item *it = p;
        memset(&it->t, 0, sizeof it->t);
        it->block = b;
        pthread_mutex_lock(&r->mu);
        if (++r->in_use > r->max_in_use) r->max_in_use = r->in_use;
        pthread_mutex_unlock(&r->mu);
        double t1 = qs_now();
        qs_error e = {0};
        int rc = r->st->load(r->st->ctx, b, it->slot, &e);
        it->t.wait_slot = t1 - t0;
        it->t.load = qs_now() - t1;
        if (rc < 0) {
            fail(r, &e, rc);
            break;
        }
        if (qs_queue_push(r->compute_q, it) != 0) break;
    }
    qs_queue_close(r->compute_q);
    return NULL;
}

static void *store_thread(void *arg) {
    run *r = arg;
    void *p;
    while (qs_queue_pop(r->store_q, &p) == 0) {
        item *it = p;
        double t0 = qs_now();
        qs_error e = {0};
        int rc = r->st->store(r->st->ctx, it->block, it->slot, &it->t, &e);
        it->t.store = qs_now() - t0;
        if (rc < 0) {
            fail(r, &e, rc);
            break;
        }
        if (r->times) r->times[it->block] = it->t;
        if (r->st->done) r->st->done(r->st->ctx, it->block, &it->t);
        pthread_mutex_lock(&r->mu);
        r->in_use--;
        pthread_mutex_unlock(&r->mu);
        if (qs_queue_push(r->free_q, it) != 0) break;
    }
    return NULL;
}

int qs_pipeline_run(const qs_pipeline_stages *st, int first, int last, void *const *slots,
                    size_t n_slots, qs_block_times *times, qs_pipeline_stats *stats, qs_error *err) {
    QS_RETURN_ERROR_IF(n_slots == 0, -EINVAL, "pipeline: no block slots");
    double t_start = qs_now();
    run r = {.st = st, .first = first, .last = last, .times = times};
    item *items = calloc(n_slots, sizeof *items);
    r.wait_store = calloc(last > first ? (size_t)(last - first) : 1, sizeof(double));
    r.free_q = qs_queue_create(n_slots);
    r.compute_q = qs_queue_create(n_slots);
    r.store_q = qs_queue_create(n_slots);
    if (!items || !r.wait_store || !r.free_q || !r.compute_q || !r.store_q) {
        free(items);
        free(r.wait_store);
        qs_queue_free(r.free_q);
        qs_queue_free(r.compute_q);
        qs_queue_free(r.store_q);
        return qs_error_set(err, -ENOMEM, "pipeline: out of memory");
    }
    pthread_mutex_init(&r.mu, NULL);
    for (size_t i = 0; i < n_slots; i++) {
        items[i].slot = slots[i];
        qs_queue_push(r.free_q, &items[i]);
    }
    pthread_t loader, writer;
    int have_loader = pthread_create(&loader, NULL, load_thread, &r) == 0;
    int have_writer = have_loader && pthread_create(&writer, NULL, store_thread, &r) == 0;
    if (!have_writer) {
        qs_error e = {0};
        qs_error_set(&e, -EAGAIN, "pipeline: cannot start threads");
        fail(&r, &e, -EAGAIN);
    }
    /* COMPUTE runs here; held[0..nh) are the blocks it holds (st->holds), oldest first */
    void *p;
    item **held = calloc(n_slots, sizeof *held);
    size_t nh = 0;
    if (!held) {
        qs_error e = {0};
        qs_error_set(&e, -ENOMEM, "pipeline: out of memory");
        fail(&r, &e, -ENOMEM);
    }
    for (int stop = !held; !stop;) {
        double t0 = qs_now();
        if (qs_queue_pop(r.compute_q, &p) != 0) break;
        item *it = p;
        it->t.wait_load = qs_now() - t0;
        qs_error e = {0};
        double t1 = qs_now();
        int rc = st->compute(st->ctx, it->block, it->slot, &e);
        it->t.compute = qs_now() - t1;
        held[nh++] = it;
        const size_t rel = st->holds ? (size_t)(rc > 0 ? rc : 0) : 1;
        if (rc >= 0 && rel > nh) rc = qs_error_set(&e, -EINVAL, "pipeline: block %d released %zu blocks, %zu held", it->block, rel, nh);
        if (rc < 0) {
            fail(&r, &e, rc);
            break;
        }
        for (size_t k = 0; k < rel && !stop; k++) {
            const int blk = held[k]->block;
            double t2 = qs_now();
            if (qs_queue_push(r.store_q, held[k]) != 0) stop = 1;
            r.wait_store[blk - first] = qs_now() - t2;
        }
        memmove(held, held + rel, sizeof *held * (nh - rel));
        nh -= rel;
    }
    if (nh && !r.failed) {
        qs_error e = {0};
        qs_error_set(&e, -EINVAL, "pipeline: COMPUTE still holds %zu block(s) at the end (from block %d)", nh, held[0]->block);
        fail(&r, &e, -EINVAL);
    }
    free(held);
    qs_queue_close(r.store_q);
    if (have_loader) pthread_join(loader, NULL);
    if (have_writer) pthread_join(writer, NULL);
    if (times)
        for (int b = first; b < last; b++) times[b].wait_store = r.wait_store[b - first];
    if (stats) {
        stats->max_slots_in_use = r.max_in_use;
        stats->max_compute_queue = qs_queue_high_water(r.compute_q);
        stats->max_store_queue = qs_queue_high_water(r.store_q);
        stats->seconds = qs_now() - t_start;
    }
    qs_queue_free(r.free_q);
    qs_queue_free(r.compute_q);
    qs_queue_free(r.store_q);
    pthread_mutex_destroy(&r.mu);
    free(items);
    free(r.wait_store);
    if (r.failed) {
        if (err) *err = r.err;
        return r.failed;
    }
    return 0;
}
