/*
 * recovery/crashtest.c — crash-injection trials (contract in crashtest.h).
 *
 * Layout of a session's scratch directory (work_dir/keel-crashtest-XXXXXX):
 *     ref/        the reference run's state (kept: corruption base 3)
 *     again/      the second uninterrupted run (removed at once)
 *     t/          the state of the trial under way
 *     base0..2/   corruption bases: states crashed at 1/4, 2/4, 3/4 of the
 *                 crash points, power loss applied
 *     snap.ksnap  a snapshot of base0 (corruption)
 *     keel-run.out, keel-run.err   process mode: the child's output
 *     failed-<mode>-<trial>/      kept failed states (keep_failed)
 *
 * The harness's own file work (scratch directories, copies, the damage of
 * corruption trials) uses plain POSIX on purpose, as common/io_fault.c
 * does: it is the test acting on the files, not keel's I/O; everything
 * keel itself does goes through the kernel, the fault layer included.
 *
 * Invariants:
 *   T1  Every run of the cluster, reference or trial, uses the same kernel
 *       options (kernel_options()): deterministic mode, sync=full,
 *       checkpoints by count only. So the same transactions happen in the
 *       same order and the WAL I/O operations of a run from scratch are
 *       the same, op for op, until a crash: crash point k of a trial is
 *       the reference's k-th operation.
 *   T2  "Reported durable" is what keel_kernel_boot() and the
 *       keel_kernel_run() calls that returned KEEL_OK had committed (K22;
 *       under sync=full each commit is durable when it returns), counted
 *       on from the log's end at open. A crashed child never reports
 *       more: the call the crash broke adds nothing.
 *   T3  A trial stops at its first violation, and every violation gets
 *       the reproduction line of its trial; counts in the report are per
 *       trial.
 *   T4  No kernel is open in this process across a fork(): LMDB forbids
 *       using an environment in a child, and a trial's child opens its
 *       own.
 *   T5  The reference's hashes are read from its log (each record puts
 *       k.hash, see kernel.c K12), so hash[L] is the activity hash of the
 *       state after exactly the first L transactions.
 */
#include "recovery/crashtest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/diag.h"
#include "common/io_fault.h"
#include "keel/kernel.h"
#include "keel/recovery.h"
#include "keel/snapshot.h"
#include "keel/wal.h"
#include "store/keyspace.h"
#include "store/writeset_format.h"

extern char **environ;

#define DEFAULT_PROCESS_TRIALS    200
#define DEFAULT_CORRUPTION_TRIALS 1000
#define DEFAULT_CHECKPOINT_CRANKS 64
#define DEFAULT_SEGMENT_BYTES     (64u * 1024)
/* Corruption bases crashed at 1/4, 2/4 and 3/4 of the crash points, plus
 * the finished reference. */
#define CRASHED_BASES 3
/* A child taking this much longer than the reference run is hung. */
#define DEADLINE_FACTOR 50
#define DEADLINE_MIN_MS 60000
/* Room for the scratch directory's own paths below PATH_MAX. */
#define WORK_DIR_MAX 1024

struct keel__crashtest {
    keel__crashtest_options o;
    char *dir;        /* the scratch directory */
    char *config_dir; /* o.config_dir or derived (owned) */
    keel__crashtest_reference ref;
    uint64_t *hash; /* T5: hash[L], L = 0..ref.transactions */
    char *result;   /* the reference's (result_of) */
    int bases_made; /* corruption: base0..2 and snap.ksnap exist */
    uint64_t snap_lsn;
};

/* One trial under way (T3). */
typedef struct trial {
    keel__crashtest *ct;
    keel__crashtest_report *rep;
    int mode;
    uint64_t n;
    uint64_t rng;
    int failed;
    char ctx[192]; /* what the trial did, leading its violations */
    char state[PATH_MAX];
} trial;

double keel__crashtest_now_s(void)
{
    return keel__now_s();
}

uint64_t keel__crashtest_rand(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

const char *keel__crashtest_mode_name(int mode)
{
    switch (mode) {
    case KEEL__CRASHTEST_ENUMERATE:
        return "enumerate";
    case KEEL__CRASHTEST_PROCESS:
        return "process";
    case KEEL__CRASHTEST_CORRUPTION:
        return "corruption";
    default:
        return "?";
    }
}

int keel__crashtest_mode_parse(const char *s, int *mode)
{
    for (int m = KEEL__CRASHTEST_ENUMERATE; m <= KEEL__CRASHTEST_CORRUPTION;
         m++) {
        if (strcmp(s, keel__crashtest_mode_name(m)) == 0) {
            *mode = m;
            return KEEL_OK;
        }
    }
    return KEEL_EINVAL;
}

void keel__crashtest_options_init(keel__crashtest_options *o)
{
    memset(o, 0, sizeof(*o));
    o->checkpoint_cranks = DEFAULT_CHECKPOINT_CRANKS;
    o->wal_segment_bytes = DEFAULT_SEGMENT_BYTES;
}

/* ---- files ---------------------------------------------------------------
 */

/* dir/name into buf. Scratch paths are bounded (WORK_DIR_MAX, names of
 * a few bytes, and states hold only keel's own short names), so a cut is a
 * programmer error. */
static void join(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    KEEL_ASSERT(n > 0 && (size_t)n < cap);
}

int keel__crashtest_rmtree(const char *path)
{
    int rc = KEEL_OK;
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? KEEL_OK : keel_translate_errno(errno);
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            char sub[PATH_MAX];
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            join(sub, sizeof(sub), path, e->d_name);
            int r = keel__crashtest_rmtree(sub);
            rc = rc == KEEL_OK ? r : rc;
        }
        if (d != NULL) {
            closedir(d);
        }
        if (rmdir(path) != 0 && rc == KEEL_OK) {
            rc = keel_translate_errno(errno);
        }
    } else if (unlink(path) != 0) {
        rc = keel_translate_errno(errno);
    }
    return rc;
}

static int copy_file(const char *from, const char *to)
{
    int rc = KEEL_OK;
    char buf[65536];
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in < 0 || out < 0) {
        rc = keel_translate_errno(errno);
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = n < 0 ? keel_translate_errno(errno) : KEEL_OK;
            break;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR) {
                rc = keel_translate_errno(errno);
                goto out;
            }
            done += w > 0 ? w : 0;
        }
    }
