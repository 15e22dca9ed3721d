/*
 * host/host.c — the host loop on libuv: one-shot timers and thread-pool
 * jobs whose callbacks run on the kernel's thread, only inside
 * keel__host_run_once() and keel__host_poll() (so never inside a crank).
 *
 * The host owns its uv_loop_t. Each timer is a malloc'd record embedding a
 * uv_timer_t; each job a malloc'd record embedding a uv_work_t. A helper
 * timer embedded in the host bounds run_once's wait.
 *
 * Invariants:
 *   H1  pending == timers started whose callback has neither run nor been
 *       dropped + jobs queued whose after-work callback has not run. A timer
 *       leaves the count just before its callback runs, a job just before
 *       its `done` runs, so a callback that schedules more work sees (and
 *       adds to) an exact count.
 *   H2  User callbacks (timer cb, job done) run only inside run_once/poll on
 *       the calling thread, never from free: free sets `freeing` first and
 *       the libuv callbacks then drop the user callback unrun.
 *   H3  Every record is freed exactly once: a timer record in its handle's
 *       close callback (after it fired, or when free closes it unfired), a
 *       job record in its after-work callback (libuv calls it exactly once
 *       per queued job, also while free drains the loop).
 *   H4  free returns only after every queued job's `work` returned and every
 *       handle closed, so uv_loop_close() succeeds and no thread-pool thread
 *       touches a job record afterwards.
 *   H5  The helper timer is stopped before run_once returns, and run_once
 *       returns at once when nothing is pending, so it never blocks on a
 *       loop with nothing to wake it.
 *   H6  A timer's deadline is the loop time refreshed at the call plus
 *       delay_ms (uv_update_time first: a loop idle for a long time has a
 *       stale clock, which would fire new timers early). Timers with equal
 *       deadlines fire in the order they were scheduled (libuv breaks ties
 *       by start order), so callback order is deterministic for given
 *       deadlines.
 *   H7  Not reentrant: a callback must not call run_once/poll/free on its
 *       own host (asserted via `running`).
 *   H11 keel__host_keep's holds count in pending as timers and jobs do
 *       (H1 plus the holds): the holder (host/control.c) keeps a listener
 *       on the loop, so run_once's UV_RUN_ONCE always has an active
 *       handle to wake it (H5). Holds never go below zero.
 *   H10 Every timer has an id (keel__host_cancel); a libuv timer is on
 *       `recs` from its scheduling until it fires or is cancelled. A
 *       cancelled timer never fires and leaves the pending count at the
 *       cancel. Jobs cannot be cancelled: a job's work always runs (H4).
 *
 * Deterministic mode (host.h) uses no libuv at all: the loop is never
 * initialized, and timers and jobs are entries of a binary min-heap `q`
 * ordered by (due_ms, seq). H1, H2 (free runs no user callback), H3 (the
 * heap holds entries by value: nothing to free one by one), H4 (free runs
 * each queued job's `work`), H7 and H10 (a cancelled timer stays in the
 * heap, marked, and is skipped when it comes up) hold as above; in place
 * of H5 and H6:
 *   H8  due_ms = now_ms at scheduling + delay_ms (saturating), where now_ms
 *       is the virtual clock: it starts at 0 and only run_once advances it,
 *       to the due time of the entry it runs. seq numbers entries in
 *       scheduling order, so (due_ms, seq) is a total order and the order
 *       of callbacks depends on nothing but the order and delays of the
 *       calls that scheduled them.
 *   H9  poll runs nothing; run_once runs exactly the least entry (work,
 *       then its callback), which leaves the heap before it runs (H1).
 */
#include "host/host.h"

#include <stddef.h>
#include <stdlib.h>

#include <uv.h>

#include "common/diag.h"
#include "keel/keel.h"

/* A deterministic-mode timer (work == NULL) or job. */
typedef struct det_entry {
    uint64_t due_ms; /* H8 */
    uint64_t seq;    /* also its id (keel__host_cancel) */
    int cancelled;
    void (*work)(void *arg);
    void (*cb)(void *arg); /* the timer's callback, or the job's done */
    void *arg;
} det_entry;

