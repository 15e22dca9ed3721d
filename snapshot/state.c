/*
 * snapshot/state.c — snapshots of a kernel's state: create one from a
 * store's last checkpoint, restore one into a new STATE directory and roll
 * it forward through a WAL (API: keel/snapshot.h, "State snapshots").
 *
 * A state snapshot holds the store's keyspace split into tables by each
 * key's tag byte, named as store/keyspace.h names them ("meta", "runq",
 * "vat", "vatname", "clist", "object", "promise", "decider", "vatstore"):
 * keys are stored whole (binary), and since all keys of one tag sort
 * together (KS2), one in-order walk of the store writes every table once.
 * A key that does not decode (keel__ks_decode) is damage: create refuses
 * it. The manifest's LSN is the store's checkpoint LSN, its crank and
 * activity hash the k.crank and k.hash entries of that state.
 *
 * Invariants:
 *   SS1 A snapshot copies exactly one checkpoint: all entries come from one
 *       LMDB read transaction (or, in the kernel, from the store right
 *       after a checkpoint, with nothing applied since), and the manifest's
 *       LSN is that checkpoint's.
 *   SS2 A restore never makes a half-built STATE visible and never touches
 *       an existing one: it builds `<NEWSTATE>.restoring` (refused if it
 *       exists), syncs everything in it, and renames it to NEWSTATE only
 *       after the snapshot was verified to its last byte and every rolled-
 *       forward record was applied; then fsyncs the parent directory.
 *       "Syncs everything": the bulk load's unsynced commits are synced by
 *       load_finish, which also switches the environment to LMDB's synced
 *       commits (keel__store_synced()), so the roll-forward's checkpoints
 *       and the timeline commit are synced in LMDB's order; the log is
 *       synced before each checkpoint (K11) and the directory before the
 *       rename.
 *   SS3 Roll-forward (the store's one replay loop, keel__store_replay,
 *       with the checks below as its per-record callback) takes records
 *       from the given log only if they belong to the snapshot's kernel
 *       and continue it without a gap (first LSN = snapshot LSN + 1); the
 * restored STATE's own log holds exactly those records, so an audit from the
 * snapshot can check them. SS4 The manifest must agree with the entries: a
 * snapshot whose k.crank or k.hash differs from its manifest is refused
 * (ECORRUPT). SS5 Every restored state is a new timeline: a random id (not 0,
 * not its parent) recorded with its parent (the snapshot's timeline) and branch
 * LSN (the restored LSN) in the store's meta table, in a synced commit of its
 * own after the last checkpoint; a snapshot's manifest carries the timeline of
 * the state it copies. SS6 Roll-forward applies a record only if it continues
 * the history so far: its activity hash recomputed from the previous one (the
 *       manifest's for the first; store/activity.c, the kernel's own
 *       code) equals the k.hash it puts, and its crank is the previous
 *       one + 1 (a crank) or the same (any other record). A log of another
 *       timeline is refused naming both hashes and timelines.
 *   SS7 keel_snapshot_create() of a STATE no writer has open changes no
 *       byte under it (DESIGN §2.7): it holds STATE/lock shared for the
 *       read (a writer starting meanwhile gets KEEL_EBUSY) and opens the
 *       store without LMDB's lock file. Beside a running kernel it reads
 *       as an LMDB reader, registered in lock.mdb like any reader.
 *   SS8 A restore loads only keys of the keyspace (store/keyspace.h), each
 *       in the table its tag names (else ECORRUPT); a snapshot of a state
 *       of format version 1 (its one- and two-letter tables) is refused
 *       with KEEL_EVERSION naming the version and what to do.
 */
#include "keel/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sys/random.h>

#include <xxhash.h>

#include "common/clock.h"
#include "common/diag.h"
#include "common/state_lock.h"
#include "common/io.h"
#include "keel/wal.h"
#include "keel/kernel.h"
#include "store/activity.h"
#include "store/keyspace.h"
#include "store/replay.h"
#include "store/store.h"
#include "snapshot/state.h"

