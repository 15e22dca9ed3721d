/*
 * tests/test_worker.c — vats in worker processes (docs/worker-protocol.md).
 *
 * Part 1, the kernel's side of it alone (kernel/kernel_host.h KH2-KH4),
 * with a host table of the test's own whose worker_ops run pingpong's bob
 * in process and crash on demand: a {"worker": ...} entry is validated
 * field by field and refused on a kernel without a worker host; a crashed
 * delivery aborts its crank (nothing stays), the host's restart runs
 * before the next crank and the item is delivered again, so the run ends
 * in the state (and activity hash) of a run without crashes; a host that
 * gives up terminates the vat; keel__k_oc_txn commits between cranks at
 * once, and an illegal syscall in it terminates the vat.
 */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "host/host.h"
#include "kernel/kernel_host.h"
#include "keel/keel.h"

#include "tests/testutil.h"

/* ---- a test host: the libuv loop, and worker_ops running pingpong ------ */

typedef struct fake {
    keel_host *loop;
    int crash_at;      /* crash the crash_at-th delivery (1-based); 0 never */
    int crash_every;   /* then every crash_every-th after it; 0 once */
    int deliveries;    /* deliveries to the fake worker so far */
    int restarts;      /* worker_restart calls */
    int give_up_after; /* worker_restart fails from this call on; 0 never */
    int starts;
    char entry[512]; /* what start got */
} fake;

static fake F;

typedef struct fstate {
    void *inner;
} fstate;

static const keel_vat_ops *bob(void)
{
    return keel_vat_builtin("pingpong");
}

static int f_start(keel_syscall *sys, const char *entry_json, void **state)
{
    snprintf(F.entry, sizeof(F.entry), "%s", entry_json);
    F.starts++;
    json_t *e = json_loads(entry_json, 0, NULL);
    json_t *p = json_object_get(e, "params");
    char *params = p != NULL ? json_dumps(p, JSON_COMPACT) : strdup("{}");
    json_decref(e);
    fstate *s = calloc(1, sizeof(*s));
    int rc = bob()->start(sys, params, &s->inner);
    free(params);
    *state = s;
    return rc;
}

static int f_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    fstate *s = state;
    F.deliveries++;
    int rc = bob()->deliver(s->inner, sys, d);
    int n = F.deliveries;
    if (F.crash_at != 0 &&
        (n == F.crash_at || (F.crash_every != 0 && n > F.crash_at &&
                             (n - F.crash_at) % F.crash_every == 0))) {
        /* What it did (its syscalls) must not stay. */
        keel_syscall_vatstore_set(sys, "crashed", "1", 1);
        return KEEL__VAT_CRASHED;
    }
    return rc;
}

static void f_stop(void *state)
{
    fstate *s = state;
    bob()->stop(s->inner);
    free(s);
}

static const keel_vat_ops fake_ops = {.abi_version = KEEL_VAT_ABI_VERSION,
                                      .name = "fake-worker",
                                      .start = f_start,
                                      .deliver = f_deliver,
                                      .stop = f_stop};

static int f_restart(void *ctx, keel_syscall *sys, void *state)
{
    (void)ctx;
    (void)sys;
    (void)state;
    F.restarts++;
    if (F.give_up_after != 0 && F.restarts >= F.give_up_after) {
        return -1;
    }
    return 0;
}

static int h_timer(void *ctx, uint64_t delay_ms, void (*cb)(void *arg),
                   void *arg, uint64_t *id)
{
    return keel__host_timer(((fake *)ctx)->loop, delay_ms, cb, arg, id);
}

static int h_work(void *ctx, void (*work)(void *arg), void (*done)(void *arg),
                  void *arg)
{
    return keel__host_work(((fake *)ctx)->loop, work, done, arg);
}

static int h_cancel(void *ctx, uint64_t id)
{
    return keel__host_cancel(((fake *)ctx)->loop, id);
}

static uint64_t h_pending(void *ctx)
{
    return keel__host_pending(((fake *)ctx)->loop);
}

static int h_run_once(void *ctx, uint64_t timeout_ms)
{
    return keel__host_run_once(((fake *)ctx)->loop, timeout_ms);
}

static int h_poll(void *ctx)
{
    return keel__host_poll(((fake *)ctx)->loop);
}

static void h_close(void *ctx)
{
    keel__host_free(((fake *)ctx)->loop);
    ((fake *)ctx)->loop = NULL;
}

typedef struct tw {
    char *root, *state;
    keel_kernel *k;
} tw;

