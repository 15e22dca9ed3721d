/*
 * bench/bench_wal.c — the `wal-append` workload: N records of SIZE bytes
 * appended to a fresh WAL under each sync policy, against the storage
 * baselines of WORKLOADS.md measured in the same run and directory.
 *
 * Series (each run creates its own fresh file or log, B3; the two
 * baselines are bench.c's, shared with the kernel workloads):
 *   fdatasync  plain POSIX: pwrite SIZE bytes at the end of one file, then
 *              fdatasync, N times. The fastest strictly durable commit this
 *              disk allows: the baseline of sync=full.
 *   seqwrite   plain POSIX: N*SIZE bytes in sequential 1 MiB pwrites, then
 *              one fdatasync. The disk's streaming bandwidth, reported in
 *              bytes/s and as records/s at SIZE: the baseline of sync=group
 *              and sync=off.
 *   wal        keel_wal_open (untimed), N x keel_wal_append, keel_wal_sync
 *              (timed: a run ends when every record is durable, or for
 *              sync=off written and synced once), keel_wal_close (untimed).
 *
 * Invariants:
 *   A1  Baseline and candidate write the same number of payload bytes per
 *       run (N * SIZE), of the same pseudo-random kind, in the same
 *       directory.
 *   A2  The baselines use no keel code at all, so a bug or a regression in
 *       keel cannot move them.
 *   A3  Payload bytes are pseudo-random (fixed seed): zstd, which the WAL
 *       tries on payloads of 4 KiB and more, finds nothing to save, so the
 *       figures measure the write path and not how compressible a made-up
 *       payload happens to be.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

#include "bench/bench.h"
#include "common/diag.h"
#include "tools/cli.h"

#define DEFAULT_SIZE 256u
#define DEFAULT_RUNS 5u
/* sized so that the default run (all three policies) stays well under a
 * minute on a disk that takes a few milliseconds per fdatasync: sync=full
 * makes 2 x 6 x N of them (two series, a warm-up and five rounds) */
#define DEFAULT_N_FULL    1000u
#define DEFAULT_N_BATCHED 200000u
#define MAX_N             1000000000ull
#define MAX_RUN_BYTES     (1ull << 40)

enum { OPT_N, OPT_SIZE, OPT_SYNC, OPT_RUNS, OPT_DIR, OPT_JSON, NOPTS };

static const keel_cli_opt opts[NOPTS] = {
    [OPT_N] = {"n", "N"},
    [OPT_SIZE] = {"size", "BYTES"},
    [OPT_SYNC] = {"sync", "POLICY"},
    [OPT_RUNS] = {"runs", "R"},
    [OPT_DIR] = {"dir", "DIR"},
    [OPT_JSON] = {"json", NULL},
};

static const keel_cli_spec spec = {
    .command = "bench wal-append",
    .help =
        "usage: keel bench wal-append [--n N] [--size BYTES]\n"
        "                             [--sync full|group|off|all] [--runs R]\n"
        "                             [--dir DIR] [--json]\n"
        "\n"
        "Append N records of SIZE bytes to a fresh write-ahead log, under\n"
        "each sync policy, and compare with baselines measured in the same\n"
        "run and directory, using plain POSIX calls:\n"
        "  fdatasync  append SIZE bytes + fdatasync, N times, to one file\n"
        "             (the baseline of sync=full)\n"
        "  seqwrite   N*SIZE bytes in 1 MiB writes + one fdatasync, shown\n"
        "             in MB/s and as records/s at SIZE (the baseline of\n"
        "             sync=group and sync=off)\n"
        "A WAL run is timed from its first append until keel_wal_sync\n"
        "returns. One warm-up round, then R rounds alternating baseline and\n"
        "WAL. Each line reports median, min and max records/s, and\n"
        "ratio = WAL median / baseline median.\n"
        "\n"
        "Options:\n"
        "  --n N          records per run (default: 1000 for full, 200000\n"
        "                 for group and off); applies to every policy\n"
        "  --size BYTES   payload bytes per record, at most 64 MiB (default\n"
        "                 256)\n"
        "  --sync POLICY  full, group, off, or all (default all)\n"
        "  --runs R       counted runs, 3 to 1000 (default 5)\n"
        "  --dir DIR      where to work: a fresh keel-bench-XXXXXX directory\n"
        "                 is made in DIR and removed afterwards (default\n"
        "                 $TMPDIR, else the current directory); pick the\n"
        "                 filesystem you want measured\n"
        "  --json         one JSON object per policy: workload, sync, n,\n"
        "                 size, median_per_s, min_per_s, max_per_s,\n"
        "                 baseline, baseline_per_s, ratio, and runs: one\n"
        "                 {per_s, baseline_per_s} per counted round\n"
        "\n"
        "Exit status: 0 success; 1 a run failed; 2 usage error.\n",
    .opts = opts,
    .nopts = NOPTS,
    .min_pos = 0,
    .max_pos = 0,
    .pos = "",
};

