/*
 * tests/test_cli_kernel.c — `keel run`, `keel status` and `keel send`, run
 * as child processes (tu_run_keel) on clusters of built-in vats whose
 * configs are written into scratch directories: runs to idle and their
 * summaries, resuming a STATE (also after --max-cranks, with the same
 * activity hash as an uninterrupted run), status in both forms, sends with
 * and without --wait, usage errors (exit 2, one line, nothing created),
 * bad configs and missing STATEs (exit 1), a locked STATE, and a
 * `run --forever` stopped by SIGTERM.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/testutil.h"

/* Ping-pong with 5 rounds: bootstrap, then 5 × (ping to bob, notify to
 * alice), so a run from boot to idle is 11 cranks. */
#define PINGPONG_CRANKS 11

/* Bounded waits for the child of the signal test (not a timing check). */
#define WAIT_STEP_MS 10
#define WAIT_MAX_MS  20000

static const char pingpong_json[] =
    "{\"bootstrap\": \"alice\", \"vats\": {"
    "\"alice\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"alice\", "
    "\"rounds\": 5}},"
    "\"bob\": {\"builtin\": \"pingpong\", \"params\": {\"role\": \"bob\"}}}}";

static const char counter_json[] =
    "{\"bootstrap\": \"driver\", \"vats\": {"
    "\"driver\": {\"builtin\": \"counter_driver\", \"params\": "
    "{\"target\": \"counter\", \"incrs\": 3}},"
    "\"counter\": {\"builtin\": \"counter\"}}}";

/* A scratch directory with `cluster.json` holding config. */
typedef struct fixture {
    char *root;
    char *config;
    char *state;
} fixture;

static void fx_init(fixture *fx, const char *config)
{
    fx->root = tu_tmpdir("cli-kernel");
    fx->config = tu_path(fx->root, "cluster.json");
    fx->state = tu_path(fx->root, "state");
    tu_write_file(fx->config, config, strlen(config));
}

static void fx_free(fixture *fx)
{
    tu_rmrf(fx->root);
    free(fx->root);
    free(fx->config);
    free(fx->state);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Run keel with args; assert the exit status; return stdout (malloc'd). */
static char *keel_ok(const char *const *args)
{
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == 0, "keel %s %s: exit %d, stderr: %s", args[0],
                  args[1] != NULL ? args[1] : "", rc, err);
    free(err);
    return out;
}

/* Parse out as exactly one JSON object on one line. */
static json_t *one_json(const char *out)
{
    json_error_t je;
    ck_assert_msg(tu_count_lines(out) == 1, "not one line: %s", out);
    json_t *o = json_loads(out, 0, &je);
    ck_assert_msg(json_is_object(o), "not a JSON object (%s): %s", je.text,
                  out);
    return o;
}

static json_int_t int_field(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "no integer %s", key);
    return json_integer_value(v);
}

static const char *str_field(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    ck_assert_msg(v != NULL, "no string %s", key);
    return v;
}

/* `keel run STATE --config CONFIG --json` from boot to idle. */
static json_t *run_to_idle(const fixture *fx)
{
    const char *args[] = {"run",      fx->state, "--config",
                          fx->config, "--json",  NULL};
    char *out = keel_ok(args);
    json_t *o = one_json(out);
    free(out);
    return o;
}

static json_t *status_json(const char *state)
{
    const char *args[] = {"status", state, "--json", NULL};
    char *out = keel_ok(args);
    json_t *o = one_json(out);
    free(out);
    return o;
}

/* ------------------------------------------------------------------ run */

