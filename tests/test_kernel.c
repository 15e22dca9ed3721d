/*
 * tests/test_kernel.c — the kernel's conformance scenarios (SPEC §9), run in
 * process: test vats defined here are handed to the kernel through
 * keel_kernel_options.resolve_vat, and every test reads back real outcomes
 * from the kernel: the vats' vatstores (each test vat records what it saw),
 * promise states, keel_kernel_status_json, and where the claim is about
 * what was committed, the WAL itself (STATE/wal, read with keel_wal_reader).
 *
 * Test vats:
 *   t_actor      a scriptable vat. A "do" message carries {"ops":[...]}, a
 *                list of syscalls to make (send, resolve, subscribe, exit,
 *                vatstore writes, fail); "on" ops store a script that runs
 *                when a later message of a given method arrives. It logs
 *                every other message (msg.<n> = "method target body
 *                [slots]") and every notify (notify.<name> = "fulfilled
 *                body" / "rejected body", notifies.<name> counts them). Refs
 *                in scripts: "$x" is the vref stored at ref.x (bootstrap
 *                stores ref.<vat>; a message stores ref.<method>.<i> for
 *                its slots and ref.<method>.result; a send with "result":x
 *                stores ref.x), "$result" the delivery's result promise;
 *                anything else is a literal vref (which is how tests forge).
 *                A syscall that returns a positive value (outside vat.h's
 *                contract) is recorded as bad_rc and the script goes on.
 *                Nothing in memory: a restart changes nothing.
 *   t_async      answers "work" from a thread-pool job and "wait" from a
 *                timer, out of crank; "work_bad" makes an illegal syscall
 *                from the job's completion.
 *   t_cross_a/b  scenario 13: A's start leaves its syscall handle in the
 *                test's context; B's deliver makes syscalls with it while
 *                B's own crank is open.
 *   t_many       scenario 14: sender, peer and watcher of 10,000 promises.
 *   t_badstart   a vat whose start() fails.
 *   t_restart    a t_actor whose start() writes to its vatstore.
 *   t_job        async work the test watches through its context: whether
 *                a job ran, and the WAL's durable LSN when it started; an
 *                hour-long timer; exit. (t_actor's "fill" op gives a vat
 *                many keys, and "exportp" many promises it decides, for
 *                termination.)
 *
 * The test's context reaches t_cross_* and t_job through their params (its
 * address as text): an ops table carries no user data, and keel (tests
 * included) keeps no mutable globals.
 *
 * Vat ids follow config order (the first vat is v1), so the store key of
 * vat 2's vatstore entry "x" is "vs.2.x" (kernel/kernel_internal.h).
 */
#include <check.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/io_fault.h"
#include "keel/keel.h"
#include "keel/recovery.h"
#include "kernel/kernel_host.h"
#include "common/keys.h"
#include "kernel/keyfmt.h"
#include "store/keyspace.h"
#include "store/store.h"
#include "tests/testutil.h"
#include "tools/crash_point.h"

/* A bounded wait for keel_kernel_run: a regression that loses an answer
 * fails the test by timing out instead of hanging it. Not a timing check. */
#define RUN_TIMEOUT_MS 60000u
/* Scenario 14. */
#define MANY_PROMISES 10000

/* ======================================================================== */
/* test vats                                                                */
/* ======================================================================== */

/* One t_job job's closure. */
typedef struct tjob {
    struct tctx *ctx;
} tjob;

/* What a test shares with its vats (scenario 13, t_job). */
typedef struct tctx {
    keel_syscall *a_sys; /* t_cross_a's handle, saved by its start() */
    keel_kernel *k;      /* t_job's jobs read its durable LSN */
    _Atomic int jobs_run;
    _Atomic uint64_t job_durable_lsn; /* what the last job saw at its start */
    _Atomic int dones;                /* t_job's job done callbacks run */
    tjob jobs[4]; /* t_job's closures: a job the kernel drops leaks none */
    unsigned njobs;
} tctx;

static int ctx_from_params(const char *params_json, tctx **out)
{
    json_t *p = json_loads(params_json, 0, NULL);
    const char *s = json_string_value(json_object_get(p, "ctx"));
    void *ptr = NULL;
    int rc = s != NULL && sscanf(s, "%p", &ptr) == 1 && ptr != NULL
                 ? KEEL_OK
                 : KEEL_EINVAL;
    json_decref(p);
    *out = ptr;
    return rc;
}

/* ---- vatstore helpers (values are text) ---------------------------------- */

/* A malloc'd NUL-terminated copy of the value at the formatted key, or NULL
 * when absent. */
static char *vs_getf(keel_syscall *sys, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *vs_getf(keel_syscall *sys, const char *fmt, ...)
{
    char key[KEEL_VATSTORE_KEY_MAX + 64];
    keel_bytes v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    if (keel_syscall_vatstore_get(sys, key, &v) != 1) {
        return NULL;
    }
    char *s = malloc(v.len + 1);
    if (s != NULL) {
        memcpy(s, v.ptr, v.len);
        s[v.len] = '\0';
    }
    return s;
}

static int vs_setf(keel_syscall *sys, const char *val, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int vs_setf(keel_syscall *sys, const char *val, const char *fmt, ...)
{
    char key[KEEL_VATSTORE_KEY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof(key), fmt, ap);
    va_end(ap);
    return keel_syscall_vatstore_set(sys, key, val, strlen(val));
}

/* Add one to the decimal counter at key. */
static int vs_incr(keel_syscall *sys, const char *key, uint64_t *out)
{
    char *s = vs_getf(sys, "%s", key);
    uint64_t n = s != NULL ? strtoull(s, NULL, 10) + 1 : 1;
    char buf[24];
    free(s);
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)n);
    if (out != NULL) {
        *out = n;
    }
    return keel_syscall_vatstore_set(sys, key, buf, strlen(buf));
}

/* ---- t_actor ------------------------------------------------------------- */

/* What the "fail" op returns: deliver() fails with it. */
#define T_FAIL (-1000)

static int run_ops(keel_syscall *sys, const keel_delivery *d,
                   const json_t *ops);

/* The vref a script names (see the file-top comment); malloc'd, or NULL. */
static char *actor_ref(keel_syscall *sys, const keel_delivery *d,
                       const json_t *j)
{
    const char *s = json_string_value(j);
    if (s == NULL) {
        return NULL;
    }
    if (s[0] != '$') {
        return strdup(s);
    }
    if (strcmp(s, "$result") == 0) {
        return d->result != NULL ? strdup(d->result) : NULL;
    }
    return vs_getf(sys, "ref.%s", s + 1);
}

/* An op's body: "body" (any JSON, dumped compact) or "{}". */
static char *op_body(const json_t *op)
{
    const json_t *b = json_object_get(op, "body");
    return b != NULL ? json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY)
                     : strdup("{}");
}

typedef struct vrefs {
    char **v;
    size_t n;
} vrefs;

static void vrefs_free(vrefs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i]);
    }
    free(r->v);
}

/* An op's "slots" (an array of refs). */
static int op_slots(keel_syscall *sys, const keel_delivery *d, const json_t *op,
                    vrefs *out)
{
    const json_t *a = json_object_get(op, "slots");
    const json_t *e;
    size_t i;
    out->v = NULL;
    out->n = 0;
    if (a == NULL) {
        return KEEL_OK;
    }
    out->v = calloc(json_array_size(a) + 1, sizeof(char *));
    if (out->v == NULL) {
        return KEEL_ENOMEM;
    }
    json_array_foreach(a, i, e)
    {
        out->v[i] = actor_ref(sys, d, e);
        if (out->v[i] == NULL) {
            return KEEL_EINVAL;
        }
        out->n = i + 1;
    }
    return KEEL_OK;
}

/* An op's vatstore key: "key", or "keylen" N (N 'k's). malloc'd. */
static char *op_key(const json_t *op)
{
    const char *k = json_string_value(json_object_get(op, "key"));
    json_int_t n = json_integer_value(json_object_get(op, "keylen"));
    if (k != NULL) {
        return strdup(k);
    }
    char *s = malloc((size_t)n + 1);
    if (s != NULL) {
        memset(s, 'k', (size_t)n);
        s[n] = '\0';
    }
    return s;
}

static int op_send(keel_syscall *sys, const keel_delivery *d, const json_t *op)
{
    const char *method = json_string_value(json_object_get(op, "method"));
    const char *rname = json_string_value(json_object_get(op, "result"));
    const json_t *rref = json_object_get(op, "result_ref");
    char *to = actor_ref(sys, d, json_object_get(op, "to"));
    char *body = op_body(op);
    char *result = NULL;
    vrefs sl = {0};
    int rc =
        to == NULL || method == NULL || body == NULL ? KEEL_EINVAL : KEEL_OK;
    if (rc == KEEL_OK) {
        rc = op_slots(sys, d, op, &sl);
    }
    if (rc == KEEL_OK && rname != NULL) {
        result = malloc(KEEL_VREF_MAX);
        rc = result == NULL ? KEEL_ENOMEM
                            : keel_syscall_alloc_promise(sys, result);
        if (rc == KEEL_OK) {
            rc = vs_setf(sys, result, "ref.%s", rname);
        }
        if (rc == KEEL_OK) {
            rc = vs_setf(sys, rname, "pname.%s", result);
        }
    } else if (rc == KEEL_OK && rref != NULL) {
        result = actor_ref(sys, d, rref);
        rc = result == NULL ? KEEL_EINVAL : KEEL_OK;
    }
    if (rc == KEEL_OK) {
        keel_capdata cd = {
            {body, strlen(body)}, (const char *const *)sl.v, sl.n};
        rc = keel_syscall_send(sys, to, method, &cd, result);
    }
    if (rc == KEEL_OK && rname != NULL &&
        !json_is_false(json_object_get(op, "subscribe"))) {
        rc = keel_syscall_subscribe(sys, result);
    }
    vrefs_free(&sl);
    free(result);
    free(body);
    free(to);
    return rc;
}

static int op_resolve(keel_syscall *sys, const keel_delivery *d,
                      const json_t *op)
{
    char *p = actor_ref(sys, d, json_object_get(op, "p"));
    char *body = op_body(op);
    vrefs sl = {0};
    int rc = p == NULL || body == NULL ? KEEL_EINVAL : KEEL_OK;
    if (rc == KEEL_OK) {
        rc = op_slots(sys, d, op, &sl);
    }
    if (rc == KEEL_OK) {
        keel_capdata cd = {
            {body, strlen(body)}, (const char *const *)sl.v, sl.n};
        rc = keel_syscall_resolve(
            sys, p, json_is_true(json_object_get(op, "rejected")), &cd);
    }
    vrefs_free(&sl);
    free(body);
    free(p);
    return rc;
}

static int op_set(keel_syscall *sys, const json_t *op)
{
    char *key = op_key(op);
    const char *val = json_string_value(json_object_get(op, "value"));
    size_t len = (size_t)json_integer_value(json_object_get(op, "len"));
    char *big = NULL;
    int rc = key == NULL ? KEEL_ENOMEM : KEEL_OK;
    if (rc == KEEL_OK && val == NULL) {
        big = malloc(len + 1);
        rc = big == NULL ? KEEL_ENOMEM : KEEL_OK;
        if (big != NULL) {
            memset(big, 'v', len);
        }
    }
    if (rc == KEEL_OK) {
        rc = keel_syscall_vatstore_set(sys, key, val != NULL ? val : big,
                                       val != NULL ? strlen(val) : len);
    }
    free(big);
    free(key);
    return rc;
}

/* "list": the keys after prefix, in the vatstore's order, joined by ','
 * into the key "into" (empty when none). */
static int op_list(keel_syscall *sys, const json_t *op)
{
    const char *prefix = json_string_value(json_object_get(op, "prefix"));
    const char *into = json_string_value(json_object_get(op, "into"));
    char after[KEEL_VATSTORE_KEY_MAX + 1];
    char key[KEEL_VATSTORE_KEY_MAX + 1];
    char out[4096] = "";
    int rc = prefix == NULL || into == NULL ? KEEL_EINVAL : KEEL_OK;
    if (rc == KEEL_OK) {
        snprintf(after, sizeof(after), "%s", prefix);
    }
    while (rc == KEEL_OK) {
        rc = keel_syscall_vatstore_next_key(sys, after, key, sizeof(key));
        if (rc != 1 || strncmp(key, prefix, strlen(prefix)) != 0) {
            rc = rc < 0 ? rc : KEEL_OK;
            break;
        }
        rc = KEEL_OK;
        snprintf(after, sizeof(after), "%s", key);
        size_t n = strlen(out);
        snprintf(out + n, sizeof(out) - n, "%s%s", n > 0 ? "," : "", key);
    }
    if (rc == KEEL_OK) {
        rc = keel_syscall_vatstore_set(sys, into, out, strlen(out));
    }
    return rc;
}

/* "copy": read "from" and write its value to "to" (in one crank, so the
 * read must see the crank's own earlier write). */
static int op_copy(keel_syscall *sys, const json_t *op)
{
    const char *from = json_string_value(json_object_get(op, "from"));
    const char *to = json_string_value(json_object_get(op, "to"));
    char *v = from != NULL ? vs_getf(sys, "%s", from) : NULL;
    int rc = v == NULL || to == NULL
                 ? KEEL_EINVAL
                 : keel_syscall_vatstore_set(sys, to, v, strlen(v));
    free(v);
    return rc;
}

static int run_op(keel_syscall *sys, const keel_delivery *d, const json_t *op)
{
    const char *name = json_string_value(json_object_get(op, "op"));
    if (name == NULL) {
        return KEEL_EINVAL;
    }
    if (strcmp(name, "send") == 0) {
        return op_send(sys, d, op);
    }
    if (strcmp(name, "resolve") == 0) {
        return op_resolve(sys, d, op);
    }
    if (strcmp(name, "subscribe") == 0) {
        char *p = actor_ref(sys, d, json_object_get(op, "p"));
        int rc = p == NULL ? KEEL_EINVAL : keel_syscall_subscribe(sys, p);
        free(p);
        return rc;
    }
    if (strcmp(name, "exit") == 0) {
        keel_capdata cd = {{"{}", 2}, NULL, 0};
        return keel_syscall_exit(
            sys, json_is_true(json_object_get(op, "failure")), &cd);
    }
    if (strcmp(name, "set") == 0) {
        return op_set(sys, op);
    }
    if (strcmp(name, "del") == 0) {
        char *key = op_key(op);
        int rc =
            key == NULL ? KEEL_ENOMEM : keel_syscall_vatstore_delete(sys, key);
        free(key);
        return rc;
    }
    if (strcmp(name, "alloc") == 0 || strcmp(name, "allocp") == 0) {
        const char *n = json_string_value(json_object_get(op, "name"));
        char o[KEEL_VREF_MAX];
        int rc = n == NULL        ? KEEL_EINVAL
                 : name[5] == 'p' ? keel_syscall_alloc_promise(sys, o)
                                  : keel_syscall_alloc_object(sys, o);
        return rc == KEEL_OK ? vs_setf(sys, o, "ref.%s", n) : rc;
    }
    if (strcmp(name, "on") == 0) {
        const char *m = json_string_value(json_object_get(op, "method"));
        char *s = json_dumps(json_object_get(op, "ops"), JSON_COMPACT);
        int rc =
            m == NULL || s == NULL ? KEEL_EINVAL : vs_setf(sys, s, "on.%s", m);
        free(s);
        return rc;
    }
    if (strcmp(name, "list") == 0) {
        return op_list(sys, op);
    }
    if (strcmp(name, "get") == 0 || strcmp(name, "next") == 0) {
        /* The result is ignored: only the kernel's verdict on the call
         * may end the vat. */
        char *key = op_key(op);
        char buf[KEEL_VATSTORE_KEY_MAX + 1];
        keel_bytes v;
        size_t cap = (size_t)json_integer_value(json_object_get(op, "cap"));
        if (key == NULL) {
            return KEEL_ENOMEM;
        }
        if (name[0] == 'g') {
            keel_syscall_vatstore_get(sys, key, &v);
        } else {
            keel_syscall_vatstore_next_key(sys, key, buf,
                                           cap > 0 ? cap : sizeof(buf));
        }
        free(key);
        return KEEL_OK;
    }
    if (strcmp(name, "copy") == 0) {
        return op_copy(sys, op);
    }
    if (strcmp(name, "exportp") == 0) {
        /* one message to its own root carrying n fresh p+N: n promises
         * this vat decides */
        json_int_t n = json_integer_value(json_object_get(op, "n"));
        char **slots = calloc((size_t)n, sizeof(*slots));
        int rc = slots == NULL ? KEEL_ENOMEM : KEEL_OK;
        for (json_int_t i = 0; rc == KEEL_OK && i < n; i++) {
            slots[i] = malloc(KEEL_VREF_MAX);
            rc = slots[i] == NULL ? KEEL_ENOMEM
                                  : keel_syscall_alloc_promise(sys, slots[i]);
        }
        if (rc == KEEL_OK) {
            keel_capdata cd = {
                {"{}", 2}, (const char *const *)slots, (size_t)n};
            rc = keel_syscall_send(sys, "o+0", "hold", &cd, NULL);
        }
        for (json_int_t i = 0; slots != NULL && i < n; i++) {
            free(slots[i]);
        }
        free(slots);
        return rc;
    }
    if (strcmp(name, "fill") == 0) {
        /* n keys f<i, 8 digits> = "x": a vat that holds a lot. */
        json_int_t n = json_integer_value(json_object_get(op, "n"));
        int rc = KEEL_OK;
        for (json_int_t i = 0; rc == KEEL_OK && i < n; i++) {
            char key[24];
            snprintf(key, sizeof(key), "f%08lld", (long long)i);
            rc = keel_syscall_vatstore_set(sys, key, "x", 1);
        }
        return rc;
    }
    if (strcmp(name, "fail") == 0) {
        return T_FAIL; /* deliver() fails: the crank aborts */
    }
    return KEEL_EINVAL;
}

