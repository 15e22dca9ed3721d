/*
 * tests/test_wal.c — the WAL's behaviour through its public API
 * (include/keel/wal.h): round trips of many record sizes across segment
 * rollover and reopen, the three sync policies, a torn tail at every byte of
 * the last record, segment retirement, argument validation, kernel ids and
 * stale temporary files. Damage to the bytes on disk, one kind per test, is
 * in test_wal_damage.c.
 *
 * Every record written is kept in a model (kind, crank, payload); a check
 * reads the log back with a reader and compares it with the model field by
 * field, and walks the segment files to confirm the layout of
 * wal/wal_format.h (offsets, names, checksums) independently of the reader.
 */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "keel/keel.h"
#include "tests/testutil.h"
#include "wal/wal_format.h"

Suite *wal_suite(void);

/* Fixed seeds keep failures reproducible; every message that can follow
 * from random data prints the seed. */
#define SEED_ROUND_TRIP 0x6b65656c77616c01ull
#define SEED_TORN       0x6b65656c77616c02ull

/* One record as the test wrote it. */
typedef struct rec_model {
    uint64_t lsn;
    uint64_t crank;
    int kind;
    uint8_t *payload;
    size_t len;
    int zstd; /* expected: 1 stored zstd-compressed, 0 stored as is */
} rec_model;

typedef struct log_model {
    rec_model *recs;
    size_t n;
    size_t cap;
    uint64_t seed;
} log_model;

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Compressible payloads repeat a short text; incompressible ones are PRNG
 * output. Both depend on seed so that no two records are equal. */
static void fill_payload(uint8_t *buf, size_t len, uint64_t seed,
                         int compressible)
{
    uint64_t st = seed;
    for (size_t i = 0; i < len; i++) {
        if (compressible) {
            buf[i] = (uint8_t)("keel wal record "[i % 16] + (seed & 7));
        } else {
            if (i % 8 == 0) {
                st = tu_rand(&st);
            }
            buf[i] = (uint8_t)(st >> (8 * (i % 8)));
        }
    }
}

static void model_push(log_model *m, uint64_t crank, int kind, const uint8_t *p,
                       size_t len, int zstd)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->recs = realloc(m->recs, m->cap * sizeof(*m->recs));
        ck_assert_ptr_nonnull(m->recs);
    }
    rec_model *r = &m->recs[m->n];
    r->lsn = m->n + 1;
    r->crank = crank;
    r->kind = kind;
    r->payload = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(r->payload);
    if (len > 0) {
        memcpy(r->payload, p, len);
    }
    r->len = len;
    r->zstd = zstd;
    m->n++;
}

static void model_free(log_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->recs[i].payload);
    }
    free(m->recs);
    memset(m, 0, sizeof(*m));
}

static keel_wal *open_ok(const char *dir, const keel_wal_options *o,
                         keel_wal_open_info *info)
{
    keel_wal *w = NULL;
    keel_diag d = {0};
    int rc = keel_wal_open(dir, o, &w, info, &d);
    ck_assert_msg(rc == KEEL_OK, "keel_wal_open %s: %s: %s", dir,
                  keel_err_name(rc), d.msg);
    ck_assert_ptr_nonnull(w);
    return w;
}

static void close_ok(keel_wal *w)
{
    keel_diag d = {0};
    int rc = keel_wal_close(w, &d);
    ck_assert_msg(rc == KEEL_OK, "keel_wal_close: %s: %s", keel_err_name(rc),
                  d.msg);
}

/*
 * Append a record of len bytes (payload derived from the model's seed and
 * the LSN) and add it to the model. zstd is the expected compression flag
 * for the writer's compress_min_bytes. @return its LSN.
 */
static uint64_t append_one(keel_wal *w, log_model *m, int kind, uint64_t crank,
                           size_t len, int compressible, int zstd)
{
    uint8_t *p = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(p);
    fill_payload(p, len, m->seed ^ (m->n + 1) * 0x9E3779B97F4A7C15ull,
                 compressible);
    uint64_t lsn = 0;
    keel_diag d = {0};
    int rc = keel_wal_append(w, kind, crank, p, len, &lsn, &d);
    ck_assert_msg(rc == KEEL_OK, "seed 0x%" PRIx64 ": append %zu bytes: %s: %s",
                  m->seed, len, keel_err_name(rc), d.msg);
    ck_assert_msg(lsn == m->n + 1,
                  "seed 0x%" PRIx64 ": append returned LSN %" PRIu64
                  ", expected %zu",
                  m->seed, lsn, m->n + 1);
    ck_assert_uint_eq(keel_wal_last_lsn(w), lsn);
    model_push(m, crank, kind, p, len, zstd);
    free(p);
    return lsn;
}

static void check_rec(const keel_wal_record *rec, const rec_model *want,
                      uint64_t seed)
{
    ck_assert_msg(rec->lsn == want->lsn,
                  "seed 0x%" PRIx64 ": read LSN %" PRIu64 ", expected %" PRIu64,
                  seed, rec->lsn, want->lsn);
    ck_assert_msg(rec->crank == want->crank && rec->kind == want->kind,
                  "seed 0x%" PRIx64 ": LSN %" PRIu64 ": crank %" PRIu64
                  " kind %d, expected %" PRIu64 " %d",
                  seed, rec->lsn, rec->crank, rec->kind, want->crank,
                  want->kind);
    ck_assert_msg(rec->payload.len == want->len,
                  "seed 0x%" PRIx64 ": LSN %" PRIu64
                  ": %zu bytes, expected %zu",
                  seed, rec->lsn, rec->payload.len, want->len);
    ck_assert_msg(want->len == 0 ||
                      memcmp(rec->payload.ptr, want->payload, want->len) == 0,
                  "seed 0x%" PRIx64 ": LSN %" PRIu64 ": payload differs", seed,
                  rec->lsn);
    if (want->zstd) {
        ck_assert_msg(rec->flags == KEEL_WAL_FLAG_ZSTD &&
                          rec->stored_len < want->len,
                      "LSN %" PRIu64 ": %zu compressible bytes stored as %u "
                      "(flags %u)",
                      rec->lsn, want->len, rec->stored_len, rec->flags);
    } else {
        ck_assert_msg(rec->flags == 0 && rec->stored_len == want->len,
                      "LSN %" PRIu64 ": %zu bytes stored as %u (flags %u)",
                      rec->lsn, want->len, rec->stored_len, rec->flags);
    }
}

/*
 * Read the log in dir from from_lsn and compare with recs[first - 1 ..
 * n - 1] (recs[i] has LSN i + 1); the end must be clean at LSN n.
 */
static void check_recs(const char *dir, const rec_model *recs, size_t n,
                       uint64_t from, uint64_t first, uint64_t seed)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    int rc = keel_wal_reader_open(dir, NULL, from, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "reader_open %s from %" PRIu64 ": %s: %s", dir,
                  from, keel_err_name(rc), d.msg);
    keel_wal_record rec;
    uint64_t want = first;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_msg(want <= n,
                      "seed 0x%" PRIx64 ": from %" PRIu64
                      ": extra record LSN %" PRIu64,
                      seed, from, rec.lsn);
        check_rec(&rec, &recs[want - 1], seed);
        want++;
    }
    ck_assert_msg(rc == 0, "seed 0x%" PRIx64 ": from %" PRIu64 ": %s: %s", seed,
                  from, keel_err_name(rc), d.msg);
    ck_assert_msg(want == n + 1,
                  "seed 0x%" PRIx64 ": from %" PRIu64
                  ": log ended at LSN %" PRIu64 ", expected %zu",
                  seed, from, want - 1, n);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    ck_assert_int_eq(t.torn, 0);
    ck_assert_uint_eq(t.bytes, 0);
    ck_assert_uint_eq(t.last_lsn, n);
    keel_wal_reader_close(r);
}

static void check_log(const char *dir, const log_model *m, uint64_t from,
                      uint64_t first)
{
    check_recs(dir, m->recs, m->n, from, first, m->seed);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of the files in dir whose names end with suffix
 * (NULL-terminated, malloc'd; free with free_names). */
static char **list_names(const char *dir, const char *suffix, size_t *count)
{
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(*v));
    ck_assert_ptr_nonnull(v);
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(dh)) != NULL) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < sl ||
            strcmp(e->d_name + l - sl, suffix) != 0) {
            continue;
        }
        if (n + 1 >= cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(*v));
            ck_assert_ptr_nonnull(v);
        }
        v[n++] = strdup(e->d_name);
    }
    closedir(dh);
    qsort(v, n, sizeof(*v), cmp_str);
    v[n] = NULL;
    *count = n;
    return v;
}

static void free_names(char **v)
{
    for (size_t i = 0; v[i] != NULL; i++) {
        free(v[i]);
    }
    free(v);
}

static size_t count_segments(const char *dir)
{
    size_t n = 0;
    free_names(list_names(dir, ".seg", &n));
    return n;
}

static uint64_t file_size(const char *dir, const char *name)
{
    char *p = tu_path(dir, name);
    struct stat st;
    ck_assert_msg(stat(p, &st) == 0, "stat %s", p);
    free(p);
    return (uint64_t)st.st_size;
}

/*
 * Walk the log with a reader and the segment files byte by byte and check
 * the layout of wal_format.h: each segment is named after its first LSN and
 * its header says so (with kernel id kid); records follow each other from
 * offset 40 with no gap; each one's magic, LSN, length and xxh3 trailer are
 * where the format puts them; non-final segments end exactly after their
 * last record; a segment larger than seg_bytes holds a single record; every
 * segment file is visited. @return the number of segments.
 */