START_TEST(test_cli_kernel_run_pingpong_reaches_idle)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    char *out = NULL, *err = NULL;
    const char *args[] = {"run", fx.state, "--config", fx.config, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_msg(strstr(out, "stopped: idle") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "state: booted ") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "\ncranks: 11\n") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "\ndurable LSN: ") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "\nactivity hash: ") != NULL, "stdout: %s", out);
    /* K5: stderr is not a terminal here, so no progress line */
    ck_assert_str_eq(err, "");
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_run_json_summary_matches_status)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_t *run = run_to_idle(&fx);
    ck_assert_str_eq(str_field(run, "stopped"), "idle");
    ck_assert_str_eq(str_field(run, "state"), "booted");
    ck_assert_int_eq(int_field(run, "cranks"), PINGPONG_CRANKS);
    ck_assert_int_eq(int_field(run, "crank"), PINGPONG_CRANKS);
    /* boot is a transaction of its own, before the cranks */
    ck_assert_int_ge(int_field(run, "transactions"), PINGPONG_CRANKS);
    ck_assert_int_eq(int_field(run, "deliveries"), PINGPONG_CRANKS);
    ck_assert_int_gt(int_field(run, "durable_lsn"), PINGPONG_CRANKS);
    json_t *st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "crank"), PINGPONG_CRANKS);
    ck_assert_int_eq(int_field(st, "run_queue"), 0);
    ck_assert_int_eq(int_field(st, "unresolved_promises"), 0);
    ck_assert_int_eq(int_field(st, "durable_lsn"),
                     int_field(run, "durable_lsn"));
    ck_assert_str_eq(str_field(st, "activity_hash"),
                     str_field(run, "activity_hash"));
    json_decref(run);
    json_decref(st);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_run_resumes_and_ignores_config)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_t *first = run_to_idle(&fx);
    char *out = NULL, *err = NULL;
    const char *args[] = {"run",     fx.state, "--config",
                          fx.config, "--json", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_msg(strstr(err, "already booted; --config ignored") != NULL,
                  "stderr: %s", err);
    tu_assert_one_error_line(err);
    json_t *second = one_json(out);
    ck_assert_str_eq(str_field(second, "state"), "resumed");
    ck_assert_str_eq(str_field(second, "stopped"), "idle");
    ck_assert_int_eq(int_field(second, "cranks"), 0);
    ck_assert_int_eq(int_field(second, "crank"), PINGPONG_CRANKS);
    ck_assert_str_eq(str_field(second, "activity_hash"),
                     str_field(first, "activity_hash"));
    json_decref(first);
    json_decref(second);
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

/* Stopping at --max-cranks and resuming ends where one run ends. */
START_TEST(test_cli_kernel_run_max_cranks_then_resume_same_hash)
{
    fixture whole, split;
    fx_init(&whole, pingpong_json);
    fx_init(&split, pingpong_json);
    json_t *ref = run_to_idle(&whole);
    const char *a1[] = {"run",          split.state, "--config", split.config,
                        "--max-cranks", "3",         "--json",   NULL};
    char *out = keel_ok(a1);
    json_t *part = one_json(out);
    free(out);
    ck_assert_str_eq(str_field(part, "stopped"), "max-cranks");
    ck_assert_int_eq(int_field(part, "cranks"), 3);
    const char *a2[] = {"run", split.state, "--json", NULL};
    out = keel_ok(a2);
    json_t *rest = one_json(out);
    free(out);
    ck_assert_str_eq(str_field(rest, "stopped"), "idle");
    ck_assert_str_eq(str_field(rest, "state"), "resumed");
    ck_assert_int_eq(int_field(rest, "cranks"), PINGPONG_CRANKS - 3);
    ck_assert_int_eq(int_field(rest, "crank"), PINGPONG_CRANKS);
    ck_assert_str_eq(str_field(rest, "activity_hash"),
                     str_field(ref, "activity_hash"));
    json_decref(ref);
    json_decref(part);
    json_decref(rest);
    fx_free(&whole);
    fx_free(&split);
}
END_TEST

/* --checkpoint-cranks 2 makes the store checkpoint every 2 transactions:
 * the 5th checkpoint exists only then (a default run has two: after
 * recovery and at close), and a crash injected at it kills the run for
 * real; the resume still ends with the uninterrupted run's hash. */
START_TEST(test_cli_kernel_run_checkpoint_cranks_then_crash_resumes)
{
    fixture whole, crashed;
    fx_init(&whole, pingpong_json);
    fx_init(&crashed, pingpong_json);
    json_t *ref = run_to_idle(&whole);
    const char *a1[] = {
        "run", crashed.state, "--config", crashed.config, "--checkpoint-cranks",
        "2",   NULL};
    ck_assert_int_eq(setenv("KEEL_CRASH_POINT", "checkpoint-after:5", 1), 0);
    int st = tu_run_keel(a1, NULL, NULL);
    unsetenv("KEEL_CRASH_POINT");
    ck_assert_int_eq(st, 128 + 9); /* SIGKILL */
    const char *a2[] = {"run", crashed.state, "--json", NULL};
    char *out = keel_ok(a2);
    json_t *rest = one_json(out);
    free(out);
    ck_assert_str_eq(str_field(rest, "stopped"), "idle");
    ck_assert_str_eq(str_field(rest, "activity_hash"),
                     str_field(ref, "activity_hash"));
    json_decref(ref);
    json_decref(rest);
    fx_free(&whole);
    fx_free(&crashed);
}
END_TEST

START_TEST(test_cli_kernel_run_sync_group_reaches_idle)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    const char *args[] = {"run",    fx.state, "--config", fx.config,
                          "--sync", "group",  "--json",   NULL};
    char *out = keel_ok(args);
    json_t *o = one_json(out);
    ck_assert_str_eq(str_field(o, "stopped"), "idle");
    ck_assert_int_eq(int_field(o, "cranks"), PINGPONG_CRANKS);
    /* K1: reported only once durable */
    json_t *st = status_json(fx.state);
    ck_assert_int_ge(int_field(st, "durable_lsn"), int_field(o, "durable_lsn"));
    ck_assert_int_eq(int_field(st, "durable_lsn"), int_field(st, "last_lsn"));
    json_decref(o);
    json_decref(st);
    free(out);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_run_bad_config_exits_one_naming_path)
{
    static const char bad[] =
        "{\"bootstrap\": \"alice\", \"vats\": {"
        "\"alice\": {\"builtin\": \"pingpong\", \"params\": {\"role\": "
        "\"alice\"}},"
        "\"bob\": {\"builtin\": \"bobb\"}}}";
    fixture fx;
    fx_init(&fx, bad);
    char *out = NULL, *err = NULL;
    const char *args[] = {"run", fx.state, "--config", fx.config, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "cluster.json: vats.bob.builtin: no built-in "
                              "vat named \"bobb\"") != NULL,
                  "stderr: %s", err);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    /* nothing was booted: the STATE still needs a config */
    const char *again[] = {"run", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(again, &out, &err), 2);
    ck_assert_msg(strstr(err, "--config is required") != NULL, "stderr: %s",
                  err);
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_run_missing_config_file_exits_one)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    char *nofile = tu_path(fx.root, "nope.json");
    char *out = NULL, *err = NULL;
    const char *args[] = {"run", fx.state, "--config", nofile, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "cannot read config") != NULL, "stderr: %s", err);
    ck_assert_msg(!exists(fx.state), "STATE was created");
    free(out);
    free(err);
    free(nofile);
    fx_free(&fx);
}
END_TEST

