/*
 * kernel/gc.c — garbage collection: the reference counts of krefs
 * (store/keyspace.h KS4, rc.<kref>), the GC-action queue (gc.<vid>.<t>.
 * <kref>), what becomes of a kref whose counts reach zero, and the GC
 * syscalls and deliveries (keel/vat.h). SwingSet's design is the model;
 * docs/kernel.md "Garbage collection" says where keel differs.
 *
 * Invariants:
 *   G1  Counts move with their cause: every write of a holder key (a
 *       c-list kref entry, a run-queue item, a promise record, a pin)
 *       goes through keel__gc_track (kernel.c keel__k_put/del), which
 *       compares the refs of the old and new value; the changes are summed
 *       per kref over the transaction and written to rc.<kref> when it
 *       ends (keel__gc_end, before the commit encodes it): in the same
 *       transaction, one write per kref, none for changes that cancel. So
 *       rc.<kref> always equals the recount of KS4 over the whole keyspace
 *       (the audit checks it).
 *   G2  A kref whose count fell to zero in a transaction is looked at
 *       once more when the transaction ends (keel__gc_end, before commit),
 *       so a transient zero (a queue item popped before its message is
 *       delivered) frees nothing: a settled promise with no holder is
 *       deleted; an object nothing reaches gets dropExports queued to its
 *       exporter, one nothing recognizes retireExports; an object whose
 *       exporter is gone (terminated, abandoned, retired) is deleted once
 *       nothing recognizes it.
 *   G3  A GC action is checked again when delivered (the object may have
 *       been re-exported meanwhile) and each is its own crank, run before
 *       any run-queue item.
 *   G4  An illegal GC syscall (a vref not held, a retire of what is still
 *       reachable) dooms only the vat that made it (K31).
 *   G5  Summing a change into a list (gl_add) costs O(1) however many krefs
 *       a transaction touches: a hash index over the list's entries, whose
 *       slots are stamped with the list's generation, so emptying a list
 *       (gl_reset) is O(1) too and a big transaction (a cleanup batch of
 *       16,384 keys, a fan-out of thousands of sends) stays linear.
 */
#include "kernel/kernel_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/diag.h"

typedef struct gref {
    keel__kref r;
    int32_t reach, recog;
} gref;

/* G5: an index slot: entry i of the list, valid while gen is the list's. */
typedef struct gslot {
    uint32_t gen, i;
} gslot;

typedef struct glist {
    gref *v;
    size_t n, cap;
    gslot *ix; /* icap slots, a power of two >= 2 * cap */
    size_t icap;
    uint32_t gen; /* >= 1 once the index exists */
    int oom;
} glist;

static size_t gl_slot(keel__kref r, size_t icap)
{
    uint64_t h = (r.n ^ ((uint64_t)r.kind << 62)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (icap - 1);
}

/* G5: empty the list; its index is forgotten by a new generation. */
static void gl_reset(glist *l)
{
    l->n = 0;
    if (++l->gen == 0) { /* wrapped: no slot may look current */
        memset(l->ix, 0, l->icap * sizeof(*l->ix));
        l->gen = 1;
    }
}

static void gl_index(glist *l, size_t i)
{
    size_t s = gl_slot(l->v[i].r, l->icap);
    while (l->ix[s].gen == l->gen) {
        s = (s + 1) & (l->icap - 1);
    }
    l->ix[s] = (gslot){l->gen, (uint32_t)i};
}

/* Room for one more entry. @return 0, -1 (out of memory). */
static int gl_room(glist *l)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        gref *nv = realloc(l->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        l->v = nv;
        l->cap = nc;
    }
    return 0;
}

/* Room for one more entry, the index at most half full. @return 0, -1. */
static int gl_grow(glist *l)
{
    if (gl_room(l) < 0) {
        return -1;
    }
    if (l->icap < 2 * l->cap) {
        size_t ni = l->icap ? l->icap : 16;
        while (ni < 2 * l->cap) {
            ni *= 2;
        }
        gslot *nx = calloc(ni, sizeof(*nx));
        if (nx == NULL) {
            return -1;
        }
        free(l->ix);
        l->ix = nx;
        l->icap = ni;
        l->gen = 1;
        for (size_t i = 0; i < l->n; i++) {
            gl_index(l, i);
        }
    }
    return 0;
}

