/*
 * wal/wal_reader.c — reading and validating the write-ahead log.
 *
 * The reader walks the segments of a WAL directory in LSN order and returns
 * each record after checking it against the rules R1–R7 of wal_format.h.
 * It never changes a file. The writer (wal_writer.c) reuses it on open to
 * find where the valid log ends.
 *
 * Invariants:
 *   RD1  A record is returned only if its checksum verified, its LSN is the
 *        previous one + 1 (the first: the segment's first LSN) and, if
 *        compressed, it decoded to exactly raw_len bytes. No wrong payload
 *        is ever returned.
 *   RD2  Damage is a torn tail only when it lies in the last segment and no
 *        record with a verifying checksum and an LSN at or after the
 *        expected one starts anywhere after it; otherwise KEEL_ECORRUPT.
 *        Nothing is silently skipped.
 *   RD3  Lengths read from disk are checked against the file size and
 *        KEEL_WAL_MAX_PAYLOAD_BYTES before any buffer is sized by them, so
 *        memory stays bounded by the largest valid record plus the read
 *        window.
 *   RD4  Errors are sticky: after one, every next() returns it again.
 *   RD5  Every segment carries the salt of the first one; record checksums
 *        are verified with it. A segment with another salt is corruption
 *        (a segment of another log), never a torn tail.
 *   RD6  A resynchronisation candidate (RD2) never starts inside the
 *        damaged record's declared length when that length is plausible
 *        (keel__wal_rec_span): a vat-chosen payload cannot pose as the
 *        record after the damage.
 *
 * State:
 *   OPEN --next()--> READING --end of last segment--> DONE (clean tail)
 *                        |----damage, nothing after--> DONE (torn tail)
 *                        |----damage + valid after / gap / bad header-->
 *                                                     FAILED (error)
 */
#include "keel/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"
#include "common/io.h"
#include "wal/wal_format.h"
#include "wal/wal_internal.h"

#define WINDOW_BYTES (1u << 20)

struct keel_wal_reader {
    keel_io *io;
    char *dir;
    uint64_t kernel_id;
    uint64_t salt; /* the log's, from its first segment (RD5) */
    int have_salt;
    keel__wal_seg *segs;
    size_t nsegs;
    size_t seg;      /* index of the open segment */
    int fd;          /* -1 when none is open */
    uint64_t fsize;  /* size of the open segment */
    uint64_t off;    /* next record's offset in it */
    uint64_t expect; /* LSN the next record must carry */
    uint64_t from_lsn;
    uint8_t *win; /* read window: bytes [win_off, win_off + win_len) */
    size_t win_cap;
    size_t win_len;
    uint64_t win_off;
    uint8_t *raw; /* decompressed payload */
    size_t raw_cap;
    void *dctx;
    int err; /* RD4 */
    keel_diag err_diag;
    int done;
    keel_wal_tail tail;
};

static int seg_cmp(const void *a, const void *b)
{
    const keel__wal_seg *x = a, *y = b;
    return x->first_lsn < y->first_lsn ? -1 : x->first_lsn > y->first_lsn;
}

int keel__wal_list(const char *dir, keel__wal_seg **segs, size_t *n,
                   keel_diag *diag)
{
    int rc = KEEL_OK;
    keel__wal_seg *v = NULL;
    size_t len = 0, cap = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        rc = keel_translate_errno(errno);
        keel__diag(diag, rc, "%s: cannot open WAL directory: %s", dir,
                   keel_strerror(rc));
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t lsn;
        if (!keel__wal_seg_parse_name(e->d_name, &lsn)) {
            continue;
        }
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            keel__wal_seg *nv = realloc(v, ncap * sizeof(*v));
            if (nv == NULL) {
                rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", dir);
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        v[len].first_lsn = lsn;
        keel__wal_seg_name(v[len].name, lsn);
        len++;
    }
    if (len > 1) {
        qsort(v, len, sizeof(*v), seg_cmp);
    }
out:
    if (d != NULL) {
        closedir(d);
    }
    if (rc < 0) {
        free(v);
        v = NULL;
        len = 0;
    }
    *segs = v;
    *n = len;
    return rc;
}

static int fail(keel_wal_reader *r, int code, keel_diag *diag, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

/* Enter the sticky FAILED state (RD4) with one formatted message. */
static int fail(keel_wal_reader *r, int code, keel_diag *diag, const char *fmt,
                ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_diag.msg, sizeof(r->err_diag.msg), fmt, ap);
    va_end(ap);
    r->err_diag.code = code;
    r->err = code;
    if (diag != NULL) {
        *diag = r->err_diag;
    }
    return code;
}

