/*
 * tests/test_snapshot.c — the snapshot file format (keel/snapshot.h,
 * layout in snapshot/snapshot_format.h): writer, reader, damage, faults.
 *
 * What is checked (issue 6 §1, §3, §4; STYLE.md §4-6):
 *   - round trips: seeded random tables (empty ones included) at several
 *     zstd levels, no tables at all, values larger than a frame and a key
 *     of the maximum length, thousands of frames; the manifest and the
 *     info the writer reports equal what the reader reports;
 *   - the writer's contract: keys strictly ascend (a proper prefix first),
 *     refused arguments do not fail it, a stale `.tmp` is refused and left
 *     alone, close() without finish() removes its `.tmp`;
 *   - damage, one test per kind, each built at a computed offset with the
 *     format's own encoders (a file is split into its parts, edited, and
 *     reassembled with fresh checksums where the damage must get past
 *     them), asserting the code, `<path>: offset N: ` and the reason, and
 *     that the entries returned before the error are exactly the written
 *     ones;
 *   - sweeps: a small snapshot truncated at every length and with every bit
 *     flipped is refused, never read as sound, and never yields an entry
 *     other than the one written at that position;
 *   - faults (common/io_fault.h): a crash before or after every I/O
 *     operation of a write, then a power loss, leaves the final name
 *     holding the old file (or nothing) or the new complete one; fsync EIO,
 *     write ENOSPC, a torn write, a failed rename fail the writer for good
 *     and leave the old file; a failed directory fsync leaves the new one;
 *     a bit flipped in any read is refused.
 *
 * Random contents come from a seed (KEEL_TEST_SEED overrides the default)
 * printed in every failure message that depends on it.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "common/diag.h"
#include "common/io_fault.h"
#include "keel/keel.h"
#include "snapshot/snapshot_format.h"
#include "tests/testutil.h"

Suite *snapshot_suite(void);

#define SEED_DEFAULT 0x736e617073686f74ull /* "snapshot" */
#define MAX_TABLES   16
#define MAX_FRAMES   64 /* of a split file */
#define SMALL_FRAME  64 /* frame_bytes of the small snapshot */

static uint64_t test_seed(void)
{
    const char *s = getenv("KEEL_TEST_SEED");
    return s != NULL ? strtoull(s, NULL, 0) : SEED_DEFAULT;
}

static const keel_snapshot_meta test_meta = {
    .kernel_id = 0x6b65656c736e6170ull,
    .lsn = 4242,
    .crank = 77,
    .activity_hash = 0x0123456789abcdefull,
    .created_unix_ms = 1700000000123ull,
};

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the model: what was written ---------------------------------------- */

typedef struct ent {
    uint32_t table;
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
} ent;

typedef struct model {
    uint32_t ntables;
    char names[MAX_TABLES][KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES + 1];
    ent *e; /* in file order: by table, keys ascending */
    size_t n;
    size_t cap;
} model;

static uint32_t model_table(model *m, const char *name)
{
    ck_assert_uint_lt(m->ntables, MAX_TABLES);
    snprintf(m->names[m->ntables], sizeof(m->names[0]), "%s", name);
    return m->ntables++;
}

static void model_add(model *m, uint32_t table, const void *k, size_t klen,
                      const void *v, size_t vlen)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 64;
        m->e = realloc(m->e, m->cap * sizeof(*m->e));
        ck_assert_ptr_nonnull(m->e);
    }
    ent *e = &m->e[m->n++];
    e->table = table;
    e->klen = klen;
    e->vlen = vlen;
    e->key = malloc(klen);
    e->val = malloc(vlen > 0 ? vlen : 1);
    ck_assert(e->key != NULL && e->val != NULL);
    memcpy(e->key, k, klen);
    if (vlen > 0) {
        memcpy(e->val, v, vlen);
    }
}

static void model_free(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
        free(m->e[i].val);
    }
    free(m->e);
    memset(m, 0, sizeof(*m));
}

static uint64_t model_bytes(const model *m, uint32_t table)
{
    uint64_t b = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->e[i].table == table) {
            b += m->e[i].klen + m->e[i].vlen;
        }
    }
    return b;
}

static uint64_t model_count(const model *m, uint32_t table)
{
    uint64_t c = 0;
    for (size_t i = 0; i < m->n; i++) {
        c += m->e[i].table == table;
    }
    return c;
}

/*
 * Write m to path with options o (NULL: defaults). Every table is added in
 * order, empty ones too. @return the first error (the writer is closed
 * whatever happens), or KEEL_OK.
 */
static int write_model(const char *path, const model *m,
                       const keel_snapshot_options *o, keel_snapshot_info *info,
                       keel_diag *d)
{
    keel_snapshot_writer *w = NULL;
    int rc = keel_snapshot_writer_open(path, o, &test_meta, &w, d);
    uint32_t next_table = 0;
    for (size_t i = 0; rc == KEEL_OK && i < m->n; i++) {
        const ent *e = &m->e[i];
        while (rc == KEEL_OK && next_table <= e->table) {
            rc = keel_snapshot_writer_add_table(w, m->names[next_table++], d);
        }
        if (rc == KEEL_OK) {
            rc = keel_snapshot_writer_put(w, e->key, e->klen, e->val, e->vlen,
                                          d);
        }
    }
    while (rc == KEEL_OK && next_table < m->ntables) {
        rc = keel_snapshot_writer_add_table(w, m->names[next_table++], d);
    }
    if (rc == KEEL_OK) {
        rc = keel_snapshot_writer_finish(w, info, d);
    }
    keel_snapshot_writer_close(w);
    return rc;
}

static void write_ok(const char *path, const model *m,
                     const keel_snapshot_options *o, keel_snapshot_info *info,
                     const char *ctx)
{
    keel_diag d = {0};
    int rc = write_model(path, m, o, info, &d);
    ck_assert_msg(rc == KEEL_OK, "%s: write %s: %s: %s", ctx, path,
                  keel_err_name(rc), d.msg);
}

/*
 * Read path and compare every entry returned with m's at the same position
 * (a wrong entry fails the test whatever the outcome). *nread: entries
 * returned. @return what ended the read: 0 (sound), or the error of open or
 * next (the diag in *d).
 */
static int read_compare(const char *path, const model *m,
                        const keel_snapshot_options *o, size_t *nread,
                        keel_diag *d, const char *ctx)
{
    keel_snapshot_reader *r = NULL;
    *nread = 0;
    int rc = keel_snapshot_reader_open(path, o, &r, d);
    if (rc < 0) {
        ck_assert_msg(r == NULL, "%s: failed open returned a reader", ctx);
        return rc;
    }
    keel_snapshot_info info;
    keel_snapshot_reader_info(r, &info);
    ck_assert_msg(info.tables == m->ntables, "%s: %u tables, wrote %u", ctx,
                  info.tables, m->ntables);
    for (uint32_t t = 0; t < m->ntables; t++) {
        const keel_snapshot_table *tt = keel_snapshot_reader_table(r, t);
        ck_assert_msg(tt != NULL && strcmp(tt->name, m->names[t]) == 0,
                      "%s: table %u is \"%s\", wrote \"%s\"", ctx, t,
                      tt ? tt->name : "(null)", m->names[t]);
    }
    keel_snapshot_entry e;
    size_t i = 0;
    while ((rc = keel_snapshot_reader_next(r, &e, d)) == 1) {
        ck_assert_msg(i < m->n, "%s: entry %zu read, only %zu written", ctx, i,
                      m->n);
        const ent *x = &m->e[i];
        ck_assert_msg(e.table_index == x->table &&
                          strcmp(e.table, m->names[x->table]) == 0,
                      "%s: entry %zu in table %u \"%s\", written in %u", ctx, i,
                      e.table_index, e.table, x->table);
        ck_assert_msg(e.key.len == x->klen &&
                          memcmp(e.key.ptr, x->key, x->klen) == 0,
                      "%s: entry %zu: key differs (%zu bytes, wrote %zu)", ctx,
                      i, e.key.len, x->klen);
        ck_assert_msg(
            e.value.len == x->vlen &&
                (x->vlen == 0 || memcmp(e.value.ptr, x->val, x->vlen) == 0),
            "%s: entry %zu: value differs (%zu bytes, wrote %zu)", ctx, i,
            e.value.len, x->vlen);
        i++;
    }
    *nread = i;
    if (rc == 0) {
        ck_assert_msg(i == m->n, "%s: clean end after %zu of %zu entries", ctx,
                      i, m->n);
    }
    /* S6: sticky, with the same diag. */
    keel_diag d2 = {0};
    int again = keel_snapshot_reader_next(r, &e, &d2);
    ck_assert_msg(again == rc, "%s: next returned %d, then %d", ctx, rc, again);
    if (rc < 0) {
        ck_assert_str_eq(d2.msg, d->msg);
    }
    keel_snapshot_reader_close(r);
    return rc;
}

static void read_ok(const char *path, const model *m,
                    const keel_snapshot_options *o, const char *ctx)
{
    keel_diag d = {0};
    size_t n = 0;
    int rc = read_compare(path, m, o, &n, &d, ctx);
    ck_assert_msg(rc == 0, "%s: read %s: %s: %s", ctx, path, keel_err_name(rc),
                  d.msg);
}

/* Keys that strictly ascend whatever the suffix: a big-endian index, then
 * suffix_len PRNG bytes. */
static size_t make_key(uint8_t *k, uint32_t i, size_t suffix_len, uint64_t *st)
{
    k[0] = (uint8_t)(i >> 24);
    k[1] = (uint8_t)(i >> 16);
    k[2] = (uint8_t)(i >> 8);
    k[3] = (uint8_t)i;
    for (size_t j = 0; j < suffix_len; j++) {
        k[4 + j] = (uint8_t)tu_rand(st);
    }
    return 4 + suffix_len;
}

