/*
 * bench/bench_soak.c — `keel bench soak`: does kernel state stay bounded
 * in a long run (docs/kernel.md, "Garbage collection")?
 *
 * Two workloads, each on a fresh STATE with periodic snapshots and their
 * retention (keel_kernel_options.snapshot_every / snapshot_keep: WAL
 * segments before the oldest kept snapshot retire):
 *   pingpong  vats/pingpong.c, one ping outstanding at a time
 *   churn     vats/churn.c: an object made, passed and dropped per round
 *             (its dropExports / retireExports are cranks too)
 * Each is paused (keel_run_options.max_cranks; every pause waits for
 * durability) at CRANKS/10, 2·CRANKS/10, ..., CRANKS, and at 1,000,000
 * when CRANKS is larger, to sample: the store's entries (every visible
 * key, counted through the kernel's store), the store's and the WAL's
 * bytes on disk, and this process's VmRSS. The verdict compares the last
 * sample with the one at 1,000,000 cranks (or the first, for a shorter
 * run): each within 1.10x, store entries within a constant (issue 12).
 *
 * Invariants:
 *   BS1 Both workloads run to their crank count or the bench fails (a
 *       run idle early means a vat was terminated).
 *   BS2 The figures are those of one run, sampled in it; nothing is
 *       extrapolated.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "keel/kernel.h"

#include "bench/bench.h"
#include "common/diag.h"
#include "kernel/kernel_internal.h"
#include "tools/cli.h"

#define SOAK_DEFAULT_CRANKS 10000000ull
#define SOAK_MIN_CRANKS     1000ull
#define SOAK_MAX_CRANKS     1000000000ull
#define SOAK_REF_CRANKS     1000000ull
#define SOAK_SAMPLES        11u
#define SOAK_DEFAULT_EVERY  100000ull
#define SOAK_DEFAULT_KEEP   2u
/* WAL segments of 16 MiB: segments retire whole, so the WAL on disk is a
 * sawtooth of one segment's height over what the kept snapshots need */
#define SOAK_WAL_SEGMENT (16u * 1024 * 1024)

enum {
    SO_CRANKS,
    SO_SYNC,
    SO_EVERY,
    SO_KEEP,
    SO_WORKLOAD,
    SO_DIR,
    SO_JSON,
    SO_N
};

static const keel_cli_opt soak_opts[SO_N] = {
    [SO_CRANKS] = {"cranks", "N"},        [SO_SYNC] = {"sync", "POLICY"},
    [SO_EVERY] = {"snapshot-every", "C"}, [SO_KEEP] = {"keep", "K"},
    [SO_WORKLOAD] = {"workload", "NAME"}, [SO_DIR] = {"dir", "DIR"},
    [SO_JSON] = {"json", NULL},
};

static const keel_cli_spec soak_spec = {
    .command = "bench soak",
    .help =
        "usage: keel bench soak [--cranks N] [--sync full|group|off]\n"
        "                       [--snapshot-every C] [--keep K]\n"
        "                       [--workload pingpong|churn|both]\n"
        "                       [--dir DIR] [--json]\n"
        "\n"
        "Run pingpong and an object-churn workload (objects made, passed\n"
        "and dropped) for N cranks each, with a snapshot every C cranks\n"
        "and the newest K kept (older WAL segments, of 16 MiB, retire),\n"
        "sampling the store's entries, store MiB, WAL MiB on disk and\n"
        "VmRSS at each tenth of the run and at 1,000,000 cranks. Garbage\n"
        "collection should keep every figure at N within 1.10x of its\n"
        "value at 1,000,000 (store entries within a constant).\n"
        "\n"
        "Options:\n"
        "  --cranks N          cranks per workload, at least 1000 (default\n"
        "                      10000000)\n"
        "  --sync POLICY       full, group or off (default group)\n"
        "  --snapshot-every C  cranks between snapshots (default 100000)\n"
        "  --keep K            snapshots kept (default 2)\n"
        "  --workload NAME     pingpong, churn or both (default both)\n"
        "  --dir DIR           where to work (default $TMPDIR, else the\n"
        "                      current directory)\n"
        "  --json              one JSON object per workload\n"
        "\n"
        "Exit status: 0 success (whatever the ratios); 1 the run failed;\n"
        "2 usage error.\n",
    .opts = soak_opts,
    .nopts = SO_N,
};

typedef struct soak_sample {
    uint64_t cranks;
    uint64_t entries;
    uint64_t store_bytes;
    uint64_t wal_bytes;
    uint64_t rss_kib;
    double cranks_per_s;
} soak_sample;

static uint64_t rss_kib(void)
{
    char line[256];
    unsigned long long v = 0, got = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            got = v;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return got;
}