static int run_ops(keel_syscall *sys, const keel_delivery *d, const json_t *ops)
{
    const json_t *op;
    size_t i;
    if (!json_is_array(ops)) {
        return KEEL_EINVAL;
    }
    json_array_foreach(ops, i, op)
    {
        int rc = run_op(sys, d, op);
        if (rc > 0) {
            /* Outside the contract (KEEL_OK or a negative error): go on,
             * as a vat that checks rc < 0 would, and leave a record. */
            char what[96];
            snprintf(what, sizeof(what), "%s returned %d",
                     json_string_value(json_object_get(op, "op")), rc);
            rc = vs_setf(sys, what, "bad_rc");
        }
        if (rc != 0) {
            return rc;
        }
    }
    return KEEL_OK;
}

static int actor_bootstrap(keel_syscall *sys, const keel_delivery *d)
{
    json_t *body = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    const char *name;
    json_t *ref;
    int rc = body != NULL ? KEEL_OK : KEEL_EINVAL;
    json_object_foreach(json_object_get(body, "vats"), name, ref)
    {
        json_int_t i = json_integer_value(json_object_get(ref, "@slot"));
        if (rc == KEEL_OK && (size_t)i < d->args.nslots) {
            rc = vs_setf(sys, d->args.slots[i], "ref.%s", name);
        }
    }
    json_decref(body);
    return rc;
}

/* msg.<n> = "method target body[ slots=a,b]"; ref.<method>.<i> / .result. */
static int actor_log(keel_syscall *sys, const keel_delivery *d)
{
    char slots[512] = "";
    char *line = NULL;
    uint64_t n = 0;
    int rc = vs_incr(sys, "msgs", &n);
    for (size_t i = 0; rc == KEEL_OK && i < d->args.nslots; i++) {
        size_t l = strlen(slots);
        snprintf(slots + l, sizeof(slots) - l, "%s%s", i == 0 ? " slots=" : ",",
                 d->args.slots[i]);
        rc = vs_setf(sys, d->args.slots[i], "ref.%s.%zu", d->method, i);
    }
    if (rc == KEEL_OK && d->result != NULL) {
        rc = vs_setf(sys, d->result, "ref.%s.result", d->method);
    }
    if (rc == KEEL_OK && asprintf(&line, "%s %s %.*s%s", d->method, d->target,
                                  (int)d->args.body.len,
                                  (const char *)d->args.body.ptr, slots) < 0) {
        rc = KEEL_ENOMEM;
        line = NULL;
    }
    if (rc == KEEL_OK) {
        rc = vs_setf(sys, line, "msg.%llu", (unsigned long long)n);
    }
    free(line);
    return rc;
}

static int actor_notify(keel_syscall *sys, const keel_delivery *d)
{
    char *pname = vs_getf(sys, "pname.%s", d->promise);
    const char *name = pname != NULL ? pname : d->promise;
    char *line = NULL;
    char key[KEEL_VATSTORE_KEY_MAX];
    int rc = KEEL_OK;
    if (asprintf(&line, "%s %.*s", d->rejected ? "rejected" : "fulfilled",
                 (int)d->resolution.body.len,
                 (const char *)d->resolution.body.ptr) < 0) {
        rc = KEEL_ENOMEM;
        line = NULL;
    }
    if (rc == KEEL_OK) {
        rc = vs_setf(sys, line, "notify.%s", name);
    }
    snprintf(key, sizeof(key), "notifies.%s", name);
    if (rc == KEEL_OK) {
        rc = vs_incr(sys, key, NULL);
    }
    if (rc == KEEL_OK) {
        rc = vs_incr(sys, "notes", NULL);
    }
    for (size_t i = 0; rc == KEEL_OK && i < d->resolution.nslots; i++) {
        rc = vs_setf(sys, d->resolution.slots[i], "ref.%s.%zu", name, i);
    }
    free(line);
    free(pname);
    return rc;
}

static int actor_start(keel_syscall *sys, const char *params_json, void **state)
{
    *state = NULL; /* everything is in the vatstore */
    return KEEL_OK;
}

static int actor_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    json_t *script = NULL;
    int rc = KEEL_OK;
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return actor_notify(sys, d);
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return actor_bootstrap(sys, d);
    }
    if (strcmp(d->method, "do") == 0) {
        json_t *body = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
        rc = run_ops(sys, d, json_object_get(body, "ops"));
        json_decref(body);
        if (rc == KEEL_OK && d->result != NULL) {
            keel_capdata cd = {{"null", 4}, NULL, 0};
            rc = keel_syscall_resolve(sys, d->result, 0, &cd);
        }
        return rc;
    }
    rc = actor_log(sys, d);
    char *on = rc == KEEL_OK ? vs_getf(sys, "on.%s", d->method) : NULL;
    if (on != NULL) {
        script = json_loads(on, 0, NULL);
        rc = run_ops(sys, d, script);
    }
    json_decref(script);
    free(on);
    return rc;
}

static void actor_stop(void *state)
{
}

static const keel_vat_ops t_actor = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_actor",
    .start = actor_start,
    .deliver = actor_deliver,
    .stop = actor_stop,
};

/* ---- t_async ------------------------------------------------------------- */

typedef struct ajob {
    char result[KEEL_VREF_MAX];
    uint64_t in;
    uint64_t out;
    int bad;   /* make an illegal syscall when done */
    int leave; /* exit (and nothing else) when done */
} ajob;

static void ajob_work(void *arg)
{
    ajob *j = arg;
    j->out = j->in * j->in + 7;
}

/* Out of crank: answer the message the job was started for. */
static void ajob_done(void *arg, keel_syscall *sys)
{
    ajob *j = arg;
    char body[64];
    snprintf(body, sizeof(body), "{\"value\":%llu}",
             (unsigned long long)j->out);
    keel_capdata cd = {{body, strlen(body)}, NULL, 0};
    if (j->bad) {
        keel_syscall_send(sys, "o-99", "forged", &cd, NULL);
    } else if (j->leave) {
        keel_syscall_exit(sys, 0, &cd);
    } else {
        keel_syscall_resolve(sys, j->result, 0, &cd);
    }
    free(j);
}

static void ajob_timer(void *arg, keel_syscall *sys)
{
    ajob *j = arg;
    j->out = j->in;
    ajob_done(j, sys);
}

static int async_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    json_t *body = NULL;
    ajob *j = NULL;
    int rc = KEEL_EINVAL;
    if (d->kind != KEEL_DELIVER_MESSAGE || d->result == NULL) {
        goto out;
    }
    body = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    snprintf(j->result, sizeof(j->result), "%s", d->result);
    j->in = (uint64_t)json_integer_value(json_object_get(body, "i"));
    if (strcmp(d->method, "work") == 0 || strcmp(d->method, "work_bad") == 0 ||
        strcmp(d->method, "work_exit") == 0) {
        j->bad = strcmp(d->method, "work_bad") == 0;
        j->leave = strcmp(d->method, "work_exit") == 0;
        rc = keel_vat_work(sys, ajob_work, ajob_done, j);
    } else if (strcmp(d->method, "wait") == 0) {
        uint64_t ms = (uint64_t)json_integer_value(json_object_get(body, "ms"));
        rc = keel_vat_timer(sys, ms, ajob_timer, j);
    }
    if (rc == KEEL_OK) {
        j = NULL; /* the completion frees it */
    }
out:
    free(j);
    json_decref(body);
    return rc;
}

static const keel_vat_ops t_async = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_async",
    .start = actor_start,
    .deliver = async_deliver,
    .stop = actor_stop,
};

/* ---- t_cross_a / t_cross_b (scenario 13) --------------------------------- */

static int cross_a_start(keel_syscall *sys, const char *params_json,
                         void **state)
{
    tctx *ctx = NULL;
    int rc = ctx_from_params(params_json, &ctx);
    if (rc == KEEL_OK) {
        ctx->a_sys = sys;
    }
    *state = NULL;
    return rc;
}

static int cross_b_start(keel_syscall *sys, const char *params_json,
                         void **state)
{
    tctx *ctx = NULL;
    int rc = ctx_from_params(params_json, &ctx);
    *state = ctx;
    return rc;
}

/* cross({"fail":bool,"forge":bool}): B writes its own key, then A (through
 * the handle A's start left) writes "crossed" and sends "crossed" to carol
 * (with forge, to an o-N it was never given), all while B's crank is open;
 * then B fails or answers. */
static int cross_b_deliver(void *state, keel_syscall *sys,
                           const keel_delivery *d)
{
    tctx *ctx = state;
    keel_capdata empty = {{"{}", 2}, NULL, 0};
    if (d->kind != KEEL_DELIVER_MESSAGE || strcmp(d->method, "cross") != 0) {
        return KEEL_EINVAL;
    }
    json_t *body = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    int fail = json_is_true(json_object_get(body, "fail"));
    int forge = json_is_true(json_object_get(body, "forge"));
    json_decref(body);
    char *carol = vs_getf(ctx->a_sys, "ref.carol");
    int rc = carol == NULL ? KEEL_EINVAL : vs_setf(sys, "1", "bsaw");
    if (rc == KEEL_OK) {
        rc = vs_setf(ctx->a_sys, "1", "crossed");
    }
    if (rc == KEEL_OK) {
        rc = keel_syscall_send(ctx->a_sys, forge ? "o-99" : carol, "crossed",
                               &empty, NULL);
    }
    if (rc == KEEL_OK && fail) {
        rc = 1;
    }
    if (rc == KEEL_OK && d->result != NULL) {
        keel_capdata cd = {{"null", 4}, NULL, 0};
        rc = keel_syscall_resolve(sys, d->result, 0, &cd);
    }
    free(carol);
    return rc;
}

static const keel_vat_ops t_cross_a = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_cross_a",
    .start = cross_a_start,
    .deliver = actor_deliver,
    .stop = actor_stop,
};

static const keel_vat_ops t_cross_b = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_cross_b",
    .start = cross_b_start,
    .deliver = cross_b_deliver,
    .stop = actor_stop,
};

/* ---- t_many (scenario 14) ------------------------------------------------ */

/*
 * Params {"role":"sender"|"peer"|"watcher","n":N}.
 *   sender   bootstrap: N × (alloc p; send peer work() result p; send
 *            watcher watch(p); subscribe p twice).
 *   peer     work(): stores its result as w.<k>; at the N-th, resolves all
 *            N (so all N are outstanding at once).
 *   watcher  watch(p): subscribes to p.
 *   sender and watcher, on notify(p): notes += 1; seen.<p> set, or dups += 1
 *            if it already was; rejects += 1 for a rejection.
 */
typedef struct many {
    int role; /* 0 sender, 1 peer, 2 watcher */
    uint64_t n;
} many;

static int many_start(keel_syscall *sys, const char *params_json, void **state)
{
    json_t *p = json_loads(params_json, 0, NULL);
    const char *role = json_string_value(json_object_get(p, "role"));
    many *m = calloc(1, sizeof(*m));
    int rc = m == NULL || role == NULL ? KEEL_EINVAL : KEEL_OK;
    if (rc == KEEL_OK) {
        m->role = strcmp(role, "sender") == 0 ? 0
                  : strcmp(role, "peer") == 0 ? 1
                                              : 2;
        m->n = (uint64_t)json_integer_value(json_object_get(p, "n"));
    }
    json_decref(p);
    if (rc != KEEL_OK) {
        free(m);
        m = NULL;
    }
    *state = m;
    return rc;
}

static char *bootstrap_root(const keel_delivery *d, const char *name)
{
    json_t *b = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    json_int_t i = json_integer_value(json_object_get(
        json_object_get(json_object_get(b, "vats"), name), "@slot"));
    json_decref(b);
    return (size_t)i < d->args.nslots ? strdup(d->args.slots[i]) : NULL;
}

static int many_send_all(many *m, keel_syscall *sys, const keel_delivery *d)
{
    char *peer = bootstrap_root(d, "peer");
    char *watcher = bootstrap_root(d, "watcher");
    int rc = peer == NULL || watcher == NULL ? KEEL_EINVAL : KEEL_OK;
    for (uint64_t j = 0; rc == KEEL_OK && j < m->n; j++) {
        char p[KEEL_VREF_MAX];
        const char *slot[1] = {p};
        keel_capdata none = {{"{}", 2}, NULL, 0};
        keel_capdata watch = {{"{\"p\":{\"@slot\":0}}", 17}, slot, 1};
        rc = keel_syscall_alloc_promise(sys, p);
        if (rc == KEEL_OK) {
            rc = keel_syscall_send(sys, peer, "work", &none, p);
        }
        if (rc == KEEL_OK) {
            rc = keel_syscall_send(sys, watcher, "watch", &watch, NULL);
        }
        for (int twice = 0; rc == KEEL_OK && twice < 2; twice++) {
            rc = keel_syscall_subscribe(sys, p);
        }
    }
    free(peer);
    free(watcher);
    return rc;
}

static int many_work(many *m, keel_syscall *sys, const keel_delivery *d)
{
    uint64_t k = 0;
    int rc = d->result == NULL ? KEEL_EINVAL : vs_incr(sys, "works", &k);
    if (rc == KEEL_OK) {
        rc = vs_setf(sys, d->result, "w.%llu", (unsigned long long)k);
    }
    for (uint64_t i = 1; rc == KEEL_OK && k == m->n && i <= m->n; i++) {
        char body[48];
        char *p = vs_getf(sys, "w.%llu", (unsigned long long)i);
        snprintf(body, sizeof(body), "{\"ok\":%llu}", (unsigned long long)i);
        keel_capdata cd = {{body, strlen(body)}, NULL, 0};
        rc = p == NULL ? KEEL_EINVAL : keel_syscall_resolve(sys, p, 0, &cd);
        free(p);
    }
    return rc;
}

static int many_notify(keel_syscall *sys, const keel_delivery *d)
{
    char *seen = vs_getf(sys, "seen.%s", d->promise);
    int rc = vs_incr(sys, "notes", NULL);
    if (rc == KEEL_OK) {
        rc = seen != NULL ? vs_incr(sys, "dups", NULL)
                          : vs_setf(sys, "1", "seen.%s", d->promise);
    }
    if (rc == KEEL_OK && d->rejected) {
        rc = vs_incr(sys, "rejects", NULL);
    }
    free(seen);
    return rc;
}

static int many_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    many *m = state;
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return m->role != 1 ? many_notify(sys, d) : KEEL_EINVAL;
    }
    if (m->role == 0 && strcmp(d->method, "bootstrap") == 0) {
        return many_send_all(m, sys, d);
    }
    if (m->role == 1 && strcmp(d->method, "work") == 0) {
        return many_work(m, sys, d);
    }
    if (m->role == 2 && strcmp(d->method, "watch") == 0 &&
        d->args.nslots == 1) {
        return keel_syscall_subscribe(sys, d->args.slots[0]);
    }
    return KEEL_EINVAL;
}

static void many_stop(void *state)
{
    free(state);
}

static const keel_vat_ops t_many = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_many",
    .start = many_start,
    .deliver = many_deliver,
    .stop = many_stop,
};

/* ---- t_badstart ---------------------------------------------------------- */

static int badstart_start(keel_syscall *sys, const char *params_json,
                          void **state)
{
    *state = NULL;
    return 1;
}

static const keel_vat_ops t_badstart = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_badstart",
    .start = badstart_start,
    .deliver = actor_deliver,
    .stop = actor_stop,
};

/* ---- t_restart ----------------------------------------------------------- */

/* A t_actor whose start() counts its starts in the vatstore: a syscall
 * made outside any crank. */
static int restart_start(keel_syscall *sys, const char *params_json,
                         void **state)
{
    *state = NULL;
    return vs_incr(sys, "starts", NULL);
}

static const keel_vat_ops t_restart = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_restart",
    .start = restart_start,
    .deliver = actor_deliver,
    .stop = actor_stop,
};

/* ---- t_job --------------------------------------------------------------- */

/*
 * Async work the test watches through its context (params {"ctx":...}).
 *   go({"fail":b})  asks for a thread-pool job and writes asked = 1; with
 *                   fail it then makes an illegal syscall (the crank
 *                   aborts), else it resolves the result. The job's work
 *                   counts itself in ctx->jobs_run and records the WAL's
 *                   durable LSN as it starts; its done writes done = 1.
 *                   With "pad":n it also writes n bytes to pad.<job>, so
 *                   that a few such cranks fill a small store.
 *   go_exit()       asks for a job and exits in the same crank.
 *   arm()           asks for a timer an hour away.
 *   leave()         exits.
 */
static void tjob_work(void *arg)
{
    tjob *j = arg;
    atomic_store(&j->ctx->job_durable_lsn, keel_kernel_durable_lsn(j->ctx->k));
    atomic_fetch_add(&j->ctx->jobs_run, 1);
}

static void tjob_done(void *arg, keel_syscall *sys)
{
    tjob *j = arg;
    if (j != NULL) {
        atomic_fetch_add(&j->ctx->dones, 1);
    }
    vs_setf(sys, "1", "done");
}

static int tjob_start(keel_syscall *sys, const char *params_json, void **state)
{
    tctx *ctx = NULL;
    int rc = ctx_from_params(params_json, &ctx);
    *state = ctx;
    return rc;
}

