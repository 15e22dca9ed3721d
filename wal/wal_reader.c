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
 *   RD7  keel_wal_reader_pos() always describes the last thing next() said:
 *        the record returned, or the end, or the damage or error it stopped
 *        at, with the same segment, offset and reason text as the diag
 *        (the diag adds the position and the expected LSN). Recovery
 *        (recovery/truncate.c) locates damage through it and
 *        keel__wal_reader_scan(), never by walking records itself.
 *   RD8  Opened lazily (keel__wal_reader_open_lazy), segment headers are
 *        checked when the reader reaches them, so the first damage in log
 *        order is the one reported; otherwise all are checked at open.
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
    int lazy; /* RD8: headers checked as reached, not all at open */
    keel_wal_tail tail;
    keel_wal_pos pos; /* RD7 */
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

/*
 * Stop at damage (or, with damage KEEL_WAL_DAMAGE_IO, an error) in segment
 * seg at offset off (0: its header), where LSN lsn was expected: record the
 * position and reason (RD7), then fail with "<segment>: offset <at>:
 * <why><tail>" (at: the offset of the bad field). code 0: a torn tail, no
 * failure.
 */
static int stop(keel_wal_reader *r, int code, int damage, size_t seg,
                uint64_t off, uint64_t at, uint64_t lsn, const char *why,
                const char *tail, keel_diag *diag)
{
    keel_wal_pos *p = &r->pos;
    int have_len = p->have_len && p->seg_index == seg && p->offset == off;
    uint32_t len = p->declared_len;
    memset(p, 0, sizeof(*p));
    p->damage = damage;
    p->code = code;
    p->seg_index = seg;
    p->segs = r->nsegs;
    snprintf(p->segment, sizeof(p->segment), "%s", r->segs[seg].name);
    p->seg_bytes = r->seg == seg ? r->fsize : 0;
    p->offset = off;
    p->lsn = lsn != 0 ? lsn : r->segs[seg].first_lsn;
    p->have_len = have_len;
    p->declared_len = have_len ? len : 0;
    snprintf(p->reason, sizeof(p->reason), "%s", why);
    if (code == 0) {
        return 0;
    }
    return fail(r, code, diag, "%s: offset %" PRIu64 ": %s%s",
                r->segs[seg].name, at, why, tail);
}

/* Note the declared length of the record at off of the open segment, read
 * from a header with the record magic (before stop() reports it). */
static void note_len(keel_wal_reader *r, uint64_t off, uint32_t len)
{
    r->pos.seg_index = r->seg;
    r->pos.offset = off;
    r->pos.have_len = 1;
    r->pos.declared_len = len;
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
    uint8_t buf[KEEL_WAL_SEG_HEADER_BYTES];
    size_t got = 0;
    char why[200];
    if (fsize < KEEL_WAL_SEG_HEADER_BYTES) {
        snprintf(why, sizeof(why),
                 "bad segment header: file has %" PRIu64
                 " bytes, a header needs %u",
                 fsize, KEEL_WAL_SEG_HEADER_BYTES);
        return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_SEG_HEADER, i, 0, 0,
                    r->expect, why, "", diag);
    }
    int rc = r->io->pread(r->io, fd, buf, sizeof(buf), 0, &got);
    if (rc < 0 || got < sizeof(buf)) {
        rc = rc < 0 ? rc : KEEL_EIO;
        snprintf(why, sizeof(why), "reading segment header: %s",
                 keel_strerror(rc));
        return stop(r, rc, KEEL_WAL_DAMAGE_IO, i, 0, 0, r->expect, why, "",
                    diag);
    }
    rc = keel__wal_seg_decode(buf, h, why, sizeof(why));
    if (rc < 0) {
        return stop(r, rc, KEEL_WAL_DAMAGE_SEG_HEADER, i, 0, 0, r->expect, why,
                    "", diag);
    }
    if (h->first_lsn != r->segs[i].first_lsn) {
        snprintf(why, sizeof(why),
                 "segment name does not match first LSN %" PRIu64,
                 h->first_lsn);
        return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_SEG_NAME, i, 0, 16,
                    r->expect, why, "", diag);
    }
    if (r->kernel_id == 0) {
        r->kernel_id = h->kernel_id;
    } else if (h->kernel_id != r->kernel_id) {
        snprintf(why, sizeof(why),
                 "wrong kernel id 0x%016" PRIX64 ", expected 0x%016" PRIX64,
                 h->kernel_id, r->kernel_id);
        return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_SEG_KERNEL, i, 0, 8,
                    r->expect, why, "", diag);
    }
    if (!r->have_salt) {
        r->salt = h->salt;
        r->have_salt = 1;
    } else if (h->salt != r->salt) { /* RD5 */
        snprintf(why, sizeof(why),
                 "salt 0x%016" PRIX64 " differs from the log's 0x%016" PRIX64
                 " (a segment of another log)",
                 h->salt, r->salt);
        return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_SEG_SALT, i, 0, 24,
                    r->expect, why, "", diag);
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