/* Checkpoint a roll-forward's store when this much is pending. */
#define ROLL_CHECKPOINT_BYTES (64u * 1024 * 1024)

/* The table of key (store/keyspace.h: its tag byte's name), or NULL when
 * the key does not decode: not a key of a kernel's keyspace. */
static const char *table_of(const keel_bytes *key)
{
    keel__ks_key d;
    return keel__ks_decode(key->ptr, key->len, &d)
               ? keel__ks_table_name(d.table)
               : NULL;
}

/* A u64 meta counter (k.crank, k.hash); absent: 0. */
static int counter_of(keel__store_view *v, uint8_t field, uint64_t *out,
                      keel_diag *diag)
{
    keel_bytes b;
    keel__key key;
    *out = 0;
    keel__ks_meta(&key, field);
    int rc = keel__store_view_get(v, key.b, key.n, &b, diag);
    if (rc == 1) {
        if (b.len != 8) {
            char name[32];
            return keel__diag(
                diag, KEEL_ECORRUPT, "store/: %s: bad value",
                keel__ks_render(key.b, key.n, name, sizeof(name)));
        }
        *out = keel__ks_rd64(b.ptr);
        rc = KEEL_OK;
    }
    return rc;
}

int keel__snapshot_write_view(keel__store_view *v, const char *path,
                              const keel_snapshot_options *o,
                              keel_snapshot_info *info, keel_diag *diag)
{
    keel_snapshot_writer *w = NULL;
    keel_snapshot_meta m = {.kernel_id = keel__store_view_kernel_id(v),
                            .lsn = keel__store_view_lsn(v)};
    keel__store_timeline tl;
    keel__store_view_timeline(v, &tl);
    m.timeline = tl.id;
    m.timeline_parent = tl.parent;
    m.timeline_branch_lsn = tl.branch_lsn;
    int rc = counter_of(v, KM_CRANK, &m.crank, diag);
    if (rc == KEEL_OK) {
        rc = counter_of(v, KM_HASH, &m.activity_hash, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel_snapshot_writer_open(path, o, &m, &w, diag);
    }
    const char *table = NULL;
    keel_bytes key, val;
    while (rc == KEEL_OK &&
           (rc = keel__store_view_next(v, &key, &val, diag)) == 1) {
        const char *t = table_of(&key);
        rc = KEEL_OK;
        if (t == NULL) {
            char kp[80];
            keel__ks_render(key.ptr, key.len, kp, sizeof(kp));
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "store/: key %s is not in keel's keyspace", kp);
            break;
        }
        if (t != table) { /* KS2: one table's keys sort together */
            table = t;
            rc = keel_snapshot_writer_add_table(w, table, diag);
        }
        if (rc == KEEL_OK) {
            rc = keel_snapshot_writer_put(w, key.ptr, key.len, val.ptr, val.len,
                                          diag);
        }
    }
    if (rc == KEEL_OK) {
        rc = keel_snapshot_writer_finish(w, info, diag);
    }
    keel_snapshot_writer_close(w);
    return rc;
}

