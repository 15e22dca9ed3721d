/*
 * host/host.h — the host loop: timers and thread-pool jobs for vats' async
 * work, on libuv. The kernel core stays synchronous and deterministic; it
 * asks the host to run callbacks only between cranks (keel__host_run_once
 * and keel__host_poll), so a callback never runs inside a crank.
 *
 * Every callback runs on the thread that calls run_once/poll (the kernel's
 * thread). `work` functions run on libuv's thread pool.
 */
#ifndef KEEL_HOST_HOST_H
#define KEEL_HOST_HOST_H

#include <stdint.h>

typedef struct keel_host keel_host;

/* @return KEEL_OK or KEEL_ENOMEM / KEEL_EIO. */
int keel__host_new(keel_host **out);
/* Cancels nothing: callers must let pending work finish first (free waits
 * for thread-pool jobs to complete, then drops their `done` callbacks and
 * any timers unrun). NULL is a no-op. */
void keel__host_free(keel_host *h);

/* Run cb(arg) on the kernel's thread after delay_ms. */
int keel__host_timer(keel_host *h, uint64_t delay_ms, void (*cb)(void *arg),
                     void *arg);
/* Run work(arg) on the thread pool, then done(arg) on the kernel's thread. */
int keel__host_work(keel_host *h, void (*work)(void *arg),
                    void (*done)(void *arg), void *arg);
/* Timers and jobs scheduled whose callback has not run yet. */
uint64_t keel__host_pending(const keel_host *h);
/*
 * Block until at least one callback has run, or timeout_ms passed (0: no
 * timeout), or nothing is pending. @return callbacks run (>= 0) or < 0.
 */
int keel__host_run_once(keel_host *h, uint64_t timeout_ms);
/* Run the callbacks that are ready now, without blocking. @return count. */
int keel__host_poll(keel_host *h);

#endif
