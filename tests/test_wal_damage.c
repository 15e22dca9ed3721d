/*
 * tests/test_wal_damage.c — one test per kind of damage to a WAL on disk.
 *
 * Each test writes a small log through the public API, finds where its
 * records lie (segment, offset, length) with a reader, then damages the
 * bytes at an offset computed from the layout of wal/wal_format.h: records
 * are re-encoded with the format's own encoders where the damage must carry
 * a good checksum (an LSN gap, an unknown kind, a newer version). It then
 * asserts the exact error code, a diag naming the file and `offset N`, and
 * what survived: the records a reader returns before the error (always a
 * prefix of what was written, with identical payloads), and that a writer
 * refusing the log changed no byte of it.
 *
 * The sweeps at the end flip every bit of a small log, once for the reader
 * and once for the writer, and classify every outcome.
 */
#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "keel/keel.h"
#include "tests/testutil.h"
#include "wal/wal_format.h"
#include "wal/wal_internal.h"

Suite *wal_damage_suite(void);

#define MAX_RECS 16

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/*
 * A log written for a test: its directory, what each record holds and
 * where it lies. Record i has LSN i + 1.
 */
typedef struct fixture {
    char *dir;
    size_t n;
    uint64_t kernel_id;
    uint8_t *payload[MAX_RECS];
    size_t len[MAX_RECS];
    int kind[MAX_RECS];
    uint64_t crank[MAX_RECS];
    char seg[MAX_RECS][64];
    uint64_t off[MAX_RECS];
    uint32_t stored[MAX_RECS];
} fixture;

/*
 * Write records of the given payload lengths with the given rollover size
 * (compressible payloads, compressed from compress_min bytes on, when
 * compressible is set), then record where each one landed.
 */
static void fx_build(fixture *fx, const char *tag, const size_t *lens, size_t n,
                     uint64_t seg_bytes, int compressible,
                     uint32_t compress_min)
{
    ck_assert_uint_le(n, MAX_RECS);
    memset(fx, 0, sizeof(*fx));
    fx->dir = tu_tmpdir(tag);
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.segment_bytes = seg_bytes;
    o.compress_min_bytes = compress_min;
    keel_wal *w = NULL;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(fx->dir, &o, &w, NULL, &d), KEEL_OK);
    fx->kernel_id = keel_wal_kernel_id(w);
    uint64_t st = 0xda3a9e00u + n;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = malloc(lens[i] ? lens[i] : 1);
        ck_assert_ptr_nonnull(p);
        for (size_t j = 0; j < lens[i]; j++) {
            p[j] = compressible ? (uint8_t)('a' + (j / 7 + i) % 3)
                                : (uint8_t)tu_rand(&st);
        }
        fx->payload[i] = p;
        fx->len[i] = lens[i];
        fx->kind[i] = 1 + (int)(i % 4);
        fx->crank[i] = 100 + i;
        uint64_t lsn = 0;
        ck_assert_int_eq(
            keel_wal_append(w, fx->kind[i], fx->crank[i], p, lens[i], &lsn, &d),
            KEEL_OK);
        ck_assert_uint_eq(lsn, i + 1);
    }
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    fx->n = n;

    keel_wal_reader *r = NULL;
    ck_assert_int_eq(keel_wal_reader_open(fx->dir, NULL, 0, &r, &d), KEEL_OK);
    keel_wal_record rec;
    size_t i = 0;
    int rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        ck_assert_uint_lt(i, n);
        snprintf(fx->seg[i], sizeof(fx->seg[i]), "%s", rec.segment);
        fx->off[i] = rec.offset;
        fx->stored[i] = rec.stored_len;
        i++;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(i, n);
    keel_wal_reader_close(r);
}

static void fx_free(fixture *fx)
{
    for (size_t i = 0; i < fx->n; i++) {
        free(fx->payload[i]);
    }
    tu_rmrf(fx->dir);
    free(fx->dir);
}

/* Offset just past record i. */
static uint64_t fx_end(const fixture *fx, size_t i)
{
    return fx->off[i] + KEEL_WAL_REC_OVERHEAD_BYTES + fx->stored[i];
}

static uint8_t *fx_read(const fixture *fx, const char *name, size_t *len)
{
    char *p = tu_path(fx->dir, name);
    uint8_t *b = tu_read_file(p, len);
    ck_assert_msg(b != NULL, "read %s", p);
    free(p);
    return b;
}

static void fx_write(const fixture *fx, const char *name, const uint8_t *b,
                     size_t len)
{
    char *p = tu_path(fx->dir, name);
    tu_write_file(p, b, len);
    free(p);
}

/* Re-encode the header of record i (in a segment image b) from h and fix
 * its checksum, so the damage is one a checksum cannot see. */
