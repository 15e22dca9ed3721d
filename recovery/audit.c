/*
 * recovery/audit.c — keel_audit() (keel/recovery.h): replay a kernel's
 * whole retained log into a shadow model of its keyspace, check the
 * kernel's invariants after every transaction, and compare the result
 * with the store.
 *
 * How a transaction is checked
 *   The shadow (recovery/shadow.c) holds the keyspace before the record.
 *   The record's payload is the transaction's write-set
 * (store/writeset_format.h), whose ops are sorted by key, so "the value after
 * the transaction" of any key is its op if the write-set has one (binary
 * search), else the shadow's. Every check reads the before and after states
 * that way, on the keys the transaction wrote and the few they name, and only
 * then is the write-set applied to the shadow: the audit is linear in the size
 * of the log. After the last record every check runs once more over the whole
 * keyspace (and over the base snapshot's, before the first), then the shadow is
 * compared with the store key by key.
 *
 * What the kernel's code says, and how it shows in a write-set
 *   (kernel/crank.c K1..K7, kernel/kernel.c K10..K14, store/keyspace.h's
 *   keyspace). The violation messages name these:
 *   A1  Hash chain (K12): every transaction writes k.hash = xxh3_64(
 *       previous hash LE ‖ kind ‖ crank LE ‖ its write-set encoded without
 *       the k.hash op), kind and crank being the WAL record's; recomputed
 *       by store/activity.c, the code the kernel's commit hashes with.
 *   A2  Cranks: a crank record carries crank = previous + 1 and writes it
 *       to k.crank; other records carry the current crank and leave it.
 *   A3  Run queue: items rq.<seq> are added only at the tail (k.rq.tail
 *       grows by the number added, each a new key) and removed only at
 *       the head (k.rq.head grows by the number removed); a crank removes
 *       exactly one item, nothing else removes any. An item never changes.
 *   A4  No lost notification (K3): when a promise settles, the same
 *       transaction queues exactly one notify (vat, kp) for each of its
 *       subscribers (the record's subs before it) and at most one for any
 *       vat, and re-queues every message queued on it, in order. A notify
 *       is queued only for a settled promise. With A3 every queued notify
 *       is delivered, in order, by the crank that removes it.
 *   A5  Messages wait on a promise only while it is unresolved: a settled
 *       record has no queue, no subscribers and no decider, and never
 *       changes again (at most one resolution).
 *   A6  Only the decider resolves (K4, K6). The decider when it settles is
 *       the record's (or, for a promise made in the transaction, the vat
 *       whose d.<vid> index entry the transaction dropped), except that a
 *       crank delivering a message makes its receiver the decider of the
 *       message's result. Then: a crank must have been delivered to the
 *       decider, and an out-of-crank transaction must be the decider's,
 *       each retiring the decider's c-list entry for it (c.<D>.k.<kp>
 *       deleted); a kernel operation may settle it only by terminating the
 *       decider or in a cleanup batch of it (rejected); a promise without a
 * decider only by the crank whose message it is the result of, rejecting it
 * undelivered. A7  Each c-list is a bijection (K2): c.<v>.k.<kref> = vref
 * exactly when c.<v>.v.<vref> = kref. A8  Every kref named by a c-list, a
 * promise record, a run-queue item or a vat's root exists (ko.<n> / kp.<n>);
 * an object or promise is deleted only when nothing holds it (A13) and a
 * promise only once settled (or settled in the deleting transaction, by a
 * dead vat's cleanup); an object's owner never changes.
 *   A9  d.<v>.<kp> mirrors the decider exactly (K4), and the decider of an
 *       unresolved promise is a live vat.
 *   A10 A terminated vat holds nothing (K6): the transaction that
 *       terminates it leaves no decider-index, c-list or vatstore key of it
 *       unless it writes v.<vid>.cleanup (cleanup pending). While the
 *       cleanup is pending those keys may stay (the c-list need not pair
 *       up; the terminating transaction's own writes of them included),
 *       and the promises the vat decides may stay unresolved, but none of
 *       its keys is written later; each later write of v.<vid>.cleanup is
 *       a cleanup batch: a kernel op that deletes only that vat's keys and
 *       writes only what rejecting its promises writes (promise records,
 *       queued notifies and messages, k.rq.tail, k.unresolved); the one
 *       that deletes v.<vid>.cleanup leaves none. Only a terminated vat
 *       has a cleanup, and a vat never comes back alive.
 *   A11 k.unresolved counts the unresolved promises; k.next.vat, .ko and
 *       .kp never decrease, and no object or promise is created at or
 *       beyond them (K5).
 *   A13 Reference counts (kernel/gc.c G1, store/keyspace.h KS4): after
 *       every record, rc.<kref> of every kref whose holders the record
 *       changed equals its value before plus the holders added less those
 *       removed; over the whole keyspace (the base, the end) every
 *       rc.<kref> equals the recount of its holders. A GC action's crank
 *       removes one gc.* key and no run-queue item (A3).
 *   A12 At the end, the shadow equals the store (with the records after
 *       its checkpoint applied in memory): every key and value.
 *
 * Invariants of this file:
 *   AU1 The audit changes no byte under STATE: it takes STATE's lock
 *       shared (never creating the file), opens the store read-only (ST14:
 *       not even lock.mdb is written) and reads the log with the reader;
 *       what replay applies stays in memory and is dropped at close.
 *   AU2 A record is checked completely before it is applied to the
 *       shadow; the first violation stops the audit and is the one
 *       reported, with its LSN and crank.
 *   AU3 Bad bytes (an undecodable write-set, a log gap) are errors
 *       (KEEL_ECORRUPT naming the file, offset and LSN), not violations:
 *       the kernel could not have replayed them either. A write-set is
 *       decoded by the store's one decoder (store/writeset.c), so its
 *       damage is named in the words the kernel's replay uses.
 *   AU4 Keys are taken apart only by store/keyspace.h's decoder: every key
 *       of a record and of the shadow is decoded before any check reads
 *       it, and one that does not decode is a violation ("not in keel's
 *       keyspace"); the checks then re-derive the semantics from the
 *       decoded fields, never from the key's bytes.
 */
#include "keel/recovery.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "keel/snapshot.h"
#include "keel/wal.h"

#include "common/clock.h"
#include "common/diag.h"
#include "common/keys.h"
#include "kernel/gc_refs.h"
#include "kernel/routing.h"
#include "common/state_lock.h"
#include "recovery/recovery_internal.h"
#include "store/activity.h"
#include "store/codec.h"
#include "store/keyspace.h"
#include "store/replay.h"
#include "store/store.h"
#include "store/writeset_format.h"

#define VIOLATED 1
/* Vat ids above this are not a kernel's (it numbers them from 1). */
#define MAX_VID     (1u << 20)
#define PRINT_BYTES 96

enum { VAT_NONE = 0, VAT_ALIVE, VAT_DEAD };

/* What a crank did with the item it removed from the run queue. */
enum {
    OUT_NONE = 0,  /* not a crank */
    OUT_DELIVERED, /* to vat out_vid */
    OUT_QUEUED,    /* the message waits on an unresolved promise */
    OUT_REJECTED,  /* its result (if any) is rejected, nothing delivered */
    OUT_DROPPED,   /* a notify for a terminated vat */
};

/* One op of the write-set being checked; bytes borrowed from the payload. */
typedef struct txop {
    uint8_t kind;
    uint32_t klen;
    uint32_t vlen;
    const uint8_t *key;
    const uint8_t *val;
    size_t off, end; /* the op's bytes in the payload */
    uint64_t hash;
    keel__shadow_entry *before; /* NULL: absent before */
    keel_bytes old;             /* its value before */
} txop;

/* A run-queue item the transaction adds. */
typedef struct newitem {
    uint64_t seq;
    kitem it;
} newitem;

typedef struct vinfo {
    uint8_t state;   /* VAT_* */
    uint8_t cleanup; /* v.<v>.cleanup present: its keys still going (K6) */
    uint64_t refs;   /* its c.<v>.*, d.<v>.* and vs.<v>.* keys */
} vinfo;

typedef struct audit {
    keel__shadow sh;
    keel_audit_report *rep;
    vinfo *vats; /* by id */
    size_t nvats;
    uint64_t crank;      /* after the last applied record */
    uint64_t hash;       /* activity hash, likewise */
    uint64_t unresolved; /* unresolved promises in the shadow */
    /* the record being checked */
    uint64_t lsn;
    int kind;
    uint64_t rec_crank;
    const uint8_t *payload;
    size_t plen;
    txop *ops;
    size_t nops, ops_cap;
    newitem *items;
    size_t nitems, items_cap;
    int64_t unres_delta;
    uint64_t new_hash;
    /* the crank's removed item and what became of it */
    int popped;
    kitem pop;
    int outcome;
    uint32_t out_vid;
    XXH3_state_t *xx;
} audit;

static int holders_zero(audit *a, keel__kref r);

void keel_audit_options_init(keel_audit_options *o)
{
    memset(o, 0, sizeof(*o));
}

static int violation(audit *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record the first violation (AU2). @return VIOLATED. */
static int violation(audit *a, const char *fmt, ...)
{
    keel_audit_report *r = a->rep;
    if (r->violations == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->violation, sizeof(r->violation), fmt, ap);
        va_end(ap);
        r->violation_lsn = a->lsn;
        r->violation_crank = a->kind != 0 ? a->rec_crank : a->crank;
        r->violations = 1;
    }
    return VIOLATED;
}

/* ---- keys and values ---------------------------------------------------- */

/* A key for messages (store/keyspace.h's human form). */
static const char *kn(const void *k, size_t n, char *buf)
{
    return keel__ks_render(k, n, buf, PRINT_BYTES);
}

static const char *knk(const keel__key *k, char *buf)
{
    return kn(k->b, k->n, buf);
}

/* Bytes for messages. */
static const char *pr(const void *p, size_t n, char *buf)
{
    return keel__printable(p, n, 0, buf, PRINT_BYTES);
}

/* Decode key k[0, n) (the one decoder, store/keyspace.c). @return 1/0. */
static int dk(const uint8_t *k, size_t n, keel__ks_key *d)
{
    return keel__ks_decode(k, n, d);
}

/* The table of a key that decodes (audit_record and check_all decode
 * every key first: AU4), 0 for none. */
static uint8_t tbl(const uint8_t *k, size_t n)
{
    return n > 0 ? k[0] : 0;
}

/* "ko12" / "kp7" as a kref and the key of its record (ko.12 / kp.7).
 * @return 1, or 0 if s is not a kref. */
