/* pipeline/queue.h - a bounded blocking FIFO of pointers between pipeline threads. */
#ifndef QS_PIPELINE_QUEUE_H
#define QS_PIPELINE_QUEUE_H

#include <stddef.h>

typedef struct qs_queue qs_queue;

/* capacity >= 1. Returns NULL when out of memory. */
qs_queue *qs_queue_create(size_t capacity);
void qs_queue_free(qs_queue *q); /* NULL is fine; the queue must have no waiters */

/* Blocks while full. 0 on success, -EPIPE when the queue was closed (item not queued). */
int qs_queue_push(qs_queue *q, void *item);
/* Blocks while empty. 0 with *item set, or 1 when the queue is closed and drained. */
int qs_queue_pop(qs_queue *q, void **item);
/* Wakes every waiter; later pushes fail, pops drain what is left then return 1. */
void qs_queue_close(qs_queue *q);
/* The largest number of items the queue ever held (never more than its capacity). */
size_t qs_queue_high_water(const qs_queue *q);

#endif
