/*
 * tests/test_host.c — the host loop alone (host/host.c): timers fire in
 * deadline order, thread-pool work runs off the caller's thread and `done`
 * on it, pending counts, run_once's timeout and empty case, poll, and free
 * (waits for running work, drops unrun callbacks, leak-free); and the
 * deterministic mode: one callback per run_once in (virtual due time,
 * scheduling order), poll running nothing, free running queued work; and
 * cancelling a timer, in both modes.
 *
 * No test asserts on elapsed time; the delays only set deadlines apart.
 */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "host/host.h"
#include "keel/keel.h"

#include "tests/testutil.h"

/* ---- a log of callbacks in the order they ran ------------------------------
 */

enum { LOG_MAX = 64 };

typedef struct cblog {
    int n;
    int ids[LOG_MAX];
} cblog;

typedef struct timer_arg {
    cblog *log;
    int id;
} timer_arg;

static void log_timer(void *arg)
{
    timer_arg *t = arg;
    ck_assert_int_lt(t->log->n, LOG_MAX);
    t->log->ids[t->log->n++] = t->id;
}

static keel_host *host_new(void)
{
    keel_host *h = NULL;
    ck_assert_int_eq(keel__host_new(&h, 0), KEEL_OK);
    ck_assert_ptr_nonnull(h);
    return h;
}

/* Run callbacks until nothing is pending. @return callbacks run. */
static int drain(keel_host *h)
{
    int total = 0;
    while (keel__host_pending(h) > 0) {
        int n = keel__host_run_once(h, 0);
        ck_assert_int_ge(n, 1); /* no timeout: returns after a callback */
        total += n;
    }
    return total;
}

/* ---- timers ---------------------------------------------------------------
 */

START_TEST(test_host_timers_fire_in_deadline_order)
{
    keel_host *h = host_new();
    cblog log = {0};
    /* 100 ms apart: scheduling all three would have to stall for longer
     * than that to change their order. */
    timer_arg a[3] = {{&log, 300}, {&log, 100}, {&log, 200}};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(
            keel__host_timer(h, (uint64_t)a[i].id, log_timer, &a[i], NULL),
            KEEL_OK);
    }
    ck_assert_int_eq(drain(h), 3);
    ck_assert_int_eq(log.n, 3);
    ck_assert_int_eq(log.ids[0], 100);
    ck_assert_int_eq(log.ids[1], 200);
    ck_assert_int_eq(log.ids[2], 300);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_timers_equal_delay_fire_in_schedule_order)
{
    keel_host *h = host_new();
    cblog log = {0};
    timer_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (timer_arg){&log, i};
        ck_assert_int_eq(keel__host_timer(h, 0, log_timer, &a[i], NULL),
                         KEEL_OK);
    }
    ck_assert_int_eq(drain(h), 8);
    ck_assert_int_eq(log.n, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(log.ids[i], i);
    }
    keel__host_free(h);
}
END_TEST

typedef struct chain_arg {
    keel_host *h;
    cblog *log;
    timer_arg next;
    uint64_t pending_seen;
} chain_arg;

/* A callback that schedules another timer: the count it sees excludes
 * itself, and the new timer is counted at once. (Delay 1, not 0: libuv may
 * run a timer already due in the same loop iteration.) */
static void chain_timer(void *arg)
{
    chain_arg *c = arg;
    c->pending_seen = keel__host_pending(c->h);
    ck_assert_int_eq(keel__host_timer(c->h, 1, log_timer, &c->next, NULL),
                     KEEL_OK);
    ck_assert_uint_eq(keel__host_pending(c->h), c->pending_seen + 1);
}

