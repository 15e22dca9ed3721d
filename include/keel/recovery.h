/*
 * keel/recovery.h — the recovery audit: replay a kernel's whole retained
 * log into a shadow model, checking the kernel's invariants after every
 * transaction, and compare the result with the store.
 *
 * Calling sequence
 *     keel_audit_options o; keel_audit_options_init(&o);
 *     keel_audit_report rep;
 *     rc = keel_audit("STATE", &o, &rep, &diag);
 *     rc < 0: the audit could not run (locked, unreadable or corrupt log,
 *             a base that does not match the log): diag says why;
 *     rc == KEEL_OK: it ran; rep.violations == 0 means every check passed,
 *             otherwise rep names the first violation.
 *
 * What is checked (after every transaction, on the entities it touched,
 * and over everything at the end): no lost notification (a settled
 * promise has had, or has queued, exactly one notify per subscriber);
 * messages queue on a promise only while it is unresolved; each c-list is
 * a bijection; every kref named by a c-list, a promise or a queued item
 * exists; only a promise's decider resolves it, at most once; the activity
 * hash chain recomputed from the log equals the stored one. At the end the
 * shadow state must equal the store, table by table.
 *
 * The audit takes STATE's lock (KEEL_EBUSY while a kernel runs on it) and
 * changes nothing on disk.
 */
#ifndef KEEL_RECOVERY_H
#define KEEL_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_audit_options {
    /* The state the log starts from: NULL for genesis (the WAL must then
     * retain LSN 1), or a snapshot file whose LSN + 1 the WAL must
     * retain. */
    const char *base_snapshot;
    struct keel_io *io; /* WAL reads; NULL: POSIX */
} keel_audit_options;

KEEL_API void keel_audit_options_init(keel_audit_options *o);

typedef struct keel_audit_report {
    uint64_t base_lsn;     /* 0 (genesis) or the base snapshot's LSN */
    uint64_t first_lsn;    /* first LSN replayed (0: none) */
    uint64_t last_lsn;     /* last LSN replayed */
    uint64_t transactions; /* transactions checked */
    uint64_t cranks;       /* of which cranks */
    uint64_t bytes;        /* payload bytes replayed */
    uint64_t keys;         /* keys compared with the store at the end */
    uint64_t final_hash;   /* the activity hash after the last record */
    double seconds;
    uint64_t violations;    /* 0: sound; the audit stops at the first */
    uint64_t violation_lsn; /* where the first one was found */
    uint64_t violation_crank;
    char violation[512]; /* what, in one line */
} keel_audit_report;

/*
 * Audit the kernel state in state_dir (see above).
 * @return KEEL_OK (rep filled: check rep->violations), KEEL_EBUSY,
 *         KEEL_ENOENT, KEEL_ECORRUPT, KEEL_EVERSION, KEEL_EIO,
 *         KEEL_ENOMEM, KEEL_EINVAL. Blocks.
 */
KEEL_API int keel_audit(const char *state_dir, const keel_audit_options *o,
                        keel_audit_report *rep, keel_diag *diag);

#ifdef __cplusplus
}
#endif

#endif