/* The state every series of one policy shares. */
typedef struct wal_bench {
    /* dir, n, size, payload, chunk, seq: the baselines read the same (A1) */
    keel_bench_file f;
    int sync; /* enum keel_sync of the WAL series */
} wal_bench;

static int run_wal(void *ctx, double *seconds, keel_diag *diag)
{
    wal_bench *b = ctx;
    keel_wal *w = NULL;
    keel_wal_options o;
    char path[4096];
    int rc = KEEL_OK;
    int n = snprintf(path, sizeof(path), "%s/wal-%llu", b->f.dir,
                     (unsigned long long)b->f.seq++);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: path too long", b->f.dir);
        goto out;
    }
    keel_wal_options_init(&o);
    o.sync = b->sync;
    rc = keel_wal_open(path, &o, &w, NULL, diag);
    if (rc < 0) {
        goto out;
    }
    double t0 = keel__bench_now();
    for (uint64_t i = 0; i < b->f.n; i++) {
        rc = keel_wal_append(w, KEEL_WAL_CRANK, i + 1, b->f.payload, b->f.size,
                             NULL, diag);
        if (rc < 0) {
            goto out;
        }
    }
    rc = keel_wal_sync(w, diag);
    if (rc < 0) {
        goto out;
    }
    *seconds = keel__bench_now() - t0;
out:
    if (w != NULL) {
        int crc = keel_wal_close(w, rc == KEEL_OK ? diag : NULL);
        rc = rc == KEEL_OK ? crc : rc;
    }
    if (rc == KEEL_OK) {
        rc = keel__bench_rmtree(path, diag);
    }
    return rc;
}

/* The parsed command line. */
typedef struct wal_args {
    uint64_t n; /* 0: the policy's default */
    uint64_t size;
    uint64_t runs;
    int policies[3]; /* enum keel_sync, in the order run */
    size_t npolicies;
    const char *parent; /* where the work directory is made */
    int json;
} wal_args;

static int parse_sync(const char *s, wal_args *a)
{
    int rc = KEEL_CLI_CONTINUE;
    int p = 0;
    if (strcmp(s, "all") == 0) {
        a->policies[0] = KEEL_SYNC_FULL;
        a->policies[1] = KEEL_SYNC_GROUP;
        a->policies[2] = KEEL_SYNC_OFF;
        a->npolicies = 3;
    } else if (keel_sync_parse(s, &p) == KEEL_OK) {
        a->policies[0] = p;
        a->npolicies = 1;
    } else {
        rc = keel__cli_usage_error(spec.command,
                                   "--sync: '%s' is not full, group, off or "
                                   "all",
                                   s);
    }
    return rc;
}

