/*
 * kernel/syscall.c — the syscalls vats make (vat.h), and the three ways
 * one is carried out:
 *
 *   in crank      the vat is the one being delivered to: the syscall runs
 *                 in the crank's transaction (buffered; committed or
 *                 aborted with the crank).
 *   out of crank  no transaction is open: the syscall is its own
 *                 transaction (kind out-of-crank), committed, and its
 *                 run-queue items enqueued, at once (SPEC §5). Inside an
 *                 async callback (keel_vat_timer, keel_vat_work) the
 *                 callback's syscalls together are that one transaction,
 *                 committed when it returns (K33; docs/kernel.md says why).
 *   held          a transaction for another vat is open (its crank is
 *                 running): the syscall is copied and run as its own
 *                 transaction right after that one ends, never merged
 *                 into it and never left waiting for a later crank.
 *
 * Invariants:
 *   K30 Every out-of-crank syscall is committed before the call returns
 *       (or, held, before keel_kernel_step returns).
 *   K31 An illegal syscall dooms the transaction it is in; out of crank,
 *       the vat is terminated at once, in its own transaction.
 *   K32 Async work of a vat that has terminated is dropped: its timers
 *       are cancelled (they never fire, and never keep `keel run` busy),
 *       the done callback of its jobs is never called (their work still
 *       runs, once: K35), and a request it makes later is accepted and
 *       never runs.
 *   K33 (below) The syscalls of one async callback form one transaction;
 *       so do those of a host's keel__k_oc_txn call (KH4: a worker's
 *       out-of-crank group), by the same code.
 *   K34 Output commit for async work (DESIGN §2.6): keel_vat_timer and
 *       keel_vat_work only hold the request. It is handed to the host once
 *       the transaction that asked for it committed and the WAL is durable
 *       up to that transaction's record, under every sync policy; if that
 *       transaction aborts, it is dropped and never starts. A request made
 *       outside the vat's own transaction (in start(), or during another
 *       vat's crank) waits for everything appended so far. Held requests
 *       start in the order they were made.
 *   K35 A job whose transaction committed has its work run exactly once,
 *       even if its vat terminates or the kernel closes or fails first
 *       (close waits for the log to be durable, then starts what is held,
 *       and the host runs every queued job's work): a vat may free what it
 *       shares with a job in the job's work. A job whose transaction
 *       aborted never runs at all, nor does one whose record the log
 *       failed before making durable (DESIGN §2.6 outranks it).
 */
#include "kernel/kernel_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "kernel/keyfmt.h"

void keel__k_free_deferred(kdeferred *d)
{
    if (d == NULL) {
        return;
    }
    free(d->a);
    free(d->b);
    free(d->c);
    free(d->body);
    for (size_t i = 0; i < d->nslots; i++) {
        free(d->slots[i]);
    }
    free(d->slots);
    free(d);
}

static char *dup_or_null(const char *s, int *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    *oom |= d == NULL;
    return d;
}

/* Copy a syscall so it outlives the vat's arguments (held syscalls). */
static kdeferred *copy_sc(const kdeferred *sc)
{
    int oom = 0;
    kdeferred *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return NULL;
    }
    d->vid = sc->vid;
    d->kind = sc->kind;
    d->flag = sc->flag;
    d->a = dup_or_null(sc->a, &oom);
    d->b = dup_or_null(sc->b, &oom);
    d->c = dup_or_null(sc->c, &oom);
    if (sc->body_len > 0) {
        d->body = malloc(sc->body_len);
        oom |= d->body == NULL;
        if (d->body != NULL) {
            memcpy(d->body, sc->body, sc->body_len);
            d->body_len = sc->body_len;
        }
    }
    if (sc->nslots > 0) {
        d->slots = calloc(sc->nslots, sizeof(*d->slots));
        oom |= d->slots == NULL;
        for (size_t i = 0; d->slots != NULL && i < sc->nslots; i++) {
            d->slots[i] = dup_or_null(sc->slots[i], &oom);
            d->nslots = i + 1;
        }
    }
    if (oom) {
        keel__k_free_deferred(d);
        return NULL;
    }
    return d;
}