START_TEST(test_host_timer_callback_schedules_another_counted_exactly)
{
    keel_host *h = host_new();
    cblog log = {0};
    chain_arg c = {h, &log, {&log, 7}, 99};
    ck_assert_int_eq(keel__host_timer(h, 0, chain_timer, &c, NULL), KEEL_OK);
    ck_assert_uint_eq(keel__host_pending(h), 1);
    /* run_once runs at least one callback; on a slow machine (sanitizers)
     * the 1 ms timer the first one schedules may already be due before
     * run_once returns, so it may run both: count them all. */
    int first = keel__host_run_once(h, 0);
    ck_assert_int_ge(first, 1);
    ck_assert_int_le(first, 2);
    ck_assert_uint_eq(c.pending_seen, 0);
    ck_assert_uint_eq(keel__host_pending(h), (uint64_t)(2 - first));
    ck_assert_int_eq(first + drain(h), 2);
    ck_assert_int_eq(log.n, 1);
    ck_assert_int_eq(log.ids[0], 7);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_timer_null_callback_is_einval)
{
    keel_host *h = host_new();
    ck_assert_int_eq(keel__host_timer(h, 0, NULL, NULL, NULL), KEEL_EINVAL);
    ck_assert_uint_eq(keel__host_pending(h), 0);
    keel__host_free(h);
}
END_TEST

/* ---- thread-pool work -----------------------------------------------------
 */

typedef struct job_arg {
    pthread_t caller;
    pthread_t work_thread;
    atomic_int work_ran;
    int done_ran;
    int done_on_caller;
    int done_saw_work;
    uint64_t in;
    uint64_t out;
} job_arg;

static void job_work(void *arg)
{
    job_arg *j = arg;
    j->work_thread = pthread_self();
    j->out = j->in * 3 + 1;
    atomic_store(&j->work_ran, 1);
}

static void job_done(void *arg)
{
    job_arg *j = arg;
    j->done_ran++;
    j->done_on_caller = pthread_equal(pthread_self(), j->caller);
    j->done_saw_work = atomic_load(&j->work_ran) && j->out == j->in * 3 + 1;
}

START_TEST(test_host_work_runs_off_thread_and_done_on_caller)
{
    keel_host *h = host_new();
    job_arg j = {.caller = pthread_self(), .in = 14};
    ck_assert_int_eq(keel__host_work(h, job_work, job_done, &j), KEEL_OK);
    ck_assert_uint_eq(keel__host_pending(h), 1);
    ck_assert_int_eq(drain(h), 1);
    ck_assert_int_eq(j.done_ran, 1);
    ck_assert(!pthread_equal(j.work_thread, j.caller));
    ck_assert(j.done_on_caller);
    ck_assert(j.done_saw_work);
    ck_assert_uint_eq(j.out, 43);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_work_many_jobs_each_done_once)
{
    enum { N = 32 };
    keel_host *h = host_new();
    job_arg *j = calloc(N, sizeof(*j));
    ck_assert_ptr_nonnull(j);
    for (int i = 0; i < N; i++) {
        j[i].caller = pthread_self();
        j[i].in = (uint64_t)i;
        ck_assert_int_eq(keel__host_work(h, job_work, job_done, &j[i]),
                         KEEL_OK);
    }
    ck_assert_uint_eq(keel__host_pending(h), N);
    ck_assert_int_eq(drain(h), N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(j[i].done_ran, 1);
        ck_assert(j[i].done_on_caller);
        ck_assert(j[i].done_saw_work);
    }
    keel__host_free(h);
    free(j);
}
END_TEST

START_TEST(test_host_work_null_function_is_einval)
{
    keel_host *h = host_new();
    job_arg j = {0};
    ck_assert_int_eq(keel__host_work(h, NULL, job_done, &j), KEEL_EINVAL);
    ck_assert_int_eq(keel__host_work(h, job_work, NULL, &j), KEEL_EINVAL);
    ck_assert_uint_eq(keel__host_pending(h), 0);
    keel__host_free(h);
}
END_TEST

/* ---- pending, run_once, poll ----------------------------------------------
 */

static void count_cb(void *arg)
{
    (*(int *)arg)++;
}