static int kref_key(const char *s, keel__kref *r, keel__key *key)
{
    if (!keel__ks_kref_parse(s, r)) {
        return 0;
    }
    keel__ks_kref_record(key, *r);
    return 1;
}

/* The first op whose key is >= key (a->nops if none). */
static size_t lower_bound(const audit *a, const void *key, size_t klen)
{
    size_t lo = 0, hi = a->nops;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (keel__keycmp(a->ops[mid].key, a->ops[mid].klen, key, klen) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static const txop *find_op(const audit *a, const void *key, size_t klen)
{
    size_t i = lower_bound(a, key, klen);
    return i < a->nops &&
                   keel__keycmp(a->ops[i].key, a->ops[i].klen, key, klen) == 0
               ? &a->ops[i]
               : NULL;
}

/* The value of key before the record being checked. @return 1 or 0. */
static int before(const audit *a, const void *key, size_t klen, keel_bytes *v)
{
    const keel__shadow_entry *e =
        keel__shadow_find(&a->sh, key, klen, keel__shadow_hash(key, klen));
    if (e == NULL) {
        return 0;
    }
    *v = keel__shadow_value(e);
    return 1;
}

/* ... and after it (between records, the shadow's). @return 1 or 0. */
static int after(const audit *a, const void *key, size_t klen, keel_bytes *v)
{
    const txop *op = find_op(a, key, klen);
    if (op != NULL) {
        v->ptr = op->val;
        v->len = op->vlen;
        return op->kind == KEEL__STORE_PUT;
    }
    return before(a, key, klen, v);
}

static int afterk(const audit *a, const keel__key *key, keel_bytes *v)
{
    return after(a, key->b, key->n, v);
}

static const txop *find_opk(const audit *a, const keel__key *key)
{
    return find_op(a, key->b, key->n);
}

/* A u64 meta counter after the record (absent: 0). @return 1, or 0 when
 * its value is not 8 bytes (violation recorded). */
static int counter_after(audit *a, uint8_t field, uint64_t *n)
{
    keel__key key;
    keel_bytes v;
    *n = 0;
    if (afterk(a, keel__ks_meta(&key, field), &v) == 1) {
        if (v.len != 8) {
            char b[PRINT_BYTES], b2[PRINT_BYTES];
            violation(a, "%s is \"%s\", not a u64 counter", knk(&key, b),
                      pr(v.ptr, v.len, b2));
            return 0;
        }
        *n = keel__ks_rd64(v.ptr);
    }
    return 1;
}

static int counter_before(const audit *a, uint8_t field, uint64_t *n)
{
    keel__key key;
    keel_bytes v;
    *n = 0;
    keel__ks_meta(&key, field);
    if (before(a, key.b, key.n, &v) == 0) {
        return 1;
    }
    if (v.len != 8) {
        return 0;
    }
    *n = keel__ks_rd64(v.ptr);
    return 1;
}

/* ---- vats --------------------------------------------------------------- */

static vinfo *vat(audit *a, uint32_t vid)
{
    if (vid >= a->nvats) {
        size_t n = a->nvats ? a->nvats : 16;
        while (n <= vid) {
            n *= 2;
        }
        vinfo *nv = realloc(a->vats, n * sizeof(*nv));
        if (nv == NULL) {
            return NULL;
        }
        memset(nv + a->nvats, 0, (n - a->nvats) * sizeof(*nv));
        a->vats = nv;
        a->nvats = n;
    }
    return &a->vats[vid];
}

static int state_of(keel_bytes v)
{
    const uint8_t *p = v.ptr;
    return v.len != 1              ? VAT_NONE
           : p[0] == KS_ALIVE      ? VAT_ALIVE
           : p[0] == KS_TERMINATED ? VAT_DEAD
                                   : VAT_NONE;
}

static int vat_before(const audit *a, uint32_t vid)
{
    return vid < a->nvats ? a->vats[vid].state : VAT_NONE;
}

/* Is vid's cleanup (v.<vid>.cleanup) pending after the record? */
static int cleanup_after(const audit *a, uint32_t vid)
{
    keel__key key;
    const txop *op = find_opk(a, keel__ks_vat(&key, vid, KV_CLEANUP));
    if (op == NULL) {
        return vid < a->nvats && a->vats[vid].cleanup;
    }
    return op->kind == KEEL__STORE_PUT;
}

static int vat_after(const audit *a, uint32_t vid)
{
    keel__key key;
    const txop *op = find_opk(a, keel__ks_vat(&key, vid, KV_STATE));
    if (op == NULL) {
        return vat_before(a, vid);
    }
    return op->kind == KEEL__STORE_PUT
               ? state_of((keel_bytes){op->val, op->vlen})
               : VAT_NONE;
}

/* The vat that owns key (c.<v>.*, d.<v>.*, vs.<v>.*), or 0. */
static uint32_t owner_of(const uint8_t *k, size_t n)
{
    keel__ks_key d;
    return dk(k, n, &d) && (d.table == KS_CLIST || d.table == KS_DECIDER ||
                            d.table == KS_VATSTORE)
               ? d.vid
               : 0;
}

/* ---- promises ------------------------------------------------------------ */

/* Decode the record of kref kp ("kp7") after the record being checked
 * into *p (free it) when *found. @return KEEL_OK or VIOLATED (the record
 * does not decode). */
static int prom_after(audit *a, const char *kp, kprom *p, int *found)
{
    keel__key key;
    keel__kref r;
    keel_bytes v;
    char b[PRINT_BYTES];
    *found = 0;
    if (!kref_key(kp, &r, &key) || r.kind != KR_P || afterk(a, &key, &v) == 0) {
        return KEEL_OK;
    }
    if (keel__kprom_decode(v.ptr, v.len, p) < 0) {
        return violation(a, "%s: promise record does not decode", knk(&key, b));
    }
    *found = 1;
    return KEEL_OK;
}

static int prom_before(const audit *a, const char *kp, kprom *p)
{
    keel__key key;
    keel__kref r;
    keel_bytes v;
    if (!kref_key(kp, &r, &key) || r.kind != KR_P ||
        before(a, key.b, key.n, &v) == 0 ||
        keel__kprom_decode(v.ptr, v.len, p) < 0) {
        return 0;
    }
    return 1;
}

/* Does kref s exist after the record? */
static int kref_exists(const audit *a, const char *s)
{
    keel__key key;
    keel__kref r;
    keel_bytes v;
    return kref_key(s, &r, &key) && afterk(a, &key, &v) == 1;
}

/* Where a message lies, for a violation: promise kp's record (kp not
 * NULL), or run-queue item seq. */
static const char *msg_place(const char *kp, uint64_t seq, char *buf,
                             size_t cap)
{
    if (kp != NULL) {
        snprintf(buf, cap, "promise %s", kp);
    } else {
        snprintf(buf, cap, "run-queue item rq.%" PRIu64, seq);
    }
    return buf;
}

/* A8 for the krefs of a message (slots and result) kept at kp or seq. */
static int check_msg(audit *a, const kmsg *m, const char *kp, uint64_t seq)
{
    char w[64];
    for (size_t i = 0; i < m->nslots; i++) {
        if (!kref_exists(a, m->slots[i])) {
            return violation(a, "%s: slot %zu names %s, which does not exist",
                             msg_place(kp, seq, w, sizeof(w)), i, m->slots[i]);
        }
    }
    if (m->result != NULL && m->result[0] != '\0' &&
        (m->result[1] != 'p' || !kref_exists(a, m->result))) {
        return violation(a, "%s: result %s is not an existing promise",
                         msg_place(kp, seq, w, sizeof(w)), m->result);
    }
    return KEEL_OK;
}

static int msg_equal(const kmsg *x, const kmsg *y)
{
    int eq = strcmp(x->method, y->method) == 0 && x->body_len == y->body_len &&
             (x->body_len == 0 || memcmp(x->body, y->body, x->body_len) == 0) &&
             x->nslots == y->nslots && strcmp(x->result, y->result) == 0;
    for (size_t i = 0; eq && i < x->nslots; i++) {
        eq = strcmp(x->slots[i], y->slots[i]) == 0;
    }
    return eq;
}

/* A5, A8, A9 on one promise record as it is after the record. */
static int check_prom_shape(audit *a, const char *kp, const kprom *p)
{
    keel__key key;
    keel__kref r;
    char b[PRINT_BYTES];
    if (p->state != KP_UNRESOLVED) {
        if (p->nqueue > 0) {
            return violation(a,
                             "message queued on settled promise %s (%zu "
                             "message(s) left on it)",
                             kp, p->nqueue);
        }
        if (p->nsubs > 0 || p->decider != 0) {
            return violation(a,
                             "settled promise %s keeps %zu subscriber(s) "
                             "and decider vat %" PRIu32,
                             kp, p->nsubs, p->decider);
        }
        return check_msg(a, &p->res, kp, 0);
    }
    for (size_t i = 0; i < p->nsubs; i++) {
        if (vat_after(a, p->subs[i]) == VAT_NONE) {
            return violation(
                a, "promise %s: subscriber vat %" PRIu32 " does not exist", kp,
                p->subs[i]);
        }
        for (size_t j = 0; j < i; j++) {
            if (p->subs[j] == p->subs[i]) {
                return violation(a,
                                 "promise %s: vat %" PRIu32 " subscribed "
                                 "twice (it would be notified twice)",
                                 kp, p->subs[i]);
            }
        }
    }
    if (p->decider != 0) {
        keel_bytes v;
        /* A10: a dead vat's promises wait for its cleanup to reject them */
        if (vat_after(a, p->decider) != VAT_ALIVE &&
            !(vat_after(a, p->decider) == VAT_DEAD &&
              cleanup_after(a, p->decider))) {
            return violation(
                a, "%s is decided by vat %" PRIu32 ", which is not alive", kp,
                p->decider);
        }
        keel__ks_kref_parse(kp, &r);
        if (afterk(a, keel__ks_decider(&key, p->decider, r.n), &v) == 0) {
            return violation(a,
                             "%s is decided by vat %" PRIu32
                             " but its decider index %s is missing",
                             kp, p->decider, knk(&key, b));
        }
    }
    for (size_t i = 0; i < p->nqueue; i++) {
        int rc = check_msg(a, &p->queue[i], kp, 0);
        if (rc != 0) {
            return rc;
        }
    }
    return KEEL_OK;
}

/* The decider of kp when the record being checked settled it (A6). */
static uint32_t settling_decider(const audit *a, const char *kp,
                                 const kprom *old)
{
    uint32_t d = 0;
    if (old != NULL) {
        d = old->decider;
    } else {
        /* made in this transaction: its index entry was put and dropped */
        keel__kref r;
        keel__ks_kref_parse(kp, &r);
        for (size_t i = 0; i < a->nops; i++) {
            const txop *op = &a->ops[i];
            keel__ks_key dd;
            if (op->kind == KEEL__STORE_DELETE &&
                tbl(op->key, op->klen) == KS_DECIDER &&
                dk(op->key, op->klen, &dd) && dd.n == r.n) {
                d = dd.vid;
            }
        }
    }
    if (a->popped && a->pop.kind == KITEM_SEND && a->outcome == OUT_DELIVERED &&
        strcmp(a->pop.msg.result, kp) == 0) {
        d = a->out_vid; /* the receiver decides the message's result */
    }
    return d;
}

/* A6: may this record settle kp, decided by d? */
static int check_resolver(audit *a, const char *kp, uint32_t d,
                          const kprom *now)
{
    keel__key key;
    char b[PRINT_BYTES];
    if (d == 0) {
        if (a->kind != KEEL_WAL_CRANK || !a->popped ||
            a->pop.kind != KITEM_SEND || a->outcome != OUT_REJECTED ||
            strcmp(a->pop.msg.result, kp) != 0) {
            return violation(a,
                             "%s, which has no decider, was settled other "
                             "than by rejecting the undelivered message it "
                             "is the result of",
                             kp);
        }
        return KEEL_OK;
    }
    if (a->kind == KEEL_WAL_KERNEL_OP) {
        const txop *op = find_opk(a, keel__ks_vat(&key, d, KV_STATE));
        /* the termination, or a later batch of its cleanup */
        int terminating = op != NULL && op->kind == KEEL__STORE_PUT &&
                          state_of((keel_bytes){op->val, op->vlen}) == VAT_DEAD;
        int cleaning = vat_before(a, d) == VAT_DEAD &&
                       find_opk(a, keel__ks_vat(&key, d, KV_CLEANUP)) != NULL;
        if ((!terminating && !cleaning) || now->state != KP_REJECTED) {
            return violation(a,
                             "%s, decided by vat %" PRIu32
                             ", was settled by a kernel operation that "
                             "neither terminated nor cleaned up that vat",
                             kp, d);
        }
        return KEEL_OK;
    }
    if (a->kind == KEEL_WAL_CRANK &&
        (a->outcome != OUT_DELIVERED || a->out_vid != d)) {
        return violation(a,
                         "%s, decided by vat %" PRIu32
                         ", was settled in a crank that was not delivered "
                         "to that vat",
                         kp, d);
    }
    keel__kref r;
    keel__ks_kref_parse(kp, &r);
    const txop *op = find_opk(a, keel__ks_clist_k(&key, d, r));
    if (op == NULL || op->kind != KEEL__STORE_DELETE) {
        return violation(a,
                         "%s was settled, but not by its decider vat %" PRIu32
                         " (the decider's c-list entry %s was not retired)",
                         kp, d, knk(&key, b));
    }
    return KEEL_OK;
}

/* A4: the notifies and re-queued messages of kp's settlement. */
static int check_settle(audit *a, const char *kp, const kprom *old,
                        const kprom *now)
{
    uint32_t d = settling_decider(a, kp, old);
    int rc = check_resolver(a, kp, d, now);
    for (size_t i = 0; rc == 0 && i < a->nitems; i++) {
        const kitem *it = &a->items[i].it;
        if (it->kind != KITEM_NOTIFY || strcmp(it->kp, kp) != 0) {
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            const kitem *e = &a->items[j].it;
            if (e->kind == KITEM_NOTIFY && e->vid == it->vid &&
                strcmp(e->kp, kp) == 0) {
                rc = violation(a,
                               "vat %" PRIu32 " was notified twice when %s "
                               "settled",
                               it->vid, kp);
                break;
            }
        }
    }
    for (size_t s = 0; rc == 0 && old != NULL && s < old->nsubs; s++) {
        int found = 0;
        for (size_t i = 0; !found && i < a->nitems; i++) {
            const kitem *it = &a->items[i].it;
            found = it->kind == KITEM_NOTIFY && it->vid == old->subs[s] &&
                    strcmp(it->kp, kp) == 0;
        }
        if (!found) {
            rc = violation(a,
                           "lost notification: %s settled without queueing a "
                           "notify for its subscriber vat %" PRIu32,
                           kp, old->subs[s]);
        }
    }
    size_t next = 0;
    for (size_t q = 0; rc == 0 && old != NULL && q < old->nqueue; q++) {
        int found = 0;
        for (; !found && next < a->nitems; next++) {
            const kitem *it = &a->items[next].it;
            found = it->kind == KITEM_SEND && strcmp(it->target, kp) == 0 &&
                    msg_equal(&it->msg, &old->queue[q]);
        }
        if (!found) {
            rc = violation(a,
                           "%s settled without re-queueing message %zu of "
                           "the %zu waiting on it (%s)",
                           kp, q + 1, old->nqueue, old->queue[q].method);
        }
    }
    return rc;
}

/* A5, A6, A9, A11 on an op of the record on kp.<n> (put or delete). */
static int check_prom_op(audit *a, const txop *op)
{
    char kp[KEEL__KS_REF_STR];
    kprom old, now;
    int have_old = 0, have_now = 0, rc = KEEL_OK;
    uint64_t n, next;
    keel__ks_key d;
    dk(op->key, op->klen, &d); /* AU4: it decodes */
    n = d.n;
    keel__ks_kref_str((keel__kref){KR_P, n}, kp);
    if (op->kind == KEEL__STORE_DELETE) {
        /* A8: only a settled promise nothing holds goes (A13 checks the
         * holders) */
        if (op->before != NULL &&
            keel__kprom_decode(op->old.ptr, op->old.len, &old) == KEEL_OK) {
            int unres = old.state == KP_UNRESOLVED;
            keel__kprom_free(&old);
            /* settled (a dead vat's cleanup rejects it) and freed in the
             * same transaction */
            a->unres_delta -= unres;
        }
        return op->before != NULL ? holders_zero(a, (keel__kref){KR_P, n})
                                  : KEEL_OK;
    }
    if (keel__kprom_decode(op->val, op->vlen, &now) < 0) {
        return violation(a, "kp.%" PRIu64 ": promise record does not decode",
                         n);
    }
    have_now = 1;
    if (op->before != NULL) {
        have_old =
            keel__kprom_decode(op->old.ptr, op->old.len, &old) == KEEL_OK;
    } else if (!counter_after(a, KM_NEXT_KP, &next)) {
        rc = VIOLATED;
    } else if (n >= next) {
        rc = violation(a, "%s created at or beyond k.next.kp = %" PRIu64, kp,
                       next);
    }
    if (rc == 0) {
        rc = check_prom_shape(a, kp, &now);
    }
    if (rc == 0 && have_old && old.state != KP_UNRESOLVED &&
        (op->old.len != op->vlen ||
         memcmp(op->old.ptr, op->val, op->vlen) != 0)) {
        rc = violation(a,
                       now.state != KP_UNRESOLVED
                           ? "%s was resolved again after it settled"
                           : "%s went back to unresolved after it settled",
                       kp);
    }
    if (rc == 0 && have_old && old.state == KP_UNRESOLVED && old.decider != 0 &&
        (now.state != KP_UNRESOLVED || now.decider != old.decider)) {
        keel__key key;
        keel_bytes v;
        char b[PRINT_BYTES];
        if (afterk(a, keel__ks_decider(&key, old.decider, n), &v) == 1) {
            rc = violation(a,
                           "decider index %s left behind: vat %" PRIu32
                           " no longer decides %s",
                           knk(&key, b), old.decider, kp);
        }
    }
    int was_unresolved = have_old && old.state == KP_UNRESOLVED;
    if (rc == 0 && (op->before == NULL || was_unresolved) &&
        now.state != KP_UNRESOLVED) {
        rc = check_settle(a, kp, have_old ? &old : NULL, &now);
    }
    a->unres_delta +=
        (int64_t)(now.state == KP_UNRESOLVED) - (int64_t)was_unresolved;
    if (have_old) {
        keel__kprom_free(&old);
    }
    if (have_now) {
        keel__kprom_free(&now);
    }
    return rc;
}

/* ---- c-lists, decider index, objects, vats --------------------------------
 */

/* A7, A8 on c.<v>.k.<kref> = vref or c.<v>.v.<vref> = kref as it is
 * after the record (present), or on its deletion (old: its value before).
 */
static int check_clist(audit *a, const uint8_t *k, size_t n, keel_bytes val,
                       int present)
{
    char b1[PRINT_BYTES], b2[PRINT_BYTES], b3[PRINT_BYTES];
    keel__key key;
    keel__ks_key d;
    keel_bytes other;
    keel__kref kr;
    keel__vref vr;
    dk(k, n, &d); /* AU4 */
    uint32_t vid = d.vid;
    if (present && vat_after(a, vid) != VAT_ALIVE) {
        return violation(a, "%s: vat %" PRIu32 " is not alive (A10)",
                         kn(k, n, b1), vid);
    }
    if (d.field == KC_R) {
        return KEEL_OK; /* a retired vref (K7): no pair */
    }
    int fwd = d.field == KC_K, reach;
    if (fwd ? !keel__ks_clist_kval(val.ptr, val.len, &vr, &reach)
            : !keel__ks_kref_val(val.ptr, val.len, &kr)) {
        return violation(a, "%s = \"%s\" is not a %s", kn(k, n, b1),
                         pr(val.ptr, val.len, b2), fwd ? "vref" : "kref");
    }
    if (fwd) {
        kr = d.kref;
    } else {
        vr = d.vref;
    }
    if (present) {
        char ks[KEEL__KS_REF_STR];
        keel__ks_kref_str(kr, ks);
        if (!kref_exists(a, ks)) {
            return violation(a, "%s names %s, which does not exist (A8)",
                             kn(k, n, b1), ks);
        }
    }
    /* the reverse entry: c.<v>.<v|k>.<value>, whose value must be this
     * key's ref (encoded from the decoded key, never read from its bytes) */
    uint8_t mine[KEEL__KS_REF_BYTES];
    if (fwd) {
        keel__ks_clist_v(&key, vid, KC_V, vr);
        keel__ks_ref(mine, kr.kind, kr.n);
    } else {
        keel__ks_clist_k(&key, vid, kr);
        keel__ks_ref(mine, vr.kind, vr.n);
    }
    int has = afterk(a, &key, &other);
    /* a kref->vref value may carry the dropped flag (KS4) */
    int flagged = !fwd && other.len == KEEL__KS_REF_BYTES + 1 &&
                  ((const uint8_t *)other.ptr)[KEEL__KS_REF_BYTES] == 0x00;
    int pairs = has && (other.len == KEEL__KS_REF_BYTES || flagged) &&
                memcmp(other.ptr, mine, KEEL__KS_REF_BYTES) == 0;
    if (present && !pairs) {
        return violation(
            a,
            "c-list of vat %" PRIu32 " is not a bijection: %s "
            "= \"%s\" but %s is %s (A7)",
            vid, kn(k, n, b1),
            keel__ks_render_value(k, n, val.ptr, val.len, b2, sizeof(b2)),
            knk(&key, b3), has ? "another value" : "absent");
    }
    if (!present && pairs) {
        return violation(a,
                         "c-list of vat %" PRIu32 " is not a bijection: %s "
                         "was deleted but %s still names it (A7)",
                         vid, kn(k, n, b1), knk(&key, b3));
    }
    return KEEL_OK;
}

/* A9 on d.<v>.<kp>, present after the record or deleted by it. */
static int check_decider_key(audit *a, const uint8_t *k, size_t n, int present)
{
    char kp[KEEL__KS_REF_STR], b[PRINT_BYTES];
    keel__ks_key d;
    kprom p;
    dk(k, n, &d); /* AU4 */
    uint32_t vid = d.vid;
    keel__ks_kref_str((keel__kref){KR_P, d.n}, kp);
    if (present && vat_after(a, vid) != VAT_ALIVE) {
        return violation(a, "%s: vat %" PRIu32 " is not alive (A10)",
                         kn(k, n, b), vid);
    }
    int found;
    if (prom_after(a, kp, &p, &found) != KEEL_OK) {
        return VIOLATED;
    }
    int decides = found && p.state == KP_UNRESOLVED && p.decider == vid;
    if (found) {
        keel__kprom_free(&p);
    }
    if (present && !decides) {
        return violation(
            a, "decider index %s, but vat %" PRIu32 " does not decide %s (A9)",
            kn(k, n, b), vid, kp);
    }
    if (!present && decides) {
        return violation(a,
                         "decider index %s deleted while vat %" PRIu32
                         " still decides %s (A9)",
                         kn(k, n, b), vid, kp);
    }
    return KEEL_OK;
}

/* ---- A13: reference counts --------------------------------------------- */

/* rc.<r> in *reach, *recog (0, 0 absent), after (1) or before (0) the
 * record. @return 0, or VIOLATED when its value is not two u32. */
static int rc_value(audit *a, keel__kref r, int aft, uint32_t *reach,
                    uint32_t *recog)
{
    keel__key key;
    keel_bytes v;
    keel__ks_kref_key(&key, KS_REFCOUNT, r);
    int got = aft ? afterk(a, &key, &v) : before(a, key.b, key.n, &v);
    *reach = *recog = 0;
    if (got == 1 && v.len != 8) {
        char b[PRINT_BYTES];
        return violation(a, "%s is not two counts (A13)", knk(&key, b));
    }
    if (got == 1) {
        *reach = keel__ks_rd32(v.ptr);
        *recog = keel__ks_rd32((const uint8_t *)v.ptr + 4);
    }
    return KEEL_OK;
}

/* A kref deleted by the record: nothing may hold it after it (A13). */
static int holders_zero(audit *a, keel__kref r)
{
    uint32_t reach, recog;
    char s[KEEL__KS_REF_STR];
    if (rc_value(a, r, 1, &reach, &recog) != KEEL_OK) {
        return VIOLATED;
    }
    if (recog != 0) {
        keel__ks_kref_str(r, s);
        return violation(a,
                         "%s was deleted while %" PRIu32 " holder(s) "
                         "recognize it (A13)",
                         s, recog);
    }
    return KEEL_OK;
}

/* A13 on one record: for every kref whose holders it changed (or whose
 * rc.<kref> it wrote), the stored counts after equal those before plus
 * the holders the record added less those it removed (KS4). With the
 * full recount of check_all() on the base, this is the recount after
 * every transaction, in time linear in the record. */
static int check_refcounts(audit *a)
{
    void *l = keel__gc_list_new();
    int rc = l == NULL ? VIOLATED : KEEL_OK;
    for (size_t i = 0; rc == KEEL_OK && i < a->nops; i++) {
        const txop *op = &a->ops[i];
        keel__ks_key d;
        char b[PRINT_BYTES];
        if (!dk(op->key, op->klen, &d)) {
            continue;
        }
        if (d.table == KS_REFCOUNT) {
            keel__gc_refs(&(keel__ks_key){.table = KS_PIN, .kref = d.kref},
                          NULL, 0, 0, l); /* named, delta 0 */
            continue;
        }
        if (op->before != NULL &&
            keel__gc_refs(&d, op->old.ptr, op->old.len, -1, l) < 0) {
            rc = violation(a, "%s: value does not decode (A13)",
                           kn(op->key, op->klen, b));
        }
        if (rc == KEEL_OK && op->kind == KEEL__STORE_PUT &&
            keel__gc_refs(&d, op->val, op->vlen, 1, l) < 0) {
            rc = violation(a, "%s: value does not decode (A13)",
                           kn(op->key, op->klen, b));
        }
    }
    keel__kref r;
    int32_t dr, dg;
    for (size_t i = 0; rc == KEEL_OK && keel__gc_list_get(l, i, &r, &dr, &dg);
         i++) {
        uint32_t r0, g0, r1, g1;
        char s[KEEL__KS_REF_STR];
        if (rc_value(a, r, 0, &r0, &g0) != KEEL_OK ||
            rc_value(a, r, 1, &r1, &g1) != KEEL_OK) {
            rc = VIOLATED;
            break;
        }
        if ((int64_t)r1 != (int64_t)r0 + dr ||
            (int64_t)g1 != (int64_t)g0 + dg) {
            keel__ks_kref_str(r, s);
            rc = violation(a,
                           "rc.%s is %" PRIu32 " reachable, %" PRIu32
                           " recognizable, but its holders count %" PRId64
                           ", %" PRId64 " (A13)",
                           s, r1, g1, (int64_t)r0 + dr, (int64_t)g0 + dg);
        }
    }
    if (l != NULL && keel__gc_list_oom(l) && rc == KEEL_OK) {
        rc = VIOLATED;
    }
    keel__gc_list_free(l);
    return rc;
}

/* A8, A11 on ko.<n> = owner. */
static int check_object(audit *a, const txop *op, const uint8_t *k, size_t n,
                        keel_bytes val)
{
    char b[PRINT_BYTES];
    uint64_t num, next;
    uint32_t owner;
    keel__ks_key d;
    dk(k, n, &d); /* AU4 */
    num = d.n;
    if (op != NULL && op->kind == KEEL__STORE_DELETE) {
        return op->before != NULL ? holders_zero(a, (keel__kref){KR_O, num})
                                  : KEEL_OK;
    }
    if (val.len != 4 || (owner = keel__ks_rd32(val.ptr)) == 0 ||
        owner > MAX_VID || vat_after(a, owner) == VAT_NONE) {
        return violation(a, "object ko%" PRIu64 ": owner \"%s\" is no vat", num,
                         pr(val.ptr, val.len, b));
    }
    if (op != NULL && op->before != NULL &&
        (op->old.len != val.len ||
         memcmp(op->old.ptr, val.ptr, val.len) != 0)) {
        return violation(a, "object ko%" PRIu64 " changed owner (A8)", num);
    }
    if (op != NULL && op->before == NULL) {
        if (!counter_after(a, KM_NEXT_KO, &next)) {
            return VIOLATED;
        }
        if (num >= next) {
            return violation(a,
                             "ko%" PRIu64 " created at or beyond k.next.ko = "
                             "%" PRIu64 " (A11)",
                             num, next);
        }
    }
    return KEEL_OK;
}

/* v.<vid>.state and v.<vid>.root. */
static int check_vat_key(audit *a, const txop *op, const uint8_t *k, size_t n,
                         keel_bytes val)
{
    char b[PRINT_BYTES], b2[PRINT_BYTES], kref[KEEL__KS_REF_STR];
    keel__ks_key d;
    keel__kref r;
    dk(k, n, &d); /* AU4 */
    uint32_t vid = d.vid;
    if (d.field == KV_STATE) {
        int st = state_of(val);
        if (st == VAT_NONE) {
            return violation(a, "%s is \"%s\", not alive or terminated",
                             kn(k, n, b), pr(val.ptr, val.len, b2));
        }
        if (op != NULL && st == VAT_ALIVE && vat_before(a, vid) == VAT_DEAD) {
            return violation(a, "vat %" PRIu32 " came back alive (A10)", vid);
        }
    }
    if (d.field == KV_ROOT) {
        if (!keel__ks_kref_val(val.ptr, val.len, &r)) {
            return violation(a, "%s is \"%s\", not a kref", kn(k, n, b),
                             pr(val.ptr, val.len, b2));
        }
        keel__ks_kref_str(r, kref);
        if (!kref_exists(a, kref)) {
            return violation(a, "%s names %s, which does not exist (A8)",
                             kn(k, n, b), kref);
        }
    }
    return KEEL_OK;
}

/* A4, A8 on one run-queue item as it is after the record. */
static int check_item(audit *a, uint64_t seq, const kitem *it)
{
    kprom p;
    if (it->kind == KITEM_SEND) {
        if (!kref_exists(a, it->target)) {
            return violation(a,
                             "run-queue item rq.%" PRIu64 ": target %s "
                             "does not exist (A8)",
                             seq, it->target);
        }
        return check_msg(a, &it->msg, NULL, seq);
    }
    if (vat_after(a, it->vid) == VAT_NONE) {
        return violation(a,
                         "run-queue item rq.%" PRIu64 ": notify for vat "
                         "%" PRIu32 ", which does not exist",
                         seq, it->vid);
    }
    int found;
    if (prom_after(a, it->kp, &p, &found) != KEEL_OK) {
        return VIOLATED;
    }
    if (!found) {
        return violation(a,
                         "run-queue item rq.%" PRIu64 ": notify of %s, "
                         "which does not exist (A8)",
                         seq, it->kp);
    }
    int unresolved = p.state == KP_UNRESOLVED;
    keel__kprom_free(&p);
    if (unresolved) {
        return violation(a,
                         "run-queue item rq.%" PRIu64 ": notify of %s, "
                         "which is unresolved (A4)",
                         seq, it->kp);
    }
    return KEEL_OK;
}

/* The checks of a key present after the record (op: its write, or NULL
 * in a full check). Run-queue items and counters are checked apart. */
static int check_key(audit *a, const txop *op, const uint8_t *k, size_t n,
                     keel_bytes val)
{
    char b[PRINT_BYTES];
    keel__ks_key d;
    dk(k, n, &d); /* AU4 */
    uint8_t t = d.table;
    /* A10: a dead vat's c-list and vatstore keys may stay while its
     * cleanup is pending: those it had, and those its last transaction
     * (the one that terminates it) wrote; none written later (op != NULL:
     * a put, by a record after the termination). */
    if ((t == KS_CLIST || t == KS_VATSTORE) &&
        vat_after(a, d.vid) == VAT_DEAD && cleanup_after(a, d.vid) &&
        (op == NULL || vat_before(a, d.vid) == VAT_ALIVE)) {
        return KEEL_OK;
    }
    if (op == NULL && t == KS_DECIDER && vat_after(a, d.vid) == VAT_DEAD &&
        cleanup_after(a, d.vid)) {
        return KEEL_OK; /* a promise its cleanup has yet to reject */
    }
    switch (t) {
    case KS_CLIST:
        return check_clist(a, k, n, val, 1);
    case KS_DECIDER:
        return check_decider_key(a, k, n, 1);
    case KS_OBJECT:
        return check_object(a, op, k, n, val);
    case KS_VAT:
        return check_vat_key(a, op, k, n, val);
    case KS_VATSTORE:
        if (vat_after(a, d.vid) != VAT_ALIVE) {
            return violation(a, "%s: vat %" PRIu32 " is not alive (A10)",
                             kn(k, n, b), d.vid);
        }
        return KEEL_OK;
    default:
        return KEEL_OK;
    }
}

/* ---- one record ------------------------------------------------------------
 */

/* A c.<v>.* key of a vat that is terminated after the record: the two
 * halves of a pair may go in different cleanup batches (K6). */
static int dead_vat_key(const audit *a, const uint8_t *k, size_t n)
{
    keel__ks_key d;
    return dk(k, n, &d) && vat_after(a, d.vid) == VAT_DEAD;
}

/* A10 on a record that writes v.<vid>.cleanup: only a terminated vat has
 * a cleanup; a batch of it (the vat was dead before) is a kernel op that
 * deletes that vat's c-list and vatstore keys and does nothing else. */
static int check_cleanup(audit *a)
{
    char b[PRINT_BYTES];
    for (size_t i = 0; i < a->nops; i++) {
        const txop *op = &a->ops[i];
        keel__ks_key d;
        if (!dk(op->key, op->klen, &d) || d.table != KS_VAT ||
            d.field != KV_CLEANUP) {
            continue;
        }
        uint32_t vid = d.vid;
        if (op->kind == KEEL__STORE_PUT && vat_after(a, vid) != VAT_DEAD) {
            return violation(a,
                             "cleanup of vat %" PRIu32 ", which is not "
                             "terminated (A10)",
                             vid);
        }
        if (vat_before(a, vid) != VAT_DEAD) {
            continue; /* the termination itself: check_applied() */
        }
        if (a->kind != KEEL_WAL_KERNEL_OP) {
            return violation(a,
                             "cleanup of vat %" PRIu32 " in a %s record "
                             "(A10)",
                             vid, keel_wal_kind_name(a->kind));
        }
        for (size_t j = 0; j < a->nops; j++) {
            const txop *o = &a->ops[j];
            keel__ks_key od;
            dk(o->key, o->klen, &od); /* AU4 */
            int own = od.table == KS_CLIST || od.table == KS_DECIDER ||
                      od.table == KS_VATSTORE;
            /* what rejecting its promises writes, checked as any
             * settlement is (A3, A4, A6, A11) */
            int settling =
                o->kind == KEEL__STORE_PUT &&
                (od.table == KS_PROMISE || od.table == KS_RUNQ ||
                 (od.table == KS_META &&
                  (od.field == KM_RQ_TAIL || od.field == KM_UNRESOLVED)));
            int gc = od.table == KS_REFCOUNT || od.table == KS_GCACT ||
                     ((od.table == KS_PROMISE || od.table == KS_OBJECT) &&
                      o->kind == KEEL__STORE_DELETE);
            if (j == i || gc || (od.table == KS_META && od.field == KM_HASH) ||
                (own && od.vid == vid && o->kind == KEEL__STORE_DELETE) ||
                settling) {
                continue;
            }
            return violation(a,
                             "cleanup batch of vat %" PRIu32 " also "
                             "%s %s (A10)",
                             vid,
                             o->kind == KEEL__STORE_PUT ? "writes" : "deletes",
                             kn(o->key, o->klen, b));
        }
    }
    return KEEL_OK;
}

static void clear_txn(audit *a)
{
    for (size_t i = 0; i < a->nitems; i++) {
        keel__kitem_free(&a->items[i].it);
    }
    if (a->popped) {
        keel__kitem_free(&a->pop);
    }
    a->nitems = 0;
    a->nops = 0;
    a->popped = 0;
    a->outcome = OUT_NONE;
    a->out_vid = 0;
    a->unres_delta = 0;
}

/* Split the payload into ops with the store's decoder (AU3). */
static int parse_ws(audit *a, const keel_wal_record *rec, keel_diag *diag)
{
    keel__ws_decoder dec;
    keel__ws_op wo;
    keel_diag d = {0};
    a->nops = 0;
    int rc = keel__ws_decode_begin(&dec, a->payload, a->plen, &d);
    if (rc == KEEL_OK && dec.count > a->ops_cap) {
        txop *no = realloc(a->ops, dec.count * sizeof(*no));
        if (no == NULL) {
            return keel__diag(diag, KEEL_ENOMEM, "out of memory");
        }
        a->ops = no;
        a->ops_cap = dec.count;
    }
    while (rc >= 0 && (rc = keel__ws_decode_next(&dec, &wo, &d)) == 1) {
        txop *op = &a->ops[a->nops++];
        op->off = wo.off;
        op->end = wo.end;
        op->kind = wo.kind;
        op->key = wo.key;
        op->klen = wo.key_len;
        op->val = wo.val;
        op->vlen = wo.val_len;
        op->hash = keel__shadow_hash(op->key, op->klen);
        op->before = keel__shadow_find(&a->sh, op->key, op->klen, op->hash);
        op->old = op->before != NULL ? keel__shadow_value(op->before)
                                     : (keel_bytes){NULL, 0};
    }
    if (rc < 0) {
        a->nops = 0;
        return keel__diag(diag, rc,
                          "wal/%s: offset %" PRIu64 ": LSN %" PRIu64 ": %s",
                          rec->segment, rec->offset, rec->lsn, d.msg);
    }
    return KEEL_OK;
}

/* AU4: every key the record writes is a key of the keyspace. */
static int check_keys(audit *a)
{
    keel__ks_key d;
    for (size_t i = 0; i < a->nops; i++) {
        if (!dk(a->ops[i].key, a->ops[i].klen, &d)) {
            char b[PRINT_BYTES];
            return violation(a, "key %s is not in keel's keyspace",
                             kn(a->ops[i].key, a->ops[i].klen, b));
        }
    }
    return KEEL_OK;
}

/* A1, A2. */
static int check_chain(audit *a)
{
    char b[PRINT_BYTES];
    if (a->kind < KEEL_WAL_CRANK || a->kind > KEEL_WAL_KERNEL_OP) {
        return violation(a,
                         "record kind %d (%s): the kernel commits no such "
                         "transaction",
                         a->kind, keel_wal_kind_name(a->kind));
    }
    keel__key ck, hk;
    const txop *c = find_opk(a, keel__ks_meta(&ck, KM_CRANK));
    if (a->kind == KEEL_WAL_CRANK) {
        if (a->rec_crank != a->crank + 1) {
            return violation(a,
                             "crank record numbered %" PRIu64
                             " after crank %" PRIu64 " (A2)",
                             a->rec_crank, a->crank);
        }
        if (c == NULL || c->kind != KEEL__STORE_PUT || c->vlen != 8 ||
            keel__ks_rd64(c->val) != a->rec_crank) {
            return violation(a,
                             "crank %" PRIu64 " does not write k.crank = "
                             "%" PRIu64 " (A2)",
                             a->rec_crank, a->rec_crank);
        }
    } else if (a->rec_crank != a->crank || c != NULL) {
        return violation(
            a, "%s record at crank %" PRIu64 " changes the crank number (A2)",
            keel_wal_kind_name(a->kind), a->crank);
    }
    const txop *h = find_opk(a, keel__ks_meta(&hk, KM_HASH));
    if (h == NULL || h->kind != KEEL__STORE_PUT) {
        return violation(a, "the transaction writes no k.hash (A1)");
    }
    if (h->vlen != 8) {
        return violation(a, "k.hash is \"%s\", not a u64 (A1)",
                         pr(h->val, h->vlen, b));
    }
    uint64_t stored = keel__ks_rd64(h->val);
    uint64_t want = 0, put = 0; /* the kernel's own hashing code */
    keel_diag d = {0};
    if (keel__activity_hash_record(a->xx, a->hash, a->kind, a->rec_crank,
                                   a->payload, a->plen, &want, &put, &d) < 0) {
        return violation(a, "activity hash: %s (A1)", d.msg);
    }
    if (stored != want) {
        return violation(a,
                         "activity hash: k.hash is %016" PRIx64
                         ", the chain gives %016" PRIx64 " (A1)",
                         stored, want);
    }
    a->new_hash = stored;
    return KEEL_OK;
}

/* A3: the run queue's ops; decodes the removed and added items. */
static int check_queue(audit *a, keel_diag *diag)
{
    uint64_t h0 = 0, t0 = 0, h1 = 0, t1 = 0, puts = 0, dels = 0;
    if (!counter_before(a, KM_RQ_HEAD, &h0) ||
        !counter_before(a, KM_RQ_TAIL, &t0)) {
        return violation(a, "k.rq.head or k.rq.tail is not a counter");
    }
    if (!counter_after(a, KM_RQ_HEAD, &h1) ||
        !counter_after(a, KM_RQ_TAIL, &t1)) {
        return VIOLATED;
    }
    if (h1 < h0 || t1 < t0 || h1 > t1) {
        return violation(a,
                         "run queue [%" PRIu64 ", %" PRIu64 ") became [%" PRIu64
                         ", %" PRIu64 ") (A3)",
                         h0, t0, h1, t1);
    }
    const uint8_t rq = KS_RUNQ;
    for (size_t i = lower_bound(a, &rq, 1);
         i < a->nops && tbl(a->ops[i].key, a->ops[i].klen) == KS_RUNQ; i++) {
        const txop *op = &a->ops[i];
        keel__ks_key d;
        dk(op->key, op->klen, &d); /* AU4 */
        uint64_t seq = d.n;
        if (op->kind == KEEL__STORE_DELETE) {
            if (op->before == NULL || seq < h0 || seq >= h1) {
                return violation(a,
                                 "rq.%" PRIu64 " removed from a run queue "
                                 "whose head went %" PRIu64 " -> %" PRIu64
                                 " (A3)",
                                 seq, h0, h1);
            }
            if (keel__kitem_decode(op->old.ptr, op->old.len, &a->pop) < 0) {
                return violation(a, "rq.%" PRIu64 " does not decode", seq);
            }
            a->popped = 1;
            dels++;
            continue;
        }
        if (op->before != NULL || seq < t0 || seq >= t1) {
            return violation(a,
                             "rq.%" PRIu64 " written into a run queue "
                             "whose tail went %" PRIu64 " -> %" PRIu64 " (A3)",
                             seq, t0, t1);
        }
        if (a->nitems == a->items_cap) {
            size_t n = a->items_cap ? a->items_cap * 2 : 16;
            newitem *ni = realloc(a->items, n * sizeof(*ni));
            if (ni == NULL) {
                return keel__diag(diag, KEEL_ENOMEM, "out of memory");
            }
            a->items = ni;
            a->items_cap = n;
        }
        if (keel__kitem_decode(op->val, op->vlen, &a->items[a->nitems].it) <
            0) {
            return violation(a, "rq.%" PRIu64 " does not decode", seq);
        }
        a->items[a->nitems++].seq = seq;
        puts++;
    }
    if (puts != t1 - t0 || dels != h1 - h0) {
        return violation(a,
                         "run queue: %" PRIu64 " item(s) added and %" PRIu64
                         " removed, but tail moved %" PRIu64
                         " and head %" PRIu64 " (A3)",
                         puts, dels, t1 - t0, h1 - h0);
    }
    size_t gcdels = 0;
    uint32_t gcvid = 0;
    for (size_t i = 0; i < a->nops; i++) {
        keel__ks_key gd;
        if (a->ops[i].kind == KEEL__STORE_DELETE &&
            dk(a->ops[i].key, a->ops[i].klen, &gd) && gd.table == KS_GCACT) {
            gcdels++;
            gcvid = gd.vid;
        }
    }
    if (a->kind == KEEL_WAL_CRANK && dels == 0 && gcdels == 1) {
        /* A3: a GC action's crank (kernel/gc.c G3), delivered to its vat
         * if that vat lives (what A6 asks of a crank's resolutions) */
        if (vat_before(a, gcvid) == VAT_ALIVE) {
            a->outcome = OUT_DELIVERED;
            a->out_vid = gcvid;
        }
        return KEEL_OK;
    }
    if (a->kind == KEEL_WAL_CRANK ? dels != 1 : dels != 0) {
        return violation(a,
                         "a %s record removed %" PRIu64 " run-queue "
                         "item(s) (A3: a crank removes one, nothing else "
                         "any)",
                         keel_wal_kind_name(a->kind), dels);
    }
    return KEEL_OK;
}

static int resolves_to_object(const kprom *p)
{
    const size_t n = sizeof(KEEL_CAPDATA_SLOT0) - 1;
    return p->state == KP_FULFILLED && p->res.nslots == 1 &&
           p->res.body_len == n &&
           memcmp(p->res.body, KEEL_CAPDATA_SLOT0, n) == 0 &&
           p->res.slots[0][0] == 'k' && p->res.slots[0][1] == 'o';
}

/* What the crank did with its item, by kernel/crank.c's routing, on the
 * state before it (routing reads nothing the crank wrote). */
static void route(audit *a)
{
    char target[KEEL__KS_REF_STR];
    keel__key key;
    keel__kref r;
    keel_bytes v;
    uint32_t owner;
    if (a->pop.kind == KITEM_NOTIFY) {
        a->outcome = vat_before(a, a->pop.vid) == VAT_ALIVE ? OUT_DELIVERED
                                                            : OUT_DROPPED;
        a->out_vid = a->pop.vid;
        return;
    }
    a->outcome = OUT_REJECTED;
    snprintf(target, sizeof(target), "%s", a->pop.target);
    for (int hop = 0; hop < MAX_FORWARD; hop++) {
        if (!kref_key(target, &r, &key)) {
            return;
        }
        if (r.kind == KR_O) {
            if (before(a, key.b, key.n, &v) == 1 && v.len == 4 &&
                (owner = keel__ks_rd32(v.ptr)) <= MAX_VID &&
                vat_before(a, owner) == VAT_ALIVE) {
                a->outcome = OUT_DELIVERED;
                a->out_vid = owner;
            }
            return;
        }
        kprom p;
        if (!prom_before(a, target, &p)) {
            return;
        }
        int next = resolves_to_object(&p);
        if (p.state == KP_UNRESOLVED) {
            a->outcome = OUT_QUEUED;
        } else if (next) {
            snprintf(target, sizeof(target), "%s", p.res.slots[0]);
        }
        keel__kprom_free(&p);
        if (!next) {
            return;
        }
    }
}

/* v.<vid>.state written, v.<vid>.cleanup written or deleted: keep the
 * vat's state and whether its cleanup is pending. */
static int note_state(audit *a, uint8_t kind, const uint8_t *k, size_t n,
                      const uint8_t *val, size_t vlen)
{
    keel__ks_key d;
    if (tbl(k, n) != KS_VAT || !dk(k, n, &d)) {
        return KEEL_OK;
    }
    uint32_t vid = d.vid;
    int state = d.field == KV_STATE;
    int cleanup = d.field == KV_CLEANUP;
    if ((state && kind == KEEL__STORE_PUT) || cleanup) {
        vinfo *vi = vat(a, vid);
        if (vi == NULL) {
            return KEEL_ENOMEM;
        }
        if (state) {
            vi->state = (uint8_t)state_of((keel_bytes){val, vlen});
        } else {
            vi->cleanup = kind == KEEL__STORE_PUT;
        }
    }
    return KEEL_OK;
}

/* Apply one op to the shadow, keeping the vats' bookkeeping. */
static int apply_op(audit *a, uint8_t kind, const uint8_t *k, size_t n,
                    uint64_t hash, const uint8_t *val, size_t vlen)
{
    uint32_t owner = owner_of(k, n);
    int rc = kind == KEEL__STORE_PUT
                 ? keel__shadow_put(&a->sh, k, n, hash, val, vlen)
                 : keel__shadow_del(&a->sh, k, n, hash);
    if (rc < 0) {
        return rc;
    }
    vinfo *vi = owner != 0 && rc == 1 ? vat(a, owner) : NULL;
    if (owner != 0 && rc == 1 && vi == NULL) {
        return KEEL_ENOMEM;
    }
    if (vi != NULL) {
        vi->refs += kind == KEEL__STORE_PUT ? 1 : (uint64_t)-1;
    }
    return note_state(a, kind, k, n, val, vlen);
}

/* A11: the allocation counters never decrease. */
static int check_counters(audit *a)
{
    static const uint8_t counters[] = {KM_NEXT_VAT, KM_NEXT_KO, KM_NEXT_KP};
    for (size_t i = 0; i < 3; i++) {
        keel__key key;
        char b[PRINT_BYTES];
        const txop *op = find_opk(a, keel__ks_meta(&key, counters[i]));
        uint64_t was = 0;
        if (op == NULL) {
            continue;
        }
        if (op->before != NULL && op->old.len == 8) {
            was = keel__ks_rd64(op->old.ptr);
        }
        if (op->kind != KEEL__STORE_PUT || op->vlen != 8 ||
            keel__ks_rd64(op->val) < was) {
            return violation(a, "%s went down from %" PRIu64 " (A11)",
                             knk(&key, b), was);
        }
    }
    return KEEL_OK;
}

/* After the record is applied (the ops' before pointers are stale): A10
 * for the vats it terminated, A11's k.unresolved. */
static int check_applied(audit *a)
{
    uint64_t n;
    for (size_t i = 0; i < a->nops; i++) {
        const txop *op = &a->ops[i];
        keel__ks_key d;
        if (tbl(op->key, op->klen) != KS_VAT || !dk(op->key, op->klen, &d) ||
            (d.field != KV_STATE && d.field != KV_CLEANUP)) {
            continue;
        }
        uint32_t vid = d.vid;
        if (vat(a, vid) == NULL) {
            return KEEL_ENOMEM;
        }
        int term = op->kind == KEEL__STORE_PUT && d.field == KV_STATE &&
                   a->vats[vid].state == VAT_DEAD;
        int done = op->kind == KEEL__STORE_DELETE && d.field == KV_CLEANUP;
        const vinfo *vi = &a->vats[vid];
        /* The termination leaves nothing unless its cleanup is pending;
         * a finished cleanup nothing. */
        if (((term && !vi->cleanup) || done) && vi->refs != 0) {
            return violation(a,
                             "vat %" PRIu32 " was %s but keeps %" PRIu64
                             " c-list, decider-index or vatstore key(s) (A10)",
                             vid, term ? "terminated" : "cleaned up", vi->refs);
        }
    }
    keel__key uk;
    if (a->unres_delta != 0 ||
        find_opk(a, keel__ks_meta(&uk, KM_UNRESOLVED)) != NULL) {
        if (!counter_after(a, KM_UNRESOLVED, &n)) {
            return VIOLATED;
        }
        if (n != a->unresolved) {
            return violation(a,
                             "k.unresolved is %" PRIu64 " but %" PRIu64
                             " promise(s) are unresolved (A11)",
                             n, a->unresolved);
        }
    }
    return KEEL_OK;
}

/* Check one record (AU2), then apply it to the shadow. */
static int audit_record(audit *a, const keel_wal_record *rec, keel_diag *diag)
{
    a->lsn = rec->lsn;
    a->kind = rec->kind;
    a->rec_crank = rec->crank;
    a->payload = rec->payload.ptr;
    a->plen = rec->payload.len;
    int rc = parse_ws(a, rec, diag);
    if (rc == KEEL_OK) {
        rc = check_keys(a);
    }
    if (rc == KEEL_OK) {
        rc = check_chain(a);
    }
    if (rc == KEEL_OK) {
        rc = check_queue(a, diag);
    }
    if (rc == KEEL_OK && a->popped) {
        route(a);
    }
    for (size_t i = 0; rc == KEEL_OK && i < a->nops; i++) {
        const txop *op = &a->ops[i];
        keel_bytes val = {op->val, op->vlen};
        uint8_t t = tbl(op->key, op->klen);
        if (t == KS_PROMISE) {
            rc = check_prom_op(a, op);
        } else if (op->kind == KEEL__STORE_PUT) {
            rc = check_key(a, op, op->key, op->klen, val);
        } else if (t == KS_OBJECT) {
            rc = check_object(a, op, op->key, op->klen, val);
        } else if (t == KS_CLIST && op->before != NULL &&
                   !dead_vat_key(a, op->key, op->klen)) {
            keel_bytes old = {op->old.ptr, op->old.len};
            rc = check_clist(a, op->key, op->klen, old, 0);
        } else if (t == KS_DECIDER) {
            rc = check_decider_key(a, op->key, op->klen, 0);
        }
    }
    for (size_t i = 0; rc == KEEL_OK && i < a->nitems; i++) {
        rc = check_item(a, a->items[i].seq, &a->items[i].it);
    }
    if (rc == KEEL_OK) {
        rc = check_counters(a);
    }
    if (rc == KEEL_OK) {
        rc = check_refcounts(a);
    }
    if (rc == KEEL_OK) {
        rc = check_cleanup(a);
    }
    if (rc < 0) { /* the check's own diag (AU3: a bad payload) */
        clear_txn(a);
        return rc;
    }
    /* Values replaced in place first, through the entries parse_ws()
     * found (no probe); then deletes and new keys, which move entries. */
    for (size_t i = 0; rc == KEEL_OK && i < a->nops; i++) {
        const txop *op = &a->ops[i];
        if (op->kind == KEEL__STORE_PUT && op->before != NULL) {
            rc = keel__shadow_set(op->before, op->val, op->vlen);
            if (rc == KEEL_OK) {
                note_state(a, op->kind, op->key, op->klen, op->val, op->vlen);
            }
        }
    }
    for (size_t i = 0; rc == KEEL_OK && i < a->nops; i++) {
        const txop *op = &a->ops[i];
        if (op->kind == KEEL__STORE_DELETE || op->before == NULL) {
            rc = apply_op(a, op->kind, op->key, op->klen, op->hash, op->val,
                          op->vlen);
        }
    }
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
    }
    if (rc == KEEL_OK) {
        a->unresolved = (uint64_t)((int64_t)a->unresolved + a->unres_delta);
        a->crank = a->rec_crank;
        a->hash = a->new_hash;
        rc = check_applied(a);
    }
    clear_txn(a);
    return rc;
}

/* ---- the whole keyspace ------------------------------------------------- */

typedef struct rcount {
    keel__kref r;
    int64_t reach, recog;
    int stored; /* an rc.<kref> entry: its counts, negated */
} rcount;

static int rcount_cmp(const void *x, const void *y)
{
    const rcount *p = x, *q = y;
    if (p->r.kind != q->r.kind) {
        return p->r.kind < q->r.kind ? -1 : 1;
    }
    return p->r.n < q->r.n ? -1 : p->r.n > q->r.n;
}

/* A13 over the whole keyspace: every rc.<kref> equals the recount of its
 * holders (KS4), and a kref with a record but no holder is one whose GC
 * action is still queued (an object) or none at all (a settled promise
 * nothing holds is a violation). */
static int recount_all(audit *a)
{
    rcount *v = NULL;
    size_t n = 0, cap = 0;
    int rc = KEEL_OK;
    void *l = keel__gc_list_new();
    if (l == NULL) {
        return VIOLATED;
    }
    for (size_t i = 0; rc == KEEL_OK && i <= a->sh.mask; i++) {
        const keel__shadow_entry *e = &a->sh.slots[i];
        if (e->kv == NULL) {
            continue;
        }
        const uint8_t *k = keel__shadow_key(e).ptr;
        keel_bytes val = keel__shadow_value(e);
        keel__ks_key d;
        if (!dk(k, e->klen, &d)) {
            continue;
        }
        keel__gc_list_clear(l);
        int stored = d.table == KS_REFCOUNT;
        if (stored) {
            if (val.len != 8) {
                char b[PRINT_BYTES];
                rc = violation(a, "%s is not two counts (A13)",
                               kn(k, e->klen, b));
                break;
            }
            keel__gc_refs(&(keel__ks_key){.table = KS_PIN, .kref = d.kref},
                          NULL, 0, 0, l);
        } else if (keel__gc_refs(&d, val.ptr, val.len, 1, l) < 0) {
            continue; /* check_key and the table checks name it */
        }
        keel__kref r;
        int32_t dr, dg;
        for (size_t j = 0; keel__gc_list_get(l, j, &r, &dr, &dg); j++) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 1024;
                rcount *nv = realloc(v, nc * sizeof(*nv));
                if (nv == NULL) {
                    rc = VIOLATED;
                    break;
                }
                v = nv;
                cap = nc;
            }
            v[n++] = stored ? (rcount){r, -(int64_t)keel__ks_rd32(val.ptr),
                                       -(int64_t)keel__ks_rd32(
                                           (const uint8_t *)val.ptr + 4),
                                       1}
                            : (rcount){r, dr, dg, 0};
        }
    }
    keel__gc_list_free(l);
    if (rc == KEEL_OK && n > 0) {
        qsort(v, n, sizeof(*v), rcount_cmp);
    }
    for (size_t i = 0; rc == KEEL_OK && i < n;) {
        size_t j = i;
        int64_t dr = 0, dg = 0;
        while (j < n && rcount_cmp(&v[i], &v[j]) == 0) {
            dr += v[j].reach;
            dg += v[j].recog;
            j++;
        }
        if (dr != 0 || dg != 0) {
            char s[KEEL__KS_REF_STR];
            keel__ks_kref_str(v[i].r, s);
            rc = violation(a,
                           "rc.%s differs from the recount of its holders by "
                           "%" PRId64 " reachable, %" PRId64
                           " recognizable (A13)",
                           s, dr, dg);
        }
        i = j;
    }
    free(v);
    return rc;
}

