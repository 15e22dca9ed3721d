/*
 * tests/test_snapshot_state.c — snapshots of kernel states (issue 6 §4):
 * keel_snapshot_create and keel_snapshot_restore (snapshot/state.c), the
 * kernel's own and its periodic snapshots with retention and WAL
 * retirement (host/snapshots.c), and `keel snapshot create|verify|info|
 * restore` and `keel run --snapshot-every` (tools/).
 *
 * What is checked:
 *   - round trip: a state snapshotted after its kernel closed and restored
 *     holds every store entry byte for byte, at the same LSN, with the same
 *     crank and activity hash once opened; the snapshot verifies and its
 *     per-table counts are the store's;
 *   - continue after restore: a state restored from a snapshot taken at
 *     crank c (in process, and from outside after close) runs on to the
 *     same final hash, results and store as the original and as an
 *     uninterrupted run (chain5 with a thread-pool job pending at c too);
 *   - point in time (the mixed workload, deterministic): restores rolled
 *     forward to just before, at and after its out-of-crank and kernel-op
 *     records, by LSN and by crank, equal the original there (LSN, crank,
 *     hash, and the store against the original's snapshot at that point or
 *     a restore from another base), and one resumed runs on to the end;
 *   - live: snapshots taken while a `keel run` child works on the state
 *     (it holds the lock) verify and restore to their manifest, and the
 *     last one rolled forward reaches the child's final hash;
 *   - the audit (keel/recovery.h) from a snapshot passes on restored states
 *     and on the originals, also once their log retired before it;
 *   - damage: one bit flipped at every byte offset (the bit varies) and
 *     every truncation of a small snapshot are refused with a one-line
 *     diag naming the file, leaving neither NEWSTATE nor
 *     NEWSTATE.restoring;
 *   - refusals: an existing NEWSTATE (untouched) or `.restoring`, the log
 *     of another kernel, a gap between snapshot and log (the diag names the
 *     LSNs), a segment missing later, points outside the log or before the
 *     snapshot, both bounds; create without a state, beside a stale
 *     `.tmp`, into no directory; a failed snapshot does not stop the
 *     kernel (KS3);
 *   - periodic snapshots: exactly `keep` files of the newest LSNs remain,
 *     the log's first segment covers the oldest kept LSN + 1 and the
 *     segment count stays bounded all along, stale `.tmp` files go and
 *     unrelated files stay, and the oldest kept snapshot plus the log
 *     rebuild the final state;
 *   - the CLI: exit codes, --json fields, --help, one-line errors, and
 *     `keel run --snapshot-every ... --keep K`; a --snapshot-dir that is a
 *     file or unwritable fails before anything is committed;
 *   - durability: once a restore's bulk load is finished its store commits
 *     synced;
 *   - timelines: a restore records a new timeline with parent and branch
 *     LSN (store, status, manifest, CLI); format-1 snapshots read as
 *     timeline 0; B's snapshot with A's log is refused naming both hashes
 *     and timelines; a restored kernel refuses the original's snapshot
 *     directory and never adopts an original's file.
 *
 * In-process kernels run with sync=off: the claims are about contents,
 * not durability. States are compared through read-only views of their
 * stores (store/store.h). No assertion depends on timing: the waits for
 * the child process are bounded only so that a regression fails instead
 * of hanging.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/io_fault.h"
#include "keel/keel.h"
#include "keel/recovery.h"
#include "store/activity.h"
#include "store/keyspace.h"
#include "store/store.h"
#include "tests/testutil.h"

Suite *snapshot_state_suite(void);

/* Bounds on waits, so that a regression fails rather than hangs; never
 * timing checks. */
#define RUN_TIMEOUT_MS 120000u
#define WAIT_STEP_MS   10
#define WAIT_MAX_MS    60000

/* Clusters of built-in vats (' for "; %d: rounds or incrs). */
static const char pingpong_sq[] =
    "{'bootstrap':'alice','vats':{"
    "'alice':{'builtin':'pingpong','params':{'role':'alice','rounds':%d}},"
    "'bob':{'builtin':'pingpong','params':{'role':'bob'}}}}";
static const char fanout_sq[] =
    "{'bootstrap':'driver','vats':{"
    "'driver':{'builtin':'counter_driver','params':"
    "{'targets':['c1','c2','c3'],'incrs':%d}},"
    "'c1':{'builtin':'counter'},'c2':{'builtin':'counter'},"
    "'c3':{'builtin':'counter'}}}";
static const char chain5_sq[] =
    "{'bootstrap':'coordinator','vats':{"
    "'coordinator':{'builtin':'coordinator','params':{'rounds':%d}},"
    "'provider':{'builtin':'provider'},'keyring':{'builtin':'keyring'}}}";

/* ======================================================================== */
/* helpers                                                                  */
/* ======================================================================== */

/* The cluster config fmt_sq with n filled in and ' turned into ".
 * malloc'd. */
static char *cluster(const char *fmt_sq, int n)
{
    char buf[1024];
    snprintf(buf, sizeof(buf), fmt_sq, n);
    for (char *p = buf; *p != '\0'; p++) {
        if (*p == '\'') {
            *p = '"';
        }
    }
    char *s = strdup(buf);
    ck_assert_ptr_nonnull(s);
    return s;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static char *pathf(const char *dir, const char *fmt, uint64_t n)
{
    char name[256];
    snprintf(name, sizeof(name), fmt, n);
    return tu_path(dir, name);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- kernels ------------------------------------------------------------ */

static void kopts(keel_kernel_options *o)
{
    keel_kernel_options_init(o);
    o->sync = KEEL_SYNC_OFF;
}

static keel_kernel *k_open_with(const char *state, const keel_kernel_options *o)
{
    keel_kernel *k = NULL;
    keel_diag d = {0};
    int rc = keel_kernel_open(state, o, &k, &d);
    ck_assert_msg(rc == KEEL_OK, "open %s: %s: %s", state, keel_err_name(rc),
                  d.msg);
    return k;
}

static keel_kernel *k_open(const char *state)
{
    keel_kernel_options o;
    kopts(&o);
    return k_open_with(state, &o);
}

static void k_close(keel_kernel *k)
{
    keel_diag d = {0};
    int rc = keel_kernel_close(k, &d);
    ck_assert_msg(rc == KEEL_OK, "close: %s: %s", keel_err_name(rc), d.msg);
}

static void k_boot(keel_kernel *k, const char *config)
{
    keel_diag d = {0};
    int rc = keel_kernel_boot(k, config, NULL, &d);
    ck_assert_msg(rc == KEEL_OK, "boot: %s: %s\n%s", keel_err_name(rc), d.msg,
                  config);
}

/* A new kernel in state, booted from cluster(fmt_sq, n). */
static keel_kernel *k_new_with(const char *state, const keel_kernel_options *o,
                               const char *fmt_sq, int n)
{
    char *cfg = cluster(fmt_sq, n);
    keel_kernel *k = k_open_with(state, o);
    k_boot(k, cfg);
    free(cfg);
    return k;
}

static keel_kernel *k_new(const char *state, const char *fmt_sq, int n)
{
    keel_kernel_options o;
    kopts(&o);
    return k_new_with(state, &o, fmt_sq, n);
}

/* Run up to max_cranks (0: until idle, which is then asserted). */
static keel_run_stats k_run(keel_kernel *k, uint64_t max_cranks)
{
    keel_diag d = {0};
    keel_run_stats s;
    keel_run_options ro = {.max_cranks = max_cranks,
                           .timeout_ms = RUN_TIMEOUT_MS};
    int rc = keel_kernel_run(k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(!s.timed_out, "run timed out after %u ms", RUN_TIMEOUT_MS);
    if (max_cranks == 0) {
        ck_assert(s.idle);
    }
    return s;
}

static json_t *k_status(keel_kernel *k)
{
    keel_diag d = {0};
    char *text = NULL;
    int rc = keel_kernel_status_json(k, &text, &d);
    ck_assert_msg(rc == KEEL_OK, "status: %s: %s", keel_err_name(rc), d.msg);
    json_t *st = json_loads(text, 0, NULL);
    ck_assert_msg(json_is_object(st), "status: %s", text);
    free(text);
    return st;
}

/* Where a kernel is: applied LSN, crank, activity hash. */
typedef struct point {
    uint64_t lsn;
    uint64_t crank;
    uint64_t hash;
} point;

static point k_point(keel_kernel *k)
{
    json_t *st = k_status(k);
    const json_t *lsn = json_object_get(st, "applied_lsn");
    ck_assert(json_is_integer(lsn));
    point p = {.lsn = (uint64_t)json_integer_value(lsn),
               .crank = keel_kernel_crank_number(k),
               .hash = keel_kernel_activity_hash(k)};
    json_decref(st);
    return p;
}

static void ck_point_eq(point got, point want, const char *what)
{
    ck_assert_msg(
        got.lsn == want.lsn && got.crank == want.crank && got.hash == want.hash,
        "%s: LSN %" PRIu64 ", crank %" PRIu64 ", hash %016" PRIx64
        "; expected LSN %" PRIu64 ", crank %" PRIu64 ", hash %016" PRIx64,
        what, got.lsn, got.crank, got.hash, want.lsn, want.crank, want.hash);
}

static uint64_t k_kernel_id(keel_kernel *k)
{
    json_t *st = k_status(k);
    const char *s = json_string_value(json_object_get(st, "kernel_id"));
    ck_assert_ptr_nonnull(s);
    uint64_t id = strtoull(s, NULL, 16);
    json_decref(st);
    return id;
}

/* Assert vat's vatstore key holds want. */
static void ck_vs(keel_kernel *k, const char *vat, const char *key,
                  const char *want)
{
    keel_diag d = {0};
    char *val = NULL;
    size_t len = 0;
    int rc = keel_kernel_vatstore_get(k, vat, key, &val, &len, &d);
    ck_assert_msg(rc == 1, "vatstore %s %s: %d %s", vat, key, rc, d.msg);
    ck_assert_msg(strcmp(val, want) == 0, "vatstore %s %s: '%s', expected '%s'",
                  vat, key, val, want);
    free(val);
}

/* The fan-out cluster's results: every one of n answers seen, and the
 * three counters' counts add up to n. */
static void ck_fanout_done(keel_kernel *k, int n)
{
    char want[16];
    snprintf(want, sizeof(want), "%d", n);
    ck_vs(k, "driver", "seen", want);
    ck_vs(k, "driver", "done", "1");
    for (int i = 0; i < 3; i++) {
        char vat[8];
        snprintf(vat, sizeof(vat), "c%d", i + 1);
        snprintf(want, sizeof(want), "%d", n / 3 + (i < n % 3));
        ck_vs(k, vat, "count", want);
    }
}

static void ck_chain5_done(keel_kernel *k, int rounds)
{
    char want[16];
    snprintf(want, sizeof(want), "%d", rounds);
    ck_vs(k, "coordinator", "rounds_done", want);
    ck_vs(k, "coordinator", "done", "1");
    ck_vs(k, "provider", "records", want);
}

/* ---- stores -------------------------------------------------------------- */

static keel__store_view *view_open(const char *state)
{
    keel__store_view *v = NULL;
    keel_diag d = {0};
    char *dir = tu_path(state, "store");
    int rc = keel__store_view_open(dir, &v, &d);
    ck_assert_msg(rc == KEEL_OK, "view %s: %s: %s", dir, keel_err_name(rc),
                  d.msg);
    free(dir);
    return v;
}

static int view_next(keel__store_view *v, keel_bytes *key, keel_bytes *val)
{
    keel_diag d = {0};
    int rc = keel__store_view_next(v, key, val, &d);
    ck_assert_msg(rc >= 0, "view next: %s: %s", keel_err_name(rc), d.msg);
    return rc;
}

/*
 * Assert the stores of states a and b (no kernel open on either in this
 * process) belong to the same kernel, are at the same LSN and hold the
 * same entries, keys and values byte for byte. @return the entry count.
 */
static uint64_t ck_stores_equal(const char *a, const char *b)
{
    keel__store_view *va = view_open(a);
    keel__store_view *vb = view_open(b);
    uint64_t n = 0;
    ck_assert_uint_eq(keel__store_view_kernel_id(va),
                      keel__store_view_kernel_id(vb));
    ck_assert_uint_eq(keel__store_view_lsn(va), keel__store_view_lsn(vb));
    for (;;) {
        keel_bytes ka, xa, kb, xb;
        int ra = view_next(va, &ka, &xa);
        int rb = view_next(vb, &kb, &xb);
        ck_assert_msg(ra == rb,
                      "%s and %s differ in length after %" PRIu64 " entries", a,
                      b, n);
        if (ra == 0) {
            break;
        }
        ck_assert_msg(ka.len == kb.len && memcmp(ka.ptr, kb.ptr, ka.len) == 0,
                      "entry %" PRIu64 ": key '%.*s' in %s, '%.*s' in %s", n,
                      (int)ka.len, (const char *)ka.ptr, a, (int)kb.len,
                      (const char *)kb.ptr, b);
        ck_assert_msg(xa.len == xb.len && memcmp(xa.ptr, xb.ptr, xa.len) == 0,
                      "entry %" PRIu64 " '%.*s': values differ (%zu, %zu "
                      "bytes)",
                      n, (int)ka.len, (const char *)ka.ptr, xa.len, xb.len);
        n++;
    }
    keel__store_view_close(va);
    keel__store_view_close(vb);
    ck_assert_uint_gt(n, 0);
    return n;
}

/* 1 if a key of state's store contains needle. */
static int store_has_key_with(const char *state, const char *needle)
{
    keel__store_view *v = view_open(state);
    keel_bytes k, x;
    int found = 0;
    while (!found && view_next(v, &k, &x) == 1) {
        char key[1200]; /* its human form (store/keyspace.h) */
        keel__ks_render(k.ptr, k.len, key, sizeof(key));
        found = strstr(key, needle) != NULL;
    }
    keel__store_view_close(v);
    return found;
}

/* ---- snapshots ----------------------------------------------------------- */

static keel_snapshot_info snap_create(const char *state, const char *path)
{
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_snapshot_create(state, path, NULL, &info, &d);
    ck_assert_msg(rc == KEEL_OK, "snapshot %s: %s: %s", state,
                  keel_err_name(rc), d.msg);
    return info;
}

static keel_snapshot_info snap_kernel(keel_kernel *k, const char *path)
{
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_kernel_snapshot(k, path, &info, &d);
    ck_assert_msg(rc == KEEL_OK, "kernel snapshot: %s: %s", keel_err_name(rc),
                  d.msg);
    return info;
}

/* Verify path and assert it holds what info says was written. */
static void snap_verify(const char *path, const keel_snapshot_info *want)
{
    keel_snapshot_info got;
    keel_diag d = {0};
    int rc = keel_snapshot_verify(path, NULL, &got, &d);
    ck_assert_msg(rc == KEEL_OK, "verify %s: %s: %s", path, keel_err_name(rc),
                  d.msg);
    ck_assert_uint_eq(got.meta.kernel_id, want->meta.kernel_id);
    ck_assert_uint_eq(got.meta.lsn, want->meta.lsn);
    ck_assert_uint_eq(got.meta.crank, want->meta.crank);
    ck_assert_uint_eq(got.meta.activity_hash, want->meta.activity_hash);
    ck_assert_uint_eq(got.entries, want->entries);
    ck_assert_uint_eq(got.bytes, want->bytes);
    ck_assert_uint_eq(got.file_bytes, want->file_bytes);
}

static keel_snapshot_info snap_info(const char *path)
{
    keel_snapshot_reader *r = NULL;
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_snapshot_reader_open(path, NULL, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "open %s: %s: %s", path, keel_err_name(rc),
                  d.msg);
    keel_snapshot_reader_info(r, &info);
    keel_snapshot_reader_close(r);
    return info;
}

/*
 * Assert the manifest of snapshot path lists exactly the tables of state's
 * store (each key's table, store/keyspace.h), with their entry and
 * byte counts, and the store's LSN and kernel id.
 */
static void ck_manifest_counts_store(const char *path, const char *state)
{
    keel_snapshot_reader *r = NULL;
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_snapshot_reader_open(path, NULL, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "open %s: %s", path, d.msg);
    keel_snapshot_reader_info(r, &info);
    uint64_t entries[KEEL_SNAPSHOT_MAX_TABLES] = {0};
    uint64_t bytes[KEEL_SNAPSHOT_MAX_TABLES] = {0};
    uint64_t total = 0, total_bytes = 0;
    keel__store_view *v = view_open(state);
    ck_assert_uint_eq(info.meta.lsn, keel__store_view_lsn(v));
    ck_assert_uint_eq(info.meta.kernel_id, keel__store_view_kernel_id(v));
    keel_bytes k, x;
    while (view_next(v, &k, &x) == 1) {
        keel__ks_key dk;
        ck_assert(keel__ks_decode(k.ptr, k.len, &dk));
        const char *name = keel__ks_table_name(dk.table);
        uint32_t t = 0;
        while (t < info.tables) {
            const keel_snapshot_table *tab = keel_snapshot_reader_table(r, t);
            if (strcmp(tab->name, name) == 0) {
                break;
            }
            t++;
        }
        ck_assert_msg(t < info.tables, "no table in the manifest for '%.*s'",
                      (int)k.len, (const char *)k.ptr);
        entries[t]++;
        bytes[t] += k.len + x.len;
        total++;
        total_bytes += k.len + x.len;
    }
    keel__store_view_close(v);
    for (uint32_t t = 0; t < info.tables; t++) {
        const keel_snapshot_table *tab = keel_snapshot_reader_table(r, t);
        ck_assert_msg(tab->entries == entries[t] && tab->bytes == bytes[t],
                      "table %s: manifest %" PRIu64 " entries, %" PRIu64
                      " bytes; store %" PRIu64 ", %" PRIu64,
                      tab->name, tab->entries, tab->bytes, entries[t],
                      bytes[t]);
        ck_assert_uint_gt(entries[t], 0); /* no table the store lacks */
    }
    ck_assert_uint_eq(info.entries, total);
    ck_assert_uint_eq(info.bytes, total_bytes);
    keel_snapshot_reader_close(r);
}

/* ---- restores ------------------------------------------------------------ */

static int restore(const char *snap, const char *dst, const char *wal,
                   uint64_t to_lsn, uint64_t to_crank,
                   keel_snapshot_restore_report *rep, keel_diag *d)
{
    keel_snapshot_restore_options o;
    keel_snapshot_restore_options_init(&o);
    o.wal_dir = wal;
    o.to_lsn = to_lsn;
    o.to_crank = to_crank;
    return keel_snapshot_restore(snap, dst, &o, rep, d);
}

static keel_snapshot_restore_report restore_ok(const char *snap,
                                               const char *dst, const char *wal,
                                               uint64_t to_lsn,
                                               uint64_t to_crank)
{
    keel_snapshot_restore_report rep;
    keel_diag d = {0};
    int rc = restore(snap, dst, wal, to_lsn, to_crank, &rep, &d);
    ck_assert_msg(rc == KEEL_OK,
                  "restore %s to %s (wal %s, LSN %" PRIu64 ", crank %" PRIu64
                  "): %s: %s",
                  snap, dst, wal != NULL ? wal : "-", to_lsn, to_crank,
                  keel_err_name(rc), d.msg);
    return rep;
}

/* Assert a failed restore into dst left neither dst nor dst.restoring. */
static void ck_nothing_left(const char *dst, const char *what)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.restoring", dst);
    ck_assert_msg(!exists(dst), "%s: %s left behind", what, dst);
    ck_assert_msg(!exists(tmp), "%s: %s left behind", what, tmp);
}

/* Assert rc is want with a one-line diag containing each of needles
 * (NULL-terminated), and nothing left behind. */
static void ck_refused(int rc, int want, const keel_diag *d, const char *dst,
                       const char *what, const char *const *needles)
{
    ck_assert_msg(rc == want, "%s: %s (%s), expected %s", what,
                  keel_err_name(rc), d->msg, keel_err_name(want));
    ck_assert_msg(d->msg[0] != '\0' && strchr(d->msg, '\n') == NULL,
                  "%s: diag not one line: '%s'", what, d->msg);
    for (size_t i = 0; needles != NULL && needles[i] != NULL; i++) {
        ck_assert_msg(strstr(d->msg, needles[i]) != NULL,
                      "%s: diag '%s' does not name '%s'", what, d->msg,
                      needles[i]);
    }
    ck_nothing_left(dst, what);
}

/* ---- directories of numbered files --------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The numbers of the `<20 digits><suffix>` files in dir, ascending, into
 * out[cap]; @return how many. *tmps (optional): how many names end in
 * ".tmp". */
static size_t list_numbered(const char *dir, const char *suffix, uint64_t *out,
                            size_t cap, size_t *tmps)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s", dir);
    size_t n = 0, sl = strlen(suffix);
    struct dirent *e;
    if (tmps != NULL) {
        *tmps = 0;
    }
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        if (tmps != NULL && len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
            (*tmps)++;
        }
        if (len != 20 + sl || strcmp(name + 20, suffix) != 0 ||
            strspn(name, "0123456789") != 20) {
            continue;
        }
        ck_assert_uint_lt(n, cap);
        out[n++] = strtoull(name, NULL, 10);
    }
    closedir(d);
    qsort(out, n, sizeof(*out), cmp_u64);
    return n;
}

