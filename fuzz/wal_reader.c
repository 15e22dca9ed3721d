/*
 * fuzz/wal_reader.c — fuzz target for the WAL reader (keel_wal_reader_*).
 *
 * Each input is the whole content of one segment file. It is written as
 * `00000000000000000001.seg`, alone in a scratch WAL directory, and a reader
 * reads that log to its end. Mutated bytes almost always break a checksum,
 * and a record with a bad checksum is only ever a torn tail or corruption;
 * to get past that wall each input is read a second time *sealed*: the
 * segment header's checksum and the checksum of every record that can be
 * walked (right magic, length inside the file) are recomputed. Sealed bytes
 * reach the checks behind the checksum (R5 sanity, R6 LSN order, R7
 * decompression; wal/wal_format.h), bytes a crash cannot write but a bug,
 * a newer keel or a misdirected write can.
 *
 * Oracle (FUZZ_ASSERT, always on), for the raw and the sealed bytes alike:
 *   F1  keel_wal_reader_open() returns KEEL_OK, KEEL_ECORRUPT or
 *       KEEL_EVERSION; keel_wal_reader_next() returns 1, 0 or one of those
 *       errors, and whatever ended the loop is returned again (sticky).
 *   F2  a header the reader accepted decodes (keel__wal_seg_decode), names
 *       first LSN 1 (the file's name) and the kernel id it reports.
 *   F3  every record returned lies inside the input, right after the one
 *       before it (the first at offset 40): offset + 40 + stored_len <= size.
 *   F4  its checksum verifies: keel__wal_rec_checksum over the input's bytes,
 *       seeded with the header's salt, equals rec.checksum and the trailer
 *       stored in the input.
 *   F5  its fields are the input's and sane (R5): LSNs run on by one from the
 *       header's first LSN; an uncompressed payload is the input's bytes, a
 *       compressed one is raw_len bytes long.
 *   F6  an error comes with a diag carrying that code and a message that
 *       starts with the segment's file name.
 *   F7  at the end (0) the tail names the segment; its offset is the end of
 *       the last record returned (40 if none), offset + bytes is the input's
 *       size, bytes is 0 exactly when the tail is not torn, last_lsn is the
 *       last LSN returned (0 if none).
 *   F8  round trip: the records of a small input that read cleanly, appended
 *       by the real writer to a fresh log, read back equal (LSNs from 1,
 *       kind, crank, payload) with a clean tail.
 * ASan/UBSan and libFuzzer's -timeout add: no over-read, no undefined
 * behaviour, no leak, no hang.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "fuzz/fuzz_helpers.h"
#include "keel/keel.h"
#include "wal/wal_format.h"

#define SEG_NAME "00000000000000000001.seg"

enum {
    /* F8 runs only for inputs up to this size, and only while the payloads
     * it must copy stay under ROUND_TRIP_MAX_RAW (a small compressed record
     * may claim up to 64 MiB): it writes a whole log, so it costs more than
     * the read it checks. */
    ROUND_TRIP_MAX_INPUT = 16 * 1024,
    ROUND_TRIP_MAX_RAW = 1024 * 1024,
};

/* The scratch directories: created once per process and reused, because
 * making and removing directories per input would cost more than the read
 * under test. */
typedef struct scratch {
    char *root;     /* removed at exit */
    char *rdir;     /* the WAL directory the reader reads */
    char *seg_path; /* rdir/SEG_NAME, rewritten for every input */
    char *wdir;     /* F8's log, made afresh by the writer each time */
} scratch;

/* One record kept for F8 (payload copied: the reader's is borrowed). */
typedef struct kept {
    int kind;
    uint64_t crank;
    uint8_t *payload;
    size_t len;
} kept;

typedef struct kept_log {
    kept *recs;
    size_t n;
    size_t cap;
    size_t raw_bytes;
} kept_log;