/* One syscall as its own transaction (out of crank, or held). */
static int own_txn(keel_kernel *k, kvat *v, const kdeferred *sc,
                   keel_diag *diag)
{
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        return rc;
    }
    k->txn_vid = v->id;
    rc = keel__k_exec(k, v, sc);
    if (k->illegal) { /* K31 */
        keel__k_txn_abort(k);
        int trc = keel__k_terminate(k, v->id, diag);
        return trc < 0 ? trc : KEEL_EINVAL;
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        return rc;
    }
    rc = keel__k_txn_commit_exits(k, KEEL_WAL_OUT_OF_CRANK, diag);
    if (rc == KEEL_ETOOBIG) {
        int trc = keel__k_terminate(k, v->id, diag);
        return trc < 0 ? trc : KEEL_EINVAL;
    }
    return rc;
}

int keel__k_run_deferred(keel_kernel *k, keel_diag *diag)
{
    int rc = KEEL_OK;
    while (k->defer_head != NULL && rc >= 0) {
        kdeferred *d = k->defer_head;
        k->defer_head = d->next;
        if (k->defer_head == NULL) {
            k->defer_tail = NULL;
        }
        kvat *v = keel__k_vat(k, d->vid);
        if (v != NULL && v->alive) {
            rc = own_txn(k, v, d, diag);
            rc = rc == KEEL_EINVAL ? KEEL_OK : rc; /* the vat paid for it */
        }
        keel__k_free_deferred(d);
    }
    return rc;
}

static int dispatch(keel_syscall *sys, kdeferred *sc)
{
    keel_kernel *k = sys->k;
    kvat *v = sys->v;
    if (!v->alive || k->failed) {
        return KEEL_EFAILED;
    }
    sc->vid = v->id;
    if (k->delivering == v) {
        return keel__k_exec(k, v, sc); /* in crank */
    }
    if (k->in_txn) { /* held until the open transaction ends */
        kdeferred *d = copy_sc(sc);
        if (d == NULL) {
            return KEEL_ENOMEM;
        }
        if (k->defer_tail != NULL) {
            k->defer_tail->next = d;
        } else {
            k->defer_head = d;
        }
        k->defer_tail = d;
        return KEEL_OK;
    }
    return own_txn(k, v, sc, NULL); /* K30 */
}

static void set_capdata(kdeferred *sc, const keel_capdata *cd)
{
    if (cd != NULL) {
        sc->body = (uint8_t *)cd->body.ptr;
        sc->body_len = cd->body.len;
        sc->slots = (char **)cd->slots;
        sc->nslots = cd->nslots;
    }
}

static int illegal_read(keel_syscall *sys, const char *fmt, size_t n);

int keel_syscall_send(keel_syscall *sys, const char *target, const char *method,
                      const keel_capdata *args, const char *result)
{
    if (keel__k_method_check(method, NULL, 0) != KEEL_OK) { /* K23 */
        return illegal_read(sys, "send: method is not 1..%zu bytes of UTF-8",
                            KEEL_METHOD_MAX);
    }
    kdeferred sc = {.kind = SC_SEND,
                    .a = (char *)target,
                    .b = (char *)method,
                    .c = (char *)result};
    set_capdata(&sc, args);
    return dispatch(sys, &sc);
}

int keel_syscall_subscribe(keel_syscall *sys, const char *promise)
{
    kdeferred sc = {.kind = SC_SUBSCRIBE, .a = (char *)promise};
    return dispatch(sys, &sc);
}

int keel_syscall_resolve(keel_syscall *sys, const char *promise, int rejected,
                         const keel_capdata *data)
{
    kdeferred sc = {
        .kind = SC_RESOLVE, .a = (char *)promise, .flag = rejected != 0};
    set_capdata(&sc, data);
    return dispatch(sys, &sc);
}

int keel_syscall_exit(keel_syscall *sys, int failure, const keel_capdata *info)
{
    kdeferred sc = {.kind = SC_EXIT, .flag = failure != 0};
    set_capdata(&sc, info);
    return dispatch(sys, &sc);
}

int keel_syscall_vatstore_set(keel_syscall *sys, const char *key,
                              const void *val, size_t len)
{
    kdeferred sc = {.kind = SC_VS_SET,
                    .a = (char *)key,
                    .body = (uint8_t *)val,
                    .body_len = len};
    return dispatch(sys, &sc);
}

int keel_syscall_vatstore_delete(keel_syscall *sys, const char *key)
{
    kdeferred sc = {.kind = SC_VS_DEL, .a = (char *)key};
    return dispatch(sys, &sc);
}

static int gc_calls(keel_syscall *sys, int what, const char *const *vrefs,
                    size_t n)
{
    int rc = KEEL_OK;
    for (size_t i = 0; rc == KEEL_OK && i < n; i++) {
        kdeferred sc = {.kind = SC_GC, .flag = what, .a = (char *)vrefs[i]};
        rc = dispatch(sys, &sc);
    }
    return rc;
}