/* ---- the audit ----------------------------------------------------------- */

/* Audit state from the snapshot base: it runs, finds no violation, starts
 * at the snapshot's LSN and ends at `end`. */
static void ck_audit(const char *state, const char *base, point end)
{
    keel_audit_options o;
    keel_audit_report rep;
    keel_diag d = {0};
    keel_audit_options_init(&o);
    o.base_snapshot = base;
    int rc = keel_audit(state, &o, &rep, &d);
    ck_assert_msg(rc == KEEL_OK, "audit %s from %s: %s: %s", state, base,
                  keel_err_name(rc), d.msg);
    ck_assert_msg(rep.violations == 0,
                  "audit %s from %s: LSN %" PRIu64 ", crank %" PRIu64 ": %s",
                  state, base, rep.violation_lsn, rep.violation_crank,
                  rep.violation);
    ck_assert_uint_eq(rep.base_lsn, snap_info(base).meta.lsn);
    ck_assert_uint_eq(rep.final_hash, end.hash);
    ck_assert_uint_eq(rep.base_lsn == end.lsn ? end.lsn : rep.last_lsn,
                      end.lsn);
}

/* ======================================================================== */
/* round trip                                                               */
/* ======================================================================== */

static void round_trip_case(const char *fmt_sq, int n)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *snap = tu_path(root, "s.ksnap");
    char *dst = tu_path(root, "restored");
    keel_kernel *k = k_new(state, fmt_sq, n);
    k_run(k, 0);
    point want = k_point(k);
    uint64_t kid = k_kernel_id(k);
    k_close(k);

    keel_snapshot_info info = snap_create(state, snap);
    ck_assert_uint_eq(info.meta.kernel_id, kid);
    ck_assert_uint_eq(info.meta.lsn, want.lsn);
    ck_assert_uint_eq(info.meta.crank, want.crank);
    ck_assert_uint_eq(info.meta.activity_hash, want.hash);
    snap_verify(snap, &info);
    ck_manifest_counts_store(snap, state);

    keel_snapshot_restore_report rep = restore_ok(snap, dst, NULL, 0, 0);
    ck_assert_uint_eq(rep.rolled_forward, 0);
    ck_assert_uint_eq(rep.lsn, want.lsn);
    ck_assert_uint_eq(rep.crank, want.crank);
    ck_assert_uint_eq(rep.snapshot.meta.activity_hash, want.hash);
    ck_assert_uint_eq(rep.snapshot.entries, info.entries);
    ck_assert_uint_eq(ck_stores_equal(state, dst), info.entries);

    k = k_open(dst);
    ck_assert(keel_kernel_booted(k));
    ck_point_eq(k_point(k), want, "restored state");
    ck_assert_uint_eq(k_kernel_id(k), kid);
    k_close(k);
    ck_audit(dst, snap, want);
    ck_audit(state, snap, want);
    tu_rmrf(root);
    free(root);
    free(state);
    free(snap);
    free(dst);
}

START_TEST(test_snapshot_state_round_trip_pingpong_identical)
{
    round_trip_case(pingpong_sq, 20);
}
END_TEST

START_TEST(test_snapshot_state_round_trip_fanout_identical)
{
    round_trip_case(fanout_sq, 40);
}
END_TEST

START_TEST(test_snapshot_state_round_trip_chain5_identical)
{
    round_trip_case(chain5_sq, 3);
}
END_TEST

/* ======================================================================== */
/* continue after restore                                                   */
/* ======================================================================== */

/*
 * Run fmt_sq(n) to crank c, snapshot it in process (A), close, snapshot it
 * from outside (B), run the original on to the end. Restored from A and
 * from B, each runs on to the same final LSN, crank and hash and the same
 * store as the original, and as a run never interrupted.
 */
static void continue_case(const char *fmt_sq, int n, uint64_t c,
                          int deterministic, const char *pending_key,
                          void (*ck_done)(keel_kernel *, int))
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *whole = tu_path(root, "whole");
    char *snaps[2] = {tu_path(root, "a.ksnap"), tu_path(root, "b.ksnap")};
    char *dsts[2] = {tu_path(root, "from-a"), tu_path(root, "from-b")};
    keel_kernel_options o;
    kopts(&o);
    o.deterministic = deterministic;

    keel_kernel *k = k_new_with(whole, &o, fmt_sq, n);
    k_run(k, 0);
    point uninterrupted = k_point(k);
    k_close(k);

    k = k_new_with(state, &o, fmt_sq, n);
    k_run(k, c);
    point at_c = k_point(k);
    ck_assert_uint_eq(at_c.crank, c);
    keel_snapshot_info a = snap_kernel(k, snaps[0]);
    ck_assert_uint_eq(a.meta.lsn, at_c.lsn);
    ck_assert_uint_eq(a.meta.crank, c);
    ck_assert_uint_eq(a.meta.activity_hash, at_c.hash);
    k_close(k);
    keel_snapshot_info b = snap_create(state, snaps[1]);
    ck_assert_uint_eq(b.meta.lsn, a.meta.lsn);
    ck_assert_uint_eq(b.meta.crank, a.meta.crank);
    ck_assert_uint_eq(b.meta.activity_hash, a.meta.activity_hash);
    ck_assert_uint_eq(b.entries, a.entries);
    ck_assert_uint_eq(b.bytes, a.bytes);

    k = k_open_with(state, &o);
    k_run(k, 0);
    point final = k_point(k);
    ck_done(k, n);
    k_close(k);
    ck_point_eq(uninterrupted, final, "the run interrupted at c");

    for (int i = 0; i < 2; i++) {
        keel_snapshot_restore_report rep =
            restore_ok(snaps[i], dsts[i], NULL, 0, 0);
        ck_assert_uint_eq(rep.crank, c);
        if (pending_key != NULL) {
            ck_assert_msg(store_has_key_with(dsts[i], pending_key),
                          "no %s key at crank %" PRIu64, pending_key, c);
        }
        k = k_open_with(dsts[i], &o);
        ck_point_eq(k_point(k), at_c, snaps[i]);
        k_run(k, 0);
        ck_point_eq(k_point(k), final, dsts[i]);
        ck_done(k, n);
        k_close(k);
        ck_stores_equal(state, dsts[i]);
        ck_audit(dsts[i], snaps[i], final);
    }
    tu_rmrf(root);
    free(root);
    free(state);
    free(whole);
    for (int i = 0; i < 2; i++) {
        free(snaps[i]);
        free(dsts[i]);
    }
}

START_TEST(test_snapshot_state_continue_fanout_same_result)
{
    continue_case(fanout_sq, 60, 40, 0, NULL, ck_fanout_done);
}
END_TEST

