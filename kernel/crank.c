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
 *       its c-list (settled) stays marked (c.<v>.r.<vref>), and using it
 *       again is illegal.
 */
#include "kernel/kernel_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "kernel/keyfmt.h"
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

/* Parse "o+12" etc. @return 1 and parts, or 0 if malformed. */
static int parse_vref(const char *s, char *type, char *dir, uint64_t *n)
{
    if ((s[0] != 'o' && s[0] != 'p') || (s[1] != '+' && s[1] != '-') ||
        s[2] < '0' || s[2] > '9' || (s[2] == '0' && s[3] != '\0')) {
        return 0;
    }
    uint64_t v = 0;
    for (const char *p = s + 2; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10) {
            return 0;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *type = s[0];
    *dir = s[1];
    *n = v;
    return 1;
}

static int is_kref(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0 || s[n] == '\0') {
        return 0;
    }
    for (const char *p = s + n; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }
    return 1;
}

static int clist_add(keel_kernel *k, uint32_t vid, const char *kref,
                     const char *vref)
{
    char key[KEY_MAX];
    keel__kf_key2(key, sizeof(key), "c.", vid, ".k.", kref);
    int rc = keel__k_put_str(k, key, vref);
    if (rc == KEEL_OK) { /* K2 */
        keel__kf_key2(key, sizeof(key), "c.", vid, ".v.", vref);
        rc = keel__k_put_str(k, key, kref);
    }
    return rc;
}

static int clist_drop(keel_kernel *k, uint32_t vid, const char *kref,
                      const char *vref)
{
    char key[KEY_MAX];
    keel__kf_key2(key, sizeof(key), "c.", vid, ".k.", kref);
    int rc = keel__k_del(k, key);
    if (rc == KEEL_OK) {
        keel__kf_key2(key, sizeof(key), "c.", vid, ".v.", vref);
        rc = keel__k_del(k, key);
    }
    if (rc == KEEL_OK && vref[0] == 'p' && vref[1] == '+') {
        /* K7: a retired p+N of the vat's own may never name a new
         * promise (that would let it resolve "the same" promise twice). */
        keel__kf_key2(key, sizeof(key), "c.", vid, ".r.", vref);
        rc = keel__k_put_str(k, key, "");
    }
    return rc;
}

/* Copy a stored string value into out[cap]. @return 1, 0 absent, < 0. */
static int get_str(keel_kernel *k, const char *key, char *out, size_t cap)
{
    keel_bytes v;
    int rc = keel__k_get(k, key, &v);
    if (rc != 1) {
        return rc;
    }
    if (v.len >= cap) {
        return keel__k_fail(k, KEEL_ECORRUPT, key);
    }
    memcpy(out, v.ptr, v.len);
    out[v.len] = '\0';
    return 1;
}

static int next_id(keel_kernel *k, const char *key, uint64_t *id)
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
    char key[KEY_MAX];
    keel_bytes v;
    keel__kf_cat(key, sizeof(key), "kp.", kp + 2);
    int rc = keel__k_get(k, key, &v);
    if (rc == 0) {
        return KEEL_ENOENT;
    }
    if (rc < 0) {
        return rc;
    }
    if (keel__kprom_decode(v.ptr, v.len, p) < 0) {
        return keel__k_fail(k, KEEL_ECORRUPT, key);
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
    char key[KEY_MAX];
    kbuf *b = scratch(k);
    keel__kf_cat(key, sizeof(key), "kp.", kp + 2);
    keel__kprom_encode(b, p);
    return b->oom ? KEEL_ENOMEM : keel__k_put(k, key, b->p, b->len);
}

static int decider_index(keel_kernel *k, uint32_t vid, const char *kp, int on)
{
    char key[KEY_MAX];
    keel__kf_key2(key, sizeof(key), "d.", vid, ".", kp);
    return on ? keel__k_put_str(k, key, "") : keel__k_del(k, key);
}

