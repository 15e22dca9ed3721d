/*
 * tests/test_crashtest.c — crash injection (recovery/crashtest.h) against
 * the mixed workload (vats/mixed.c, vats/mixed.json: 40 rounds, 1,008
 * transactions), and `keel crashtest`:
 *   - the workload itself: its final vatstore is what an independent
 *     count of its plan says, in deterministic mode and on libuv's real
 *     clock and thread pool alike (same activity hash);
 *   - enumerate: a crash after every WAL I/O operation of the workload
 *     (every one, or every KEEL_CRASHTEST_STRIDE-th), each followed by a
 *     modelled power loss, recovers to a prefix of the reference, passes
 *     the audit and finishes as the reference;
 *   - process: 200 `keel run` children SIGKILLed at random moments;
 *   - corruption: 1,000 damaged logs and snapshots, each refused with an
 *     error naming the file or recovered to a reference prefix;
 *   - the machinery finds what it is for: a vat that keeps its progress
 *     in memory only fails enumerate trials, each with its reproduction
 *     line, and a cluster that is not deterministic is refused;
 *   - the command line: help, usage errors, --trial and --json.
 *
 * Environment (CI's sanitizer builds are slower):
 *   KEEL_CRASHTEST_STRIDE=N  enumerate every N-th crash point (default 1;
 *                            in a build with AddressSanitizer, 7)
 *   KEEL_CRASHTEST_SEED=N    seed of the process and corruption trials
 *                            (default 1); a failure names it
 * Every violation is printed with its `keel crashtest ... --trial T` line;
 * the figures of each mode are printed on stdout.
 */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/keel.h"
#include "keel/kernel.h"

#include "recovery/crashtest.h"
#include "tests/testutil.h"

#define MIXED_ROUNDS          40
#define PROCESS_TRIALS        200
#define CORRUPTION_TRIALS     1000
#define DEFAULT_SEED          1
#define MIN_TRANSACTIONS      1000
#define SANITIZER_STRIDE      7
#define AMNESIAC_TICKS        30
#define NONDETERMINISTIC_KEYS 1

#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_STRIDE SANITIZER_STRIDE
#else
#define DEFAULT_STRIDE 1
#endif

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    return s != NULL && s[0] != '\0' ? strtoull(s, NULL, 10) : dflt;
}