/* Half of the values repeat a short word (compressible), half are PRNG
 * bytes (stored as raw zstd blocks). */
static void make_value(uint8_t *v, size_t len, uint64_t *st)
{
    int compressible = tu_rand(st) & 1;
    uint64_t word = tu_rand(st);
    for (size_t j = 0; j < len; j++) {
        v[j] = compressible ? (uint8_t)(word >> (8 * (j % 8)))
                            : (uint8_t)tu_rand(st);
    }
}

/* A random model: ntables tables named t0.., some left empty. */
static void random_model(model *m, uint64_t seed, uint32_t ntables,
                         uint32_t max_entries, size_t max_value)
{
    uint64_t st = seed;
    uint8_t key[4 + 32];
    uint8_t *val = malloc(max_value > 0 ? max_value : 1);
    ck_assert_ptr_nonnull(val);
    for (uint32_t t = 0; t < ntables; t++) {
        char name[16];
        snprintf(name, sizeof(name), "t%u", t);
        model_table(m, name);
        /* Every third table stays empty. */
        uint32_t n = t % 3 == 1 ? 0 : (uint32_t)(tu_rand(&st) % max_entries);
        for (uint32_t i = 0; i < n; i++) {
            size_t klen = make_key(key, i, tu_rand(&st) % 32, &st);
            size_t vlen = max_value > 0 ? tu_rand(&st) % max_value : 0;
            make_value(val, vlen, &st);
            model_add(m, t, key, klen, val, vlen);
        }
    }
    free(val);
}

/*
 * The small snapshot of the damage tests and sweeps: "data" (6 entries
 * over several 64-byte frames), "empty" (none), "meta" (2 entries, one
 * frame).
 */
static void small_model(model *m)
{
    uint32_t data = model_table(m, "data");
    model_table(m, "empty");
    uint32_t meta = model_table(m, "meta");
    for (uint32_t i = 0; i < 6; i++) {
        char k[8], v[40];
        snprintf(k, sizeof(k), "k%02u", i);
        int vlen = snprintf(v, sizeof(v), "value %u %.*s", i, (int)(i * 4),
                            "abcdefghijklmnopqrstuvwxyz");
        model_add(m, data, k, strlen(k), v, (size_t)vlen);
    }
    uint8_t lsn[8];
    keel__put_u64(lsn, 4242);
    model_add(m, meta, "applied_lsn", 11, lsn, 8);
    model_add(m, meta, "format", 6, "\1\0\0\0", 4);
}

static keel_snapshot_options small_opts(void)
{
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.frame_bytes = SMALL_FRAME;
    return o;
}

/* Write the small snapshot to dir/name; its bytes in *buf. */
static char *write_small(const char *dir, const char *name, model *m,
                         uint8_t **buf, size_t *len)
{
    small_model(m);
    char *path = tu_path(dir, name);
    keel_snapshot_options o = small_opts();
    write_ok(path, m, &o, NULL, "small");
    *buf = tu_read_file(path, len);
    ck_assert_ptr_nonnull(*buf);
    return path;
}

/* ---- a file split into its parts, and put back together ----------------- */

typedef struct sframe {
    keel__snapshot_frame f; /* as stored (stored_len may be edited to lie) */
    uint8_t *stored;
    size_t len; /* bytes of stored that are written */
} sframe;

typedef struct parts {
    uint32_t version;
    sframe fr[MAX_FRAMES];
    size_t nframes;
    uint64_t off[MAX_FRAMES]; /* where each frame was in the split file */
    char *manifest;           /* NUL-terminated copy */
    size_t mlen;
    keel__snapshot_trailer t;
} parts;

static void split(const uint8_t *buf, size_t len, parts *p)
{
    char why[300];
    uint64_t bad = 0;
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(
        keel__snapshot_header_decode(buf, &p->version, &bad, why, sizeof(why)),
        KEEL_OK);
    ck_assert_int_eq(
        keel__snapshot_trailer_decode(buf + len - KEEL__SNAPSHOT_TRAILER_BYTES,
                                      len, &p->t, &bad, why, sizeof(why)),
        KEEL_OK);
    size_t off = KEEL__SNAPSHOT_HEADER_BYTES;
    while (off < p->t.manifest_off) {
        ck_assert_uint_lt(p->nframes, MAX_FRAMES);
        sframe *s = &p->fr[p->nframes];
        p->off[p->nframes++] = off;
        ck_assert_int_eq(
            keel__snapshot_frame_decode(buf + off, &s->f, why, sizeof(why)),
            KEEL_OK);
        s->len = s->f.stored_len;
        s->stored = malloc(s->len);
        ck_assert_ptr_nonnull(s->stored);
        memcpy(s->stored, buf + off + KEEL__SNAPSHOT_FRAME_HEADER_BYTES,
               s->len);
        off += KEEL__SNAPSHOT_FRAME_HEADER_BYTES + s->len;
    }
    ck_assert_uint_eq(off, p->t.manifest_off);
    p->mlen = p->t.manifest_len;
    p->manifest = malloc(p->mlen + 1);
    ck_assert_ptr_nonnull(p->manifest);
    memcpy(p->manifest, buf + off, p->mlen);
    p->manifest[p->mlen] = '\0';
}

static void parts_free(parts *p)
{
    for (size_t i = 0; i < p->nframes; i++) {
        free(p->fr[i].stored);
    }
    free(p->manifest);
}

/*
 * The file of p: the header of p->version, the frames as they are (their
 * header checksums recomputed, stored_hash and raw_hash as in p), the
 * manifest, and a trailer with p->t's counts, the manifest's position and
 * checksum, and a file checksum computed afresh, or *file_hash if given.
 */
static uint8_t *assemble(const parts *p, const uint64_t *file_hash, size_t *len)
{
    size_t total =
        KEEL__SNAPSHOT_HEADER_BYTES + p->mlen + KEEL__SNAPSHOT_TRAILER_BYTES;
    for (size_t i = 0; i < p->nframes; i++) {
        total += KEEL__SNAPSHOT_FRAME_HEADER_BYTES + p->fr[i].len;
    }
    uint8_t *buf = malloc(total);
    ck_assert_ptr_nonnull(buf);
    keel__snapshot_header_encode(buf, p->version);
    size_t off = KEEL__SNAPSHOT_HEADER_BYTES;
    for (size_t i = 0; i < p->nframes; i++) {
        keel__snapshot_frame_encode(buf + off, &p->fr[i].f);
        off += KEEL__SNAPSHOT_FRAME_HEADER_BYTES;
        memcpy(buf + off, p->fr[i].stored, p->fr[i].len);
        off += p->fr[i].len;
    }
    keel__snapshot_trailer t = p->t;
    t.manifest_off = off;
    t.manifest_len = p->mlen;
    t.manifest_hash = XXH3_64bits(p->manifest, p->mlen);
    memcpy(buf + off, p->manifest, p->mlen);
    off += p->mlen;
    keel__snapshot_trailer_encode(buf + off, &t);
    keel__snapshot_trailer_seal(buf + off, file_hash != NULL
                                               ? *file_hash
                                               : XXH3_64bits(buf, total - 16));
    *len = total;
    return buf;
}

/* Decompress frame s into a malloc'd buffer of f.raw_len bytes. */
static uint8_t *frame_raw(const sframe *s)
{
    void *dctx = NULL;
    char why[300];
    uint8_t *raw = malloc(s->f.raw_len);
    ck_assert_ptr_nonnull(raw);
    ck_assert_int_eq(keel__snapshot_decompress(&dctx, s->stored, s->len, raw,
                                               s->f.raw_len, why, sizeof(why)),
                     KEEL_OK);
    keel__snapshot_zstd_free(NULL, dctx);
    return raw;
}

/* Make s hold raw[raw_len] (entries of it, for table), compressed, with
 * both hashes right. */
static void frame_set_raw(sframe *s, uint32_t table, uint32_t entries,
                          const uint8_t *raw, size_t raw_len)
{
    void *cctx = NULL;
    size_t cap = keel__snapshot_compress_bound(raw_len);
    free(s->stored);
    s->stored = malloc(cap);
    ck_assert_ptr_nonnull(s->stored);
    ck_assert_int_eq(keel__snapshot_compress(&cctx, 3, raw, raw_len, s->stored,
                                             cap, &s->len),
                     KEEL_OK);
    keel__snapshot_zstd_free(cctx, NULL);
    s->f.table = table;
    s->f.entries = entries;
    s->f.stored_len = (uint32_t)s->len;
    s->f.raw_len = (uint32_t)raw_len;
    s->f.stored_hash = XXH3_64bits(s->stored, s->len);
    s->f.raw_hash = XXH3_64bits(raw, raw_len);
}

/* Replace every occurrence of `from` in p's manifest by `to`. */
static void manifest_edit(parts *p, const char *from, const char *to)
{
    char *at = strstr(p->manifest, from);
    ck_assert_msg(at != NULL, "\"%s\" not in manifest %s", from, p->manifest);
    size_t flen = strlen(from), tlen = strlen(to);
    size_t head = (size_t)(at - p->manifest);
    char *n = malloc(p->mlen - flen + tlen + 1);
    ck_assert_ptr_nonnull(n);
    memcpy(n, p->manifest, head);
    memcpy(n + head, to, tlen);
    memcpy(n + head + tlen, at + flen, p->mlen - head - flen + 1);
    free(p->manifest);
    p->manifest = n;
    p->mlen = p->mlen - flen + tlen;
}

/* Entries of the model held by frames [0, nframes) of p. */
static size_t entries_before(const parts *p, size_t nframes)
{
    size_t n = 0;
    for (size_t i = 0; i < nframes; i++) {
        n += p->fr[i].f.entries;
    }
    return n;
}