out:
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return rc;
}

/* cp -r from to (directories and regular files). */
static int copy_tree(const char *from, const char *to)
{
    int rc = KEEL_OK;
    struct stat st;
    if (stat(from, &st) != 0) {
        return keel_translate_errno(errno);
    }
    if (!S_ISDIR(st.st_mode)) {
        return S_ISREG(st.st_mode) ? copy_file(from, to) : KEEL_OK;
    }
    if (mkdir(to, 0755) != 0) {
        return keel_translate_errno(errno);
    }
    DIR *d = opendir(from);
    struct dirent *e;
    if (d == NULL) {
        return keel_translate_errno(errno);
    }
    while (rc == KEEL_OK && (e = readdir(d)) != NULL) {
        char a[PATH_MAX], b[PATH_MAX];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        join(a, sizeof(a), from, e->d_name);
        join(b, sizeof(b), to, e->d_name);
        rc = copy_tree(a, b);
    }
    closedir(d);
    return rc;
}

/* /dev/shm when usable (see work_dir in crashtest.h), else $TMPDIR, /tmp. */
const char *keel__crashtest_default_work_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    if (access("/dev/shm", W_OK | X_OK) == 0) {
        return "/dev/shm";
    }
    return tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp";
}

/* ---- running the cluster --------------------------------------------------
 */

/* T1: the options of every run. */
static void kernel_options(const keel__crashtest *ct, keel_io *io, int create,
                           keel_kernel_options *ko)
{
    keel_kernel_options_init(ko);
    ko->sync = KEEL_SYNC_FULL;
    ko->checkpoint_cranks = ct->o.checkpoint_cranks;
    /* by count only: a checkpoint by time would land elsewhere each run */
    ko->checkpoint_ms = UINT32_MAX;
    ko->create = create;
    ko->io = io;
    ko->resolve_vat = ct->o.resolve_vat;
    ko->resolve_arg = ct->o.resolve_arg;
    ko->deterministic = 1;
    ko->wal_segment_bytes = ct->o.wal_segment_bytes;
}

/* The kernel's status, parsed. @return KEEL_OK or < 0 (diag). */
static int status_of(keel_kernel *k, json_t **out, keel_diag *diag)
{
    char *text = NULL;
    int rc = keel_kernel_status_json(k, &text, diag);
    *out = NULL;
    if (rc == KEEL_OK) {
        *out = json_loads(text, 0, NULL);
        rc = *out != NULL ? KEEL_OK
                          : keel__diag(diag, KEEL_ECORRUPT,
                                       "the kernel's status is not JSON");
    }
    free(text);
    return rc;
}

/* The result a run is compared by: its status without what differs
 * between kernels that did the same work (kernel id, durable and applied
 * LSN, which depend on checkpoints and syncs). */
static int result_of(keel_kernel *k, char **out, keel_diag *diag)
{
    json_t *st = NULL;
    int rc = status_of(k, &st, diag);
    if (rc == KEEL_OK) {
        json_t *r =
            json_pack("{s:O, s:O, s:O, s:O, s:O, s:O}", "crank",
                      json_object_get(st, "crank"), "last_lsn",
                      json_object_get(st, "last_lsn"), "run_queue",
                      json_object_get(st, "run_queue"), "unresolved_promises",
                      json_object_get(st, "unresolved_promises"), "vats",
                      json_object_get(st, "vats"), "activity_hash",
                      json_object_get(st, "activity_hash"));
        *out = r != NULL ? json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (*out == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "result: out of memory");
        }
        json_decref(r);
    }
    json_decref(st);
    return rc;
}

/* How a run from drive() ended. */
typedef struct drive_out {
    uint64_t durable; /* T2 */
    char *result;     /* with want_result: at the end of the run
                         (result_of; the caller frees it) */
} drive_out;

/*
 * Open state (recovering it), boot it if it never was, run it until idle
 * one crank (or async completion) per keel_kernel_run() call so that the
 * durable LSN is known after each (T2), then close it. With abandon, a
 * failure leaves the kernel as it is (a crash does not close anything):
 * only for a child about to exit.
 *
 * Under sync=full a commit is durable when it returns, so the durable LSN
 * after a call is the log's end at open, plus the boot, plus the
 * transactions the calls so far committed (keel_run_stats).
 */
static int drive(const keel__crashtest *ct, const char *state, keel_io *io,
                 int want_result, int abandon, drive_out *out, keel_diag *diag)
{
    keel_kernel_options ko;
    keel_kernel *k = NULL;
    keel_run_options ro = {.max_cranks = 1};
    keel_run_stats rs;
    keel_kernel_recovery info;
    memset(out, 0, sizeof(*out));
    kernel_options(ct, io, 1, &ko);
    int rc = keel_kernel_open(state, &ko, &k, diag);
    if (rc < 0) {
        goto out;
    }
    keel_kernel_recovery_info(k, &info);
    out->durable = info.wal_last_lsn;
    if (!keel_kernel_booted(k)) {
        rc = keel_kernel_boot(k, ct->o.config_json, ct->config_dir, diag);
        if (rc < 0) {
            goto out;
        }
        out->durable++; /* one kernel-op transaction */
    }
    do {
        rc = keel_kernel_run(k, &ro, &rs, diag);
        if (rc < 0) {
            goto out;
        }
        out->durable += rs.transactions;
    } while (!rs.idle);
    if (want_result) {
        rc = result_of(k, &out->result, diag);
        if (rc < 0) {
            goto out;
        }
    }
    rc = keel_kernel_close(k, diag);
    k = NULL;
out:
    if (!abandon) {
        keel_kernel_close(k, NULL);
    }
    return rc;
}

/* ---- children ---------------------------------------------------------- */

enum child_kind {
    CHILD_CRASHED = 1,  /* the fault layer fired, power loss applied */
    CHILD_FINISHED = 2, /* ran to the end without reaching the point */
    CHILD_FAILED = 3,   /* failed with no crash, or the model failed */
};

/* What a crash child reports through its pipe. */
typedef struct child_msg {
    int32_t kind;
    uint64_t durable;
    char what[480];
} child_msg;