static char *mixed_config(void)
{
    size_t len = 0;
    uint8_t *buf = tu_read_file(KEEL_MIXED_JSON, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", KEEL_MIXED_JSON);
    buf[len] = '\0';
    return (char *)buf;
}

/* Print each violation as it is found (the test then fails on the
 * count). */
static void print_violation(void *arg, int mode, uint64_t trial,
                            const char *what, const char *repro)
{
    fprintf(stderr, "crashtest %s trial %" PRIu64 ": %s\n  reproduce: %s\n",
            keel__crashtest_mode_name(mode), trial, what, repro);
}

/* A session on vats/mixed.json; trials and stride as in crashtest.h. */
static keel__crashtest *open_mixed(keel__crashtest_options *o, char **config,
                                   uint64_t trials, uint64_t stride)
{
    keel__crashtest *ct = NULL;
    keel_diag d = {0};
    *config = mixed_config();
    keel__crashtest_options_init(o);
    o->trials = trials;
    o->stride = stride;
    o->config_json = *config;
    o->config_path = KEEL_MIXED_JSON;
    o->keel_bin = KEEL_BIN;
    o->seed = env_u64("KEEL_CRASHTEST_SEED", DEFAULT_SEED);
    o->violation = print_violation;
    int rc = keel__crashtest_open(o, &ct, &d);
    ck_assert_msg(rc == KEEL_OK, "crashtest open: %s: %s", keel_err_name(rc),
                  d.msg);
    return ct;
}

static void print_report(const keel__crashtest_report *r, uint64_t seed)
{
    printf("crashtest %s (seed %" PRIu64 "): %" PRIu64 " trials, %" PRIu64
           " crash points, %" PRIu64 " violations, %" PRIu64
           " recovered (%" PRIu64 " torn tails), %" PRIu64 " refused, %" PRIu64
           " audits, %.1f s\n",
           keel__crashtest_mode_name(r->mode), seed, r->trials, r->crash_points,
           r->violations, r->recovered, r->torn, r->refused, r->audits,
           r->seconds);
    fflush(stdout);
}

static void assert_clean(const keel__crashtest_report *r, uint64_t seed)
{
    ck_assert_msg(r->violations == 0,
                  "crashtest %s, seed %" PRIu64 ": %" PRIu64
                  " violations; first: %s; reproduce: %s",
                  keel__crashtest_mode_name(r->mode), seed, r->violations,
                  r->first, r->repro);
}

/* ================================================== the workload itself */

/* The mixed workload's plan (vats/mixed.c), counted independently. */
typedef struct mixed_counts {
    uint64_t answers;
    uint64_t rejections;
    uint64_t counter[3];
} mixed_counts;

static void count_plan(uint64_t n, mixed_counts *c)
{
    uint64_t q = 1 + n / 3, x = 1 + 2 * n / 3;
    memset(c, 0, sizeof(*c));
    for (uint64_t i = 1; i <= n; i++) {
        c->answers += 1 + i % 3;        /* the ping chain */
        c->answers += 1 + i % 5;        /* the fan-out */
        c->answers += 1 + (i % 2 == 0); /* the pipelined adds */
        c->answers += 1 + (i % 2 == 1); /* sleep, and hash in odd rounds */
        c->answers += i <= q;           /* quitter's ping or quit */
        c->answers += i < x;            /* crasher's ping */
        c->rejections += i > q ? 2 : 0; /* a dead quitter's ping and use */
        c->rejections += i >= x;        /* boom, then pings to the crasher */
        for (uint64_t j = 0; j < 1 + i % 5; j++) {
            c->counter[(i + j) % 3] += j + 1;
        }
    }
    c->rejections += q - 1; /* the holds, when the quitter exits */
}

static void expect_vs(keel_kernel *k, const char *vat, const char *key,
                      uint64_t want, const char *ctx)
{
    keel_diag d = {0};
    char *val = NULL;
    size_t len = 0;
    char w[24];
    snprintf(w, sizeof(w), "%" PRIu64, want);
    int rc = keel_kernel_vatstore_get(k, vat, key, &val, &len, &d);
    ck_assert_msg(rc == 1 && strcmp(val, w) == 0,
                  "%s: vatstore %s/%s is %s (rc %d %s), expected %s", ctx, vat,
                  key, rc == 1 ? val : "absent", rc, d.msg, w);
    free(val);
}

/* Boot and run the mixed cluster; check its final vatstore; return its
 * activity hash and last LSN. */
static uint64_t run_mixed(const char *config, int deterministic,
                          uint64_t *transactions)
{
    char *dir = tu_tmpdir("crashtest-mixed");
    char *state = tu_path(dir, "state");
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    keel_run_stats rs;
    mixed_counts c;
    const char *ctx = deterministic ? "deterministic" : "libuv";
    keel_kernel_options_init(&o);
    o.deterministic = deterministic;
    ck_assert_int_eq(keel_kernel_open(state, &o, &k, &d), KEEL_OK);
    int rc = keel_kernel_boot(k, config, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s", d.msg);
    rc = keel_kernel_run(k, NULL, &rs, &d);
    ck_assert_msg(rc == KEEL_OK && rs.idle, "run: %d %s", rc, d.msg);
    count_plan(MIXED_ROUNDS, &c);
    expect_vs(k, "driver", "done", 1, ctx);
    expect_vs(k, "driver", "rounds_done", MIXED_ROUNDS, ctx);
    expect_vs(k, "driver", "out", 0, ctx);
    expect_vs(k, "driver", "answers", c.answers, ctx);
    expect_vs(k, "driver", "rejections", c.rejections, ctx);
    for (int i = 0; i < 3; i++) {
        char name[16], key[16];
        snprintf(name, sizeof(name), "counter%d", i);
        snprintf(key, sizeof(key), "ctr.%d", i);
        expect_vs(k, name, "count", c.counter[i], ctx);
        expect_vs(k, "driver", key, c.counter[i], ctx);
    }
    char *st = NULL;
    ck_assert_int_eq(keel_kernel_status_json(k, &st, &d), KEEL_OK);
    json_t *j = json_loads(st, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "run_queue")), 0);
    ck_assert_int_eq(
        json_integer_value(json_object_get(j, "unresolved_promises")), 0);
    *transactions =
        (uint64_t)json_integer_value(json_object_get(j, "last_lsn"));
    json_decref(j);
    free(st);
    uint64_t h = keel_kernel_activity_hash(k);
    ck_assert_int_eq(keel_kernel_close(k, &d), KEEL_OK);
    tu_rmrf(dir);
    free(state);
    free(dir);
    return h;
}