/* Crank 8 of chain5 is round 2's fetch: its thread-pool job is pending
 * (job.<P1> in the provider's vatstore) when the snapshot is taken. */
START_TEST(test_snapshot_state_continue_chain5_pending_job_same_result)
{
    continue_case(chain5_sq, 4, 8, 1, ".job.", ck_chain5_done);
}
END_TEST

/* ======================================================================== */
/* point in time                                                            */
/* ======================================================================== */

/*
 * The mixed workload (vats/mixed.c) in deterministic mode: cranks,
 * out-of-crank records (its clock's timers and thread-pool jobs complete
 * between cranks, one at a time when nothing is queued) and kernel-op
 * records (boot, the quitter's exit and the crasher's failed delivery
 * terminate them in transactions of their own).
 */
#define PIT_SNAP_CRANK 3
#define PIT_MAX        2048
#define PIT_OOC        2 /* out-of-crank records to restore around */
#define PIT_KOP        1 /* kernel-op records after boot: the one there is */

static char *mixed_config(void)
{
    size_t len = 0;
    uint8_t *buf = tu_read_file(KEEL_MIXED_JSON, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", KEEL_MIXED_JSON);
    buf[len] = '\0';
    return (char *)buf;
}

/* One record of the original's log: the point it leaves the state at. */
typedef struct logrec {
    point p;
    int kind;
} logrec;

/* Every record of the log in wal, recs[lsn - 1]. @return how many. */
static size_t read_log(const char *wal, logrec *recs, size_t cap)
{
    keel_wal_reader *r = NULL;
    keel_wal_record rec;
    keel_diag d = {0};
    XXH3_state_t *st = XXH3_createState();
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(keel_wal_reader_open(wal, NULL, 0, &r, &d), KEEL_OK);
    size_t n = 0;
    int rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_uint_lt(n, cap);
        ck_assert_uint_eq(rec.lsn, n + 1);
        uint64_t computed = 0, stored = 0;
        ck_assert_int_eq(
            keel__activity_hash_record(st, n > 0 ? recs[n - 1].p.hash : 0,
                                       rec.kind, rec.crank, rec.payload.ptr,
                                       rec.payload.len, &computed, &stored, &d),
            KEEL_OK);
        ck_assert_uint_eq(computed, stored);
        recs[n].p = (point){rec.lsn, rec.crank, stored};
        recs[n].kind = rec.kind;
        n++;
    }
    ck_assert_msg(rc == 0, "%s: %s", wal, d.msg);
    keel_wal_reader_close(r);
    XXH3_freeState(st);
    return n;
}

/* The point --to-crank c stops at: after the last record of crank <= c. */
static point log_point_of_crank(const logrec *recs, size_t n, uint64_t c)
{
    point p = {0};
    for (size_t i = 0; i < n && recs[i].p.crank <= c; i++) {
        p = recs[i].p;
    }
    ck_assert_uint_ne(p.lsn, 0);
    return p;
}

/* Where the test saw the original between its calls, each with a
 * snapshot taken there. */
typedef struct seen {
    point p[PIT_MAX];
    size_t n;
} seen;

static char *seen_snap(const char *root, uint64_t lsn)
{
    return pathf(root, "seen-%" PRIu64 ".ksnap", lsn);
}

/*
 * Restore the early snapshot rolled forward through the original's log to
 * to_lsn or to_crank: it is `want` (LSN, crank, hash); and its store
 * equals the original's at that point: the snapshot the test took there
 * when it saw that point, else (a point inside one call: after an
 * out-of-crank record, before the crank it queued) the restore of the
 * last snapshot seen before it rolled forward to it, from another base.
 */
static void pit_case(const char *root, const char *snap, const char *wal,
                     const seen *sn, uint64_t to_lsn, uint64_t to_crank,
                     point want, size_t *unseen)
{
    char *dst = tu_path(root, "pit");
    char *ref = tu_path(root, "pit-ref");
    char what[96];
    snprintf(what, sizeof(what), "--to-lsn %" PRIu64 " --to-crank %" PRIu64,
             to_lsn, to_crank);
    keel_snapshot_restore_report rep =
        restore_ok(snap, dst, wal, to_lsn, to_crank);
    ck_assert_uint_eq(rep.lsn, want.lsn);
    ck_assert_uint_eq(rep.crank, want.crank);
    keel_kernel *k = k_open(dst);
    ck_point_eq(k_point(k), want, what);
    k_close(k);
    size_t i = sn->n;
    while (i > 0 && sn->p[i - 1].lsn > want.lsn) {
        i--;
    }
    ck_assert_uint_gt(i, 0);
    char *base = seen_snap(root, sn->p[i - 1].lsn);
    if (sn->p[i - 1].lsn == want.lsn) {
        ck_point_eq(sn->p[i - 1], want, "seen");
        restore_ok(base, ref, NULL, 0, 0);
    } else {
        restore_ok(base, ref, wal, want.lsn, 0);
        (*unseen)++;
    }
    ck_stores_equal(dst, ref);
    tu_rmrf(dst);
    tu_rmrf(ref);
    free(base);
    free(dst);
    free(ref);
}

START_TEST(test_snapshot_state_point_in_time_equals_original)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *snap = tu_path(root, "early.ksnap");
    char *config = mixed_config();
    static seen sn;
    static logrec recs[PIT_MAX];
    keel_snapshot_info info = {0};
    keel_diag d = {0};
    keel_kernel_options o;
    kopts(&o);
    o.deterministic = 1;

    /* The original, stepped: after every call the test sees where it is
     * and snapshots it there. */
    keel_kernel *k = k_open_with(state, &o);
    k_boot(k, config);
    sn.n = 0;
    for (;;) {
        int rc = keel_kernel_step(k, &d);
        ck_assert_msg(rc >= 0, "step: %s: %s", keel_err_name(rc), d.msg);
        if (rc == 0) { /* idle: the next async completion and its crank */
            keel_run_options ro = {.max_cranks = 1,
                                   .timeout_ms = RUN_TIMEOUT_MS};
            keel_run_stats rs;
            rc = keel_kernel_run(k, &ro, &rs, &d);
            ck_assert_msg(rc == KEEL_OK, "run: %s: %s", keel_err_name(rc),
                          d.msg);
            if (rs.cranks == 0) {
                ck_assert(rs.idle);
                break;
            }
        }
        point p = k_point(k);
        ck_assert_uint_lt(sn.n, PIT_MAX);
        if (p.crank == PIT_SNAP_CRANK && !exists(snap)) {
            info = snap_kernel(k, snap);
            ck_assert_uint_eq(info.meta.lsn, p.lsn);
        }
        if (exists(snap)) {
            char *f = seen_snap(root, p.lsn);
            snap_kernel(k, f);
            free(f);
            sn.p[sn.n++] = p;
        }
    }
    point final = k_point(k);
    ck_vs(k, "driver", "done", "1");
    k_close(k);

    /* The log says what each record is. */
    size_t n = read_log(wal, recs, PIT_MAX);
    ck_assert_uint_eq(n, final.lsn);
    ck_point_eq(recs[n - 1].p, final, "the log's last record");
    uint64_t targets[PIT_OOC + PIT_KOP];
    size_t nt = 0, ooc = 0, kop = 0;
    for (size_t i = info.meta.lsn; i < n; i++) {
        if (recs[i].kind == KEEL_WAL_OUT_OF_CRANK && ooc < PIT_OOC) {
            targets[nt++] = recs[i].p.lsn;
            ooc++;
        } else if (recs[i].kind == KEEL_WAL_KERNEL_OP && kop < PIT_KOP) {
            targets[nt++] = recs[i].p.lsn;
            kop++;
        }
    }
    ck_assert_msg(ooc == PIT_OOC && kop == PIT_KOP,
                  "the workload made %zu out-of-crank and %zu kernel-op "
                  "records after LSN %" PRIu64,
                  ooc, kop, info.meta.lsn);

    /* Just before, at and after each such record: by LSN and by crank. */
    size_t unseen = 0;
    for (size_t t = 0; t < nt; t++) {
        uint64_t l = targets[t];
        point at = recs[l - 1].p;
        for (uint64_t x = l - 1; x <= l + 1 && x <= n; x++) {
            if (x >= info.meta.lsn) {
                pit_case(root, snap, wal, &sn, x, 0, recs[x - 1].p, &unseen);
            }
        }
        for (uint64_t c = at.crank - 1; c <= at.crank + 1; c++) {
            if (c >= info.meta.crank && c <= final.crank) {
                pit_case(root, snap, wal, &sn, 0, c,
                         log_point_of_crank(recs, n, c), &unseen);
            }
        }
    }
    /* and every 50th record, and the end */
    for (size_t i = info.meta.lsn; i < n; i += 50) {
        pit_case(root, snap, wal, &sn, i, 0, recs[i - 1].p, &unseen);
    }
    pit_case(root, snap, wal, &sn, 0, final.crank, final, &unseen);
    /* some points lie inside one call (an out-of-crank record, then the
     * crank it queued): compared through another base */
    ck_assert_uint_gt(unseen, 0);

    /* a point in the middle, resumed, runs on to the original's end */
    point mid = recs[(info.meta.lsn + n) / 2].p;
    char *dst = tu_path(root, "resumed");
    restore_ok(snap, dst, wal, mid.lsn, 0);
    k = k_open_with(dst, &o);
    ck_point_eq(k_point(k), mid, "resumed before its run");
    k_run(k, 0);
    ck_point_eq(k_point(k), final, "resumed after its run");
    ck_vs(k, "driver", "done", "1");
    k_close(k);
    ck_stores_equal(state, dst);
    ck_audit(dst, snap, final);
    ck_audit(state, snap, final);
    free(dst);
    free(config);
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(snap);
}
END_TEST

/* ======================================================================== */
/* live snapshots beside `keel run`                                         */
/* ======================================================================== */

#define LIVE_SNAPSHOTS 3

/* Start `keel run state ...args` with stdout into out_path; the child dies
 * with the test process. */
static pid_t spawn_keel(const char *const *args, const char *out_path)
{
    size_t n = 0;
    while (args[n] != NULL) {
        n++;
    }
    const char **argv = calloc(n + 2, sizeof(*argv));
    ck_assert_ptr_nonnull(argv);
    argv[0] = KEEL_BIN;
    memcpy(argv + 1, args, n * sizeof(*argv));
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(126);
        }
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        execv(KEEL_BIN, (char *const *)argv);
        _exit(127);
    }
    free(argv);
    return pid;
}

/* Wait for pid to exit (bounded); @return its wait status. */
static int wait_child(pid_t pid)
{
    int st = 0;
    pid_t got = 0;
    for (long waited = 0; got == 0 && waited < WAIT_MAX_MS;
         waited += WAIT_STEP_MS) {
        got = waitpid(pid, &st, WNOHANG);
        if (got == 0) {
            sleep_ms(WAIT_STEP_MS);
        }
    }
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        ck_abort_msg("keel run did not exit");
    }
    return st;
}

START_TEST(test_snapshot_state_live_snapshots_restore_and_roll_forward)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *config = tu_path(root, "cluster.json");
    char *outp = tu_path(root, "run.out");
    char *cfg = cluster(pingpong_sq, 200000);
    tu_write_file(config, cfg, strlen(cfg));
    /* boot first, so that the child resumes a complete state */
    const char *boot[] = {"run", state,          "--config", config, "--sync",
                          "off", "--max-cranks", "1",        NULL};
    char *err = NULL;
    ck_assert_msg(tu_run_keel(boot, NULL, &err) == 0, "boot: %s", err);
    free(err);
    const char *run[] = {"run", state,    "--sync", "off", "--checkpoint-ms",
                         "20",  "--json", NULL};
    pid_t pid = spawn_keel(run, outp);

    char *snaps[LIVE_SNAPSHOTS];
    keel_snapshot_info infos[LIVE_SNAPSHOTS];
    uint64_t last_lsn = 0;
    for (int i = 0; i < LIVE_SNAPSHOTS; i++) {
        snaps[i] = pathf(root, "live-%" PRIu64 ".ksnap", (uint64_t)i);
        /* the checkpoint moves every 20 ms: wait for a new one */
        for (long waited = 0;; waited += WAIT_STEP_MS) {
            infos[i] = snap_create(state, snaps[i]);
            if (infos[i].meta.lsn > last_lsn) {
                break;
            }
            ck_assert_msg(waited < WAIT_MAX_MS, "the checkpoint never moved");
            ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0,
                          "keel run ended early");
            sleep_ms(WAIT_STEP_MS);
        }
        last_lsn = infos[i].meta.lsn;
    }
    /* live: the child was working all along */
    ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0,
                  "keel run finished before the last snapshot");
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    int st = wait_child(pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
    size_t len = 0;
    char *out = (char *)tu_read_file(outp, &len);
    ck_assert_ptr_nonnull(out);
    out[len] = '\0';
    json_t *sum = json_loads(out, 0, NULL);
    ck_assert_msg(json_is_object(sum), "summary: %s", out);
    ck_assert_str_eq(json_string_value(json_object_get(sum, "stopped")),
                     "signal");
    point child = {
        .lsn =
            (uint64_t)json_integer_value(json_object_get(sum, "durable_lsn")),
        .crank = (uint64_t)json_integer_value(json_object_get(sum, "crank")),
        .hash =
            strtoull(json_string_value(json_object_get(sum, "activity_hash")),
                     NULL, 16)};
    json_decref(sum);
    free(out);
    ck_assert_uint_gt(child.lsn, last_lsn);

    for (int i = 0; i < LIVE_SNAPSHOTS; i++) {
        snap_verify(snaps[i], &infos[i]);
        char *dst = pathf(root, "restored-%" PRIu64, (uint64_t)i);
        keel_snapshot_restore_report rep =
            restore_ok(snaps[i], dst, NULL, 0, 0);
        point want = {infos[i].meta.lsn, infos[i].meta.crank,
                      infos[i].meta.activity_hash};
        ck_assert_uint_eq(rep.lsn, want.lsn);
        ck_assert_uint_eq(rep.crank, want.crank);
        keel_kernel *k = k_open(dst);
        ck_point_eq(k_point(k), want, snaps[i]);
        k_close(k);
        tu_rmrf(dst);
        free(dst);
    }
    char *dst = tu_path(root, "rolled");
    keel_snapshot_restore_report rep =
        restore_ok(snaps[LIVE_SNAPSHOTS - 1], dst, wal, 0, 0);
    ck_assert_uint_eq(rep.lsn, child.lsn);
    ck_assert_uint_eq(rep.rolled_forward,
                      child.lsn - infos[LIVE_SNAPSHOTS - 1].meta.lsn);
    keel_kernel *k = k_open(dst);
    ck_point_eq(k_point(k), child, "rolled forward to the child's end");
    k_close(k);
    ck_stores_equal(state, dst);
    ck_audit(dst, snaps[LIVE_SNAPSHOTS - 1], child);
    ck_audit(state, snaps[0], child);
    free(dst);
    for (int i = 0; i < LIVE_SNAPSHOTS; i++) {
        free(snaps[i]);
    }
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(config);
    free(outp);
    free(cfg);
}
END_TEST

