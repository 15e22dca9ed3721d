/*
 * keel/kernel.h — the durable kernel: vats, c-lists, promises, the run
 * queue, and the crank engine, on an LMDB store behind the WAL.
 *
 * Calling sequence
 *     keel_kernel_options o; keel_kernel_options_init(&o);
 *     keel_kernel *k; rc = keel_kernel_open("STATE", &o, &k, &diag);
 *     if (!keel_kernel_booted(k)) rc = keel_kernel_boot(k, config_json, &d);
 *     rc = keel_kernel_run(k, &run_opts, &stats, &diag);
 *     rc = keel_kernel_close(k, &diag);
 *
 *   open takes the state directory's lock, opens the store (STATE/store)
 *   and the WAL (STATE/wal), replays every WAL record after the store's
 *   applied LSN, and starts every live vat again (vats rebuild from their
 *   vatstore). boot creates the vats of a cluster config (JSON, see
 *   docs/config.md) and queues bootstrap(vats) to the bootstrap vat: one
 *   kernel-op transaction.
 *
 * Durability
 *   Every crank is one WAL record (kind crank), the syscalls of one async
 *   callback (or one syscall made outside any crank and callback) one
 *   record (out-of-crank), every kernel operation (boot,
 *   external send, vat termination, one cleanup batch of a terminated vat)
 *   one record (kernel-op). Under sync=full a record is fdatasync'd
 *   before its effects are used; under group the caller must
 *   keel_kernel_wait_durable() before reporting a result outside (the
 *   kernel does so itself before it starts a vat's async work: vat.h).
 *   The store is checkpointed (LMDB commit with full sync, after
 *   the WAL is durable up to the checkpoint) every checkpoint_cranks
 *   transactions or checkpoint_ms.
 *
 * Threading: one thread. Not reentrant: vats' callbacks run inside step and
 * run.
 */
#ifndef KEEL_KERNEL_H
#define KEEL_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"
#include "keel/vat.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_STATE_FORMAT_VERSION 3

typedef struct keel_kernel keel_kernel;

/* Where keel_kernel_options.crash_hook is called. */
enum keel_crash_event {
    KEEL_CRASH_COMMIT_BEFORE = 1, /* before the WAL append */
    KEEL_CRASH_COMMIT_AFTER,      /* appended, not yet applied */
    KEEL_CRASH_APPLY_AFTER,       /* applied to the store */
    KEEL_CRASH_CKPT_BEFORE,       /* the WAL durable, the store not yet
                                     checkpointed */
    KEEL_CRASH_CKPT_AFTER         /* the store checkpointed */
};

/*
 * Observation: what keel_kernel_options.observe is called with, on the
 * kernel's thread, never inside a vat's delivery. The kernel calls it
 * when a transaction has committed (appended and applied; under group or
 * off sync not yet durable), when a vat starts or stops, at a
 * checkpoint, and once per run-loop iteration (KEEL_OBS_TICK, with the
 * durable LSN): whatever the observer shows outside it must hold back
 * until the durable LSN covers the observation's lsn (host/observe.c
 * does). Pointers in it live only for the call.
 */
enum keel_obs_what {
    KEEL_OBS_TXN = 1,       /* a transaction committed as record lsn */
    KEEL_OBS_VAT_START,     /* vat started (open, boot) */
    KEEL_OBS_VAT_STOP,      /* vat's stop() called (terminated, or close) */
    KEEL_OBS_VAT_TERMINATE, /* vat terminated by transaction lsn */
    KEEL_OBS_CHECKPOINT,    /* the store checkpointed up to lsn */
    KEEL_OBS_TICK,          /* between transactions; lsn: durable LSN */
    KEEL_OBS_SNAPSHOT       /* a periodic snapshot of lsn written (path) */
};