/* Every check over every key of the shadow (after the base, at the end). */
static int check_all(audit *a)
{
    uint64_t head = 0, tail = 0, items = 0, unresolved = 0, n = 0;
    int rc = KEEL_OK;
    a->nops = 0;
    if (!counter_after(a, KM_RQ_HEAD, &head) ||
        !counter_after(a, KM_RQ_TAIL, &tail)) {
        return VIOLATED;
    }
    for (size_t i = 0; rc == KEEL_OK && i <= a->sh.mask; i++) {
        const keel__shadow_entry *e = &a->sh.slots[i];
        if (e->kv == NULL) {
            continue;
        }
        const uint8_t *k = keel__shadow_key(e).ptr;
        keel_bytes val = keel__shadow_value(e);
        keel__ks_key d;
        if (!dk(k, e->klen, &d)) { /* AU4 */
            char b[PRINT_BYTES];
            rc = violation(a, "key %s is not in keel's keyspace",
                           kn(k, e->klen, b));
            break;
        }
        if (d.table == KS_PROMISE) {
            char kp[KEEL__KS_REF_STR];
            kprom p;
            keel__ks_kref_str((keel__kref){KR_P, d.n}, kp);
            if (keel__kprom_decode(val.ptr, val.len, &p) < 0) {
                rc = violation(a, "%s: promise record does not decode", kp);
                break;
            }
            unresolved += p.state == KP_UNRESOLVED;
            rc = check_prom_shape(a, kp, &p);
            keel__kprom_free(&p);
        } else if (d.table == KS_RUNQ) {
            kitem it;
            uint64_t seq = d.n;
            if (seq < head || seq >= tail) {
                char b[PRINT_BYTES];
                rc = violation(a,
                               "%s lies outside the run queue [%" PRIu64
                               ", %" PRIu64 ") (A3)",
                               kn(k, e->klen, b), head, tail);
                break;
            }
            if (keel__kitem_decode(val.ptr, val.len, &it) < 0) {
                rc = violation(a, "rq.%" PRIu64 " does not decode", seq);
                break;
            }
            rc = check_item(a, seq, &it);
            keel__kitem_free(&it);
            items++;
        } else {
            rc = check_key(a, NULL, k, e->klen, val);
        }
    }
    if (rc == KEEL_OK && items != tail - head) {
        rc = violation(a,
                       "run queue [%" PRIu64 ", %" PRIu64 ") holds %" PRIu64
                       " item(s) (A3)",
                       head, tail, items);
    }
    if (rc == KEEL_OK && !counter_after(a, KM_UNRESOLVED, &n)) {
        rc = VIOLATED;
    }
    if (rc == KEEL_OK && n != unresolved) {
        rc = violation(a,
                       "k.unresolved is %" PRIu64 " but %" PRIu64
                       " promise(s) are unresolved (A11)",
                       n, unresolved);
    }
    a->unresolved = unresolved;
    if (rc == KEEL_OK) {
        rc = recount_all(a);
    }
    return rc;
}

