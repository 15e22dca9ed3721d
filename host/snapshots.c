/*
 * host/snapshots.c — snapshots from inside the kernel's process: one on
 * demand (keel_kernel_snapshot) and the periodic ones of
 * keel_kernel_options.snapshot_every, with their retention and the WAL
 * retirement it allows. The host drives the periodic ones (host/compose.c
 * calls keel__psnap_* from the kernel's host hooks, host/snapshots.h); the
 * kernel knows nothing of snapshots.
 *
 * Invariants:
 *   KS1 A snapshot is of a checkpoint: the kernel checkpoints first (K11:
 *       after the WAL is durable), then writes from the store's own
 *       transaction, which then holds exactly that checkpoint (SS1).
 *   KS2 WAL segments retire only wholly before the oldest KEPT snapshot's
 *       LSN + 1, and only after that snapshot is durable under its final
 *       name: the oldest snapshot plus the log always rebuild the present,
 *       and `keel recover --check --base` can audit from it.
 *   KS3 A snapshot's failure is reported (keel_kernel_run returns it) but
 *       never fails the kernel: its state and log are untouched by it.
 *   KS4 Only names of the form `<20 digits>.ksnap` (and their `.tmp`) in
 *       the snapshot directory are ever deleted.
 *   KS5 The snapshot directory is checked before anything is committed
 *       (keel_kernel_open, before a new STATE is even created): it is a
 *       directory this process can create files in, and a new STATE's
 *       holds no snapshot (it would be another state's).
 *   KS6 A snapshot directory belongs to one history: at open every
 *       snapshot in it must be of this kernel id AND timeline (a restored
 *       copy shares the kernel id, never the timeline), or the open is
 *       refused; and an existing `<LSN>.ksnap` is adopted as this LSN's
 *       periodic snapshot only if its manifest equals this kernel's state
 *       there (kernel id, timeline, LSN, crank, activity hash), else the
 *       snapshot fails (KEEL_EEXIST) and the file is left as it is. So
 *       prune (KS2) never counts, keeps or retires the log for another
 *       state's file.
 */
#include "host/snapshots.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/diag.h"
#include "common/io.h"
#include "kernel/kernel_internal.h"
#include "snapshot/state.h"

#define SNAP_SUFFIX     ".ksnap"
#define SNAP_NAME_BYTES (20 + sizeof(SNAP_SUFFIX)) /* with the NUL */

int keel_kernel_snapshot(keel_kernel *k, const char *path,
                         struct keel_snapshot_info *info, keel_diag *diag)
{
    keel__store_view *v = NULL;
    int rc = KEEL_OK;
    if (k->failed) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return KEEL_EFAILED;
    }
    KEEL_ASSERT(!k->in_txn);
    rc = keel__k_checkpoint(k, diag); /* KS1 */
    if (rc == KEEL_OK) {
        rc = keel__store_view_of(k->store, &v, diag);
    }
    if (rc == KEEL_OK) {
        keel_snapshot_options so;
        keel_snapshot_options_init(&so);
        so.level = k->o.snapshot_level;
        rc = keel__snapshot_write_view(v, path, &so, info, diag);
    }
    keel__store_view_close(v);
    return rc;
}

/* The LSN a snapshot file name stands for, or 0 if it is not one (KS4);
 * *tmp: 1 for the `.tmp` of one. */
static uint64_t snap_lsn(const char *name, int *tmp)
{
    size_t n = strlen(name);
    *tmp = n == SNAP_NAME_BYTES - 1 + 4 && strcmp(name + n - 4, ".tmp") == 0;
    if (n != SNAP_NAME_BYTES - 1 + (*tmp ? 4 : 0) ||
        strncmp(name + 20, SNAP_SUFFIX, sizeof(SNAP_SUFFIX) - 1) != 0) {
        return 0;
    }
    uint64_t lsn = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        lsn = lsn * 10 + (uint64_t)(name[i] - '0');
    }
    return lsn;
}

/* Can this process create files in dir? An unnamed O_TMPFILE leaves no
 * trace; where the file system has none, a named probe is made and
 * removed. @return KEEL_OK or the errno's code (*what: what failed). */
static int dir_writable(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        char probe[4200];
        snprintf(probe, sizeof(probe), "%s/.keel-probe-%ld", dir,
                 (long)getpid());
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            unlink(probe);
        }
    }
    if (fd < 0) {
        return keel_translate_errno(errno);
    }
    close(fd);
    return KEEL_OK;
}

/* KS5: dir is a directory files can be created in; if state_dir has no
 * store yet, dir holds no snapshot. */
