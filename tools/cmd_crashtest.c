/*
 * tools/cmd_crashtest.c — `keel crashtest`: crash-injection trials against
 * a user's cluster (recovery/crashtest.h does the work).
 *
 * Invariants:
 *   X1  Exit status (C1): 0 every trial passed; 1 a trial found a
 *       violation, or the session could not run (a bad config, a cluster
 *       that is not deterministic, a failed reference run); 2 usage.
 *   X2  Each violation is reported as it is found, on stderr, with the
 *       command line that reproduces its trial; the summary repeats the
 *       first one's command line at the end.
 *   X3  The progress bar is drawn on stderr only when stderr is a
 *       terminal (K5 of cmd_kernel.c), at most ten times a second.
 *   X4  stdout holds only the summary (a table, or with --json one JSON
 *       object), so it can be captured whole.
 *   X5  --mode powerloss runs recovery/powerloss.h's session alone (it is
 *       not in all): its recorder is --plrec, else $KEEL_PLREC, else
 *       libkeel_plrec.so beside this program.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"

#include "common/clock.h"
#include "recovery/crashtest.h"
#include "recovery/powerloss.h"
#include "tools/cli.h"

/* Configs are small; a bigger file is a mistake, not a cluster. */
#define NMODES 3

enum {
    CT_CONFIG,
    CT_MODE,
    CT_TRIALS,
    CT_STRIDE,
    CT_SEED,
    CT_TRIAL,
    CT_WORK_DIR,
    CT_KEEP_FAILED,
    CT_JSON,
    CT_SCENARIO,
    CT_PLREC,
    CT_NOPTS
};

static const keel_cli_opt ct_opts[CT_NOPTS] = {
    [CT_CONFIG] = {"config", "FILE"},
    [CT_MODE] = {"mode", "MODE"},
    [CT_TRIALS] = {"trials", "N"},
    [CT_STRIDE] = {"stride", "N"},
    [CT_SEED] = {"seed", "S"},
    [CT_TRIAL] = {"trial", "T"},
    [CT_WORK_DIR] = {"work-dir", "DIR"},
    [CT_KEEP_FAILED] = {"keep-failed", NULL},
    [CT_JSON] = {"json", NULL},
    [CT_SCENARIO] = {"scenario", "S"},
    [CT_PLREC] = {"plrec", "FILE"},
};