static void reencode(const fixture *fx, uint8_t *b, size_t i,
                     const keel_wal_rec_header *h)
{
    uint8_t *rec = b + fx->off[i];
    keel__wal_rec_encode(rec, h);
    uint64_t sum = keel__wal_rec_checksum(
        get_u64(b + 24), rec, rec + KEEL_WAL_REC_HEADER_BYTES, h->stored_len);
    put_u64(rec + KEEL_WAL_REC_HEADER_BYTES + h->stored_len, sum);
}

/* ---- outcomes ------------------------------------------------------------ */

/* What a reader made of a log. */
typedef struct outcome {
    int open_rc; /* keel_wal_reader_open */
    int rc;      /* the last keel_wal_reader_next, if opened */
    size_t got;  /* records returned */
    keel_diag d;
    keel_wal_tail tail;
} outcome;

/*
 * Read the whole log and assert that every record returned is the next one
 * written, byte for byte (never a wrong payload, never a record that was
 * not written); an error must repeat on the next call (sticky).
 */
static outcome read_log(const fixture *fx, const char *dir)
{
    outcome oc;
    memset(&oc, 0, sizeof(oc));
    keel_wal_reader *r = NULL;
    oc.open_rc = keel_wal_reader_open(dir, NULL, 0, &r, &oc.d);
    if (oc.open_rc < 0) {
        ck_assert_ptr_null(r);
        ck_assert_int_eq(oc.d.code, oc.open_rc);
        oc.rc = oc.open_rc;
        return oc;
    }
    keel_wal_record rec;
    while ((oc.rc = keel_wal_reader_next(r, &rec, &oc.d)) == 1) {
        size_t i = oc.got;
        ck_assert_msg(i < fx->n, "extra record LSN %" PRIu64, rec.lsn);
        ck_assert_uint_eq(rec.lsn, i + 1);
        ck_assert_int_eq(rec.kind, fx->kind[i]);
        ck_assert_uint_eq(rec.crank, fx->crank[i]);
        ck_assert_uint_eq(rec.payload.len, fx->len[i]);
        ck_assert_msg(fx->len[i] == 0 || memcmp(rec.payload.ptr, fx->payload[i],
                                                fx->len[i]) == 0,
                      "LSN %" PRIu64 ": wrong payload", rec.lsn);
        oc.got++;
    }
    if (oc.rc < 0) {
        ck_assert_int_eq(oc.d.code, oc.rc);
        keel_diag again = {0};
        ck_assert_int_eq(keel_wal_reader_next(r, &rec, &again), oc.rc);
        ck_assert_str_eq(again.msg, oc.d.msg);
    } else {
        keel_wal_reader_tail(r, &oc.tail);
    }
    keel_wal_reader_close(r);
    return oc;
}

/* Every file of a directory, for before/after comparison. */
typedef struct dir_image {
    size_t n;
    char *name[MAX_RECS];
    uint8_t *bytes[MAX_RECS];
    size_t len[MAX_RECS];
} dir_image;

static void image_take(const char *dir, dir_image *im)
{
    memset(im, 0, sizeof(*im));
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        ck_assert_uint_lt(im->n, MAX_RECS);
        char *p = tu_path(dir, e->d_name);
        im->name[im->n] = strdup(e->d_name);
        im->bytes[im->n] = tu_read_file(p, &im->len[im->n]);
        ck_assert_ptr_nonnull(im->bytes[im->n]);
        free(p);
        im->n++;
    }
    closedir(dh);
}

static void image_free(dir_image *im)
{
    for (size_t i = 0; i < im->n; i++) {
        free(im->name[i]);
        free(im->bytes[i]);
    }
}

/* Assert dir holds exactly the files and bytes of im. */
static void image_check(const char *dir, const dir_image *im)
{
    dir_image now;
    image_take(dir, &now);
    ck_assert_uint_eq(now.n, im->n);
    for (size_t i = 0; i < im->n; i++) {
        size_t j = 0;
        while (j < now.n && strcmp(now.name[j], im->name[i]) != 0) {
            j++;
        }
        ck_assert_msg(j < now.n, "%s vanished", im->name[i]);
        ck_assert_msg(now.len[j] == im->len[i] &&
                          memcmp(now.bytes[j], im->bytes[i], im->len[i]) == 0,
                      "%s changed", im->name[i]);
    }
    image_free(&now);
}

static void assert_msg_has(const keel_diag *d, const char *const *want)
{
    for (size_t i = 0; want[i] != NULL; i++) {
        ck_assert_msg(strstr(d->msg, want[i]) != NULL,
                      "diag \"%s\" lacks \"%s\"", d->msg, want[i]);
    }
}

/*
 * The damaged log in fx->dir must be refused with `code` and a diag holding
 * every string of want: by keel_wal_reader_open() itself when at_open, else
 * by keel_wal_reader_next() after exactly `survived` intact records; and by
 * keel_wal_open(), which must leave every file as it was.
 */
