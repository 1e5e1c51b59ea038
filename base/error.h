/* base/error.h - error reporting without a global "last error".
 *
 * Functions that can fail return 0 on success or a negative code (-errno style, or one of
 * the QS_E* codes below) and, when the caller passes a qs_error, fill it with one line that
 * names the file / tensor / block and what is wrong. The caller prints err.msg.
 * A NULL qs_error is allowed everywhere: the code is still returned. */
#ifndef QS_BASE_ERROR_H
#define QS_BASE_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" { /* gpu/ is C++ (CUDA) */
#endif

enum qs_errcode {
    QS_EFORMAT = -1000,  /* malformed or corrupt input file */
    QS_EUNSUPPORTED = -1001, /* valid input this build does not handle */
    QS_ENOMEMBUDGET = -1002, /* a memory budget cannot hold the plan */
    QS_ECHECKSUM = -1003,    /* a hash does not match */
    QS_EMISMATCH = -1004,    /* resume: the run fingerprint differs */
    QS_EUSAGE = -1005,       /* bad command-line usage */
};

typedef struct qs_error {
    int code;       /* 0 or the negative code last set */
    char msg[1024]; /* one line, no trailing newline */
} qs_error;

/* Sets err (when not NULL) to code and the formatted message; returns code. */
int qs_error_set(qs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like qs_error_set with code = -errno_value, appending ": strerror(errno_value)". */
int qs_error_errno(qs_error *err, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with "prefix: " (e.g. a file name); returns err->code. */
int qs_error_prefix(qs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One-line checks in the zstd style. They need a qs_error *err in scope. */
#define QS_RETURN_ERROR_IF(cond, code, ...)                                                   \
    do {                                                                                      \
        if (cond) return qs_error_set(err, (code), __VA_ARGS__);                              \
    } while (0)
#define QS_FORWARD_IF_ERROR(call)                                                             \
    do {                                                                                      \
        int qs_fwd_rc_ = (call);                                                              \
        if (qs_fwd_rc_ < 0) return qs_fwd_rc_;                                                \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
