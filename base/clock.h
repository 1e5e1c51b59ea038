/* base/clock.h - monotonic wall time in seconds. */
#ifndef QS_BASE_CLOCK_H
#define QS_BASE_CLOCK_H
#include <time.h>
static inline double qs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif
