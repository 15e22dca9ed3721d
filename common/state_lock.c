/*
 * common/state_lock.c — STATE/lock, the lock that keeps one writer per
 * kernel state (kernel/kernel.c's open) and lets readers (a read-only
 * open, the audit, snapshot create) exclude writers without writing a byte.
 *
 * Invariants:
 *   SL1 A STATE that is not a directory, or whose lock path is not a
 *       regular file, is refused with a message saying so, before anything
 *       in it is opened or created.
 *   SL2 A writer holds STATE/lock exclusively (the file created if absent)
 *       and refuses another writer at once (KEEL_EBUSY); readers hold it
 *       shared, and a writer waits for them, up to READER_WAIT_MS.
 *   SL3 A reader never creates the lock file: a STATE no writer ever opened
 *       has none, and there is nothing to exclude then.
 */
#include "common/state_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/diag.h"

/* How long a writer waits for read-only commands (shared holders of
 * STATE/lock: status, recover --check, snapshot create) to finish. */
#define READER_WAIT_MS 10000

/* SL1: say what is wrong with STATE or its lock path, not what open()
 * then failed; path[4096] receives STATE/lock. */
static int check_lock_path(const char *dir, char *path, keel_diag *diag)
{
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s is not a directory (a keel state is a "
                          "directory)",
                          dir);
    }
    snprintf(path, 4096, "%s/lock", dir);
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s is a %s, expected keel's lock file (a regular "
                          "file)",
                          path,
                          S_ISDIR(st.st_mode)   ? "directory"
                          : S_ISLNK(st.st_mode) ? "symbolic link"
                                                : "special file");
    }
    return KEEL_OK;
}

int keel__state_check(const char *dir, keel_diag *diag)
{
    char path[4096];
    return check_lock_path(dir, path, diag);
}

int keel__state_lock(const char *dir, int *fd, keel_diag *diag)
{
    char path[4096];
    *fd = -1;
    int rc = check_lock_path(dir, path, diag);
    if (rc < 0) {
        return rc;
    }
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (*fd < 0) {
        int e = errno;
        /* strerror: the mapped code is coarser than the cause */
        return keel__diag(diag, keel_translate_errno(e),
                          "%s: cannot open lock file: %s", path, strerror(e));
    }
    const char *why = NULL;
    for (int waited = 0;; waited += 10) {
        if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
            return KEEL_OK;
        }
        if (errno != EWOULDBLOCK) {
            rc = keel_translate_errno(errno);
            break;
        }
        /* SL2: another writer holds it exclusively (refused at once), or
         * only readers hold it shared (wait for them, bounded). */
        if (flock(*fd, LOCK_SH | LOCK_NB) != 0) {
            rc =
                errno == EWOULDBLOCK ? KEEL_EBUSY : keel_translate_errno(errno);
            why = rc == KEEL_EBUSY ? "locked by another keel process" : NULL;
            break;
        }
        flock(*fd, LOCK_UN);
        if (waited >= READER_WAIT_MS) {
            rc = KEEL_EBUSY;
            why = "locked by another keel process (read-only commands held "
                  "it for 10 s)";
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(*fd);
    *fd = -1;
    return keel__diag(diag, rc, "%s: %s", dir,
                      why != NULL ? why : keel_strerror(rc));
}

/* SL3: a reader's lock: shared, on a lock file that is not created (a
 * STATE no writer ever opened has none: nothing to exclude then). */
int keel__state_lock_shared(const char *dir, int *fd, keel_diag *diag)
{
    char path[4096];
    *fd = -1;
    int rc = check_lock_path(dir, path, diag);
    if (rc < 0) {
        return rc;
    }
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (*fd < 0) {
        rc = keel_translate_errno(errno);
        return rc == KEEL_ENOENT
                   ? KEEL_OK
                   : keel__diag(diag, rc, "%s: cannot open lock file: %s", path,
                                keel_strerror(rc));
    }
    if (flock(*fd, LOCK_SH | LOCK_NB) != 0) {
        int busy = errno == EWOULDBLOCK;
        rc = busy ? KEEL_EBUSY : keel_translate_errno(errno);
        close(*fd);
        *fd = -1;
        return keel__diag(diag, rc, "%s: %s", dir,
                          busy ? "locked by another keel process"
                               : keel_strerror(rc));
    }
    return KEEL_OK;
}