typedef struct keel_observation {
    int what;             /* enum keel_obs_what */
    int kind;             /* TXN: KEEL_WAL_CRANK, _OUT_OF_CRANK or _KERNEL_OP */
    uint64_t lsn;         /* TXN, TERMINATE: its record; CHECKPOINT: the store's
                             applied LSN; START, STOP: the last LSN appended;
                             TICK: the durable LSN */
    uint64_t crank;       /* the crank number after it */
    uint32_t vat;         /* the vat (TXN: the one delivered to or whose
                             callback ran; 0 none) */
    const char *vat_name; /* its name, or NULL */
    const char *method;   /* TXN of a crank delivering a message */
    int notify;           /* TXN of a crank delivering a notify */
    uint32_t syscalls;    /* TXN: syscalls run in it */
    uint64_t duration_ns; /* TXN: begin to commit; CHECKPOINT: its own */
    int aborted;          /* TXN: a kernel-op terminating the vat whose
                             crank aborted (the crank left nothing) */
    const char *path;     /* SNAPSHOT: the file written */
} keel_observation;

typedef struct keel_kernel_options {
    int sync;                   /* enum keel_sync; default FULL */
    uint32_t checkpoint_cranks; /* default 10000 */
    uint32_t checkpoint_ms;     /* default 1000 */
    int create;                 /* 1 (default): create STATE if absent */
    struct keel_io *io;         /* WAL I/O; NULL: POSIX */
    /* Embedders' own vats: a config's {"builtin": name} is looked up here
     * first (NULL: not mine), then among keel's built-ins. The table must
     * outlive the kernel. */
    const keel_vat_ops *(*resolve_vat)(void *arg, const char *name);
    void *resolve_arg;
    /* Crash injection for tests: when set, called at each crash event
     * (enum keel_crash_event) with the event and, for the commit events,
     * the transaction's kind (KEEL_WAL_CRANK, _OUT_OF_CRANK, _KERNEL_OP;
     * 0 for the checkpoint events). It may kill the process there (a real
     * crash: SIGKILL); if it returns, the kernel goes on. `keel run` sets
     * it from $KEEL_CRASH_POINT (tools/crash_point.h). NULL: none. */
    void (*crash_hook)(void *arg, int event, int kind);
    void *crash_arg;
    /* 1: vats' async work (keel_vat_timer, keel_vat_work) never runs on a
     * clock or a thread of its own: completions wait in a queue ordered by
     * virtual due time, and the run loop completes the next one (its work
     * and done, on the kernel's thread) only when the run queue is empty.
     * Two runs of the same cluster then make the same transactions in the
     * same order (crash testing: `keel crashtest`). Default 0. */
    int deterministic;
    /* Periodic snapshots (keel_kernel_run): every snapshot_every cranks
     * (0: never) a checkpoint and a snapshot of it into snapshot_dir
     * (copied; the directory must exist and belong to this kernel), named
     * `<LSN, 20 digits>.ksnap`. keel_kernel_open checks it first (before
     * a new STATE is created): a directory files can be created in
     * (else KEEL_EINVAL, KEEL_ENOENT, KEEL_EACCES), holding no snapshot
     * of another kernel or timeline (else KEEL_EEXIST naming it); an
     * existing file of the name about to be written is adopted only if
     * its manifest is this state at that LSN (else the snapshot fails
     * with KEEL_EEXIST). The newest snapshot_keep (default 2, at
     * least 1) are kept, older ones deleted, and WAL segments wholly
     * before the oldest kept snapshot's LSN retire: disk stays bounded.
     * Without snapshots the whole log is kept. */
    uint64_t snapshot_every;
    const char *snapshot_dir;
    uint32_t snapshot_keep;
    int snapshot_level;         /* zstd level; default 3 */
    uint64_t wal_segment_bytes; /* WAL rollover size; 0: the WAL's default
                                   (64 MiB) */
    /* The most STATE/store may grow to (LMDB's map, which starts at 1 GiB
     * and doubles as it fills); 0: the default, 1 TiB. Reaching it fails
     * the kernel (KEEL_ENOSPC, "store full"), losing nothing: open again
     * with a larger one and the log replays. `keel run --store-max`. */
    uint64_t store_max_bytes;
    /* 1: open only to look (`keel status`, `keel recover --check`): no
     * byte under STATE changes, damaged or not. A shared lock on
     * STATE/lock (a writer holding it: KEEL_EBUSY), the store and the WAL
     * opened read-only, the log after the checkpoint replayed into memory,
     * a torn tail reported (recovery info) but not truncated, no vat
     * started, no checkpoint; step, run, send, boot and snapshot fail.
     * Implies create = 0. Default 0. */
    int read_only;
    /* Observation (above): NULL none. Called synchronously on the
     * kernel's thread; it must not call back into the kernel except the
     * read-only accessors below (durable LSN, gauges, sync stats). */
    void (*observe)(void *arg, const keel_observation *ob);
    void *observe_arg;
} keel_kernel_options;

