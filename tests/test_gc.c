/*
 * tests/test_gc.c — garbage collection (kernel/gc.c, docs/kernel.md
 * "Garbage collection"): reference counts, the GC syscalls and deliveries,
 * promise records freed, termination releasing what a vat held. Every
 * scenario runs a real kernel and ends with keel_audit, whose recount (A13)
 * checks every stored count after every transaction.
 *
 * The test vat t_gc is driven by messages from the test (keel_kernel_send
 * to its root, args JSON):
 *   bootstrap      (boot vat) tells every vat every root ("hello").
 *   hello          stores ref.<name> = the root's vref.
 *   export {to,name}     a fresh o+N (exp.<name>) sent to `to` by take.
 *   resend {to,name}     exp.<name> sent to `to` again.
 *   take {name}, slot 0  stores got.<name> = the vref (and seen.<name> gets
 *                        one more "<vref>;").
 *   fwd {to,name}        got.<name> sent to `to` by take.
 *   forget {name}        drop + retire got.<name> (vutil), deletes it.
 *   drop {vref}          keel_syscall_drop_imports of vref as given (the
 *                        illegal ones are made this way).
 *   retire {vref}        keel_syscall_retire_imports of vref as given.
 *   rexp {vref}          keel_syscall_retire_exports of vref as given.
 *   give                 resolves its result to a fresh object (o+N).
 *   ask {to,name}        sends `to` give with a result it subscribes to;
 *                        on the notify stores got.<name> = slot 0 and
 *                        ans.<name> = "fulfilled"/"rejected".
 *   askping {to,name}    sends `to` give (result P), then ping to P
 *                        (result Q), subscribes to Q only: ans.<name>.
 *   ping                 resolves its result {"pong":1}.
 *   many {to,n}          n sends of ping to `to`, each result subscribed;
 *                        pongs counts the answers.
 *   exit                 keel_syscall_exit.
 * GC deliveries are logged: gc.<kind>.<vref> = "1" (kind drop, rexp, rimp).
 */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/keel.h"
#include "keel/kernel.h"
#include "keel/recovery.h"

#include "store/keyspace.h"
#include "store/store.h"
#include "tests/testutil.h"
#include "vats/vutil.h"

#define RUN_TIMEOUT_MS 60000

/* ---- the test vat -------------------------------------------------------- */

static int vs_set(keel_syscall *sys, const char *k1, const char *k2,
                  const char *val)
{
    char key[256];
    snprintf(key, sizeof(key), "%s%s", k1, k2);
    return keel_syscall_vatstore_set(sys, key, val, strlen(val));
}

static int vs_get(keel_syscall *sys, const char *k1, const char *k2, char *buf)
{
    char key[256];
    snprintf(key, sizeof(key), "%s%s", k1, k2);
    return keel__vutil_get_str(sys, key, buf, KEEL_VREF_MAX);
}

static const char *str(json_t *a, const char *f)
{
    const char *s = json_string_value(json_object_get(a, f));
    return s != NULL ? s : "";
}

static int send_take(keel_syscall *sys, const char *to, const char *name,
                     const char *vref)
{
    char target[KEEL_VREF_MAX];
    if (vs_get(sys, "ref.", to, target) != 1) {
        return -1;
    }
    char *body = keel__vutil_json("{sss{si}}", "name", name, "obj", "@slot", 0);
    const char *slots[1] = {vref};
    keel_capdata cd = {
        .body = {body, strlen(body)}, .slots = slots, .nslots = 1};
    int rc = keel_syscall_send(sys, target, "take", &cd, NULL);
    free(body);
    return rc;
}

static int gc_notify(keel_syscall *sys, const keel_delivery *d)
{
    char name[KEEL_VREF_MAX];
    int rc = vs_get(sys, "ask.", d->promise, name);
    if (rc != 1) {
        uint64_t n = 0;
        keel__vutil_get_u64(sys, "pongs", &n);
        return keel__vutil_set_u64(sys, "pongs", n + 1);
    }
    if (!d->rejected && d->resolution.nslots == 1) {
        rc = vs_set(sys, "got.", name, d->resolution.slots[0]);
    }
    char key[256];
    snprintf(key, sizeof(key), "ask.%s", d->promise);
    keel_syscall_vatstore_delete(sys, key);
    return vs_set(sys, "ans.", name, d->rejected ? "rejected" : "fulfilled");
}

