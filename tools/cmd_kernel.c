/*
 * tools/cmd_kernel.c — `keel run`, `keel status` and `keel send`: the
 * commands that open a kernel's state directory and drive it through the
 * public keel_kernel_* API (include/keel/kernel.h).
 *
 * Invariants:
 *   K1  A result is printed only once it is durable: every command calls
 *       keel_kernel_wait_durable() before it prints a summary, a queued
 *       promise or a settlement (DESIGN.md §2.4).
 *   K2  SIGINT and SIGTERM only set a flag that keel_kernel_run() reads
 *       between cranks, so a run stops cleanly after the current crank and
 *       still prints its (durable) summary. The handlers are installed with
 *       SA_RESETHAND: a second signal kills the process, which loses nothing
 *       already reported durable.
 *   K3  Exit status (C1): 0 the command did what was asked (a run that
 *       stopped on a signal, --max-cranks or --timeout-ms included); 1 the
 *       kernel, the state directory or a file failed, or a --wait result
 *       did not settle; 2 the command line was wrong, checked before
 *       anything is created on disk where that is possible.
 *   K4  Errors are one line on stderr, `keel: <command>: <message>`, where
 *       the message is the kernel's keel_diag text verbatim (C2).
 *   K5  Progress is drawn on stderr only when stderr is a terminal, so
 *       piped and captured output holds nothing but the summary.
 *   K6  A config file is read with keel__cli_read_config (C6).
 *   K7  `keel run` serves STATE/control.sock (host/control.c) from after
 *       boot until the run ended and everything it did is durable, and
 *       closes it before the kernel closes; a `stop` request stops the
 *       run as a signal does (stop_signal = CONTROL_STOP). status and send
 *       ask a live kernel over its socket (tools/ctl_client.c) and read
 *       or drive a stopped state as before.
 *
 * The one mutable static of the program is `stop_signal` below: a signal
 * handler has no other place to put what it saw (C17 7.14.1.1 allows a
 * handler to write only a volatile sig_atomic_t object with static storage
 * duration). It is written by the handler and read by the kernel through
 * keel_run_options.stop_flag.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"
#include "keel/kernel.h"

#include "common/clock.h"
#include "host/observe.h"
#include "host/control.h"
#include "kernel/kernel_internal.h" /* keel__k_method_check */
#include "tools/cli.h"
#include "tools/crash_point.h"
#include "tools/ctl_client.h"

/* stop_flag is `volatile int *`: the handler's flag must be exactly that. */
_Static_assert(_Generic((sig_atomic_t)0, int : 1, default : 0),
               "sig_atomic_t must be int to serve as the kernel's stop_flag");

/* K2: the signal number that asked the run to stop, 0 while none did. */
static volatile sig_atomic_t stop_signal;

/* K7: what a control `stop` request writes into stop_signal. */
#define CONTROL_STOP 0x7fff

static void on_stop_signal(int signo)
{
    stop_signal = signo;
}

/* K2: SIGINT and SIGTERM set stop_signal once, then revert to default. */
static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int kernel_failed(const char *command, const keel_diag *d, int code);

/* $KEEL_CRASH_POINT's plan: the kernel's crash hook counts in it. */
static keel__crash_point crash_plan;

/* Crash injection for testing vats under real crashes (kernel.h): parse
 * $KEEL_CRASH_POINT into o's crash hook, before STATE is touched (CP1). */
static int crash_point_from_env(const char *command, keel_kernel_options *o)
{
    keel_diag d = {0};
    int err =
        keel__crash_point_parse(getenv("KEEL_CRASH_POINT"), &crash_plan, &d);
    if (err < 0) {
        return kernel_failed(command, &d, err);
    }
    keel__crash_point_install(&crash_plan, o);
    return KEEL_CLI_OK;
}

static int kernel_failed(const char *command, const keel_diag *d, int code)
{
    fflush(stdout);
    fprintf(stderr, "keel: %s: %s\n", command, keel__cli_diag_msg(d, code));
    return KEEL_CLI_FAIL;
}

/* Open STATE with the messages every command shares (K4). */
static int open_state(const char *command, const char *state,
                      const keel_kernel_options *o, keel_kernel **k)
{
    keel_diag d = {0};
    struct stat st;
    int rc = KEEL_CLI_OK;
    int err = KEEL_OK;
    /* without create, a missing STATE is reported before open, which
     * must not leave an empty directory behind */
    if (!o->create && stat(state, &st) != 0 && errno == ENOENT) {
        fprintf(stderr, "keel: %s: no such state directory: %s\n", command,
                state);
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    err = keel_kernel_open(state, o, k, &d);
    if (err == KEEL_EBUSY) {
        fprintf(stderr, "keel: %s: %s is locked by another keel process\n",
                command, state);
        rc = KEEL_CLI_FAIL;
    } else if (err < 0) {
        rc = kernel_failed(command, &d, err);
    } else {
        /* A truncated torn tail is news: say what was dropped. */
        keel_kernel_recovery r;
        keel_kernel_recovery_info(*k, &r);
        if (r.torn && o->read_only) {
            fprintf(stderr,
                    "keel: %s: the log ends in a torn tail of %" PRIu64
                    " bytes at wal/%s offset %" PRIu64
                    " (%s), after LSN %" PRIu64
                    "; left as it is (read-only): the next writer truncates "
                    "it, and what it held was never acknowledged\n",
                    command, r.torn_bytes, r.torn_segment, r.torn_offset,
                    r.torn_reason, r.wal_last_lsn);
        } else if (r.torn) {
            fprintf(stderr,
                    "keel: %s: recovery: truncated a torn tail of %" PRIu64
                    " bytes at wal/%s offset %" PRIu64
                    " (%s): the log ends at LSN %" PRIu64
                    "; what followed was never acknowledged\n",
                    command, r.torn_bytes, r.torn_segment, r.torn_offset,
                    r.torn_reason, r.wal_last_lsn);
        }
    }
out:
    return rc;
}

/* Print one JSON value as a compact line and release it. */
static int emit_json(const char *command, json_t *o)
{
    int rc = KEEL_CLI_FAIL;
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s == NULL) {
        fprintf(stderr, "keel: %s: out of memory\n", command);
        goto out;
    }
    printf("%s\n", s);
    rc = KEEL_CLI_OK;
out:
    free(s);
    json_decref(o);
    return rc;
}

