/*
 * recovery/plrec.c — the power-loss recorder: an LD_PRELOAD shared object
 * (libkeel_plrec.so, test machinery: never linked into libkeel or the keel
 * program) that records every call a process makes that changes or syncs
 * a file or directory under one root, for recovery/powerloss.c to build
 * crash states from (docs/testing.md, "Power-loss testing").
 *
 * It interposes libc's entry points: those the keel program calls, and
 * those liblmdb.so calls (LMDB is a shared library, so its write, pwrite,
 * writev, ftruncate, fdatasync, fsync and msync resolve through the same
 * lookup and land here too). KEEL_PLREC_ROOT names the directory traced,
 * KEEL_PLREC_TRACE the file the trace is appended to (format:
 * recovery/plrec_format.h). Without both, every call goes straight through.
 *
 * Invariants:
 *   PR1 A call is recorded only if it succeeded and it touches a path under
 *       the root (as the path is spelt, made absolute from the working
 *       directory or the directory descriptor and normalised lexically:
 *       symbolic links below the root are not followed), or a descriptor
 *       opened on one.
 *   PR2 PF1 of plrec_format.h: one lock is held across each recorded call
 *       and the write of its record, so the order of records is an order
 *       the calls completed in, across threads.
 *   PR3 The recorder never changes what a call does or returns; when it
 *       cannot record (the trace cannot be written, a path too long), it
 *       writes one line to stderr and aborts the process, so a trace is
 *       never silently incomplete.
 *   PR4 Descriptors duplicated with dup/dup2/fcntl(F_DUPFD) and writes made
 *       through a shared writable mapping are not seen (keel and LMDB
 *       without MDB_WRITEMAP make none; lock.mdb's mapping is LMDB's reader
 *       table, not durable state).
 *   PR5 What is traced is decided once, by a constructor, before main:
 *       calls made earlier (a sanitizer runtime's own) go straight through.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "recovery/plrec_format.h"

#define EXPORT   __attribute__((visibility("default")))
#define MAX_FDS  65536
#define MAX_MAPS 64

typedef struct map_region {
    uintptr_t base;
    size_t len;
    uint32_t handle;
    uint64_t off;
} map_region;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int enabled;
static int trace_fd = -1;
static char root[PATH_MAX];
static size_t root_len;
static uint32_t next_handle;
static uint32_t fd_handle[MAX_FDS];
static map_region maps[MAX_MAPS];

#define REAL(ret, name, args)     \
    typedef ret(*name##_fn) args; \
    static name##_fn real_##name

REAL(int, open, (const char *, int, ...));
REAL(int, openat, (int, const char *, int, ...));
REAL(int, close, (int));
REAL(ssize_t, write, (int, const void *, size_t));
REAL(ssize_t, pwrite, (int, const void *, size_t, off_t));
REAL(ssize_t, writev, (int, const struct iovec *, int));
REAL(ssize_t, pwritev, (int, const struct iovec *, int, off_t));
REAL(ssize_t, pwritev2, (int, const struct iovec *, int, off_t, int));
REAL(int, ftruncate, (int, off_t));
REAL(int, rename, (const char *, const char *));
REAL(int, renameat, (int, const char *, int, const char *));
REAL(int, renameat2, (int, const char *, int, const char *, unsigned));
REAL(int, unlink, (const char *));
REAL(int, unlinkat, (int, const char *, int));
REAL(int, mkdir, (const char *, mode_t));
REAL(int, mkdirat, (int, const char *, mode_t));
REAL(int, rmdir, (const char *));
REAL(int, fsync, (int));
REAL(int, fdatasync, (int));
REAL(int, msync, (void *, size_t, int));
REAL(void *, mmap, (void *, size_t, int, int, int, off_t));
REAL(int, munmap, (void *, size_t));
REAL(int, sync_file_range, (int, off_t, off_t, unsigned));
REAL(void, sync, (void));
REAL(int, syncfs, (int));

static _Noreturn void die(const char *what)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "keel_plrec: %s: %s\n", what,
                     strerror(errno));
    if (n > 0 && real_write != NULL) {
        ssize_t ignored = real_write(2, line, (size_t)n);
        (void)ignored;
    }
    abort();
}

static void *sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    return p;
}

static void init(void)
{
    real_open = (open_fn)sym("open");
    real_openat = (openat_fn)sym("openat");
    real_close = (close_fn)sym("close");
    real_write = (write_fn)sym("write");
    real_pwrite = (pwrite_fn)sym("pwrite");
    real_writev = (writev_fn)sym("writev");
    real_pwritev = (pwritev_fn)sym("pwritev");
    real_pwritev2 = (pwritev2_fn)sym("pwritev2");
    real_ftruncate = (ftruncate_fn)sym("ftruncate");
    real_rename = (rename_fn)sym("rename");
    real_renameat = (renameat_fn)sym("renameat");
    real_renameat2 = (renameat2_fn)sym("renameat2");
    real_unlink = (unlink_fn)sym("unlink");
    real_unlinkat = (unlinkat_fn)sym("unlinkat");
    real_mkdir = (mkdir_fn)sym("mkdir");
    real_mkdirat = (mkdirat_fn)sym("mkdirat");
    real_rmdir = (rmdir_fn)sym("rmdir");
    real_fsync = (fsync_fn)sym("fsync");
    real_fdatasync = (fdatasync_fn)sym("fdatasync");
    real_msync = (msync_fn)sym("msync");
    real_mmap = (mmap_fn)sym("mmap");
    real_munmap = (munmap_fn)sym("munmap");
    real_sync_file_range = (sync_file_range_fn)sym("sync_file_range");
    real_sync = (sync_fn)sym("sync");
    real_syncfs = (syncfs_fn)sym("syncfs");
}

static void ensure(void)
{
    pthread_once(&once, init);
}

/* PR5: the environment is read here, not at the first call: a sanitizer
 * runtime makes calls before libc has set up the environment, which must
 * neither see an empty one nor be traced. */
