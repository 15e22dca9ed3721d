/*
 * fuzz/make_corpus.c — writes the seed corpus of the wal_reader fuzz target
 * (fuzz/corpus/wal_reader/) with the real WAL writer.
 *
 *   usage: fuzz_make_corpus OUTDIR
 *
 * Seeds are starting points for mutation, not expected outputs: each is one
 * segment file, `00000000000000000001.seg` as the fuzz target names it. A
 * few logs are written with keel_wal_append() (all four kinds, lengths
 * around every small boundary, zstd-compressed and raw payloads), cut at the
 * end of their valid data as the reader reports it, then damaged the ways a
 * log gets damaged: torn at several points of the last record, a zero-filled
 * tail, flipped bits, a bad record magic, a bad header. A last group is
 * *resealed* (checksums recomputed after the edit), the damage a checksum
 * cannot see: an LSN gap, an unknown kind or version, a first LSN that does
 * not match the name, an undecodable or mis-sized zstd frame.
 *
 * Invariants:
 *   G1  Deterministic: a fixed kernel id, a fixed salt (the writer draws a
 *       random one: each log is re-salted, every checksum recomputed) and a
 *       seeded PRNG, so rerunning it rewrites the same bytes (no churn in
 *       the checked-in corpus).
 *   G2  Every seed stays a few KB at most: mutation works best on small
 *       inputs.
 *   G3  It checks what it relies on (the compressed seeds really hold zstd
 *       records) and aborts rather than write a corpus that silently lost a
 *       seed's point.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "fuzz/fuzz_helpers.h"
#include "keel/keel.h"
#include "wal/wal_format.h"

#define SEG_NAME  "00000000000000000001.seg"
#define KERNEL_ID UINT64_C(0x7A7A75662D6C656B) /* "kel-fuzz" */
#define SALT      UINT64_C(0x746C61732D6C656B) /* "kel-salt" (G1) */
#define MAX_RECS  16

/* One record to append. */
typedef struct spec {
    int kind;
    uint64_t crank;
    size_t len;
    int compressible; /* repetitive text rather than PRNG bytes */
} spec;

/* A written segment, cut at the end of its valid data, and where each of
 * its records lies. */
typedef struct image {
    uint8_t *buf;
    size_t len;
    size_t n;
    size_t off[MAX_RECS];
    uint32_t stored[MAX_RECS];
    uint32_t flags[MAX_RECS];
} image;

/* splitmix64 */
static uint64_t prng(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void fill_payload(uint8_t *p, const spec *s, uint64_t seed)
{
    static const char text[] = "keel wal fuzz seed: a crank's write-set. ";
    uint64_t st = seed;
    for (size_t i = 0; i < s->len; i++) {
        p[i] = s->compressible ? (uint8_t)text[i % (sizeof(text) - 1)]
                               : (uint8_t)prng(&st);
    }
}

static void reseal_record(uint8_t *buf, size_t off);
static void reseal_header(uint8_t *buf, uint32_t version, uint64_t first_lsn);

/* Write specs[n] with the real writer into a fresh log in tmp and load the
 * segment into img, cut where the reader says the valid data ends. */
static void write_log(const char *tmp, const spec *specs, size_t n,
                      uint32_t compress_min, image *img)
{
    keel_diag d = {0};
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.kernel_id = KERNEL_ID; /* G1 */
    o.sync = KEEL_SYNC_OFF;
    o.compress_min_bytes = compress_min;
    fuzz_rmdir(tmp);

    keel_wal *w = NULL;
    int rc = keel_wal_open(tmp, &o, &w, NULL, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "open: %s", d.msg);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = malloc(specs[i].len + 1);
        FUZZ_ASSERT(p != NULL);
        fill_payload(p, &specs[i], i + 1);
        rc = keel_wal_append(w, specs[i].kind, specs[i].crank, p, specs[i].len,
                             NULL, &d);
        FUZZ_ASSERTF(rc == KEEL_OK, "append: %s", d.msg);
        free(p);
    }
    rc = keel_wal_close(w, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "close: %s", d.msg);

    keel_wal_reader *r = NULL;
    rc = keel_wal_reader_open(tmp, NULL, 0, &r, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "reader_open: %s", d.msg);
    keel_wal_record rec;
    img->n = 0;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        FUZZ_ASSERT(img->n < MAX_RECS && strcmp(rec.segment, SEG_NAME) == 0);
        img->off[img->n] = (size_t)rec.offset;
        img->stored[img->n] = rec.stored_len;
        img->flags[img->n] = rec.flags;
        img->n++;
    }
    FUZZ_ASSERTF(rc == 0 && img->n == n, "read back %zu of %zu: %s", img->n, n,
                 d.msg);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    keel_wal_reader_close(r);

    char *path = fuzz_path(tmp, SEG_NAME);
    size_t len = 0;
    img->buf = fuzz_read_file(path, &len);
    FUZZ_ASSERTF(img->buf != NULL && t.offset <= len, "%s", path);
    /* A writer may preallocate: the seed is the valid data only. */
    img->len = (size_t)t.offset;
    free(path);
    /* G1: the fixed salt, and every checksum again under it */
    reseal_header(img->buf, KEEL_WAL_FORMAT_VERSION, 1);
    for (size_t i = 0; i < img->n; i++) {
        reseal_record(img->buf, img->off[i]);
    }
}

