#include "pipeline/queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct qs_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    void **items; /* ring [capacity] */
    size_t capacity, head, count, high_water;
    int closed;
};

qs_queue *qs_queue_create(size_t capacity) {
    if (capacity == 0) capacity = 1;
    qs_queue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->items = calloc(capacity, sizeof(void *));
    if (!q->items) {
        free(q);
        return NULL;
    }
    q->capacity = capacity;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    return q;
}

void qs_queue_free(qs_queue *q) {
    if (!q) return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->items);
    free(q);
}

int qs_queue_push(qs_queue *q, void *item) {
    pthread_mutex_lock(&q->mu);
    while (q->count == q->capacity && !q->closed) pthread_cond_wait(&q->not_full, &q->mu);
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        return -EPIPE;
    }
    q->items[(q->head + q->count) % q->capacity] = item;
    q->count++;
    if (q->count > q->high_water) q->high_water = q->count;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int qs_queue_pop(qs_queue *q, void **item) {
    pthread_mutex_lock(&q->mu);
    while (q->count == 0 && !q->closed) pthread_cond_wait(&q->not_empty, &q->mu);
    if (q->count == 0) {
        pthread_mutex_unlock(&q->mu);
        return 1;
    }
    *item = q->items[q->head];
    q->head = (q->head + 1) % q->capacity;
    q->count--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void qs_queue_close(qs_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

size_t qs_queue_high_water(const qs_queue *q) { return q->high_water; }
