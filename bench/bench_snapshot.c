/*
 * bench/bench_snapshot.c — `keel bench snapshot`: how fast a kernel state
 * is written to a snapshot and restored from one, beside raw zstd
 * compression and decompression of the same bytes at the same level in
 * the same run, and (--rss) the resident memory each needs.
 *
 * Invariants:
 *   BS1 The state is built once, untimed: a store of --size bytes of keys
 *       and values shaped like a kernel's (vatstore entries: short keys,
 *       ~200-byte values, half random digits, half repeated text), loaded
 *       in key order.
 *   BS2 The baselines compress (decompress) exactly the entry bytes the
 *       snapshot holds, framed as the snapshot frames them (length-
 *       prefixed key/value, frames of the same raw size), one frame per
 *       zstd call at the same level: they time zstd alone; generating the
 *       bytes is outside the clock (B3).
 *   BS3 Rates are MB of state (key + value bytes) per second.
 *   BS4 --rss runs `keel snapshot create` and `restore` once each as child
 *       programs and reports each one's peak resident memory (getrusage
 *       ru_maxrss), so nothing this process holds is counted.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zstd.h>

#include "bench/bench.h"
#include "common/diag.h"
#include "store/keyspace.h"
#include "store/store.h"
#include "tools/cli.h"

#define VALUE_BYTES 200u

/* The deterministic state: entry i's key (vat 1's vatstore key
 * "item.<16 hex>", store/keyspace.h) and value. */
static size_t entry_key(uint64_t i, char *buf)
{
    char user[32];
    keel__key k;
    int n = snprintf(user, sizeof(user), "item.%016" PRIx64, i);
    keel__ks_vatstore(&k, 1, user, (size_t)n);
    memcpy(buf, k.b, k.n);
    return k.n;
}

static size_t entry_value(uint64_t i, uint8_t *buf)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ull + 1;
    size_t n = (size_t)snprintf((char *)buf, VALUE_BYTES,
                                "{\"owner\":\"ko%" PRIu64 "\",\"state\":"
                                "\"fulfilled\",\"subscribers\":[1,2,3],"
                                "\"data\":\"",
                                i % 977);
    while (n < VALUE_BYTES - 2) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[n++] = (uint8_t)('0' + x % 10);
    }
    buf[n++] = '"';
    buf[n++] = '}';
    return n;
}

typedef struct snap_bench {
    const char *dir;
    char state[4096];
    char file[4096];
    char restored[4096];
    uint64_t entries;
    uint64_t bytes;
    int level;
    uint32_t frame_bytes;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    uint8_t *raw;
    uint8_t *comp;
    size_t comp_cap;
} snap_bench;

/* BS1 */
static int build_state(snap_bench *b, uint64_t size, keel_diag *diag)
{
    keel__store *s = NULL;
    char store[4200];
    char key[40];
    uint8_t val[VALUE_BYTES];
    snprintf(b->state, sizeof(b->state), "%s/state", b->dir);
    snprintf(store, sizeof(store), "%s/store", b->state);
    if (mkdir(b->state, 0755) != 0) {
        return keel__diag(diag, KEEL_EIO, "%s: mkdir failed", b->state);
    }
    keel__store_options o;
    keel__store_options_init(&o);
    o.map_bytes = size * 3 + (256u << 20);
    int rc = keel__store_open(store, &o, 0, &s, diag);
    for (uint64_t i = 0; rc == KEEL_OK && b->bytes < size; i++) {
        size_t kn = entry_key(i, key);
        size_t vn = entry_value(i, val);
        rc = keel__store_load_put(s, key, kn, val, vn, diag);
        b->bytes += kn + vn;
        b->entries++;
    }
    if (rc == KEEL_OK) {
        rc = keel__store_load_finish(s, 1, diag);
    }
    keel__store_close(s);
    return rc;
}

