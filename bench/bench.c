/*
 * bench/bench.c — `keel bench`: the workload table and the shared machinery
 * of bench.h (clock, interleaving, medians, environment, reports, and the
 * plain-POSIX file baselines).
 *
 * Invariants B1..B5 are stated in bench.h; this file upholds B1, B2 and B4
 * in keel__bench_interleave() and keel__bench_stats(), B5 in
 * keel__bench_workdir() and keel__bench_rmtree().
 *
 * No CTest entry ever passes or fails on a figure from here: tests only
 * smoke-run workloads at tiny sizes and check the shape of the output.
 */
#include "bench/bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <lmdb.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/diag.h"
#include "tools/cli.h"

/* ------------------------------------------------------------ workloads */

typedef struct bench_workload {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} bench_workload;

static const bench_workload workloads[] = {
    {"wal-append", "WAL appends per sync policy vs fdatasync and seqwrite",
     keel__bench_wal_append},
    {"pingpong", "kernel: two vats, N round trips, vs fdatasync and lmdb-put",
     keel__bench_pingpong},
    {"fanout", "kernel: N incr at once to a counter vat, and the answers",
     keel__bench_fanout},
    {"chain5", "kernel: N rounds of the five-hop chain with async work",
     keel__bench_chain5},
    {"pingpong-rss", "kernel: resident memory over a 1M-crank pingpong",
     keel__bench_pingpong_rss},
    {"soak", "kernel: state bounded over a long run (GC), with snapshots",
     keel__bench_soak},
    {"recover", "log replay into a fresh store, and the audit, vs lmdb-put",
     keel__bench_recover},
    {"audit", "the recovery audit of a whole log, vs lmdb-put",
     keel__bench_audit},
    {"snapshot", "snapshot create and restore vs raw zstd, in MB/s",
     keel__bench_snapshot},
    {"terminate", "kernel: a vat with N vatstore keys exits and is cleaned up",
     keel__bench_terminate},
    {"control", "acknowledged sends/s through the control socket vs echo",
     keel__bench_control},
};

#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

static void workload_names(char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NWORKLOADS; i++) {
        int n = snprintf(buf + len, cap - len, "%s%s", i > 0 ? ", " : "",
                         workloads[i].name);
        if (n < 0 || (size_t)n >= cap - len) {
            break;
        }
        len += (size_t)n;
    }
}

static int bench_help(void)
{
    printf("usage: keel bench WORKLOAD [OPTIONS]\n"
           "\n"
           "Measure a workload against baselines run in the same process, "
           "on the\n"
           "same filesystem, interleaved run by run with it; print the "
           "median rate\n"
           "with min and max of each, and the ratio of the medians. A "
           "header line\n"
           "names the CPU, the filesystem and the build.\n"
           "\n"
           "Workloads:\n");
    for (size_t i = 0; i < NWORKLOADS; i++) {
        printf("  %-12s %s\n", workloads[i].name, workloads[i].summary);
    }
    printf("\n'keel bench WORKLOAD --help' lists its options.\n"
           "\n"
           "Exit status: 0 success; 1 a run failed (I/O error, ...); 2 usage "
           "error.\n");
    return KEEL_CLI_OK;
}

int keel__bench_main(int argc, char **argv)
{
    int rc = KEEL_CLI_USAGE;
    char names[256];
    workload_names(names, sizeof(names));
    if (argc < 1) {
        rc = keel__cli_usage_error("bench", "no workload given (available: %s)",
                                   names);
        goto out;
    }
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        rc = bench_help();
        goto out;
    }
    for (size_t i = 0; i < NWORKLOADS; i++) {
        if (strcmp(workloads[i].name, argv[0]) == 0) {
            rc = workloads[i].run(argc - 1, argv + 1);
            goto out;
        }
    }
    if (argv[0][0] == '-') {
        rc = keel__cli_usage_error("bench",
                                   "unknown option '%s' (see 'keel bench "
                                   "--help')",
                                   argv[0]);
    } else {
        rc = keel__cli_usage_error(
            "bench", "unknown workload '%s' (available: %s)", argv[0], names);
    }
out:
    return rc;
}

/* -------------------------------------------------------------- timing */

double keel__bench_now(void)
{
    return keel__now_s();
}