/* The mixed workload with 3 rounds: in round 3 the crasher's boom()
 * fails its delivery (the crank aborts, the vat is terminated). */
static const char mixed3_json[] =
    "{\"bootstrap\": \"driver\", \"vats\": {"
    "\"driver\": {\"builtin\": \"mixed\", \"params\": {\"role\": \"driver\", "
    "\"rounds\": 3}},"
    "\"echo\": {\"builtin\": \"mixed\", \"params\": {\"role\": \"echo\"}},"
    "\"counter0\": {\"builtin\": \"mixed\", \"params\": {\"role\": "
    "\"counter\"}},"
    "\"counter1\": {\"builtin\": \"mixed\", \"params\": {\"role\": "
    "\"counter\"}},"
    "\"counter2\": {\"builtin\": \"mixed\", \"params\": {\"role\": "
    "\"counter\"}},"
    "\"factory\": {\"builtin\": \"mixed\", \"params\": {\"role\": "
    "\"factory\"}},"
    "\"clock\": {\"builtin\": \"mixed\", \"params\": {\"role\": \"clock\"}},"
    "\"quitter\": {\"builtin\": \"mixed\", \"params\": {\"role\": \"doomed\"}},"
    "\"crasher\": {\"builtin\": \"mixed\", \"params\": {\"role\": "
    "\"doomed\"}}}}";

/* The summary's cranks are the committed ones (they equal the crank
 * number the run reached from boot); the aborted delivery is reported
 * apart, in both forms, not counted as a crank. */
START_TEST(test_cli_kernel_run_summary_counts_aborted_apart)
{
    fixture fx;
    fx_init(&fx, mixed3_json);
    json_t *run = run_to_idle(&fx);
    ck_assert_str_eq(str_field(run, "stopped"), "idle");
    ck_assert_int_eq(int_field(run, "aborted"), 1);
    ck_assert_int_eq(int_field(run, "cranks"), int_field(run, "crank"));
    /* every committed crank and the aborted one delivered to a vat, at
     * most (messages to the dead crasher are rejected without one) */
    ck_assert_int_le(int_field(run, "deliveries"),
                     int_field(run, "cranks") + 1);
    json_t *st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "crank"), int_field(run, "cranks"));
    json_decref(st);
    json_decref(run);
    fx_free(&fx);
    /* the human form says the same */
    fx_init(&fx, mixed3_json);
    char *out = NULL, *err = NULL;
    const char *args[] = {"run", fx.state, "--config", fx.config, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 0);
    ck_assert_msg(strstr(out, "\naborted: 1 (a delivery failed: its crank "
                              "was undone and its vat terminated)\n") != NULL,
                  "stdout: %s", out);
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

