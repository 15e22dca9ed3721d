/*
 * kernel/crank.c — the crank engine: one run-queue item per crank, message
 * routing, promise settlement, c-list translation, syscalls, termination.
 *
 * Everything here runs inside an open transaction (keel__k_txn_begin):
 * reads see the transaction's write-set first, writes go to it, and the
 * caller commits or aborts it as a whole.
 *
 * Invariants:
 *   K1  A vat reaches only krefs in its c-list; an unknown o-N / p-N from
 *       a vat is forging: illegal (SPEC §1).
 *   K2  Each c-list is a bijection: c.<v>.k.<kref> and c.<v>.v.<vref> are
 *       written and deleted together.
 *   K3  A promise settles at most once; settling queues one notify per
 *       subscriber and re-queues its queued messages in order, in the same
 *       transaction (SPEC §4, §6). Nothing settles a promise twice.
 *   K4  Only the decider resolves a promise; the decider is cleared on
 *       settlement and d.<vid>.<kp> mirrors it exactly.
 *   K5  Counters (ko, kp, vat ids, exported o+N/p+N maxima) only grow.
 *   K6  A terminated vat decides nothing: termination, one transaction,
 *       marks it terminated; from then on nothing reaches it (messages to
 *       its objects reject their results, notifies to it are dropped, its
 *       syscalls and vatstore fail, its async work is cancelled). Then,
 *       in batches of at most CLEANUP_BATCH_KEYS units that stop once the
 *       write-set encodes to CLEANUP_BATCH_BYTES, each in key order and
 *       continuing from the last key done (linear): every promise it
 *       decides is rejected ("vat terminated", retiring its c-list pair),
 *       then its c-list and vatstore keys are deleted. The first batch is
 *       part of the termination transaction, the rest, if any, kernel-op
 *       transactions of their own (keel__k_cleanup), with the durable
 *       cursor v.<vid>.cleanup saying where to go on after a crash; the
 *       batch that finishes deletes the cursor. So no termination or
 *       cleanup record exceeds the batch bound (plus one unit), whatever
 *       the vat holds or decides.
 *       A vat's exit is terminated in the transaction that made the exit
 *       syscall (keel__k_txn_commit_exits): durable with it, or lost with
 *       it; never a committed exit whose termination a crash could lose.
 *   K7  Vref numbers are never reused: a vat's p+N that was retired from
 *       its c-list (settled) stays marked, and using it again is illegal.
 *       The mark is the watermark v.<v>.retp (every p+N at or below it is
 *       retired) or, above it, c.<v>.r.<vref>; a retirement at
 *       watermark + 1 folds the markers above into it, so promises
 *       retired in order leave no key behind.
 */
#include "kernel/kernel_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "kernel/routing.h"

#define TERMINATED_BODY "{\"error\":\"vat terminated\"}"
#define NON_OBJECT_BODY "{\"error\":\"cannot send to a non-object\"}"
/* K6: one cleanup batch of a terminated vat deletes at most this many keys,
 * and stops once its write-set encodes to this many bytes (so its WAL
 * record holds at most about CLEANUP_BATCH_BYTES plus one key). */
#define CLEANUP_BATCH_KEYS  16384
#define CLEANUP_BATCH_BYTES (1024u * 1024)

int keel__k_illegal(keel_kernel *k, const char *fmt, ...)
{
    if (!k->illegal) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(k->illegal_msg, sizeof(k->illegal_msg), fmt, ap);
        va_end(ap);
        k->illegal = 1;
    }
    return KEEL_EINVAL;
}

/* Parse "o+12" etc. (the vat ABI's syntax, checked here once) into its
 * binary form. @return 1, or 0 if malformed. */
static int parse_vref(const char *s, keel__vref *r)
{
    return s != NULL && keel__ks_vref_parse(s, r);
}

static int vref_is_p(keel__vref r)
{
    return r.kind == KR_PPLUS || r.kind == KR_PMINUS;
}

/* A kernel kref string ("ko7", "kp3") of kind as *r. @return 1 or 0. */
static int kref_of(const char *s, uint8_t kind, keel__kref *r)
{
    return keel__ks_kref_parse(s, r) && r->kind == kind;
}

static int clist_add(keel_kernel *k, uint32_t vid, keel__kref kr, keel__vref vr)
{
    keel__key key;
    uint8_t kb[KEEL__KS_REF_BYTES], vb[KEEL__KS_REF_BYTES];
    keel__ks_ref(kb, kr.kind, kr.n);
    keel__ks_ref(vb, vr.kind, vr.n);
    k->gc_new = 1; /* callers add only entries they found absent */
    int rc = keel__k_put(k, keel__ks_clist_k(&key, vid, kr), vb, sizeof(vb));
    if (rc == KEEL_OK) { /* K2 */
        rc = keel__k_put(k, keel__ks_clist_v(&key, vid, KC_V, vr), kb,
                         sizeof(kb));
    }
    return rc;
}

static int clist_drop(keel_kernel *k, uint32_t vid, keel__kref kr,
                      keel__vref vr)
{
    keel__key key;
    int rc = keel__k_del(k, keel__ks_clist_k(&key, vid, kr));
    if (rc == KEEL_OK) {
        rc = keel__k_del(k, keel__ks_clist_v(&key, vid, KC_V, vr));
    }
    if (rc == KEEL_OK && vr.kind == KR_PPLUS) {
        /* K7: a retired p+N of the vat's own may never name a new
         * promise (that would let it resolve "the same" promise twice).
         * Retired in order, they only move the watermark v.<vid>.retp;
         * a marker stays only above it, until the numbers below it are
         * retired too (so a long run keeps no key per promise). */
        uint64_t low = 0;
        keel__key wk;
        keel_bytes b;
        keel__ks_vat(&wk, vid, KV_RETP);
        rc = keel__k_get_u64(k, &wk, &low);
        if (rc >= 0 && vr.n != low + 1) {
            return keel__k_put(k, keel__ks_clist_v(&key, vid, KC_R, vr), "", 0);
        }
        for (low = vr.n; rc >= 0; low++) {
            keel__vref next = {KR_PPLUS, low + 1};
            rc = keel__k_get(k, keel__ks_clist_v(&key, vid, KC_R, next), &b);
            if (rc != 1) {
                break;
            }
            rc = keel__k_del(k, &key);
        }
        rc = rc < 0 ? rc : keel__k_put_u64(k, &wk, low);
    }
    return rc;
}

