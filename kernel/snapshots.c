/*
 * kernel/snapshots.c — snapshots from inside the kernel's process: one on
 * demand (keel_kernel_snapshot) and the periodic ones of
 * keel_kernel_options.snapshot_every, with their retention and the WAL
 * retirement it allows.
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
 */
#include "kernel/kernel_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/diag.h"
#include "common/io.h"
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Delete all but the newest `keep` snapshots, and the `.tmp` of any
 * snapshot a crashed run did not finish (the state lock says none is being
 * written); *oldest: the LSN of the oldest one kept (0: none). */
static int prune(keel_kernel *k, keel_io *io, uint64_t *oldest, keel_diag *diag)
{
    int rc = KEEL_OK;
    uint64_t *lsns = NULL;
    size_t n = 0, cap = 0;
    *oldest = 0;
    DIR *d = opendir(k->snap_dir);
    if (d == NULL) {
        rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "%s: %s", k->snap_dir, keel_strerror(rc));
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
            snprintf(path, sizeof(path), "%s/%s", k->snap_dir, e->d_name);
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
            uint64_t *p = realloc(lsns, cap * sizeof(*lsns));
            if (p == NULL) {
                rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
                goto out;
            }
            lsns = p;
        }
        lsns[n++] = lsn;
    }
    if (n > 1) {
        qsort(lsns, n, sizeof(*lsns), cmp_u64);
    }
    size_t drop = n > k->o.snapshot_keep ? n - k->o.snapshot_keep : 0;
    for (size_t i = 0; i < drop; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%020" PRIu64 SNAP_SUFFIX, k->snap_dir,
                 lsns[i]);
        rc = io->unlink(io, path);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: %s", path, keel_strerror(rc));
            goto out;
        }
    }
    if (drop > 0 || removed) {
        rc = io->fsync_dir(io, k->snap_dir);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: fsync: %s", k->snap_dir,
                       keel_strerror(rc));
            goto out;
        }
    }
    *oldest = n > drop ? lsns[drop] : 0;
out:
    closedir(d);
    free(lsns);
    return rc;
}

int keel__k_periodic_snapshot(keel_kernel *k, keel_diag *diag)
{
    if (k->o.snapshot_every == 0 ||
        k->crank - k->snap_crank < k->o.snapshot_every) {
        return KEEL_OK;
    }
    keel_io *io = k->o.io != NULL ? k->o.io : keel__io_posix();
    int rc = keel__k_checkpoint(k, diag);
    if (rc < 0) {
        return rc;
    }
    k->snap_crank = k->crank;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%020" PRIu64 SNAP_SUFFIX, k->snap_dir,
             keel__store_checkpoint_lsn(k->store));
    /* A `.tmp` of this name is one a crash left at this LSN (the state
     * lock says nobody else writes here, KS4); the writer refuses to start
     * over it. prune() removes any other. */
    char tmp[4096 + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (access(tmp, F_OK) == 0 && (rc = io->unlink(io, tmp)) < 0) {
        return keel__diag(diag, rc, "%s: %s", tmp, keel_strerror(rc));
    }
    if (access(path, F_OK) != 0) {
        rc = keel_kernel_snapshot(k, path, NULL, diag);
    }
    uint64_t oldest = 0;
    if (rc == KEEL_OK) {
        rc = prune(k, io, &oldest, diag);
    }
    if (rc == KEEL_OK && oldest > 0) { /* KS2 */
        rc = keel_wal_retire(k->wal, oldest + 1, NULL, diag);
    }
    return rc;
}