__attribute__((constructor)) static void start(void)
{
    ensure();
    const char *t = getenv(KEEL__PLREC_ENV_TRACE);
    const char *r = getenv(KEEL__PLREC_ENV_ROOT);
    if (t == NULL || r == NULL || t[0] == '\0' || r[0] == '\0') {
        return;
    }
    if (realpath(r, root) == NULL) {
        die("KEEL_PLREC_ROOT: cannot resolve the root");
    }
    root_len = strlen(root);
    trace_fd = real_open(t, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (trace_fd < 0) {
        die("KEEL_PLREC_TRACE: cannot open the trace");
    }
    struct stat st;
    if (fstat(trace_fd, &st) == 0 && st.st_size == 0 &&
        real_write(trace_fd, KEEL__PLREC_MAGIC, KEEL__PLREC_MAGIC_BYTES) !=
            KEEL__PLREC_MAGIC_BYTES) {
        die("KEEL_PLREC_TRACE: cannot write the trace");
    }
    enabled = 1;
}

/* Lexically normalise abs (absolute) into out: no ".", "..", "//". */
static int normalise(const char *abs, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = abs;
    while (*p != '\0') {
        while (*p == '/') {
            p++;
        }
        const char *e = p;
        while (*e != '\0' && *e != '/') {
            e++;
        }
        size_t len = (size_t)(e - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && out[n - 1] != '/') {
                n--;
            }
            if (n > 0) {
                n--;
            }
        } else {
            if (n + 1 + len + 1 > cap) {
                return -1;
            }
            out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p = e;
    }
    if (n == 0) {
        out[n++] = '/';
    }
    out[n] = '\0';
    return 0;
}

/* The path of (dirfd, path) relative to the root into rel, or 0 when it
 * is not under the root. PR1. */
static int relative(int dirfd, const char *path, char *rel, size_t cap)
{
    char abs[2 * PATH_MAX + 2], norm[2 * PATH_MAX + 2];
    if (!enabled || path == NULL) {
        return 0;
    }
    if (path[0] == '/') {
        snprintf(abs, sizeof(abs), "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (getcwd(base, sizeof(base)) == NULL) {
                die("getcwd");
            }
        } else {
            char link[64];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof(base) - 1);
            if (n < 0) {
                return 0;
            }
            base[n] = '\0';
        }
        snprintf(abs, sizeof(abs), "%s/%s", base, path);
    }
    if (normalise(abs, norm, sizeof(norm)) < 0) {
        errno = ENAMETOOLONG;
        die("path too long to record");
    }
    if (strncmp(norm, root, root_len) != 0 ||
        (norm[root_len] != '\0' && norm[root_len] != '/')) {
        return 0;
    }
    const char *r = norm[root_len] == '\0' ? "." : norm + root_len + 1;
    if (strlen(r) + 1 > cap) {
        errno = ENAMETOOLONG;
        die("path too long to record");
    }
    strcpy(rel, r);
    return 1;
}

