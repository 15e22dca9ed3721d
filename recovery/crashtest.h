/*
 * recovery/crashtest.h — crash-injection trials against a cluster: the
 * machinery behind `keel crashtest` and tests/test_crashtest.c.
 *
 * A session runs the cluster's config uninterrupted first (twice: the
 * second run must end with the same activity hash, or the cluster is not
 * deterministic and nothing can be compared), in deterministic mode
 * (keel_kernel_options.deterministic) with sync=full. That reference
 * records, for every LSN, the activity hash after it (read back from the
 * log: each record writes k.hash), the number of WAL I/O operations of
 * the run (the crash points), and its result (final crank, last LSN, run
 * queue, unresolved promises, vat states, activity hash). Then each mode
 * runs trials:
 *
 *   enumerate   for crash point k: a forked child runs the cluster from
 *               scratch with the WAL's I/O routed through the fault layer
 *               (common/io_fault.h), which "crashes" after its k-th
 *               operation; the child then models a power loss (every
 *               unsynced byte dropped; for even k a torn prefix of them
 *               kept) and reports the highest LSN a keel_kernel_run call
 *               had reported durable.
 *   process     `keel run STATE --config F` as a child process, SIGKILLed
 *               after a seeded random delay (within the time an
 *               uninterrupted `keel run` takes); what it reported durable
 *               is what it printed, if it finished first. It runs with
 *               --deterministic, so its uninterrupted run (trial 0) ends
 *               as the reference does (checked: else the mode stops).
 *   corruption  a copy of a crashed or finished state whose WAL segment
 *               has a bit flipped or bytes overwritten at a seeded random
 *               offset (half of them within its last KiB); or a snapshot
 *               of a state (keel_snapshot_create) damaged the same way and
 *               restored with keel_snapshot_restore, rolled forward
 *               through that state's log.
 *
 * After each trial the state is opened again (recovery), and a violation
 * is recorded unless: every LSN reported durable is in the recovered log;
 * the recovered activity hash is the reference's at the recovered LSN
 * (the state is the state after exactly that prefix of the reference's
 * transactions); keel_audit() passes on it; and, run on to the end, it
 * reaches the reference's result. A corruption trial may instead be
 * refused (KEEL_ECORRUPT or KEEL_EVERSION, with a message naming the file
 * under the state, or the snapshot); opening it any other way, or to a
 * state that is not a reference prefix, is a violation.
 *
 * Every violation comes with the command line that reproduces its trial:
 *     keel crashtest --config F --mode M --seed S --trial T
 * (enumerate: T is the crash point; process trials depend on timing and
 * reproduce only in distribution).
 *
 * Calling sequence
 *     keel__crashtest_options o; keel__crashtest_options_init(&o);
 *     o.config_json = text; o.config_path = "cluster.json"; ...
 *     keel__crashtest *ct; rc = keel__crashtest_open(&o, &ct, &d);
 *     rc = keel__crashtest_run(ct, KEEL__CRASHTEST_ENUMERATE, &rep, &d);
 *     keel__crashtest_close(ct);
 *   rc < 0 means the session could not run (the reference failed, the
 *   scratch directory could not be made, ...): diag says why. Violations
 *   are results, not errors: rep.violations.
 *
 * Threading and processes: one thread; it forks children (enumerate,
 * corruption bases) and runs `keel run` (process). Call it from a
 * process with no other threads.
 */
#ifndef KEEL_RECOVERY_CRASHTEST_H
#define KEEL_RECOVERY_CRASHTEST_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"
#include "keel/vat.h"

enum keel__crashtest_mode {
    KEEL__CRASHTEST_ENUMERATE = 1,
    KEEL__CRASHTEST_PROCESS = 2,
    KEEL__CRASHTEST_CORRUPTION = 3,
};

/* "enumerate", "process", "corruption"; "?" otherwise. Static. */
const char *keel__crashtest_mode_name(int mode);
/* @return KEEL_OK with *mode set, or KEEL_EINVAL. */
int keel__crashtest_mode_parse(const char *s, int *mode);

