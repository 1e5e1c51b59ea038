/* base/fileio.h - whole-file reads and durable writes (Redis-style save).
 *
 * Durable write = write PATH.tmp, fsync it, rename over PATH, fsync the directory.
 * On error nothing is left at PATH that was not there before (the .tmp is removed). */
#ifndef QS_BASE_FILEIO_H
#define QS_BASE_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

/* Reads the whole file into a malloc'd buffer with a trailing NUL (not counted in *len).
 * Refuses files larger than max_bytes (QS_EFORMAT). Caller frees *out. */
int qs_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len, qs_error *err);

/* Opens a regular file read-only (O_CLOEXEC | extra_flags) and gives its size. Returns the file
 * descriptor, or a negative code with err naming the file; nothing stays open on error. */
int qs_file_open_read(const char *path, int extra_flags, uint64_t *size, qs_error *err);

/* Durably writes len bytes to path. */
int qs_file_write_durable(const char *path, const void *data, size_t len, qs_error *err);

/* Streaming durable writer: open PATH.tmp; write; commit (fsync, rename, fsync dir) or abort. */
typedef struct qs_durable_file {
    FILE *fp;
    char *path;     /* final path (owned) */
    char *tmp_path; /* PATH.tmp (owned) */
} qs_durable_file;

int qs_durable_open(qs_durable_file *f, const char *path, qs_error *err);
int qs_durable_write(qs_durable_file *f, const void *data, size_t len, qs_error *err);
int qs_durable_commit(qs_durable_file *f, qs_error *err); /* frees f's members either way */
void qs_durable_abort(qs_durable_file *f);                /* removes PATH.tmp; safe twice */

/* fsync of the directory that holds path. */
int qs_fsync_parent_dir(const char *path, qs_error *err);

/* mkdir -p; 0 when the directory exists afterwards. */
int qs_mkdir_p(const char *path, qs_error *err);

/* path itself when it names a file ending in suffix (e.g. ".json"), else dir/default_name;
 * malloc'd. For arguments that take a model directory or one of its files. */
char *qs_path_or_default(const char *path, const char *suffix, const char *default_name);

/* path join into a malloc'd string ("a" + "b" -> "a/b"). */
char *qs_path_join(const char *dir, const char *name);

#endif