static size_t count_compressed(const image *img)
{
    size_t c = 0;
    for (size_t i = 0; i < img->n; i++) {
        c += (img->flags[i] & KEEL_WAL_FLAG_ZSTD) != 0;
    }
    return c;
}

/* Write buf[len] (G2) as OUTDIR/name. */
static void emit(const char *outdir, const char *name, const uint8_t *buf,
                 size_t len)
{
    FUZZ_ASSERTF(len <= 8192, "%s: %zu bytes", name, len);
    char *path = fuzz_path(outdir, name);
    fuzz_write_file(path, buf, len);
    free(path);
}

/* A copy of img's bytes with room for extra bytes after them. */
static uint8_t *copy(const image *img, size_t extra)
{
    uint8_t *b = calloc(1, img->len + extra + 1);
    FUZZ_ASSERT(b != NULL);
    memcpy(b, img->buf, img->len);
    return b;
}

/* Recompute the trailer of the record at off after an edit. */
static void reseal_record(uint8_t *buf, size_t off)
{
    uint32_t stored_len = keel__get_u32(buf + off + 24);
    uint8_t *payload = buf + off + KEEL_WAL_REC_HEADER_BYTES;
    keel__put_u64(payload + stored_len,
                  keel__wal_rec_checksum(SALT, buf + off, payload, stored_len));
}

/* Rewrite the segment header with these fields and a good checksum. */
static void reseal_header(uint8_t *buf, uint32_t version, uint64_t first_lsn)
{
    keel_wal_seg_header h = {.version = version,
                             .kernel_id = KERNEL_ID,
                             .first_lsn = first_lsn,
                             .salt = SALT};
    keel__wal_seg_encode(buf, &h);
}

/* Seeds cut or extended from an intact log: the damage a crash leaves. */
static void emit_torn(const char *out, const image *kinds, const image *many)
{
    size_t last = many->n - 1;
    emit(out, "torn-in-record-header", many->buf, many->off[last] + 20);
    emit(out, "torn-in-payload", many->buf,
         many->off[last] + KEEL_WAL_REC_HEADER_BYTES + many->stored[last] / 2);
    emit(out, "torn-in-trailer", kinds->buf, kinds->len - 3);

    uint8_t *b = copy(kinds, 512);
    emit(out, "zero-filled-tail", b, kinds->len + 512);
    free(b);

    /* A vat's value holding a whole record that verifies (the right salt
     * even), inside the last record's payload, torn after it: RD6 keeps it
     * a torn tail. The last record of `many` has a 255-byte payload. */
    b = copy(many, 0);
    size_t lo = many->off[last];
    uint8_t *forged = b + lo + KEEL_WAL_REC_HEADER_BYTES + 16;
    keel_wal_rec_header fh = {.kind = KEEL_WAL_CRANK,
                              .lsn = many->n + 1,
                              .crank = 99,
                              .stored_len = 0,
                              .raw_len = 0};
    keel__wal_rec_encode(forged, &fh);
    reseal_record(b, (size_t)(forged - b));
    reseal_record(b, lo); /* the real record verifies, then is torn */
    emit(out, "torn-after-forged-record", b,
         lo + KEEL_WAL_REC_HEADER_BYTES + 16 + KEEL_WAL_REC_OVERHEAD_BYTES + 8);
    free(b);

    /* A last record claiming more bytes than the file holds (R3). */
    b = copy(kinds, 0);
    size_t off = kinds->off[kinds->n - 1];
    keel__put_u32(b + off + 24, keel__get_u32(b + off + 24) + 1000);
    emit(out, "length-past-end", b, kinds->len);
    free(b);
}