/*
 * The process's scratch directories. libFuzzer's entry point takes no
 * context argument, so this one function-local static is how the target
 * keeps state across inputs; it never changes after the first call.
 */
static const scratch *scratch_get(void);

static void scratch_cleanup(void)
{
    const scratch *s = scratch_get();
    fuzz_rmdir(s->rdir);
    fuzz_rmdir(s->wdir);
    fuzz_rmdir(s->root);
}

static const scratch *scratch_get(void)
{
    static scratch s;
    if (s.root == NULL) {
        s.root = fuzz_tmpdir("keel-fuzz-wal");
        s.rdir = fuzz_path(s.root, "r");
        s.wdir = fuzz_path(s.root, "w");
        s.seg_path = fuzz_path(s.rdir, SEG_NAME);
        FUZZ_ASSERT(mkdir(s.rdir, 0755) == 0);
        atexit(scratch_cleanup);
    }
    return &s;
}

/* F1, F6 */
static void check_error(int rc, const keel_diag *d, const char *where)
{
    FUZZ_ASSERTF(rc == KEEL_ECORRUPT || rc == KEEL_EVERSION,
                 "%s returned %d (%s): %s", where, rc, keel_err_name(rc),
                 d->msg);
    FUZZ_ASSERTF(d->code == rc, "%s returned %s, diag.code %d", where,
                 keel_err_name(rc), d->code);
    FUZZ_ASSERTF(strncmp(d->msg, SEG_NAME, strlen(SEG_NAME)) == 0,
                 "%s: diag does not start with the segment name: \"%s\"", where,
                 d->msg);
}

/* F3, F4, F5 for one returned record; end is where the previous record
 * ended, lsn the LSN it must have. */
static void check_record(const uint8_t *data, size_t size,
                         const keel_wal_record *rec, uint64_t end, uint64_t lsn)
{
    FUZZ_ASSERTF(rec->offset == end,
                 "record LSN %llu at offset %llu, "
                 "previous record ended at %llu",
                 (unsigned long long)rec->lsn, (unsigned long long)rec->offset,
                 (unsigned long long)end);
    FUZZ_ASSERTF(
        rec->stored_len <= KEEL_WAL_MAX_PAYLOAD_BYTES &&
            rec->offset + KEEL_WAL_REC_OVERHEAD_BYTES + rec->stored_len <= size,
        "record at offset %llu, stored_len %u, input %zu bytes",
        (unsigned long long)rec->offset, rec->stored_len, size);
    FUZZ_ASSERT(strcmp(rec->segment, SEG_NAME) == 0);

    const uint8_t *hdr = data + rec->offset;
    const uint8_t *payload = hdr + KEEL_WAL_REC_HEADER_BYTES;
    /* seeded with the salt at +24 of the segment header */
    uint64_t sum = keel__wal_rec_checksum(keel__get_u64(data + 24), hdr,
                                          payload, rec->stored_len);
    uint64_t trailer = keel__get_u64(payload + rec->stored_len);
    FUZZ_ASSERTF(sum == rec->checksum && sum == trailer,
                 "record at offset %llu: computed 0x%016llx, rec.checksum "
                 "0x%016llx, trailer 0x%016llx",
                 (unsigned long long)rec->offset, (unsigned long long)sum,
                 (unsigned long long)rec->checksum,
                 (unsigned long long)trailer);

    keel_wal_rec_header h;
    char why[160] = "";
    keel__wal_rec_decode(hdr, &h);
    FUZZ_ASSERT(keel__wal_rec_magic(hdr) == KEEL_WAL_REC_MAGIC);
    FUZZ_ASSERTF(keel__wal_rec_sane(hdr, &h, why, sizeof(why)) == 1,
                 "record at offset %llu returned though insane: %s",
                 (unsigned long long)rec->offset, why);
    FUZZ_ASSERTF(rec->lsn == lsn && h.lsn == lsn,
                 "record at offset %llu: rec.lsn %llu, stored %llu, "
                 "expected %llu",
                 (unsigned long long)rec->offset, (unsigned long long)rec->lsn,
                 (unsigned long long)h.lsn, (unsigned long long)lsn);
    FUZZ_ASSERT(rec->kind == h.kind && rec->kind >= KEEL_WAL_CRANK &&
                rec->kind <= KEEL_WAL_CHECKPOINT);
    FUZZ_ASSERT(rec->crank == h.crank);
    FUZZ_ASSERT(rec->flags == h.flags &&
                (rec->flags & ~KEEL_WAL_FLAG_ZSTD) == 0);
    FUZZ_ASSERT(rec->stored_len == h.stored_len);
    FUZZ_ASSERT(rec->payload.len == 0 || rec->payload.ptr != NULL);
    if (rec->flags & KEEL_WAL_FLAG_ZSTD) {
        FUZZ_ASSERTF(rec->payload.len == h.raw_len,
                     "compressed record at offset %llu: payload %zu bytes, "
                     "raw_len %u",
                     (unsigned long long)rec->offset, rec->payload.len,
                     h.raw_len);
    } else {
        FUZZ_ASSERT(h.raw_len == h.stored_len);
        FUZZ_ASSERT(rec->payload.len == rec->stored_len);
        FUZZ_ASSERTF(rec->payload.len == 0 || memcmp(rec->payload.ptr, payload,
                                                     rec->payload.len) == 0,
                     "record at offset %llu: payload differs from the "
                     "input's bytes",
                     (unsigned long long)rec->offset);
    }
}