START_TEST(test_host_pending_counts_timers_and_jobs)
{
    keel_host *h = host_new();
    int fired = 0;
    job_arg j[3] = {{0}};
    ck_assert_uint_eq(keel__host_pending(h), 0);
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &fired, NULL), KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 5, count_cb, &fired, NULL), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        j[i].caller = pthread_self();
        ck_assert_int_eq(keel__host_work(h, job_work, job_done, &j[i]),
                         KEEL_OK);
    }
    ck_assert_uint_eq(keel__host_pending(h), 5);
    uint64_t before = keel__host_pending(h);
    while (before > 0) {
        int n = keel__host_run_once(h, 0);
        ck_assert_int_ge(n, 1);
        ck_assert_uint_eq(keel__host_pending(h), before - (uint64_t)n);
        before = keel__host_pending(h);
    }
    ck_assert_int_eq(fired, 2);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(j[i].done_ran, 1);
    }
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_run_once_timeout_returns_zero_without_callback)
{
    keel_host *h = host_new();
    int fired = 0;
    ck_assert_int_eq(keel__host_timer(h, 3600 * 1000, count_cb, &fired, NULL),
                     KEEL_OK);
    ck_assert_int_eq(keel__host_run_once(h, 10), 0);
    ck_assert_int_eq(fired, 0);
    ck_assert_uint_eq(keel__host_pending(h), 1);
    /* The helper timer is stopped: a second wait times out the same way. */
    ck_assert_int_eq(keel__host_run_once(h, 1), 0);
    ck_assert_int_eq(fired, 0);
    keel__host_free(h); /* drops the unrun timer */
    ck_assert_int_eq(fired, 0);
}
END_TEST

START_TEST(test_host_run_once_nothing_pending_returns_zero)
{
    keel_host *h = host_new();
    /* No timeout and nothing pending: must return, not block. */
    ck_assert_int_eq(keel__host_run_once(h, 0), 0);
    ck_assert_int_eq(keel__host_run_once(h, 50), 0);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_poll_runs_only_ready_callbacks)
{
    keel_host *h = host_new();
    int now = 0;
    int later = 0;
    ck_assert_int_eq(keel__host_timer(h, 3600 * 1000, count_cb, &later, NULL),
                     KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &now, NULL), KEEL_OK);
    ck_assert_int_eq(keel__host_poll(h), 1);
    ck_assert_int_eq(now, 1);
    ck_assert_int_eq(later, 0);
    ck_assert_int_eq(keel__host_poll(h), 0);
    ck_assert_uint_eq(keel__host_pending(h), 1);
    keel__host_free(h);
    ck_assert_int_eq(later, 0);
}
END_TEST

static void reenter_cb(void *arg)
{
    keel__host_run_once(arg, 0);
}

START_TEST(test_host_run_once_from_callback_aborts)
{
    keel_host *h = host_new();
    ck_assert_int_eq(keel__host_timer(h, 0, reenter_cb, h, NULL), KEEL_OK);
    keel__host_run_once(h, 0);
    ck_abort_msg("reentrant run_once returned");
}
END_TEST

/* ---- free -----------------------------------------------------------------
 */

START_TEST(test_host_free_with_nothing_pending_is_clean)
{
    keel_host *h = host_new();
    keel__host_free(h);
    keel__host_free(NULL);
}
END_TEST

typedef struct slow_arg {
    atomic_int started;
    atomic_int finished;
    int done_ran;
} slow_arg;

static void slow_work(void *arg)
{
    slow_arg *s = arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    atomic_store(&s->started, 1);
    nanosleep(&ts, NULL); /* long enough that free is called meanwhile */
    atomic_store(&s->finished, 1);
}

static void slow_done(void *arg)
{
    ((slow_arg *)arg)->done_ran++;
}

START_TEST(test_host_free_waits_for_running_work_and_drops_done)
{
    keel_host *h = host_new();
    slow_arg s = {0};
    ck_assert_int_eq(keel__host_work(h, slow_work, slow_done, &s), KEEL_OK);
    while (!atomic_load(&s.started)) {
        sched_yield();
    }
    keel__host_free(h);
    ck_assert_int_eq(atomic_load(&s.finished), 1);
    ck_assert_int_eq(s.done_ran, 0);
}
END_TEST

START_TEST(test_host_free_waits_for_queued_work)
{
    enum { N = 16 }; /* more jobs than libuv's default 4 pool threads */
    keel_host *h = host_new();
    slow_arg *s = calloc(N, sizeof(*s));
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(keel__host_work(h, slow_work, slow_done, &s[i]),
                         KEEL_OK);
    }
    keel__host_free(h);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&s[i].finished), 1);
        ck_assert_int_eq(s[i].done_ran, 0);
    }
    free(s);
}
END_TEST

