/*
 * store/replay.h — the one WAL-to-store replay loop: read a log's records
 * in LSN order without a gap and apply their write-sets to a store. A
 * kernel's open, a restore's roll-forward and the audit all replay with
 * it, adding their own checks per record through a callback.
 *
 * Calling sequence
 *     keel__store_replay_options o; keel__store_replay_options_init(&o);
 *     o.record = check_one; o.arg = me;    (optional)
 *     keel__store_replay_report rep;
 *     rc = keel__store_replay(s, "STATE/wal", &o, &rep, &d);
 */
#ifndef KEEL_STORE_REPLAY_H
#define KEEL_STORE_REPLAY_H

#include <stdint.h>

#include "keel/wal.h"
#include "store/store.h"

/* What a record callback tells the loop. */
enum {
    KEEL__REPLAY_APPLY = 0, /* apply the record (if the store lacks it) */
    KEEL__REPLAY_STOP = 1,  /* stop before it: the replay succeeded */
};

/* last_lsn when the replay goes to the end of the log. */
#define KEEL__REPLAY_TO_END UINT64_MAX

typedef struct keel__store_replay_options {
    struct keel_io *io; /* NULL: POSIX */
    /* How messages name the log directory: "<wal_name>/<segment>: ...";
     * default "wal". */
    const char *wal_name;
    /* The first LSN that must follow without a gap; 0 (default): the
     * store's applied LSN + 1. At most that (a record the store already
     * holds is read, given to the callback and not applied). */
    uint64_t from_lsn;
    /* The reader starts at the first record >= open_lsn (<= from_lsn);
     * records before from_lsn go to the callback only. 0: from_lsn. */
    uint64_t open_lsn;
    /* KEEL__REPLAY_TO_END (default), or the LSN the replay must reach
     * and stop after: a store past it, or a log that ends before it, is
     * KEEL_ECORRUPT. */
    uint64_t last_lsn;
    /* Checkpoint the store whenever this much is pending (0, default:
     * never; never for a read-only store). The records replayed must be
     * durable (K11), or before_checkpoint must make them so. */
    uint64_t checkpoint_bytes;
    /* Each record, before it is applied: < 0 stops the replay with that
     * error (the callback fills diag), KEEL__REPLAY_STOP stops it before
     * the record (success), KEEL__REPLAY_APPLY goes on. NULL: apply all. */
    int (*record)(void *arg, const keel_wal_record *rec, keel_diag *diag);
    /* A record whose LSN is not the expected one: fill diag, return the
     * error. NULL: KEEL_ECORRUPT "..., expected LSN N after the store's
     * applied LSN M". */
    int (*gap)(void *arg, const keel_wal_record *rec, uint64_t expect,
               keel_diag *diag);
    /* Before each checkpoint (a restore syncs the log it writes). */
    int (*before_checkpoint)(void *arg, keel_diag *diag);
    void *arg;
} keel__store_replay_options;

typedef struct keel__store_replay_report {
    uint64_t replayed;  /* records applied to the store */
    uint64_t bytes;     /* their payload bytes */
    uint64_t last_lsn;  /* the last LSN replayed or read past (from_lsn - 1
                           when none) */
    keel_wal_tail tail; /* where the valid log ends, when read to its end */
    int at_end;         /* 1: the reader reached the log's end */
} keel__store_replay_report;

/* Fill o with the defaults above. */
void keel__store_replay_options_init(keel__store_replay_options *o);

/*
 * Replay the log in wal_dir into s (RP1..RP4 in store/replay.c).
 * @return KEEL_OK; KEEL_ECORRUPT (a gap, a bad payload, a store ahead of
 *         last_lsn or a log that ends before it: the diag names segment,
 *         offset and LSN); the callbacks' errors; reader and store errors
 *         (a failed checkpoint's diag names "store/data.mdb").
 */
int keel__store_replay(keel__store *s, const char *wal_dir,
                       const keel__store_replay_options *o,
                       keel__store_replay_report *rep, keel_diag *diag);

#endif