KEEL_API void keel_kernel_options_init(keel_kernel_options *o);

/*
 * Open STATE (created if absent and o->create), lock it, recover, on keel's
 * own host (host/compose.c: the libuv loop, or the deterministic queue,
 * and the periodic snapshots of the options). The WAL
 * is never truncated at or below the store's checkpoint LSN: damage there
 * is KEEL_ECORRUPT (acknowledged records damaged), not a torn tail.
 * @return KEEL_OK, KEEL_EBUSY (locked by another process), KEEL_ECORRUPT,
 *         KEEL_EVERSION (a newer format), KEEL_ENOENT, KEEL_EIO, KEEL_ENOMEM,
 *         KEEL_ENOSPC (replay filled the store: store_max_bytes, or the
 *         disk; the diag says which), or a vat loading error (KEEL_EINVAL
 *         with diag). Blocks; fsyncs.
 */
KEEL_API int keel_kernel_open(const char *state_dir,
                              const keel_kernel_options *o, keel_kernel **out,
                              keel_diag *diag);
/* What keel_kernel_open() found and did to recover. */
typedef struct keel_kernel_recovery {
    uint64_t checkpoint_lsn; /* the store's applied LSN on disk */
    uint64_t wal_first_lsn;  /* first LSN the WAL retains (0: empty) */
    uint64_t wal_last_lsn;   /* last valid LSN after tail truncation */
    uint64_t replayed;       /* records replayed (checkpoint_lsn+1 ..) */
    uint64_t replayed_bytes; /* their payload bytes */
    int torn;                /* 1: a torn tail was truncated (read-only:
                                found and left in place) */
    char torn_segment[64];   /* where (relative to STATE/wal) */
    uint64_t torn_offset;    /* end of the valid data in it */
    uint64_t torn_bytes;     /* bytes dropped; they held LSNs from
                                wal_last_lsn + 1 on, never acknowledged */
    char torn_reason[200];
    double seconds; /* time spent in open */
} keel_kernel_recovery;

/* The recovery report of the open that created k. */
KEEL_API void keel_kernel_recovery_info(const keel_kernel *k,
                                        keel_kernel_recovery *out);

/* 1 once boot has committed. */
KEEL_API int keel_kernel_booted(const keel_kernel *k);
/*
 * Create the vats of config_json and queue bootstrap. config_dir resolves
 * relative vat library paths (NULL: the current directory).
 * @return KEEL_OK, KEEL_EINVAL (bad config: diag names the JSON path),
 *         KEEL_EEXIST (already booted), or a storage error.
 */
KEEL_API int keel_kernel_boot(keel_kernel *k, const char *config_json,
                              const char *config_dir, keel_diag *diag);

/* Run one crank. @return 1 (a crank ran), 0 (queue empty), or < 0. */
KEEL_API int keel_kernel_step(keel_kernel *k, keel_diag *diag);

typedef struct keel_run_options {
    uint64_t max_cranks; /* 0: no limit; aborted cranks count too */
    int forever;         /* keep waiting for async work / signals */
    uint64_t timeout_ms; /* 0: none; stop after this long (tests) */
    /* Checked between cranks; nonzero stops the run cleanly. */
    volatile int *stop_flag;
    /* Called every ~100 ms with the cranks done so far (progress). */
    void (*progress)(void *arg, uint64_t cranks);
    void *progress_arg;
} keel_run_options;

typedef struct keel_run_stats {
    uint64_t cranks;       /* cranks committed by this call */
    uint64_t transactions; /* WAL records committed by this call */
    uint64_t deliveries;   /* message + notify deliveries to vats (aborted
                              ones included) */
    double seconds;
    int idle; /* 1: stopped because nothing was left to do */
    int timed_out;
    /* run-queue items whose delivery failed (or wrote too much): the crank
     * was aborted, not counted in cranks, and the vat terminated instead */
    uint64_t aborted;
} keel_run_stats;

/* Run cranks until idle (queue empty, no async work pending), max_cranks,
 * stop_flag, or timeout; waits for the host loop's async work meanwhile.
 * All work is durable (per the sync policy) when it returns KEEL_OK. */