/*
 * The store's entries in key order: a cursor over its checkpoint when
 * nothing is applied beyond it (one LMDB walk), else next_key and get
 * through the overlay the replay filled.
 */
typedef struct walker {
    keel__store *s;
    keel__store_view *view;
    char key[KEEL__STORE_MAX_KEY_BYTES];
    size_t klen;
    int started;
} walker;

static int walk_open(walker *w, keel__store *s, keel_diag *diag)
{
    memset(w, 0, sizeof(*w));
    w->s = s;
    if (keel__store_applied_lsn(s) == keel__store_checkpoint_lsn(s)) {
        return keel__store_view_of(s, &w->view, diag);
    }
    return KEEL_OK;
}

/* @return 1 (an entry, borrowed until the next call), 0 (no more), < 0. */
static int walk_next(walker *w, keel_bytes *k, keel_bytes *v, keel_diag *diag)
{
    if (w->view != NULL) {
        return keel__store_view_next(w->view, k, v, diag);
    }
    int rc = keel__store_next_key(w->s, w->key, w->started ? w->klen : 0, "", 0,
                                  k, diag);
    if (rc == 1) {
        w->started = 1;
        w->klen = k->len;
        memcpy(w->key, k->ptr, k->len);
        k->ptr = w->key;
        rc = keel__store_get(w->s, w->key, w->klen, v, diag);
        if (rc == 0) {
            rc = keel__diag(diag, KEEL_ECORRUPT, "a key listed but absent");
        }
    }
    return rc;
}

