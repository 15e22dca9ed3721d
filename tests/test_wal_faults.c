/*
 * tests/test_wal_faults.c — the WAL under injected I/O faults: the
 * fault-injecting keel_io of common/io_fault.h is handed to the writer as
 * keel_wal_options.io and fails, tears or "crashes" one chosen operation.
 *
 * What is checked (issue 3 §5, STYLE.md §4-6):
 *   - sticky failure (W3): an fdatasync EIO, a pwrite ENOSPC, a torn write
 *     and a failed segment creation each make the writer FAILED; the call
 *     that hit the fault returns its error, every later append, wait and
 *     sync returns KEEL_EFAILED, and the durable LSN never moves again;
 *   - after close (and a modelled power loss) a reopen with plain I/O
 *     succeeds, every record reported durable is present and intact, no
 *     record carries a payload other than the one appended at its LSN, a
 *     torn tail is truncated, and appends continue correctly across one
 *     more reopen;
 *   - a power-loss sweep: a fixed workload crashes before and after each of
 *     its I/O operations in turn, under sync=full and sync=group, then power
 *     is lost keeping none or a seeded random prefix of the unsynced bytes,
 *     or the process restarts (reopening without any byte lost) and power
 *     is lost after that: what the restarted writer calls durable must be;
 *   - bit flips in what reads return, while a reader reads and while a
 *     writer opens: an error or a prefix of the correct records, never a
 *     wrong payload, and never a valid record other than the last dropped.
 *
 * The model. Before each append the test stores what it appends at the LSN
 * the record must get (keel_wal_last_lsn() + 1), so a record that survives
 * a failed append can still be checked byte for byte. A re-append at an LSN
 * that was lost uses a new generation, so it never matches the old bytes by
 * accident.
 *
 * Every failure message starts with the plan that produced it (sync policy,
 * fault kind, op, nth, and the values drawn at random: kept bytes, flipped
 * bit, with the seed they were drawn from): that line alone reproduces it.
 *
 * Directories go to /dev/shm when TMPDIR is unset (see scratch_dir()): the
 * fault layer, not the disk, decides what survives, and the sweep makes
 * tens of thousands of fdatasyncs.
 */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/io_fault.h"
#include "keel/keel.h"
#include "tests/testutil.h"
#include "wal/wal_format.h"

Suite *wal_faults_suite(void);

/* Base seeds of the random choices (torn prefixes, flipped bits); each
 * run's seed mixes in its crash point. Fixed, so that a run is
 * reproducible; KEEL_TEST_SEED replaces both bases to explore others. */
#define SEED_SWEEP 0x6b65656c66617531ull
#define SEED_FLIP  0x6b65656c66617532ull

/* Sizes. The sweep runs its workload SWEEP_TORN_KEEPS + 2 times per I/O
 * operation it makes (about 120 under FULL, 70 under GROUP), for each sync
 * policy and crash kind. Default: about 7 s in an ASan build on tmpfs, 35 s
 * on ext4; KEEL_LONG_TESTS: about 25 s without ASan on tmpfs. */
#ifdef KEEL_LONG_TESTS
#define SWEEP_APPENDS    150
#define SWEEP_TORN_KEEPS 8 /* random torn prefixes per crash point */
#define FLIPS_PER_READ   512
#else
#define SWEEP_APPENDS    40
#define SWEEP_TORN_KEEPS 1
#define FLIPS_PER_READ   48
#endif

/* Small segments: the sweep's workload makes 4-5 and retires 2. */
#define SWEEP_SEG_BYTES 2048u
/* Larger than any workload, so that a test without rollover has none. */
#define BIG_SEG_BYTES (1u << 20)
/* A GROUP window far longer than any test: the syncer then writes only
 * when a wait, sync, rollover or close asks it to, which makes the I/O
 * sequence (and so the sweep's op numbering) deterministic. */
#define GROUP_WINDOW_US    10000000u
#define COMPRESS_MIN_BYTES 256u
/* The largest payload any test appends. */
#define MAX_PAYLOAD 1024u
/* The highest LSN any test reaches. */
#define MODEL_CAP 1024u
/* The longest torn prefix the sweep keeps: a few whole records. */
#define TORN_KEEP_MAX 1500u
#define CTX_BYTES     256
/* Bytes of a record with a payload of len bytes (not compressed). */
#define REC_BYTES(len) (KEEL_WAL_REC_OVERHEAD_BYTES + (len))

/*
 * Fail the test with the plan (ctx), the failed condition and a formatted
 * explanation. Every check of this file goes through it, so that no message
 * lacks the line that reproduces it.
 */
#define EXPECT(cond, ctx, ...)                                      \
    do {                                                            \
        if (!(cond)) {                                              \
            char why_[1024];                                        \
            snprintf(why_, sizeof(why_), __VA_ARGS__);              \
            ck_abort_msg("%s: failed: %s: %s", (ctx), #cond, why_); \
        }                                                           \
    } while (0)

/* ---- the model ---------------------------------------------------------- */

/* What was appended (or attempted) at one LSN. */
typedef struct rec_model {
    uint8_t *payload; /* NULL: never appended at this LSN */
    size_t len;
    int kind;
    uint64_t crank;
} rec_model;

typedef struct model {
    uint64_t seed;    /* makes this test's payloads its own */
    uint64_t gen;     /* bumped before re-appending after a reopen */
    uint64_t max_lsn; /* the highest LSN an append was attempted at */
    rec_model recs[MODEL_CAP + 1]; /* by LSN */
} model;

static model *model_new(uint64_t seed)
{
    model *m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    m->seed = seed;
    return m;
}

static void model_free(model *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i <= MODEL_CAP; i++) {
        free(m->recs[i].payload);
    }
    free(m);
}

/* Compressible payloads repeat one 8-byte word; the others are PRNG output.
 * Both depend on seed, so no two records are alike. */
static void fill_payload(uint8_t *buf, size_t len, uint64_t seed,
                         int compressible)
{
    uint64_t st = seed;
    uint64_t word = tu_rand(&st);
    for (size_t i = 0; i < len; i++) {
        if (!compressible && i % 8 == 0) {
            word = tu_rand(&st);
        }
        buf[i] = (uint8_t)(word >> (8 * (i % 8)));
    }
}

/*
 * Append one record of len payload bytes, first recording in m what is
 * appended at the LSN it must get. @return the append's result; on success
 * *lsn is checked to be that LSN.
 */
static int append_rec(const char *ctx, keel_wal *w, model *m, size_t len,
                      int compressible, uint64_t *lsn, keel_diag *d)
{
    uint8_t buf[MAX_PAYLOAD];
    uint64_t next = keel_wal_last_lsn(w) + 1;
    EXPECT(next <= MODEL_CAP && len <= MAX_PAYLOAD && len > 0, ctx,
           "test model too small for LSN %" PRIu64 " / %zu bytes", next, len);
    fill_payload(buf, len, m->seed ^ (next << 20) ^ m->gen, compressible);
    rec_model *r = &m->recs[next];
    free(r->payload);
    r->payload = malloc(len);
    ck_assert_ptr_nonnull(r->payload);
    memcpy(r->payload, buf, len);
    r->len = len;
    r->kind = 1 + (int)(next % 4);
    r->crank = next * 1000 + m->gen;
    if (next > m->max_lsn) {
        m->max_lsn = next;
    }
    uint64_t got = 0;
    int rc = keel_wal_append(w, r->kind, r->crank, buf, len, &got, d);
    if (rc == KEEL_OK) {
        EXPECT(got == next, ctx,
               "append returned LSN %" PRIu64 ", expected %" PRIu64, got, next);
    }
    *lsn = got;
    return rc;
}