/* Read path to its end without a model. @return as read_compare. */
static int read_count(const char *path, size_t *nread, keel_diag *d)
{
    keel_snapshot_reader *r = NULL;
    keel_snapshot_entry e;
    *nread = 0;
    int rc = keel_snapshot_reader_open(path, NULL, &r, d);
    while (rc == KEEL_OK && (rc = keel_snapshot_reader_next(r, &e, d)) == 1) {
        (*nread)++;
        rc = KEEL_OK;
    }
    keel_snapshot_reader_close(r);
    return rc;
}

/*
 * Write buf as path and read it: it must be refused with code and a diag
 * starting "<path>: offset <off>: " and containing what, after exactly
 * `before` entries (all equal to the model's, unless m is NULL: damage
 * that reorders entries).
 */
static void expect_refused(const char *path, const uint8_t *buf, size_t len,
                           const model *m, int code, uint64_t off,
                           const char *what, size_t before)
{
    tu_write_file(path, buf, len);
    keel_diag d = {0};
    size_t n = 0;
    int rc = m != NULL ? read_compare(path, m, NULL, &n, &d, what)
                       : read_count(path, &n, &d);
    ck_assert_msg(rc == code, "expected %s (%s), got %s: %s",
                  keel_err_name(code), what, keel_err_name(rc), d.msg);
    ck_assert_int_eq(d.code, code);
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s: offset %" PRIu64 ": ", path, off);
    ck_assert_msg(strncmp(d.msg, prefix, strlen(prefix)) == 0,
                  "diag \"%s\" does not start with \"%s\"", d.msg, prefix);
    ck_assert_msg(strstr(d.msg, what) != NULL,
                  "diag \"%s\" does not say \"%s\"", d.msg, what);
    ck_assert_msg(n == before, "%zu entries before the error, expected %zu", n,
                  before);
}

/* ---- round trips ----------------------------------------------------------
 */

static void info_eq(const keel_snapshot_info *a, const keel_snapshot_info *b,
                    const char *ctx)
{
    ck_assert_msg(
        a->meta.kernel_id == b->meta.kernel_id && a->meta.lsn == b->meta.lsn &&
            a->meta.crank == b->meta.crank &&
            a->meta.activity_hash == b->meta.activity_hash &&
            a->meta.created_unix_ms == b->meta.created_unix_ms &&
            a->format == b->format &&
            strcmp(a->keel_version, b->keel_version) == 0 &&
            a->level == b->level && a->frame_bytes == b->frame_bytes &&
            a->tables == b->tables && a->entries == b->entries &&
            a->bytes == b->bytes && a->frames == b->frames &&
            a->file_bytes == b->file_bytes,
        "%s: writer and reader info differ", ctx);
}

START_TEST(test_snapshot_round_trip_random_tables_read_back)
{
    uint64_t seed = test_seed();
    static const int levels[] = {-5, 1, 3, 9};
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    for (size_t li = 0; li < sizeof(levels) / sizeof(levels[0]); li++) {
        char ctx[128];
        snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64 " level %d", seed + li,
                 levels[li]);
        model m = {0};
        random_model(&m, seed + li, 7, 400, 2000);
        keel_snapshot_options o;
        keel_snapshot_options_init(&o);
        o.level = levels[li];
        o.frame_bytes = 16384;
        keel_snapshot_info wi, ri;
        write_ok(path, &m, &o, &wi, ctx);
        read_ok(path, &m, NULL, ctx);

        keel_diag d = {0};
        int rc = keel_snapshot_verify(path, NULL, &ri, &d);
        ck_assert_msg(rc == KEEL_OK, "%s: verify: %s", ctx, d.msg);
        info_eq(&wi, &ri, ctx);
        ck_assert_uint_eq(ri.entries, m.n);
        ck_assert_int_eq(ri.level, levels[li]);
        ck_assert_uint_eq(ri.frame_bytes, 16384);
        ck_assert_uint_eq(ri.meta.kernel_id, test_meta.kernel_id);
        ck_assert_uint_eq(ri.meta.lsn, test_meta.lsn);
        ck_assert_uint_eq(ri.meta.crank, test_meta.crank);
        ck_assert_uint_eq(ri.meta.activity_hash, test_meta.activity_hash);
        ck_assert_uint_eq(ri.meta.created_unix_ms, test_meta.created_unix_ms);
        ck_assert_str_eq(ri.keel_version, keel_version());
        size_t flen = 0;
        uint8_t *f = tu_read_file(path, &flen);
        ck_assert_uint_eq(ri.file_bytes, flen);
        free(f);
        model_free(&m);
    }
    char *tmp = tu_path(dir, "k.snap.tmp");
    ck_assert_msg(!file_exists(tmp), "a .tmp survived a finished write");
    free(tmp);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_round_trip_manifest_reads_back)
{
    char *dir = tu_tmpdir("snap");
    model m = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    char *path = write_small(dir, "k.snap", &m, &buf, &len);
    keel_snapshot_reader *r = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_reader_open(path, NULL, &r, &d), KEEL_OK);
    keel_bytes mb = keel_snapshot_reader_manifest(r);
    json_error_t je;
    json_t *j = json_loadb(mb.ptr, mb.len, 0, &je);
    ck_assert_msg(j != NULL, "manifest: %s", je.text);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "format")),
                     KEEL_SNAPSHOT_FORMAT);
    ck_assert_str_eq(json_string_value(json_object_get(j, "kernel_id")),
                     "0x6b65656c736e6170");
    ck_assert_str_eq(json_string_value(json_object_get(j, "activity_hash")),
                     "0123456789abcdef");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "lsn")), 4242);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "crank")), 77);
    json_t *tables = json_object_get(j, "tables");
    ck_assert_uint_eq(json_array_size(tables), 3);
    for (uint32_t t = 0; t < 3; t++) {
        json_t *o = json_array_get(tables, t);
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")),
                         m.names[t]);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "entries")),
                         (json_int_t)model_count(&m, t));
        ck_assert_int_eq(json_integer_value(json_object_get(o, "bytes")),
                         (json_int_t)model_bytes(&m, t));
        const keel_snapshot_table *tt = keel_snapshot_reader_table(r, t);
        ck_assert_uint_eq(tt->entries, model_count(&m, t));
        ck_assert_uint_eq(tt->bytes, model_bytes(&m, t));
    }
    ck_assert_ptr_null(keel_snapshot_reader_table(r, 3));
    json_decref(j);
    keel_snapshot_reader_close(r);
    keel_snapshot_reader_close(NULL);
    free(buf);
    free(path);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_round_trip_no_tables_reads_back)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    model m = {0};
    keel_snapshot_info info;
    write_ok(path, &m, NULL, &info, "no tables");
    ck_assert_uint_eq(info.tables, 0);
    ck_assert_uint_eq(info.frames, 0);
    read_ok(path, &m, NULL, "no tables");

    model_table(&m, "a");
    model_table(&m, "b");
    write_ok(path, &m, NULL, &info, "empty tables");
    ck_assert_uint_eq(info.tables, 2);
    ck_assert_uint_eq(info.entries, 0);
    ck_assert_uint_eq(info.frames, 0);
    read_ok(path, &m, NULL, "empty tables");
    model_free(&m);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_round_trip_large_values_read_back)
{
    uint64_t seed = test_seed();
    uint64_t st = seed;
    char ctx[96];
    snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64, seed);
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    model m = {0};
    uint32_t t = model_table(&m, "big");
    size_t big = 3u * 1024 * 1024 + 17; /* over the 1 MiB default frame */
    uint8_t *v = malloc(big);
    uint8_t *k = malloc(KEEL_SNAPSHOT_MAX_KEY_BYTES);
    ck_assert(v != NULL && k != NULL);
    make_value(v, big, &st);
    model_add(&m, t, "a", 1, "small", 5);
    model_add(&m, t, "b", 1, v, big);
    model_add(&m, t, "c", 1, "small again", 11);
    make_value(v, big, &st);
    model_add(&m, t, "d", 1, v, big);
    /* A key of the maximum length, after "d". */
    memset(k, 'e', KEEL_SNAPSHOT_MAX_KEY_BYTES);
    model_add(&m, t, k, KEEL_SNAPSHOT_MAX_KEY_BYTES, "", 0);
    keel_snapshot_info info;
    write_ok(path, &m, NULL, &info, ctx);
    /* a | b | c | d | e: the large values each need a frame of their own,
     * so the small neighbours cannot share one with them. */
    ck_assert_uint_eq(info.frames, 5);
    read_ok(path, &m, NULL, ctx);
    free(v);
    free(k);
    model_free(&m);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_round_trip_many_frames_read_back)
{
    uint64_t seed = test_seed();
    char ctx[96];
    snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64, seed);
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    model m = {0};
    random_model(&m, seed, 3, 3000, 40);
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.frame_bytes = 100;
    keel_snapshot_info info;
    write_ok(path, &m, &o, &info, ctx);
    ck_assert_msg(info.frames > m.n / 4 && info.frames <= m.n,
                  "%s: %" PRIu64 " frames for %zu entries", ctx, info.frames,
                  m.n);
    read_ok(path, &m, NULL, ctx);
    model_free(&m);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The background compressor writes the very bytes the caller's thread
 * would (S8: frames in order, same compression). */
