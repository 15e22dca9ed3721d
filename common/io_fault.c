/*
 * common/io_fault.c — the fault-injecting keel_io (contract in io_fault.h).
 *
 * Every op goes through step(): it counts the op, then says what the plan
 * makes of it (run it, fail it, tear it, crash). Ops that run are passed to
 * the POSIX table, so the files are real and other code (readers, `keel wal
 * dump`, the test itself) sees exactly what the code under test wrote.
 *
 * Power-loss model. Each file opened through the layer is a `struct file`,
 * found by the path it currently has (rename moves the path, unlink or being
 * replaced by a rename detaches it). A file opened for writing is *tracked*:
 *
 *     real bytes  ==  image  +  its pending ops, applied in issue order
 *
 * where `image` is what a power loss must leave (the bytes at its last
 * successful fsync; before any, its bytes when the layer first opened it for
 * writing, empty if it created it), and the pending ops (pwrite with a copy
 * of its bytes, truncate, O_TRUNC) sit in one list shared by all files, in
 * the order they were issued. fsync folds the file's pending ops into its
 * image. keel__io_fault_power_loss() then rewrites every tracked file to its
 * image plus the first keep_bytes bytes of the shared list:
 *
 *     pending:  [a.seg +0 "KREC..." 48B] [b.tmp trunc 0] [a.seg +48 ... 48B]
 *     keep 60:   lands whole (48)          applied (0)    first 12 bytes land
 *
 * Names are not modelled (a rename, unlink or creation is durable at once):
 * the WAL's own ordering of rename and fsync_dir is checked by its tests,
 * not here. Paths are compared as spelled, so code under test must use one
 * spelling per file (the WAL builds every path as dir + "/" + name).
 *
 * Invariants:
 *   F1  Every call of a table op is counted, total and per kind, before the
 *       plan is consulted, including calls refused after a crash; counts
 *       only grow until keel__io_fault_reset_counts().
 *   F2  A plan fires at the op whose count (of its kind, or the total for
 *       KEEL_IO_OP_ANY) equals nth, and only if that op is of the planned
 *       kind.
 *   F3  Once crashed, no op reaches the file system: each returns KEEL_EIO
 *       (a CRASH_AFTER op itself still runs, and is the last that does).
 *   F4  The mutex is held across each op's real I/O and its bookkeeping, so
 *       the order of the pending list is the order the file system saw.
 *   F5  A tracked file that nothing outside the layer writes holds exactly
 *       its image with its pending ops applied in list order.
 *   F6  Every pending op belongs to exactly one tracked file with a path; a
 *       successful fsync of that file folds all of them into its image; an
 *       unlink or rename over the file drops them with the file's tracking.
 *   F7  Every descriptor the layer opened and has not closed is in the fd
 *       table, so power loss and free can close what a crash abandoned.
 *   F8  A struct file lives while it is tracked or a descriptor refers to
 *       it; then it is freed (maybe_free).
 */
#include "common/io_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/diag.h"
#include "keel/keel.h"

struct buf {
    uint8_t *ptr;
    size_t len;
    size_t cap;
};

struct file {
    struct file *next;
    char *path;       /* NULL once unlinked or replaced by a rename */
    int tracked;      /* image valid and writes recorded (implies path) */
    struct buf image; /* what a power loss leaves, before pending ops */
    unsigned nfds;    /* descriptors in the fd table referring to it */
};

struct fdent {
    struct fdent *next;
    int fd;
    struct file *file;
};

struct pending {
    struct pending *next;
    struct file *file;
    int is_truncate;
    uint64_t off; /* pwrite: offset; truncate: the new length */
    size_t len;   /* pwrite: bytes in data; truncate: 0 */
    uint8_t data[];
};

struct keel_io_fault {
    keel_io io; /* the table handed out; ops find the layer from it */
    pthread_mutex_t mu;
    keel_io *posix;
    keel_io_fault_plan plan;
    int crashed;
    uint64_t counts[KEEL_IO_OP_COUNT_]; /* [KEEL_IO_OP_ANY]: all kinds */
    struct file *files;
    struct fdent *fds;
    struct pending *head;
    struct pending **tail; /* the next pointer of the last op, or &head */
};

