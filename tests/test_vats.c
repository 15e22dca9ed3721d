/*
 * tests/test_vats.c — the example vats against input from outside, through
 * the public kernel API on real states: every example vat answers a
 * malformed message (wrong JSON type, a missing or out-of-range field, the
 * wrong number of slots, an unknown method) with a rejected result that
 * says what was expected, stays alive, and answers a good message
 * afterwards; and a method name is checked (UTF-8, 1..KEEL_METHOD_MAX
 * bytes) at every way into the kernel: keel_kernel_send refuses it, and a
 * vat that sends one is terminated, alone.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"
#include "keel/kernel.h"

#include "tests/testutil.h"
#include "vats/vutil.h"

typedef struct tv {
    char *root;
    char *state;
    keel_kernel *k;
    keel_kernel_options o;
} tv;

/* The config with ' for " (readable C strings). */
static char *sq(const char *s)
{
    char *c = strdup(s);
    ck_assert_ptr_nonnull(c);
    for (char *p = c; *p != '\0'; p++) {
        *p = *p == '\'' ? '"' : *p;
    }
    return c;
}

static void run_idle(tv *t)
{
    keel_diag d = {0};
    keel_run_stats st;
    int rc = keel_kernel_run(t->k, NULL, &st, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc), d.msg);
    ck_assert(st.idle);
}

/* Open a new state with o (resolve_vat may be set), boot config (with '),
 * run to idle. */
static void tv_boot(tv *t, const char *config)
{
    keel_diag d = {0};
    t->root = tu_tmpdir("vats");
    t->state = tu_path(t->root, "state");
    int rc = keel_kernel_open(t->state, &t->o, &t->k, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s", d.msg);
    char *cfg = sq(config);
    rc = keel_kernel_boot(t->k, cfg, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s: %s", d.msg, cfg);
    free(cfg);
    run_idle(t);
}

static void tv_free(tv *t)
{
    keel_diag d = {0};
    ck_assert_int_eq(keel_kernel_close(t->k, &d), KEEL_OK);
    tu_rmrf(t->root);
    free(t->root);
    free(t->state);
}

/* Send method(args) to vat from outside, run to idle; return the result's
 * state (1 fulfilled, 2 rejected) and its body (malloc'd) in *body. */
static int ask(tv *t, const char *vat, const char *method, const char *args,
               char **body)
{
    keel_diag d = {0};
    char kp[KEEL_VREF_MAX];
    int rc = keel_kernel_send(t->k, vat, method, args, kp, &d);
    ck_assert_msg(rc == KEEL_OK, "send %s.%s(%s): %s", vat, method, args,
                  d.msg);
    run_idle(t);
    *body = NULL;
    int state = keel_kernel_promise(t->k, kp, body, &d);
    ck_assert_msg(state == 1 || state == 2, "%s.%s(%s): unsettled (%d) %s", vat,
                  method, args, state, d.msg);
    return state;
}

/* 1 if vat is alive in the status. */
static int alive(tv *t, const char *vat)
{
    keel_diag d = {0};
    char *text = NULL;
    ck_assert_int_eq(keel_kernel_status_json(t->k, &text, &d), KEEL_OK);
    json_t *st = json_loads(text, 0, NULL);
    free(text);
    ck_assert_ptr_nonnull(st);
    json_t *v;
    size_t i;
    int found = -1;
    json_array_foreach(json_object_get(st, "vats"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "name")), vat) == 0) {
            found = strcmp(json_string_value(json_object_get(v, "state")),
                           "alive") == 0;
        }
    }
    json_decref(st);
    ck_assert_msg(found >= 0, "no vat %s", vat);
    return found;
}

typedef struct bad_case {
    const char *vat, *method, *args;
    const char *expect; /* the rejection's error contains it */
} bad_case;

typedef struct good_case {
    const char *vat, *method, *args;
    const char *answer; /* the fulfilment, exactly (NULL: not checked) */
} good_case;

/* Each malformed message is rejected with {"error":"<method>: ..."} and its
 * vat lives; then each good one is fulfilled as expected. */