struct keel_host {
    int deterministic;
    /* deterministic mode (H8, H9) */
    det_entry *q; /* min-heap on (due_ms, seq) */
    size_t nq;
    size_t capq;
    uint64_t now_ms;
    uint64_t next_seq;
    /* libuv mode */
    uv_loop_t loop;
    uv_timer_t wait_timer; /* run_once's timeout (H5) */
    uint64_t pending;      /* H1 */
    int ran;               /* user callbacks run in the current run/poll */
    int timed_out;         /* wait_timer fired in the current run_once */
    int running;           /* inside run_once/poll (H7) */
    int freeing;           /* inside free: drop user callbacks (H2) */
    struct host_rec *recs; /* libuv: timers not yet fired (H10) */
};

/* A libuv timer's place on the list keel__host_cancel looks ids up in
 * (H10). */
typedef struct host_rec {
    struct host_rec *prev, *next;
    uint64_t id;
} host_rec;

typedef struct host_timer {
    uv_timer_t handle; /* first: the close callback gets &handle */
    host_rec rec;
    keel_host *host;
    void (*cb)(void *arg);
    void *arg;
} host_timer;

typedef struct host_job {
    uv_work_t req;
    keel_host *host;
    void (*work)(void *arg);
    void (*done)(void *arg);
    void *arg;
} host_job;

/* libuv's errors are negative errno values on Unix. */
static int from_uv(int uv)
{
    return keel_translate_errno(-uv);
}

static void rec_link(keel_host *h, host_rec *r)
{
    r->id = h->next_seq++;
    r->prev = NULL;
    r->next = h->recs;
    if (r->next != NULL) {
        r->next->prev = r;
    }
    h->recs = r;
}

static void rec_unlink(keel_host *h, host_rec *r)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else if (h->recs == r) {
        h->recs = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    r->prev = r->next = NULL;
}

