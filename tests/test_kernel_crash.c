/*
 * tests/test_kernel_crash.c — the ⟳ scenarios of SPEC §9 (§9.1 ping-pong,
 * §9.10 the vatstore counter, §9.11 the out-of-crank resolve, §9.12 the
 * five-hop chain) across REAL crashes. A child `keel run STATE --config X` is
 * killed with SIGKILL, either at a chosen point ($KEEL_CRASH_POINT, see
 * keel_kernel_options.crash_point) or at a seeded-random moment, then
 * STATE is reopened with `keel run STATE` until idle. It must end with the
 * same result and the same activity hash as an uninterrupted run of the
 * same config (the reference, run afresh by each test).
 *
 * Oracles, checked after every crash-and-resume:
 *   O1  The result: the vatstore values each cluster documents for a
 *       finished run (read with keel_kernel_vatstore_get after the runs),
 *       an empty run queue, no unresolved promise, every vat alive.
 *   O2  The activity hash (`keel status STATE --json`) equals the
 *       reference's: the recovered kernel did exactly the same
 *       transactions, whatever the crash point and the --sync policy.
 *   O3  Under sync=full, a commit-after or apply-after crash at the N-th
 *       commit of a fresh STATE leaves LSN N in the log, and commit-before
 *       leaves LSN N-1: what was appended is durable, nothing else is.
 *   O4  A message `keel send` acknowledged (`queued: kpN`) survives the
 *       kill of any later run, and settles once a run resumes.
 *   O5  An answer computed on the thread pool while the run queue is
 *       empty is delivered with no further input; a run that would wait
 *       for it forever fails by --timeout-ms and a bounded wait here.
 *
 * The CLI has no option for the checkpoint interval (every 10,000
 * transactions or 1,000 ms, and at open and close), so a CLI run reaches
 * checkpoint-before/after only at N = 1 (open) and 2 (close). Crashes at
 * later checkpoints use a forked child that drives the same kernel
 * through keel_kernel_open with checkpoint_cranks = 1 or 3 and the same
 * crash_point option; it is SIGKILLed just as `keel run` is, and the
 * resume is a `keel run` again.
 *
 * Random kills cannot be replayed exactly (they depend on timing), but
 * every assertion names the config, sync policy, master seed, trial and
 * delay, and KEEL_CRASH_SEED=<hex> sets the master seed.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"
#include "keel/kernel.h"

#include "tests/testutil.h"
#include "tools/crash_point.h"

extern char **environ;

/* A child that runs past this is hung: SIGKILL it and fail (O5). */
#define CHILD_DEADLINE_MS 120000
/* What the out-of-crank regression gives `keel run --timeout-ms`. */
#define REGRESSION_TIMEOUT_MS "20000"
/* Resumes must end idle long before this. */
#define RESUME_TIMEOUT_MS "60000"
/* Poll step while waiting for a child (not a timing check). */
#define WAIT_STEP_US 2000

#ifdef KEEL_LONG_TESTS
#define RANDOM_TRIALS_PER_CONFIG 200
#define GROUP_TRIALS             300
#define OFF_TRIALS               60
#define LONG_TRIALS              20
#else
#define RANDOM_TRIALS_PER_CONFIG 18
#define GROUP_TRIALS             12
#define OFF_TRIALS               6
#define LONG_TRIALS              3
#endif

#define DEFAULT_SEED 0x6B65656C43524153ull /* "keelCRAS" */

/* ================================================================ clusters */

/* The example clusters of vats/ (pingpong.json, counter.json, chain5.json),
 * inline so the suite runs from any directory; the counter is driven with
 * 30 incrs instead of 100 (every crank is an fdatasync under sync=full, and
 * the counter runs in nearly every test). */
static const char pingpong_json[] =
    "{\"bootstrap\": \"alice\", \"vats\": {"
    "\"alice\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"alice\", "
    "\"rounds\": 10}},"
    "\"bob\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"bob\"}}}}";

static const char pingpong_long_json[] =
    "{\"bootstrap\": \"alice\", \"vats\": {"
    "\"alice\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"alice\", "
    "\"rounds\": 8000}},"
    "\"bob\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"bob\"}}}}";

static const char counter_json[] =
    "{\"bootstrap\": \"driver\", \"vats\": {"
    "\"driver\": {\"builtin\": \"counter_driver\", \"params\": "
    "{\"target\": \"counter\", \"incrs\": 30}},"
    "\"counter\": {\"builtin\": \"counter\"}}}";

static const char chain5_json[] =
    "{\"bootstrap\": \"coordinator\", \"vats\": {"
    "\"coordinator\": {\"builtin\": \"coordinator\", \"params\": "
    "{\"rounds\": 5}},"
    "\"provider\": {\"builtin\": \"provider\"},"
    "\"keyring\": {\"builtin\": \"keyring\"}}}";

#define PINGPONG_ROUNDS 10
/* Ping-pong long enough (2 × 8000 + 2 transactions) to pass the CLI's
 * checkpoint interval of 10,000 transactions in its middle. */
#define LONG_ROUNDS   8000
#define COUNTER_INCRS 30
#define CHAIN_ROUNDS  5

/* chain5: round r's fetch crank is crank 2 + 6(r-1) (bootstrap is crank 1,
 * then six cranks a round: fetch, notify P1, sign, record, notify P3,
 * notify P2), and its out-of-crank answer is LSN 4 + 7(r-1) (boot is LSN
 * 1, and each round adds its six cranks plus the answer). */
#define CHAIN_FETCH_CRANK(r) (2 + 6 * ((r)-1))
#define CHAIN_ANSWER_LSN(r)  (4 + 7 * ((r)-1))

typedef struct scenario {
    const char *name;
    const char *config;
    /* Transactions of an uninterrupted run from boot: its last LSN. */
    uint64_t commits;
    /* commit-before/commit-after/apply-after N to try (N <= commits). */
    const uint64_t *points;
    size_t npoints;
    /* O1: assert the finished cluster's vatstore. */
    void (*expect)(keel_kernel *k, const char *ctx);
} scenario;

static void expect_vs(keel_kernel *k, const char *vat, const char *key,
                      const char *want, const char *ctx)
{
    keel_diag d = {0};
    char *val = NULL;
    size_t len = 0;
    int rc = keel_kernel_vatstore_get(k, vat, key, &val, &len, &d);
    ck_assert_msg(rc == 1 && strcmp(val, want) == 0,
                  "%s: vatstore %s/%s is %s (rc %d %s), expected \"%s\"", ctx,
                  vat, key, rc == 1 ? val : "absent", rc, d.msg, want);
    free(val);
}

static void expect_vs_u64(keel_kernel *k, const char *vat, const char *key,
                          uint64_t want, const char *ctx)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, want);
    expect_vs(k, vat, key, buf, ctx);
}

/* pingpong.c: answers = N, last = N+1, done = "1". */
static void pingpong_rounds_expect(keel_kernel *k, uint64_t rounds,
                                   const char *ctx)
{
    expect_vs_u64(k, "alice", "answers", rounds, ctx);
    expect_vs(k, "alice", "done", "1", ctx);
    expect_vs_u64(k, "alice", "last", rounds + 1, ctx);
}

