/*
 * common/io_posix.c — the plain POSIX keel_io table.
 *
 * Invariant I1 (full writes) is kept by looping on short writes and EINTR;
 * I2 uses fdatasync() for files (metadata such as mtime need not be durable,
 * the file size is covered by fdatasync) and fsync() on an O_RDONLY handle of
 * the directory for names.
 */
#include "common/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/keel.h"

static int px_open(keel_io *io, const char *path, int flags, unsigned mode,
                   int *fd)
{
    int f;
    do {
        f = open(path, flags | O_CLOEXEC, (mode_t)mode);
    } while (f < 0 && errno == EINTR);
    if (f < 0) {
        return keel_translate_errno(errno);
    }
    *fd = f;
    return KEEL_OK;
}

static int px_pread(keel_io *io, int fd, void *buf, size_t len, uint64_t off,
                    size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n =
            pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return keel_translate_errno(errno);
        }
        if (n == 0) {
            break; /* I3: end of file */
        }
        done += (size_t)n;
    }
    *got = done;
    return KEEL_OK;
}

static int px_pwrite(keel_io *io, int fd, const void *buf, size_t len,
                     uint64_t off)
{
    size_t done = 0;
    while (done < len) { /* I1 */
        ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
                           (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return keel_translate_errno(errno);
        }
        done += (size_t)n;
    }
    return KEEL_OK;
}

static int px_fsync(keel_io *io, int fd)
{
    /* No retry on EINTR or anything else: after a failed fsync the page
     * cache may have dropped the data, so the caller must treat it as
     * fatal (see wal/wal_writer.c, W3). */
    if (fdatasync(fd) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_truncate(keel_io *io, int fd, uint64_t len)
{
    if (ftruncate(fd, (off_t)len) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_size(keel_io *io, int fd, uint64_t *len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return keel_translate_errno(errno);
    }
    *len = (uint64_t)st.st_size;
    return KEEL_OK;
}

static int px_rename(keel_io *io, const char *from, const char *to)
{
    if (rename(from, to) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_unlink(keel_io *io, const char *path)
{
    if (unlink(path) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_mkdir(keel_io *io, const char *path, unsigned mode)
{
    if (mkdir(path, (mode_t)mode) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_rmdir(keel_io *io, const char *path)
{
    if (rmdir(path) != 0) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static int px_fsync_dir(keel_io *io, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return keel_translate_errno(errno);
    }
    int rc = KEEL_OK;
    if (fsync(fd) != 0) {
        rc = keel_translate_errno(errno);
    }
    close(fd);
    return rc;
}

static int px_close(keel_io *io, int fd)
{
    /* close() errors after a successful fsync carry no durability meaning
     * on Linux; report them anyway. */
    if (close(fd) != 0 && errno != EINTR) {
        return keel_translate_errno(errno);
    }
    return KEEL_OK;
}

static const keel_io posix_io = {
    .open = px_open,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fsync = px_fsync,
    .truncate = px_truncate,
    .size = px_size,
    .rename = px_rename,
    .unlink = px_unlink,
    .fsync_dir = px_fsync_dir,
    .close = px_close,
    .mkdir = px_mkdir,
    .rmdir = px_rmdir,
};

keel_io *keel__io_posix(void)
{
    /* The table is never written through; the cast only fits the API. */
    return (keel_io *)&posix_io;
}

char *keel__path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

char *keel__path_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}