/* Append that must succeed. @return its LSN. */
static uint64_t append_ok(const char *ctx, keel_wal *w, model *m, size_t len,
                          int compressible)
{
    keel_diag d = {0};
    uint64_t lsn = 0;
    int rc = append_rec(ctx, w, m, len, compressible, &lsn, &d);
    EXPECT(rc == KEEL_OK, ctx, "append: %s: %s", keel_err_name(rc), d.msg);
    return lsn;
}

/* ---- reading the log back ----------------------------------------------- */

typedef struct audit {
    uint64_t count;
    uint64_t first; /* first LSN read (0: none) */
    uint64_t last;  /* last LSN read (0: none) */
    uint64_t end;   /* offset just after the last record in its segment */
    char last_segment[64];
    keel_wal_tail tail;
} audit;

/* A record read back must be the one appended at its LSN. */
static void check_record(const char *ctx, const model *m,
                         const keel_wal_record *rec)
{
    EXPECT(rec->lsn >= 1 && rec->lsn <= m->max_lsn, ctx,
           "%s: offset %" PRIu64 ": record with LSN %" PRIu64
           ", but no append was ever attempted past LSN %" PRIu64,
           rec->segment, rec->offset, rec->lsn, m->max_lsn);
    const rec_model *e = &m->recs[rec->lsn];
    EXPECT(e->payload != NULL, ctx, "LSN %" PRIu64 " was never appended",
           rec->lsn);
    EXPECT(rec->kind == e->kind && rec->crank == e->crank, ctx,
           "LSN %" PRIu64 ": kind %d crank %" PRIu64
           ", appended kind %d crank %" PRIu64,
           rec->lsn, rec->kind, rec->crank, e->kind, e->crank);
    EXPECT(rec->payload.len == e->len &&
               memcmp(rec->payload.ptr, e->payload, e->len) == 0,
           ctx,
           "LSN %" PRIu64 " (%s offset %" PRIu64 "): payload of %zu bytes "
           "differs from the %zu bytes appended",
           rec->lsn, rec->segment, rec->offset, rec->payload.len, e->len);
}

/*
 * Read the whole log in dir with plain POSIX I/O. Every record must match
 * the model and follow the previous one; the log must end cleanly or in a
 * torn tail (never an error); the last LSN must be >= durable; and the
 * first must be 1, or no more than first_max when segments were retired.
 */
static void audit_log(const char *ctx, const char *dir, const model *m,
                      uint64_t durable, uint64_t first_max, audit *a)
{
    memset(a, 0, sizeof(*a));
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    int rc = keel_wal_reader_open(dir, NULL, 0, &r, &d);
    EXPECT(rc == KEEL_OK, ctx, "reader_open: %s: %s", keel_err_name(rc), d.msg);
    keel_wal_record rec;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        EXPECT(a->count == 0 || rec.lsn == a->last + 1, ctx,
               "LSN %" PRIu64 " follows LSN %" PRIu64, rec.lsn, a->last);
        check_record(ctx, m, &rec);
        if (a->count == 0) {
            a->first = rec.lsn;
        }
        a->last = rec.lsn;
        a->end = rec.offset + KEEL_WAL_REC_OVERHEAD_BYTES + rec.stored_len;
        snprintf(a->last_segment, sizeof(a->last_segment), "%s", rec.segment);
        a->count++;
    }
    EXPECT(rc == 0, ctx, "reading after LSN %" PRIu64 ": %s: %s", a->last,
           keel_err_name(rc), d.msg);
    keel_wal_reader_tail(r, &a->tail);
    keel_wal_reader_close(r);
    EXPECT(a->last >= durable, ctx,
           "LSN %" PRIu64 " was reported durable, the log ends at %" PRIu64,
           durable, a->last);
    EXPECT(a->count == 0 || a->first <= first_max, ctx,
           "the log starts at LSN %" PRIu64 ", expected at most %" PRIu64,
           a->first, first_max);
    EXPECT(a->tail.last_lsn == a->last, ctx,
           "tail says last LSN %" PRIu64 ", read %" PRIu64, a->tail.last_lsn,
           a->last);
}

