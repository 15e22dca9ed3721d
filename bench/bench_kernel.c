/*
 * bench/bench_kernel.c — the kernel workloads of WORKLOADS.md: `pingpong`,
 * `fanout` and `chain5` under each sync policy, against the storage
 * baselines measured in the same run and directory; `pingpong-rss`,
 * resident memory along one long pingpong run; and `terminate`, a vat
 * holding many keys exiting (its cleanup: the records it takes, the
 * largest one, the time).
 *
 * A kernel run:
 *   untimed  keel_kernel_open of a fresh STATE (which it creates), and
 *            keel_kernel_boot with the workload's cluster config (a JSON
 *            string built here; built-in vats, in process)
 *   timed    keel_kernel_run until idle; it returns only once everything
 *            it committed is durable under the policy (K22), so the time
 *            includes the final wait for durability, and every checkpoint
 *            the kernel takes on the way
 *   untimed  check the outcome (KB1), keel_kernel_close, remove STATE
 *
 * Series of one policy:
 *   fdatasync  (sync=full) bench.c's: 256 B appends + fdatasync. The kernel
 *              commits one WAL record per crank (and per out-of-crank
 *              syscall batch) and fdatasyncs it, so the candidate is counted
 *              in transactions/s: ratio = transactions/s / fdatasyncs/s.
 *   lmdb-put   (sync=group, off) one write transaction of 64 B puts, under
 *              pseudo-random 16-byte keys, into a fresh LMDB environment
 *              (MDB_NOSYNC) in the work directory, timed from txn begin to
 *              commit: the store's apply speed. The candidate is counted
 *              in cranks/s: ratio = cranks/s / puts/s.
 *   A baseline run does as many units (fdatasyncs, puts) as the workload's
 *   shape predicts a kernel run has transactions (units_per_n * N + 1):
 *   both series then take about the same time, and the baseline's rate
 *   does not depend on the prediction being exact.
 *   Every kernel result also reports cranks/s, transactions/s,
 *   deliveries/s (message + notify deliveries: the unit that compares
 *   across kernels), and round_trips/s (pingpong) or rounds/s (chain5).
 *
 * fanout: the bootstrap vat is one counter_driver that sends N incr in one
 * crank, round-robin to 4 counter vats (c1..c4, WORKLOADS.md), and counts
 * the N answers: 2N + 1 cranks, all of them deliveries.
 *
 * Invariants:
 *   KB1 A run counts only if the workload finished as designed: the run
 *       stopped idle and the bootstrap vat's vatstore holds the final state
 *       (done = "1" and its N answers counted). A vat terminated early would
 *       otherwise show up as a fast run.
 *   KB2 Every rate of a kernel run is a count the kernel reported for that
 *       run (keel_run_stats) over that run's timed seconds, never a
 *       prediction.
 *   KB3 The baselines use no keel code (plain POSIX, bare LMDB), so a
 *       regression in keel cannot move them.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "keel/kernel.h"

#include "bench/bench.h"
#include "common/diag.h"
#include "common/io.h"
#include "tools/cli.h"

#define DEFAULT_RUNS 5u
#define MAX_N        100000000ull
#define FSYNC_BYTES  256u
/* pingpong-rss: cranks run, and where resident memory is sampled */
#define RSS_DEFAULT_CRANKS 1000000ull
#define RSS_MIN_CRANKS     100ull
#define RSS_SAMPLES        4u

/* ------------------------------------------------------------ workloads */

/* One kernel workload: its cluster and how to tell it finished (KB1). */
typedef struct kernel_workload {
    const char *name;
    /* The cluster config for N (malloc'd JSON text; NULL: no memory). */
    char *(*config)(uint64_t n);
    const char *check_vat; /* the bootstrap vat, which ends with done = 1 */
    const char *count_key; /* ... and N under this vatstore key */
    const char *per_n;     /* the metric counting N ("round_trips"), or NULL */
    uint64_t units_per_n;  /* transactions per N, to size the baselines */
    uint64_t default_n_full;
    uint64_t default_n_batched;
    const keel_cli_spec *spec;
} kernel_workload;