static int tjob_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    keel_capdata cd = {{"null", 4}, NULL, 0};
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL;
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return KEEL_OK;
    }
    if (strcmp(d->method, "leave") == 0) {
        return keel_syscall_exit(sys, 0, &cd);
    }
    if (strcmp(d->method, "arm") == 0) {
        return keel_vat_timer(sys, 3600u * 1000, tjob_done, NULL);
    }
    tctx *ctx = state;
    tjob *j = &ctx->jobs[ctx->njobs++ % 4];
    j->ctx = ctx;
    int rc = keel_vat_work(sys, tjob_work, tjob_done, j);
    if (rc == KEEL_OK) {
        rc = vs_setf(sys, "1", "asked");
    }
    if (rc == KEEL_OK && strcmp(d->method, "go_exit") == 0) {
        return keel_syscall_exit(sys, 0, &cd);
    }
    json_t *body = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    int fail = json_is_true(json_object_get(body, "fail"));
    json_int_t pad = json_integer_value(json_object_get(body, "pad"));
    json_decref(body);
    if (rc == KEEL_OK && pad > 0 && pad < (json_int_t)KEEL_VATSTORE_VALUE_MAX) {
        char *v = malloc((size_t)pad + 1);
        ck_assert_ptr_nonnull(v);
        memset(v, 'x', (size_t)pad);
        v[pad] = '\0';
        rc = vs_setf(sys, v, "pad.%u", ctx->njobs);
        free(v);
    }
    if (rc == KEEL_OK && fail) {
        return keel_syscall_send(sys, "o-99", "forged", &cd, NULL);
    }
    if (rc == KEEL_OK && d->result != NULL) {
        rc = keel_syscall_resolve(sys, d->result, 0, &cd);
    }
    return rc;
}

static const keel_vat_ops t_job = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_job",
    .start = tjob_start,
    .deliver = tjob_deliver,
    .stop = actor_stop,
};

static const keel_vat_ops *resolve_vat(void *arg, const char *name)
{
    static const keel_vat_ops *const vats[] = {
        &t_actor, &t_async,    &t_cross_a, &t_cross_b,
        &t_many,  &t_badstart, &t_restart, &t_job,
    };
    for (size_t i = 0; i < sizeof(vats) / sizeof(vats[0]); i++) {
        if (strcmp(vats[i]->name, name) == 0) {
            return vats[i];
        }
    }
    return NULL;
}

/* ======================================================================== */
/* fixture and helpers                                                      */
/* ======================================================================== */

typedef struct tk {
    char *root;
    char *state;
    keel_kernel_options o;
    keel_kernel *k;
    tctx ctx;
} tk;

/* s with every ' turned into " (JSON in C strings, readably). malloc'd. */
static char *sq(const char *s)
{
    char *d = strdup(s);
    ck_assert_ptr_nonnull(d);
    for (char *p = d; *p != '\0'; p++) {
        if (*p == '\'') {
            *p = '"';
        }
    }
    return d;
}

static void tk_init(tk *t)
{
    memset(t, 0, sizeof(*t));
    t->root = tu_tmpdir("kernel");
    t->state = tu_path(t->root, "state");
    keel_kernel_options_init(&t->o);
    t->o.resolve_vat = resolve_vat;
}

static void tk_open(tk *t)
{
    keel_diag d = {0};
    int rc = keel_kernel_open(t->state, &t->o, &t->k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s: %s", keel_err_name(rc), d.msg);
}

static void tk_close(tk *t)
{
    keel_diag d = {0};
    int rc = keel_kernel_close(t->k, &d);
    t->k = NULL;
    ck_assert_msg(rc == KEEL_OK, "close: %s: %s", keel_err_name(rc), d.msg);
}

static void tk_free(tk *t)
{
    if (t->k != NULL) {
        tk_close(t);
    }
    tu_rmrf(t->root);
    free(t->root);
    free(t->state);
}

static void tk_boot(tk *t, const char *config_sq)
{
    keel_diag d = {0};
    char *cfg = sq(config_sq);
    int rc = keel_kernel_boot(t->k, cfg, t->root, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s: %s\n%s", keel_err_name(rc), d.msg,
                  cfg);
    free(cfg);
}

/* init + open + boot a cluster of t_actor vats named in names (the first
 * is the bootstrap vat). */
static void tk_actors(tk *t, const char *const *names, size_t n)
{
    char cfg[2048];
    int len =
        snprintf(cfg, sizeof(cfg), "{'bootstrap':'%s','vats':{", names[0]);
    for (size_t i = 0; i < n; i++) {
        len += snprintf(cfg + len, sizeof(cfg) - (size_t)len,
                        "%s'%s':{'builtin':'t_actor'}", i > 0 ? "," : "",
                        names[i]);
    }
    snprintf(cfg + len, sizeof(cfg) - (size_t)len, "}}");
    tk_init(t);
    tk_open(t);
    tk_boot(t, cfg);
}

#define TK_ACTORS(t, ...)                                           \
    do {                                                            \
        static const char *const names_[] = {__VA_ARGS__};          \
        tk_actors((t), names_, sizeof(names_) / sizeof(names_[0])); \
    } while (0)

static keel_run_stats tk_run(tk *t)
{
    keel_diag d = {0};
    keel_run_stats s;
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
    int rc = keel_kernel_run(t->k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(!s.timed_out, "run timed out after %u ms", RUN_TIMEOUT_MS);
    ck_assert(s.idle);
    return s;
}

/* Send method(args) to vat's root from outside; its result kref into kref
 * (may be NULL). */
static void tk_send(tk *t, const char *vat, const char *method,
                    const char *args_sq, char *kref)
{
    keel_diag d = {0};
    char buf[KEEL_VREF_MAX];
    char *args = sq(args_sq);
    int rc = keel_kernel_send(t->k, vat, method, args,
                              kref != NULL ? kref : buf, &d);
    ck_assert_msg(rc == KEEL_OK, "send %s.%s: %s: %s", vat, method,
                  keel_err_name(rc), d.msg);
    free(args);
}

/* Send t_actor vat the script ops_sq (a JSON array, ' for "). */
static void tk_do(tk *t, const char *vat, const char *ops_sq, char *kref)
{
    char *body = malloc(strlen(ops_sq) + 16);
    ck_assert_ptr_nonnull(body);
    sprintf(body, "{'ops':%s}", ops_sq);
    tk_send(t, vat, "do", body, kref);
    free(body);
}

/* The vatstore value (malloc'd), or NULL when absent. */
static char *tk_vs(tk *t, const char *vat, const char *key)
{
    keel_diag d = {0};
    char *val = NULL;
    size_t len = 0;
    int rc = keel_kernel_vatstore_get(t->k, vat, key, &val, &len, &d);
    ck_assert_msg(rc >= 0, "vatstore_get %s %s: %s: %s", vat, key,
                  keel_err_name(rc), d.msg);
    return rc == 1 ? val : NULL;
}

/* Assert vat's vatstore key holds want (NULL: absent). */
static void ck_vs(tk *t, const char *vat, const char *key, const char *want)
{
    char *got = tk_vs(t, vat, key);
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

/* ck_vs with want in ' form. */
static void ck_vs_sq(tk *t, const char *vat, const char *key,
                     const char *want_sq)
{
    char *want = sq(want_sq);
    ck_vs(t, vat, key, want);
    free(want);
}

static json_t *tk_status(tk *t)
{
    keel_diag d = {0};
    char *s = NULL;
    int rc = keel_kernel_status_json(t->k, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "status: %s", d.msg);
    json_t *j = json_loads(s, 0, NULL);
    ck_assert_msg(j != NULL, "status is not JSON: %s", s);
    free(s);
    return j;
}

static json_int_t tk_status_int(tk *t, const char *field)
{
    json_t *st = tk_status(t);
    json_t *f = json_object_get(st, field);
    ck_assert_msg(json_is_integer(f), "status has no integer %s", field);
    json_int_t v = json_integer_value(f);
    json_decref(st);
    return v;
}

/* Vat's state in the status ("alive" / "terminated"; malloc'd), or NULL. */
static char *tk_vat_state(tk *t, const char *vat)
{
    json_t *st = tk_status(t);
    json_t *v;
    size_t i;
    char *state = NULL;
    json_array_foreach(json_object_get(st, "vats"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), vat) == 0) {
            state = strdup(json_string_value(json_object_get(v, "state")));
        }
    }
    json_decref(st);
    return state;
}

/* Assert vat's state; what (may be NULL) names the case. */
static void ck_vat_in(tk *t, const char *what, const char *vat,
                      const char *want)
{
    char *state = tk_vat_state(t, vat);
    ck_assert_msg(state != NULL && strcmp(state, want) == 0,
                  "%s%svat %s: expected %s, got %s", what != NULL ? what : "",
                  what != NULL ? ": " : "", vat, want,
                  state != NULL ? state : "(no such vat)");
    free(state);
}

static void ck_vat(tk *t, const char *vat, const char *want)
{
    ck_vat_in(t, NULL, vat, want);
}

/* No vat saw a syscall return a positive value (t_actor's bad_rc). */
static void ck_no_bad_rc(tk *t)
{
    json_t *st = tk_status(t);
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(st, "vats"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        char *bad = tk_vs(t, name, "bad_rc");
        ck_assert_msg(bad == NULL, "vat %s: a syscall %s", name, bad);
    }
    json_decref(st);
}

/* The kernel's run queue is empty, no promise is unresolved, and no
 * syscall returned outside the contract. */
static void ck_quiet(tk *t)
{
    ck_assert_int_eq(tk_status_int(t, "run_queue"), 0);
    ck_assert_int_eq(tk_status_int(t, "unresolved_promises"), 0);
    ck_no_bad_rc(t);
}

/* Assert promise kref's state (0/1/2) and, if want_sq, its body. */
static void ck_promise(tk *t, const char *kref, int state, const char *want_sq)
{
    keel_diag d = {0};
    char *body = NULL;
    int rc = keel_kernel_promise(t->k, kref, &body, &d);
    ck_assert_msg(rc == state, "promise %s: expected state %d, got %d (%s)",
                  kref, state, rc, body != NULL ? body : d.msg);
    if (want_sq != NULL) {
        char *want = sq(want_sq);
        ck_assert_msg(body != NULL && strcmp(body, want) == 0,
                      "promise %s: expected %s, got %s", kref, want,
                      body != NULL ? body : "(none)");
        free(want);
    }
    free(body);
}

/* ---- the WAL ------------------------------------------------------------- */

typedef struct walhit {
    uint64_t lsn; /* 0: none */
    int kind;
} walhit;

/*
 * Scan STATE/wal. @return the number of records of kind (0: any) whose
 * payload contains needle (NULL: every record); *first (optional) the
 * first such record.
 */
static size_t wal_scan(tk *t, int kind, const char *needle, walhit *first)
{
    char *dir = tu_path(t->state, "wal");
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    size_t n = 0;
    int rc = keel_wal_reader_open(dir, NULL, 0, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "wal reader: %s", d.msg);
    if (first != NULL) {
        first->lsn = 0;
    }
    /* A needle naming a key ("vs.2.kept") is searched as the key's bytes
     * (store/keyspace.h), anything else as it is. */
    keel__key nk;
    const void *nb = needle;
    size_t nn = needle != NULL ? strlen(needle) : 0;
    if (needle != NULL && keel__ks_parse(needle, &nk)) {
        nb = nk.b;
        nn = nk.n;
    }
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        if ((kind != 0 && rec.kind != kind) ||
            (needle != NULL &&
             memmem(rec.payload.ptr, rec.payload.len, nb, nn) == NULL)) {
            continue;
        }
        if (n++ == 0 && first != NULL) {
            first->lsn = rec.lsn;
            first->kind = rec.kind;
        }
    }
    ck_assert_msg(rc == 0, "wal read: %s", d.msg);
    keel_wal_reader_close(r);
    free(dir);
    return n;
}

static uint64_t store_count(tk *t, const keel__key *prefix);
/* Key prefixes for store_count, by store/keyspace.h's encoders. */
#define KS_PREFIX(tag) keel__ks_table(&(keel__key){0}, (tag))
#define KS_VAT_PREFIX(tag, vid) \
    keel__ks_vat_prefix(&(keel__key){0}, (tag), (vid))

/* Run keel_kernel_step until the run queue is empty (no host polling, so
 * async completions wait). */
static void tk_drain(tk *t)
{
    keel_diag d = {0};
    int rc;
    for (int i = 0; (rc = keel_kernel_step(t->k, &d)) == 1; i++) {
        ck_assert_int_lt(i, 1000);
    }
    ck_assert_msg(rc == 0, "step: %s", d.msg);
}

/* ======================================================================== */
/* scenarios                                                                */
/* ======================================================================== */

/* §9.1: alice pings bob N times; each answer is i+1, seen in order. */
START_TEST(test_kernel_pingpong_answers_in_order)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'pingpong','params':{'role':'alice',"
                "'rounds':8}},"
                "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}");
    keel_run_stats s = tk_run(&t);
    ck_assert_uint_eq(s.cranks, 1 + 2 * 8); /* bootstrap, 8 × (ping, notify) */
    ck_vs(&t, "alice", "answers", "8");
    ck_vs(&t, "alice", "last", "9");
    /* nothing kept per round (a long run's vatstore stays bounded) */
    for (int i = 1; i <= 8; i++) {
        char key[16];
        snprintf(key, sizeof(key), "answer.%d", i);
        ck_vs(&t, "alice", key, NULL);
    }
    ck_vs(&t, "alice", "done", "1");
    ck_vat(&t, "alice", "alive");
    ck_vat(&t, "bob", "alive");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.2: messages to an unresolved promise wait, then reach the object it
 * resolves to, in order. */
START_TEST(test_kernel_promise_queue_delivered_in_order_on_resolve)
{
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_run(&t);
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'getp','result':'p'},"
          " {'op':'send','to':'$p','method':'m','body':{'n':1}},"
          " {'op':'send','to':'$p','method':'m','body':{'n':2}},"
          " {'op':'send','to':'$p','method':'m','body':{'n':3}}]",
          NULL);
    tk_run(&t);
    /* bob decides p and has not resolved it: m1..m3 wait on it. */
    ck_vs(&t, "bob", "msgs", "1");
    ck_vs(&t, "bob", "msg.1", "getp o+0 {}");
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"), 1);
    ck_assert_int_eq(tk_status_int(&t, "run_queue"), 0);
    ck_vs(&t, "alice", "notify.p", NULL);

    tk_do(&t, "bob",
          "[{'op':'alloc','name':'obj'},"
          " {'op':'resolve','p':'$getp.result','body':{'@slot':0},"
          "  'slots':['$obj']}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "bob", "msgs", "4");
    ck_vs_sq(&t, "bob", "msg.2", "m o+1 {'n':1}");
    ck_vs_sq(&t, "bob", "msg.3", "m o+1 {'n':2}");
    ck_vs_sq(&t, "bob", "msg.4", "m o+1 {'n':3}");
    ck_vs_sq(&t, "alice", "notify.p", "fulfilled {'@slot':0}");
    char *obj = tk_vs(&t, "alice", "ref.p.0");
    ck_assert_msg(obj != NULL && strncmp(obj, "o-", 2) == 0,
                  "alice imports bob's object, got %s", obj);
    free(obj);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.3: a message to a rejected promise is rejected with the same reason;
 * to a promise fulfilled with data, "cannot send to a non-object". */
static void settled_promise_case(const char *resolve_sq, const char *want_sq)
{
    char script[512];
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    snprintf(script, sizeof(script), "[{'op':'on','method':'q','ops':[%s]}]",
             resolve_sq);
    tk_do(&t, "bob", script, NULL);
    /* No subscription: a notify would retire alice's vref for r. */
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'q','result':'r',"
          "  'subscribe':false}]",
          NULL);
    tk_run(&t);
    tk_do(&t, "alice", "[{'op':'send','to':'$r','method':'m','result':'a'}]",
          NULL);
    tk_run(&t);
    ck_vs_sq(&t, "alice", "notify.a", want_sq);
    ck_vs(&t, "alice", "notifies.a", "1");
    ck_vs(&t, "bob", "msgs", "1"); /* m never reached bob */
    ck_vat(&t, "bob", "alive");
    ck_quiet(&t);
    tk_free(&t);
}

START_TEST(test_kernel_rejected_promise_rejects_result_with_reason)
{
    settled_promise_case("{'op':'resolve','p':'$result','rejected':true,"
                         " 'body':{'error':'nope'}}",
                         "rejected {'error':'nope'}");
}
END_TEST

START_TEST(test_kernel_data_promise_rejects_send_as_non_object)
{
    settled_promise_case("{'op':'resolve','p':'$result','body':{'v':42}}",
                         "rejected {'error':'cannot send to a non-object'}");
}
END_TEST

/* §9.4: E(E(bob).getB()).foo(): foo is sent to getB's result before it is
 * even delivered, and reaches the object getB resolves to. */