static int gc_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    (void)state;
    char v[KEEL_VREF_MAX], p[KEEL_VREF_MAX], q[KEEL_VREF_MAX];
    if (keel__vutil_is_gc(d)) {
        static const char *const kinds[] = {"", "", "", "drop", "rexp", "rimp"};
        for (size_t i = 0; i < d->nvrefs; i++) {
            vs_set(sys, "gc.", kinds[d->kind], "");
            char key[64];
            snprintf(key, sizeof(key), "gc.%s.%s", kinds[d->kind], d->vrefs[i]);
            keel_syscall_vatstore_set(sys, key, "1", 1);
        }
        return 0;
    }
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return gc_notify(sys, d);
    }
    json_t *a = NULL;
    keel__vutil_parse(&d->args, &a);
    const char *m = d->method;
    int rc = KEEL_OK;
    if (strcmp(m, "bootstrap") == 0) {
        json_t *vats = json_object_get(a, "vats");
        const char *name;
        json_t *ref;
        char *body = json_dumps(a, JSON_COMPACT);
        keel_capdata cd = {.body = {body, strlen(body)},
                           .slots = d->args.slots,
                           .nslots = d->args.nslots};
        json_object_foreach(vats, name, ref)
        {
            const char *vref = NULL;
            keel__vutil_slot(&d->args, ref, &vref);
            rc = vs_set(sys, "ref.", name, vref);
            if (rc == KEEL_OK &&
                strcmp(name, keel_syscall_vat_name(sys)) != 0) {
                rc = keel_syscall_send(sys, vref, "hello", &cd, NULL);
            }
        }
        free(body);
    } else if (strcmp(m, "hello") == 0) {
        json_t *vats = json_object_get(a, "vats");
        const char *name;
        json_t *ref;
        json_object_foreach(vats, name, ref)
        {
            const char *vref = NULL;
            keel__vutil_slot(&d->args, ref, &vref);
            rc = vs_set(sys, "ref.", name, vref);
        }
    } else if (strcmp(m, "export") == 0) {
        rc = keel_syscall_alloc_object(sys, v);
        rc = rc < 0 ? rc : vs_set(sys, "exp.", str(a, "name"), v);
        rc = rc < 0 ? rc : send_take(sys, str(a, "to"), str(a, "name"), v);
    } else if (strcmp(m, "resend") == 0) {
        rc = vs_get(sys, "exp.", str(a, "name"), v) == 1
                 ? send_take(sys, str(a, "to"), str(a, "name"), v)
                 : -1;
    } else if (strcmp(m, "take") == 0) {
        char seen[512] = "";
        const char *name = str(a, "name");
        char key[256];
        snprintf(key, sizeof(key), "seen.%s", name);
        keel__vutil_get_str(sys, key, seen, sizeof(seen) - KEEL_VREF_MAX);
        strcat(seen, d->args.slots[0]);
        strcat(seen, ";");
        rc = keel__vutil_set_str(sys, key, seen);
        rc = rc < 0 ? rc : vs_set(sys, "got.", name, d->args.slots[0]);
    } else if (strcmp(m, "fwd") == 0) {
        rc = vs_get(sys, "got.", str(a, "name"), v) == 1
                 ? send_take(sys, str(a, "to"), str(a, "name"), v)
                 : -1;
    } else if (strcmp(m, "forget") == 0) {
        char key[256];
        snprintf(key, sizeof(key), "got.%s", str(a, "name"));
        rc = vs_get(sys, "got.", str(a, "name"), v) == 1
                 ? keel__vutil_forget_import(sys, v)
                 : -1;
        rc = rc < 0 ? rc : keel_syscall_vatstore_delete(sys, key);
    } else if (strcmp(m, "drop") == 0 || strcmp(m, "retire") == 0 ||
               strcmp(m, "rexp") == 0) {
        const char *vs[1] = {str(a, "vref")};
        rc = m[0] == 'd' ? keel_syscall_drop_imports(sys, vs, 1)
             : m[1] == 'e' && m[2] == 't'
                 ? keel_syscall_retire_imports(sys, vs, 1)
                 : keel_syscall_retire_exports(sys, vs, 1);
    } else if (strcmp(m, "give") == 0) {
        rc = keel_syscall_alloc_object(sys, v);
        const char *slots[1] = {v};
        keel_capdata cd = {
            .body = {KEEL_CAPDATA_SLOT0, strlen(KEEL_CAPDATA_SLOT0)},
            .slots = slots,
            .nslots = 1};
        rc = rc < 0 ? rc : keel_syscall_resolve(sys, d->result, 0, &cd);
    } else if (strcmp(m, "ping") == 0) {
        rc = keel__vutil_answer(sys, d, "{\"pong\":1}");
    } else if (strcmp(m, "ask") == 0 || strcmp(m, "askping") == 0) {
        char target[KEEL_VREF_MAX];
        keel_capdata none = {.body = {"{}", 2}};
        rc = vs_get(sys, "ref.", str(a, "to"), target) == 1 ? 0 : -1;
        rc = rc < 0 ? rc : keel_syscall_alloc_promise(sys, p);
        rc = rc < 0 ? rc : keel_syscall_send(sys, target, "give", &none, p);
        if (strcmp(m, "askping") == 0) {
            rc = rc < 0 ? rc : keel_syscall_alloc_promise(sys, q);
            rc = rc < 0 ? rc : keel_syscall_send(sys, p, "ping", &none, q);
            memcpy(p, q, sizeof(p));
        }
        rc = rc < 0 ? rc : keel_syscall_subscribe(sys, p);
        rc = rc < 0 ? rc : vs_set(sys, "ask.", p, str(a, "name"));
    } else if (strcmp(m, "many") == 0) {
        char target[KEEL_VREF_MAX];
        keel_capdata none = {.body = {"{}", 2}};
        json_int_t n = json_integer_value(json_object_get(a, "n"));
        rc = vs_get(sys, "ref.", str(a, "to"), target) == 1 ? 0 : -1;
        for (json_int_t i = 0; rc >= 0 && i < n; i++) {
            rc = keel_syscall_alloc_promise(sys, p);
            rc = rc < 0 ? rc : keel_syscall_send(sys, target, "ping", &none, p);
            rc = rc < 0 ? rc : keel_syscall_subscribe(sys, p);
        }
    } else if (strcmp(m, "exit") == 0) {
        rc = keel_syscall_exit(sys, 0, NULL);
    }
    json_decref(a);
    if (rc >= 0 && d->result != NULL && strcmp(m, "give") != 0 &&
        strcmp(m, "ping") != 0) {
        keel__vutil_answer(sys, d, "{}");
    }
    return rc < 0 && strcmp(m, "drop") != 0 && strcmp(m, "retire") != 0 &&
                   strcmp(m, "rexp") != 0
               ? 1
               : 0;
}