static char *dump(json_t *o)
{
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static char *pingpong_config(uint64_t n)
{
    return dump(json_pack("{s:s, s:{s:{s:s, s:{s:s, s:I}}, s:{s:s, s:{s:s}}}}",
                          "bootstrap", "alice", "vats", "alice", "builtin",
                          "pingpong", "params", "role", "alice", "rounds",
                          (json_int_t)n, "bob", "builtin", "pingpong", "params",
                          "role", "bob"));
}

static char *fanout_config(uint64_t n)
{
    return dump(json_pack(
        "{s:s, s:{s:{s:s, s:{s:[s,s,s,s], s:I}}, s:{s:s}, s:{s:s}, s:{s:s}, "
        "s:{s:s}}}",
        "bootstrap", "driver", "vats", "driver", "builtin", "counter_driver",
        "params", "targets", "c1", "c2", "c3", "c4", "incrs", (json_int_t)n,
        "c1", "builtin", "counter", "c2", "builtin", "counter", "c3", "builtin",
        "counter", "c4", "builtin", "counter"));
}

static char *chain5_config(uint64_t n)
{
    return dump(json_pack("{s:s, s:{s:{s:s, s:{s:I}}, s:{s:s}, s:{s:s}}}",
                          "bootstrap", "coordinator", "vats", "coordinator",
                          "builtin", "coordinator", "params", "rounds",
                          (json_int_t)n, "provider", "builtin", "provider",
                          "keyring", "builtin", "keyring"));
}

enum { OPT_N, OPT_SYNC, OPT_RUNS, OPT_DIR, OPT_JSON, NOPTS };

static const keel_cli_opt opts[NOPTS] = {
    [OPT_N] = {"n", "N"},        [OPT_SYNC] = {"sync", "POLICY"},
    [OPT_RUNS] = {"runs", "R"},  [OPT_DIR] = {"dir", "DIR"},
    [OPT_JSON] = {"json", NULL},
};

#define KERNEL_HELP_COMMON                                                  \
    "Each run boots a fresh state directory with built-in vats in this\n"   \
    "process (untimed), runs the kernel until it is idle and everything\n"  \
    "it committed is durable (timed), checks that the workload finished,\n" \
    "and closes it (untimed). Baselines, measured in the same run and\n"    \
    "directory, interleaved with the kernel, one warm-up round first:\n"    \
    "  fdatasync  256 B appends + fdatasync (sync=full): ratio =\n"         \
    "             kernel transactions/s / fdatasyncs/s\n"                   \
    "  lmdb-put   64 B puts in one LMDB write transaction, MDB_NOSYNC\n"    \
    "             (sync=group, off): ratio = kernel cranks/s / puts/s\n"    \
    "Also reported: cranks/s, transactions/s, deliveries/s (message and\n"  \
    "notify deliveries to vats).\n"                                         \
    "\n"                                                                    \
    "Options:\n"                                                            \
    "  --sync POLICY  full, group, off, or all (default all)\n"             \
    "  --runs R       counted runs, 3 to 1000 (default 5)\n"                \
    "  --dir DIR      where to work: a fresh keel-bench-XXXXXX directory\n" \
    "                 is made in DIR and removed afterwards (default\n"     \
    "                 $TMPDIR, else the current directory)\n"               \
    "  --json         one JSON object per policy: workload, sync, n,\n"     \
    "                 candidate, median_per_s, min_per_s, max_per_s,\n"     \
    "                 baseline, baseline_per_s, ratio, cranks_per_s,\n"     \
    "                 transactions_per_s, deliveries_per_s (and\n"          \
    "                 round_trips_per_s or rounds_per_s), runs\n"           \
    "\n"                                                                    \
    "Exit status: 0 success; 1 a run failed; 2 usage error.\n"

static const keel_cli_spec pingpong_spec = {
    .command = "bench pingpong",
    .help = "usage: keel bench pingpong [--n N] [--sync full|group|off|all]\n"
            "                           [--runs R] [--dir DIR] [--json]\n"
            "\n"
            "Two vats: alice pings bob and waits for the answer before the\n"
            "next ping, N times: 2N + 1 cranks. Also reports round "
            "trips/s.\n"
            "  --n N          round trips per run (default 300 for full,\n"
            "                 20000 for group and off)\n"
            "\n" KERNEL_HELP_COMMON,
    .opts = opts,
    .nopts = NOPTS,
};

static const keel_cli_spec fanout_spec = {
    .command = "bench fanout",
    .help = "usage: keel bench fanout [--n N] [--sync full|group|off|all]\n"
            "                         [--runs R] [--dir DIR] [--json]\n"
            "\n"
            "A counter_driver vat sends N incr messages in one crank to a\n"
            "counter vat, which keeps its count in its vatstore and answers\n"
            "each; the driver counts the answers: 2N + 1 cranks. (One\n"
            "counter vat: the driver has a single target.)\n"
            "  --n N          messages per run (default 300 for full, 20000\n"
            "                 for group and off)\n"
            "\n" KERNEL_HELP_COMMON,
    .opts = opts,
    .nopts = NOPTS,
};

static const keel_cli_spec chain5_spec = {
    .command = "bench chain5",
    .help = "usage: keel bench chain5 [--n N] [--sync full|group|off|all]\n"
            "                         [--runs R] [--dir DIR] [--json]\n"
            "\n"
            "The five-hop chain (coordinator, provider with thread-pool "
            "work\n"
            "resolved out of crank, keyring), N rounds: 6 cranks and one\n"
            "out-of-crank transaction per round. Also reports rounds/s.\n"
            "  --n N          rounds per run (default 50 for full, 2000 for\n"
            "                 group and off)\n"
            "\n" KERNEL_HELP_COMMON,
    .opts = opts,
    .nopts = NOPTS,
};

static const kernel_workload pingpong_workload = {
    .name = "pingpong",
    .config = pingpong_config,
    .check_vat = "alice",
    .count_key = "answers",
    .per_n = "round_trips",
    .units_per_n = 2,
    .default_n_full = 300,
    .default_n_batched = 20000,
    .spec = &pingpong_spec,
};

static const kernel_workload fanout_workload = {
    .name = "fanout",
    .config = fanout_config,
    .check_vat = "driver",
    .count_key = "seen",
    .per_n = NULL,
    .units_per_n = 2,
    .default_n_full = 300,
    .default_n_batched = 20000,
    .spec = &fanout_spec,
};

static const kernel_workload chain5_workload = {
    .name = "chain5",
    .config = chain5_config,
    .check_vat = "coordinator",
    .count_key = "rounds_done",
    .per_n = "rounds",
    .units_per_n = 7,
    .default_n_full = 50,
    .default_n_batched = 2000,
    .spec = &chain5_spec,
};

/* ----------------------------------------------------------- one run */

/* Boot a fresh kernel for workload w at N in state_dir (untimed). */
static int kernel_boot(const kernel_workload *w, uint64_t n, int sync,
                       const char *state_dir, keel_kernel **k, keel_diag *diag)
{
    keel_kernel_options o;
    char *config = w->config(n);
    int rc = config != NULL ? KEEL_OK
                            : keel__diag(diag, KEEL_ENOMEM, "out of memory");
    *k = NULL;
    if (rc < 0) {
        goto out;
    }
    keel_kernel_options_init(&o);
    o.sync = sync;
    rc = keel_kernel_open(state_dir, &o, k, diag);
    if (rc < 0) {
        goto out;
    }
    rc = keel_kernel_boot(*k, config, NULL, diag);
out:
    free(config);
    return rc;
}

/* 1 if vat's vatstore holds the decimal want at key. */
static int vatstore_is(keel_kernel *k, const char *vat, const char *key,
                       uint64_t want, keel_diag *diag)
{
    char *val = NULL;
    size_t len = 0;
    char buf[24];
    int rc = keel_kernel_vatstore_get(k, vat, key, &val, &len, diag);
    if (rc == 1) {
        snprintf(buf, sizeof(buf), "%" PRIu64, want);
        rc = len == strlen(buf) && memcmp(val, buf, len) == 0;
    }
    free(val);
    return rc;
}

/* KB1: the run stopped idle with the workload's final state in place;
 * `done` runs count the runs so far (for the message). */
static int check_outcome(const kernel_workload *w, uint64_t n, keel_kernel *k,
                         const keel_run_stats *st, size_t done, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (!st->idle) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: run %zu stopped before it was idle", w->name,
                        done + 1);
        goto out;
    }
    int ok = vatstore_is(k, w->check_vat, "done", 1, diag);
    if (ok == 1) {
        ok = vatstore_is(k, w->check_vat, w->count_key, n, diag);
    }
    if (ok < 0) {
        rc = ok;
    } else if (ok == 0) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: run %zu did not finish: vat %s has no done = 1 "
                        "and %s = %" PRIu64 " in its vatstore (a vat was "
                        "terminated?)",
                        w->name, done + 1, w->check_vat, w->count_key, n);
    }