int keel__bench_interleave(keel_bench_series *s, size_t ns, size_t runs,
                           keel_diag *diag)
{
    int rc = KEEL_OK;
    for (size_t i = 0; i < ns; i++) {
        s[i].per_s = calloc(runs, sizeof(*s[i].per_s));
        if (s[i].per_s == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
            goto out;
        }
    }
    /* B2: round 0 is the warm-up; B1: every round runs every series */
    for (size_t round = 0; round <= runs; round++) {
        for (size_t i = 0; i < ns; i++) {
            double seconds = 0;
            rc = s[i].run(s[i].ctx, &seconds, diag);
            if (rc < 0) {
                goto out;
            }
            if (round > 0) {
                /* a clock too coarse to see the run must not divide by 0 */
                s[i].per_s[round - 1] =
                    s[i].units / (seconds > 1e-9 ? seconds : 1e-9);
            }
        }
    }
out:
    return rc;
}

void keel__bench_series_free(keel_bench_series *s, size_t ns)
{
    for (size_t i = 0; i < ns; i++) {
        free(s[i].per_s);
        s[i].per_s = NULL;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

void keel__bench_stats(const double *v, size_t n, keel_bench_stats *out)
{
    double sorted[KEEL_BENCH_MAX_RUNS];
    KEEL_ASSERT(n >= 1 && n <= KEEL_BENCH_MAX_RUNS);
    memcpy(sorted, v, n * sizeof(*v));
    qsort(sorted, n, sizeof(*sorted), cmp_double);
    out->min = sorted[0];
    out->max = sorted[n - 1];
    out->median =
        n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/* ------------------------------------------------------ file baselines */

void keel__bench_fill_random(uint8_t *p, size_t len)
{
    uint64_t s = 0x6b65656c62656e63ull; /* fixed: runs are comparable */
    for (size_t i = 0; i < len; i++) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        p[i] = (uint8_t)(z ^ (z >> 31));
    }
}

static int sys_err(keel_diag *diag, const char *what, const char *name)
{
    int e = errno;
    return keel__diag(diag, keel_translate_errno(e), "%s: %s: %s", name, what,
                      strerror(e));
}

/* pwrite all of buf at off, retrying short writes (plain POSIX: no keel
 * code in a baseline). */
static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t off,
                     const char *name, keel_diag *diag)
{
    int rc = KEEL_OK;
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = n < 0 ? sys_err(diag, "write", name)
                       : keel__diag(diag, KEEL_EIO, "%s: write: no progress",
                                    name);
            break;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return rc;
}

/* A fresh file `<prefix>-<seq>.dat` of the work directory. */
static int create_file(keel_bench_file *b, const char *prefix, char *path,
                       size_t cap, const char **name, int *fd, keel_diag *diag)
{
    int rc = KEEL_OK;
    int n = snprintf(path, cap, "%s/%s-%llu.dat", b->dir, prefix,
                     (unsigned long long)b->seq++);
    if (n < 0 || (size_t)n >= cap) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: path too long", b->dir);
        goto out;
    }
    *name = path + strlen(b->dir) + 1;
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (*fd < 0) {
        rc = sys_err(diag, "open", *name);
    }
out:
    return rc;
}

static int close_and_remove(int fd, const char *path, const char *name, int rc,
                            keel_diag *diag)
{
    if (fd >= 0 && close(fd) != 0 && rc == KEEL_OK) {
        rc = sys_err(diag, "close", name);
    }
    if (fd >= 0 && unlink(path) != 0 && rc == KEEL_OK) {
        rc = sys_err(diag, "unlink", name);
    }
    return rc;
}

int keel__bench_fdatasync(void *ctx, double *seconds, keel_diag *diag)
{
    keel_bench_file *b = ctx;
    char path[4096];
    const char *name = NULL;
    int fd = -1;
    int rc = create_file(b, "fdatasync", path, sizeof(path), &name, &fd, diag);
    if (rc < 0) {
        goto out;
    }
    double t0 = keel__bench_now();
    for (uint64_t i = 0; i < b->n; i++) {
        rc = write_all(fd, b->payload, b->size, i * b->size, name, diag);
        if (rc < 0) {
            goto out;
        }
        if (fdatasync(fd) != 0) {
            rc = sys_err(diag, "fdatasync", name);
            goto out;
        }
    }
    *seconds = keel__bench_now() - t0;
out:
    return close_and_remove(fd, path, name, rc, diag);
}