/* Open segment i for reading its bytes, without reading its header. */
static int open_raw(keel_wal_reader *r, size_t i, keel_diag *diag)
{
    const char *name = r->segs[i].name;
    char *path = keel__path_join(r->dir, name);
    if (path == NULL) {
        return fail(r, KEEL_ENOMEM, diag, "%s: out of memory", name);
    }
    int fd = -1;
    int rc = r->io->open(r->io, path, O_RDONLY, 0, &fd);
    free(path);
    r->seg = i;
    r->fsize = 0;
    r->win_len = 0;
    if (rc < 0) {
        return fail(r, rc, diag, "%s: cannot open: %s", name,
                    keel_strerror(rc));
    }
    r->fd = fd;
    rc = r->io->size(r->io, fd, &r->fsize);
    if (rc < 0) {
        return fail(r, rc, diag, "%s: cannot stat: %s", name,
                    keel_strerror(rc));
    }
    return KEEL_OK;
}

static int open_seg(keel_wal_reader *r, size_t i, keel_diag *diag)
{
    char why[200];
    int rc = open_raw(r, i, diag);
    if (rc < 0) {
        snprintf(why, sizeof(why), "%s", keel_strerror(rc));
        stop(r, 0, KEEL_WAL_DAMAGE_IO, i, 0, 0, r->expect, why, "", NULL);
        r->pos.code = rc;
        return rc;
    }
    keel_wal_seg_header h;
    rc = read_seg_header(r, i, r->fd, r->fsize, &h, diag);
    if (rc < 0) {
        return rc;
    }
    if (r->expect != 0 && h.first_lsn != r->expect) {
        snprintf(why, sizeof(why), "LSN gap: segment starts at LSN %" PRIu64,
                 h.first_lsn);
        char tail[64];
        snprintf(tail, sizeof(tail), " (expected LSN %" PRIu64 ")", r->expect);
        return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_SEG_GAP, i, 0, 16,
                    r->expect, why, tail, diag);
    }
    r->expect = h.first_lsn;
    r->off = KEEL_WAL_SEG_HEADER_BYTES;
    r->win_len = 0;
    return KEEL_OK;
}

/*
 * Check the record at off of the open segment (R1–R4). Returns 1 when it is
 * intact (header decoded into h, bytes via *p), 0 when damaged (why filled,
 * *kind the damage; h decoded when the magic was good), or a negative I/O
 * error.
 */