out:
    return rc;
}

/* The candidate series: what every kernel run of one policy shares. */
typedef struct kernel_bench {
    const kernel_workload *w;
    const char *dir; /* the work directory */
    uint64_t n;
    int sync;
    uint64_t seq;          /* numbers each run's STATE */
    size_t calls;          /* runs so far, the warm-up included */
    size_t cap;            /* entries of stats and seconds */
    keel_run_stats *stats; /* per call: [0] is the warm-up (B2) */
    double *seconds;
} kernel_bench;

static int run_kernel(void *ctx, double *seconds, keel_diag *diag)
{
    kernel_bench *b = ctx;
    keel_kernel *k = NULL;
    keel_run_stats st = {0};
    char path[4096];
    int rc = KEEL_OK;
    int n = snprintf(path, sizeof(path), "%s/state-%" PRIu64, b->dir, b->seq++);
    KEEL_ASSERT(b->calls < b->cap);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: path too long", b->dir);
        goto out;
    }
    rc = kernel_boot(b->w, b->n, b->sync, path, &k, diag);
    if (rc < 0) {
        goto out;
    }
    double t0 = keel__bench_now();
    rc = keel_kernel_run(k, NULL, &st, diag);
    *seconds = keel__bench_now() - t0;
    if (rc < 0) {
        goto out;
    }
    rc = check_outcome(b->w, b->n, k, &st, b->calls, diag);
    if (rc < 0) {
        goto out;
    }
    b->stats[b->calls] = st;
    b->seconds[b->calls] = *seconds;
    b->calls++;
out:
    if (k != NULL) {
        int crc = keel_kernel_close(k, rc == KEEL_OK ? diag : NULL);
        rc = rc == KEEL_OK ? crc : rc;
    }
    if (rc == KEEL_OK) {
        rc = keel__bench_rmtree(path, diag);
    }
    return rc;
}

/* -------------------------------------------------------- command line */

/* The parsed command line of a kernel workload. */
typedef struct kernel_args {
    uint64_t n; /* 0: the policy's default */
    uint64_t runs;
    int policies[3]; /* enum keel_sync, in the order run */
    size_t npolicies;
    const char *parent; /* where the work directory is made */
    int json;
} kernel_args;

static int parse_sync(const keel_cli_spec *spec, const char *s, int all_ok,
                      int *policies, size_t *npolicies)
{
    int rc = KEEL_CLI_CONTINUE;
    int p = 0;
    if (all_ok && strcmp(s, "all") == 0) {
        policies[0] = KEEL_SYNC_FULL;
        policies[1] = KEEL_SYNC_GROUP;
        policies[2] = KEEL_SYNC_OFF;
        *npolicies = 3;
    } else if (keel_sync_parse(s, &p) == KEEL_OK) {
        policies[0] = p;
        *npolicies = 1;
    } else {
        rc = keel__cli_usage_error(spec->command,
                                   "--sync: '%s' is not full, group, off%s", s,
                                   all_ok ? " or all" : "");
    }
    return rc;
}

static const char *default_parent(void)
{
    const char *tmp = getenv("TMPDIR");
    return tmp != NULL && tmp[0] != '\0' ? tmp : ".";
}

static int parse_args(const keel_cli_spec *spec, int argc, char **argv,
                      kernel_args *a)
{
    keel_cli_args ca;
    memset(a, 0, sizeof(*a));
    a->runs = DEFAULT_RUNS;
    a->parent = default_parent();
    int rc = keel__cli_parse(spec, argc, argv, &ca);
    if (rc == KEEL_CLI_CONTINUE && ca.val[OPT_N] != NULL) {
        rc = keel__cli_parse_u64(spec->command, "n", ca.val[OPT_N], 1, MAX_N,
                                 &a->n);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[OPT_RUNS] != NULL) {
        rc = keel__cli_parse_u64(spec->command, "runs", ca.val[OPT_RUNS],
                                 KEEL_BENCH_MIN_RUNS, KEEL_BENCH_MAX_RUNS,
                                 &a->runs);
    }
    if (rc == KEEL_CLI_CONTINUE) {
        rc = parse_sync(spec,
                        ca.val[OPT_SYNC] != NULL ? ca.val[OPT_SYNC] : "all", 1,
                        a->policies, &a->npolicies);
    }
    if (rc == KEEL_CLI_CONTINUE) {
        a->parent = ca.val[OPT_DIR] != NULL ? ca.val[OPT_DIR] : a->parent;
        a->json = ca.val[OPT_JSON] != NULL;
    }
    return rc;
}

/* ----------------------------------------------------------- a policy */

enum { M_CRANKS, M_TXNS, M_DELIVERIES, M_PER_N, NMETRICS };