static const keel_cli_spec ct_spec = {
    .command = "crashtest",
    .help =
        "usage: keel crashtest --config cluster.json\n"
        "                      [--mode enumerate|process|corruption|all]\n"
        "       keel crashtest --config cluster.json --mode powerloss\n"
        "                      [--scenario run|restore] [--plrec FILE]\n"
        "                      [--trials N] [--stride N] [--seed S] "
        "[--trial T]\n"
        "                      [--work-dir DIR] [--keep-failed] [--json]\n"
        "\n"
        "Crash-test a cluster: run it, crash it in many ways, and check\n"
        "that every recovery is sound. The cluster (see docs/config.md)\n"
        "first runs uninterrupted, twice, in deterministic mode: vats'\n"
        "timers and thread-pool jobs complete one at a time, only when the\n"
        "run queue is empty, in virtual-time order. Both runs must end with\n"
        "the same activity hash (else the cluster is not deterministic and\n"
        "nothing can be compared); the first is the reference. Then:\n"
        "\n"
        "  enumerate   for each WAL I/O operation k of the reference run\n"
        "              (write, sync, rename, ...): run the cluster from\n"
        "              scratch in a child, crash it right after operation\n"
        "              k and model a power loss (every byte not yet synced\n"
        "              is lost; for even k a torn prefix of them lands)\n"
        "  process     run `keel run --config FILE --deterministic` and\n"
        "              SIGKILL it at a random moment\n"
        "  corruption  flip a bit or overwrite bytes at a random offset of\n"
        "              a WAL segment of a crashed or finished state, or of\n"
        "              a snapshot of one, which is then restored\n"
        "\n"
        "  powerloss   (not in all) run keel for real with a recorder\n"
        "              preloaded (libkeel_plrec.so, beside this program;\n"
        "              --plrec or $KEEL_PLREC names another) that traces\n"
        "              every write, truncate, rename, unlink, mkdir and\n"
        "              sync under the state, LMDB's included; then build\n"
        "              crash states from the trace: what the syncs made\n"
        "              durable (a file's data by its fsync/fdatasync, a\n"
        "              name by its directory's fsync) plus none, all, a\n"
        "              prefix or a random subset of the rest, at crash\n"
        "              points from every sync and the end. --scenario run\n"
        "              (default): `keel run` with a checkpoint every 64\n"
        "              cranks; restore: `keel snapshot restore` of a\n"
        "              snapshot made part-way, rolled forward (--wal)\n"
        "              through the rest of the log. --trials N bounds the\n"
        "              crash states (default 200). Each must open (or be\n"
        "              absent, if nothing was acknowledged), keep every\n"
        "              acknowledged LSN, be a reference prefix and pass\n"
        "              the audit; it is not run on.\n"
        "\n"
        "After each trial the state is reopened and must: keep every\n"
        "transaction reported durable before the crash; be exactly the\n"
        "reference's state after some prefix of its transactions (same\n"
        "activity hash at that LSN: no partial transaction); pass the full\n"
        "audit (`keel recover --check`); and, run on, end exactly as the\n"
        "reference did. A damaged state may instead be refused with an\n"
        "error naming the damaged file. Anything else is a violation: it is\n"
        "printed on stderr with the command line that reproduces it.\n"
        "\n"
        "Trials run in a scratch directory under /dev/shm when it is\n"
        "writable (the fault layer models durability itself, so syncs may\n"
        "cost nothing), else $TMPDIR or /tmp; it is removed at the end.\n"
        "\n"
        "Options:\n"
        "  --config FILE    the cluster (required; builtin vats and vat\n"
        "                   libraries, as for keel run)\n"
        "  --mode MODE      enumerate, process, corruption or all (default);\n"
        "                   or powerloss\n"
        "  --scenario S     powerloss: run (default) or restore\n"
        "  --plrec FILE     powerloss: the recorder (libkeel_plrec.so)\n"
        "  --trials N       process and corruption: trials (default 200 and\n"
        "                   1000); enumerate: at most N crash points, spread\n"
        "                   evenly (default: every one); powerloss: crash\n"
        "                   states (default 200)\n"
        "  --stride N       enumerate: every N-th crash point\n"
        "  --seed S         seed of the random choices (default 1)\n"
        "  --trial T        run only trial T of the mode (enumerate: crash\n"
        "                   point T), to reproduce a violation\n"
        "  --work-dir DIR   where the scratch directory goes\n"
        "  --keep-failed    keep the state of each failed trial (its path\n"
        "                   is in the message)\n"
        "  --json           print the summary as one JSON object: seed,\n"
        "                   reference (transactions, io_ops, final_hash,\n"
        "                   seconds), modes (mode, trials, crash_points,\n"
        "                   violations, durable, recovered, torn, refused,\n"
        "                   audits, replayed, seconds, first, repro)\n"
        "\n"
        "On a terminal a progress bar is drawn on stderr.\n"
        "\n"
        "Exit status: 0 every trial passed; 1 a violation was found, or the\n"
        "cluster could not be tested (a bad config, not deterministic, the\n"
        "reference run failed); 2 usage error.\n",
    .opts = ct_opts,
    .nopts = CT_NOPTS,
    .min_pos = 0,
    .max_pos = 0,
    .pos = "",
};

/* What the command was asked and what it saw. */
typedef struct ct_job {
    keel__crashtest_options o;
    int modes[NMODES];
    size_t nmodes;
    int json;
    int tty;
    int drew;
    double last_draw;
    uint64_t violations; /* so far, all modes */
    char self[4096];     /* this program, for process mode */
    int powerloss;       /* --mode powerloss (recovery/powerloss.h) */
    const char *scenario;
    const char *plrec;
    char plrec_buf[4096];
} ct_job;

static void clear_bar(ct_job *j)
{
    if (j->drew) {
        fputs("\r\033[K", stderr);
        j->drew = 0;
    }
}