static void pingpong_expect(keel_kernel *k, const char *ctx)
{
    pingpong_rounds_expect(k, PINGPONG_ROUNDS, ctx);
}

static void pingpong_long_expect(keel_kernel *k, const char *ctx)
{
    pingpong_rounds_expect(k, LONG_ROUNDS, ctx);
}

/* counter.c and counter_driver.c: count = seen = max = N, done = "1". */
static void counter_expect(keel_kernel *k, const char *ctx)
{
    expect_vs_u64(k, "counter", "count", COUNTER_INCRS, ctx);
    expect_vs_u64(k, "driver", "seen", COUNTER_INCRS, ctx);
    expect_vs_u64(k, "driver", "max", COUNTER_INCRS, ctx);
    expect_vs(k, "driver", "done", "1", ctx);
}

/* chain5.c's table: s(i) = ((i*i + 7) * 7919 + 13) mod 65521. */
static uint64_t chain_sig(uint64_t i)
{
    uint64_t v = i * i + 7;
    return ((v % 65521) * 7919 + 13) % 65521;
}

static void chain5_expect(keel_kernel *k, const char *ctx)
{
    char key[32];
    expect_vs_u64(k, "coordinator", "rounds_done", CHAIN_ROUNDS, ctx);
    expect_vs(k, "coordinator", "done", "1", ctx);
    expect_vs_u64(k, "provider", "records", CHAIN_ROUNDS, ctx);
    for (uint64_t i = 1; i <= CHAIN_ROUNDS; i++) {
        snprintf(key, sizeof(key), "result.%" PRIu64, i);
        expect_vs_u64(k, "coordinator", key, chain_sig(i), ctx);
        snprintf(key, sizeof(key), "record.%" PRIu64, i);
        expect_vs_u64(k, "provider", key, chain_sig(i), ctx);
    }
}

static const uint64_t pingpong_points[] = {1, 2, 3, 5, 11, 17, 21, 22};
static const uint64_t counter_points[] = {1, 2, 5, 17, 31, 45, 61, 62};
static const uint64_t chain5_points[] = {1, 2, 4, 5, 9, 17, 25, 36, 37};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const scenario scen_pingpong = {
    "pingpong",      pingpong_json,          22,
    pingpong_points, NELEM(pingpong_points), pingpong_expect};
static const scenario scen_counter = {
    "counter",      counter_json,          62,
    counter_points, NELEM(counter_points), counter_expect};
static const scenario scen_chain5 = {
    "chain5",      chain5_json,          37,
    chain5_points, NELEM(chain5_points), chain5_expect};

/* Only random kills: no chosen points. */
static const scenario scen_pingpong_long = {
    "pingpong_long",     pingpong_long_json, 2 * LONG_ROUNDS + 2, NULL, 0,
    pingpong_long_expect};

/* The first three are the SPEC §9 clusters every sweep covers. */
#define SHORT_SCENARIOS 3
static const scenario *const all_scenarios[] = {
    &scen_pingpong, &scen_counter, &scen_chain5, &scen_pingpong_long};

/* ================================================================ children */

typedef struct argvb {
    const char *a[24];
    size_t n;
} argvb;

static void av_add(argvb *b, const char *s)
{
    ck_assert(b->n + 2 < NELEM(b->a));
    b->a[b->n++] = s;
    b->a[b->n] = NULL;
}

/* `keel run STATE [--config CFG] [--sync S] --json`. */
static void av_run(argvb *b, const char *state, const char *config,
                   const char *sync)
{
    memset(b, 0, sizeof(*b));
    av_add(b, KEEL_BIN);
    av_add(b, "run");
    av_add(b, state);
    if (config != NULL) {
        av_add(b, "--config");
        av_add(b, config);
    }
    if (sync != NULL) {
        av_add(b, "--sync");
        av_add(b, sync);
    }
    av_add(b, "--json");
}

typedef struct child {
    pid_t pid;
    int out_fd;
    int err_fd;
} child;

static int tmp_fd(void)
{
    char path[] = "/tmp/keel-crash-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_msg(fd >= 0, "mkstemp: %s", strerror(errno));
    unlink(path);
    return fd;
}

/* Start KEEL_BIN with argv (argv[0] included), and KEEL_CRASH_POINT set to
 * crash_point (NULL: removed from the environment). The environment is
 * built here, before fork, so the child only dup2s and execs. */
static void child_start(child *c, const argvb *b, const char *crash_point)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **envp = calloc(n + 2, sizeof(*envp));
    char *point = NULL;
    size_t m = 0;
    ck_assert_ptr_nonnull(envp);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "KEEL_CRASH_POINT=", 17) != 0) {
            envp[m++] = environ[i];
        }
    }
    if (crash_point != NULL) {
        size_t len = strlen(crash_point) + 18;
        point = malloc(len);
        ck_assert_ptr_nonnull(point);
        snprintf(point, len, "KEEL_CRASH_POINT=%s", crash_point);
        envp[m++] = point;
    }
    c->out_fd = tmp_fd();
    c->err_fd = tmp_fd();
    c->pid = fork();
    ck_assert(c->pid >= 0);
    if (c->pid == 0) {
        dup2(c->out_fd, 1);
        dup2(c->err_fd, 2);
        execve(KEEL_BIN, (char *const *)b->a, envp);
        _exit(127);
    }
    free(point);
    free(envp);
}