/* The count of metric m in run st of N. */
static double metric_count(int m, const keel_run_stats *st, uint64_t n)
{
    switch (m) {
    case M_CRANKS:
        return (double)st->cranks;
    case M_TXNS:
        return (double)st->transactions;
    case M_DELIVERIES:
        return (double)st->deliveries;
    case M_PER_N:
        return (double)n;
    default:
        KEEL_UNREACHABLE();
    }
}

/*
 * KB2: replace the candidate's rates (its series counted 1 unit per run)
 * by the counts of each run over its seconds, and fill the metrics.
 */
static void kernel_rates(const kernel_bench *b, size_t runs, int cand_metric,
                         keel_bench_series *cand, double *per_s[NMETRICS])
{
    for (size_t i = 0; i < runs; i++) {
        const keel_run_stats *st = &b->stats[i + 1]; /* [0]: warm-up */
        double s = b->seconds[i + 1] > 1e-9 ? b->seconds[i + 1] : 1e-9;
        for (int m = 0; m < NMETRICS; m++) {
            per_s[m][i] = metric_count(m, st, b->n) / s;
        }
        cand->per_s[i] = per_s[cand_metric][i];
    }
}

/* Measure one policy: its baseline and the kernel, interleaved; report. */
static int bench_policy(const kernel_workload *w, const kernel_args *a,
                        const char *dir, int policy, keel_diag *diag)
{
    int full = policy == KEEL_SYNC_FULL;
    uint64_t n =
        a->n > 0 ? a->n : (full ? w->default_n_full : w->default_n_batched);
    uint64_t units = w->units_per_n * n + 1;
    uint8_t payload[FSYNC_BYTES];
    double *per_s[NMETRICS] = {0};
    keel_bench_metric metrics[NMETRICS];
    static const char *const metric_names[NMETRICS - 1] = {
        "cranks", "transactions", "deliveries"};
    size_t nmetrics = w->per_n != NULL ? NMETRICS : NMETRICS - 1;
    int rc = KEEL_OK;
    keel__bench_fill_random(payload, sizeof(payload));
    keel_bench_file fb = {
        .dir = dir, .n = units, .size = sizeof(payload), .payload = payload};
    keel_bench_lmdb lb = {.dir = dir, .n = units};
    kernel_bench kb = {
        .w = w, .dir = dir, .n = n, .sync = policy, .cap = a->runs + 1};
    kb.stats = calloc(kb.cap, sizeof(*kb.stats));
    kb.seconds = calloc(kb.cap, sizeof(*kb.seconds));
    for (int m = 0; m < NMETRICS; m++) {
        per_s[m] = calloc(a->runs, sizeof(double));
        rc = per_s[m] == NULL ? KEEL_ENOMEM : rc;
        metrics[m].name = m < NMETRICS - 1 ? metric_names[m] : w->per_n;
        metrics[m].per_s = per_s[m];
    }
    keel_bench_series s[2] = {
        {"fdatasync", keel__bench_fdatasync, &fb, (double)units, NULL},
        /* 1 unit per run: kernel_rates() puts in the real counts (KB2) */
        {full ? "transactions" : "cranks", run_kernel, &kb, 1, NULL},
    };
    if (!full) {
        s[0].name = "lmdb-put";
        s[0].run = keel__bench_lmdb_put;
        s[0].ctx = &lb;
    }
    if (rc < 0 || kb.stats == NULL || kb.seconds == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    rc = keel__bench_interleave(s, 2, a->runs, diag);
    if (rc < 0) {
        goto out;
    }
    kernel_rates(&kb, a->runs, full ? M_TXNS : M_CRANKS, &s[1], per_s);
    keel_bench_result r = {
        .workload = w->name,
        .sync = keel_sync_name(policy),
        .n = n,
        .size = 0,
        .candidate = &s[1],
        .baseline = &s[0],
        .runs = a->runs,
        .metrics = metrics,
        .nmetrics = nmetrics,
    };
    rc = keel__bench_report(&r, a->json);
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
    }
out:
    keel__bench_series_free(s, 2);
    for (int m = 0; m < NMETRICS; m++) {
        free(per_s[m]);
    }
    free(kb.stats);
    free(kb.seconds);
    return rc;
}

/* Print a failed run's error as one line. @return the exit status (C1). */
static int finish(const keel_cli_spec *spec, int rc, int err,
                  const keel_diag *d)
{
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "keel: %s: %s\n", spec->command,
                d->msg[0] != '\0' ? d->msg : keel_strerror(err));
        rc = KEEL_CLI_FAIL;
    } else if (rc == KEEL_CLI_CONTINUE) {
        rc = KEEL_CLI_OK;
    }
    return rc;
}