START_TEST(test_snapshot_background_writes_identical_file)
{
    uint64_t seed = test_seed();
    char ctx[64];
    snprintf(ctx, sizeof(ctx), "seed 0x%016" PRIx64, seed);
    char *dir = tu_tmpdir("snap-bg");
    char *path[2] = {tu_path(dir, "inline.snap"), tu_path(dir, "bg.snap")};
    model m = {0};
    random_model(&m, seed, 5, 3000, 3000);
    uint8_t *buf[2];
    size_t len[2];
    for (int bg = 0; bg < 2; bg++) {
        keel_snapshot_options o;
        keel_snapshot_options_init(&o);
        o.frame_bytes = 4096;
        o.background = bg;
        write_ok(path[bg], &m, &o, NULL, ctx);
        read_ok(path[bg], &m, NULL, ctx);
        buf[bg] = tu_read_file(path[bg], &len[bg]);
    }
    ck_assert_msg(len[0] == len[1] && memcmp(buf[0], buf[1], len[0]) == 0,
                  "%s: files differ (%zu and %zu bytes)", ctx, len[0], len[1]);
    for (int bg = 0; bg < 2; bg++) {
        free(buf[bg]);
        free(path[bg]);
    }
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_finish_replaces_existing_file)
{
    char *dir = tu_tmpdir("snap");
    model a = {0}, b = {0};
    random_model(&a, 1, 2, 50, 100);
    random_model(&b, 2, 3, 50, 100);
    char *path = tu_path(dir, "k.snap");
    write_ok(path, &a, NULL, NULL, "first");
    write_ok(path, &b, NULL, NULL, "second");
    read_ok(path, &b, NULL, "replaced");
    model_free(&a);
    model_free(&b);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- the writer's contract ------------------------------------------------
 */

START_TEST(test_snapshot_put_out_of_order_is_refused)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &test_meta, &w, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "t", &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "b", 1, "1", 1, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "a", 1, "x", 1, &d),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "strictly ascend"));
    ck_assert_int_eq(keel_snapshot_writer_put(w, "b", 1, "x", 1, &d),
                     KEEL_EINVAL);
    /* A proper prefix sorts first. */
    ck_assert_int_eq(keel_snapshot_writer_put(w, "ba", 2, "2", 1, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "b", 1, "x", 1, &d),
                     KEEL_EINVAL);
    /* A new table starts a new order. */
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "u", &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "a", 1, "3", 1, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_failed(w), 0);
    ck_assert_int_eq(keel_snapshot_writer_finish(w, NULL, &d), KEEL_OK);
    keel_snapshot_writer_close(w);

    model m = {0};
    uint32_t t = model_table(&m, "t");
    uint32_t u = model_table(&m, "u");
    model_add(&m, t, "b", 1, "1", 1);
    model_add(&m, t, "ba", 2, "2", 1);
    model_add(&m, u, "a", 1, "3", 1);
    read_ok(path, &m, NULL, "order");
    model_free(&m);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_bad_arguments_are_refused)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    char *tmp = tu_path(dir, "k.snap.tmp");
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.level = 1000;
    ck_assert_int_eq(keel_snapshot_writer_open(path, &o, &test_meta, &w, &d),
                     KEEL_EINVAL);
    ck_assert_ptr_null(w);
    keel_snapshot_options_init(&o);
    o.frame_bytes = 0;
    ck_assert_int_eq(keel_snapshot_writer_open(path, &o, &test_meta, &w, &d),
                     KEEL_EINVAL);
    keel_snapshot_meta bad = test_meta;
    bad.lsn = (uint64_t)INT64_MAX + 1;
    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &bad, &w, &d),
                     KEEL_EINVAL);
    ck_assert(!file_exists(tmp) && !file_exists(path));

    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &test_meta, &w, &d),
                     KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "a", 1, "", 0, &d),
                     KEEL_EINVAL); /* no table yet */
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "", &d), KEEL_EINVAL);
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "a b", &d), KEEL_EINVAL);
    char longname[KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES + 2];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, longname, &d),
                     KEEL_EINVAL);
    longname[KEEL_SNAPSHOT_MAX_TABLE_NAME_BYTES] = '\0';
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, longname, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, longname, &d),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(d.msg, "added twice"));
    ck_assert_int_eq(keel_snapshot_writer_put(w, "", 0, "", 0, &d),
                     KEEL_EINVAL);
    uint8_t *big = calloc(1, KEEL_SNAPSHOT_MAX_KEY_BYTES + 1);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(keel_snapshot_writer_put(
                         w, big, KEEL_SNAPSHOT_MAX_KEY_BYTES + 1, "", 0, &d),
                     KEEL_ETOOBIG);
    ck_assert_int_eq(
        keel_snapshot_writer_put(w, "k", 1, big,
                                 KEEL_SNAPSHOT_MAX_VALUE_BYTES + 1ull, &d),
        KEEL_ETOOBIG);
    free(big);
    ck_assert_int_eq(keel_snapshot_writer_failed(w), 0);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "k", 1, "v", 1, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_finish(w, NULL, &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_finish(w, NULL, &d), KEEL_EINVAL);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "l", 1, "v", 1, &d),
                     KEEL_EINVAL);
    keel_snapshot_writer_close(w);
    keel_snapshot_writer_close(NULL);
    ck_assert(!file_exists(tmp) && file_exists(path));
    free(tmp);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_stale_tmp_is_refused_and_kept)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    char *tmp = tu_path(dir, "k.snap.tmp");
    tu_write_file(tmp, "another writer's bytes", 22);
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &test_meta, &w, &d),
                     KEEL_EEXIST);
    ck_assert_ptr_null(w);
    char expect[600];
    snprintf(expect, sizeof(expect), "%s: exists", tmp);
    ck_assert_msg(strncmp(d.msg, expect, strlen(expect)) == 0, "diag: %s",
                  d.msg);
    size_t len = 0;
    uint8_t *b = tu_read_file(tmp, &len);
    ck_assert(b != NULL && len == 22 && memcmp(b, "another", 7) == 0);
    free(b);
    ck_assert(!file_exists(path));
    /* The caller's cleanup, then a write goes through. */
    ck_assert_int_eq(unlink(tmp), 0);
    model m = {0};
    small_model(&m);
    write_ok(path, &m, NULL, NULL, "after cleanup");
    read_ok(path, &m, NULL, "after cleanup");
    model_free(&m);
    free(tmp);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_close_unfinished_removes_tmp)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "k.snap");
    char *tmp = tu_path(dir, "k.snap.tmp");
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(path, NULL, &test_meta, &w, &d),
                     KEEL_OK);
    ck_assert(file_exists(tmp));
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "t", &d), KEEL_OK);
    ck_assert_int_eq(keel_snapshot_writer_put(w, "k", 1, "v", 1, &d), KEEL_OK);
    keel_snapshot_writer_close(w);
    ck_assert(!file_exists(tmp) && !file_exists(path));
    free(tmp);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_snapshot_missing_file_is_enoent)
{
    char *dir = tu_tmpdir("snap");
    char *path = tu_path(dir, "absent.snap");
    keel_snapshot_reader *r = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_reader_open(path, NULL, &r, &d),
                     KEEL_ENOENT);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(d.msg, path));
    char *inner = tu_path(dir, "no-such-dir/k.snap");
    keel_snapshot_writer *w = NULL;
    ck_assert_int_eq(keel_snapshot_writer_open(inner, NULL, &test_meta, &w, &d),
                     KEEL_ENOENT);
    ck_assert_ptr_null(w);
    free(inner);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- damage, one kind per test --------------------------------------------
 */

/* The fixture of the damage tests: the small snapshot, split. */
typedef struct dmg {
    char *dir;
    char *path;
    model m;
    uint8_t *buf;
    size_t len;
    parts p;
} dmg;

static void dmg_init(dmg *x)
{
    memset(x, 0, sizeof(*x));
    x->dir = tu_tmpdir("snapdmg");
    x->path = write_small(x->dir, "k.snap", &x->m, &x->buf, &x->len);
    split(x->buf, x->len, &x->p);
    /* The tests below rely on this shape. */
    ck_assert_uint_ge(x->p.nframes, 4);
    ck_assert_uint_eq(x->p.fr[0].f.table, 0);
    ck_assert_uint_eq(x->p.fr[1].f.table, 0);
    ck_assert_uint_eq(x->p.fr[x->p.nframes - 1].f.table, 2);
}

static void dmg_free(dmg *x)
{
    parts_free(&x->p);
    free(x->buf);
    model_free(&x->m);
    free(x->path);
    tu_rmrf(x->dir);
    free(x->dir);
}

/* Assemble x->p afresh and expect it refused (comparing the entries read
 * before with the model unless `reordered`). */
static void dmg_expect_r(dmg *x, int reordered, int code, uint64_t off,
                         const char *what, size_t before)
{
    size_t len = 0;
    uint8_t *b = assemble(&x->p, NULL, &len);
    expect_refused(x->path, b, len, reordered ? NULL : &x->m, code, off, what,
                   before);
    free(b);
}

static void dmg_expect(dmg *x, int code, uint64_t off, const char *what,
                       size_t before)
{
    dmg_expect_r(x, 0, code, off, what, before);
}