/* Names in dir ending with suffix. */
static int count_suffix(const char *dir, const char *suffix)
{
    int n = 0;
    size_t sl = strlen(suffix);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void wal_opts(keel_wal_options *o, keel_io *io, int sync,
                     uint64_t seg_bytes)
{
    keel_wal_options_init(o);
    o->io = io;
    o->sync = sync;
    o->segment_bytes = seg_bytes;
    o->group_window_us = GROUP_WINDOW_US;
    o->compress_min_bytes = COMPRESS_MIN_BYTES;
}

/*
 * After a failure: reopen dir for writing with plain I/O, check the log
 * (audit_log), append 3 records of more_len bytes, close, reopen, and check
 * again. *info gets what the first open reported. @return the last LSN
 * after the first open (before the 3 appends).
 */
static uint64_t reopen_and_check(const char *ctx, const char *dir, model *m,
                                 uint64_t durable, uint64_t first_max,
                                 uint64_t seg_bytes, size_t more_len,
                                 keel_wal_open_info *info)
{
    keel_wal_options o;
    wal_opts(&o, NULL, KEEL_SYNC_FULL, seg_bytes);
    keel_wal *w = NULL;
    keel_diag d = {0};
    int rc = keel_wal_open(dir, &o, &w, info, &d);
    EXPECT(rc == KEEL_OK, ctx, "reopen: %s: %s", keel_err_name(rc), d.msg);
    EXPECT(count_suffix(dir, ".tmp") == 0, ctx,
           "a stale .tmp file survived the reopen");
    uint64_t last = info->last_lsn;
    EXPECT(last == keel_wal_last_lsn(w) && keel_wal_durable_lsn(w) == last, ctx,
           "reopen: info last LSN %" PRIu64 ", writer last %" PRIu64
           " durable %" PRIu64,
           last, keel_wal_last_lsn(w), keel_wal_durable_lsn(w));
    audit a;
    audit_log(ctx, dir, m, durable, first_max, &a);
    EXPECT(a.last == last && !a.tail.torn, ctx,
           "after reopen the reader sees last LSN %" PRIu64
           " (torn %d), the writer %" PRIu64,
           a.last, a.tail.torn, last);

    m->gen++;
    for (uint64_t i = 1; i <= 3; i++) {
        uint64_t lsn = append_ok(ctx, w, m, more_len, 0);
        EXPECT(lsn == last + i, ctx,
               "append after reopen got LSN %" PRIu64 ", expected %" PRIu64,
               lsn, last + i);
    }
    rc = keel_wal_close(w, &d);
    EXPECT(rc == KEEL_OK, ctx, "close: %s: %s", keel_err_name(rc), d.msg);

    keel_wal_open_info info2;
    rc = keel_wal_open(dir, &o, &w, &info2, &d);
    EXPECT(rc == KEEL_OK, ctx, "second reopen: %s: %s", keel_err_name(rc),
           d.msg);
    EXPECT(!info2.torn && info2.last_lsn == last + 3, ctx,
           "second reopen: torn %d (%s) last LSN %" PRIu64
           ", expected clean at %" PRIu64,
           info2.torn, info2.torn_reason, info2.last_lsn, last + 3);
    EXPECT(info2.kernel_id == info->kernel_id, ctx,
           "kernel id changed from 0x%016" PRIx64 " to 0x%016" PRIx64,
           info->kernel_id, info2.kernel_id);
    rc = keel_wal_close(w, &d);
    EXPECT(rc == KEEL_OK, ctx, "close: %s: %s", keel_err_name(rc), d.msg);
    audit_log(ctx, dir, m, last + 3, first_max, &a);
    EXPECT(a.last == last + 3 && !a.tail.torn, ctx,
           "final read ends at LSN %" PRIu64 " (torn %d), expected %" PRIu64,
           a.last, a.tail.torn, last + 3);
    return last;
}

/*
 * W3: the writer is FAILED with err. Every later append, wait and sync
 * returns KEEL_EFAILED (twice, so the state is seen to stick), and the
 * durable LSN stays at durable.
 */
static void expect_sticky(const char *ctx, keel_wal *w, int err,
                          uint64_t durable)
{
    keel_diag d = {0};
    EXPECT(keel_wal_failed(w) == err, ctx, "keel_wal_failed() is %s, not %s",
           keel_err_name(keel_wal_failed(w)), keel_err_name(err));
    for (int round = 0; round < 2; round++) {
        int rc = keel_wal_append(w, KEEL_WAL_CRANK, 7, "late", 4, NULL, &d);
        EXPECT(rc == KEEL_EFAILED, ctx, "append after failure: %s",
               keel_err_name(rc));
        rc = keel_wal_wait(w, keel_wal_last_lsn(w), &d);
        EXPECT(rc == KEEL_EFAILED, ctx,
               "wait(last LSN %" PRIu64 ") after failure: %s",
               keel_wal_last_lsn(w), keel_err_name(rc));
        if (durable > 0) {
            rc = keel_wal_wait(w, durable, &d);
            EXPECT(rc == KEEL_EFAILED, ctx,
                   "wait(durable LSN %" PRIu64 ") after failure: %s", durable,
                   keel_err_name(rc));
        }
        rc = keel_wal_sync(w, &d);
        EXPECT(rc == KEEL_EFAILED, ctx, "sync after failure: %s",
               keel_err_name(rc));
        EXPECT(keel_wal_failed(w) == err, ctx,
               "keel_wal_failed() changed to %s",
               keel_err_name(keel_wal_failed(w)));
        EXPECT(keel_wal_durable_lsn(w) == durable, ctx,
               "durable LSN moved from %" PRIu64 " to %" PRIu64
               " after the failure",
               durable, keel_wal_durable_lsn(w));
    }
}

/*
 * A fresh directory for one run. What a power loss keeps is decided by the
 * fault layer's model, not by the disk, so a real fdatasync adds only time
 * (about 1 ms each on ext4, tens of thousands per sweep): use a tmpfs when
 * TMPDIR does not choose a place and /dev/shm is writable.
 */
static char *scratch_dir(void)
{
    const char *t = getenv("TMPDIR");
    if ((t == NULL || t[0] == '\0') && access("/dev/shm", W_OK) == 0) {
        char tmpl[] = "/dev/shm/keel-walfaults-XXXXXX";
        if (mkdtemp(tmpl) != NULL) {
            char *d = strdup(tmpl);
            ck_assert_ptr_nonnull(d);
            return d;
        }
    }
    return tu_tmpdir("walfaults");
}

/* ---- fixture ------------------------------------------------------------ */

/* A fresh directory with a writer open through a fault layer. */
typedef struct fixture {
    char *root;
    char *dir; /* root/wal: the writer creates it */
    keel_io_fault *f;
    model *m;
    keel_wal *w;
} fixture;

static void fixture_start(fixture *fx, const char *ctx, int sync,
                          uint64_t seg_bytes, uint64_t seed)
{
    fx->root = scratch_dir();
    fx->dir = tu_path(fx->root, "wal");
    fx->m = model_new(seed);
    ck_assert_int_eq(keel__io_fault_new(&fx->f), KEEL_OK);
    keel_wal_options o;
    wal_opts(&o, keel__io_fault_io(fx->f), sync, seg_bytes);
    keel_diag d = {0};
    fx->w = NULL;
    int rc = keel_wal_open(fx->dir, &o, &fx->w, NULL, &d);
    EXPECT(rc == KEEL_OK, ctx, "open: %s: %s", keel_err_name(rc), d.msg);
}

/* Close the writer (its error is the test's business, not checked here),
 * optionally lose power, and drop the fault layer. */
static void fixture_stop(fixture *fx, const char *ctx, int power_loss)
{
    keel_wal_close(fx->w, NULL);
    fx->w = NULL;
    if (power_loss) {
        int rc = keel__io_fault_power_loss(fx->f, 0);
        EXPECT(rc == KEEL_OK, ctx, "power loss: %s", keel_err_name(rc));
    }
    keel__io_fault_free(fx->f);
    fx->f = NULL;
}

static void fixture_end(fixture *fx)
{
    keel_wal_close(fx->w, NULL);
    keel__io_fault_free(fx->f);
    model_free(fx->m);
    tu_rmrf(fx->root);
    free(fx->dir);
    free(fx->root);
    memset(fx, 0, sizeof(*fx));
}

/* Fire plan at the next ops: counters restart so that nth counts from
 * here. */
static void arm(keel_io_fault *f, enum keel_io_fault_kind kind,
                enum keel_io_op op, uint64_t nth, int err, uint64_t torn)
{
    keel_io_fault_plan p = {
        .kind = kind, .op = op, .nth = nth, .err = err, .torn_bytes = torn};
    keel__io_fault_reset_counts(f);
    keel__io_fault_set_plan(f, &p);
}

static const char *op_name(enum keel_io_op op)
{
    switch (op) {
    case KEEL_IO_OP_ANY:
        return "ANY";
    case KEEL_IO_OP_OPEN:
        return "OPEN";
    case KEEL_IO_OP_PREAD:
        return "PREAD";
    case KEEL_IO_OP_PWRITE:
        return "PWRITE";
    case KEEL_IO_OP_FSYNC:
        return "FSYNC";
    case KEEL_IO_OP_TRUNCATE:
        return "TRUNCATE";
    case KEEL_IO_OP_SIZE:
        return "SIZE";
    case KEEL_IO_OP_RENAME:
        return "RENAME";
    case KEEL_IO_OP_UNLINK:
        return "UNLINK";
    case KEEL_IO_OP_FSYNC_DIR:
        return "FSYNC_DIR";
    case KEEL_IO_OP_CLOSE:
        return "CLOSE";
    case KEEL_IO_OP_MKDIR:
        return "MKDIR";
    case KEEL_IO_OP_RMDIR:
        return "RMDIR";
    default:
        return "?";
    }
}

static uint64_t base_seed(uint64_t dflt)
{
    const char *s = getenv("KEEL_TEST_SEED");
    return s != NULL && s[0] != '\0' ? strtoull(s, NULL, 0) : dflt;
}

/* ---- fdatasync EIO ------------------------------------------------------ */

/*
 * sync=full: the k-th fdatasync after 4 good appends fails with EIO. The
 * append that hit it returns KEEL_EIO and nothing after it is durable; after
 * a power loss that keeps only synced bytes the log holds exactly the
 * records reported durable.
 */
START_TEST(test_wal_faults_fsync_eio_full_fails_sticky)
{
    for (uint64_t k = 1; k <= 3; k++) {
        char ctx[CTX_BYTES];
        snprintf(ctx, sizeof(ctx),
                 "sync=full plan=FAIL op=FSYNC nth=%" PRIu64
                 " err=KEEL_EIO (counted after 4 appends) keep=0",
                 k);
        fixture fx;
        fixture_start(&fx, ctx, KEEL_SYNC_FULL, BIG_SEG_BYTES, 0x100 + k);
        for (int i = 0; i < 4; i++) {
            append_ok(ctx, fx.w, fx.m, 200, 0);
        }
        arm(fx.f, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_FSYNC, k, KEEL_EIO, 0);
        uint64_t durable = keel_wal_durable_lsn(fx.w);
        EXPECT(durable == 4, ctx, "durable LSN %" PRIu64 " after 4 appends",
               durable);
        keel_diag d = {0};
        int rc = KEEL_OK;
        for (int i = 0; i < 10 && rc == KEEL_OK; i++) {
            uint64_t lsn = 0;
            rc = append_rec(ctx, fx.w, fx.m, 200, 0, &lsn, &d);
            if (rc == KEEL_OK) {
                EXPECT(keel_wal_durable_lsn(fx.w) == lsn, ctx,
                       "sync=full append of LSN %" PRIu64
                       " returned, durable is %" PRIu64,
                       lsn, keel_wal_durable_lsn(fx.w));
                durable = lsn;
            }
        }
        EXPECT(rc == KEEL_EIO, ctx, "the failing append returned %s: %s",
               keel_err_name(rc), d.msg);
        EXPECT(durable == 4 + k - 1, ctx,
               "durable LSN %" PRIu64 ": one fdatasync per append expected",
               durable);
        EXPECT(keel_wal_durable_lsn(fx.w) == durable, ctx,
               "durable LSN %" PRIu64 " after the failed append of %" PRIu64,
               keel_wal_durable_lsn(fx.w), durable + 1);
        expect_sticky(ctx, fx.w, KEEL_EIO, durable);
        fixture_stop(&fx, ctx, 1);

        keel_wal_open_info info;
        uint64_t last = reopen_and_check(ctx, fx.dir, fx.m, durable, 1,
                                         BIG_SEG_BYTES, 150, &info);
        EXPECT(last == durable && !info.torn, ctx,
               "after a power loss the log ends at LSN %" PRIu64
               " (torn %d): only the %" PRIu64 " synced records may remain",
               last, info.torn, durable);
        fixture_end(&fx);
    }
}
END_TEST

/*
 * sync=group: the k-th fdatasync of the syncer thread fails. The appends
 * buffered before it succeed (they only copy), the wait that asked for the
 * batch returns KEEL_EIO, and everything afterwards KEEL_EFAILED.
 */
START_TEST(test_wal_faults_fsync_eio_group_fails_sticky)
{
    for (uint64_t k = 1; k <= 2; k++) {
        char ctx[CTX_BYTES];
        snprintf(ctx, sizeof(ctx),
                 "sync=group plan=FAIL op=FSYNC nth=%" PRIu64
                 " err=KEEL_EIO (counted after 4 appends) keep=0",
                 k);
        fixture fx;
        fixture_start(&fx, ctx, KEEL_SYNC_GROUP, BIG_SEG_BYTES, 0x200 + k);
        keel_diag d = {0};
        uint64_t lsn = 0;
        for (int i = 0; i < 4; i++) {
            lsn = append_ok(ctx, fx.w, fx.m, 200, 0);
        }
        int rc = keel_wal_wait(fx.w, lsn, &d);
        EXPECT(rc == KEEL_OK, ctx, "wait: %s: %s", keel_err_name(rc), d.msg);
        arm(fx.f, KEEL_IO_FAULT_FAIL, KEEL_IO_OP_FSYNC, k, KEEL_EIO, 0);
        uint64_t durable = lsn;
        /* Batches of 3 appends and one wait: the k-th wait fails. */
        for (uint64_t b = 1; b <= k; b++) {
            for (int i = 0; i < 3; i++) {
                lsn = append_ok(ctx, fx.w, fx.m, 200, 0);
            }
            rc = keel_wal_wait(fx.w, lsn, &d);
            if (b < k) {
                EXPECT(rc == KEEL_OK, ctx, "wait of batch %" PRIu64 ": %s", b,
                       keel_err_name(rc));
                durable = lsn;
            }
        }
        EXPECT(rc == KEEL_EIO, ctx, "the failing wait returned %s: %s",
               keel_err_name(rc), d.msg);
        EXPECT(keel_wal_durable_lsn(fx.w) == durable, ctx,
               "durable LSN %" PRIu64 ", the last successful wait was "
               "for %" PRIu64,
               keel_wal_durable_lsn(fx.w), durable);
        expect_sticky(ctx, fx.w, KEEL_EIO, durable);
        fixture_stop(&fx, ctx, 1);

        keel_wal_open_info info;
        uint64_t last = reopen_and_check(ctx, fx.dir, fx.m, durable, 1,
                                         BIG_SEG_BYTES, 150, &info);
        EXPECT(last == durable, ctx,
               "after a power loss the log ends at LSN %" PRIu64
               ": only the %" PRIu64 " synced records may remain",
               last, durable);
        fixture_end(&fx);
    }
}
END_TEST

/* ---- ENOSPC and torn writes --------------------------------------------- */

/*
 * sync=full, after 3 good appends of 200-byte payloads (240-byte records):
 * the next pwrite fails with ENOSPC, writing nothing (torn == 0) or a prefix
 * of `torn` bytes. No power loss: the torn bytes stay in the file, as after
 * a process restart. The reader then sees records 1-3 and a torn tail of
 * those bytes right after record 3; a reopen truncates exactly that.
 */
START_TEST(test_wal_faults_pwrite_enospc_full_leaves_torn_tail)
{
    static const uint64_t torns[] = {0, 1, 17, 32, 100, 239};
    for (size_t t = 0; t < sizeof(torns) / sizeof(torns[0]); t++) {
        uint64_t torn = torns[t];
        enum keel_io_fault_kind kind =
            torn == 0 ? KEEL_IO_FAULT_FAIL : KEEL_IO_FAULT_SHORT_WRITE;
        char ctx[CTX_BYTES];
        snprintf(ctx, sizeof(ctx),
                 "sync=full plan=%s op=PWRITE nth=1 err=KEEL_ENOSPC "
                 "torn=%" PRIu64 " (counted after 3 appends)",
                 torn == 0 ? "FAIL" : "SHORT_WRITE", torn);
        fixture fx;
        fixture_start(&fx, ctx, KEEL_SYNC_FULL, BIG_SEG_BYTES, 0x300 + t);
        for (int i = 0; i < 3; i++) {
            append_ok(ctx, fx.w, fx.m, 200, 0);
        }
        arm(fx.f, kind, KEEL_IO_OP_PWRITE, 1, KEEL_ENOSPC, torn);
        keel_diag d = {0};
        uint64_t lsn = 0;
        int rc = append_rec(ctx, fx.w, fx.m, 200, 0, &lsn, &d);
        EXPECT(rc == KEEL_ENOSPC, ctx, "the failing append returned %s: %s",
               keel_err_name(rc), d.msg);
        expect_sticky(ctx, fx.w, KEEL_ENOSPC, 3);
        fixture_stop(&fx, ctx, 0);

        audit a;
        audit_log(ctx, fx.dir, fx.m, 3, 1, &a);
        EXPECT(a.last == 3, ctx, "the reader sees LSN %" PRIu64 ", not 3",
               a.last);
        EXPECT(a.tail.torn == (torn > 0) && a.tail.bytes == torn, ctx,
               "reader tail: torn %d, %" PRIu64 " bytes (%s)", a.tail.torn,
               a.tail.bytes, a.tail.reason);
        EXPECT(a.tail.offset == a.end &&
                   strcmp(a.tail.segment, a.last_segment) == 0,
               ctx,
               "reader tail at %s offset %" PRIu64
               ", record 3 ends in %s at %" PRIu64,
               a.tail.segment, a.tail.offset, a.last_segment, a.end);

        keel_wal_open_info info;
        uint64_t last = reopen_and_check(ctx, fx.dir, fx.m, 3, 1, BIG_SEG_BYTES,
                                         200, &info);
        EXPECT(last == 3, ctx, "reopen: last LSN %" PRIu64 ", not 3", last);
        EXPECT(info.torn == a.tail.torn, ctx,
               "reopen reported torn %d (%s), the reader %d", info.torn,
               info.torn_reason, a.tail.torn);
        EXPECT(!info.torn ||
                   (info.torn_bytes == torn && info.torn_offset == a.end &&
                    strcmp(info.torn_segment, a.tail.segment) == 0),
               ctx,
               "reopen truncated %s offset %" PRIu64 ", %" PRIu64
               " bytes (%s); expected %s offset %" PRIu64 ", %" PRIu64 " bytes",
               info.torn_segment, info.torn_offset, info.torn_bytes,
               info.torn_reason, a.tail.segment, a.end, torn);
        fixture_end(&fx);
    }
}
END_TEST

/*
 * sync=group: the syncer's pwrite of a batch of 3 records (720 bytes) fails
 * with ENOSPC, writing nothing or a prefix (one whole record and part of the
 * next, or part of the first). The error reaches the wait; whatever landed
 * is a torn tail or whole records with the right payloads.
 */
START_TEST(test_wal_faults_pwrite_enospc_group_fails_sticky)
{
    static const uint64_t torns[] = {0, 17, 340};
    for (size_t t = 0; t < sizeof(torns) / sizeof(torns[0]); t++) {
        uint64_t torn = torns[t];
        enum keel_io_fault_kind kind =
            torn == 0 ? KEEL_IO_FAULT_FAIL : KEEL_IO_FAULT_SHORT_WRITE;
        char ctx[CTX_BYTES];
        snprintf(ctx, sizeof(ctx),
                 "sync=group plan=%s op=PWRITE nth=1 err=KEEL_ENOSPC "
                 "torn=%" PRIu64 " (counted after 3 appends)",
                 torn == 0 ? "FAIL" : "SHORT_WRITE", torn);
        fixture fx;
        fixture_start(&fx, ctx, KEEL_SYNC_GROUP, BIG_SEG_BYTES, 0x400 + t);
        keel_diag d = {0};
        uint64_t lsn = 0;
        for (int i = 0; i < 3; i++) {
            lsn = append_ok(ctx, fx.w, fx.m, 200, 0);
        }
        int rc = keel_wal_wait(fx.w, lsn, &d);
        EXPECT(rc == KEEL_OK, ctx, "wait: %s: %s", keel_err_name(rc), d.msg);
        arm(fx.f, kind, KEEL_IO_OP_PWRITE, 1, KEEL_ENOSPC, torn);
        for (int i = 0; i < 3; i++) {
            lsn = append_ok(ctx, fx.w, fx.m, 200, 0);
        }
        rc = keel_wal_wait(fx.w, lsn, &d);
        EXPECT(rc == KEEL_ENOSPC, ctx, "the failing wait returned %s: %s",
               keel_err_name(rc), d.msg);
        expect_sticky(ctx, fx.w, KEEL_ENOSPC, 3);
        fixture_stop(&fx, ctx, 0);

        audit a;
        audit_log(ctx, fx.dir, fx.m, 3, 1, &a);
        uint64_t rec = REC_BYTES(200);
        uint64_t whole = 3 + torn / rec; /* records that landed entire */
        EXPECT(a.last == whole, ctx,
               "the reader sees up to LSN %" PRIu64 ", expected %" PRIu64,
               a.last, whole);
        EXPECT(a.tail.torn == (torn % rec != 0) && a.tail.bytes == torn % rec &&
                   a.tail.offset == a.end,
               ctx,
               "reader tail: torn %d, %" PRIu64 " bytes at %" PRIu64
               " (%s); expected %" PRIu64 " bytes at %" PRIu64,
               a.tail.torn, a.tail.bytes, a.tail.offset, a.tail.reason,
               torn % rec, a.end);

        keel_wal_open_info info;
        uint64_t last = reopen_and_check(ctx, fx.dir, fx.m, 3, 1, BIG_SEG_BYTES,
                                         200, &info);
        EXPECT(last == whole && info.torn == a.tail.torn, ctx,
               "reopen: last LSN %" PRIu64 ", torn %d; the reader saw %" PRIu64
               ", torn %d",
               last, info.torn, a.last, a.tail.torn);
        EXPECT(!info.torn || (info.torn_bytes == a.tail.bytes &&
                              info.torn_offset == a.tail.offset),
               ctx,
               "reopen truncated %" PRIu64 " bytes at %" PRIu64
               ", the reader saw %" PRIu64 " at %" PRIu64,
               info.torn_bytes, info.torn_offset, a.tail.bytes, a.tail.offset);
        fixture_end(&fx);
    }
}
END_TEST

/* ---- failures while creating a segment ---------------------------------- */

/* 300-byte payloads in 1024-byte segments: the third record rolls over. */
#define ROLL_SEG_BYTES 1024u
#define ROLL_PAYLOAD   300u

/* How many records fit in the first segment: the append after them makes
 * the writer create a second one (a RENAME is seen during it). */
static uint64_t records_before_rollover(void)
{
    const char *ctx = "sync=full no plan (finding the rollover)";
    fixture fx;
    fixture_start(&fx, ctx, KEEL_SYNC_FULL, ROLL_SEG_BYTES, 0x500);
    uint64_t renames = keel__io_fault_count(fx.f, KEEL_IO_OP_RENAME);
    uint64_t n = 0;
    while (keel__io_fault_count(fx.f, KEEL_IO_OP_RENAME) == renames) {
        EXPECT(n < 16, ctx, "no rollover after %" PRIu64 " appends", n);
        append_ok(ctx, fx.w, fx.m, ROLL_PAYLOAD, 0);
        n++;
    }
    fixture_end(&fx);
    return n - 1;
}

/*
 * Segment creation (open `.tmp`, write header, fdatasync, rename, fsync the
 * directory) fails at each of its steps. The append that needed the new
 * segment returns KEEL_EIO, the writer is FAILED, and a reopen (after a
 * restart or a power loss) finds exactly the records before it, no stale
 * `.tmp`, and rolls over correctly when appends continue.
 */
/* Creating the log's directory goes through the I/O table: a failed mkdir
 * refuses the open, naming the directory, and nothing is left behind. */
START_TEST(test_wal_faults_mkdir_failure_refuses_open)
{
    char *root = tu_tmpdir("walf-mkdir");
    char *dir = tu_path(root, "wal");
    keel_io_fault *f = tu_fault_failing(KEEL_IO_OP_MKDIR, 1, KEEL_ENOSPC);
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.io = keel__io_fault_io(f);
    keel_wal *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, NULL, &d), KEEL_ENOSPC);
    ck_assert_ptr_null(w);
    ck_assert_msg(strstr(d.msg, dir) != NULL && strstr(d.msg, "mkdir"), "%s",
                  d.msg);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_MKDIR), 1);
    ck_assert_int_ne(access(dir, F_OK), 0);
    /* the next try makes it */
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, NULL, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_MKDIR), 2);
    keel__io_fault_free(f);
    tu_rmrf(root);
    free(dir);
    free(root);
}
END_TEST