static void tw_open(tw *t, int with_worker_ops)
{
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    o.sync = KEEL_SYNC_GROUP;
    ck_assert_int_eq(keel__host_new(&F.loop, 0), KEEL_OK);
    keel__khost table = {.ctx = &F,
                         .timer = h_timer,
                         .work = h_work,
                         .cancel = h_cancel,
                         .pending = h_pending,
                         .run_once = h_run_once,
                         .poll = h_poll,
                         .close = h_close,
                         .worker_ops = with_worker_ops ? &fake_ops : NULL,
                         .worker_restart = f_restart};
    keel_diag d = {0};
    int rc = keel__k_open(t->state, &o, &table, &t->k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s", d.msg);
}

static void tw_init(tw *t)
{
    memset(&F, 0, sizeof(F));
    memset(t, 0, sizeof(*t));
    t->root = tu_tmpdir("worker");
    t->state = tu_path(t->root, "state");
}

static void tw_close(tw *t)
{
    keel_diag d = {0};
    if (t->k != NULL) {
        int rc = keel_kernel_close(t->k, &d);
        ck_assert_msg(rc == KEEL_OK, "close: %s", d.msg);
        t->k = NULL;
    }
}

static void tw_free(tw *t)
{
    tw_close(t);
    tu_rmrf(t->root);
    free(t->root);
    free(t->state);
}

/* Boot config (single quotes for double) with the config dir t->root. */
static int tw_boot(tw *t, const char *cfg_sq, keel_diag *d)
{
    char *cfg = strdup(cfg_sq);
    for (char *p = cfg; *p != '\0'; p++) {
        *p = *p == '\'' ? '"' : *p;
    }
    int rc = keel_kernel_boot(t->k, cfg, t->root, d);
    free(cfg);
    return rc;
}

static char *vs(tw *t, const char *vat, const char *key)
{
    char *val = NULL;
    size_t len = 0;
    keel_diag d = {0};
    int rc = keel_kernel_vatstore_get(t->k, vat, key, &val, &len, &d);
    ck_assert_msg(rc >= 0, "vatstore %s %s: %s", vat, key, d.msg);
    return rc == 1 ? val : NULL;
}

static void ck_vs(tw *t, const char *vat, const char *key, const char *want)
{
    char *got = vs(t, vat, key);
    if (want == NULL) {
        ck_assert_msg(got == NULL, "%s %s: want absent, got %s", vat, key, got);
    } else {
        ck_assert_msg(got != NULL && strcmp(got, want) == 0,
                      "%s %s: want %s, got %s", vat, key, want,
                      got != NULL ? got : "(absent)");
    }
    free(got);
}

/* The status JSON's field (a string or integer), as text. */
static char *status_field(tw *t, const char *field)
{
    char *s = NULL;
    ck_assert_int_eq(keel_kernel_status_json(t->k, &s, NULL), KEEL_OK);
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    json_t *v = json_object_get(o, field);
    char buf[64];
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    } else {
        snprintf(buf, sizeof(buf), "%s", json_string_value(v));
    }
    json_decref(o);
    return strdup(buf);
}

static const char *vat_state(tw *t, const char *name)
{
    static char out[32];
    char *s = NULL;
    ck_assert_int_eq(keel_kernel_status_json(t->k, &s, NULL), KEEL_OK);
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    size_t i;
    json_t *v;
    snprintf(out, sizeof(out), "(none)");
    json_array_foreach(json_object_get(o, "vats"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0) {
            snprintf(out, sizeof(out), "%s",
                     json_string_value(json_object_get(v, "state")));
        }
    }
    json_decref(o);
    return out;
}