static int add_unresolved(keel_kernel *k, int delta)
{
    uint64_t n = 0;
    int rc = keel__k_get_u64(k, "k.unresolved", &n);
    if (rc < 0) {
        return rc;
    }
    n = delta > 0 ? n + 1 : (n > 0 ? n - 1 : 0);
    return keel__k_put_u64(k, "k.unresolved", n);
}

int keel__k_promise_new(keel_kernel *k, uint32_t decider, char *out)
{
    uint64_t n;
    int rc = next_id(k, "k.next.kp", &n);
    if (rc < 0) {
        return rc;
    }
    keel__kf_key(out, KEEL_VREF_MAX, "kp", n, "");
    kprom p = {.state = KP_UNRESOLVED, .decider = decider};
    rc = prom_save(k, out, &p);
    if (rc == KEEL_OK && decider != 0) {
        rc = decider_index(k, decider, out, 1);
    }
    if (rc == KEEL_OK) {
        rc = add_unresolved(k, 1);
    }
    return rc;
}

/* Remember the highest o+N / p+N a vat has exported (K5). */
static int note_export(keel_kernel *k, kvat *v, char type, uint64_t n)
{
    char key[KEY_MAX];
    uint64_t max = 0;
    keel__kf_key(key, sizeof(key), "v.", v->id,
                 type == 'o' ? ".maxo" : ".maxp");
    int rc = keel__k_get_u64(k, key, &max);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0 || n > max) {
        rc = keel__k_put_u64(k, key, n);
    }
    uint64_t *next = type == 'o' ? &v->next_o : &v->next_p;
    if (n + 1 > *next) {
        *next = n + 1;
    }
    return rc < 0 ? rc : KEEL_OK;
}

int keel__k_vref_to_kref(keel_kernel *k, kvat *v, const char *vref, char *out)
{
    char key[KEY_MAX];
    char type, dir;
    uint64_t n;
    if (vref == NULL || !parse_vref(vref, &type, &dir, &n)) {
        return keel__k_illegal(k, "malformed vref '%s'",
                               vref != NULL ? vref : "(null)");
    }
    keel__kf_key2(key, sizeof(key), "c.", v->id, ".v.", vref);
    int rc = get_str(k, key, out, KEEL_VREF_MAX);
    if (rc != 0) {
        return rc < 0 ? rc : KEEL_OK;
    }
    if (dir == '-') { /* K1 */
        return keel__k_illegal(k, "vat %s used %s, which it was never given",
                               v->name, vref);
    }
    if (type == 'p') { /* K7 */
        keel_bytes b;
        keel__kf_key2(key, sizeof(key), "c.", v->id, ".r.", vref);
        rc = keel__k_get(k, key, &b);
        if (rc != 0) {
            return rc < 0 ? rc
                          : keel__k_illegal(k,
                                            "vat %s used %s again after it "
                                            "was settled and retired",
                                            v->name, vref);
        }
    }
    uint64_t id;
    if (type == 'o') {
        rc = next_id(k, "k.next.ko", &id);
        if (rc < 0) {
            return rc;
        }
        keel__kf_key(out, KEEL_VREF_MAX, "ko", id, "");
        keel__kf_key(key, sizeof(key), "ko.", id, "");
        char owner[16];
        keel__kf_key(owner, sizeof(owner), "", v->id, "");
        rc = keel__k_put_str(k, key, owner);
    } else {
        rc = keel__k_promise_new(k, v->id, out);
    }
    if (rc == KEEL_OK) {
        rc = clist_add(k, v->id, out, vref);
    }
    if (rc == KEEL_OK) {
        rc = note_export(k, v, type, n);
    }
    return rc;
}