static size_t check_layout(const char *dir, uint64_t seg_bytes, uint64_t kid)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    int rc = keel_wal_reader_open(dir, NULL, 0, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "%s", d.msg);
    char cur[64] = "";
    uint8_t *buf = NULL;
    size_t len = 0, segs = 0, in_seg = 0;
    uint64_t end = 0, salt = 0;
    keel_wal_record rec;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        if (strcmp(rec.segment, cur) != 0) {
            ck_assert_msg(buf == NULL || end == len,
                          "%s: %zu bytes, records end at %" PRIu64, cur, len,
                          end);
            ck_assert(buf == NULL || len <= seg_bytes || in_seg == 1);
            free(buf);
            char name[KEEL_WAL_SEG_NAME_BYTES];
            keel__wal_seg_name(name, rec.lsn);
            ck_assert_str_eq(rec.segment, name);
            snprintf(cur, sizeof(cur), "%s", rec.segment);
            char *p = tu_path(dir, cur);
            buf = tu_read_file(p, &len);
            free(p);
            ck_assert_ptr_nonnull(buf);
            keel_wal_seg_header h;
            char why[160];
            ck_assert_int_eq(keel__wal_seg_decode(buf, &h, why, sizeof(why)),
                             KEEL_OK);
            ck_assert_uint_eq(h.first_lsn, rec.lsn);
            ck_assert_uint_eq(h.kernel_id, kid);
            /* W10: one salt for every segment of the log */
            ck_assert(segs == 0 || h.salt == salt);
            salt = h.salt;
            end = KEEL_WAL_SEG_HEADER_BYTES;
            segs++;
            in_seg = 0;
        }
        ck_assert_uint_eq(rec.offset, end);
        ck_assert_uint_le(end + KEEL_WAL_REC_OVERHEAD_BYTES + rec.stored_len,
                          len);
        const uint8_t *p = buf + end;
        ck_assert_uint_eq(get_u32(p), KEEL_WAL_REC_MAGIC);
        ck_assert_uint_eq(p[4], (unsigned)rec.kind);
        ck_assert_uint_eq(p[5], rec.flags);
        ck_assert_uint_eq(get_u64(p + 8), rec.lsn);
        ck_assert_uint_eq(get_u64(p + 16), rec.crank);
        ck_assert_uint_eq(get_u32(p + 24), rec.stored_len);
        ck_assert_uint_eq(get_u32(p + 28), rec.payload.len);
        uint64_t sum =
            XXH3_64bits_withSeed(p, 32 + (size_t)rec.stored_len, salt);
        ck_assert_uint_eq(get_u64(p + 32 + rec.stored_len), sum);
        ck_assert_uint_eq(rec.checksum, sum);
        end += KEEL_WAL_REC_OVERHEAD_BYTES + rec.stored_len;
        in_seg++;
    }
    ck_assert_msg(rc == 0, "%s", d.msg);
    ck_assert(buf == NULL || len <= seg_bytes || in_seg == 1);
    free(buf);
    keel_wal_reader_close(r);
    ck_assert_uint_eq(segs, count_segments(dir));
    return segs;
}

/* ---- round trip --------------------------------------------------------- */

START_TEST(test_wal_round_trip_many_sizes_reads_back_exactly)
{
    static const struct {
        size_t len;
        int compressible;
        int zstd;
    } sizes[] = {
        {0, 0, 0},       {1, 0, 0},       {2, 1, 0},     {31, 0, 0},
        {255, 0, 0},     {256, 1, 0},     {4095, 1, 0},  {4095, 0, 0},
        {4096, 1, 1},    {4096, 0, 0},    {4097, 1, 1},  {10000, 0, 0},
        {10000, 1, 1},   {65535, 0, 0},   {65536, 1, 1}, {200000, 0, 0},
        {1 << 20, 1, 1}, {1 << 20, 0, 0}, {0, 0, 0},     {(1 << 20) - 1, 0, 0},
        {3, 0, 0},
    };
    log_model m = {.seed = SEED_ROUND_TRIP};
    uint64_t rnd = m.seed;
    char *dir = tu_tmpdir("wal-rt");
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.segment_bytes = 64 * 1024;
    keel_wal_open_info info;
    keel_wal *w = open_ok(dir, &o, &info);
    uint64_t kid = keel_wal_kernel_id(w);
    ck_assert_uint_ne(kid, 0);
    ck_assert_uint_eq(info.kernel_id, kid);
    ck_assert_uint_eq(info.last_lsn, 0);
    ck_assert_int_eq(info.torn, 0);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        append_one(w, &m, 1 + (int)(i % 4), 1000 + i, sizes[i].len,
                   sizes[i].compressible, sizes[i].zstd);
    }
    /* Many small records: dozens of rollovers at 64 KiB. */
    for (int i = 0; i < 300; i++) {
        uint64_t x = tu_rand(&rnd);
        size_t len = (size_t)(x % 3000);
        append_one(w, &m, 1 + (int)((x >> 32) % 4), x >> 40, len,
                   (int)(x >> 20) & 1, 0);
    }
    close_ok(w);
    check_log(dir, &m, 0, 1);
    size_t segs = check_layout(dir, o.segment_bytes, kid);
    ck_assert_uint_gt(segs, 10);

    /* Reopen for writing (another policy, the same log) and append more. */
    o.sync = KEEL_SYNC_GROUP;
    w = open_ok(dir, &o, &info);
    ck_assert_uint_eq(info.kernel_id, kid);
    ck_assert_uint_eq(info.first_lsn, 1);
    ck_assert_uint_eq(info.last_lsn, m.n);
    ck_assert_uint_eq(info.segments, segs);
    ck_assert_int_eq(info.torn, 0);
    ck_assert_uint_eq(keel_wal_last_lsn(w), m.n);
    for (int i = 0; i < 150; i++) {
        uint64_t x = tu_rand(&rnd);
        append_one(w, &m, 1 + (int)(x % 4), x >> 33, (size_t)(x >> 50) % 2500,
                   0, 0);
    }
    append_one(w, &m, KEEL_WAL_CHECKPOINT, 7, 1 << 20, 1, 1);
    append_one(w, &m, KEEL_WAL_CRANK, 8, 5, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, 1);
    segs = check_layout(dir, o.segment_bytes, kid);

    /* Reading from the middle: around every segment boundary and more. */
    size_t nn = 0;
    char **names = list_names(dir, ".seg", &nn);
    ck_assert_uint_eq(nn, segs);
    for (size_t i = 0; i < nn; i++) {
        uint64_t first = 0;
        ck_assert(keel__wal_seg_parse_name(names[i], &first));
        check_log(dir, &m, first, first);
        if (first > 1) {
            check_log(dir, &m, first - 1, first - 1);
        }
        if (first < m.n && i % 4 == 0) {
            check_log(dir, &m, first + 1, first + 1);
        }
    }
    free_names(names);
    check_log(dir, &m, 1, 1);
    check_log(dir, &m, m.n / 2, m.n / 2);
    check_log(dir, &m, m.n, m.n);
    check_log(dir, &m, m.n + 1, m.n + 1);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_wal_new_log_is_empty_and_clean)
{
    char *dir = tu_tmpdir("wal-new");
    keel_wal_open_info info;
    keel_wal *w = open_ok(dir, NULL, &info);
    ck_assert_uint_eq(keel_wal_last_lsn(w), 0);
    ck_assert_uint_eq(info.first_lsn, 0);
    ck_assert_uint_eq(info.last_lsn, 0);
    ck_assert_uint_eq(info.segments, 1);
    ck_assert_int_eq(info.torn, 0);
    close_ok(w);
    size_t n = 0;
    char **names = list_names(dir, ".seg", &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "00000000000000000001.seg");
    free_names(names);
    ck_assert_uint_eq(file_size(dir, "00000000000000000001.seg"),
                      KEEL_WAL_SEG_HEADER_BYTES);

    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 0, &r, &d), KEEL_OK);
    keel_wal_record rec;
    ck_assert_int_eq(keel_wal_reader_next(r, &rec, &d), 0);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    ck_assert_int_eq(t.torn, 0);
    ck_assert_uint_eq(t.last_lsn, 0);
    ck_assert_uint_eq(t.bytes, 0);
    ck_assert_uint_eq(t.offset, KEEL_WAL_SEG_HEADER_BYTES);
    ck_assert_str_eq(t.segment, "00000000000000000001.seg");
    keel_wal_reader_close(r);

    log_model m = {.seed = 1};
    w = open_ok(dir, NULL, &info);
    ck_assert_uint_eq(info.last_lsn, 0);
    append_one(w, &m, KEEL_WAL_KERNEL_OP, 0, 17, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, 1);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A restored state continues its log after the snapshot's LSN. */