static int check_record(keel_wal_reader *r, uint64_t off,
                        keel_wal_rec_header *h, const uint8_t **p, int *kind,
                        char *why, size_t why_cap)
{
    const uint8_t *b;
    uint64_t left = r->fsize - off;
    if (left < KEEL_WAL_REC_OVERHEAD_BYTES) { /* R1 */
        snprintf(why, why_cap,
                 "short record header: %" PRIu64 " bytes left, a record "
                 "needs at least %u",
                 left, KEEL_WAL_REC_OVERHEAD_BYTES);
        *kind = KEEL_WAL_DAMAGE_REC_SHORT;
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
        *kind = KEEL_WAL_DAMAGE_REC_MAGIC;
        return 0;
    }
    keel__wal_rec_decode(b, h);
    *kind = KEEL_WAL_DAMAGE_REC_LENGTH;
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
        *kind = KEEL_WAL_DAMAGE_REC_CHECKSUM;
        return 0;
    }
    *kind = KEEL_WAL_DAMAGE_NONE;
    *p = b;
    return 1;
}

/*
 * RD2: records with a good checksum, a sane header and an LSN >= min_lsn
 * starting at or after `from` in the open segment, found by scanning the
 * rest of the file for the record magic; each one found is skipped whole.
 * first_only: stop at the first (its offset in *at). Counts into f.
 * @return KEEL_OK or an I/O error.
 */
static int scan(keel_wal_reader *r, uint64_t from, uint64_t min_lsn,
                int first_only, uint64_t *at, keel__wal_found *f)
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
        int kind;
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
        if (h.lsn < min_lsn || !keel__wal_rec_sane(rec, &h, why, sizeof(why))) {
            pos = cand + 1;
            continue;
        }
        rc = check_record(r, cand, &h, &rec, &kind, why, sizeof(why));
        if (rc < 0) {
            return rc;
        }
        if (rc == 0) {
            pos = cand + 1;
            continue;
        }
        f->first_lsn =
            f->count == 0 || h.lsn < f->first_lsn ? h.lsn : f->first_lsn;
        f->last_lsn = h.lsn > f->last_lsn ? h.lsn : f->last_lsn;
        f->count++;
        if (first_only) {
            *at = cand;
            return KEEL_OK;
        }
        /* past it: a payload full of magics stays linear */
        pos = cand + KEEL_WAL_REC_OVERHEAD_BYTES + h.stored_len;
    }
    return KEEL_OK;
}

/* Decide what damage of kind `kind` at r->off is: torn tail (0) or
 * corruption (< 0). */