int keel_syscall_drop_imports(keel_syscall *sys, const char *const *vrefs,
                              size_t n)
{
    return gc_calls(sys, 0, vrefs, n);
}

int keel_syscall_retire_imports(keel_syscall *sys, const char *const *vrefs,
                                size_t n)
{
    return gc_calls(sys, 1, vrefs, n);
}

int keel_syscall_retire_exports(keel_syscall *sys, const char *const *vrefs,
                                size_t n)
{
    return gc_calls(sys, 2, vrefs, n);
}

int keel_syscall_abandon_exports(keel_syscall *sys, const char *const *vrefs,
                                 size_t n)
{
    return gc_calls(sys, 3, vrefs, n);
}

/* A read with bad arguments is illegal like a bad write (SPEC §4): it
 * dooms the vat through the path a write would take (in its crank, held
 * during another's, or its own transaction), which terminates it. */
static int illegal_read(keel_syscall *sys, const char *fmt, size_t n)
{
    char what[128];
    snprintf(what, sizeof(what), fmt, n);
    kdeferred sc = {.kind = SC_ILLEGAL, .a = what};
    int rc = dispatch(sys, &sc);
    return rc == KEEL_EFAILED ? rc : KEEL_EINVAL;
}

/* Reads need no transaction: they see the open one, if it is this vat's
 * crank, or the store. */
int keel_syscall_vatstore_get(keel_syscall *sys, const char *key,
                              keel_bytes *val)
{
    keel_kernel *k = sys->k;
    keel__key full;
    size_t n = key != NULL ? strlen(key) : 0;
    if (!sys->v->alive || k->failed) {
        return KEEL_EFAILED;
    }
    if (n == 0 || n > KEEL_VATSTORE_KEY_MAX) {
        return illegal_read(sys, "vatstore_get: key of %zu bytes", n);
    }
    return keel__k_get(k, keel__ks_vatstore(&full, sys->v->id, key, n), val);
}

int keel_syscall_vatstore_next_key(keel_syscall *sys, const char *after,
                                   char *buf, size_t cap)
{
    keel_kernel *k = sys->k;
    keel__key prefix, from, found;
    if (!sys->v->alive || k->failed) {
        return KEEL_EFAILED;
    }
    if (after == NULL || strlen(after) > KEEL_VATSTORE_KEY_MAX) {
        return illegal_read(sys, "vatstore_next_key: key of %zu bytes",
                            after != NULL ? strlen(after) : 0);
    }
    if (cap < KEEL_VATSTORE_KEY_MAX + 1) {
        return illegal_read(sys, "vatstore_next_key: buffer of %zu bytes", cap);
    }
    keel__ks_vat_prefix(&prefix, KS_VATSTORE, sys->v->id);
    keel__ks_vatstore(&from, sys->v->id, after, strlen(after));
    int rc = keel__k_next(k, &prefix, after[0] != '\0' ? &from : NULL, &found);
    if (rc == 1) {
        size_t n = found.n - prefix.n;
        if (n >= cap) {
            return keel__k_fail_key(k, KEEL_ECORRUPT, &found);
        }
        memcpy(buf, found.b + prefix.n, n);
        buf[n] = '\0';
    }
    return rc;
}

int keel_syscall_alloc_object(keel_syscall *sys, char *buf)
{
    keel__kf_key(buf, KEEL_VREF_MAX, "o+", sys->v->next_o++, "");
    return KEEL_OK;
}

int keel_syscall_alloc_promise(keel_syscall *sys, char *buf)
{
    keel__kf_key(buf, KEEL_VREF_MAX, "p+", sys->v->next_p++, "");
    return KEEL_OK;
}

const char *keel_syscall_vat_name(const keel_syscall *sys)
{
    return sys->v->name;
}

/* ---- async work -------------------------------------------------------- */

/* Closures live on the kernel's list until their callback ran, so the
 * ones the host drops unrun at close are freed too (keel__k_free_async).
 * A new one is held (K34): with the open transaction if the vat asking is
 * the one that transaction is for, else behind everything committed so far
 * (the state it was asked from). */