static keel_run_stats tw_run(tw *t)
{
    keel_run_stats s = {0};
    keel_diag d = {0};
    int rc = keel_kernel_run(t->k, NULL, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s", d.msg);
    return s;
}

#define PP_FAKE(rounds)                                                       \
    "{'bootstrap':'alice','vats':{"                                           \
    "'alice':{'builtin':'pingpong','params':{'role':'alice','rounds':" rounds \
    "}},"                                                                     \
    "'bob':{'worker':{'command':['prog'],'cwd':'/'},"                         \
    "'params':{'role':'bob'}}}}"

/* ---- KH2, KH3: config ------------------------------------------------------
 */

START_TEST(test_worker_config_errors_name_the_field)
{
    static const struct {
        const char *worker; /* the "worker" value */
        const char *msg;    /* the diag must contain this */
    } cases[] = {
        {"'x'", "vats.bob.worker: expected an object"},
        {"{}", "vats.bob.worker.command: expected a non-empty array"},
        {"{'command':[]}", "vats.bob.worker.command: expected a non-empty"},
        {"{'command':['']}",
         "vats.bob.worker.command[0]: expected a non-empty"},
        {"{'command':['a',3]}",
         "vats.bob.worker.command[1]: expected a string"},
        {"{'command':['a'],'bogus':1}", "vats.bob.worker.bogus: unknown field"},
        {"{'command':['a'],'env':[]}",
         "vats.bob.worker.env: expected an object"},
        {"{'command':['a'],'env':{'X':1}}",
         "vats.bob.worker.env.X: expected a"},
        {"{'command':['a'],'cwd':3}", "vats.bob.worker.cwd: expected a string"},
        {"{'command':['a'],'cwd':'nowhere'}", "vats.bob.worker.cwd: "},
        {"{'command':['./nothing-here']}", "vats.bob.worker.command[0]: "},
        {"{'command':['a'],'timeout_ms':0}",
         "vats.bob.worker.timeout_ms: expected an integer from 1"},
        {"{'command':['a'],'timeout_ms':'5'}", "vats.bob.worker.timeout_ms: "},
        {"{'command':['a'],'restarts':3}",
         "vats.bob.worker.restarts: expected an object"},
        {"{'command':['a'],'restarts':{'max':-1}}",
         "vats.bob.worker.restarts.max: expected an integer from 0"},
        {"{'command':['a'],'restarts':{'window_ms':0}}",
         "vats.bob.worker.restarts.window_ms: expected an integer from 1"},
        {"{'command':['a'],'restarts':{'tries':1}}",
         "vats.bob.worker.restarts.tries: unknown field"},
        {"{'command':['a'],'limits':{'address_space':'lots'}}",
         "vats.bob.worker.limits.address_space: expected bytes"},
        {"{'command':['a'],'limits':{'address_space':'12X'}}",
         "vats.bob.worker.limits.address_space: expected bytes"},
        {"{'command':['a'],'limits':{'cpu_seconds':0}}",
         "vats.bob.worker.limits.cpu_seconds: expected an integer from 1"},
        {"{'command':['a'],'limits':{'nice':1}}",
         "vats.bob.worker.limits.nice: unknown field"},
    };
    tw t;
    tw_init(&t);
    tw_open(&t, 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char cfg[1024];
        snprintf(cfg, sizeof(cfg),
                 "{'bootstrap':'alice','vats':{'alice':{'builtin':'pingpong',"
                 "'params':{'role':'alice'}},'bob':{'worker':%s}}}",
                 cases[i].worker);
        keel_diag d = {0};
        int rc = tw_boot(&t, cfg, &d);
        ck_assert_msg(rc == KEEL_EINVAL && strstr(d.msg, cases[i].msg) != NULL,
                      "case %zu (%s): rc %d, diag \"%s\", want \"%s\"", i,
                      cases[i].worker, rc, d.msg, cases[i].msg);
    }
    keel_diag d = {0};
    ck_assert_int_eq(
        tw_boot(&t,
                "{'bootstrap':'alice','vats':{'alice':{'builtin':'pingpong',"
                "'params':{'role':'alice'}},'bob':{'worker':{'command':['a']},"
                "'builtin':'pingpong'}}}",
                &d),
        KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "exactly one of") != NULL, "%s", d.msg);
    tw_free(&t);
}
END_TEST

START_TEST(test_worker_refused_without_worker_host)
{
    tw t;
    tw_init(&t);
    tw_open(&t, 0);
    keel_diag d = {0};
    int rc = tw_boot(&t, PP_FAKE("3"), &d);
    ck_assert_int_eq(rc, KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "vats.bob.worker: this kernel has no worker "
                                "host") != NULL,
                  "%s", d.msg);
    tw_close(&t);
    /* Nor without any host (KH2). */
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    ck_assert_int_eq(keel__k_open(t.state, &o, NULL, &t.k, &d), KEEL_OK);
    rc = tw_boot(&t, PP_FAKE("3"), &d);
    ck_assert_int_eq(rc, KEEL_EINVAL);
    ck_assert_msg(strstr(d.msg, "no worker host") != NULL, "%s", d.msg);
    tw_free(&t);
}
END_TEST