/* X3 */
static void on_progress(void *arg, int mode, uint64_t done, uint64_t total)
{
    ct_job *j = arg;
    enum { WIDTH = 30 };
    char bar[WIDTH + 1];
    double now = keel__now_s();
    if (!j->tty || (done != total && now - j->last_draw < 0.1)) {
        return;
    }
    j->last_draw = now;
    size_t fill = total > 0 ? (size_t)(done * WIDTH / total) : WIDTH;
    for (size_t i = 0; i < WIDTH; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[WIDTH] = '\0';
    fprintf(stderr,
            "\rkeel: crashtest: %-10s [%s] %" PRIu64 "/%" PRIu64 ", %" PRIu64
            " violation%s\033[K",
            keel__crashtest_mode_name(mode), bar, done, total, j->violations,
            j->violations == 1 ? "" : "s");
    j->drew = 1;
}

/* X2 */
static void on_violation(void *arg, int mode, uint64_t trial, const char *what,
                         const char *repro)
{
    ct_job *j = arg;
    clear_bar(j);
    j->violations++;
    fprintf(stderr,
            "keel: crashtest: violation: %s trial %" PRIu64 ": %s\n"
            "    reproduce: %s\n",
            keel__crashtest_mode_name(mode), trial, what, repro);
}

static int parse_args(int argc, char **argv, ct_job *j)
{
    keel_cli_args a;
    uint64_t n = 0;
    int rc = keel__cli_parse(&ct_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    j->o.config_path = a.val[CT_CONFIG];
    j->o.work_dir = a.val[CT_WORK_DIR];
    j->o.keep_failed = a.val[CT_KEEP_FAILED] != NULL;
    j->json = a.val[CT_JSON] != NULL;
    j->o.seed = 1;
    if (j->o.config_path == NULL) {
        rc = keel__cli_usage_error("crashtest", "--config FILE is required");
        goto out;
    }
    const char *mode = a.val[CT_MODE] != NULL ? a.val[CT_MODE] : "all";
    j->scenario = a.val[CT_SCENARIO];
    j->plrec = a.val[CT_PLREC];
    if (strcmp(mode, "powerloss") == 0) {
        int sc = 0;
        j->powerloss = 1;
        if (j->scenario != NULL &&
            keel__pl_scenario_parse(j->scenario, &sc) != KEEL_OK) {
            rc = keel__cli_usage_error("crashtest",
                                       "--scenario: '%s' is not run or restore",
                                       j->scenario);
            goto out;
        }
    } else if (j->scenario != NULL || j->plrec != NULL) {
        rc = keel__cli_usage_error(
            "crashtest", "--scenario and --plrec go with --mode powerloss");
        goto out;
    } else if (strcmp(mode, "all") == 0) {
        for (int m = KEEL__CRASHTEST_ENUMERATE; m <= KEEL__CRASHTEST_CORRUPTION;
             m++) {
            j->modes[j->nmodes++] = m;
        }
    } else if (keel__crashtest_mode_parse(mode, &j->modes[0]) == KEEL_OK) {
        j->nmodes = 1;
    } else {
        rc = keel__cli_usage_error(
            "crashtest",
            "--mode: '%s' is not enumerate, process, corruption, powerloss "
            "or all",
            mode);
        goto out;
    }
    static const struct {
        int opt;
        const char *name;
        uint64_t min;
    } nums[] = {{CT_TRIALS, "trials", 1},
                {CT_STRIDE, "stride", 1},
                {CT_SEED, "seed", 0},
                {CT_TRIAL, "trial", 1}};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        if (a.val[nums[i].opt] == NULL) {
            continue;
        }
        rc = keel__cli_parse_u64("crashtest", nums[i].name, a.val[nums[i].opt],
                                 nums[i].min, UINT64_MAX, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        switch (nums[i].opt) {
        case CT_TRIALS:
            j->o.trials = n;
            break;
        case CT_STRIDE:
            j->o.stride = n;
            break;
        case CT_SEED:
            j->o.seed = n;
            break;
        default:
            j->o.only_trial = n;
        }
    }
    if (j->powerloss && a.val[CT_STRIDE] != NULL) {
        rc = keel__cli_usage_error("crashtest",
                                   "--stride does not go with powerloss");
    } else if (j->o.only_trial != 0 && j->nmodes != 1 && !j->powerloss) {
        rc = keel__cli_usage_error("crashtest",
                                   "--trial needs one --mode (not all)");
    }
out:
    return rc;
}

static json_t *report_json(const keel__crashtest_report *r)
{
    return json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s, s:s}",
        "mode", keel__crashtest_mode_name(r->mode), "trials",
        (json_int_t)r->trials, "durable", (json_int_t)r->durable,
        "crash_points", (json_int_t)r->crash_points, "violations",
        (json_int_t)r->violations, "recovered", (json_int_t)r->recovered,
        "torn", (json_int_t)r->torn, "refused", (json_int_t)r->refused,
        "audits", (json_int_t)r->audits, "replayed", (json_int_t)r->replayed,
        "seconds", r->seconds, "first", r->first, "repro", r->repro);
}