static void expect_refused(const fixture *fx, int code, int at_open,
                           size_t survived, const char *const *want)
{
    outcome oc = read_log(fx, fx->dir);
    if (at_open) {
        ck_assert_msg(oc.open_rc == code, "reader_open: %s (%s)",
                      keel_err_name(oc.open_rc), oc.d.msg);
    } else {
        ck_assert_msg(oc.open_rc == KEEL_OK, "reader_open: %s (%s)",
                      keel_err_name(oc.open_rc), oc.d.msg);
        ck_assert_msg(oc.rc == code, "reader: %s (%s)", keel_err_name(oc.rc),
                      oc.d.msg);
        ck_assert_uint_eq(oc.got, survived);
    }
    assert_msg_has(&oc.d, want);

    dir_image before;
    image_take(fx->dir, &before);
    keel_wal *w = NULL;
    keel_wal_open_info info;
    keel_diag d = {0};
    int rc = keel_wal_open(fx->dir, NULL, &w, &info, &d);
    ck_assert_msg(rc == code, "keel_wal_open: %s (%s)", keel_err_name(rc),
                  d.msg);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(d.code, code);
    assert_msg_has(&d, want);
    image_check(fx->dir, &before);
    image_free(&before);
}

/*
 * Read fx->dir with a reader that checks segment headers as it reaches them
 * (keel__wal_reader_open_lazy) and assert where it stops: the damage kind,
 * segment, offset (0: its header), the LSN expected there and the code
 * next() returned (0: a torn tail). Every record before it must report its
 * own position.
 */
static keel_wal_pos expect_pos(const fixture *fx, int damage, const char *seg,
                               uint64_t off, uint64_t lsn, int code)
{
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    keel_wal_pos p;
    ck_assert_int_eq(keel__wal_reader_open_lazy(fx->dir, NULL, 0, &r, &d),
                     KEEL_OK);
    keel_wal_record rec;
    int rc;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        keel_wal_reader_pos(r, &p);
        ck_assert_int_eq(p.damage, KEEL_WAL_DAMAGE_NONE);
        ck_assert_int_eq(p.code, 0);
        ck_assert_str_eq(p.segment, rec.segment);
        ck_assert_uint_eq(p.offset, rec.offset);
        ck_assert_uint_eq(p.lsn, rec.lsn);
        ck_assert(p.have_len);
        ck_assert_uint_eq(p.declared_len, rec.stored_len);
    }
    keel_wal_reader_pos(r, &p);
    keel_wal_reader_close(r);
    ck_assert_msg(p.damage == damage, "damage %s, expected %s (%s)",
                  keel_wal_damage_name(p.damage), keel_wal_damage_name(damage),
                  p.reason);
    ck_assert_int_eq(rc, code);
    ck_assert_int_eq(p.code, code);
    ck_assert_str_eq(p.segment, seg);
    ck_assert_uint_eq(p.offset, off);
    ck_assert_uint_eq(p.lsn, lsn);
    ck_assert(p.reason[0] != '\0');
    /* the diag of an error names the same place and reason */
    if (code < 0) {
        ck_assert_msg(strstr(d.msg, p.segment) && strstr(d.msg, p.reason),
                      "diag \"%s\" vs reason \"%s\"", d.msg, p.reason);
    }
    return p;
}

/* Two segments of three 1000-byte records each (4 KiB rollover). */
static void build_two_segments(fixture *fx, const char *tag)
{
    static const size_t lens[] = {1000, 1000, 1000, 1000, 1000, 1000};
    fx_build(fx, tag, lens, 6, 4096, 0, 0);
    ck_assert_str_eq(fx->seg[0], "00000000000000000001.seg");
    ck_assert_str_eq(fx->seg[3], "00000000000000000004.seg");
    ck_assert_str_eq(fx->seg[5], "00000000000000000004.seg");
}

/* Five records of a few hundred bytes in one segment. */
static void build_one_segment(fixture *fx, const char *tag)
{
    static const size_t lens[] = {120, 300, 77, 256, 90};
    fx_build(fx, tag, lens, 5, 64 * 1024, 0, 0);
    ck_assert_str_eq(fx->seg[4], "00000000000000000001.seg");
}

/* ---- segment headers ----------------------------------------------------- */

