/* checkpoint/shuffle.h - byte shuffling (byte planes, as Blosc does) and canonical hash text. */
#ifndef QS_CHECKPOINT_SHUFFLE_H
#define QS_CHECKPOINT_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>

/* dst[b * n + i] = src[i * width + b] for n elements of width bytes; src, dst do not overlap.
 * Trailing bytes (len % width) are copied as they are. */
void qs_shuffle(const void *src, void *dst, size_t len, size_t width);
void qs_unshuffle(const void *src, void *dst, size_t len, size_t width);

/* 16 lower-case hex digits of h (big-endian, XXH64_canonical order) plus NUL */
void qs_hash_to_hex(uint64_t h, char out[17]);
/* parses exactly 16 hex digits; 0 on success, -1 otherwise */
int qs_hash_from_hex(const char *s, uint64_t *h);

#endif