static char *read_all(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got <= 0) {
            break;
        }
        len += (size_t)got;
    }
    buf[len] = '\0';
    return buf;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u),
                          (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Exit code of a waitpid status, or 128 + the signal (137 = SIGKILL). */
static int exit_code(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Wait for pid, at most CHILD_DEADLINE_MS: a child still running then is
 * hung, and is killed (the caller then fails on *hung). @return its exit
 * code (exit_code). */
static int reap(pid_t pid, int *hung)
{
    int st = 0;
    uint64_t deadline = now_us() + (uint64_t)CHILD_DEADLINE_MS * 1000u;
    *hung = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        ck_assert_msg(r >= 0, "waitpid: %s", strerror(errno));
        if (r == pid) {
            break;
        }
        if (now_us() > deadline) {
            *hung = 1;
            kill(pid, SIGKILL);
            ck_assert(waitpid(pid, &st, 0) == pid);
            break;
        }
        sleep_us(WAIT_STEP_US);
    }
    return exit_code(st);
}

/* reap c, then collect its stdout and stderr (malloc'd; may pass NULL). */
static int child_wait(child *c, int *hung, char **out, char **err)
{
    int rc = reap(c->pid, hung);
    if (out != NULL) {
        *out = read_all(c->out_fd);
    }
    if (err != NULL) {
        *err = read_all(c->err_fd);
    }
    close(c->out_fd);
    close(c->err_fd);
    return rc;
}

/* Run to completion; assert it did not hang. */
static int run_child(const argvb *b, const char *crash_point, char **out,
                     char **err, const char *ctx)
{
    child c;
    int hung = 0;
    child_start(&c, b, crash_point);
    int rc = child_wait(&c, &hung, out, err);
    ck_assert_msg(!hung, "%s: keel %s %s still running after %d ms: hung", ctx,
                  b->a[1], b->a[2], CHILD_DEADLINE_MS);
    return rc;
}

/* ============================================================ state, json */

typedef struct fixture {
    char *root;
    char *config[NELEM(all_scenarios)];
    unsigned seq;
} fixture;

static void fx_init(fixture *fx)
{
    memset(fx, 0, sizeof(*fx));
    fx->root = tu_tmpdir("kernel-crash");
    for (size_t i = 0; i < NELEM(all_scenarios); i++) {
        char name[64];
        snprintf(name, sizeof(name), "%s.json", all_scenarios[i]->name);
        fx->config[i] = tu_path(fx->root, name);
        tu_write_file(fx->config[i], all_scenarios[i]->config,
                      strlen(all_scenarios[i]->config));
    }
}

static void fx_free(fixture *fx)
{
    tu_rmrf(fx->root);
    free(fx->root);
    for (size_t i = 0; i < NELEM(all_scenarios); i++) {
        free(fx->config[i]);
    }
}

static const char *fx_config(const fixture *fx, const scenario *sc)
{
    for (size_t i = 0; i < NELEM(all_scenarios); i++) {
        if (all_scenarios[i] == sc) {
            return fx->config[i];
        }
    }
    ck_abort_msg("unknown scenario %s", sc->name);
    return NULL;
}

/* A fresh, not yet existing STATE path under the fixture (malloc'd). */
static char *fx_state(fixture *fx, const char *tag)
{
    char name[96];
    snprintf(name, sizeof(name), "%s-%u", tag, fx->seq++);
    char *p = tu_path(fx->root, name);
    tu_rmrf(p);
    return p;
}

static json_t *parse_obj(const char *text, const char *what, const char *ctx)
{
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    ck_assert_msg(json_is_object(o), "%s: %s printed no JSON object (%s): %s",
                  ctx, what, je.text, text);
    return o;
}

static json_int_t int_field(const json_t *o, const char *key, const char *ctx)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "%s: no integer \"%s\"", ctx, key);
    return json_integer_value(v);
}

static const char *str_field(const json_t *o, const char *key, const char *ctx)
{
    const char *v = json_string_value(json_object_get(o, key));
    ck_assert_msg(v != NULL, "%s: no string \"%s\"", ctx, key);
    return v;
}

/* `keel status STATE --json`, which must succeed. */
static json_t *status_of(const char *state, const char *ctx)
{
    argvb b = {0};
    char *out = NULL, *err = NULL;
    av_add(&b, KEEL_BIN);
    av_add(&b, "status");
    av_add(&b, state);
    av_add(&b, "--json");
    int rc = run_child(&b, NULL, &out, &err, ctx);
    ck_assert_msg(rc == 0, "%s: keel status %s: exit %d, stderr: %s", ctx,
                  state, rc, err);
    json_t *st = parse_obj(out, "keel status", ctx);
    free(out);
    free(err);
    return st;
}

/* The uninterrupted run of a cluster: its activity hash, and how long it
 * took (the range random kills are drawn from). */
typedef struct reference {
    char hash[17];
    uint64_t us;
} reference;