START_TEST(test_wal_faults_rollover_failure_fails_sticky)
{
    /* FSYNC 1 is the sync of the full segment before it is left, FSYNC 2
     * the new segment's header. */
    static const struct {
        enum keel_io_op op;
        uint64_t nth;
    } steps[] = {
        {KEEL_IO_OP_OPEN, 1},   {KEEL_IO_OP_PWRITE, 1},
        {KEEL_IO_OP_FSYNC, 1},  {KEEL_IO_OP_FSYNC, 2},
        {KEEL_IO_OP_RENAME, 1}, {KEEL_IO_OP_FSYNC_DIR, 1},
    };
    uint64_t fit = records_before_rollover();
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        for (int power_loss = 0; power_loss <= 1; power_loss++) {
            char ctx[CTX_BYTES];
            snprintf(ctx, sizeof(ctx),
                     "sync=full plan=FAIL op=%s nth=%" PRIu64
                     " err=KEEL_EIO (at the append of LSN %" PRIu64
                     ", which rolls over) %s",
                     op_name(steps[i].op), steps[i].nth, fit + 1,
                     power_loss ? "then power loss keep=0" : "then restart");
            fixture fx;
            fixture_start(&fx, ctx, KEEL_SYNC_FULL, ROLL_SEG_BYTES, 0x600 + i);
            for (uint64_t r = 0; r < fit; r++) {
                append_ok(ctx, fx.w, fx.m, ROLL_PAYLOAD, 0);
            }
            arm(fx.f, KEEL_IO_FAULT_FAIL, steps[i].op, steps[i].nth, KEEL_EIO,
                0);
            keel_diag d = {0};
            uint64_t lsn = 0;
            int rc = append_rec(ctx, fx.w, fx.m, ROLL_PAYLOAD, 0, &lsn, &d);
            EXPECT(rc == KEEL_EIO, ctx, "the rolling append returned %s: %s",
                   keel_err_name(rc), d.msg);
            EXPECT(keel__io_fault_count(fx.f, steps[i].op) >= steps[i].nth, ctx,
                   "the planned op never ran");
            expect_sticky(ctx, fx.w, KEEL_EIO, fit);
            fixture_stop(&fx, ctx, power_loss);

            keel_wal_open_info info;
            uint64_t last = reopen_and_check(
                ctx, fx.dir, fx.m, fit, 1, ROLL_SEG_BYTES, ROLL_PAYLOAD, &info);
            EXPECT(last == fit && !info.torn, ctx,
                   "reopen: last LSN %" PRIu64 " torn %d, expected %" PRIu64
                   " clean",
                   last, info.torn, fit);
            EXPECT(count_suffix(fx.dir, ".seg") >= 2, ctx,
                   "appends after the reopen did not roll over");
            fixture_end(&fx);
        }
    }
}
END_TEST

