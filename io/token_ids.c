/* io/token_ids.c - parsing token ids from text. */
#include "io/token_ids.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int qs_token_ids_parse(const char *text, const char *what, int32_t **ids, size_t *n, qs_error *err) {
    *ids = NULL;
    *n = 0;
    size_t cap = strlen(text) / 2 + 1, k = 0;
    int32_t *a = malloc(sizeof *a * cap);
    if (!a) return qs_error_set(err, -ENOMEM, "%s: out of memory for %zu ids", what, cap);
    for (const char *p = text;;) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && !isspace((unsigned char)*end))) {
            qs_error_set(err, QS_EFORMAT, "%s: not a token id at byte %zu ('%.12s')", what, (size_t)(p - text), p);
            free(a);
            return QS_EFORMAT;
        }
        a[k++] = (int32_t)v;
        p = end;
    }
    *ids = a;
    *n = k;
    return 0;
}