static void emit(uint8_t op, uint32_t handle, uint32_t flags, const char *p1,
                 const char *p2, uint64_t offset, const struct iovec *data,
                 int ndata, uint64_t data_len, uint64_t aux)
{
    keel__plrec_hdr h;
    uint8_t enc[KEEL__PLREC_HDR_BYTES];
    struct iovec iov[3 + 64];
    int n = 0;
    memset(&h, 0, sizeof(h));
    h.op = op;
    h.handle = handle;
    h.flags = flags;
    h.path_len = p1 != NULL ? (uint32_t)strlen(p1) : 0;
    h.path2_len = p2 != NULL ? (uint32_t)strlen(p2) : 0;
    h.offset = offset;
    h.data_len = data_len;
    h.aux = aux;
    keel__plrec_encode(enc, &h);
    iov[n++] = (struct iovec){enc, sizeof(enc)};
    if (h.path_len > 0) {
        iov[n++] = (struct iovec){(void *)p1, h.path_len};
    }
    if (h.path2_len > 0) {
        iov[n++] = (struct iovec){(void *)p2, h.path2_len};
    }
    /* the data, up to data_len bytes of the vector */
    uint64_t left = data_len;
    for (int i = 0; i < ndata && left > 0; i++) {
        size_t take = data[i].iov_len < left ? data[i].iov_len : (size_t)left;
        if (take == 0) {
            continue;
        }
        if (n == (int)(sizeof(iov) / sizeof(iov[0]))) {
            errno = E2BIG;
            die("write vector too long to record");
        }
        iov[n++] = (struct iovec){data[i].iov_base, take};
        left -= take;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }
    /* One record per writev where the kernel allows; finish short ones. */
    ssize_t w = real_writev(trace_fd, iov, n);
    if (w < 0) {
        die("cannot write the trace");
    }
    size_t done = (size_t)w;
    for (int i = 0; i < n && done < total; i++) {
        if (done >= iov[i].iov_len) {
            done -= iov[i].iov_len;
            total -= iov[i].iov_len;
            continue;
        }
        const char *b = (const char *)iov[i].iov_base + done;
        size_t len = iov[i].iov_len - done;
        while (len > 0) {
            ssize_t k = real_write(trace_fd, b, len);
            if (k < 0) {
                if (errno == EINTR) {
                    continue;
                }
                die("cannot write the trace");
            }
            b += k;
            len -= (size_t)k;
        }
        total -= iov[i].iov_len;
        done = 0;
    }
}

static uint32_t handle_of(int fd)
{
    return fd >= 0 && fd < MAX_FDS ? fd_handle[fd] : 0;
}

/* After a successful open of rel as fd. */
static void opened(int fd, const char *rel, int flags)
{
    if (fd < 0 || fd >= MAX_FDS) {
        errno = EMFILE;
        die("descriptor beyond the recorder's table");
    }
    fd_handle[fd] = ++next_handle;
    emit(KEEL__PLREC_OPEN, fd_handle[fd], (uint32_t)flags, rel, NULL, 0, NULL,
         0, 0, 0);
}

static int do_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    char rel[PATH_MAX];
    ensure();
    if (!relative(dirfd, path, rel, sizeof(rel))) {
        return real_openat(dirfd, path, flags, mode);
    }
    pthread_mutex_lock(&lock);
    int fd = real_openat(dirfd, path, flags, mode);
    if (fd >= 0) {
        int e = errno;
        opened(fd, rel, flags);
        errno = e;
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE
               ? (mode_t)va_arg(ap, int)
               : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, m);
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(AT_FDCWD, path, flags, m);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, m);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat(dirfd, path, flags, m);
}

/* _FORTIFY_SOURCE's entry points (no mode: O_CREAT goes the other way). */
EXPORT int __open_2(const char *path, int flags);
EXPORT int __open_2(const char *path, int flags)
{
    return do_openat(AT_FDCWD, path, flags, 0);
}
EXPORT int __open64_2(const char *path, int flags);
EXPORT int __open64_2(const char *path, int flags)
{
    return do_openat(AT_FDCWD, path, flags, 0);
}
EXPORT int __openat_2(int dirfd, const char *path, int flags);
EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    return do_openat(dirfd, path, flags, 0);
}
EXPORT int __openat64_2(int dirfd, const char *path, int flags);
EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    return do_openat(dirfd, path, flags, 0);
}

EXPORT int creat(const char *path, mode_t mode)
{
    return do_openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}
EXPORT int creat64(const char *path, mode_t mode)
{
    return do_openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

EXPORT int close(int fd)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_close(fd);
    }
    pthread_mutex_lock(&lock);
    fd_handle[fd] = 0; /* closed, whatever close returns */
    int rc = real_close(fd);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* A write through fd of n bytes at off (off < 0: at the position, read
 * back after the call). */