/* Frame i.. of the entries as the snapshot frames them into b->raw (BS2).
 * @return its length; *next: the first entry of the next frame. */
static size_t fill_frame(snap_bench *b, uint64_t first, uint64_t *next)
{
    size_t len = 0;
    uint64_t i = first;
    char key[40];
    uint8_t val[VALUE_BYTES];
    while (i < b->entries) {
        size_t kn = entry_key(i, key);
        size_t vn = entry_value(i, val);
        if (len > 0 && len + 8 + kn + vn > b->frame_bytes) {
            break;
        }
        keel__put_u32(b->raw + len, (uint32_t)kn);
        memcpy(b->raw + len + 4, key, kn);
        keel__put_u32(b->raw + len + 4 + kn, (uint32_t)vn);
        memcpy(b->raw + len + 8 + kn, val, vn);
        len += 8 + kn + vn;
        i++;
    }
    *next = i;
    return len;
}

static int zstd_pass(snap_bench *b, int decompress, double *seconds,
                     keel_diag *diag)
{
    double t = 0;
    uint64_t i = 0;
    while (i < b->entries) {
        size_t len = fill_frame(b, i, &i);
        double t0 = keel__bench_now();
        size_t c = ZSTD_compressCCtx(b->cctx, b->comp, b->comp_cap, b->raw, len,
                                     b->level);
        if (!decompress) {
            t += keel__bench_now() - t0;
        }
        if (ZSTD_isError(c)) {
            return keel__diag(diag, KEEL_ENOMEM, "zstd: %s",
                              ZSTD_getErrorName(c));
        }
        if (decompress) {
            t0 = keel__bench_now();
            size_t d = ZSTD_decompressDCtx(b->dctx, b->raw, b->frame_bytes,
                                           b->comp, c);
            t += keel__bench_now() - t0;
            if (ZSTD_isError(d) || d != len) {
                return keel__diag(diag, KEEL_ECORRUPT, "zstd round trip");
            }
        }
    }
    *seconds = t;
    return KEEL_OK;
}

static int run_compress(void *ctx, double *seconds, keel_diag *diag)
{
    return zstd_pass(ctx, 0, seconds, diag);
}

static int run_decompress(void *ctx, double *seconds, keel_diag *diag)
{
    return zstd_pass(ctx, 1, seconds, diag);
}

static int do_create(snap_bench *b, keel_diag *diag)
{
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.level = b->level;
    o.frame_bytes = b->frame_bytes;
    unlink(b->file);
    return keel_snapshot_create(b->state, b->file, &o, NULL, diag);
}

static int run_create(void *ctx, double *seconds, keel_diag *diag)
{
    snap_bench *b = ctx;
    double t0 = keel__bench_now();
    int rc = do_create(b, diag);
    *seconds = keel__bench_now() - t0;
    return rc;
}

static int run_restore(void *ctx, double *seconds, keel_diag *diag)
{
    snap_bench *b = ctx;
    int rc = keel__bench_rmtree(b->restored, NULL); /* untimed */
    (void)rc;
    double t0 = keel__bench_now();
    rc = keel_snapshot_restore(b->file, b->restored, NULL, NULL, diag);
    *seconds = keel__bench_now() - t0;
    return rc;
}

/* BS4: peak RSS (KiB) of one `keel snapshot create` (what == 0) or
 * `restore`, run as a fresh program so that nothing of this process's
 * memory is counted (a forked child would start with all of it). */
static int child_rss(snap_bench *b, int what, long *kib, keel_diag *diag)
{
    char level[16];
    snprintf(level, sizeof(level), "%d", b->level);
    char *create[] = {"keel",  "snapshot", "create", b->state,
                      b->file, "--level",  level,    NULL};
    char *restore[] = {"keel",  "snapshot",  "restore",
                       b->file, b->restored, NULL};
    fflush(stdout);
    if (what == 0) {
        unlink(b->file);
    }
    pid_t pid = fork();
    if (pid < 0) {
        return keel__diag(diag, KEEL_ENOMEM, "fork failed");
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
        }
        execv("/proc/self/exe", what == 0 ? create : restore);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        return keel__diag(diag, KEEL_EIO, "`keel snapshot %s` failed",
                          what == 0 ? "create" : "restore");
    }
    *kib = ru.ru_maxrss;
    return KEEL_OK;
}