START_TEST(test_crashtest_mixed_workload_ends_as_planned_on_any_host)
{
    char *config = mixed_config();
    uint64_t n1 = 0, n2 = 0;
    uint64_t h1 = run_mixed(config, 1, &n1);
    uint64_t h2 = run_mixed(config, 0, &n2);
    ck_assert_msg(n1 >= MIN_TRANSACTIONS,
                  "the mixed workload makes %" PRIu64 " transactions", n1);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(h1 == h2,
                  "deterministic mode ends with %016" PRIx64
                  ", libuv with %016" PRIx64,
                  h1, h2);
    free(config);
}
END_TEST

/* ================================================================ modes */

/* Run one mode on vats/mixed.json into r (and the reference into ref,
 * without its result string). The session is closed, its scratch
 * directory removed, before anything is asserted. */
static void run_mode(int mode, uint64_t trials, uint64_t stride,
                     keel__crashtest_report *r, keel__crashtest_reference *ref,
                     uint64_t *seed)
{
    keel__crashtest_options o;
    keel_diag d = {0};
    char *config = NULL;
    keel__crashtest *ct = open_mixed(&o, &config, trials, stride);
    *ref = *keel__crashtest_reference_of(ct);
    ref->result = NULL; /* owned by the session */
    int rc = keel__crashtest_run(ct, mode, r, &d);
    keel__crashtest_close(ct);
    free(config);
    *seed = o.seed;
    ck_assert_msg(rc == KEEL_OK, "%s: %s", keel__crashtest_mode_name(mode),
                  d.msg);
    print_report(r, o.seed);
}

START_TEST(test_crashtest_enumerate_every_crash_point_recovers)
{
    keel__crashtest_report r;
    keel__crashtest_reference ref;
    uint64_t seed = 0;
    uint64_t stride = env_u64("KEEL_CRASHTEST_STRIDE", DEFAULT_STRIDE);
    run_mode(KEEL__CRASHTEST_ENUMERATE, 0, stride, &r, &ref, &seed);
    printf("crashtest reference: %" PRIu64 " transactions, %" PRIu64
           " WAL I/O operations, %.3f s a run; stride %" PRIu64 "\n",
           ref.transactions, ref.io_ops, ref.seconds, stride);
    fflush(stdout);
    ck_assert_uint_ge(ref.transactions, MIN_TRANSACTIONS);
    assert_clean(&r, seed);
    /* every stride-th point from 1 + seed % stride (odd strides only) */
    uint64_t s = stride > 1 && stride % 2 == 0 ? stride + 1 : stride;
    uint64_t first = 1 + seed % (s > 0 ? s : 1);
    ck_assert_uint_eq(r.crash_points,
                      s <= 1 ? ref.io_ops : (ref.io_ops - first) / s + 1);
    ck_assert_uint_eq(r.recovered, r.crash_points);
    ck_assert_uint_eq(r.audits, r.recovered);
    ck_assert_uint_gt(r.torn, 0);
    /* past the boot, every crash point had durable LSNs to lose */
    ck_assert_uint_ge(r.durable + 16, r.crash_points);
}
END_TEST

START_TEST(test_crashtest_process_kills_recover)
{
    keel__crashtest_report r;
    keel__crashtest_reference ref;
    uint64_t seed = 0;
    run_mode(KEEL__CRASHTEST_PROCESS, PROCESS_TRIALS, 0, &r, &ref, &seed);
    assert_clean(&r, seed);
    /* the uninterrupted run is trial 0 */
    ck_assert_uint_eq(r.trials, PROCESS_TRIALS + 1);
    ck_assert_uint_eq(r.recovered, PROCESS_TRIALS + 1);
    ck_assert_uint_eq(r.audits, PROCESS_TRIALS + 1);
}
END_TEST

START_TEST(test_crashtest_corruption_is_refused_or_recovered)
{
    keel__crashtest_report r;
    keel__crashtest_reference ref;
    uint64_t seed = 0;
    run_mode(KEEL__CRASHTEST_CORRUPTION, CORRUPTION_TRIALS, 0, &r, &ref, &seed);
    assert_clean(&r, seed);
    ck_assert_uint_eq(r.trials, CORRUPTION_TRIALS);
    ck_assert_uint_eq(r.crash_points, CORRUPTION_TRIALS);
    ck_assert_uint_eq(r.refused + r.recovered, CORRUPTION_TRIALS);
    /* both outcomes occur (the damage is seeded, not timed) */
    ck_assert_uint_gt(r.refused, 0);
    ck_assert_uint_gt(r.recovered, 0);
    ck_assert_uint_gt(r.torn, 0);
}
END_TEST