static ssize_t traced_write(int fd, const struct iovec *iov, int iovcnt,
                            off_t off, int kind, int flags2)
{
    ssize_t n;
    pthread_mutex_lock(&lock);
    switch (kind) {
    case 0:
        n = real_writev(fd, iov, iovcnt);
        break;
    case 1:
        n = real_pwritev(fd, iov, iovcnt, off);
        break;
    default:
        n = real_pwritev2(fd, iov, iovcnt, off, flags2);
        break;
    }
    if (n > 0) {
        int e = errno;
        uint64_t at;
        if (off < 0) { /* PF3 */
            off_t end = lseek(fd, 0, SEEK_CUR);
            if (end < 0) {
                die("lseek after a write");
            }
            at = (uint64_t)end - (uint64_t)n;
        } else {
            at = (uint64_t)off;
        }
        emit(KEEL__PLREC_WRITE, handle_of(fd), 0, NULL, NULL, at, iov, iovcnt,
             (uint64_t)n, 0);
        errno = e;
    }
    pthread_mutex_unlock(&lock);
    return n;
}

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_write(fd, buf, len);
    }
    struct iovec v = {(void *)buf, len};
    return traced_write(fd, &v, 1, -1, 0, 0);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_pwrite(fd, buf, len, off);
    }
    struct iovec v = {(void *)buf, len};
    return traced_write(fd, &v, 1, off, 1, 0);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    return pwrite(fd, buf, len, off);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_writev(fd, iov, iovcnt);
    }
    return traced_write(fd, iov, iovcnt, -1, 0, 0);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_pwritev(fd, iov, iovcnt, off);
    }
    return traced_write(fd, iov, iovcnt, off, 1, 0);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    return pwritev(fd, iov, iovcnt, off);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t off,
                        int flags)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_pwritev2(fd, iov, iovcnt, off, flags);
    }
    return traced_write(fd, iov, iovcnt, off, 2, flags);
}

