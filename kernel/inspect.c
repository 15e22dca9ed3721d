/*
 * kernel/inspect.c — read-only queries over the kernel's keyspace
 * (store/keyspace.h) for the control socket and the CLI, and the
 * operator's terminate and restart of a vat (kernel/inspect.h).
 *
 * Invariants:
 *   KI1 The queries change nothing: they read through keel__k_get and
 *       keel__k_next only, outside any transaction, so they are as good
 *       on a read-only kernel (a stopped state) as on a live one.
 *   KI2 They run between cranks only (their callers are the host's
 *       callbacks and the CLI): what they see is a committed state.
 *   KI3 Every string from the store is copied before the next store call
 *       (keel__k_get lends its bytes until then).
 *   KI4 The operator's actions (terminate, restart a vat) run between
 *       cranks, where no vat code is on the stack: a restart calls the
 *       vat's stop() and then starts it from its vatstore through
 *       keel__k_vat_start, exactly as an open does; it writes nothing
 *       itself (what the vat's start writes, or the terminate of a start
 *       that failed, are their own transactions).
 *   KI5 A vat with async work on the kernel's list (k->async_head: a
 *       timer or job held or started, whose closure points into the
 *       running instance) is not restarted: KEEL_EBUSY.
 */
#include "kernel/inspect.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/diag.h"
#include "common/strbuf.h"
#include "kernel/kernel_internal.h"

uint64_t keel__k_last_lsn(keel_kernel *k)
{
    return keel_wal_last_lsn(k->wal);
}

void *keel__k_host_ctx(keel_kernel *k)
{
    return k->hostless ? NULL : k->host.ctx;
}

static int storage_error(keel_kernel *k, int rc, keel_diag *diag)
{
    if (diag != NULL) {
        if (k->fail_diag.msg[0] != '\0') {
            *diag = k->fail_diag;
        } else {
            keel__diag(diag, rc, "%s: %s", k->dir, keel_strerror(rc));
        }
    }
    return rc;
}

/* KI3: key's value, a kref (is_kref) or a c-list entry's vref (with its
 * reachable flag in *reach, when reach != NULL), in its string form in
 * out[KEEL__KS_REF_STR]. @return 1, 0 absent, < 0 (a value that is no
 * ref is ECORRUPT, naming the key). */
static int get_ref(keel_kernel *k, const keel__key *key, int is_kref, char *out,
                   int *reach)
{
    keel_bytes b;
    int rc = keel__k_get(k, key, &b);
    if (rc == 1) {
        keel__kref kr;
        keel__vref vr;
        int r = 1;
        if (is_kref && keel__ks_kref_val(b.ptr, b.len, &kr)) {
            keel__ks_kref_str(kr, out);
        } else if (!is_kref && keel__ks_clist_kval(b.ptr, b.len, &vr, &r)) {
            keel__ks_vref_str(vr, out);
            if (reach != NULL) {
                *reach = r;
            }
        } else {
            return keel__k_fail_key(k, KEEL_ECORRUPT, key);
        }
    }
    return rc;
}

static const char *vat_name(keel_kernel *k, uint32_t vid)
{
    kvat *v = keel__k_vat(k, vid);
    return v != NULL ? v->name : "?";
}

static uint64_t clist_size(keel_kernel *k, uint32_t vid, int *err)
{
    keel__key prefix, key;
    uint64_t n = 0;
    keel__ks_clist_prefix(&prefix, vid, KC_K, 0);
    int rc = keel__k_next(k, &prefix, NULL, &key);
    for (; rc == 1; rc = keel__k_next(k, &prefix, &key, &key)) {
        n++;
    }
    *err = rc < 0 ? rc : 0;
    return n;
}

int keel__k_vats_json(keel_kernel *k, json_t **out, keel_diag *diag)
{
    json_t *a = json_array();
    int rc = a == NULL ? KEEL_ENOMEM : KEEL_OK;
    for (size_t i = 0; rc == KEEL_OK && i < k->nvats; i++) {
        kvat *v = k->vats[i];
        keel__key key;
        char root[KEEL__KS_REF_STR] = "";
        if (v == NULL) {
            continue;
        }
        rc = get_ref(k, keel__ks_vat(&key, v->id, KV_ROOT), 1, root, NULL);
        int err = 0;
        uint64_t n = rc >= 0 ? clist_size(k, v->id, &err) : 0;
        rc = rc < 0 ? rc : err;
        if (rc < 0) {
            break;
        }
        rc = KEEL_OK;
        json_array_append_new(
            a, json_pack("{s:I, s:s, s:s, s:s, s:I}", "id", (json_int_t)v->id,
                         "name", v->name, "state",
                         v->alive ? "alive" : "terminated", "root", root,
                         "clist", (json_int_t)n));
    }
    if (rc < 0) {
        json_decref(a);
        return rc == KEEL_ENOMEM ? keel__diag(diag, rc, "vats: out of memory")
                                 : storage_error(k, rc, diag);
    }
    *out = a;
    return KEEL_OK;
}