/* ---- the power-loss sweep ----------------------------------------------- */

/* What one run of the workload saw. */
typedef struct run_out {
    int err;                /* first error (KEEL_OK: none) */
    const char *where;      /* the call that returned it */
    uint64_t acked;         /* highest LSN a successful call made durable */
    uint64_t durable;       /* keel_wal_durable_lsn() before close, or the
                               last LSN if close succeeded */
    uint64_t retire_before; /* 0: retire never called */
    uint64_t removed;       /* segments retire removed */
} run_out;

static size_t sweep_len(uint64_t i)
{
    return i % 5 == 4 ? 700 : 1 + (size_t)((i * 97) % 400);
}

/*
 * The sweep's workload: open, SWEEP_APPENDS appends of varied sizes (every
 * fifth compressible) with a retire half-way, waits every third append
 * (GROUP) and a final sync, then close. Stops at the first error.
 */
static void workload(const char *ctx, const char *dir, keel_io *io, int sync,
                     model *m, run_out *out)
{
    memset(out, 0, sizeof(*out));
    keel_wal_options o;
    wal_opts(&o, io, sync, SWEEP_SEG_BYTES);
    keel_wal *w = NULL;
    keel_diag d = {0};
    int rc = keel_wal_open(dir, &o, &w, NULL, &d);
    if (rc < 0) {
        out->err = rc;
        out->where = "open";
        return;
    }
    for (uint64_t i = 0; i < SWEEP_APPENDS; i++) {
        uint64_t lsn = 0;
        rc = append_rec(ctx, w, m, sweep_len(i), i % 5 == 4, &lsn, &d);
        out->where = "append";
        if (rc == KEEL_OK && sync == KEEL_SYNC_FULL) {
            out->acked = lsn;
        }
        if (rc == KEEL_OK && sync == KEEL_SYNC_GROUP && i % 3 == 2) {
            rc = keel_wal_wait(w, lsn, &d);
            out->where = "wait";
            if (rc == KEEL_OK) {
                out->acked = lsn;
            }
        }
        if (rc == KEEL_OK && i == SWEEP_APPENDS / 2) {
            out->retire_before = lsn;
            rc = keel_wal_retire(w, lsn, &out->removed, &d);
            out->where = "retire";
        }
        if (rc < 0) {
            break;
        }
    }
    if (rc == KEEL_OK) {
        rc = keel_wal_sync(w, &d);
        out->where = "sync";
        if (rc == KEEL_OK) {
            out->acked = keel_wal_last_lsn(w);
        }
    }
    out->err = rc;
    out->durable = keel_wal_durable_lsn(w);
    uint64_t last = keel_wal_last_lsn(w);
    EXPECT(out->durable >= out->acked && out->durable <= last, ctx,
           "durable LSN %" PRIu64 ", acknowledged %" PRIu64
           ", last appended %" PRIu64,
           out->durable, out->acked, last);
    int crc = keel_wal_close(w, &d);
    if (crc == KEEL_OK && rc == KEEL_OK) {
        /* close synced whatever was pending. */
        out->durable = last;
    }
    if (rc == KEEL_OK) {
        out->err = crc;
        out->where = "close";
    }
}