/*
 * A12, the common case: walk the store and look each key up in the
 * shadow. Equal when every key is found with its value and the counts
 * agree. @return 1 equal, 0 they differ (compare_store() then finds the
 * first difference in key order), or an error.
 */
static int store_equal(audit *a, keel__store *s, keel_diag *diag)
{
    walker w;
    keel_bytes sk, sv;
    keel_diag d = {0};
    uint64_t n = 0;
    int eq = 1;
    int have = walk_open(&w, s, &d);
    while (have >= 0 && eq && (have = walk_next(&w, &sk, &sv, &d)) == 1) {
        const keel__shadow_entry *e = keel__shadow_find(
            &a->sh, sk.ptr, sk.len, keel__shadow_hash(sk.ptr, sk.len));
        keel_bytes ev = e != NULL ? keel__shadow_value(e) : (keel_bytes){0};
        eq = e != NULL && sv.len == ev.len &&
             memcmp(sv.ptr, ev.ptr, sv.len) == 0;
        n++;
    }
    keel__store_view_close(w.view);
    if (have < 0) {
        return keel__diag(diag, have, "store/%s", d.msg);
    }
    if (eq && n == a->sh.count) {
        a->rep->keys = n;
        return 1;
    }
    return 0;
}

/* A12: the shadow against the store, in key order: the first
 * difference. */
