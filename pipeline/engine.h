/* pipeline/engine.h - the three-stage block pipeline: LOAD (io thread), COMPUTE (the calling
 * thread), STORE (writer thread), connected by bounded queues.
 *
 * n_slots block buffers circulate: LOAD takes a free slot (waiting when all are in use), fills it
 * with block k, hands it to COMPUTE; COMPUTE hands it to STORE; STORE gives the slot back. With
 * 3 slots block k+1 loads while block k computes and block k-1 is written; host memory is
 * n_slots x slot size, whatever the model's size. Blocks are computed and stored in order.
 * The first error of any stage stops all three (the others finish the call they are in) and is
 * returned with its message. */
#ifndef QS_PIPELINE_ENGINE_H
#define QS_PIPELINE_ENGINE_H

#include <stddef.h>

#include "base/error.h"

typedef struct qs_block_times {
    double wait_slot;  /* LOAD waiting for a free slot */
    double load;       /* LOAD working */
    double wait_load;  /* COMPUTE waiting for LOAD */
    double compute;    /* COMPUTE working */
    double wait_store; /* COMPUTE waiting for room in the STORE queue (only in the times
                          array of qs_pipeline_run, not in the store/done callbacks) */
    double store;      /* STORE working */
} qs_block_times;

/* the run, as COMPUTE sees it (stages.begin) */
typedef struct qs_pipeline_ctl qs_pipeline_ctl;

typedef struct qs_pipeline_stages {
    void *ctx;
    /* optional: called on the COMPUTE thread before the first compute, with the handle that
     * qs_pipeline_release takes during this run */
    void (*begin)(void *ctx, qs_pipeline_ctl *ctl);
    /* Each returns 0 or a negative code with err set. slot is the block's buffer. */
    int (*load)(void *ctx, int block, void *slot, qs_error *err);
    int (*compute)(void *ctx, int block, void *slot, qs_error *err);
    /* t holds the block's times so far (store is filled in after it returns) */
    int (*store)(void *ctx, int block, void *slot, const qs_block_times *t, qs_error *err);
    /* optional: called on the STORE thread after block's store, with its final times */
    void (*done)(void *ctx, int block, const qs_block_times *t);
    /* 0: each block goes to STORE when its compute returns 0. 1: COMPUTE may hold blocks (a
     * method whose result for a block needs later blocks, SliderQuant's windows): compute
     * returns r >= 0 and the r oldest blocks it holds, this one counted, go to STORE in order;
     * the rest stay. The caller gives n_slots of at least what it holds plus one for LOAD, and
     * releases every block by the last one's compute (else the run fails). During a compute
     * call it may also release blocks it held before the call (qs_pipeline_release), the ones
     * final before the call's work is done, so that STORE writes them meanwhile; r then counts
     * the oldest of those it still holds. */
    int holds;
} qs_pipeline_stages;

/* From inside a compute call of a holds run: the n oldest blocks COMPUTE holds, not counting the
 * one the call is for, go to STORE now, in order. 0, or a negative code with err set (more than
 * it held before the call; the run already stopped). */
int qs_pipeline_release(qs_pipeline_ctl *ctl, size_t n, qs_error *err);

typedef struct qs_pipeline_stats {
    size_t max_slots_in_use; /* never more than n_slots */
    size_t max_compute_queue, max_store_queue;
    double seconds;          /* wall time of the run */
} qs_pipeline_stats;

/* Runs blocks [first, last). slots: n_slots >= 1 buffers owned by the caller. times (may be
 * NULL) receives each block's times at index block. stats may be NULL. */
int qs_pipeline_run(const qs_pipeline_stages *st, int first, int last, void *const *slots,
                    size_t n_slots, qs_block_times *times, qs_pipeline_stats *stats, qs_error *err);

#endif
