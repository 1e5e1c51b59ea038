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

typedef struct qs_pipeline_ctl {
    const qs_pipeline_stages *st;
    int first, last;
    qs_queue *free_q, *compute_q, *store_q;
    pthread_mutex_t mu;
    int failed;
    qs_error err; /* the first error */
    size_t in_use, max_in_use;
    qs_block_times *times;
    double *wait_store; /* [last - first], written by COMPUTE only (the item belongs to STORE by then) */
    /* COMPUTE's: the blocks it holds (st->holds), oldest first, the one being computed last */
    item **held;
    size_t nh;
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

/* the n oldest held blocks to STORE (COMPUTE's thread); -ECANCELED once the run stopped */
static int release(run *r, size_t n) {
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const int blk = r->held[k]->block;
        double t0 = qs_now();
        if (qs_queue_push(r->store_q, r->held[k]) != 0) rc = -ECANCELED;
        r->wait_store[blk - r->first] = qs_now() - t0;
    }
    memmove(r->held, r->held + n, sizeof *r->held * (r->nh - n));
    r->nh -= n;
    return rc;
}

int qs_pipeline_release(qs_pipeline_ctl *r, size_t n, qs_error *err) {
    QS_RETURN_ERROR_IF(!r->st->holds || n >= r->nh, -EINVAL,
                       "pipeline: %zu block(s) released during the compute of block %d, %zu held before it", n,
                       r->nh ? r->held[r->nh - 1]->block : -1, r->nh ? r->nh - 1 : 0);
    QS_RETURN_ERROR_IF(release(r, n) != 0, -ECANCELED, "pipeline: stopped while releasing blocks to STORE");
    return 0;
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
    /* COMPUTE runs here */
    void *p;
    r.held = calloc(n_slots, sizeof *r.held);
    if (!r.held) {
        qs_error e = {0};
        qs_error_set(&e, -ENOMEM, "pipeline: out of memory");
        fail(&r, &e, -ENOMEM);
    } else if (st->begin)
        st->begin(st->ctx, &r);
    for (int stop = !r.held; !stop;) {
        double t0 = qs_now();
        if (qs_queue_pop(r.compute_q, &p) != 0) break;
        item *it = p;
        it->t.wait_load = qs_now() - t0;
        qs_error e = {0};
        double t1 = qs_now();
        r.held[r.nh++] = it;
        int rc = st->compute(st->ctx, it->block, it->slot, &e);
        it->t.compute = qs_now() - t1;
        const size_t rel = st->holds ? (size_t)(rc > 0 ? rc : 0) : 1;
        if (rc >= 0 && rel > r.nh) rc = qs_error_set(&e, -EINVAL, "pipeline: block %d released %zu blocks, %zu held", it->block, rel, r.nh);
        if (rc < 0) {
            fail(&r, &e, rc);
            break;
        }
        stop = release(&r, rel) != 0;
    }
    if (r.nh && !r.failed) {
        qs_error e = {0};
        qs_error_set(&e, -EINVAL, "pipeline: COMPUTE still holds %zu block(s) at the end (from block %d)", r.nh, r.held[0]->block);
        fail(&r, &e, -EINVAL);
    }
    free(r.held);
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