typedef struct keel__crashtest_options {
    const char *config_json; /* the cluster config (docs/config.md) */
    /* The file it came from: `keel run --config` runs it (process mode,
     * which needs it) and reproduction lines name it. NULL: "CONFIG". */
    const char *config_path;
    const char *config_dir; /* resolves relative vat paths; NULL: the
                               directory of config_path, or "." */
    const char *keel_bin;   /* process mode: the keel program */
    /* Where the scratch directory goes; NULL: /dev/shm when it is a
     * writable directory (fsyncs cost nothing there, and the fault layer
     * models durability itself), else $TMPDIR, else /tmp. */
    const char *work_dir;
    uint64_t seed;
    /* process, corruption: trials to run (0: 200 / 1000). enumerate: at
     * most this many crash points, spread evenly (0: every one). */
    uint64_t trials;
    /* enumerate: every stride-th crash point (0 or 1: every one; set, it
     * overrides trials) */
    uint64_t stride;
    uint64_t only_trial; /* nonzero: run just this trial (reproduce) */
    /* The store checkpoints every this many transactions (default 64), so
     * recovery replays from checkpoints all along the log. */
    uint32_t checkpoint_cranks;
    /* WAL segment size (default 64 KiB), so segment rollovers are among
     * the crash points. */
    uint64_t wal_segment_bytes;
    int keep_failed; /* keep the state of each failed trial (its path is
                        in the violation) */
    /* Embedders' vats (keel_kernel_options.resolve_vat); not seen by
     * `keel run`, so not with process mode. */
    const keel_vat_ops *(*resolve_vat)(void *arg, const char *name);
    void *resolve_arg;
    /* Optional: called after each trial, and once a mode's trial count is
     * known (done = 0). */
    void (*progress)(void *arg, int mode, uint64_t done, uint64_t total);
    void *progress_arg;
    /* Optional: called for each violation with what went wrong and the
     * reproduction command line (both valid during the call). */
    void (*violation)(void *arg, int mode, uint64_t trial, const char *what,
                      const char *repro);
    void *violation_arg;
} keel__crashtest_options;

void keel__crashtest_options_init(keel__crashtest_options *o);

/* The uninterrupted run every trial is compared with. */
typedef struct keel__crashtest_reference {
    uint64_t transactions; /* its last LSN */
    uint64_t io_ops;       /* its WAL I/O operations: the crash points */
    uint64_t final_hash;
    double seconds;     /* one run, in process */
    const char *result; /* its final status, as compared (JSON; owned by
                           the session) */
} keel__crashtest_reference;

typedef struct keel__crashtest_report {
    int mode;
    uint64_t trials;       /* trials run */
    uint64_t crash_points; /* enumerate: points crashed at; process: kills
                              that landed before the run ended;
                              corruption: files damaged */
    uint64_t violations;
    uint64_t recovered; /* reopened to a reference prefix and finished */
    uint64_t torn;      /* of which a torn WAL tail was truncated */
    uint64_t refused;   /* corruption: refused as damaged */
    uint64_t audits;    /* keel_audit() runs that passed */
    uint64_t replayed;  /* WAL records replayed by those reopens */
    uint64_t durable;   /* trials where an LSN had been reported durable
                           before the crash (what the first check has to
                           check) */
    double seconds;
    char first[512]; /* the first violation, "" if none */
    char repro[512]; /* and the command line that reproduces it */
} keel__crashtest_report;

typedef struct keel__crashtest keel__crashtest;

/*
 * Make the scratch directory and run the reference (see above).
 * @param[in] o  copied; its strings must outlive the session.
 * @return KEEL_OK; KEEL_EINVAL (no config, a config the kernel refuses,
 *         a cluster whose two uninterrupted runs differ: diag says so);
 *         or the error of the reference run or the scratch directory.
 */
int keel__crashtest_open(const keel__crashtest_options *o,
                         keel__crashtest **out, keel_diag *diag);
const keel__crashtest_reference *
keel__crashtest_reference_of(const keel__crashtest *ct);
/*
 * Run one mode's trials into rep (zeroed first).
 * @return KEEL_OK (violations are in rep), KEEL_EINVAL (process mode
 *         without keel_bin or config_path; only_trial out of range), or
 *         an error that stopped the mode (a trial's child could not be
 *         started, the scratch directory failed).
 */
int keel__crashtest_run(keel__crashtest *ct, int mode,
                        keel__crashtest_report *rep, keel_diag *diag);
/* The activity hash a WAL record's payload (an encoded write-set,
 * store/writeset_format.h) writes as k.hash: what the reference's hash after
 * each LSN is read from (here and in recovery/powerloss.c).
 * @return 1 found (*h set), 0 absent, KEEL_ECORRUPT malformed. */
/* Shared by the crash harnesses (crashtest.c, powerloss.c): a monotonic
 * clock in seconds (common/clock.h); splitmix64 over *s; rm -rf path
 * (KEEL_OK or the first error); the scratch directory when none is given
 * (/dev/shm when usable, else $TMPDIR, else /tmp). */
double keel__crashtest_now_s(void);
const char *keel__crashtest_default_work_dir(void);
uint64_t keel__crashtest_rand(uint64_t *s);
int keel__crashtest_rmtree(const char *path);
int keel__crashtest_payload_hash(const uint8_t *p, size_t len, uint64_t *h);
/* Remove the scratch directory (but the kept failed states) and free.
 * NULL is a no-op. */
void keel__crashtest_close(keel__crashtest *ct);

#endif