int keel__bench_seqwrite(void *ctx, double *seconds, keel_diag *diag)
{
    keel_bench_file *b = ctx;
    char path[4096];
    const char *name = NULL;
    int fd = -1;
    int rc = create_file(b, "seqwrite", path, sizeof(path), &name, &fd, diag);
    if (rc < 0) {
        goto out;
    }
    uint64_t total = b->n * b->size;
    double t0 = keel__bench_now();
    for (uint64_t off = 0; off < total; off += KEEL_BENCH_CHUNK_BYTES) {
        size_t len = total - off < KEEL_BENCH_CHUNK_BYTES
                         ? (size_t)(total - off)
                         : KEEL_BENCH_CHUNK_BYTES;
        rc = write_all(fd, b->chunk, len, off, name, diag);
        if (rc < 0) {
            goto out;
        }
    }
    if (fdatasync(fd) != 0) {
        rc = sys_err(diag, "fdatasync", name);
        goto out;
    }
    *seconds = keel__bench_now() - t0;
out:
    return close_and_remove(fd, path, name, rc, diag);
}

/* ---------------------------------------------------- lmdb-put baseline */

static int mdb_err(keel_diag *diag, int mrc, const char *what, const char *name)
{
    /* LMDB returns errno values as they are, its own codes are negative */
    int code = mrc > 0 ? keel_translate_errno(mrc) : KEEL_EIO;
    return keel__diag(diag, code, "%s: %s: %s", name, what, mdb_strerror(mrc));
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int keel__bench_lmdb_put(void *ctx, double *seconds, keel_diag *diag)
{
    keel_bench_lmdb *b = ctx;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    char path[4096];
    char key[KEEL_BENCH_PUT_KEY_BYTES + 1];
    uint8_t value[KEEL_BENCH_PUT_VALUE_BYTES];
    const char *name = NULL;
    int rc = KEEL_OK;
    int n = snprintf(path, sizeof(path), "%s/lmdb-%" PRIu64, b->dir, b->seq++);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = keel__diag(diag, KEEL_EINVAL, "%s: path too long", b->dir);
        goto out;
    }
    name = path + strlen(b->dir) + 1;
    if (mkdir(path, 0755) != 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "%s: mkdir: %s",
                        name, strerror(errno));
        goto out;
    }
    keel__bench_fill_random(value, sizeof(value));
    /* room for every page of the tree, twice over: the map is only
     * address space; the file grows with what is written */
    size_t map_bytes =
        (size_t)b->n * 4 *
            (KEEL_BENCH_PUT_KEY_BYTES + KEEL_BENCH_PUT_VALUE_BYTES) +
        (64u << 20);
    int mrc = mdb_env_create(&env);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_env_set_mapsize(env, map_bytes);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_env_open(env, path, MDB_NOSYNC, 0644);
    }
    if (mrc != MDB_SUCCESS) {
        rc = mdb_err(diag, mrc, "opening the environment", name);
        goto out;
    }
    double t0 = keel__bench_now();
    mrc = mdb_txn_begin(env, NULL, 0, &txn);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_dbi_open(txn, NULL, 0, &dbi);
    }
    /* keys all over the tree, as a crank's writes are; not appends */
    for (uint64_t i = 0; mrc == MDB_SUCCESS && i < b->n; i++) {
        snprintf(key, sizeof(key), "%016" PRIx64, mix64(i + 1));
        MDB_val k = {KEEL_BENCH_PUT_KEY_BYTES, key};
        MDB_val v = {sizeof(value), value};
        mrc = mdb_put(txn, dbi, &k, &v, 0);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_txn_commit(txn);
        txn = NULL; /* a failed commit has freed the transaction too */
    }
    *seconds = keel__bench_now() - t0;
    if (mrc != MDB_SUCCESS) {
        rc = mdb_err(diag, mrc, "putting", name);
    }
out:
    if (txn != NULL) {
        mdb_txn_abort(txn);
    }
    if (env != NULL) {
        mdb_env_close(env);
    }
    if (rc == KEEL_OK) {
        rc = keel__bench_rmtree(path, diag);
    }
    return rc;
}

/* ------------------------------------------------------ work directory */