static int parse_args(int argc, char **argv, wal_args *a)
{
    keel_cli_args ca;
    const char *tmp = getenv("TMPDIR");
    memset(a, 0, sizeof(*a));
    a->size = DEFAULT_SIZE;
    a->runs = DEFAULT_RUNS;
    a->parent = tmp != NULL && tmp[0] != '\0' ? tmp : ".";
    int rc = keel__cli_parse(&spec, argc, argv, &ca);
    if (rc == KEEL_CLI_CONTINUE && ca.val[OPT_N] != NULL) {
        rc = keel__cli_parse_u64(spec.command, "n", ca.val[OPT_N], 1, MAX_N,
                                 &a->n);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[OPT_SIZE] != NULL) {
        rc = keel__cli_parse_u64(spec.command, "size", ca.val[OPT_SIZE], 1,
                                 KEEL_WAL_MAX_PAYLOAD_BYTES, &a->size);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[OPT_RUNS] != NULL) {
        rc = keel__cli_parse_u64(spec.command, "runs", ca.val[OPT_RUNS],
                                 KEEL_BENCH_MIN_RUNS, KEEL_BENCH_MAX_RUNS,
                                 &a->runs);
    }
    if (rc == KEEL_CLI_CONTINUE) {
        rc = parse_sync(ca.val[OPT_SYNC] != NULL ? ca.val[OPT_SYNC] : "all", a);
    }
    /* n and size are each bounded, so their product cannot overflow */
    if (rc == KEEL_CLI_CONTINUE &&
        (a->n > 0 ? a->n : DEFAULT_N_BATCHED) * a->size > MAX_RUN_BYTES) {
        rc = keel__cli_usage_error(spec.command,
                                   "--n x --size is more than 1 TiB per run");
    }
    if (rc == KEEL_CLI_CONTINUE) {
        a->parent = ca.val[OPT_DIR] != NULL ? ca.val[OPT_DIR] : a->parent;
        a->json = ca.val[OPT_JSON] != NULL;
    }
    return rc;
}

/* Measure one policy: its baseline and the WAL, interleaved, and report. */
static int bench_policy(const wal_args *a, wal_bench *b, int policy,
                        keel_diag *diag)
{
    b->sync = policy;
    b->f.n = a->n > 0 ? a->n
                      : (policy == KEEL_SYNC_FULL ? DEFAULT_N_FULL
                                                  : DEFAULT_N_BATCHED);
    keel_bench_series s[2] = {
        {"fdatasync", keel__bench_fdatasync, &b->f, (double)b->f.n, NULL},
        {"wal", run_wal, b, (double)b->f.n, NULL},
    };
    double bytes_per_unit = 0;
    if (policy != KEEL_SYNC_FULL) {
        s[0].name = "seqwrite";
        s[0].run = keel__bench_seqwrite;
        bytes_per_unit = (double)b->f.size;
    }
    int rc = keel__bench_interleave(s, 2, a->runs, diag);
    if (rc < 0) {
        goto out;
    }
    keel_bench_result r = {
        .workload = "wal-append",
        .sync = keel_sync_name(policy),
        .n = b->f.n,
        .size = b->f.size,
        .candidate = &s[1],
        .baseline = &s[0],
        .runs = a->runs,
        .baseline_bytes_per_unit = bytes_per_unit,
    };
    rc = keel__bench_report(&r, a->json);
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
    }
out:
    keel__bench_series_free(s, 2);
    return rc;
}

int keel__bench_wal_append(int argc, char **argv)
{
    wal_args a;
    wal_bench b;
    keel_bench_env env;
    keel_diag d = {0};
    char *dir = NULL;
    uint8_t *payload = NULL;
    uint8_t *chunk = NULL;
    int err = KEEL_OK;
    int rc = parse_args(argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    payload = malloc(a.size);
    chunk = malloc(KEEL_BENCH_CHUNK_BYTES);
    if (payload == NULL || chunk == NULL) {
        err = keel__diag(&d, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    keel__bench_fill_random(payload, a.size);
    keel__bench_fill_random(chunk, KEEL_BENCH_CHUNK_BYTES);
    err = keel__bench_workdir(a.parent, &dir, &d);
    if (err < 0) {
        goto out;
    }
    memset(&b, 0, sizeof(b));
    b.f.dir = dir;
    b.f.size = a.size;
    b.f.payload = payload;
    b.f.chunk = chunk;
    keel__bench_env(dir, &env);
    keel__bench_report_header("wal-append", &env, dir, a.runs, a.json);
    for (size_t i = 0; i < a.npolicies && err == KEEL_OK; i++) {
        err = bench_policy(&a, &b, a.policies[i], &d);
    }
out:
    if (dir != NULL) {
        /* B5: the directory is ours; a failed run leaves files in it */
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "keel: %s: %s\n", spec.command,
                d.msg[0] != '\0' ? d.msg : keel_strerror(err));
        rc = KEEL_CLI_FAIL;
    } else if (rc == KEEL_CLI_CONTINUE) {
        rc = KEEL_CLI_OK;
    }
    free(dir);
    free(chunk);
    free(payload);
    return rc;
}