/* KH3: start gets the whole entry, normalized (cwd absolute). */
START_TEST(test_worker_start_gets_whole_entry)
{
    tw t;
    tw_init(&t);
    tw_open(&t, 1);
    keel_diag d = {0};
    int rc = tw_boot(&t,
                     "{'bootstrap':'alice','vats':{'alice':{'builtin':"
                     "'pingpong','params':{'role':'alice','rounds':2}},"
                     "'bob':{'worker':{'command':['prog','x'],'env':{'A':'b'},"
                     "'limits':{'address_space':'2M'}},"
                     "'params':{'role':'bob'}}}}",
                     &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
    json_t *e = json_loads(F.entry, 0, NULL);
    ck_assert_ptr_nonnull(e);
    json_t *w = json_object_get(e, "worker");
    ck_assert_str_eq(json_string_value(json_object_get(w, "cwd")), t.root);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(w, "limits"), "address_space")),
                     2 << 20);
    ck_assert_str_eq(json_string_value(
                         json_object_get(json_object_get(e, "params"), "role")),
                     "bob");
    json_decref(e);
    tw_run(&t);
    ck_vs(&t, "alice", "done", "1");
    tw_free(&t);
}
END_TEST

/* ---- KH3: a crashed delivery ------------------------------------------------
 */

/* Pingpong with bob a worker crashing at the given deliveries: @return the
 * final activity hash; checks the final state. */
static char *crash_run(int crash_at, int crash_every, int *restarts,
                       uint64_t *aborted)
{
    tw t;
    tw_init(&t);
    F.crash_at = crash_at;
    F.crash_every = crash_every;
    tw_open(&t, 1);
    keel_diag d = {0};
    int rc = tw_boot(&t, PP_FAKE("20"), &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
    keel_run_stats s = tw_run(&t);
    ck_vs(&t, "alice", "done", "1");
    ck_vs(&t, "alice", "answers", "20");
    ck_vs(&t, "bob", "crashed", NULL); /* nothing of a crashed crank */
    ck_assert_str_eq(vat_state(&t, "bob"), "alive");
    *restarts = F.restarts;
    *aborted = s.aborted;
    char *h = status_field(&t, "activity_hash");
    if (getenv("TW_KEEP") != NULL) {
        fprintf(stderr, "state %s\n", t.state);
        tw_close(&t);
        return h;
    }
    tw_free(&t);
    return h;
}

START_TEST(test_worker_crash_aborts_crank_and_redelivers)
{
    int r0 = 0, r1 = 0;
    uint64_t a0 = 0, a1 = 0;
    char *clean = crash_run(0, 0, &r0, &a0);
    char *crashed = crash_run(3, 4, &r1, &a1);
    ck_assert_int_eq(r0, 0);
    ck_assert_int_ge(r1, 4);
    ck_assert_uint_eq(a1, (uint64_t)r1); /* each crash one aborted step */
    ck_assert_str_eq(crashed, clean);
    free(clean);
    free(crashed);
}
END_TEST

START_TEST(test_worker_restart_given_up_terminates)
{
    tw t;
    tw_init(&t);
    F.crash_at = 2;
    F.crash_every = 1; /* every delivery from the second on */
    F.give_up_after = 3;
    tw_open(&t, 1);
    keel_diag d = {0};
    ck_assert_int_eq(tw_boot(&t, PP_FAKE("5"), &d), KEEL_OK);
    tw_run(&t);
    ck_assert_int_eq(F.restarts, 3);
    ck_assert_str_eq(vat_state(&t, "bob"), "terminated");
    ck_vs(&t, "alice", "done", NULL);
    tw_free(&t);
}
END_TEST

/* A plain vat returning the crash value is an ordinary failure (KH3). */
static int plain_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    (void)state;
    (void)sys;
    (void)d;
    return KEEL__VAT_CRASHED;
}

static const keel_vat_ops plain_ops = {.abi_version = KEEL_VAT_ABI_VERSION,
                                       .name = "plaincrash",
                                       .deliver = plain_deliver};

static const keel_vat_ops *resolve_plain(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "plaincrash") == 0 ? &plain_ops : NULL;
}

START_TEST(test_worker_crash_value_from_plain_vat_terminates)
{
    tw t;
    tw_init(&t);
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    o.resolve_vat = resolve_plain;
    keel_diag d = {0};
    ck_assert_int_eq(keel_kernel_open(t.state, &o, &t.k, &d), KEEL_OK);
    ck_assert_int_eq(tw_boot(&t,
                             "{'bootstrap':'bob','vats':{'bob':{'builtin':"
                             "'plaincrash'}}}",
                             &d),
                     KEEL_OK);
    tw_run(&t);
    ck_assert_str_eq(vat_state(&t, "bob"), "terminated");
    tw_free(&t);
}
END_TEST