int keel__bench_workdir(const char *parent, char **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (parent == NULL) {
        const char *tmp = getenv("TMPDIR");
        parent = tmp != NULL && tmp[0] != '\0' ? tmp : ".";
    }
    size_t len = strlen(parent) + sizeof("/keel-bench-XXXXXX");
    char *tmpl = malloc(len);
    *out = NULL;
    if (tmpl == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(tmpl, len, "%s/keel-bench-XXXXXX", parent);
    if (mkdtemp(tmpl) == NULL) {
        rc = keel__diag(diag, keel_translate_errno(errno),
                        "cannot create a directory in '%s': %s", parent,
                        strerror(errno));
        goto out;
    }
    /* absolute, so the header line says which filesystem was measured */
    *out = realpath(tmpl, NULL);
    if (*out == NULL) {
        rc = keel__diag(diag, keel_translate_errno(errno), "%s: %s", tmpl,
                        strerror(errno));
        rmdir(tmpl);
    }
out:
    free(tmpl);
    return rc;
}

uint64_t keel__bench_dir_bytes(const char *dir, int on_disk)
{
    uint64_t total = 0;
    char path[4096];
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    while (d != NULL && (e = readdir(d)) != NULL) {
        int n = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0 &&
            S_ISREG(st.st_mode)) {
            total +=
                on_disk ? (uint64_t)st.st_blocks * 512 : (uint64_t)st.st_size;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return total;
}

int keel__bench_rmtree(const char *path, keel_diag *diag)
{
    int rc = KEEL_OK;
    DIR *d = NULL;
    struct stat st;
    if (lstat(path, &st) != 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "%s: %s", path,
                        strerror(errno));
        goto out;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0) {
            rc = keel__diag(diag, keel_translate_errno(errno),
                            "removing %s: %s", path, strerror(errno));
        }
        goto out;
    }
    d = opendir(path);
    if (d == NULL) {
        rc = keel__diag(diag, keel_translate_errno(errno), "%s: %s", path,
                        strerror(errno));
        goto out;
    }
    struct dirent *e;
    while (rc == KEEL_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        size_t len = strlen(path) + strlen(e->d_name) + 2;
        char *child = malloc(len);
        if (child == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
            break;
        }
        snprintf(child, len, "%s/%s", path, e->d_name);
        rc = keel__bench_rmtree(child, diag);
        free(child);
    }
    if (rc == KEEL_OK && rmdir(path) != 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "removing %s: %s",
                        path, strerror(errno));
    }
out:
    if (d != NULL) {
        closedir(d);
    }
    return rc;
}

/* --------------------------------------------------------- environment */

static void cpu_model(char *buf, size_t cap)
{
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(buf, cap, "unknown CPU");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || colon == NULL) {
            continue;
        }
        char *v = colon + 1;
        v += strspn(v, " \t");
        v[strcspn(v, "\n")] = '\0';
        snprintf(buf, cap, "%s", v);
        break;
    }
    if (f != NULL) {
        fclose(f);
    }
}

static void fs_type(const char *dir, char *buf, size_t cap)
{
    struct statfs sf;
    unsigned long type = 0;
    if (statfs(dir, &sf) == 0) {
        type = (unsigned long)sf.f_type;
    }
    switch (type) {
    case 0:
        snprintf(buf, cap, "unknown");
        break;
    case EXT4_SUPER_MAGIC: /* ext2 and ext3 share it */
        snprintf(buf, cap, "ext4");
        break;
    case XFS_SUPER_MAGIC:
        snprintf(buf, cap, "xfs");
        break;
    case BTRFS_SUPER_MAGIC:
        snprintf(buf, cap, "btrfs");
        break;
    case TMPFS_MAGIC:
        snprintf(buf, cap, "tmpfs");
        break;
    case OVERLAYFS_SUPER_MAGIC:
        snprintf(buf, cap, "overlay");
        break;
    default:
        snprintf(buf, cap, "0x%lx", type);
        break;
    }
}

/* What the compiler was told, as far as it shows in predefined macros:
 * CMake's build types differ in optimization and NDEBUG. */
#ifdef __OPTIMIZE__
#define BUILD_OPT "optimized"
#else
#define BUILD_OPT "unoptimized"
#endif
#ifdef NDEBUG
#define BUILD_NDEBUG ", NDEBUG"
#else
#define BUILD_NDEBUG ", no NDEBUG"
#endif
#ifdef KEEL_DEBUG
#define BUILD_DEBUG ", KEEL_DEBUG checkers"
#else
#define BUILD_DEBUG ""
#endif
#ifdef __SANITIZE_ADDRESS__
#define BUILD_ASAN ", ASan"
#else
#define BUILD_ASAN ""
#endif

void keel__bench_env(const char *dir, keel_bench_env *env)
{
    char model[128];
    cpu_model(model, sizeof(model));
    snprintf(env->cpu, sizeof(env->cpu), "%s (%ld CPUs online)", model,
             sysconf(_SC_NPROCESSORS_ONLN));
    fs_type(dir, env->fs, sizeof(env->fs));
    snprintf(env->build, sizeof(env->build), "%s",
             BUILD_OPT BUILD_NDEBUG BUILD_DEBUG BUILD_ASAN);
}

/* ------------------------------------------------------------- reports */