/* ======================================================================== */
/* damage                                                                   */
/* ======================================================================== */

/*
 * A scratch directory for the damage sweep: on /dev/shm when there is one.
 * Each of its ~3,000 restores that gets past the header creates an LMDB
 * environment, whose first commit fsyncs; on a loaded disk that makes the
 * sweep ten times slower, and refusing damage does not depend on the
 * filesystem.
 */
static char *sweep_dir(void)
{
    char tmpl[] = "/dev/shm/keel-snapstate-XXXXXX";
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
        mkdtemp(tmpl) != NULL) {
        char *d = strdup(tmpl);
        ck_assert_ptr_nonnull(d);
        return d;
    }
    return tu_tmpdir("snapstate");
}

/* SS8: a snapshot of a state of format version 1 (its tables "k", "c",
 * ... of decimal string keys) is refused by name, saying what to do. */
START_TEST(test_snapshot_state_version_1_state_refused)
{
    char *root = tu_tmpdir("snapstate");
    char *snap = tu_path(root, "v1.ksnap");
    char *dst = tu_path(root, "new");
    keel_snapshot_meta m = {.kernel_id = 7, .lsn = 1};
    keel_snapshot_writer *w = NULL;
    keel_snapshot_info wi;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(snap, NULL, &m, &w, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "k", &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "k.crank", 7, "0", 1, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "k.version", 9, "1", 1, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_finish(w, &wi, &d), KEEL_OK);
    keel_snapshot_writer_close(w);
    const char *const names[] = {
        "state format version 1, older than this keel's 3; this keel "
        "cannot restore it: use a snapshot made by the same keel version "
        "or start a new state",
        NULL};
    int rc = restore(snap, dst, NULL, 0, 0, NULL, &d);
    ck_refused(rc, KEEL_EVERSION, &d, dst, "a version 1 snapshot", names);
    tu_rmrf(root);
    free(root);
    free(snap);
    free(dst);
}
END_TEST

START_TEST(test_snapshot_state_every_flip_and_truncation_refused)
{
    char *root = sweep_dir();
    char *state = tu_path(root, "state");
    char *good = tu_path(root, "good.ksnap");
    char *bad = tu_path(root, "bad.ksnap");
    char *dst = tu_path(root, "new");
    keel_kernel *k = k_new(state, pingpong_sq, 3);
    k_run(k, 0);
    k_close(k);
    snap_create(state, good);
    size_t len = 0;
    uint8_t *buf = tu_read_file(good, &len);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_lt(len, 8192); /* a small one: the sweep is 2 x len */
    tu_write_file(bad, buf, len);
    restore_ok(bad, dst, NULL, 0, 0); /* the bytes as written restore */
    tu_rmrf(dst);
    const char *const names[] = {bad, NULL};
    char what[64];
    for (size_t off = 0; off < len; off++) {
        unsigned bit = (unsigned)(off * 5 + 3) & 7;
        keel_diag d = {0};
        buf[off] ^= (uint8_t)(1u << bit);
        tu_write_file(bad, buf, len);
        buf[off] ^= (uint8_t)(1u << bit);
        int rc = restore(bad, dst, NULL, 0, 0, NULL, &d);
        snprintf(what, sizeof(what), "bit %u of byte %zu flipped", bit, off);
        /* EVERSION may only come from the header's version field (+4) */
        int want = rc == KEEL_EVERSION && off >= 4 && off < 8 ? KEEL_EVERSION
                                                              : KEEL_ECORRUPT;
        ck_refused(rc, want, &d, dst, what, names);
    }
    for (size_t cut = 0; cut < len; cut++) {
        keel_diag d = {0};
        tu_write_file(bad, buf, cut);
        int rc = restore(bad, dst, NULL, 0, 0, NULL, &d);
        snprintf(what, sizeof(what), "truncated to %zu bytes", cut);
        ck_refused(rc, KEEL_ECORRUPT, &d, dst, what, names);
    }
    free(buf);
    tu_rmrf(root);
    free(root);
    free(state);
    free(good);
    free(bad);
    free(dst);
}
END_TEST

/* ======================================================================== */
/* refusals                                                                 */
/* ======================================================================== */

/* A state of pingpong(rounds) with a snapshot taken in process at crank c,
 * run on to idle and closed. */
typedef struct fixture {
    char *root;
    char *state;
    char *wal;
    char *snap;
    char *dst;
    keel_snapshot_info info;
    point final;
} fixture;

static void fx_init(fixture *fx, int rounds, uint64_t c, uint64_t seg_bytes)
{
    keel_kernel_options o;
    kopts(&o);
    o.wal_segment_bytes = seg_bytes;
    fx->root = tu_tmpdir("snapstate");
    fx->state = tu_path(fx->root, "state");
    fx->wal = tu_path(fx->state, "wal");
    fx->snap = tu_path(fx->root, "s.ksnap");
    fx->dst = tu_path(fx->root, "new");
    keel_kernel *k = k_new_with(fx->state, &o, pingpong_sq, rounds);
    k_run(k, c);
    fx->info = snap_kernel(k, fx->snap);
    k_run(k, 0);
    fx->final = k_point(k);
    k_close(k);
    ck_assert_uint_gt(fx->final.lsn, fx->info.meta.lsn);
}

static void fx_free(fixture *fx)
{
    tu_rmrf(fx->root);
    free(fx->root);
    free(fx->state);
    free(fx->wal);
    free(fx->snap);
    free(fx->dst);
}

START_TEST(test_snapshot_state_restore_refuses_existing_newstate)
{
    fixture fx;
    fx_init(&fx, 5, 4, 0);
    char *marker = tu_path(fx.dst, "marker");
    const char *const names[] = {fx.dst, NULL};
    keel_diag d = {0};
    /* a directory: refused, its contents untouched */
    ck_assert_int_eq(mkdir(fx.dst, 0755), 0);
    tu_write_file(marker, "mine", 4);
    int rc = restore(fx.snap, fx.dst, fx.wal, 0, 0, NULL, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(strstr(d.msg, fx.dst) != NULL && strchr(d.msg, '\n') == NULL);
    size_t len = 0;
    uint8_t *got = tu_read_file(marker, &len);
    ck_assert(got != NULL && len == 4 && memcmp(got, "mine", 4) == 0);
    free(got);
    DIR *dir = opendir(fx.dst);
    struct dirent *e;
    size_t entries = 0;
    while ((e = readdir(dir)) != NULL) {
        entries += e->d_name[0] != '.';
    }
    closedir(dir);
    ck_assert_uint_eq(entries, 1);
    unlink(marker);
    rmdir(fx.dst);
    /* a file, and a dangling symlink: refused too */
    tu_write_file(fx.dst, "file", 4);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, NULL, 0, 0, NULL, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    got = tu_read_file(fx.dst, &len);
    ck_assert(got != NULL && len == 4 && memcmp(got, "file", 4) == 0);
    free(got);
    unlink(fx.dst);
    ck_assert_int_eq(symlink("nowhere", fx.dst), 0);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, NULL, 0, 0, NULL, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(strstr(d.msg, names[0]) != NULL);
    unlink(fx.dst);
    free(marker);
    fx_free(&fx);
}
END_TEST

START_TEST(test_snapshot_state_restore_refuses_stale_restoring)
{
    fixture fx;
    fx_init(&fx, 5, 4, 0);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.restoring", fx.dst);
    char *marker = tu_path(tmp, "marker");
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    tu_write_file(marker, "half", 4);
    keel_diag d = {0};
    int rc = restore(fx.snap, fx.dst, fx.wal, 0, 0, NULL, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(strstr(d.msg, tmp) != NULL && strchr(d.msg, '\n') == NULL,
                  "diag: %s", d.msg);
    ck_assert(!exists(fx.dst));
    size_t len = 0;
    uint8_t *got = tu_read_file(marker, &len);
    ck_assert(got != NULL && len == 4 && memcmp(got, "half", 4) == 0);
    free(got);
    free(marker);
    fx_free(&fx);
}
END_TEST

/* A restore makes its directories (STATE.restoring, its store/ and wal/)
 * through the I/O table: each mkdir failing refuses the restore with its
 * error, and what was built is removed through the table too. */
START_TEST(test_snapshot_state_restore_mkdir_failure_leaves_nothing)
{
    fixture fx;
    fx_init(&fx, 5, 4, 0);
    char dst[4200];
    keel_diag d = {0};
    keel_io_fault *f = NULL;
    keel_snapshot_restore_options o;
    keel_snapshot_restore_options_init(&o);
    snprintf(dst, sizeof(dst), "%s-clean", fx.dst);
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    o.io = keel__io_fault_io(f);
    ck_assert_msg(keel_snapshot_restore(fx.snap, dst, &o, NULL, &d) == KEEL_OK,
                  "%s", d.msg);
    uint64_t mkdirs = keel__io_fault_count(f, KEEL_IO_OP_MKDIR);
    keel__io_fault_free(f);
    uint64_t refused = 0;
    for (uint64_t nth = 1; nth <= mkdirs; nth++) {
        snprintf(dst, sizeof(dst), "%s-%" PRIu64, fx.dst, nth);
        f = tu_fault_failing(KEEL_IO_OP_MKDIR, nth, KEEL_ENOSPC);
        o.io = keel__io_fault_io(f);
        int rc = keel_snapshot_restore(fx.snap, dst, &o, NULL, &d);
        keel__io_fault_free(f);
        if (rc != KEEL_OK) { /* else: a mkdir whose failure is not needed */
            const char *const needles[] = {dst, NULL};
            ck_refused(rc, KEEL_ENOSPC, &d, dst, "restore", needles);
            refused++;
        }
    }
    /* STATE.restoring, store/ (built as store.new) and wal/ */
    ck_assert_uint_ge(refused, 3);
    fx_free(&fx);
}
END_TEST

START_TEST(test_snapshot_state_restore_refuses_wal_of_other_kernel)
{
    fixture fx, other;
    fx_init(&fx, 5, 4, 0);
    fx_init(&other, 5, 4, 0);
    ck_assert_uint_ne(fx.info.meta.kernel_id, other.info.meta.kernel_id);
    keel_diag d = {0};
    const char *const names[] = {other.wal, NULL};
    int rc = restore(fx.snap, fx.dst, other.wal, 0, 0, NULL, &d);
    ck_refused(rc, KEEL_ECORRUPT, &d, fx.dst, "another kernel's log", names);
    /* its own log is accepted */
    restore_ok(fx.snap, fx.dst, fx.wal, 0, 0);
    keel_kernel *k = k_open(fx.dst);
    ck_point_eq(k_point(k), fx.final, "rolled forward through its own log");
    k_close(k);
    fx_free(&fx);
    fx_free(&other);
}
END_TEST

/* Periodic snapshots (keep 1) retire the log before the newest: a
 * snapshot taken earlier no longer meets the log. */
START_TEST(test_snapshot_state_restore_refuses_gap_naming_lsns)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *sdir = tu_path(root, "snaps");
    char *early = tu_path(root, "early.ksnap");
    char *dst = tu_path(root, "new");
    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = 40;
    o.snapshot_dir = sdir;
    o.snapshot_keep = 1;
    o.wal_segment_bytes = 4096;
    keel_kernel *k = k_new_with(state, &o, pingpong_sq, 100);
    k_run(k, 10);
    keel_snapshot_info info = snap_kernel(k, early);
    k_run(k, 0);
    point final = k_point(k);
    k_close(k);
    uint64_t segs[512], kept[4];
    size_t nsegs = list_numbered(wal, ".seg", segs, 512, NULL);
    ck_assert_uint_gt(nsegs, 0);
    ck_assert_uint_gt(segs[0], info.meta.lsn + 1); /* retired past it */
    char want_snap[32], want_log[32];
    snprintf(want_snap, sizeof(want_snap), "%" PRIu64, info.meta.lsn);
    snprintf(want_log, sizeof(want_log), "%" PRIu64, segs[0]);
    const char *const names[] = {want_snap, want_log, NULL};
    keel_diag d = {0};
    int rc = restore(early, dst, wal, 0, 0, NULL, &d);
    ck_refused(rc, KEEL_ECORRUPT, &d, dst, "a gap before the log", names);

    /* the kept snapshot meets the log and rebuilds the end */
    ck_assert_uint_eq(list_numbered(sdir, ".ksnap", kept, 4, NULL), 1);
    char *last = pathf(sdir, "%020" PRIu64 ".ksnap", kept[0]);
    restore_ok(last, dst, wal, 0, 0);
    k = k_open(dst);
    ck_point_eq(k_point(k), final, "kept snapshot rolled forward");
    k_close(k);
    tu_rmrf(dst);

    free(last);
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(sdir);
    free(early);
    free(dst);
}
END_TEST

/* A segment missing from the middle of the log after the snapshot. */
START_TEST(test_snapshot_state_restore_refuses_missing_middle_segment)
{
    fixture fx;
    fx_init(&fx, 60, 5, 4096);
    uint64_t segs[512];
    size_t nsegs = list_numbered(fx.wal, ".seg", segs, 512, NULL);
    size_t j = 0;
    while (j < nsegs && segs[j] <= fx.info.meta.lsn + 1) {
        j++;
    }
    ck_assert_uint_lt(j + 1, nsegs); /* one after it, one not the last */
    char *gone = pathf(fx.wal, "%020" PRIu64 ".seg", segs[j]);
    ck_assert_int_eq(unlink(gone), 0);
    char lsn[32];
    snprintf(lsn, sizeof(lsn), "%" PRIu64, segs[j]);
    const char *const names[] = {fx.wal, lsn, NULL};
    keel_diag d = {0};
    int rc = restore(fx.snap, fx.dst, fx.wal, 0, 0, NULL, &d);
    ck_refused(rc, KEEL_ECORRUPT, &d, fx.dst, "a segment missing", names);
    free(gone);
    fx_free(&fx);
}
END_TEST

START_TEST(test_snapshot_state_restore_refuses_bad_points)
{
    fixture fx;
    fx_init(&fx, 10, 6, 0);
    keel_diag d = {0};
    char end[32], past[32];
    snprintf(end, sizeof(end), "%" PRIu64, fx.final.lsn);
    snprintf(past, sizeof(past), "%" PRIu64, fx.final.lsn + 1);
    const char *const names_past[] = {end, past, NULL};
    int rc = restore(fx.snap, fx.dst, fx.wal, fx.final.lsn + 1, 0, NULL, &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "--to-lsn past the log",
               names_past);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, fx.wal, 0, fx.final.crank + 1, NULL, &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "--to-crank past the log", NULL);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, fx.wal, fx.info.meta.lsn - 1, 0, NULL, &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "--to-lsn before the snapshot",
               NULL);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, fx.wal, 0, fx.info.meta.crank - 1, NULL, &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "--to-crank before the snapshot",
               NULL);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, fx.wal, fx.final.lsn, fx.final.crank, NULL,
                 &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "both bounds", NULL);
    memset(&d, 0, sizeof(d));
    rc = restore(fx.snap, fx.dst, NULL, fx.final.lsn, 0, NULL, &d);
    ck_refused(rc, KEEL_EINVAL, &d, fx.dst, "a point without a log", NULL);
    /* the ends themselves are points */
    restore_ok(fx.snap, fx.dst, fx.wal, fx.info.meta.lsn, 0);
    tu_rmrf(fx.dst);
    keel_snapshot_restore_report rep =
        restore_ok(fx.snap, fx.dst, fx.wal, fx.final.lsn, 0);
    ck_assert_uint_eq(rep.lsn, fx.final.lsn);
    fx_free(&fx);
}
END_TEST