static int gc_start(keel_syscall *sys, const char *params, void **state)
{
    (void)sys;
    (void)params;
    *state = NULL;
    return 0;
}

static void gc_stop(void *state)
{
    (void)state;
}

static const keel_vat_ops t_gc = {.abi_version = KEEL_VAT_ABI_VERSION,
                                  .name = "t_gc",
                                  .start = gc_start,
                                  .deliver = gc_deliver,
                                  .stop = gc_stop};

static const keel_vat_ops t_old = {.abi_version = 1,
                                   .name = "t_old",
                                   .start = gc_start,
                                   .deliver = gc_deliver,
                                   .stop = gc_stop};

static const keel_vat_ops *resolve(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "t_gc") == 0    ? &t_gc
           : strcmp(name, "t_old") == 0 ? &t_old
                                        : NULL;
}

/* ---- fixture ------------------------------------------------------------- */

typedef struct tg {
    char *root, *state;
    keel_kernel_options o;
    keel_kernel *k;
} tg;

static void tg_open(tg *t)
{
    keel_diag d = {0};
    int rc = keel_kernel_open(t->state, &t->o, &t->k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s: %s", keel_err_name(rc), d.msg);
}

static void tg_close(tg *t)
{
    keel_diag d = {0};
    int rc = keel_kernel_close(t->k, &d);
    t->k = NULL;
    ck_assert_msg(rc == KEEL_OK, "close: %s", d.msg);
}

static void tg_run(tg *t)
{
    keel_diag d = {0};
    keel_run_stats s;
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
    int rc = keel_kernel_run(t->k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc), d.msg);
    ck_assert(s.idle);
}