static uint64_t deadline_ms(const keel__crashtest *ct)
{
    uint64_t ms = (uint64_t)(ct->ref.seconds * 1000.0 * DEADLINE_FACTOR);
    return ms > DEADLINE_MIN_MS ? ms : DEADLINE_MIN_MS;
}

/* In the child: run state with a crash after WAL I/O operation k (0: no
 * crash), model the power loss keeping keep_bytes, report, exit. */
static _Noreturn void crash_child_main(const keel__crashtest *ct,
                                       const char *state, uint64_t k,
                                       uint64_t keep_bytes, int fd)
{
    keel_io_fault *f = NULL;
    keel_diag d = {0};
    drive_out out = {0};
    child_msg msg = {0};
    int rc = keel__io_fault_new(&f);
    if (rc == KEEL_OK) {
        keel_io_fault_plan plan = {
            .kind = KEEL_IO_FAULT_CRASH_AFTER, .op = KEEL_IO_OP_ANY, .nth = k};
        keel__io_fault_set_plan(f, &plan);
        rc = drive(ct, state, keel__io_fault_io(f), 0, 1, &out, &d);
    }
    msg.durable = out.durable;
    if (f != NULL && keel__io_fault_crashed(f)) {
        msg.kind = CHILD_CRASHED;
        rc = keel__io_fault_power_loss(f, keep_bytes);
        if (rc < 0) {
            msg.kind = CHILD_FAILED;
            keel__diag(&d, rc, "the power-loss model failed: %s",
                       keel_strerror(rc));
        }
    } else {
        msg.kind = rc < 0 ? CHILD_FAILED : CHILD_FINISHED;
    }
    snprintf(msg.what, sizeof(msg.what), "%.*s", (int)sizeof(msg.what) - 1,
             d.msg);
    ssize_t w = write(fd, &msg, sizeof(msg));
    _exit(w == (ssize_t)sizeof(msg) ? 0 : 1);
}

/*
 * Run crash_child_main() in a forked child (T4) and collect its report.
 * @return KEEL_OK with *msg filled (kind 0: the child died without
 *         reporting; *what says how), or < 0 if it could not be run.
 */
static int crash_child(const keel__crashtest *ct, const char *state, uint64_t k,
                       uint64_t keep_bytes, child_msg *msg, keel_diag *diag)
{
    int fds[2];
    int rc = KEEL_OK;
    int st = 0;
    memset(msg, 0, sizeof(*msg));
    if (pipe(fds) != 0) {
        return keel__diag(diag, keel_translate_errno(errno), "pipe: %s",
                          strerror(errno));
    }
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "fork: %s",
                        strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return rc;
    }
    if (pid == 0) {
        close(fds[0]);
        crash_child_main(ct, state, k, keep_bytes, fds[1]);
    }
    close(fds[1]);
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int ready = 0;
    do {
        ready = poll(&pfd, 1, (int)deadline_ms(ct));
    } while (ready < 0 && errno == EINTR);
    ssize_t got = 0;
    if (ready > 0) {
        got = read(fds[0], msg, sizeof(*msg));
    } else {
        kill(pid, SIGKILL); /* hung */
    }
    close(fds[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got != (ssize_t)sizeof(*msg)) {
        memset(msg, 0, sizeof(*msg));
        if (ready == 0) {
            snprintf(msg->what, sizeof(msg->what),
                     "the child was still running after %" PRIu64
                     " ms: hung, killed",
                     deadline_ms(ct));
        } else if (WIFSIGNALED(st)) {
            snprintf(msg->what, sizeof(msg->what),
                     "the child died of signal %d (%s)", WTERMSIG(st),
                     strsignal(WTERMSIG(st)));
        } else {
            snprintf(msg->what, sizeof(msg->what),
                     "the child exited %d without reporting",
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        }
    }
    return KEEL_OK;
}

/* ---- the reference --------------------------------------------------------
 */

/* The value of the k.hash put in an encoded write-set
 * (store/writeset_format.h, read with its one decoder).
 * @return 1 found, 0 absent, KEEL_ECORRUPT malformed. */
int keel__crashtest_payload_hash(const uint8_t *p, size_t len, uint64_t *h)
{
    keel__ws_decoder dec;
    keel__ws_op op;
    int found = 0;
    keel__key hk;
    keel__ks_meta(&hk, KM_HASH); /* store/keyspace.h: a u64 value */
    int rc = keel__ws_decode_begin(&dec, p, len, NULL);
    while (rc >= 0 && (rc = keel__ws_decode_next(&dec, &op, NULL)) == 1) {
        if (op.kind == KEEL__STORE_PUT && op.key_len == hk.n &&
            memcmp(op.key, hk.b, hk.n) == 0 && op.val_len == 8) {
            *h = keel__ks_rd64(op.val);
            found = 1;
        }
    }
    return rc < 0 ? rc : found;
}

/* T5: hash[L] for every L of the reference's log. */
static int read_hashes(keel__crashtest *ct, const char *state, keel_diag *diag)
{
    char wal[PATH_MAX];
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    uint64_t last = 0, h = 0;
    join(wal, sizeof(wal), state, "wal");
    ct->hash = calloc(ct->ref.transactions + 1, sizeof(*ct->hash));
    int rc = ct->hash == NULL ? keel__diag(diag, KEEL_ENOMEM, "out of memory")
                              : keel_wal_reader_open(wal, NULL, 1, &r, diag);
    while (rc >= 0 && (rc = keel_wal_reader_next(r, &rec, diag)) == 1) {
        if (rec.lsn != last + 1 || rec.lsn > ct->ref.transactions) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "reference log: LSN %" PRIu64 " after %" PRIu64,
                            rec.lsn, last);
            break;
        }
        int found =
            keel__crashtest_payload_hash(rec.payload.ptr, rec.payload.len, &h);
        if (found < 0) {
            rc = keel__diag(
                diag, found,
                "reference log: LSN %" PRIu64 ": malformed write-set", rec.lsn);
            break;
        }
        last = rec.lsn;
        ct->hash[last] = h;
    }
    keel_wal_reader_close(r);
    if (rc == 0 && last != ct->ref.transactions) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "reference log ends at LSN %" PRIu64
                        ", the run at %" PRIu64,
                        last, ct->ref.transactions);
    }
    return rc < 0 ? rc : KEEL_OK;
}