/* ---- KH4: out-of-crank transactions -------------------------------------- */

typedef struct octest {
    tw *t;
    keel_syscall *sys;
    int mode; /* 0 write, 1 forged send */
    int rc;
    int in_crank_rc;
    char lsn_before[32];
} octest;

static int oc_fn(void *arg, keel_syscall *sys)
{
    octest *o = arg;
    if (o->mode == 0) {
        keel_syscall_vatstore_set(sys, "oc.a", "1", 1);
        keel_syscall_vatstore_set(sys, "oc.b", "2", 1);
    } else {
        keel_capdata cd = {.body = {"{}", 2}};
        keel_syscall_send(sys, "o-99", "hi", &cd, NULL);
    }
    return 0;
}

static keel_syscall *captured_sys;

static int cap_start(keel_syscall *sys, const char *entry_json, void **state)
{
    captured_sys = sys;
    return f_start(sys, entry_json, state);
}

static int cap_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    /* Inside a crank the entry refuses (KH4). */
    ck_assert_int_eq(keel__k_oc_txn(sys, oc_fn, NULL), KEEL_EINVAL);
    return f_deliver(state, sys, d);
}

static void oc_timer(void *arg)
{
    octest *o = arg;
    o->rc = keel__k_oc_txn(o->sys, oc_fn, o);
}

START_TEST(test_worker_oc_txn_commits_between_cranks)
{
    for (int mode = 0; mode < 2; mode++) {
        tw t;
        tw_init(&t);
        keel_vat_ops ops = fake_ops;
        ops.start = cap_start;
        ops.deliver = cap_deliver;
        keel_kernel_options o;
        keel_kernel_options_init(&o);
        ck_assert_int_eq(keel__host_new(&F.loop, 0), KEEL_OK);
        keel__khost table = {.ctx = &F,
                             .timer = h_timer,
                             .work = h_work,
                             .cancel = h_cancel,
                             .pending = h_pending,
                             .run_once = h_run_once,
                             .poll = h_poll,
                             .close = h_close,
                             .worker_ops = &ops,
                             .worker_restart = f_restart};
        keel_diag d = {0};
        ck_assert_int_eq(keel__k_open(t.state, &o, &table, &t.k, &d), KEEL_OK);
        ck_assert_int_eq(tw_boot(&t, PP_FAKE("2"), &d), KEEL_OK);
        tw_run(&t);
        ck_vs(&t, "alice", "done", "1");
        char *lsn0 = status_field(&t, "last_lsn");
        octest oc = {.t = &t, .sys = captured_sys, .mode = mode, .rc = -100};
        ck_assert_int_eq(keel__host_timer(F.loop, 0, oc_timer, &oc, NULL),
                         KEEL_OK);
        ck_assert_int_eq(keel__host_run_once(F.loop, 0), 1);
        char *lsn1 = status_field(&t, "last_lsn");
        if (mode == 0) {
            /* Committed before the call returned, as one record. */
            ck_assert_int_eq(oc.rc, 1);
            ck_assert_int_eq(atoi(lsn1), atoi(lsn0) + 1);
            ck_vs(&t, "bob", "oc.a", "1");
            ck_vs(&t, "bob", "oc.b", "2");
        } else {
            ck_assert_int_eq(oc.rc, 0); /* forged: terminated */
            ck_assert_str_eq(vat_state(&t, "bob"), "terminated");
            ck_assert_str_eq(vat_state(&t, "alice"), "alive");
            /* and a second call runs nothing */
            ck_assert_int_eq(keel__k_oc_txn(captured_sys, oc_fn, &oc), 0);
        }
        free(lsn0);
        free(lsn1);
        tw_free(&t);
    }
}
END_TEST

/* ---- part 2: real worker processes (host/worker.c) ----------------------- */

typedef struct rw {
    tw t;
    char mode_path[128];
    char err_path[160];
    int saved_err;
} rw;