/* Every vat whose c-list holds kref: [{"vat","vref"}]. */
static int holders(keel_kernel *k, keel__kref kref, json_t *arr)
{
    for (size_t i = 0; i < k->nvats; i++) {
        kvat *v = k->vats[i];
        keel__key key;
        char vref[KEEL__KS_REF_STR];
        if (v == NULL) {
            continue;
        }
        int reach = 1;
        int rc =
            get_ref(k, keel__ks_clist_k(&key, v->id, kref), 0, vref, &reach);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            json_array_append_new(arr,
                                  json_pack("{s:s, s:s, s:b}", "vat", v->name,
                                            "vref", vref, "reachable", reach));
        }
    }
    return KEEL_OK;
}

/* The kref's stored reference counts (KS4) and whether the host pins it
 * (pin.<kref>). */
static int refcounts(keel_kernel *k, keel__kref r, json_t *o)
{
    keel__key key;
    keel_bytes b;
    uint32_t reach = 0, recog = 0;
    int rc = keel__gc_stored(k, r, &reach, &recog);
    if (rc >= 0) {
        rc = keel__k_get(k, keel__ks_kref_key(&key, KS_PIN, r), &b);
    }
    if (rc < 0) {
        return rc;
    }
    json_object_set_new(o, "refcount",
                        json_pack("{s:I, s:I}", "reachable", (json_int_t)reach,
                                  "recognizable", (json_int_t)recog));
    json_object_set_new(o, "pinned", json_boolean(rc == 1));
    return KEEL_OK;
}

static json_t *json_body(const uint8_t *p, size_t n)
{
    json_t *b = json_loadb((const char *)p, n, JSON_DECODE_ANY, NULL);
    return b != NULL ? b : json_stringn((const char *)p, n);
}

static int inspect_promise(keel_kernel *k, uint64_t n, json_t *o)
{
    keel__key key;
    keel_bytes v;
    kprom p;
    int rc = keel__k_get(k, keel__ks_promise(&key, n), &v);
    if (rc <= 0) {
        return rc < 0 ? rc : KEEL_ENOENT;
    }
    if (keel__kprom_decode(v.ptr, v.len, &p) < 0) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, &key);
    }
    static const char *const states[] = {"unresolved", "fulfilled", "rejected"};
    json_object_set_new(o, "state", json_string(states[p.state % 3]));
    json_object_set_new(o, "decider",
                        p.decider != 0 ? json_string(vat_name(k, p.decider))
                                       : json_null());
    json_t *subs = json_array();
    for (size_t i = 0; i < p.nsubs; i++) {
        json_array_append_new(subs, json_string(vat_name(k, p.subs[i])));
    }
    json_object_set_new(o, "subscribers", subs);
    json_t *q = json_array();
    for (size_t i = 0; i < p.nqueue; i++) {
        json_array_append_new(q, json_pack("{s:s, s:s}", "method",
                                           p.queue[i].method, "result",
                                           p.queue[i].result));
    }
    json_object_set_new(o, "queued", q);
    if (p.state != KP_UNRESOLVED) {
        json_object_set_new(o, "body", json_body(p.res.body, p.res.body_len));
    }
    keel__kprom_free(&p);
    return KEEL_OK;
}