void keel__bench_report_header(const char *workload, const keel_bench_env *env,
                               const char *dir, size_t runs, int json)
{
    if (!json) {
        printf("%s: cpu %s; fs %s (%s); build %s; %zu runs after 1 warm-up, "
               "baseline and candidate interleaved\n",
               workload, env->cpu, env->fs, dir, env->build, runs);
        printf("%-6s %-12s %10s %8s %12s %12s %12s %7s\n", "sync", "series",
               "n", "size", "median/s", "min/s", "max/s", "ratio");
    }
}

static void report_row(const keel_bench_result *r, const char *name,
                       const keel_bench_stats *st, double ratio,
                       double bytes_per_unit)
{
    char size[24] = "-";
    /* whole numbers, except for rates so low that decimals still matter */
    int prec = st->min < 100 ? 2 : 0;
    if (r->size > 0) {
        snprintf(size, sizeof(size), "%llu", (unsigned long long)r->size);
    }
    printf("%-6s %-12s %10llu %8s %12.*f %12.*f %12.*f", r->sync, name,
           (unsigned long long)r->n, size, prec, st->median, prec, st->min,
           prec, st->max);
    if (ratio > 0) {
        printf(" %7.3f", ratio);
    } else {
        printf(" %7s", "-");
    }
    if (bytes_per_unit > 0) {
        printf("  (%.1f MB/s)", st->median * bytes_per_unit / 1e6);
    }
    printf("\n");
}

/* key = "<name>_per_s" into buf[cap]. */
static const char *metric_key(const keel_bench_metric *m, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s_per_s", m->name);
    return buf;
}

static json_t *runs_json(const keel_bench_result *r)
{
    char key[64];
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < r->runs; i++) {
        json_t *o = json_pack("{s:f, s:f}", "per_s", r->candidate->per_s[i],
                              "baseline_per_s", r->baseline->per_s[i]);
        for (size_t m = 0; o != NULL && m < r->nmetrics; m++) {
            if (json_object_set_new(
                    o, metric_key(&r->metrics[m], key, sizeof(key)),
                    json_real(r->metrics[m].per_s[i])) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* The JSON line of r: candidate stats cand, baseline median base_median. */
static json_t *result_json(const keel_bench_result *r,
                           const keel_bench_stats *cand, double base_median,
                           double ratio)
{
    char key[64];
    json_t *o = json_pack("{s:s, s:s, s:I}", "workload", r->workload, "sync",
                          r->sync, "n", (json_int_t)r->n);
    int bad = o == NULL;
    if (!bad && r->size > 0) {
        bad = json_object_set_new(o, "size", json_integer((json_int_t)r->size));
    }
    if (!bad) {
        /* after "size", so a wal-append line keeps its order of keys */
        json_t *rest = json_pack(
            "{s:f, s:f, s:f, s:s, s:f, s:f, s:o}", "median_per_s", cand->median,
            "min_per_s", cand->min, "max_per_s", cand->max, "baseline",
            r->baseline->name, "baseline_per_s", base_median, "ratio", ratio,
            "runs", runs_json(r));
        bad = rest == NULL || json_object_update(o, rest) != 0;
        json_decref(rest);
    }
    if (!bad && r->nmetrics > 0) {
        bad = json_object_set_new(o, "candidate",
                                  json_string(r->candidate->name));
    }
    for (size_t m = 0; !bad && m < r->nmetrics; m++) {
        keel_bench_stats st;
        keel__bench_stats(r->metrics[m].per_s, r->runs, &st);
        bad =
            json_object_set_new(o, metric_key(&r->metrics[m], key, sizeof(key)),
                                json_real(st.median));
    }
    if (bad) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

int keel__bench_report(const keel_bench_result *r, int json)
{
    int rc = KEEL_OK;
    json_t *o = NULL;
    char *line = NULL;
    keel_bench_stats cand;
    keel_bench_stats base;
    keel__bench_stats(r->candidate->per_s, r->runs, &cand);
    keel__bench_stats(r->baseline->per_s, r->runs, &base);
    double ratio = cand.median / base.median; /* B4 */
    if (!json) {
        report_row(r, r->baseline->name, &base, 0, r->baseline_bytes_per_unit);
        report_row(r, r->candidate->name, &cand, ratio, 0);
        for (size_t m = 0; m < r->nmetrics; m++) {
            keel_bench_stats st;
            if (strcmp(r->metrics[m].name, r->candidate->name) == 0) {
                continue; /* the candidate's own row above */
            }
            keel__bench_stats(r->metrics[m].per_s, r->runs, &st);
            report_row(r, r->metrics[m].name, &st, 0, 0);
        }
        goto out;
    }
    o = result_json(r, &cand, base.median, ratio);
    /* 12 significant digits: rates print as 3281338.66295, not with the
     * 17 digits of a round trip that the noise of a run makes meaningless */
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