static int dir_check(const char *dir, const char *state_dir, keel_diag *diag)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        int rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "snapshot directory %s: %s", dir,
                          keel_strerror(rc));
    }
    if (!S_ISDIR(st.st_mode)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "snapshot directory %s is not a directory", dir);
    }
    int rc = dir_writable(dir);
    if (rc < 0) {
        return keel__diag(diag, rc,
                          "snapshot directory %s: cannot create files in it: "
                          "%s",
                          dir, keel_strerror(rc));
    }
    char store[4200];
    snprintf(store, sizeof(store), "%s/store", state_dir);
    if (stat(store, &st) == 0) {
        return KEEL_OK; /* KS6 checks an existing state's at open */
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "snapshot directory %s: %s", dir,
                          keel_strerror(rc));
    }
    struct dirent *e;
    while (rc == KEEL_OK && (e = readdir(d)) != NULL) {
        int tmp = 0;
        if (snap_lsn(e->d_name, &tmp) != 0 && !tmp) {
            rc = keel__diag(diag, KEEL_EEXIST,
                            "snapshot directory %s holds %s, a snapshot of "
                            "another state (%s is new): a snapshot directory "
                            "belongs to one state",
                            dir, e->d_name, state_dir);
        }
    }
    closedir(d);
    return rc;
}

int keel__psnap_init(keel__psnap *p, const keel_kernel_options *o,
                     const char *state_dir, keel_diag *diag)
{
    memset(p, 0, sizeof(*p));
    if (o->snapshot_every == 0 || o->read_only) { /* K17: none */
        return KEEL_OK;
    }
    if (o->snapshot_dir == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "periodic snapshots need a snapshot directory");
    }
    p->dir = strdup(o->snapshot_dir);
    if (p->dir == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    p->every = o->snapshot_every;
    p->keep = o->snapshot_keep != 0 ? o->snapshot_keep : 1;
    return dir_check(p->dir, state_dir, diag); /* KS5 */
}

void keel__psnap_free(keel__psnap *p)
{
    free(p->dir);
    p->dir = NULL;
}

/* The manifest of snapshot file path into *info. */
static int read_manifest(const char *path, keel_snapshot_info *info,
                         keel_diag *diag)
{
    keel_snapshot_reader *r = NULL;
    keel_diag d = {0};
    int rc = keel_snapshot_reader_open(path, NULL, &r, &d);
    if (rc == KEEL_OK) {
        keel_snapshot_reader_info(r, info);
    } else {
        keel__diag(diag, rc, "%s: cannot tell whose snapshot it is: %s", path,
                   d.msg);
    }
    keel_snapshot_reader_close(r);
    return rc;
}