/* F7 */
static void check_tail(const keel_wal_reader *r, size_t size, uint64_t end,
                       uint64_t last_lsn)
{
    keel_wal_tail t;
    memset(&t, 0xA5, sizeof(t));
    keel_wal_reader_tail(r, &t);
    FUZZ_ASSERTF(strcmp(t.segment, SEG_NAME) == 0, "tail segment \"%.64s\"",
                 t.segment);
    FUZZ_ASSERTF(t.offset == end,
                 "tail offset %llu, last record ended at %llu (torn %d, "
                 "reason \"%.160s\")",
                 (unsigned long long)t.offset, (unsigned long long)end, t.torn,
                 t.reason);
    FUZZ_ASSERTF(t.offset + t.bytes == size,
                 "tail offset %llu + bytes %llu != input size %zu",
                 (unsigned long long)t.offset, (unsigned long long)t.bytes,
                 size);
    FUZZ_ASSERTF((t.torn == 0 && t.bytes == 0) || (t.torn == 1 && t.bytes > 0),
                 "tail torn %d with %llu bytes after it", t.torn,
                 (unsigned long long)t.bytes);
    FUZZ_ASSERTF(t.last_lsn == last_lsn, "tail last_lsn %llu, expected %llu",
                 (unsigned long long)t.last_lsn, (unsigned long long)last_lsn);
    FUZZ_ASSERT(t.torn == 0 ||
                memchr(t.reason, '\0', sizeof(t.reason)) != NULL);
}

/*
 * A file shorter than a segment header that the reader opened anyway (as a
 * torn tail, say): it must give no record, and an end or error as F1, F6
 * and F7 say, with the tail covering the whole file.
 */
static void short_segment(keel_wal_reader *r, size_t size)
{
    keel_wal_record rec;
    keel_diag d = {0};
    int rc = keel_wal_reader_next(r, &rec, &d);
    FUZZ_ASSERTF(rc != 1, "a record from a %zu-byte segment", size);
    if (rc < 0) {
        check_error(rc, &d, "reader_next");
        return;
    }
    FUZZ_ASSERT(rc == 0);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    FUZZ_ASSERT(strcmp(t.segment, SEG_NAME) == 0);
    FUZZ_ASSERT(t.offset + t.bytes == size && t.last_lsn == 0);
}