enum { SB_SIZE, SB_LEVEL, SB_RUNS, SB_DIR, SB_RSS, SB_JSON, SB_NOPTS };

static const keel_cli_opt sb_opts[SB_NOPTS] = {
    [SB_SIZE] = {"size", "BYTES"}, [SB_LEVEL] = {"level", "L"},
    [SB_RUNS] = {"runs", "R"},     [SB_DIR] = {"dir", "PARENT"},
    [SB_RSS] = {"rss", NULL},      [SB_JSON] = {"json", NULL},
};

static const keel_cli_spec sb_spec = {
    .command = "bench snapshot",
    .help =
        "usage: keel bench snapshot [--size BYTES] [--level L] [--runs R]\n"
        "                           [--dir PARENT] [--rss] [--json]\n"
        "\n"
        "Build a kernel state of BYTES of keys and values (default 100M;\n"
        "K, M, G suffixes: powers of 1024), then time `snapshot create`\n"
        "against raw zstd compression of the same entry bytes, framed the\n"
        "same way, at the same level, and `snapshot restore` against raw\n"
        "zstd decompression; rates are MB of state per second, medians of\n"
        "R runs (default 5) after a warm-up, interleaved with the\n"
        "baselines.\n"
        "\n"
        "Options:\n"
        "  --size BYTES   state size (default 100M)\n"
        "  --level L      zstd level for both (default 3)\n"
        "  --runs R       counted runs (default 5)\n"
        "  --dir PARENT   where the temporary directory goes (default\n"
        "                 $TMPDIR, else the current directory)\n"
        "  --rss          also one create and one restore in a child each:\n"
        "                 peak resident memory\n"
        "  --json         one JSON object per result line\n",
    .opts = sb_opts,
    .nopts = SB_NOPTS,
    .min_pos = 0,
    .max_pos = 0,
    .pos = "",
};

static int parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;
    if (end == s) {
        return -1;
    }
    if (*end == 'K' || *end == 'k') {
        mul = 1024;
    } else if (*end == 'M' || *end == 'm') {
        mul = 1024 * 1024;
    } else if (*end == 'G' || *end == 'g') {
        mul = 1024ull * 1024 * 1024;
    } else if (*end != '\0') {
        return -1;
    }
    if (mul > 1 && end[1] != '\0') {
        return -1;
    }
    *out = v * mul;
    return v > 0 && *out / mul == v ? 0 : -1;
}

static int bench(snap_bench *b, size_t runs, int rss, int json, keel_diag *diag)
{
    keel_bench_series s[4] = {
        {"zstd-compress", run_compress, b, (double)b->bytes / 1e6, NULL},
        {"create", run_create, b, (double)b->bytes / 1e6, NULL},
        {"zstd-decomp", run_decompress, b, (double)b->bytes / 1e6, NULL},
        {"restore", run_restore, b, (double)b->bytes / 1e6, NULL},
    };
    int rc = keel__bench_interleave(s, 4, runs, diag);
    for (int i = 0; rc == KEEL_OK && i < 2; i++) {
        keel_bench_result r = {.workload = i == 0 ? "snapshot-create"
                                                  : "snapshot-restore",
                               .sync = "-",
                               .n = b->bytes,
                               .size = 0,
                               .candidate = &s[2 * i + 1],
                               .baseline = &s[2 * i],
                               .runs = runs};
        rc = keel__bench_report(&r, json);
    }
    long kib[2] = {0, 0};
    for (int i = 0; rc == KEEL_OK && rss && i < 2; i++) {
        keel__bench_rmtree(b->restored, NULL);
        rc = child_rss(b, i, &kib[i], diag);
    }
    if (rc == KEEL_OK && rss) {
        if (json) {
            printf("{\"workload\":\"snapshot-rss\",\"state_bytes\":%" PRIu64
                   ",\"create_max_rss_kib\":%ld,\"restore_max_rss_kib\":%ld}"
                   "\n",
                   b->bytes, kib[0], kib[1]);
        } else {
            printf("peak RSS for %.1f MB of state: create %.1f MiB, "
                   "restore %.1f MiB\n",
                   (double)b->bytes / 1e6, (double)kib[0] / 1024,
                   (double)kib[1] / 1024);
        }
    }
    keel__bench_series_free(s, 4);
    return rc;
}