/* O1 and O2 on a STATE whose runs are over. */
static void check_final(const scenario *sc, const char *state,
                        const reference *ref, const char *ctx)
{
    json_t *st = status_of(state, ctx);
    ck_assert_msg(json_is_true(json_object_get(st, "booted")), "%s: not booted",
                  ctx);
    ck_assert_msg(int_field(st, "run_queue", ctx) == 0,
                  "%s: run queue %lld after the final run", ctx,
                  (long long)int_field(st, "run_queue", ctx));
    ck_assert_msg(int_field(st, "unresolved_promises", ctx) == 0,
                  "%s: %lld unresolved promises after the final run", ctx,
                  (long long)int_field(st, "unresolved_promises", ctx));
    const json_t *vats = json_object_get(st, "vats");
    const json_t *v;
    size_t i;
    ck_assert_msg(json_array_size(vats) > 0, "%s: no vats", ctx);
    json_array_foreach(vats, i, v)
    {
        ck_assert_msg(strcmp(str_field(v, "state", ctx), "alive") == 0,
                      "%s: vat %s is %s", ctx, str_field(v, "name", ctx),
                      str_field(v, "state", ctx));
    }
    ck_assert_msg(strcmp(str_field(st, "activity_hash", ctx), ref->hash) == 0,
                  "%s: activity hash %s, the uninterrupted run's is %s", ctx,
                  str_field(st, "activity_hash", ctx), ref->hash);
    json_decref(st);

    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    keel_kernel_options_init(&o);
    o.create = 0;
    int rc = keel_kernel_open(state, &o, &k, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: keel_kernel_open: %d %s", ctx, rc, d.msg);
    char hex[17];
    snprintf(hex, sizeof(hex), "%016" PRIx64, keel_kernel_activity_hash(k));
    ck_assert_msg(strcmp(hex, ref->hash) == 0,
                  "%s: keel_kernel_activity_hash %s, expected %s", ctx, hex,
                  ref->hash);
    sc->expect(k, ctx);
    rc = keel_kernel_close(k, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: keel_kernel_close: %d %s", ctx, rc,
                  d.msg);
}

/* The reference: an uninterrupted run under sync (NULL: full). */
static void make_reference_sync(fixture *fx, const scenario *sc,
                                const char *sync, reference *ref)
{
    char ctx[128];
    argvb b;
    char *out = NULL, *err = NULL;
    char *state = fx_state(fx, "ref");
    snprintf(ctx, sizeof(ctx), "config=%s sync=%s reference run", sc->name,
             sync != NULL ? sync : "full");
    av_run(&b, state, fx_config(fx, sc), sync);
    uint64_t t0 = now_us();
    int rc = run_child(&b, NULL, &out, &err, ctx);
    ref->us = now_us() - t0;
    ck_assert_msg(rc == 0, "%s: exit %d, stderr: %s", ctx, rc, err);
    json_t *o = parse_obj(out, "keel run", ctx);
    ck_assert_msg(strcmp(str_field(o, "stopped", ctx), "idle") == 0,
                  "%s: stopped %s", ctx, out);
    /* the scenario table's commit count drives the chosen points */
    ck_assert_msg((uint64_t)int_field(o, "durable_lsn", ctx) == sc->commits,
                  "%s: durable LSN %lld, the table says %" PRIu64, ctx,
                  (long long)int_field(o, "durable_lsn", ctx), sc->commits);
    snprintf(ref->hash, sizeof(ref->hash), "%s",
             str_field(o, "activity_hash", ctx));
    json_decref(o);
    free(out);
    free(err);
    check_final(sc, state, ref, ctx);
    tu_rmrf(state);
    free(state);
}

static void make_reference(fixture *fx, const scenario *sc, reference *ref)
{
    make_reference_sync(fx, sc, NULL, ref);
}

/* `keel run STATE [--config CFG] [--sync S] --json --timeout-ms T`, which
 * must end idle: the recovered kernel finishes the work by itself. */
static void resume_to_idle(const char *state, const char *config,
                           const char *sync, const char *ctx)
{
    argvb b;
    char *out = NULL, *err = NULL;
    av_run(&b, state, config, sync);
    av_add(&b, "--timeout-ms");
    av_add(&b, RESUME_TIMEOUT_MS);
    int rc = run_child(&b, NULL, &out, &err, ctx);
    ck_assert_msg(rc == 0, "%s: resume: exit %d, stderr: %s", ctx, rc, err);
    json_t *o = parse_obj(out, "keel run (resume)", ctx);
    ck_assert_msg(strcmp(str_field(o, "stopped", ctx), "idle") == 0,
                  "%s: resume did not end idle: %s", ctx, out);
    json_decref(o);
    free(out);
    free(err);
}

/* Run `keel run` (first run: with --config) with crash_point, which must
 * kill it: exit 137. */
static void run_killed_at(const char *state, const char *config,
                          const char *sync, const char *crash_point,
                          const char *ctx)
{
    argvb b;
    char *out = NULL, *err = NULL;
    av_run(&b, state, config, sync);
    int rc = run_child(&b, crash_point, &out, &err, ctx);
    ck_assert_msg(rc == 128 + SIGKILL,
                  "%s: keel run should have died of SIGKILL at the crash "
                  "point: exit %d, stdout: %s stderr: %s",
                  ctx, rc, out, err);
    free(out);
    free(err);
}

/* After a kill: status must open the STATE; resume with --config only if
 * the boot itself did not survive. want_last_lsn: O3 (0: unchecked). */
static void resume_after_kill(const char *state, const char *config,
                              const char *sync, uint64_t want_last_lsn,
                              const char *ctx)
{
    json_t *st = status_of(state, ctx);
    int booted = json_is_true(json_object_get(st, "booted"));
    if (want_last_lsn != 0) {
        ck_assert_msg((uint64_t)int_field(st, "last_lsn", ctx) == want_last_lsn,
                      "%s: after the kill the log ends at LSN %lld, "
                      "expected %" PRIu64,
                      ctx, (long long)int_field(st, "last_lsn", ctx),
                      want_last_lsn);
        ck_assert_msg(booted, "%s: LSN 1 (boot) is durable but not booted",
                      ctx);
    }
    json_decref(st);
    resume_to_idle(state, booted ? NULL : config, sync, ctx);
}

/* One crash at `point` of a fresh STATE's first run, then resume, then
 * O1 and O2. */
static void crash_and_resume(fixture *fx, const scenario *sc,
                             const reference *ref, const char *sync,
                             const char *point, uint64_t want_last_lsn)
{
    char ctx[192];
    char *state = fx_state(fx, sc->name);
    snprintf(ctx, sizeof(ctx), "config=%s sync=%s KEEL_CRASH_POINT=%s",
             sc->name, sync != NULL ? sync : "full", point);
    run_killed_at(state, fx_config(fx, sc), sync, point, ctx);
    resume_after_kill(state, fx_config(fx, sc), sync, want_last_lsn, ctx);
    check_final(sc, state, ref, ctx);
    tu_rmrf(state);
    free(state);
}

/* ========================================================= chosen points */

static const char *const commit_events[] = {"commit-before", "commit-after",
                                            "apply-after"};
static const char *const ckpt_events[] = {"checkpoint-before",
                                          "checkpoint-after"};

/* Every commit event at every N of the scenario's list, and the two
 * checkpoints a CLI run always reaches (open, close). */
static void sweep_points(const scenario *sc)
{
    fixture fx;
    reference ref;
    char point[64];
    fx_init(&fx);
    make_reference(&fx, sc, &ref);
    for (size_t e = 0; e < NELEM(commit_events); e++) {
        for (size_t i = 0; i < sc->npoints; i++) {
            uint64_t n = sc->points[i];
            snprintf(point, sizeof(point), "%s:%" PRIu64, commit_events[e], n);
            /* O3: the N-th commit of a fresh STATE is LSN N */
            crash_and_resume(&fx, sc, &ref, NULL, point, e == 0 ? n - 1 : n);
        }
    }
    for (size_t e = 0; e < NELEM(ckpt_events); e++) {
        for (uint64_t n = 1; n <= 2; n++) {
            snprintf(point, sizeof(point), "%s:%" PRIu64, ckpt_events[e], n);
            crash_and_resume(&fx, sc, &ref, NULL, point, 0);
        }
    }
    fx_free(&fx);
}

START_TEST(test_kernel_crash_pingpong_points_resume_to_reference)
{
    sweep_points(&scen_pingpong);
}
END_TEST

START_TEST(test_kernel_crash_counter_points_resume_to_reference)
{
    sweep_points(&scen_counter);
}
END_TEST

START_TEST(test_kernel_crash_chain5_points_resume_to_reference)
{
    sweep_points(&scen_chain5);
}
END_TEST

/* "Killed right after the out-of-crank commit" (SPEC §9.12), and just
 * before it, and after its apply, in every round. */
START_TEST(test_kernel_crash_chain5_out_of_crank_points_resume_to_reference)
{
    fixture fx;
    reference ref;
    char point[64];
    fx_init(&fx);
    make_reference(&fx, &scen_chain5, &ref);
    for (size_t e = 0; e < NELEM(commit_events); e++) {
        for (uint64_t r = 1; r <= CHAIN_ROUNDS; r++) {
            snprintf(point, sizeof(point), "%s/out-of-crank:%" PRIu64,
                     commit_events[e], r);
            uint64_t lsn = CHAIN_ANSWER_LSN(r);
            crash_and_resume(&fx, &scen_chain5, &ref, NULL, point,
                             e == 0 ? lsn - 1 : lsn);
        }
    }
    fx_free(&fx);
}
END_TEST

/* The boot (the only kernel-op of a run from a config) and the cranks by
 * kind. */
START_TEST(test_kernel_crash_kind_points_resume_to_reference)
{
    static const char *const points[] = {
        "commit-before/kernel-op:1", "commit-after/kernel-op:1",
        "apply-after/kernel-op:1",   "commit-before/crank:1",
        "commit-after/crank:1",      "apply-after/crank:7",
        "commit-after/crank:20"};
    static const uint64_t lsns[] = {0, 1, 1, 1, 2, 8, 21};
    fixture fx;
    reference ref;
    fx_init(&fx);
    make_reference(&fx, &scen_pingpong, &ref);
    for (size_t i = 0; i < NELEM(points); i++) {
        /* pingpong has no out-of-crank commit: crank N is LSN N+1 */
        crash_and_resume(&fx, &scen_pingpong, &ref, NULL, points[i], lsns[i]);
    }
    fx_free(&fx);
}
END_TEST

/* A crash point past the end of the run is never reached: the run ends
 * normally with the reference result. */
START_TEST(test_kernel_crash_point_past_end_runs_to_reference)
{
    fixture fx;
    reference ref;
    argvb b;
    char *out = NULL, *err = NULL;
    char point[64];
    fx_init(&fx);
    make_reference(&fx, &scen_chain5, &ref);
    char *state = fx_state(&fx, "past");
    snprintf(point, sizeof(point), "commit-after:%" PRIu64,
             scen_chain5.commits + 1);
    av_run(&b, state, fx_config(&fx, &scen_chain5), NULL);
    int rc = run_child(&b, point, &out, &err, point);
    ck_assert_msg(rc == 0, "%s: exit %d, stderr: %s", point, rc, err);
    check_final(&scen_chain5, state, &ref, point);
    free(out);
    free(err);
    free(state);
    fx_free(&fx);
}
END_TEST

/* The first run and then every resume killed in turn, at points inside
 * recovery (checkpoint-* :1 is the open's checkpoint, after the replay),
 * then a last resume to idle. */
static void crash_chain(fixture *fx, const scenario *sc, const reference *ref,
                        const char *const *points, size_t n)
{
    char ctx[256];
    char *state = fx_state(fx, sc->name);
    int len = snprintf(ctx, sizeof(ctx), "config=%s points:", sc->name);
    for (size_t i = 0; i < n; i++) {
        len += snprintf(ctx + len, sizeof(ctx) - (size_t)len, " %s", points[i]);
        run_killed_at(state, i == 0 ? fx_config(fx, sc) : NULL, NULL, points[i],
                      ctx);
    }
    resume_after_kill(state, NULL, NULL, 0, ctx);
    check_final(sc, state, ref, ctx);
    tu_rmrf(state);
    free(state);
}

START_TEST(test_kernel_crash_repeated_kills_resume_to_reference)
{
    static const char *const pp[] = {"commit-after:7", "checkpoint-before:1",
                                     "checkpoint-after:1", "apply-after:3",
                                     "commit-before:5"};
    static const char *const ch[] = {
        "commit-after/out-of-crank:1",  "checkpoint-before:1",
        "commit-before/out-of-crank:1", "checkpoint-after:1",
        "apply-after/crank:4",          "commit-after/out-of-crank:2"};
    static const char *const co[] = {"commit-after:20", "checkpoint-before:1",
                                     "apply-after:10", "commit-before:2",
                                     "checkpoint-after:2"};
    fixture fx;
    reference ref[3];
    fx_init(&fx);
    make_reference(&fx, &scen_pingpong, &ref[0]);
    make_reference(&fx, &scen_chain5, &ref[1]);
    make_reference(&fx, &scen_counter, &ref[2]);
    crash_chain(&fx, &scen_pingpong, &ref[0], pp, NELEM(pp));
    crash_chain(&fx, &scen_chain5, &ref[1], ch, NELEM(ch));
    crash_chain(&fx, &scen_counter, &ref[2], co, NELEM(co));
    fx_free(&fx);
}
END_TEST

/* ==================================== later checkpoints (API-driven child) */

/* In a forked child: open STATE with a checkpoint every ckpt_cranks
 * transactions (and never by time), boot from config if new, run to idle,
 * close — unless crash_point kills it first. Exit 0 on success. */
static int api_child_run(const char *state, const char *config,
                         uint32_t ckpt_cranks, const char *crash_point,
                         const char *ctx)
{
    int hung = 0;
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        keel_kernel_options o;
        keel_kernel *k = NULL;
        keel_kernel_options_init(&o);
        o.checkpoint_cranks = ckpt_cranks;
        o.checkpoint_ms = 3600u * 1000u;
        keel__crash_point cp;
        if (keel__crash_point_parse(crash_point, &cp, NULL) != KEEL_OK) {
            _exit(2);
        }
        keel__crash_point_install(&cp, &o);
        int rc = keel_kernel_open(state, &o, &k, NULL);
        if (rc == KEEL_OK && !keel_kernel_booted(k)) {
            rc = keel_kernel_boot(k, config, NULL, NULL);
        }
        if (rc == KEEL_OK) {
            rc = keel_kernel_run(k, NULL, NULL, NULL);
        }
        int crc = keel_kernel_close(k, NULL);
        _exit(rc == KEEL_OK && crc == KEEL_OK ? 0 : 1);
    }
    int rc = reap(pid, &hung);
    ck_assert_msg(!hung, "%s: the kernel still ran after %d ms: hung", ctx,
                  CHILD_DEADLINE_MS);
    return rc;
}