START_TEST(test_snapshot_damage_reassembled_file_is_sound)
{
    /* The tools of the tests below change nothing by themselves. */
    dmg x;
    dmg_init(&x);
    size_t len = 0;
    uint8_t *b = assemble(&x.p, NULL, &len);
    ck_assert_uint_eq(len, x.len);
    ck_assert_msg(memcmp(b, x.buf, len) == 0, "reassembly changed bytes");
    free(b);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_bad_magic_is_refused)
{
    dmg x;
    dmg_init(&x);
    memcpy(x.buf, "XXXX", 4);
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, 0,
                   "bad magic 0x58585858, expected 0x504E534B: not a keel "
                   "snapshot",
                   0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_header_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    x.buf[9] ^= 0x10; /* reserved: only the checksum can tell */
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, 16,
                   "header checksum 0x", 0);
    /* A flipped version bit is damage, not a newer format. */
    x.buf[9] ^= 0x10;
    x.buf[4] ^= 0x02;
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, 16,
                   "header checksum 0x", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_newer_version_is_refused)
{
    dmg x;
    dmg_init(&x);
    /* Only the header is ours to know: what follows it may be anything. */
    keel__snapshot_header_encode(x.buf, KEEL_SNAPSHOT_FORMAT + 1);
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_EVERSION, 4,
                   "unsupported format version 3, this keel reads up to 2", 0);
    uint8_t hdr[KEEL__SNAPSHOT_HEADER_BYTES];
    keel__snapshot_header_encode(hdr, 7);
    expect_refused(x.path, hdr, sizeof(hdr), &x.m, KEEL_EVERSION, 4,
                   "unsupported format version 7", 0);
    keel__snapshot_header_encode(x.buf, 0);
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, 4,
                   "bad header: format version 0", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_truncated_file_is_refused)
{
    dmg x;
    dmg_init(&x);
    expect_refused(x.path, x.buf, 10, &x.m, KEEL_ECORRUPT, 10,
                   "file ends after 10 bytes, inside the 24-byte header", 0);
    expect_refused(x.path, x.buf, 50, &x.m, KEEL_ECORRUPT, 50,
                   "file ends after 50 bytes, before a manifest and trailer",
                   0);
    size_t cut = x.len - 1;
    expect_refused(x.path, x.buf, cut, &x.m, KEEL_ECORRUPT,
                   cut - KEEL__SNAPSHOT_TRAILER_BYTES, "bad trailer magic 0x",
                   0);
    /* Cut inside a frame: the trailer is what is missing first. */
    cut = x.p.off[2] + 20;
    expect_refused(x.path, x.buf, cut, &x.m, KEEL_ECORRUPT,
                   cut - KEEL__SNAPSHOT_TRAILER_BYTES,
                   "the file is truncated, has bytes appended", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_appended_bytes_are_refused)
{
    dmg x;
    dmg_init(&x);
    uint8_t *b = malloc(x.len + 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, x.buf, x.len);
    b[x.len] = 0;
    expect_refused(x.path, b, x.len + 1, &x.m, KEEL_ECORRUPT,
                   x.len + 1 - KEEL__SNAPSHOT_TRAILER_BYTES,
                   "bad trailer magic", 0);
    free(b);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_trailer_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    x.buf[x.len - KEEL__SNAPSHOT_TRAILER_BYTES + 24] ^= 0x01; /* frames */
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, x.len - 8,
                   "trailer checksum 0x", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_manifest_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    x.buf[x.p.t.manifest_off + 5] ^= 0x20;
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT,
                   x.p.t.manifest_off, "manifest checksum 0x", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_manifest_not_json_is_refused)
{
    dmg x;
    dmg_init(&x);
    /* `"lsn":4242` becomes `"lsn":4x42`: jansson stops at the 'x'. */
    char *at = strstr(x.p.manifest, "\"lsn\":4242");
    ck_assert_ptr_nonnull(at);
    uint64_t pos = (uint64_t)(at - x.p.manifest) + 7;
    manifest_edit(&x.p, "\"lsn\":4242", "\"lsn\":4x42");
    size_t len = 0;
    uint8_t *b = assemble(&x.p, NULL, &len);
    tu_write_file(x.path, b, len);
    keel_diag d = {0};
    keel_snapshot_reader *r = NULL;
    ck_assert_int_eq(keel_snapshot_reader_open(x.path, NULL, &r, &d),
                     KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(d.msg, "manifest is not valid JSON"));
    /* jansson reports the position after the offending byte or at it. */
    char a1[600], a2[600];
    snprintf(a1, sizeof(a1), "%s: offset %" PRIu64 ": ", x.path,
             x.p.t.manifest_off + pos);
    snprintf(a2, sizeof(a2), "%s: offset %" PRIu64 ": ", x.path,
             x.p.t.manifest_off + pos + 1);
    ck_assert_msg(strncmp(d.msg, a1, strlen(a1)) == 0 ||
                      strncmp(d.msg, a2, strlen(a2)) == 0,
                  "diag %s, expected offset %" PRIu64, d.msg,
                  x.p.t.manifest_off + pos);
    free(b);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_manifest_members_are_refused)
{
    static const struct {
        const char *from;
        const char *to;
        const char *what;
    } cases[] = {
        {"\"format\":2", "\"format\":1",
         "manifest format 1, the header says 2"},
        {"\"timeline\":\"0000000000000000\"", "\"timelin\":\"0\"",
         "member \"timeline\" missing"},
        {"\"timeline_parent\":\"0000000000000000\"",
         "\"timeline_parent\":\"0x0000000000000000\"",
         "member \"timeline_parent\""},
        {"\"timeline_branch_lsn\":0", "\"timeline_branch_lsn\":-1",
         "member \"timeline_branch_lsn\""},
        {"\"lsn\":4242", "\"lsn\":-1", "member \"lsn\" missing or invalid"},
        {"\"crank\":77", "\"crnk\":77", "member \"crank\" missing"},
        {"\"kernel_id\":\"0x6b65656c736e6170\"",
         "\"kernel_id\":\"6b65656c736e6170\"", "member \"kernel_id\""},
        {"\"activity_hash\":\"0123456789abcdef\"",
         "\"activity_hash\":\"0123456789ABCDEF\"", "member \"activity_hash\""},
        {"\"frame_bytes\":64", "\"frame_bytes\":0", "member \"frame_bytes\""},
        {"\"zstd_level\":3", "\"zstd_level\":\"3\"", "member \"zstd_level\""},
        {"\"name\":\"empty\"", "\"name\":\"data\"",
         "manifest lists table \"data\" twice"},
        {"\"name\":\"empty\"", "\"name\":\"em pty\"", "manifest table 1"},
        {"\"tables\":[", "\"tables\":{\"x\":[", "member \"tables\""},
        {"{", "[{", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dmg x;
        dmg_init(&x);
        manifest_edit(&x.p, cases[i].from, cases[i].to);
        if (strcmp(cases[i].to, "\"tables\":{\"x\":[") == 0) {
            manifest_edit(&x.p, "]}", "]}}");
        }
        if (strcmp(cases[i].to, "[{") == 0) {
            /* "]}" occurs once: the tables array, then the object, end. */
            manifest_edit(&x.p, "]}", "]}]");
        }
        size_t len = 0;
        uint8_t *b = assemble(&x.p, NULL, &len);
        uint64_t at = len - KEEL__SNAPSHOT_TRAILER_BYTES - x.p.mlen;
        expect_refused(x.path, b, len, &x.m, KEEL_ECORRUPT, at, cases[i].what,
                       0);
        free(b);
        dmg_free(&x);
    }
}
END_TEST

START_TEST(test_snapshot_damage_manifest_counts_differ_from_trailer)
{
    dmg x;
    dmg_init(&x);
    manifest_edit(&x.p, "\"entries\":6", "\"entries\":5");
    dmg_expect(&x, KEEL_ECORRUPT, x.p.t.manifest_off,
               "manifest tables hold 7 entries", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_manifest_counts_differ_from_frames)
{
    /* Manifest and trailer agree with each other, not with the frames. */
    dmg x;
    dmg_init(&x);
    manifest_edit(&x.p, "\"entries\":6", "\"entries\":5");
    x.p.t.entries--;
    /* V4: the frame that brings "data" past 5 entries is refused before
     * any of its entries is returned. */
    size_t k = 0;
    while (entries_before(&x.p, k + 1) < 6) {
        k++;
    }
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[k],
               "table \"data\" reaches 6 entries, the manifest says 5",
               entries_before(&x.p, k));
    dmg_free(&x);

    dmg_init(&x);
    manifest_edit(&x.p, "\"entries\":6", "\"entries\":7");
    x.p.t.entries++;
    dmg_expect(&x, KEEL_ECORRUPT, x.p.t.manifest_off,
               "table \"data\": frames hold 6 entries", x.m.n);
    dmg_free(&x);

    /* Bytes alone. */
    dmg_init(&x);
    char from[64], to[64];
    uint64_t b = model_bytes(&x.m, 2);
    snprintf(from, sizeof(from), "\"bytes\":%" PRIu64 "}]", b);
    snprintf(to, sizeof(to), "\"bytes\":%" PRIu64 "}]", b + 1);
    manifest_edit(&x.p, from, to);
    x.p.t.bytes++;
    char what[128];
    snprintf(what, sizeof(what),
             "table \"meta\": frames hold 2 entries (%" PRIu64
             " bytes), the manifest says 2 (%" PRIu64 ")",
             b, b + 1);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.t.manifest_off, what, x.m.n);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_frame_count_differs_from_trailer)
{
    dmg x;
    dmg_init(&x);
    x.p.t.frames++;
    dmg_expect(&x, KEEL_ECORRUPT, x.p.t.manifest_off,
               "frames end at the manifest, the trailer says", x.m.n);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_frame_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    /* A bit of frame 2's compressed bytes. */
    x.buf[x.p.off[2] + KEEL__SNAPSHOT_FRAME_HEADER_BYTES + 3] ^= 0x04;
    char what[64];
    snprintf(what, sizeof(what), "frame 2: checksum of the compressed bytes");
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, x.p.off[2], what,
                   entries_before(&x.p, 2));
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_frame_header_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    x.buf[x.p.off[1] + 8] ^= 0x01; /* entries */
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, x.p.off[1],
                   "frame 1: frame header checksum 0x",
                   entries_before(&x.p, 1));
    dmg_free(&x);

    dmg_init(&x);
    keel__put_u32(x.buf + x.p.off[1], 0x12345678);
    expect_refused(x.path, x.buf, x.len, &x.m, KEEL_ECORRUPT, x.p.off[1],
                   "frame 1: bad frame magic 0x12345678, expected 0x5246534B",
                   entries_before(&x.p, 1));
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_raw_checksum_is_refused)
{
    dmg x;
    dmg_init(&x);
    x.p.fr[1].f.raw_hash ^= 1;
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[1],
               "frame 1: checksum of the decompressed bytes",
               entries_before(&x.p, 1));
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_file_checksum_is_refused)
{
    /* A frame rewritten whole (new contents, both frame hashes right, the
     * same entry count and bytes): only the file checksum can tell. */
    dmg x;
    dmg_init(&x);
    sframe *s = &x.p.fr[1];
    uint8_t *raw = frame_raw(s);
    raw[s->f.raw_len - 1] ^= 0x01; /* the last byte of the last value */
    frame_set_raw(s, s->f.table, s->f.entries, raw, s->f.raw_len);
    free(raw);
    uint64_t stale = x.p.t.file_hash;
    size_t len = 0;
    uint8_t *b = assemble(&x.p, &stale, &len);
    tu_write_file(x.path, b, len);
    keel_diag d = {0};
    keel_snapshot_entry e;
    keel_snapshot_reader *r = NULL;
    ck_assert_int_eq(keel_snapshot_reader_open(x.path, NULL, &r, &d), KEEL_OK);
    size_t n = 0;
    int rc;
    while ((rc = keel_snapshot_reader_next(r, &e, &d)) == 1) {
        n++;
    }
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_uint_eq(n, x.m.n);
    char prefix[600];
    snprintf(prefix, sizeof(prefix),
             "%s: offset %zu: file checksum 0x%016" PRIX64 ", computed 0x",
             x.path, len - 16, stale);
    ck_assert_msg(strncmp(d.msg, prefix, strlen(prefix)) == 0, "diag %s",
                  d.msg);
    keel_snapshot_reader_close(r);
    free(b);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_truncated_zstd_frame_is_refused)
{
    dmg x;
    dmg_init(&x);
    sframe *s = &x.p.fr[2];
    s->len -= 3;
    s->f.stored_len = (uint32_t)s->len;
    s->f.stored_hash = XXH3_64bits(s->stored, s->len);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[2],
               "frame 2: zstd frame does not parse", entries_before(&x.p, 2));
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_two_zstd_frames_are_refused)
{
    dmg x;
    dmg_init(&x);
    sframe *s = &x.p.fr[0];
    uint8_t *two = malloc(2 * s->len);
    ck_assert_ptr_nonnull(two);
    memcpy(two, s->stored, s->len);
    memcpy(two + s->len, s->stored, s->len);
    free(s->stored);
    s->stored = two;
    s->len *= 2;
    s->f.stored_len = (uint32_t)s->len;
    s->f.stored_hash = XXH3_64bits(s->stored, s->len);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], "frame 0: zstd frame is", 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_stored_length_past_manifest_is_refused)
{
    dmg x;
    dmg_init(&x);
    size_t last = x.p.nframes - 1;
    /* Still within the zstd bound, so only the position is wrong. */
    x.p.fr[last].f.stored_len += 10;
    ck_assert_uint_le(x.p.fr[last].f.stored_len,
                      keel__snapshot_compress_bound(x.p.fr[last].f.raw_len));
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[last],
               "runs past the manifest at offset", entries_before(&x.p, last));
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_keys_out_of_order_are_refused)
{
    /* Within a frame: frame 0's entries in reverse order. */
    dmg x;
    dmg_init(&x);
    sframe *s = &x.p.fr[0];
    ck_assert_uint_ge(s->f.entries, 2);
    uint8_t *raw = frame_raw(s);
    uint8_t *rev = malloc(s->f.raw_len);
    ck_assert_ptr_nonnull(rev);
    size_t pos = 0, end = s->f.raw_len;
    while (pos < s->f.raw_len) {
        size_t n = 8 + keel__get_u32(raw + pos) + keel__get_u32(raw + pos + 4);
        memcpy(rev + end - n, raw + pos, n);
        end -= n;
        pos += n;
    }
    frame_set_raw(s, 0, s->f.entries, rev, s->f.raw_len);
    free(raw);
    free(rev);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], "entry 1 at raw byte", 0);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], "key not above the previous key",
               0);
    dmg_free(&x);

    /* Across frames: frames 0 and 1 of "data" swapped. */
    dmg_init(&x);
    sframe t = x.p.fr[0];
    x.p.fr[0] = x.p.fr[1];
    x.p.fr[1] = t;
    uint64_t at = KEEL__SNAPSHOT_HEADER_BYTES +
                  KEEL__SNAPSHOT_FRAME_HEADER_BYTES + x.p.fr[0].len;
    dmg_expect_r(&x, 1, KEEL_ECORRUPT, at,
                 "frame 1 (table \"data\"): entry 0 at raw byte 0: key not "
                 "above",
                 x.p.fr[0].f.entries);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_tables_out_of_order_are_refused)
{
    /* The "meta" frame (table 2) moved first: "data" frames then go
     * backwards. */
    dmg x;
    dmg_init(&x);
    size_t last = x.p.nframes - 1;
    sframe meta = x.p.fr[last];
    memmove(&x.p.fr[1], &x.p.fr[0], last * sizeof(sframe));
    x.p.fr[0] = meta;
    uint64_t at = KEEL__SNAPSHOT_HEADER_BYTES +
                  KEEL__SNAPSHOT_FRAME_HEADER_BYTES + meta.len;
    /* The reader returns "meta"'s entries first, which the model has last:
     * compare only the count. */
    size_t len = 0;
    uint8_t *b = assemble(&x.p, NULL, &len);
    tu_write_file(x.path, b, len);
    keel_snapshot_reader *r = NULL;
    keel_diag d = {0};
    keel_snapshot_entry e;
    ck_assert_int_eq(keel_snapshot_reader_open(x.path, NULL, &r, &d), KEEL_OK);
    int rc;
    size_t n = 0;
    while ((rc = keel_snapshot_reader_next(r, &e, &d)) == 1) {
        ck_assert_str_eq(e.table, "meta");
        n++;
    }
    ck_assert_int_eq(rc, KEEL_ECORRUPT);
    ck_assert_uint_eq(n, meta.f.entries);
    char prefix[600];
    snprintf(prefix, sizeof(prefix),
             "%s: offset %" PRIu64 ": frame 1 is for table 0, expected 2 .. 2",
             x.path, at);
    ck_assert_msg(strncmp(d.msg, prefix, strlen(prefix)) == 0, "diag %s",
                  d.msg);
    keel_snapshot_reader_close(r);
    free(b);
    dmg_free(&x);

    dmg_init(&x);
    x.p.fr[0].f.table = 3;
    dmg_expect(&x, KEEL_ECORRUPT, KEEL__SNAPSHOT_HEADER_BYTES,
               "frame 0 is for table 3, expected 0 .. 2", 0);
    dmg_free(&x);
}
END_TEST

