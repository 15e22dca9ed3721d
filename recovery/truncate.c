/*
 * recovery/truncate.c — `keel recover --truncate-at-corruption`: the
 * explicit way out for a log damaged mid-way, which the WAL reader (and so
 * keel_kernel_open) refuses with KEEL_ECORRUPT. Declared in
 * recovery_internal.h.
 *
 * Plan: read STATE/wal with the WAL reader (wal/wal_reader.c), its
 * segment headers checked as it reaches them (keel__wal_reader_open_lazy),
 * and stop where it refuses: a bad segment header, a segment of another
 * kernel, an LSN gap, a record that fails its checks in a segment that is
 * not the last, or in the last one with a verifying record after it. The
 * reader's position (keel_wal_reader_pos) says where. Everything before
 * that place is kept; that record and everything after it are dropped.
 * keel__wal_reader_scan() then counts the dropped records that still
 * verify, so the user is told which LSNs are lost although readable.
 *
 * Invariants:
 *   TR1 Nothing is changed unless keel__salvage_apply() is called, and it
 *       refuses (changing nothing) when the store's checkpoint holds
 *       effects of a record it would drop: that state could not be
 *       explained by the log that would remain.
 *   TR2 A torn tail is not salvage's business (opening the kernel
 *       truncates it, reporting it): the plan then says "not damaged".
 *   TR3 Order of changes: later segments are deleted newest first, then
 *       the damaged one is truncated and synced, then the directory is
 *       synced. Interrupted anywhere, the log left is the kept prefix plus
 *       a suffix of the doomed part, which a new plan salvages at the same
 *       point.
 *   TR4 All I/O goes through keel_io.
 *   TR5 keel__salvage_apply() holds the log's writer lock (wal_internal.h)
 *       while it changes the log, so no WAL writer appends meanwhile.
 *   TR6 The plan is the reader's verdict, not a copy of its rules: it
 *       calls "damaged" exactly what the reader refuses (the salt, RD5, and
 *       the declared-length rule, RD6, included), at the first damage in
 *       log order (RD8).
 */
#include "recovery/recovery_internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/diag.h"
#include "common/io.h"
#include "store/store.h"
#include "wal/wal_format.h"
#include "wal/wal_internal.h"

/* What is dropped beyond the damage (pos): the rest of the damaged
 * segment past the bad record's first byte (all of it when its header is
 * bad), every later segment, and the records among them that verify. */
static int count_dropped(keel_wal_reader *r, const keel_wal_pos *pos,
                         keel__salvage *pl, keel_diag *diag)
{
    uint64_t n = 0, first = 0, last = 0;
    for (size_t j = pos->seg_index; j < pos->segs; j++) {
        keel__wal_found f;
        uint64_t from =
            j == pos->seg_index && pos->offset > 0 ? pos->offset + 1 : 0;
        keel_diag sd = {0};
        int rc = keel__wal_reader_scan(r, j, from, 0, &f, &sd);
        if (rc < 0) {
            return keel__diag(diag, rc, "wal/%s", sd.msg);
        }
        if (j > pos->seg_index) {
            if (pl->seg_deleted == 0) {
                snprintf(pl->first_deleted, sizeof(pl->first_deleted), "%s",
                         f.segment);
            }
            pl->seg_deleted++;
            pl->seg_bytes += f.seg_bytes;
        }
        if (f.count > 0) {
            first = n == 0 || f.first_lsn < first ? f.first_lsn : first;
            last = f.last_lsn > last ? f.last_lsn : last;
            n += f.count;
        }
    }
    pl->readable = n;
    pl->readable_first_lsn = first;
    pl->readable_last_lsn = last;
    return KEEL_OK;
}