/* A config is read with its length: a NUL byte is refused, naming its
 * offset, not taken as the end of the file (what followed it was ignored
 * and the cluster booted). Nothing is created. */
START_TEST(test_cli_kernel_run_config_with_nul_byte_refused)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    size_t n = strlen(pingpong_json);
    char *buf = malloc(n + 16);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, pingpong_json, n);
    memcpy(buf + n, "\0garbage{{{", 11);
    tu_write_file(fx.config, buf, n + 11);
    char *out = NULL, *err = NULL;
    const char *args[] = {"run", fx.state, "--config", fx.config, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    char want[64];
    snprintf(want, sizeof(want), "NUL byte at offset %zu", n);
    ck_assert_msg(strstr(err, want) != NULL, "stderr: %s", err);
    ck_assert_msg(strstr(err, "cluster.json") != NULL, "stderr: %s", err);
    ck_assert_str_eq(out, "");
    ck_assert_msg(!exists(fx.state), "STATE was created");
    free(out);
    free(err);
    free(buf);
    fx_free(&fx);
}
END_TEST

/* A STATE that is a regular file: every command says so (it said "cannot
 * open lock file: no such file or directory"). */
START_TEST(test_cli_kernel_state_regular_file_not_a_directory)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    tu_write_file(fx.state, "x", 1);
    const char *run[] = {"run", fx.state, "--config", fx.config, NULL};
    const char *status[] = {"status", fx.state, NULL};
    const char *send[] = {"send", fx.state, "bob", "ping", "{}", NULL};
    const char *recover[] = {"recover", fx.state, NULL};
    const char *const *cases[] = {run, status, send, recover};
    for (size_t i = 0; i < 4; i++) {
        char *out = NULL, *err = NULL;
        ck_assert_int_eq(tu_run_keel(cases[i], &out, &err), 1);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, "is not a directory") != NULL,
                      "case %zu: stderr: %s", i, err);
        ck_assert_msg(strstr(err, fx.state) != NULL, "case %zu: stderr: %s", i,
                      err);
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
    }
    fx_free(&fx);
}
END_TEST

/* STATE/lock replaced by a directory: said "I/O error"; now says what
 * is there and what was expected. */
START_TEST(test_cli_kernel_lock_path_directory_named)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    char *lock = tu_path(fx.state, "lock");
    ck_assert_int_eq(unlink(lock), 0);
    ck_assert_int_eq(mkdir(lock, 0755), 0);
    char *snap = tu_path(fx.root, "s.ksnap");
    const char *status[] = {"status", fx.state, NULL};
    const char *run[] = {"run", fx.state, NULL};
    const char *create[] = {"snapshot", "create", fx.state, snap, NULL};
    const char *const *cases[] = {status, run, create};
    for (size_t i = 0; i < 3; i++) {
        char *out = NULL, *err = NULL;
        ck_assert_int_eq(tu_run_keel(cases[i], &out, &err), 1);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, "/lock is a directory") != NULL,
                      "case %zu: stderr: %s", i, err);
        ck_assert_msg(strstr(err, "I/O error") == NULL, "case %zu: stderr: %s",
                      i, err);
        free(out);
        free(err);
    }
    free(lock);
    ck_assert_msg(!exists(snap), "a snapshot was written");
    free(snap);
    fx_free(&fx);
}
END_TEST

/* KEEL_CRASH_POINT's N is strict decimal 1..2^64-1: a sign, trailing
 * garbage, overflow, 0 and spaces are refused naming the variable, before
 * STATE is created (sscanf %llu took "-1" as 2^64-1 and "1x" as 1). */