START_TEST(test_host_free_drops_unrun_timers)
{
    keel_host *h = host_new();
    int fired = 0;
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &fired, NULL), KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 3600 * 1000, count_cb, &fired, NULL),
                     KEEL_OK);
    keel__host_free(h);
    ck_assert_int_eq(fired, 0);
}
END_TEST

/* ---- cancel ---------------------------------------------------------------
 */

/* H10: a cancelled timer never fires and stops counting at once; the
 * other one still fires. */
START_TEST(test_host_cancel_timer_never_fires)
{
    keel_host *h = host_new();
    int gone = 0, kept = 0;
    uint64_t id = 0, other = 0;
    ck_assert_int_eq(keel__host_timer(h, 3600 * 1000, count_cb, &gone, &id),
                     KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &kept, &other), KEEL_OK);
    ck_assert_int_eq(keel__host_cancel(h, id), 1);
    ck_assert_uint_eq(keel__host_pending(h), 1);
    ck_assert_int_eq(keel__host_cancel(h, id), 0); /* once */
    drain(h);
    ck_assert_int_eq(kept, 1);
    ck_assert_int_eq(gone, 0);
    ck_assert_int_eq(keel__host_cancel(h, other), 0); /* already ran */
    keel__host_free(h);
}
END_TEST

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    atomic_int entered;
    int done_ran;
} gate;

static void gate_work(void *arg)
{
    gate *g = arg;
    atomic_fetch_add(&g->entered, 1);
    pthread_mutex_lock(&g->mu);
    while (!g->open) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_done(void *arg)
{
    ((gate *)arg)->done_ran++;
}

/* Deterministic mode: a cancelled timer is skipped by run_once; a job
 * is never cancelled (H10: its work always runs). */
START_TEST(test_host_deterministic_cancel_skips_timer_only)
{
    keel_host *h = NULL;
    int fired = 0, later = 0;
    gate j = {.mu = PTHREAD_MUTEX_INITIALIZER,
              .cv = PTHREAD_COND_INITIALIZER,
              .open = 1};
    uint64_t t = 0, t2 = 0;
    ck_assert_int_eq(keel__host_new(&h, 1), KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &fired, &t), KEEL_OK);
    ck_assert_int_eq(keel__host_work(h, gate_work, gate_done, &j), KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 5, count_cb, &later, &t2), KEEL_OK);
    ck_assert_int_eq(keel__host_cancel(h, t), 1);
    ck_assert_int_eq(keel__host_cancel(h, t), 0); /* once */
    ck_assert_uint_eq(keel__host_pending(h), 2);
    ck_assert_int_eq(keel__host_run_once(h, 0), 1); /* the job */
    ck_assert_int_eq(fired, 0);
    ck_assert_int_eq(atomic_load(&j.entered), 1);
    ck_assert_int_eq(j.done_ran, 1);
    ck_assert_int_eq(keel__host_run_once(h, 0), 1); /* the later timer */
    ck_assert_int_eq(later, 1);
    ck_assert_int_eq(keel__host_run_once(h, 0), 0);
    ck_assert_int_eq(keel__host_cancel(h, t2), 0); /* fired */
    keel__host_free(h);
}
END_TEST

/* ---- deterministic mode ----------------------------------------------------
 */

static keel_host *det_host_new(void)
{
    keel_host *h = NULL;
    ck_assert_int_eq(keel__host_new(&h, 1), KEEL_OK);
    ck_assert_ptr_nonnull(h);
    return h;
}

/* A job that logs its id from `done` and records that `work` ran first,
 * on the caller's thread. */
typedef struct det_job {
    cblog *log;
    int id;
    pthread_t caller;
    int work_ran;
    int work_on_caller;
    int done_ran;
    int done_after_work;
} det_job;

static void det_job_work(void *arg)
{
    det_job *j = arg;
    j->work_ran++;
    j->work_on_caller = pthread_equal(pthread_self(), j->caller);
}

static void det_job_done(void *arg)
{
    det_job *j = arg;
    j->done_ran++;
    j->done_after_work = j->work_ran == 1;
    ck_assert_int_lt(j->log->n, LOG_MAX);
    j->log->ids[j->log->n++] = j->id;
}