START_TEST(test_wal_new_log_first_lsn_continues_numbering)
{
    char *dir = tu_tmpdir("wal-first");
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.first_lsn = 100;
    o.kernel_id = 0x1234;
    keel_wal_open_info info;
    keel_wal *w = open_ok(dir, &o, &info);
    ck_assert_uint_eq(keel_wal_last_lsn(w), 99);
    ck_assert_uint_eq(keel_wal_durable_lsn(w), 99);
    uint64_t lsn = 0;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, 7, "x", 1, &lsn, &d),
                     KEEL_OK);
    ck_assert_uint_eq(lsn, 100);
    close_ok(w);
    size_t n = 0;
    char **names = list_names(dir, ".seg", &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "00000000000000000100.seg");
    free_names(names);

    /* Reopened: the option is ignored for an existing log. */
    o.first_lsn = 1;
    w = open_ok(dir, &o, &info);
    ck_assert_uint_eq(info.first_lsn, 100);
    ck_assert_uint_eq(info.last_lsn, 100);
    ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, 8, "y", 1, &lsn, &d),
                     KEEL_OK);
    ck_assert_uint_eq(lsn, 101);
    close_ok(w);

    keel_wal_reader *r = NULL;
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 100, &r, &d), KEEL_OK);
    keel_wal_record rec;
    ck_assert_int_eq(keel_wal_reader_next(r, &rec, &d), 1);
    ck_assert_uint_eq(rec.lsn, 100);
    ck_assert_uint_eq(rec.crank, 7);
    ck_assert_int_eq(keel_wal_reader_next(r, &rec, &d), 1);
    ck_assert_uint_eq(rec.lsn, 101);
    ck_assert_int_eq(keel_wal_reader_next(r, &rec, &d), 0);
    keel_wal_reader_close(r);

    /* An empty log that starts after 1 reopens empty at the same place. */
    char *dir2 = tu_tmpdir("wal-first-empty");
    o.first_lsn = 42;
    w = open_ok(dir2, &o, &info);
    close_ok(w);
    w = open_ok(dir2, &o, &info);
    ck_assert_uint_eq(keel_wal_last_lsn(w), 41);
    close_ok(w);
    tu_rmrf(dir2);
    free(dir2);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- sync policies ------------------------------------------------------- */