/* keel_snapshot_create: no state, a stale FILE.tmp, a missing directory
 * are refused and create nothing; an existing FILE is replaced. */
START_TEST(test_snapshot_state_create_refusals_leave_nothing)
{
    fixture fx;
    fx_init(&fx, 5, 4, 0);
    char *missing = tu_path(fx.root, "missing");
    char *file = tu_path(fx.root, "c.ksnap");
    char *tmp = tu_path(fx.root, "c.ksnap.tmp");
    char *nodir = tu_path(missing, "c.ksnap");
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_snapshot_create(missing, file, NULL, &info, &d);
    ck_assert_msg(rc == KEEL_ENOENT, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(strstr(d.msg, missing) != NULL && strchr(d.msg, '\n') == NULL);
    ck_assert(!exists(file) && !exists(tmp) && !exists(missing));
    memset(&d, 0, sizeof(d));
    rc = keel_snapshot_create(fx.state, nodir, NULL, &info, &d);
    ck_assert_msg(rc == KEEL_ENOENT, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(!exists(missing));
    tu_write_file(tmp, "another writer", 14);
    memset(&d, 0, sizeof(d));
    rc = keel_snapshot_create(fx.state, file, NULL, &info, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(!exists(file));
    size_t len = 0;
    uint8_t *got = tu_read_file(tmp, &len);
    ck_assert(got != NULL && len == 14 &&
              memcmp(got, "another writer", 14) == 0);
    free(got);
    unlink(tmp);
    tu_write_file(file, "old", 3);
    info = snap_create(fx.state, file);
    snap_verify(file, &info);
    ck_assert_uint_eq(info.meta.lsn, fx.final.lsn);
    ck_assert(!exists(tmp));
    /* a NEWSTATE whose parent is missing: refused, nothing made */
    char *orphan = tu_path(missing, "new");
    memset(&d, 0, sizeof(d));
    rc = restore(file, orphan, NULL, 0, 0, NULL, &d);
    ck_assert_msg(rc == KEEL_ENOENT, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(!exists(missing));
    free(orphan);
    free(missing);
    free(file);
    free(tmp);
    free(nodir);
    fx_free(&fx);
}
END_TEST

/* KS3: a failed snapshot, in-process or periodic, is reported and the
 * kernel goes on, to the same end as a run without snapshots. */
START_TEST(test_snapshot_state_failed_snapshot_leaves_kernel_running)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *plain = tu_path(root, "plain");
    char *sdir = tu_path(root, "snaps");
    char *file = tu_path(root, "k.ksnap");
    char *tmp = tu_path(root, "k.ksnap.tmp");
    keel_kernel *k = k_new(plain, pingpong_sq, 30);
    k_run(k, 0);
    point want = k_point(k);
    k_close(k);

    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = 10;
    o.snapshot_dir = sdir;
    k = k_new_with(state, &o, pingpong_sq, 30);
    k_run(k, 5);
    tu_write_file(tmp, "x", 1);
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_kernel_snapshot(k, file, &info, &d);
    ck_assert_msg(rc == KEEL_EEXIST, "%s: %s", keel_err_name(rc), d.msg);
    ck_assert(!exists(file));
    unlink(tmp);
    /* the periodic snapshot at crank 10 finds no directory */
    ck_assert_int_eq(rmdir(sdir), 0);
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
    keel_run_stats s;
    memset(&d, 0, sizeof(d));
    rc = keel_kernel_run(k, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_ENOENT,
                  "periodic snapshot into no directory: "
                  "%s: %s",
                  keel_err_name(rc), d.msg);
    ck_assert_uint_eq(keel_kernel_crank_number(k), 10);
    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    k_run(k, 0);
    ck_point_eq(k_point(k), want, "after failed snapshots");
    snap_kernel(k, file);
    k_close(k);
    uint64_t lsns[8];
    ck_assert_uint_eq(list_numbered(sdir, ".ksnap", lsns, 8, NULL), 2);
    tu_rmrf(root);
    free(root);
    free(state);
    free(plain);
    free(sdir);
    free(file);
    free(tmp);
}
END_TEST

/* ======================================================================== */
/* periodic snapshots                                                       */
/* ======================================================================== */

#define PER_EVERY    250
#define PER_KEEP     2
#define PER_ROUNDS   4000 /* 8001 cranks, one WAL record each */
#define PER_CHUNK    900
#define PER_SEG      (64u * 1024)
#define PER_MAX_SEGS 12

/* Pingpong makes one record per crank after boot's LSN 1, so the snapshot
 * after crank j * PER_EVERY is at LSN j * PER_EVERY + 1. */
static void ck_periodic(const char *sdir, const char *wal, uint64_t crank)
{
    uint64_t lsns[64], segs[512];
    size_t tmps = 0;
    size_t n = list_numbered(sdir, ".ksnap", lsns, 64, &tmps);
    uint64_t taken = crank / PER_EVERY;
    uint64_t want_n = taken < PER_KEEP ? taken : PER_KEEP;
    ck_assert_msg(n == want_n,
                  "crank %" PRIu64 ": %zu snapshots, expected %" PRIu64, crank,
                  n, want_n);
    ck_assert_msg(tmps == 0, "crank %" PRIu64 ": a .tmp left", crank);
    for (size_t i = 0; i < n; i++) {
        uint64_t j = taken - n + 1 + i;
        ck_assert_msg(lsns[i] == j * PER_EVERY + 1,
                      "crank %" PRIu64 ": snapshot %zu at LSN %" PRIu64
                      ", expected %" PRIu64,
                      crank, i, lsns[i], j * PER_EVERY + 1);
        char *p = pathf(sdir, "%020" PRIu64 ".ksnap", lsns[i]);
        keel_snapshot_info info = snap_info(p);
        ck_assert_uint_eq(info.meta.lsn, lsns[i]);
        ck_assert_uint_eq(info.meta.crank, lsns[i] - 1);
        free(p);
    }
    size_t nsegs = list_numbered(wal, ".seg", segs, 512, NULL);
    ck_assert_uint_gt(nsegs, 0);
    ck_assert_msg(nsegs <= PER_MAX_SEGS, "crank %" PRIu64 ": %zu WAL segments",
                  crank, nsegs);
    if (n > 0) {
        /* the oldest kept snapshot's next record is retained, and no
         * segment wholly before it is */
        ck_assert_msg(segs[0] <= lsns[0] + 1,
                      "crank %" PRIu64 ": log starts at %" PRIu64
                      ", oldest snapshot at %" PRIu64,
                      crank, segs[0], lsns[0]);
        ck_assert_msg(nsegs == 1 || segs[1] > lsns[0] + 1,
                      "crank %" PRIu64 ": segment %" PRIu64
                      " is wholly before snapshot %" PRIu64 " + 1",
                      crank, segs[0], lsns[0]);
    }
}

START_TEST(test_snapshot_state_periodic_keeps_newest_and_bounds_wal)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *sdir = tu_path(root, "snaps");
    char *dst = tu_path(root, "new");
    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    /* none of these is a snapshot of the kernel's: all must stay */
    static const char *const unrelated[] = {"notes.txt",
                                            "123.ksnap",
                                            "00000000000000000001.ksnap.bak",
                                            "0000000000000000000x.ksnap",
                                            "00000000000000000001.seg",
                                            "000000000000000000001.ksnap"};
    size_t nun = sizeof(unrelated) / sizeof(unrelated[0]);
    for (size_t i = 0; i < nun; i++) {
        char *p = tu_path(sdir, unrelated[i]);
        tu_write_file(p, unrelated[i], strlen(unrelated[i]));
        free(p);
    }
    char *sub = tu_path(sdir, "keep-me");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = PER_EVERY;
    o.snapshot_dir = sdir;
    o.snapshot_keep = PER_KEEP;
    o.wal_segment_bytes = PER_SEG;
    keel_kernel *k = k_new_with(state, &o, pingpong_sq, PER_ROUNDS);
    for (;;) {
        keel_run_stats s = k_run(k, PER_CHUNK);
        ck_periodic(sdir, wal, keel_kernel_crank_number(k));
        if (s.idle) {
            break;
        }
    }
    point final = k_point(k);
    ck_assert_uint_eq(final.crank, 2 * PER_ROUNDS + 1);
    k_close(k);
    ck_periodic(sdir, wal, final.crank);
    uint64_t segs[512], lsns[8];
    list_numbered(wal, ".seg", segs, 512, NULL);
    ck_assert_uint_gt(segs[0], 1); /* the log did retire */
    for (size_t i = 0; i < nun; i++) {
        char *p = tu_path(sdir, unrelated[i]);
        size_t len = 0;
        uint8_t *got = tu_read_file(p, &len);
        ck_assert_msg(got != NULL && len == strlen(unrelated[i]) &&
                          memcmp(got, unrelated[i], len) == 0,
                      "%s was changed or deleted", unrelated[i]);
        free(got);
        free(p);
    }
    ck_assert(exists(sub));
    /* the oldest kept snapshot plus the log rebuild the end */
    ck_assert_uint_eq(list_numbered(sdir, ".ksnap", lsns, 8, NULL), PER_KEEP);
    char *oldest = pathf(sdir, "%020" PRIu64 ".ksnap", lsns[0]);
    keel_snapshot_info oi = snap_info(oldest);
    snap_verify(oldest, &oi);
    keel_snapshot_restore_report rep = restore_ok(oldest, dst, wal, 0, 0);
    ck_assert_uint_eq(rep.snapshot.meta.lsn, lsns[0]);
    k = k_open(dst);
    ck_point_eq(k_point(k), final, "oldest kept snapshot rolled forward");
    k_close(k);
    ck_stores_equal(state, dst);
    ck_audit(dst, oldest, final);
    ck_audit(state, oldest, final); /* its log retired before the snapshot */
    free(oldest);
    free(sub);
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(sdir);
    free(dst);
}
END_TEST

/* A stale `.tmp` of the snapshot about to be written (a crash while
 * writing it, then the same checkpoint again) is removed and replaced. */
START_TEST(test_snapshot_state_periodic_replaces_stale_tmp_of_its_name)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *sdir = tu_path(root, "snaps");
    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = 20;
    o.snapshot_dir = sdir;
    keel_kernel *k = k_new_with(state, &o, pingpong_sq, 30);
    k_run(k, 19);
    point p = k_point(k);
    ck_assert_uint_eq(p.crank, 19);
    /* the snapshot after the next crank is at the next LSN */
    char *tmp = pathf(sdir, "%020" PRIu64 ".ksnap.tmp", p.lsn + 1);
    char *snap = pathf(sdir, "%020" PRIu64 ".ksnap", p.lsn + 1);
    tu_write_file(tmp, "half a snapshot", 15);
    k_run(k, 1);
    ck_assert_msg(!exists(tmp), "%s left", tmp);
    keel_snapshot_info info = snap_info(snap);
    ck_assert_uint_eq(info.meta.crank, 20);
    k_run(k, 0);
    k_close(k);
    free(tmp);
    free(snap);
    tu_rmrf(root);
    free(root);
    free(state);
    free(sdir);
}
END_TEST

/* A `.tmp` left by a periodic snapshot of an earlier process (which
 * crashed while writing it) is removed by the next periodic snapshot,
 * whatever checkpoint that is at: it can never be finished. */
START_TEST(test_snapshot_state_periodic_removes_stale_tmp_of_earlier_run)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *sdir = tu_path(root, "snaps");
    ck_assert_int_eq(mkdir(sdir, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = 20;
    o.snapshot_dir = sdir;
    keel_kernel *k = k_new_with(state, &o, pingpong_sq, 30);
    k_run(k, 30);
    point p = k_point(k);
    k_close(k);
    /* the process writing the snapshot of its checkpoint at p crashed */
    char *tmp = pathf(sdir, "%020" PRIu64 ".ksnap.tmp", p.lsn);
    tu_write_file(tmp, "half a snapshot", 15);
    k = k_open_with(state, &o);
    k_run(k, 0); /* 31 more cranks: one more periodic snapshot */
    k_close(k);
    uint64_t lsns[8];
    size_t tmps = 0;
    size_t n = list_numbered(sdir, ".ksnap", lsns, 8, &tmps);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_gt(lsns[1], p.lsn);
    ck_assert_msg(!exists(tmp) && tmps == 0,
                  "%s is still there after the next periodic snapshot", tmp);
    free(tmp);
    tu_rmrf(root);
    free(root);
    free(state);
    free(sdir);
}
END_TEST

/* ======================================================================== */
/* the CLI                                                                  */
/* ======================================================================== */

static json_t *one_json(const char *out)
{
    json_error_t je;
    ck_assert_msg(tu_count_lines(out) == 1, "not one line: %s", out);
    json_t *o = json_loads(out, 0, &je);
    ck_assert_msg(json_is_object(o), "not a JSON object (%s): %s", je.text,
                  out);
    return o;
}

static json_int_t int_field(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "no integer %s", key);
    return json_integer_value(v);
}

static const char *str_field(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    ck_assert_msg(v != NULL, "no string %s", key);
    return v;
}

/* Run keel with args, assert exit status want; stdout (malloc'd). On a
 * failure (1 or 2) stderr must be one `keel: ` line. */
static char *keel_expect(const char *const *args, int want)
{
    char *out = NULL, *err = NULL;
    int rc = tu_run_keel(args, &out, &err);
    ck_assert_msg(rc == want, "keel %s %s %s: exit %d, expected %d; stderr: %s",
                  args[0], args[1] != NULL ? args[1] : "",
                  args[1] != NULL && args[2] != NULL ? args[2] : "", rc, want,
                  err);
    if (want != 0) {
        tu_assert_one_error_line(err);
    }
    free(err);
    return out;
}

static json_t *keel_json(const char *const *args)
{
    char *out = keel_expect(args, 0);
    json_t *o = one_json(out);
    free(out);
    return o;
}

/* Assert a manifest object of the CLI carries every field, matching info
 * ("tables": the count, or with info --json the list). */
static void ck_manifest_json(const json_t *o, const keel_snapshot_info *info)
{
    static const char *const ints[] = {
        "format",  "created_unix_ms", "lsn",    "crank",     "level",
        "entries", "bytes",           "frames", "file_bytes"};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int_field(o, ints[i]);
    }
    const json_t *tables = json_object_get(o, "tables");
    ck_assert_uint_eq(json_is_array(tables) ? json_array_size(tables)
                                            : (size_t)int_field(o, "tables"),
                      info->tables);
    str_field(o, "keel_version");
    ck_assert_uint_eq((uint64_t)int_field(o, "lsn"), info->meta.lsn);
    ck_assert_uint_eq((uint64_t)int_field(o, "crank"), info->meta.crank);
    ck_assert_uint_eq((uint64_t)int_field(o, "entries"), info->entries);
    ck_assert_uint_eq((uint64_t)int_field(o, "file_bytes"), info->file_bytes);
    ck_assert_uint_eq(strtoull(str_field(o, "kernel_id"), NULL, 16),
                      info->meta.kernel_id);
    ck_assert_uint_eq(strtoull(str_field(o, "activity_hash"), NULL, 16),
                      info->meta.activity_hash);
}