START_TEST(test_kernel_pipelined_send_reaches_resolved_object)
{
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_do(&t, "bob",
          "[{'op':'on','method':'getB','ops':["
          "   {'op':'alloc','name':'B'},"
          "   {'op':'resolve','p':'$result','body':{'@slot':0},"
          "    'slots':['$B']}]},"
          " {'op':'on','method':'foo','ops':["
          "   {'op':'resolve','p':'$result','body':{'foo':'done'}}]}]",
          NULL);
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'getB','result':'b',"
          "  'subscribe':false},"
          " {'op':'send','to':'$b','method':'foo','body':{'x':1},"
          "  'result':'f'}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "bob", "msg.1", "getB o+0 {}");
    ck_vs_sq(&t, "bob", "msg.2", "foo o+1 {'x':1}");
    ck_vs_sq(&t, "alice", "notify.f", "fulfilled {'foo':'done'}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* Sets up §9.5: alice hands bob carol's root; bob says hello to it. */
static void intro_bob_to_carol(tk *t)
{
    tk_do(t, "carol",
          "[{'op':'on','method':'hello','ops':["
          "   {'op':'resolve','p':'$result','body':{'hi':'carol'}}]}]",
          NULL);
    tk_do(t, "bob",
          "[{'op':'on','method':'intro','ops':["
          "   {'op':'send','to':'$intro.0','method':'hello',"
          "    'body':{'from':'bob'},'result':'h'}]}]",
          NULL);
    tk_do(t, "alice",
          "[{'op':'send','to':'$bob','method':'intro','slots':['$carol']}]",
          NULL);
    tk_run(t);
}

/* §9.5: a reference handed over in a message can be used. */
START_TEST(test_kernel_capability_passed_lets_holder_send)
{
    tk t;
    TK_ACTORS(&t, "alice", "bob", "carol");
    intro_bob_to_carol(&t);
    ck_vs(&t, "bob", "ref.intro.0", "o-1"); /* bob's first import */
    ck_vs(&t, "carol", "msgs", "1");
    ck_vs_sq(&t, "carol", "msg.1", "hello o+0 {'from':'bob'}");
    ck_vs_sq(&t, "bob", "notify.h", "fulfilled {'hi':'carol'}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.5: a vat that uses an o-N it was never given (the very vref bob holds
 * carol by) is terminated; nobody else is affected. */
START_TEST(test_kernel_forged_reference_terminates_forger)
{
    char km[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "alice", "bob", "carol", "mallory");
    intro_bob_to_carol(&t);
    tk_do(&t, "mallory",
          "[{'op':'send','to':'o-1','method':'hello',"
          "  'body':{'from':'mallory'}}]",
          km);
    tk_run(&t);
    ck_vat(&t, "mallory", "terminated");
    ck_promise(&t, km, 2, "{'error':'vat terminated'}");
    ck_vs(&t, "carol", "msgs", "1");
    ck_vat(&t, "alice", "alive");
    ck_vat(&t, "bob", "alive");
    ck_vat(&t, "carol", "alive");
    /* bob still reaches carol. */
    tk_do(&t, "bob",
          "[{'op':'send','to':'$intro.0','method':'hello',"
          "  'body':{'again':true},'result':'h2'}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "carol", "msgs", "2");
    ck_vs_sq(&t, "bob", "notify.h2", "fulfilled {'hi':'carol'}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.6: mallory resolves a promise bob decides: mallory is terminated, the
 * promise it decided rejects and both its subscribers hear so; bob's
 * promise is untouched and bob resolves it later. */
START_TEST(test_kernel_illegal_resolve_terminates_and_rejects_decided)
{
    char km[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "alice", "bob", "carol", "mallory");
    tk_do(&t, "carol",
          "[{'op':'on','method':'watch','ops':["
          "   {'op':'subscribe','p':'$watch.0'}]}]",
          NULL);
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'q','result':'r'},"
          " {'op':'send','to':'$mallory','method':'q','result':'m'},"
          " {'op':'send','to':'$carol','method':'watch','slots':['$m']},"
          " {'op':'send','to':'$mallory','method':'take','slots':['$r']}]",
          NULL);
    tk_run(&t);
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"), 2);

    tk_do(&t, "mallory",
          "[{'op':'resolve','p':'$take.0','body':{'stolen':true}}]", km);
    tk_run(&t);
    ck_vat(&t, "mallory", "terminated");
    ck_promise(&t, km, 2, "{'error':'vat terminated'}");
    ck_vs_sq(&t, "alice", "notify.m", "rejected {'error':'vat terminated'}");
    ck_vs(&t, "alice", "notifies.m", "1");
    ck_vs(&t, "carol", "notes", "1");
    char *mv = tk_vs(&t, "carol", "ref.watch.0"); /* carol's vref for m */
    char key[64];
    ck_assert_ptr_nonnull(mv);
    snprintf(key, sizeof(key), "notify.%s", mv);
    ck_vs_sq(&t, "carol", key, "rejected {'error':'vat terminated'}");
    free(mv);
    ck_vs(&t, "alice", "notify.r", NULL);
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"), 1);
    ck_vat(&t, "alice", "alive");
    ck_vat(&t, "bob", "alive");
    ck_vat(&t, "carol", "alive");

    tk_do(&t, "bob", "[{'op':'resolve','p':'$q.result','body':{'ok':1}}]",
          NULL);
    tk_run(&t);
    ck_vs_sq(&t, "alice", "notify.r", "fulfilled {'ok':1}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.7: a vat that exits: its decided promises reject, later messages to
 * its objects reject their results; its exit crank itself commits. */
START_TEST(test_kernel_exit_rejects_decided_and_later_messages)
{
    char kx[KEEL_VREF_MAX], kr[KEEL_VREF_MAX];
    keel_diag d = {0};
    tk t;
    TK_ACTORS(&t, "alice", "ex");
    tk_do(&t, "alice", "[{'op':'send','to':'$ex','method':'q','result':'r'}]",
          NULL);
    tk_run(&t);
    tk_do(
        &t, "ex",
        "[{'op':'set','key':'kept','value':'v'},{'op':'exit','failure':false}]",
        kx);
    tk_run(&t);
    ck_vat(&t, "ex", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_promise(&t, kx, 1, "null"); /* the exit crank committed */
    ck_vs_sq(&t, "alice", "notify.r", "rejected {'error':'vat terminated'}");
    /* Its crank's vatstore write was committed (then dropped with it). */
    ck_assert_uint_ge(wal_scan(&t, KEEL_WAL_CRANK, "vs.2.kept", NULL), 1);

    tk_do(&t, "alice",
          "[{'op':'send','to':'$ex','method':'later','result':'l'}]", NULL);
    tk_run(&t);
    ck_vs_sq(&t, "alice", "notify.l", "rejected {'error':'vat terminated'}");
    ck_assert_int_eq(keel_kernel_send(t.k, "ex", "later", "{}", kr, &d),
                     KEEL_ENOENT);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.8: a vat makes syscalls, then fails: none of them has any effect, in
 * the store or in the WAL, and the vat is terminated. */
START_TEST(test_kernel_abort_discards_every_syscall)
{
    char kb[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "bad", "carol");
    tk_run(&t);
    ck_quiet(&t);
    tk_do(&t, "bad",
          "[{'op':'set','key':'secret','value':'1'},"
          " {'op':'alloc','name':'o'},"
          " {'op':'send','to':'$carol','method':'forbidden',"
          "  'slots':['$o'],'result':'fr'},"
          " {'op':'fail'}]",
          kb);
    tk_run(&t);
    ck_vat(&t, "bad", "terminated");
    ck_vat(&t, "carol", "alive");
    ck_promise(&t, kb, 2, "{'error':'vat terminated'}");
    ck_vs(&t, "carol", "msgs", NULL);
    ck_quiet(&t); /* no queued item, and fr never existed */
    /* Nothing committed carries the write or the message. (The script
     * itself is in the kernel-op record of the external send, so the
     * method name is looked for in crank and out-of-crank records.) */
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.1.secret", NULL), 0);
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_CRANK, "forbidden", NULL), 0);
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, "forbidden", NULL),
                      0);
    tk_free(&t);
}
END_TEST

/* §9.9: subscribing to a settled promise queues the notify at once. */
START_TEST(test_kernel_subscribe_late_queues_notify_at_once)
{
    keel_diag d = {0};
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_do(&t, "bob",
          "[{'op':'on','method':'q','ops':["
          "   {'op':'resolve','p':'$result','body':{'v':7}}]}]",
          NULL);
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'q','result':'r',"
          "  'subscribe':false}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "alice", "notify.r", NULL);
    tk_do(&t, "alice", "[{'op':'subscribe','p':'$r'}]", NULL);
    ck_assert_int_eq(keel_kernel_step(t.k, &d), 1); /* the subscribe crank */
    ck_assert_int_eq(tk_status_int(&t, "run_queue"), 1);
    ck_assert_int_eq(keel_kernel_step(t.k, &d), 1); /* the notify */
    ck_vs_sq(&t, "alice", "notify.r", "fulfilled {'v':7}");
    ck_assert_int_eq(keel_kernel_step(t.k, &d), 0);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.10: a counter persists its value; closed and reopened in process, the
 * kernel continues from exactly the committed value and activity hash. */
START_TEST(test_kernel_counter_continues_after_reopen)
{
    char kref[KEEL_VREF_MAX];
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'driver','vats':{"
                "'driver':{'builtin':'counter_driver','params':"
                "{'target':'counter','incrs':20}},"
                "'counter':{'builtin':'counter'}}}");
    tk_run(&t);
    ck_vs(&t, "driver", "seen", "20");
    ck_vs(&t, "driver", "max", "20");
    ck_vs(&t, "driver", "done", "1");
    ck_vs(&t, "counter", "count", "20");
    uint64_t hash = keel_kernel_activity_hash(t.k);
    uint64_t crank = keel_kernel_crank_number(t.k);
    tk_close(&t);

    tk_open(&t);
    ck_assert(keel_kernel_booted(t.k));
    ck_assert_uint_eq(keel_kernel_activity_hash(t.k), hash);
    ck_assert_uint_eq(keel_kernel_crank_number(t.k), crank);
    ck_vs(&t, "counter", "count", "20");
    tk_send(&t, "counter", "incr", "{'n':5}", kref);
    tk_run(&t);
    ck_promise(&t, kref, 1, "{'value':25}");
    ck_vs(&t, "counter", "count", "25");
    tk_close(&t);

    tk_open(&t);
    ck_vs(&t, "counter", "count", "25");
    ck_promise(&t, kref, 1, "{'value':25}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.11: the worker answers from a thread-pool job or a timer after its
 * crank ended and the run queue is empty; keel_kernel_run must deliver the
 * answer with no further input (bounded by RUN_TIMEOUT_MS). */
static void out_of_crank_case(const char *script_sq, const char *want_sq)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'t_actor'},"
                "'worker':{'builtin':'t_async'}}}");
    tk_do(&t, "alice", script_sq, NULL);
    tk_drain(&t);
    ck_assert_int_eq(tk_status_int(&t, "run_queue"), 0);
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"), 1);
    ck_vs(&t, "alice", "notify.w", NULL);
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 0);

    tk_run(&t);
    ck_vs_sq(&t, "alice", "notify.w", want_sq);
    ck_assert_uint_ge(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 1);
    ck_vat(&t, "worker", "alive");
    ck_quiet(&t);
    tk_free(&t);
}

START_TEST(test_kernel_out_of_crank_work_answer_delivered_without_input)
{
    out_of_crank_case("[{'op':'send','to':'$worker','method':'work',"
                      "  'body':{'i':6},'result':'w'}]",
                      "fulfilled {'value':43}");
}
END_TEST

START_TEST(test_kernel_out_of_crank_timer_answer_delivered_without_input)
{
    out_of_crank_case("[{'op':'send','to':'$worker','method':'wait',"
                      "  'body':{'i':5,'ms':20},'result':'w'}]",
                      "fulfilled {'value':5}");
}
END_TEST

/* KH2: a kernel opened without a host (keel__k_open with none) runs
 * cranks and refuses async work: the worker's keel_vat_work returns
 * KEEL_EINVAL, so its delivery fails and it is terminated, and the run
 * goes idle at once (nothing is ever pending). */
START_TEST(test_kernel_without_host_refuses_async_work)
{
    tk t;
    keel_diag d = {0};
    tk_init(&t);
    int rc = keel__k_open(t.state, &t.o, NULL, &t.k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s", d.msg);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'t_actor'},"
                "'worker':{'builtin':'t_async'}}}");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$worker','method':'work','body':{'i':6},"
          "  'result':'w'}]",
          NULL);
    keel_run_stats s = tk_run(&t);
    ck_assert_int_eq(s.idle, 1);
    ck_assert_uint_eq(s.aborted, 1);
    ck_vat(&t, "worker", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_vs_sq(&t, "alice", "notify.w", "rejected {'error':'vat terminated'}");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 0);
    tk_free(&t);
}
END_TEST

/* SPEC §5: an illegal out-of-crank syscall terminates the vat. */
START_TEST(test_kernel_out_of_crank_illegal_syscall_terminates_vat)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'t_actor'},"
                "'worker':{'builtin':'t_async'}}}");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$worker','method':'work_bad','body':{'i':1},"
          "  'result':'w'}]",
          NULL);
    tk_run(&t);
    ck_vat(&t, "worker", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_vs_sq(&t, "alice", "notify.w", "rejected {'error':'vat terminated'}");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 0);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* An exit that is all an async completion does still ends the vat, in a
 * transaction of its own (it once counted as "nothing to commit"). */
START_TEST(test_kernel_exit_in_async_completion_terminates)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'t_actor'},"
                "'worker':{'builtin':'t_async'}}}");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$worker','method':'work_exit','body':{'i':1},"
          "  'result':'w'}]",
          NULL);
    tk_run(&t);
    ck_vat(&t, "worker", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_vs_sq(&t, "alice", "notify.w", "rejected {'error':'vat terminated'}");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 1);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.12: the five-hop chain; values as in vats/chain5.c's table. */
START_TEST(test_kernel_chain5_completes_with_table_values)
{
    static const char *const sig[] = {"63365", "21601", "61196", "51108",
                                      "56858", "12925", "50351", "38094",
                                      "41675", "61094"};
    char key[32];
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'coordinator','vats':{"
                "'coordinator':{'builtin':'coordinator','params':"
                "{'rounds':10}},"
                "'provider':{'builtin':'provider'},"
                "'keyring':{'builtin':'keyring'}}}");
    tk_run(&t);
    ck_vs(&t, "coordinator", "rounds_done", "10");
    ck_vs(&t, "coordinator", "done", "1");
    ck_vs(&t, "provider", "records", "10");
    for (int i = 1; i <= 10; i++) {
        snprintf(key, sizeof(key), "result.%d", i);
        ck_vs(&t, "coordinator", key, sig[i - 1]);
        snprintf(key, sizeof(key), "record.%d", i);
        ck_vs(&t, "provider", key, sig[i - 1]);
    }
    for (int i = 1; i <= 40; i++) { /* no job left behind */
        snprintf(key, sizeof(key), "job.p-%d", i);
        ck_vs(&t, "provider", key, NULL);
    }
    /* Each round's fetch was answered out of crank. */
    ck_assert_uint_ge(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 10);
    ck_vat(&t, "coordinator", "alive");
    ck_vat(&t, "provider", "alive");
    ck_vat(&t, "keyring", "alive");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* §9.13: A's syscalls made while B's crank is open. */
static void crossing_boot(tk *t)
{
    char cfg[512];
    tk_init(t);
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'a','vats':{"
             "'a':{'builtin':'t_cross_a','params':{'ctx':'%p'}},"
             "'b':{'builtin':'t_cross_b','params':{'ctx':'%p'}},"
             "'carol':{'builtin':'t_actor'}}}",
             (void *)&t->ctx, (void *)&t->ctx);
    tk_open(t);
    tk_boot(t, cfg);
    tk_run(t);
    ck_assert_ptr_nonnull(t->ctx.a_sys);
}

/* B fails: its crank aborts, but A's syscalls are their own transactions,
 * committed after it. */
START_TEST(test_kernel_crossing_syscall_survives_failed_crank)
{
    char kb[KEEL_VREF_MAX];
    walhit a;
    tk t;
    crossing_boot(&t);
    tk_send(&t, "b", "cross", "{'fail':true}", kb);
    tk_run(&t);
    ck_vat(&t, "b", "terminated");
    ck_promise(&t, kb, 2, "{'error':'vat terminated'}");
    ck_vat(&t, "a", "alive");
    ck_vs(&t, "a", "crossed", "1");
    ck_vs(&t, "carol", "msgs", "1");
    ck_vs(&t, "carol", "msg.1", "crossed o+0 {}");
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.1.crossed", &a), 1);
    ck_assert_int_eq(a.kind, KEEL_WAL_OUT_OF_CRANK);
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.2.bsaw", NULL), 0);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* B succeeds: A's syscalls are not merged into B's crank; each is its own
 * out-of-crank transaction right after it. */
START_TEST(test_kernel_crossing_syscall_commits_after_crank)
{
    char kb[KEEL_VREF_MAX];
    walhit a, b;
    tk t;
    crossing_boot(&t);
    tk_send(&t, "b", "cross", "{'fail':false}", kb);
    tk_run(&t);
    ck_vat(&t, "b", "alive");
    ck_promise(&t, kb, 1, "null");
    ck_vs(&t, "b", "bsaw", "1");
    ck_vs(&t, "a", "crossed", "1");
    ck_vs(&t, "carol", "msg.1", "crossed o+0 {}");
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.2.bsaw", &b), 1);
    ck_assert_int_eq(b.kind, KEEL_WAL_CRANK);
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.1.crossed", &a), 1);
    ck_assert_int_eq(a.kind, KEEL_WAL_OUT_OF_CRANK);
    ck_assert_uint_eq(a.lsn, b.lsn + 1);
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, NULL, NULL), 2);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* SPEC §4: an illegal syscall held during another vat's crank terminates
 * its own vat only; the crank it arrived in commits. */
START_TEST(test_kernel_crossing_illegal_syscall_terminates_only_its_vat)
{
    char kb[KEEL_VREF_MAX];
    walhit a;
    tk t;
    crossing_boot(&t);
    tk_send(&t, "b", "cross", "{'forge':true}", kb);
    tk_run(&t);
    ck_vat(&t, "a", "terminated");
    ck_vat(&t, "b", "alive");
    ck_vat(&t, "carol", "alive");
    ck_promise(&t, kb, 1, "null");
    ck_vs(&t, "b", "bsaw", "1");
    ck_vs(&t, "carol", "msgs", NULL);
    /* A's first held syscall (legal) committed before the forged one. */
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.1.crossed", &a), 2);
    ck_assert_int_eq(a.kind, KEEL_WAL_OUT_OF_CRANK);
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* SPEC §3, §4: termination rejects the promises a vat decides, so messages
 * queued on them reject their results; a promise fulfilled to an object of
 * a terminated vat forwards to it and is rejected the same way. */
START_TEST(test_kernel_termination_rejects_messages_through_promises)
{
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_do(&t, "bob",
          "[{'op':'on','method':'getB','ops':["
          "   {'op':'alloc','name':'B'},"
          "   {'op':'resolve','p':'$result','body':{'@slot':0},"
          "    'slots':['$B']}]}]",
          NULL);
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'getp','result':'p',"
          "  'subscribe':false},"
          " {'op':'send','to':'$p','method':'m','result':'a'},"
          " {'op':'send','to':'$bob','method':'getB','result':'b',"
          "  'subscribe':false}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "alice", "notify.a", NULL); /* m waits on p */
    tk_do(&t, "bob", "[{'op':'exit','failure':true}]", NULL);
    tk_run(&t);
    ck_vat(&t, "bob", "terminated");
    ck_vs_sq(&t, "alice", "notify.a", "rejected {'error':'vat terminated'}");
    tk_do(&t, "alice", "[{'op':'send','to':'$b','method':'foo','result':'f'}]",
          NULL);
    tk_run(&t);
    ck_vs_sq(&t, "alice", "notify.f", "rejected {'error':'vat terminated'}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* SPEC §6: messages one vat sends to one target in one crank arrive in
 * that order. */
START_TEST(test_kernel_sends_in_one_crank_delivered_in_order)
{
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'a','body':1},"
          " {'op':'send','to':'$bob','method':'b','body':2},"
          " {'op':'send','to':'$bob','method':'a','body':3},"
          " {'op':'send','to':'$bob','method':'c','body':4}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "bob", "msgs", "4");
    ck_vs(&t, "bob", "msg.1", "a o+0 1");
    ck_vs(&t, "bob", "msg.2", "b o+0 2");
    ck_vs(&t, "bob", "msg.3", "a o+0 3");
    ck_vs(&t, "bob", "msg.4", "c o+0 4");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* SPEC §5: a syscall from start() is out of crank: its own transaction,
 * committed at once, at boot and again at every reopen. */
START_TEST(test_kernel_start_syscall_commits_out_of_crank)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'r','vats':{'r':{'builtin':'t_restart'}}}");
    ck_vs(&t, "r", "starts", "1");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, "vs.1.starts", NULL),
                      1);
    tk_close(&t);
    tk_open(&t);
    ck_vs(&t, "r", "starts", "2");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_OUT_OF_CRANK, "vs.1.starts", NULL),
                      2);
    tk_run(&t);
    ck_vat(&t, "r", "alive");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* SPEC §8: two kernels fed the same inputs reach the same activity hash
 * (their kernel ids differ); different inputs, a different one. */