static kasync *async_new(keel_syscall *sys)
{
    keel_kernel *k = sys->k;
    kasync *a = calloc(1, sizeof(*a));
    if (a != NULL) {
        a->k = k;
        a->vid = sys->v->id;
        a->next = k->async_head;
        if (a->next != NULL) {
            a->next->prev = a;
        }
        k->async_head = a;
        a->held = 1;
        a->in_txn = k->in_txn && k->delivering == sys->v;
        a->lsn = a->in_txn ? 0 : keel_wal_last_lsn(k->wal);
        if (k->held_tail != NULL) {
            k->held_tail->hnext = a;
        } else {
            k->held_head = a;
        }
        k->held_tail = a;
        k->nheld++;
    }
    return a;
}

/* Take a off the held list (it is there). */
static void held_remove(keel_kernel *k, kasync *a)
{
    kasync **pp = &k->held_head, *prev = NULL;
    while (*pp != a) {
        prev = *pp;
        pp = &(*pp)->hnext;
    }
    *pp = a->hnext;
    if (k->held_tail == a) {
        k->held_tail = prev;
    }
    a->hnext = NULL;
    a->held = 0;
    k->nheld--;
}

static void async_unlink(kasync *a)
{
    if (a->held) {
        held_remove(a->k, a);
    }
    if (a->prev != NULL) {
        a->prev->next = a->next;
    } else {
        a->k->async_head = a->next;
    }
    if (a->next != NULL) {
        a->next->prev = a->prev;
    }
    free(a);
}

void keel__k_free_async(keel_kernel *k)
{
    while (k->async_head != NULL) {
        async_unlink(k->async_head);
    }
}

void keel__k_async_committed(keel_kernel *k, uint64_t lsn)
{
    for (kasync *a = k->held_head; a != NULL; a = a->hnext) {
        if (a->in_txn) {
            a->in_txn = 0;
            a->lsn = lsn;
        }
    }
}

void keel__k_async_aborted(keel_kernel *k)
{
    kasync *a = k->held_head;
    while (a != NULL) {
        kasync *next = a->hnext;
        if (a->in_txn) {
            async_unlink(a); /* K34: an aborted transaction starts nothing */
        }
        a = next;
    }
}

void keel__k_cancel_async(keel_kernel *k, uint32_t vid)
{
    kasync *a = k->async_head;
    while (a != NULL) {
        kasync *next = a->next;
        /* Only timers: a job's work always runs once its transaction
         * committed (a vat may count on it to free what it shares with
         * the job); its done is dropped when it comes (K32). */
        if (a->vid == vid && a->work == NULL &&
            (a->held || k->host.cancel(k->host.ctx, a->host_id) == 1)) {
            async_unlink(a);
        }
        a = next;
    }
}

/*
 * K33: the syscalls one async callback makes are one out-of-crank
 * transaction, committed (and its items enqueued) as soon as the callback
 * returns. A completion that resolves a promise and forgets its job record
 * must not be cut in two by a crash, any more than a crank may.
 */
/* K33, KH4: fn's syscalls as one out-of-crank transaction of v (a, if
 * given, is the async record fn is the callback of: freed once fn ran).
 * @return 1 committed and v lives, 0 v terminated, KEEL_EFAILED. */
static int oc_txn(keel_kernel *k, kvat *v,
                  void (*fn)(void *arg, keel_syscall *sys),
                  int (*ifn)(void *arg, keel_syscall *sys), void *arg,
                  kasync *a)
{
    if (keel__k_txn_begin(k) < 0) {
        if (a != NULL) {
            async_unlink(a);
        }
        return KEEL_EFAILED;
    }
    k->txn_vid = v->id;
    k->delivering = v; /* its syscalls join this transaction */
    int discard = 0;
    if (fn != NULL) {
        fn(arg, &v->sys);
    } else {
        discard = ifn(arg, &v->sys);
    }
    k->delivering = NULL;
    if (a != NULL) {
        async_unlink(a);
    }
    if (discard && !k->illegal) {
        keel__k_txn_abort(k); /* KH4: the host discards it */
    } else if (k->illegal) {  /* K31 */
        keel__k_txn_abort(k);
        keel__k_terminate(k, v->id, NULL);
    } else if (keel__store_ws_count(k->store) == 0 && k->exit_vid == 0) {
        /* Nothing to commit: work it asked for follows what is committed
         * (K34). */
        keel__k_async_committed(k, keel_wal_last_lsn(k->wal));
        keel__k_txn_abort(k);
    } else {
        int rc = keel__k_txn_commit_exits(k, KEEL_WAL_OUT_OF_CRANK, NULL);
        if (rc == KEEL_ETOOBIG) {
            keel__k_terminate(k, v->id, NULL);
        }
    }
    int alive = v->alive;
    keel__k_run_deferred(k, NULL);
    keel__k_reap(k);
    keel__k_start_async(k, 0, NULL);
    return k->failed ? KEEL_EFAILED : alive;
}