/* K7: was p+N (vr) of vat vid used and retired? @return 1, 0, < 0. */
static int retired_pplus(keel_kernel *k, uint32_t vid, keel__vref vr)
{
    keel__key key;
    keel_bytes b;
    uint64_t low = 0;
    int rc = keel__k_get_u64(k, keel__ks_vat(&key, vid, KV_RETP), &low);
    if (rc < 0 || (rc == 1 && vr.n <= low)) {
        return rc < 0 ? rc : 1;
    }
    return keel__k_get(k, keel__ks_clist_v(&key, vid, KC_R, vr), &b);
}

static int next_id(keel_kernel *k, const keel__key *key, uint64_t *id)
{
    uint64_t n = 1;
    int rc = keel__k_get_u64(k, key, &n);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        n = 1;
    }
    *id = n;
    return keel__k_put_u64(k, key, n + 1); /* K5 */
}

static int prom_load(keel_kernel *k, const char *kp, kprom *p)
{
    keel__key key;
    keel__kref r;
    keel_bytes v;
    if (!kref_of(kp, KR_P, &r)) {
        return keel__k_fail(k, KEEL_ECORRUPT, kp);
    }
    int rc = keel__k_get(k, keel__ks_promise(&key, r.n), &v);
    if (rc == 0) {
        return KEEL_ENOENT;
    }
    if (rc < 0) {
        return rc;
    }
    if (keel__kprom_decode(v.ptr, v.len, p) < 0) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    return KEEL_OK;
}

/* k->kb emptied for an encoding (K28). */
static kbuf *scratch(keel_kernel *k)
{
    k->kb.len = 0;
    k->kb.oom = 0;
    return &k->kb;
}

static int prom_save(keel_kernel *k, const char *kp, const kprom *p)
{
    keel__key key;
    keel__kref r;
    if (!kref_of(kp, KR_P, &r)) {
        return keel__k_fail(k, KEEL_ECORRUPT, kp);
    }
    kbuf *b = scratch(k);
    keel__kprom_encode(b, p);
    return b->oom ? KEEL_ENOMEM
                  : keel__k_put(k, keel__ks_promise(&key, r.n), b->p, b->len);
}

static int decider_index(keel_kernel *k, uint32_t vid, const char *kp, int on)
{
    keel__key key;
    keel__kref r;
    if (!kref_of(kp, KR_P, &r)) {
        return keel__k_fail(k, KEEL_ECORRUPT, kp);
    }
    keel__ks_decider(&key, vid, r.n);
    return on ? keel__k_put(k, &key, "", 0) : keel__k_del(k, &key);
}

static int add_unresolved(keel_kernel *k, int delta)
{
    uint64_t n = 0;
    int rc = keel__k_meta_get(k, KM_UNRESOLVED, &n);
    if (rc < 0) {
        return rc;
    }
    n = delta > 0 ? n + 1 : (n > 0 ? n - 1 : 0);
    return keel__k_meta_put(k, KM_UNRESOLVED, n);
}

/* A new promise kp<*n> decided by decider (0: none), its kref in out. */
static int promise_make(keel_kernel *k, uint32_t decider, char *out,
                        uint64_t *n)
{
    keel__key key;
    int rc = next_id(k, keel__ks_meta(&key, KM_NEXT_KP), n);
    if (rc < 0) {
        return rc;
    }
    keel__ks_kref_str((keel__kref){KR_P, *n}, out);
    kprom p = {.state = KP_UNRESOLVED, .decider = decider};
    k->gc_new = 1; /* a fresh number (K5) */
    rc = prom_save(k, out, &p);
    if (rc == KEEL_OK && decider != 0) {
        rc = decider_index(k, decider, out, 1);
    }
    if (rc == KEEL_OK) {
        rc = add_unresolved(k, 1);
    }
    return rc;
}

int keel__k_promise_new(keel_kernel *k, uint32_t decider, char *out)
{
    uint64_t n;
    return promise_make(k, decider, out, &n);
}

/* Remember the highest o+N / p+N a vat has exported (K5). */
static int note_export(keel_kernel *k, kvat *v, int obj, uint64_t n)
{
    keel__key key;
    uint64_t max = 0;
    keel__ks_vat(&key, v->id, obj ? KV_MAXO : KV_MAXP);
    int rc = keel__k_get_u64(k, &key, &max);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0 || n > max) {
        rc = keel__k_put_u64(k, &key, n);
    }
    uint64_t *next = obj ? &v->next_o : &v->next_p;
    if (n + 1 > *next) {
        *next = n + 1;
    }
    return rc < 0 ? rc : KEEL_OK;
}

int keel__k_vref_to_kref(keel_kernel *k, kvat *v, const char *vref, char *out)
{
    keel__key key;
    keel__vref vr;
    keel__kref kr;
    keel_bytes b;
    if (!parse_vref(vref, &vr)) {
        return keel__k_illegal(k, "malformed vref '%s'",
                               vref != NULL ? vref : "(null)");
    }
    int rc = keel__k_get(k, keel__ks_clist_v(&key, v->id, KC_V, vr), &b);
    if (rc == 1) {
        if (!keel__ks_kref_val(b.ptr, b.len, &kr)) {
            return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
        }
        keel__ks_kref_str(kr, out);
        if (vr.kind == KR_OPLUS) { /* an export told dropExports, re-sent */
            int reach;
            rc = keel__k_get(k, keel__ks_clist_k(&key, v->id, kr), &b);
            if (rc == 1 && !keel__ks_clist_kval(b.ptr, b.len, &vr, &reach)) {
                return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
            }
            if (rc == 1 && !reach) {
                return keel__gc_set_reach(k, v->id, kr, vr, 1);
            }
            return rc < 0 ? rc : KEEL_OK;
        }
        return KEEL_OK;
    }
    if (rc < 0) {
        return rc;
    }
    if (vr.kind == KR_OMINUS || vr.kind == KR_PMINUS) { /* K1 */
        return keel__k_illegal(k, "vat %s used %s, which it was never given",
                               v->name, vref);
    }
    if (vr.kind == KR_PPLUS) { /* K7 */
        rc = retired_pplus(k, v->id, vr);
        if (rc != 0) {
            return rc < 0 ? rc
                          : keel__k_illegal(k,
                                            "vat %s used %s again after it "
                                            "was settled and retired",
                                            v->name, vref);
        }
    }
    if (vr.kind == KR_OPLUS) {
        rc = next_id(k, keel__ks_meta(&key, KM_NEXT_KO), &kr.n);
        if (rc < 0) {
            return rc;
        }
        kr.kind = KR_O;
        keel__ks_kref_str(kr, out);
        rc = keel__k_put_u32(k, keel__ks_object(&key, kr.n), v->id);
    } else {
        kr.kind = KR_P;
        rc = promise_make(k, v->id, out, &kr.n);
    }
    if (rc == KEEL_OK) {
        rc = clist_add(k, v->id, kr, vr);
    }
    if (rc == KEEL_OK) {
        rc = note_export(k, v, vr.kind == KR_OPLUS, vr.n);
    }
    return rc;
}