START_TEST(test_cli_kernel_crash_point_parsed_strictly)
{
    static const char *const bad[] = {
        "commit-after:-1",
        "commit-after:1x",
        "commit-after:+1",
        "commit-after: 1",
        "commit-after:0",
        "commit-after:",
        "commit-after:18446744073709551616",
        "commit-after/crank:1 ",
        "nonsense:1",
        "commit-after/x:1",
        "commit-after:0x10",
    };
    fixture fx;
    fx_init(&fx, pingpong_json);
    const char *args[] = {"run", fx.state, "--config", fx.config, NULL};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = NULL, *err = NULL;
        ck_assert_int_eq(setenv("KEEL_CRASH_POINT", bad[i], 1), 0);
        int rc = tu_run_keel(args, &out, &err);
        unsetenv("KEEL_CRASH_POINT");
        ck_assert_msg(rc == 1, "%s: exit %d, stderr: %s", bad[i], rc, err);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, "KEEL_CRASH_POINT") != NULL, "%s: stderr: %s",
                      bad[i], err);
        ck_assert_msg(!exists(fx.state), "%s: STATE was created", bad[i]);
        free(out);
        free(err);
    }
    /* the largest N is accepted (and never reached) */
    ck_assert_int_eq(
        setenv("KEEL_CRASH_POINT", "commit-after:18446744073709551615", 1), 0);
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(args, &out, &err);
    unsetenv("KEEL_CRASH_POINT");
    ck_assert_msg(rc == 0, "exit %d, stderr: %s", rc, err);
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

/* --------------------------------------------------------------- status */

START_TEST(test_cli_kernel_status_human_lists_vats)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    const char *args[] = {"status", fx.state, NULL};
    char *out = keel_ok(args);
    ck_assert_msg(strstr(out, "crank: 11\n") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "run queue: 0\n") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "unresolved promises: 0\n") != NULL, "stdout: %s",
                  out);
    ck_assert_msg(strstr(out, "vats: 2 (2 alive, 0 terminated)\n") != NULL,
                  "stdout: %s", out);
    ck_assert_msg(strstr(out, " alice: alive\n") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, " bob: alive\n") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(out, "kernel id: 0x") != NULL, "stdout: %s", out);
    free(out);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_status_missing_state_exits_one)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    char *out = NULL, *err = NULL;
    const char *args[] = {"status", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "no such state directory") != NULL, "stderr: %s",
                  err);
    ck_assert_str_eq(out, "");
    ck_assert_msg(!exists(fx.state), "status created STATE");
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

/* ----------------------------------------------------------------- send */

START_TEST(test_cli_kernel_send_wait_prints_fulfilled)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    const char *args[] = {"send",       fx.state, "bob", "ping",
                          "{\"i\":41}", "--wait", NULL};
    char *out = keel_ok(args);
    ck_assert_str_eq(out, "fulfilled: {\"value\":42}\n");
    free(out);
    fx_free(&fx);
}
END_TEST

/* A malformed message from outside (the issue's `ping 'null'`, an unknown
 * method) is rejected with a message saying what was expected, which is a
 * settlement (exit 0); bob lives and answers the next good one. */
START_TEST(test_cli_kernel_send_wait_prints_rejected)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    const char *null_args[] = {"send", fx.state, "bob", "ping",
                               "null", "--wait", NULL};
    char *out = keel_ok(null_args);
    ck_assert_str_eq(
        out,
        "rejected: {\"error\":\"ping: arguments must be a JSON object\"}\n");
    free(out);
    const char *pong[] = {"send", fx.state, "bob", "pong",
                          "{}",   "--wait", NULL};
    out = keel_ok(pong);
    ck_assert_str_eq(out, "rejected: {\"error\":\"pong: unknown method\"}\n");
    free(out);
    const char *status[] = {"status", fx.state, NULL};
    out = keel_ok(status);
    ck_assert_msg(strstr(out, " bob: alive\n") != NULL, "stdout: %s", out);
    free(out);
    const char *good[] = {"send",       fx.state, "bob", "ping",
                          "{\"i\":41}", "--wait", NULL};
    out = keel_ok(good);
    ck_assert_str_eq(out, "fulfilled: {\"value\":42}\n");
    free(out);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_send_wait_json_counter)
{
    fixture fx;
    fx_init(&fx, counter_json);
    json_decref(run_to_idle(&fx));
    const char *args[] = {"send",      fx.state, "counter", "incr",
                          "{\"n\":5}", "--wait", "--json",  NULL};
    char *out = keel_ok(args);
    json_t *o = one_json(out);
    ck_assert_str_eq(str_field(o, "state"), "fulfilled");
    ck_assert_msg(strncmp(str_field(o, "promise"), "kp", 2) == 0, "%s", out);
    /* the driver's 3 incrs of 1 came first */
    ck_assert_int_eq(int_field(json_object_get(o, "body"), "value"), 8);
    json_decref(o);
    free(out);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_send_queues_then_run_delivers)
{
    fixture fx;
    fx_init(&fx, counter_json);
    json_decref(run_to_idle(&fx));
    const char *args[] = {"send", fx.state,    "counter",
                          "incr", "{\"n\":2}", NULL};
    char *out = keel_ok(args);
    ck_assert_msg(strncmp(out, "queued: kp", 10) == 0, "stdout: %s", out);
    ck_assert_uint_eq(tu_count_lines(out), 1);
    free(out);
    json_t *st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "run_queue"), 1);
    ck_assert_int_eq(int_field(st, "unresolved_promises"), 1);
    json_decref(st);
    const char *run[] = {"run", fx.state, "--json", NULL};
    out = keel_ok(run);
    json_t *o = one_json(out);
    ck_assert_int_eq(int_field(o, "cranks"), 1);
    json_decref(o);
    free(out);
    st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "run_queue"), 0);
    ck_assert_int_eq(int_field(st, "unresolved_promises"), 0);
    json_decref(st);
    fx_free(&fx);
}
END_TEST