int keel__k_inspect_json(keel_kernel *k, const char *kref, const char *vat,
                         const char *vref, json_t **out, keel_diag *diag)
{
    char kr[KEEL__KS_REF_STR];
    keel__key key;
    keel__kref r;
    int rc;
    if (vat != NULL) {
        uint32_t vid = 0;
        keel__vref vr;
        rc = keel__k_get_u32(k, keel__ks_vatname(&key, vat, strlen(vat)), &vid);
        if (rc <= 0) {
            return rc < 0 ? storage_error(k, rc, diag)
                          : keel__diag(diag, KEEL_ENOENT, "no vat named \"%s\"",
                                       vat);
        }
        if (vref == NULL || !keel__ks_vref_parse(vref, &vr)) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vref: expected o+N, o-N, p+N or p-N, got \"%s\"",
                              vref != NULL ? vref : "");
        }
        rc = get_ref(k, keel__ks_clist_v(&key, vid, KC_V, vr), 1, kr, NULL);
        if (rc <= 0) {
            return rc < 0
                       ? storage_error(k, rc, diag)
                       : keel__diag(diag, KEEL_ENOENT,
                                    "vat %s's c-list holds no %s", vat, vref);
        }
    } else if (kref == NULL || !keel__ks_kref_parse(kref, &r)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "kref: expected koN or kpN, got \"%s\"",
                          kref != NULL ? kref : "");
    } else {
        keel__ks_kref_str(r, kr);
    }
    keel__ks_kref_parse(kr, &r);
    json_t *o = json_pack("{s:s, s:s}", "kref", kr, "kind",
                          r.kind == KR_O ? "object" : "promise");
    json_t *h = json_array();
    if (o == NULL || h == NULL) {
        json_decref(o);
        json_decref(h);
        return keel__diag(diag, KEEL_ENOMEM, "inspect: out of memory");
    }
    if (r.kind == KR_O) {
        uint32_t owner = 0;
        rc = keel__k_get_u32(k, keel__ks_object(&key, r.n), &owner);
        if (rc == 1) {
            json_object_set_new(o, "owner", json_string(vat_name(k, owner)));
        }
        rc = rc == 0 ? KEEL_ENOENT : rc;
    } else {
        rc = inspect_promise(k, r.n, o);
    }
    rc = rc == 1 ? KEEL_OK : rc;
    if (rc == KEEL_OK) {
        rc = holders(k, r, h);
    }
    if (rc == KEEL_OK) {
        rc = refcounts(k, r, o);
    }
    json_object_set_new(o, "holders", h);
    if (rc < 0) {
        json_decref(o);
        return rc == KEEL_ENOENT
                   ? keel__diag(diag, rc, "no %s %s in the state",
                                r.kind == KR_O ? "object" : "promise", kr)
                   : storage_error(k, rc, diag);
    }
    *out = o;
    return KEEL_OK;
}

/* The live vat `name` into *out. @return KEEL_OK, KEEL_EINVAL, KEEL_ENOENT
 * (diag says whether there is no such vat or it is terminated), or a
 * storage error. */
static int live_vat(keel_kernel *k, const char *name, kvat **out,
                    keel_diag *diag)
{
    keel__key key;
    uint32_t vid = 0;
    if (name == NULL || strlen(name) > 63) {
        return keel__diag(diag, KEEL_EINVAL, "vat: expected a vat name");
    }
    int rc =
        keel__k_get_u32(k, keel__ks_vatname(&key, name, strlen(name)), &vid);
    if (rc < 0) {
        return storage_error(k, rc, diag);
    }
    kvat *v = rc == 1 ? keel__k_vat(k, (uint32_t)vid) : NULL;
    if (v == NULL || !v->alive) {
        return keel__diag(diag, KEEL_ENOENT, "no %svat named \"%s\"",
                          v == NULL ? "" : "live ", name);
    }
    *out = v;
    return KEEL_OK;
}

int keel__k_terminate_vat(keel_kernel *k, const char *name, keel_diag *diag)
{
    kvat *v = NULL;
    int rc = live_vat(k, name, &v, diag);
    if (rc < 0) {
        return rc;
    }
    rc = keel__k_terminate(k, v->id, diag);
    keel__k_reap(k); /* no vat code is on the stack between cranks */
    return rc;
}

int keel__k_restart_vat(keel_kernel *k, const char *name, int *alive,
                        keel_diag *diag)
{
    kvat *v = NULL;
    *alive = 0;
    if (k->failed) {
        return storage_error(k, KEEL_EFAILED, diag);
    }
    int rc = live_vat(k, name, &v, diag);
    if (rc < 0) {
        return rc;
    }
    /* KI5: a timer or job of the vat, held or started, holds a pointer
     * into the instance stop() frees */
    size_t pending = 0;
    for (const kasync *a = k->async_head; a != NULL; a = a->next) {
        pending += a->vid == v->id;
    }
    if (pending > 0) {
        return keel__diag(diag, KEEL_EBUSY,
                          "vat \"%s\" has %zu timer(s) or job(s) pending; "
                          "restart it once they have run",
                          v->name, pending);
    }
    /* KI4: stop the instance as keel__k_reap does (no vat code is on the
     * stack between cranks), then start it from the vatstore as open does */
    if (v->ops != NULL && v->ops->stop != NULL) {
        v->ops->stop(v->state);
    }
    v->state = NULL;
    keel__k_observe(k, KEEL_OBS_VAT_STOP, v->id,
                    keel_wal_last_lsn(k->wal)); /* K36 */
    void *old_dl = v->dl; /* the code stays mapped until started again */
    v->dl = NULL;
    v->ops = NULL;
    rc = keel__k_vat_start(k, v, diag);
    if (rc < 0 && v->alive && !k->failed) {
        /* its code did not load (or its start was never called): a live vat
         * without code must not stay, so it goes as a failed start does */
        v->ops = NULL;
        v->state = NULL;
        rc = keel__k_terminate(k, v->id, NULL);
    }
    if (old_dl != NULL) {
        dlclose(old_dl);
    }
    keel__k_reap(k); /* a start that failed terminated it (as at open) */
    *alive = v->alive;
    return rc;
}