/* A cluster of t_gc vats a, b, c (a boots), run until idle. */
static void tg_init(tg *t)
{
    keel_diag d = {0};
    memset(t, 0, sizeof(*t));
    t->root = tu_tmpdir("gc");
    t->state = tu_path(t->root, "state");
    keel_kernel_options_init(&t->o);
    t->o.resolve_vat = resolve;
    tg_open(t);
    const char *cfg = "{\"bootstrap\":\"a\",\"vats\":{"
                      "\"a\":{\"builtin\":\"t_gc\"},"
                      "\"b\":{\"builtin\":\"t_gc\"},"
                      "\"c\":{\"builtin\":\"t_gc\"}}}";
    int rc = keel_kernel_boot(t->k, cfg, t->root, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
    tg_run(t);
}

static void tg_send(tg *t, const char *vat, const char *method,
                    const char *args)
{
    keel_diag d = {0};
    char kp[KEEL_VREF_MAX];
    int rc = keel_kernel_send(t->k, vat, method, args, kp, &d);
    ck_assert_msg(rc == KEEL_OK, "send %s.%s: %s", vat, method, d.msg);
}

static char *tg_vs(tg *t, const char *vat, const char *key)
{
    keel_diag d = {0};
    char *val = NULL;
    size_t len = 0;
    int rc = keel_kernel_vatstore_get(t->k, vat, key, &val, &len, &d);
    ck_assert_msg(rc >= 0, "vatstore_get: %s", d.msg);
    return rc == 1 ? val : NULL;
}

static void ck_vs(tg *t, const char *vat, const char *key, const char *want)
{
    char *got = tg_vs(t, vat, key);
    if (want == NULL) {
        ck_assert_msg(got == NULL, "%s %s: expected absent, got '%s'", vat, key,
                      got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, want) == 0,
                      "%s %s: expected '%s', got '%s'", vat, key, want,
                      got != NULL ? got : "(absent)");
    }
    free(got);
}

static const char *vat_state(tg *t, const char *vat)
{
    char *js = NULL;
    keel_diag d = {0};
    static char out[16];
    ck_assert_int_eq(keel_kernel_status_json(t->k, &js, &d), KEEL_OK);
    json_t *st = json_loads(js, 0, NULL);
    size_t i;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(json_object_get(st, "vats"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), vat) == 0) {
            snprintf(out, sizeof(out), "%s",
                     json_string_value(json_object_get(v, "state")));
        }
    }
    json_decref(st);
    free(js);
    return out;
}

/* Keys of table tag (the kernel closed). */
static uint64_t count_table(tg *t, uint8_t tag)
{
    char *dir = tu_path(t->state, "store");
    keel__store_options so;
    keel__store *s = NULL;
    keel_diag d = {0};
    keel__key prefix;
    uint64_t n = 0;
    keel__store_options_init(&so);
    so.create = 0;
    ck_assert_int_eq(keel__store_open(dir, &so, 0, &s, &d), KEEL_OK);
    keel__ks_table(&prefix, tag);
    ck_assert_int_eq(keel__store_count_prefix(s, prefix.b, prefix.n, &n, &d),
                     KEEL_OK);
    keel__store_close(s);
    free(dir);
    return n;
}

static void ck_audit(tg *t)
{
    keel_audit_report rep;
    keel_diag d = {0};
    int rc = keel_audit(t->state, NULL, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "audit: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(rep.violations == 0, "audit: LSN %llu: %s",
                  (unsigned long long)rep.violation_lsn, rep.violation);
}

static void tg_free(tg *t)
{
    if (t->k != NULL) {
        tg_close(t);
    }
    tu_rmrf(t->root);
    free(t->root);
    free(t->state);
}

/* ---- scenarios ----------------------------------------------------------- */