/* Make bytes [off, off + len) of the open segment available in the window.
 * The caller has checked off + len <= fsize (RD3). */
static int window(keel_wal_reader *r, uint64_t off, size_t len,
                  const uint8_t **p)
{
    if (off >= r->win_off && off + len <= r->win_off + r->win_len) {
        *p = r->win + (off - r->win_off);
        return KEEL_OK;
    }
    size_t want = len > WINDOW_BYTES ? len : WINDOW_BYTES;
    if (want > r->fsize - off) {
        want = (size_t)(r->fsize - off);
    }
    if (want > r->win_cap) {
        uint8_t *nw = realloc(r->win, want);
        if (nw == NULL) {
            return KEEL_ENOMEM;
        }
        r->win = nw;
        r->win_cap = want;
    }
    size_t got = 0;
    int rc = r->io->pread(r->io, r->fd, r->win, want, off, &got);
    if (rc < 0) {
        return rc;
    }
    r->win_off = off;
    r->win_len = got;
    if (got < len) {
        return KEEL_EIO; /* the file shrank under us */
    }
    *p = r->win;
    return KEEL_OK;
}

/* Read and validate the header of segment i into h. */
static int read_seg_header(keel_wal_reader *r, size_t i, int fd, uint64_t fsize,
                           keel_wal_seg_header *h, keel_diag *diag)
{
    const char *name = r->segs[i].name;
    uint8_t buf[KEEL_WAL_SEG_HEADER_BYTES];
    size_t got = 0;
    char why[200];
    if (fsize < KEEL_WAL_SEG_HEADER_BYTES) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset 0: bad segment header: file has %" PRIu64
                    " bytes, a header needs %u",
                    name, fsize, KEEL_WAL_SEG_HEADER_BYTES);
    }
    int rc = r->io->pread(r->io, fd, buf, sizeof(buf), 0, &got);
    if (rc < 0 || got < sizeof(buf)) {
        rc = rc < 0 ? rc : KEEL_EIO;
        return fail(r, rc, diag, "%s: offset 0: reading segment header: %s",
                    name, keel_strerror(rc));
    }
    rc = keel__wal_seg_decode(buf, h, why, sizeof(why));
    if (rc < 0) {
        return fail(r, rc, diag, "%s: offset 0: %s", name, why);
    }
    if (h->first_lsn != r->segs[i].first_lsn) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset 16: segment name does not match first LSN "
                    "%" PRIu64,
                    name, h->first_lsn);
    }
    if (r->kernel_id == 0) {
        r->kernel_id = h->kernel_id;
    } else if (h->kernel_id != r->kernel_id) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset 8: wrong kernel id 0x%016" PRIX64
                    ", expected 0x%016" PRIX64,
                    name, h->kernel_id, r->kernel_id);
    }
    if (!r->have_salt) {
        r->salt = h->salt;
        r->have_salt = 1;
    } else if (h->salt != r->salt) { /* RD5 */
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset 24: salt 0x%016" PRIX64
                    " differs from the log's 0x%016" PRIX64
                    " (a segment of another log)",
                    name, h->salt, r->salt);
    }
    return KEEL_OK;
}

static void close_seg(keel_wal_reader *r)
{
    if (r->fd >= 0) {
        r->io->close(r->io, r->fd);
        r->fd = -1;
    }
    r->win_len = 0;
}

static int open_seg(keel_wal_reader *r, size_t i, keel_diag *diag)
{
    const char *name = r->segs[i].name;
    char *path = keel__path_join(r->dir, name);
    if (path == NULL) {
        return fail(r, KEEL_ENOMEM, diag, "%s: out of memory", name);
    }
    int fd = -1;
    int rc = r->io->open(r->io, path, O_RDONLY, 0, &fd);
    free(path);
    if (rc < 0) {
        return fail(r, rc, diag, "%s: cannot open: %s", name,
                    keel_strerror(rc));
    }
    r->fd = fd;
    r->seg = i;
    rc = r->io->size(r->io, fd, &r->fsize);
    if (rc < 0) {
        return fail(r, rc, diag, "%s: cannot stat: %s", name,
                    keel_strerror(rc));
    }
    keel_wal_seg_header h;
    rc = read_seg_header(r, i, fd, r->fsize, &h, diag);
    if (rc < 0) {
        return rc;
    }
    if (r->expect != 0 && h.first_lsn != r->expect) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset 16: LSN gap: segment starts at LSN %" PRIu64
                    " (expected LSN %" PRIu64 ")",
                    name, h.first_lsn, r->expect);
    }
    r->expect = h.first_lsn;
    r->off = KEEL_WAL_SEG_HEADER_BYTES;
    r->win_len = 0;
    return KEEL_OK;
}