/* ================================================ the machinery catches */

/* A vat that counts its ticks in memory and only copies the count to its
 * vatstore: after a restart it counts from 0 again, so a resumed run
 * writes other values than an uninterrupted one. */
static int amnesiac_start(keel_syscall *sys, const char *params, void **state)
{
    *state = calloc(1, sizeof(uint64_t));
    return *state != NULL ? KEEL_OK : KEEL_ENOMEM;
}

static int amnesiac_deliver(void *state, keel_syscall *sys,
                            const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    uint64_t *ticks = state;
    char buf[24];
    keel_capdata none = {{"{}", 2}, NULL, 0};
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, ++*ticks);
    int rc = keel_syscall_vatstore_set(sys, "ticks", buf, (size_t)n);
    if (rc == KEEL_OK && *ticks < AMNESIAC_TICKS) {
        rc = keel_syscall_send(sys, "o+0", "tick", &none, NULL);
    }
    return rc;
}

static void amnesiac_stop(void *state)
{
    free(state);
}

static const keel_vat_ops amnesiac_ops = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "amnesiac",
    .start = amnesiac_start,
    .deliver = amnesiac_deliver,
    .stop = amnesiac_stop,
};

/* A vat whose writes depend on the clock. */
static int clocked_deliver(void *state, keel_syscall *sys,
                           const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    struct timespec ts;
    char buf[48];
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(buf, sizeof(buf), "%lld.%09ld", (long long)ts.tv_sec,
                     ts.tv_nsec);
    return keel_syscall_vatstore_set(sys, "when", buf, (size_t)n);
}

static const keel_vat_ops clocked_ops = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "clocked",
    .start = amnesiac_start,
    .deliver = clocked_deliver,
    .stop = amnesiac_stop,
};

static const keel_vat_ops *test_vats(void *arg, const char *name)
{
    if (strcmp(name, "amnesiac") == 0) {
        return &amnesiac_ops;
    }
    return strcmp(name, "clocked") == 0 ? &clocked_ops : NULL;
}

START_TEST(test_crashtest_vat_forgetting_progress_fails_with_repro_lines)
{
    static const char config[] =
        "{\"bootstrap\": \"a\", \"vats\": {\"a\": {\"builtin\": "
        "\"amnesiac\"}}}";
    static const char repro[] = "keel crashtest --config amnesiac.json --mode "
                                "enumerate --seed 4 --trial ";
    keel__crashtest_options o;
    keel__crashtest_report r;
    keel__crashtest *ct = NULL;
    keel_diag d = {0};
    keel__crashtest_options_init(&o);
    o.config_json = config;
    o.config_path = "amnesiac.json";
    o.resolve_vat = test_vats;
    o.stride = 9;
    o.seed = 4;
    /* each session is closed (its scratch directory removed) before the
     * assertions */
    ck_assert_int_eq(keel__crashtest_open(&o, &ct, &d), KEEL_OK);
    uint64_t txns = keel__crashtest_reference_of(ct)->transactions;
    int rc = keel__crashtest_run(ct, KEEL__CRASHTEST_ENUMERATE, &r, &d);
    keel__crashtest_close(ct);
    ck_assert_uint_eq(txns, AMNESIAC_TICKS + 1);
    ck_assert_int_eq(rc, KEEL_OK);
    /* a crash after a few ticks restarts the count: the resumed run ends
     * elsewhere than the reference */
    ck_assert_uint_gt(r.violations, 0);
    ck_assert_msg(strstr(r.first, "the resumed run ended with") != NULL,
                  "first violation: %s", r.first);
    ck_assert_msg(strncmp(r.repro, repro, strlen(repro)) == 0, "repro: %s",
                  r.repro);
    /* --trial T reproduces exactly that crash point */
    o.only_trial = strtoull(r.repro + strlen(repro), NULL, 10);
    ck_assert_int_eq(keel__crashtest_open(&o, &ct, &d), KEEL_OK);
    rc = keel__crashtest_run(ct, KEEL__CRASHTEST_ENUMERATE, &r, &d);
    keel__crashtest_close(ct);
    ck_assert_int_eq(rc, KEEL_OK);
    ck_assert_uint_eq(r.trials, 1);
    ck_assert_uint_eq(r.violations, 1);
}
END_TEST

