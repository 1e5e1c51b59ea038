/* base/splitmix.h - splitmix64, the seeded generator behind every random number of a run
 * (calibration windows, LoRA initialization, training permutations): advances *state and
 * returns the next 64 bits. The same seed gives the same sequence on every machine. */
#ifndef QS_BASE_SPLITMIX_H
#define QS_BASE_SPLITMIX_H

#include <stdint.h>

static inline uint64_t qs_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