/*
 * Check the record at off of the open segment (R1–R4). Returns 1 when it is
 * intact (header decoded into h, bytes via *p), 0 when damaged (why
 * filled), or a negative I/O error.
 */
static int check_record(keel_wal_reader *r, uint64_t off,
                        keel_wal_rec_header *h, const uint8_t **p, char *why,
                        size_t why_cap)
{
    const uint8_t *b;
    uint64_t left = r->fsize - off;
    if (left < KEEL_WAL_REC_OVERHEAD_BYTES) { /* R1 */
        snprintf(why, why_cap,
                 "short record header: %" PRIu64 " bytes left, a record "
                 "needs at least %u",
                 left, KEEL_WAL_REC_OVERHEAD_BYTES);
        return 0;
    }
    int rc = window(r, off, KEEL_WAL_REC_HEADER_BYTES, &b);
    if (rc < 0) {
        return rc;
    }
    uint32_t magic = keel__wal_rec_magic(b);
    if (magic != KEEL_WAL_REC_MAGIC) { /* R2 */
        snprintf(why, why_cap,
                 "bad record magic 0x%08" PRIX32 ", expected 0x%08X", magic,
                 KEEL_WAL_REC_MAGIC);
        return 0;
    }
    keel__wal_rec_decode(b, h);
    if (h->stored_len > KEEL_WAL_MAX_PAYLOAD_BYTES) { /* R3 */
        snprintf(why, why_cap,
                 "record length %" PRIu32 " exceeds the maximum %u",
                 h->stored_len, KEEL_WAL_MAX_PAYLOAD_BYTES);
        return 0;
    }
    uint64_t total = KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)h->stored_len;
    if (total > left) {
        snprintf(why, why_cap,
                 "record length %" PRIu32 " past end of file (%" PRIu64
                 " bytes left)",
                 h->stored_len, left);
        return 0;
    }
    rc = window(r, off, (size_t)total, &b);
    if (rc < 0) {
        return rc;
    }
    uint64_t stored =
        keel__get_u64(b + KEEL_WAL_REC_HEADER_BYTES + h->stored_len);
    uint64_t computed = keel__wal_rec_checksum(
        r->salt, b, b + KEEL_WAL_REC_HEADER_BYTES, h->stored_len);
    if (stored != computed) { /* R4 */
        snprintf(why, why_cap,
                 "checksum mismatch: stored 0x%016" PRIX64
                 ", computed 0x%016" PRIX64,
                 stored, computed);
        return 0;
    }
    *p = b;
    return 1;
}

/*
 * RD2: after damage at off, is there a record with a good checksum and an
 * LSN >= expect starting at or after `from` in the open segment (RD6: from
 * is past the damaged record's plausible declared length)? Scans the rest
 * of the file for the record magic. @return 1 (*at set), 0, or an I/O
 * error.
 */
static int valid_record_after(keel_wal_reader *r, uint64_t from, uint64_t *at)
{
    uint8_t magic[4];
    keel__put_u32(magic, KEEL_WAL_REC_MAGIC);
    for (uint64_t pos = from; pos + KEEL_WAL_REC_OVERHEAD_BYTES <= r->fsize;) {
        const uint8_t *b;
        size_t span = (size_t)(r->fsize - pos < WINDOW_BYTES ? r->fsize - pos
                                                             : WINDOW_BYTES);
        int rc = window(r, pos, span, &b);
        if (rc < 0) {
            return rc;
        }
        const uint8_t *hit = memmem(b, span, magic, sizeof(magic));
        if (hit == NULL) {
            /* Keep three bytes of overlap so a magic split across two
             * windows is still seen. */
            pos += span > 3 ? span - 3 : 1;
            continue;
        }
        uint64_t cand = pos + (uint64_t)(hit - b);
        keel_wal_rec_header h;
        const uint8_t *rec;
        char why[200];
        /* Cheap header checks first: hashing every magic-led candidate
         * would make crafted input (a payload full of record magics)
         * quadratic in the segment size. */
        if (cand + KEEL_WAL_REC_OVERHEAD_BYTES > r->fsize) {
            break;
        }
        rc = window(r, cand, KEEL_WAL_REC_HEADER_BYTES, &rec);
        if (rc < 0) {
            return rc;
        }
        keel__wal_rec_decode(rec, &h);
        if (h.lsn < r->expect ||
            !keel__wal_rec_sane(rec, &h, why, sizeof(why))) {
            pos = cand + 1;
            continue;
        }
        rc = check_record(r, cand, &h, &rec, why, sizeof(why));
        if (rc < 0) {
            return rc;
        }
        if (rc == 1 && h.lsn >= r->expect) {
            *at = cand;
            return 1;
        }
        pos = cand + 1;
    }
    return 0;
}