/* A checkpoint failing after a durable send (a real EFBIG: the file size
 * limit stops data.mdb from growing by the message's 100 KB, while its
 * compressed WAL record fits) must not make `keel send` report failure
 * for a message that is durable and will be delivered: exit 0, the
 * answer on stdout, a warning on stderr; after the limit is lifted the
 * message is in the run queue. */
START_TEST(test_cli_kernel_send_durable_despite_checkpoint_failure)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    char *data = tu_path(fx.state, "store/data.mdb");
    char *seg = tu_path(fx.state, "wal/00000000000000000001.seg");
    struct stat sd, sw;
    ck_assert_int_eq(stat(data, &sd), 0);
    ck_assert_int_eq(stat(seg, &sw), 0);
    size_t big = 100 * 1000;
    char *args = malloc(big + 64);
    ck_assert_ptr_nonnull(args);
    int n = sprintf(args, "{\"pad\":\"");
    memset(args + n, 'a', big);
    strcpy(args + n + big, "\"}");
    struct rlimit was, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    lim = was;
    off_t most = sd.st_size > sw.st_size ? sd.st_size : sw.st_size;
    lim.rlim_cur = (rlim_t)most + 16 * 1024;
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const char *send[] = {"send", fx.state, "bob", "ping", args, NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(send, &out, &err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
    ck_assert_msg(rc == 0, "keel send of a durable message: exit %d: %s", rc,
                  err);
    ck_assert_msg(strncmp(out, "queued: kp", 10) == 0, "stdout: %s", out);
    ck_assert_msg(strstr(err, "durable") != NULL &&
                      strstr(err, "data.mdb") != NULL,
                  "stderr names the checkpoint failure: %s", err);
    json_t *st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "run_queue"), 1);
    json_decref(st);
    free(out);
    free(err);
    free(args);
    free(data);
    free(seg);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_send_unknown_vat_exits_one)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    char *out = NULL, *err = NULL;
    const char *args[] = {"send", fx.state, "carol", "ping", "{}", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "vat named \"carol\"") != NULL, "stderr: %s",
                  err);
    ck_assert_str_eq(out, "");
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_send_missing_state_exits_one)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    char *out = NULL, *err = NULL;
    const char *args[] = {"send", fx.state, "bob", "ping", "{}", NULL};
    ck_assert_int_eq(tu_run_keel(args, &out, &err), 1);
    tu_assert_one_error_line(err);
    ck_assert_msg(strstr(err, "no such state directory") != NULL, "stderr: %s",
                  err);
    ck_assert_msg(!exists(fx.state), "send created STATE");
    free(out);
    free(err);
    fx_free(&fx);
}
END_TEST

/* ---------------------------------------------------------------- usage */