/* X4: the summary on stdout. */
static int summary(const ct_job *j, const keel__crashtest_reference *ref,
                   const keel__crashtest_report *reps, size_t n)
{
    int rc = KEEL_CLI_OK;
    if (j->json) {
        json_t *modes = json_array();
        for (size_t i = 0; modes != NULL && i < n; i++) {
            json_array_append_new(modes, report_json(&reps[i]));
        }
        char hash[17];
        snprintf(hash, sizeof(hash), "%016" PRIx64, ref->final_hash);
        json_t *o = json_pack("{s:s, s:I, s:{s:I, s:I, s:s, s:f}, s:o}",
                              "config", j->o.config_path, "seed",
                              (json_int_t)j->o.seed, "reference",
                              "transactions", (json_int_t)ref->transactions,
                              "io_ops", (json_int_t)ref->io_ops, "final_hash",
                              hash, "seconds", ref->seconds, "modes", modes);
        char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s == NULL) {
            fprintf(stderr, "keel: crashtest: out of memory\n");
            rc = KEEL_CLI_FAIL;
        } else {
            printf("%s\n", s);
        }
        free(s);
        json_decref(o);
        return rc;
    }
    printf("reference: %" PRIu64 " transactions, %" PRIu64
           " WAL I/O operations, final activity hash %016" PRIx64
           " (%.3f s a run)\n\n",
           ref->transactions, ref->io_ops, ref->final_hash, ref->seconds);
    printf("%-11s %8s %13s %11s %9s\n", "mode", "trials", "crash points",
           "violations", "time");
    for (size_t i = 0; i < n; i++) {
        const keel__crashtest_report *r = &reps[i];
        printf("%-11s %8" PRIu64 " %13" PRIu64 " %11" PRIu64 " %7.1f s\n",
               keel__crashtest_mode_name(r->mode), r->trials, r->crash_points,
               r->violations, r->seconds);
    }
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        const keel__crashtest_report *r = &reps[i];
        printf("%s: %" PRIu64 " recovered to a prefix of the reference and "
               "finished (%" PRIu64 " after truncating a torn tail, %" PRIu64
               " records replayed), %" PRIu64 " audits passed",
               keel__crashtest_mode_name(r->mode), r->recovered, r->torn,
               r->replayed, r->audits);
        if (r->mode == KEEL__CRASHTEST_CORRUPTION) {
            printf(", %" PRIu64 " refused as damaged", r->refused);
        }
        printf("\n");
        if (r->violations > 0) {
            printf("  first violation: %s\n  reproduce: %s\n", r->first,
                   r->repro);
        }
    }
    return rc;
}

static void on_pl_violation(void *arg, uint64_t trial, const char *what,
                            const char *repro)
{
    ct_job *j = arg;
    j->violations++;
    fprintf(stderr,
            "keel: crashtest: violation: powerloss trial %" PRIu64 ": %s\n"
            "    reproduce: %s\n",
            trial, what, repro);
}

/* --mode powerloss: the recorder is --plrec, $KEEL_PLREC, or beside this
 * program. */
