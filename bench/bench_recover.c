/*
 * bench/bench_recover.c — the `recover` workload: how fast a log of N
 * committed cranks replays into a fresh store (what keel_kernel_open does
 * after a crash), and how fast the recovery audit checks it, against bare
 * LMDB puts measured in the same run and directory; and the `audit`
 * workload: the audit series alone, against the same baseline.
 *
 * Setup (untimed, once): a pingpong kernel of N/2 rounds (about N cranks)
 * runs with sync=off in a fresh STATE and is closed; its log is the input.
 *
 * Series, interleaved round by round after one warm-up (bench.h B1, B2):
 *   lmdb-put  one LMDB write transaction of N puts (one per crank) of
 *             64 B values under pseudo-random 16-byte keys, MDB_NOSYNC,
 *             into a fresh environment, timed from txn begin to commit: the
 *             cost of putting one key per crank, with no keel code (as
 *             bench_kernel.c's baseline of the same name).
 *   replay    a fresh store (keel__store_open, untimed) of the log's kernel
 *             id; timed: keel__k_replay() of the whole log (what
 *             keel_kernel_open runs: apply every record, checkpointing
 *             every 8 MiB pending), then a final checkpoint (a full LMDB
 *             sync). Counted in cranks/s, and in records/s and MB/s of
 *             (uncompressed) payload.
 *   audit     keel_audit() of STATE from genesis: read, check every
 *             transaction, compare with the store. Counted in
 *             transactions/s. `bench audit` runs only this series and
 *             the baseline, and reports it as workload "audit".
 *
 * Invariants:
 *   RB1 A replay counts only if the store ends at the log's last LSN; an
 *       audit only if it found no violation.
 *   RB2 The baseline does the same number of puts as the log has cranks,
 *       so both series take comparable time.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "keel/kernel.h"
#include "keel/recovery.h"
#include "keel/wal.h"

#include "bench/bench.h"
#include "common/diag.h"
#include "kernel/kernel_internal.h"
#include "store/store.h"
#include "tools/cli.h"

#define DEFAULT_N    1000000ull
#define DEFAULT_RUNS 5u
#define MIN_N        10ull
#define MAX_N        100000000ull

enum { OPT_N, OPT_RUNS, OPT_DIR, OPT_JSON, NOPTS };

static const keel_cli_opt opts[NOPTS] = {
    [OPT_N] = {"n", "N"},
    [OPT_RUNS] = {"runs", "R"},
    [OPT_DIR] = {"dir", "DIR"},
    [OPT_JSON] = {"json", NULL},
};

static const keel_cli_spec recover_spec = {
    .command = "bench recover",
    .help =
        "usage: keel bench recover [--n N] [--runs R] [--dir DIR] [--json]\n"
        "\n"
        "Build a log of about N committed cranks (a pingpong kernel of N/2\n"
        "rounds, sync=off; untimed), then measure, interleaved with a\n"
        "baseline in the same run and directory, one warm-up round first:\n"
        "  replay    the log replayed into a fresh store as recovery does\n"
        "            after a crash (checkpointing every 8 MiB pending, and\n"
        "            at the end with a full LMDB sync): cranks/s,\n"
        "            records/s and MB/s of payload\n"
        "  audit     `keel recover --check`'s audit of the whole log:\n"
        "            transactions/s\n"
        "  lmdb-put  N 64 B puts in one LMDB write transaction, MDB_NOSYNC:\n"
        "            ratio = cranks/s (or transactions/s) / puts/s\n"
        "\n"
        "Options:\n"
        "  --n N      cranks in the log, 10 to 100000000 (default 1000000)\n"
        "  --runs R   counted runs, 3 to 1000 (default 5)\n"
        "  --dir DIR  where to work: a fresh keel-bench-XXXXXX directory is\n"
        "             made in DIR and removed afterwards (default $TMPDIR,\n"
        "             else the current directory)\n"
        "  --json     one JSON object per result: workload, sync, n,\n"
        "             candidate (replay: cranks; audit: transactions),\n"
        "             median_per_s, min_per_s, max_per_s, baseline,\n"
        "             baseline_per_s, ratio, the metrics' <name>_per_s\n"
        "             (replay: records_per_s, payload_mb_per_s), runs\n"
        "\n"
        "Exit status: 0 success; 1 a run failed; 2 usage error.\n",
    .opts = opts,
    .nopts = NOPTS,
};

static const keel_cli_spec audit_spec = {
    .command = "bench audit",
    .help =
        "usage: keel bench audit [--n N] [--runs R] [--dir DIR] [--json]\n"
        "\n"
        "Build a log of about N committed cranks (a pingpong kernel of N/2\n"
        "rounds, sync=off; untimed), then measure, interleaved with a\n"
        "baseline in the same run and directory, one warm-up round first:\n"
        "  audit     `keel recover --check`'s audit of the whole log:\n"
        "            transactions/s\n"
        "  lmdb-put  N 64 B puts in one LMDB write transaction, MDB_NOSYNC:\n"
        "            ratio = transactions/s / puts/s\n"
        "\n"
        "Options:\n"
        "  --n N      cranks in the log, 10 to 100000000 (default 1000000)\n"
        "  --runs R   counted runs, 3 to 1000 (default 5)\n"
        "  --dir DIR  where to work: a fresh keel-bench-XXXXXX directory is\n"
        "             made in DIR and removed afterwards (default $TMPDIR,\n"
        "             else the current directory)\n"
        "  --json     one JSON object: workload, sync, n (cranks in the log),\n"
        "             candidate (transactions), median_per_s, min_per_s,\n"
        "             max_per_s, baseline, baseline_per_s, ratio,\n"
        "             transactions_per_s, runs\n"
        "\n"
        "Exit status: 0 success; 1 a run failed; 2 usage error.\n",
    .opts = opts,
    .nopts = NOPTS,
};

/* What the setup built. */
typedef struct input {
    const char *dir; /* the work directory */
    char state[4096];
    uint64_t kernel_id;
    uint64_t last_lsn;
    uint64_t records;
    uint64_t cranks;
    uint64_t payload_bytes;
} input;

