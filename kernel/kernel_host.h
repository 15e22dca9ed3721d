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
 *       nothing is ever pending, and no hook is called.
 */
#ifndef KEEL_KERNEL_KERNEL_HOST_H
#define KEEL_KERNEL_KERNEL_HOST_H

#include <stdint.h>

#include "keel/kernel.h"

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
    /* KH1: wait for running jobs (their done callbacks are dropped), drop
     * unfired timers, free ctx. */
    void (*close)(void *ctx);
} keel__khost;

/*
 * keel_kernel_open (kernel.h) with host as the kernel's host (copied; NULL:
 * none, KH2). o->deterministic is the host's business, not the kernel's;
 * the snapshot options are the composing host's (host/compose.c).
 */
int keel__k_open(const char *state_dir, const keel_kernel_options *o,
                 const keel__khost *host, keel_kernel **out, keel_diag *diag);

#endif