static int kernel_main(const kernel_workload *w, int argc, char **argv)
{
    kernel_args a;
    keel_bench_env env;
    keel_diag d = {0};
    char *dir = NULL;
    int err = KEEL_OK;
    int rc = parse_args(w->spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    err = keel__bench_workdir(a.parent, &dir, &d);
    if (err < 0) {
        goto out;
    }
    keel__bench_env(dir, &env);
    keel__bench_report_header(w->name, &env, dir, a.runs, a.json);
    for (size_t i = 0; i < a.npolicies && err == KEEL_OK; i++) {
        err = bench_policy(w, &a, dir, a.policies[i], &d);
    }
out:
    if (dir != NULL) {
        /* B5: the directory is ours; a failed run leaves files in it */
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(dir);
    return finish(w->spec, rc, err, &d);
}

int keel__bench_pingpong(int argc, char **argv)
{
    return kernel_main(&pingpong_workload, argc, argv);
}

int keel__bench_fanout(int argc, char **argv)
{
    return kernel_main(&fanout_workload, argc, argv);
}

int keel__bench_chain5(int argc, char **argv)
{
    return kernel_main(&chain5_workload, argc, argv);
}

/* --------------------------------------------------------- pingpong-rss */

/*
 * One kernel, one pingpong of N cranks under one policy, paused (with
 * keel_run_options.max_cranks; each pause waits for durability) after
 * N/10, N/4, N/2 and N cranks to read this process's memory from
 * /proc/self/status and the sizes of STATE's store and WAL. The figure
 * issue 4 asks for is VmRSS after N over VmRSS after N/10. RssFile is the
 * part mapped from files (LMDB's map of the store, which grows with the
 * vatstore: alice keeps every answer); RssAnon is the heap and stacks.
 */

enum { RSS_OPT_N, RSS_OPT_SYNC, RSS_OPT_DIR, RSS_OPT_JSON, RSS_NOPTS };

static const keel_cli_opt rss_opts[RSS_NOPTS] = {
    [RSS_OPT_N] = {"n", "CRANKS"},
    [RSS_OPT_SYNC] = {"sync", "POLICY"},
    [RSS_OPT_DIR] = {"dir", "DIR"},
    [RSS_OPT_JSON] = {"json", NULL},
};

static const keel_cli_spec rss_spec = {
    .command = "bench pingpong-rss",
    .help =
        "usage: keel bench pingpong-rss [--n CRANKS] [--sync full|group|off]\n"
        "                               [--dir DIR] [--json]\n"
        "\n"
        "Run one pingpong of CRANKS cranks on a fresh state directory and\n"
        "read this process's memory (/proc/self/status) after CRANKS/10,\n"
        "CRANKS/4, CRANKS/2 and CRANKS cranks, with the sizes of the\n"
        "store and the WAL. Prints VmRSS (RssAnon: heap; RssFile: mapped\n"
        "files, mostly the store), VmHWM (peak), the heap in use\n"
        "(malloc), cranks/s over each stretch, and the ratio of the last\n"
        "VmRSS to the first: issue 4 asks for at most 1.10 at 1,000,000\n"
        "against 100,000 cranks. Not interleaved, no baseline: one run.\n"
        "\n"
        "Options:\n"
        "  --n CRANKS     cranks in all, at least 100 (default 1000000)\n"
        "  --sync POLICY  full, group or off (default group)\n"
        "  --dir DIR      where to work (default $TMPDIR, else the\n"
        "                 current directory)\n"
        "  --json         one JSON object: workload, sync, n, samples\n"
        "                 [{cranks, vm_rss_kib, rss_anon_kib, rss_file_kib,\n"
        "                 vm_hwm_kib, heap_in_use_kib, store_bytes,\n"
        "                 wal_bytes, cranks_per_s}], rss_ratio,\n"
        "                 rss_anon_ratio, heap_ratio\n"
        "\n"
        "Exit status: 0 success; 1 the run failed; 2 usage error.\n",
    .opts = rss_opts,
    .nopts = RSS_NOPTS,
};

/* Memory and disk after some cranks. */
typedef struct rss_sample {
    uint64_t cranks;
    uint64_t vm_rss_kib;
    uint64_t rss_anon_kib;
    uint64_t rss_file_kib;
    uint64_t vm_hwm_kib;
    uint64_t heap_kib; /* in use in malloc's main arena (mallinfo2): the
                          kernel thread's allocations */
    uint64_t store_bytes;
    uint64_t wal_bytes;
    double cranks_per_s; /* over the stretch since the previous sample */
} rss_sample;

static void read_status(rss_sample *s)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        unsigned long long v = 0;
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            s->vm_rss_kib = v;
        } else if (sscanf(line, "RssAnon: %llu kB", &v) == 1) {
            s->rss_anon_kib = v;
        } else if (sscanf(line, "RssFile: %llu kB", &v) == 1) {
            s->rss_file_kib = v;
        } else if (sscanf(line, "VmHWM: %llu kB", &v) == 1) {
            s->vm_hwm_kib = v;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
}

static void take_sample(const char *state_dir, uint64_t cranks,
                        double cranks_per_s, rss_sample *s)
{
    char path[4096];
    struct mallinfo2 mi = mallinfo2();
    memset(s, 0, sizeof(*s));
    s->cranks = cranks;
    s->cranks_per_s = cranks_per_s;
    read_status(s);
    s->heap_kib = (uint64_t)mi.uordblks / 1024;
    snprintf(path, sizeof(path), "%s/store", state_dir);
    s->store_bytes = keel__bench_dir_bytes(path, 0);
    snprintf(path, sizeof(path), "%s/wal", state_dir);
    s->wal_bytes = keel__bench_dir_bytes(path, 0);
}

static double ratio_u64(uint64_t a, uint64_t b)
{
    return b > 0 ? (double)a / (double)b : 0;
}

static int rss_report(const rss_sample *s, size_t ns, int sync, uint64_t n,
                      const keel_bench_env *env, const char *dir, int json)
{
    int rc = KEEL_OK;
    char *line = NULL;
    json_t *o = NULL;
    double rss = ratio_u64(s[ns - 1].vm_rss_kib, s[0].vm_rss_kib);
    double anon = ratio_u64(s[ns - 1].rss_anon_kib, s[0].rss_anon_kib);
    double heap = ratio_u64(s[ns - 1].heap_kib, s[0].heap_kib);
    if (!json) {
        printf("pingpong-rss: cpu %s; fs %s (%s); build %s; sync %s; one "
               "run, sampled after each crank count below\n",
               env->cpu, env->fs, dir, env->build, keel_sync_name(sync));
        printf("%10s %10s %10s %10s %10s %10s %10s %10s %10s\n", "cranks",
               "VmRSS KiB", "anon KiB", "file KiB", "VmHWM KiB", "heap KiB",
               "store MiB", "wal MiB", "cranks/s");
        for (size_t i = 0; i < ns; i++) {
            printf("%10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                   " %10" PRIu64 " %10" PRIu64 " %10.1f %10.1f %10.0f\n",
                   s[i].cranks, s[i].vm_rss_kib, s[i].rss_anon_kib,
                   s[i].rss_file_kib, s[i].vm_hwm_kib, s[i].heap_kib,
                   (double)s[i].store_bytes / 1048576.0,
                   (double)s[i].wal_bytes / 1048576.0, s[i].cranks_per_s);
        }
        printf("VmRSS at %" PRIu64 " / at %" PRIu64 " cranks: %.3f "
               "(issue 4: at most 1.10); RssAnon %.3f; heap in use %.3f\n",
               s[ns - 1].cranks, s[0].cranks, rss, anon, heap);
        goto out;
    }
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < ns; i++) {
        json_t *e = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "cranks",
            (json_int_t)s[i].cranks, "vm_rss_kib", (json_int_t)s[i].vm_rss_kib,
            "rss_anon_kib", (json_int_t)s[i].rss_anon_kib, "rss_file_kib",
            (json_int_t)s[i].rss_file_kib, "vm_hwm_kib",
            (json_int_t)s[i].vm_hwm_kib, "heap_in_use_kib",
            (json_int_t)s[i].heap_kib, "store_bytes",
            (json_int_t)s[i].store_bytes, "wal_bytes",
            (json_int_t)s[i].wal_bytes, "cranks_per_s", s[i].cranks_per_s);
        if (e == NULL || json_array_append_new(a, e) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    o = json_pack("{s:s, s:s, s:I, s:o, s:f, s:f, s:f}", "workload",
                  "pingpong-rss", "sync", keel_sync_name(sync), "n",
                  (json_int_t)n, "samples", a, "rss_ratio", rss,
                  "rss_anon_ratio", anon, "heap_ratio", heap);
    line = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12))
                     : NULL;
    if (line == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    printf("%s\n", line);
out:
    fflush(stdout);
    free(line);
    json_decref(o);
    return rc;
}