/* The last LSN of a result (its "last_lsn"). */
static uint64_t result_lsn(const char *result)
{
    json_t *r = json_loads(result, 0, NULL);
    uint64_t lsn = (uint64_t)json_integer_value(json_object_get(r, "last_lsn"));
    json_decref(r);
    return lsn;
}

/* Two uninterrupted runs, the first under the fault layer (no plan) to
 * count its WAL I/O operations; then the log's hashes. */
static int make_reference(keel__crashtest *ct, keel_diag *diag)
{
    char state[PATH_MAX], again[PATH_MAX];
    keel_io_fault *f = NULL;
    drive_out out = {0}, out2 = {0};
    join(state, sizeof(state), ct->dir, "ref");
    join(again, sizeof(again), ct->dir, "again");
    int rc = keel__io_fault_new(&f);
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    double t0 = keel__crashtest_now_s();
    rc = drive(ct, state, keel__io_fault_io(f), 1, 0, &out, diag);
    ct->ref.seconds = keel__crashtest_now_s() - t0;
    if (rc < 0) {
        goto out;
    }
    ct->ref.io_ops = keel__io_fault_count(f, KEEL_IO_OP_ANY);
    ct->ref.result = ct->result = out.result;
    out.result = NULL;
    ct->ref.transactions = result_lsn(ct->result);
    rc = drive(ct, again, NULL, 1, 0, &out2, diag);
    if (rc < 0) {
        goto out;
    }
    if (strcmp(ct->result, out2.result) != 0) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "the cluster is not deterministic: two uninterrupted "
                        "runs ended differently: %s, then %s",
                        ct->result, out2.result);
        goto out;
    }
    rc = read_hashes(ct, state, diag);
    if (rc == KEEL_OK) {
        ct->ref.final_hash = ct->hash[ct->ref.transactions];
    }
out:
    free(out.result);
    free(out2.result);
    keel__io_fault_free(f);
    keel__crashtest_rmtree(again);
    return rc;
}