static void api_crash_and_resume(fixture *fx, const scenario *sc,
                                 const reference *ref, uint32_t ckpt_cranks,
                                 const char *point)
{
    char ctx[192];
    char *state = fx_state(fx, sc->name);
    snprintf(ctx, sizeof(ctx),
             "config=%s checkpoint_cranks=%" PRIu32 " crash_point=%s", sc->name,
             ckpt_cranks, point);
    int rc = api_child_run(state, sc->config, ckpt_cranks, point, ctx);
    ck_assert_msg(rc == 128 + SIGKILL,
                  "%s: the kernel should have died of SIGKILL: exit %d", ctx,
                  rc);
    resume_after_kill(state, fx_config(fx, sc), NULL, 0, ctx);
    check_final(sc, state, ref, ctx);
    tu_rmrf(state);
    free(state);
}

/* checkpoint_cranks = 1: a checkpoint at open, after every transaction and
 * at close, so checkpoint N (1-based) is the open's for N = 1, follows
 * LSN N-1 for N = 2 .. commits+1, and is the close's for N = commits+2. */
static void sweep_checkpoints(fixture *fx, const scenario *sc,
                              const reference *ref, const uint64_t *ns,
                              size_t count)
{
    char point[64];
    for (size_t e = 0; e < NELEM(ckpt_events); e++) {
        for (size_t i = 0; i < count; i++) {
            ck_assert(ns[i] <= sc->commits + 2);
            snprintf(point, sizeof(point), "%s:%" PRIu64, ckpt_events[e],
                     ns[i]);
            api_crash_and_resume(fx, sc, ref, 1, point);
        }
    }
}

START_TEST(test_kernel_crash_checkpoint_points_resume_to_reference)
{
    static const uint64_t pp[] = {1, 2, 7, 15, 23, 24};
    static const uint64_t ch[] = {2, 5, 11, 26, 39};
    static const uint64_t co[] = {3, 31, 63, 64};
    fixture fx;
    reference ref[3];
    fx_init(&fx);
    make_reference(&fx, &scen_pingpong, &ref[0]);
    make_reference(&fx, &scen_chain5, &ref[1]);
    make_reference(&fx, &scen_counter, &ref[2]);
    sweep_checkpoints(&fx, &scen_pingpong, &ref[0], pp, NELEM(pp));
    sweep_checkpoints(&fx, &scen_chain5, &ref[1], ch, NELEM(ch));
    sweep_checkpoints(&fx, &scen_counter, &ref[2], co, NELEM(co));
    fx_free(&fx);
}
END_TEST

/* checkpoint_cranks = 3: commits crashed after a mid-run checkpoint, so
 * the replay starts from a store that is neither empty nor current. */
