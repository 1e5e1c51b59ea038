#include "checkpoint/shuffle.h"

#include <string.h>

void qs_shuffle(const void *src_, void *dst_, size_t len, size_t width) {
    const uint8_t *src = src_;
    uint8_t *dst = dst_;
    size_t n = width ? len / width : 0;
    for (size_t b = 0; b < width; b++)
        for (size_t i = 0; i < n; i++) dst[b * n + i] = src[i * width + b];
    memcpy(dst + n * width, src + n * width, len - n * width);
}

void qs_unshuffle(const void *src_, void *dst_, size_t len, size_t width) {
    const uint8_t *src = src_;
    uint8_t *dst = dst_;
    size_t n = width ? len / width : 0;
    for (size_t b = 0; b < width; b++)
        for (size_t i = 0; i < n; i++) dst[i * width + b] = src[b * n + i];
    memcpy(dst + n * width, src + n * width, len - n * width);
}

void qs_hash_to_hex(uint64_t h, char out[17]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[h & 15];
        h >>= 4;
    }
    out[16] = 0;
}

int qs_hash_from_hex(const char *s, uint64_t *h) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    if (s[16]) return -1;
    *h = v;
    return 0;
}