int keel_snapshot_create(const char *state_dir, const char *path,
                         const keel_snapshot_options *o,
                         keel_snapshot_info *info, keel_diag *diag)
{
    keel__store_view *v = NULL;
    size_t n = strlen(state_dir) + sizeof("/store");
    char *store = malloc(n);
    if (store == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    snprintf(store, n, "%s/store", state_dir);
    keel_diag d = {0};
    /* SS7: no writer holds STATE's lock (a shared lock, the file never
     * created): read without LMDB's lock file, changing no byte. A running
     * kernel holds it: read beside it as an LMDB reader (its lock.mdb is
     * the running kernel's, which writes into the state anyway). */
    int lfd = -1;
    int rc = keel__state_lock_shared(state_dir, &lfd, &d);
    if (rc == KEEL_EINVAL) { /* SL1: not a state's directory or lock */
        free(store);
        return keel__diag(diag, rc, "%s", d.msg);
    }
    rc = lfd >= 0 ? keel__store_view_open_unshared(store, &v, &d)
                  : keel__store_view_open(store, &v, &d);
    if (rc < 0) {
        keel__diag(diag, rc, "%s: store/%s", state_dir, d.msg);
    } else {
        rc = keel__snapshot_write_view(v, path, o, info, diag);
    }
    keel__store_view_close(v);
    if (lfd >= 0) {
        close(lfd);
    }
    free(store);
    return rc;
}

void keel_snapshot_restore_options_init(keel_snapshot_restore_options *o)
{
    memset(o, 0, sizeof(*o));
}

/* Load the snapshot's entries into the new store (SS4: check them against
 * the manifest on the way). */
static int load_entries(keel_snapshot_reader *r, const keel_snapshot_info *si,
                        keel__store *s, const char *path, keel_diag *diag)
{
    keel_snapshot_entry e;
    keel_diag d = {0};
    int rc;
    uint64_t crank = 0, hash = 0;
    while ((rc = keel_snapshot_reader_next(r, &e, diag)) == 1) {
        keel__ks_key dk;
        const char *t = table_of(&e.key);
        if (t == NULL && strlen(e.table) <= 2) {
            /* SS8: version 1's tables were "c", "d", "k", "ko", ... */
            return keel__diag(diag, KEEL_EVERSION,
                              "%s: table \"%s\" is of state format version 1, "
                              "older than this keel's %d; this keel cannot "
                              "restore it: use a snapshot made by the same "
                              "keel version or start a new state",
                              path, e.table, KEEL_STATE_FORMAT_VERSION);
        }
        if (t == NULL || strcmp(t, e.table) != 0) {
            char kp[80];
            return keel__diag(
                diag, KEEL_ECORRUPT,
                "%s: table \"%s\" holds key %s, which is not "
                "one of its keys",
                path, e.table,
                keel__ks_render(e.key.ptr, e.key.len, kp, sizeof(kp)));
        }
        keel__ks_decode(e.key.ptr, e.key.len, &dk);
        if (dk.table == KS_META &&
            (dk.field == KM_CRANK || dk.field == KM_HASH) && e.value.len == 8) {
            uint64_t x = keel__ks_rd64(e.value.ptr);
            if (dk.field == KM_CRANK) {
                crank = x;
            } else {
                hash = x;
            }
        }
        rc = keel__store_load_put(s, e.key.ptr, e.key.len, e.value.ptr,
                                  e.value.len, &d);
        if (rc < 0) {
            return keel__diag(diag, rc, "%s: %s", path, d.msg);
        }
    }
    if (rc == 0 &&
        (crank != si->meta.crank || hash != si->meta.activity_hash)) {
        rc = keel__diag(
            diag, KEEL_ECORRUPT,
            "%s: manifest says crank %" PRIu64 ", activity hash %016" PRIx64
            "; the state holds crank %" PRIu64 ", hash %016" PRIx64,
            path, si->meta.crank, si->meta.activity_hash, crank, hash);
    }
    return rc;
}

/* The timeline of the state whose log wal_dir is (its ../store), if that
 * store can be read: for messages only. @return 1 and *t, or 0. */
static int log_timeline(const char *wal_dir, uint64_t kernel_id,
                        keel__store_timeline *t)
{
    char *state = keel__path_dir(wal_dir);
    char *store = state != NULL ? keel__path_join(state, "store") : NULL;
    keel__store_view *v = NULL;
    keel_diag d = {0};
    int ok = store != NULL && keel__store_view_open(store, &v, &d) == KEEL_OK &&
             keel__store_view_kernel_id(v) == kernel_id;
    if (ok) {
        keel__store_view_timeline(v, t);
    }
    keel__store_view_close(v);
    free(store);
    free(state);
    return ok;
}

/*
 * SS6: refuse a record that does not continue the history so far (hash
 * *h at crank *crank): its crank must follow, its k.hash must chain from
 * *h. log_h: the log's own hash at the snapshot's LSN when it was read
 * (have_log_h), for the message. On KEEL_OK *h and *crank move on.
 */
static int ck_continues(XXH3_state_t *st, const char *path,
                        const keel_snapshot_info *si, const char *wal_dir,
                        const keel_wal_record *rec, uint64_t *h,
                        uint64_t *crank, int have_log_h, uint64_t log_h,
                        keel_diag *diag)
{
    keel_diag d = {0};
    uint64_t want = 0, stored = 0;
    int first = rec->lsn == si->meta.lsn + 1;
    int rc = keel__activity_hash_record(st, *h, rec->kind, rec->crank,
                                        rec->payload.ptr, rec->payload.len,
                                        &want, &stored, &d);
    if (rc < 0) {
        return keel__diag(diag, rc, "%s: %s: LSN %" PRIu64 ": %s", wal_dir,
                          rec->segment, rec->lsn, d.msg);
    }
    /* The crank is hashed too: once the chain holds, it follows (unless
     * the hash collides); the chain is checked first for its message. */
    uint64_t next = rec->kind == KEEL_WAL_CRANK ? *crank + 1 : *crank;
    if (stored == want && rec->crank != next) {
        return keel__diag(
            diag, KEEL_ECORRUPT,
            "%s: %s: LSN %" PRIu64 " is a %s record of crank "
            "%" PRIu64 " after crank %" PRIu64 ": the log does not continue %s",
            wal_dir, rec->segment, rec->lsn, keel_wal_kind_name(rec->kind),
            rec->crank, *crank, first ? path : "its own history");
    }
    if (stored == want) {
        *h = stored;
        *crank = rec->crank;
        return KEEL_OK;
    }
    if (!first) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "%s: %s: LSN %" PRIu64
                          " puts activity hash %016" PRIx64
                          ", the chain before it gives %016" PRIx64
                          ": the log is spliced from another history",
                          wal_dir, rec->segment, rec->lsn, stored, want);
    }
    char logs[160] = "";
    keel__store_timeline lt;
    if (have_log_h) {
        snprintf(logs, sizeof(logs),
                 "the log's activity hash at LSN %" PRIu64 " is %016" PRIx64,
                 si->meta.lsn, log_h);
    } else {
        snprintf(logs, sizeof(logs),
                 "its first record puts activity hash "
                 "%016" PRIx64 ", chained from the snapshot's it would be "
                 "%016" PRIx64,
                 stored, want);
    }
    char tls[96] = "";
    if (log_timeline(wal_dir, si->meta.kernel_id, &lt)) {
        snprintf(tls, sizeof(tls), " (its state is of timeline %016" PRIx64 ")",
                 lt.id);
    }
    return keel__diag(diag, KEEL_ECORRUPT,
                      "%s: the log is of another timeline than %s: %s%s; the "
                      "snapshot's activity hash at LSN %" PRIu64
                      " is %016" PRIx64 " (timeline %016" PRIx64 ")",
                      wal_dir, path, logs, tls, si->meta.lsn,
                      si->meta.activity_hash, si->meta.timeline);
}

