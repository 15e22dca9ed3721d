/*
 * bench/bench.h — the machinery every `keel bench` workload shares: a
 * working directory, the clock, running baselines and a candidate
 * interleaved, medians, the environment line (CPU, filesystem, build) and
 * the human and JSON reports.
 *
 * Invariants:
 *   B1  Baselines and candidate run in one process, in one directory, on one
 *       build, interleaved round by round (baseline, candidate, baseline,
 *       candidate, ...), so drift in the machine hits them alike.
 *   B2  One warm-up round runs every series first and is never counted.
 *   B3  A series times only what it measures, with CLOCK_MONOTONIC: setup
 *       (creating files, opening the log) and cleanup are outside the clock.
 *   B4  A result is the median rate with min and max over the counted runs;
 *       the ratio is candidate median / baseline median, never a mean.
 *   B5  A benchmark deletes only what it created: it works inside a fresh
 *       mkdtemp() directory and removes that directory at the end.
 *
 * Baselines that several workloads share (fdatasync, seqwrite) are here too,
 * so each workload measures the same thing by the same code.
 *
 * Calling sequence of a workload (see bench_wal.c):
 *     keel__bench_workdir(parent, &dir, &d);
 *     keel__bench_env(dir, &env); keel__bench_report_header(..., &env, ...);
 *     keel_bench_series s[2] = {baseline, candidate};
 *     keel__bench_interleave(s, 2, runs, &d);
 *     keel__bench_report(&result, json);
 *     keel__bench_series_free(s, 2); keel__bench_rmtree(dir, &d);
 */
#ifndef KEEL_BENCH_BENCH_H
#define KEEL_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

#define KEEL_BENCH_MIN_RUNS 3
#define KEEL_BENCH_MAX_RUNS 1000

/* One thing that is measured: a baseline or the candidate. */
typedef struct keel_bench_series {
    const char *name; /* "fdatasync", "seqwrite", "wal" */
    /*
     * Do one run; set *seconds to the time of its measured part only (B3).
     * @return KEEL_OK or a KEEL_E* code with diag filled.
     */
    int (*run)(void *ctx, double *seconds, keel_diag *diag);
    void *ctx;
    double units;  /* units (records) one run processes: rate = units / s */
    double *per_s; /* set by keel__bench_interleave(): the rate of each
                      counted run, in order; freed by
                      keel__bench_series_free() */
} keel_bench_series;

/* A further rate of the candidate, reported beside it: kernel workloads
 * count cranks, transactions, deliveries and round trips of one run. */
typedef struct keel_bench_metric {
    const char *name;    /* "deliveries": JSON key "deliveries_per_s" */
    const double *per_s; /* the rate of each counted run, in order */
} keel_bench_metric;

/* Median, min and max of a set of rates. */
typedef struct keel_bench_stats {
    double median;
    double min;
    double max;
} keel_bench_stats;

/* Where and on what a benchmark runs, for the header line. */
typedef struct keel_bench_env {
    char cpu[160];  /* "model name" of /proc/cpuinfo, and the CPU count */
    char fs[32];    /* "ext4", "xfs", "btrfs", "tmpfs", "overlay" or 0x... */
    char build[96]; /* "optimized, NDEBUG", ... */
} keel_bench_env;

/* One result line: the candidate against one baseline. */
typedef struct keel_bench_result {
    const char *workload; /* "wal-append" */
    const char *sync;     /* the sync policy name */
    uint64_t n;           /* records (rounds, messages) per run */
    uint64_t size;        /* bytes per record; 0: not shown */
    const keel_bench_series *candidate;
    const keel_bench_series *baseline;
    size_t runs; /* counted runs in both series */
    /* > 0: the baseline moves this many bytes per unit, and its row also
     * shows bytes/s (seqwrite) */
    double baseline_bytes_per_unit;
    /* nmetrics > 0: more rates of the candidate, each a row of its own
     * (except one named like the candidate) and a "<name>_per_s" JSON key;
     * the JSON line then also names the candidate */
    const keel_bench_metric *metrics;
    size_t nmetrics;
} keel_bench_result;

/*
 * The plain-POSIX file baselines, run with a keel_bench_file as ctx. They
 * use no keel code, so a bug or a regression in keel cannot move them.
 *   fdatasync  append size bytes + fdatasync, n times, to one fresh file:
 *              the fastest strictly durable commit on this disk
 *   seqwrite   n*size bytes in KEEL_BENCH_CHUNK_BYTES writes + one
 *              fdatasync: the disk's streaming bandwidth
 * Each run creates `<dir>/<name>-<seq>.dat` (setup, untimed) and removes
 * it afterwards.
 */
#define KEEL_BENCH_CHUNK_BYTES (1024u * 1024u)