START_TEST(test_host_deterministic_runs_one_callback_in_due_order)
{
    keel_host *h = det_host_new();
    cblog log = {0};
    timer_arg t[4] = {{&log, 30}, {&log, 10}, {&log, 20}, {&log, 11}};
    const uint64_t delays[4] = {30, 10, 20, 10};
    det_job j = {.log = &log, .id = 0, .caller = pthread_self()};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(keel__host_timer(h, delays[i], log_timer, &t[i], NULL),
                         KEEL_OK);
    }
    ck_assert_int_eq(keel__host_work(h, det_job_work, det_job_done, &j),
                     KEEL_OK);
    ck_assert_uint_eq(keel__host_pending(h), 5);
    /* exactly one callback per run_once, however long ago it was "due" */
    for (uint64_t left = 5; left > 0; left--) {
        ck_assert_int_eq(keel__host_run_once(h, 0), 1);
        ck_assert_uint_eq(keel__host_pending(h), left - 1);
    }
    ck_assert_int_eq(keel__host_run_once(h, 0), 0);
    /* the job is due at once; equal delays keep their scheduling order */
    const int want[5] = {0, 10, 11, 20, 30};
    ck_assert_int_eq(log.n, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(log.ids[i], want[i]);
    }
    ck_assert_int_eq(j.done_ran, 1);
    ck_assert(j.done_after_work);
    ck_assert(j.work_on_caller);
    keel__host_free(h);
}
END_TEST

typedef struct det_chain {
    keel_host *h;
    timer_arg next;
} det_chain;

/* Scheduled at virtual time 10: its timer of delay 5 is due at 15. */
static void det_chain_timer(void *arg)
{
    det_chain *c = arg;
    ck_assert_int_eq(keel__host_timer(c->h, 5, log_timer, &c->next, NULL),
                     KEEL_OK);
}

START_TEST(test_host_deterministic_clock_advances_to_due_time)
{
    keel_host *h = det_host_new();
    cblog log = {0};
    det_chain c = {h, {&log, 15}};
    timer_arg a = {&log, 14}, b = {&log, 16};
    ck_assert_int_eq(keel__host_timer(h, 10, det_chain_timer, &c, NULL),
                     KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 14, log_timer, &a, NULL), KEEL_OK);
    ck_assert_int_eq(keel__host_timer(h, 16, log_timer, &b, NULL), KEEL_OK);
    ck_assert_int_eq(drain(h), 4);
    ck_assert_int_eq(log.n, 3);
    ck_assert_int_eq(log.ids[0], 14);
    ck_assert_int_eq(log.ids[1], 15);
    ck_assert_int_eq(log.ids[2], 16);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_deterministic_poll_runs_nothing)
{
    keel_host *h = det_host_new();
    int fired = 0;
    det_job j = {.caller = pthread_self()};
    ck_assert_int_eq(keel__host_timer(h, 0, count_cb, &fired, NULL), KEEL_OK);
    ck_assert_int_eq(keel__host_work(h, det_job_work, det_job_done, &j),
                     KEEL_OK);
    ck_assert_int_eq(keel__host_poll(h), 0);
    ck_assert_int_eq(fired, 0);
    ck_assert_int_eq(j.work_ran, 0);
    ck_assert_uint_eq(keel__host_pending(h), 2);
    keel__host_free(h);
}
END_TEST

START_TEST(test_host_deterministic_free_runs_work_drops_callbacks)
{
    keel_host *h = det_host_new();
    int fired = 0;
    cblog log = {0};
    det_job j[3];
    ck_assert_int_eq(keel__host_timer(h, 1, count_cb, &fired, NULL), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        j[i] = (det_job){.log = &log, .id = i, .caller = pthread_self()};
        ck_assert_int_eq(keel__host_work(h, det_job_work, det_job_done, &j[i]),
                         KEEL_OK);
    }
    keel__host_free(h);
    ck_assert_int_eq(fired, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(j[i].work_ran, 1);
        ck_assert_int_eq(j[i].done_ran, 0);
    }
}
END_TEST

/* A callback that, on its first run, schedules two more with random delays
 * (from its own seeded state), so the order depends on the virtual clock. */