static void check_cluster(const char *config, const bad_case *bad, size_t nb,
                          const good_case *good, size_t ng)
{
    tv t;
    memset(&t, 0, sizeof(t));
    keel_kernel_options_init(&t.o);
    tv_boot(&t, config);
    for (size_t i = 0; i < nb; i++) {
        const bad_case *c = &bad[i];
        char *body = NULL;
        int state = ask(&t, c->vat, c->method, c->args, &body);
        ck_assert_msg(state == 2, "%s.%s(%s): not rejected: %s", c->vat,
                      c->method, c->args, body);
        json_t *b = json_loads(body, 0, NULL);
        const char *err = json_string_value(json_object_get(b, "error"));
        ck_assert_msg(err != NULL, "%s.%s(%s): no error message: %s", c->vat,
                      c->method, c->args, body);
        ck_assert_msg(strncmp(err, c->method, strlen(c->method)) == 0 &&
                          strstr(err, c->expect) != NULL,
                      "%s.%s(%s): error \"%s\" lacks \"%s\"", c->vat, c->method,
                      c->args, err, c->expect);
        ck_assert_msg(strcmp(err, "vat terminated") != 0, "terminated");
        ck_assert_msg(alive(&t, c->vat), "%s.%s(%s) terminated %s", c->vat,
                      c->method, c->args, c->vat);
        json_decref(b);
        free(body);
    }
    for (size_t i = 0; i < ng; i++) {
        const good_case *c = &good[i];
        char *body = NULL;
        char *args = sq(c->args);
        int state = ask(&t, c->vat, c->method, args, &body);
        ck_assert_msg(state == 1, "%s.%s(%s): not fulfilled: %s", c->vat,
                      c->method, args, body);
        if (c->answer != NULL) {
            char *want = sq(c->answer);
            ck_assert_str_eq(body, want);
            free(want);
        }
        free(args);
        free(body);
    }
    tv_free(&t);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char pingpong_cfg[] =
    "{'bootstrap':'alice','vats':{"
    "'alice':{'builtin':'pingpong','params':{'role':'alice','rounds':2}},"
    "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}";

START_TEST(test_vats_pingpong_refuses_malformed_and_lives)
{
    static const bad_case bad[] = {
        {"bob", "ping", "null", "must be a JSON object"},
        {"bob", "ping", "[1]", "must be a JSON object"},
        {"bob", "ping", "{}", "\"i\" must be an integer"},
        {"bob", "ping", "{\"i\":\"1\"}", "\"i\" must be an integer"},
        {"bob", "ping", "{\"i\":-1}", "\"i\" must be an integer"},
        {"bob", "ping", "{\"i\":9223372036854775807}", "from 0 to"},
        {"bob", "pong", "{}", "unknown method"},
        {"alice", "bootstrap", "{}", "already bootstrapped"},
        {"alice", "ping", "{\"i\":1}", "unknown method"},
    };
    static const good_case good[] = {
        {"bob", "ping", "{'i':41}", "{'value':42}"},
    };
    check_cluster(pingpong_cfg, bad, N(bad), good, N(good));
}
END_TEST

START_TEST(test_vats_counter_refuses_malformed_and_lives)
{
    static const char cfg[] =
        "{'bootstrap':'driver','vats':{"
        "'driver':{'builtin':'counter_driver','params':{'incrs':3}},"
        "'counter':{'builtin':'counter'}}}";
    static const bad_case bad[] = {
        {"counter", "incr", "null", "must be a JSON object"},
        {"counter", "incr", "{}", "\"n\" must be an integer"},
        {"counter", "incr", "{\"n\":true}", "\"n\" must be an integer"},
        {"counter", "incr", "{\"n\":-3}", "\"n\" must be an integer"},
        {"counter", "incr", "{\"n\":9223372036854775807}", "pass 2^63-1"},
        {"counter", "get", "7", "must be a JSON object"},
        {"counter", "decr", "{\"n\":1}", "unknown method"},
        {"driver", "bootstrap", "{}", "arguments must be"},
        {"driver", "go", "{}", "unknown method"},
    };
    static const good_case good[] = {
        {"counter", "get", "{}", "{'value':3}"},
        {"counter", "incr", "{'n':2}", "{'value':5}"},
    };
    check_cluster(cfg, bad, N(bad), good, N(good));
}
END_TEST

START_TEST(test_vats_chain5_refuses_malformed_and_lives)
{
    static const char cfg[] =
        "{'bootstrap':'coordinator','vats':{"
        "'coordinator':{'builtin':'coordinator','params':{'rounds':2}},"
        "'provider':{'builtin':'provider'},"
        "'keyring':{'builtin':'keyring'}}}";
    static const bad_case bad[] = {
        {"provider", "fetch", "null", "must be a JSON object"},
        {"provider", "fetch", "{\"i\":1000000001}", "\"i\" must be"},
        {"provider", "record", "{\"sig\":\"x\"}", "\"sig\" must be"},
        {"provider", "record", "{\"sig\":65521}", "\"sig\" must be"},
        {"provider", "store", "{}", "unknown method"},
        {"keyring", "sign", "{\"v\":1}", "expected 1 slot, got 0"},
        {"keyring", "sign", "\"v\"", "must be a JSON object"},
        {"keyring", "verify", "{}", "unknown method"},
        {"coordinator", "bootstrap", "{}", "already bootstrapped"},
        {"coordinator", "fetch", "{\"i\":1}", "unknown method"},
    };
    static const good_case good[] = {
        {"provider", "record", "{'sig':5}", "{'ok':5}"},
        /* answered out of crank from the thread pool */
        {"provider", "fetch", "{'i':3}", "{'value':16}"},
    };
    check_cluster(cfg, bad, N(bad), good, N(good));
}
END_TEST

START_TEST(test_vats_mixed_refuses_malformed_and_lives)
{
    /* rounds 0: the driver is done at once and no vat is made to die */
    static const char cfg[] =
        "{'bootstrap':'driver','vats':{"
        "'driver':{'builtin':'mixed','params':{'role':'driver','rounds':0}},"
        "'echo':{'builtin':'mixed','params':{'role':'echo'}},"
        "'counter0':{'builtin':'mixed','params':{'role':'counter'}},"
        "'counter1':{'builtin':'mixed','params':{'role':'counter'}},"
        "'counter2':{'builtin':'mixed','params':{'role':'counter'}},"
        "'factory':{'builtin':'mixed','params':{'role':'factory'}},"
        "'clock':{'builtin':'mixed','params':{'role':'clock'}},"
        "'quitter':{'builtin':'mixed','params':{'role':'doomed'}},"
        "'crasher':{'builtin':'mixed','params':{'role':'doomed'}}}}";
    static const bad_case bad[] = {
        {"driver", "bootstrap", "{}", "already bootstrapped"},
        {"driver", "go", "{}", "unknown method"},
        {"echo", "ping", "null", "must be a JSON object"},
        {"echo", "ping", "{\"n\":4000000}", "\"n\" must be"},
        {"echo", "pong", "{}", "unknown method"},
        {"counter0", "incr", "{\"by\":17}", "\"by\" must be"},
        {"counter0", "incr", "[]", "must be a JSON object"},
        {"counter0", "get", "{}", "unknown method"},
        {"factory", "makeAdder", "null", "must be a JSON object"},
        {"factory", "makeAdder", "{\"base\":-1}", "\"base\" must be"},
        {"factory", "add", "{\"x\":1}", "unknown method"},
        {"clock", "sleep", "{\"i\":1,\"ms\":5000}", "\"ms\" must be"},
        {"clock", "hash", "{}", "\"i\" must be"},
        {"clock", "tick", "{}", "unknown method"},
        {"quitter", "quit", "{\"i\":\"x\"}", "\"i\" must be"},
        {"crasher", "ping", "1", "must be a JSON object"},
        {"crasher", "explode", "{}", "unknown method"},
    };
    static const good_case good[] = {
        {"echo", "ping", "{'n':4}", "{'value':5}"},
        {"counter0", "incr", "{'by':2}", "{'count':2}"},
        {"factory", "makeAdder", "{'base':1}", "{'@slot':0}"},
        {"clock", "sleep", "{'i':3,'ms':0}", "{'woke':9}"},
        {"clock", "hash", "{'i':1}", NULL},
        {"quitter", "ping", "{'n':1}", "{'value':2}"},
        {"crasher", "ping", "{'n':2}", "{'value':3}"},
    };
    check_cluster(cfg, bad, N(bad), good, N(good));
}
END_TEST

/* echo answers every message with its own arguments, by contract: nothing
 * is malformed for it, and odd arguments leave it alive. */
START_TEST(test_vats_echo_so_answers_anything_and_lives)
{
    char cfg[512];
    snprintf(cfg, sizeof(cfg),
             "{'bootstrap':'echo','vats':{'echo':{'path':'%s'}}}",
             KEEL_ECHO_SO);
    static const good_case good[] = {
        {"echo", "ping", "null", "null"},
        {"echo", "whatever", "[1,'two']", "[1,'two']"},
        {"echo", "ping", "{'i':1}", "{'i':1}"},
    };
    check_cluster(cfg, NULL, 0, good, N(good));
}
END_TEST

/* ------------------------------------------------------- method names */

START_TEST(test_vats_kernel_send_refuses_bad_method_names)
{
    char *long_name = malloc(100001);
    char max_name[KEEL_METHOD_MAX + 1], over[KEEL_METHOD_MAX + 2];
    ck_assert_ptr_nonnull(long_name);
    memset(long_name, 'a', 100000);
    long_name[100000] = '\0';
    memset(max_name, 'm', KEEL_METHOD_MAX);
    max_name[KEEL_METHOD_MAX] = '\0';
    memset(over, 'm', KEEL_METHOD_MAX + 1);
    over[KEEL_METHOD_MAX + 1] = '\0';
    const struct {
        const char *m, *why;
    } bad[] = {
        {"", "empty"},
        {"\xff", "not valid UTF-8"},
        {"ping\x80", "not valid UTF-8"},
        {"\xc0\xaf", "not valid UTF-8"},         /* overlong '/' */
        {"\xed\xa0\x80", "not valid UTF-8"},     /* a surrogate */
        {"\xf4\x90\x80\x80", "not valid UTF-8"}, /* above U+10FFFF */
        {"caf\xc3", "not valid UTF-8"},          /* cut short */
        {over, "longer than 255 bytes"},
        {long_name, "longer than 255 bytes"},
    };
    tv t;
    memset(&t, 0, sizeof(t));
    keel_kernel_options_init(&t.o);
    tv_boot(&t, pingpong_cfg);
    uint64_t crank = keel_kernel_crank_number(t.k);
    for (size_t i = 0; i < N(bad); i++) {
        keel_diag d = {0};
        char kp[KEEL_VREF_MAX];
        int rc = keel_kernel_send(t.k, "bob", bad[i].m, "{}", kp, &d);
        ck_assert_msg(rc == KEEL_EINVAL, "case %zu: %s", i, keel_err_name(rc));
        ck_assert_msg(strncmp(d.msg, "method ", 7) == 0 &&
                          strstr(d.msg, bad[i].why) != NULL,
                      "case %zu: %s", i, d.msg);
    }
    /* nothing was queued */
    run_idle(&t);
    ck_assert_uint_eq(keel_kernel_crank_number(t.k), crank);
    /* the longest name, and multi-byte UTF-8, are delivered (and refused
     * by bob as unknown methods) */
    char *body = NULL;
    ck_assert_int_eq(ask(&t, "bob", max_name, "{}", &body), 2);
    ck_assert_ptr_nonnull(strstr(body, "unknown method"));
    free(body);
    ck_assert_int_eq(ask(&t, "bob", "p\xc3\xafng\xf0\x9f\x8f\x93", "{}", &body),
                     2);
    ck_assert_ptr_nonnull(strstr(body, "p\xc3\xafng"));
    free(body);
    tv_free(&t);
    free(long_name);
}
END_TEST

/* A vat that sends with a bad method: params {"method":..} or, for the
 * long one, {"len":n}; it sends method({"n":1}) to counter's root on
 * bootstrap and nothing else. */
static int sender_start(keel_syscall *sys, const char *params, void **state)
{
    (void)sys;
    *state = strdup(params);
    return *state != NULL ? KEEL_OK : KEEL_ENOMEM;
}

static int sender_deliver(void *state, keel_syscall *sys,
                          const keel_delivery *d)
{
    char target[KEEL_VREF_MAX];
    json_t *p = json_loads(state, 0, NULL);
    char *m = NULL;
    int rc = keel__vutil_bootstrap_root(&d->args, "counter", target);
    if (rc == KEEL_OK && json_object_get(p, "len") != NULL) {
        size_t n = (size_t)json_integer_value(json_object_get(p, "len"));
        m = malloc(n + 1);
        memset(m, 'x', n);
        m[n] = '\0';
    } else if (rc == KEEL_OK) {
        /* hex, so the JSON params can carry invalid UTF-8 */
        const char *hex = json_string_value(json_object_get(p, "hex"));
        size_t n = strlen(hex) / 2;
        m = calloc(1, n + 1);
        for (size_t i = 0; i < n; i++) {
            unsigned b = 0;
            sscanf(hex + 2 * i, "%2x", &b);
            m[i] = (char)b;
        }
    }
    keel_capdata cd = {{"{\"n\":1}", 7}, NULL, 0};
    rc = rc < 0 ? rc : keel_syscall_send(sys, target, m, &cd, NULL);
    free(m);
    json_decref(p);
    return rc;
}

static void sender_stop(void *state)
{
    free(state);
}

static const keel_vat_ops t_sender = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "t_sender",
    .start = sender_start,
    .deliver = sender_deliver,
    .stop = sender_stop,
};