EXPORT int ftruncate(int fd, off_t len)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_ftruncate(fd, len);
    }
    pthread_mutex_lock(&lock);
    int rc = real_ftruncate(fd, len);
    if (rc == 0) {
        emit(KEEL__PLREC_TRUNCATE, handle_of(fd), 0, NULL, NULL, (uint64_t)len,
             NULL, 0, 0, 0);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT int ftruncate64(int fd, off_t len)
{
    return ftruncate(fd, len);
}

static int do_rename(int ofd, const char *from, int nfd, const char *to,
                     unsigned flags, int how)
{
    char a[PATH_MAX], b[PATH_MAX];
    ensure();
    int ra = relative(ofd, from, a, sizeof(a));
    int rb = relative(nfd, to, b, sizeof(b));
    int rc;
    if (ra || rb) {
        pthread_mutex_lock(&lock);
    }
    if (how == 0) {
        rc = real_rename(from, to);
    } else if (how == 1) {
        rc = real_renameat(ofd, from, nfd, to);
    } else {
        rc = real_renameat2(ofd, from, nfd, to, flags);
    }
    if (rc == 0 && (ra || rb)) {
        int e = errno;
        if (ra && rb) {
            emit(KEEL__PLREC_RENAME, 0, flags, a, b, 0, NULL, 0, 0, 0);
        } else if (ra) { /* moved out of the root: gone from it */
            emit(KEEL__PLREC_UNLINK, 0, 0, a, NULL, 0, NULL, 0, 0, 0);
        } else {
            /* moved in from outside: its bytes are unknown to the trace */
            errno = EXDEV;
            die("a file was moved into the traced root from outside it");
        }
        errno = e;
    }
    if (ra || rb) {
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

EXPORT int rename(const char *from, const char *to)
{
    return do_rename(AT_FDCWD, from, AT_FDCWD, to, 0, 0);
}

EXPORT int renameat(int ofd, const char *from, int nfd, const char *to)
{
    return do_rename(ofd, from, nfd, to, 0, 1);
}

EXPORT int renameat2(int ofd, const char *from, int nfd, const char *to,
                     unsigned flags)
{
    return do_rename(ofd, from, nfd, to, flags, 2);
}

/* unlink, unlinkat, mkdir, mkdirat, rmdir: one path, one record. */
static int path_op(int dirfd, const char *path, uint8_t op, int how, int flags,
                   mode_t mode)
{
    char rel[PATH_MAX];
    ensure();
    int traced = relative(dirfd, path, rel, sizeof(rel));
    int rc;
    if (traced) {
        pthread_mutex_lock(&lock);
    }
    switch (how) {
    case 0:
        rc = real_unlink(path);
        break;
    case 1:
        rc = real_unlinkat(dirfd, path, flags);
        break;
    case 2:
        rc = real_mkdir(path, mode);
        break;
    case 3:
        rc = real_mkdirat(dirfd, path, mode);
        break;
    default:
        rc = real_rmdir(path);
        break;
    }
    if (traced && rc == 0) {
        int e = errno;
        emit(op, 0, 0, rel, NULL, 0, NULL, 0, 0, 0);
        errno = e;
    }
    if (traced) {
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

EXPORT int unlink(const char *path)
{
    return path_op(AT_FDCWD, path, KEEL__PLREC_UNLINK, 0, 0, 0);
}

EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    return path_op(dirfd, path,
                   (flags & AT_REMOVEDIR) != 0 ? KEEL__PLREC_RMDIR
                                               : KEEL__PLREC_UNLINK,
                   1, flags, 0);
}

EXPORT int mkdir(const char *path, mode_t mode)
{
    return path_op(AT_FDCWD, path, KEEL__PLREC_MKDIR, 2, 0, mode);
}

EXPORT int mkdirat(int dirfd, const char *path, mode_t mode)
{
    return path_op(dirfd, path, KEEL__PLREC_MKDIR, 3, 0, mode);
}

EXPORT int rmdir(const char *path)
{
    return path_op(AT_FDCWD, path, KEEL__PLREC_RMDIR, 4, 0, 0);
}

static int sync_op(int fd, uint8_t op)
{
    ensure();
    if (handle_of(fd) == 0) {
        return op == KEEL__PLREC_FSYNC ? real_fsync(fd) : real_fdatasync(fd);
    }
    pthread_mutex_lock(&lock);
    int rc = op == KEEL__PLREC_FSYNC ? real_fsync(fd) : real_fdatasync(fd);
    if (rc == 0) {
        emit(op, handle_of(fd), 0, NULL, NULL, 0, NULL, 0, 0, 0);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT int fsync(int fd)
{
    return sync_op(fd, KEEL__PLREC_FSYNC);
}

EXPORT int fdatasync(int fd)
{
    return sync_op(fd, KEEL__PLREC_FDATASYNC);
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_mmap(addr, len, prot, flags, fd, off);
    }
    pthread_mutex_lock(&lock);
    void *p = real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED) {
        for (size_t i = 0; i < MAX_MAPS; i++) {
            if (maps[i].len == 0) {
                maps[i] = (map_region){(uintptr_t)p, len, handle_of(fd),
                                       (uint64_t)off};
                break;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return p;
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd,
                    off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len)
{
    ensure();
    pthread_mutex_lock(&lock);
    int rc = real_munmap(addr, len);
    if (rc == 0) {
        for (size_t i = 0; i < MAX_MAPS; i++) {
            if (maps[i].len != 0 && maps[i].base == (uintptr_t)addr) {
                maps[i].len = 0;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT int msync(void *addr, size_t len, int flags)
{
    ensure();
    pthread_mutex_lock(&lock);
    int rc = real_msync(addr, len, flags);
    if (rc == 0 && (flags & MS_SYNC) != 0) {
        uintptr_t a = (uintptr_t)addr;
        for (size_t i = 0; i < MAX_MAPS; i++) {
            if (maps[i].len != 0 && a >= maps[i].base &&
                a < maps[i].base + maps[i].len) {
                emit(KEEL__PLREC_MSYNC, maps[i].handle, (uint32_t)flags, NULL,
                     NULL, maps[i].off + (a - maps[i].base), NULL, 0, 0,
                     (uint64_t)len);
                break;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT int sync_file_range(int fd, off_t off, off_t len, unsigned flags)
{
    ensure();
    if (handle_of(fd) == 0) {
        return real_sync_file_range(fd, off, len, flags);
    }
    pthread_mutex_lock(&lock);
    int rc = real_sync_file_range(fd, off, len, flags);
    if (rc == 0) {
        emit(KEEL__PLREC_SYNC_RANGE, handle_of(fd), flags, NULL, NULL,
             (uint64_t)off, NULL, 0, 0, (uint64_t)len);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

EXPORT void sync(void)
{
    ensure();
    pthread_mutex_lock(&lock);
    real_sync();
    if (enabled) {
        emit(KEEL__PLREC_SYNC_ALL, 0, 0, NULL, NULL, 0, NULL, 0, 0, 0);
    }
    pthread_mutex_unlock(&lock);
}

EXPORT int syncfs(int fd)
{
    ensure();
    pthread_mutex_lock(&lock);
    int rc = real_syncfs(fd);
    if (rc == 0 && enabled) {
        emit(KEEL__PLREC_SYNC_ALL, 0, 0, NULL, NULL, 0, NULL, 0, 0, 0);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