int keel__psnap_attach(keel__psnap *p, keel_kernel *k, keel_diag *diag)
{
    if (p->dir == NULL) {
        return KEEL_OK;
    }
    p->crank = k->crank;
    keel__store_timeline tl;
    int rc = keel__store_get_timeline(k->store, &tl, diag);
    DIR *d = rc == KEEL_OK ? opendir(p->dir) : NULL;
    if (rc == KEEL_OK && d == NULL) {
        rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "snapshot directory %s: %s", p->dir,
                          keel_strerror(rc));
    }
    struct dirent *e;
    while (rc == KEEL_OK && (e = readdir(d)) != NULL) {
        int tmp = 0;
        if (snap_lsn(e->d_name, &tmp) == 0 || tmp) {
            continue;
        }
        char path[4200];
        keel_snapshot_info info;
        snprintf(path, sizeof(path), "%s/%s", p->dir, e->d_name);
        rc = read_manifest(path, &info, diag);
        if (rc == KEEL_OK && (info.meta.kernel_id != k->kernel_id ||
                              info.meta.timeline != tl.id)) {
            rc = keel__diag(diag, KEEL_EEXIST,
                            "%s: a snapshot of kernel 0x%016" PRIx64
                            ", timeline "
                            "%016" PRIx64 "; this state is kernel 0x%016" PRIx64
                            ", timeline %016" PRIx64 ": the snapshot directory "
                            "belongs to another state (give this one its own)",
                            path, info.meta.kernel_id, info.meta.timeline,
                            k->kernel_id, tl.id);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return rc;
}

/* KS6: adopt the existing file path as this LSN's snapshot only if it is
 * this kernel's state there. */
static int ck_adopt(keel_kernel *k, const char *path, keel_diag *diag)
{
    keel__store_timeline tl;
    keel_snapshot_info info;
    int rc = keel__store_get_timeline(k->store, &tl, diag);
    if (rc == KEEL_OK) {
        rc = read_manifest(path, &info, diag);
    }
    if (rc < 0) {
        return rc;
    }
    uint64_t lsn = keel__store_checkpoint_lsn(k->store);
    const keel_snapshot_meta *m = &info.meta;
    if (m->kernel_id == k->kernel_id && m->timeline == tl.id && m->lsn == lsn &&
        m->crank == k->crank && m->activity_hash == k->hash) {
        return KEEL_OK;
    }
    return keel__diag(diag, KEEL_EEXIST,
                      "%s exists and is not this state's snapshot: it holds "
                      "LSN %" PRIu64 ", crank %" PRIu64 ", activity hash "
                      "%016" PRIx64 ", timeline %016" PRIx64
                      "; this state is at LSN %" PRIu64 ", crank %" PRIu64
                      ", activity hash %016" PRIx64 ", timeline %016" PRIx64
                      " (the file is left as it is)",
                      path, m->lsn, m->crank, m->activity_hash, m->timeline,
                      lsn, k->crank, k->hash, tl.id);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Delete all but the newest `keep` snapshots, and the `.tmp` of any
 * snapshot a crashed run did not finish (the state lock says none is being
 * written); *oldest: the LSN of the oldest one kept (0: none). */
static int prune(keel__psnap *p, keel_io *io, uint64_t *oldest, keel_diag *diag)
{
    int rc = KEEL_OK;
    uint64_t *lsns = NULL;
    size_t n = 0, cap = 0;
    *oldest = 0;
    DIR *d = opendir(p->dir);
    if (d == NULL) {
        rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "%s: %s", p->dir, keel_strerror(rc));
    }
    struct dirent *e;
    int removed = 0;
    while ((e = readdir(d)) != NULL) {
        int tmp = 0;
        uint64_t lsn = snap_lsn(e->d_name, &tmp);
        if (lsn == 0) {
            continue;
        }
        if (tmp) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", p->dir, e->d_name);
            rc = io->unlink(io, path);
            if (rc < 0) {
                keel__diag(diag, rc, "%s: %s", path, keel_strerror(rc));
                goto out;
            }
            removed = 1;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(lsns, cap * sizeof(*lsns));
            if (grown == NULL) {
                rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
                goto out;
            }
            lsns = grown;
        }
        lsns[n++] = lsn;
    }
    if (n > 1) {
        qsort(lsns, n, sizeof(*lsns), cmp_u64);
    }
    size_t drop = n > p->keep ? n - p->keep : 0;
    for (size_t i = 0; i < drop; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%020" PRIu64 SNAP_SUFFIX, p->dir,
                 lsns[i]);
        rc = io->unlink(io, path);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: %s", path, keel_strerror(rc));
            goto out;
        }
    }
    if (drop > 0 || removed) {
        rc = io->fsync_dir(io, p->dir);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: fsync: %s", p->dir, keel_strerror(rc));
            goto out;
        }
    }
    *oldest = n > drop ? lsns[drop] : 0;
out:
    closedir(d);
    free(lsns);
    return rc;
}

int keel__psnap_after_crank(keel__psnap *p, keel_kernel *k, keel_diag *diag)
{
    if (p->dir == NULL || k->crank - p->crank < p->every) {
        return KEEL_OK;
    }
    keel_io *io = k->o.io != NULL ? k->o.io : keel__io_posix();
    int rc = keel__k_checkpoint(k, diag);
    if (rc < 0) {
        return rc;
    }
    p->crank = k->crank;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 SNAP_SUFFIX, p->dir,
             keel__store_checkpoint_lsn(k->store));
    /* A `.tmp` of this name is one a crash left at this LSN (the state
     * lock says nobody else writes here, KS4); the writer refuses to start
     * over it. prune() removes any other. */
    char tmp[4096 + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (access(tmp, F_OK) == 0 && (rc = io->unlink(io, tmp)) < 0) {
        return keel__diag(diag, rc, "%s: %s", tmp, keel_strerror(rc));
    }
    rc = access(path, F_OK) == 0 ? ck_adopt(k, path, diag) /* KS6 */
                                 : keel_kernel_snapshot(k, path, NULL, diag);
    uint64_t oldest = 0;
    if (rc == KEEL_OK) {
        rc = prune(p, io, &oldest, diag);
    }
    if (rc == KEEL_OK && oldest > 0) { /* KS2 */
        rc = keel_wal_retire(k->wal, oldest + 1, NULL, diag);
    }
    if (rc == KEEL_OK && k->o.observe != NULL) { /* K36 */
        keel_observation ob = {.what = KEEL_OBS_SNAPSHOT,
                               .lsn = keel__store_checkpoint_lsn(k->store),
                               .crank = k->crank,
                               .path = path};
        k->o.observe(k->o.observe_arg, &ob);
    }
    return rc;
}