static keel_io_fault *from_io(keel_io *io)
{
    return (keel_io_fault *)((char *)io - offsetof(keel_io_fault, io));
}

static void lock(keel_io_fault *f)
{
    int e = pthread_mutex_lock(&f->mu);
    KEEL_ASSERT(e == 0);
}

static void unlock(keel_io_fault *f)
{
    int e = pthread_mutex_unlock(&f->mu);
    KEEL_ASSERT(e == 0);
}

/* ---- the plan ----------------------------------------------------------- */

/* Count one op (F1) and return what the plan makes of it. CRASH_BEFORE also
 * stands for "already crashed" (F3): the op must not run. */
static enum keel_io_fault_kind step(keel_io_fault *f, enum keel_io_op op)
{
    enum keel_io_fault_kind k = KEEL_IO_FAULT_NONE;
    f->counts[KEEL_IO_OP_ANY]++;
    f->counts[op]++;
    if (f->crashed) {
        k = KEEL_IO_FAULT_CRASH_BEFORE;
    } else if (f->plan.kind != KEEL_IO_FAULT_NONE &&
               (f->plan.op == KEEL_IO_OP_ANY || f->plan.op == op) &&
               f->counts[f->plan.op] == f->plan.nth) { /* F2 */
        k = f->plan.kind;
    }
    if (k == KEEL_IO_FAULT_CRASH_BEFORE || k == KEEL_IO_FAULT_CRASH_AFTER) {
        /* Set now, not after the op: the mutex is held until the op is
         * done, so no later op can slip in before it (F3, F4). */
        f->crashed = 1;
    }
    /* A plan counted over ANY can land on an op of another kind: a tear
     * there is a plain failure, a bit flip has nothing to flip. */
    if (k == KEEL_IO_FAULT_SHORT_WRITE && op != KEEL_IO_OP_PWRITE) {
        k = KEEL_IO_FAULT_FAIL;
    }
    if (k == KEEL_IO_FAULT_FLIP_READ && op != KEEL_IO_OP_PREAD) {
        k = KEEL_IO_FAULT_NONE;
    }
    return k;
}

/* What a refused op returns, or KEEL_OK when the op is to run. */
static int refusal(const keel_io_fault *f, enum keel_io_fault_kind k)
{
    int rc = KEEL_OK;
    if (k == KEEL_IO_FAULT_FAIL) {
        rc = f->plan.err;
    } else if (k == KEEL_IO_FAULT_CRASH_BEFORE) {
        rc = KEEL_EIO;
    }
    return rc;
}

/* ---- byte images -------------------------------------------------------- */

/* Set b's length to n, zero-filling any growth (as ftruncate and a pwrite
 * past the end do). */
static int buf_resize(struct buf *b, uint64_t n)
{
    int rc = KEEL_OK;
    if (n > SIZE_MAX) {
        rc = KEEL_ETOOBIG;
        goto out;
    }
    if (n > b->cap) {
        size_t cap = b->cap * 2 > n ? b->cap * 2 : (size_t)n;
        uint8_t *p = realloc(b->ptr, cap);
        if (p == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
        b->ptr = p;
        b->cap = cap;
    }
    if (n > b->len) {
        memset(b->ptr + b->len, 0, (size_t)n - b->len);
    }
    b->len = (size_t)n;
out:
    return rc;
}

/* Apply the first `len` bytes of pending op p (all of a truncate) to b. */
static int apply(struct buf *b, const struct pending *p, size_t len)
{
    int rc = KEEL_OK;
    if (p->is_truncate) {
        rc = buf_resize(b, p->off);
        goto out;
    }
    if (p->off > SIZE_MAX - len) {
        rc = KEEL_ETOOBIG;
        goto out;
    }
    if (p->off + len > b->len) {
        rc = buf_resize(b, p->off + len);
        if (rc < 0) {
            goto out;
        }
    }
    memcpy(b->ptr + p->off, p->data, len);
out:
    return rc;
}

/* Read the whole file at path into b with plain POSIX; a missing file is
 * an empty image. */
static int read_image(const char *path, struct buf *b)
{
    int rc = KEEL_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? KEEL_OK : keel_translate_errno(errno);
        goto out;
    }
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) {
        rc = keel_translate_errno(errno);
        goto out;
    }
    rc = buf_resize(b, (uint64_t)end);
    size_t done = 0;
    while (rc == KEEL_OK && done < b->len) {
        ssize_t n = pread(fd, b->ptr + done, b->len - done, (off_t)done);
        if (n < 0 && errno != EINTR) {
            rc = keel_translate_errno(errno);
        } else if (n == 0) {
            b->len = done; /* shrank under us: keep what exists */
        } else if (n > 0) {
            done += (size_t)n;
        }
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* Replace the contents of the file at path with b, with plain POSIX: this
 * is the harness acting, not the code under test. A file no longer there
 * is left alone. */
static int rewrite(const char *path, const struct buf *b)
{
    int rc = KEEL_OK;
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? KEEL_OK : keel_translate_errno(errno);
        goto out;
    }
    size_t done = 0;
    while (done < b->len) {
        ssize_t n = pwrite(fd, b->ptr + done, b->len - done, (off_t)done);
        if (n < 0 && errno != EINTR) {
            rc = keel_translate_errno(errno);
            goto out;
        }
        if (n > 0) {
            done += (size_t)n;
        }
    }
out:
    if (fd >= 0 && close(fd) != 0 && rc == KEEL_OK) {
        rc = keel_translate_errno(errno);
    }
    return rc;
}