typedef struct det_tree {
    keel_host *h;
    cblog *log;
    uint64_t rng;
    int next_id;
    struct det_tree_node {
        struct det_tree *t;
        int id;
    } nodes[LOG_MAX];
} det_tree;

static void det_tree_cb(void *arg);

static void det_tree_spawn(det_tree *t, int n)
{
    for (int i = 0; i < n && t->next_id < LOG_MAX; i++) {
        struct det_tree_node *nd = &t->nodes[t->next_id];
        nd->t = t;
        nd->id = t->next_id++;
        uint64_t delay = tu_rand(&t->rng) % 50;
        ck_assert_int_eq(keel__host_timer(t->h, delay, det_tree_cb, nd, NULL),
                         KEEL_OK);
    }
}

static void det_tree_cb(void *arg)
{
    struct det_tree_node *nd = arg;
    det_tree *t = nd->t;
    t->log->ids[t->log->n++] = nd->id;
    det_tree_spawn(t, 2);
}

START_TEST(test_host_deterministic_same_schedule_same_order)
{
    uint64_t seed = 0x686F73742D646574ull ^ (uint64_t)time(NULL);
    cblog logs[2] = {{0}};
    for (int run = 0; run < 2; run++) {
        det_tree *t = calloc(1, sizeof(*t));
        ck_assert_ptr_nonnull(t);
        t->h = det_host_new();
        t->log = &logs[run];
        t->rng = seed;
        det_tree_spawn(t, 4);
        ck_assert_int_eq(drain(t->h), LOG_MAX);
        keel__host_free(t->h);
        free(t);
    }
    ck_assert_int_eq(logs[0].n, LOG_MAX);
    for (int i = 0; i < LOG_MAX; i++) {
        ck_assert_msg(logs[0].ids[i] == logs[1].ids[i],
                      "seed 0x%016llx: callback %d differs: %d vs %d",
                      (unsigned long long)seed, i, logs[0].ids[i],
                      logs[1].ids[i]);
    }
}
END_TEST

Suite *host_suite(void);

Suite *host_suite(void)
{
    Suite *s = suite_create("host");
    TCase *tc = tcase_create("timers");
    tcase_add_test(tc, test_host_timers_fire_in_deadline_order);
    tcase_add_test(tc, test_host_timers_equal_delay_fire_in_schedule_order);
    tcase_add_test(tc,
                   test_host_timer_callback_schedules_another_counted_exactly);
    tcase_add_test(tc, test_host_timer_null_callback_is_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("work");
    tcase_add_test(tc, test_host_work_runs_off_thread_and_done_on_caller);
    tcase_add_test(tc, test_host_work_many_jobs_each_done_once);
    tcase_add_test(tc, test_host_work_null_function_is_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("run");
    tcase_add_test(tc, test_host_pending_counts_timers_and_jobs);
    tcase_add_test(tc,
                   test_host_run_once_timeout_returns_zero_without_callback);
    tcase_add_test(tc, test_host_run_once_nothing_pending_returns_zero);
    tcase_add_test(tc, test_host_poll_runs_only_ready_callbacks);
    tcase_add_test_raise_signal(tc, test_host_run_once_from_callback_aborts,
                                SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("free");
    tcase_add_test(tc, test_host_free_with_nothing_pending_is_clean);
    tcase_add_test(tc, test_host_free_waits_for_running_work_and_drops_done);
    tcase_add_test(tc, test_host_free_waits_for_queued_work);
    tcase_add_test(tc, test_host_free_drops_unrun_timers);
    suite_add_tcase(s, tc);

    tc = tcase_create("deterministic");
    tcase_add_test(tc, test_host_deterministic_runs_one_callback_in_due_order);
    tcase_add_test(tc, test_host_deterministic_clock_advances_to_due_time);
    tcase_add_test(tc, test_host_deterministic_poll_runs_nothing);
    tcase_add_test(tc, test_host_deterministic_free_runs_work_drops_callbacks);
    tcase_add_test(tc, test_host_deterministic_same_schedule_same_order);
    tcase_add_test(tc, test_host_cancel_timer_never_fires);
    tcase_add_test(tc, test_host_deterministic_cancel_skips_timer_only);
    suite_add_tcase(s, tc);
    return s;
}