/* What the roll-forward's per-record check needs (SS3, SS6). */
typedef struct roll {
    const char *path;
    const keel_snapshot_info *si;
    const keel_snapshot_restore_options *o;
    keel_wal *w;
    keel_snapshot_restore_report *rep;
    XXH3_state_t *st;
    uint64_t h, crank, log_h;
    int have_log_h;
} roll;

/* keel__store_replay's record callback: check that rec continues the
 * history (SS6), then copy it into the new log (SS3). */
static int roll_record(void *arg, const keel_wal_record *rec, keel_diag *diag)
{
    roll *r = arg;
    const keel_snapshot_restore_options *o = r->o;
    keel_diag d = {0};
    if (rec->lsn <= r->si->meta.lsn) { /* the snapshot's own: its hash */
        uint64_t ignored;
        r->have_log_h =
            rec->lsn == r->si->meta.lsn &&
            keel__activity_hash_record(r->st, 0, rec->kind, rec->crank,
                                       rec->payload.ptr, rec->payload.len,
                                       &ignored, &r->log_h, NULL) == KEEL_OK;
        return KEEL__REPLAY_APPLY; /* read only: the store has it */
    }
    if ((o->to_lsn != 0 && rec->lsn > o->to_lsn) ||
        (o->to_crank != 0 && rec->crank > o->to_crank)) {
        return KEEL__REPLAY_STOP;
    }
    int rc = ck_continues(r->st, r->path, r->si, o->wal_dir, rec, &r->h,
                          &r->crank, r->have_log_h, r->log_h, diag);
    if (rc < 0) {
        return rc;
    }
    uint64_t lsn = 0;
    rc = keel_wal_append(r->w, rec->kind, rec->crank, rec->payload.ptr,
                         rec->payload.len, &lsn, &d);
    if (rc < 0) {
        return keel__diag(diag, rc, "%s: %s: LSN %" PRIu64 ": %s", o->wal_dir,
                          rec->segment, rec->lsn, d.msg);
    }
    KEEL_ASSERT(lsn == rec->lsn);
    r->rep->lsn = rec->lsn;
    r->rep->crank = rec->crank;
    return KEEL__REPLAY_APPLY;
}