static int run_powerloss(ct_job *j)
{
    keel__pl_options po;
    keel__pl_report r;
    keel_diag d = {0};
    keel__pl_options_init(&po);
    po.config_path = j->o.config_path;
    po.keel_bin = j->o.keel_bin;
    po.work_dir = j->o.work_dir;
    po.seed = j->o.seed;
    po.only_trial = j->o.only_trial;
    po.keep_failed = j->o.keep_failed;
    po.trials = j->o.trials;
    if (j->scenario != NULL) {
        keel__pl_scenario_parse(j->scenario, &po.scenario);
    }
    const char *env = getenv("KEEL_PLREC");
    if (j->plrec != NULL) {
        po.plrec = j->plrec;
    } else if (env != NULL && env[0] != '\0') {
        po.plrec = env;
    } else if (j->o.keel_bin != NULL) {
        const char *slash = strrchr(j->o.keel_bin, '/');
        int dl = slash != NULL ? (int)(slash - j->o.keel_bin) : 1;
        snprintf(j->plrec_buf, sizeof(j->plrec_buf), "%.*s/libkeel_plrec.so",
                 dl, slash != NULL ? j->o.keel_bin : ".");
        po.plrec = j->plrec_buf;
    }
    po.violation = on_pl_violation;
    po.violation_arg = j;
    int err = keel__pl_run(&po, &r, &d);
    if (err < 0) {
        fprintf(stderr, "keel: crashtest: powerloss: %s\n",
                d.msg[0] != '\0' ? d.msg : keel_strerror(err));
        return KEEL_CLI_FAIL;
    }
    if (j->json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
            "s:I, s:f, s:f, s:s, s:s}",
            "mode", "powerloss", "scenario", keel__pl_scenario_name(r.scenario),
            "seed", (json_int_t)po.seed, "ops", (json_int_t)r.ops, "syncs",
            (json_int_t)r.syncs, "transactions", (json_int_t)r.transactions,
            "crash_points", (json_int_t)r.crash_points, "trials",
            (json_int_t)r.trials, "violations", (json_int_t)r.violations,
            "absent", (json_int_t)r.absent, "recovered",
            (json_int_t)r.recovered, "audits", (json_int_t)r.audits, "acked",
            (json_int_t)r.acked, "trace_seconds", r.trace_seconds, "seconds",
            r.seconds, "first", r.first, "repro", r.repro);
        char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s == NULL) {
            fprintf(stderr, "keel: crashtest: out of memory\n");
            json_decref(o);
            return KEEL_CLI_FAIL;
        }
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("powerloss %s: traced %" PRIu64 " operations (%" PRIu64
               " candidate crash points: each sync and the end), %" PRIu64
               " transactions, in %.3f s\n",
               keel__pl_scenario_name(r.scenario), r.ops, r.syncs,
               r.transactions, r.trace_seconds);
        printf("%" PRIu64 " trials at %" PRIu64 " crash points: %" PRIu64
               " violations, %" PRIu64 " recovered, %" PRIu64
               " audits passed, %" PRIu64 " with nothing published, %" PRIu64
               " with an acknowledged LSN (%.1f s)\n",
               r.trials, r.crash_points, r.violations, r.recovered, r.audits,
               r.absent, r.acked, r.seconds);
        if (r.violations > 0) {
            printf("  first violation: %s\n  reproduce: %s\n", r.first,
                   r.repro);
        }
    }
    return r.violations > 0 ? KEEL_CLI_FAIL : KEEL_CLI_OK; /* X1 */
}

int keel__cli_crashtest(int argc, char **argv)
{
    ct_job j;
    keel__crashtest *ct = NULL;
    keel__crashtest_report reps[NMODES];
    keel_diag d = {0};
    char *config = NULL;
    size_t done = 0;
    memset(&j, 0, sizeof(j));
    memset(reps, 0, sizeof(reps));
    keel__crashtest_options_init(&j.o);
    int rc = parse_args(argc, argv, &j);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    rc = keel__cli_read_config("crashtest", j.o.config_path, &config);
    if (rc != KEEL_CLI_OK) {
        goto out;
    }
    ssize_t len = readlink("/proc/self/exe", j.self, sizeof(j.self) - 1);
    if (len > 0) {
        j.self[len] = '\0';
        j.o.keel_bin = j.self;
    }
    j.o.config_json = config;
    if (j.powerloss) {
        rc = run_powerloss(&j);
        goto out;
    }
    j.tty = isatty(STDERR_FILENO);
    j.o.progress = on_progress;
    j.o.progress_arg = &j;
    j.o.violation = on_violation;
    j.o.violation_arg = &j;
    if (j.tty) {
        fprintf(stderr, "keel: crashtest: running the reference...");
        j.drew = 1;
    }
    int err = keel__crashtest_open(&j.o, &ct, &d);
    clear_bar(&j);
    if (err < 0) {
        fprintf(stderr, "keel: crashtest: %s: %s\n", j.o.config_path,
                d.msg[0] != '\0' ? d.msg : keel_strerror(err));
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    for (; done < j.nmodes; done++) {
        err = keel__crashtest_run(ct, j.modes[done], &reps[done], &d);
        clear_bar(&j);
        if (err < 0) {
            fprintf(stderr, "keel: crashtest: %s: %s\n",
                    keel__crashtest_mode_name(j.modes[done]),
                    d.msg[0] != '\0' ? d.msg : keel_strerror(err));
            rc = KEEL_CLI_FAIL;
            break;
        }
    }
    if (summary(&j, keel__crashtest_reference_of(ct), reps,
                done < j.nmodes ? done + 1 : done) != KEEL_CLI_OK) {
        rc = KEEL_CLI_FAIL;
    }
    if (rc == KEEL_CLI_OK && j.violations > 0) {
        rc = KEEL_CLI_FAIL; /* X1 */
    }
out:
    keel__crashtest_close(ct);
    free(config);
    return rc;
}