/* Decide what damage at r->off is: torn tail (0) or corruption (< 0). */
static int damage(keel_wal_reader *r, const char *why, keel_diag *diag)
{
    const char *name = r->segs[r->seg].name;
    if (r->seg + 1 < r->nsegs) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset %" PRIu64 ": %s (expected LSN %" PRIu64
                    "); damage in a segment that is not the last",
                    name, r->off, why, r->expect);
    }
    uint64_t at = 0;
    const uint8_t *hb = NULL;
    size_t have = r->fsize - r->off < KEEL_WAL_REC_HEADER_BYTES
                      ? (size_t)(r->fsize - r->off)
                      : KEEL_WAL_REC_HEADER_BYTES;
    int rc = have > 0 ? window(r, r->off, have, &hb) : KEEL_OK;
    uint64_t from = r->off + 1;
    if (rc == KEEL_OK && hb != NULL) {
        from = keel__wal_rec_span(hb, have, r->off, r->fsize, r->expect);
    }
    if (rc == KEEL_OK) {
        rc = valid_record_after(r, from, &at);
    }
    if (rc < 0) {
        return fail(r, rc, diag, "%s: reading: %s", name, keel_strerror(rc));
    }
    if (rc == 1) {
        return fail(r, KEEL_ECORRUPT, diag,
                    "%s: offset %" PRIu64 ": %s (expected LSN %" PRIu64
                    "); a valid record follows at offset %" PRIu64,
                    name, r->off, why, r->expect, at);
    }
    r->done = 1;
    r->tail.torn = 1;
    snprintf(r->tail.segment, sizeof(r->tail.segment), "%s", name);
    r->tail.offset = r->off;
    r->tail.bytes = r->fsize - r->off;
    r->tail.last_lsn = r->expect - 1;
    snprintf(r->tail.reason, sizeof(r->tail.reason), "%s", why);
    return 0;
}

static void finish_clean(keel_wal_reader *r)
{
    r->done = 1;
    r->tail.torn = 0;
    if (r->nsegs > 0) {
        snprintf(r->tail.segment, sizeof(r->tail.segment), "%s",
                 r->segs[r->seg].name);
        r->tail.offset = r->off;
    }
    r->tail.bytes = 0;
    r->tail.last_lsn = r->expect > 0 ? r->expect - 1 : 0;
    r->tail.reason[0] = '\0';
}

