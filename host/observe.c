/*
 * host/observe.c — observations, held until durable, to the metrics and
 * the event log (host/observe.h).
 *
 * Invariants:
 *   OB1 Nothing leaves before it is durable (DESIGN §2.6): an observation
 *       with an LSN is published (metrics, event log, subscribers) only
 *       once the WAL's durable LSN covers it; those without a durable
 *       record of their own (a vat start or stop, a checkpoint) carry the
 *       last LSN appended and wait for it too. Publication keeps the
 *       kernel's order.
 *   OB2 Under sync=full an observation is published at once (the durable
 *       LSN already covers it and nothing is held before it); otherwise at
 *       the next tick of the run loop (every crank, every idle slice of at
 *       most 100 ms) or at stop. Held observations are copies, in
 *       place (a vat name and a method fit; only a snapshot's path is
 *       allocated), so holding one costs no allocation; the queue holds at
 *       most what the WAL has appended but not synced (W6).
 *   OB3 Gauges are sampled at most every 200 ms of ticks, at attach and at
 *       stop, on the kernel's thread (M2): the HTTP thread never reads the
 *       kernel.
 */
#include "host/observe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/diag.h"
#include "keel/kernel.h"

typedef struct held {
    keel_observation ob;
    char vat_name[64]; /* a vat name is at most 63 bytes */
    char method[KEEL_METHOD_MAX + 1];
    char *path; /* malloc'd (a snapshot's; rare) */
} held;

struct keel_obs {
    keel_obs_config c;
    char *state_dir;
    keel_metrics *m;
    keel_eventlog *el;
    keel_notify n;
    keel_kernel *k; /* from attach on */
    held *q;        /* OB1: in the kernel's order */
    size_t qn, qcap;
    uint64_t sampled_ns;
    int oom_reported;
};

static void publish(keel_obs *o, const keel_observation *const *obs, size_t n)
{
    keel__metrics_observe(o->m, obs, n);
    for (size_t i = 0; i < n && keel__eventlog_active(o->el); i++) {
        keel__eventlog_observe(o->el, obs[i]);
    }
    keel__eventlog_flush(o->el); /* EL1: one write per batch */
}

/* OB1: publish the held observations up to durable, in order. */
static void release(keel_obs *o, uint64_t durable)
{
    size_t n = 0;
    const keel_observation *batch[64];
    while (n < o->qn && o->q[n].ob.lsn <= durable) {
        size_t b = 0;
        while (b < 64 && n + b < o->qn && o->q[n + b].ob.lsn <= durable) {
            held *h = &o->q[n + b];
            /* the queue moves (realloc, memmove): point into it only now */
            h->ob.vat_name = h->ob.vat_name != NULL ? h->vat_name : NULL;
            h->ob.method = h->ob.method != NULL ? h->method : NULL;
            batch[b] = &h->ob;
            b++;
        }
        publish(o, batch, b);
        for (size_t i = 0; i < b; i++) {
            free(o->q[n + i].path);
        }
        n += b;
    }
    if (n > 0) {
        memmove(o->q, o->q + n, (o->qn - n) * sizeof(*o->q));
        o->qn -= n;
    }
}

/* Copy at most cap - 1 bytes of s (NULL: nothing) into buf. */
static void copy_in(char *buf, size_t cap, const char *s)
{
    size_t n = s != NULL ? strnlen(s, cap - 1) : 0;
    memcpy(buf, s != NULL ? s : "", n);
    buf[n] = '\0';
}

static void hold(keel_obs *o, const keel_observation *ob)
{
    if (o->qn == o->qcap) {
        size_t cap = o->qcap ? o->qcap * 2 : 256;
        held *q = realloc(o->q, cap * sizeof(*q));
        if (q == NULL) {
            if (!o->oom_reported) {
                o->oom_reported = 1;
                fprintf(stderr, "keel: run: out of memory holding "
                                "observations; metrics and the event log "
                                "miss some\n");
            }
            return;
        }
        o->q = q;
        o->qcap = cap;
    }
    held *h = &o->q[o->qn++]; /* OB2: copies, no allocation of its own */
    h->ob = *ob; /* vat_name, method: non-NULL says "copied" (release) */
    copy_in(h->vat_name, sizeof(h->vat_name), ob->vat_name);
    copy_in(h->method, sizeof(h->method), ob->method);
    h->path = ob->path != NULL ? strdup(ob->path) : NULL;
    h->ob.path = h->path;
}