static uint64_t pingpong_hash(int rounds, uint64_t *kernel_id)
{
    char cfg[512];
    tk t;
    tk_init(&t);
    tk_open(&t);
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'alice','vats':{"
             "'alice':{'builtin':'pingpong','params':{'role':'alice',"
             "'rounds':%d}},"
             "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}",
             rounds);
    tk_boot(&t, cfg);
    tk_run(&t);
    json_t *st = tk_status(&t);
    const char *kid = json_string_value(json_object_get(st, "kernel_id"));
    ck_assert_ptr_nonnull(kid);
    *kernel_id = strtoull(kid, NULL, 16);
    json_decref(st);
    uint64_t h = keel_kernel_activity_hash(t.k);
    tk_free(&t);
    return h;
}

START_TEST(test_kernel_activity_hash_same_for_same_inputs)
{
    uint64_t id1, id2, id3;
    uint64_t h1 = pingpong_hash(5, &id1);
    uint64_t h2 = pingpong_hash(5, &id2);
    uint64_t h3 = pingpong_hash(6, &id3);
    ck_assert_uint_ne(id1, id2);
    ck_assert_uint_ne(h1, 0);
    ck_assert_uint_eq(h1, h2);
    ck_assert_uint_ne(h1, h3);
}
END_TEST

/* §9.14: 10,000 promises outstanding at once all settle; each of their two
 * subscribers (one of which subscribed twice) is notified exactly once. */
START_TEST(test_kernel_many_promises_each_notified_once)
{
    char cfg[512], n[16];
    tk t;
    tk_init(&t);
    /* The claim is about counts, not durability: skip 40,000 fdatasyncs. */
    t.o.sync = KEEL_SYNC_OFF;
    tk_open(&t);
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'sender','vats':{"
             "'sender':{'builtin':'t_many','params':{'role':'sender','n':%d}},"
             "'peer':{'builtin':'t_many','params':{'role':'peer','n':%d}},"
             "'watcher':{'builtin':'t_many','params':{'role':'watcher',"
             "'n':%d}}}}",
             MANY_PROMISES, MANY_PROMISES, MANY_PROMISES);
    tk_boot(&t, cfg);
    keel_run_stats st = tk_run(&t);
    /* Every delivery counted: bootstrap, N work, N watch, and exactly one
     * notify per promise to each of its two subscribers. */
    ck_assert_uint_eq(st.deliveries, 1 + 4 * (uint64_t)MANY_PROMISES);
    for (int i = 1; i <= MANY_PROMISES; i++) {
        char key[32];
        snprintf(key, sizeof(key), "seen.p+%d", i);
        ck_vs(&t, "sender", key, "1");
        snprintf(key, sizeof(key), "seen.p-%d", i);
        ck_vs(&t, "watcher", key, "1");
    }
    snprintf(n, sizeof(n), "%d", MANY_PROMISES);
    ck_vs(&t, "peer", "works", n);
    ck_vs(&t, "sender", "notes", n);
    ck_vs(&t, "sender", "dups", NULL);
    ck_vs(&t, "sender", "rejects", NULL);
    ck_vs(&t, "watcher", "notes", n);
    ck_vs(&t, "watcher", "dups", NULL);
    ck_vs(&t, "watcher", "rejects", NULL);
    ck_vat(&t, "sender", "alive");
    ck_vat(&t, "peer", "alive");
    ck_vat(&t, "watcher", "alive");
    ck_quiet(&t);
    tk_close(&t);
    /* Nothing of the promises is left in the c-lists or decider index:
     * every subscriber's entry and the decider's retired. */
    for (uint32_t v = 1; v <= 3; v++) {
        keel__key prefix;
        keel__ks_clist_prefix(&prefix, v, KC_K, KR_P);
        ck_assert_uint_eq(store_count(&t, &prefix), 0);
        keel__ks_clist_prefix(&prefix, v, KC_V, KR_PPLUS);
        ck_assert_uint_eq(store_count(&t, &prefix), 0);
        keel__ks_clist_prefix(&prefix, v, KC_V, KR_PMINUS);
        ck_assert_uint_eq(store_count(&t, &prefix), 0);
    }
    ck_assert_uint_eq(store_count(&t, KS_PREFIX(KS_DECIDER)), 0);
    tk_free(&t);
}
END_TEST

/* ======================================================================== */
/* illegal syscalls                                                         */
/* ======================================================================== */

/*
 * Each case is a script mallory runs in one crank. Beforehand mallory
 * holds: o+0 (its root), take.0 = p-1, a promise bob decides (r),
 * ask.result = p-2, a promise it decides itself (m), and p-3, the result
 * of the "do" message carrying the script. Forged vrefs are numbered well
 * above those. Every case must terminate mallory and only mallory.
 */
static const struct illegal_case {
    const char *what;
    const char *ops;
} illegal_cases[] = {
    {"forged o-N target", "[{'op':'send','to':'o-50','method':'m'}]"},
    {"forged p-N target", "[{'op':'send','to':'p-90','method':'m'}]"},
    {"forged o-N slot",
     "[{'op':'send','to':'o+0','method':'m','slots':['o-70']}]"},
    {"forged p-N slot",
     "[{'op':'send','to':'o+0','method':'m','slots':['p-80']}]"},
    {"forged slot in a resolution",
     "[{'op':'resolve','p':'$ask.result','slots':['o-91']}]"},
    {"malformed target x+1", "[{'op':'send','to':'x+1','method':'m'}]"},
    {"malformed target o+", "[{'op':'send','to':'o+','method':'m'}]"},
    {"malformed target o+01", "[{'op':'send','to':'o+01','method':'m'}]"},
    {"malformed target o+1x", "[{'op':'send','to':'o+1x','method':'m'}]"},
    {"malformed target o*1", "[{'op':'send','to':'o*1','method':'m'}]"},
    {"malformed target (overflow)",
     "[{'op':'send','to':'o+18446744073709551616','method':'m'}]"},
    {"malformed target (empty)", "[{'op':'send','to':'','method':'m'}]"},
    {"a kref as target", "[{'op':'send','to':'ko1','method':'m'}]"},
    {"malformed slot",
     "[{'op':'send','to':'o+0','method':'m','slots':['kp1']}]"},
    {"send with no method", "[{'op':'send','to':'o+0','method':''}]"},
    {"resolve by non-decider", "[{'op':'resolve','p':'$take.0'}]"},
    {"resolve twice",
     "[{'op':'resolve','p':'$ask.result'},{'op':'resolve','p':'$ask.result'}]"},
    {"resolve of an object", "[{'op':'resolve','p':'o+0'}]"},
    {"resolve of a forged promise", "[{'op':'resolve','p':'p-60'}]"},
    {"result the vat does not decide",
     "[{'op':'send','to':'o+0','method':'m','result_ref':'$take.0'}]"},
    {"result already in flight",
     "[{'op':'send','to':'o+0','method':'m','result':'x','subscribe':false},"
     " {'op':'send','to':'o+0','method':'m','result_ref':'$x'}]"},
    {"result is an object",
     "[{'op':'send','to':'o+0','method':'m','result_ref':'o+0'}]"},
    {"result is forged",
     "[{'op':'send','to':'o+0','method':'m','result_ref':'p-40'}]"},
    {"subscribe to an object", "[{'op':'subscribe','p':'o+0'}]"},
    {"subscribe to a forged promise", "[{'op':'subscribe','p':'p-30'}]"},
    {"vatstore set, empty key", "[{'op':'set','key':'','value':'v'}]"},
    {"vatstore set, key too long", "[{'op':'set','keylen':481,'value':'v'}]"},
    {"vatstore set, value too big", "[{'op':'set','key':'big','len':1048577}]"},
    {"vatstore delete, empty key", "[{'op':'del','key':''}]"},
    {"vatstore delete, key too long", "[{'op':'del','keylen':481}]"},
    {"vatstore get, empty key", "[{'op':'get','key':''}]"},
    {"vatstore get, key too long", "[{'op':'get','keylen':481}]"},
    {"vatstore next, key too long", "[{'op':'next','keylen':481}]"},
    {"vatstore next, buffer too small", "[{'op':'next','key':'a','cap':10}]"},
};

START_TEST(test_kernel_illegal_syscall_terminates_only_offender)
{
    const struct illegal_case *c = &illegal_cases[_i];
    char km[KEEL_VREF_MAX], kbob[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "alice", "bob", "mallory");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$bob','method':'q','result':'r',"
          "  'subscribe':false},"
          " {'op':'send','to':'$mallory','method':'take','slots':['$r']},"
          " {'op':'send','to':'$mallory','method':'ask','result':'m'}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "mallory", "ref.take.0", "p-1");
    ck_vs(&t, "mallory", "ref.ask.result", "p-2");

    tk_do(&t, "mallory", c->ops, km);
    tk_run(&t);
    ck_vat_in(&t, c->what, "mallory", "terminated");
    ck_promise(&t, km, 2, "{'error':'vat terminated'}");
    ck_vs_sq(&t, "alice", "notify.m", "rejected {'error':'vat terminated'}");
    ck_vat_in(&t, c->what, "alice", "alive");
    ck_vat_in(&t, c->what, "bob", "alive");
    /* bob goes on: r is still his to resolve. */
    tk_do(&t, "bob", "[{'op':'resolve','p':'$q.result','body':{'ok':1}}]",
          kbob);
    tk_run(&t);
    ck_promise(&t, kbob, 1, "null");
    ck_vat(&t, "bob", "alive");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/*
 * SPEC §4: resolving a promise twice is illegal, also a vat's own p+N: once
 * resolved it leaves the vat's c-list, and using the same p+N again must
 * not quietly make a second promise that the vat then "resolves" (the
 * kernel marks retired p+N, K7 in kernel/crank.c).
 */
START_TEST(test_kernel_resolve_own_promise_twice_terminates)
{
    char km[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "alice", "mallory");
    tk_do(&t, "mallory",
          "[{'op':'send','to':'o+0','method':'hold','slots':['p+1']},"
          " {'op':'resolve','p':'p+1','body':{'n':1}}]",
          km);
    tk_run(&t);
    ck_vat(&t, "mallory", "alive");
    ck_promise(&t, km, 1, "null");
    tk_do(&t, "mallory", "[{'op':'resolve','p':'p+1','body':{'n':2}}]", km);
    tk_run(&t);
    char *bad = tk_vs(&t, "mallory", "bad_rc");
    ck_assert_msg(bad == NULL, "mallory's second resolve of p+1: %s", bad);
    ck_vat(&t, "mallory", "terminated");
    ck_promise(&t, km, 2, "{'error':'vat terminated'}");
    ck_vat(&t, "alice", "alive");
    tk_free(&t);
}
END_TEST

/*
 * A vat may allocate o+1 and o+2 (or p+1 and p+2) and use the second first:
 * both are fresh exports (SPEC §1), and both messages are delivered.
 * (Regression: recording the highest export once returned "found" (1) to
 * callers that expected KEEL_OK, and the message was silently dropped.)
 */
static void out_of_order_setup(tk *t, const char *ops_sq, char *ka)
{
    TK_ACTORS(t, "alice", "bob");
    tk_do(t, "bob",
          "[{'op':'on','method':'m','ops':["
          "   {'op':'resolve','p':'$result','body':{'ok':true}}]}]",
          NULL);
    tk_do(t, "alice", ops_sq, ka);
    tk_run(t);
    char *bad = tk_vs(t, "alice", "bad_rc");
    ck_assert_msg(bad == NULL, "alice: a syscall %s", bad);
    ck_vat(t, "alice", "alive");
    ck_promise(t, ka, 1, "null");
}

START_TEST(test_kernel_objects_exported_out_of_order_delivered)
{
    char ka[KEEL_VREF_MAX];
    tk t;
    /* o+2 goes out in a slot, then alice sends to her own o+1. */
    out_of_order_setup(&t,
                       "[{'op':'alloc','name':'a1'},{'op':'alloc','name':'a2'},"
                       " {'op':'send','to':'$bob','method':'m','slots':['$a2'],"
                       "  'result':'r2','subscribe':false},"
                       " {'op':'send','to':'$a1','method':'self'},"
                       " {'op':'alloc','name':'a3'},{'op':'alloc','name':'a4'},"
                       " {'op':'send','to':'$bob','method':'m','slots':['$a4'],"
                       "  'result':'r4','subscribe':false},"
                       " {'op':'send','to':'$bob','method':'m','slots':['$a3'],"
                       "  'result':'r3','subscribe':false}]",
                       ka);
    ck_vs(&t, "alice", "msgs", "1");
    ck_vs(&t, "alice", "msg.1", "self o+1 {}");
    ck_vs(&t, "bob", "msgs", "3");
    ck_vs(&t, "bob", "msg.1", "m o+0 {} slots=o-1");
    ck_vs(&t, "bob", "msg.2", "m o+0 {} slots=o-2");
    ck_vs(&t, "bob", "msg.3", "m o+0 {} slots=o-3");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

START_TEST(test_kernel_promises_exported_out_of_order_delivered)
{
    char ka[KEEL_VREF_MAX];
    tk t;
    out_of_order_setup(
        &t,
        "[{'op':'allocp','name':'p1'},{'op':'allocp','name':'p2'},"
        " {'op':'send','to':'$bob','method':'m','result_ref':'$p2',"
        "  'body':{'n':2}},"
        " {'op':'send','to':'$bob','method':'m','result_ref':'$p1',"
        "  'body':{'n':1}}]",
        ka);
    ck_vs(&t, "bob", "msgs", "2");
    ck_vs_sq(&t, "bob", "msg.1", "m o+0 {'n':2}");
    ck_vs_sq(&t, "bob", "msg.2", "m o+0 {'n':1}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* The limits themselves are legal: a 480-byte key, a 1 MiB value. */
START_TEST(test_kernel_vatstore_limits_accept_boundary)
{
    char kref[KEEL_VREF_MAX];
    char key[KEEL_VATSTORE_KEY_MAX + 1];
    tk t;
    TK_ACTORS(&t, "alice");
    tk_do(&t, "alice",
          "[{'op':'set','keylen':480,'value':'edge'},"
          " {'op':'set','key':'big','len':1048576}]",
          kref);
    tk_run(&t);
    ck_vat(&t, "alice", "alive");
    ck_promise(&t, kref, 1, "null");
    memset(key, 'k', KEEL_VATSTORE_KEY_MAX);
    key[KEEL_VATSTORE_KEY_MAX] = '\0';
    ck_vs(&t, "alice", key, "edge");
    char *big = tk_vs(&t, "alice", "big");
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_eq(strlen(big), KEEL_VATSTORE_VALUE_MAX);
    free(big);
    tk_free(&t);
}
END_TEST

/* A crank whose write-set cannot fit one WAL record (65 values of 1 MiB
 * against the 64 MiB record limit) aborts like a failed crank: the vat is
 * terminated, nothing it wrote stays (no record anywhere in the log holds
 * one of its keys: bob had none before, so even its termination names
 * none), and the next crank runs. */
START_TEST(test_kernel_oversized_crank_terminates_vat)
{
    char kref[KEEL_VREF_MAX];
    char script[65 * 48 + 8];
    size_t n = 0;
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    n += (size_t)snprintf(script + n, sizeof(script) - n, "[");
    for (int i = 0; i < 65; i++) {
        n += (size_t)snprintf(script + n, sizeof(script) - n,
                              "%s{'op':'set','key':'k%02d','len':1048576}",
                              i > 0 ? "," : "", i);
    }
    snprintf(script + n, sizeof(script) - n, "]");
    tk_do(&t, "bob", script, kref);
    tk_run(&t);
    ck_vat(&t, "bob", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_promise(&t, kref, 2, "{'error':'vat terminated'}");
    ck_assert_uint_eq(wal_scan(&t, 0, "vs.2.k", NULL), 0);
    /* bootstrap, and the item delivered again to the terminated bob */
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_CRANK, NULL, NULL), 2);
    tk_do(&t, "alice", "[{'op':'set','key':'after','value':'1'}]", NULL);
    tk_run(&t);
    ck_vs(&t, "alice", "after", "1");
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_CRANK, NULL, NULL), 3);
    tk_free(&t);
}
END_TEST

/* SPEC §3.4, §4: reads in a crank see its own writes; keys are ordered;
 * a delete hides a key. */
START_TEST(test_kernel_vatstore_ordered_and_reads_own_writes)
{
    tk t;
    TK_ACTORS(&t, "alice");
    tk_do(&t, "alice",
          "[{'op':'set','key':'x.b','value':'2'},"
          " {'op':'set','key':'x.c','value':'3'},"
          " {'op':'set','key':'x.a','value':'1'},"
          " {'op':'set','key':'y.a','value':'9'},"
          " {'op':'copy','from':'x.a','to':'copied'},"
          " {'op':'list','prefix':'x.','into':'keys1'}]",
          NULL);
    tk_run(&t);
    tk_do(&t, "alice",
          "[{'op':'del','key':'x.b'},"
          " {'op':'list','prefix':'x.','into':'keys2'}]",
          NULL);
    tk_run(&t);
    ck_vs(&t, "alice", "copied", "1");
    ck_vs(&t, "alice", "keys1", "x.a,x.b,x.c");
    ck_vs(&t, "alice", "keys2", "x.a,x.c");
    ck_vs(&t, "alice", "x.b", NULL);
    tk_free(&t);
}
END_TEST

/* A vat whose start() fails is terminated; the others go on. */
START_TEST(test_kernel_start_failure_terminates_only_that_vat)
{
    tk t;
    tk_init(&t);
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'t_actor'},"
                "'broken':{'builtin':'t_badstart'}}}");
    tk_do(&t, "alice",
          "[{'op':'send','to':'$broken','method':'q','result':'r'}]", NULL);
    tk_run(&t);
    ck_vat(&t, "broken", "terminated");
    ck_vat(&t, "alice", "alive");
    ck_vs_sq(&t, "alice", "notify.r", "rejected {'error':'vat terminated'}");
    ck_quiet(&t);
    tk_free(&t);
}
END_TEST