int keel__k_kref_to_vref(keel_kernel *k, kvat *v, const char *kref, char *out)
{
    char key[KEY_MAX];
    keel__kf_key2(key, sizeof(key), "c.", v->id, ".k.", kref);
    int rc = get_str(k, key, out, KEEL_VREF_MAX);
    if (rc != 0) {
        return rc < 0 ? rc : KEEL_OK;
    }
    int obj = kref[1] == 'o';
    keel__kf_key(key, sizeof(key), "v.", v->id, obj ? ".nexti" : ".nextq");
    uint64_t n;
    rc = next_id(k, key, &n);
    if (rc < 0) {
        return rc;
    }
    keel__kf_key(out, KEEL_VREF_MAX, obj ? "o-" : "p-", n, "");
    return clist_add(k, v->id, kref, out);
}

static int push_item(keel_kernel *k, const kbuf *b)
{
    uint64_t tail = 0;
    char key[32];
    if (b->oom) {
        return KEEL_ENOMEM;
    }
    int rc = keel__k_get_u64(k, "k.rq.tail", &tail);
    if (rc < 0) {
        return rc;
    }
    kfmt f = keel__kf(key, sizeof(key));
    keel__kf_str(&f, "rq.");
    keel__kf_u64w(&f, tail, 20);
    rc = keel__k_put(k, key, b->p, b->len);
    if (rc == KEEL_OK) {
        rc = keel__k_put_u64(k, "k.rq.tail", tail + 1);
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
    if (vrc != 0 && !k->illegal) {
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
           is_kref(p->res.slots[0], "ko");
}

static int route_send(keel_kernel *k, const char *target0, const kmsg *m)
{
    char target[KEEL_VREF_MAX];
    snprintf(target, sizeof(target), "%s", target0);
    for (int hop = 0; hop < MAX_FORWARD; hop++) {
        if (is_kref(target, "ko")) {
            char key[KEY_MAX];
            uint64_t owner = 0;
            keel__kf_cat(key, sizeof(key), "ko.", target + 2);
            int rc = keel__k_get_u64(k, key, &owner);
            if (rc < 0) {
                return rc;
            }
            kvat *v = keel__k_vat(k, (uint32_t)owner);
            if (rc == 0 || v == NULL || !v->alive) {
                return reject_result(k, m->result, TERMINATED_BODY,
                                     sizeof(TERMINATED_BODY) - 1, NULL, 0);
            }
            return deliver_message(k, v, target, m);
        }
        if (!is_kref(target, "kp")) {
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
            snprintf(target, sizeof(target), "%s", p.res.slots[0]);
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
        rc = clist_drop(k, vid, kp, pv);
    }
    free_strs(vs, p.res.nslots);
    keel__kprom_free(&p);
    return rc;
}

/* Pop the head item into *it. @return 1, 0 (empty), < 0. */
static int pop_item(keel_kernel *k, kitem *it)
{
    uint64_t head = 0, tail = 0;
    char key[32];
    int rc = keel__k_get_u64(k, "k.rq.head", &head);
    if (rc >= 0) {
        rc = keel__k_get_u64(k, "k.rq.tail", &tail);
    }
    if (rc < 0) {
        return rc;
    }
    if (head >= tail) {
        return 0;
    }
    kfmt f = keel__kf(key, sizeof(key));
    keel__kf_str(&f, "rq.");
    keel__kf_u64w(&f, head, 20);
    keel_bytes v;
    rc = keel__k_get(k, key, &v);
    if (rc <= 0) {
        return keel__k_fail(k, rc < 0 ? rc : KEEL_ECORRUPT, key);
    }
    if (keel__kitem_decode(v.ptr, v.len, it) < 0) {
        return keel__k_fail(k, KEEL_ECORRUPT, key);
    }
    rc = keel__k_del(k, key);
    if (rc == KEEL_OK) {
        rc = keel__k_put_u64(k, "k.rq.head", head + 1);
    }
    return rc < 0 ? rc : 1;
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
    rc = pop_item(k, &it);
    if (rc <= 0) {
        keel__k_txn_abort(k);
        if (rc < 0 && diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if (it.kind == KITEM_SEND) {
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
    if (k->illegal) {
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
static int retire_dead_entry(keel_kernel *k, uint32_t vid, const char *kp)
{
    char key[KEY_MAX], vref[KEEL_VREF_MAX];
    keel__kf_key2(key, sizeof(key), "c.", vid, ".k.", kp);
    int rc = get_str(k, key, vref, sizeof(vref));
    if (rc != 1) {
        return rc < 0 ? rc : KEEL_OK;
    }
    rc = keel__k_del(k, key);
    if (rc == KEEL_OK) { /* K2 */
        keel__kf_key2(key, sizeof(key), "c.", vid, ".v.", vref);
        rc = keel__k_del(k, key);
    }
    return rc;
}

/* One unit of a dead vat's cleanup: a decider-index key d.<vid>.<kp>
 * (reject kp, retiring the vat's c-list pair for it; phase 0), or a
 * c-list or vatstore key (delete it). */
static int cleanup_one(keel_kernel *k, uint32_t vid, size_t phase,
                       const char *found, size_t plen)
{
    char kp[KEEL_VREF_MAX];
    int rc = keel__k_del(k, found);
    if (rc < 0 || phase != 0) {
        return rc;
    }
    snprintf(kp, sizeof(kp), "%s", found + plen);
    rc = keel__k_settle(k, kp, 1, TERMINATED_BODY, sizeof(TERMINATED_BODY) - 1,
                        NULL, 0);
    rc = rc == KEEL_EEXIST ? KEEL_OK : rc;
    return rc == KEEL_OK ? retire_dead_entry(k, vid, kp) : rc;
}

/* The dead vat's cleanup (K6) in the open transaction, from cursor ("" for
 * the start) on, while the write-set is within one batch's budget: first
 * every promise it decides is rejected (its d.<vid>.* keys), then its
 * c-list and vatstore keys are deleted, each in key order. Continuing from
 * the last key done keeps the whole cleanup linear: a search from the
 * prefix would walk past every key already deleted (still tombstones in
 * the write-set or overlay). cursor[KEY_MAX] is left at the last key done.
 * @return 1 nothing of the vat is left, 0 the budget ran out, < 0. */
static int cleanup_keys(keel_kernel *k, uint32_t vid, char *cursor)
{
    static const char *const phases[] = {"d.%" PRIu32 ".", "c.%" PRIu32 ".",
                                         "vs.%" PRIu32 "."};
    char prefix[64], found[KEY_MAX];
    size_t start = 0, units = 0;
    int rc = KEEL_OK;
    for (size_t i = 1; i < 3; i++) {
        snprintf(prefix, sizeof(prefix), phases[i], vid);
        if (strncmp(cursor, prefix, strlen(prefix)) == 0) {
            start = i; /* the phases before it are done */
        }
    }
    for (size_t i = start; i < 3; i++) {
        size_t plen = (size_t)snprintf(prefix, sizeof(prefix), phases[i], vid);
        const char *after = i == start ? cursor : "";
        while ((rc = keel__k_next(k, prefix, after, found)) == 1) {
            if (units >= CLEANUP_BATCH_KEYS ||
                keel__store_ws_encode_bound(k->store) >= CLEANUP_BATCH_BYTES) {
                return 0;
            }
            rc = cleanup_one(k, vid, i, found, plen);
            if (rc < 0) {
                return rc;
            }
            units++;
            snprintf(cursor, KEY_MAX, "%s", found);
            after = cursor;
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 1;
}

static int put_cleanup(keel_kernel *k, uint32_t vid, const char *cursor)
{
    char key[KEY_MAX], val[KEY_MAX + 24];
    snprintf(key, sizeof(key), "v.%" PRIu32 ".cleanup", vid);
    snprintf(val, sizeof(val), "%" PRIu64 " %s", k->crank, cursor);
    return keel__k_put_str(k, key, val);
}

/* K6 in the open transaction: vid is terminated; the promises it decides
 * are rejected and its c-list and vatstore deleted as far as one batch's
 * budget allows, the rest in later cleanup batches (v.<vid>.cleanup).
 * Memory follows only once the transaction commits (terminated()).
 * @return 1 cleanup pending, 0 nothing of the vat left, < 0. */
static int terminate_in_txn(keel_kernel *k, uint32_t vid)
{
    char key[KEY_MAX], cursor[KEY_MAX] = "";
    snprintf(key, sizeof(key), "v.%" PRIu32 ".state", vid);
    int rc = keel__k_put_str(k, key, "terminated");
    if (rc == KEEL_OK) {
        rc = cleanup_keys(k, vid, cursor);
    }
    if (rc == 0) {
        rc = put_cleanup(k, vid, cursor);
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
    char key[KEY_MAX], cursor[KEY_MAX];
    keel_bytes b;
    int rc = keel__k_txn_begin(k);
    if (rc < 0) {
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    snprintf(key, sizeof(key), "v.%" PRIu32 ".cleanup", v->id);
    rc = keel__k_get(k, key, &b);
    /* "<crank> <cursor>": the crank of the last batch, the last key. */
    uint64_t crank = 0;
    size_t i = 0;
    const char *p = b.ptr;
    while (rc == 1 && i < b.len && p[i] >= '0' && p[i] <= '9') {
        crank = crank * 10 + (uint64_t)(p[i++] - '0');
    }
    if (rc == 1 && (i == 0 || i >= b.len || p[i] != ' ' ||
                    b.len - i - 1 >= sizeof(cursor))) {
        rc = keel__k_fail(k, KEEL_ECORRUPT, key);
    } else if (rc == 0) {
        rc = keel__k_fail(k, KEEL_ECORRUPT, key); /* memory says pending */
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if (!force && crank >= k->crank) {
        keel__k_txn_abort(k); /* one batch per crank at most */
        return 0;
    }
    memcpy(cursor, p + i + 1, b.len - i - 1);
    cursor[b.len - i - 1] = '\0';
    int done = cleanup_keys(k, v->id, cursor);
    rc = done;
    if (done == 1) {
        rc = keel__k_del(k, key);
    } else if (done == 0) {
        rc = put_cleanup(k, v->id, cursor);
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
    if (!is_kref(kp, "kp")) {
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

static int vs_key(keel_kernel *k, kvat *v, const char *key, char *out)
{
    size_t n = key != NULL ? strlen(key) : 0;
    if (n == 0 || n > KEEL_VATSTORE_KEY_MAX) {
        return keel__k_illegal(k,
                               "vat %s: vatstore key of %zu bytes "
                               "(1..%d allowed)",
                               v->name, n, KEEL_VATSTORE_KEY_MAX);
    }
    keel__kf_key2(out, KEY_MAX, "vs.", v->id, ".", key);
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
        char type, dir;
        uint64_t n;
        if (!parse_vref(sc->c, &type, &dir, &n) || type != 'p') {
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
    char type, dir;
    uint64_t n;
    if (sc->a == NULL || !parse_vref(sc->a, &type, &dir, &n) || type != 'p') {
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
        rc = clist_drop(k, v->id, kp, sc->a); /* the decider is done */
    }
    free_strs(ks, sc->nslots);
    return rc;
}

int keel__k_exec(keel_kernel *k, kvat *v, const kdeferred *sc)
{
    char key[KEY_MAX], kp[KEEL_VREF_MAX];
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
        char type, dir;
        uint64_t n;
        if (sc->a == NULL || !parse_vref(sc->a, &type, &dir, &n) ||
            type != 'p') {
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
        rc = vs_key(k, v, sc->a, key);
        if (rc == KEEL_OK) {
            rc = keel__k_put(k, key, sc->body, sc->body_len);
        }
        break;
    case SC_VS_DEL:
        rc = vs_key(k, v, sc->a, key);
        if (rc == KEEL_OK) {
            rc = keel__k_del(k, key);
        }
        break;
    case SC_ILLEGAL:
        rc = keel__k_illegal(k, "vat %s: %s", v->name, sc->a);
        break;
    default:
        KEEL_UNREACHABLE();
    }
    return rc;
}