START_TEST(test_wal_damage_empty_segment_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-empty");
    static const uint8_t none[1] = {0};
    fx_write(&fx, fx.seg[3], none, 0);
    const char *want[] = {"00000000000000000004.seg: offset 0: "
                          "bad segment header",
                          NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_HEADER, fx.seg[3], 0, 4, KEEL_ECORRUPT);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_short_segment_header_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-short");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[3], &len);
    fx_write(&fx, fx.seg[3], b, KEEL_WAL_SEG_HEADER_BYTES - 1);
    const char *want[] = {"00000000000000000004.seg: offset 0: "
                          "bad segment header",
                          "file has 39 bytes", NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_HEADER, fx.seg[3], 0, 4, KEEL_ECORRUPT);
    free(b);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_bad_segment_magic_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-smagic");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[0], &len);
    put_u32(b, 0x4745534Cu); /* "LSEG": one bit off */
    fx_write(&fx, fx.seg[0], b, len);
    const char *want[] = {"00000000000000000001.seg: offset 0: "
                          "bad segment header: magic 0x4745534C, "
                          "expected 0x4745534B",
                          NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_HEADER, fx.seg[0], 0, 1, KEEL_ECORRUPT);
    free(b);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_segment_header_checksum_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-scsum");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[3], &len);
    b[16] ^= 0x02; /* first LSN 4 -> 6, checksum left alone */
    fx_write(&fx, fx.seg[3], b, len);
    const char *want[] = {"00000000000000000004.seg: offset 0: "
                          "bad segment header: checksum",
                          NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_HEADER, fx.seg[3], 0, 4, KEEL_ECORRUPT);
    free(b);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_unknown_format_version_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-version");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[0], &len);
    keel_wal_seg_header h = {.version = KEEL_WAL_FORMAT_VERSION + 1,
                             .kernel_id = get_u64(b + 8),
                             .first_lsn = get_u64(b + 16),
                             .salt = get_u64(b + 24)};
    ck_assert_uint_eq(h.kernel_id, fx.kernel_id);
    ck_assert_uint_eq(h.first_lsn, 1);
    keel__wal_seg_encode(b, &h);
    /* The crafted header is well formed but for its version. */
    ck_assert_uint_eq(get_u32(b), KEEL_WAL_SEG_MAGIC);
    ck_assert_uint_eq(get_u32(b + 4), 3);
    ck_assert_uint_eq(get_u64(b + 32), XXH3_64bits(b, 32));
    fx_write(&fx, fx.seg[0], b, len);
    const char *want[] = {"00000000000000000001.seg: offset 0: "
                          "unsupported format version 3",
                          NULL};
    expect_refused(&fx, KEEL_EVERSION, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_HEADER, fx.seg[0], 0, 1, KEEL_EVERSION);
    free(b);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_wrong_kernel_id_in_later_segment_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-kid");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[3], &len);
    uint64_t other = fx.kernel_id ^ 0x8000000000000001ull;
    keel_wal_seg_header h = {
        .version = KEEL_WAL_FORMAT_VERSION, .kernel_id = other, .first_lsn = 4};
    keel__wal_seg_encode(b, &h);
    fx_write(&fx, fx.seg[3], b, len);
    char exact[200];
    snprintf(exact, sizeof(exact),
             "00000000000000000004.seg: offset 8: wrong kernel id 0x%016" PRIX64
             ", expected 0x%016" PRIX64,
             other, fx.kernel_id);
    const char *want[] = {exact, NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_KERNEL, fx.seg[3], 0, 4, KEEL_ECORRUPT);
    free(b);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_missing_middle_segment_is_refused)
{
    static const size_t lens[] = {1000, 1000, 1000, 1000, 1000,
                                  1000, 1000, 1000, 1000};
    fixture fx;
    fx_build(&fx, "dmg-missing", lens, 9, 4096, 0, 0);
    ck_assert_str_eq(fx.seg[3], "00000000000000000004.seg");
    ck_assert_str_eq(fx.seg[6], "00000000000000000007.seg");
    char *p = tu_path(fx.dir, fx.seg[3]);
    ck_assert_int_eq(unlink(p), 0);
    free(p);
    /* Segment 1's three records survive; the gap shows at segment 7. */
    const char *want[] = {"00000000000000000007.seg: offset 16: LSN gap: "
                          "segment starts at LSN 7 (expected LSN 4)",
                          NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 0, 3, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_GAP, fx.seg[6], 0, 4, KEEL_ECORRUPT);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_segment_name_mismatch_is_refused)
{
    fixture fx;
    build_two_segments(&fx, "dmg-name");
    char *from = tu_path(fx.dir, fx.seg[3]);
    char *to = tu_path(fx.dir, "00000000000000000005.seg");
    ck_assert_int_eq(rename(from, to), 0);
    const char *want[] = {"00000000000000000005.seg: offset 16: "
                          "segment name does not match first LSN 4",
                          NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 1, 0, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_SEG_NAME, "00000000000000000005.seg", 0, 4,
               KEEL_ECORRUPT);
    free(from);
    free(to);
    fx_free(&fx);
}
END_TEST

/* ---- records followed by valid records ----------------------------------- */

/* Damage record 2 (LSN 3) of a one-segment log with fn, and expect it
 * refused after two records with `reason` at its offset and the next
 * record named as valid. */