int keel__crashtest_open(const keel__crashtest_options *o,
                         keel__crashtest **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    char tmpl[PATH_MAX];
    keel__crashtest *ct = calloc(1, sizeof(*ct));
    *out = NULL;
    if (ct == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    ct->o = *o;
    if (o->config_json == NULL) {
        rc = keel__diag(diag, KEEL_EINVAL, "no cluster config");
        goto out;
    }
    if (ct->o.checkpoint_cranks == 0) {
        ct->o.checkpoint_cranks = DEFAULT_CHECKPOINT_CRANKS;
    }
    if (o->config_dir != NULL) {
        ct->config_dir = strdup(o->config_dir);
    } else if (o->config_path != NULL && strchr(o->config_path, '/') != NULL) {
        ct->config_dir =
            strndup(o->config_path,
                    (size_t)(strrchr(o->config_path, '/') - o->config_path));
    } else {
        ct->config_dir = strdup(".");
    }
    const char *work =
        o->work_dir != NULL ? o->work_dir : keel__crashtest_default_work_dir();
    if (strlen(work) > WORK_DIR_MAX) {
        rc = keel__diag(diag, KEEL_EINVAL, "work directory path over %d bytes",
                        WORK_DIR_MAX);
        goto out;
    }
    snprintf(tmpl, sizeof(tmpl), "%s/keel-crashtest-XXXXXX", work);
    if (ct->config_dir == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (mkdtemp(tmpl) == NULL || (ct->dir = strdup(tmpl)) == NULL) {
        rc = keel__diag(diag, keel_translate_errno(errno),
                        "%s: cannot make a scratch directory: %s", tmpl,
                        strerror(errno));
        goto out;
    }
    rc = make_reference(ct, diag);
out:
    if (rc < 0) {
        keel__crashtest_close(ct);
        return rc;
    }
    *out = ct;
    return KEEL_OK;
}

const keel__crashtest_reference *
keel__crashtest_reference_of(const keel__crashtest *ct)
{
    return &ct->ref;
}

void keel__crashtest_close(keel__crashtest *ct)
{
    if (ct == NULL) {
        return;
    }
    if (ct->dir != NULL) {
        DIR *d = opendir(ct->dir);
        struct dirent *e;
        int kept = 0;
        while (d != NULL && (e = readdir(d)) != NULL) {
            char p[PATH_MAX];
            if (strncmp(e->d_name, "failed-", 7) == 0) {
                kept = 1;
                continue;
            }
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            join(p, sizeof(p), ct->dir, e->d_name);
            keel__crashtest_rmtree(p);
        }
        if (d != NULL) {
            closedir(d);
        }
        if (!kept) {
            rmdir(ct->dir);
        }
    }
    free(ct->dir);
    free(ct->config_dir);
    free(ct->hash);
    free(ct->result);
    free(ct);
}

/* ---- trials ---------------------------------------------------------------
 */

static void trial_begin(trial *tr, keel__crashtest *ct,
                        keel__crashtest_report *rep, int mode, uint64_t n)
{
    memset(tr, 0, sizeof(*tr));
    tr->ct = ct;
    tr->rep = rep;
    tr->mode = mode;
    tr->n = n;
    /* a generator of its own per trial: --trial T reproduces trial T */
    tr->rng = ct->o.seed ^ ((uint64_t)mode << 56) ^ (n * 0x9E3779B97F4A7C15ull);
    join(tr->state, sizeof(tr->state), ct->dir, "t");
    rep->trials++;
}

/* Record the trial's violation (only its first, T3). */
static void violation(trial *tr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void violation(trial *tr, const char *fmt, ...)
{
    keel__crashtest *ct = tr->ct;
    char what[512], repro[512];
    va_list ap;
    if (tr->failed) {
        return;
    }
    tr->failed = 1;
    int len = snprintf(what, sizeof(what), "%s: ", tr->ctx);
    va_start(ap, fmt);
    vsnprintf(what + len, sizeof(what) - (size_t)len, fmt, ap);
    va_end(ap);
    snprintf(repro, sizeof(repro),
             "keel crashtest --config %s --mode %s --seed %" PRIu64
             " --trial %" PRIu64,
             ct->o.config_path != NULL ? ct->o.config_path : "CONFIG",
             keel__crashtest_mode_name(tr->mode), ct->o.seed, tr->n);
    if (ct->o.keep_failed) {
        char kept[PATH_MAX];
        snprintf(kept, sizeof(kept), "%s/failed-%s-%" PRIu64, ct->dir,
                 keel__crashtest_mode_name(tr->mode), tr->n);
        if (rename(tr->state, kept) == 0) {
            size_t used = strlen(what);
            snprintf(what + used, sizeof(what) - used, " (state kept in %.*s)",
                     (int)(sizeof(what) / 2), kept);
        }
    }
    if (tr->rep->violations++ == 0) {
        snprintf(tr->rep->first, sizeof(tr->rep->first), "%s", what);
        snprintf(tr->rep->repro, sizeof(tr->rep->repro), "%s", repro);
    }
    if (ct->o.violation != NULL) {
        ct->o.violation(ct->o.violation_arg, tr->mode, tr->n, what, repro);
    }
}

/* A refusal must name what it refused: a file of the state, or the
 * snapshot. */
static int names_a_file(const char *msg)
{
    return strstr(msg, ".seg") != NULL || strstr(msg, "wal/") != NULL ||
           strstr(msg, "store/") != NULL || strstr(msg, ".ksnap") != NULL;
}

/* The audit of tr->state (keel recover --check). */
static void audit(trial *tr, const char *base_snapshot, const char *when)
{
    keel_audit_options ao;
    keel_audit_report ar;
    keel_diag d = {0};
    keel_audit_options_init(&ao);
    ao.base_snapshot = base_snapshot;
    int rc = keel_audit(tr->state, &ao, &ar, &d);
    if (rc < 0) {
        violation(tr, "%s: the audit could not run: %s: %s", when,
                  keel_err_name(rc), d.msg);
    } else if (ar.violations > 0) {
        violation(tr,
                  "%s: the audit failed at LSN %" PRIu64 " (crank %" PRIu64
                  "): %s",
                  when, ar.violation_lsn, ar.violation_crank, ar.violation);
    } else {
        tr->rep->audits++;
    }
}

/*
 * After the trial's damage: reopen tr->state and check it (crashtest.h),
 * audit it, run it to the end and compare the result. durable: the LSN
 * reported durable before the crash. may_refuse: a corruption trial, where
 * KEEL_ECORRUPT / KEEL_EVERSION naming the file is a right answer.
 */
static void recover_and_finish(trial *tr, uint64_t durable, int may_refuse,
                               const char *base_snapshot)
{
    keel__crashtest *ct = tr->ct;
    keel_kernel_options ko;
    keel_kernel *k = NULL;
    keel_kernel_recovery info;
    keel_diag d = {0};
    drive_out out = {0};
    kernel_options(ct, NULL, !may_refuse, &ko);
    int rc = keel_kernel_open(tr->state, &ko, &k, &d);
    if (rc < 0) {
        if (may_refuse && (rc == KEEL_ECORRUPT || rc == KEEL_EVERSION) &&
            names_a_file(d.msg)) {
            tr->rep->refused++;
        } else if (may_refuse && (rc == KEEL_ECORRUPT || rc == KEEL_EVERSION)) {
            violation(tr, "refused (%s) without naming the damaged file: %s",
                      keel_err_name(rc), d.msg);
        } else {
            violation(tr, "reopening failed: %s: %s", keel_err_name(rc), d.msg);
        }
        return;
    }
    keel_kernel_recovery_info(k, &info);
    uint64_t lsn = info.wal_last_lsn;
    uint64_t h = keel_kernel_activity_hash(k);
    if (lsn < durable) {
        violation(tr,
                  "LSN %" PRIu64 " was reported durable, the recovered log "
                  "ends at LSN %" PRIu64,
                  durable, lsn);
    } else if (lsn > ct->ref.transactions) {
        violation(tr,
                  "the recovered log ends at LSN %" PRIu64
                  ", past the reference's last, %" PRIu64,
                  lsn, ct->ref.transactions);
    } else if (h != ct->hash[lsn]) {
        violation(tr,
                  "the state recovered at LSN %" PRIu64
                  " has activity hash %016" PRIx64
                  ", the reference's after LSN %" PRIu64 " is %016" PRIx64,
                  lsn, h, lsn, ct->hash[lsn]);
    }
    rc = keel_kernel_close(k, &d);
    if (rc < 0) {
        violation(tr, "closing the recovered state failed: %s: %s",
                  keel_err_name(rc), d.msg);
    }
    if (tr->failed) {
        return;
    }
    tr->rep->replayed += info.replayed;
    tr->rep->durable += durable > 0;
    tr->rep->torn += info.torn != 0;
    audit(tr, base_snapshot, "after recovery");
    if (tr->failed) {
        return;
    }
    rc = drive(ct, tr->state, NULL, 1, 0, &out, &d);
    if (rc < 0) {
        violation(tr, "running the recovered state to the end failed: %s: %s",
                  keel_err_name(rc), d.msg);
    } else if (strcmp(out.result, ct->result) != 0) {
        violation(tr, "the resumed run ended with %s, the reference with %s",
                  out.result, ct->result);
    } else {
        tr->rep->recovered++;
    }
    free(out.result);
}

static void progress(keel__crashtest *ct, int mode, uint64_t done,
                     uint64_t total)
{
    if (ct->o.progress != NULL) {
        ct->o.progress(ct->o.progress_arg, mode, done, total);
    }
}

/* ---- enumerate ------------------------------------------------------------
 */

/* Crash point k: even k keep a torn prefix of the unsynced bytes, odd k
 * none. */
static int enumerate_one(keel__crashtest *ct, keel__crashtest_report *rep,
                         uint64_t k, keel_diag *diag)
{
    trial tr;
    child_msg msg;
    trial_begin(&tr, ct, rep, KEEL__CRASHTEST_ENUMERATE, k);
    uint64_t keep = k % 2 == 0 ? 1 + keel__crashtest_rand(&tr.rng) % 1024 : 0;
    int rc = keel__crashtest_rmtree(tr.state);
    if (rc < 0) {
        return keel__diag(diag, rc, "%s: cannot remove: %s", tr.state,
                          keel_strerror(rc));
    }
    rc = crash_child(ct, tr.state, k, keep, &msg, diag);
    if (rc < 0) {
        return rc;
    }
    rep->crash_points++;
    snprintf(tr.ctx, sizeof(tr.ctx),
             "crash after WAL I/O operation %" PRIu64 " of %" PRIu64
             ", power loss keeping %" PRIu64 " unsynced bytes",
             k, ct->ref.io_ops, keep);
    if (msg.kind == CHILD_CRASHED) {
        recover_and_finish(&tr, msg.durable, 0, NULL);
    } else if (msg.kind == CHILD_FINISHED) {
        violation(&tr, "the run ended before that operation: the "
                       "cluster's I/O is not deterministic");
    } else {
        violation(&tr, "%s%s",
                  msg.kind == CHILD_FAILED ? "the run failed with no crash: "
                                           : "",
                  msg.what);
    }
    return KEEL_OK;
}

static int run_enumerate(keel__crashtest *ct, keel__crashtest_report *rep,
                         keel_diag *diag)
{
    uint64_t n = ct->ref.io_ops;
    uint64_t stride = ct->o.stride > 1 ? ct->o.stride : 1;
    int rc = KEEL_OK;
    if (ct->o.stride <= 1 && ct->o.trials != 0 && ct->o.trials < n) {
        stride = (n + ct->o.trials - 1) / ct->o.trials;
    }
    /* odd, so that torn and clean power losses alternate along the way */
    stride += stride > 1 && stride % 2 == 0;
    if (ct->o.only_trial != 0) {
        if (ct->o.only_trial > n) {
            return keel__diag(diag, KEEL_EINVAL,
                              "--trial %" PRIu64 ": the run has %" PRIu64
                              " crash points",
                              ct->o.only_trial, n);
        }
        progress(ct, KEEL__CRASHTEST_ENUMERATE, 0, 1);
        rc = enumerate_one(ct, rep, ct->o.only_trial, diag);
        progress(ct, KEEL__CRASHTEST_ENUMERATE, 1, 1);
        return rc;
    }
    uint64_t first = 1 + ct->o.seed % stride;
    uint64_t total = first <= n ? (n - first) / stride + 1 : 0;
    progress(ct, KEEL__CRASHTEST_ENUMERATE, 0, total);
    for (uint64_t k = first, done = 0; rc == KEEL_OK && k <= n; k += stride) {
        rc = enumerate_one(ct, rep, k, diag);
        progress(ct, KEEL__CRASHTEST_ENUMERATE, ++done, total);
    }
    return rc;
}

/* ---- process --------------------------------------------------------------
 */

/* Start `keel run STATE --config F --checkpoint-cranks N --json` with its
 * output in scratch files (KEEL_CRASH_POINT removed from its
 * environment). */
static int spawn_keel_run(const keel__crashtest *ct, const char *state,
                          pid_t *pid, keel_diag *diag)
{
    char out[PATH_MAX], err[PATH_MAX], ckpt[24];
    size_t n = 0, m = 0;
    join(out, sizeof(out), ct->dir, "keel-run.out");
    join(err, sizeof(err), ct->dir, "keel-run.err");
    snprintf(ckpt, sizeof(ckpt), "%" PRIu32, ct->o.checkpoint_cranks);
    const char *argv[] = {ct->o.keel_bin,
                          "run",
                          state,
                          "--config",
                          ct->o.config_path,
                          "--checkpoint-cranks",
                          ckpt,
                          "--deterministic",
                          "--json",
                          NULL};
    while (environ[n] != NULL) {
        n++;
    }
    char **envp = calloc(n + 1, sizeof(*envp));
    int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int efd = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = KEEL_OK;
    if (envp == NULL || ofd < 0 || efd < 0) {
        rc = keel__diag(diag, envp == NULL ? KEEL_ENOMEM : KEEL_EIO,
                        "cannot start keel run: %s", strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "KEEL_CRASH_POINT=", 17) != 0) {
            envp[m++] = environ[i];
        }
    }
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "fork: %s",
                        strerror(errno));
        goto out;
    }
    if (*pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        execve(ct->o.keel_bin, (char *const *)argv, envp);
        _exit(127);
    }
out:
    free(envp);
    if (ofd >= 0) {
        close(ofd);
    }
    if (efd >= 0) {
        close(efd);
    }
    return rc;
}