static int damage(keel_wal_reader *r, int kind, const char *why,
                  keel_diag *diag)
{
    const char *name = r->segs[r->seg].name;
    char tail[160];
    snprintf(tail, sizeof(tail), " (expected LSN %" PRIu64 ")", r->expect);
    if (r->seg + 1 < r->nsegs) {
        snprintf(tail, sizeof(tail),
                 " (expected LSN %" PRIu64
                 "); damage in a segment that is not the last",
                 r->expect);
        return stop(r, KEEL_ECORRUPT, kind, r->seg, r->off, r->off, r->expect,
                    why, tail, diag);
    }
    uint64_t at = 0;
    keel__wal_found f = {0};
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
        rc = scan(r, from, r->expect, 1, &at, &f);
    }
    if (rc < 0) {
        stop(r, 0, KEEL_WAL_DAMAGE_IO, r->seg, r->off, r->off, r->expect,
             keel_strerror(rc), "", NULL);
        r->pos.code = rc;
        return fail(r, rc, diag, "%s: reading: %s", name, keel_strerror(rc));
    }
    if (f.count > 0) {
        snprintf(tail, sizeof(tail),
                 " (expected LSN %" PRIu64
                 "); a valid record follows at offset %" PRIu64,
                 r->expect, at);
        rc = stop(r, KEEL_ECORRUPT, kind, r->seg, r->off, r->off, r->expect,
                  why, tail, diag);
        r->pos.valid_after = at;
        return rc;
    }
    stop(r, 0, kind, r->seg, r->off, r->off, r->expect, why, "", NULL);
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
    memset(&r->pos, 0, sizeof(r->pos));
    r->pos.segs = r->nsegs;
    if (r->nsegs > 0) {
        snprintf(r->tail.segment, sizeof(r->tail.segment), "%s",
                 r->segs[r->seg].name);
        r->tail.offset = r->off;
        r->pos.seg_index = r->seg;
        snprintf(r->pos.segment, sizeof(r->pos.segment), "%s",
                 r->segs[r->seg].name);
        r->pos.seg_bytes = r->fsize;
        r->pos.offset = r->off;
    }
    r->tail.bytes = 0;
    r->tail.last_lsn = r->expect > 0 ? r->expect - 1 : 0;
    r->tail.reason[0] = '\0';
    r->pos.lsn = r->expect > 0 ? r->expect : 1;
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
        char why[200], tail[64];
        int kind = KEEL_WAL_DAMAGE_NONE;
        int rc = check_record(r, r->off, &h, &b, &kind, why, sizeof(why));
        if (rc < 0) {
            snprintf(why, sizeof(why), "reading: %s", keel_strerror(rc));
            return stop(r, rc, KEEL_WAL_DAMAGE_IO, r->seg, r->off, r->off,
                        r->expect, why, "", diag);
        }
        if (kind != KEEL_WAL_DAMAGE_REC_SHORT &&
            kind != KEEL_WAL_DAMAGE_REC_MAGIC) {
            note_len(r, r->off, h.stored_len);
        }
        if (rc == 0) {
            return damage(r, kind, why, diag);
        }
        snprintf(tail, sizeof(tail), " (expected LSN %" PRIu64 ")", r->expect);
        if (!keel__wal_rec_sane(b, &h, why, sizeof(why))) { /* R5 */
            return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_REC_FIELDS, r->seg,
                        r->off, r->off, r->expect, why, tail, diag);
        }
        if (h.lsn != r->expect) { /* R6 */
            snprintf(why, sizeof(why), "LSN gap: record has LSN %" PRIu64,
                     h.lsn);
            return stop(r, KEEL_ECORRUPT, KEEL_WAL_DAMAGE_REC_GAP, r->seg,
                        r->off, r->off, r->expect, why, tail, diag);
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
                    return stop(r, KEEL_ENOMEM, KEEL_WAL_DAMAGE_IO, r->seg,
                                rec_off, rec_off, h.lsn, "out of memory", "",
                                diag);
                }
                r->raw = nr;
                r->raw_cap = ncap;
            }
            rc = keel__wal_decompress(&r->dctx, payload, h.stored_len, r->raw,
                                      h.raw_len, why, sizeof(why));
            if (rc < 0) {
                return stop(r, rc,
                            rc == KEEL_ECORRUPT ? KEEL_WAL_DAMAGE_REC_PAYLOAD
                                                : KEEL_WAL_DAMAGE_IO,
                            r->seg, rec_off, rec_off, h.lsn, why, tail, diag);
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
        keel_wal_pos *p = &r->pos;
        p->damage = KEEL_WAL_DAMAGE_NONE;
        p->code = 0;
        p->seg_index = r->seg;
        p->segs = r->nsegs;
        memcpy(p->segment, rec->segment, sizeof(p->segment));
        p->seg_bytes = r->fsize;
        p->offset = rec_off;
        p->lsn = h.lsn;
        p->have_len = 1;
        p->declared_len = h.stored_len;
        p->valid_after = 0;
        p->reason[0] = '\0';
        return 1;
    }
}