int keel__salvage_plan(const char *state_dir, keel_io *io, keel__salvage *plan,
                       keel_diag *diag)
{
    keel__store *st = NULL;
    keel__store_options so;
    keel_wal_reader *r = NULL;
    keel_diag sd = {0};
    memset(plan, 0, sizeof(*plan));
    char *store = keel__path_join(state_dir, "store");
    char *wal = keel__path_join(state_dir, "wal");
    int rc = store != NULL && wal != NULL ? KEEL_OK : KEEL_ENOMEM;
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    /* the store says which kernel the log must belong to, and how far its
     * checkpoint reached (TR1) */
    keel__store_options_init(&so);
    so.create = 0;
    rc = keel__store_open(store, &so, 0, &st, &sd);
    if (rc < 0) {
        keel__diag(diag, rc, "%s: %s", store, sd.msg);
        goto out;
    }
    plan->kernel_id = keel__store_kernel_id(st);
    plan->checkpoint_lsn = keel__store_checkpoint_lsn(st);
    keel__store_close(st);
    /* TR6: the reader itself finds the first damage in log order */
    keel_wal_options wo;
    keel_wal_options_init(&wo);
    wo.io = io;
    wo.kernel_id = plan->kernel_id;
    rc = keel__wal_reader_open_lazy(wal, &wo, 0, &r, diag);
    if (rc < 0) {
        goto out;
    }
    keel_wal_record rec;
    while ((rc = keel_wal_reader_next(r, &rec, &sd)) == 1) {
    }
    keel_wal_pos pos;
    keel_wal_reader_pos(r, &pos);
    if (rc == 0) { /* TR2: clean, or a torn tail */
        goto out;
    }
    if (pos.damage == KEEL_WAL_DAMAGE_IO ||
        pos.damage == KEEL_WAL_DAMAGE_NONE) {
        keel__diag(diag, rc, "wal/%s", sd.msg);
        goto out;
    }
    plan->damaged = 1;
    snprintf(plan->segment, sizeof(plan->segment), "%s", pos.segment);
    plan->offset = pos.offset;
    plan->first_lsn = pos.lsn;
    snprintf(plan->reason, sizeof(plan->reason), "%s", pos.reason);
    plan->cut_bytes = pos.seg_bytes - pos.offset;
    rc = count_dropped(r, &pos, plan, diag);
out:
    keel_wal_reader_close(r);
    free(store);
    free(wal);
    return rc;
}

int keel__salvage_apply(const char *state_dir, keel_io *io,
                        const keel__salvage *plan, keel_diag *diag)
{
    keel__wal_seg *segs = NULL;
    size_t nsegs = 0, at = 0;
    int fd = -1, lock_fd = -1;
    char *path = NULL;
    io = io != NULL ? io : keel__io_posix();
    char *wal = keel__path_join(state_dir, "wal");
    int rc = wal != NULL ? KEEL_OK : KEEL_ENOMEM;
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    if (!plan->damaged) {
        rc = keel__diag(diag, KEEL_EINVAL, "wal/: no corruption to salvage");
        goto out;
    }
    if (plan->checkpoint_lsn >= plan->first_lsn) { /* TR1 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "store/: its checkpoint at LSN %" PRIu64
                        " already holds effects of LSN %" PRIu64
                        " and later, which truncating wal/%s at offset %" PRIu64
                        " would drop; refusing (nothing changed)",
                        plan->checkpoint_lsn, plan->first_lsn, plan->segment,
                        plan->offset);
        goto out;
    }
    rc = keel__wal_lock(wal, &lock_fd, diag); /* TR5 */
    if (rc == KEEL_OK) {
        rc = keel__wal_list(wal, &segs, &nsegs, diag);
    }
    if (rc < 0) {
        goto out;
    }
    while (at < nsegs && strcmp(segs[at].name, plan->segment) != 0) {
        at++;
    }
    if (at == nsegs) {
        rc = keel__diag(diag, KEEL_EINVAL, "wal/%s: no longer there",
                        plan->segment);
        goto out;
    }
    /* TR3: newest first */
    for (size_t j = nsegs; rc == KEEL_OK && j-- > at;) {
        if (j == at && plan->offset > 0) {
            break;
        }
        free(path);
        path = keel__path_join(wal, segs[j].name);
        rc = path != NULL ? io->unlink(io, path) : KEEL_ENOMEM;
        if (rc < 0) {
            keel__diag(diag, rc, "wal/%s: unlink: %s", segs[j].name,
                       keel_strerror(rc));
        }
    }
    if (rc == KEEL_OK && plan->offset > 0) {
        free(path);
        path = keel__path_join(wal, plan->segment);
        rc = path != NULL ? io->open(io, path, O_RDWR, 0, &fd) : KEEL_ENOMEM;
        if (rc == KEEL_OK) {
            rc = io->truncate(io, fd, plan->offset);
        }
        if (rc == KEEL_OK) {
            rc = io->fsync(io, fd);
        }
        if (rc < 0) {
            keel__diag(diag, rc, "wal/%s: offset %" PRIu64 ": truncating: %s",
                       plan->segment, plan->offset, keel_strerror(rc));
        }
    }
    if (rc == KEEL_OK) {
        rc = io->fsync_dir(io, wal);
        if (rc < 0) {
            keel__diag(diag, rc, "wal/: fsync directory: %s",
                       keel_strerror(rc));
        }
    }
out:
    if (fd >= 0) {
        io->close(io, fd);
    }
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    free(path);
    free(segs);
    free(wal);
    return rc;
}