/* Wait for pid at most ms; kill it then. *status: waitpid's. @return 1 if
 * it ended by itself, 0 if it had to be killed. */
static int wait_bounded(pid_t pid, uint64_t ms, int *status)
{
    double end = keel__crashtest_now_s() + (double)ms / 1000.0;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) {
            return 1;
        }
        if (keel__crashtest_now_s() > end) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
            }
            return 0;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u),
                          (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The first line of a scratch file (the child's output), for messages. */
static void first_line(const keel__crashtest *ct, const char *name, char *buf,
                       size_t cap)
{
    char path[PATH_MAX];
    join(path, sizeof(path), ct->dir, name);
    FILE *f = fopen(path, "r");
    buf[0] = '\0';
    if (f != NULL) {
        if (fgets(buf, (int)cap, f) != NULL) {
            buf[strcspn(buf, "\n")] = '\0';
        }
        fclose(f);
    }
}

/* What a `keel run --json` that finished printed as its durable LSN. */
static uint64_t printed_durable(const keel__crashtest *ct)
{
    char line[1024];
    first_line(ct, "keel-run.out", line, sizeof(line));
    json_t *o = json_loads(line, 0, NULL);
    uint64_t lsn =
        (uint64_t)json_integer_value(json_object_get(o, "durable_lsn"));
    json_decref(o);
    return lsn;
}

/* Trial n: SIGKILL after delay_us (n == 0: never, the uninterrupted run
 * every kill is measured against). */
static int process_one(keel__crashtest *ct, keel__crashtest_report *rep,
                       uint64_t n, uint64_t run_us, keel_diag *diag)
{
    trial tr;
    pid_t pid = 0;
    int st = 0;
    char err[400];
    trial_begin(&tr, ct, rep, KEEL__CRASHTEST_PROCESS, n);
    uint64_t delay_us =
        n == 0 ? 0 : keel__crashtest_rand(&tr.rng) % (run_us + 1);
    int rc = keel__crashtest_rmtree(tr.state);
    rc = rc < 0 ? rc : spawn_keel_run(ct, tr.state, &pid, diag);
    if (rc < 0) {
        return rc;
    }
    snprintf(tr.ctx, sizeof(tr.ctx), "keel run %s %" PRIu64 " us",
             n == 0 ? "uninterrupted, for" : "killed after", delay_us);
    if (n != 0) {
        sleep_us(delay_us);
        kill(pid, SIGKILL);
    }
    if (!wait_bounded(pid, deadline_ms(ct), &st)) {
        violation(&tr, "still running after %" PRIu64 " ms: hung",
                  deadline_ms(ct));
        return KEEL_OK;
    }
    int killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
    if (!killed && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        first_line(ct, "keel-run.err", err, sizeof(err));
        violation(&tr, "exited %d: %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                  err);
        return KEEL_OK;
    }
    rep->crash_points += killed;
    recover_and_finish(&tr, killed ? 0 : printed_durable(ct), 0, NULL);
    return KEEL_OK;
}

static int run_process(keel__crashtest *ct, keel__crashtest_report *rep,
                       keel_diag *diag)
{
    uint64_t n = ct->o.trials != 0 ? ct->o.trials : DEFAULT_PROCESS_TRIALS;
    if (ct->o.keel_bin == NULL || ct->o.config_path == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "process mode runs `keel run --config FILE`: it "
                          "needs the keel program and the config's file");
    }
    if (ct->o.only_trial > n) {
        return keel__diag(diag, KEEL_EINVAL,
                          "--trial %" PRIu64 ": there are %" PRIu64 " trials",
                          ct->o.only_trial, n);
    }
    /* Trial 0: how long an uninterrupted `keel run` takes, and that it
     * ends as the reference (else every kill would fail the same way). */
    double t0 = keel__crashtest_now_s();
    int rc = process_one(ct, rep, 0, 0, diag);
    uint64_t run_us = (uint64_t)((keel__crashtest_now_s() - t0) * 1e6);
    if (rc < 0 || rep->violations > 0) {
        return rc;
    }
    uint64_t lo = ct->o.only_trial != 0 ? ct->o.only_trial : 1;
    uint64_t hi = ct->o.only_trial != 0 ? ct->o.only_trial : n;
    progress(ct, KEEL__CRASHTEST_PROCESS, 0, hi - lo + 1);
    for (uint64_t t = lo; rc == KEEL_OK && t <= hi; t++) {
        rc = process_one(ct, rep, t, run_us, diag);
        progress(ct, KEEL__CRASHTEST_PROCESS, t - lo + 1, hi - lo + 1);
    }
    return rc;
}

/* ---- corruption -----------------------------------------------------------
 */

/* The bases: states crashed at 1/4, 2/4, 3/4 of the crash points (their
 * stores checkpointed somewhere before their log's end), and a snapshot
 * of the first. */
static int make_bases(keel__crashtest *ct, keel_diag *diag)
{
    char state[PATH_MAX], snap[PATH_MAX];
    child_msg msg;
    keel_snapshot_info info;
    int rc = KEEL_OK;
    for (int b = 0; rc == KEEL_OK && b < CRASHED_BASES; b++) {
        char name[16];
        snprintf(name, sizeof(name), "base%d", b);
        join(state, sizeof(state), ct->dir, name);
        uint64_t k = ct->ref.io_ops * (uint64_t)(b + 1) / (CRASHED_BASES + 1);
        rc = crash_child(ct, state, k > 0 ? k : 1, 0, &msg, diag);
        if (rc == KEEL_OK && msg.kind != CHILD_CRASHED) {
            rc = keel__diag(diag, KEEL_EIO,
                            "corruption base %d (a crash after WAL I/O "
                            "operation %" PRIu64 "): %s",
                            b, k, msg.what);
        }
    }
    join(state, sizeof(state), ct->dir, "base0");
    join(snap, sizeof(snap), ct->dir, "snap.ksnap");
    if (rc == KEEL_OK) {
        rc = keel_snapshot_create(state, snap, NULL, &info, diag);
        ct->snap_lsn = info.meta.lsn;
    }
    ct->bases_made = rc == KEEL_OK;
    return rc;
}

/* Damage the file at path: flip a bit, set a byte, or overwrite a run of
 * 2..16 bytes, at a random offset, or one within its last KiB.
 * @return KEEL_OK (what[] says what was done) or < 0. */
static int damage(trial *tr, const char *path, int near_end, char *what,
                  size_t cap)
{
    struct stat st;
    uint8_t buf[16];
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int rc = KEEL_OK;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        rc = KEEL_EIO;
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint64_t span = near_end && size > 1024 ? 1024 : size;
    uint64_t off = size - span + keel__crashtest_rand(&tr->rng) % span;
    int kind = (int)(keel__crashtest_rand(&tr->rng) % 3);
    size_t len =
        kind == 2 ? 2 + (size_t)(keel__crashtest_rand(&tr->rng) % 15) : 1;
    len = off + len > size ? (size_t)(size - off) : len;
    if (pread(fd, buf, len, (off_t)off) != (ssize_t)len) {
        rc = KEEL_EIO;
        goto out;
    }
    if (kind == 0) {
        int bit = (int)(keel__crashtest_rand(&tr->rng) % 8);
        buf[0] ^= (uint8_t)(1u << bit);
        snprintf(what, cap, "bit %d of byte %" PRIu64 " flipped", bit, off);
    } else {
        for (size_t i = 0; i < len; i++) {
            uint8_t v = (uint8_t)keel__crashtest_rand(&tr->rng);
            buf[i] = v == buf[i] ? (uint8_t)~v : v; /* always a change */
        }
        snprintf(what, cap, "%zu byte%s at offset %" PRIu64 " overwritten", len,
                 len == 1 ? "" : "s", off);
    }
    if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
        rc = KEEL_EIO;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* A segment file of a state's wal/ into path: the newest, or one picked
 * at random. @return KEEL_OK, KEEL_ENOENT (none), or < 0. */
static int pick_segment(trial *tr, const char *state, int newest, char *path,
                        size_t cap)
{
    char wal[PATH_MAX];
    char best[256] = "";
    uint64_t seen = 0;
    join(wal, sizeof(wal), state, "wal");
    DIR *d = opendir(wal);
    struct dirent *e;
    if (d == NULL) {
        return keel_translate_errno(errno);
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".seg") != 0 ||
            len >= sizeof(best)) {
            continue;
        }
        seen++;
        /* newest: the largest name (names sort by first LSN); else a
         * uniform pick (reservoir sampling) */
        if (newest ? strcmp(e->d_name, best) > 0
                   : keel__crashtest_rand(&tr->rng) % seen == 0) {
            snprintf(best, sizeof(best), "%s", e->d_name);
        }
    }
    closedir(d);
    if (seen == 0) {
        return KEEL_ENOENT;
    }
    join(path, cap, wal, best);
    return KEEL_OK;
}

/* Trial n: damage a copy of a base's log, or of the snapshot. */
static int corruption_one(keel__crashtest *ct, keel__crashtest_report *rep,
                          uint64_t n, keel_diag *diag)
{
    trial tr;
    char base[PATH_MAX], file[PATH_MAX], snap[PATH_MAX], what[128];
    trial_begin(&tr, ct, rep, KEEL__CRASHTEST_CORRUPTION, n);
    int b = (int)(keel__crashtest_rand(&tr.rng) % (CRASHED_BASES + 2));
    int near_end = (int)(keel__crashtest_rand(&tr.rng) % 2);
    int rc = keel__crashtest_rmtree(tr.state);
    if (b == CRASHED_BASES + 1) {
        /* the snapshot, restored and rolled forward through base0's log */
        keel_snapshot_restore_options ro;
        char wal[PATH_MAX], orig[PATH_MAX];
        join(orig, sizeof(orig), ct->dir, "snap.ksnap");
        join(snap, sizeof(snap), ct->dir, "damaged.ksnap");
        join(base, sizeof(base), ct->dir, "base0");
        join(wal, sizeof(wal), base, "wal");
        rc = rc < 0 ? rc : copy_file(orig, snap);
        rc = rc < 0 ? rc : damage(&tr, snap, near_end, what, sizeof(what));
        if (rc < 0) {
            return keel__diag(diag, rc, "%s: cannot damage a copy: %s", snap,
                              keel_strerror(rc));
        }
        rep->crash_points++;
        snprintf(tr.ctx, sizeof(tr.ctx), "snapshot at LSN %" PRIu64 ": %s",
                 ct->snap_lsn, what);
        keel_snapshot_restore_options_init(&ro);
        ro.wal_dir = wal;
        keel_diag d = {0};
        rc = keel_snapshot_restore(snap, tr.state, &ro, NULL, &d);
        if (rc == KEEL_ECORRUPT || rc == KEEL_EVERSION) {
            if (names_a_file(d.msg)) {
                rep->refused++;
            } else {
                violation(&tr,
                          "restore refused (%s) without naming the file: %s",
                          keel_err_name(rc), d.msg);
            }
        } else if (rc < 0) {
            violation(&tr, "restore failed: %s: %s", keel_err_name(rc), d.msg);
        } else {
            recover_and_finish(&tr, 0, 1, snap);
        }
        return KEEL_OK;
    }
    if (b == CRASHED_BASES) {
        join(base, sizeof(base), ct->dir, "ref");
    } else {
        char name[16];
        snprintf(name, sizeof(name), "base%d", b);
        join(base, sizeof(base), ct->dir, name);
    }
    rc = rc < 0 ? rc : copy_tree(base, tr.state);
    rc =
        rc < 0 ? rc : pick_segment(&tr, tr.state, near_end, file, sizeof(file));
    rc = rc < 0 ? rc : damage(&tr, file, near_end, what, sizeof(what));
    if (rc < 0) {
        return keel__diag(diag, rc, "%s: cannot damage a copy of %s: %s",
                          tr.state, base, keel_strerror(rc));
    }
    rep->crash_points++;
    snprintf(tr.ctx, sizeof(tr.ctx), "%s, wal/%s: %s",
             b == CRASHED_BASES ? "finished state" : "crashed state",
             strrchr(file, '/') + 1, what);
    recover_and_finish(&tr, 0, 1, NULL);
    return KEEL_OK;
}

static int run_corruption(keel__crashtest *ct, keel__crashtest_report *rep,
                          keel_diag *diag)
{
    uint64_t n = ct->o.trials != 0 ? ct->o.trials : DEFAULT_CORRUPTION_TRIALS;
    int rc = KEEL_OK;
    if (ct->o.only_trial > n) {
        return keel__diag(diag, KEEL_EINVAL,
                          "--trial %" PRIu64 ": there are %" PRIu64 " trials",
                          ct->o.only_trial, n);
    }
    if (!ct->bases_made) {
        rc = make_bases(ct, diag);
    }
    uint64_t lo = ct->o.only_trial != 0 ? ct->o.only_trial : 1;
    uint64_t hi = ct->o.only_trial != 0 ? ct->o.only_trial : n;
    progress(ct, KEEL__CRASHTEST_CORRUPTION, 0, hi - lo + 1);
    for (uint64_t t = lo; rc == KEEL_OK && t <= hi; t++) {
        rc = corruption_one(ct, rep, t, diag);
        progress(ct, KEEL__CRASHTEST_CORRUPTION, t - lo + 1, hi - lo + 1);
    }
    return rc;
}

int keel__crashtest_run(keel__crashtest *ct, int mode,
                        keel__crashtest_report *rep, keel_diag *diag)
{
    int rc = KEEL_EINVAL;
    double t0 = keel__crashtest_now_s();
    memset(rep, 0, sizeof(*rep));
    rep->mode = mode;
    switch (mode) {
    case KEEL__CRASHTEST_ENUMERATE:
        rc = run_enumerate(ct, rep, diag);
        break;
    case KEEL__CRASHTEST_PROCESS:
        rc = run_process(ct, rep, diag);
        break;
    case KEEL__CRASHTEST_CORRUPTION:
        rc = run_corruption(ct, rep, diag);
        break;
    default:
        rc = keel__diag(diag, KEEL_EINVAL, "unknown mode %d", mode);
    }
    char state[PATH_MAX];
    join(state, sizeof(state), ct->dir, "t");
    keel__crashtest_rmtree(state);
    rep->seconds = keel__crashtest_now_s() - t0;
    return rc;
}