static int compare_store(audit *a, keel__store *s, keel_diag *diag)
{
    const keel__shadow_entry **v = NULL;
    char b1[PRINT_BYTES], b2[PRINT_BYTES], b3[PRINT_BYTES];
    size_t i = 0;
    walker w;
    keel_bytes sk = {NULL, 0}, sv = {NULL, 0};
    keel_diag d = {0};
    int rc = keel__shadow_sorted(&a->sh, &v);
    if (rc < 0) {
        return keel__diag(diag, rc, "out of memory");
    }
    a->rep->keys = 0;
    int have = walk_open(&w, s, &d);
    if (have == KEEL_OK) {
        have = walk_next(&w, &sk, &sv, &d);
    }
    while (rc == KEEL_OK && have >= 0 && (have == 1 || i < a->sh.count)) {
        keel_bytes vk = {NULL, 0}, vv = {NULL, 0};
        if (i < a->sh.count) {
            vk = keel__shadow_key(v[i]);
            vv = keel__shadow_value(v[i]);
        }
        int c = have == 0 ? -1
                : i == a->sh.count
                    ? 1
                    : keel__keycmp(vk.ptr, vk.len, sk.ptr, sk.len);
        if (c < 0) {
            rc = violation(a, "store/ lacks \"%s\", which the log holds (A12)",
                           pr(vk.ptr, vk.len, b1));
        } else if (c > 0) {
            rc = violation(a,
                           "store/ holds \"%s\", which the log does not "
                           "(A12)",
                           pr(sk.ptr, sk.len, b1));
        } else if (sv.len != vv.len || memcmp(sv.ptr, vv.ptr, sv.len) != 0) {
            rc = violation(a,
                           "store/ value of \"%s\" differs from the log's: "
                           "\"%s\" in the store, \"%s\" from the log (A12)",
                           pr(sk.ptr, sk.len, b1), pr(sv.ptr, sv.len, b2),
                           pr(vv.ptr, vv.len, b3));
        } else {
            a->rep->keys++;
            i++;
            have = walk_next(&w, &sk, &sv, &d);
        }
    }
    keel__store_view_close(w.view);
    if (rc == KEEL_OK && have < 0) {
        rc = keel__diag(diag, have, "store/%s", d.msg);
    }
    free(v);
    return rc;
}