static int roll_gap(void *arg, const keel_wal_record *rec, uint64_t expect,
                    keel_diag *diag)
{
    const roll *r = arg;
    return keel__diag(diag, KEEL_ECORRUPT,
                      "%s: the log continues at LSN %" PRIu64
                      ", the snapshot ends at LSN %" PRIu64
                      ": records are missing",
                      r->o->wal_dir, rec->lsn, r->si->meta.lsn);
}

/* K11 for the new log: what a checkpoint commits is durable in it. */
static int roll_sync(void *arg, keel_diag *diag)
{
    const roll *r = arg;
    keel_diag d = {0};
    int rc = keel_wal_sync(r->w, &d);
    return rc < 0 ? keel__diag(diag, rc, "%s: %s", r->o->wal_dir, d.msg)
                  : KEEL_OK;
}

/*
 * SS3, SS6: copy the records after the snapshot from o->wal_dir into the
 * new log and apply them to the new store (keel__store_replay), up to
 * o->to_lsn / o->to_crank, each checked to continue the snapshot's
 * history.
 */
static int roll_forward(const char *path, const keel_snapshot_info *si,
                        const keel_snapshot_restore_options *o, keel__store *s,
                        keel_wal *w, keel_snapshot_restore_report *rep,
                        keel_diag *diag)
{
    roll r = {.path = path,
              .si = si,
              .o = o,
              .w = w,
              .rep = rep,
              .h = si->meta.activity_hash,
              .crank = si->meta.crank};
    keel__store_replay_options ro;
    keel__store_replay_report rr;
    keel__store_replay_options_init(&ro);
    ro.io = o->io;
    ro.wal_name = o->wal_dir;
    ro.open_lsn = si->meta.lsn; /* the snapshot's own record, if kept */
    ro.from_lsn = si->meta.lsn + 1;
    ro.checkpoint_bytes = ROLL_CHECKPOINT_BYTES;
    ro.record = roll_record;
    ro.gap = roll_gap;
    ro.before_checkpoint = roll_sync;
    ro.arg = &r;
    r.st = XXH3_createState();
    int rc = r.st != NULL ? keel__store_replay(s, o->wal_dir, &ro, &rr, diag)
                          : keel__diag(diag, KEEL_ENOMEM, "out of memory");
    XXH3_freeState(r.st);
    if (rc < 0) {
        return rc;
    }
    rep->rolled_forward = rr.replayed;
    if (o->to_lsn != 0 && rep->lsn < o->to_lsn) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: the log ends at LSN %" PRIu64
                        ", before --to-lsn %" PRIu64,
                        o->wal_dir, rr.last_lsn, o->to_lsn);
    } else if (o->to_crank != 0 && rep->crank < o->to_crank) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: the log ends at crank %" PRIu64
                        ", before --to-crank %" PRIu64,
                        o->wal_dir, rep->crank, o->to_crank);
    }
    return rc;
}

/* SS5: a random timeline id, neither 0 (a kernel's first) nor parent. */
static int new_timeline(uint64_t *id, uint64_t parent, keel_diag *diag)
{
    *id = 0;
    while (*id == 0 || *id == parent) {
        if (getrandom(id, sizeof(*id), 0) != (ssize_t)sizeof(*id)) {
            int rc = keel_translate_errno(errno);
            return keel__diag(diag, rc, "getrandom: %s", keel_strerror(rc));
        }
    }
    return KEEL_OK;
}

