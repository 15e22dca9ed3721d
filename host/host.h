/*
 * host/host.h — the host loop: timers and thread-pool jobs for vats' async
 * work, on libuv. The kernel core stays synchronous and deterministic and
 * never calls this directly: host/compose.c hands it to the kernel as the
 * table of kernel/kernel_host.h, and the kernel runs callbacks only between
 * cranks (run_once and poll), so a callback never runs inside a crank.
 *
 * Every callback runs on the thread that calls run_once/poll (the kernel's
 * thread). `work` functions run on libuv's thread pool.
 *
 * Deterministic mode (keel_kernel_options.deterministic, for crash testing
 * and replayable runs): nothing runs on a clock or a thread of its own.
 * Timers and jobs wait in one queue ordered by virtual due time, then by
 * the order they were scheduled; poll runs nothing, and run_once runs
 * exactly the next one (a job's `work`, then its `done`, both on the
 * calling thread) and advances the virtual clock to its due time. Since
 * the kernel calls run_once only when its run queue is empty, two runs of
 * the same inputs make the same transactions in the same order.
 */
#ifndef KEEL_HOST_HOST_H
#define KEEL_HOST_HOST_H

#include <stdint.h>

typedef struct keel_host keel_host;

/* deterministic: 1 for the deterministic mode above, 0 for libuv.
 * @return KEEL_OK or KEEL_ENOMEM / KEEL_EIO. */
int keel__host_new(keel_host **out, int deterministic);
/* Cancels nothing itself: callers must let pending work finish first (free
 * waits for thread-pool jobs to complete, then drops their `done` callbacks and
 * any timers unrun; in deterministic mode it runs each queued job's `work`
 * on the calling thread, so a job's `work` always runs). NULL is a
 * no-op. */
void keel__host_free(keel_host *h);

/* Run cb(arg) on the kernel's thread after delay_ms (deterministic: virtual
 * milliseconds). *id (id may be NULL): what keel__host_cancel takes. */
int keel__host_timer(keel_host *h, uint64_t delay_ms, void (*cb)(void *arg),
                     void *arg, uint64_t *id);
/* Run work(arg) on the thread pool, then done(arg) on the kernel's thread.
 * A job cannot be cancelled: its work always runs (free waits for it). */
int keel__host_work(keel_host *h, void (*work)(void *arg),
                    void (*done)(void *arg), void *arg);
/*
 * Cancel timer id if it has not fired: it never will, and it no longer
 * counts as pending. @return 1 cancelled, 0 no such timer waiting (it
 * fired, or id is not a timer's).
 */
int keel__host_cancel(keel_host *h, uint64_t id);
/* Timers and jobs scheduled whose callback has not run yet. */
uint64_t keel__host_pending(const keel_host *h);
/*
 * Block until at least one callback has run, or timeout_ms passed (0: no
 * timeout), or nothing is pending. Deterministic: run exactly the next
 * callback (never blocks; timeout_ms is unused).
 * @return callbacks run (>= 0) or < 0.
 */
int keel__host_run_once(keel_host *h, uint64_t timeout_ms);
/* Run the callbacks that are ready now, without blocking (deterministic:
 * none is ever ready before run_once picks it). @return count. */
int keel__host_poll(keel_host *h);

/*
 * For handles of the host's own composition that live on the loop beside
 * timers and jobs (host/control.c's socket): the libuv loop (NULL in
 * deterministic mode); keep adds delta to the pending count (H11), so a
 * loop holding a listener is waited on by run_once, not slept past; woke
 * counts a callback as run, so run_once returns to the kernel after it
 * (the callback queued work for the next crank).
 */
struct uv_loop_s *keel__host_uv(keel_host *h);
void keel__host_keep(keel_host *h, int delta);
void keel__host_woke(keel_host *h);

struct keel_kernel;
/* The loop of a kernel opened by keel_kernel_open (host/compose.c), NULL
 * for one opened without keel's host. */
keel_host *keel__host_of(struct keel_kernel *k);

#endif