START_TEST(test_snapshot_state_cli_create_verify_info_restore_run)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *config = tu_path(root, "cluster.json");
    char *snap = tu_path(root, "s.ksnap");
    char *dst = tu_path(root, "new");
    char *pit = tu_path(root, "pit");
    char *cfg = cluster(pingpong_sq, 10);
    tu_write_file(config, cfg, strlen(cfg));
    const char *part[] = {"run",          state, "--config", config,
                          "--max-cranks", "7",   "--json",   NULL};
    json_decref(keel_json(part));

    const char *create[] = {"snapshot", "create", state,    snap,
                            "--level",  "5",      "--json", NULL};
    json_t *o = keel_json(create);
    keel_snapshot_info info = snap_info(snap);
    ck_manifest_json(o, &info);
    ck_assert_uint_eq(info.meta.crank, 7);
    ck_assert_int_eq(int_field(o, "level"), 5);
    json_decref(o);
    const char *create_text[] = {"snapshot", "create", state, snap, NULL};
    char *out = keel_expect(create_text, 0); /* replaces FILE */
    ck_assert(strstr(out, snap) != NULL);
    free(out);
    info = snap_info(snap);
    ck_assert_int_eq(info.level, KEEL_SNAPSHOT_DEFAULT_LEVEL);

    const char *verify[] = {"snapshot", "verify", snap, "--json", NULL};
    o = keel_json(verify);
    ck_assert(json_is_true(json_object_get(o, "ok")));
    ck_manifest_json(o, &info);
    json_decref(o);
    const char *verify_text[] = {"snapshot", "verify", snap, NULL};
    out = keel_expect(verify_text, 0);
    ck_assert(strncmp(out, "ok: ", 4) == 0);
    free(out);

    const char *info_args[] = {"snapshot", "info", snap, "--json", NULL};
    o = keel_json(info_args);
    ck_manifest_json(o, &info);
    const json_t *tables = json_object_get(o, "tables");
    ck_assert(json_is_array(tables));
    ck_assert_uint_eq(json_array_size(tables), info.tables);
    json_int_t sum = 0;
    size_t i;
    const json_t *t;
    json_array_foreach(tables, i, t)
    {
        str_field(t, "name");
        int_field(t, "bytes");
        sum += int_field(t, "entries");
    }
    ck_assert_uint_eq((uint64_t)sum, info.entries);
    json_decref(o);
    const char *info_text[] = {"snapshot", "info", snap, NULL};
    out = keel_expect(info_text, 0);
    ck_assert(strstr(out, "TABLE") != NULL);
    free(out);

    /* the original runs on to its end */
    const char *rest[] = {"run", state, "--json", NULL};
    json_t *end = keel_json(rest);

    const char *restore_args[] = {"snapshot", "restore", snap,
                                  dst,        "--json",  NULL};
    o = keel_json(restore_args);
    ck_assert_str_eq(str_field(o, "state"), dst);
    ck_assert_uint_eq((uint64_t)int_field(o, "snapshot_lsn"), info.meta.lsn);
    ck_assert_int_eq(int_field(o, "rolled_forward"), 0);
    ck_assert_uint_eq((uint64_t)int_field(o, "lsn"), info.meta.lsn);
    ck_assert_uint_eq((uint64_t)int_field(o, "crank"), 7);
    ck_assert(json_is_number(json_object_get(o, "seconds")));
    json_decref(o);
    /* resumed with `keel run`, the restored state ends as the original */
    const char *resume[] = {"run", dst, "--json", NULL};
    o = keel_json(resume);
    ck_assert_str_eq(str_field(o, "state"), "resumed");
    ck_assert_int_eq(int_field(o, "crank"), int_field(end, "crank"));
    ck_assert_str_eq(str_field(o, "activity_hash"),
                     str_field(end, "activity_hash"));
    json_decref(o);

    const char *to_crank[] = {"snapshot", "restore",    snap, pit, "--wal",
                              wal,        "--to-crank", "15", NULL};
    out = keel_expect(to_crank, 0);
    ck_assert(strstr(out, pit) != NULL);
    free(out);
    const char *status[] = {"status", pit, "--json", NULL};
    o = keel_json(status);
    ck_assert_int_eq(int_field(o, "crank"), 15);
    json_decref(o);
    json_decref(end);
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(config);
    free(snap);
    free(dst);
    free(pit);
    free(cfg);
}
END_TEST

START_TEST(test_snapshot_state_cli_errors_exit_one_with_one_line)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *snap = tu_path(root, "s.ksnap");
    char *bad = tu_path(root, "bad.ksnap");
    char *tmp = tu_path(root, "t.ksnap.tmp");
    char *t = tu_path(root, "t.ksnap");
    char *missing = tu_path(root, "missing");
    char *dst = tu_path(root, "new");
    keel_kernel *k = k_new(state, pingpong_sq, 3);
    k_run(k, 0);
    k_close(k);
    snap_create(state, snap);
    size_t len = 0;
    uint8_t *buf = tu_read_file(snap, &len);
    buf[len / 2] ^= 0x10;
    tu_write_file(bad, buf, len);
    free(buf);

    const char *c1[] = {"snapshot", "create", missing, t, NULL};
    free(keel_expect(c1, 1));
    ck_assert(!exists(t));
    tu_write_file(tmp, "x", 1); /* a stale FILE.tmp is refused */
    const char *c2[] = {"snapshot", "create", state, t, NULL};
    free(keel_expect(c2, 1));
    ck_assert(!exists(t) && exists(tmp));

    const char *v1[] = {"snapshot", "verify", bad, NULL};
    free(keel_expect(v1, 1));
    const char *v2[] = {"snapshot", "verify", bad, "--json", NULL};
    char *out = keel_expect(v2, 1);
    json_t *o = one_json(out);
    ck_assert(json_is_false(json_object_get(o, "ok")));
    const json_t *e = json_object_get(o, "error");
    ck_assert_str_eq(str_field(e, "code"), keel_err_name(KEEL_ECORRUPT));
    ck_assert(strstr(str_field(e, "message"), bad) != NULL);
    json_decref(o);
    free(out);
    const char *v3[] = {"snapshot", "verify", missing, NULL};
    free(keel_expect(v3, 1));

    const char *i1[] = {"snapshot", "info", missing, NULL};
    free(keel_expect(i1, 1));
    const char *i2[] = {"snapshot", "info", tmp, NULL};
    free(keel_expect(i2, 1));

    const char *r1[] = {"snapshot", "restore", bad, dst, NULL};
    free(keel_expect(r1, 1));
    ck_nothing_left(dst, "restore of a damaged snapshot");
    ck_assert_int_eq(mkdir(dst, 0755), 0);
    const char *r2[] = {"snapshot", "restore", snap, dst, NULL};
    free(keel_expect(r2, 1));
    rmdir(dst);
    const char *r3[] = {"snapshot", "restore", snap, dst,
                        "--wal",    missing,   NULL};
    free(keel_expect(r3, 1));
    ck_nothing_left(dst, "restore with a missing log");
    tu_rmrf(root);
    free(root);
    free(state);
    free(snap);
    free(bad);
    free(tmp);
    free(t);
    free(missing);
    free(dst);
}
END_TEST

START_TEST(test_snapshot_state_cli_usage_errors_exit_two)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *config = tu_path(root, "cluster.json");
    char *sdir = tu_path(root, "snaps");
    char *snap = tu_path(root, "s.ksnap");
    char *dst = tu_path(root, "new");
    char *cfg = cluster(pingpong_sq, 3);
    tu_write_file(config, cfg, strlen(cfg));
    tu_write_file(snap, "not read", 8);
    const char *const usage[][12] = {
        {"snapshot", "create", state, NULL},
        {"snapshot", "create", state, snap, "--level", "99", NULL},
        {"snapshot", "create", state, snap, "--level", "x", NULL},
        {"snapshot", "create", state, snap, "--bogus", NULL},
        {"snapshot", "verify", NULL},
        {"snapshot", "verify", snap, snap, NULL},
        {"snapshot", "info", NULL},
        {"snapshot", "info", snap, "--level", "3", NULL},
        {"snapshot", "restore", snap, NULL},
        {"snapshot", "restore", snap, dst, "--to-lsn", "5", NULL},
        {"snapshot", "restore", snap, dst, "--to-crank", "5", NULL},
        {"snapshot", "restore", snap, dst, "--wal", root, "--to-lsn", "5",
         "--to-crank", NULL},
        {"snapshot", "restore", snap, dst, "--wal", root, "--to-lsn", "x",
         NULL},
        {"snapshot", "restore", snap, dst, "--wal", root, "--to-crank", "0",
         NULL},
        {"snapshot", "bogus", NULL},
        {"run", state, "--config", config, "--snapshot-every", "5", NULL},
        {"run", state, "--config", config, "--snapshot-dir", sdir, NULL},
        {"run", state, "--config", config, "--keep", "2", NULL},
        {"run", state, "--config", config, "--snapshot-every", "0",
         "--snapshot-dir", sdir, NULL},
        {"run", state, "--config", config, "--snapshot-every", "5",
         "--snapshot-dir", sdir, "--keep", "x", NULL},
    };
    for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
        free(keel_expect(usage[i], 2));
        const char *made = exists(state)  ? state
                           : exists(sdir) ? sdir
                           : exists(dst)  ? dst
                                          : NULL;
        ck_assert_msg(made == NULL, "usage error %zu (keel %s %s) created %s",
                      i, usage[i][0], usage[i][1], made);
    }
    /* both bounds with a real log: still a usage error */
    const char *both[] = {"snapshot",   "restore", snap,       dst,
                          "--wal",      root,      "--to-lsn", "5",
                          "--to-crank", "5",       NULL};
    free(keel_expect(both, 2));
    ck_assert(!exists(dst));
    tu_rmrf(root);
    free(root);
    free(state);
    free(config);
    free(sdir);
    free(snap);
    free(dst);
    free(cfg);
}
END_TEST

/* K3 of tools/cmd_kernel.c: a usage error is found before anything is
 * created on disk; --snapshot-dir is created only for a run that goes on. */