/* ---- files, descriptors and pending ops ---------------------------------- */

static struct file *find_file(keel_io_fault *f, const char *path)
{
    struct file *fl = f->files;
    while (fl != NULL && (fl->path == NULL || strcmp(fl->path, path) != 0)) {
        fl = fl->next;
    }
    return fl;
}

static struct fdent **find_fd(keel_io_fault *f, int fd)
{
    struct fdent **pe = &f->fds;
    while (*pe != NULL && (*pe)->fd != fd) {
        pe = &(*pe)->next;
    }
    return pe;
}

/* The tracked file fd writes to, or NULL (not opened here, or untracked). */
static struct file *tracked_of(keel_io_fault *f, int fd)
{
    struct fdent *e = *find_fd(f, fd);
    return e != NULL && e->file->tracked ? e->file : NULL;
}

/* F8: free fl once nothing needs it. */
static void maybe_free(keel_io_fault *f, struct file *fl)
{
    if (!fl->tracked && fl->nfds == 0) {
        struct file **pp = &f->files;
        while (*pp != fl) {
            pp = &(*pp)->next;
        }
        *pp = fl->next;
        free(fl->path);
        free(fl->image.ptr);
        free(fl);
    }
}

/* Remove every pending op of fl; with fold, apply each to fl's image first
 * (a successful fsync, F6). Stops at the first failure to apply. */
static int drain(keel_io_fault *f, struct file *fl, int fold)
{
    int rc = KEEL_OK;
    struct pending **pp = &f->head;
    while (*pp != NULL && rc == KEEL_OK) {
        struct pending *p = *pp;
        if (p->file != fl) {
            pp = &p->next;
            continue;
        }
        if (fold) {
            rc = apply(&fl->image, p, p->len);
        }
        *pp = p->next;
        free(p);
    }
    while (*pp != NULL) {
        pp = &(*pp)->next;
    }
    f->tail = pp;
    return rc;
}

/* The file at fl's path is gone (unlinked, or a rename replaced it): drop
 * its tracking; descriptors still open on it write to a nameless file that
 * no power loss can bring back (F6). */
static void detach(keel_io_fault *f, struct file *fl)
{
    drain(f, fl, 0);
    free(fl->path);
    fl->path = NULL;
    free(fl->image.ptr);
    fl->image = (struct buf){0};
    fl->tracked = 0;
    maybe_free(f, fl);
}

static void push(keel_io_fault *f, struct pending *p)
{
    p->next = NULL;
    *f->tail = p;
    f->tail = &p->next;
}

static struct pending *new_pending(struct file *fl, int is_truncate,
                                   uint64_t off, const void *data, size_t len)
{
    struct pending *p = malloc(sizeof(*p) + len);
    if (p != NULL) {
        p->file = fl;
        p->is_truncate = is_truncate;
        p->off = off;
        p->len = len;
        if (len > 0) {
            memcpy(p->data, data, len);
        }
    }
    return p;
}

/* ---- the table ---------------------------------------------------------- */