static void damage_middle(const char *tag,
                          void (*fn)(const fixture *, uint8_t *),
                          const char *reason, int damage)
{
    fixture fx;
    build_one_segment(&fx, tag);
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[2], &len);
    fn(&fx, b);
    fx_write(&fx, fx.seg[2], b, len);
    char at[160], follows[160];
    snprintf(at, sizeof(at), "00000000000000000001.seg: offset %" PRIu64 ": %s",
             fx.off[2], reason);
    snprintf(follows, sizeof(follows),
             "(expected LSN 3); a valid record follows at offset %" PRIu64,
             fx.off[3]);
    const char *want[] = {at, follows, NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 0, 2, want);
    keel_wal_pos p =
        expect_pos(&fx, damage, fx.seg[2], fx.off[2], 3, KEEL_ECORRUPT);
    ck_assert_uint_eq(p.valid_after, fx.off[3]);
    ck_assert_uint_eq(p.seg_index, 0);
    ck_assert_uint_eq(p.segs, 1);
    ck_assert_uint_eq(p.seg_bytes, len);
    free(b);
    fx_free(&fx);
}

static void set_bad_magic(const fixture *fx, uint8_t *b)
{
    put_u32(b + fx->off[2], 0x12345678u);
}

static void set_long_length(const fixture *fx, uint8_t *b)
{
    put_u32(b + fx->off[2] + 24, 1000000);
}

static void set_huge_length(const fixture *fx, uint8_t *b)
{
    put_u32(b + fx->off[2] + 24, KEEL_WAL_MAX_PAYLOAD_BYTES + 1);
}

static void flip_payload_byte(const fixture *fx, uint8_t *b)
{
    b[fx->off[2] + KEEL_WAL_REC_HEADER_BYTES + 10] ^= 0x40;
}

START_TEST(test_wal_damage_bad_record_magic_in_middle_is_refused)
{
    damage_middle("dmg-rmagic", set_bad_magic,
                  "bad record magic 0x12345678, expected 0x4345524B",
                  KEEL_WAL_DAMAGE_REC_MAGIC);
}
END_TEST

START_TEST(test_wal_damage_length_past_end_in_middle_is_refused)
{
    damage_middle("dmg-len", set_long_length,
                  "record length 1000000 past end of file",
                  KEEL_WAL_DAMAGE_REC_LENGTH);
}
END_TEST

START_TEST(test_wal_damage_length_over_maximum_in_middle_is_refused)
{
    damage_middle("dmg-max", set_huge_length,
                  "record length 67108865 exceeds the maximum 67108864",
                  KEEL_WAL_DAMAGE_REC_LENGTH);
}
END_TEST

START_TEST(test_wal_damage_checksum_mismatch_in_middle_is_refused)
{
    damage_middle("dmg-csum", flip_payload_byte, "checksum mismatch",
                  KEEL_WAL_DAMAGE_REC_CHECKSUM);
}
END_TEST

/* ---- damage a checksum cannot see ---------------------------------------- */

/* Re-encode record i of a one-segment log with a good checksum after fn
 * changed its header, and expect it refused after i records. */
static void damage_sealed(const char *tag, size_t i,
                          void (*fn)(keel_wal_rec_header *), const char *what,
                          int damage)
{
    fixture fx;
    build_one_segment(&fx, tag);
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[i], &len);
    keel_wal_rec_header h;
    keel__wal_rec_decode(b + fx.off[i], &h);
    ck_assert_uint_eq(h.lsn, i + 1);
    fn(&h);
    reencode(&fx, b, i, &h);
    fx_write(&fx, fx.seg[i], b, len);
    char at[200], expect[64];
    snprintf(at, sizeof(at), "00000000000000000001.seg: offset %" PRIu64 ": %s",
             fx.off[i], what);
    snprintf(expect, sizeof(expect), "(expected LSN %zu)", i + 1);
    const char *want[] = {at, expect, NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 0, i, want);
    keel_wal_pos p =
        expect_pos(&fx, damage, fx.seg[i], fx.off[i], i + 1, KEEL_ECORRUPT);
    ck_assert(p.have_len);
    ck_assert_uint_eq(p.declared_len, fx.stored[i]);
    free(b);
    fx_free(&fx);
}

static void lsn_to_7(keel_wal_rec_header *h)
{
    h->lsn = 7;
}

static void kind_to_9(keel_wal_rec_header *h)
{
    h->kind = 9;
}

START_TEST(test_wal_damage_lsn_gap_in_middle_is_refused)
{
    damage_sealed("dmg-gap", 2, lsn_to_7, "LSN gap: record has LSN 7",
                  KEEL_WAL_DAMAGE_REC_GAP);
}
END_TEST

/* With a good checksum a wrong LSN is a gap even in the last record: never
 * mistaken for a torn tail. */
START_TEST(test_wal_damage_lsn_gap_in_last_record_is_refused)
{
    damage_sealed("dmg-gap-last", 4, lsn_to_7, "LSN gap: record has LSN 7",
                  KEEL_WAL_DAMAGE_REC_GAP);
}
END_TEST

START_TEST(test_wal_damage_unknown_kind_with_good_checksum_is_refused)
{
    damage_sealed("dmg-kind", 4, kind_to_9, "unknown record kind 9",
                  KEEL_WAL_DAMAGE_REC_FIELDS);
}
END_TEST

