/* io/tokenizer_bpe.c - byte-pair merging of one word: the pair with the best rank (lowest merge
 * index; for SentencePiece vocabularies with scores, merges derived from the scores) is merged
 * first, the leftmost among equals; a heap keeps this O(n log n) for long inputs. */
#include <stdlib.h>
#include <string.h>

#include "io/tokenizer_internal.h"

typedef struct cand {
    int32_t rank;
    int32_t pos, left, right, merged;
} cand;

typedef struct heap {
    cand *a;
    size_t n, cap;
    int heap_owned; /* a was malloc'd (else it is the caller's stack array) */
} heap;

static int before(const cand *x, const cand *y) { return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos); }

static int push(heap *h, cand c) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        cand *a = h->heap_owned ? realloc(h->a, cap * sizeof *a) : malloc(cap * sizeof *a);
        if (!a) return -1;
        if (!h->heap_owned && h->n) memcpy(a, h->a, h->n * sizeof *a);
        h->heap_owned = 1;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0 && before(&c, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = c;
    return 0;
}

static cand pop(heap *h) {
    cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < h->n && before(&h->a[l], best)) m = l, best = &h->a[l];
        if (r < h->n && before(&h->a[r], best)) m = r;
        if (m == i) break;
        h->a[i] = h->a[m];
        i = m;
    }
    if (h->n) h->a[i] = last;
    return top;
}

/* rank and result of merging ids a and b; 0 when they do not merge */
static int pair(const struct qs_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    return qs_pairmap_get(&t->merges, a, b, rank, merged);
}

size_t qs_bpe_word(const struct qs_tokenizer *t, int32_t *sym, size_t n) {
    if (n < 2) return n;
    enum { SMALL = 64 }; /* most words: no allocation */
    int32_t next_s[SMALL], prev_s[SMALL];
    cand heap_s[SMALL];
    int small = n <= SMALL;
    int32_t *next = small ? next_s : malloc(n * sizeof *next), *prev = small ? prev_s : malloc(n * sizeof *prev);
    heap h = {.a = heap_s, .cap = SMALL};
    if (!next || !prev) {
        if (!small) free(next), free(prev);
        return n; /* out of memory: leave unmerged (ids stay valid) */
    }
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prev[i] = (int32_t)i - 1;
    }
    cand c;
    for (size_t i = 0; i + 1 < n; i++)
        if (pair(t, sym[i], sym[i + 1], &c.rank, &c.merged)) {
            c.pos = (int32_t)i, c.left = sym[i], c.right = sym[i + 1];
            push(&h, c);
        }
    while (h.n) {
        c = pop(&h);
        int32_t p = c.pos, q = next[p];
        if (sym[p] != c.left || q < 0 || sym[q] != c.right) continue; /* stale */
        sym[p] = c.merged;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        cand d;
        if (prev[p] >= 0 && pair(t, sym[prev[p]], sym[p], &d.rank, &d.merged)) {
            d.pos = prev[p], d.left = sym[prev[p]], d.right = sym[p];
            push(&h, d);
        }
        if (next[p] >= 0 && pair(t, sym[p], sym[next[p]], &d.rank, &d.merged)) {
            d.pos = p, d.left = sym[p], d.right = sym[next[p]];
            push(&h, d);
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[k++] = sym[i];
    if (h.heap_owned) free(h.a);
    if (!small) free(next), free(prev);
    return k;
}