static int fa_open(keel_io *io, const char *path, int flags, unsigned mode,
                   int *fd)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_OPEN));
    struct file *fresh = NULL;
    struct fdent *e = NULL;
    struct pending *trunc = NULL;
    struct buf image = {0};
    if (rc < 0) {
        goto out;
    }
    int writable = (flags & O_ACCMODE) != O_RDONLY;
    struct file *fl = find_file(f, path);
    int capture = writable && (fl == NULL || !fl->tracked);
    /* Everything that can fail is done before the real open, so that a
     * file opened is always a file tracked (F5, F7). */
    if (capture) {
        rc = read_image(path, &image);
        if (rc < 0) {
            goto out;
        }
    }
    if (fl == NULL) {
        fresh = calloc(1, sizeof(*fresh));
        if (fresh == NULL || (fresh->path = strdup(path)) == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
        fl = fresh;
    }
    e = malloc(sizeof(*e));
    if (e == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    if (writable && (flags & O_TRUNC)) {
        trunc = new_pending(fl, 1, 0, NULL, 0);
        if (trunc == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
    }
    int newfd = -1;
    rc = f->posix->open(f->posix, path, flags, mode, &newfd);
    if (rc < 0) {
        goto out;
    }
    if (fresh != NULL) {
        fresh->next = f->files;
        f->files = fresh;
        fresh = NULL;
    }
    if (capture) {
        fl->image = image;
        image = (struct buf){0};
        fl->tracked = 1;
    }
    if (trunc != NULL) {
        push(f, trunc);
        trunc = NULL;
    }
    e->fd = newfd;
    e->file = fl;
    e->next = f->fds;
    f->fds = e;
    e = NULL;
    fl->nfds++;
    *fd = newfd;
out:
    free(trunc);
    free(e);
    if (fresh != NULL) {
        free(fresh->path);
        free(fresh);
    }
    free(image.ptr);
    unlock(f);
    return rc;
}

static int fa_pread(keel_io *io, int fd, void *buf, size_t len, uint64_t off,
                    size_t *got)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    enum keel_io_fault_kind k = step(f, KEEL_IO_OP_PREAD);
    int rc = refusal(f, k);
    size_t n = 0;
    if (rc < 0) {
        goto out;
    }
    rc = f->posix->pread(f->posix, fd, buf, len, off, &n);
    if (rc < 0) {
        goto out;
    }
    if (k == KEEL_IO_FAULT_FLIP_READ && n > 0) {
        uint64_t bit = f->plan.flip_bit % (8 * (uint64_t)n);
        ((uint8_t *)buf)[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    *got = n;
out:
    unlock(f);
    return rc;
}

static int fa_pwrite(keel_io *io, int fd, const void *buf, size_t len,
                     uint64_t off)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    enum keel_io_fault_kind k = step(f, KEEL_IO_OP_PWRITE);
    int rc = refusal(f, k);
    struct pending *p = NULL;
    if (rc < 0) {
        goto out;
    }
    size_t n = len;
    if (k == KEEL_IO_FAULT_SHORT_WRITE && f->plan.torn_bytes < len) {
        n = (size_t)f->plan.torn_bytes;
    }
    struct file *fl = tracked_of(f, fd);
    if (fl != NULL && n > 0) {
        /* Copied before the write so that a write that happened is a write
         * recorded (F5). */
        p = new_pending(fl, 0, off, buf, n);
        if (p == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
    }
    rc = f->posix->pwrite(f->posix, fd, buf, n, off);
    if (rc < 0) {
        goto out;
    }
    if (p != NULL) {
        push(f, p);
        p = NULL;
    }
    if (k == KEEL_IO_FAULT_SHORT_WRITE) {
        rc = f->plan.err;
    }
out:
    free(p);
    unlock(f);
    return rc;
}

static int fa_fsync(keel_io *io, int fd)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_FSYNC));
    if (rc < 0) {
        goto out;
    }
    rc = f->posix->fsync(f->posix, fd);
    struct file *fl = tracked_of(f, fd);
    if (rc == KEEL_OK && fl != NULL) {
        /* fdatasync covers the inode, not the descriptor: the writes made
         * through every descriptor of the file become durable. */
        rc = drain(f, fl, 1);
    }
out:
    unlock(f);
    return rc;
}