START_TEST(test_snapshot_state_cli_run_usage_error_creates_no_snapshot_dir)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *sdir = tu_path(root, "snaps");
    /* a new STATE without --config */
    const char *args[] = {
        "run", state, "--snapshot-every", "5", "--snapshot-dir", sdir, NULL};
    free(keel_expect(args, 2));
    ck_assert(!exists(state));
    ck_assert_msg(!exists(sdir), "the usage error created %s", sdir);
    tu_rmrf(root);
    free(root);
    free(state);
    free(sdir);
}
END_TEST

START_TEST(test_snapshot_state_cli_help_lists_every_option)
{
    static const struct {
        const char *cmd[4];
        const char *opts[6];
    } helps[] = {
        {{"snapshot", "create", "--help", NULL}, {"--level", "--json", NULL}},
        {{"snapshot", "verify", "--help", NULL}, {"--json", NULL}},
        {{"snapshot", "info", "--help", NULL}, {"--json", NULL}},
        {{"snapshot", "restore", "--help", NULL},
         {"--wal", "--to-lsn", "--to-crank", "--json", NULL}},
        {{"help", "snapshot", "restore", NULL},
         {"--wal", "--to-lsn", "--to-crank", "--json", NULL}},
        {{"run", "--help", NULL},
         {"--snapshot-every", "--snapshot-dir", "--keep", NULL}},
    };
    for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++) {
        char *out = keel_expect(helps[i].cmd, 0);
        ck_assert_msg(strncmp(out, "usage: ", 7) == 0, "%s", out);
        for (size_t j = 0; helps[i].opts[j] != NULL; j++) {
            ck_assert_msg(strstr(out, helps[i].opts[j]) != NULL,
                          "help of %s %s lacks %s", helps[i].cmd[0],
                          helps[i].cmd[1], helps[i].opts[j]);
        }
        free(out);
    }
    const char *group[] = {"snapshot", "--help", NULL};
    char *out = keel_expect(group, 0);
    static const char *const subs[] = {"create", "verify", "info", "restore"};
    for (size_t j = 0; j < 4; j++) {
        ck_assert_msg(strstr(out, subs[j]) != NULL, "group help lacks %s",
                      subs[j]);
    }
    free(out);
}
END_TEST

/* `keel run --snapshot-every N --snapshot-dir DIR --keep K`: DIR is
 * created, holds exactly K snapshots at the end, each sound. */
START_TEST(test_snapshot_state_cli_run_periodic_keeps_k)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *config = tu_path(root, "cluster.json");
    char *sdir = tu_path(root, "snaps");
    char *cfg = cluster(pingpong_sq, 150);
    tu_write_file(config, cfg, strlen(cfg));
    const char *run[] = {"run",
                         state,
                         "--config",
                         config,
                         "--sync",
                         "off",
                         "--snapshot-every",
                         "40",
                         "--snapshot-dir",
                         sdir,
                         "--keep",
                         "3",
                         "--json",
                         NULL};
    json_t *o = keel_json(run);
    ck_assert_int_eq(int_field(o, "crank"), 301);
    uint64_t lsns[16];
    ck_assert_uint_eq(list_numbered(sdir, ".ksnap", lsns, 16, NULL), 3);
    ck_assert_uint_eq(lsns[2], 7 * 40 + 1);
    for (size_t i = 0; i < 3; i++) {
        char *p = pathf(sdir, "%020" PRIu64 ".ksnap", lsns[i]);
        const char *verify[] = {"snapshot", "verify", p, NULL};
        free(keel_expect(verify, 0));
        free(p);
    }
    json_decref(o);
    tu_rmrf(root);
    free(root);
    free(state);
    free(config);
    free(sdir);
    free(cfg);
}
END_TEST

/* The manifest spells the activity hash as `keel status` does, and so
 * should `keel snapshot info --json`, so that the two compare as text. */
START_TEST(test_snapshot_state_cli_info_hash_spelled_as_status)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *snap = tu_path(root, "s.ksnap");
    keel_kernel *k = k_new(state, pingpong_sq, 3);
    k_run(k, 0);
    k_close(k);
    snap_create(state, snap);
    const char *status[] = {"status", state, "--json", NULL};
    json_t *st = keel_json(status);
    const char *info[] = {"snapshot", "info", snap, "--json", NULL};
    json_t *o = keel_json(info);
    ck_assert_str_eq(str_field(o, "activity_hash"),
                     str_field(st, "activity_hash"));
    ck_assert_str_eq(str_field(o, "kernel_id"), str_field(st, "kernel_id"));
    json_decref(o);
    json_decref(st);
    tu_rmrf(root);
    free(root);
    free(state);
    free(snap);
}
END_TEST

/* ======================================================================== */
/* durability of a restore                                                  */
/* ======================================================================== */

/* A restore loads its store with unsynced commits (bulk); once
 * load_finish returned, every later commit (the roll-forward's
 * checkpoints, the timeline) must be LMDB's fully synced one, or the
 * state is published with pages that never reached the disk (SS2). */