static char *soak_config(const char *workload, uint64_t rounds)
{
    json_t *o =
        strcmp(workload, "pingpong") == 0
            ? json_pack("{s:s, s:{s:{s:s, s:{s:s, s:I}}, s:{s:s, s:{s:s}}}}",
                        "bootstrap", "alice", "vats", "alice", "builtin",
                        "pingpong", "params", "role", "alice", "rounds",
                        (json_int_t)rounds, "bob", "builtin", "pingpong",
                        "params", "role", "bob")
            : json_pack("{s:s, s:{s:{s:s, s:{s:s, s:I}}, s:{s:s, s:{s:s}}}}",
                        "bootstrap", "maker", "vats", "maker", "builtin",
                        "churn", "params", "role", "maker", "rounds",
                        (json_int_t)rounds, "taker", "builtin", "churn",
                        "params", "role", "taker");
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static int sample(keel_kernel *k, const char *state, uint64_t cranks,
                  double rate, soak_sample *s, keel_diag *diag)
{
    char path[4096 + 16];
    int rc = keel__store_count_prefix(k->store, "", 0, &s->entries, diag);
    s->cranks = cranks;
    s->cranks_per_s = rate;
    snprintf(path, sizeof(path), "%s/store", state);
    s->store_bytes = keel__bench_dir_bytes(path, 1);
    snprintf(path, sizeof(path), "%s/wal", state);
    s->wal_bytes = keel__bench_dir_bytes(path, 1);
    s->rss_kib = rss_kib();
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Run workload for n cranks in dir, sampling into s (*ns of them). */
static int soak_run(const char *workload, const char *dir, uint64_t n, int sync,
                    uint64_t every, uint32_t keep, soak_sample *s, size_t *ns,
                    keel_diag *diag)
{
    char state[2048], snaps[2048];
    uint64_t at[SOAK_SAMPLES + 1];
    size_t nat = 0;
    keel_kernel_options o;
    keel_kernel *k = NULL;
    snprintf(state, sizeof(state), "%s/%s-state", dir, workload);
    snprintf(snaps, sizeof(snaps), "%s/%s-snaps", dir, workload);
    if (mkdir(snaps, 0755) != 0) {
        return keel__diag(diag, KEEL_EIO, "%s: cannot create it", snaps);
    }
    for (uint64_t i = 1; i <= 10; i++) {
        at[nat++] = n / 10 * i;
    }
    at[nat - 1] = n;
    if (n > SOAK_REF_CRANKS) {
        at[nat++] = SOAK_REF_CRANKS;
    }
    qsort(at, nat, sizeof(at[0]), cmp_u64);
    keel_kernel_options_init(&o);
    o.sync = sync;
    o.snapshot_every = every;
    o.snapshot_dir = snaps;
    o.snapshot_keep = keep;
    o.wal_segment_bytes = SOAK_WAL_SEGMENT;
    /* more rounds than n cranks need: the run stops at max_cranks */
    char *config = soak_config(workload, n);
    int rc = config == NULL ? keel__diag(diag, KEEL_ENOMEM, "out of memory")
                            : keel_kernel_open(state, &o, &k, diag);
    rc = rc < 0 ? rc : keel_kernel_boot(k, config, NULL, diag);
    free(config);
    uint64_t done = 0;
    *ns = 0;
    for (size_t i = 0; rc == KEEL_OK && i < nat; i++) {
        if (at[i] <= done) {
            continue;
        }
        keel_run_options ro = {.max_cranks = at[i] - done};
        keel_run_stats st = {0};
        double t0 = keel__bench_now();
        rc = keel_kernel_run(k, &ro, &st, diag);
        rc = rc < 0 ? rc : keel_kernel_wait_durable(k, diag);
        double secs = keel__bench_now() - t0;
        if (rc < 0) {
            break;
        }
        done += st.cranks;
        if (st.cranks < ro.max_cranks) { /* BS1 */
            rc = keel__diag(diag, KEEL_EINVAL,
                            "soak %s: idle after %" PRIu64 " of %" PRIu64
                            " cranks (a vat was terminated?)",
                            workload, done, n);
            break;
        }
        rc = sample(k, state, done,
                    (double)st.cranks / (secs > 1e-9 ? secs : 1e-9),
                    &s[(*ns)++], diag);
    }
    if (k != NULL) {
        int crc = keel_kernel_close(k, rc == KEEL_OK ? diag : NULL);
        rc = rc == KEEL_OK ? crc : rc;
    }
    return rc;
}

static double ratio(uint64_t a, uint64_t b)
{
    return b > 0 ? (double)a / (double)b : 0;
}

static void soak_report(const char *workload, const soak_sample *s, size_t ns,
                        int sync, uint64_t every, uint32_t keep,
                        const keel_bench_env *env, int json)
{
    size_t ref = 0;
    for (size_t i = 0; i < ns; i++) {
        if (s[i].cranks == SOAK_REF_CRANKS) {
            ref = i;
        }
    }
    const soak_sample *a = &s[ref], *z = &s[ns - 1];
    double re = ratio(z->entries, a->entries),
           rs = ratio(z->store_bytes, a->store_bytes),
           rw = ratio(z->wal_bytes, a->wal_bytes),
           rr = ratio(z->rss_kib, a->rss_kib);
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ns; i++) {
            json_array_append_new(
                arr, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f}", "cranks",
                               (json_int_t)s[i].cranks, "store_entries",
                               (json_int_t)s[i].entries, "store_bytes",
                               (json_int_t)s[i].store_bytes, "wal_bytes",
                               (json_int_t)s[i].wal_bytes, "vm_rss_kib",
                               (json_int_t)s[i].rss_kib, "cranks_per_s",
                               s[i].cranks_per_s));
        }
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:I, s:f, s:f, s:f, s:f}",
                      "bench", "soak", "workload", workload, "sync",
                      keel_sync_name(sync), "snapshot_every", (json_int_t)every,
                      "keep", (json_int_t)keep, "samples", arr, "ref_cranks",
                      (json_int_t)a->cranks, "entries_ratio", re, "store_ratio",
                      rs, "wal_ratio", rw, "rss_ratio", rr);
        char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line != NULL) {
            printf("%s\n", line);
        }
        free(line);
        json_decref(o);
        fflush(stdout);
        return;
    }
    printf("soak %s: cpu %s; fs %s; build %s; sync %s; snapshot every %" PRIu64
           " cranks, keep %u\n",
           workload, env->cpu, env->fs, env->build, keel_sync_name(sync), every,
           keep);
    printf("%12s %12s %10s %10s %10s %10s\n", "cranks", "entries", "store MiB",
           "WAL MiB", "RSS MiB", "cranks/s");
    for (size_t i = 0; i < ns; i++) {
        printf("%12" PRIu64 " %12" PRIu64 " %10.1f %10.1f %10.1f %10.0f\n",
               s[i].cranks, s[i].entries, (double)s[i].store_bytes / 1048576.0,
               (double)s[i].wal_bytes / 1048576.0,
               (double)s[i].rss_kib / 1024.0, s[i].cranks_per_s);
    }
    printf("at %" PRIu64 " / at %" PRIu64 " cranks: entries %.3f (%+" PRId64
           "), store %.3f, WAL %.3f, RSS %.3f (target: each <= 1.10)\n",
           z->cranks, a->cranks, re, (int64_t)z->entries - (int64_t)a->entries,
           rs, rw, rr);
    fflush(stdout);
}