START_TEST(test_kernel_crash_commit_after_checkpoint_resumes_to_reference)
{
    static const char *const points[] = {
        "commit-after:4",  "apply-after:7",  "commit-before:11",
        "commit-after:20", "apply-after:22", "commit-after/out-of-crank:3"};
    fixture fx;
    reference ref;
    fx_init(&fx);
    make_reference(&fx, &scen_chain5, &ref);
    for (size_t i = 0; i < NELEM(points); i++) {
        api_crash_and_resume(&fx, &scen_chain5, &ref, 3, points[i]);
    }
    fx_free(&fx);
}
END_TEST

/* ========================================================= random kills */

static uint64_t master_seed(void)
{
    const char *s = getenv("KEEL_CRASH_SEED");
    return s != NULL ? strtoull(s, NULL, 16) : DEFAULT_SEED;
}

/* One trial: 1..3 runs of a fresh STATE each SIGKILLed after a random
 * delay in [0, the reference run's duration], then a resume to idle, O1
 * and O2. @return the number of runs the kill actually ended. */
static int random_trial(fixture *fx, const scenario *sc, const reference *ref,
                        const char *sync, uint64_t master, uint64_t seed,
                        int trial)
{
    char ctx[256];
    uint64_t rng = seed;
    int killed = 0;
    char *state = fx_state(fx, sc->name);
    int nkills = 1 + (int)(tu_rand(&rng) % 3);
    for (int j = 0; j < nkills; j++) {
        argvb b;
        child c;
        int hung = 0;
        char *err = NULL;
        uint64_t delay = tu_rand(&rng) % (ref->us + 1);
        snprintf(ctx, sizeof(ctx),
                 "config=%s sync=%s master seed=0x%016" PRIx64
                 " trial=%d seed=0x%016" PRIx64 " kill=%d/%d delay_us=%" PRIu64,
                 sc->name, sync != NULL ? sync : "full", master, trial, seed,
                 j + 1, nkills, delay);
        /* --config every time: the kill may have come before the boot */
        av_run(&b, state, fx_config(fx, sc), sync);
        child_start(&c, &b, NULL);
        sleep_us(delay);
        kill(c.pid, SIGKILL);
        int rc = child_wait(&c, &hung, NULL, &err);
        ck_assert_msg(!hung, "%s: hung", ctx);
        /* 0: it finished before the kill; anything else is a failure of
         * the run or of the recovery of the previous kill */
        ck_assert_msg(rc == 128 + SIGKILL || rc == 0,
                      "%s: keel run exit %d, stderr: %s", ctx, rc, err);
        killed += rc == 128 + SIGKILL;
        free(err);
    }
    snprintf(ctx, sizeof(ctx),
             "config=%s sync=%s master seed=0x%016" PRIx64
             " trial=%d seed=0x%016" PRIx64 " kills=%d (final resume)",
             sc->name, sync != NULL ? sync : "full", master, trial, seed,
             nkills);
    resume_to_idle(state, fx_config(fx, sc), sync, ctx);
    check_final(sc, state, ref, ctx);
    tu_rmrf(state);
    free(state);
    return killed;
}

/* trials random trials over scs in turn, every run under sync (NULL:
 * full), as is each reference (so the kills fall within a run of that
 * policy). With same_as_full, each reference's hash must also equal that
 * of a run under full: the hash does not depend on the policy. */
static void random_kills(const scenario *const *scs, size_t nscs,
                         const char *sync, int same_as_full, int trials,
                         uint64_t salt)
{
    fixture fx;
    reference ref[NELEM(all_scenarios)];
    uint64_t master = master_seed() ^ salt;
    uint64_t rng = master;
    int killed = 0;
    fx_init(&fx);
    for (size_t i = 0; i < nscs; i++) {
        make_reference_sync(&fx, scs[i], sync, &ref[i]);
        if (same_as_full) {
            reference full;
            make_reference(&fx, scs[i], &full);
            ck_assert_msg(strcmp(full.hash, ref[i].hash) == 0,
                          "config=%s: activity hash %s under sync=%s, %s "
                          "under full",
                          scs[i]->name, ref[i].hash, sync, full.hash);
        }
    }
    for (int t = 0; t < trials; t++) {
        size_t i = (size_t)t % nscs;
        killed +=
            random_trial(&fx, scs[i], &ref[i], sync, master, tu_rand(&rng), t);
    }
    /* the delays are drawn within a run's duration: some must land */
    ck_assert_msg(killed > 0,
                  "master seed 0x%016" PRIx64 ": none of %d trials killed "
                  "a run before it finished",
                  master, trials);
    fx_free(&fx);
}

START_TEST(test_kernel_crash_random_kill_pingpong_resumes_to_reference)
{
    const scenario *scs[] = {&scen_pingpong};
    random_kills(scs, 1, NULL, 0, RANDOM_TRIALS_PER_CONFIG, 1);
}
END_TEST

START_TEST(test_kernel_crash_random_kill_counter_resumes_to_reference)
{
    const scenario *scs[] = {&scen_counter};
    random_kills(scs, 1, NULL, 0, RANDOM_TRIALS_PER_CONFIG, 2);
}
END_TEST

START_TEST(test_kernel_crash_random_kill_chain5_resumes_to_reference)
{
    const scenario *scs[] = {&scen_chain5};
    random_kills(scs, 1, NULL, 0, RANDOM_TRIALS_PER_CONFIG, 3);
}
END_TEST

/* ========================================================== sync=group */

START_TEST(test_kernel_crash_group_random_kill_resumes_to_reference)
{
    random_kills(all_scenarios, SHORT_SCENARIOS, "group", 1, GROUP_TRIALS, 4);
}
END_TEST

/* A run past the CLI's checkpoint interval (10,000 transactions), under
 * group so that it is short, killed at random moments that fall before,
 * during and after its mid-run checkpoint. */
START_TEST(test_kernel_crash_long_run_random_kill_resumes_to_reference)
{
    const scenario *scs[] = {&scen_pingpong_long};
    random_kills(scs, 1, "group", 0, LONG_TRIALS, 7);
}
END_TEST

/* sync=off keeps appended records in memory until a batch fills or a
 * checkpoint syncs the log: a kill loses that batch, like group's, and the
 * resume must redo it identically. */
START_TEST(test_kernel_crash_off_random_kill_resumes_to_reference)
{
    random_kills(all_scenarios, SHORT_SCENARIOS, "off", 1, OFF_TRIALS, 6);
}
END_TEST

/* Under group a commit-after crash may lose the record (it was still in
 * the writer's batch): the resume does the work again, identically. */
START_TEST(test_kernel_crash_group_points_resume_to_reference)
{
    static const char *const points[] = {"commit-after:2",
                                         "commit-after:9",
                                         "apply-after:17",
                                         "commit-before:25",
                                         "checkpoint-before:2",
                                         "commit-after/out-of-crank:1",
                                         "commit-after/out-of-crank:4",
                                         "apply-after/out-of-crank:5"};
    fixture fx;
    reference ref;
    fx_init(&fx);
    make_reference(&fx, &scen_chain5, &ref);
    for (size_t i = 0; i < NELEM(points); i++) {
        crash_and_resume(&fx, &scen_chain5, &ref, "group", points[i], 0);
    }
    fx_free(&fx);
}
END_TEST