/* Set frame 0's first entry's lengths (UINT32_MAX: leave one as is) and
 * its entry count, recompressed with both hashes right. */
static void edit_first_entry(dmg *x, uint32_t klen, uint32_t vlen,
                             uint32_t entries)
{
    sframe *s = &x->p.fr[0];
    uint8_t *raw = frame_raw(s);
    if (klen != UINT32_MAX) {
        keel__put_u32(raw, klen);
    }
    if (vlen != UINT32_MAX) {
        keel__put_u32(raw + 4, vlen);
    }
    frame_set_raw(s, 0, entries, raw, s->f.raw_len);
    free(raw);
}

START_TEST(test_snapshot_damage_entry_lengths_are_refused)
{
    dmg x;
    dmg_init(&x);
    uint32_t n0 = x.p.fr[0].f.entries;
    edit_first_entry(&x, 1003, UINT32_MAX, n0);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0],
               "frame 0 (table \"data\"): entry 0 at raw byte 0: key length "
               "1003",
               0);
    dmg_free(&x);

    dmg_init(&x);
    edit_first_entry(&x, UINT32_MAX, 0x7fffffff, n0);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], "value length 2147483647", 0);
    dmg_free(&x);

    dmg_init(&x);
    edit_first_entry(&x, 0, UINT32_MAX, n0);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], "key length 0,", 0);
    dmg_free(&x);

    /* One entry fewer than the frame holds (it holds two): bytes left
     * over after the first. */
    ck_assert_uint_eq(n0, 2);
    dmg_init(&x);
    size_t first =
        KEEL__SNAPSHOT_ENTRY_HEADER_BYTES + x.m.e[0].klen + x.m.e[0].vlen;
    uint32_t raw_len = x.p.fr[0].f.raw_len;
    edit_first_entry(&x, UINT32_MAX, UINT32_MAX, 1);
    char what[128];
    snprintf(what, sizeof(what), "1 entries end at raw byte %zu of %" PRIu32,
             first, raw_len);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], what, 0);
    dmg_free(&x);

    /* More entries than the frame holds. */
    dmg_init(&x);
    edit_first_entry(&x, UINT32_MAX, UINT32_MAX, 3);
    snprintf(what, sizeof(what),
             "entry 2 at raw byte %" PRIu32 ": header needs 8 bytes, 0 left",
             raw_len);
    dmg_expect(&x, KEEL_ECORRUPT, x.p.off[0], what, 0);
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_every_truncation_is_refused)
{
    dmg x;
    dmg_init(&x);
    for (size_t cut = 0; cut < x.len; cut++) {
        char ctx[96];
        snprintf(ctx, sizeof(ctx), "cut at %zu of %zu", cut, x.len);
        tu_write_file(x.path, x.buf, cut);
        keel_diag d = {0};
        size_t n = 0;
        int rc = read_compare(x.path, &x.m, NULL, &n, &d, ctx);
        ck_assert_msg(rc == KEEL_ECORRUPT, "%s: %s: %s", ctx, keel_err_name(rc),
                      d.msg);
        ck_assert_msg(strncmp(d.msg, x.path, strlen(x.path)) == 0 &&
                          strstr(d.msg, ": offset ") != NULL,
                      "%s: diag %s", ctx, d.msg);
    }
    dmg_free(&x);
}
END_TEST