static void rw_mode(rw *r, const char *mode, int at)
{
    FILE *f = fopen(r->mode_path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%s %d\n", mode, at);
    fclose(f);
}

/* Open a composed kernel (keel_kernel_open: the libuv host with its
 * worker ops) and boot pingpong with bob the test program; keel's stderr
 * goes to a file. extra: more "worker" fields (",'timeout_ms':300"). */
static void rw_open(rw *r, const char *mode, int at, int rounds,
                    const char *extra)
{
    memset(r, 0, sizeof(*r));
    tw_init(&r->t);
    snprintf(r->mode_path, sizeof(r->mode_path), "/tmp/keel-wtp-%ld",
             (long)getpid());
    snprintf(r->err_path, sizeof(r->err_path), "%s/stderr", r->t.root);
    rw_mode(r, mode, at);
    fflush(stderr);
    r->saved_err = dup(2);
    int fd = open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    o.sync = KEEL_SYNC_GROUP;
    keel_diag d = {0};
    int rc = keel_kernel_open(r->t.state, &o, &r->t.k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s", d.msg);
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'alice','vats':{"
             "'alice':{'builtin':'pingpong','params':{'role':'alice',"
             "'rounds':%d}},"
             "'bob':{'worker':{'command':['%s','@%s'],'cwd':'/'%s}}}}",
             rounds, KEEL_WORKER_TESTPROG, r->mode_path,
             extra != NULL ? extra : "");
    rc = tw_boot(&r->t, cfg, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
}

/* Run in slices until alice is done or bob terminated (at most ~20 s;
 * a kernel with a live worker is never idle, WK7). */
static uint64_t rw_run(rw *r)
{
    uint64_t aborted = 0;
    for (int i = 0; i < 600; i++) {
        keel_run_options o = {0};
        o.timeout_ms = 100;
        keel_run_stats s = {0};
        keel_diag d = {0};
        int rc = keel_kernel_run(r->t.k, &o, &s, &d);
        ck_assert_msg(rc == KEEL_OK, "run: %s", d.msg);
        aborted += s.aborted;
        char *done = vs(&r->t, "alice", "done");
        int fin =
            done != NULL || strcmp(vat_state(&r->t, "bob"), "terminated") == 0;
        free(done);
        if (fin) {
            break;
        }
    }
    return aborted;
}

/* Close, put stderr back; @return what keel wrote to stderr. */
static char *rw_close(rw *r, char **hash)
{
    if (hash != NULL) {
        *hash = status_field(&r->t, "activity_hash");
    }
    tw_close(&r->t);
    fflush(stderr);
    dup2(r->saved_err, 2);
    close(r->saved_err);
    size_t n = 0;
    uint8_t *e = tu_read_file(r->err_path, &n);
    char *s = calloc(1, n + 1);
    memcpy(s, e, n);
    free(e);
    return s;
}

static void rw_free(rw *r)
{
    unlink(r->mode_path);
    char pidf[160];
    snprintf(pidf, sizeof(pidf), "%s.pid", r->mode_path);
    unlink(pidf);
    tw_free(&r->t);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

/* `keel recover STATE --check`: the audit finds nothing. */
static void ck_audit(const char *state)
{
    const char *args[] = {"recover", state, "--check", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "keel recover --check: %d\n%s%s", rc, out, err);
    free(out);
    free(err);
}

static char *clean_hash;

static char *ok_hash(void)
{
    if (clean_hash == NULL) {
        rw r;
        rw_open(&r, "ok", 0, 10, ",'timeout_ms':400");
        rw_run(&r);
        ck_vs(&r.t, "alice", "answers", "10");
        ck_vs(&r.t, "bob", "seen", "10");
        free(rw_close(&r, &clean_hash));
        rw_free(&r);
    }
    return clean_hash;
}

START_TEST(test_worker_process_runs_pingpong)
{
    rw r;
    rw_open(&r, "ok", 0, 10, NULL);
    uint64_t aborted = rw_run(&r);
    ck_vs(&r.t, "alice", "done", "1");
    ck_vs(&r.t, "alice", "last", "11");
    ck_vs(&r.t, "bob", "seen", "10");
    ck_assert_uint_eq(aborted, 0);
    char *err = rw_close(&r, NULL);
    ck_assert_msg(strstr(err, "crashed") == NULL, "%s", err);
    free(err);
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

/* A worker that crashes mid-delivery in each way: only its crank is
 * aborted, it is restarted, and the run ends in the uninterrupted run's
 * state and activity hash. */
START_TEST(test_worker_crash_modes_restart_and_converge)
{
    static const char *const modes[] = {"exit", "garbage", "truncated", "huge",
                                        "hang"};
    char *want = ok_hash();
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        rw r;
        /* Misbehave at the 3rd delivery of each process: every restarted
         * process does it again, 3 deliveries on (TP1). */
        rw_open(&r, modes[i], 3, 10, ",'timeout_ms':400");
        uint64_t aborted = rw_run(&r);
        ck_vs(&r.t, "alice", "done", "1");
        ck_vs(&r.t, "alice", "answers", "10");
        ck_vs(&r.t, "bob", "seen", "10"); /* aborted cranks left nothing */
        ck_assert_str_eq(vat_state(&r.t, "bob"), "alive");
        char *hash = NULL;
        char *err = rw_close(&r, &hash);
        int restarts = count_of(err, "worker crashed; restarting");
        ck_assert_msg(restarts >= 4 && (uint64_t)restarts == aborted,
                      "%s: %d restarts, %llu aborted\n%s", modes[i], restarts,
                      (unsigned long long)aborted, err);
        ck_assert_msg(strcmp(hash, want) == 0, "%s: hash %s, want %s", modes[i],
                      hash, want);
        if (strcmp(modes[i], "huge") == 0 || strcmp(modes[i], "garbage") == 0) {
            ck_assert_msg(strstr(err, "malformed frame") != NULL, "%s", err);
        }
        if (strcmp(modes[i], "hang") == 0) {
            ck_assert_msg(strstr(err, "timeout_ms") != NULL, "%s", err);
        }
        free(hash);
        free(err);
        ck_audit(r.t.state);
        rw_free(&r);
    }
}
END_TEST

START_TEST(test_worker_restart_limit_terminates)
{
    rw r;
    rw_open(&r, "exit", 1, 10, ",'restarts':{'max':2,'window_ms':600000}");
    rw_run(&r);
    ck_assert_str_eq(vat_state(&r.t, "bob"), "terminated");
    char *err = rw_close(&r, NULL);
    ck_assert_int_eq(count_of(err, "worker crashed; restarting"), 2);
    ck_assert_msg(strstr(err, "restarts.max 2): terminating it") != NULL, "%s",
                  err);
    free(err);
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

START_TEST(test_worker_forged_ref_terminates_only_it)
{
    rw r;
    rw_open(&r, "forge", 2, 10, NULL);
    rw_run(&r);
    ck_assert_str_eq(vat_state(&r.t, "bob"), "terminated");
    char *err = rw_close(&r, NULL);
    ck_assert_msg(strstr(err, "restarting") == NULL, "%s", err);
    free(err);
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

START_TEST(test_worker_output_prefixed)
{
    rw r;
    rw_open(&r, "stderr", 2, 5, NULL);
    rw_run(&r);
    ck_vs(&r.t, "alice", "done", "1");
    char *err = rw_close(&r, NULL);
    ck_assert_int_eq(count_of(err, "[vat bob] noise line "), 200);
    ck_assert_msg(strstr(err, "[vat bob] noise line 199\n") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "[vat bob] to stdout\n") != NULL, "%s", err);
    free(err);
    rw_free(&r);
}
END_TEST

/* A frame after STOP is ignored: nothing of it is committed. */
START_TEST(test_worker_frame_after_stop_ignored)
{
    rw r;
    rw_open(&r, "afterstop", 0, 3, NULL);
    rw_run(&r);
    ck_vs(&r.t, "alice", "done", "1");
    free(rw_close(&r, NULL));
    keel_diag d = {0};
    ck_assert_int_eq(keel_kernel_open(r.t.state, NULL, &r.t.k, &d), KEEL_OK);
    ck_vs(&r.t, "bob", "afterstop", NULL);
    ck_vs(&r.t, "bob", "seen", "3");
    tw_close(&r.t);
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

/* The founding scenario: the worker's own async work (here: after the
 * DURABLE notice of its first delivery) sends a group between cranks; it
 * is committed at once as its own transaction and the run loop, idle,
 * wakes for it. */
START_TEST(test_worker_out_of_crank_group_committed)
{
    rw r;
    rw_open(&r, "oc", 1, 3, NULL);
    rw_run(&r);
    ck_vs(&r.t, "alice", "done", "1");
    char *oc = NULL;
    for (int i = 0; i < 50 && (oc = vs(&r.t, "bob", "oc")) == NULL; i++) {
        keel_run_options o = {0};
        o.timeout_ms = 100;
        ck_assert_int_eq(keel_kernel_run(r.t.k, &o, NULL, NULL), KEEL_OK);
    }
    ck_assert_ptr_nonnull(oc);
    /* sent once delivery 1 was durable: by then bob had seen 1..3 pings */
    ck_assert_msg(atoi(oc) >= 1 && atoi(oc) <= 3, "oc = %s", oc);
    free(oc);
    free(rw_close(&r, NULL));
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

/* SIGKILL of the worker at 200 seeded random moments of a pingpong: the
 * kernel goes on every time and ends in the uninterrupted run's state. */
typedef struct killer {
    const char *pidf;
    uint64_t seed;
    volatile int stop;
    int kills;
} killer;

static void *kill_loop(void *arg)
{
    killer *kl = arg;
    while (!kl->stop && kl->kills < 200) {
        struct timespec ts = {0, (long)(tu_rand(&kl->seed) % 4000) * 1000L};
        nanosleep(&ts, NULL);
        FILE *f = fopen(kl->pidf, "r");
        long pid = 0;
        if (f != NULL) {
            if (fscanf(f, "%ld", &pid) != 1) {
                pid = 0;
            }
            fclose(f);
        }
        if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0) {
            kl->kills++;
        }
    }
    return NULL;
}

#define KILL_ROUNDS 20000

START_TEST(test_worker_kill9_200_times_converges)
{
    rw r;
    /* restarts never give up here, and a 1 ms window keeps the backoff at
     * its 10 ms floor. */
    const char *extra = ",'restarts':{'max':1000,'window_ms':1}";
    rw_open(&r, "ok", 0, KILL_ROUNDS, extra);
    rw_run(&r);
    char *want = NULL;
    free(rw_close(&r, &want));
    rw_free(&r);
    rw_open(&r, "ok", 0, KILL_ROUNDS, extra);
    char pidf[160];
    snprintf(pidf, sizeof(pidf), "%s.pid", r.mode_path);
    /* Kills land until 200 did (or alice is done first: the test then
     * fails on the count). */
    killer kl = {.pidf = pidf, .seed = 14};
    pthread_t th;
    pthread_create(&th, NULL, kill_loop, &kl);
    for (int i = 0; i < 600 && kl.kills < 200; i++) {
        keel_run_options o = {0};
        o.timeout_ms = 50;
        keel_diag d = {0};
        int rc = keel_kernel_run(r.t.k, &o, NULL, &d);
        ck_assert_msg(rc == KEEL_OK, "run: %s", d.msg);
        ck_assert_str_eq(vat_state(&r.t, "bob"), "alive");
        char *done = vs(&r.t, "alice", "done");
        free(done);
        if (done != NULL) {
            break;
        }
    }
    kl.stop = 1;
    pthread_join(th, NULL);
    rw_run(&r);
    char want_n[16];
    snprintf(want_n, sizeof(want_n), "%d", KILL_ROUNDS);
    ck_vs(&r.t, "alice", "answers", want_n);
    ck_vs(&r.t, "bob", "seen", want_n);
    char *got = NULL;
    char *err = rw_close(&r, &got);
    ck_assert_msg(kl.kills == 200, "%d kills landed", kl.kills);
    fprintf(stderr, "kill9: %d kills, %d restarts\n", kl.kills,
            count_of(err, "restarting"));
    ck_assert_str_eq(got, want);
    free(err);
    free(got);
    free(want);
    ck_audit(r.t.state);
    rw_free(&r);
}
END_TEST

Suite *worker_suite(void);
Suite *worker_suite(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = tcase_create("kernel");
    tcase_add_test(tc, test_worker_config_errors_name_the_field);
    tcase_add_test(tc, test_worker_refused_without_worker_host);
    tcase_add_test(tc, test_worker_start_gets_whole_entry);
    tcase_add_test(tc, test_worker_crash_aborts_crank_and_redelivers);
    tcase_add_test(tc, test_worker_restart_given_up_terminates);
    tcase_add_test(tc, test_worker_crash_value_from_plain_vat_terminates);
    tcase_add_test(tc, test_worker_oc_txn_commits_between_cranks);
    suite_add_tcase(s, tc);
    TCase *tp = tcase_create("process");
    tcase_set_timeout(tp, 300);
    tcase_add_test(tp, test_worker_process_runs_pingpong);
    tcase_add_test(tp, test_worker_crash_modes_restart_and_converge);
    tcase_add_test(tp, test_worker_restart_limit_terminates);
    tcase_add_test(tp, test_worker_forged_ref_terminates_only_it);
    tcase_add_test(tp, test_worker_output_prefixed);
    tcase_add_test(tp, test_worker_frame_after_stop_ignored);
    tcase_add_test(tp, test_worker_out_of_crank_group_committed);
    tcase_add_test(tp, test_worker_kill9_200_times_converges);
    suite_add_tcase(s, tp);
    return s;
}
