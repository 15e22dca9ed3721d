/*
 * kernel/kernel_host.h — what the kernel asks of the host that runs it:
 * a table of functions the host fills in (host/compose.c fills it with
 * keel's libuv or deterministic loop and its periodic snapshots), and the
 * kernel's own open, which takes one. The kernel includes nothing of the
 * host: it reaches it only through this table.
 *
 * The kernel core stays synchronous and deterministic: it asks the host to
 * run callbacks only between cranks (run_once, poll), so a callback never
 * runs inside a crank; every callback runs on the kernel's thread.
 *
 * Invariants:
 *   KH1 The kernel owns the table's ctx from the call to keel__k_open on,
 *       failed or not: it calls close exactly once, in keel_kernel_close
 *       (also when open fails), after the held async work started (K35)
 *       and before any vat is stopped; no callback of the host runs after.
 *   KH2 Without a host (keel__k_open with NULL) the kernel runs with no
 *       async work: keel_vat_timer and keel_vat_work return KEEL_EINVAL,
 *       nothing is ever pending, and no hook is called. A {"worker": ...}
 *       vat is refused (boot: "vats.NAME.worker: ..."; open: the same).
 *   KH3 A worker vat is served by the host's worker_ops alone: its start
 *       gets the whole config entry as JSON (not only "params"), and its
 *       deliver alone may return KEEL__VAT_CRASHED (from any other vat it
 *       is an ordinary failure). A crashed delivery aborts its crank
 *       (nothing stays, the item stays at the head of the run queue),
 *       then, outside any transaction and before the next crank, the
 *       kernel calls worker_restart; if that gives up (< 0) the vat is
 *       terminated as a failed delivery's would be. The restart policy
 *       (counts, backoff) is the host's; the kernel only sequences it.
 *   KH4 keel__k_oc_txn runs only between cranks (no transaction open):
 *       fn's syscalls are one out-of-crank transaction, committed and its
 *       items enqueued before it returns (K33's rule for an async
 *       callback, which is built on the same code).
 */
#ifndef KEEL_KERNEL_KERNEL_HOST_H
#define KEEL_KERNEL_KERNEL_HOST_H

#include <stdint.h>

#include "keel/kernel.h"
#include "keel/vat.h"

typedef struct keel__khost {
    void *ctx; /* every function's first argument */
    /* Run cb(arg) on the kernel's thread after delay_ms; *id for cancel. */
    int (*timer)(void *ctx, uint64_t delay_ms, void (*cb)(void *arg), void *arg,
                 uint64_t *id);
    /* Run work(arg) off the kernel's thread, then done(arg) on it. A job
     * cannot be cancelled: its work always runs. */
    int (*work)(void *ctx, void (*work)(void *arg), void (*done)(void *arg),
                void *arg);
    /* Cancel timer id if it has not fired. @return 1 cancelled, 0 not. */
    int (*cancel)(void *ctx, uint64_t id);
    /* Timers and jobs scheduled whose callback has not run yet. */
    uint64_t (*pending)(void *ctx);
    /* Block until a callback ran, timeout_ms passed or nothing is pending.
     * @return callbacks run, or < 0. */
    int (*run_once)(void *ctx, uint64_t timeout_ms);
    /* Run the callbacks ready now, without blocking. @return count. */
    int (*poll)(void *ctx);
    /* Optional. Open recovered the state (its crank, hash and kernel id
     * are known) and no vat has started: < 0 fails the open with diag. */
    int (*attached)(void *ctx, keel_kernel *k, keel_diag *diag);
    /* Optional. keel_kernel_run stepped a crank (committed or aborted):
     * < 0 stops the run with that error (the kernel is not failed by it). */
    int (*after_crank)(void *ctx, keel_kernel *k, keel_diag *diag);
    /* Optional (KH3). The vat ops serving {"worker": ...} config
     * entries; NULL: such entries are refused. */
    const keel_vat_ops *worker_ops;
    /* KH3: the worker vat whose state is state crashed during a delivery
     * (the crank is aborted); bring it back from its vatstore. Called on
     * the kernel's thread with no transaction open; its syscalls are out
     * of crank. @return 0 running again, < 0 give up: terminate it. */
    int (*worker_restart)(void *ctx, keel_syscall *sys, void *state);
    /* KH1: wait for running jobs (their done callbacks are dropped), drop
     * unfired timers, free ctx. */
    void (*close)(void *ctx);
} keel__khost;

/* KH3: a worker_ops deliver's result meaning "the worker process crashed:
 * abort this crank, restart the vat" (distinct from any other nonzero,
 * "failed: terminate"). */
#define KEEL__VAT_CRASHED 0x57524b43 /* "WRKC" */

/*
 * KH4: run fn(arg, sys) between cranks as one out-of-crank transaction of
 * sys's vat: its syscalls join it; it commits (and its run-queue items are
 * enqueued) when fn returns 0; nonzero discards it (the host's choice:
 * a worker's group it did not finish); an illegal syscall discards it and
 * terminates the vat. Syscalls held meanwhile run after it (SPEC §5),
 * terminated vats are reaped, and async work that is durable is started.
 * @return 1 committed (or nothing to commit) and the vat lives; 0 the vat
 *         is terminated (now, or already: fn was not run); KEEL_EINVAL a
 *         transaction is open (inside a crank); KEEL_EFAILED the kernel
 *         failed.
 */
int keel__k_oc_txn(keel_syscall *sys, int (*fn)(void *arg, keel_syscall *sys),
                   void *arg);
/* The kernel a syscall handle belongs to. */
keel_kernel *keel__k_sys_kernel(const keel_syscall *sys);
/* The next o+N and p+N numbers never used by sys's vat (START, §3 of
 * docs/worker-protocol.md); 1 if it is terminated. */
void keel__k_sys_next(const keel_syscall *sys, uint64_t *next_o,
                      uint64_t *next_p);
/* 1 if sys's vat is alive. */
int keel__k_sys_alive(const keel_syscall *sys);

/*
 * keel_kernel_open (kernel.h) with host as the kernel's host (copied; NULL:
 * none, KH2). o->deterministic is the host's business, not the kernel's;
 * the snapshot options are the composing host's (host/compose.c).
 */
int keel__k_open(const char *state_dir, const keel_kernel_options *o,
                 const keel__khost *host, keel_kernel **out, keel_diag *diag);

#endif