START_TEST(test_cli_kernel_usage_errors_exit_two_with_one_line)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    const char *s = fx.state;
    const char *c = fx.config;
    static char long_method[100001];
    memset(long_method, 'm', sizeof(long_method) - 1);
    struct {
        const char *args[10];
        const char *needle;
    } cases[] = {
        {{"run", NULL}, "missing STATE"},
        {{"run", s, "--config", c, "--sync", "sometimes", NULL}, "--sync"},
        {{"run", s, "--config", c, "--max-cranks", "0", NULL}, "--max-cranks"},
        {{"run", s, "--config", c, "--timeout-ms", "-5", NULL}, "--timeout-ms"},
        {{"run", s, NULL}, "is new: --config is required"},
        {{"run", s, "extra", NULL}, "extra"},
        {{"status", NULL}, "missing STATE"},
        {{"status", s, "--sync", "full", NULL}, "--sync"},
        {{"send", s, "bob", "ping", NULL}, "missing"},
        {{"send", s, "bob", "ping", "{bad", NULL}, "ARGS_JSON"},
        {{"send", s, "bob", "ping", "{}", "--timeout-ms", "5", NULL},
         "--timeout-ms needs --wait"},
        {{"send", s, "bob", "p\xffng", "{}", NULL},
         "METHOD is not valid UTF-8"},
        {{"send", s, "bob", "", "{}", NULL}, "METHOD is empty"},
        {{"send", s, "bob", long_method, "{}", NULL},
         "METHOD is longer than 255 bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(cases[i].args, &out, &err);
        ck_assert_msg(rc == 2, "case %zu: exit %d, stderr: %s", i, rc, err);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, cases[i].needle) != NULL,
                      "case %zu: stderr lacks '%s': %s", i, cases[i].needle,
                      err);
        ck_assert_msg(out[0] == '\0', "case %zu: stdout: %s", i, out);
        free(out);
        free(err);
    }
    /* a usage error creates nothing */
    ck_assert_msg(!exists(fx.state), "a usage error created STATE");
    fx_free(&fx);
}
END_TEST

START_TEST(test_cli_kernel_help_for_each_command)
{
    static const char *const cmds[] = {"run", "status", "send"};
    for (size_t i = 0; i < 3; i++) {
        const char *args[] = {cmds[i], "--help", NULL};
        char *out = keel_ok(args);
        char want[64];
        snprintf(want, sizeof(want), "usage: keel %s STATE", cmds[i]);
        ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "%s", out);
        ck_assert_msg(strstr(out, "Exit status: 0") != NULL, "%s", out);
        free(out);
    }
    const char *top[] = {"--help", NULL};
    char *out = keel_ok(top);
    ck_assert_ptr_nonnull(strstr(out, "\n  run STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  status STATE"));
    ck_assert_ptr_nonnull(strstr(out, "\n  send STATE VAT METHOD ARGS_JSON"));
    free(out);
}
END_TEST

/* ------------------------------------------------------ lock and signal */

START_TEST(test_cli_kernel_locked_state_exits_one)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    /* the kernel's lock is a flock on STATE/lock (kernel/kernel.c) */
    char *lock = tu_path(fx.state, "lock");
    int fd = open(lock, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    const char *run[] = {"run", fx.state, NULL};
    const char *status[] = {"status", fx.state, NULL};
    const char *send[] = {"send", fx.state, "bob", "ping", "{\"i\":1}", NULL};
    const char *const *cases[] = {run, status, send};
    for (size_t i = 0; i < 3; i++) {
        char *out = NULL, *err = NULL;
        ck_assert_int_eq(tu_run_keel(cases[i], &out, &err), 1);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, "is locked by another keel process") != NULL,
                      "stderr: %s", err);
        ck_assert_str_eq(out, "");
        free(out);
        free(err);
    }
    close(fd);
    /* released: usable again, and the refused send queued nothing */
    json_t *st = status_json(fx.state);
    ck_assert_int_eq(int_field(st, "run_queue"), 0);
    json_decref(st);
    free(lock);
    fx_free(&fx);
}
END_TEST

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* 1 if /proc/locks shows process pid holding a FLOCK on inode ino. */
static int holds_flock(pid_t pid, ino_t ino)
{
    char line[256];
    int found = 0;
    FILE *f = fopen("/proc/locks", "r");
    ck_assert_msg(f != NULL, "/proc/locks: %s", strerror(errno));
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        char kind[16];
        long lpid = 0;
        unsigned long long lino = 0;
        unsigned maj = 0, min = 0;
        /* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" */
        if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%llu", kind, &lpid, &maj,
                   &min, &lino) == 5) {
            found = strcmp(kind, "FLOCK") == 0 && lpid == (long)pid &&
                    lino == (unsigned long long)ino;
        }
    }
    fclose(f);
    return found;
}