static void gl_add(glist *l, keel__kref r, int32_t reach, int32_t recog)
{
    if (l->icap != 0) {
        for (size_t s = gl_slot(r, l->icap); l->ix[s].gen == l->gen;
             s = (s + 1) & (l->icap - 1)) {
            gref *e = &l->v[l->ix[s].i];
            if (e->r.kind == r.kind && e->r.n == r.n) {
                e->reach += reach;
                e->recog += recog;
                return;
            }
        }
    }
    if (gl_grow(l) < 0) {
        l->oom = 1;
        return;
    }
    l->v[l->n] = (gref){r, reach, recog};
    gl_index(l, l->n++);
}

/* A kref string of n bytes (not NUL-terminated; a value's field). */
static void gl_ref(glist *l, const uint8_t *p, size_t n, int sign)
{
    char s[KEEL__KS_REF_STR];
    keel__kref r;
    if (n > 0 && n < sizeof(s)) {
        memcpy(s, p, n);
        s[n] = '\0';
        if (keel__ks_kref_parse(s, &r)) {
            gl_add(l, r, sign, sign);
        }
    }
}

/* The refs of one encoded message (store/codec.c: str method, bytes body,
 * u32 nslots, str slots, str result), read in place: no allocation on the
 * crank path. */
static void scan_msg(krd *r, glist *l, int sign)
{
    size_t n;
    keel__kr_bytes(r, &n); /* method */
    keel__kr_bytes(r, &n); /* body */
    uint32_t ns = keel__kr_u32(r);
    for (uint32_t i = 0; !r->bad && i < ns; i++) {
        const uint8_t *p = keel__kr_bytes(r, &n);
        if (!r->bad) {
            gl_ref(l, p, n, sign);
        }
    }
    const uint8_t *p = keel__kr_bytes(r, &n);
    if (!r->bad) {
        gl_ref(l, p, n, sign);
    }
}

/* The refs a holder key's value holds (KS4), with sign. @return 0, or -1
 * if the value does not decode. */
int keel__gc_refs(const keel__ks_key *d, const void *val, size_t len, int sign,
                  void *list)
{
    glist *l = list;
    krd r = {.p = val, .len = len};
    size_t n;
    const uint8_t *p;
    switch (d->table) {
    case KS_CLIST: {
        keel__vref vr;
        int reach;
        if (d->field != KC_K) {
            return 0;
        }
        if (!keel__ks_clist_kval(val, len, &vr, &reach)) {
            return -1;
        }
        if (vr.kind != KR_OPLUS) {
            gl_add(l, d->kref, reach ? sign : 0, sign);
        }
        return 0;
    }
    case KS_RUNQ: {
        uint8_t kind = keel__kr_u8(&r);
        if (kind == KITEM_SEND) {
            p = keel__kr_bytes(&r, &n);
            if (!r.bad) {
                gl_ref(l, p, n, sign);
            }
            scan_msg(&r, l, sign);
        } else if (kind == KITEM_NOTIFY) {
            keel__kr_u32(&r);
            p = keel__kr_bytes(&r, &n);
            if (!r.bad) {
                gl_ref(l, p, n, sign);
            }
        } else {
            r.bad = 1;
        }
        return r.bad || r.off != r.len ? -1 : 0;
    }
    case KS_PROMISE: {
        uint8_t state = keel__kr_u8(&r);
        keel__kr_u32(&r); /* decider */
        uint32_t ns = keel__kr_u32(&r);
        if (!r.bad && (ns > (r.len - r.off) / 4 || state > KP_REJECTED)) {
            r.bad = 1;
        }
        for (uint32_t i = 0; !r.bad && i < ns; i++) {
            keel__kr_u32(&r);
        }
        uint32_t nq = keel__kr_u32(&r);
        for (uint32_t i = 0; !r.bad && i < nq; i++) {
            scan_msg(&r, l, sign);
        }
        scan_msg(&r, l, sign); /* the resolution */
        return r.bad || r.off != r.len ? -1 : 0;
    }
    case KS_PIN:
        gl_add(l, d->kref, sign, sign);
        return 0;
    default:
        return 0;
    }
}

void *keel__gc_list_new(void)
{
    return calloc(1, sizeof(glist));
}