START_TEST(test_snapshot_damage_every_bit_flip_is_refused)
{
    dmg x;
    dmg_init(&x);
    uint64_t opened = 0;
    for (size_t bit = 0; bit < 8 * x.len; bit++) {
        char ctx[96];
        snprintf(ctx, sizeof(ctx), "bit %zu of %zu (byte %zu)", bit, 8 * x.len,
                 bit / 8);
        x.buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        tu_write_file(x.path, x.buf, x.len);
        x.buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        keel_diag d = {0};
        size_t n = 0;
        /* read_compare fails the test on any entry other than the one
         * written at its position. */
        int rc = read_compare(x.path, &x.m, NULL, &n, &d, ctx);
        ck_assert_msg(rc == KEEL_ECORRUPT, "%s: %s: %s", ctx, keel_err_name(rc),
                      d.msg);
        ck_assert_msg(strncmp(d.msg, x.path, strlen(x.path)) == 0 &&
                          strstr(d.msg, ": offset ") != NULL,
                      "%s: diag %s", ctx, d.msg);
        opened += bit / 8 >= KEEL__SNAPSHOT_HEADER_BYTES &&
                  bit / 8 < x.p.t.manifest_off;
    }
    /* Flips in frames pass open and are caught by next(). */
    ck_assert_uint_gt(opened, 0);
    dmg_free(&x);
}
END_TEST

/* ---- faults ---------------------------------------------------------------
 */

/* The fault layer, not the disk, decides what survives: /dev/shm when
 * TMPDIR is unset keeps the sweep's fsyncs cheap. */
static char *scratch_dir(void)
{
    const char *t = getenv("TMPDIR");
    if ((t == NULL || t[0] == '\0') && access("/dev/shm", W_OK) == 0) {
        char tmpl[] = "/dev/shm/keel-snapfaults-XXXXXX";
        if (mkdtemp(tmpl) != NULL) {
            char *d = strdup(tmpl);
            ck_assert_ptr_nonnull(d);
            return d;
        }
    }
    return tu_tmpdir("snapfaults");
}

typedef struct fx {
    char *dir;
    char *path;
    char *tmp;
    model old_m; /* the file already at path (if any) */
    uint8_t *old_buf;
    size_t old_len;
    model m; /* the one being written */
    uint8_t *new_buf;
    size_t new_len;
} fx;

static void fx_init(fx *x)
{
    memset(x, 0, sizeof(*x));
    x->dir = scratch_dir();
    x->path = tu_path(x->dir, "k.snap");
    x->tmp = tu_path(x->dir, "k.snap.tmp");
    random_model(&x->old_m, 7, 2, 20, 50);
    write_ok(x->path, &x->old_m, NULL, NULL, "old");
    x->old_buf = tu_read_file(x->path, &x->old_len);
    small_model(&x->m);
    keel_snapshot_options o = small_opts();
    write_ok(x->path, &x->m, &o, NULL, "new");
    x->new_buf = tu_read_file(x->path, &x->new_len);
    ck_assert(x->old_buf != NULL && x->new_buf != NULL);
    tu_write_file(x->path, x->old_buf, x->old_len);
}

static void fx_free(fx *x)
{
    model_free(&x->old_m);
    model_free(&x->m);
    free(x->old_buf);
    free(x->new_buf);
    free(x->tmp);
    free(x->path);
    tu_rmrf(x->dir);
    free(x->dir);
}

/* 1 if path holds exactly buf[len]. */
static int holds(const char *path, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    uint8_t *b = tu_read_file(path, &n);
    int same = b != NULL && n == len && memcmp(b, buf, len) == 0;
    free(b);
    return same;
}

/* Write x->m through the fault layer f. */
static int fx_write(fx *x, keel_io_fault *f, keel_diag *d)
{
    keel_snapshot_options o = small_opts();
    o.io = keel__io_fault_io(f);
    return write_model(x->path, &x->m, &o, NULL, d);
}

/*
 * Crash just before or after I/O operation n of the write, for every n,
 * then lose power (keeping none, or a seeded prefix, of the unsynced
 * bytes): the final name holds the old file (or nothing, with_old == 0) up
 * to the rename and the new complete one from it on (S1); a stale .tmp is
 * then refused until the caller removes it (S2).
 */
static void crash_sweep(int with_old)
{
    uint64_t seed = test_seed();
    fx x;
    fx_init(&x);
    if (!with_old) {
        ck_assert_int_eq(unlink(x.path), 0);
    }
    /* A clean run through the layer counts the operations and finds the
     * rename: finish() ends with rename, then the directory fsync. */
    keel_io_fault *f = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    ck_assert_int_eq(fx_write(&x, f, &d), KEEL_OK);
    uint64_t total = keel__io_fault_count(f, KEEL_IO_OP_ANY);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_RENAME), 1);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_FSYNC_DIR), 1);
    ck_assert_uint_eq(keel__io_fault_count(f, KEEL_IO_OP_FSYNC), 1);
    uint64_t rename_at = total - 1;
    keel__io_fault_free(f);

    static const enum keel_io_fault_kind kinds[] = {KEEL_IO_FAULT_CRASH_BEFORE,
                                                    KEEL_IO_FAULT_CRASH_AFTER};
    for (uint64_t n = 1; n <= total; n++) {
        for (size_t k = 0; k < 2; k++) {
            for (int keep_random = 0; keep_random < 2; keep_random++) {
                uint64_t st = seed ^ (n * 4 + k * 2 + (uint64_t)keep_random);
                uint64_t keep = keep_random ? tu_rand(&st) % 2000 : 0;
                char ctx[200];
                snprintf(ctx, sizeof(ctx),
                         "%s at op %" PRIu64 " of %" PRIu64 ", keep %" PRIu64
                         " (seed 0x%016" PRIx64 "), %s",
                         k == 0 ? "crash before" : "crash after", n, total,
                         keep, seed, with_old ? "old file" : "no old file");
                if (with_old) {
                    tu_write_file(x.path, x.old_buf, x.old_len);
                } else {
                    unlink(x.path);
                }
                unlink(x.tmp);
                ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
                keel_io_fault_plan plan = {
                    .kind = kinds[k], .op = KEEL_IO_OP_ANY, .nth = n};
                keel__io_fault_set_plan(f, &plan);
                int rc = fx_write(&x, f, &d);
                ck_assert_msg(keel__io_fault_crashed(f), "%s: no crash", ctx);
                ck_assert_msg(rc == KEEL_OK || rc == KEEL_EIO,
                              "%s: write returned %s: %s", ctx,
                              keel_err_name(rc), d.msg);
                ck_assert_int_eq(keel__io_fault_power_loss(f, keep), KEEL_OK);
                keel__io_fault_free(f);

                int renamed =
                    n > rename_at ||
                    (n == rename_at && kinds[k] == KEEL_IO_FAULT_CRASH_AFTER);
                if (renamed) {
                    ck_assert_msg(holds(x.path, x.new_buf, x.new_len),
                                  "%s: the final name does not hold the new "
                                  "snapshot",
                                  ctx);
                    read_ok(x.path, &x.m, NULL, ctx);
                } else if (with_old) {
                    ck_assert_msg(holds(x.path, x.old_buf, x.old_len),
                                  "%s: the old snapshot changed", ctx);
                } else {
                    ck_assert_msg(!file_exists(x.path),
                                  "%s: a file under the final name", ctx);
                }
                /* S2: whatever .tmp the crash left is refused, not reused,
                 * until the caller removes it. */
                if (file_exists(x.tmp)) {
                    keel_snapshot_writer *w2 = NULL;
                    ck_assert_int_eq(keel_snapshot_writer_open(
                                         x.path, NULL, &test_meta, &w2, &d),
                                     KEEL_EEXIST);
                    ck_assert_int_eq(unlink(x.tmp), 0);
                }
                write_ok(x.path, &x.m, NULL, NULL, ctx);
            }
        }
    }
    fx_free(&x);
}

START_TEST(test_snapshot_faults_crash_at_every_op_keeps_old_or_new)
{
    crash_sweep(1);
}
END_TEST

START_TEST(test_snapshot_faults_crash_at_every_op_without_old_file)
{
    crash_sweep(0);
}
END_TEST

/*
 * Run the write with one planned fault; it must return `code` from the call
 * that hit it (diag containing `what`), KEEL_EFAILED from every later call,
 * and leave the old file (or, once renamed, the new one).
 */