KEEL_API int keel_kernel_run(keel_kernel *k, const keel_run_options *o,
                             keel_run_stats *stats, keel_diag *diag);

/*
 * Queue method(args) to the root object of vat `vat` from outside, as its
 * own kernel-op transaction, with a fresh result promise (its kref into
 * result_kref[KEEL_VREF_MAX]).
 * @return KEEL_OK once the message is committed (durable after
 *         keel_kernel_wait_durable), even if a checkpoint right after it
 *         failed the kernel (the next call or close reports that);
 *         KEEL_ENOENT (no such vat), KEEL_EINVAL.
 */
KEEL_API int keel_kernel_send(keel_kernel *k, const char *vat,
                              const char *method, const char *args_json,
                              char *result_kref, keel_diag *diag);

/* A promise's state: 0 unresolved, 1 fulfilled, 2 rejected; <0 error.
 * body: malloc'd resolution body (caller frees), when settled. */
KEEL_API int keel_kernel_promise(keel_kernel *k, const char *kpref, char **body,
                                 keel_diag *diag);

/*
 * Read a vat's vatstore entry from outside (inspection for tools and
 * tests; it is not a syscall and changes nothing).
 * @param[out] val  malloc'd copy (caller frees) with *len, on 1.
 * @return 1 found, 0 absent, KEEL_ENOENT (no such vat), or < 0.
 */
KEEL_API int keel_kernel_vatstore_get(keel_kernel *k, const char *vat,
                                      const char *key, char **val, size_t *len,
                                      keel_diag *diag);

/* Block until every committed transaction is durable. The answer is the
 * WAL's alone: a kernel failed by its store (a checkpoint after a commit)
 * still answers KEEL_OK for what it committed; a failed WAL fails it. */
KEEL_API int keel_kernel_wait_durable(keel_kernel *k, keel_diag *diag);

/* Status as a JSON object (malloc'd string; free()): crank, applied and
 * durable LSN, run-queue length, vats, unresolved promises, activity
 * hash, kernel id. */
KEEL_API int keel_kernel_status_json(keel_kernel *k, char **json,
                                     keel_diag *diag);

KEEL_API uint64_t keel_kernel_activity_hash(const keel_kernel *k);
KEEL_API uint64_t keel_kernel_crank_number(const keel_kernel *k);
/* The WAL's durable LSN: every record up to it survives a power loss. The
 * one call that may be made from any thread (a vat's keel_vat_work job
 * included). */
KEEL_API uint64_t keel_kernel_durable_lsn(keel_kernel *k);

/* Cheap numbers for metrics, read on the kernel's thread between cranks. */
typedef struct keel_kernel_gauges {
    uint64_t crank;
    uint64_t run_queue;   /* items queued */
    uint64_t applied_lsn; /* applied to the store */
    uint64_t durable_lsn;
    uint64_t last_lsn; /* appended */
    uint64_t vats_alive;
} keel_kernel_gauges;
/* @return KEEL_OK or a storage error (the kernel's diag). */
KEEL_API int keel_kernel_gauges_get(keel_kernel *k, keel_kernel_gauges *g);
/* The WAL's fdatasync timings (keel_wal_sync_stats_get). Any thread. */
struct keel_wal_sync_stats;
KEEL_API void keel_kernel_sync_stats(keel_kernel *k,
                                     struct keel_wal_sync_stats *out);

struct keel_snapshot_info;
/*
 * Checkpoint, then write a snapshot of that checkpoint to path (see
 * keel_snapshot_create(); this is the way from inside the process that
 * runs the kernel). Between cranks only.
 * @param[out] info  optional: the snapshot's manifest.
 * @return KEEL_OK, KEEL_EFAILED, or the snapshot writer's error (the
 *         kernel is not failed by it).
 */
KEEL_API int keel_kernel_snapshot(keel_kernel *k, const char *path,
                                  struct keel_snapshot_info *info,
                                  keel_diag *diag);

/* Checkpoint, stop vats, close. NULL is a no-op. A kernel that failed
 * returns that failure (with its diag) here, so a failure no call reported
 * yet (a checkpoint after the last commit) is never silent. */
KEEL_API int keel_kernel_close(keel_kernel *k, keel_diag *diag);

#ifdef __cplusplus
}
#endif

#endif