static const keel_vat_ops *resolve(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "t_sender") == 0 ? &t_sender : NULL;
}

/* The send syscall with a bad method is illegal: the sender alone is
 * terminated and nothing reaches the counter; a good one is delivered. */
START_TEST(test_vats_send_syscall_bad_method_terminates_only_sender)
{
    static const struct {
        const char *params;
        int legal;
    } cases[] = {
        {"{'hex':'ff'}", 0}, {"{'hex':'696e6372c0'}", 0},
        {"{'hex':''}", 0},   {"{'len':100000}", 0},
        {"{'len':256}", 0},  {"{'hex':'696e6372'}", 1}, /* "incr" */
    };
    for (size_t i = 0; i < N(cases); i++) {
        char cfg[512];
        snprintf(cfg, sizeof(cfg),
                 "{'bootstrap':'sender','vats':{"
                 "'sender':{'builtin':'t_sender','params':%s},"
                 "'counter':{'builtin':'counter'}}}",
                 cases[i].params);
        tv t;
        memset(&t, 0, sizeof(t));
        keel_kernel_options_init(&t.o);
        t.o.resolve_vat = resolve;
        tv_boot(&t, cfg);
        ck_assert_msg(alive(&t, "sender") == cases[i].legal,
                      "case %zu (%s): sender %s", i, cases[i].params,
                      cases[i].legal ? "terminated" : "alive");
        ck_assert_msg(alive(&t, "counter"), "case %zu: counter terminated", i);
        char *val = NULL;
        size_t len = 0;
        keel_diag d = {0};
        int rc =
            keel_kernel_vatstore_get(t.k, "counter", "count", &val, &len, &d);
        ck_assert_msg(rc == cases[i].legal, "case %zu: count %s", i,
                      rc == 1 ? val : "absent");
        free(val);
        tv_free(&t);
    }
}
END_TEST

Suite *vats_suite(void);

Suite *vats_suite(void)
{
    Suite *s = suite_create("vats");
    TCase *tc = tcase_create("malformed");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vats_pingpong_refuses_malformed_and_lives);
    tcase_add_test(tc, test_vats_counter_refuses_malformed_and_lives);
    tcase_add_test(tc, test_vats_chain5_refuses_malformed_and_lives);
    tcase_add_test(tc, test_vats_mixed_refuses_malformed_and_lives);
    tcase_add_test(tc, test_vats_echo_so_answers_anything_and_lives);
    suite_add_tcase(s, tc);

    tc = tcase_create("method");
    tcase_add_test(tc, test_vats_kernel_send_refuses_bad_method_names);
    tcase_add_test(tc,
                   test_vats_send_syscall_bad_method_terminates_only_sender);
    suite_add_tcase(s, tc);
    return s;
}