/* LSN before which every retained record was retired (1: none). */
static uint64_t first_max(const run_out *r)
{
    return r->retire_before > 0 ? r->retire_before : 1;
}

/* Run the workload clean; @return the number of I/O ops it makes. */
static uint64_t sweep_calibrate(int sync)
{
    char ctx[CTX_BYTES];
    snprintf(ctx, sizeof(ctx), "sync=%s no plan (counting ops)",
             keel_sync_name(sync));
    char *root = scratch_dir();
    char *dir = tu_path(root, "wal");
    model *m = model_new(SEED_SWEEP);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    run_out r;
    workload(ctx, dir, keel__io_fault_io(f), sync, m, &r);
    EXPECT(r.err == KEEL_OK, ctx, "clean workload: %s at %s",
           keel_err_name(r.err), r.where);
    /* Two, so that the order in which retire deletes them matters. */
    EXPECT(r.removed >= 2, ctx, "retire removed %" PRIu64 " segments",
           r.removed);
    EXPECT(keel__io_fault_count(f, KEEL_IO_OP_RENAME) >= 4, ctx,
           "the workload made only %" PRIu64 " segments",
           keel__io_fault_count(f, KEEL_IO_OP_RENAME));
    uint64_t total = keel__io_fault_count(f, KEEL_IO_OP_ANY);
    keel__io_fault_free(f);
    audit a;
    audit_log(ctx, dir, m, SWEEP_APPENDS, first_max(&r), &a);
    EXPECT(a.last == SWEEP_APPENDS && !a.tail.torn, ctx,
           "clean log ends at %" PRIu64 " (torn %d)", a.last, a.tail.torn);
    model_free(m);
    tu_rmrf(root);
    free(root);
    free(dir);
    return total;
}

/*
 * A process crash without power loss: the page cache keeps every write.
 * Reopen through the same layer (whose unsynced bytes stay unsynced), as a
 * restarted process would, and close again without appending: an append's
 * fdatasync would make durable, by the way, bytes that the reopen called
 * durable without syncing. Everything the reopened writer calls durable
 * must survive the power loss that follows. @return its durable LSN.
 */