int keel_wal_reader_next(keel_wal_reader *r, keel_wal_record *rec,
                         keel_diag *diag)
{
    for (;;) {
        if (r->err < 0) {
            if (diag != NULL) {
                *diag = r->err_diag;
            }
            return r->err;
        }
        if (r->done) {
            return 0;
        }
        if (r->nsegs == 0) {
            finish_clean(r);
            return 0;
        }
        if (r->fd < 0) {
            int rc = open_seg(r, r->seg, diag);
            if (rc < 0) {
                return rc;
            }
        }
        if (r->off == r->fsize) {
            if (r->seg + 1 == r->nsegs) {
                finish_clean(r);
                return 0;
            }
            close_seg(r);
            r->seg++;
            continue;
        }
        const char *name = r->segs[r->seg].name;
        keel_wal_rec_header h;
        const uint8_t *b = NULL;
        char why[200];
        int rc = check_record(r, r->off, &h, &b, why, sizeof(why));
        if (rc < 0) {
            return fail(r, rc, diag, "%s: offset %" PRIu64 ": reading: %s",
                        name, r->off, keel_strerror(rc));
        }
        if (rc == 0) {
            return damage(r, why, diag);
        }
        if (!keel__wal_rec_sane(b, &h, why, sizeof(why))) { /* R5 */
            return fail(r, KEEL_ECORRUPT, diag,
                        "%s: offset %" PRIu64 ": %s (expected LSN %" PRIu64 ")",
                        name, r->off, why, r->expect);
        }
        if (h.lsn != r->expect) { /* R6 */
            return fail(r, KEEL_ECORRUPT, diag,
                        "%s: offset %" PRIu64 ": LSN gap: record has LSN "
                        "%" PRIu64 " (expected LSN %" PRIu64 ")",
                        name, r->off, h.lsn, r->expect);
        }
        uint64_t rec_off = r->off;
        const uint8_t *payload = b + KEEL_WAL_REC_HEADER_BYTES;
        uint64_t checksum = keel__get_u64(payload + h.stored_len);
        r->off += KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)h.stored_len;
        r->expect++;
        if (h.lsn < r->from_lsn) {
            continue;
        }
        size_t plen = h.stored_len;
        if (h.flags & KEEL_WAL_FLAG_ZSTD) { /* R7 */
            if (r->raw_cap < h.raw_len || r->raw == NULL) {
                size_t ncap = h.raw_len > 0 ? h.raw_len : 1;
                uint8_t *nr = realloc(r->raw, ncap);
                if (nr == NULL) {
                    return fail(r, KEEL_ENOMEM, diag, "%s: out of memory",
                                name);
                }
                r->raw = nr;
                r->raw_cap = ncap;
            }
            rc = keel__wal_decompress(&r->dctx, payload, h.stored_len, r->raw,
                                      h.raw_len, why, sizeof(why));
            if (rc < 0) {
                return fail(r, rc, diag,
                            "%s: offset %" PRIu64 ": %s (expected LSN "
                            "%" PRIu64 ")",
                            name, rec_off, why, h.lsn);
            }
            payload = r->raw;
            plen = h.raw_len;
        }
        rec->lsn = h.lsn;
        rec->crank = h.crank;
        rec->kind = h.kind;
        rec->flags = h.flags;
        rec->stored_len = h.stored_len;
        rec->checksum = checksum;
        snprintf(rec->segment, sizeof(rec->segment), "%s", name);
        rec->offset = rec_off;
        rec->payload.ptr = payload;
        rec->payload.len = plen;
        return 1;
    }
}

int keel_wal_reader_open(const char *dir, const keel_wal_options *opts,
                         uint64_t from_lsn, keel_wal_reader **out,
                         keel_diag *diag)
{
    int rc = KEEL_OK;
    keel_wal_reader *r = calloc(1, sizeof(*r));
    *out = NULL;
    if (r == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    r->fd = -1;
    r->io = opts != NULL && opts->io != NULL ? opts->io : keel__io_posix();
    r->kernel_id = opts != NULL ? opts->kernel_id : 0;
    r->from_lsn = from_lsn;
    r->dir = strdup(dir);
    if (r->dir == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    rc = keel__wal_list(dir, &r->segs, &r->nsegs, diag);
    if (rc < 0) {
        goto out;
    }
    /* Validate every segment header now (cheap: 40 bytes each), so a
     * foreign or newer segment is refused before any record is used. */
    for (size_t i = 0; i < r->nsegs; i++) {
        rc = open_seg(r, i, diag);
        close_seg(r);
        if (rc < 0) {
            goto out;
        }
        r->expect = 0;
    }
    r->seg = 0;
    for (size_t i = 1; i < r->nsegs; i++) {
        if (r->segs[i].first_lsn <= from_lsn) {
            r->seg = i;
        }
    }
    r->err = 0;
out:
    if (rc < 0) {
        keel_wal_reader_close(r);
        return rc;
    }
    *out = r;
    return KEEL_OK;
}

void keel_wal_reader_tail(const keel_wal_reader *r, keel_wal_tail *out)
{
    *out = r->tail;
}

uint64_t keel__wal_reader_salt(const keel_wal_reader *r)
{
    return r->salt;
}

uint64_t keel_wal_reader_kernel_id(const keel_wal_reader *r)
{
    return r->kernel_id;
}

void keel_wal_reader_close(keel_wal_reader *r)
{
    if (r == NULL) {
        return;
    }
    close_seg(r);
    keel__wal_zstd_free(NULL, r->dctx);
    free(r->win);
    free(r->raw);
    free(r->segs);
    free(r->dir);
    free(r);
}