START_TEST(test_wal_sync_policy_wait_makes_appends_durable)
{
    static const int policies[] = {KEEL_SYNC_FULL, KEEL_SYNC_GROUP,
                                   KEEL_SYNC_OFF};
    int policy = policies[_i];
    char *dir = tu_tmpdir("wal-sync");
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.sync = policy;
    o.group_max_records = 3;
    o.segment_bytes = 8192;
    log_model m = {.seed = 0x51ull + (uint64_t)_i};
    keel_wal *w = open_ok(dir, &o, NULL);
    keel_diag d = {0};
    for (int i = 0; i < 120; i++) {
        uint64_t lsn = append_one(w, &m, KEEL_WAL_CRANK, (uint64_t)i,
                                  (size_t)(i * 7 % 300), 0, 0);
        uint64_t durable = keel_wal_durable_lsn(w);
        ck_assert_uint_le(durable, lsn);
        if (policy == KEEL_SYNC_FULL) {
            ck_assert_uint_eq(durable, lsn);
        }
        if (i % 10 == 3) {
            ck_assert_int_eq(keel_wal_wait(w, lsn, &d), KEEL_OK);
            ck_assert_uint_ge(keel_wal_durable_lsn(w), lsn);
        }
        if (i % 25 == 24) {
            ck_assert_int_eq(keel_wal_sync(w, &d), KEEL_OK);
            ck_assert_uint_ge(keel_wal_durable_lsn(w), lsn);
        }
    }
    uint64_t last = keel_wal_last_lsn(w);
    ck_assert_uint_eq(last, 120);
    ck_assert_int_eq(keel_wal_wait(w, 17, &d), KEEL_OK);
    ck_assert_int_eq(keel_wal_wait(w, last, &d), KEEL_OK);
    ck_assert_uint_eq(keel_wal_durable_lsn(w), last);
    ck_assert_int_eq(keel_wal_sync(w, &d), KEEL_OK);

    memset(&d, 0, sizeof(d));
    ck_assert_int_eq(keel_wal_wait(w, last + 1, &d), KEEL_EINVAL);
    ck_assert_int_eq(d.code, KEEL_EINVAL);
    ck_assert_int_eq(keel_wal_wait(w, last + 1000, &d), KEEL_EINVAL);
    ck_assert_int_eq(keel_wal_failed(w), 0);
    /* A refused wait changes nothing: appending goes on. */
    append_one(w, &m, KEEL_WAL_OUT_OF_CRANK, 5, 40, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, 1);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- torn tails ---------------------------------------------------------- */

/* Where a record lies, for tests that damage computed offsets. */
typedef struct rec_pos {
    char segment[64];
    uint64_t offset;
    uint32_t stored_len;
} rec_pos;

/* The positions of the n records of the log in dir, into pos[0..n-1]. */
static void read_positions(const char *dir, rec_pos *pos, size_t n)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_reader_open(dir, NULL, 0, &r, &d), KEEL_OK);
    keel_wal_record rec;
    size_t i = 0;
    int rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_uint_lt(i, n);
        snprintf(pos[i].segment, sizeof(pos[i].segment), "%s", rec.segment);
        pos[i].offset = rec.offset;
        pos[i].stored_len = rec.stored_len;
        i++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(i, n);
    keel_wal_reader_close(r);
}

/*
 * dir holds recs[0..n-1] followed, in segment seg, by `garbage` bytes of
 * torn tail starting at `offset`. Check what the reader reports, then that
 * keel_wal_open() truncates exactly the garbage, that the next append gets
 * LSN n + 1 and lands right after the valid data, and that a reader and a
 * second writer then see the n records plus the new one.
 */
static void check_torn_then_reopen(const char *dir, const rec_model *recs,
                                   size_t n, const char *seg, uint64_t offset,
                                   uint64_t garbage, uint64_t seed)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    int rc = keel_wal_reader_open(dir, NULL, 0, &r, &d);
    ck_assert_msg(rc == KEEL_OK, "garbage %" PRIu64 ": %s", garbage, d.msg);
    keel_wal_record rec;
    size_t got = 0;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_msg(got < n, "garbage %" PRIu64 ": extra LSN %" PRIu64,
                      garbage, rec.lsn);
        check_rec(&rec, &recs[got], seed);
        got++;
    }
    ck_assert_msg(rc == 0, "garbage %" PRIu64 ": %s: %s", garbage,
                  keel_err_name(rc), d.msg);
    ck_assert_uint_eq(got, n);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    ck_assert_msg(t.torn == (garbage > 0), "garbage %" PRIu64 ": torn %d",
                  garbage, t.torn);
    ck_assert_str_eq(t.segment, seg);
    ck_assert_uint_eq(t.offset, offset);
    ck_assert_uint_eq(t.bytes, garbage);
    ck_assert_uint_eq(t.last_lsn, n);
    ck_assert(garbage == 0 || t.reason[0] != '\0');
    keel_wal_reader_close(r);
    ck_assert_uint_eq(file_size(dir, seg), offset + garbage);

    keel_wal_open_info info;
    memset(&info, 0xAB, sizeof(info));
    keel_wal *w = open_ok(dir, NULL, &info);
    ck_assert_int_eq(info.torn, garbage > 0);
    if (garbage > 0) {
        ck_assert_str_eq(info.torn_segment, seg);
        ck_assert_uint_eq(info.torn_offset, offset);
        ck_assert_uint_eq(info.torn_bytes, garbage);
        ck_assert(info.torn_reason[0] != '\0');
    }
    ck_assert_uint_eq(info.last_lsn, n);
    ck_assert_uint_eq(info.first_lsn, 1);
    ck_assert_uint_eq(keel_wal_last_lsn(w), n);
    ck_assert_uint_eq(file_size(dir, seg), offset);

    /* The new record must start at `offset`, not at the old physical end. */
    log_model m = {.seed = seed ^ garbage};
    for (size_t i = 0; i < n; i++) {
        model_push(&m, recs[i].crank, recs[i].kind, recs[i].payload,
                   recs[i].len, recs[i].zstd);
    }
    append_one(w, &m, KEEL_WAL_KERNEL_OP, 99, 24, 0, 0);
    close_ok(w);
    ck_assert_uint_eq(file_size(dir, seg),
                      offset + KEEL_WAL_REC_OVERHEAD_BYTES + 24);
    check_log(dir, &m, 0, 1);

    w = open_ok(dir, NULL, &info);
    ck_assert_int_eq(info.torn, 0);
    ck_assert_uint_eq(info.last_lsn, n + 1);
    close_ok(w);
    check_log(dir, &m, 0, 1);
    model_free(&m);
}

/*
 * Small logs in two segments (4 KiB rollover) whose last record has a
 * 100-byte payload. Layout 0: four records, the last segment holds a
 * 1500-byte record and then the last one. Layout 1: three records, the
 * first segment is nearly full, so the last record is alone in a segment
 * of its own and a cut at its start leaves a header-only segment.
 */
static const size_t small_logs[2][4] = {{1500, 1500, 1500, 100},
                                        {1000, 2900, 100, 0}};
static const size_t small_log_recs[2] = {4, 3};