static uint64_t restart(const char *ctx, const char *dir, keel_io_fault *f,
                        model *m, uint64_t durable)
{
    keel__io_fault_set_plan(f, NULL);
    keel__io_fault_reset_counts(f);
    keel_wal_options o;
    wal_opts(&o, keel__io_fault_io(f), KEEL_SYNC_FULL, SWEEP_SEG_BYTES);
    keel_wal *w = NULL;
    keel_wal_open_info info;
    keel_diag d = {0};
    int rc = keel_wal_open(dir, &o, &w, &info, &d);
    EXPECT(rc == KEEL_OK, ctx, "restart: %s: %s", keel_err_name(rc), d.msg);
    EXPECT(info.last_lsn >= durable, ctx,
           "restart finds LSN %" PRIu64 ", %" PRIu64 " was durable",
           info.last_lsn, durable);
    uint64_t d2 = keel_wal_durable_lsn(w);
    EXPECT(d2 == info.last_lsn, ctx,
           "after the restart durable LSN is %" PRIu64 ", last %" PRIu64, d2,
           info.last_lsn);
    rc = keel_wal_close(w, &d);
    EXPECT(rc == KEEL_OK, ctx, "close after restart: %s: %s", keel_err_name(rc),
           d.msg);
    return d2;
}

/* What follows the crash. */
enum after_crash {
    POWER_LOSS,         /* power lost at once, keeping `keep` bytes */
    RESTART_POWER_LOSS, /* restart(), then power lost, keeping nothing */
};

/*
 * One crash point: run the workload with the crash planned at op k, then
 * lose power (at once, or after a restart), then reopen and check
 * (reopen_and_check): every record reported durable is there with its
 * payload, nothing has a payload other than the one appended, appends go
 * on.
 */
static void sweep_one(int sync, enum keel_io_fault_kind crash, uint64_t k,
                      uint64_t total, enum after_crash then, uint64_t keep,
                      uint64_t seed)
{
    char ctx[CTX_BYTES];
    snprintf(
        ctx, sizeof(ctx),
        "sync=%s plan=%s op=ANY nth=%" PRIu64 " (of %" PRIu64
        ")%s keep=%" PRIu64 " seed=0x%016" PRIx64,
        keel_sync_name(sync),
        crash == KEEL_IO_FAULT_CRASH_BEFORE ? "CRASH_BEFORE" : "CRASH_AFTER", k,
        total, then == RESTART_POWER_LOSS ? " then restart" : "", keep, seed);
    char *root = scratch_dir();
    char *dir = tu_path(root, "wal");
    model *m = model_new(SEED_SWEEP);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel_io_fault_plan p = {.kind = crash, .op = KEEL_IO_OP_ANY, .nth = k};
    keel__io_fault_set_plan(f, &p);

    run_out r;
    workload(ctx, dir, keel__io_fault_io(f), sync, m, &r);
    /* Under FULL every op is made by this thread in a fixed order; under
     * GROUP the syncer's ops are ordered by the waits (its window is far
     * longer than the test). Either way op k exists and the crash fires. */
    EXPECT(keel__io_fault_crashed(f), ctx, "the crash never fired");
    EXPECT(r.err == KEEL_OK || r.err == KEEL_EIO ||
               (sync == KEEL_SYNC_GROUP && r.err == KEEL_EFAILED),
           ctx, "the workload stopped with %s at %s", keel_err_name(r.err),
           r.where);
    uint64_t durable = r.durable;
    if (then == RESTART_POWER_LOSS) {
        durable = restart(ctx, dir, f, m, durable);
    }
    int rc = keel__io_fault_power_loss(f, keep);
    EXPECT(rc == KEEL_OK, ctx, "power loss: %s", keel_err_name(rc));
    keel__io_fault_free(f);

    keel_wal_open_info info;
    reopen_and_check(ctx, dir, m, durable, first_max(&r), SWEEP_SEG_BYTES, 90,
                     &info);
    model_free(m);
    tu_rmrf(root);
    free(root);
    free(dir);
}

/* Every crash point of the workload: power lost keeping no unsynced byte,
 * then SWEEP_TORN_KEEPS random torn prefixes, then after a restart. */
static void sweep(int sync, enum keel_io_fault_kind crash)
{
    uint64_t total = sweep_calibrate(sync);
    uint64_t base = base_seed(SEED_SWEEP);
    for (uint64_t k = 1; k <= total; k++) {
        sweep_one(sync, crash, k, total, POWER_LOSS, 0, base);
        for (int t = 0; t < SWEEP_TORN_KEEPS; t++) {
            uint64_t seed = base ^ (k << 32) ^ ((uint64_t)crash << 24) ^
                            ((uint64_t)sync << 16) ^ (uint64_t)t;
            uint64_t st = seed;
            uint64_t keep = 1 + tu_rand(&st) % TORN_KEEP_MAX;
            sweep_one(sync, crash, k, total, POWER_LOSS, keep, seed);
        }
        sweep_one(sync, crash, k, total, RESTART_POWER_LOSS, 0, base);
    }
}

START_TEST(test_wal_faults_crash_before_full_keeps_durable)
{
    sweep(KEEL_SYNC_FULL, KEEL_IO_FAULT_CRASH_BEFORE);
}
END_TEST

START_TEST(test_wal_faults_crash_after_full_keeps_durable)
{
    sweep(KEEL_SYNC_FULL, KEEL_IO_FAULT_CRASH_AFTER);
}
END_TEST

START_TEST(test_wal_faults_crash_before_group_keeps_durable)
{
    sweep(KEEL_SYNC_GROUP, KEEL_IO_FAULT_CRASH_BEFORE);
}
END_TEST

START_TEST(test_wal_faults_crash_after_group_keeps_durable)
{
    sweep(KEEL_SYNC_GROUP, KEEL_IO_FAULT_CRASH_AFTER);
}
END_TEST

/* ---- bit flips in reads ------------------------------------------------- */

#define FLIP_RECORDS 12u

/* A clean log of FLIP_RECORDS records over 2+ segments, some compressed. */
static void flip_template(const char *dir, model *m)
{
    const char *ctx = "sync=full no plan (building the flip template)";
    keel_wal_options o;
    wal_opts(&o, NULL, KEEL_SYNC_FULL, 2048);
    keel_wal *w = NULL;
    keel_diag d = {0};
    int rc = keel_wal_open(dir, &o, &w, NULL, &d);
    EXPECT(rc == KEEL_OK, ctx, "open: %s: %s", keel_err_name(rc), d.msg);
    for (uint64_t i = 0; i < FLIP_RECORDS; i++) {
        append_ok(ctx, w, m, sweep_len(i), i % 5 == 4);
    }
    rc = keel_wal_close(w, &d);
    EXPECT(rc == KEEL_OK, ctx, "close: %s: %s", keel_err_name(rc), d.msg);
    EXPECT(count_suffix(dir, ".seg") >= 2, ctx, "only one segment");
}

/*
 * Read the log in dir through io. Records returned must be the appended
 * ones, in order; the end is an error (corruption seen: ECORRUPT or
 * EVERSION) or a clean/torn end. A single flipped bit can pass for a torn
 * tail only in the last record. @return records read.
 */