static void async_done(void *p)
{
    kasync *a = p;
    keel_kernel *k = a->k;
    kvat *v = keel__k_vat(k, a->vid);
    if (v == NULL || !v->alive || k->failed) { /* K32 */
        async_unlink(a);
        return;
    }
    oc_txn(k, v, a->done, NULL, a->arg, a);
}

int keel__k_oc_txn(keel_syscall *sys, int (*fn)(void *arg, keel_syscall *sys),
                   void *arg)
{
    keel_kernel *k = sys->k;
    if (k->in_txn) {
        return KEEL_EINVAL; /* KH4: between cranks only */
    }
    if (k->failed) {
        return KEEL_EFAILED;
    }
    if (!sys->v->alive) {
        return 0;
    }
    return oc_txn(k, sys->v, NULL, fn, arg, NULL);
}

keel_kernel *keel__k_sys_kernel(const keel_syscall *sys)
{
    return sys->k;
}

void keel__k_sys_next(const keel_syscall *sys, uint64_t *next_o,
                      uint64_t *next_p)
{
    *next_o = sys->v->next_o;
    *next_p = sys->v->next_p;
}

int keel__k_sys_alive(const keel_syscall *sys)
{
    return sys->v->alive;
}

static void async_work(void *p)
{
    kasync *a = p;
    a->work(a->arg);
}

void keel__k_start_held_work(keel_kernel *k)
{
    /* K35 on a failed kernel: a committed job's work runs once its log is
     * durable; timers, and jobs whose log cannot be made durable, are
     * dropped (their done would be dropped anyway: K32). */
    while (k->held_head != NULL) {
        kasync *a = k->held_head;
        held_remove(k, a);
        int run = a->work != NULL && !a->in_txn;
        if (run && a->lsn > keel_wal_durable_lsn(k->wal)) {
            run = keel_wal_wait(k->wal, a->lsn, NULL) == KEEL_OK;
        }
        if (!run || k->host.work(k->host.ctx, async_work, async_done, a) < 0) {
            async_unlink(a);
        }
    }
}

int keel__k_start_async(keel_kernel *k, int wait, keel_diag *diag)
{
    while (k->held_head != NULL && !k->held_head->in_txn && !k->failed) {
        kasync *a = k->held_head;
        if (a->lsn > keel_wal_durable_lsn(k->wal)) {
            if (!wait) {
                break;
            }
            keel_diag d = {0};
            int rc = keel_wal_wait(k->wal, a->lsn, &d);
            if (rc < 0) {
                /* The log failed: nothing after it may be relied on. */
                keel__k_fail(k, rc, d.msg);
                break;
            }
        }
        held_remove(k, a);
        int rc = a->work != NULL
                     ? k->host.work(k->host.ctx, async_work, async_done, a)
                     : k->host.timer(k->host.ctx, a->delay_ms, async_done, a,
                                     &a->host_id);
        if (rc < 0) {
            async_unlink(a);
            keel__k_fail(k, rc, "starting a vat's async work");
            break;
        }
    }
    if (k->failed) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return KEEL_EFAILED;
    }
    return KEEL_OK;
}

int keel_vat_timer(keel_syscall *sys, uint64_t delay_ms,
                   void (*cb)(void *arg, keel_syscall *sys), void *arg)
{
    if (cb == NULL || sys->k->hostless) { /* KH2 */
        return KEEL_EINVAL;
    }
    if (!sys->v->alive || sys->k->failed) {
        return KEEL_OK; /* K32: accepted, never run */
    }
    kasync *a = async_new(sys);
    if (a == NULL) {
        return KEEL_ENOMEM;
    }
    a->done = cb;
    a->arg = arg;
    a->delay_ms = delay_ms;
    return KEEL_OK;
}

int keel_vat_work(keel_syscall *sys, void (*work)(void *arg),
                  void (*done)(void *arg, keel_syscall *sys), void *arg)
{
    if (work == NULL || done == NULL || sys->k->hostless) { /* KH2 */
        return KEEL_EINVAL;
    }
    if (!sys->v->alive || sys->k->failed) {
        return KEEL_OK; /* K32: accepted, never run */
    }
    kasync *a = async_new(sys);
    if (a == NULL) {
        return KEEL_ENOMEM;
    }
    a->work = work;
    a->done = done;
    a->arg = arg;
    return KEEL_OK;
}
