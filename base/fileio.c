#include "base/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int qs_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len, qs_error *err) {
    *out = NULL;
    if (len) *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return qs_error_errno(err, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        int e = errno;
        fclose(fp);
        return qs_error_errno(err, e, "%s: cannot stat", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(fp);
        return qs_error_set(err, QS_EFORMAT, "%s: file is %lld bytes, more than the %zu allowed",
                            path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(fp);
        return qs_error_set(err, -ENOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, fp);
    int rerr = ferror(fp);
    fclose(fp);
    if (got != n || rerr) {
        free(buf);
        return qs_error_set(err, -EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

int qs_file_open_read(const char *path, int extra_flags, uint64_t *size, qs_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | extra_flags);
    if (fd < 0) return qs_error_errno(err, errno, "%s: cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return qs_error_errno(err, e, "%s: cannot stat", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return qs_error_set(err, QS_EFORMAT, "%s: not a regular file", path);
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

char *qs_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

char *qs_path_or_default(const char *path, const char *suffix, const char *default_name) {
    size_t n = strlen(path), k = strlen(suffix);
    return n >= k && !strcmp(path + n - k, suffix) ? strdup(path) : qs_path_join(path, default_name);
}

int qs_fsync_parent_dir(const char *path, qs_error *err) {
    char *copy = strdup(path);
    if (!copy) return qs_error_set(err, -ENOMEM, "out of memory");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        int e = errno;
        free(copy);
        return qs_error_errno(err, e, "%s: cannot open directory for fsync", path);
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    free(copy);
    if (rc != 0 && e != EINVAL) return qs_error_errno(err, e, "%s: fsync of directory", path);
    return 0;
}

int qs_mkdir_p(const char *path, qs_error *err) {
    char *p = strdup(path);
    if (!p) return qs_error_set(err, -ENOMEM, "out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return qs_error_errno(err, e, "%s: cannot create directory", path);
        }
        *s = '/';
    }
    int rc = mkdir(p, 0777);
    int e = errno;
    free(p);
    if (rc != 0 && e != EEXIST) return qs_error_errno(err, e, "%s: cannot create directory", path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return qs_error_set(err, -ENOTDIR, "%s: exists and is not a directory", path);
    return 0;
}

int qs_durable_open(qs_durable_file *f, const char *path, qs_error *err) {
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    size_t n = strlen(path);
    f->tmp_path = malloc(n + 5);
    if (!f->path || !f->tmp_path) {
        qs_durable_abort(f);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    memcpy(f->tmp_path, path, n);
    memcpy(f->tmp_path + n, ".tmp", 5);
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        int e = errno;
        qs_error_errno(err, e, "%s: cannot create", f->tmp_path);
        free(f->path);
        free(f->tmp_path);
        memset(f, 0, sizeof *f);
        return -e;
    }
    return 0;
}

int qs_durable_write(qs_durable_file *f, const void *data, size_t len, qs_error *err) {
    if (len && fwrite(data, 1, len, f->fp) != len) {
        int e = errno ? errno : EIO;
        return qs_error_errno(err, e, "%s: write failed", f->tmp_path);
    }
    return 0;
}

void qs_durable_abort(qs_durable_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}

int qs_durable_commit(qs_durable_file *f, qs_error *err) {
    int rc = 0;
    if (fflush(f->fp) != 0) rc = qs_error_errno(err, errno, "%s: write failed", f->tmp_path);
    else if (fsync(fileno(f->fp)) != 0) rc = qs_error_errno(err, errno, "%s: fsync failed", f->tmp_path);
    if (rc) {
        qs_durable_abort(f);
        return rc;
    }
    int crc = fclose(f->fp);
    f->fp = NULL;
    if (crc != 0) {
        rc = qs_error_errno(err, errno, "%s: close failed", f->tmp_path);
        qs_durable_abort(f);
        return rc;
    }
    if (rename(f->tmp_path, f->path) != 0) {
        rc = qs_error_errno(err, errno, "%s: rename to %s failed", f->tmp_path, f->path);
        qs_durable_abort(f);
        return rc;
    }
    rc = qs_fsync_parent_dir(f->path, err);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
    return rc;
}

int qs_file_write_durable(const char *path, const void *data, size_t len, qs_error *err) {
    qs_durable_file f;
    QS_FORWARD_IF_ERROR(qs_durable_open(&f, path, err));
    int rc = qs_durable_write(&f, data, len, err);
    if (rc) {
        qs_durable_abort(&f);
        return rc;
    }
    return qs_durable_commit(&f, err);
}