/* Build the STATE in dir (which must not exist) from the open reader. */
static int build(keel_snapshot_reader *r, const char *path, const char *dir,
                 const keel_snapshot_restore_options *o,
                 keel_snapshot_restore_report *rep, keel_diag *diag)
{
    keel_io *io = o->io != NULL ? o->io : keel__io_posix();
    keel__store *s = NULL;
    keel_wal *w = NULL;
    keel_diag d = {0};
    const keel_snapshot_info *si = &rep->snapshot;
    char *store = keel__path_join(dir, "store");
    char *wal = keel__path_join(dir, "wal");
    int rc = store != NULL && wal != NULL ? KEEL_OK : KEEL_ENOMEM;
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    /* 0700 as a kernel's own new STATE: it will hold the control socket */
    if ((rc = io->mkdir(io, dir, 0700)) < 0) {
        keel__diag(diag, rc, "%s: %s", dir, keel_strerror(rc));
        goto out;
    }
    keel__store_options so;
    keel__store_options_init(&so);
    so.io = o->io;
    so.bulk = 1; /* SS2: nobody sees it before it is complete and synced */
    /* Room for the entries, their checksums and the B-tree's pages. */
    so.map_bytes = 2 * (si->bytes + 16 * si->entries) + (256u << 20);
    so.map_bytes = so.map_bytes > KEEL__STORE_DEFAULT_MAP_BYTES
                       ? so.map_bytes
                       : KEEL__STORE_DEFAULT_MAP_BYTES;
    rc = keel__store_open(store, &so, si->meta.kernel_id, &s, &d);
    if (rc < 0) {
        keel__diag(diag, rc, "%s: store/%s", dir, d.msg);
        goto out;
    }
    rc = load_entries(r, si, s, path, diag);
    if (rc < 0) {
        goto out;
    }
    rc = keel__store_load_finish(s, si->meta.lsn, &d);
    if (rc == KEEL_OK) {
        keel_wal_options wo;
        keel_wal_options_init(&wo);
        wo.io = o->io;
        wo.kernel_id = si->meta.kernel_id;
        wo.first_lsn = si->meta.lsn + 1;
        wo.sync = KEEL_SYNC_GROUP; /* synced once, below */
        rc = keel_wal_open(wal, &wo, &w, NULL, &d);
    }
    if (rc < 0) {
        keel__diag(diag, rc, "%s: %s", dir, d.msg);
        goto out;
    }
    rep->lsn = si->meta.lsn;
    rep->crank = si->meta.crank;
    if (o->wal_dir != NULL) {
        rc = roll_forward(path, si, o, s, w, rep, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel_wal_sync(w, &d);
        if (rc == KEEL_OK) {
            rc = keel__store_checkpoint(s, &d);
        }
        if (rc == KEEL_OK) { /* SS5 */
            keel__store_timeline tl = {.parent = si->meta.timeline,
                                       .branch_lsn = rep->lsn};
            rc = new_timeline(&tl.id, tl.parent, &d);
            if (rc == KEEL_OK) {
                rc = keel__store_set_timeline(s, &tl, &d);
            }
            rep->timeline = tl.id;
        }
        if (rc < 0) {
            keel__diag(diag, rc, "%s: %s", dir, d.msg);
        }
    }
    if (rc == KEEL_OK) {
        rc = io->fsync_dir(io, dir);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: fsync: %s", dir, keel_strerror(rc));
        }
    }
out:
    if (w != NULL) {
        int wrc = keel_wal_close(w, &d);
        if (rc == KEEL_OK && wrc < 0) {
            rc = keel__diag(diag, wrc, "%s: %s", dir, d.msg);
        }
    }
    keel__store_close(s);
    free(store);
    free(wal);
    return rc;
}

/* Remove what a failed restore built (best effort: it was never visible;
 * it holds only store/ and wal/, each a flat directory of files). */