int keel__k_checkpoint_now(keel_kernel *k, keel_diag *diag)
{
    return keel__k_checkpoint(k, diag);
}

/* ---- DOT ------------------------------------------------------------- */

int keel__k_graph_dot(keel_kernel *k, char **out, keel_diag *diag)
{
    keel__strbuf b = {0};
    keel__key prefix, key;
    keel__ks_key d;
    char kr[KEEL__KS_REF_STR], val[KEEL__KS_REF_STR];
    int rc = 0;
    keel__sb_printf(&b, "digraph keel {\n  rankdir=LR;\n");
    for (size_t i = 0; i < k->nvats; i++) {
        kvat *v = k->vats[i];
        if (v != NULL) {
            keel__sb_printf(
                &b, "  v%" PRIu32 " [shape=box,label=\"v%" PRIu32 " %s%s\"];\n",
                v->id, v->id, v->name, v->alive ? "" : " (terminated)");
        }
    }
    /* objects and their owners */
    keel__ks_table(&prefix, KS_OBJECT);
    for (rc = keel__k_next(k, &prefix, NULL, &key); rc == 1;
         rc = keel__k_next(k, &prefix, &key, &key)) {
        uint32_t owner = 0;
        if (!keel__ks_decode(key.b, key.n, &d)) {
            rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
            break;
        }
        keel__ks_kref_str((keel__kref){KR_O, d.n}, kr);
        rc = keel__k_get_u32(k, &key, &owner);
        if (rc < 0) {
            break;
        }
        keel__sb_printf(&b, "  %s [shape=ellipse];\n", kr);
        if (rc == 1) {
            keel__sb_printf(
                &b, "  v%" PRIu32 " -> %s [label=\"owns\",style=bold];\n",
                owner, kr);
        }
    }
    /* promises: decider and subscribers */
    keel__ks_table(&prefix, KS_PROMISE);
    for (rc = rc >= 0 ? keel__k_next(k, &prefix, NULL, &key) : rc; rc == 1;
         rc = keel__k_next(k, &prefix, &key, &key)) {
        keel_bytes v;
        kprom p;
        if (!keel__ks_decode(key.b, key.n, &d)) {
            rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
            break;
        }
        keel__ks_kref_str((keel__kref){KR_P, d.n}, kr);
        rc = keel__k_get(k, &key, &v);
        if (rc != 1) {
            break;
        }
        if (keel__kprom_decode(v.ptr, v.len, &p) < 0) {
            rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
            break;
        }
        static const char *const st[] = {"unresolved", "fulfilled", "rejected"};
        keel__sb_printf(&b, "  %s [shape=diamond,label=\"%s %s\"];\n", kr, kr,
                        st[p.state % 3]);
        if (p.decider != 0) {
            keel__sb_printf(
                &b, "  %s -> v%" PRIu32 " [label=\"decider\",style=dashed];\n",
                kr, p.decider);
        }
        for (size_t i = 0; i < p.nsubs; i++) {
            keel__sb_printf(&b,
                            "  %s -> v%" PRIu32
                            " [label=\"subscriber\",style=dotted];\n",
                            kr, p.subs[i]);
        }
        keel__kprom_free(&p);
    }
    /* c-lists: each vat's kref -> vref entries */
    keel__ks_table(&prefix, KS_CLIST);
    for (rc = rc >= 0 ? keel__k_next(k, &prefix, NULL, &key) : rc; rc == 1;
         rc = keel__k_next(k, &prefix, &key, &key)) {
        if (!keel__ks_decode(key.b, key.n, &d)) {
            rc = keel__k_fail_key(k, KEEL_ECORRUPT, &key);
            break;
        }
        if (d.field != KC_K) {
            continue;
        }
        keel__ks_kref_str(d.kref, kr);
        int reach = 1;
        rc = get_ref(k, &key, 0, val, &reach);
        if (rc < 0) {
            break;
        }
        keel__sb_printf(&b, "  v%" PRIu32 " -> %s [label=\"%s\"%s];\n", d.vid,
                        kr, rc == 1 ? val : "?", reach ? "" : ",style=dotted");
    }
    keel__sb_printf(&b, "}\n");
    if (rc < 0 || b.oom) {
        free(b.p);
        return rc < 0 ? storage_error(k, rc, diag)
                      : keel__diag(diag, KEEL_ENOMEM, "graph: out of memory");
    }
    *out = b.p;
    return KEEL_OK;
}