/* Keep a copy of rec for F8. @return 0 once the copies grow too big. */
static int kept_add(kept_log *log, const keel_wal_record *rec)
{
    if (log->raw_bytes + rec->payload.len > ROUND_TRIP_MAX_RAW) {
        return 0;
    }
    if (log->n == log->cap) {
        log->cap = log->cap ? 2 * log->cap : 16;
        log->recs = realloc(log->recs, log->cap * sizeof(*log->recs));
        FUZZ_ASSERT(log->recs != NULL);
    }
    kept *k = &log->recs[log->n++];
    k->kind = rec->kind;
    k->crank = rec->crank;
    k->len = rec->payload.len;
    k->payload = malloc(k->len > 0 ? k->len : 1);
    FUZZ_ASSERT(k->payload != NULL);
    if (k->len > 0) {
        memcpy(k->payload, rec->payload.ptr, k->len);
    }
    log->raw_bytes += k->len;
    return 1;
}

static void kept_free(kept_log *log)
{
    for (size_t i = 0; i < log->n; i++) {
        free(log->recs[i].payload);
    }
    free(log->recs);
}

/* F8 */
static void round_trip(const scratch *s, const kept_log *log,
                       uint64_t kernel_id)
{
    keel_diag d = {0};
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.sync = KEEL_SYNC_OFF;
    o.kernel_id = kernel_id;
    o.compress_min_bytes = 64;
    fuzz_rmdir(s->wdir);

    keel_wal *w = NULL;
    int rc = keel_wal_open(s->wdir, &o, &w, NULL, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: open: %s: %s", keel_err_name(rc),
                 d.msg);
    for (size_t i = 0; i < log->n; i++) {
        const kept *k = &log->recs[i];
        uint64_t lsn = 0;
        rc =
            keel_wal_append(w, k->kind, k->crank, k->payload, k->len, &lsn, &d);
        FUZZ_ASSERTF(rc == KEEL_OK && lsn == i + 1,
                     "round trip: append %zu: %s, lsn %llu: %s", i,
                     keel_err_name(rc), (unsigned long long)lsn, d.msg);
    }
    rc = keel_wal_close(w, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: close: %s: %s", keel_err_name(rc),
                 d.msg);

    keel_wal_reader *r = NULL;
    rc = keel_wal_reader_open(s->wdir, NULL, 0, &r, &d);
    FUZZ_ASSERTF(rc == KEEL_OK, "round trip: reader_open: %s: %s",
                 keel_err_name(rc), d.msg);
    FUZZ_ASSERT(keel_wal_reader_kernel_id(r) == kernel_id);
    keel_wal_record rec;
    for (size_t i = 0; i < log->n; i++) {
        const kept *k = &log->recs[i];
        rc = keel_wal_reader_next(r, &rec, &d);
        FUZZ_ASSERTF(rc == 1, "round trip: record %zu: %s: %s", i,
                     keel_err_name(rc), d.msg);
        FUZZ_ASSERT(rec.lsn == i + 1);
        FUZZ_ASSERT(rec.kind == k->kind && rec.crank == k->crank);
        FUZZ_ASSERTF(rec.payload.len == k->len &&
                         (k->len == 0 ||
                          memcmp(rec.payload.ptr, k->payload, k->len) == 0),
                     "round trip: record %zu: payload differs (%zu bytes "
                     "read, %zu written, flags %u)",
                     i, rec.payload.len, k->len, rec.flags);
    }
    rc = keel_wal_reader_next(r, &rec, &d);
    FUZZ_ASSERTF(rc == 0, "round trip: after the last record: %d: %s", rc,
                 d.msg);
    keel_wal_tail t;
    keel_wal_reader_tail(r, &t);
    FUZZ_ASSERT(t.torn == 0 && t.last_lsn == log->n);
    keel_wal_reader_close(r);
}