/* The kernel's status object (keel_kernel_status_json), parsed. */
static int status_object(const char *command, keel_kernel *k, json_t **out)
{
    keel_diag d = {0};
    char *text = NULL;
    json_error_t jerr;
    int rc = KEEL_CLI_OK;
    *out = NULL;
    int err = keel_kernel_status_json(k, &text, &d);
    if (err < 0) {
        rc = kernel_failed(command, &d, err);
        goto out;
    }
    *out = json_loads(text, 0, &jerr);
    if (!json_is_object(*out)) {
        fprintf(stderr,
                "keel: %s: the kernel's status is not a JSON object: "
                "%s\n",
                command, jerr.text);
        json_decref(*out);
        *out = NULL;
        rc = KEEL_CLI_FAIL;
    }
out:
    free(text);
    return rc;
}

static uint64_t status_u64(const json_t *st, const char *key)
{
    const json_t *v = json_object_get(st, key);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static const char *status_str(const json_t *st, const char *key)
{
    const char *v = json_string_value(json_object_get(st, key));
    return v != NULL ? v : "?";
}

/* Close k (NULL: nothing opened); a failure to close fails a command
 * that had succeeded, since its checkpoint did not happen. */
static int close_kernel(const char *command, keel_kernel *k, int rc)
{
    keel_diag d = {0};
    int err = keel_kernel_close(k, &d);
    if (err < 0 && rc == KEEL_CLI_OK) {
        rc = kernel_failed(command, &d, err);
    }
    return rc;
}

/* ------------------------------------------------------------------- run */

enum {
    RUN_CONFIG,
    RUN_SYNC,
    RUN_FOREVER,
    RUN_MAX_CRANKS,
    RUN_TIMEOUT_MS,
    RUN_CKPT_CRANKS,
    RUN_CKPT_MS,
    RUN_SNAP_EVERY,
    RUN_SNAP_DIR,
    RUN_KEEP,
    RUN_DETERMINISTIC,
    RUN_STORE_MAX,
    RUN_JSON,
    RUN_METRICS_LISTEN,
    RUN_METRICS_REMOTE,
    RUN_EVENT_LOG,
    RUN_EVENT_LOG_MAX,
    RUN_EVENT_LOG_KEEP,
    RUN_NO_CONTROL,
    RUN_NOPTS
};

static const keel_cli_opt run_opts[RUN_NOPTS] = {
    [RUN_CONFIG] = {"config", "FILE"},
    [RUN_SYNC] = {"sync", "POLICY"},
    [RUN_FOREVER] = {"forever", NULL},
    [RUN_MAX_CRANKS] = {"max-cranks", "N"},
    [RUN_TIMEOUT_MS] = {"timeout-ms", "N"},
    [RUN_CKPT_CRANKS] = {"checkpoint-cranks", "N"},
    [RUN_CKPT_MS] = {"checkpoint-ms", "N"},
    [RUN_SNAP_EVERY] = {"snapshot-every", "N"},
    [RUN_SNAP_DIR] = {"snapshot-dir", "DIR"},
    [RUN_KEEP] = {"keep", "K"},
    [RUN_DETERMINISTIC] = {"deterministic", NULL},
    [RUN_STORE_MAX] = {"store-max", "SIZE"},
    [RUN_JSON] = {"json", NULL},
    [RUN_METRICS_LISTEN] = {"metrics-listen", "HOST:PORT"},
    [RUN_METRICS_REMOTE] = {"metrics-allow-remote", NULL},
    [RUN_EVENT_LOG] = {"event-log", "FILE"},
    [RUN_EVENT_LOG_MAX] = {"event-log-max-bytes", "SIZE"},
    [RUN_EVENT_LOG_KEEP] = {"event-log-keep", "N"},
    [RUN_NO_CONTROL] = {"no-control", NULL},
};

static const keel_cli_spec run_spec = {
    .command = "run",
    .help =
        "usage: keel run STATE [--config cluster.json] [--sync "
        "full|group|off]\n"
        "                [--forever] [--max-cranks N] [--timeout-ms N] "
        "[--json]\n"
        "                [--checkpoint-cranks N] [--checkpoint-ms N]\n"
        "                [--snapshot-every N --snapshot-dir DIR [--keep K]]\n"
        "                [--deterministic] [--store-max SIZE] [--no-control]\n"
        "                [--metrics-listen HOST:PORT "
        "[--metrics-allow-remote]]\n"
        "                [--event-log FILE [--event-log-max-bytes SIZE]\n"
        "                 [--event-log-keep N]]\n"
        "\n"
        "Run the kernel whose state lives in directory STATE. A new STATE\n"
        "(absent, or never booted) is created and booted from the cluster\n"
        "config given with --config (see docs/config.md): its vats are\n"
        "created and the bootstrap vat is sent bootstrap(vats). An existing\n"
        "STATE is resumed where it stopped: the log is replayed, every live\n"
        "vat is started again, and --config, if given, is ignored (a note\n"
        "says so on stderr).\n"
        "\n"
        "The run goes on until nothing is left to do (the run queue is\n"
        "empty and no vat has async work pending), or until --max-cranks,\n"
        "--timeout-ms, or SIGINT/SIGTERM, which stop cleanly after the\n"
        "current crank (a second signal kills at once; nothing already\n"
        "reported durable is lost either way). With --forever it keeps\n"
        "waiting for async work and signals instead of stopping when idle.\n"
        "On a terminal a progress line is drawn on stderr. At the end, once\n"
        "everything done is durable, a summary is printed: why it stopped,\n"
        "cranks (committed ones only), aborted (deliveries that failed:\n"
        "the crank was undone and the vat terminated; not counted as\n"
        "cranks), transactions (WAL records: cranks, out-of-crank\n"
        "completions, kernel operations such as terminations), deliveries\n"
        "(to vats, aborted ones included), time, cranks/s, the crank\n"
        "number, the durable LSN and the activity hash.\n"
        "\n"
        "Only one keel process may use a STATE at a time; a second one\n"
        "fails with 'STATE is locked by another keel process'.\n"
        "\n"
        "While it runs, the kernel listens on STATE/control.sock (mode\n"
        "0600; STATE must not be enterable by group or others): `keel\n"
        "status|send|vats|inspect|graph|snapshot create|stop STATE` talk to\n"
        "it there (protocol: docs/control.md). Without --forever the socket\n"
        "is served between cranks while the run works, and the run still\n"
        "ends when idle.\n"
        "\n"
        "Options:\n"
        "  --config FILE    cluster config; required for a new STATE\n"
        "  --sync POLICY    full (default): every transaction is fdatasync'd\n"
        "                   before its effects are used; loses nothing.\n"
        "                   group: transactions are synced in batches; a\n"
        "                   power failure may lose the last short window,\n"
        "                   never part of a transaction, and nothing this\n"
        "                   command reported. off: never synced (benchmarks\n"
        "                   only); a power failure may lose anything.\n"
        "  --forever        do not stop when idle\n"
        "  --max-cranks N   stop after N cranks, aborted ones included\n"
        "                   (N >= 1)\n"
        "  --timeout-ms N   stop after N milliseconds (N >= 1)\n"
        "  --checkpoint-cranks N   checkpoint the store every N\n"
        "                   transactions (default 10000)\n"
        "  --checkpoint-ms N       ... and every N ms (default 1000)\n"
        "  --snapshot-every N      every N cranks, checkpoint and write a\n"
        "                   snapshot of the state to DIR/<LSN>.ksnap (see\n"
        "                   `keel snapshot`); needs --snapshot-dir\n"
        "  --snapshot-dir DIR      where; created if absent. It belongs to\n"
        "                   this STATE: old snapshots in it are deleted\n"
        "  --keep K         keep the newest K snapshots (default 2); log\n"
        "                   segments wholly before the oldest kept one are\n"
        "                   deleted, so disk stays bounded. Without\n"
        "                   snapshots the whole log is kept (for audits)\n"
        "  --deterministic  vats' timers and thread-pool work complete in a\n"
        "                   fixed order on a virtual clock, one at a time\n"
        "                   when nothing else is queued: two runs of a\n"
        "                   cluster make the same transactions (for crash\n"
        "                   testing; see keel crashtest)\n"
        "  --store-max SIZE the most STATE/store may grow to: bytes, or\n"
        "                   with a suffix K, M, G or T (powers of 1024),\n"
        "                   at least 64K (default 1T). The store starts\n"
        "                   at 1 GiB and doubles as it fills; reaching\n"
        "                   SIZE fails the run ('store full'), losing\n"
        "                   nothing: run again with a larger SIZE\n"
        "  --no-control     no control socket (--deterministic implies it)\n"
        "  --json           print the summary as one JSON object: stopped\n"
        "                   (idle, signal, max-cranks, timeout, control:\n"
        "                   a `stop` request), signal,\n"
        "                   state (booted or resumed), cranks, aborted,\n"
        "                   transactions, deliveries, seconds,\n"
        "                   cranks_per_second, crank,\n"
        "                   durable_lsn, activity_hash\n"
        "  --metrics-listen HOST:PORT   serve Prometheus metrics at\n"
        "                   http://HOST:PORT/metrics (HOST numeric, e.g.\n"
        "                   127.0.0.1 or [::1]; PORT 0: any free one, said on\n"
        "                   stderr); see docs/operations.md\n"
        "  --metrics-allow-remote   allow a HOST that is not loopback\n"
        "                   (refused without it: metrics tell what the\n"
        "                   kernel does)\n"
        "  --event-log FILE one JSON line per durable transaction, vat start,\n"
        "                   stop and termination, checkpoint, snapshot and\n"
        "                   torn-tail repair (docs/operations.md); a write\n"
        "                   error never stops the kernel\n"
        "  --event-log-max-bytes SIZE   rotate FILE to FILE.1 .. before it\n"
        "                   would pass SIZE (K, M, G suffixes; 0: never;\n"
        "                   default 0)\n"
        "  --event-log-keep N   rotated files kept (default 5)\n"
        "\n"
        "Environment (service managers):\n"
        "  NOTIFY_SOCKET, WATCHDOG_USEC   sd_notify: READY=1 after recovery,\n"
        "                   WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1\n"
        "\n"
        "Environment:\n"
        "  KEEL_CRASH_POINT=EVENT[/KIND]:N   kill this process with SIGKILL\n"
        "                   at the N-th EVENT, to test recovery for real:\n"
        "                   commit-before, commit-after, apply-after,\n"
        "                   checkpoint-before, checkpoint-after; KIND:\n"
        "                   crank, out-of-crank or kernel-op; N: decimal\n"
        "                   digits, 1 to 2^64-1 (anything else is refused)\n"
        "\n"
        "Exit status: 0 the run stopped as asked (idle, a limit, or a\n"
        "signal); 1 the kernel or a file failed (a bad config, a locked or\n"
        "corrupt STATE, an I/O error: the message says which); 2 usage\n"
        "error (including a new STATE without --config).\n",
    .opts = run_opts,
    .nopts = RUN_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

/* What a run was asked, and how it went. */
typedef struct run_job {
    const char *state;
    const char *config_path;
    char *config_text; /* malloc'd; NULL without --config */
    int sync;
    uint32_t checkpoint_cranks; /* 0: the kernel's default */
    uint32_t checkpoint_ms;
    uint64_t snapshot_every; /* 0: none */
    const char *snapshot_dir;
    uint32_t keep;      /* 0: the kernel's default */
    uint64_t store_max; /* 0: the kernel's default */
    int deterministic;
    int no_control;
    int json;
    keel_obs_config obs; /* metrics, event log */
    int is_new;          /* STATE did not exist when the command started */
    int booted_now;
    keel_run_options ro;
    keel_run_stats stats;
    /* progress (K5) */
    int tty;
    int drew;
    double started;
} run_job;

static void draw_progress(void *arg, uint64_t cranks)
{
    run_job *j = arg;
    double secs = keel__now_s() - j->started;
    fprintf(stderr, "\rkeel: run: %" PRIu64 " cranks, %.0f cranks/s\033[K",
            cranks, secs > 0 ? (double)cranks / secs : 0.0);
    j->drew = 1;
}

/* The smallest --store-max: a store needs a few pages to exist at all. */
#define STORE_MAX_MIN (64u * 1024)

/*
 * Parse a size: decimal digits, optionally followed by one of K, M, G, T
 * (powers of 1024), in [STORE_MAX_MIN, 2^63] (C3).
 */
static int parse_size(const char *command, const char *opt, const char *s,
                      uint64_t *out)
{
    static const char units[] = "KMGT";
    size_t n = strlen(s);
    unsigned shift = 0;
    const char *u = n > 0 ? strchr(units, s[n - 1]) : NULL;
    if (u != NULL && *u != '\0') {
        shift = 10u * (unsigned)(u - units + 1);
        n--;
    }
    uint64_t v = 0;
    int ok = n > 0 && strspn(s, "0123456789") == n;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        ok = v <= ((UINT64_MAX >> 1) - d) / 10;
        v = v * 10 + d;
    }
    ok = ok && v <= (UINT64_MAX >> 1) >> shift && (v << shift) >= STORE_MAX_MIN;
    if (!ok) {
        return keel__cli_usage_error(command,
                                     "--%s: '%s' is not a size from 64K to "
                                     "8E (digits, then K, M, G or T)",
                                     opt, s);
    }
    *out = v << shift;
    return KEEL_CLI_CONTINUE;
}

static int run_parse(int argc, char **argv, run_job *j)
{
    keel_cli_args a;
    uint64_t n = 0;
    int rc = keel__cli_parse(&run_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    j->state = a.pos[0];
    j->config_path = a.val[RUN_CONFIG];
    j->json = a.val[RUN_JSON] != NULL;
    j->ro.forever = a.val[RUN_FOREVER] != NULL;
    if (a.val[RUN_SYNC] != NULL &&
        keel_sync_parse(a.val[RUN_SYNC], &j->sync) != KEEL_OK) {
        rc = keel__cli_usage_error(
            "run", "--sync: '%s' is not full, group or off", a.val[RUN_SYNC]);
        goto out;
    }
    if (a.val[RUN_MAX_CRANKS] != NULL) {
        rc = keel__cli_parse_u64("run", "max-cranks", a.val[RUN_MAX_CRANKS], 1,
                                 UINT64_MAX, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        j->ro.max_cranks = n;
    }
    if (a.val[RUN_TIMEOUT_MS] != NULL) {
        rc = keel__cli_parse_u64("run", "timeout-ms", a.val[RUN_TIMEOUT_MS], 1,
                                 UINT64_MAX, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        j->ro.timeout_ms = n;
    }
    static const struct {
        int opt;
        const char *name;
    } ckpt[] = {{RUN_CKPT_CRANKS, "checkpoint-cranks"},
                {RUN_CKPT_MS, "checkpoint-ms"}};
    for (size_t i = 0; i < 2; i++) {
        if (a.val[ckpt[i].opt] == NULL) {
            continue;
        }
        rc = keel__cli_parse_u64("run", ckpt[i].name, a.val[ckpt[i].opt], 1,
                                 UINT32_MAX, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        *(i == 0 ? &j->checkpoint_cranks : &j->checkpoint_ms) = (uint32_t)n;
    }
    if (a.val[RUN_STORE_MAX] != NULL) {
        rc =
            parse_size("run", "store-max", a.val[RUN_STORE_MAX], &j->store_max);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
    }
    j->obs.metrics_listen = a.val[RUN_METRICS_LISTEN];
    j->obs.metrics_allow_remote = a.val[RUN_METRICS_REMOTE] != NULL;
    j->obs.event_log = a.val[RUN_EVENT_LOG];
    j->obs.event_log_keep = 5;
    if (a.val[RUN_EVENT_LOG_MAX] != NULL &&
        strcmp(a.val[RUN_EVENT_LOG_MAX], "0") != 0) {
        rc = parse_size("run", "event-log-max-bytes", a.val[RUN_EVENT_LOG_MAX],
                        &j->obs.event_log_max_bytes);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
    }
    if (a.val[RUN_EVENT_LOG_KEEP] != NULL) {
        rc = keel__cli_parse_u64("run", "event-log-keep",
                                 a.val[RUN_EVENT_LOG_KEEP], 0, 1000, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        j->obs.event_log_keep = (uint32_t)n;
    }
    if ((a.val[RUN_EVENT_LOG_MAX] != NULL || a.val[RUN_EVENT_LOG_KEEP]) &&
        j->obs.event_log == NULL) {
        rc = keel__cli_usage_error("run", "--event-log-max-bytes and "
                                          "--event-log-keep need --event-log");
        goto out;
    }
    if (j->obs.metrics_allow_remote && j->obs.metrics_listen == NULL) {
        rc = keel__cli_usage_error("run", "--metrics-allow-remote needs "
                                          "--metrics-listen");
        goto out;
    }
    j->snapshot_dir = a.val[RUN_SNAP_DIR];
    j->deterministic = a.val[RUN_DETERMINISTIC] != NULL;
    j->no_control = a.val[RUN_NO_CONTROL] != NULL || j->deterministic;
    if (a.val[RUN_SNAP_EVERY] != NULL) {
        rc = keel__cli_parse_u64("run", "snapshot-every", a.val[RUN_SNAP_EVERY],
                                 1, UINT64_MAX, &j->snapshot_every);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
    }
    if (a.val[RUN_KEEP] != NULL) {
        rc = keel__cli_parse_u64("run", "keep", a.val[RUN_KEEP], 1, UINT32_MAX,
                                 &n);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        j->keep = (uint32_t)n;
    }
    if ((j->snapshot_every != 0) != (j->snapshot_dir != NULL) ||
        (j->keep != 0 && j->snapshot_every == 0)) {
        rc = keel__cli_usage_error("run", "--snapshot-every and --snapshot-dir "
                                          "go together; --keep needs them");
        goto out;
    }
    struct stat st;
    j->is_new = stat(j->state, &st) != 0 && errno == ENOENT;
    /* K3: refuse before keel_kernel_open creates an empty STATE */
    if (j->config_path == NULL && j->is_new) {
        rc = keel__cli_usage_error("run", "%s is new: --config is required",
                                   j->state);
        goto out;
    }
    if (j->snapshot_dir != NULL && mkdir(j->snapshot_dir, 0755) != 0 &&
        errno != EEXIST) {
        fprintf(stderr, "keel: run: %s: %s\n", j->snapshot_dir,
                strerror(errno));
        rc = KEEL_CLI_FAIL;
    }
out:
    return rc;
}

/* Boot a new STATE from the config, or note that a given one is unused. */
static int boot_or_resume(keel_kernel *k, run_job *j)
{
    keel_diag d = {0};
    char *dir_copy = NULL;
    int rc = KEEL_CLI_OK;
    if (keel_kernel_booted(k)) {
        if (j->config_path != NULL) {
            fprintf(stderr, "keel: run: %s already booted; --config ignored\n",
                    j->state);
        }
        goto out;
    }
    if (j->config_path == NULL) {
        rc = keel__cli_usage_error("run", "%s is new: --config is required",
                                   j->state);
        goto out;
    }
    if (j->config_text == NULL &&
        (rc = keel__cli_read_config("run", j->config_path, &j->config_text)) !=
            KEEL_CLI_OK) {
        goto out;
    }
    dir_copy = strdup(j->config_path);
    if (dir_copy == NULL) {
        fprintf(stderr, "keel: run: out of memory\n");
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    int err = keel_kernel_boot(k, j->config_text, dirname(dir_copy), &d);
    if (err == KEEL_EINVAL) {
        /* a config error names its JSON path; say which file it is in */
        fprintf(stderr, "keel: run: %s: %s\n", j->config_path,
                keel__cli_diag_msg(&d, err));
        rc = KEEL_CLI_FAIL;
    } else if (err < 0) {
        rc = kernel_failed("run", &d, err);
    }
    j->booted_now = rc == KEEL_CLI_OK;
out:
    free(dir_copy);
    return rc;
}

/* Why the run stopped, for the summary. */
static const char *stop_reason(const run_job *j)
{
    const char *why = "stopped";
    if (j->stats.idle) {
        why = "idle";
    } else if (j->stats.timed_out) {
        why = "timeout";
    } else if (stop_signal == CONTROL_STOP) {
        why = "control";
    } else if (stop_signal != 0) {
        why = "signal";
    } else if (j->ro.max_cranks != 0 &&
               j->stats.cranks + j->stats.aborted >= j->ro.max_cranks) {
        why = "max-cranks";
    }
    return why;
}

static const char *signal_name(int signo)
{
    return signo == SIGINT ? "SIGINT" : signo == SIGTERM ? "SIGTERM" : NULL;
}

static int run_summary(keel_kernel *k, const run_job *j)
{
    json_t *st = NULL;
    int rc = status_object("run", k, &st);
    if (rc != KEEL_CLI_OK) {
        goto out;
    }
    const char *why = stop_reason(j);
    const char *sig = signal_name(stop_signal);
    double secs = j->stats.seconds;
    double rate = secs > 0 ? (double)j->stats.cranks / secs : 0.0;
    uint64_t durable = status_u64(st, "durable_lsn");
    /* the status's spelling, so the two commands' hashes compare */
    const char *hash = status_str(st, "activity_hash");
    uint64_t crank = keel_kernel_crank_number(k);
    const char *how = j->booted_now ? "booted" : "resumed";
    if (j->json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:I, s:s}",
            "stopped", why, "state", how, "cranks", (json_int_t)j->stats.cranks,
            "aborted", (json_int_t)j->stats.aborted, "transactions",
            (json_int_t)j->stats.transactions, "deliveries",
            (json_int_t)j->stats.deliveries, "seconds", secs,
            "cranks_per_second", rate, "crank", (json_int_t)crank,
            "durable_lsn", (json_int_t)durable, "activity_hash", hash);
        if (o != NULL && sig != NULL && strcmp(why, "signal") == 0) {
            json_object_set_new(o, "signal", json_string(sig));
        }
        rc = emit_json("run", o);
        goto out;
    }
    if (strcmp(why, "signal") == 0) {
        printf("stopped: by signal %s\n", sig != NULL ? sig : "?");
    } else if (strcmp(why, "idle") == 0) {
        printf("stopped: idle (nothing left to do)\n");
    } else {
        printf("stopped: %s\n", why);
    }
    printf("state: %s %s, now at crank %" PRIu64 "\n", how, j->state, crank);
    printf("cranks: %" PRIu64 "\n", j->stats.cranks);
    printf("aborted: %" PRIu64 " (a delivery failed: its crank was undone "
           "and its vat terminated)\n",
           j->stats.aborted);
    printf("transactions: %" PRIu64 "\n", j->stats.transactions);
    printf("deliveries: %" PRIu64 "\n", j->stats.deliveries);
    printf("time: %.3f s (%.0f cranks/s)\n", secs, rate);
    printf("durable LSN: %" PRIu64 "\n", durable);
    printf("activity hash: %s\n", hash);
out:
    json_decref(st);
    return rc;
}

int keel__cli_run(int argc, char **argv)
{
    run_job j;
    keel_kernel *k = NULL;
    keel_obs *obs = NULL;
    int err = KEEL_OK;
    keel__control *ctl = NULL;
    keel_diag d = {0};
    keel_kernel_options o;
    memset(&j, 0, sizeof(j));
    keel_kernel_options_init(&o);
    j.sync = o.sync;
    int rc = run_parse(argc, argv, &j);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    /* a new STATE needs the config: read it before open creates STATE,
     * so an unreadable one leaves nothing behind; an existing STATE reads
     * it only if it turns out not to be booted */
    if (j.config_path != NULL && j.is_new &&
        (rc = keel__cli_read_config("run", j.config_path, &j.config_text)) !=
            KEEL_CLI_OK) {
        goto out;
    }
    o.sync = j.sync;
    if ((rc = crash_point_from_env("run", &o)) != KEEL_CLI_OK) {
        goto out;
    }
    if (j.checkpoint_cranks != 0) {
        o.checkpoint_cranks = j.checkpoint_cranks;
    }
    if (j.checkpoint_ms != 0) {
        o.checkpoint_ms = j.checkpoint_ms;
    }
    o.deterministic = j.deterministic;
    o.store_max_bytes = j.store_max;
    o.snapshot_every = j.snapshot_every;
    o.snapshot_dir = j.snapshot_dir;
    if (j.keep != 0) {
        o.snapshot_keep = j.keep;
    }
    /* K2: before open, so a signal during recovery or boot stops the run
     * before its first crank instead of killing the process */
    install_stop_handlers();
    j.obs.state_dir = j.state;
    uint16_t port = 0;
    if ((err = keel__obs_start(&j.obs, &o, &obs, &port, &d)) < 0) {
        /* a refused --metrics-listen is the command line's fault (K3) */
        rc = kernel_failed("run", &d, err);
        rc = err == KEEL_EINVAL ? KEEL_CLI_USAGE : rc;
        goto out;
    }
    if (port != 0) {
        const char *c = strrchr(j.obs.metrics_listen, ':');
        fprintf(stderr, "keel: run: metrics at http://%.*s:%u/metrics\n",
                (int)(c - j.obs.metrics_listen), j.obs.metrics_listen,
                (unsigned)port);
    }
    if ((rc = open_state("run", j.state, &o, &k)) != KEEL_CLI_OK) {
        goto out;
    }
    if ((rc = boot_or_resume(k, &j)) != KEEL_CLI_OK) {
        goto out;
    }
    keel__obs_attached(obs, k); /* N1: READY=1 */
    j.ro.stop_flag = &stop_signal;
    if (!j.no_control) { /* K7 */
        keel__control_opts co = {.keep_alive = j.ro.forever,
                                 .stop_flag = &stop_signal,
                                 .stop_value = CONTROL_STOP,
                                 .log = stderr,
                                 .obs = obs};
        int cerr = keel__control_open(k, j.state, &co, &ctl, &d);
        if (cerr < 0) {
            rc = kernel_failed("run", &d, cerr);
            goto out;
        }
    }
    j.tty = isatty(STDERR_FILENO);
    if (j.tty) {
        j.ro.progress = draw_progress;
        j.ro.progress_arg = &j;
    }
    j.started = keel__now_s();
    err = keel_kernel_run(k, &j.ro, &j.stats, &d);
    if (j.drew) {
        fputs("\r\033[K", stderr);
    }
    if (err < 0) {
        rc = kernel_failed("run", &d, err);
        goto out;
    }
    /* K1 */
    if ((err = keel_kernel_wait_durable(k, &d)) < 0) {
        rc = kernel_failed("run", &d, err);
        goto out;
    }
    keel__obs_stopping(obs);  /* N3: STOPPING=1 */
    keel__control_close(ctl); /* K7: what it answers is durable */
    ctl = NULL;
    rc = run_summary(k, &j);
out:
    keel__control_close(ctl);
    if (obs != NULL) {
        keel__obs_stopping(obs);
    }
    rc = close_kernel("run", k, rc);
    keel__obs_free(obs, rc == KEEL_CLI_OK); /* OB1 */
    free(j.config_text);
    return rc;
}

/* ---------------------------------------------------------------- status */

enum { STATUS_JSON, STATUS_NOPTS };

static const keel_cli_opt status_opts[STATUS_NOPTS] = {
    [STATUS_JSON] = {"json", NULL},
};

static const keel_cli_spec status_spec = {
    .command = "status",
    .help =
        "usage: keel status STATE [--json]\n"
        "\n"
        "Show the kernel in state directory STATE: crank number, applied\n"
        "and durable LSN, run-queue length, vats (alive or terminated),\n"
        "unresolved promises, activity hash and kernel id.\n"
        "\n"
        "Read-only: no byte under STATE changes, damaged or not. The log\n"
        "after the store's checkpoint is replayed into memory only (no\n"
        "checkpoint, no vat started, a torn tail reported and left for the\n"
        "next writer to truncate). Damage to a record the checkpoint proves\n"
        "acknowledged is reported as such (exit 1). STATE must exist, and no\n"
        "writer may be using it (a running `keel run` holds its lock).\n"
        "\n"
        "Options:\n"
        "  --json   print the kernel's status object as one line\n"
        "\n"
        "Exit status: 0 success; 1 no such STATE, locked, corrupt or\n"
        "unreadable; 2 usage error.\n",
    .opts = status_opts,
    .nopts = STATUS_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

/* The readable form of the kernel's status object (see kernel/run.c). */
static void print_status(const json_t *st)
{
    const json_t *vats = json_object_get(st, "vats");
    const json_t *v;
    size_t i, alive = 0;
    json_array_foreach(vats, i, v)
    {
        alive += strcmp(status_str(v, "state"), "alive") == 0;
    }
    printf("booted: %s\n",
           json_is_true(json_object_get(st, "booted")) ? "yes" : "no");
    printf("crank: %" PRIu64 "\n", status_u64(st, "crank"));
    printf("applied LSN: %" PRIu64 "\n", status_u64(st, "applied_lsn"));
    printf("durable LSN: %" PRIu64 "\n", status_u64(st, "durable_lsn"));
    printf("run queue: %" PRIu64 "\n", status_u64(st, "run_queue"));
    printf("unresolved promises: %" PRIu64 "\n",
           status_u64(st, "unresolved_promises"));
    printf("activity hash: %s\n", status_str(st, "activity_hash"));
    printf("kernel id: %s\n", status_str(st, "kernel_id"));
    printf("timeline: %s (parent %s, branched after LSN %" PRIu64 ")\n",
           status_str(st, "timeline"), status_str(st, "timeline_parent"),
           status_u64(st, "timeline_branch_lsn"));
    printf("vats: %zu (%zu alive, %zu terminated)\n", json_array_size(vats),
           alive, json_array_size(vats) - alive);
    json_array_foreach(vats, i, v)
    {
        printf("  v%" PRIu64 " %s: %s\n", status_u64(v, "id"),
               status_str(v, "name"), status_str(v, "state"));
    }
}

int keel__cli_status(int argc, char **argv)
{
    keel_cli_args a;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    keel_kernel_options o;
    json_t *st = NULL;
    int rc = keel__cli_parse(&status_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    int fd = -1;
    int live = keel__ctl_find("status", a.pos[0], &fd); /* K7 */
    if (live != 0) {
        json_t *ans = NULL;
        rc = KEEL_CLI_FAIL;
        if (live > 0 &&
            keel__ctl_call("status", fd, json_pack("{s:s}", "op", "status"),
                           &ans) == 0) {
            if (json_is_true(json_object_get(ans, "ok"))) {
                st = json_incref(json_object_get(ans, "status"));
                rc = st != NULL ? KEEL_CLI_OK : KEEL_CLI_FAIL;
            } else {
                keel__ctl_failed("status", ans);
            }
        }
        json_decref(ans);
        if (fd >= 0) {
            close(fd);
        }
        if (rc != KEEL_CLI_OK) {
            goto out;
        }
    } else {
        keel_kernel_options_init(&o);
        o.create = 0;
        o.read_only = 1; /* DESIGN §2.7: status changes nothing */
        if ((rc = open_state("status", a.pos[0], &o, &k)) != KEEL_CLI_OK) {
            goto out;
        }
        /* K1: what it shows is on disk (read-only: the WAL was synced) */
        int err = keel_kernel_wait_durable(k, &d);
        if (err < 0) {
            rc = kernel_failed("status", &d, err);
            goto out;
        }
        if ((rc = status_object("status", k, &st)) != KEEL_CLI_OK) {
            goto out;
        }
    }
    if (a.val[STATUS_JSON] != NULL) {
        rc = emit_json("status", st);
        st = NULL;
    } else {
        print_status(st);
    }
out:
    rc = close_kernel("status", k, rc);
    json_decref(st);
    return rc;
}

/* ------------------------------------------------------------------ send */

enum { SEND_WAIT, SEND_TIMEOUT_MS, SEND_JSON, SEND_NOPTS };

static const keel_cli_opt send_opts[SEND_NOPTS] = {
    [SEND_WAIT] = {"wait", NULL},
    [SEND_TIMEOUT_MS] = {"timeout-ms", "N"},
    [SEND_JSON] = {"json", NULL},
};

static const keel_cli_spec send_spec = {
    .command = "send",
    .help =
        "usage: keel send STATE VAT METHOD ARGS_JSON [--wait] "
        "[--timeout-ms N]\n"
        "                 [--json]\n"
        "\n"
        "Queue METHOD(ARGS_JSON) to the root object (o+0) of vat VAT of the\n"
        "kernel in STATE, from outside, as its own kernel transaction with\n"
        "a fresh result promise. METHOD is 1 to 255 bytes of UTF-8\n"
        "(KEEL_METHOD_MAX). ARGS_JSON is the message's capdata body; it\n"
        "must be valid JSON (it carries no slots). No cranks run: the\n"
        "promise's kref is printed once the message is durable:\n"
        "  queued: kp12\n"
        "A later `keel run STATE` delivers it.\n"
        "\n"
        "With --wait, the kernel then runs, one crank at a time, until that\n"
        "promise settles (or nothing is left to do, or --timeout-ms, or\n"
        "SIGINT/SIGTERM), and the settlement is printed once durable:\n"
        "  fulfilled: BODY     or     rejected: BODY\n"
        "Work queued before the message runs first (the run queue is FIFO).\n"
        "\n"
        "STATE must exist and be booted, and no other keel process may be\n"
        "using it (a running `keel run` holds its lock).\n"
        "\n"
        "Options:\n"
        "  --wait           run until the result settles, print it\n"
        "  --timeout-ms N   with --wait: give up after N milliseconds\n"
        "  --json           one JSON object: {\"promise\": \"kp12\", "
        "\"state\":\n"
        "                   \"queued\"|\"fulfilled\"|\"rejected\", \"body\": "
        "...}\n"
        "                   (body: the JSON value, or a string when the\n"
        "                   body is not JSON)\n"
        "\n"
        "Environment: KEEL_CRASH_POINT, as for `keel run`.\n"
        "\n"
        "Exit status: 0 queued, or (--wait) settled, fulfilled or rejected;\n"
        "1 the kernel refused or failed (no such STATE or vat, locked), or\n"
        "the result was still unresolved after the run; 2 usage error\n"
        "(including a METHOD that is not UTF-8 or too long, and ARGS_JSON\n"
        "that is not JSON).\n",
    .opts = send_opts,
    .nopts = SEND_NOPTS,
    .min_pos = 4,
    .max_pos = 4,
    .pos = "STATE VAT METHOD ARGS_JSON",
};

/* Run until kpref settles. @return its state (0, 1, 2) or < 0; body set
 * when settled; *why says what ended a run that left it unresolved. One
 * crank per keel_kernel_run so the run stops as soon as the promise
 * settles, rather than draining unrelated work. */
static int run_until_settled(keel_kernel *k, const char *kpref,
                             uint64_t timeout_ms, char **body, const char **why,
                             keel_diag *d)
{
    keel_run_options ro;
    keel_run_stats stats;
    double deadline = keel__now_s() + (double)timeout_ms / 1000.0;
    int state = keel_kernel_promise(k, kpref, body, d);
    memset(&stats, 0, sizeof(stats));
    *why = "nothing was left to run";
    while (state == 0 && !stats.idle) {
        memset(&ro, 0, sizeof(ro));
        ro.max_cranks = 1;
        ro.stop_flag = &stop_signal;
        double left_ms = (deadline - keel__now_s()) * 1000.0;
        if (stop_signal != 0) {
            *why = "stopped by a signal";
            break;
        }
        if (timeout_ms != 0 && (left_ms < 1.0 || stats.timed_out)) {
            *why = "--timeout-ms reached";
            break;
        }
        if (timeout_ms != 0) {
            ro.timeout_ms = (uint64_t)left_ms;
        }
        int err = keel_kernel_run(k, &ro, &stats, d);
        if (err < 0) {
            state = err;
            break;
        }
        state = keel_kernel_promise(k, kpref, body, d);
    }
    return state;
}

static int print_settled(const char *kpref, int state, const char *body,
                         int json)
{
    int rc = KEEL_CLI_OK;
    const char *word = state == 0   ? "queued"
                       : state == 1 ? "fulfilled"
                                    : "rejected";
    if (json) {
        json_t *o = json_pack("{s:s, s:s}", "promise", kpref, "state", word);
        if (o != NULL && body != NULL) {
            json_t *b = json_loads(body, JSON_DECODE_ANY, NULL);
            json_object_set_new(o, "body", b != NULL ? b : json_string(body));
        }
        rc = emit_json("send", o);
    } else if (state == 0) {
        printf("queued: %s\n", kpref);
    } else {
        printf("%s: %s\n", word, body);
    }
    return rc;
}

/* K7: the send over a live kernel's socket; the kernel answers once the
 * message (and, with --wait, its settlement) is durable (K1). */
static int live_send(int fd, const keel_cli_args *a, json_t *args,
                     uint64_t timeout_ms)
{
    int wait = a->val[SEND_WAIT] != NULL;
    json_t *ans = NULL;
    int rc = KEEL_CLI_FAIL;
    json_t *req =
        json_pack("{s:s, s:s, s:s, s:o, s:b}", "op", "send", "vat", a->pos[1],
                  "method", a->pos[2], "args", args, "wait", wait);
    if (keel__ctl_call("send", fd, req, &ans) < 0) {
        return KEEL_CLI_FAIL;
    }
    if (!json_is_true(json_object_get(ans, "ok"))) {
        rc = keel__ctl_failed("send", ans);
        json_decref(ans);
        return rc;
    }
    char kpref[KEEL_VREF_MAX];
    snprintf(kpref, sizeof(kpref), "%s",
             json_string_value(json_object_get(ans, "promise")));
    json_int_t id = json_integer_value(json_object_get(ans, "id"));
    json_decref(ans);
    if (!wait) {
        return print_settled(kpref, 0, NULL, a->val[SEND_JSON] != NULL);
    }
    double deadline = keel__now_s() + (double)timeout_ms / 1000.0;
    for (;;) {
        int left = 0;
        if (timeout_ms != 0) {
            double l = (deadline - keel__now_s()) * 1000.0;
            left = l < 1.0 ? 1 : (int)l;
        }
        int got = keel__ctl_read(fd, &ans, left);
        if (got <= 0) {
            fprintf(stderr, "keel: send: result %s still unresolved (%s)\n",
                    kpref,
                    got == 0 ? "the kernel closed the connection"
                             : "--timeout-ms reached");
            return KEEL_CLI_FAIL;
        }
        if (json_integer_value(json_object_get(ans, "id")) == id) {
            break;
        }
        json_decref(ans);
    }
    if (!json_is_true(json_object_get(ans, "ok"))) {
        rc = keel__ctl_failed("send", ans);
    } else {
        const char *word = json_string_value(json_object_get(ans, "state"));
        json_t *b = json_object_get(ans, "body");
        char *body =
            b != NULL ? json_dumps(b, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        int state = word != NULL && strcmp(word, "fulfilled") == 0 ? 1 : 2;
        rc = print_settled(kpref, state, body, a->val[SEND_JSON] != NULL);
        free(body);
    }
    json_decref(ans);
    return rc;
}

int keel__cli_send(int argc, char **argv)
{
    keel_cli_args a;
    keel_kernel *k = NULL;
    keel_diag d = {0};
    keel_kernel_options o;
    json_error_t jerr;
    char kpref[KEEL_VREF_MAX];
    char *body = NULL;
    const char *why = NULL;
    uint64_t timeout_ms = 0;
    int rc = keel__cli_parse(&send_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[SEND_TIMEOUT_MS] != NULL) {
        rc = keel__cli_parse_u64("send", "timeout-ms", a.val[SEND_TIMEOUT_MS],
                                 1, UINT64_MAX, &timeout_ms);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
        if (a.val[SEND_WAIT] == NULL) {
            rc = keel__cli_usage_error("send", "--timeout-ms needs --wait");
            goto out;
        }
    }
    char bad[64];
    if (keel__k_method_check(a.pos[2], bad, sizeof(bad)) != KEEL_OK) {
        rc = keel__cli_usage_error("send", "METHOD %s", bad);
        goto out;
    }
    json_t *args = json_loads(a.pos[3], JSON_DECODE_ANY, &jerr);
    if (args == NULL) {
        rc = keel__cli_usage_error("send", "ARGS_JSON is not JSON: %s",
                                   jerr.text);
        goto out;
    }
    int fd = -1;
    int live = keel__ctl_find("send", a.pos[0], &fd); /* K7 */
    if (live != 0) {
        if (live > 0) {
            rc = live_send(fd, &a, args, timeout_ms); /* takes args */
        } else {
            json_decref(args);
            rc = KEEL_CLI_FAIL;
        }
        if (fd >= 0) {
            close(fd);
        }
        goto out;
    }
    json_decref(args);
    keel_kernel_options_init(&o);
    o.create = 0;
    if ((rc = crash_point_from_env("send", &o)) != KEEL_CLI_OK) {
        goto out;
    }
    if ((rc = open_state("send", a.pos[0], &o, &k)) != KEEL_CLI_OK) {
        goto out;
    }
    rc = KEEL_CLI_FAIL;
    int err = keel_kernel_send(k, a.pos[1], a.pos[2], a.pos[3], kpref, &d);
    if (err < 0) {
        rc = kernel_failed("send", &d, err);
        goto out;
    }
    int state = 0;
    if (a.val[SEND_WAIT] != NULL) {
        install_stop_handlers();
        state = run_until_settled(k, kpref, timeout_ms, &body, &why, &d);
        if (state < 0) {
            rc = kernel_failed("send", &d, state);
            goto out;
        }
    }
    /* K1 */
    if ((err = keel_kernel_wait_durable(k, &d)) < 0) {
        rc = kernel_failed("send", &d, err);
        goto out;
    }
    if (a.val[SEND_WAIT] != NULL && state == 0) {
        fprintf(stderr,
                "keel: send: result %s still unresolved after the run (%s)\n",
                kpref, why);
        goto out;
    }
    rc = print_settled(kpref, state, body, a.val[SEND_JSON] != NULL);
    if (rc == KEEL_CLI_OK) {
        /* The answer above is durable (K1): a checkpoint failing at close
         * (a full store or disk) does not undo it, and the next open
         * replays the log. Say so, and do not report the send failed. */
        keel_diag cd = {0};
        int cerr = keel_kernel_close(k, &cd);
        k = NULL;
        if (cerr < 0) {
            fprintf(stderr,
                    "keel: send: warning: %s is durable in the log, but the "
                    "store could not checkpoint afterwards: %s (the next "
                    "open replays the log)\n",
                    kpref, cd.msg[0] != '\0' ? cd.msg : keel_strerror(cerr));
        }
    }
out:
    rc = close_kernel("send", k, rc);
    free(body);
    return rc;
}