int keel__bench_snapshot(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    keel_bench_env env;
    snap_bench b = {.level = KEEL_SNAPSHOT_DEFAULT_LEVEL,
                    .frame_bytes = KEEL_SNAPSHOT_DEFAULT_FRAME_BYTES};
    char *dir = NULL;
    uint64_t size = 100ull << 20, runs = 5, n = 0;
    int err = KEEL_OK;
    int rc = keel__cli_parse(&sb_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    if (a.val[SB_SIZE] != NULL && parse_size(a.val[SB_SIZE], &size) != 0) {
        return keel__cli_usage_error(sb_spec.command,
                                     "--size: expected a positive size such "
                                     "as 100M, got '%s'",
                                     a.val[SB_SIZE]);
    }
    if (a.val[SB_LEVEL] != NULL) {
        rc = keel__cli_parse_u64(sb_spec.command, "level", a.val[SB_LEVEL], 1,
                                 19, &n);
        if (rc != KEEL_CLI_CONTINUE) {
            return rc;
        }
        b.level = (int)n;
    }
    if (a.val[SB_RUNS] != NULL) {
        rc = keel__cli_parse_u64(sb_spec.command, "runs", a.val[SB_RUNS],
                                 KEEL_BENCH_MIN_RUNS, KEEL_BENCH_MAX_RUNS,
                                 &runs);
        if (rc != KEEL_CLI_CONTINUE) {
            return rc;
        }
    }
    b.cctx = ZSTD_createCCtx();
    b.dctx = ZSTD_createDCtx();
    b.comp_cap = ZSTD_compressBound(b.frame_bytes);
    b.raw = malloc(b.frame_bytes);
    b.comp = malloc(b.comp_cap);
    if (b.cctx == NULL || b.dctx == NULL || b.raw == NULL || b.comp == NULL) {
        err = keel__diag(&d, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    err = keel__bench_workdir(a.val[SB_DIR], &dir, &d);
    if (err < 0) {
        goto out;
    }
    b.dir = dir;
    snprintf(b.file, sizeof(b.file), "%s/state.ksnap", dir);
    snprintf(b.restored, sizeof(b.restored), "%s/restored", dir);
    err = build_state(&b, size, &d);
    if (err < 0) {
        goto out;
    }
    keel__bench_env(dir, &env);
    keel__bench_report_header("snapshot (MB of state/s)", &env, dir,
                              (size_t)runs, a.val[SB_JSON] != NULL);
    err = bench(&b, (size_t)runs, a.val[SB_RSS] != NULL, a.val[SB_JSON] != NULL,
                &d);
out:
    if (dir != NULL) {
        int rm = keel__bench_rmtree(dir, err == KEEL_OK ? &d : NULL);
        err = err == KEEL_OK ? rm : err;
    }
    free(dir);
    ZSTD_freeCCtx(b.cctx);
    ZSTD_freeDCtx(b.dctx);
    free(b.raw);
    free(b.comp);
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "keel: bench snapshot: %s\n", d.msg);
        return KEEL_CLI_FAIL;
    }
    return KEEL_CLI_OK;
}