/* Seeds with bits damaged in place (checksums left as they were). */
static void emit_flipped(const char *out, const image *kinds, const image *many,
                         const image *mixed)
{
    uint8_t *b = copy(kinds, 0);
    b[kinds->len - 12] ^= 0x10; /* last record's payload: a torn tail */
    emit(out, "flip-last-record", b, kinds->len);
    free(b);

    b = copy(many, 0);
    b[many->off[5] + KEEL_WAL_REC_HEADER_BYTES] ^= 0x01; /* valid ones follow */
    emit(out, "flip-middle-record", b, many->len);
    free(b);

    size_t z = 0;
    while (z < mixed->n && !(mixed->flags[z] & KEEL_WAL_FLAG_ZSTD)) {
        z++;
    }
    FUZZ_ASSERT(z + 1 < mixed->n); /* G3: a zstd record with one after it */
    b = copy(mixed, 0);
    b[mixed->off[z] + KEEL_WAL_REC_HEADER_BYTES + 6] ^= 0x04;
    emit(out, "flip-zstd-frame", b, mixed->len);
    free(b);

    b = copy(kinds, 0);
    b[kinds->off[2]] ^= 0xFF;
    emit(out, "bad-record-magic", b, kinds->len);
    free(b);

    b = copy(kinds, 0);
    b[9] ^= 0x20; /* kernel id: the header checksum no longer matches */
    emit(out, "header-bad-checksum", b, kinds->len);
    free(b);
}

/* Seeds edited and resealed: what only the checks behind a good checksum
 * catch (R5-R7, the header's version and first LSN). */
static void emit_resealed(const char *out, const image *kinds,
                          const image *many, const image *zstd)
{
    uint8_t *b = copy(kinds, 0);
    reseal_header(b, KEEL_WAL_FORMAT_VERSION + 1, 1);
    emit(out, "header-version-next", b, kinds->len);
    free(b);

    b = copy(kinds, 0);
    reseal_header(b, KEEL_WAL_FORMAT_VERSION, 5);
    emit(out, "header-first-lsn-5", b, kinds->len);
    free(b);

    b = copy(many, 0);
    keel__put_u64(b + many->off[4] + 8,
                  keel__get_u64(b + many->off[4] + 8) + 1);
    reseal_record(b, many->off[4]);
    emit(out, "lsn-gap", b, many->len);
    free(b);

    b = copy(kinds, 0);
    b[kinds->off[1] + 4] = 9;
    reseal_record(b, kinds->off[1]);
    emit(out, "unknown-kind", b, kinds->len);
    free(b);

    /* Scramble the body of a zstd frame, keep its 4-byte magic. */
    b = copy(zstd, 0);
    uint64_t st = 42;
    for (uint32_t i = 4; i < zstd->stored[1]; i++) {
        b[zstd->off[1] + KEEL_WAL_REC_HEADER_BYTES + i] ^= (uint8_t)prng(&st);
    }
    reseal_record(b, zstd->off[1]);
    emit(out, "zstd-garbage-frame", b, zstd->len);
    free(b);

    b = copy(zstd, 0);
    keel__put_u32(b + zstd->off[0] + 28,
                  keel__get_u32(b + zstd->off[0] + 28) + 1);
    reseal_record(b, zstd->off[0]);
    emit(out, "zstd-raw-len-off-by-one", b, zstd->len);
    free(b);
}