static void remove_tree(keel_io *io, const char *dir)
{
    const char *subs[] = {"store", "wal"};
    for (size_t i = 0; i < 2; i++) {
        char *sub = keel__path_join(dir, subs[i]);
        DIR *dh = sub != NULL ? opendir(sub) : NULL;
        struct dirent *e;
        while (dh != NULL && (e = readdir(dh)) != NULL) {
            char *f = keel__path_join(sub, e->d_name);
            if (f != NULL && e->d_name[0] != '.') {
                io->unlink(io, f);
            }
            free(f);
        }
        if (dh != NULL) {
            closedir(dh);
        }
        if (sub != NULL) {
            io->rmdir(io, sub);
        }
        free(sub);
    }
    io->rmdir(io, dir);
}

int keel_snapshot_restore(const char *path, const char *new_state,
                          const keel_snapshot_restore_options *opts,
                          keel_snapshot_restore_report *rep, keel_diag *diag)
{
    keel_snapshot_restore_options o;
    keel_snapshot_restore_report local;
    keel_snapshot_reader *r = NULL;
    char *tmp = NULL;
    char *parent = NULL;
    int built = 0;
    uint64_t t0 = keel__now_ns();
    if (opts != NULL) {
        o = *opts;
    } else {
        keel_snapshot_restore_options_init(&o);
    }
    if (rep == NULL) {
        rep = &local;
    }
    memset(rep, 0, sizeof(*rep));
    keel_io *io = o.io != NULL ? o.io : keel__io_posix();
    int rc = KEEL_OK;
    struct stat st;
    if (o.to_lsn != 0 && o.to_crank != 0) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "give --to-lsn or --to-crank, not both");
        goto out;
    }
    if ((o.to_lsn != 0 || o.to_crank != 0) && o.wal_dir == NULL) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "a point in time needs a log to roll forward (--wal)");
        goto out;
    }
    if (lstat(new_state, &st) == 0) {
        rc = keel__diag(diag, KEEL_EEXIST,
                        "%s exists; a restore never overwrites a state",
                        new_state);
        goto out;
    }
    size_t n = strlen(new_state) + sizeof(".restoring");
    tmp = malloc(n);
    parent = keel__path_dir(new_state);
    if (tmp == NULL || parent == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, n, "%s.restoring", new_state);
    if (lstat(tmp, &st) == 0) {
        rc = keel__diag(diag, KEEL_EEXIST,
                        "%s exists: an interrupted restore, or one running; "
                        "remove it when none runs",
                        tmp);
        goto out;
    }
    keel_snapshot_options so;
    keel_snapshot_options_init(&so);
    so.io = o.io;
    rc = keel_snapshot_reader_open(path, &so, &r, diag);
    if (rc < 0) {
        goto out;
    }
    keel_snapshot_reader_info(r, &rep->snapshot);
    if (o.to_lsn != 0 && o.to_lsn < rep->snapshot.meta.lsn) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "--to-lsn %" PRIu64 " is before the snapshot's LSN "
                        "%" PRIu64,
                        o.to_lsn, rep->snapshot.meta.lsn);
        goto out;
    }
    if (o.to_crank != 0 && o.to_crank < rep->snapshot.meta.crank) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "--to-crank %" PRIu64 " is before the snapshot's "
                        "crank %" PRIu64,
                        o.to_crank, rep->snapshot.meta.crank);
        goto out;
    }
    built = 1;
    rc = build(r, path, tmp, &o, rep, diag);
    if (rc == KEEL_OK) { /* SS2 */
        rc = io->rename(io, tmp, new_state);
        if (rc == KEEL_OK) {
            built = 0;
            rc = io->fsync_dir(io, parent);
        }
        if (rc < 0) {
            keel__diag(diag, rc, "%s: %s", new_state, keel_strerror(rc));
        }
    }
out:
    if (built && rc < 0) {
        remove_tree(io, tmp);
    }
    keel_snapshot_reader_close(r);
    free(tmp);
    free(parent);
    rep->seconds = (double)(keel__now_ns() - t0) / 1e9;
    return rc;
}