static void sample(keel_obs *o)
{
    if (o->k != NULL) {
        keel__metrics_sample(o->m, o->k, o->state_dir);
        o->sampled_ns = keel__now_ns();
    }
}

static void observe(void *arg, const keel_observation *ob)
{
    keel_obs *o = arg;
    if (ob->what == KEEL_OBS_TICK) {
        release(o, ob->lsn);
        keel__notify_tick(&o->n); /* N2 */
        if (keel__now_ns() - o->sampled_ns >= 200u * 1000000u) {
            sample(o); /* OB3 */
        }
        return;
    }
    /* OB2: at once if nothing is held and the log covers it */
    if (o->qn == 0 && o->k != NULL &&
        keel_kernel_durable_lsn(o->k) >= ob->lsn) {
        publish(o, &ob, 1);
        return;
    }
    hold(o, ob);
}

int keel__obs_start(const keel_obs_config *c, keel_kernel_options *ko,
                    keel_obs **out, uint16_t *port, keel_diag *diag)
{
    *out = NULL;
    *port = 0;
    keel_obs *o = calloc(1, sizeof(*o));
    if (o == NULL || (o->state_dir = strdup(c->state_dir)) == NULL) {
        free(o);
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    o->c = *c;
    int rc = keel__metrics_new(&o->m);
    if (rc == KEEL_OK) {
        rc = keel__eventlog_open(c->event_log, c->event_log_max_bytes,
                                 c->event_log_keep, o->m, &o->el, diag);
    } else {
        keel__diag(diag, rc, "out of memory");
    }
    if (rc == KEEL_OK && c->metrics_listen != NULL) {
        rc = keel__metrics_listen(o->m, c->metrics_listen,
                                  c->metrics_allow_remote, port, diag);
    }
    if (rc < 0) {
        keel__obs_free(o, 0);
        return rc;
    }
    keel__notify_init(&o->n);
    ko->observe = observe;
    ko->observe_arg = o;
    *out = o;
    return KEEL_OK;
}

void keel__obs_attached(keel_obs *o, keel_kernel *k)
{
    keel_kernel_recovery r;
    o->k = k;
    keel_kernel_recovery_info(k, &r);
    if (r.torn) { /* the WAL's open truncated it, before all else */
        keel__eventlog_torn(o->el, &r);
    }
    release(o, keel_kernel_durable_lsn(k));
    sample(o);
    keel__notify_ready(&o->n); /* N1 */
}

void keel__obs_stopping(keel_obs *o)
{
    if (o->k != NULL) {
        release(o, keel_kernel_durable_lsn(o->k));
        sample(o);
    }
    keel__notify_stopping(&o->n); /* N3 */
}

void keel__obs_free(keel_obs *o, int closed_ok)
{
    if (o == NULL) {
        return;
    }
    if (closed_ok) { /* OB1: the close synced the log */
        release(o, UINT64_MAX);
    }
    keel__notify_stopping(&o->n);
    keel__metrics_free(o->m);
    keel__eventlog_close(o->el);
    free(o->q);
    free(o->state_dir);
    free(o);
}

void keel__obs_refresh(keel_obs *o)
{
    if (o->k != NULL) {
        release(o, keel_kernel_durable_lsn(o->k)); /* OB1 */
        sample(o);
    }
}

keel_metrics *keel__obs_metrics(keel_obs *o)
{
    return o->m;
}

keel_eventlog *keel__obs_eventlog(keel_obs *o)
{
    return o->el;
}