void keel__gc_list_free(void *list)
{
    glist *l = list;
    if (l != NULL) {
        free(l->v);
        free(l->ix);
        free(l);
    }
}

size_t keel__gc_list_get(const void *list, size_t i, keel__kref *r,
                         int32_t *reach, int32_t *recog)
{
    const glist *l = list;
    if (i >= l->n) {
        return 0;
    }
    *r = l->v[i].r;
    *reach = l->v[i].reach;
    *recog = l->v[i].recog;
    return 1;
}

int keel__gc_list_oom(const void *list)
{
    return ((const glist *)list)->oom;
}

void keel__gc_list_clear(void *list)
{
    gl_reset(list);
}

static int is_holder(const keel__key *key)
{
    uint8_t t = key->b[0];
    return (t == KS_CLIST && key->n == 15 && key->b[5] == KC_K) ||
           t == KS_RUNQ || t == KS_PROMISE || t == KS_PIN;
}

/* The counts of r as the store holds them (0, 0 when absent). */
int keel__gc_stored(keel_kernel *k, keel__kref r, uint32_t *reach,
                    uint32_t *recog)
{
    keel__key key;
    keel_bytes b;
    int rc = keel__k_get(k, keel__ks_kref_key(&key, KS_REFCOUNT, r), &b);
    *reach = *recog = 0;
    if (rc == 1) {
        if (b.len != 8) {
            return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
        }
        *reach = keel__ks_rd32(b.ptr);
        *recog = keel__ks_rd32((const uint8_t *)b.ptr + 4);
    }
    return rc < 0 ? rc : KEEL_OK;
}

/* The counts of r now: stored, plus the open transaction's changes not
 * yet applied (keel__gc_end). */
static int rc_get(keel_kernel *k, keel__kref r, uint32_t *reach,
                  uint32_t *recog)
{
    int rc = keel__gc_stored(k, r, reach, recog);
    const glist *l = k->gc_delta;
    for (size_t i = 0; rc == KEEL_OK && i < l->n; i++) {
        if (l->v[i].r.kind == r.kind && l->v[i].r.n == r.n) {
            *reach = (uint32_t)((int64_t)*reach + l->v[i].reach);
            *recog = (uint32_t)((int64_t)*recog + l->v[i].recog);
        }
    }
    return rc;
}

/* Appended, never merged: a kref looked at already may fall to zero
 * again later in the same transaction and must be looked at again. */
static void maybe_free(keel_kernel *k, keel__kref r)
{
    glist *l = k->gc_maybe; /* never indexed: a list, not a sum */
    if (gl_room(l) < 0) {
        l->oom = 1;
        return;
    }
    l->v[l->n++] = (gref){r, 0, 0};
}

/* Apply one kref's net change of the transaction to rc.<kref> (G1). */
static int rc_apply(keel_kernel *k, keel__kref r, int32_t dreach,
                    int32_t drecog)
{
    uint32_t reach, recog;
    keel__key key;
    int rc = keel__gc_stored(k, r, &reach, &recog);
    if (rc < 0) {
        return rc;
    }
    int64_t nr = (int64_t)reach + dreach, ng = (int64_t)recog + drecog;
    keel__ks_kref_key(&key, KS_REFCOUNT, r);
    if (nr < 0 || ng < 0 || nr > ng) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key); /* G1 broken */
    }
    if ((dreach < 0 && nr == 0) || (drecog < 0 && ng == 0)) {
        maybe_free(k, r); /* G2 */
    }
    if (ng == 0) {
        return reach != 0 || recog != 0 ? keel__k_del(k, &key) : KEEL_OK;
    }
    uint8_t v[8];
    keel__ks_be32(v, (uint32_t)nr);
    keel__ks_be32(v + 4, (uint32_t)ng);
    return keel__k_put(k, &key, v, sizeof(v));
}

