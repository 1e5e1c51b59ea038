/* io/token_ids.h - token ids written as text ("1 67 89", commas or any whitespace between). */
#ifndef QS_IO_TOKEN_IDS_H
#define QS_IO_TOKEN_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

/* Parses text; *ids malloc'd (caller frees), *n its count. what names the source in errors
 * ("FILE" or "--ids"): "what: not a token id at byte 12 ('x1')". */
int qs_token_ids_parse(const char *text, const char *what, int32_t **ids, size_t *n, qs_error *err);

#endif