/* Build the log (untimed): a pingpong of n/2 rounds, sync=off. */
static int build_log(input *in, uint64_t n, keel_diag *diag)
{
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_run_stats st;
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    char wal[4200];
    json_t *cfg =
        json_pack("{s:s, s:{s:{s:s, s:{s:s, s:I}}, s:{s:s, s:{s:s}}}}",
                  "bootstrap", "alice", "vats", "alice", "builtin", "pingpong",
                  "params", "role", "alice", "rounds", (json_int_t)(n / 2),
                  "bob", "builtin", "pingpong", "params", "role", "bob");
    char *text = cfg != NULL ? json_dumps(cfg, JSON_COMPACT) : NULL;
    int rc =
        text != NULL ? KEEL_OK : keel__diag(diag, KEEL_ENOMEM, "out of memory");
    json_decref(cfg);
    snprintf(in->state, sizeof(in->state), "%s/state", in->dir);
    keel_kernel_options_init(&o);
    o.sync = KEEL_SYNC_OFF;
    if (rc == KEEL_OK) {
        rc = keel_kernel_open(in->state, &o, &k, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel_kernel_boot(k, text, NULL, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel_kernel_run(k, NULL, &st, diag);
    }
    if (rc == KEEL_OK && !st.idle) {
        rc = keel__diag(diag, KEEL_EINVAL, "the pingpong did not finish");
    }
    if (k != NULL) {
        int crc = keel_kernel_close(k, rc == KEEL_OK ? diag : NULL);
        rc = rc == KEEL_OK ? crc : rc;
    }
    free(text);
    snprintf(wal, sizeof(wal), "%s/wal", in->state);
    if (rc == KEEL_OK) {
        rc = keel_wal_reader_open(wal, NULL, 0, &r, diag);
    }
    while (rc >= 0 && (rc = keel_wal_reader_next(r, &rec, diag)) == 1) {
        in->records++;
        in->cranks += rec.kind == KEEL_WAL_CRANK;
        in->payload_bytes += rec.payload.len;
        in->last_lsn = rec.lsn;
    }
    if (rc == 0) {
        in->kernel_id = keel_wal_reader_kernel_id(r);
    }
    keel_wal_reader_close(r);
    return rc;
}

/* ------------------------------------------------------------- replay */

typedef struct replay_bench {
    const input *in;
    uint64_t seq;
} replay_bench;

static int run_replay(void *ctx, double *seconds, keel_diag *diag)
{
    replay_bench *b = ctx;
    const input *in = b->in;
    keel__store_options so;
    keel__store *s = NULL;
    char dir[4200], wal[4200];
    snprintf(dir, sizeof(dir), "%s/replay-%" PRIu64, in->dir, b->seq++);
    snprintf(wal, sizeof(wal), "%s/wal", in->state);
    keel__store_options_init(&so);
    int rc = keel__store_open(dir, &so, in->kernel_id, &s, diag);
    if (rc < 0) {
        goto out;
    }
    double t0 = keel__bench_now();
    uint64_t n = 0, bytes = 0;
    rc = keel__k_replay(s, wal, NULL, in->last_lsn, &n, &bytes, diag);
    if (rc == KEEL_OK) {
        rc = keel__store_checkpoint(s, diag);
    }
    *seconds = keel__bench_now() - t0;
    if (rc == KEEL_OK && keel__store_checkpoint_lsn(s) != in->last_lsn) {
        rc = keel__diag(diag, KEEL_EINVAL, /* RB1 */
                        "replay ended at LSN %" PRIu64 ", the log at %" PRIu64,
                        keel__store_checkpoint_lsn(s), in->last_lsn);
    }
out:
    keel__store_close(s);
    if (rc == KEEL_OK) {
        rc = keel__bench_rmtree(dir, diag);
    }
    return rc;
}

/* -------------------------------------------------------------- audit */

static int run_audit(void *ctx, double *seconds, keel_diag *diag)
{
    const input *in = ctx;
    keel_audit_report rep;
    double t0 = keel__bench_now();
    int rc = keel_audit(in->state, NULL, &rep, diag);
    *seconds = keel__bench_now() - t0;
    if (rc == KEEL_OK && rep.violations > 0) { /* RB1 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "the audit found a violation at LSN %" PRIu64 ": %s",
                        rep.violation_lsn, rep.violation);
    }
    return rc;
}

/* ------------------------------------------------------------ the run */

/* The rates of series s times factor: another count of the same runs. */
static double *rates(const keel_bench_series *s, size_t runs, double factor)
{
    double *v = calloc(runs, sizeof(*v));
    for (size_t i = 0; v != NULL && i < runs; i++) {
        v[i] = s->per_s[i] * factor;
    }
    return v;
}

/* The audit series alone (`bench audit`) against the baseline. */
static int measure_audit(input *in, uint64_t runs, int json, keel_diag *diag)
{
    keel_bench_lmdb lb = {.dir = in->dir, .n = in->cranks};
    keel_bench_series s[2] = {
        {"lmdb-put", keel__bench_lmdb_put, &lb, (double)in->cranks, NULL},
        {"transactions", run_audit, in, (double)in->records, NULL},
    };
    int rc = keel__bench_interleave(s, 2, runs, diag);
    if (rc == KEEL_OK) {
        keel_bench_metric m[1] = {{"transactions", s[1].per_s}};
        keel_bench_result r = {
            .workload = "audit",
            .sync = "-",
            .n = in->cranks,
            .candidate = &s[1],
            .baseline = &s[0],
            .runs = runs,
            .metrics = m,
            .nmetrics = 1,
        };
        rc = keel__bench_report(&r, json);
        if (rc < 0) {
            keel__diag(diag, rc, "out of memory");
        }
    }
    keel__bench_series_free(s, 2);
    return rc;
}

static int measure(input *in, uint64_t runs, int json, keel_diag *diag)
{
    replay_bench rb = {.in = in};
    keel_bench_lmdb lb = {.dir = in->dir, .n = in->cranks};
    double *records = NULL, *mb = NULL;
    keel_bench_series s[3] = {
        {"lmdb-put", keel__bench_lmdb_put, &lb, (double)in->cranks, NULL},
        {"cranks", run_replay, &rb, (double)in->cranks, NULL},
        {"transactions", run_audit, in, (double)in->records, NULL},
    };
    int rc = keel__bench_interleave(s, 3, runs, diag);
    if (rc < 0) {
        goto out;
    }
    records = rates(&s[1], runs, (double)in->records / (double)in->cranks);
    mb = rates(&s[1], runs,
               (double)in->payload_bytes / 1e6 / (double)in->cranks);
    if (records == NULL || mb == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    keel_bench_metric m[3] = {
        {"cranks", s[1].per_s}, {"records", records}, {"payload_mb", mb}};
    keel_bench_result r = {
        .workload = "recover",
        .sync = "-",
        .n = in->cranks,
        .candidate = &s[1],
        .baseline = &s[0],
        .runs = runs,
        .metrics = m,
        .nmetrics = 3,
    };
    rc = keel__bench_report(&r, json);
    keel_bench_metric am[1] = {{"transactions", s[2].per_s}};
    r.candidate = &s[2];
    r.metrics = am;
    r.nmetrics = 1;
    r.workload = "recover-audit";
    if (rc == KEEL_OK) {
        rc = keel__bench_report(&r, json);
    }
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
    }
out:
    free(records);
    free(mb);
    keel__bench_series_free(s, 3);
    return rc;
}

/* `bench recover` (audit_only 0) and `bench audit` (1). */
static int bench_main(const keel_cli_spec *sp, int audit_only, int argc,
                      char **argv)
{
    const keel_cli_spec spec = *sp;
    keel_cli_args a;
    keel_bench_env env;
    keel_diag d = {0};
    input in;
    char *dir = NULL;
    uint64_t n = DEFAULT_N, runs = DEFAULT_RUNS;
    const char *parent = getenv("TMPDIR");
    int err = KEEL_OK;
    memset(&in, 0, sizeof(in));
    int rc = keel__cli_parse(&spec, argc, argv, &a);
    if (rc == KEEL_CLI_CONTINUE && a.val[OPT_N] != NULL) {
        rc = keel__cli_parse_u64(spec.command, "n", a.val[OPT_N], MIN_N, MAX_N,
                                 &n);
    }
    if (rc == KEEL_CLI_CONTINUE && a.val[OPT_RUNS] != NULL) {
        rc = keel__cli_parse_u64(spec.command, "runs", a.val[OPT_RUNS],
                                 KEEL_BENCH_MIN_RUNS, KEEL_BENCH_MAX_RUNS,
                                 &runs);
    }
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[OPT_DIR] != NULL) {
        parent = a.val[OPT_DIR];
    } else if (parent == NULL || parent[0] == '\0') {
        parent = ".";
    }
    err = keel__bench_workdir(parent, &dir, &d);
    if (err < 0) {
        goto out;
    }
    in.dir = dir;
    err = build_log(&in, n, &d);
    if (err < 0) {
        goto out;
    }
    keel__bench_env(dir, &env);
    if (a.val[OPT_JSON] == NULL) {
        printf("%s: a pingpong log of %" PRIu64 " records (%" PRIu64
               " cranks), %.1f MB of payload, %.0f bytes per record\n",
               audit_only ? "audit" : "recover", in.records, in.cranks,
               (double)in.payload_bytes / 1e6,
               (double)in.payload_bytes / (double)in.records);
    }
    keel__bench_report_header(audit_only ? "audit" : "recover", &env, dir, runs,
                              a.val[OPT_JSON] != NULL);
    err = audit_only ? measure_audit(&in, runs, a.val[OPT_JSON] != NULL, &d)
                     : measure(&in, runs, a.val[OPT_JSON] != NULL, &d);
out:
    if (dir != NULL) {
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(dir);
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "keel: %s: %s\n", spec.command,
                d.msg[0] != '\0' ? d.msg : keel_strerror(err));
        rc = KEEL_CLI_FAIL;
    } else if (rc == KEEL_CLI_CONTINUE) {
        rc = KEEL_CLI_OK;
    }
    return rc;
}

int keel__bench_recover(int argc, char **argv)
{
    return bench_main(&recover_spec, 0, argc, argv);
}

int keel__bench_audit(int argc, char **argv)
{
    return bench_main(&audit_spec, 1, argc, argv);
}