static void build_small_log(const char *dir, log_model *m, int layout)
{
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.segment_bytes = 4096;
    keel_wal *w = open_ok(dir, &o, NULL);
    for (size_t i = 0; i < small_log_recs[layout]; i++) {
        append_one(w, m, 1 + (int)(i % 4), 1 + i, small_logs[layout][i], 0, 0);
    }
    close_ok(w);
    ck_assert_uint_eq(count_segments(dir), 2);
}

START_TEST(test_wal_torn_tail_at_every_offset_is_truncated)
{
    char *base = tu_tmpdir("wal-torn");
    char *root = tu_tmpdir("wal-torn-copies");
    log_model m = {.seed = SEED_TORN + (uint64_t)_i};
    build_small_log(base, &m, _i);
    size_t n = small_log_recs[_i];
    rec_pos pos[4];
    read_positions(base, pos, n);
    const rec_pos *last = &pos[n - 1];
    if (_i == 0) {
        ck_assert_str_eq(last->segment, pos[n - 2].segment);
        ck_assert_uint_eq(last->offset, pos[n - 2].offset +
                                            KEEL_WAL_REC_OVERHEAD_BYTES +
                                            pos[n - 2].stored_len);
    } else {
        ck_assert_str_ne(last->segment, pos[n - 2].segment);
        ck_assert_uint_eq(last->offset, KEEL_WAL_SEG_HEADER_BYTES);
    }
    char *segpath = tu_path(base, last->segment);
    size_t len = 0;
    uint8_t *bytes = tu_read_file(segpath, &len);
    ck_assert_uint_eq(len, last->offset + KEEL_WAL_REC_OVERHEAD_BYTES + 100);

    size_t checked = 0;
    for (size_t l = last->offset; l < len; l++) {
        char name[32];
        snprintf(name, sizeof(name), "L%zu", l);
        char *dir = tu_path(root, name);
        tu_copy_dir(base, dir);
        char *p = tu_path(dir, last->segment);
        tu_write_file(p, bytes, l);
        free(p);
        check_torn_then_reopen(dir, m.recs, n - 1, last->segment, last->offset,
                               l - last->offset, m.seed);
        tu_rmrf(dir);
        free(dir);
        checked++;
    }
    ck_assert_uint_eq(checked, KEEL_WAL_REC_OVERHEAD_BYTES + 100);
    free(bytes);
    free(segpath);
    model_free(&m);
    tu_rmrf(root);
    free(root);
    tu_rmrf(base);
    free(base);
}
END_TEST

/* Append extra bytes to the last segment of a fresh small log and check
 * they are a torn tail that the writer drops. */
static void check_appended_tail(const uint8_t *extra, size_t extra_len)
{
    char *dir = tu_tmpdir("wal-tail");
    log_model m = {.seed = SEED_TORN + extra_len};
    build_small_log(dir, &m, 0);
    rec_pos pos[4];
    read_positions(dir, pos, 4);
    char *p = tu_path(dir, pos[3].segment);
    size_t len = 0;
    uint8_t *bytes = tu_read_file(p, &len);
    bytes = realloc(bytes, len + extra_len);
    ck_assert_ptr_nonnull(bytes);
    memcpy(bytes + len, extra, extra_len);
    tu_write_file(p, bytes, len + extra_len);
    check_torn_then_reopen(dir, m.recs, 4, pos[3].segment, len, extra_len,
                           m.seed);
    free(bytes);
    free(p);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_wal_zero_filled_tail_is_truncated)
{
    uint8_t *zeros = calloc(4096, 1);
    ck_assert_ptr_nonnull(zeros);
    check_appended_tail(zeros, 4096);
    free(zeros);
}
END_TEST

START_TEST(test_wal_garbage_tail_is_truncated)
{
    uint8_t junk[777];
    uint64_t st = 0x9a7ba9e;
    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)tu_rand(&st);
    }
    check_appended_tail(junk, sizeof(junk));
    /* Garbage that starts like a record (magic, LSN 5, a length that fits)
     * but whose checksum cannot match. */
    uint8_t fake[300];
    memcpy(fake, junk, sizeof(fake));
    keel_wal_rec_header h = {
        .kind = KEEL_WAL_CRANK, .lsn = 5, .stored_len = 100, .raw_len = 100};
    keel__wal_rec_encode(fake, &h);
    check_appended_tail(fake, sizeof(fake));
}
END_TEST

/* ---- retirement ---------------------------------------------------------- */