START_TEST(test_snapshot_state_bulk_store_synced_after_load_finish)
{
    char *root = tu_tmpdir("snapstate");
    char *dir = tu_path(root, "store");
    keel__store_options so;
    keel__store_options_init(&so);
    so.bulk = 1;
    keel__store *s = NULL;
    keel_diag d = {0};
    int rc = keel__store_open(dir, &so, 0, &s, &d);
    ck_assert_msg(rc == KEEL_OK, "open: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(!keel__store_synced(s), "a bulk store loads unsynced");
    rc = keel__store_load_put(s, "k.crank", 7, "3", 1, &d);
    ck_assert_msg(rc == KEEL_OK, "load: %s: %s", keel_err_name(rc), d.msg);
    rc = keel__store_load_finish(s, 9, &d);
    ck_assert_msg(rc == KEEL_OK, "finish: %s: %s", keel_err_name(rc), d.msg);
    ck_assert_msg(keel__store_synced(s),
                  "after load_finish the store still commits without a sync "
                  "(MDB_NOSYNC/MDB_NOMETASYNC set): a roll-forward's "
                  "checkpoints would be published unsynced");
    keel__store_close(s);
    tu_rmrf(root);
    free(root);
    free(dir);
}
END_TEST

/* ======================================================================== */
/* timelines                                                                */
/* ======================================================================== */

static keel__store_timeline state_timeline(const char *state)
{
    keel__store_view *v = view_open(state);
    keel__store_timeline t;
    keel__store_view_timeline(v, &t);
    keel__store_view_close(v);
    return t;
}

static void hex16(char out[17], uint64_t v)
{
    snprintf(out, 17, "%016" PRIx64, v);
}

/* SS5: a restore starts a new timeline whose parent is the snapshot's and
 * whose branch LSN is the restored LSN; the store, `status --json` and the
 * manifest of a snapshot of it say so; the next restore records the
 * lineage on; two restores of one snapshot are two timelines. */
START_TEST(test_snapshot_state_restore_records_parent_timeline_and_branch)
{
    fixture fx;
    fx_init(&fx, 20, 6, 0);
    ck_assert_uint_eq(fx.info.format, KEEL_SNAPSHOT_FORMAT);
    ck_assert_uint_eq(fx.info.meta.timeline, 0);
    ck_assert_uint_eq(fx.info.meta.timeline_parent, 0);
    ck_assert_uint_eq(fx.info.meta.timeline_branch_lsn, 0);

    keel_snapshot_restore_report rep =
        restore_ok(fx.snap, fx.dst, fx.wal, 0, 12);
    ck_assert_uint_eq(rep.crank, 12);
    ck_assert_uint_ne(rep.timeline, 0);
    keel__store_timeline t = state_timeline(fx.dst);
    ck_assert_uint_eq(t.id, rep.timeline);
    ck_assert_uint_eq(t.parent, 0);
    ck_assert_uint_eq(t.branch_lsn, rep.lsn);
    ck_assert_uint_eq(state_timeline(fx.state).id, 0);

    keel_kernel *k = k_open(fx.dst);
    json_t *st = k_status(k);
    char want[17];
    hex16(want, rep.timeline);
    ck_assert_str_eq(json_string_value(json_object_get(st, "timeline")), want);
    ck_assert_str_eq(json_string_value(json_object_get(st, "timeline_parent")),
                     "0000000000000000");
    ck_assert_uint_eq(
        json_integer_value(json_object_get(st, "timeline_branch_lsn")),
        rep.lsn);
    json_decref(st);
    k_run(k, 3);
    char *bsnap = tu_path(fx.root, "b.ksnap");
    keel_snapshot_info b = snap_kernel(k, bsnap);
    k_close(k);
    ck_assert_uint_eq(b.meta.timeline, rep.timeline);
    ck_assert_uint_eq(b.meta.timeline_parent, 0);
    ck_assert_uint_eq(b.meta.timeline_branch_lsn, rep.lsn);
    keel_snapshot_info bi = snap_info(bsnap);
    ck_assert_uint_eq(bi.meta.timeline, rep.timeline);
    ck_assert_uint_eq(bi.meta.timeline_branch_lsn, rep.lsn);
    /* from outside too */
    char *csnap = tu_path(fx.root, "c.ksnap");
    ck_assert_uint_eq(snap_create(fx.dst, csnap).meta.timeline, rep.timeline);

    /* the lineage goes on */
    char *c = tu_path(fx.root, "c");
    keel_snapshot_restore_report rc2 = restore_ok(bsnap, c, NULL, 0, 0);
    ck_assert_uint_ne(rc2.timeline, 0);
    ck_assert_uint_ne(rc2.timeline, rep.timeline);
    ck_assert_uint_eq(rc2.snapshot.meta.timeline, rep.timeline);
    t = state_timeline(c);
    ck_assert_uint_eq(t.id, rc2.timeline);
    ck_assert_uint_eq(t.parent, rep.timeline);
    ck_assert_uint_eq(t.branch_lsn, b.meta.lsn);

    /* the CLI shows it */
    const char *info[] = {"snapshot", "info", bsnap, "--json", NULL};
    json_t *ij = keel_json(info);
    ck_assert_str_eq(str_field(ij, "timeline"), want);
    ck_assert_str_eq(str_field(ij, "timeline_parent"), "0000000000000000");
    ck_assert_uint_eq(int_field(ij, "timeline_branch_lsn"), rep.lsn);
    json_decref(ij);
    const char *status[] = {"status", fx.dst, "--json", NULL};
    json_t *sj = keel_json(status);
    ck_assert_str_eq(str_field(sj, "timeline"), want);
    json_decref(sj);

    /* one snapshot restored twice: two histories */
    char *d2 = tu_path(fx.root, "d");
    keel_snapshot_restore_report rd = restore_ok(fx.snap, d2, NULL, 0, 0);
    ck_assert_uint_ne(rd.timeline, rep.timeline);
    t = state_timeline(d2);
    ck_assert_uint_eq(t.parent, 0);
    ck_assert_uint_eq(t.branch_lsn, fx.info.meta.lsn);
    free(bsnap);
    free(csnap);
    free(c);
    free(d2);
    fx_free(&fx);
}
END_TEST

/* A format-1 snapshot (no timeline in its manifest; written on request
 * for an older reader) reads as timeline 0 and restores and rolls forward
 * as before; a state of another timeline cannot be written as one. */
START_TEST(test_snapshot_state_format_1_snapshot_is_timeline_0)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *wal = tu_path(state, "wal");
    char *old = tu_path(root, "old.ksnap");
    char *old2 = tu_path(root, "old2.ksnap");
    char *dst = tu_path(root, "new");
    char *dst2 = tu_path(root, "new2");
    keel_kernel *k = k_new(state, pingpong_sq, 10);
    k_run(k, 4);
    k_close(k);
    keel_snapshot_options so;
    keel_snapshot_options_init(&so);
    so.format = 1;
    keel_snapshot_info info;
    keel_diag d = {0};
    int rc = keel_snapshot_create(state, old, &so, &info, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: %s", keel_err_name(rc), d.msg);
    k = k_open(state);
    k_run(k, 0);
    point final = k_point(k);
    k_close(k);

    keel_snapshot_info ri = snap_info(old);
    ck_assert_uint_eq(ri.format, 1);
    ck_assert_uint_eq(ri.meta.crank, 4);
    ck_assert_uint_eq(ri.meta.timeline, 0);
    ck_assert_uint_eq(ri.meta.timeline_branch_lsn, 0);
    keel_snapshot_reader *r = NULL;
    ck_assert_int_eq(keel_snapshot_reader_open(old, NULL, &r, &d), KEEL_OK);
    keel_bytes m = keel_snapshot_reader_manifest(r);
    ck_assert_msg(memmem(m.ptr, m.len, "timeline", 8) == NULL,
                  "a format-1 manifest names a timeline");
    keel_snapshot_reader_close(r);

    keel_snapshot_restore_report rep = restore_ok(old, dst, wal, 0, 0);
    ck_assert_uint_gt(rep.rolled_forward, 0);
    ck_assert_uint_ne(rep.timeline, 0);
    keel__store_timeline t = state_timeline(dst);
    ck_assert_uint_eq(t.parent, 0);
    ck_assert_uint_eq(t.branch_lsn, final.lsn);
    k = k_open(dst);
    ck_point_eq(k_point(k), final, "a format-1 snapshot rolled forward");
    k_close(k);
    /* a state of another timeline has no format-1 spelling */
    memset(&d, 0, sizeof(d));
    rc = keel_snapshot_create(dst, old2, &so, &info, &d);
    ck_assert_msg(rc == KEEL_EINVAL && strstr(d.msg, "format 1") != NULL,
                  "format 1 of timeline %016" PRIx64 ": %s: %s", rep.timeline,
                  keel_err_name(rc), d.msg);
    ck_assert(!exists(old2));
    restore_ok(old, dst2, NULL, 0, 0);
    ck_assert_uint_ne(state_timeline(dst2).id, rep.timeline);
    tu_rmrf(root);
    free(root);
    free(state);
    free(wal);
    free(old);
    free(old2);
    free(dst);
    free(dst2);
}
END_TEST

/* SS6: B, restored from A's snapshot, takes another turn (an outside send)
 * and is snapshotted; A's log at that LSN continues A's history, not B's:
 * restoring B's snapshot with A's log is refused naming both activity
 * hashes and both timelines (API and CLI), and nothing is left; B's own
 * log is accepted. */
START_TEST(test_snapshot_state_restore_refuses_log_of_another_timeline)
{
    fixture fx;
    fx_init(&fx, 20, 6, 0);
    char *b = tu_path(fx.root, "b");
    char *bwal = tu_path(b, "wal");
    char *bsnap = tu_path(fx.root, "b.ksnap");
    char *probe = tu_path(fx.root, "probe");
    keel_snapshot_restore_report rb = restore_ok(fx.snap, b, NULL, 0, 0);
    keel_kernel *k = k_open(b);
    char kref[KEEL_VREF_MAX];
    keel_diag d = {0};
    int rc = keel_kernel_send(k, "bob", "ping", "{\"i\":1}", kref, &d);
    ck_assert_msg(rc == KEEL_OK, "send: %s: %s", keel_err_name(rc), d.msg);
    keel_snapshot_info bi = snap_kernel(k, bsnap);
    ck_assert_uint_eq(bi.meta.lsn, fx.info.meta.lsn + 1);
    ck_assert_uint_eq(bi.meta.timeline, rb.timeline);
    k_run(k, 0);
    point bfinal = k_point(k);
    k_close(k);
    /* A's own hash at that LSN */
    restore_ok(fx.snap, probe, fx.wal, bi.meta.lsn, 0);
    k = k_open(probe);
    point a_at = k_point(k);
    k_close(k);
    ck_assert_uint_ne(a_at.hash, bi.meta.activity_hash);

    char bh[17], ah[17], bt[17];
    hex16(bh, bi.meta.activity_hash);
    hex16(ah, a_at.hash);
    hex16(bt, bi.meta.timeline);
    const char *const names[] = {
        fx.wal, bsnap, bh, ah, bt, "0000000000000000", "another timeline",
        NULL};
    memset(&d, 0, sizeof(d));
    rc = restore(bsnap, fx.dst, fx.wal, 0, 0, NULL, &d);
    ck_refused(rc, KEEL_ECORRUPT, &d, fx.dst, "B's snapshot, A's log", names);
    const char *cli[] = {"snapshot", "restore", bsnap, fx.dst,
                         "--wal",    fx.wal,    NULL};
    free(keel_expect(cli, 1));
    ck_nothing_left(fx.dst, "keel snapshot restore of B's snapshot, A's log");

    /* B's own log is B's history */
    restore_ok(bsnap, fx.dst, bwal, 0, 0);
    k = k_open(fx.dst);
    ck_point_eq(k_point(k), bfinal, "B's snapshot rolled through B's log");
    k_close(k);
    free(b);
    free(bwal);
    free(bsnap);
    free(probe);
    fx_free(&fx);
}
END_TEST

#define ADOPT_EVERY 5

/* KS6: a state restored from the original's periodic snapshot, given the
 * original's --snapshot-dir, is refused at open (the directory belongs to
 * the original's timeline) and nothing is committed; given its own, an
 * original's file of the very name its next periodic snapshot takes is
 * not adopted: that snapshot fails naming both states, the file is left
 * as it was, and the run goes on once it is gone. */
START_TEST(test_snapshot_state_restored_kernel_does_not_adopt_original_snapshot)
{
    char *root = tu_tmpdir("snapstate");
    char *a = tu_path(root, "a");
    char *adir = tu_path(root, "a-snaps");
    char *b = tu_path(root, "b");
    char *bdir = tu_path(root, "b-snaps");
    ck_assert_int_eq(mkdir(adir, 0755), 0);
    ck_assert_int_eq(mkdir(bdir, 0755), 0);
    keel_kernel_options o;
    kopts(&o);
    o.snapshot_every = ADOPT_EVERY;
    o.snapshot_keep = 100;
    o.snapshot_dir = adir;
    keel_kernel *k = k_new_with(a, &o, pingpong_sq, 30);
    k_run(k, 0);
    k_close(k);
    uint64_t lsns[64];
    size_t n = list_numbered(adir, ".ksnap", lsns, 64, NULL);
    ck_assert_uint_ge(n, 4);
    char *first = pathf(adir, "%020" PRIu64 ".ksnap", lsns[0]);
    keel_snapshot_restore_report rep = restore_ok(first, b, NULL, 0, 0);

    keel_kernel *kb = NULL;
    keel_diag d = {0};
    int rc = keel_kernel_open(b, &o, &kb, &d);
    ck_assert_msg(rc == KEEL_EEXIST,
                  "a restored state opened on the original's snapshot "
                  "directory: %s: %s",
                  keel_err_name(rc), d.msg);
    ck_assert_ptr_null(kb);
    char bt[17];
    hex16(bt, rep.timeline);
    ck_assert_msg(strstr(d.msg, adir) != NULL && strstr(d.msg, bt) != NULL &&
                      strstr(d.msg, "0000000000000000") != NULL,
                  "diag '%s' names neither the directory nor both timelines",
                  d.msg);
    uint64_t lsns2[64];
    ck_assert_uint_eq(list_numbered(adir, ".ksnap", lsns2, 64, NULL), n);

    /* its own directory, and the original's file of its next name */
    o.snapshot_dir = bdir;
    kb = k_open_with(b, &o);
    ck_point_eq(k_point(kb),
                (point){rep.lsn, rep.crank, rep.snapshot.meta.activity_hash},
                "restored");
    char *theirs = pathf(adir, "%020" PRIu64 ".ksnap", lsns[1]);
    char *mine = pathf(bdir, "%020" PRIu64 ".ksnap", lsns[1]);
    size_t len = 0;
    uint8_t *bytes = tu_read_file(theirs, &len);
    tu_write_file(mine, bytes, len);
    keel_run_options ro = {.timeout_ms = RUN_TIMEOUT_MS};
    keel_run_stats s;
    memset(&d, 0, sizeof(d));
    rc = keel_kernel_run(kb, &ro, &s, &d);
    ck_assert_msg(rc == KEEL_EEXIST,
                  "the original's snapshot was adopted: run %s: %s",
                  keel_err_name(rc), d.msg);
    ck_assert_msg(strstr(d.msg, mine) != NULL && strstr(d.msg, bt) != NULL,
                  "diag '%s' names neither the file nor this timeline", d.msg);
    size_t len2 = 0;
    uint8_t *after = tu_read_file(mine, &len2);
    ck_assert_msg(len2 == len && memcmp(after, bytes, len) == 0,
                  "%s was changed", mine);
    ck_assert_uint_eq(snap_info(mine).meta.timeline, 0);
    unlink(mine);
    k_run(kb, 0);
    k_close(kb);
    size_t nb = list_numbered(bdir, ".ksnap", lsns2, 64, NULL);
    ck_assert_uint_ge(nb, 1);
    for (size_t i = 0; i < nb; i++) {
        char *f = pathf(bdir, "%020" PRIu64 ".ksnap", lsns2[i]);
        ck_assert_uint_eq(snap_info(f).meta.timeline, rep.timeline);
        free(f);
    }
    free(bytes);
    free(after);
    free(first);
    free(theirs);
    free(mine);
    tu_rmrf(root);
    free(root);
    free(a);
    free(adir);
    free(b);
    free(bdir);
}
END_TEST

/* KS5: `keel run --snapshot-dir` naming a file, or a directory nothing can
 * be created in, fails before anything is committed: exit 1, one line
 * naming the path; a new STATE is not created, an existing one keeps its
 * crank. */
START_TEST(test_snapshot_state_cli_run_bad_snapshot_dir_commits_nothing)
{
    char *root = tu_tmpdir("snapstate");
    char *state = tu_path(root, "state");
    char *fresh = tu_path(root, "fresh");
    char *config = tu_path(root, "cluster.json");
    char *file = tu_path(root, "a-file");
    char *cfg = cluster(pingpong_sq, 20);
    tu_write_file(config, cfg, strlen(cfg));
    tu_write_file(file, "x", 1);
    const char *boot[] = {"run", state,          "--config", config, "--sync",
                          "off", "--max-cranks", "3",        NULL};
    free(keel_expect(boot, 0));
    /* a directory where creating a file fails even for root */
    const char *bad_dirs[] = {file, "/proc/1"};
    for (size_t i = 0; i < 2; i++) {
        const char *newrun[] = {"run",
                                fresh,
                                "--config",
                                config,
                                "--sync",
                                "off",
                                "--snapshot-every",
                                "1",
                                "--snapshot-dir",
                                bad_dirs[i],
                                NULL};
        char *out = NULL, *err = NULL;
        int rc = tu_run_keel(newrun, &out, &err);
        ck_assert_msg(rc == 1, "run --snapshot-dir %s: exit %d: %s",
                      bad_dirs[i], rc, err);
        tu_assert_one_error_line(err);
        ck_assert_msg(strstr(err, bad_dirs[i]) != NULL, "'%s' does not name %s",
                      err, bad_dirs[i]);
        ck_assert_msg(!exists(fresh), "%s created", fresh);
        free(out);
        free(err);
        const char *again[] = {"run",
                               state,
                               "--sync",
                               "off",
                               "--snapshot-every",
                               "1",
                               "--snapshot-dir",
                               bad_dirs[i],
                               NULL};
        free(keel_expect(again, 1));
        const char *status[] = {"status", state, "--json", NULL};
        json_t *st = keel_json(status);
        ck_assert_int_eq(int_field(st, "crank"), 3);
        json_decref(st);
    }
    tu_rmrf(root);
    free(root);
    free(state);
    free(fresh);
    free(config);
    free(file);
    free(cfg);
}
END_TEST

Suite *snapshot_state_suite(void)
{
    Suite *s = suite_create("snapshot_state");
    TCase *tc = tcase_create("round_trip");
    tcase_add_test(tc, test_snapshot_state_round_trip_pingpong_identical);
    tcase_add_test(tc, test_snapshot_state_round_trip_fanout_identical);
    tcase_add_test(tc, test_snapshot_state_round_trip_chain5_identical);
    suite_add_tcase(s, tc);

    tc = tcase_create("continue");
    tcase_add_test(tc, test_snapshot_state_continue_fanout_same_result);
    tcase_add_test(tc,
                   test_snapshot_state_continue_chain5_pending_job_same_result);
    suite_add_tcase(s, tc);

    tc = tcase_create("point_in_time");
    tcase_set_timeout(tc, 300); /* ~1,000 snapshots, ~60 restores */
    tcase_add_test(tc, test_snapshot_state_point_in_time_equals_original);
    suite_add_tcase(s, tc);

    tc = tcase_create("live");
    tcase_add_test(tc,
                   test_snapshot_state_live_snapshots_restore_and_roll_forward);
    suite_add_tcase(s, tc);

    tc = tcase_create("damage");
    tcase_add_test(tc, test_snapshot_state_every_flip_and_truncation_refused);
    tcase_add_test(tc, test_snapshot_state_version_1_state_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_add_test(tc, test_snapshot_state_restore_refuses_existing_newstate);
    tcase_add_test(tc, test_snapshot_state_restore_refuses_stale_restoring);
    tcase_add_test(tc,
                   test_snapshot_state_restore_mkdir_failure_leaves_nothing);
    tcase_add_test(tc, test_snapshot_state_restore_refuses_wal_of_other_kernel);
    tcase_add_test(tc, test_snapshot_state_restore_refuses_gap_naming_lsns);
    tcase_add_test(tc,
                   test_snapshot_state_restore_refuses_missing_middle_segment);
    tcase_add_test(tc, test_snapshot_state_restore_refuses_bad_points);
    tcase_add_test(tc, test_snapshot_state_create_refusals_leave_nothing);
    tcase_add_test(tc,
                   test_snapshot_state_failed_snapshot_leaves_kernel_running);
    suite_add_tcase(s, tc);

    tc = tcase_create("periodic");
    tcase_add_test(tc,
                   test_snapshot_state_periodic_keeps_newest_and_bounds_wal);
    tcase_add_test(tc,
                   test_snapshot_state_periodic_replaces_stale_tmp_of_its_name);
    tcase_add_test(
        tc, test_snapshot_state_periodic_removes_stale_tmp_of_earlier_run);
    suite_add_tcase(s, tc);

    tc = tcase_create("cli");
    tcase_add_test(tc, test_snapshot_state_cli_create_verify_info_restore_run);
    tcase_add_test(tc, test_snapshot_state_cli_errors_exit_one_with_one_line);
    tcase_add_test(tc, test_snapshot_state_cli_usage_errors_exit_two);
    tcase_add_test(
        tc, test_snapshot_state_cli_run_usage_error_creates_no_snapshot_dir);
    tcase_add_test(tc, test_snapshot_state_cli_help_lists_every_option);
    tcase_add_test(tc, test_snapshot_state_cli_run_periodic_keeps_k);
    tcase_add_test(tc, test_snapshot_state_cli_info_hash_spelled_as_status);
    suite_add_tcase(s, tc);

    tc = tcase_create("durability");
    tcase_add_test(tc, test_snapshot_state_bulk_store_synced_after_load_finish);
    suite_add_tcase(s, tc);

    tc = tcase_create("timelines");
    tcase_set_timeout(tc, 120);
    tcase_add_test(
        tc, test_snapshot_state_restore_records_parent_timeline_and_branch);
    tcase_add_test(tc, test_snapshot_state_format_1_snapshot_is_timeline_0);
    tcase_add_test(tc,
                   test_snapshot_state_restore_refuses_log_of_another_timeline);
    tcase_add_test(
        tc,
        test_snapshot_state_restored_kernel_does_not_adopt_original_snapshot);
    tcase_add_test(
        tc, test_snapshot_state_cli_run_bad_snapshot_dir_commits_nothing);
    suite_add_tcase(s, tc);
    return s;
}