int keel__k_kref_to_vref(keel_kernel *k, kvat *v, const char *kref, char *out)
{
    keel__key key;
    keel__kref kr;
    keel__vref vr;
    keel_bytes b;
    if (!keel__ks_kref_parse(kref, &kr)) {
        return keel__k_fail(k, KEEL_ECORRUPT, kref);
    }
    int rc = keel__k_get(k, keel__ks_clist_k(&key, v->id, kr), &b);
    if (rc == 1) {
        int reach;
        if (!keel__ks_clist_kval(b.ptr, b.len, &vr, &reach)) {
            return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
        }
        keel__ks_vref_str(vr, out);
        /* A dropped import given again is reachable again (G1). */
        return reach ? KEEL_OK : keel__gc_set_reach(k, v->id, kr, vr, 1);
    }
    if (rc < 0) {
        return rc;
    }
    int obj = kr.kind == KR_O;
    rc =
        next_id(k, keel__ks_vat(&key, v->id, obj ? KV_NEXTI : KV_NEXTQ), &vr.n);
    if (rc < 0) {
        return rc;
    }
    vr.kind = obj ? KR_OMINUS : KR_PMINUS;
    keel__ks_vref_str(vr, out);
    return clist_add(k, v->id, kr, vr);
}

static int push_item(keel_kernel *k, const kbuf *b)
{
    uint64_t tail = 0;
    keel__key key;
    if (b->oom) {
        return KEEL_ENOMEM;
    }
    int rc = keel__k_meta_get(k, KM_RQ_TAIL, &tail);
    if (rc < 0) {
        return rc;
    }
    rc = keel__k_put(k, keel__ks_runq(&key, tail), b->p, b->len);
    if (rc == KEEL_OK) {
        rc = keel__k_meta_put(k, KM_RQ_TAIL, tail + 1);
    }
    return rc;
}

int keel__k_enqueue_send(keel_kernel *k, const char *target, const char *method,
                         const void *body, size_t body_len, char *const *slots,
                         size_t nslots, const char *result)
{
    kbuf *b = scratch(k);
    kmsg m = {.method = (char *)method,
              .body = (uint8_t *)body,
              .body_len = body_len,
              .slots = (char **)slots,
              .nslots = nslots,
              .result = (char *)(result != NULL ? result : "")};
    keel__kb_u8(b, KITEM_SEND);
    keel__kb_str(b, target);
    keel__kmsg_encode(b, &m);
    return push_item(k, b);
}

int keel__k_enqueue_notify(keel_kernel *k, uint32_t vid, const char *kp)
{
    kbuf *b = scratch(k);
    keel__kb_u8(b, KITEM_NOTIFY);
    keel__kb_u32(b, vid);
    keel__kb_str(b, kp);
    return push_item(k, b);
}

int keel__k_settle(keel_kernel *k, const char *kp, int rejected,
                   const void *body, size_t body_len, char *const *slots,
                   size_t nslots)
{
    kprom p;
    int rc = prom_load(k, kp, &p);
    if (rc < 0) {
        return rc;
    }
    if (p.state != KP_UNRESOLVED) { /* K3: callers check; never twice */
        keel__kprom_free(&p);
        return KEEL_EEXIST;
    }
    for (size_t i = 0; rc == KEEL_OK && i < p.nsubs; i++) {
        rc = keel__k_enqueue_notify(k, p.subs[i], kp);
    }
    for (size_t i = 0; rc == KEEL_OK && i < p.nqueue; i++) {
        const kmsg *m = &p.queue[i];
        rc = keel__k_enqueue_send(k, kp, m->method, m->body, m->body_len,
                                  m->slots, m->nslots, m->result);
    }
    if (rc == KEEL_OK && p.decider != 0) { /* K4 */
        rc = decider_index(k, p.decider, kp, 0);
    }
    if (rc == KEEL_OK) {
        kprom s = {.state = rejected ? KP_REJECTED : KP_FULFILLED};
        s.res.method = "";
        s.res.result = "";
        s.res.body = (uint8_t *)body;
        s.res.body_len = body_len;
        s.res.slots = (char **)slots;
        s.res.nslots = nslots;
        rc = prom_save(k, kp, &s);
    }
    if (rc == KEEL_OK) {
        rc = add_unresolved(k, -1);
    }
    keel__kprom_free(&p);
    return rc;
}

int keel__k_subscribe(keel_kernel *k, uint32_t vid, const char *kp)
{
    kprom p;
    int rc = prom_load(k, kp, &p);
    if (rc < 0) {
        return rc;
    }
    if (p.state != KP_UNRESOLVED) {
        rc = keel__k_enqueue_notify(k, vid, kp); /* SPEC §4: at once */
    } else {
        int have = 0;
        for (size_t i = 0; i < p.nsubs; i++) {
            have |= p.subs[i] == vid;
        }
        if (!have) {
            uint32_t *ns = realloc(p.subs, (p.nsubs + 1) * sizeof(*ns));
            if (ns == NULL) {
                rc = KEEL_ENOMEM;
            } else {
                p.subs = ns;
                p.subs[p.nsubs++] = vid;
                rc = prom_save(k, kp, &p);
            }
        }
    }
    keel__kprom_free(&p);
    return rc;
}

/* Reject a message's result promise (if any, and still unresolved). */
static int reject_result(keel_kernel *k, const char *result, const char *body,
                         size_t len, char *const *slots, size_t nslots)
{
    if (result == NULL || result[0] == '\0') {
        return KEEL_OK;
    }
    int rc = keel__k_settle(k, result, 1, body, len, slots, nslots);
    return rc == KEEL_EEXIST ? KEEL_OK : rc;
}