typedef struct keel_bench_file {
    const char *dir;        /* the work directory */
    uint64_t n;             /* records per run */
    uint64_t size;          /* bytes per record */
    const uint8_t *payload; /* size bytes */
    const uint8_t *chunk;   /* KEEL_BENCH_CHUNK_BYTES (seqwrite only) */
    uint64_t seq;           /* numbers each run's fresh file; a workload
                               may use it for its own names too */
} keel_bench_file;

int keel__bench_fdatasync(void *ctx, double *seconds, keel_diag *diag);
int keel__bench_seqwrite(void *ctx, double *seconds, keel_diag *diag);

/*
 * The bare-LMDB baseline, run with a keel_bench_lmdb as ctx: one write
 * transaction of n puts of KEEL_BENCH_PUT_VALUE_BYTES under pseudo-random
 * KEEL_BENCH_PUT_KEY_BYTES keys (all over the tree, as a crank's writes
 * are), MDB_NOSYNC, into a fresh environment `<dir>/lmdb-<seq>`, timed
 * from begin to commit: what one key per crank costs with no keel code.
 */
#define KEEL_BENCH_PUT_KEY_BYTES   16u
#define KEEL_BENCH_PUT_VALUE_BYTES 64u
typedef struct keel_bench_lmdb {
    const char *dir;
    uint64_t n; /* puts per run */
    uint64_t seq;
} keel_bench_lmdb;
int keel__bench_lmdb_put(void *ctx, double *seconds, keel_diag *diag);

/* Fill p[0..len) with pseudo-random bytes from a fixed seed: runs are
 * comparable, and zstd finds nothing to save in them. */
void keel__bench_fill_random(uint8_t *p, size_t len);

/* CLOCK_MONOTONIC, in seconds (B3). */
double keel__bench_now(void);

/*
 * Run a warm-up round (B2), then `runs` rounds, each running s[0..ns) once
 * in order (B1); fill every s[i].per_s with the rates of the counted runs.
 * @return KEEL_OK, KEEL_ENOMEM, or the first error of a run (diag filled;
 *         the rounds stop there). Call keel__bench_series_free() either way.
 */
int keel__bench_interleave(keel_bench_series *s, size_t ns, size_t runs,
                           keel_diag *diag);
void keel__bench_series_free(keel_bench_series *s, size_t ns);

/* Median (mean of the middle two for an even count), min and max of
 * v[0..n), n >= 1. */
void keel__bench_stats(const double *v, size_t n, keel_bench_stats *out);

/*
 * Make a fresh directory `<parent>/keel-bench-XXXXXX` (B5); parent NULL:
 * $TMPDIR, else the current directory.
 * @param[out] out  its path, malloc'd: the caller frees it.
 * @return KEEL_OK or the translated errno of mkdtemp (diag names parent).
 */
int keel__bench_workdir(const char *parent, char **out, keel_diag *diag);
/* Remove path and everything under it. @return KEEL_OK or the first error. */
int keel__bench_rmtree(const char *path, keel_diag *diag);
/* Bytes of the regular files directly in dir: their sizes, or with
 * on_disk their allocated blocks (0 if dir cannot be read). */
uint64_t keel__bench_dir_bytes(const char *dir, int on_disk);

/* Describe the machine, the filesystem holding dir, and this build. */
void keel__bench_env(const char *dir, keel_bench_env *env);

/*
 * Human output: the environment line and the table's column names.
 * JSON output has neither: every line is one result object.
 */
void keel__bench_report_header(const char *workload, const keel_bench_env *env,
                               const char *dir, size_t runs, int json);
/*
 * Print a result: a row for the baseline and one for the candidate (and
 * one per metric), or one JSON line {"workload", "sync", "n", "size",
 * "median_per_s", "min_per_s", "max_per_s", "baseline", "baseline_per_s",
 * "ratio", "runs": [{"per_s", "baseline_per_s"}, ...]}; "size" only when
 * it is not 0; with metrics also "candidate" and "<metric>_per_s" (the
 * median), at the top and in every run.
 * @return KEEL_OK or KEEL_ENOMEM.
 */
int keel__bench_report(const keel_bench_result *r, int json);

/* `keel bench ...`, argv being the words after "bench". @return an exit
 * status (tools/cli.h). */
int keel__bench_main(int argc, char **argv);

/* The workloads, each run with the words after its name. */
int keel__bench_wal_append(int argc, char **argv);
/* bench_kernel.c */
int keel__bench_pingpong(int argc, char **argv);
int keel__bench_fanout(int argc, char **argv);
int keel__bench_chain5(int argc, char **argv);
int keel__bench_pingpong_rss(int argc, char **argv);
/* bench_soak.c: `keel bench soak` (state bounded over a long run). */
int keel__bench_soak(int argc, char **argv);
int keel__bench_terminate(int argc, char **argv);
/* bench/bench_control.c */
int keel__bench_control(int argc, char **argv);
/* bench_recover.c */
int keel__bench_recover(int argc, char **argv);
int keel__bench_audit(int argc, char **argv);
/* bench_snapshot.c */
int keel__bench_snapshot(int argc, char **argv);

#endif