int keel__bench_soak(int argc, char **argv)
{
    keel_cli_args ca;
    keel_bench_env env;
    keel_diag d = {0};
    soak_sample s[SOAK_SAMPLES + 1];
    size_t ns = 0;
    char *dir = NULL;
    const char *parent = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : ".";
    uint64_t n = SOAK_DEFAULT_CRANKS, every = SOAK_DEFAULT_EVERY, keep = 2;
    int sync = KEEL_SYNC_GROUP, err = KEEL_OK;
    const char *which = "both";
    int rc = keel__cli_parse(&soak_spec, argc, argv, &ca);
    if (rc == KEEL_CLI_CONTINUE && ca.val[SO_CRANKS] != NULL) {
        rc = keel__cli_parse_u64(soak_spec.command, "cranks", ca.val[SO_CRANKS],
                                 SOAK_MIN_CRANKS, SOAK_MAX_CRANKS, &n);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[SO_EVERY] != NULL) {
        rc = keel__cli_parse_u64(soak_spec.command, "snapshot-every",
                                 ca.val[SO_EVERY], 1, SOAK_MAX_CRANKS, &every);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[SO_KEEP] != NULL) {
        rc = keel__cli_parse_u64(soak_spec.command, "keep", ca.val[SO_KEEP], 1,
                                 1000, &keep);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[SO_SYNC] != NULL &&
        keel_sync_parse(ca.val[SO_SYNC], &sync) != KEEL_OK) {
        rc = keel__cli_usage_error(soak_spec.command,
                                   "--sync: '%s' is not full, group or off",
                                   ca.val[SO_SYNC]);
    }
    if (rc == KEEL_CLI_CONTINUE && ca.val[SO_WORKLOAD] != NULL) {
        which = ca.val[SO_WORKLOAD];
        if (strcmp(which, "pingpong") != 0 && strcmp(which, "churn") != 0 &&
            strcmp(which, "both") != 0) {
            rc = keel__cli_usage_error(soak_spec.command,
                                       "--workload: '%s' is not pingpong, "
                                       "churn or both",
                                       which);
        }
    }
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    parent = ca.val[SO_DIR] != NULL ? ca.val[SO_DIR] : parent;
    err = keel__bench_workdir(parent, &dir, &d);
    if (err == KEEL_OK) {
        keel__bench_env(dir, &env);
    }
    static const char *const names[] = {"pingpong", "churn"};
    for (size_t w = 0; err == KEEL_OK && w < 2; w++) {
        if (strcmp(which, "both") != 0 && strcmp(which, names[w]) != 0) {
            continue;
        }
        err =
            soak_run(names[w], dir, n, sync, every, (uint32_t)keep, s, &ns, &d);
        if (err == KEEL_OK) {
            soak_report(names[w], s, ns, sync, every, (uint32_t)keep, &env,
                        ca.val[SO_JSON] != NULL);
        }
    }
    if (dir != NULL) {
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(dir);
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "keel: %s: %s\n", soak_spec.command,
                d.msg[0] != '\0' ? d.msg : keel_strerror(err));
        return KEEL_CLI_FAIL;
    }
    return KEEL_CLI_OK;
}