START_TEST(test_crashtest_nondeterministic_cluster_is_refused)
{
    static const char config[] =
        "{\"bootstrap\": \"a\", \"vats\": {\"a\": {\"builtin\": "
        "\"clocked\"}}}";
    keel__crashtest_options o;
    keel__crashtest *ct = NULL;
    keel_diag d = {0};
    keel__crashtest_options_init(&o);
    o.config_json = config;
    o.resolve_vat = test_vats;
    ck_assert_int_eq(keel__crashtest_open(&o, &ct, &d), KEEL_EINVAL);
    ck_assert_ptr_null(ct);
    ck_assert_msg(strstr(d.msg, "not deterministic") != NULL, "diag: %s",
                  d.msg);
}
END_TEST

/* ============================================================= the CLI */

START_TEST(test_crashtest_cli_help_and_usage_errors)
{
    char *out = NULL, *err = NULL;
    const char *help[] = {"crashtest", "--help", NULL};
    ck_assert_int_eq(tu_run_keel(help, &out, &err), 0);
    ck_assert_msg(strncmp(out, "usage: keel crashtest --config", 30) == 0,
                  "help: %s", out);
    ck_assert_ptr_nonnull(strstr(out, "--mode MODE"));
    free(out);
    free(err);
    const char *no_config[] = {"crashtest", NULL};
    const char *bad_mode[] = {"crashtest", "--config",  KEEL_MIXED_JSON,
                              "--mode",    "sometimes", NULL};
    const char *bad_trials[] = {"crashtest", "--config", KEEL_MIXED_JSON,
                                "--trials",  "0",        NULL};
    const char *trial_all[] = {"crashtest", "--config", KEEL_MIXED_JSON,
                               "--trial",   "3",        NULL};
    const char *const *usage[] = {no_config, bad_mode, bad_trials, trial_all};
    for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
        ck_assert_int_eq(tu_run_keel(usage[i], &out, &err), 2);
        ck_assert_str_eq(out, "");
        tu_assert_one_error_line(err);
        free(out);
        free(err);
    }
    const char *missing[] = {"crashtest", "--config", "/nonexistent/x.json",
                             NULL};
    ck_assert_int_eq(tu_run_keel(missing, &out, &err), 1);
    tu_assert_one_error_line(err);
    free(out);
    free(err);
}
END_TEST

START_TEST(test_crashtest_cli_one_trial_json)
{
    char *out = NULL, *err = NULL;
    const char *args[] = {"crashtest", "--config",  KEEL_MIXED_JSON,
                          "--mode",    "enumerate", "--trial",
                          "1500",      "--json",    NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    json_t *o = json_loads(out, 0, NULL);
    ck_assert_msg(o != NULL, "not JSON: %s", out);
    json_t *ref = json_object_get(o, "reference");
    ck_assert_int_ge(json_integer_value(json_object_get(ref, "transactions")),
                     MIN_TRANSACTIONS);
    ck_assert_int_ge(json_integer_value(json_object_get(ref, "io_ops")), 1500);
    json_t *m = json_array_get(json_object_get(o, "modes"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(m, "mode")),
                     "enumerate");
    ck_assert_int_eq(json_integer_value(json_object_get(m, "trials")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "violations")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "recovered")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(m, "audits")), 1);
    json_decref(o);
    free(out);
    free(err);
}
END_TEST

Suite *crashtest_suite(void);

Suite *crashtest_suite(void)
{
    Suite *s = suite_create("crashtest");
    TCase *tc = tcase_create("workload");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc,
                   test_crashtest_mixed_workload_ends_as_planned_on_any_host);
    suite_add_tcase(s, tc);

    tc = tcase_create("modes");
    /* minutes of child processes; each child is bounded by the machinery */
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, test_crashtest_enumerate_every_crash_point_recovers);
    tcase_add_test(tc, test_crashtest_process_kills_recover);
    tcase_add_test(tc, test_crashtest_corruption_is_refused_or_recovered);
    suite_add_tcase(s, tc);

    tc = tcase_create("catches");
    tcase_set_timeout(tc, 300);
    tcase_add_test(
        tc, test_crashtest_vat_forgetting_progress_fails_with_repro_lines);
    tcase_add_test(tc, test_crashtest_nondeterministic_cluster_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_crashtest_cli_help_and_usage_errors);
    tcase_add_test(tc, test_crashtest_cli_one_trial_json);
    suite_add_tcase(s, tc);
    return s;
}
