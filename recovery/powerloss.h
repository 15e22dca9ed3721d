/*
 * recovery/powerloss.h — power-loss crash states built from a recorded
 * trace of a real `keel` process (ALICE, OSDI '14; CrashMonkey, OSDI '18):
 * the machinery behind `keel crashtest --mode powerloss` and
 * tests/test_powerloss.c. docs/testing.md ("Power-loss testing") has the
 * model, what is covered and what is not.
 *
 * A session runs `keel` as a child with the recorder (recovery/plrec.c,
 * libkeel_plrec.so) preloaded, which traces every call that changes or
 * syncs a file or a directory under a root directory, LMDB's included.
 * From the trace it builds crash states: for a crash point c (the trace up
 * to and including operation c) the operations made durable by a sync up
 * to c, plus a chosen part of those that were not. It writes each into a
 * fresh directory, opens it with keel (recovery), runs keel_audit on it
 * and compares it with the reference: the run that made the trace.
 *
 * The model (the weakest POSIX allows; weaker than ext4's ordered mode):
 *   - a file's data (writes, truncations, O_TRUNC) is durable once an
 *     fsync or fdatasync of that file (or msync of its mapping, sync(),
 *     syncfs()) returned after it; a write through an O_DSYNC/O_SYNC
 *     descriptor is durable when it returns;
 *   - a name (create, mkdir, rename, unlink, rmdir) is durable once an
 *     fsync of its directory returned after it (a rename: of both
 *     directories); fsync of a file does not make its name durable, and
 *     sync_file_range makes nothing durable;
 *   - anything not durable at c may or may not have reached the disk, in
 *     any combination and order, and a data write may be torn at a 512-byte
 *     boundary. The states tried at c: only the durable (DURABLE), the
 *     durable and everything else (ALL: the page cache survived), the
 *     durable and a prefix of the rest in trace order (PREFIX), and the
 *     durable and a seeded random subset of the rest (SUBSET).
 * lock.mdb, LMDB's reader table (shared memory, recreated on open), is
 * never written into a crash state.
 *
 * Invariants:
 *   PL1 A crash state holds every operation durable at its crash point;
 *       an operation after the crash point is never in it.
 *   PL2 Operations are applied in trace order; one whose target is not in
 *       the crash state (a rename of a name whose creation was lost) does
 *       nothing.
 *   PL3 Trials are a function of the trace, the seed and the trial count:
 *       `--trial T` with the same seed and count rebuilds trial T, as long
 *       as the traced run makes the same calls again (a restore's log is
 *       written by the group syncer, whose batches depend on timing).
 *   PL4 A crash state passes when: the state is absent only if nothing was
 *       acknowledged; it opens; its log ends at or after the last LSN the
 *       reference had acknowledged at the crash point (run: every record a
 *       completed fdatasync covered, names regardless; restore: after the
 *       directory sync that published NEWSTATE, every record restored);
 *       its activity hash is the reference's at that LSN; the audit passes.
 */
#ifndef KEEL_RECOVERY_POWERLOSS_H
#define KEEL_RECOVERY_POWERLOSS_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

/* ---- traces and crash states ---------------------------------------------
 */

typedef struct keel__pl_trace keel__pl_trace;

/*
 * Load and resolve a trace (recovery/plrec_format.h): every path to its
 * file or directory, every operation to when it became durable.
 * @return KEEL_OK; KEEL_ECORRUPT (not a trace, cut short, an operation on
 *         a file the trace never made: diag names the record); KEEL_EIO.
 */
int keel__pl_trace_load(const char *path, keel__pl_trace **out,
                        keel_diag *diag);
void keel__pl_trace_free(keel__pl_trace *t);
size_t keel__pl_trace_ops(const keel__pl_trace *t);
/* Test hook: forget every fsync of a directory (a writer that never syncs
 * its directories), so that names become durable only by luck. */
void keel__pl_trace_drop_dir_syncs(keel__pl_trace *t);

enum keel__pl_policy {
    KEEL__PL_DURABLE = 0,
    KEEL__PL_ALL = 1,
    KEEL__PL_PREFIX = 2,
    KEEL__PL_SUBSET = 3,
};
const char *keel__pl_policy_name(int policy);

/* How many operations up to crash point c are not durable at c. */
size_t keel__pl_unsynced(const keel__pl_trace *t, size_t c);

/*
 * Write the crash state at crash point c (0-based operation index) under
 * policy (seed: PREFIX's length and SUBSET's choice) into dir (made; must
 * not exist). @return KEEL_OK or the error making it (diag).
 */
int keel__pl_build(const keel__pl_trace *t, size_t c, int policy, uint64_t seed,
                   const char *dir, keel_diag *diag);

/* ---- sessions --------------------------------------------------------------
 */

enum keel__pl_scenario {
    /* `keel run STATE --config F --deterministic --checkpoint-cranks C` */
    KEEL__PL_RUN = 1,
    /* the cluster run part-way, `keel snapshot create`, run to the end,
     * then `keel snapshot restore SNAP NEWSTATE --wal STATE/wal` traced */
    KEEL__PL_RESTORE = 2,
};
/* "run", "restore"; "?" otherwise. */
const char *keel__pl_scenario_name(int scenario);
int keel__pl_scenario_parse(const char *s, int *scenario);

typedef struct keel__pl_options {
    const char *config_path; /* the cluster (required) */
    const char *keel_bin;    /* the keel program (required) */
    const char *plrec;       /* libkeel_plrec.so (required) */
    const char *work_dir;    /* NULL: /dev/shm if writable, $TMPDIR, /tmp */
    int scenario;            /* 0: KEEL__PL_RUN */
    uint64_t seed;
    uint64_t trials;            /* 0: 200 */
    uint64_t only_trial;        /* nonzero: run just trial T (1-based) */
    uint32_t checkpoint_cranks; /* 0: 64 */
    int keep_failed;            /* keep each failed trial's state */
    int drop_dir_syncs;         /* test hook: keel__pl_trace_drop_dir_syncs */
    /* Optional: each violation (valid during the call). */
    void (*violation)(void *arg, uint64_t trial, const char *what,
                      const char *repro);
    void *violation_arg;
} keel__pl_options;

void keel__pl_options_init(keel__pl_options *o);

typedef struct keel__pl_report {
    int scenario;
    uint64_t ops;          /* operations in the trace */
    uint64_t syncs;        /* of which syncs */
    uint64_t transactions; /* the reference's last LSN */
    uint64_t crash_points; /* distinct crash points tried */
    uint64_t trials;
    uint64_t violations;
    uint64_t absent;    /* states where nothing was published (allowed) */
    uint64_t recovered; /* opened at a reference prefix */
    uint64_t audits;    /* audits passed */
    uint64_t acked;     /* trials with an acknowledged LSN to keep */
    double trace_seconds;
    double seconds;
    char first[1024];
    char repro[512];
} keel__pl_report;

/* Run the scenario and its trials. @return KEEL_OK (violations are in
 * rep), KEEL_EINVAL (missing options), or what stopped the session (the
 * traced run failed: diag says why and where its output is). */
int keel__pl_run(const keel__pl_options *o, keel__pl_report *rep,
                 keel_diag *diag);

#endif