START_TEST(test_gc_drop_then_reimport_gets_fresh_vref)
{
    tg t;
    tg_init(&t);
    tg_send(&t, "a", "export", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    char *first = tg_vs(&t, "b", "got.x");
    ck_assert_ptr_nonnull(first);
    tg_send(&t, "b", "forget", "{\"name\":\"x\"}");
    tg_run(&t);
    char *exp = tg_vs(&t, "a", "exp.x");
    char key[64];
    snprintf(key, sizeof(key), "gc.drop.%s", exp);
    ck_vs(&t, "a", key, "1"); /* the exporter was told */
    snprintf(key, sizeof(key), "gc.rexp.%s", exp);
    ck_vs(&t, "a", key, "1");
    tg_send(&t, "a", "resend", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    char *second = tg_vs(&t, "b", "got.x");
    ck_assert_ptr_nonnull(second);
    ck_assert_msg(strcmp(first, second) != 0,
                  "re-import reused %s after it was retired", first);
    free(first);
    free(second);
    free(exp);
    tg_close(&t);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

/* Dropped but still recognized: the importer and the exporter both keep
 * their c-list pairs, flagged dropped (KS4), and the audit's whole-keyspace
 * checks take the flagged value as half of a pair (A7). */
START_TEST(test_gc_dropped_not_retired_audits_clean)
{
    tg t;
    char args[96];
    tg_init(&t);
    tg_send(&t, "a", "export", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    char *got = tg_vs(&t, "b", "got.x");
    snprintf(args, sizeof(args), "{\"vref\":\"%s\"}", got);
    tg_send(&t, "b", "drop", args);
    tg_run(&t);
    ck_assert_str_eq(vat_state(&t, "b"), "alive");
    ck_vs(&t, "a", "gc.drop", "");
    ck_vs(&t, "a", "gc.rexp", NULL); /* b still recognizes it */
    tg_close(&t);
    ck_audit(&t); /* ends with both entries flagged dropped */
    tg_open(&t);
    /* dropping it twice is illegal */
    tg_send(&t, "b", "drop", args);
    tg_run(&t);
    ck_assert_str_eq(vat_state(&t, "b"), "terminated");
    ck_vs(&t, "a", "gc.rexp", ""); /* b's termination released it */
    free(got);
    tg_close(&t);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

START_TEST(test_gc_three_vats_drop_deletes_object)
{
    tg t;
    tg_init(&t);
    tg_close(&t);
    uint64_t objects0 = count_table(&t, KS_OBJECT);
    tg_open(&t);
    tg_send(&t, "a", "export", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    tg_send(&t, "b", "fwd", "{\"to\":\"c\",\"name\":\"x\"}");
    tg_run(&t);
    tg_send(&t, "b", "forget", "{\"name\":\"x\"}");
    tg_run(&t);
    char *exp = tg_vs(&t, "a", "exp.x");
    char key[64];
    snprintf(key, sizeof(key), "gc.drop.%s", exp);
    ck_vs(&t, "a", key, NULL); /* c still holds it */
    tg_send(&t, "c", "forget", "{\"name\":\"x\"}");
    tg_run(&t);
    ck_vs(&t, "a", key, "1");
    snprintf(key, sizeof(key), "gc.rexp.%s", exp);
    ck_vs(&t, "a", key, "1");
    free(exp);
    tg_close(&t);
    ck_assert_uint_eq(count_table(&t, KS_OBJECT), objects0);
    ck_assert_uint_eq(count_table(&t, KS_GCACT), 0);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

/* A promise settled with an object keeps the object until the notify: the
 * object's count is held by the promise record (then by the importer's
 * c-list), never by nothing. */
START_TEST(test_gc_settled_promise_keeps_object_until_notify)
{
    tg t;
    tg_init(&t);
    tg_send(&t, "a", "ask", "{\"to\":\"b\",\"name\":\"y\"}");
    tg_run(&t);
    ck_vs(&t, "a", "ans.y", "fulfilled");
    char *got = tg_vs(&t, "a", "got.y");
    ck_assert_ptr_nonnull(got);
    /* b, the exporter, was never told to drop it: a holds it */
    ck_vs(&t, "b", "gc.drop", NULL);
    tg_send(&t, "a", "forget", "{\"name\":\"y\"}");
    tg_run(&t);
    ck_vs(&t, "b", "gc.drop", "");
    ck_vs(&t, "b", "gc.rexp", "");
    free(got);
    tg_close(&t);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

START_TEST(test_gc_message_to_dropped_objects_promise_settles)
{
    tg t;
    tg_init(&t);
    tg_send(&t, "a", "askping", "{\"to\":\"b\",\"name\":\"z\"}");
    tg_run(&t);
    ck_vs(&t, "a", "ans.z", "fulfilled");
    /* no vat ever imported the object: only the promise record (which a's
     * c-list still holds: a made P and was never notified of it) and the
     * queued ping held it, and the ping still reached it. Nothing was
     * dropped that is still held. */
    ck_vs(&t, "b", "gc.drop", NULL);
    tg_close(&t);
    ck_assert_uint_eq(count_table(&t, KS_GCACT), 0);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

START_TEST(test_gc_illegal_gc_syscalls_terminate_only_offender)
{
    static const char *const bad[] = {
        "drop",   "{\"vref\":\"o-99\"}", /* not held */
        "retire", "{\"vref\":\"o-1\"}",  /* still reachable */
        "rexp",   "{\"vref\":\"o+0\"}",  /* its root: still reachable */
        "drop",   "{\"vref\":\"p-1\"}",  /* not an object */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i += 2) {
        tg t;
        tg_init(&t);
        tg_send(&t, "b", bad[i], bad[i + 1]);
        tg_run(&t);
        ck_assert_msg(strcmp(vat_state(&t, "b"), "terminated") == 0,
                      "%s %s: b is %s", bad[i], bad[i + 1], vat_state(&t, "b"));
        ck_assert_str_eq(vat_state(&t, "a"), "alive");
        ck_assert_str_eq(vat_state(&t, "c"), "alive");
        tg_close(&t);
        ck_audit(&t);
        tg_free(&t);
    }
}
END_TEST

START_TEST(test_gc_termination_releases_imports)
{
    tg t;
    tg_init(&t);
    tg_send(&t, "a", "export", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    tg_send(&t, "b", "exit", "{}");
    tg_run(&t);
    ck_assert_str_eq(vat_state(&t, "b"), "terminated");
    ck_vs(&t, "a", "gc.drop", "");
    ck_vs(&t, "a", "gc.rexp", "");
    tg_close(&t);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

/* The same across a SIGKILL: a child process runs b's termination and is
 * killed before a's GC deliveries; the reopened kernel delivers them. */
START_TEST(test_gc_termination_releases_imports_across_sigkill)
{
    tg t;
    tg_init(&t);
    tg_send(&t, "a", "export", "{\"to\":\"b\",\"name\":\"x\"}");
    tg_run(&t);
    tg_close(&t);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_kernel *k = NULL;
        keel_diag d = {0};
        char kp[KEEL_VREF_MAX];
        if (keel_kernel_open(t.state, &t.o, &k, &d) != KEEL_OK ||
            keel_kernel_send(k, "b", "exit", "{}", kp, &d) != KEEL_OK) {
            _exit(2);
        }
        /* the send's crank (b exits and is terminated), then stop dead
         * with a's dropExports still queued */
        if (keel_kernel_step(k, &d) != 1) {
            _exit(3);
        }
        keel_kernel_wait_durable(k, &d);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child status %d", status);
    tg_open(&t);
    ck_vs(&t, "a", "gc.drop", NULL);
    tg_run(&t);
    ck_assert_str_eq(vat_state(&t, "b"), "terminated");
    ck_vs(&t, "a", "gc.drop", "");
    ck_vs(&t, "a", "gc.rexp", "");
    tg_close(&t);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

/* SPEC §9.14: 10,000 promises created and settled leave nothing in the
 * kernel's tables beyond the vats' own (their roots, pinned) and what the
 * test's own sends pinned. */
START_TEST(test_gc_ten_thousand_promises_leave_nothing)
{
    tg t;
    tg_init(&t);
    tg_close(&t);
    uint64_t p0 = count_table(&t, KS_PROMISE),
             r0 = count_table(&t, KS_REFCOUNT), pin0 = count_table(&t, KS_PIN);
    tg_open(&t);
    tg_send(&t, "a", "many", "{\"to\":\"b\",\"n\":10000}");
    tg_run(&t);
    ck_vs(&t, "a", "pongs", "10000");
    tg_close(&t);
    /* the one send pinned its result: one record, one pin, one count */
    ck_assert_uint_eq(count_table(&t, KS_PROMISE), p0 + 1);
    ck_assert_uint_eq(count_table(&t, KS_PIN), pin0 + 1);
    ck_assert_uint_eq(count_table(&t, KS_REFCOUNT), r0 + 1);
    ck_assert_uint_eq(count_table(&t, KS_RUNQ), 0);
    ck_assert_uint_eq(count_table(&t, KS_GCACT), 0);
    ck_audit(&t);
    tg_free(&t);
}
END_TEST

/* Keys of vat vid's vatstore under prefix (the kernel closed). */
static uint64_t count_vs(tg *t, uint32_t vid, const char *prefix)
{
    char *dir = tu_path(t->state, "store");
    keel__store_options so;
    keel__store *s = NULL;
    keel_diag d = {0};
    keel__key key;
    uint64_t n = 0;
    keel__store_options_init(&so);
    so.create = 0;
    ck_assert_int_eq(keel__store_open(dir, &so, 0, &s, &d), KEEL_OK);
    keel__ks_vatstore(&key, vid, prefix, strlen(prefix));
    ck_assert_int_eq(keel__store_count_prefix(s, key.b, key.n, &n, &d),
                     KEEL_OK);
    keel__store_close(s);
    free(dir);
    return n;
}

/* The crash-test workload (vats/mixed.c M7): its factory's adders are
 * passed to the driver and dropped; a whole run leaves no adder behind,
 * in the kernel's tables or the vats' vatstores. */
START_TEST(test_gc_mixed_workload_drops_its_adders)
{
    tg t;
    keel_diag d = {0};
    size_t len = 0;
    memset(&t, 0, sizeof(t));
    t.root = tu_tmpdir("gc");
    t.state = tu_path(t.root, "state");
    keel_kernel_options_init(&t.o);
    uint8_t *cfg = tu_read_file(KEEL_MIXED_JSON, &len);
    ck_assert_ptr_nonnull(cfg);
    char *c = strndup((const char *)cfg, len);
    tg_open(&t);
    int rc = keel_kernel_boot(t.k, c, t.root, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
    tg_run(&t);
    ck_vs(&t, "driver", "done", "1");
    tg_close(&t);
    /* vats in config order: driver is vat 1, factory vat 6 */
    ck_assert_uint_eq(count_vs(&t, 6, "adder."), 0);
    ck_assert_uint_eq(count_vs(&t, 1, "a."), 0);
    ck_assert_uint_eq(count_table(&t, KS_OBJECT), 9); /* the roots */
    ck_assert_uint_eq(count_table(&t, KS_GCACT), 0);
    ck_audit(&t);
    free(c);
    free(cfg);
    tg_free(&t);
}
END_TEST

START_TEST(test_gc_vat_of_old_abi_refused)
{
    tg t;
    keel_diag d = {0};
    memset(&t, 0, sizeof(t));
    t.root = tu_tmpdir("gc");
    t.state = tu_path(t.root, "state");
    keel_kernel_options_init(&t.o);
    t.o.resolve_vat = resolve;
    tg_open(&t);
    int rc = keel_kernel_boot(
        t.k, "{\"bootstrap\":\"a\",\"vats\":{\"a\":{\"builtin\":\"t_old\"}}}",
        t.root, &d);
    ck_assert_int_ne(rc, KEEL_OK);
    ck_assert_msg(strstr(d.msg, "ABI") != NULL || strstr(d.msg, "abi") != NULL,
                  "diag: %s", d.msg);
    tg_free(&t);
}
END_TEST

Suite *gc_suite(void);
Suite *gc_suite(void)
{
    Suite *s = suite_create("gc");
    TCase *tc = tcase_create("gc");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gc_drop_then_reimport_gets_fresh_vref);
    tcase_add_test(tc, test_gc_dropped_not_retired_audits_clean);
    tcase_add_test(tc, test_gc_three_vats_drop_deletes_object);
    tcase_add_test(tc, test_gc_settled_promise_keeps_object_until_notify);
    tcase_add_test(tc, test_gc_message_to_dropped_objects_promise_settles);
    tcase_add_test(tc, test_gc_illegal_gc_syscalls_terminate_only_offender);
    tcase_add_test(tc, test_gc_termination_releases_imports);
    tcase_add_test(tc, test_gc_termination_releases_imports_across_sigkill);
    tcase_add_test(tc, test_gc_ten_thousand_promises_leave_nothing);
    tcase_add_test(tc, test_gc_mixed_workload_drops_its_adders);
    tcase_add_test(tc, test_gc_vat_of_old_abi_refused);
    suite_add_tcase(s, tc);
    return s;
}