static int fa_truncate(keel_io *io, int fd, uint64_t len)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_TRUNCATE));
    struct pending *p = NULL;
    if (rc < 0) {
        goto out;
    }
    struct file *fl = tracked_of(f, fd);
    if (fl != NULL) {
        p = new_pending(fl, 1, len, NULL, 0);
        if (p == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
    }
    rc = f->posix->truncate(f->posix, fd, len);
    if (rc == KEEL_OK && p != NULL) {
        push(f, p);
        p = NULL;
    }
out:
    free(p);
    unlock(f);
    return rc;
}

static int fa_size(keel_io *io, int fd, uint64_t *len)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_SIZE));
    if (rc == KEEL_OK) {
        rc = f->posix->size(f->posix, fd, len);
    }
    unlock(f);
    return rc;
}

static int fa_rename(keel_io *io, const char *from, const char *to)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_RENAME));
    char *to_copy = NULL;
    if (rc < 0) {
        goto out;
    }
    struct file *src = find_file(f, from);
    if (src != NULL) {
        to_copy = strdup(to);
        if (to_copy == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
    }
    rc = f->posix->rename(f->posix, from, to);
    if (rc < 0) {
        goto out;
    }
    struct file *dst = find_file(f, to);
    if (dst != NULL && dst != src) {
        detach(f, dst);
    }
    if (src != NULL) {
        /* The tracking follows the bytes: a `.tmp` written, synced and
         * renamed keeps its image under its final name. */
        free(src->path);
        src->path = to_copy;
        to_copy = NULL;
    }
out:
    free(to_copy);
    unlock(f);
    return rc;
}

static int fa_unlink(keel_io *io, const char *path)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_UNLINK));
    if (rc < 0) {
        goto out;
    }
    rc = f->posix->unlink(f->posix, path);
    struct file *fl = find_file(f, path);
    if (rc == KEEL_OK && fl != NULL) {
        detach(f, fl);
    }
out:
    unlock(f);
    return rc;
}

static int fa_fsync_dir(keel_io *io, const char *dir)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_FSYNC_DIR));
    if (rc == KEEL_OK) {
        rc = f->posix->fsync_dir(f->posix, dir);
    }
    unlock(f);
    return rc;
}

static int fa_close(keel_io *io, int fd)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_CLOSE));
    if (rc < 0) {
        goto out;
    }
    rc = f->posix->close(f->posix, fd);
    /* close() releases the descriptor even when it reports an error. */
    struct fdent **pe = find_fd(f, fd);
    struct fdent *e = *pe;
    if (e != NULL) {
        *pe = e->next;
        e->file->nfds--;
        maybe_free(f, e->file);
        free(e);
    }
out:
    unlock(f);
    return rc;
}

/* Directories hold no bytes: nothing to track, only the plan to follow. */
static int fa_mkdir(keel_io *io, const char *path, unsigned mode)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_MKDIR));
    if (rc == KEEL_OK) {
        rc = f->posix->mkdir(f->posix, path, mode);
    }
    unlock(f);
    return rc;
}

static int fa_rmdir(keel_io *io, const char *path)
{
    keel_io_fault *f = from_io(io);
    lock(f);
    int rc = refusal(f, step(f, KEEL_IO_OP_RMDIR));
    if (rc == KEEL_OK) {
        rc = f->posix->rmdir(f->posix, path);
    }
    unlock(f);
    return rc;
}

/* ---- the harness side --------------------------------------------------- */

/* Close every descriptor still in the table (F7); @return the first error. */
static int close_all(keel_io_fault *f)
{
    int rc = KEEL_OK;
    while (f->fds != NULL) {
        struct fdent *e = f->fds;
        f->fds = e->next;
        int rc2 = f->posix->close(f->posix, e->fd);
        if (rc == KEEL_OK) {
            rc = rc2;
        }
        e->file->nfds--;
        free(e);
    }
    return rc;
}

/* Drop all pending ops and files (descriptors must be closed already). */
static void forget(keel_io_fault *f)
{
    while (f->head != NULL) {
        struct pending *p = f->head;
        f->head = p->next;
        free(p);
    }
    f->tail = &f->head;
    while (f->files != NULL) {
        struct file *fl = f->files;
        f->files = fl->next;
        free(fl->path);
        free(fl->image.ptr);
        free(fl);
    }
}