int keel__gc_track(keel_kernel *k, const keel__key *key, const void *val,
                   size_t len, int del)
{
    const keel_bytes *known = k->gc_old;
    int fresh = k->gc_new;
    k->gc_new = 0; /* both hints are for this one write only */
    k->gc_old = NULL;
    if (!is_holder(key) || k->gc_off) {
        return KEEL_OK;
    }
    keel__ks_key d;
    keel_bytes old;
    if (!keel__ks_decode(key->b, key->n, &d)) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, key);
    }
    glist *l = k->gc_work;
    gl_reset(l);
    /* the old value: none for a new run-queue item or a key the caller
     * knows is new (gc_new), the caller's for a value it just read
     * (gc_old), else read */
    int rc = 0;
    if (known != NULL) {
        old = *known;
        rc = 1;
    } else if (!(d.table == KS_RUNQ && !del) && !fresh) {
        rc = keel__k_get(k, key, &old);
    }
    if (rc < 0) {
        return rc;
    }
    if (rc == 1 && !del && old.len == len &&
        (len == 0 || memcmp(old.ptr, val, len) == 0)) {
        return KEEL_OK; /* the same value: the same holders */
    }
    if (rc == 1 && keel__gc_refs(&d, old.ptr, old.len, -1, l) < 0) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, key);
    }
    if (!del && keel__gc_refs(&d, val, len, 1, l) < 0) {
        return keel__k_fail_key(k, KEEL_EINVAL, key);
    }
    if (l->oom) {
        return KEEL_ENOMEM;
    }
    /* into the transaction's changes, applied when it ends */
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].reach != 0 || l->v[i].recog != 0) {
            gl_add(k->gc_delta, l->v[i].r, l->v[i].reach, l->v[i].recog);
        }
    }
    return ((glist *)k->gc_delta)->oom ? KEEL_ENOMEM : KEEL_OK;
}

/* c.<vid>.k.<r>: its vref and reachable flag. @return 1, 0 absent, < 0. */
static int clist_get(keel_kernel *k, uint32_t vid, keel__kref r, keel__vref *vr,
                     int *reach)
{
    keel__key key;
    keel_bytes b;
    int rc = keel__k_get(k, keel__ks_clist_k(&key, vid, r), &b);
    if (rc == 1 && !keel__ks_clist_kval(b.ptr, b.len, vr, reach)) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    return rc;
}

int keel__gc_set_reach(keel_kernel *k, uint32_t vid, keel__kref r,
                       keel__vref vr, int reach)
{
    keel__key key;
    uint8_t v[KEEL__KS_REF_BYTES + 1];
    keel__ks_ref(v, vr.kind, vr.n);
    v[KEEL__KS_REF_BYTES] = 0x00;
    return keel__k_put(k, keel__ks_clist_k(&key, vid, r), v,
                       reach ? KEEL__KS_REF_BYTES : KEEL__KS_REF_BYTES + 1);
}

static int queue_action(keel_kernel *k, uint32_t vid, uint8_t type,
                        keel__kref r)
{
    keel__key key;
    k->gc_pending = 1;
    return keel__k_put(k, keel__ks_gcact(&key, vid, type, r), "", 0);
}

/* Delete a c-list pair (no retired marker: only objects come here). */
static int pair_del(keel_kernel *k, uint32_t vid, keel__kref r, keel__vref vr)
{
    keel__key key;
    int rc = keel__k_del(k, keel__ks_clist_k(&key, vid, r));
    if (rc == KEEL_OK) {
        rc = keel__k_del(k, keel__ks_clist_v(&key, vid, KC_V, vr));
    }
    return rc;
}

int keel__gc_retire_importers(keel_kernel *k, uint32_t except, keel__kref r)
{
    int rc = KEEL_OK;
    for (size_t i = 0; rc >= 0 && i < k->nvats; i++) {
        kvat *w = k->vats[i];
        keel__vref vr;
        int reach;
        if (w == NULL || !w->alive || w->id == except) {
            continue;
        }
        rc = clist_get(k, w->id, r, &vr, &reach);
        if (rc == 1) {
            rc = queue_action(k, w->id, KG_RETIRE_IMPORT, r);
        }
    }
    maybe_free(k, r);
    return rc < 0 ? rc : KEEL_OK;
}