/* Write every seed into directory out (created if absent). */
static void make_corpus(const char *out)
{
    FUZZ_ASSERTF(mkdir(out, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", out,
                 strerror(errno));
    char *root = fuzz_tmpdir("keel-make-corpus");
    char *tmp = fuzz_path(root, "wal");

    static const spec kinds_specs[] = {
        {KEEL_WAL_KERNEL_OP, 0, 40, 0},   {KEEL_WAL_CRANK, 1, 24, 0},
        {KEEL_WAL_OUT_OF_CRANK, 1, 0, 0}, {KEEL_WAL_CRANK, 2, 100, 0},
        {KEEL_WAL_CHECKPOINT, 0, 8, 0},
    };
    static const spec many_specs[] = {
        {KEEL_WAL_CRANK, 1, 0, 0},      {KEEL_WAL_CRANK, 1, 1, 0},
        {KEEL_WAL_CRANK, 2, 7, 0},      {KEEL_WAL_OUT_OF_CRANK, 2, 8, 0},
        {KEEL_WAL_CRANK, 3, 31, 0},     {KEEL_WAL_CRANK, 3, 32, 0},
        {KEEL_WAL_KERNEL_OP, 0, 33, 0}, {KEEL_WAL_CRANK, 4, 63, 0},
        {KEEL_WAL_CRANK, 5, 64, 0},     {KEEL_WAL_CHECKPOINT, 0, 8, 0},
        {KEEL_WAL_CRANK, 6, 200, 0},    {KEEL_WAL_CRANK, 7, 255, 0},
    };
    static const spec zstd_specs[] = {
        {KEEL_WAL_CRANK, 1, 300, 1},
        {KEEL_WAL_CRANK, 2, 1000, 1},
        {KEEL_WAL_CRANK, 3, 2000, 1},
    };
    static const spec mixed_specs[] = {
        {KEEL_WAL_CRANK, 1, 40, 0}, {KEEL_WAL_CRANK, 2, 600, 1},
        {KEEL_WAL_CRANK, 3, 90, 0}, {KEEL_WAL_OUT_OF_CRANK, 3, 128, 1},
        {KEEL_WAL_CRANK, 4, 16, 0}, {KEEL_WAL_CRANK, 5, 900, 1},
    };
    image kinds, many, zstd, mixed;
    write_log(tmp, kinds_specs, 5, 0, &kinds);
    write_log(tmp, many_specs, 12, 0, &many);
    write_log(tmp, zstd_specs, 3, 64, &zstd);
    write_log(tmp, mixed_specs, 6, 64, &mixed);
    /* G3 */
    FUZZ_ASSERTF(count_compressed(&zstd) == zstd.n, "%zu of %zu compressed",
                 count_compressed(&zstd), zstd.n);
    FUZZ_ASSERTF(count_compressed(&mixed) == 3, "%zu of 6 compressed",
                 count_compressed(&mixed));

    emit(out, "empty", kinds.buf, 0);
    emit(out, "short-header", kinds.buf, 20);
    emit(out, "header-only", kinds.buf, KEEL_WAL_SEG_HEADER_BYTES);
    emit(out, "clean-kinds", kinds.buf, kinds.len);
    emit(out, "clean-lengths", many.buf, many.len);
    emit(out, "clean-zstd", zstd.buf, zstd.len);
    emit(out, "clean-mixed", mixed.buf, mixed.len);
    emit_torn(out, &kinds, &many);
    emit_flipped(out, &kinds, &many, &mixed);
    emit_resealed(out, &kinds, &many, &zstd);

    free(kinds.buf);
    free(many.buf);
    free(zstd.buf);
    free(mixed.buf);
    fuzz_rmdir(tmp);
    fuzz_rmdir(root);
    free(tmp);
    free(root);
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc == 2) {
        make_corpus(argv[1]);
        rc = 0;
    } else {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    }
    return rc;
}