/* Write data as the segment and check everything the reader says (F1-F8). */
static void read_segment(const scratch *s, const uint8_t *data, size_t size)
{
    keel_diag d = {0};
    keel_wal_reader *r = NULL;
    kept_log log = {0};
    fuzz_write_file(s->seg_path, data, size);

    int rc = keel_wal_reader_open(s->rdir, NULL, 0, &r, &d);
    if (rc != KEEL_OK) {
        check_error(rc, &d, "reader_open");
        FUZZ_ASSERT(r == NULL);
        goto out;
    }
    FUZZ_ASSERT(r != NULL);

    keel_wal_record rec;
    if (size < KEEL_WAL_SEG_HEADER_BYTES) {
        short_segment(r, size);
        goto out;
    }

    /* F2 */
    keel_wal_seg_header h;
    char why[160] = "";
    rc = keel__wal_seg_decode(data, &h, why, sizeof(why));
    FUZZ_ASSERTF(rc == KEEL_OK,
                 "reader accepted a segment header that fails to decode: %s",
                 why);
    FUZZ_ASSERTF(h.first_lsn == 1,
                 "reader accepted %s with first LSN %llu in its header",
                 SEG_NAME, (unsigned long long)h.first_lsn);
    FUZZ_ASSERT(keel_wal_reader_kernel_id(r) == h.kernel_id);

    uint64_t end = KEEL_WAL_SEG_HEADER_BYTES;
    uint64_t n = 0;
    int keep = size <= ROUND_TRIP_MAX_INPUT;
    while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) {
        check_record(data, size, &rec, end, h.first_lsn + n);
        end = rec.offset + KEEL_WAL_REC_OVERHEAD_BYTES + rec.stored_len;
        n++;
        if (keep) {
            keep = kept_add(&log, &rec);
        }
    }
    if (rc == 0) {
        check_tail(r, size, end, n > 0 ? h.first_lsn + n - 1 : 0);
    } else {
        check_error(rc, &d, "reader_next");
    }
    int again = keel_wal_reader_next(r, &rec, &d);
    FUZZ_ASSERTF(again == rc, "reader_next returned %d, then %d", rc, again);
    keel_wal_reader_close(r);
    r = NULL;

    if (rc == 0 && n > 0 && keep) {
        round_trip(s, &log, h.kernel_id);
    }
out:
    keel_wal_reader_close(r);
    kept_free(&log);
}

/*
 * Recompute the checksums a mutation broke: the segment header's (xxh3-64
 * of bytes [0, 32), wal_format.h) and that of every record reachable from
 * offset 40 whose magic is right and whose length fits the input.
 * Everything else, LSNs and lengths included, stays as mutated.
 */
static void seal(uint8_t *buf, size_t size)
{
    if (size < KEEL_WAL_SEG_HEADER_BYTES) {
        return;
    }
    keel__put_u64(buf + 32, XXH3_64bits(buf, 32));
    size_t off = KEEL_WAL_SEG_HEADER_BYTES;
    while (size - off >= KEEL_WAL_REC_OVERHEAD_BYTES &&
           keel__wal_rec_magic(buf + off) == KEEL_WAL_REC_MAGIC) {
        uint32_t stored_len = keel__get_u32(buf + off + 24);
        if (stored_len > size - off - KEEL_WAL_REC_OVERHEAD_BYTES) {
            break;
        }
        uint8_t *payload = buf + off + KEEL_WAL_REC_HEADER_BYTES;
        keel__put_u64(payload + stored_len,
                      keel__wal_rec_checksum(keel__get_u64(buf + 24), buf + off,
                                             payload, stored_len));
        off += KEEL_WAL_REC_OVERHEAD_BYTES + stored_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const scratch *s = scratch_get();
    read_segment(s, data, size);

    if (size >= KEEL_WAL_SEG_HEADER_BYTES) {
        uint8_t *sealed = malloc(size);
        FUZZ_ASSERT(sealed != NULL);
        memcpy(sealed, data, size);
        seal(sealed, size);
        if (memcmp(sealed, data, size) != 0) {
            read_segment(s, sealed, size);
        }
        free(sealed);
    }
    return 0;
}