/* ---- base, log, store -------------------------------------------------------
 */

static int load_base(audit *a, const char *path, uint64_t kid,
                     struct keel_io *io, uint64_t *lsn, keel_diag *diag)
{
    keel_snapshot_options so;
    keel_snapshot_reader *r = NULL;
    keel_snapshot_info info;
    keel_snapshot_entry e;
    keel_snapshot_options_init(&so);
    so.io = io;
    int rc = keel_snapshot_reader_open(path, &so, &r, diag);
    if (rc < 0) {
        goto out;
    }
    keel_snapshot_reader_info(r, &info);
    if (info.meta.kernel_id != kid) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: a snapshot of kernel 0x%016" PRIx64
                        ", but the state is kernel 0x%016" PRIx64,
                        path, info.meta.kernel_id, kid);
        goto out;
    }
    while ((rc = keel_snapshot_reader_next(r, &e, diag)) == 1) {
        rc = apply_op(a, KEEL__STORE_PUT, e.key.ptr, e.key.len,
                      keel__shadow_hash(e.key.ptr, e.key.len), e.value.ptr,
                      e.value.len);
        if (rc < 0) {
            keel__diag(diag, rc, "out of memory");
            goto out;
        }
    }
    if (rc == 0) {
        *lsn = info.meta.lsn;
        a->crank = info.meta.crank;
        a->hash = info.meta.activity_hash;
    }