/* ======================================================================== */
/* bad inputs                                                               */
/* ======================================================================== */

static const struct config_case {
    const char *config; /* ' for " */
    const char *diag;   /* a substring of the error */
} config_cases[] = {
    {"{", "line 1"},
    {"[]", "(root): expected an object"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':'t_actor'}},'colour':1}",
     "colour: unknown field"},
    {"{'bootstrap':'a'}", "vats: expected a non-empty object"},
    {"{'bootstrap':'a','vats':{}}", "vats: expected a non-empty object"},
    {"{'bootstrap':'a','vats':[]}", "vats: expected a non-empty object"},
    {"{'bootstrap':'a b','vats':{'a b':{'builtin':'t_actor'}}}",
     "vats.a b: a vat name"},
    {"{'bootstrap':'a','vats':{'a':1}}", "vats.a: expected an object"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':'t_actor','colour':1}}}",
     "vats.a.colour: unknown field"},
    {"{'bootstrap':'a','vats':{'a':{}}}", "vats.a: needs exactly one of"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':'t_actor','path':'x.so'}}}",
     "vats.a: needs exactly one of"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':3}}}",
     "vats.a.builtin: expected a string"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':'nope'}}}",
     "vats.a.builtin: no built-in vat named 'nope'"},
    {"{'bootstrap':'a','vats':{'a':{'path':3}}}",
     "vats.a.path: expected a string"},
    {"{'bootstrap':'a','vats':{'a':{'builtin':'t_actor','params':[]}}}",
     "vats.a.params: expected an object"},
    {"{'vats':{'a':{'builtin':'t_actor'}}}",
     "bootstrap: expected the name of a vat"},
    {"{'bootstrap':1,'vats':{'a':{'builtin':'t_actor'}}}",
     "bootstrap: expected the name of a vat"},
    {"{'bootstrap':'zed','vats':{'a':{'builtin':'t_actor'}}}",
     "bootstrap: no vat named 'zed'"},
    {"{'bootstrap':'a','bootstrap':'a','vats':{'a':{'builtin':'t_actor'}}}",
     "duplicate"},
    {"{'bootstrap':'a','vats':{'a':{'path':'does-not-exist.so'}}}",
     "vats.a.path: "},
};

/* Boot with config; assert KEEL_EINVAL with diag containing want, nothing
 * booted, and that a good config then boots. */
static void ck_bad_config(const char *config_sq, const char *want_sq)
{
    keel_diag d = {0};
    tk t;
    tk_init(&t);
    tk_open(&t);
    char *cfg = sq(config_sq);
    char *want = sq(want_sq);
    int rc = keel_kernel_boot(t.k, cfg, t.root, &d);
    ck_assert_msg(rc == KEEL_EINVAL, "%s: expected KEEL_EINVAL, got %s", cfg,
                  keel_err_name(rc));
    ck_assert_msg(strstr(d.msg, want) != NULL,
                  "%s: diag '%s' does not contain '%s'", cfg, d.msg, want);
    ck_assert_msg(strchr(d.msg, '\n') == NULL, "diag is one line: %s", d.msg);
    ck_assert(!keel_kernel_booted(t.k));
    ck_assert_uint_eq(wal_scan(&t, 0, NULL, NULL), 0);
    free(cfg);
    free(want);
    tk_boot(&t, "{'bootstrap':'a','vats':{'a':{'builtin':'t_actor'}}}");
    ck_assert(keel_kernel_booted(t.k));
    tk_free(&t);
}

START_TEST(test_kernel_config_malformed_names_json_path)
{
    ck_bad_config(config_cases[_i].config, config_cases[_i].diag);
}
END_TEST

/* A library that is not a shared object, and one that exports no vat
 * (a relative path resolves against the config's directory). */
START_TEST(test_kernel_config_wrong_library_names_path)
{
    Dl_info info;
    char cfg[4096];
    keel_diag d = {0};
    tk t;
    tk_init(&t);
    tk_open(&t);
    char *fake = tu_path(t.root, "fake.so");
    tu_write_file(fake, "not an ELF file", 15);
    int rc = keel_kernel_boot(
        t.k, "{\"bootstrap\":\"a\",\"vats\":{\"a\":{\"path\":\"fake.so\"}}}",
        t.root, &d);
    ck_assert_int_eq(rc, KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "vats.a.path: ") != NULL, "diag: %s", d.msg);
    ck_assert(!keel_kernel_booted(t.k));
    free(fake);

    /* A real shared object (the JSON library) without keel_vat_entry. */
    ck_assert_msg(dladdr((void *)json_loads, &info) != 0 &&
                      info.dli_fname != NULL,
                  "cannot locate the jansson library");
    snprintf(cfg, sizeof(cfg),
             "{\"bootstrap\":\"a\",\"vats\":{\"a\":{\"path\":\"%s\"}}}",
             info.dli_fname);
    rc = keel_kernel_boot(t.k, cfg, t.root, &d);
    ck_assert_int_eq(rc, KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "vats.a.path: ") != NULL &&
                      strstr(d.msg, "exports no keel_vat_entry") != NULL,
                  "diag: %s", d.msg);
    ck_assert(!keel_kernel_booted(t.k));
    tk_free(&t);
}
END_TEST

START_TEST(test_kernel_boot_twice_refused)
{
    keel_diag d = {0};
    tk t;
    TK_ACTORS(&t, "a");
    ck_assert_int_eq(keel_kernel_boot(t.k,
                                      "{\"bootstrap\":\"a\",\"vats\":{\"a\":"
                                      "{\"builtin\":\"t_actor\"}}}",
                                      NULL, &d),
                     KEEL_EEXIST);
    tk_free(&t);
}
END_TEST

START_TEST(test_kernel_send_to_unknown_vat_refused)
{
    keel_diag d = {0};
    char kref[KEEL_VREF_MAX];
    tk t;
    TK_ACTORS(&t, "a");
    ck_assert_int_eq(keel_kernel_send(t.k, "nobody", "m", "{}", kref, &d),
                     KEEL_ENOENT);
    ck_assert_ptr_nonnull(strstr(d.msg, "nobody"));
    tk_free(&t);
}
END_TEST

/*
 * Write k.version = version into a closed STATE through the store layer
 * (version 1: as version 1 kept it, the string key "k.version" = "1").
 *   mode 0: into the store (checkpointed) and, with the same write-set, a
 *           WAL record: store and WAL agree on a newer format.
 *   mode 1: only into the WAL: replay on open brings it into the store.
 *   mode 2: only into the store: the store is then ahead of its WAL.
 */
static void write_version(tk *t, int mode, int version)
{
    keel__key vk;
    uint8_t v8[8];
    keel__ks_meta(&vk, KM_VERSION);
    keel__ks_be64(v8, (uint64_t)version);
    keel__store *s = NULL;
    keel_wal *w = NULL;
    keel_diag d = {0};
    size_t len = 0;
    uint64_t wlsn = 0;
    char *sdir = tu_path(t->state, "store");
    char *wdir = tu_path(t->state, "wal");
    ck_assert_int_eq(keel__store_open(sdir, NULL, 0, &s, &d), KEEL_OK);
    uint64_t lsn = keel__store_applied_lsn(s) + 1;
    ck_assert_int_eq(keel__store_ws_begin(s, &d), KEEL_OK);
    if (version == 1) { /* as version 1 kept it: a string key and value */
        ck_assert_int_eq(keel__store_ws_delete(s, vk.b, vk.n, &d), KEEL_OK);
        ck_assert_int_eq(keel__store_ws_put(s, "k.version", 9, "1", 1, &d),
                         KEEL_OK);
    } else {
        ck_assert_int_eq(keel__store_ws_put(s, vk.b, vk.n, v8, 8, &d), KEEL_OK);
    }
    size_t cap = keel__store_ws_encode_bound(s);
    uint8_t *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(keel__store_ws_encode(s, buf, cap, &len, &d), KEEL_OK);
    if (mode != 2) {
        keel_wal_options wo;
        keel_wal_options_init(&wo);
        wo.kernel_id = keel__store_kernel_id(s);
        wo.create = 0;
        ck_assert_int_eq(keel_wal_open(wdir, &wo, &w, NULL, &d), KEEL_OK);
        ck_assert_uint_eq(keel_wal_last_lsn(w) + 1, lsn);
        ck_assert_int_eq(
            keel_wal_append(w, KEEL_WAL_KERNEL_OP, 0, buf, len, &wlsn, &d),
            KEEL_OK);
        ck_assert_uint_eq(wlsn, lsn);
        ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    }
    if (mode != 1) {
        ck_assert_int_eq(keel__store_ws_apply(s, lsn, &d), KEEL_OK);
        ck_assert_int_eq(keel__store_checkpoint(s, &d), KEEL_OK);
    } else {
        keel__store_ws_abort(s);
    }
    keel__store_close(s);
    free(buf);
    free(sdir);
    free(wdir);
}

static void ck_open_fails(tk *t, int want_rc, const char *want_diag)
{
    keel_diag d = {0};
    keel_kernel *k = NULL;
    int rc = keel_kernel_open(t->state, &t->o, &k, &d);
    ck_assert_msg(rc == want_rc, "open: expected %s, got %s (%s)",
                  keel_err_name(want_rc), keel_err_name(rc), d.msg);
    ck_assert_ptr_null(k);
    ck_assert_msg(strstr(d.msg, want_diag) != NULL,
                  "diag '%s' does not contain '%s'", d.msg, want_diag);
}

static void version_case(int mode, int version, int want_rc,
                         const char *want_diag)
{
    tk t;
    TK_ACTORS(&t, "a");
    tk_run(&t);
    tk_close(&t);
    write_version(&t, mode, version);
    ck_open_fails(&t, want_rc, want_diag);
    tk_free(&t);
}

START_TEST(test_kernel_state_newer_format_refused)
{
    version_case(0, KEEL_STATE_FORMAT_VERSION + 1, KEEL_EVERSION,
                 "state format version 4, this keel reads up to 3");
}
END_TEST

START_TEST(test_kernel_state_newer_format_in_replay_refused)
{
    version_case(1, KEEL_STATE_FORMAT_VERSION + 1, KEEL_EVERSION,
                 "state format version 4, this keel reads up to 3");
}

/* A state of format version 1 (decimal string keys) is refused by name,
 * saying what to do; checkpointed or still in the log. */
START_TEST(test_kernel_state_older_format_refused)
{
    static const char want[] =
        "state format version 1 is older than this keel's 3; this keel "
        "cannot read it: restore from a snapshot made by the same keel "
        "version or start a new state";
    version_case(0, 1, KEEL_EVERSION, want);
    version_case(1, 1, KEEL_EVERSION, want);
}
END_TEST
END_TEST

START_TEST(test_kernel_state_store_ahead_of_wal_refused)
{
    /* A clean WAL that ends before the store's checkpoint. */
    version_case(2, KEEL_STATE_FORMAT_VERSION + 1, KEEL_ECORRUPT,
                 "ahead of the WAL");

    /* The store ahead of what the WAL can show: one flipped bit in the
     * last record of a cleanly closed state, which the checkpoint covers.
     * Opening must neither truncate it as a torn tail (after which the
     * store would be ahead of the WAL for good) nor call it "never
     * acknowledged", and must change no byte. */
    tk t;
    TK_ACTORS(&t, "a");
    tk_run(&t);
    tk_close(&t);
    char *wdir = tu_path(t.state, "wal");
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    char seg[64] = "";
    uint64_t off = 0, last = 0;
    uint32_t stored = 0;
    ck_assert_int_eq(keel_wal_reader_open(wdir, NULL, 0, &r, &d), KEEL_OK);
    while (keel_wal_reader_next(r, &rec, &d) == 1) {
        snprintf(seg, sizeof(seg), "%s", rec.segment);
        off = rec.offset;
        stored = rec.stored_len;
        last = rec.lsn;
    }
    keel_wal_reader_close(r);
    ck_assert_uint_gt(stored, 0);
    char *segp = tu_path(wdir, seg);
    size_t len = 0;
    uint8_t *b = tu_read_file(segp, &len);
    ck_assert_ptr_nonnull(b);
    /* 32 header + payload + 8 checksum bytes (wal/wal_format.h) */
    ck_assert_uint_eq(len, off + 40 + stored);
    b[off + 32 + stored / 2] ^= 0x08;
    tu_write_file(segp, b, len);
    char want[160];
    snprintf(want, sizeof(want),
             "record LSN %llu is damaged (checksum mismatch",
             (unsigned long long)last);
    for (int i = 0; i < 2; i++) { /* and again: nothing was repaired away */
        ck_open_fails(&t, KEEL_ECORRUPT, want);
        ck_open_fails(&t, KEEL_ECORRUPT, "damage to acknowledged records");
        size_t now = 0;
        uint8_t *after = tu_read_file(segp, &now);
        ck_assert_msg(now == len && memcmp(after, b, len) == 0,
                      "opening changed %s", seg);
        free(after);
    }
    free(b);
    free(segp);
    free(wdir);
    tk_free(&t);
}
END_TEST

/* STATE/wal taken from another kernel. */
START_TEST(test_kernel_state_of_other_kernel_refused)
{
    tk a, b;
    TK_ACTORS(&a, "a");
    tk_close(&a);
    TK_ACTORS(&b, "a");
    tk_close(&b);
    char *from = tu_path(a.state, "wal");
    char *to = tu_path(b.state, "wal");
    tu_rmrf(to);
    tu_copy_dir(from, to);
    ck_open_fails(&b, KEEL_ECORRUPT, "wrong kernel id");
    free(from);
    free(to);
    tk_free(&a);
    tk_free(&b);
}
END_TEST

/* A new STATE's directories are made through the kernel's I/O table
 * (STATE and wal/; store/ through the store's own, see test_store): each
 * mkdir failing refuses the open with its error and the path, and a later
 * open without the fault makes the state. */
START_TEST(test_kernel_new_state_mkdir_failure_refused)
{
    char *root = tu_tmpdir("kernel-mkdir");
    keel_io_fault *f = NULL;
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    char state[4096];
    snprintf(state, sizeof(state), "%s/clean", root);
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel_kernel_options_init(&o);
    o.io = keel__io_fault_io(f);
    ck_assert_msg(keel_kernel_open(state, &o, &k, &d) == KEEL_OK, "%s", d.msg);
    keel_kernel_close(k, &d);
    uint64_t mkdirs = keel__io_fault_count(f, KEEL_IO_OP_MKDIR);
    keel__io_fault_free(f);
    ck_assert_uint_eq(mkdirs, 2);
    uint64_t refused = 0;
    for (uint64_t nth = 1; nth <= mkdirs; nth++) {
        snprintf(state, sizeof(state), "%s/s%" PRIu64, root, nth);
        f = tu_fault_failing(KEEL_IO_OP_MKDIR, nth, KEEL_ENOSPC);
        o.io = keel__io_fault_io(f);
        k = NULL;
        int rc = keel_kernel_open(state, &o, &k, &d);
        if (rc == KEEL_OK) { /* a mkdir whose failure is not needed */
            keel_kernel_close(k, &d);
        } else {
            ck_assert_msg(rc == KEEL_ENOSPC, "mkdir %" PRIu64 ": %s: %s", nth,
                          keel_err_name(rc), d.msg);
            ck_assert_ptr_null(k);
            ck_assert_msg(strstr(d.msg, state) != NULL, "%s", d.msg);
            refused++;
        }
        keel__io_fault_free(f);
        o.io = NULL;
        ck_assert_msg(keel_kernel_open(state, &o, &k, &d) == KEEL_OK,
                      "mkdir %" PRIu64 ", then: %s", nth, d.msg);
        keel_kernel_close(k, &d);
    }
    ck_assert_uint_eq(refused, 2);
    tu_rmrf(root);
    free(root);
}
END_TEST