/* A compressed payload whose checksum verifies but which does not decode
 * to the raw length its header claims (R7). */
START_TEST(test_wal_damage_zstd_length_mismatch_is_refused)
{
    static const size_t lens[] = {50, 5000, 5000};
    fixture fx;
    fx_build(&fx, "dmg-zstd", lens, 3, 64 * 1024, 1, 4096);
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[2], &len);
    keel_wal_rec_header h;
    keel__wal_rec_decode(b + fx.off[2], &h);
    ck_assert_uint_eq(h.flags, KEEL_WAL_FLAG_ZSTD);
    ck_assert_uint_eq(h.raw_len, 5000);
    ck_assert_uint_lt(h.stored_len, 5000);
    h.raw_len = 5001;
    reencode(&fx, b, 2, &h);
    fx_write(&fx, fx.seg[2], b, len);
    char at[160];
    snprintf(at, sizeof(at),
             "00000000000000000001.seg: offset %" PRIu64 ": zstd payload",
             fx.off[2]);
    const char *want[] = {at, "(expected LSN 3)", NULL};
    expect_refused(&fx, KEEL_ECORRUPT, 0, 2, want);
    expect_pos(&fx, KEEL_WAL_DAMAGE_REC_PAYLOAD, fx.seg[2], fx.off[2], 3,
               KEEL_ECORRUPT);
    free(b);
    fx_free(&fx);
}
END_TEST

/* ---- tails --------------------------------------------------------------- */

/* A torn-looking end of a segment that is not the last is corruption. */
START_TEST(test_wal_damage_torn_end_of_non_final_segment_is_refused)
{
    static const struct {
        uint64_t keep; /* bytes of record 3 (LSN 3) kept */
        const char *reason;
        int damage;
    } cuts[] = {
        {20, "short record header", KEEL_WAL_DAMAGE_REC_SHORT},
        {KEEL_WAL_REC_HEADER_BYTES + 500, "record length 1000 past end of file",
         KEEL_WAL_DAMAGE_REC_LENGTH},
        {KEEL_WAL_REC_OVERHEAD_BYTES + 1000 - 1,
         "record length 1000 past end of file", KEEL_WAL_DAMAGE_REC_LENGTH},
    };
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        fixture fx;
        build_two_segments(&fx, "dmg-nonfinal");
        size_t len = 0;
        uint8_t *b = fx_read(&fx, fx.seg[2], &len);
        ck_assert_uint_eq(len, fx_end(&fx, 2));
        fx_write(&fx, fx.seg[2], b, fx.off[2] + cuts[c].keep);
        char at[160];
        snprintf(at, sizeof(at),
                 "00000000000000000001.seg: offset %" PRIu64 ": %s", fx.off[2],
                 cuts[c].reason);
        const char *want[] = {at,
                              "(expected LSN 3); damage in a segment that "
                              "is not the last",
                              NULL};
        expect_refused(&fx, KEEL_ECORRUPT, 0, 2, want);
        expect_pos(&fx, cuts[c].damage, fx.seg[2], fx.off[2], 3, KEEL_ECORRUPT);
        free(b);
        fx_free(&fx);
    }
}
END_TEST

/* A truncated last record is a torn tail: not an error. The reader stops
 * before it, the writer truncates it and appends in its place. */
START_TEST(test_wal_damage_torn_last_record_is_not_an_error)
{
    fixture fx;
    build_one_segment(&fx, "dmg-torn");
    size_t len = 0;
    uint8_t *b = fx_read(&fx, fx.seg[4], &len);
    uint64_t cut = fx.off[4] + KEEL_WAL_REC_HEADER_BYTES + 45;
    fx_write(&fx, fx.seg[4], b, cut);
    outcome oc = read_log(&fx, fx.dir);
    ck_assert_int_eq(oc.open_rc, KEEL_OK);
    ck_assert_int_eq(oc.rc, 0);
    ck_assert_uint_eq(oc.got, 4);
    ck_assert_int_eq(oc.tail.torn, 1);
    ck_assert_str_eq(oc.tail.segment, fx.seg[4]);
    ck_assert_uint_eq(oc.tail.offset, fx.off[4]);
    ck_assert_uint_eq(oc.tail.bytes, cut - fx.off[4]);
    ck_assert_uint_eq(oc.tail.last_lsn, 4);
    ck_assert_msg(strstr(oc.tail.reason, "record length 90 past end of file"),
                  "%s", oc.tail.reason);
    /* the position of a torn tail: its damage, no error */
    keel_wal_pos p =
        expect_pos(&fx, KEEL_WAL_DAMAGE_REC_LENGTH, fx.seg[4], fx.off[4], 5, 0);
    ck_assert(p.have_len);
    ck_assert_uint_eq(p.declared_len, 90);
    ck_assert_uint_eq(p.valid_after, 0);
    ck_assert_str_eq(p.reason, oc.tail.reason);

    keel_wal *w = NULL;
    keel_wal_open_info info;
    keel_diag d = {0};
    ck_assert_int_eq(keel_wal_open(fx.dir, NULL, &w, &info, &d), KEEL_OK);
    ck_assert_int_eq(info.torn, 1);
    ck_assert_str_eq(info.torn_segment, fx.seg[4]);
    ck_assert_uint_eq(info.torn_offset, fx.off[4]);
    ck_assert_uint_eq(info.torn_bytes, cut - fx.off[4]);
    ck_assert_uint_eq(info.last_lsn, 4);
    uint64_t lsn = 0;
    ck_assert_int_eq(keel_wal_append(w, fx.kind[4], fx.crank[4], fx.payload[4],
                                     fx.len[4], &lsn, &d),
                     KEEL_OK);
    ck_assert_uint_eq(lsn, 5);
    ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
    /* Rewritten in place: the segment is byte for byte what it was. */
    size_t len2 = 0;
    uint8_t *b2 = fx_read(&fx, fx.seg[4], &len2);
    ck_assert_uint_eq(len2, len);
    ck_assert_mem_eq(b2, b, len);
    oc = read_log(&fx, fx.dir);
    ck_assert_int_eq(oc.rc, 0);
    ck_assert_uint_eq(oc.got, 5);
    ck_assert_int_eq(oc.tail.torn, 0);
    free(b2);
    free(b);
    fx_free(&fx);
}
END_TEST