START_TEST(test_wal_retire_removes_only_older_segments)
{
    char *dir = tu_tmpdir("wal-retire");
    log_model m = {.seed = 0x7e7e};
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.segment_bytes = 4096;
    keel_wal *w = open_ok(dir, &o, NULL);
    for (int i = 0; i < 30; i++) {
        append_one(w, &m, KEEL_WAL_CRANK, (uint64_t)i, 1000, 0, 0);
    }
    size_t nseg = 0;
    char **names = list_names(dir, ".seg", &nseg);
    ck_assert_uint_ge(nseg, 6);
    uint64_t *first = calloc(nseg + 1, sizeof(*first));
    ck_assert_ptr_nonnull(first);
    for (size_t i = 0; i < nseg; i++) {
        ck_assert(keel__wal_seg_parse_name(names[i], &first[i]));
    }
    first[nseg] = m.n + 1;
    ck_assert_uint_eq(first[0], 1);

    keel_diag d = {0};
    uint64_t removed = 99;
    ck_assert_int_eq(keel_wal_retire(w, 1, &removed, &d), KEEL_OK);
    ck_assert_uint_eq(removed, 0);
    /* Segment 0 still holds first[1] - 1, which is not < first[1] - 1. */
    ck_assert_int_eq(keel_wal_retire(w, first[1] - 1, &removed, &d), KEEL_OK);
    ck_assert_uint_eq(removed, 0);
    ck_assert_uint_eq(count_segments(dir), nseg);
    ck_assert_int_eq(keel_wal_retire(w, first[1], &removed, &d), KEEL_OK);
    ck_assert_uint_eq(removed, 1);
    /* Segments 1 and 2 are all below first[3] + 1; segment 3 is not. */
    ck_assert_int_eq(keel_wal_retire(w, first[3] + 1, &removed, &d), KEEL_OK);
    ck_assert_uint_eq(removed, 2);
    size_t left = 0;
    char **now = list_names(dir, ".seg", &left);
    ck_assert_uint_eq(left, nseg - 3);
    for (size_t i = 0; i < left; i++) {
        ck_assert_str_eq(now[i], names[i + 3]);
    }
    free_names(now);
    check_log(dir, &m, 0, first[3]);
    check_log(dir, &m, first[3], first[3]);
    check_log(dir, &m, first[4] + 1, first[4] + 1);
    ck_assert_int_eq(keel_wal_retire(w, first[3], &removed, NULL), KEEL_OK);
    ck_assert_uint_eq(removed, 0);

    /* Everything is older than last + 1, but the last segment stays. */
    ck_assert_int_eq(keel_wal_retire(w, m.n + 1, &removed, &d), KEEL_OK);
    ck_assert_uint_eq(removed, nseg - 4);
    now = list_names(dir, ".seg", &left);
    ck_assert_uint_eq(left, 1);
    ck_assert_str_eq(now[0], names[nseg - 1]);
    free_names(now);
    ck_assert_int_eq(keel_wal_failed(w), 0);
    check_log(dir, &m, 0, first[nseg - 1]);

    /* Appending goes on, and a reopened writer sees the retained log. */
    for (int i = 0; i < 8; i++) {
        append_one(w, &m, KEEL_WAL_KERNEL_OP, 0, 900, 0, 0);
    }
    close_ok(w);
    keel_wal_open_info info;
    w = open_ok(dir, &o, &info);
    ck_assert_uint_eq(info.first_lsn, first[nseg - 1]);
    ck_assert_uint_eq(info.last_lsn, m.n);
    ck_assert_uint_eq(info.segments, count_segments(dir));
    append_one(w, &m, KEEL_WAL_CRANK, 77, 10, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, first[nseg - 1]);
    check_log(dir, &m, m.n - 2, m.n - 2);
    free(first);
    free_names(names);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- validation, kernel ids, temporary files ----------------------------- */

START_TEST(test_wal_append_invalid_arguments_are_refused)
{
    char *dir = tu_tmpdir("wal-inval");
    log_model m = {.seed = 3};
    keel_wal *w = open_ok(dir, NULL, NULL);
    uint8_t small[8] = {0};
    static const int bad_kinds[] = {0, 5, -1, 255};
    for (size_t i = 0; i < sizeof(bad_kinds) / sizeof(bad_kinds[0]); i++) {
        keel_diag d = {0};
        uint64_t lsn = 42;
        ck_assert_int_eq(
            keel_wal_append(w, bad_kinds[i], 1, small, sizeof(small), &lsn, &d),
            KEEL_EINVAL);
        ck_assert_int_eq(d.code, KEEL_EINVAL);
    }
    /* Only the length is looked at before refusing; the buffer is never
     * touched, so it is left unwritten (malloc'd pages stay unmapped). */
    uint8_t *big = malloc((size_t)KEEL_WAL_MAX_PAYLOAD_BYTES + 1);
    ck_assert_ptr_nonnull(big);
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_append(w, KEEL_WAL_CRANK, 1, big,
                                     (size_t)KEEL_WAL_MAX_PAYLOAD_BYTES + 1,
                                     NULL, &d),
                     KEEL_EINVAL);
    ck_assert_int_eq(d.code, KEEL_EINVAL);
    free(big);
    /* A refused append consumes no LSN and does not fail the writer. */
    ck_assert_int_eq(keel_wal_failed(w), 0);
    ck_assert_uint_eq(keel_wal_last_lsn(w), 0);
    append_one(w, &m, KEEL_WAL_CRANK, 1, 8, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, 1);

    ck_assert_int_eq(keel_wal_close(NULL, NULL), KEEL_OK);
    keel_wal_reader_close(NULL);

    /* No directory: the writer without create, and the reader. */
    char *missing = tu_path(dir, "nope");
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.create = 0;
    keel_wal *w2 = (keel_wal *)&m;
    ck_assert_int_eq(keel_wal_open(missing, &o, &w2, NULL, &d), KEEL_ENOENT);
    ck_assert_ptr_null(w2);
    keel_wal_reader *r = (keel_wal_reader *)&m;
    ck_assert_int_eq(keel_wal_reader_open(missing, NULL, 0, &r, &d),
                     KEEL_ENOENT);
    ck_assert_ptr_null(r);
    free(missing);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_wal_kernel_id_is_kept_and_checked)
{
    char *dir = tu_tmpdir("wal-kid");
    char *dir2 = tu_tmpdir("wal-kid2");
    keel_wal_open_info info;
    keel_wal *w = open_ok(dir, NULL, &info);
    uint64_t kid = keel_wal_kernel_id(w);
    ck_assert_uint_ne(kid, 0);
    ck_assert_uint_eq(info.kernel_id, kid);
    log_model m = {.seed = 4};
    append_one(w, &m, KEEL_WAL_CRANK, 1, 10, 0, 0);
    close_ok(w);
    /* Ids are random: a second log gets another one. */
    keel_wal *w2 = open_ok(dir2, NULL, NULL);
    ck_assert_uint_ne(keel_wal_kernel_id(w2), 0);
    ck_assert_uint_ne(keel_wal_kernel_id(w2), kid);
    close_ok(w2);

    /* The id is in the segment header. */
    char *p = tu_path(dir, "00000000000000000001.seg");
    size_t len = 0;
    uint8_t *b = tu_read_file(p, &len);
    ck_assert_uint_eq(get_u64(b + 8), kid);
    free(b);
    free(p);

    keel_wal_options o;
    keel_wal_options_init(&o);
    o.kernel_id = kid;
    w = open_ok(dir, &o, &info);
    ck_assert_uint_eq(keel_wal_kernel_id(w), kid);
    append_one(w, &m, KEEL_WAL_CRANK, 2, 10, 0, 0);
    close_ok(w);
    w = open_ok(dir, NULL, &info);
    ck_assert_uint_eq(keel_wal_kernel_id(w), kid);
    close_ok(w);

    o.kernel_id = kid ^ 0x100;
    keel_diag d = {0};
    w = NULL;
    ck_assert_int_eq(keel_wal_open(dir, &o, &w, NULL, &d), KEEL_ECORRUPT);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(d.code, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "wrong kernel id") != NULL &&
                      strstr(d.msg, "00000000000000000001.seg") != NULL,
                  "%s", d.msg);

    keel_wal_reader *r = NULL;
    memset(&d, 0, sizeof(d));
    int rc = keel_wal_reader_open(dir, &o, 0, &r, &d);
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_msg(strstr(d.msg, "wrong kernel id") != NULL, "%s", d.msg);
    o.kernel_id = kid;
    ck_assert_int_eq(keel_wal_reader_open(dir, &o, 0, &r, &d), KEEL_OK);
    ck_assert_uint_eq(keel_wal_reader_kernel_id(r), kid);
    keel_wal_reader_close(r);
    check_log(dir, &m, 0, 1);

    /* A new log takes the id it is given. */
    tu_rmrf(dir2);
    o.kernel_id = 0x0123456789ABCDEFull;
    w = open_ok(dir2, &o, &info);
    ck_assert_uint_eq(keel_wal_kernel_id(w), 0x0123456789ABCDEFull);
    close_ok(w);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
    tu_rmrf(dir2);
    free(dir2);
}
END_TEST