kvat *keel__k_vat(keel_kernel *k, uint32_t vid)
{
    return vid >= 1 && vid <= k->nvats ? k->vats[vid - 1] : NULL;
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Translate slots with xlate (inbound: keel__k_kref_to_vref; outbound:
 * keel__k_vref_to_kref) into *out, n malloc'd strings. */
static int translate_slots(keel_kernel *k, kvat *v, char *const *slots,
                           size_t n, char ***out,
                           int (*xlate)(keel_kernel *, kvat *, const char *,
                                        char *))
{
    *out = NULL;
    if (n == 0) {
        return KEEL_OK;
    }
    char **vs = calloc(n, sizeof(*vs));
    if (vs == NULL) {
        return KEEL_ENOMEM;
    }
    int rc = KEEL_OK;
    for (size_t i = 0; rc == KEEL_OK && i < n; i++) {
        vs[i] = malloc(KEEL_VREF_MAX);
        rc = vs[i] == NULL ? KEEL_ENOMEM : xlate(k, v, slots[i], vs[i]);
    }
    if (rc < 0) {
        free_strs(vs, n);
        return rc;
    }
    *out = vs;
    return KEEL_OK;
}

static int slots_in(keel_kernel *k, kvat *v, char *const *slots, size_t n,
                    char ***out)
{
    return translate_slots(k, v, slots, n, out, keel__k_kref_to_vref);
}

static int slots_out(keel_kernel *k, kvat *v, char *const *slots, size_t n,
                     char ***out)
{
    return translate_slots(k, v, slots, n, out, keel__k_vref_to_kref);
}

/* Call the vat; syscalls it makes land in this transaction. */
static int call_vat(keel_kernel *k, kvat *v, const keel_delivery *d)
{
    k->delivering = v;
    k->txn_vid = v->id;
    if (k->o.observe != NULL) { /* K36 */
        k->obs_notify = d->kind != KEEL_DELIVER_MESSAGE;
        snprintf(k->obs_method, sizeof(k->obs_method), "%s",
                 d->kind == KEEL_DELIVER_MESSAGE ? d->method : "");
    }
    int vrc = v->ops->deliver(v->state, &v->sys, d);
    k->delivering = NULL;
    k->stat_deliveries++;
    if (vrc == KEEL__VAT_CRASHED && v->ops == k->host.worker_ops &&
        !k->illegal) {
        /* KH3: abort the crank and restart the vat (keel_kernel_step);
         * an illegal syscall before the crash still terminates it. */
        k->crashed = v->id;
        keel__k_illegal(k, "vat %s: its worker crashed delivering %s", v->name,
                        d->kind == KEEL_DELIVER_MESSAGE ? d->method : "notify");
    } else if (vrc != 0 && !k->illegal) {
        keel__k_illegal(k, "vat %s failed delivering %s (returned %d)", v->name,
                        d->kind == KEEL_DELIVER_MESSAGE ? d->method : "notify",
                        vrc);
    }
    return KEEL_OK;
}

static int deliver_message(keel_kernel *k, kvat *v, const char *target,
                           const kmsg *m)
{
    char tv[KEEL_VREF_MAX], rv[KEEL_VREF_MAX];
    char **vs = NULL;
    int rc = keel__k_kref_to_vref(k, v, target, tv);
    int has_result = m->result != NULL && m->result[0] != '\0';
    if (rc == KEEL_OK && has_result) {
        /* The receiver becomes the result's decider (SPEC §3.1). */
        kprom p;
        rc = prom_load(k, m->result, &p);
        if (rc == KEEL_OK && p.state == KP_UNRESOLVED) {
            if (p.decider != 0) {
                rc = decider_index(k, p.decider, m->result, 0);
            }
            p.decider = v->id;
            if (rc == KEEL_OK) {
                rc = prom_save(k, m->result, &p);
            }
            if (rc == KEEL_OK) {
                rc = decider_index(k, v->id, m->result, 1);
            }
        } else if (rc == KEEL_OK) {
            has_result = 0; /* already settled: nothing to decide */
        }
        keel__kprom_free(&p);
        if (rc == KEEL_OK && has_result) {
            rc = keel__k_kref_to_vref(k, v, m->result, rv);
        }
    }
    if (rc == KEEL_OK) {
        rc = slots_in(k, v, m->slots, m->nslots, &vs);
    }
    if (rc == KEEL_OK) {
        keel_delivery d = {.kind = KEEL_DELIVER_MESSAGE,
                           .target = tv,
                           .method = m->method,
                           .args = {.body = {m->body, m->body_len},
                                    .slots = (const char *const *)vs,
                                    .nslots = m->nslots},
                           .result = has_result ? rv : NULL};
        rc = call_vat(k, v, &d);
    }
    free_strs(vs, m->nslots);
    return rc;
}

/* Is a resolution "fulfilled to an object" (vat.h: KEEL_CAPDATA_SLOT0)? */
static int resolves_to_object(const kprom *p)
{
    const size_t n = sizeof(KEEL_CAPDATA_SLOT0) - 1;
    return p->state == KP_FULFILLED && p->res.nslots == 1 &&
           p->res.body_len == n &&
           memcmp(p->res.body, KEEL_CAPDATA_SLOT0, n) == 0 &&
           keel__ks_kref_parse(p->res.slots[0], &(keel__kref){0}) &&
           p->res.slots[0][1] == 'o';
}

/* dst[KEEL_VREF_MAX] = s, cut as snprintf "%s" would (no format parsing
 * on the crank path). */
static void copy_ref(char *dst, const char *s)
{
    size_t n = strnlen(s, KEEL_VREF_MAX - 1);
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static int route_send(keel_kernel *k, const char *target0, const kmsg *m)
{
    char target[KEEL_VREF_MAX];
    copy_ref(target, target0);
    for (int hop = 0; hop < MAX_FORWARD; hop++) {
        keel__kref tr;
        if (kref_of(target, KR_O, &tr)) {
            keel__key key;
            uint32_t owner = 0;
            int rc = keel__k_get_u32(k, keel__ks_object(&key, tr.n), &owner);
            if (rc < 0) {
                return rc;
            }
            kvat *v = keel__k_vat(k, owner);
            keel_bytes ce;
            if (rc == 1 && v != NULL && v->alive) {
                /* abandoned or retired by its exporter: gone (gc.c) */
                rc = keel__k_get(k, keel__ks_clist_k(&key, owner, tr), &ce);
                if (rc < 0) {
                    return rc;
                }
            }
            if (rc == 0 || v == NULL || !v->alive) {
                return reject_result(k, m->result, TERMINATED_BODY,
                                     sizeof(TERMINATED_BODY) - 1, NULL, 0);
            }
            return deliver_message(k, v, target, m);
        }
        if (!kref_of(target, KR_P, &tr)) {
            return keel__k_fail(k, KEEL_ECORRUPT, "run-queue target");
        }
        kprom p;
        int rc = prom_load(k, target, &p);
        if (rc < 0) {
            return rc;
        }
        if (p.state == KP_UNRESOLVED) {
            /* Wait on the promise: re-queued in order when it settles. */
            kmsg *nq = realloc(p.queue, (p.nqueue + 1) * sizeof(*nq));
            if (nq == NULL) {
                keel__kprom_free(&p);
                return KEEL_ENOMEM;
            }
            p.queue = nq;
            kbuf b = {0};
            keel__kmsg_encode(&b, m);
            krd r = {.p = b.p, .len = b.len};
            rc =
                b.oom ? KEEL_ENOMEM : keel__kmsg_decode(&r, &p.queue[p.nqueue]);
            keel__kb_free(&b);
            if (rc == KEEL_OK) {
                p.nqueue++;
                rc = prom_save(k, target, &p);
            }
            keel__kprom_free(&p);
            return rc;
        }
        if (resolves_to_object(&p)) {
            copy_ref(target, p.res.slots[0]);
            keel__kprom_free(&p);
            continue;
        }
        if (p.state == KP_REJECTED) {
            rc = reject_result(k, m->result, (const char *)p.res.body,
                               p.res.body_len, p.res.slots, p.res.nslots);
        } else {
            rc = reject_result(k, m->result, NON_OBJECT_BODY,
                               sizeof(NON_OBJECT_BODY) - 1, NULL, 0);
        }
        keel__kprom_free(&p);
        return rc;
    }
    return reject_result(k, m->result, NON_OBJECT_BODY,
                         sizeof(NON_OBJECT_BODY) - 1, NULL, 0);
}

static int deliver_notify(keel_kernel *k, uint32_t vid, const char *kp)
{
    kvat *v = keel__k_vat(k, vid);
    if (v == NULL || !v->alive) {
        return KEEL_OK; /* K6: dropped */
    }
    kprom p;
    char pv[KEEL_VREF_MAX];
    char **vs = NULL;
    int rc = prom_load(k, kp, &p);
    if (rc < 0) {
        return rc;
    }
    rc = keel__k_kref_to_vref(k, v, kp, pv);
    if (rc == KEEL_OK) {
        rc = slots_in(k, v, p.res.slots, p.res.nslots, &vs);
    }
    if (rc == KEEL_OK) {
        keel_delivery d = {.kind = KEEL_DELIVER_NOTIFY,
                           .promise = pv,
                           .rejected = p.state == KP_REJECTED,
                           .resolution = {.body = {p.res.body, p.res.body_len},
                                          .slots = (const char *const *)vs,
                                          .nslots = p.res.nslots}};
        rc = call_vat(k, v, &d);
    }
    if (rc == KEEL_OK) {
        /* The vat has been told: its c-list entry retires (SPEC §3.3). */
        keel__kref kr;
        keel__vref vr;
        rc = kref_of(kp, KR_P, &kr) && parse_vref(pv, &vr)
                 ? clist_drop(k, vid, kr, vr)
                 : keel__k_fail(k, KEEL_ECORRUPT, kp);
    }
    free_strs(vs, p.res.nslots);
    keel__kprom_free(&p);
    return rc;
}

/* Pop the head item into *it. @return 1, 0 (empty), < 0. */
static int pop_item(keel_kernel *k, kitem *it)
{
    uint64_t head = 0, tail = 0;
    keel__key key;
    int rc = keel__k_meta_get(k, KM_RQ_HEAD, &head);
    if (rc >= 0) {
        rc = keel__k_meta_get(k, KM_RQ_TAIL, &tail);
    }
    if (rc < 0) {
        return rc;
    }
    if (head >= tail) {
        return 0;
    }
    keel_bytes v;
    rc = keel__k_get(k, keel__ks_runq(&key, head), &v);
    if (rc <= 0) {
        return keel__k_fail_key(k, rc < 0 ? rc : KEEL_ECORRUPT, &key);
    }
    if (keel__kitem_decode(v.ptr, v.len, it) < 0) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    k->gc_old = &v; /* G1: the item just read */
    rc = keel__k_del(k, &key);
    if (rc == KEEL_OK) {
        rc = keel__k_meta_put(k, KM_RQ_HEAD, head + 1);
    }
    return rc < 0 ? rc : 1;
}

/* KH3: restart worker vat vid after its crank aborted (no transaction
 * open), or terminate it if the host gives up. */
static int restart_worker(keel_kernel *k, uint32_t vid, keel_diag *diag)
{
    kvat *v = keel__k_vat(k, vid);
    if (v == NULL || !v->alive) {
        return KEEL_OK;
    }
    if (k->host.worker_restart != NULL &&
        k->host.worker_restart(k->host.ctx, &v->sys, v->state) == 0) {
        return k->failed ? KEEL_EFAILED : KEEL_OK;
    }
    if (!v->alive) {
        return k->failed ? KEEL_EFAILED : KEEL_OK;
    }
    k->obs_aborted = 1; /* K36 */
    int rc = keel__k_terminate(k, vid, diag);
    k->obs_aborted = 0;
    return rc;
}

int keel_kernel_step(keel_kernel *k, keel_diag *diag)
{
    kitem it;
    if (k->failed) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return KEEL_EFAILED;
    }
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        return keel__diag(diag, rc, "begin transaction");
    }
    keel__ks_key act;
    int gc = keel__gc_next(k, &act); /* G3: before the run queue */
    memset(&it, 0, sizeof(it));
    rc = gc != 0 ? gc : pop_item(k, &it);
    if (rc <= 0) {
        keel__k_txn_abort(k);
        if (rc < 0 && diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if (gc) {
        rc = keel__gc_deliver(k, &act, call_vat);
    } else if (it.kind == KITEM_SEND) {
        rc = route_send(k, it.target, &it.msg);
    } else {
        rc = deliver_notify(k, it.vid, it.kp);
    }
    if (rc < 0 && !k->illegal) {
        keel__kitem_free(&it);
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        /* K30 holds on this path too: syscalls held during the crank run
         * as their own transactions now (a FAILED kernel drops them). */
        keel__k_run_deferred(k, NULL);
        keel__k_reap(k);
        return k->failed ? KEEL_EFAILED : rc;
    }
    keel__kitem_free(&it);
    if (k->crashed != 0) {
        /* KH3: the worker crashed. Nothing the crank did stays and the
         * item stays at the head, for the restarted worker; a host that
         * gives up terminates the vat as a failed delivery would. */
        uint32_t vid = k->crashed;
        k->crashed = 0;
        keel__k_txn_abort(k);
        rc = restart_worker(k, vid, diag);
    } else if (k->illegal) {
        /* Abort: nothing the crank did stays (SPEC §4); the vat that failed
         * is terminated in its own transaction. The item stays at the head
         * and is delivered again, now to a terminated vat, which rejects
         * its result. */
        uint32_t vid = k->txn_vid;
        keel__k_txn_abort(k);
        k->obs_aborted = 1; /* K36 */
        rc = keel__k_terminate(k, vid, diag);
        k->obs_aborted = 0;
    } else {
        uint32_t vid = k->txn_vid;
        k->crank++;
        rc = keel__k_txn_commit_exits(k, KEEL_WAL_CRANK, diag);
        if (rc == KEEL_ETOOBIG) {
            /* The vat wrote more than one transaction may hold: like an
             * illegal syscall, the crank aborted and the vat goes. */
            k->crank--;
            k->obs_aborted = 1; /* K36 */
            rc = keel__k_terminate(k, vid, diag);
            k->obs_aborted = 0;
        }
    }
    if (rc == KEEL_OK) {
        rc = keel__k_run_deferred(k, diag);
    }
    keel__k_reap(k);
    if (rc == KEEL_OK) {
        rc = keel__k_start_async(k, 0, diag); /* K34 */
    }
    return rc < 0 ? rc : 1;
}

/* The dead vat's c-list pair for kp goes with kp's rejection, as a
 * decider's does when it resolves (the rest of the c-list may wait for a
 * later batch), but no retired-vref marker: nothing of a dead vat is
 * written. */
static int retire_dead_entry(keel_kernel *k, uint32_t vid, keel__kref kr)
{
    keel__key key;
    keel__vref vr;
    keel_bytes b;
    int reach;
    int rc = keel__k_get(k, keel__ks_clist_k(&key, vid, kr), &b);
    if (rc != 1) {
        return rc < 0 ? rc : KEEL_OK;
    }
    if (!keel__ks_clist_kval(b.ptr, b.len, &vr, &reach)) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    rc = keel__k_del(k, &key);
    if (rc == KEEL_OK) { /* K2 */
        rc = keel__k_del(k, keel__ks_clist_v(&key, vid, KC_V, vr));
    }
    return rc;
}

/* One unit of a dead vat's cleanup: a decider-index key (reject its
 * promise, retiring the vat's c-list pair for it; phase 0), or a c-list or
 * vatstore key (delete it). */
static int cleanup_one(keel_kernel *k, uint32_t vid, size_t phase,
                       const keel__key *found)
{
    char kp[KEEL__KS_REF_STR];
    keel__ks_key d;
    if (phase == 1 && keel__ks_decode(found->b, found->n, &d) &&
        d.field == KC_K && d.kref.kind == KR_O) {
        keel_bytes b;
        keel__vref vr;
        int reach;
        int rc = keel__k_get(k, found, &b);
        if (rc == 1 && keel__ks_clist_kval(b.ptr, b.len, &vr, &reach) &&
            vr.kind == KR_OPLUS) {
            /* its export is abandoned (orphaned): messages to it reject
             * (K6); it goes once its importers let it go (gc.c G2) */
            return keel__k_del(k, found);
        }
        if (rc < 0) {
            return rc;
        }
    }
    int rc = keel__k_del(k, found);
    if (rc < 0 || phase != 0) {
        return rc;
    }
    if (!keel__ks_decode(found->b, found->n, &d) || d.table != KS_DECIDER) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, found);
    }
    keel__kref kr = {KR_P, d.n};
    keel__ks_kref_str(kr, kp);
    rc = keel__k_settle(k, kp, 1, TERMINATED_BODY, sizeof(TERMINATED_BODY) - 1,
                        NULL, 0);
    rc = rc == KEEL_EEXIST ? KEEL_OK : rc;
    return rc == KEEL_OK ? retire_dead_entry(k, vid, kr) : rc;
}