static uint64_t flip_read(const char *ctx, const char *dir, keel_io *io,
                          const model *m)
{
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.io = io;
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    uint64_t n = 0;
    int rc = keel_wal_reader_open(dir, &o, 0, &r, &d);
    if (rc == KEEL_OK) {
        keel_wal_record rec;
        while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
            n++;
            EXPECT(rec.lsn == n, ctx, "read LSN %" PRIu64 " as record %" PRIu64,
                   rec.lsn, n);
            check_record(ctx, m, &rec);
        }
    }
    if (rc == 0) {
        keel_wal_tail t;
        keel_wal_reader_tail(r, &t);
        EXPECT(n == FLIP_RECORDS || (n == FLIP_RECORDS - 1 && t.torn), ctx,
               "the reader ended after %" PRIu64 " of %u records (torn %d, "
               "%s) without an error",
               n, FLIP_RECORDS, t.torn, t.reason);
    } else {
        EXPECT(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION, ctx,
               "after %" PRIu64 " records: %s: %s", n, keel_err_name(rc),
               d.msg);
    }
    keel_wal_reader_close(r);
    return n;
}

/* The n-th pread of a reader returns one flipped bit: every bit position
 * is chosen from a seed. */
START_TEST(test_wal_faults_flip_read_reader_never_misreads)
{
    char *root = scratch_dir();
    char *dir = tu_path(root, "wal");
    model *m = model_new(SEED_FLIP);
    flip_template(dir, m);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    flip_read("no plan (counting preads)", dir, keel__io_fault_io(f), m);
    uint64_t preads = keel__io_fault_count(f, KEEL_IO_OP_PREAD);
    keel__io_fault_free(f);
    ck_assert_uint_ge(preads, 3);

    uint64_t base = base_seed(SEED_FLIP);
    for (uint64_t k = 1; k <= preads; k++) {
        for (uint64_t j = 0; j < FLIPS_PER_READ; j++) {
            uint64_t seed = base ^ (k << 32) ^ j;
            uint64_t st = seed;
            uint64_t bit = tu_rand(&st) % (8u << 20);
            char ctx[CTX_BYTES];
            snprintf(ctx, sizeof(ctx),
                     "reader plan=FLIP_READ op=PREAD nth=%" PRIu64
                     " flip_bit=%" PRIu64 " seed=0x%016" PRIx64,
                     k, bit, seed);
            ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
            keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FLIP_READ,
                                    .op = KEEL_IO_OP_PREAD,
                                    .nth = k,
                                    .flip_bit = bit};
            keel__io_fault_set_plan(f, &p);
            /* Every byte a pread returns belongs to a segment header or a
             * record, both checksummed: no flip may go unnoticed. */
            uint64_t n = flip_read(ctx, dir, keel__io_fault_io(f), m);
            EXPECT(n < FLIP_RECORDS, ctx, "all %" PRIu64 " records read", n);
            keel__io_fault_free(f);
        }
    }
    model_free(m);
    tu_rmrf(root);
    free(root);
    free(dir);
}
END_TEST

/*
 * The n-th pread made while a writer opens the log returns one flipped
 * bit. The open fails (and changes nothing), or succeeds having dropped at
 * most the last record as a torn tail; either way the log read afterwards
 * with clean I/O holds correct records only, and the writer agrees with it.
 */
START_TEST(test_wal_faults_flip_read_open_never_misreads)
{
    char *root = scratch_dir();
    char *tmpl = tu_path(root, "template");
    model *m = model_new(SEED_FLIP);
    flip_template(tmpl, m);
    keel_wal_options o;
    keel_io_fault *f = NULL;
    keel_wal *w = NULL;
    keel_diag d = {0};

    char *dir = tu_path(root, "count");
    tu_copy_dir(tmpl, dir);
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    wal_opts(&o, keel__io_fault_io(f), KEEL_SYNC_FULL, 2048);
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, NULL, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    uint64_t preads = keel__io_fault_count(f, KEEL_IO_OP_PREAD);
    keel__io_fault_free(f);
    ck_assert_uint_ge(preads, 3);
    tu_rmrf(dir);
    free(dir);

    uint64_t base = base_seed(SEED_FLIP) ^ 0x5a5a5a5a5a5a5a5aull;
    uint64_t flips = FLIPS_PER_READ / 4;
    for (uint64_t k = 1; k <= preads; k++) {
        for (uint64_t j = 0; j < flips; j++) {
            uint64_t seed = base ^ (k << 32) ^ j;
            uint64_t st = seed;
            uint64_t bit = tu_rand(&st) % (8u << 20);
            char ctx[CTX_BYTES];
            snprintf(ctx, sizeof(ctx),
                     "writer open plan=FLIP_READ op=PREAD nth=%" PRIu64
                     " flip_bit=%" PRIu64 " seed=0x%016" PRIx64,
                     k, bit, seed);
            char name[64];
            snprintf(name, sizeof(name), "run-%" PRIu64 "-%" PRIu64, k, j);
            dir = tu_path(root, name);
            tu_copy_dir(tmpl, dir);
            ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
            keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FLIP_READ,
                                    .op = KEEL_IO_OP_PREAD,
                                    .nth = k,
                                    .flip_bit = bit};
            keel__io_fault_set_plan(f, &p);
            wal_opts(&o, keel__io_fault_io(f), KEEL_SYNC_FULL, 2048);
            keel_wal_open_info info;
            int rc = keel_wal_open(dir, &o, &w, &info, &d);
            uint64_t want = FLIP_RECORDS;
            if (rc == KEEL_OK) {
                want = info.last_lsn;
                /* A torn tail is read twice before anything is truncated,
                 * so one bad read can no longer cost a durable record. */
                EXPECT(want == FLIP_RECORDS, ctx,
                       "open succeeded with %" PRIu64 " of %u records "
                       "(torn %d at %s offset %" PRIu64 ": %s)",
                       want, FLIP_RECORDS, info.torn, info.torn_segment,
                       info.torn_offset, info.torn_reason);
                rc = keel_wal_close(w, &d);
                EXPECT(rc == KEEL_OK, ctx, "close: %s: %s", keel_err_name(rc),
                       d.msg);
            } else {
                EXPECT(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION ||
                           (rc == KEEL_EIO && strstr(d.msg, "disagree")),
                       ctx, "open: %s: %s", keel_err_name(rc), d.msg);
            }
            keel__io_fault_free(f);
            audit a;
            audit_log(ctx, dir, m, want, 1, &a);
            EXPECT(a.last == want && !a.tail.torn, ctx,
                   "after the open the log ends at LSN %" PRIu64
                   " (torn %d), expected %" PRIu64,
                   a.last, a.tail.torn, want);
            tu_rmrf(dir);
            free(dir);
        }
    }
    model_free(m);
    tu_rmrf(root);
    free(root);
    free(tmpl);
}
END_TEST

Suite *wal_faults_suite(void)
{
    Suite *s = suite_create("wal_faults");
    TCase *tc = tcase_create("sticky");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_wal_faults_fsync_eio_full_fails_sticky);
    tcase_add_test(tc, test_wal_faults_fsync_eio_group_fails_sticky);
    tcase_add_test(tc, test_wal_faults_pwrite_enospc_full_leaves_torn_tail);
    tcase_add_test(tc, test_wal_faults_pwrite_enospc_group_fails_sticky);
    tcase_add_test(tc, test_wal_faults_mkdir_failure_refuses_open);
    tcase_add_test(tc, test_wal_faults_rollover_failure_fails_sticky);
    suite_add_tcase(s, tc);

    tc = tcase_create("power_loss");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_wal_faults_crash_before_full_keeps_durable);
    tcase_add_test(tc, test_wal_faults_crash_after_full_keeps_durable);
    tcase_add_test(tc, test_wal_faults_crash_before_group_keeps_durable);
    tcase_add_test(tc, test_wal_faults_crash_after_group_keeps_durable);
    suite_add_tcase(s, tc);

    tc = tcase_create("flip_read");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_wal_faults_flip_read_reader_never_misreads);
    tcase_add_test(tc, test_wal_faults_flip_read_open_never_misreads);
    suite_add_tcase(s, tc);
    return s;
}