START_TEST(test_kernel_state_locked_refused)
{
    tk t;
    TK_ACTORS(&t, "a");
    /* A second kernel on an open STATE. */
    ck_open_fails(&t, KEEL_EBUSY, "locked by another keel process");
    tk_close(&t);
    /* A lock held by someone else. */
    char *lock = tu_path(t.state, "lock");
    int fd = open(lock, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    ck_open_fails(&t, KEEL_EBUSY, "locked by another keel process");
    close(fd);
    tk_open(&t); /* released: opens again */
    ck_assert(keel_kernel_booted(t.k));
    free(lock);
    tk_free(&t);
}
END_TEST

/* ======================================================================== */
/* terminating a vat that holds a lot (K6); async work (K32, K34)           */
/* ======================================================================== */

#define BIG_VAT_KEYS 50000
/* What a cleanup record stays under: kernel/crank.c's CLEANUP_BATCH_BYTES
 * (1 MiB) plus one key and the batch's own bookkeeping. */
#define CLEANUP_RECORD_MAX (1024u * 1024 + 4096)

/* The largest payload among the records after lsn; *count of them. */
static size_t wal_max_after(tk *t, uint64_t lsn, size_t *count)
{
    char *dir = tu_path(t->state, "wal");
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    size_t max = 0;
    int rc = keel_wal_reader_open(dir, NULL, 0, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "wal reader: %s", d.msg);
    *count = 0;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        if (rec.lsn > lsn) {
            (*count)++;
            max = rec.payload.len > max ? rec.payload.len : max;
        }
    }
    ck_assert_msg(rc == 0, "wal read: %s", d.msg);
    keel_wal_reader_close(r);
    free(dir);
    return max;
}

/* The number of keys with prefix in STATE's store (the kernel closed). */
static uint64_t store_count(tk *t, const keel__key *prefix)
{
    char name[KEY_MAX];
    char *dir = tu_path(t->state, "store");
    keel__store_options so;
    keel__store *s = NULL;
    keel_diag d = {0};
    uint64_t n = 0;
    keel__store_options_init(&so);
    so.create = 0;
    int rc = keel__store_open(dir, &so, 0, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "store open: %s", d.msg);
    rc = keel__store_count_prefix(s, prefix->b, prefix->n, &n, &d);
    ck_assert_msg(rc == KEEL_OK, "count %s: %s",
                  keel__ks_render(prefix->b, prefix->n, name, sizeof(name)),
                  d.msg);
    keel__store_close(s);
    free(dir);
    return n;
}

/* keel_audit over STATE (the kernel closed) finds nothing wrong. */
static void ck_audit_clean(tk *t)
{
    keel_audit_report rep;
    keel_diag d = {0};
    int rc = keel_audit(t->state, NULL, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "audit: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(rep.violations == 0, "audit: LSN %llu: %s",
                  (unsigned long long)rep.violation_lsn, rep.violation);
}

/* alice and bob (t_actor); bob holds BIG_VAT_KEYS vatstore keys. @return
 * the LSN of the crank that wrote them. */
static uint64_t big_bob(tk *t)
{
    char script[64];
    walhit hit;
    TK_ACTORS(t, "alice", "bob");
    snprintf(script, sizeof(script), "[{'op':'fill','n':%d}]", BIG_VAT_KEYS);
    tk_do(t, "bob", script, NULL);
    tk_run(t);
    ck_assert_uint_eq(wal_scan(t, KEEL_WAL_CRANK, "vs.2.f00049999", &hit), 1);
    return hit.lsn;
}

/* K6: a vat with 50,000 keys terminates at once and its keys go in
 * bounded batches: every record stays under the bound (once, the whole
 * vatstore was deleted in one transaction, restarting the search from the
 * prefix for every key: quadratic), and nothing of it is left. */
START_TEST(test_kernel_terminate_big_vat_in_bounded_batches)
{
    tk t;
    size_t n = 0;
    uint64_t fill = big_bob(&t);
    tk_do(&t, "bob", "[{'op':'exit'}]", NULL);
    tk_run(&t);
    ck_vat(&t, "bob", "terminated");
    ck_vs(&t, "bob", "f00000000", NULL);
    size_t max = wal_max_after(&t, fill, &n);
    ck_assert_msg(max < CLEANUP_RECORD_MAX,
                  "largest record after the fill: %zu bytes (bound %u)", max,
                  CLEANUP_RECORD_MAX);
    /* send, exit crank (which deletes the first batch), then at least two
     * more batches: 50,000 keys do not fit in 16,384-key batches. */
    ck_assert_uint_ge(n, 4);
    ck_assert_uint_ge(wal_scan(&t, KEEL_WAL_KERNEL_OP, "v.2.cleanup", NULL), 3);
    tk_close(&t);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_VATSTORE, 2)), 0);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_CLIST, 2)), 0);
    ck_assert_uint_eq(
        store_count(&t, keel__ks_vat(&(keel__key){0}, 2, KV_CLEANUP)), 0);
    ck_audit_clean(&t);
    tk_free(&t);
}
END_TEST

/* K6: while bob's cleanup is pending (only keel_kernel_step ran, which
 * runs no cleanup batch), a message to bob's object rejects its result,
 * and the cleanup then finishes. */
START_TEST(test_kernel_message_to_vat_pending_cleanup_rejects)
{
    tk t;
    big_bob(&t);
    tk_do(&t, "bob", "[{'op':'exit'}]", NULL);
    tk_drain(&t);
    ck_vat(&t, "bob", "terminated");
    ck_assert_uint_eq(wal_scan(&t, 0, "v.2.cleanup", NULL), 1);
    tk_do(&t, "alice", "[{'op':'send','to':'$bob','method':'m','result':'r'}]",
          NULL);
    tk_drain(&t);
    ck_vs_sq(&t, "alice", "notify.r", "rejected {'error':'vat terminated'}");
    /* still pending: no batch ran yet */
    ck_assert_uint_eq(wal_scan(&t, 0, "v.2.cleanup", NULL), 1);
    tk_run(&t);
    ck_assert_uint_ge(wal_scan(&t, 0, "v.2.cleanup", NULL), 3);
    tk_close(&t);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_VATSTORE, 2)), 0);
    ck_audit_clean(&t);
    tk_free(&t);
}
END_TEST

/* K19: the crash hook in the options is called at each crash event: three
 * per transaction (before and after the append, after the apply, with the
 * record's kind, in the log's order) and two per checkpoint (kind 0). A
 * hook that returns lets the kernel go on. */
typedef struct hook_log {
    int event[256];
    int kind[256];
    size_t n;
} hook_log;

static void record_hook(void *arg, int event, int kind)
{
    hook_log *h = arg;
    ck_assert_uint_lt(h->n, 256);
    h->event[h->n] = event;
    h->kind[h->n++] = kind;
}

START_TEST(test_kernel_crash_hook_sees_every_event)
{
    tk t;
    hook_log h = {0};
    tk_init(&t);
    t.o.crash_hook = record_hook;
    t.o.crash_arg = &h;
    tk_open(&t);
    tk_boot(&t, "{'bootstrap':'alice','vats':{"
                "'alice':{'builtin':'pingpong','params':{'role':'alice',"
                "'rounds':3}},"
                "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}");
    tk_run(&t);
    tk_close(&t);
    /* the log, in order: boot (kernel-op), then 1 + 2 * 3 cranks */
    int kinds[16];
    size_t nrec = 0;
    char *dir = tu_path(t.state, "wal");
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 0, &r, NULL), KEEL_OK);
    while (keel_wal_reader_next(r, &rec, NULL) == 1) {
        ck_assert_uint_lt(nrec, 16);
        kinds[nrec++] = rec.kind;
    }
    keel_wal_reader_close(r);
    free(dir);
    ck_assert_uint_eq(nrec, 1 + 1 + 2 * 3);
    size_t rec_i = 0, ckpts = 0;
    for (size_t i = 0; i < h.n;) {
        if (h.event[i] == KEEL_CRASH_CKPT_BEFORE) {
            ck_assert_uint_lt(i + 1, h.n);
            ck_assert_int_eq(h.event[i + 1], KEEL_CRASH_CKPT_AFTER);
            ck_assert_int_eq(h.kind[i], 0);
            ck_assert_int_eq(h.kind[i + 1], 0);
            ckpts++;
            i += 2;
            continue;
        }
        ck_assert_uint_lt(rec_i, nrec);
        ck_assert_uint_lt(i + 2, h.n);
        for (int j = 0; j < 3; j++) {
            ck_assert_int_eq(h.event[i + j], KEEL_CRASH_COMMIT_BEFORE + j);
            ck_assert_int_eq(h.kind[i + j], kinds[rec_i]);
        }
        rec_i++;
        i += 3;
    }
    ck_assert_uint_eq(rec_i, nrec);
    ck_assert_uint_ge(ckpts, 2); /* at open and at close */
    tk_free(&t);
}
END_TEST

/* K6: SIGKILL in the middle of the cleanup (after the second batch's
 * record is applied); the reopened kernel resumes where it stopped and
 * finishes, and the log passes the audit. */
START_TEST(test_kernel_cleanup_resumes_after_crash)
{
    tk t;
    big_bob(&t);
    tk_close(&t);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_kernel *k = NULL;
        keel_kernel_options o = t.o;
        char kref[KEEL_VREF_MAX];
        char *args = sq("{'ops':[{'op':'exit'}]}");
        /* kernel-ops: the send (1), then batches 1 (2) and 2 (3). */
        keel__crash_point cp;
        ck_assert_int_eq(
            keel__crash_point_parse("apply-after/kernel-op:3", &cp, NULL), 0);
        keel__crash_point_install(&cp, &o);
        if (keel_kernel_open(t.state, &o, &k, NULL) != KEEL_OK ||
            keel_kernel_send(k, "bob", "do", args, kref, NULL) != KEEL_OK) {
            _exit(3);
        }
        keel_kernel_run(k, NULL, NULL, NULL);
        _exit(4); /* the crash point was never reached */
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                  "child: status %d, expected SIGKILL", st);
    /* batches 1 and 2 committed, the cleanup pending */
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_KERNEL_OP, "v.2.cleanup", NULL), 2);
    tk_open(&t);
    ck_vat(&t, "bob", "terminated");
    tk_run(&t);
    tk_close(&t);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_VATSTORE, 2)), 0);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_CLIST, 2)), 0);
    ck_assert_uint_eq(
        store_count(&t, keel__ks_vat(&(keel__key){0}, 2, KV_CLEANUP)), 0);
    ck_audit_clean(&t);
    tk_free(&t);
}
END_TEST

/* K6, A6: a vat that exits in a crank whose own writes already fill a
 * cleanup batch (so no c-list key goes in that transaction) still retires
 * its c-list entry of each promise it decides as it rejects it, and the
 * audit passes. */
START_TEST(test_kernel_exit_in_full_crank_retires_decided_promises)
{
    char kref[KEEL_VREF_MAX], script[96];
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    tk_send(&t, "bob", "m", "{}", kref); /* logged, never answered */
    tk_run(&t);
    ck_promise(&t, kref, 0, NULL);
    snprintf(script, sizeof(script), "[{'op':'fill','n':%d},{'op':'exit'}]",
             BIG_VAT_KEYS);
    tk_do(&t, "bob", script, NULL);
    tk_run(&t);
    ck_vat(&t, "bob", "terminated");
    ck_promise(&t, kref, 2, "{'error':'vat terminated'}");
    tk_close(&t);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_CLIST, 2)), 0);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_VATSTORE, 2)), 0);
    ck_audit_clean(&t);
    tk_free(&t);
}
END_TEST

/* K6: a vat deciding 20,000 unresolved promises exits: they are rejected
 * in bounded batches too (once, all in the termination transaction, which
 * grows with them until it exceeds the record limit), every one ends
 * rejected, and the audit passes. */
START_TEST(test_kernel_terminate_many_decided_promises_in_batches)
{
    char script[64];
    size_t n = 0;
    walhit hit;
    tk t;
    TK_ACTORS(&t, "alice", "bob");
    snprintf(script, sizeof(script), "[{'op':'exportp','n':%d}]",
             MANY_PROMISES * 2);
    tk_do(&t, "bob", script, NULL);
    tk_run(&t);
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"),
                     MANY_PROMISES * 2);
    tk_do(&t, "bob", "[{'op':'exit'}]", NULL);
    tk_run(&t);
    ck_vat(&t, "bob", "terminated");
    ck_assert_int_eq(tk_status_int(&t, "unresolved_promises"), 0);
    /* from the send of the exit on */
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_KERNEL_OP, "\"exit\"", &hit), 1);
    size_t max = wal_max_after(&t, hit.lsn, &n);
    ck_assert_msg(max < CLEANUP_RECORD_MAX,
                  "largest record after the exit was sent: %zu bytes (bound "
                  "%u)",
                  max, CLEANUP_RECORD_MAX);
    ck_assert_uint_ge(n, 3); /* the exit's crank and at least two batches */
    tk_close(&t);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_DECIDER, 2)), 0);
    ck_assert_uint_eq(store_count(&t, KS_VAT_PREFIX(KS_CLIST, 2)), 0);
    ck_audit_clean(&t);
    tk_free(&t);
}
END_TEST

/* K26: the stop flag is read between any two transactions, so a run
 * asked to stop with a cleanup pending stops before the next batch (as
 * `keel run` on SIGTERM), and a later run finishes the cleanup. */
START_TEST(test_kernel_stop_flag_between_cleanup_batches)
{
    tk t;
    keel_diag d = {0};
    keel_run_stats s;
    volatile int stop = 1;
    big_bob(&t);
    tk_do(&t, "bob", "[{'op':'exit'}]", NULL);
    tk_drain(&t);
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS, .stop_flag = &stop};
    int rc = keel_kernel_run(t.k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s", d.msg);
    ck_assert(!s.idle);
    ck_assert_uint_eq(s.transactions, 0);
    ck_assert_uint_eq(wal_scan(&t, 0, "v.2.cleanup", NULL), 1);
    stop = 0;
    tk_run(&t);
    ck_assert_uint_ge(wal_scan(&t, 0, "v.2.cleanup", NULL), 3);
    tk_free(&t);
}
END_TEST

static void job_boot(tk *t, int sync, int deterministic)
{
    char cfg[512];
    tk_init(t);
    t->o.sync = sync;
    t->o.deterministic = deterministic;
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'alice','vats':{"
             "'alice':{'builtin':'t_actor'},"
             "'jobber':{'builtin':'t_job','params':{'ctx':'%p'}}}}",
             (void *)&t->ctx);
    tk_open(t);
    t->ctx.k = t->k;
    tk_boot(t, cfg);
    tk_run(t);
}

/* K34: a job asked for by a crank that then aborts (an illegal syscall
 * after the request) never starts. */
START_TEST(test_kernel_aborted_crank_starts_no_job)
{
    tk t;
    char kref[KEEL_VREF_MAX];
    job_boot(&t, KEEL_SYNC_FULL, 0);
    tk_send(&t, "jobber", "go", "{'fail':true}", kref);
    tk_run(&t);
    ck_vat(&t, "jobber", "terminated");
    ck_promise(&t, kref, 2, "{'error':'vat terminated'}");
    int ran = atomic_load(&t.ctx.jobs_run);
    ck_assert_msg(ran == 0, "the job ran %d time(s)", ran);
    tk_free(&t);
}
END_TEST

/* K34 under group commit: the job starts only once the WAL is durable up
 * to the record of the crank that asked for it (as the job itself sees
 * at its start). */
START_TEST(test_kernel_job_starts_after_its_crank_is_durable)
{
    tk t;
    char kref[KEEL_VREF_MAX];
    walhit hit;
    job_boot(&t, KEEL_SYNC_GROUP, 0);
    tk_send(&t, "jobber", "go", "{'fail':false}", kref);
    tk_run(&t);
    ck_promise(&t, kref, 1, "null");
    ck_vs(&t, "jobber", "done", "1");
    int ran = atomic_load(&t.ctx.jobs_run);
    ck_assert_msg(ran == 1, "the job ran %d time(s)", ran);
    ck_assert_uint_eq(wal_scan(&t, KEEL_WAL_CRANK, "vs.2.asked", &hit), 1);
    uint64_t seen = atomic_load(&t.ctx.job_durable_lsn);
    ck_assert_msg(seen >= hit.lsn,
                  "the job started when LSN %llu was durable; its crank is "
                  "LSN %llu",
                  (unsigned long long)seen, (unsigned long long)hit.lsn);
    tk_free(&t);
}
END_TEST

/* K32, K35: a job asked for in the crank in which the vat exits (that
 * crank committed) has its work run once, but its done never runs, and
 * the run goes idle (deterministic host). */
START_TEST(test_kernel_exited_vat_job_runs_work_not_done)
{
    tk t;
    job_boot(&t, KEEL_SYNC_FULL, 1);
    tk_send(&t, "jobber", "go_exit", "{}", NULL);
    tk_run(&t);
    ck_vat(&t, "jobber", "terminated");
    int ran = atomic_load(&t.ctx.jobs_run);
    ck_assert_msg(ran == 1, "the job ran %d time(s)", ran);
    ck_assert_int_eq(atomic_load(&t.ctx.dones), 0);
    tk_free(&t);
}
END_TEST

/* K35: a job held at close (its crank committed under group and only
 * keel_kernel_step ran, so nothing started it) still has its work run
 * once, as close starts it: vats free what they share with a job there
 * (vats/chain5.c). */
START_TEST(test_kernel_close_runs_held_job_work)
{
    tk t;
    job_boot(&t, KEEL_SYNC_GROUP, 1);
    tk_send(&t, "jobber", "go", "{'fail':false}", NULL);
    tk_drain(&t); /* the crank committed; nothing started it */
    tk_close(&t);
    int ran = atomic_load(&t.ctx.jobs_run);
    ck_assert_msg(ran == 1, "the job ran %d time(s)", ran);
    ck_assert_int_eq(atomic_load(&t.ctx.dones), 0);
    tk_free(&t);
}
END_TEST