/* ---- every bit ----------------------------------------------------------- */

/*
 * One segment of four small records, the second compressed: 40 + 48 +
 * (40 + a zstd frame) + 40 + 64 bytes, a little over two hundred.
 */
static void build_flip_log(fixture *fx, const char *tag)
{
    static const size_t lens[] = {8, 120, 0, 24};
    fx_build(fx, tag, lens, 4, 64 * 1024, 1, 64);
    /* Only the 120-byte payload reaches compress_min_bytes. */
    ck_assert_uint_lt(fx->stored[1], 120);
    ck_assert_uint_eq(fx->stored[3], 24);
    ck_assert_uint_eq(fx->off[0], KEEL_WAL_SEG_HEADER_BYTES);
}

/* Which part of the flip log byte `at` is in: 0 the segment header, else
 * 1 + the index of the record. */
static size_t part_of(const fixture *fx, uint64_t at)
{
    size_t part = 0;
    for (size_t i = 0; i < fx->n; i++) {
        if (at >= fx->off[i]) {
            part = i + 1;
        }
    }
    return part;
}

START_TEST(test_wal_damage_every_bit_flip_is_detected_by_reader)
{
    fixture fx;
    build_flip_log(&fx, "dmg-flip");
    size_t len = 0;
    uint8_t *orig = fx_read(&fx, fx.seg[0], &len);
    ck_assert_uint_eq(len, fx_end(&fx, 3));
    uint8_t *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    size_t refused = 0, torn = 0, want_refused = 0, want_torn = 0;
    for (uint64_t bit = 0; bit < 8 * (uint64_t)len; bit++) {
        memcpy(b, orig, len);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        fx_write(&fx, fx.seg[0], b, len);
        outcome oc = read_log(&fx, fx.dir);
        size_t part = part_of(&fx, bit / 8);
        if (part == fx.n) {
            /* The last record: a torn tail that drops exactly it. */
            want_torn++;
            ck_assert_msg(oc.rc == 0, "bit %" PRIu64 ": %s (%s)", bit,
                          keel_err_name(oc.rc), oc.d.msg);
            ck_assert_msg(oc.got == fx.n - 1 && oc.tail.torn == 1 &&
                              oc.tail.offset == fx.off[3] &&
                              oc.tail.bytes == len - fx.off[3] &&
                              oc.tail.last_lsn == fx.n - 1,
                          "bit %" PRIu64 ": %zu records, torn %d at %" PRIu64,
                          bit, oc.got, oc.tail.torn, oc.tail.offset);
            torn++;
            continue;
        }
        want_refused++;
        ck_assert_msg(oc.rc == KEEL_ECORRUPT || oc.rc == KEEL_EVERSION,
                      "bit %" PRIu64 " (part %zu): %s, %zu records", bit, part,
                      keel_err_name(oc.rc), oc.got);
        char at[160];
        if (part == 0) {
            /* A segment header: refused when the reader opens. */
            ck_assert_msg(oc.open_rc == oc.rc, "bit %" PRIu64, bit);
            snprintf(at, sizeof(at), "%s: offset 0: bad segment header",
                     fx.seg[0]);
        } else {
            /* Record part - 1: the ones before it survive. */
            ck_assert_msg(oc.open_rc == KEEL_OK && oc.got == part - 1,
                          "bit %" PRIu64 ": %zu records before the error", bit,
                          oc.got);
            snprintf(at, sizeof(at), "%s: offset %" PRIu64 ": ", fx.seg[0],
                     fx.off[part - 1]);
        }
        ck_assert_msg(strstr(oc.d.msg, at) != NULL,
                      "bit %" PRIu64 ": \"%s\" lacks \"%s\"", bit, oc.d.msg,
                      at);
        refused++;
    }
    ck_assert_uint_eq(refused, want_refused);
    ck_assert_uint_eq(torn, want_torn);
    ck_assert_uint_eq(refused + torn, 8 * len);
    ck_assert_uint_eq(torn, 8 * (len - fx.off[3]));
    free(b);
    free(orig);
    fx_free(&fx);
}
END_TEST