START_TEST(test_cli_kernel_run_forever_stops_on_sigterm)
{
    fixture fx;
    fx_init(&fx, pingpong_json);
    json_decref(run_to_idle(&fx));
    char *outp = tu_path(fx.root, "forever.out");
    char *lock = tu_path(fx.state, "lock");
    struct stat lst;
    ck_assert_int_eq(stat(lock, &lst), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        /* without its socket, to see the lock refuse (test_control.c
         * covers the commands against a live kernel's socket) */
        execl(KEEL_BIN, KEEL_BIN, "run", fx.state, "--forever", "--json",
              "--no-control", (char *)NULL);
        _exit(127);
    }
    /* the child holds the lock once it has opened STATE */
    long waited = 0;
    while (!holds_flock(pid, lst.st_ino) && waited < WAIT_MAX_MS) {
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "child exited early");
        sleep_ms(WAIT_STEP_MS);
        waited += WAIT_STEP_MS;
    }
    ck_assert_msg(waited < WAIT_MAX_MS, "child never took the lock");
    /* while it runs, another keel process is refused */
    char *out = NULL, *err = NULL;
    const char *status[] = {"status", fx.state, NULL};
    ck_assert_int_eq(tu_run_keel(status, &out, &err), 1);
    ck_assert_msg(strstr(err, "is locked by another keel process") != NULL,
                  "stderr: %s", err);
    free(out);
    free(err);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    int st = 0;
    pid_t got = 0;
    for (waited = 0; got == 0 && waited < WAIT_MAX_MS; waited += WAIT_STEP_MS) {
        got = waitpid(pid, &st, WNOHANG);
        if (got == 0) {
            sleep_ms(WAIT_STEP_MS);
        }
    }
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        ck_abort_msg("keel run --forever ignored SIGTERM");
    }
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
    size_t len = 0;
    char *text = (char *)tu_read_file(outp, &len);
    ck_assert_ptr_nonnull(text);
    text[len] = '\0';
    json_t *o = one_json(text);
    ck_assert_str_eq(str_field(o, "stopped"), "signal");
    ck_assert_str_eq(str_field(o, "signal"), "SIGTERM");
    ck_assert_int_eq(int_field(o, "crank"), PINGPONG_CRANKS);
    json_decref(o);
    free(text);
    free(lock);
    free(outp);
    fx_free(&fx);
}
END_TEST

Suite *cli_kernel_suite(void);

Suite *cli_kernel_suite(void)
{
    Suite *s = suite_create("cli_kernel");
    TCase *tc = tcase_create("run");
    tcase_add_test(tc, test_cli_kernel_run_pingpong_reaches_idle);
    tcase_add_test(tc, test_cli_kernel_run_json_summary_matches_status);
    tcase_add_test(tc, test_cli_kernel_run_resumes_and_ignores_config);
    tcase_add_test(tc, test_cli_kernel_run_max_cranks_then_resume_same_hash);
    tcase_add_test(tc, test_cli_kernel_run_sync_group_reaches_idle);
    tcase_add_test(tc,
                   test_cli_kernel_run_checkpoint_cranks_then_crash_resumes);
    tcase_add_test(tc, test_cli_kernel_run_bad_config_exits_one_naming_path);
    tcase_add_test(tc, test_cli_kernel_run_missing_config_file_exits_one);
    tcase_add_test(tc, test_cli_kernel_run_config_with_nul_byte_refused);
    tcase_add_test(tc, test_cli_kernel_run_summary_counts_aborted_apart);
    tcase_add_test(tc, test_cli_kernel_crash_point_parsed_strictly);
    suite_add_tcase(s, tc);

    tc = tcase_create("status");
    tcase_add_test(tc, test_cli_kernel_status_human_lists_vats);
    tcase_add_test(tc, test_cli_kernel_status_missing_state_exits_one);
    suite_add_tcase(s, tc);

    tc = tcase_create("send");
    tcase_add_test(tc, test_cli_kernel_send_wait_prints_fulfilled);
    tcase_add_test(tc, test_cli_kernel_send_wait_prints_rejected);
    tcase_add_test(tc, test_cli_kernel_send_wait_json_counter);
    tcase_add_test(tc, test_cli_kernel_send_queues_then_run_delivers);
    tcase_add_test(tc, test_cli_kernel_send_unknown_vat_exits_one);
    tcase_add_test(tc, test_cli_kernel_send_durable_despite_checkpoint_failure);
    tcase_add_test(tc, test_cli_kernel_send_missing_state_exits_one);
    suite_add_tcase(s, tc);

    tc = tcase_create("usage");
    tcase_add_test(tc, test_cli_kernel_usage_errors_exit_two_with_one_line);
    tcase_add_test(tc, test_cli_kernel_help_for_each_command);
    suite_add_tcase(s, tc);

    tc = tcase_create("lock");
    tcase_add_test(tc, test_cli_kernel_locked_state_exits_one);
    tcase_add_test(tc, test_cli_kernel_state_regular_file_not_a_directory);
    tcase_add_test(tc, test_cli_kernel_lock_path_directory_named);
    tcase_add_test(tc, test_cli_kernel_run_forever_stops_on_sigterm);
    suite_add_tcase(s, tc);
    return s;
}