/* K35 on a failed kernel: the crank whose checkpoint fills the store
 * committed (K25) and its log is durable (K11), so its job's work still
 * runs once, at close, although the kernel failed before starting it. */
START_TEST(test_kernel_failed_kernel_close_runs_held_job_work)
{
    tk t;
    keel_diag d = {0};
    tk_init(&t);
    t.o.sync = KEEL_SYNC_FULL;
    t.o.checkpoint_cranks = 1;
    t.o.store_max_bytes = 64u * 1024;
    char cfg[512];
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'alice','vats':{"
             "'alice':{'builtin':'t_actor'},"
             "'jobber':{'builtin':'t_job','params':{'ctx':'%p'}}}}",
             (void *)&t.ctx);
    tk_open(&t);
    t.ctx.k = t.k;
    tk_boot(&t, cfg);
    tk_run(&t);
    int rc = KEEL_OK;
    for (int i = 0; i < 400 && rc >= 0; i++) {
        char *args = sq("{'fail':false,'pad':1500}");
        char kref[KEEL_VREF_MAX];
        rc = keel_kernel_send(t.k, "jobber", "go", args, kref, &d);
        free(args);
        while (rc >= 0 && (rc = keel_kernel_step(t.k, &d)) == 1) {
        }
    }
    ck_assert_msg(rc == KEEL_EFAILED || rc == KEEL_ENOSPC, "%s: %s",
                  keel_err_name(rc), d.msg);
    unsigned asked = t.ctx.njobs;
    ck_assert_uint_gt(asked, 0);
    rc = keel_kernel_close(t.k, &d);
    t.k = NULL;
    ck_assert_msg(rc == KEEL_ENOSPC, "close: %s: %s", keel_err_name(rc), d.msg);
    int ran = atomic_load(&t.ctx.jobs_run);
    ck_assert_msg(ran == (int)asked, "%u jobs asked for, %d ran", asked, ran);
    tk_free(&t);
}
END_TEST

/* K32, K21: a terminated vat's timer an hour away does not keep the run
 * from going idle. */
START_TEST(test_kernel_dead_vat_timer_lets_run_go_idle)
{
    tk t;
    keel_diag d = {0};
    keel_run_stats s;
    job_boot(&t, KEEL_SYNC_FULL, 0);
    tk_send(&t, "jobber", "arm", "{}", NULL);
    tk_send(&t, "jobber", "leave", "{}", NULL);
    keel_run_options ro = {.timeout_ms = 10000};
    int rc = keel_kernel_run(t.k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s", d.msg);
    ck_vat(&t, "jobber", "terminated");
    ck_assert_msg(s.idle && !s.timed_out,
                  "run not idle (timed out: %d) with only a dead vat's timer",
                  s.timed_out);
    tk_free(&t);
}
END_TEST

/* A checkpoint that fails after a durable commit (a real EFBIG: the file
 * size limit stops LMDB's data file from growing, while the WAL's small
 * compressed record fits) fails the kernel, but the send that committed
 * reports success with its result promise, the failure comes from close,
 * and after a reopen the message is delivered. */
START_TEST(test_kernel_send_durable_despite_checkpoint_failure)
{
    tk t;
    char kref[KEEL_VREF_MAX];
    keel_diag d = {0};
    struct rlimit was, lim;
    TK_ACTORS(&t, "alice");
    tk_run(&t);
    tk_close(&t);
    t.o.checkpoint_cranks = 1; /* checkpoint after every transaction */
    tk_open(&t);
    /* 4 MiB of one byte: a few hundred bytes compressed in the WAL, 4 MiB
     * of new pages in LMDB's file. */
    size_t big = 4u << 20;
    char *args = malloc(big + 64);
    ck_assert_ptr_nonnull(args);
    int n = sprintf(args, "{\"ops\":[],\"pad\":\"");
    memset(args + n, 'a', big);
    strcpy(args + n + big, "\"}");
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    lim.rlim_cur = 1u << 20;
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = keel_kernel_send(t.k, "alice", "do", args, kref, &d);
    ck_assert_msg(rc == KEEL_OK, "send after a durable commit: %s: %s",
                  keel_err_name(rc), d.msg);
    rc = keel_kernel_wait_durable(t.k, &d);
    ck_assert_msg(rc == KEEL_OK, "wait_durable: %s", d.msg);
    memset(&d, 0, sizeof(d));
    rc = keel_kernel_close(t.k, &d);
    t.k = NULL;
    ck_assert_msg(rc < 0, "close reports the checkpoint failure");
    ck_assert_msg(strstr(d.msg, "data.mdb") != NULL, "close: %s", d.msg);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    free(args);
    tk_open(&t);
    tk_run(&t);
    ck_promise(&t, kref, 1, "null");
    tk_free(&t);
}
END_TEST

/* kernel/keyfmt.h writes exactly what snprintf wrote for the keys and
 * numbers the crank path builds (KF1, KF2), cut alike when too long. */
/* store/keyspace.h KS1..KS3: every key form round-trips through the one
 * encoder, decoder, renderer and parser; bytewise order is numeric order;
 * anything else does not decode. */
START_TEST(test_kernel_keyspace_round_trip)
{
    static const char *const keys[] = {"k.version",  "k.booted",
                                       "k.crank",    "k.hash",
                                       "k.next.vat", "k.next.ko",
                                       "k.next.kp",  "k.rq.head",
                                       "k.rq.tail",  "k.unresolved",
                                       "rq.0",       "rq.18446744073709551615",
                                       "v.1.name",   "v.4294967295.cleanup",
                                       "v.3.nextq",  "vn.alice",
                                       "c.4.k.ko7",  "c.4.k.kp12",
                                       "c.4.v.o+0",  "c.4.v.o-5",
                                       "c.4.v.p+9",  "c.4.v.p-1",
                                       "c.4.r.p+3",  "ko.1",
                                       "kp.123",     "d.2.kp9",
                                       "vs.3.a.b",   "v.2.retp",
                                       "rc.ko7",     "rc.kp12",
                                       "gc.2.d.ko4", "gc.3.x.ko5",
                                       "gc.1.i.ko9", "pin.kp3"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        keel__key k;
        keel__ks_key d;
        char back[256];
        ck_assert_msg(keel__ks_parse(keys[i], &k), "%s does not parse",
                      keys[i]);
        ck_assert_msg(keel__ks_decode(k.b, k.n, &d), "%s does not decode",
                      keys[i]);
        ck_assert_ptr_nonnull(keel__ks_table_name(d.table));
        ck_assert_str_eq(keel__ks_render(k.b, k.n, back, sizeof(back)),
                         keys[i]);
    }
    /* KS2: numeric order is byte order */
    keel__key a, b;
    keel__ks_runq(&a, 9);
    keel__ks_runq(&b, 10);
    ck_assert_int_lt(keel__keycmp(a.b, a.n, b.b, b.n), 0);
    keel__ks_promise(&a, 255);
    keel__ks_promise(&b, 256);
    ck_assert_int_lt(keel__keycmp(a.b, a.n, b.b, b.n), 0);
    keel__ks_vatstore(&a, 2, "zzz", 3);
    keel__ks_vat_prefix(&b, KS_VATSTORE, 10);
    ck_assert_int_lt(keel__keycmp(a.b, a.n, b.b, b.n), 0);
    /* KS1: nothing else decodes, and renders as ?hex */
    static const struct {
        const char *b;
        size_t n;
    } bad[] = {
        {"", 0},
        {"\x00", 1},
        {"\x0a\x01", 2},
        {"\x01\x00", 2},
        {"\x01\x0b", 2},
        {"\x01\x03\x00", 3},
        {"\x02\x00\x00\x00\x00\x00\x00\x00", 8},
        {"\x03\x00\x00\x00\x00\x01", 6},
        {"\x03\x00\x00\x00\x01\x0b", 6},
        /* a refcount of a kref of kind 3; a GC action for a promise, or of
         * type 4; a tag past the last table */
        {"\x0a\x03\x00\x00\x00\x00\x00\x00\x00\x01", 10},
        {"\x0b\x00\x00\x00\x01\x01\x02\x00\x00\x00\x00\x00\x00\x00\x01", 15},
        {"\x0b\x00\x00\x00\x01\x04\x01\x00\x00\x00\x00\x00\x00\x00\x01", 15},
        {"\x0d\x00\x00\x00\x01", 5},
        {"\x04", 1},
        {"\x05\x00\x00\x00\x01\x04\x01\x00\x00\x00\x00\x00\x00\x00\x01", 15},
        {"\x05\x00\x00\x00\x01\x01\x03\x00\x00\x00\x00\x00\x00\x00\x01", 15},
        {"\x05\x00\x00\x00\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00", 15},
        {"\x05\x00\x00\x00\x01\x03\x01\x00\x00\x00\x00\x00\x00\x00\x01", 15},
        {"\x07\x00\x00\x00\x00\x00\x00\x00\x00", 9},
        {"\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00", 14},
        {"\x09\x00\x00\x00\x01", 5},
        {"k.crank", 7},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keel__ks_key d;
        char r[64];
        ck_assert_msg(!keel__ks_decode((const uint8_t *)bad[i].b, bad[i].n, &d),
                      "bad key %zu decodes", i);
        ck_assert_int_eq(keel__ks_render((const uint8_t *)bad[i].b, bad[i].n, r,
                                         sizeof(r))[0],
                         '?');
    }
    ck_assert(!keel__ks_parse("c.4.r.o+3", &a)); /* only p+N retire */
    ck_assert(!keel__ks_parse("kp.0", &a));
    ck_assert(!keel__ks_parse("rq.18446744073709551616", &a));
    ck_assert(!keel__ks_parse("v.0.name", &a));
    ck_assert(!keel__ks_parse("c.4.v.o+01", &a));
    /* values for humans */
    uint8_t v8[8], kr[KEEL__KS_REF_BYTES];
    char r[64];
    keel__ks_be64(v8, 0x71bea2a75716f94dull);
    keel__ks_meta(&a, KM_HASH);
    ck_assert_str_eq(keel__ks_render_value(a.b, a.n, v8, 8, r, sizeof(r)),
                     "71bea2a75716f94d");
    keel__ks_ref(kr, KR_OPLUS, 5);
    keel__ks_clist_k(&a, 4, (keel__kref){KR_O, 7});
    ck_assert_str_eq(
        keel__ks_render_value(a.b, a.n, kr, sizeof(kr), r, sizeof(r)), "o+5");
    ck_assert_int_eq(keel__ks_render_value(a.b, a.n, v8, 3, r, sizeof(r))[0],
                     '?');
}
END_TEST

START_TEST(test_kernel_keyfmt_matches_snprintf)
{
    static const uint64_t vals[] = {0,
                                    1,
                                    9,
                                    10,
                                    99,
                                    100,
                                    4294967295ull,
                                    4294967296ull,
                                    9999999999999999999ull,
                                    10000000000000000000ull,
                                    UINT64_MAX};
    char a[64], b[64];
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint64_t v = vals[i];
        for (size_t cap = 1; cap <= sizeof(a); cap += 7) {
            int n = snprintf(a, cap, "c.%" PRIu64 ".k.%s", v, "ko12");
            size_t m = keel__kf_key2(b, cap, "c.", v, ".k.", "ko12");
            ck_assert_str_eq(a, b);
            ck_assert_uint_eq(m, (size_t)n < cap ? (size_t)n : cap - 1);
            snprintf(a, cap, "rq.%020" PRIu64, v);
            kfmt f = keel__kf(b, cap);
            keel__kf_str(&f, "rq.");
            keel__kf_u64w(&f, v, 20);
            ck_assert_str_eq(a, b);
            snprintf(a, cap, "%016" PRIx64, v);
            f = keel__kf(b, cap);
            keel__kf_hex16(&f, v);
            ck_assert_str_eq(a, b);
            snprintf(a, cap, "vs.%" PRIu64 ".", v);
            keel__kf_key(b, cap, "vs.", v, ".");
            ck_assert_str_eq(a, b);
            snprintf(a, cap, "%s%s", "kp.", "123");
            keel__kf_cat(b, cap, "kp.", "123");
            ck_assert_str_eq(a, b);
        }
    }
}
END_TEST

Suite *kernel_suite(void);

Suite *kernel_suite(void)
{
    Suite *s = suite_create("kernel");

    TCase *tc = tcase_create("scenarios");
    tcase_add_test(tc, test_kernel_keyfmt_matches_snprintf);
    tcase_add_test(tc, test_kernel_keyspace_round_trip);
    tcase_add_test(tc, test_kernel_pingpong_answers_in_order);
    tcase_add_test(tc, test_kernel_promise_queue_delivered_in_order_on_resolve);
    tcase_add_test(tc, test_kernel_rejected_promise_rejects_result_with_reason);
    tcase_add_test(tc, test_kernel_data_promise_rejects_send_as_non_object);
    tcase_add_test(tc, test_kernel_pipelined_send_reaches_resolved_object);
    tcase_add_test(tc, test_kernel_capability_passed_lets_holder_send);
    tcase_add_test(tc, test_kernel_forged_reference_terminates_forger);
    tcase_add_test(tc,
                   test_kernel_illegal_resolve_terminates_and_rejects_decided);
    tcase_add_test(tc, test_kernel_exit_rejects_decided_and_later_messages);
    tcase_add_test(tc, test_kernel_abort_discards_every_syscall);
    tcase_add_test(tc, test_kernel_subscribe_late_queues_notify_at_once);
    tcase_add_test(tc, test_kernel_counter_continues_after_reopen);
    tcase_add_test(
        tc, test_kernel_out_of_crank_work_answer_delivered_without_input);
    tcase_add_test(
        tc, test_kernel_out_of_crank_timer_answer_delivered_without_input);
    tcase_add_test(tc, test_kernel_out_of_crank_illegal_syscall_terminates_vat);
    tcase_add_test(tc, test_kernel_exit_in_async_completion_terminates);
    tcase_add_test(tc, test_kernel_chain5_completes_with_table_values);
    tcase_add_test(tc, test_kernel_crossing_syscall_survives_failed_crank);
    tcase_add_test(tc, test_kernel_crossing_syscall_commits_after_crank);
    tcase_add_test(
        tc, test_kernel_crossing_illegal_syscall_terminates_only_its_vat);
    tcase_add_test(tc,
                   test_kernel_termination_rejects_messages_through_promises);
    tcase_add_test(tc, test_kernel_sends_in_one_crank_delivered_in_order);
    tcase_add_test(tc, test_kernel_start_syscall_commits_out_of_crank);
    tcase_add_test(tc, test_kernel_activity_hash_same_for_same_inputs);
    suite_add_tcase(s, tc);

    tc = tcase_create("many");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_kernel_many_promises_each_notified_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("illegal");
    tcase_add_loop_test(tc,
                        test_kernel_illegal_syscall_terminates_only_offender, 0,
                        sizeof(illegal_cases) / sizeof(illegal_cases[0]));
    tcase_add_test(tc, test_kernel_resolve_own_promise_twice_terminates);
    tcase_add_test(tc, test_kernel_objects_exported_out_of_order_delivered);
    tcase_add_test(tc, test_kernel_promises_exported_out_of_order_delivered);
    tcase_add_test(tc, test_kernel_vatstore_limits_accept_boundary);
    tcase_add_test(tc, test_kernel_oversized_crank_terminates_vat);
    tcase_add_test(tc, test_kernel_vatstore_ordered_and_reads_own_writes);
    tcase_add_test(tc, test_kernel_start_failure_terminates_only_that_vat);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_inputs");
    tcase_add_loop_test(tc, test_kernel_config_malformed_names_json_path, 0,
                        sizeof(config_cases) / sizeof(config_cases[0]));
    tcase_add_test(tc, test_kernel_config_wrong_library_names_path);
    tcase_add_test(tc, test_kernel_boot_twice_refused);
    tcase_add_test(tc, test_kernel_send_to_unknown_vat_refused);
    tcase_add_test(tc, test_kernel_state_newer_format_refused);
    tcase_add_test(tc, test_kernel_state_newer_format_in_replay_refused);
    tcase_add_test(tc, test_kernel_state_older_format_refused);
    tcase_add_test(tc, test_kernel_state_store_ahead_of_wal_refused);
    tcase_add_test(tc, test_kernel_state_of_other_kernel_refused);
    tcase_add_test(tc, test_kernel_state_locked_refused);
    tcase_add_test(tc, test_kernel_new_state_mkdir_failure_refused);
    tcase_add_test(tc, test_kernel_terminate_big_vat_in_bounded_batches);
    tcase_add_test(tc, test_kernel_message_to_vat_pending_cleanup_rejects);
    tcase_add_test(tc, test_kernel_cleanup_resumes_after_crash);
    tcase_add_test(tc, test_kernel_crash_hook_sees_every_event);
    tcase_add_test(tc, test_kernel_without_host_refuses_async_work);
    tcase_add_test(tc, test_kernel_stop_flag_between_cleanup_batches);
    tcase_add_test(tc, test_kernel_terminate_many_decided_promises_in_batches);
    tcase_add_test(tc, test_kernel_exit_in_full_crank_retires_decided_promises);
    tcase_add_test(tc, test_kernel_aborted_crank_starts_no_job);
    tcase_add_test(tc, test_kernel_job_starts_after_its_crank_is_durable);
    tcase_add_test(tc, test_kernel_exited_vat_job_runs_work_not_done);
    tcase_add_test(tc, test_kernel_close_runs_held_job_work);
    tcase_add_test(tc, test_kernel_failed_kernel_close_runs_held_job_work);
    tcase_add_test(tc, test_kernel_dead_vat_timer_lets_run_go_idle);
    tcase_add_test(tc, test_kernel_send_durable_despite_checkpoint_failure);
    suite_add_tcase(s, tc);
    return s;
}