/* ===================================================== acknowledged send */

/* Copy a closed STATE (its store/ and wal/ directories). */
static void copy_state(const char *from, const char *to)
{
    char *fs = tu_path(from, "store"), *ts = tu_path(to, "store");
    char *fw = tu_path(from, "wal"), *tw = tu_path(to, "wal");
    ck_assert_int_eq(mkdir(to, 0700), 0);
    tu_copy_dir(fs, ts);
    tu_copy_dir(fw, tw);
    free(fs);
    free(ts);
    free(fw);
    free(tw);
}

#define SENDS 3

/* `keel send STATE counter incr {"n":1}`: returns the acknowledged kref. */
static void send_incr(const char *state, char *kp, size_t cap, const char *ctx)
{
    argvb b = {0};
    char *out = NULL, *err = NULL;
    av_add(&b, KEEL_BIN);
    av_add(&b, "send");
    av_add(&b, state);
    av_add(&b, "counter");
    av_add(&b, "incr");
    av_add(&b, "{\"n\":1}");
    int rc = run_child(&b, NULL, &out, &err, ctx);
    ck_assert_msg(rc == 0, "%s: keel send: exit %d, stderr: %s", ctx, rc, err);
    ck_assert_msg(strncmp(out, "queued: kp", 10) == 0 && strlen(out) - 9 < cap,
                  "%s: keel send printed: %s", ctx, out);
    snprintf(kp, cap, "%.*s", (int)strcspn(out + 8, "\n"), out + 8);
    free(out);
    free(err);
}

/* O4 right after the kill: every acknowledged promise exists; one that
 * already settled holds its answer. */