/* Run to each sample point of n cranks in turn, sampling after each. */
static int rss_run(const char *state_dir, uint64_t n, int sync, rss_sample *s,
                   keel_diag *diag)
{
    const uint64_t at[RSS_SAMPLES] = {n / 10, n / 4, n / 2, n};
    keel_kernel *k = NULL;
    uint64_t done = 0;
    /* 2 * rounds + 1 cranks: at least n */
    int rc = kernel_boot(&pingpong_workload, n / 2, sync, state_dir, &k, diag);
    for (size_t i = 0; rc == KEEL_OK && i < RSS_SAMPLES; i++) {
        keel_run_options o = {.max_cranks = at[i] - done};
        keel_run_stats st = {0};
        double t0 = keel__bench_now();
        rc = keel_kernel_run(k, &o, &st, diag);
        if (rc >= 0) {
            /* a run stopped by max_cranks is not idle: make sure all of it
             * is durable before the stretch's clock stops */
            rc = keel_kernel_wait_durable(k, diag);
        }
        double seconds = keel__bench_now() - t0;
        if (rc < 0) {
            break;
        }
        done += st.cranks;
        take_sample(state_dir, done,
                    (double)st.cranks / (seconds > 1e-9 ? seconds : 1e-9),
                    &s[i]);
    }
    if (rc == KEEL_OK && done < n) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "pingpong-rss: the run was idle after %" PRIu64
                        " of %" PRIu64 " cranks (a vat was terminated?)",
                        done, n);
    }
    int crc = keel_kernel_close(k, rc == KEEL_OK ? diag : NULL);
    return rc == KEEL_OK ? crc : rc;
}