START_TEST(test_wal_stale_tmp_files_are_removed_on_open)
{
    char *dir = tu_tmpdir("wal-tmp");
    log_model m = {.seed = 5};
    keel_wal *w = open_ok(dir, NULL, NULL);
    append_one(w, &m, KEEL_WAL_CRANK, 1, 100, 0, 0);
    append_one(w, &m, KEEL_WAL_CRANK, 2, 100, 0, 0);
    close_ok(w);
    /* What an interrupted segment creation leaves: a header-only file
     * named after the next LSN, and one left half-written. */
    uint8_t hdr[KEEL_WAL_SEG_HEADER_BYTES];
    keel_wal_seg_header h = {
        .version = KEEL_WAL_FORMAT_VERSION, .kernel_id = 77, .first_lsn = 3};
    keel__wal_seg_encode(hdr, &h);
    char *t1 = tu_path(dir, "00000000000000000003.seg.tmp");
    char *t2 = tu_path(dir, "00000000000000000009.seg.tmp");
    tu_write_file(t1, hdr, sizeof(hdr));
    tu_write_file(t2, hdr, 13);
    /* A reader changes nothing and ignores them. */
    check_log(dir, &m, 0, 1);
    size_t n = 0;
    free_names(list_names(dir, ".tmp", &n));
    ck_assert_uint_eq(n, 2);

    keel_wal_open_info info;
    w = open_ok(dir, NULL, &info);
    free_names(list_names(dir, ".tmp", &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(info.last_lsn, 2);
    ck_assert_uint_eq(info.segments, 1);
    append_one(w, &m, KEEL_WAL_CRANK, 3, 100, 0, 0);
    close_ok(w);
    check_log(dir, &m, 0, 1);
    ck_assert_uint_eq(count_segments(dir), 1);
    free(t1);
    free(t2);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

Suite *wal_suite(void)
{
    Suite *s = suite_create("wal");

    TCase *tc = tcase_create("round_trip");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_wal_round_trip_many_sizes_reads_back_exactly);
    tcase_add_test(tc, test_wal_new_log_is_empty_and_clean);
    tcase_add_test(tc, test_wal_new_log_first_lsn_continues_numbering);
    suite_add_tcase(s, tc);

    tc = tcase_create("sync");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_wal_sync_policy_wait_makes_appends_durable, 0,
                        3);
    suite_add_tcase(s, tc);

    tc = tcase_create("torn_tail");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_wal_torn_tail_at_every_offset_is_truncated, 0,
                        2);
    tcase_add_test(tc, test_wal_zero_filled_tail_is_truncated);
    tcase_add_test(tc, test_wal_garbage_tail_is_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("retire");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_wal_retire_removes_only_older_segments);
    suite_add_tcase(s, tc);

    tc = tcase_create("validation");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_wal_append_invalid_arguments_are_refused);
    tcase_add_test(tc, test_wal_kernel_id_is_kept_and_checked);
    tcase_add_test(tc, test_wal_stale_tmp_files_are_removed_on_open);
    suite_add_tcase(s, tc);
    return s;
}