static void expect_promises(const char *state, char kps[SENDS][32],
                            int must_settle, const char *ctx)
{
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    keel_kernel_options_init(&o);
    o.create = 0;
    int rc = keel_kernel_open(state, &o, &k, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: keel_kernel_open: %d %s", ctx, rc, d.msg);
    for (int j = 0; j < SENDS; j++) {
        char *body = NULL;
        char want[64];
        snprintf(want, sizeof(want), "{\"value\":%d}", COUNTER_INCRS + j + 1);
        int state_of = keel_kernel_promise(k, kps[j], &body, &d);
        ck_assert_msg(state_of >= 0,
                      "%s: acknowledged promise %s lost after the kill: "
                      "%d %s",
                      ctx, kps[j], state_of, d.msg);
        ck_assert_msg(state_of == 1 || (!must_settle && state_of == 0),
                      "%s: promise %s is in state %d", ctx, kps[j], state_of);
        if (state_of == 1) {
            json_t *got = json_loads(body, 0, NULL);
            json_t *exp = json_loads(want, 0, NULL);
            ck_assert_msg(got != NULL && json_equal(got, exp),
                          "%s: %s fulfilled with %s, expected %s", ctx, kps[j],
                          body, want);
            json_decref(got);
            json_decref(exp);
        }
        free(body);
    }
    rc = keel_kernel_close(k, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: close: %d %s", ctx, rc, d.msg);
}

/* The counter cluster run to idle, then SENDS acknowledged sends; a later
 * `keel run` is killed (at a chosen point, or at random when point is
 * NULL); the promises must exist after the kill and settle on resume, to
 * the same hash as the same sends run uninterrupted. */
static void send_then_kill(fixture *fx, const char *base, const char *point,
                           uint64_t seed, uint64_t delay_us,
                           const char *ref_hash)
{
    char ctx[192];
    char kps[SENDS][32];
    argvb b;
    char *state = fx_state(fx, "send");
    if (point != NULL) {
        snprintf(ctx, sizeof(ctx),
                 "config=counter + %d sends, later run KEEL_CRASH_POINT=%s",
                 SENDS, point);
    } else {
        snprintf(ctx, sizeof(ctx),
                 "config=counter + %d sends, later run killed at random: "
                 "seed=0x%016" PRIx64 " delay_us=%" PRIu64,
                 SENDS, seed, delay_us);
    }
    copy_state(base, state);
    for (int j = 0; j < SENDS; j++) {
        send_incr(state, kps[j], sizeof(kps[j]), ctx);
        for (int i = 0; i < j; i++) {
            ck_assert_msg(strcmp(kps[i], kps[j]) != 0, "%s: two sends got %s",
                          ctx, kps[j]);
        }
    }
    if (point != NULL) {
        run_killed_at(state, NULL, NULL, point, ctx);
    } else {
        child c;
        int hung = 0;
        char *err = NULL;
        av_run(&b, state, NULL, NULL);
        child_start(&c, &b, NULL);
        sleep_us(delay_us);
        kill(c.pid, SIGKILL);
        int rc = child_wait(&c, &hung, NULL, &err);
        ck_assert_msg(!hung && (rc == 0 || rc == 128 + SIGKILL),
                      "%s: keel run exit %d, stderr: %s", ctx, rc, err);
        free(err);
    }
    expect_promises(state, kps, 0, ctx);
    resume_to_idle(state, NULL, NULL, ctx);
    expect_promises(state, kps, 1, ctx);
    json_t *st = status_of(state, ctx);
    ck_assert_msg(strcmp(str_field(st, "activity_hash", ctx), ref_hash) == 0,
                  "%s: activity hash %s, uninterrupted %s", ctx,
                  str_field(st, "activity_hash", ctx), ref_hash);
    ck_assert_msg(int_field(st, "unresolved_promises", ctx) == 0 &&
                      int_field(st, "run_queue", ctx) == 0,
                  "%s: work left after the resume", ctx);
    json_decref(st);
    tu_rmrf(state);
    free(state);
}

START_TEST(test_kernel_crash_acknowledged_send_survives_kill)
{
    /* the later run's open checkpoint (after the sends' replay), the first
     * crank before and after its commit, mid-run, and the close */
    static const char *const points[] = {
        "checkpoint-before:1", "checkpoint-after:1", "commit-before:1",
        "commit-after:1",      "apply-after:2",      "commit-after/crank:3",
        "checkpoint-before:2"};
    fixture fx;
    char kps[SENDS][32];
    uint64_t seed = master_seed() ^ 5;
    uint64_t rng = seed;
    fx_init(&fx);
    /* the base: the counter cluster run to idle */
    char *base = fx_state(&fx, "base");
    resume_to_idle(base, fx_config(&fx, &scen_counter), NULL,
                   "config=counter base run");
    /* the uninterrupted sends */
    char *plain = fx_state(&fx, "plain");
    copy_state(base, plain);
    for (int j = 0; j < SENDS; j++) {
        send_incr(plain, kps[j], sizeof(kps[j]), "uninterrupted sends");
    }
    uint64_t t0 = now_us();
    resume_to_idle(plain, NULL, NULL, "uninterrupted sends");
    uint64_t run_us = now_us() - t0;
    expect_promises(plain, kps, 1, "uninterrupted sends");
    json_t *st = status_of(plain, "uninterrupted sends");
    char hash[17];
    snprintf(hash, sizeof(hash), "%s",
             str_field(st, "activity_hash", "uninterrupted sends"));
    json_decref(st);
    for (size_t i = 0; i < NELEM(points); i++) {
        send_then_kill(&fx, base, points[i], 0, 0, hash);
    }
    for (int i = 0; i < 4; i++) {
        send_then_kill(&fx, base, NULL, seed, tu_rand(&rng) % (run_us + 1),
                       hash);
    }
    free(base);
    free(plain);
    fx_free(&fx);
}
END_TEST

/* ============================================ the out-of-crank regression */

/* `keel run STATE [--config] --timeout-ms 20000`, bounded here too: it
 * must end idle, not by the timeout and not hung (O5). */
static void run_bounded_to_idle(const char *state, const char *config,
                                const char *sync, const char *ctx)
{
    argvb b;
    child c;
    int hung = 0;
    char *out = NULL, *err = NULL;
    av_run(&b, state, config, sync);
    av_add(&b, "--timeout-ms");
    av_add(&b, REGRESSION_TIMEOUT_MS);
    child_start(&c, &b, NULL);
    int rc = child_wait(&c, &hung, &out, &err);
    ck_assert_msg(!hung,
                  "%s: keel run --timeout-ms " REGRESSION_TIMEOUT_MS
                  " still running after %d ms",
                  ctx, CHILD_DEADLINE_MS);
    ck_assert_msg(rc == 0, "%s: exit %d, stderr: %s", ctx, rc, err);
    json_t *o = parse_obj(out, "keel run", ctx);
    ck_assert_msg(strcmp(str_field(o, "stopped", ctx), "idle") == 0,
                  "%s: the run stopped by \"%s\", not idle: the provider's "
                  "out-of-crank answer was never delivered: %s",
                  ctx, str_field(o, "stopped", ctx), out);
    json_decref(o);
    free(out);
    free(err);
}

/* A run that ended idle with the fetch still unresolved dropped the
 * provider's out-of-crank answer (or its commit). */
static void expect_all_answered(const char *state, const char *ctx)
{
    json_t *st = status_of(state, ctx);
    ck_assert_msg(int_field(st, "unresolved_promises", ctx) == 0,
                  "%s: the run ended idle with %lld unresolved promise(s): "
                  "the provider's out-of-crank answer was never committed",
                  ctx, (long long)int_field(st, "unresolved_promises", ctx));
    json_decref(st);
}

START_TEST(test_kernel_crash_out_of_crank_answer_ends_idle)
{
    static const char *const syncs[] = {"full", "group", "off"};
    fixture fx;
    reference ref;
    char ctx[NELEM(syncs)][64];
    char *states[NELEM(syncs)];
    fx_init(&fx);
    /* the regression first, so that its own message names it */
    for (size_t i = 0; i < NELEM(syncs); i++) {
        states[i] = fx_state(&fx, "ooc");
        snprintf(ctx[i], sizeof(ctx[i]), "config=chain5 sync=%s", syncs[i]);
        run_bounded_to_idle(states[i], fx_config(&fx, &scen_chain5), syncs[i],
                            ctx[i]);
        expect_all_answered(states[i], ctx[i]);
    }
    make_reference(&fx, &scen_chain5, &ref);
    for (size_t i = 0; i < NELEM(syncs); i++) {
        check_final(&scen_chain5, states[i], &ref, ctx[i]);
        free(states[i]);
    }
    fx_free(&fx);
}
END_TEST

/* Killed right after a fetch crank: the log holds the fetch, the run queue
 * is empty, P1 is the only unresolved promise. Only the provider's
 * restarted thread-pool job can go on, by an out-of-crank resolve. */
START_TEST(test_kernel_crash_out_of_crank_resume_with_empty_queue_ends_idle)
{
    fixture fx;
    reference ref;
    char ctx[128], point[64];
    fx_init(&fx);
    make_reference(&fx, &scen_chain5, &ref);
    for (uint64_t r = 1; r <= CHAIN_ROUNDS; r++) {
        char *state = fx_state(&fx, "ooc");
        snprintf(point, sizeof(point), "commit-after/crank:%d",
                 CHAIN_FETCH_CRANK((int)r));
        snprintf(ctx, sizeof(ctx), "config=chain5 KEEL_CRASH_POINT=%s", point);
        run_killed_at(state, fx_config(&fx, &scen_chain5), NULL, point, ctx);
        json_t *st = status_of(state, ctx);
        ck_assert_msg(int_field(st, "run_queue", ctx) == 0 &&
                          int_field(st, "unresolved_promises", ctx) == 1,
                      "%s: expected an empty run queue and one unresolved "
                      "promise (the fetch), status: run_queue %lld, "
                      "unresolved %lld",
                      ctx, (long long)int_field(st, "run_queue", ctx),
                      (long long)int_field(st, "unresolved_promises", ctx));
        json_decref(st);
        run_bounded_to_idle(state, NULL, NULL, ctx);
        expect_all_answered(state, ctx);
        check_final(&scen_chain5, state, &ref, ctx);
        free(state);
    }
    fx_free(&fx);
}
END_TEST

Suite *kernel_crash_suite(void);

Suite *kernel_crash_suite(void)
{
    Suite *s = suite_create("kernel_crash");
    TCase *tc = tcase_create("points");
    /* each test runs many child processes; hangs are bounded per child */
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_kernel_crash_pingpong_points_resume_to_reference);
    tcase_add_test(tc, test_kernel_crash_counter_points_resume_to_reference);
    tcase_add_test(tc, test_kernel_crash_chain5_points_resume_to_reference);
    tcase_add_test(
        tc, test_kernel_crash_chain5_out_of_crank_points_resume_to_reference);
    tcase_add_test(tc, test_kernel_crash_kind_points_resume_to_reference);
    tcase_add_test(tc, test_kernel_crash_point_past_end_runs_to_reference);
    tcase_add_test(tc, test_kernel_crash_repeated_kills_resume_to_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("checkpoints");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_kernel_crash_checkpoint_points_resume_to_reference);
    tcase_add_test(
        tc, test_kernel_crash_commit_after_checkpoint_resumes_to_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc,
                   test_kernel_crash_random_kill_pingpong_resumes_to_reference);
    tcase_add_test(tc,
                   test_kernel_crash_random_kill_counter_resumes_to_reference);
    tcase_add_test(tc,
                   test_kernel_crash_random_kill_chain5_resumes_to_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("group");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc,
                   test_kernel_crash_group_random_kill_resumes_to_reference);
    tcase_add_test(tc, test_kernel_crash_group_points_resume_to_reference);
    tcase_add_test(tc, test_kernel_crash_off_random_kill_resumes_to_reference);
    tcase_add_test(tc,
                   test_kernel_crash_long_run_random_kill_resumes_to_reference);
    suite_add_tcase(s, tc);

    tc = tcase_create("acknowledged");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_kernel_crash_acknowledged_send_survives_kill);
    suite_add_tcase(s, tc);

    tc = tcase_create("out_of_crank");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_kernel_crash_out_of_crank_answer_ends_idle);
    tcase_add_test(
        tc, test_kernel_crash_out_of_crank_resume_with_empty_queue_ends_idle);
    suite_add_tcase(s, tc);
    return s;
}