int keel__io_fault_new(keel_io_fault **out)
{
    int rc = KEEL_OK;
    keel_io_fault *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        f = NULL;
        rc = KEEL_ENOMEM;
        goto out;
    }
    f->io = (keel_io){
        .open = fa_open,
        .pread = fa_pread,
        .pwrite = fa_pwrite,
        .fsync = fa_fsync,
        .truncate = fa_truncate,
        .size = fa_size,
        .rename = fa_rename,
        .unlink = fa_unlink,
        .fsync_dir = fa_fsync_dir,
        .mkdir = fa_mkdir,
        .rmdir = fa_rmdir,
        .close = fa_close,
    };
    f->posix = keel__io_posix();
    f->tail = &f->head;
out:
    *out = f;
    return rc;
}

void keel__io_fault_free(keel_io_fault *f)
{
    if (f != NULL) {
        /* Descriptors a crash abandoned are the layer's to close (F7). */
        close_all(f);
        forget(f);
        pthread_mutex_destroy(&f->mu);
        free(f);
    }
}

keel_io *keel__io_fault_io(keel_io_fault *f)
{
    return &f->io;
}

void keel__io_fault_set_plan(keel_io_fault *f, const keel_io_fault_plan *p)
{
    if (p != NULL) {
        /* A plan that can never fire, or a "failure" that succeeds, is a
         * bug in the test that wrote it. */
        KEEL_ASSERT(p->op >= KEEL_IO_OP_ANY && p->op < KEEL_IO_OP_COUNT_);
        KEEL_ASSERT(p->kind == KEEL_IO_FAULT_NONE || p->nth >= 1);
        KEEL_ASSERT((p->kind != KEEL_IO_FAULT_FAIL &&
                     p->kind != KEEL_IO_FAULT_SHORT_WRITE) ||
                    p->err < 0);
    }
    lock(f);
    if (p != NULL) {
        f->plan = *p;
    } else {
        f->plan = (keel_io_fault_plan){.kind = KEEL_IO_FAULT_NONE};
    }
    unlock(f);
}

void keel__io_fault_reset_counts(keel_io_fault *f)
{
    lock(f);
    memset(f->counts, 0, sizeof(f->counts));
    f->crashed = 0;
    unlock(f);
}

uint64_t keel__io_fault_count(const keel_io_fault *f, enum keel_io_op op)
{
    KEEL_ASSERT(op >= KEEL_IO_OP_ANY && op < KEEL_IO_OP_COUNT_);
    /* The mutex is not part of the observable state: locking it through a
     * const handle changes nothing a caller can see. */
    keel_io_fault *m = (keel_io_fault *)f;
    lock(m);
    uint64_t n = m->counts[op];
    unlock(m);
    return n;
}

int keel__io_fault_crashed(const keel_io_fault *f)
{
    keel_io_fault *m = (keel_io_fault *)f; /* as in keel__io_fault_count */
    lock(m);
    int c = m->crashed;
    unlock(m);
    return c;
}

int keel__io_fault_power_loss(keel_io_fault *f, uint64_t keep_bytes)
{
    lock(f);
    int rc = close_all(f);
    /* The images become the final contents in place: everything is
     * forgotten afterwards anyway. An op is reached while budget is left,
     * so keep_bytes == 0 leaves exactly the synced bytes (a truncate costs
     * nothing but still needs a byte of budget to be reached). */
    uint64_t budget = keep_bytes;
    for (struct pending *p = f->head; p != NULL && budget > 0; p = p->next) {
        size_t n = p->len < budget ? p->len : (size_t)budget;
        int rc2 = apply(&p->file->image, p, n);
        if (rc == KEEL_OK) {
            rc = rc2;
        }
        budget -= n;
    }
    for (struct file *fl = f->files; fl != NULL; fl = fl->next) {
        if (fl->tracked) {
            int rc2 = rewrite(fl->path, &fl->image);
            if (rc == KEEL_OK) {
                rc = rc2;
            }
        }
    }
    forget(f);
    f->plan = (keel_io_fault_plan){.kind = KEEL_IO_FAULT_NONE};
    f->crashed = 0;
    unlock(f);
    return rc;
}