/* G2 for one kref whose count fell to zero in this transaction. */
static int settle_one(keel_kernel *k, keel__kref r)
{
    uint32_t reach, recog;
    keel__key key;
    int rc = rc_get(k, r, &reach, &recog);
    if (rc < 0 || (reach != 0 && recog != 0)) {
        return rc;
    }
    if (r.kind == KR_P) {
        keel_bytes b;
        if (recog != 0) {
            return KEEL_OK;
        }
        rc = keel__k_get(k, keel__ks_promise(&key, r.n), &b);
        if (rc != 1) {
            return rc;
        }
        if (b.len < 1) { /* its first byte is its state (store/codec.c) */
            return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
        }
        int settled = ((const uint8_t *)b.ptr)[0] != KP_UNRESOLVED;
        return settled ? keel__k_del(k, &key) : KEEL_OK;
    }
    uint32_t owner = 0;
    rc = keel__k_get_u32(k, keel__ks_object(&key, r.n), &owner);
    if (rc != 1) {
        return rc;
    }
    kvat *v = keel__k_vat(k, owner);
    keel__vref vr;
    int ereach = 0;
    rc = v != NULL && v->alive ? clist_get(k, owner, r, &vr, &ereach) : 0;
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) { /* its exporter is gone */
        return recog == 0 ? keel__k_del(k, &key) : KEEL_OK;
    }
    rc = KEEL_OK;
    if (reach == 0 && ereach) {
        rc = queue_action(k, owner, KG_DROP_EXPORT, r);
    }
    if (rc == KEEL_OK && recog == 0) {
        rc = queue_action(k, owner, KG_RETIRE_EXPORT, r);
    }
    return rc;
}

/* Apply the pending changes (G1); krefs they bring to zero go to
 * gc_maybe. */
static int apply_deltas(keel_kernel *k)
{
    glist *dl = k->gc_delta;
    int rc = KEEL_OK;
    for (size_t i = 0; rc >= 0 && i < dl->n; i++) {
        if (dl->v[i].reach != 0 || dl->v[i].recog != 0) {
            rc = rc_apply(k, dl->v[i].r, dl->v[i].reach, dl->v[i].recog);
        }
    }
    gl_reset(dl);
    return rc;
}

int keel__gc_end(keel_kernel *k)
{
    glist *m = k->gc_maybe;
    int rc = apply_deltas(k);
    /* settle_one may change holders again (a deleted promise's slots):
     * apply those and look at what they free, until nothing changes. */
    size_t done = 0;
    while (rc >= 0 && done < m->n) {
        for (; rc >= 0 && done < m->n; done++) {
            rc = settle_one(k, m->v[done].r);
        }
        rc = rc < 0 ? rc : apply_deltas(k);
    }
    gl_reset(m);
    if (rc == KEEL_OK && m->oom) {
        m->oom = 0;
        rc = KEEL_ENOMEM;
    }
    return rc < 0 ? rc : KEEL_OK;
}

void keel__gc_abort(keel_kernel *k)
{
    if (k->gc_maybe != NULL) {
        gl_reset(k->gc_maybe);
    }
    if (k->gc_delta != NULL) {
        gl_reset(k->gc_delta);
    }
}

int keel__gc_next(keel_kernel *k, keel__ks_key *act)
{
    keel__key prefix, found;
    if (!k->gc_pending) {
        return 0;
    }
    int rc = keel__k_next(k, keel__ks_table(&prefix, KS_GCACT), NULL, &found);
    if (rc == 0) {
        k->gc_pending = 0;
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    if (!keel__ks_decode(found.b, found.n, act)) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &found);
    }
    rc = keel__k_del(k, &found);
    return rc < 0 ? rc : 1;
}

