/*
 * store/replay.c — keel__store_replay() (store/replay.h): the one loop
 * that applies a WAL's records to a store.
 *
 * Invariants:
 *   RP1 Records from from_lsn on are applied in LSN order with no gap: a
 *       record whose LSN is not the expected one stops the replay (the
 *       gap callback's error, by default KEEL_ECORRUPT); nothing after it
 *       is applied.
 *   RP2 A record is applied only after the record callback accepted it,
 *       and only if its LSN is past the store's applied LSN (ST7): the
 *       audit and a restore read records the store already holds.
 *   RP3 A checkpoint is taken only between records, only when
 *       checkpoint_bytes are pending and the store is writable, and only
 *       after before_checkpoint succeeded (K11: what it commits is
 *       durable in the log).
 *   RP4 With a bounded last_lsn, the replay ends exactly after it: a
 *       store already past it, or a log that ends first, is
 *       KEEL_ECORRUPT.
 */
#include "store/replay.h"

#include <inttypes.h>
#include <string.h>

#include "common/diag.h"

void keel__store_replay_options_init(keel__store_replay_options *o)
{
    memset(o, 0, sizeof(*o));
    o->wal_name = "wal";
    o->last_lsn = KEEL__REPLAY_TO_END;
}

/* Name the store's file in a diag ("data.mdb: ..." becomes
 * "store/data.mdb: ..."). */
static void store_diag(keel_diag *d)
{
    keel_diag o = *d;
    if (strncmp(o.msg, "data.mdb", 8) == 0) {
        keel__diag(d, o.code, "store/%s", o.msg);
    }
}

static int default_gap(const char *name, const keel_wal_record *rec,
                       uint64_t expect, uint64_t applied, keel_diag *diag)
{
    return keel__diag(diag, KEEL_ECORRUPT,
                      "%s/%s: offset %" PRIu64 ": LSN %" PRIu64
                      ", expected LSN %" PRIu64 " after the store's "
                      "applied LSN %" PRIu64,
                      name, rec->segment, rec->offset, rec->lsn, expect,
                      applied);
}

int keel__store_replay(keel__store *s, const char *wal_dir,
                       const keel__store_replay_options *o,
                       keel__store_replay_report *rep, keel_diag *diag)
{
    uint64_t applied = keel__store_applied_lsn(s);
    uint64_t expect = o->from_lsn != 0 ? o->from_lsn : applied + 1;
    uint64_t last = o->last_lsn;
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    memset(rep, 0, sizeof(*rep));
    rep->last_lsn = expect - 1;
    KEEL_ASSERT(expect <= applied + 1);
    if (last != KEEL__REPLAY_TO_END && last < applied) { /* RP4 */
        return keel__diag(diag, KEEL_ECORRUPT,
                          "store/: applied LSN %" PRIu64
                          " is ahead of the WAL, which ends at LSN %" PRIu64,
                          applied, last);
    }
    if (last != KEEL__REPLAY_TO_END && last < expect) {
        return KEEL_OK; /* nothing to read */
    }
    keel_wal_options ro;
    keel_wal_options_init(&ro);
    ro.io = o->io;
    ro.kernel_id = keel__store_kernel_id(s);
    uint64_t open_lsn = o->open_lsn != 0 ? o->open_lsn : expect;
    int rc = keel_wal_reader_open(wal_dir, &ro, open_lsn, &r, &d);
    if (rc < 0) {
        keel__diag(diag, rc, "%s/: %s", o->wal_name, d.msg);
        goto out;
    }
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        int before = rec.lsn < expect;
        if (!before && rec.lsn != expect) { /* RP1 */
            rc = o->gap != NULL
                     ? o->gap(o->arg, &rec, expect, diag)
                     : default_gap(o->wal_name, &rec, expect, applied, diag);
            goto out;
        }
        int what = KEEL__REPLAY_APPLY;
        if (o->record != NULL) {
            what = o->record(o->arg, &rec, diag);
            if (what < 0) {
                rc = what;
                goto out;
            }
        }
        if (before) {
            continue;
        }
        if (what == KEEL__REPLAY_STOP) {
            break;
        }
        if (rec.lsn > applied) { /* RP2 */
            keel_diag ad; /* written only on failure: no 516-byte clear */
            ad.code = 0;
            ad.msg[0] = '\0';
            rc = keel__store_apply_encoded(s, rec.lsn, rec.payload.ptr,
                                           rec.payload.len, &ad);
            if (rc < 0) {
                keel__diag(
                    diag, rc, "%s/%s: offset %" PRIu64 ": LSN %" PRIu64 ": %s",
                    o->wal_name, rec.segment, rec.offset, rec.lsn, ad.msg);
                goto out;
            }
            rep->replayed++;
            rep->bytes += rec.payload.len;
        }
        rep->last_lsn = rec.lsn;
        expect++;
        /* RP3: a small overlay keeps replay fast (its lookups stay in
         * cache). */
        if (o->checkpoint_bytes != 0 && !keel__store_read_only(s) &&
            keel__store_pending_bytes(s) >= o->checkpoint_bytes) {
            rc = o->before_checkpoint != NULL
                     ? o->before_checkpoint(o->arg, diag)
                     : KEEL_OK;
            if (rc < 0) {
                goto out;
            }
            rc = keel__store_checkpoint(s, diag);
            if (rc < 0) { /* the store's fault, not the record's */
                store_diag(diag);
                goto out;
            }
        }
        if (rec.lsn == last) {
            break;
        }
    }
    if (rc < 0) {
        keel__diag(diag, rc, "%s/%s", o->wal_name, d.msg);
        goto out;
    }
    if (rc == 0) {
        rep->at_end = 1;
        keel_wal_reader_tail(r, &rep->tail);
    }
    rc = KEEL_OK;
    if (last != KEEL__REPLAY_TO_END && expect != last + 1) { /* RP4 */
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "%s/: replay stopped at LSN %" PRIu64
                        ", the log ends at %" PRIu64,
                        o->wal_name, expect - 1, last);
    }
out:
    keel_wal_reader_close(r);
    return rc;
}