static void sticky_mode(const keel_io_fault_plan *plan, int code,
                        const char *what, int new_survives, int background)
{
    fx x;
    fx_init(&x);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel__io_fault_set_plan(f, plan);
    keel_snapshot_options o = small_opts();
    o.io = keel__io_fault_io(f);
    o.background = background;
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(x.path, &o, &test_meta, &w, &d),
                     KEEL_OK);
    int rc = KEEL_OK;
    uint32_t next_table = 0;
    for (size_t i = 0; rc == KEEL_OK && i < x.m.n; i++) {
        while (rc == KEEL_OK && next_table <= x.m.e[i].table) {
            rc = keel_snapshot_writer_add_table(w, x.m.names[next_table++], &d);
        }
        if (rc == KEEL_OK) {
            rc = keel_snapshot_writer_put(w, x.m.e[i].key, x.m.e[i].klen,
                                          x.m.e[i].val, x.m.e[i].vlen, &d);
        }
    }
    if (rc == KEEL_OK) {
        rc = keel_snapshot_writer_finish(w, NULL, &d);
    }
    ck_assert_msg(rc == code, "expected %s, got %s: %s", keel_err_name(code),
                  keel_err_name(rc), d.msg);
    ck_assert_msg(strstr(d.msg, what) != NULL, "diag %s, expected \"%s\"",
                  d.msg, what);
    ck_assert_int_eq(keel_snapshot_writer_failed(w), code);
    /* S3: every later call. */
    ck_assert_int_eq(keel_snapshot_writer_put(w, "zz", 2, "v", 1, &d),
                     KEEL_EFAILED);
    ck_assert_ptr_nonnull(strstr(d.msg, what));
    ck_assert_int_eq(keel_snapshot_writer_add_table(w, "later", &d),
                     KEEL_EFAILED);
    ck_assert_int_eq(keel_snapshot_writer_finish(w, NULL, &d), KEEL_EFAILED);
    ck_assert_int_eq(keel_snapshot_writer_failed(w), code);
    keel_snapshot_writer_close(w);
    keel__io_fault_free(f);
    ck_assert_msg(!file_exists(x.tmp), "the .tmp survived close");
    if (new_survives) {
        ck_assert(holds(x.path, x.new_buf, x.new_len));
    } else {
        ck_assert(holds(x.path, x.old_buf, x.old_len));
    }
    fx_free(&x);
}

/* The same failure with frames written in the caller's thread and by the
 * background compressor (reported by a later call: S8). */
static void sticky(const keel_io_fault_plan *plan, int code, const char *what,
                   int new_survives)
{
    sticky_mode(plan, code, what, new_survives, 0);
    sticky_mode(plan, code, what, new_survives, 1);
}

START_TEST(test_snapshot_faults_fsync_eio_fails_sticky)
{
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FAIL,
                            .op = KEEL_IO_OP_FSYNC,
                            .nth = 1,
                            .err = KEEL_EIO};
    sticky(&p, KEEL_EIO, "k.snap.tmp: fdatasync: I/O error", 0);
}
END_TEST

START_TEST(test_snapshot_faults_pwrite_enospc_fails_sticky)
{
    /* The second write is a frame written from put(). */
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FAIL,
                            .op = KEEL_IO_OP_PWRITE,
                            .nth = 2,
                            .err = KEEL_ENOSPC};
    sticky(&p, KEEL_ENOSPC,
           "k.snap.tmp: offset 24: write frame: no space left on device", 0);
}
END_TEST

START_TEST(test_snapshot_faults_torn_write_fails_sticky)
{
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_SHORT_WRITE,
                            .op = KEEL_IO_OP_PWRITE,
                            .nth = 3,
                            .err = KEEL_EIO,
                            .torn_bytes = 10};
    sticky(&p, KEEL_EIO, "write frame: I/O error", 0);
}
END_TEST

START_TEST(test_snapshot_faults_rename_failure_fails_sticky)
{
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FAIL,
                            .op = KEEL_IO_OP_RENAME,
                            .nth = 1,
                            .err = KEEL_EIO};
    sticky(&p, KEEL_EIO, "rename over the snapshot: I/O error", 0);
}
END_TEST

START_TEST(test_snapshot_faults_dir_fsync_failure_keeps_new_file)
{
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FAIL,
                            .op = KEEL_IO_OP_FSYNC_DIR,
                            .nth = 1,
                            .err = KEEL_EIO};
    sticky(&p, KEEL_EIO, "fsync directory: I/O error", 1);
}
END_TEST

START_TEST(test_snapshot_faults_header_write_failure_fails_open)
{
    fx x;
    fx_init(&x);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FAIL,
                            .op = KEEL_IO_OP_PWRITE,
                            .nth = 1,
                            .err = KEEL_EIO};
    keel__io_fault_set_plan(f, &p);
    keel_snapshot_options o = small_opts();
    o.io = keel__io_fault_io(f);
    keel_snapshot_writer *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_snapshot_writer_open(x.path, &o, &test_meta, &w, &d),
                     KEEL_EIO);
    ck_assert_ptr_null(w);
    ck_assert_ptr_nonnull(strstr(d.msg, "offset 0: write header: I/O error"));
    ck_assert(!file_exists(x.tmp));
    ck_assert(holds(x.path, x.old_buf, x.old_len));
    keel__io_fault_free(f);
    fx_free(&x);
}
END_TEST

/* A bit flipped in what any read returns is refused, never misread. */
START_TEST(test_snapshot_faults_flip_read_is_refused)
{
    uint64_t seed = test_seed();
    fx x;
    fx_init(&x);
    tu_write_file(x.path, x.new_buf, x.new_len);
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    o.io = keel__io_fault_io(f);
    keel_diag d = {0};
    size_t n = 0;
    ck_assert_int_eq(read_compare(x.path, &x.m, &o, &n, &d, "clean"), 0);
    uint64_t preads = keel__io_fault_count(f, KEEL_IO_OP_PREAD);
    keel__io_fault_free(f);
    ck_assert_uint_ge(preads, 4);
    for (uint64_t i = 1; i <= preads; i++) {
        for (int j = 0; j < 16; j++) {
            uint64_t st = seed ^ (i * 64 + (uint64_t)j);
            keel_io_fault_plan p = {.kind = KEEL_IO_FAULT_FLIP_READ,
                                    .op = KEEL_IO_OP_PREAD,
                                    .nth = i,
                                    .flip_bit = tu_rand(&st)};
            char ctx[128];
            snprintf(ctx, sizeof(ctx),
                     "flip bit %" PRIu64 " of pread %" PRIu64
                     " (seed 0x%016" PRIx64 ")",
                     p.flip_bit, i, seed);
            ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
            keel__io_fault_set_plan(f, &p);
            o.io = keel__io_fault_io(f);
            int rc = read_compare(x.path, &x.m, &o, &n, &d, ctx);
            ck_assert_msg(rc == KEEL_ECORRUPT, "%s: %s: %s", ctx,
                          keel_err_name(rc), d.msg);
            keel__io_fault_free(f);
        }
    }
    fx_free(&x);
}
END_TEST

Suite *snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("round_trip");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_snapshot_round_trip_random_tables_read_back);
    tcase_add_test(tc, test_snapshot_round_trip_manifest_reads_back);
    tcase_add_test(tc, test_snapshot_round_trip_no_tables_reads_back);
    tcase_add_test(tc, test_snapshot_round_trip_large_values_read_back);
    tcase_add_test(tc, test_snapshot_round_trip_many_frames_read_back);
    tcase_add_test(tc, test_snapshot_finish_replaces_existing_file);
    tcase_add_test(tc, test_snapshot_background_writes_identical_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_add_test(tc, test_snapshot_put_out_of_order_is_refused);
    tcase_add_test(tc, test_snapshot_bad_arguments_are_refused);
    tcase_add_test(tc, test_snapshot_stale_tmp_is_refused_and_kept);
    tcase_add_test(tc, test_snapshot_close_unfinished_removes_tmp);
    tcase_add_test(tc, test_snapshot_missing_file_is_enoent);
    suite_add_tcase(s, tc);

    tc = tcase_create("damage");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_snapshot_damage_reassembled_file_is_sound);
    tcase_add_test(tc, test_snapshot_damage_bad_magic_is_refused);
    tcase_add_test(tc, test_snapshot_damage_header_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_newer_version_is_refused);
    tcase_add_test(tc, test_snapshot_damage_truncated_file_is_refused);
    tcase_add_test(tc, test_snapshot_damage_appended_bytes_are_refused);
    tcase_add_test(tc, test_snapshot_damage_trailer_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_manifest_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_manifest_not_json_is_refused);
    tcase_add_test(tc, test_snapshot_damage_manifest_members_are_refused);
    tcase_add_test(tc,
                   test_snapshot_damage_manifest_counts_differ_from_trailer);
    tcase_add_test(tc, test_snapshot_damage_manifest_counts_differ_from_frames);
    tcase_add_test(tc, test_snapshot_damage_frame_count_differs_from_trailer);
    tcase_add_test(tc, test_snapshot_damage_frame_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_frame_header_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_raw_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_file_checksum_is_refused);
    tcase_add_test(tc, test_snapshot_damage_truncated_zstd_frame_is_refused);
    tcase_add_test(tc, test_snapshot_damage_two_zstd_frames_are_refused);
    tcase_add_test(tc,
                   test_snapshot_damage_stored_length_past_manifest_is_refused);
    tcase_add_test(tc, test_snapshot_damage_keys_out_of_order_are_refused);
    tcase_add_test(tc, test_snapshot_damage_tables_out_of_order_are_refused);
    tcase_add_test(tc, test_snapshot_damage_entry_lengths_are_refused);
    tcase_add_test(tc, test_snapshot_damage_every_truncation_is_refused);
    tcase_add_test(tc, test_snapshot_damage_every_bit_flip_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("faults");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_snapshot_faults_crash_at_every_op_keeps_old_or_new);
    tcase_add_test(tc, test_snapshot_faults_crash_at_every_op_without_old_file);
    tcase_add_test(tc, test_snapshot_faults_fsync_eio_fails_sticky);
    tcase_add_test(tc, test_snapshot_faults_pwrite_enospc_fails_sticky);
    tcase_add_test(tc, test_snapshot_faults_torn_write_fails_sticky);
    tcase_add_test(tc, test_snapshot_faults_rename_failure_fails_sticky);
    tcase_add_test(tc, test_snapshot_faults_dir_fsync_failure_keeps_new_file);
    tcase_add_test(tc, test_snapshot_faults_header_write_failure_fails_open);
    tcase_add_test(tc, test_snapshot_faults_flip_read_is_refused);
    suite_add_tcase(s, tc);
    return s;
}