/* Call the vat with a GC delivery of one vref (as crank.c's call_vat). */
int keel__gc_deliver(keel_kernel *k, const keel__ks_key *act,
                     int (*call)(keel_kernel *, kvat *, const keel_delivery *))
{
    kvat *v = keel__k_vat(k, act->vid);
    keel__kref r = act->kref;
    keel__vref vr;
    int reach = 0;
    uint32_t oreach, orecog;
    if (v == NULL || !v->alive) {
        return KEEL_OK; /* K6: dropped */
    }
    int rc = clist_get(k, v->id, r, &vr, &reach);
    if (rc <= 0) {
        return rc; /* G3: no longer held: nothing to tell */
    }
    rc = rc_get(k, r, &oreach, &orecog);
    if (rc < 0) {
        return rc;
    }
    int kind;
    switch (act->field) {
    case KG_DROP_EXPORT:
        if (vr.kind != KR_OPLUS || oreach != 0 || !reach) {
            return KEEL_OK; /* G3: re-exported, or told already */
        }
        kind = KEEL_DELIVER_DROP_EXPORTS;
        rc = keel__gc_set_reach(k, v->id, r, vr, 0);
        break;
    case KG_RETIRE_EXPORT:
        if (vr.kind != KR_OPLUS || orecog != 0) {
            return KEEL_OK;
        }
        kind = KEEL_DELIVER_RETIRE_EXPORTS;
        rc = pair_del(k, v->id, r, vr);
        if (rc == KEEL_OK) {
            keel__key key;
            rc = keel__k_del(k, keel__ks_object(&key, r.n));
        }
        break;
    case KG_RETIRE_IMPORT:
        if (vr.kind != KR_OMINUS) {
            return KEEL_OK;
        }
        kind = KEEL_DELIVER_RETIRE_IMPORTS;
        rc = pair_del(k, v->id, r, vr);
        break;
    default:
        return keel__k_fail(k, KEEL_ECORRUPT, "GC action type");
    }
    if (rc < 0) {
        return rc;
    }
    char s[KEEL_VREF_MAX];
    const char *vs[1] = {s};
    keel__ks_vref_str(vr, s);
    keel_delivery d = {.kind = kind, .vrefs = vs, .nvrefs = 1};
    return call(k, v, &d);
}

/* The GC syscalls (keel/vat.h), in the open transaction. */
int keel__gc_syscall(keel_kernel *k, kvat *v, int what, const char *vref)
{
    keel__vref vr;
    keel__kref r;
    keel__key key;
    keel_bytes b;
    static const char *const names[] = {"dropImports", "retireImports",
                                        "retireExports", "abandonExports"};
    const char *name = names[what];
    int imp = what == 0 || what == 1;
    if (vref == NULL || !keel__ks_vref_parse(vref, &vr) ||
        vr.kind != (imp ? KR_OMINUS : KR_OPLUS)) {
        return keel__k_illegal(k, "vat %s: %s of '%s', not an o%c vref",
                               v->name, name, vref != NULL ? vref : "(null)",
                               imp ? '-' : '+');
    }
    int rc = keel__k_get(k, keel__ks_clist_v(&key, v->id, KC_V, vr), &b);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) { /* G4 */
        return keel__k_illegal(k, "vat %s: %s of %s, which it does not hold",
                               v->name, name, vref);
    }
    if (!keel__ks_kref_val(b.ptr, b.len, &r)) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    keel__vref cv;
    int reach = 0;
    rc = clist_get(k, v->id, r, &cv, &reach);
    if (rc <= 0) {
        return rc < 0 ? rc : keel__k_fail(k, KEEL_ECORRUPT, "c-list pair");
    }
    uint32_t oreach = 0, orecog = 0;
    switch (what) {
    case 0: /* dropImports */
        if (!reach) {
            return keel__k_illegal(k,
                                   "vat %s: dropImports of %s, dropped "
                                   "already",
                                   v->name, vref);
        }
        return keel__gc_set_reach(k, v->id, r, vr, 0);
    case 1: /* retireImports */
        if (reach) {
            return keel__k_illegal(k,
                                   "vat %s: retireImports of %s, which it "
                                   "still reaches (drop it first)",
                                   v->name, vref);
        }
        return pair_del(k, v->id, r, vr);
    case 2: /* retireExports */
        rc = rc_get(k, r, &oreach, &orecog);
        if (rc < 0) {
            return rc;
        }
        if (oreach != 0) {
            return keel__k_illegal(k,
                                   "vat %s: retireExports of %s, which is "
                                   "still reachable",
                                   v->name, vref);
        }
        rc = pair_del(k, v->id, r, vr);
        return rc < 0 ? rc : keel__gc_retire_importers(k, v->id, r);
    default: /* abandonExports */
        rc = keel__k_get(k, keel__ks_kref_key(&key, KS_PIN, r), &b);
        if (rc != 0) { /* G4: the host holds a root */
            return rc < 0 ? rc
                          : keel__k_illegal(k,
                                            "vat %s: abandonExports of %s, "
                                            "its root",
                                            v->name, vref);
        }
        rc = pair_del(k, v->id, r, vr);
        if (rc == KEEL_OK) {
            maybe_free(k, r);
        }
        return rc;
    }
}