/* The dead vat's cleanup (K6) in the open transaction, from cursor (empty
 * for the start) on, while the write-set is within one batch's budget:
 * first every promise it decides is rejected (its decider-index keys),
 * then its c-list and vatstore keys are deleted, each in key order.
 * Continuing from the last key done keeps the whole cleanup linear: a
 * search from the prefix would walk past every key already deleted (still
 * tombstones in the write-set or overlay). *cursor is left at the last key
 * done. @return 1 nothing of the vat is left, 0 the budget ran out, < 0. */
static int cleanup_keys(keel_kernel *k, uint32_t vid, keel__key *cursor)
{
    static const uint8_t phases[] = {KS_DECIDER, KS_CLIST, KS_VATSTORE};
    keel__key prefix, found;
    size_t start = 0, units = 0;
    int rc = KEEL_OK;
    for (size_t i = 1; i < 3; i++) {
        keel__ks_vat_prefix(&prefix, phases[i], vid);
        if (cursor->n >= prefix.n &&
            memcmp(cursor->b, prefix.b, prefix.n) == 0) {
            start = i; /* the phases before it are done */
        }
    }
    for (size_t i = start; i < 3; i++) {
        keel__ks_vat_prefix(&prefix, phases[i], vid);
        const keel__key *after = i == start && cursor->n > 0 ? cursor : NULL;
        while ((rc = keel__k_next(k, &prefix, after, &found)) == 1) {
            if (units >= CLEANUP_BATCH_KEYS ||
                keel__store_ws_encode_bound(k->store) >= CLEANUP_BATCH_BYTES) {
                return 0;
            }
            rc = cleanup_one(k, vid, i, &found);
            if (rc < 0) {
                return rc;
            }
            units++;
            *cursor = found;
            after = cursor;
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 1;
}

/* v.<vid>.cleanup = u64 crank, the cursor's bytes (store/keyspace.h). */
static int put_cleanup(keel_kernel *k, uint32_t vid, const keel__key *cursor)
{
    keel__key key;
    uint8_t val[8 + KEEL__KS_KEY_MAX];
    keel__ks_be64(val, k->crank);
    memcpy(val + 8, cursor->b, cursor->n);
    return keel__k_put(k, keel__ks_vat(&key, vid, KV_CLEANUP), val,
                       8 + cursor->n);
}

/* K6 in the open transaction: vid is terminated; the promises it decides
 * are rejected and its c-list and vatstore deleted as far as one batch's
 * budget allows, the rest in later cleanup batches (v.<vid>.cleanup).
 * Memory follows only once the transaction commits (terminated()).
 * @return 1 cleanup pending, 0 nothing of the vat left, < 0. */
static int terminate_in_txn(keel_kernel *k, uint32_t vid)
{
    keel__key key, cursor = {.n = 0};
    const uint8_t dead = KS_TERMINATED;
    int rc = keel__k_put(k, keel__ks_vat(&key, vid, KV_STATE), &dead, 1);
    if (rc == KEEL_OK) {
        rc = cleanup_keys(k, vid, &cursor);
    }
    if (rc == 0) {
        rc = put_cleanup(k, vid, &cursor);
        return rc < 0 ? rc : 1;
    }
    return rc < 0 ? rc : 0;
}

/* The transaction that terminated vid committed. The vat's own code may
 * still be on the stack (it made the illegal syscall, or exited): stop()
 * runs later, at a safe point (keel__k_reap). Its async work that has not
 * started never will (K32). */
static void terminated(keel_kernel *k, uint32_t vid, int cleanup)
{
    kvat *v = keel__k_vat(k, vid);
    v->alive = 0;
    v->stop_pending = 1;
    v->cleanup = cleanup;
    keel__k_cancel_async(k, vid);
    /* K36: the transaction that terminated it is the last appended */
    keel__k_observe(k, KEEL_OBS_VAT_TERMINATE, vid, keel_wal_last_lsn(k->wal));
}

int keel__k_terminate(keel_kernel *k, uint32_t vid, keel_diag *diag)
{
    kvat *v = keel__k_vat(k, vid);
    if (v == NULL || !v->alive) {
        return KEEL_OK;
    }
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        return rc;
    }
    int pending = terminate_in_txn(k, vid);
    if (pending < 0) {
        keel__k_txn_abort(k);
        return pending;
    }
    uint32_t obs_vid = k->txn_vid;
    k->txn_vid = vid; /* K36: the transaction is about vid */
    rc = keel__k_txn_commit(k, KEEL_WAL_KERNEL_OP, diag);
    k->txn_vid = obs_vid;
    if (rc == KEEL_OK) {
        terminated(k, vid, pending);
    }
    return rc;
}

int keel__k_cleanup_pending(const keel_kernel *k)
{
    for (size_t i = 0; i < k->nvats; i++) {
        if (k->vats[i] != NULL && k->vats[i]->cleanup) {
            return 1;
        }
    }
    return 0;
}

int keel__k_cleanup(keel_kernel *k, int force, keel_diag *diag)
{
    kvat *v = NULL;
    for (size_t i = 0; v == NULL && i < k->nvats; i++) {
        if (k->vats[i] != NULL && k->vats[i]->cleanup) {
            v = k->vats[i]; /* the lowest id first: deterministic */
        }
    }
    if (v == NULL) {
        return 0;
    }
    keel__key key, cursor;
    keel_bytes b;
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    rc = keel__k_get(k, keel__ks_vat(&key, v->id, KV_CLEANUP), &b);
    /* u64 crank, then the cursor: the crank of the last batch, the last
     * key done. */
    uint64_t crank = 0;
    if (rc == 1 && (b.len < 8 || b.len - 8 > sizeof(cursor.b))) {
        rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    } else if (rc == 0) {
        rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key); /* memory: pending */
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    crank = keel__ks_rd64(b.ptr);
    if (!force && crank >= k->crank) {
        keel__k_txn_abort(k); /* one batch per crank at most */
        return 0;
    }
    cursor.n = b.len - 8;
    memcpy(cursor.b, (const uint8_t *)b.ptr + 8, cursor.n);
    int done = cleanup_keys(k, v->id, &cursor);
    rc = done;
    if (done == 1) {
        rc = keel__k_del(k, &key);
    } else if (done == 0) {
        rc = put_cleanup(k, v->id, &cursor);
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    rc = keel__k_txn_commit(k, KEEL_WAL_KERNEL_OP, diag);
    if (rc < 0) {
        return rc;
    }
    if (done == 1) {
        v->cleanup = 0;
    }
    return 1;
}

int keel__k_txn_commit_exits(keel_kernel *k, int kind, keel_diag *diag)
{
    uint32_t vid = k->exit_vid;
    kvat *v = vid != 0 ? keel__k_vat(k, vid) : NULL;
    int rc = KEEL_OK, pending = 0;
    if (v != NULL && v->alive) {
        rc = pending = terminate_in_txn(k, vid);
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    rc = keel__k_txn_commit(k, kind, diag);
    if (rc == KEEL_OK && v != NULL && v->alive) {
        terminated(k, vid, pending);
    }
    return rc;
}

void keel__k_reap(keel_kernel *k)
{
    for (size_t i = 0; i < k->nvats; i++) {
        kvat *v = k->vats[i];
        if (v != NULL && v->stop_pending) {
            v->stop_pending = 0;
            if (v->ops != NULL && v->ops->stop != NULL) {
                v->ops->stop(v->state);
            }
            v->state = NULL;
            keel__k_observe(k, KEEL_OBS_VAT_STOP, v->id,
                            keel_wal_last_lsn(k->wal)); /* K36 */
        }
    }
}

int keel__k_promise_state(keel_kernel *k, const char *kp, int *state,
                          char **body)
{
    kprom p;
    if (!kref_of(kp, KR_P, &(keel__kref){0})) {
        return KEEL_EINVAL;
    }
    int rc = prom_load(k, kp, &p);
    if (rc < 0) {
        return rc;
    }
    *state = p.state;
    if (body != NULL) {
        *body = NULL;
        if (p.state != KP_UNRESOLVED) {
            *body = malloc(p.res.body_len + 1);
            if (*body == NULL) {
                keel__kprom_free(&p);
                return KEEL_ENOMEM;
            }
            memcpy(*body, p.res.body, p.res.body_len);
            (*body)[p.res.body_len] = '\0';
        }
    }
    keel__kprom_free(&p);
    return KEEL_OK;
}

/* --- syscalls, executed inside the open transaction -------------------- */

static int vs_key(keel_kernel *k, kvat *v, const char *key, keel__key *out)
{
    size_t n = key != NULL ? strlen(key) : 0;
    if (n == 0 || n > KEEL_VATSTORE_KEY_MAX) {
        return keel__k_illegal(k,
                               "vat %s: vatstore key of %zu bytes "
                               "(1..%d allowed)",
                               v->name, n, KEEL_VATSTORE_KEY_MAX);
    }
    keel__ks_vatstore(out, v->id, key, n);
    return KEEL_OK;
}

static int sc_send(keel_kernel *k, kvat *v, const kdeferred *sc)
{
    char target[KEEL_VREF_MAX], result[KEEL_VREF_MAX] = "";
    char **ks = NULL;
    if (sc->b == NULL || sc->b[0] == '\0') {
        return keel__k_illegal(k, "vat %s: send with no method", v->name);
    }
    int rc = keel__k_vref_to_kref(k, v, sc->a, target);
    if (rc == KEEL_OK && sc->c != NULL) {
        keel__vref vr;
        if (!parse_vref(sc->c, &vr) || !vref_is_p(vr)) {
            return keel__k_illegal(k, "vat %s: result '%s' is not a promise",
                                   v->name, sc->c);
        }
        rc = keel__k_vref_to_kref(k, v, sc->c, result);
        if (rc == KEEL_OK) {
            /* The result must be one this vat decides; in flight it has
             * no decider until delivered (SPEC §3.1). */
            kprom p;
            rc = prom_load(k, result, &p);
            if (rc == KEEL_OK &&
                (p.state != KP_UNRESOLVED || p.decider != v->id)) {
                rc = keel__k_illegal(k,
                                     "vat %s: result %s is not a promise it "
                                     "decides",
                                     v->name, sc->c);
            } else if (rc == KEEL_OK) {
                p.decider = 0;
                rc = prom_save(k, result, &p);
                if (rc == KEEL_OK) {
                    rc = decider_index(k, v->id, result, 0);
                }
            }
            keel__kprom_free(&p);
        }
    }
    if (rc == KEEL_OK) {
        rc = slots_out(k, v, sc->slots, sc->nslots, &ks);
    }
    if (rc == KEEL_OK) {
        rc =
            keel__k_enqueue_send(k, target, sc->b, sc->body, sc->body_len, ks,
                                 sc->nslots, result[0] != '\0' ? result : NULL);
    }
    free_strs(ks, sc->nslots);
    return rc;
}

static int sc_resolve(keel_kernel *k, kvat *v, const kdeferred *sc)
{
    char kp[KEEL_VREF_MAX];
    char **ks = NULL;
    keel__vref vr;
    keel__kref kr;
    if (!parse_vref(sc->a, &vr) || !vref_is_p(vr)) {
        return keel__k_illegal(k, "vat %s: resolve of '%s', not a promise",
                               v->name, sc->a != NULL ? sc->a : "(null)");
    }
    int rc = keel__k_vref_to_kref(k, v, sc->a, kp);
    kprom p = {0};
    if (rc == KEEL_OK) {
        rc = prom_load(k, kp, &p);
    }
    if (rc == KEEL_OK && p.state != KP_UNRESOLVED) {
        rc = keel__k_illegal(k, "vat %s: %s (%s) is already settled", v->name,
                             sc->a, kp);
    } else if (rc == KEEL_OK && p.decider != v->id) { /* K4 */
        rc = keel__k_illegal(k,
                             "vat %s: resolve of %s (%s), which it does "
                             "not decide",
                             v->name, sc->a, kp);
    }
    keel__kprom_free(&p);
    if (rc == KEEL_OK) {
        rc = slots_out(k, v, sc->slots, sc->nslots, &ks);
    }
    if (rc == KEEL_OK) {
        rc = keel__k_settle(k, kp, sc->flag, sc->body, sc->body_len, ks,
                            sc->nslots);
    }
    if (rc == KEEL_OK) {
        rc = kref_of(kp, KR_P, &kr) ? clist_drop(k, v->id, kr, vr) /* done */
                                    : keel__k_fail(k, KEEL_ECORRUPT, kp);
    }
    free_strs(ks, sc->nslots);
    return rc;
}

int keel__k_exec(keel_kernel *k, kvat *v, const kdeferred *sc)
{
    keel__key key;
    char kp[KEEL_VREF_MAX];
    int rc = KEEL_OK;
    if (k->illegal) {
        return KEEL_EINVAL; /* the transaction is doomed already */
    }
    k->obs_syscalls++; /* K36 */
    switch (sc->kind) {
    case SC_SEND:
        rc = sc_send(k, v, sc);
        break;
    case SC_SUBSCRIBE: {
        keel__vref vr;
        if (!parse_vref(sc->a, &vr) || !vref_is_p(vr)) {
            return keel__k_illegal(k, "vat %s: subscribe to '%s'", v->name,
                                   sc->a != NULL ? sc->a : "(null)");
        }
        rc = keel__k_vref_to_kref(k, v, sc->a, kp);
        if (rc == KEEL_OK) {
            rc = keel__k_subscribe(k, v->id, kp);
        }
        break;
    }
    case SC_RESOLVE:
        rc = sc_resolve(k, v, sc);
        break;
    case SC_EXIT:
        k->exit_vid = v->id;
        break;
    case SC_VS_SET:
        if (sc->body_len > KEEL_VATSTORE_VALUE_MAX) {
            return keel__k_illegal(k, "vat %s: vatstore value of %zu bytes",
                                   v->name, sc->body_len);
        }
        rc = vs_key(k, v, sc->a, &key);
        if (rc == KEEL_OK) {
            rc = keel__k_put(k, &key, sc->body, sc->body_len);
        }
        break;
    case SC_VS_DEL:
        rc = vs_key(k, v, sc->a, &key);
        if (rc == KEEL_OK) {
            rc = keel__k_del(k, &key);
        }
        break;
    case SC_GC:
        rc = keel__gc_syscall(k, v, sc->flag, sc->a);
        break;
    case SC_ILLEGAL:
        rc = keel__k_illegal(k, "vat %s: %s", v->name, sc->a);
        break;
    default:
        KEEL_UNREACHABLE();
    }
    return rc;
}