int keel__host_new(keel_host **out, int deterministic)
{
    int rc = KEEL_OK;
    int uv;
    keel_host *h = calloc(1, sizeof(*h));
    *out = NULL;
    if (h == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    h->deterministic = deterministic != 0;
    if (h->deterministic) {
        *out = h; /* no libuv: H8 */
        goto out;
    }
    uv = uv_loop_init(&h->loop);
    if (uv < 0) {
        rc = from_uv(uv);
        free(h);
        h = NULL;
        goto out;
    }
    /* A timer on an initialized loop cannot fail to initialize. */
    uv = uv_timer_init(&h->loop, &h->wait_timer);
    KEEL_ASSERT(uv == 0);
    *out = h;
out:
    return rc;
}

/* ---- the deterministic queue ----------------------------------------------
 */

static int det_less(const det_entry *a, const det_entry *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void det_swap(det_entry *a, det_entry *b)
{
    det_entry t = *a;
    *a = *b;
    *b = t;
}

/* Queue cb(arg) (after work(arg) for a job) delay_ms virtual ms from now;
 * its id into *id. */
static int det_push(keel_host *h, uint64_t delay_ms, void (*work)(void *arg),
                    void (*cb)(void *arg), void *arg, uint64_t *id)
{
    int rc = KEEL_OK;
    if (h->nq == h->capq) {
        size_t cap = h->capq != 0 ? h->capq * 2 : 16;
        det_entry *q = realloc(h->q, cap * sizeof(*q));
        if (q == NULL) {
            rc = KEEL_ENOMEM;
            goto out;
        }
        h->q = q;
        h->capq = cap;
    }
    det_entry e = {.due_ms = delay_ms > UINT64_MAX - h->now_ms
                                 ? UINT64_MAX
                                 : h->now_ms + delay_ms, /* H8 */
                   .seq = h->next_seq++,
                   .work = work,
                   .cb = cb,
                   .arg = arg};
    if (id != NULL) {
        *id = e.seq;
    }
    size_t i = h->nq++;
    h->q[i] = e;
    while (i > 0 && det_less(&h->q[i], &h->q[(i - 1) / 2])) {
        det_swap(&h->q[i], &h->q[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    h->pending++;
out:
    return rc;
}

/* Remove the least entry into *e. The heap must not be empty. */
static void det_pop(keel_host *h, det_entry *e)
{
    *e = h->q[0];
    h->q[0] = h->q[--h->nq];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->nq && det_less(&h->q[l], &h->q[m])) {
            m = l;
        }
        if (r < h->nq && det_less(&h->q[r], &h->q[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        det_swap(&h->q[i], &h->q[m]);
        i = m;
    }
    if (!e->cancelled) {
        h->pending--; /* H1: before the callbacks, which may schedule more */
    }
}

/* H9: run the least entry that is not cancelled, if any. @return
 * callbacks run (0 or 1). */
static int det_run_next(keel_host *h)
{
    det_entry e = {.cancelled = 1};
    while (h->nq > 0 && e.cancelled) {
        det_pop(h, &e);
    }
    int ran = !e.cancelled;
    if (ran) {
        if (e.due_ms > h->now_ms) {
            h->now_ms = e.due_ms; /* H8 */
        }
        if (e.work != NULL) {
            e.work(e.arg);
        }
        e.cb(e.arg);
    }
    return ran;
}

/* ---- timers ---------------------------------------------------------------
 */

static void timer_closed(uv_handle_t *handle)
{
    free(handle->data); /* H3 */
}

static void timer_fired(uv_timer_t *handle)
{
    host_timer *t = handle->data;
    keel_host *h = t->host;
    rec_unlink(h, &t->rec);
    h->pending--; /* H1: before cb, which may schedule more */
    if (!h->freeing) {
        h->ran++;
        t->cb(t->arg);
    }
    uv_close((uv_handle_t *)handle, timer_closed);
}

int keel__host_timer(keel_host *h, uint64_t delay_ms, void (*cb)(void *arg),
                     void *arg, uint64_t *id)
{
    int rc = KEEL_OK;
    int uv;
    host_timer *t = NULL;
    if (cb == NULL || h->freeing) {
        rc = KEEL_EINVAL;
        goto out;
    }
    if (h->deterministic) {
        rc = det_push(h, delay_ms, NULL, cb, arg, id);
        goto out;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    t->host = h;
    t->cb = cb;
    t->arg = arg;
    uv = uv_timer_init(&h->loop, &t->handle);
    KEEL_ASSERT(uv == 0);
    t->handle.data = t;
    uv_update_time(&h->loop); /* H6 */
    uv = uv_timer_start(&t->handle, timer_fired, delay_ms, 0);
    KEEL_ASSERT(uv == 0); /* only fails for a closing handle */
    rec_link(h, &t->rec);
    if (id != NULL) {
        *id = t->rec.id;
    }
    h->pending++;
out:
    return rc;
}

/* ---- thread-pool jobs -----------------------------------------------------
 */

static void job_work(uv_work_t *req)
{
    host_job *j = req->data;
    j->work(j->arg);
}

static void job_after(uv_work_t *req, int status)
{
    host_job *j = req->data;
    keel_host *h = j->host;
    /* Nothing cancels jobs (H10), so status is always 0. */
    KEEL_ASSERT(status == 0);
    h->pending--; /* H1 */
    if (!h->freeing) {
        h->ran++;
        j->done(j->arg);
    }
    free(j); /* H3 */
}

int keel__host_work(keel_host *h, void (*work)(void *arg),
                    void (*done)(void *arg), void *arg)
{
    int rc = KEEL_OK;
    int uv;
    host_job *j = NULL;
    if (work == NULL || done == NULL || h->freeing) {
        rc = KEEL_EINVAL;
        goto out;
    }
    if (h->deterministic) {
        rc = det_push(h, 0, work, done, arg, NULL);
        goto out;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    j->host = h;
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->req.data = j;
    uv = uv_queue_work(&h->loop, &j->req, job_work, job_after);
    if (uv < 0) {
        rc = from_uv(uv);
        free(j);
        goto out;
    }
    h->pending++;
out:
    return rc;
}

/* ---- cancelling -----------------------------------------------------------
 */

int keel__host_cancel(keel_host *h, uint64_t id)
{
    KEEL_ASSERT(!h->freeing);
    if (h->deterministic) {
        for (size_t i = 0; i < h->nq; i++) {
            if (h->q[i].seq == id && h->q[i].work == NULL &&
                !h->q[i].cancelled) {
                h->q[i].cancelled = 1; /* popped and skipped later */
                h->pending--;          /* H1 */
                return 1;
            }
        }
        return 0;
    }
    host_rec *r = h->recs;
    while (r != NULL && r->id != id) {
        r = r->next;
    }
    if (r == NULL) {
        return 0; /* fired already, or a job (H10) */
    }
    host_timer *t = (host_timer *)((char *)r - offsetof(host_timer, rec));
    uv_timer_stop(&t->handle);
    rec_unlink(h, r);
    h->pending--;                                      /* H1 */
    uv_close((uv_handle_t *)&t->handle, timer_closed); /* H3 */
    return 1;
}

/* ---- running callbacks ----------------------------------------------------
 */

uint64_t keel__host_pending(const keel_host *h)
{
    return h->pending;
}

static void wait_expired(uv_timer_t *handle)
{
    keel_host *h = handle->data;
    h->timed_out = 1;
}

/* run_once on libuv: until a user callback ran, the wait timed out, or
 * nothing is pending. */
static void loop_run_once(keel_host *h, uint64_t timeout_ms)
{
    if (h->pending > 0 && timeout_ms > 0) {
        h->wait_timer.data = h;
        uv_update_time(&h->loop);
        int uv = uv_timer_start(&h->wait_timer, wait_expired, timeout_ms, 0);
        KEEL_ASSERT(uv == 0);
    }
    /* Each UV_RUN_ONCE blocks until some handle or request is ready; with
     * pending > 0 a timer or job is always active, so it cannot block
     * forever on an empty loop (H5). A wake-up with no user callback (the
     * thread pool's async signal for a job still in progress elsewhere)
     * just loops. */
    while (h->ran == 0 && !h->timed_out && h->pending > 0) {
        uv_run(&h->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&h->wait_timer); /* H5 */
}

int keel__host_run_once(keel_host *h, uint64_t timeout_ms)
{
    KEEL_ASSERT(!h->running); /* H7 */
    h->running = 1;
    h->ran = 0;
    h->timed_out = 0;
    if (h->deterministic) {
        h->ran = det_run_next(h); /* H9 */
    } else {
        loop_run_once(h, timeout_ms);
    }
    h->running = 0;
    return h->ran;
}

int keel__host_poll(keel_host *h)
{
    KEEL_ASSERT(!h->running); /* H7 */
    h->running = 1;
    h->ran = 0;
    if (!h->deterministic) { /* H9: deterministic runs nothing here */
        uv_run(&h->loop, UV_RUN_NOWAIT);
    }
    h->running = 0;
    return h->ran;
}

struct uv_loop_s *keel__host_uv(keel_host *h)
{
    return h->deterministic ? NULL : &h->loop;
}

void keel__host_keep(keel_host *h, int delta)
{
    KEEL_ASSERT(delta >= 0 || h->pending >= (uint64_t)-delta); /* H11 */
    h->pending = (uint64_t)((int64_t)h->pending + delta);
}

void keel__host_woke(keel_host *h)
{
    h->ran++;
}

/* ---- free -----------------------------------------------------------------
 */

static void close_one(uv_handle_t *handle, void *arg)
{
    keel_host *h = arg;
    if (uv_is_closing(handle)) {
        return; /* a fired timer already on its way to timer_closed */
    }
    if (handle == (uv_handle_t *)&h->wait_timer) {
        uv_close(handle, NULL); /* embedded in the host */
    } else {
        uv_close(handle, timer_closed); /* an unfired user timer (H3) */
    }
}

void keel__host_free(keel_host *h)
{
    if (h == NULL) {
        return;
    }
    KEEL_ASSERT(!h->running); /* H7 */
    h->freeing = 1;           /* H2 */
    if (h->deterministic) {
        /* H4: a job's `work` always runs (a vat may count on it to free
         * what it shares with the job), its `done` never does here. */
        for (size_t i = 0; i < h->nq; i++) {
            if (h->q[i].work != NULL) {
                h->q[i].work(h->q[i].arg);
            }
        }
    } else {
        uv_walk(&h->loop, close_one, h);
        /* Runs until no request or handle is active: every queued job has
         * run its work and its after-work callback (H4), every close
         * callback has freed its timer record (H3). */
        uv_run(&h->loop, UV_RUN_DEFAULT);
        int uv = uv_loop_close(&h->loop);
        KEEL_ASSERT(uv == 0); /* H4: nothing left open */
    }
    free(h->q);
    free(h);
}