int keel__bench_pingpong_rss(int argc, char **argv)
{
    keel_cli_args ca;
    keel_bench_env env;
    keel_diag d = {0};
    rss_sample s[RSS_SAMPLES];
    char *dir = NULL;
    char *state = NULL;
    const char *parent = default_parent();
    uint64_t n = RSS_DEFAULT_CRANKS;
    int sync = KEEL_SYNC_GROUP;
    size_t npolicies = 0;
    int err = KEEL_OK;
    int rc = keel__cli_parse(&rss_spec, argc, argv, &ca);
    if (rc == KEEL_CLI_CONTINUE && ca.val[RSS_OPT_N] != NULL) {
        rc = keel__cli_parse_u64(rss_spec.command, "n", ca.val[RSS_OPT_N],
                                 RSS_MIN_CRANKS, MAX_N, &n);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[RSS_OPT_SYNC] != NULL) {
        rc = parse_sync(&rss_spec, ca.val[RSS_OPT_SYNC], 0, &sync, &npolicies);
    }
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    parent = ca.val[RSS_OPT_DIR] != NULL ? ca.val[RSS_OPT_DIR] : parent;
    err = keel__bench_workdir(parent, &dir, &d);
    if (err < 0) {
        goto out;
    }
    state = malloc(strlen(dir) + sizeof("/state"));
    if (state == NULL) {
        err = keel__diag(&d, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    sprintf(state, "%s/state", dir);
    keel__bench_env(dir, &env);
    err = rss_run(state, n, sync, s, &d);
    if (err == KEEL_OK) {
        err = rss_report(s, RSS_SAMPLES, sync, n, &env, dir,
                         ca.val[RSS_OPT_JSON] != NULL);
        if (err < 0) {
            keel__diag(&d, err, "out of memory");
        }
    }
out:
    if (dir != NULL) {
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(state);
    free(dir);
    return finish(&rss_spec, rc, err, &d);
}

/* ------------------------------------------------------------ terminate */

/*
 * `terminate`: a vat holding N vatstore keys exits, and the run goes on
 * until its cleanup is done (kernel/crank.c K6). The vat is bench-local
 * (keel_kernel_options.resolve_vat):
 *   fill({"from":i,"n":m})  writes keys k<from..from+m-1, 10 digits, = "v"
 *   leave()                 exits
 *
 * untimed  open a fresh STATE, boot, fill in cranks of TERM_FILL_CRANK
 *          keys, close (so the keys are in LMDB, as in a long-lived
 *          state) and reopen
 *   timed  keel_kernel_send(leave) and keel_kernel_run until idle, durable
 *  untimed KB1: the vat is terminated and the run idle; then read the WAL
 *          records after the fill: how many, the largest payload
 */
#define TERM_DEFAULT_KEYS 1000000ull
#define TERM_FILL_CRANK   100000ull

static int filler_deliver(void *state, keel_syscall *sys,
                          const keel_delivery *d)
{
    keel_capdata none = {{"{}", 2}, NULL, 0};
    (void)state;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return 0;
    }
    if (strcmp(d->method, "leave") == 0) {
        return keel_syscall_exit(sys, 0, &none);
    }
    if (strcmp(d->method, "fill") != 0) {
        return 0; /* bootstrap */
    }
    json_t *b = json_loadb(d->args.body.ptr, d->args.body.len, 0, NULL);
    json_int_t from = json_integer_value(json_object_get(b, "from"));
    json_int_t n = json_integer_value(json_object_get(b, "n"));
    json_decref(b);
    int rc = KEEL_OK;
    for (json_int_t i = from; rc == KEEL_OK && i < from + n; i++) {
        char key[24];
        snprintf(key, sizeof(key), "k%010lld", (long long)i);
        rc = keel_syscall_vatstore_set(sys, key, "v", 1);
    }
    return rc;
}

static const keel_vat_ops filler_vat = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "bench_filler",
    .deliver = filler_deliver,
};

static const keel_vat_ops *filler_resolve(void *arg, const char *name)
{
    (void)arg;
    return strcmp(name, "bench_filler") == 0 ? &filler_vat : NULL;
}

enum {
    TERM_OPT_N,
    TERM_OPT_SYNC,
    TERM_OPT_RUNS,
    TERM_OPT_DIR,
    TERM_OPT_JSON,
    TERM_NOPTS
};

static const keel_cli_opt term_opts[] = {
    [TERM_OPT_N] = {"n", "KEYS"},     [TERM_OPT_SYNC] = {"sync", "POLICY"},
    [TERM_OPT_RUNS] = {"runs", "R"},  [TERM_OPT_DIR] = {"dir", "DIR"},
    [TERM_OPT_JSON] = {"json", NULL},
};

static const keel_cli_spec term_spec = {
    .command = "bench terminate",
    .help =
        "usage: keel bench terminate [--n KEYS] [--sync full|group|off]\n"
        "                            [--runs R] [--dir DIR] [--json]\n"
        "\n"
        "Fill one vat's vatstore with KEYS keys on a fresh state directory,\n"
        "checkpoint, then time its exit and the run until its cleanup is\n"
        "done (the termination transaction and every cleanup batch, until\n"
        "durable), interleaved with the lmdb-put baseline (KEYS bare LMDB\n"
        "puts in one transaction). Prints the median keys deleted per\n"
        "second against the baseline, then the records the termination\n"
        "wrote and the largest record's payload (the most of any run): the\n"
        "termination must stay in records of about 1 MiB, however much\n"
        "the vat holds.\n"
        "\n"
        "Options:\n"
        "  --n KEYS       vatstore keys, at least 1 (default 1000000)\n"
        "  --sync POLICY  full, group or off (default full)\n"
        "  --runs R       counted runs, 3 to 1000 (default 3)\n"
        "  --dir DIR      where to work (default $TMPDIR, else the\n"
        "                 current directory)\n"
        "  --json         two JSON lines: the result (workload terminate,\n"
        "                 median_per_s in keys/s, baseline lmdb-put, ratio,\n"
        "                 runs), then {workload: terminate-records, records,\n"
        "                 max_record_bytes}\n"
        "\n"
        "Exit status: 0 success; 1 the run failed; 2 usage error.\n",
    .opts = term_opts,
    .nopts = TERM_NOPTS,
};

typedef struct term_result {
    double seconds;
    uint64_t records;
    uint64_t max_payload;
} term_result;

/* The records after lsn in wal_dir: how many, the largest payload. */
static int term_scan(const char *state_dir, uint64_t lsn, term_result *r,
                     keel_diag *diag)
{
    keel_wal_reader *rd = NULL;
    keel_wal_record rec;
    char *path = keel__path_join(state_dir, "wal");
    if (path == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    int rc = keel_wal_reader_open(path, NULL, lsn + 1, &rd, diag);
    free(path);
    while (rc >= 0 && (rc = keel_wal_reader_next(rd, &rec, diag)) == 1) {
        if (rec.lsn > lsn) {
            r->records++;
            if (rec.payload.len > r->max_payload) {
                r->max_payload = rec.payload.len;
            }
        }
    }
    keel_wal_reader_close(rd);
    return rc < 0 ? rc : KEEL_OK;
}

static int term_open(const char *state_dir, int sync, keel_kernel **k,
                     keel_diag *diag)
{
    keel_kernel_options o;
    keel_kernel_options_init(&o);
    o.sync = sync;
    o.resolve_vat = filler_resolve;
    return keel_kernel_open(state_dir, &o, k, diag);
}

static int term_run(const char *state_dir, uint64_t n, int sync, term_result *r,
                    keel_diag *diag)
{
    keel_kernel *k = NULL;
    char kp[KEEL_VREF_MAX], args[64];
    keel_run_stats st = {0};
    uint64_t fill_lsn = 0;
    int rc = term_open(state_dir, sync, &k, diag);
    if (rc == KEEL_OK) {
        rc = keel_kernel_boot(k,
                              "{\"bootstrap\":\"filler\",\"vats\":{\"filler\":"
                              "{\"builtin\":\"bench_filler\"}}}",
                              NULL, diag);
    }
    for (uint64_t i = 0; rc == KEEL_OK && i < n; i += TERM_FILL_CRANK) {
        uint64_t m = n - i < TERM_FILL_CRANK ? n - i : TERM_FILL_CRANK;
        snprintf(args, sizeof(args), "{\"from\":%" PRIu64 ",\"n\":%" PRIu64 "}",
                 i, m);
        rc = keel_kernel_send(k, "filler", "fill", args, kp, diag);
        if (rc == KEEL_OK) {
            rc = keel_kernel_run(k, NULL, NULL, diag);
        }
    }
    if (rc == KEEL_OK) {
        rc = keel_kernel_close(k, diag);
        k = NULL;
    }
    if (rc == KEEL_OK) {
        rc = term_open(state_dir, sync, &k, diag);
    }
    if (rc == KEEL_OK) {
        char *s = NULL;
        rc = keel_kernel_status_json(k, &s, diag);
        json_t *j = rc == KEEL_OK ? json_loads(s, 0, NULL) : NULL;
        fill_lsn = (uint64_t)json_integer_value(json_object_get(j, "last_lsn"));
        json_decref(j);
        free(s);
    }
    if (rc == KEEL_OK) {
        double t0 = keel__bench_now();
        rc = keel_kernel_send(k, "filler", "leave", "{}", kp, diag);
        if (rc == KEEL_OK) {
            rc = keel_kernel_run(k, NULL, &st, diag);
        }
        r->seconds = keel__bench_now() - t0;
    }
    if (rc == KEEL_OK) {
        char *val = NULL;
        size_t len = 0;
        char *s = NULL;
        /* KB1: idle, the vat terminated and nothing of it readable */
        rc = keel_kernel_status_json(k, &s, diag);
        if (rc == KEEL_OK &&
            (!st.idle || strstr(s, "\"terminated\"") == NULL ||
             keel_kernel_vatstore_get(k, "filler", "k0000000000", &val, &len,
                                      diag) != 0)) {
            rc = keel__diag(diag, KEEL_EINVAL,
                            "terminate: the run ended without the vat "
                            "terminated and idle: %s",
                            s);
        }
        free(val);
        free(s);
    }
    int crc = keel_kernel_close(k, rc == KEEL_OK ? diag : NULL);
    rc = rc == KEEL_OK ? crc : rc;
    if (rc == KEEL_OK) {
        rc = term_scan(state_dir, fill_lsn, r, diag);
    }
    return rc;
}

/* One counted run of the candidate: a fresh STATE each time. */
typedef struct term_bench {
    const char *dir;
    uint64_t n;
    int sync;
    uint64_t seq;
    term_result most; /* records and largest payload of the worst run */
} term_bench;

static int term_series_run(void *ctx, double *seconds, keel_diag *diag)
{
    term_bench *b = ctx;
    term_result r = {0};
    char state[4096];
    snprintf(state, sizeof(state), "%s/state-%" PRIu64, b->dir, b->seq++);
    int rc = term_run(state, b->n, b->sync, &r, diag);
    if (rc == KEEL_OK) {
        *seconds = r.seconds;
        b->most.records =
            r.records > b->most.records ? r.records : b->most.records;
        b->most.max_payload = r.max_payload > b->most.max_payload
                                  ? r.max_payload
                                  : b->most.max_payload;
        rc = keel__bench_rmtree(state, diag);
    }
    return rc;
}

int keel__bench_terminate(int argc, char **argv)
{
    keel_cli_args ca;
    keel_bench_env env;
    keel_diag d = {0};
    char *dir = NULL;
    const char *parent = default_parent();
    uint64_t n = TERM_DEFAULT_KEYS, runs = KEEL_BENCH_MIN_RUNS;
    int sync = KEEL_SYNC_FULL;
    size_t npolicies = 0;
    int err = KEEL_OK;
    int json = 0;
    int rc = keel__cli_parse(&term_spec, argc, argv, &ca);
    if (rc == KEEL_CLI_CONTINUE && ca.val[TERM_OPT_N] != NULL) {
        rc = keel__cli_parse_u64(term_spec.command, "n", ca.val[TERM_OPT_N], 1,
                                 MAX_N, &n);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[TERM_OPT_RUNS] != NULL) {
        rc = keel__cli_parse_u64(term_spec.command, "runs",
                                 ca.val[TERM_OPT_RUNS], KEEL_BENCH_MIN_RUNS,
                                 KEEL_BENCH_MAX_RUNS, &runs);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[TERM_OPT_SYNC] != NULL) {
        rc =
            parse_sync(&term_spec, ca.val[TERM_OPT_SYNC], 0, &sync, &npolicies);
    }
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    json = ca.val[TERM_OPT_JSON] != NULL;
    parent = ca.val[TERM_OPT_DIR] != NULL ? ca.val[TERM_OPT_DIR] : parent;
    err = keel__bench_workdir(parent, &dir, &d);
    if (err < 0) {
        goto out;
    }
    keel__bench_env(dir, &env);
    keel__bench_report_header("terminate", &env, dir, runs, json);
    term_bench tb = {.dir = dir, .n = n, .sync = sync};
    keel_bench_lmdb lb = {.dir = dir, .n = n};
    keel_bench_series s[2] = {
        {"lmdb-put", keel__bench_lmdb_put, &lb, (double)n, NULL},
        {"keys", term_series_run, &tb, (double)n, NULL},
    };
    err = keel__bench_interleave(s, 2, runs, &d);
    if (err == KEEL_OK) {
        keel_bench_result r = {
            .workload = "terminate",
            .sync = keel_sync_name(sync),
            .n = n,
            .candidate = &s[1],
            .baseline = &s[0],
            .runs = runs,
        };
        err = keel__bench_report(&r, json);
    }
    if (err == KEEL_OK && json) {
        json_t *o =
            json_pack("{s:s, s:I, s:I}", "workload", "terminate-records",
                      "records", (json_int_t)tb.most.records,
                      "max_record_bytes", (json_int_t)tb.most.max_payload);
        char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        err = line != NULL ? KEEL_OK
                           : keel__diag(&d, KEEL_ENOMEM, "out of memory");
        if (line != NULL) {
            printf("%s\n", line);
        }
        free(line);
        json_decref(o);
    } else if (err == KEEL_OK) {
        printf("%" PRIu64 " vatstore keys: at most %" PRIu64
               " records per termination, the largest %" PRIu64
               " payload bytes\n",
               n, tb.most.records, tb.most.max_payload);
    }
    keel__bench_series_free(s, 2);
    fflush(stdout);
out:
    if (dir != NULL) {
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(dir);
    return finish(&term_spec, rc, err, &d);
}