START_TEST(test_wal_damage_every_bit_flip_is_detected_by_writer)
{
    fixture fx;
    build_flip_log(&fx, "dmg-flipw");
    size_t len = 0;
    uint8_t *orig = fx_read(&fx, fx.seg[0], &len);
    uint8_t *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    size_t refused = 0, truncated = 0;
    for (uint64_t bit = 0; bit < 8 * (uint64_t)len; bit++) {
        memcpy(b, orig, len);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        fx_write(&fx, fx.seg[0], b, len);
        keel_wal *w = NULL;
        keel_wal_open_info info;
        keel_diag d = {0};
        int rc = keel_wal_open(fx.dir, NULL, &w, &info, &d);
        size_t now = 0;
        uint8_t *after = fx_read(&fx, fx.seg[0], &now);
        if (part_of(&fx, bit / 8) < fx.n) {
            /* Damage before the last record: refused, nothing touched. */
            ck_assert_msg(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION,
                          "bit %" PRIu64 ": %s", bit, keel_err_name(rc));
            ck_assert_ptr_null(w);
            ck_assert_msg(now == len && memcmp(after, b, len) == 0,
                          "bit %" PRIu64 ": refused log was modified", bit);
            refused++;
        } else {
            /* In the last record: truncated to the record before. */
            ck_assert_msg(rc == KEEL_OK, "bit %" PRIu64 ": %s (%s)", bit,
                          keel_err_name(rc), d.msg);
            ck_assert_int_eq(info.torn, 1);
            ck_assert_uint_eq(info.torn_offset, fx.off[3]);
            ck_assert_uint_eq(info.torn_bytes, len - fx.off[3]);
            ck_assert_uint_eq(info.last_lsn, fx.n - 1);
            ck_assert_uint_eq(now, fx.off[3]);
            ck_assert_mem_eq(after, orig, fx.off[3]);
            ck_assert_int_eq(keel_wal_close(w, &d), KEEL_OK);
            truncated++;
        }
        free(after);
        dir_image im;
        image_take(fx.dir, &im);
        ck_assert_uint_eq(im.n, 2); /* the segment and the writer's lock */
        image_free(&im);
    }
    ck_assert_uint_eq(refused + truncated, 8 * len);
    ck_assert_uint_eq(truncated, 8 * (len - fx.off[3]));
    free(b);
    free(orig);
    fx_free(&fx);
}
END_TEST

Suite *wal_damage_suite(void)
{
    Suite *s = suite_create("wal_damage");

    TCase *tc = tcase_create("segment_header");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_wal_damage_empty_segment_is_refused);
    tcase_add_test(tc, test_wal_damage_short_segment_header_is_refused);
    tcase_add_test(tc, test_wal_damage_bad_segment_magic_is_refused);
    tcase_add_test(tc, test_wal_damage_segment_header_checksum_is_refused);
    tcase_add_test(tc, test_wal_damage_unknown_format_version_is_refused);
    tcase_add_test(tc,
                   test_wal_damage_wrong_kernel_id_in_later_segment_is_refused);
    tcase_add_test(tc, test_wal_damage_missing_middle_segment_is_refused);
    tcase_add_test(tc, test_wal_damage_segment_name_mismatch_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("record");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_wal_damage_bad_record_magic_in_middle_is_refused);
    tcase_add_test(tc, test_wal_damage_length_past_end_in_middle_is_refused);
    tcase_add_test(tc,
                   test_wal_damage_length_over_maximum_in_middle_is_refused);
    tcase_add_test(tc, test_wal_damage_checksum_mismatch_in_middle_is_refused);
    tcase_add_test(tc, test_wal_damage_lsn_gap_in_middle_is_refused);
    tcase_add_test(tc, test_wal_damage_lsn_gap_in_last_record_is_refused);
    tcase_add_test(tc,
                   test_wal_damage_unknown_kind_with_good_checksum_is_refused);
    tcase_add_test(tc, test_wal_damage_zstd_length_mismatch_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("tail");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc,
                   test_wal_damage_torn_end_of_non_final_segment_is_refused);
    tcase_add_test(tc, test_wal_damage_torn_last_record_is_not_an_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("bit_flip");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_wal_damage_every_bit_flip_is_detected_by_reader);
    tcase_add_test(tc, test_wal_damage_every_bit_flip_is_detected_by_writer);
    suite_add_tcase(s, tc);
    return s;
}