static int reader_open(const char *dir, const keel_wal_options *opts,
                       uint64_t from_lsn, int lazy, keel_wal_reader **out,
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
    r->lazy = lazy;
    r->pos.segs = r->nsegs;
    /* Validate every segment header now (cheap: 40 bytes each), so a
     * foreign or newer segment is refused before any record is used
     * (unless lazy: RD8). */
    for (size_t i = 0; !lazy && i < r->nsegs; i++) {
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
    memset(&r->pos, 0, sizeof(r->pos));
    r->pos.segs = r->nsegs;
out:
    if (rc < 0) {
        keel_wal_reader_close(r);
        return rc;
    }
    *out = r;
    return KEEL_OK;
}

int keel_wal_reader_open(const char *dir, const keel_wal_options *opts,
                         uint64_t from_lsn, keel_wal_reader **out,
                         keel_diag *diag)
{
    return reader_open(dir, opts, from_lsn, 0, out, diag);
}

int keel__wal_reader_open_lazy(const char *dir, const keel_wal_options *opts,
                               uint64_t from_lsn, keel_wal_reader **out,
                               keel_diag *diag)
{
    return reader_open(dir, opts, from_lsn, 1, out, diag);
}

void keel_wal_reader_tail(const keel_wal_reader *r, keel_wal_tail *out)
{
    *out = r->tail;
}

void keel_wal_reader_pos(const keel_wal_reader *r, keel_wal_pos *out)
{
    *out = r->pos;
}

const char *keel_wal_damage_name(int damage)
{
    static const char *const names[] = {
        [KEEL_WAL_DAMAGE_NONE] = "none",
        [KEEL_WAL_DAMAGE_SEG_HEADER] = "segment-header",
        [KEEL_WAL_DAMAGE_SEG_NAME] = "segment-name",
        [KEEL_WAL_DAMAGE_SEG_KERNEL] = "segment-kernel",
        [KEEL_WAL_DAMAGE_SEG_SALT] = "segment-salt",
        [KEEL_WAL_DAMAGE_SEG_GAP] = "segment-gap",
        [KEEL_WAL_DAMAGE_REC_SHORT] = "short",
        [KEEL_WAL_DAMAGE_REC_MAGIC] = "magic",
        [KEEL_WAL_DAMAGE_REC_LENGTH] = "length",
        [KEEL_WAL_DAMAGE_REC_CHECKSUM] = "checksum",
        [KEEL_WAL_DAMAGE_REC_FIELDS] = "fields",
        [KEEL_WAL_DAMAGE_REC_GAP] = "gap",
        [KEEL_WAL_DAMAGE_REC_PAYLOAD] = "payload",
        [KEEL_WAL_DAMAGE_IO] = "io",
    };
    if (damage < 0 || (size_t)damage >= sizeof(names) / sizeof(names[0])) {
        return "unknown";
    }
    return names[damage];
}

int keel__wal_reader_scan(keel_wal_reader *r, size_t seg, uint64_t from,
                          uint64_t min_lsn, keel__wal_found *out,
                          keel_diag *diag)
{
    memset(out, 0, sizeof(*out));
    if ((!r->done && r->err == 0) || seg >= r->nsegs) {
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: scanning segment %zu of %zu: %s", r->dir, seg,
                          r->nsegs,
                          seg >= r->nsegs ? "no such segment"
                                          : "the reader is still reading");
    }
    const char *name = r->segs[seg].name;
    snprintf(out->segment, sizeof(out->segment), "%s", name);
    int rc = KEEL_OK;
    if (r->fd < 0 || r->seg != seg) {
        close_seg(r);
        char *path = keel__path_join(r->dir, name);
        rc = path != NULL ? r->io->open(r->io, path, O_RDONLY, 0, &r->fd)
                          : KEEL_ENOMEM;
        free(path);
        r->seg = seg;
        r->fsize = 0;
        if (rc == KEEL_OK) {
            rc = r->io->size(r->io, r->fd, &r->fsize);
        }
    }
    out->seg_bytes = r->fsize;
    uint64_t at = 0;
    if (rc == KEEL_OK) {
        rc = scan(r, from, min_lsn, 0, &at, out);
    }
    if (rc < 0) {
        close_seg(r);
        return keel__diag(diag, rc, "%s: reading: %s", name, keel_strerror(rc));
    }
    return KEEL_OK;
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