out:
    keel_snapshot_reader_close(r);
    return rc;
}

typedef struct run {
    const char *dir;
    const keel_audit_options *o;
    keel_audit_report *rep;
    int lock_fd;
    keel__store *store;
    uint64_t base;
    int violated; /* a record's check found a violation (AU2) */
    audit a;
} run;

/* keel__store_replay's record callback: check a record after base. */
static int replay_record(void *arg, const keel_wal_record *rec, keel_diag *diag)
{
    run *r = arg;
    if (rec->lsn <= r->base) {
        return KEEL__REPLAY_APPLY; /* only the store lacks it */
    }
    if (r->rep->first_lsn == 0) {
        r->rep->first_lsn = rec->lsn;
    }
    int rc = audit_record(&r->a, rec, diag);
    if (rc == VIOLATED) { /* AU2: the first one stops the audit */
        r->violated = 1;
        return KEEL__REPLAY_STOP;
    }
    if (rc < 0) {
        return rc;
    }
    r->rep->last_lsn = rec->lsn;
    r->rep->transactions++;
    r->rep->cranks += rec->kind == KEEL_WAL_CRANK;
    r->rep->bytes += rec->payload.len;
    return KEEL__REPLAY_APPLY;
}

static int replay_gap(void *arg, const keel_wal_record *rec, uint64_t expect,
                      keel_diag *diag)
{
    const run *r = arg;
    uint64_t applied = keel__store_applied_lsn(r->store), base = r->base;
    return keel__diag(
        diag, KEEL_EINVAL,
        "wal/%s: offset %" PRIu64 ": the log %s at LSN "
        "%" PRIu64 ", but %s needs LSN %" PRIu64 "%s",
        rec->segment, rec->offset, expect == 1 ? "starts" : "goes on", rec->lsn,
        applied < base ? "the store's checkpoint"
        : base == 0    ? "an audit from genesis"
                       : "the base snapshot",
        expect, base == 0 ? " (start from a snapshot: --base)" : "");
}

/* Read the log from base (or the store's checkpoint, if earlier): check
 * the records after base, apply to the store those after its LSN (the
 * store's one replay loop, keel__store_replay). */
static int replay(run *r, uint64_t base, keel_diag *diag)
{
    char wal[4096];
    keel__store_replay_options o;
    keel__store_replay_report rr;
    uint64_t applied = keel__store_applied_lsn(r->store);
    snprintf(wal, sizeof(wal), "%s/wal", r->dir);
    keel__store_replay_options_init(&o);
    o.io = r->o->io;
    o.from_lsn = (applied < base ? applied : base) + 1;
    o.record = replay_record;
    o.gap = replay_gap;
    o.arg = r;
    r->base = base;
    int rc = keel__store_replay(r->store, wal, &o, &rr, diag);
    if (rc == KEEL_OK && r->violated) {
        rc = VIOLATED;
    }
    if (rc != KEEL_OK) {
        goto out;
    }
    if (rr.tail.last_lsn < base || rr.tail.last_lsn < applied) {
        rc = keel__diag(
            diag, applied > rr.tail.last_lsn ? KEEL_ECORRUPT : KEEL_EINVAL,
            "wal/: the log ends at LSN %" PRIu64
            ", before the %s's LSN %" PRIu64,
            rr.tail.last_lsn, applied > rr.tail.last_lsn ? "store" : "base",
            applied > rr.tail.last_lsn ? applied : base);
    }
out:
    return rc;
}

int keel_audit(const char *state_dir, const keel_audit_options *o,
               keel_audit_report *rep, keel_diag *diag)
{
    keel_audit_options defaults;
    uint64_t t0 = keel__now_ns();
    uint64_t base = 0;
    char path[4096];
    run r;
    memset(&r, 0, sizeof(r));
    memset(rep, 0, sizeof(*rep));
    if (o == NULL) {
        keel_audit_options_init(&defaults);
        o = &defaults;
    }
    r.dir = state_dir;
    r.o = o;
    r.rep = rep;
    r.lock_fd = -1;
    r.a.rep = rep;
    int rc = keel__shadow_init(&r.a.sh);
    r.a.xx = XXH3_createState();
    if (rc < 0 || r.a.xx == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    /* AU1: the lock first, so no kernel runs on the store we open */
    rc = keel__state_lock_shared(state_dir, &r.lock_fd, diag);
    if (rc < 0) {
        goto out;
    }
    keel__store_options so;
    keel__store_options_init(&so);
    so.create = 0;
    so.read_only = 1; /* AU1 */
    snprintf(path, sizeof(path), "%s/store", state_dir);
    keel_diag sd = {0};
    rc = keel__store_open(path, &so, 0, &r.store, &sd);
    if (rc < 0) {
        keel__diag(diag, rc, "%s/store: %s", state_dir, sd.msg);
        goto out;
    }
    if (o->base_snapshot != NULL) {
        rc = load_base(&r.a, o->base_snapshot, keel__store_kernel_id(r.store),
                       o->io, &base, diag);
        if (rc < 0) {
            goto out;
        }
        r.a.lsn = base;
        rc = check_all(&r.a);
        if (rc != KEEL_OK) {
            goto out;
        }
    }
    rep->base_lsn = base;
    rc = replay(&r, base, diag);
    if (rc == KEEL_OK) {
        r.a.kind = 0;
        rc = check_all(&r.a);
    }
    if (rc == KEEL_OK) {
        rc = store_equal(&r.a, r.store, diag);
        rc = rc == 0   ? compare_store(&r.a, r.store, diag)
             : rc == 1 ? KEEL_OK
                       : rc;
    }
out:
    rep->final_hash = r.a.hash;
    rep->seconds = (double)(keel__now_ns() - t0) / 1e9;
    clear_txn(&r.a);
    keel__store_close(r.store); /* AU1: drops what replay applied */
    if (r.lock_fd >= 0) {
        close(r.lock_fd);
    }
    keel__shadow_free(&r.a.sh);
    free(r.a.ops);
    free(r.a.items);
    free(r.a.vats);
    XXH3_freeState(r.a.xx);
    return rc == VIOLATED ? KEEL_OK : rc;
}
