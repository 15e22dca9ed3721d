/*
 * recovery/truncate.c — `keel recover --truncate-at-corruption`: the
 * explicit way out for a log damaged mid-way, which the WAL reader (and so
 * keel_kernel_open) refuses with KEEL_ECORRUPT. Declared in
 * recovery_internal.h.
 *
 * Plan: walk STATE/wal as the reader does (wal/wal_format.h, rules R1..R7
 * and the reader's RD2) and stop at the first place it would refuse: a bad
 * segment header, a segment of another kernel, an LSN gap, a record that
 * fails its checks in a segment that is not the last, or in the last one
 * with a verifying record after it. Everything before that place is kept;
 * that record and everything after it are dropped. The plan also scans
 * the dropped bytes for records that still verify, so the user is told
 * which LSNs are lost although readable.
 *
 * Invariants:
 *   TR1 Nothing is changed unless keel__salvage_apply() is called, and it
 *       refuses (changing nothing) when the store's checkpoint holds
 *       effects of a record it would drop: that state could not be
 *       explained by the log that would remain.
 *   TR2 A torn tail is not salvage's business (opening the kernel
 *       truncates it, reporting it): the plan then says "not damaged".
 *   TR3 Order of changes: later segments are deleted newest first, then
 *       the damaged one is truncated and synced, then the directory is
 *       synced. Interrupted anywhere, the log left is the kept prefix plus
 *       a suffix of the doomed part, which a new plan salvages at the same
 *       point.
 *   TR4 All I/O goes through keel_io.
 *   TR5 keel__salvage_apply() holds the log's writer lock (wal_internal.h)
 *       while it changes the log, so no WAL writer appends meanwhile.
 *   TR6 The plan follows the reader's rules exactly, the salt (RD5) and
 *       the declared-length rule of resynchronisation (RD6) included, so
 *       it calls "damaged" only what the reader refuses.
 */
#include "recovery/recovery_internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/diag.h"
#include "common/io.h"
#include "store/store.h"
#include "wal/wal_format.h"
#include "wal/wal_internal.h"

#define WINDOW_BYTES (1u << 20)

/* One segment open for reading, through a window of its bytes. */
typedef struct seg_reader {
    keel_io *io;
    int fd;
    uint64_t fsize;
    uint8_t *win;
    size_t win_cap;
    uint64_t win_off;
    size_t win_len;
    uint8_t *raw; /* decompressed payloads (R7) */
    size_t raw_cap;
    void *dctx;
    uint64_t salt; /* the log's (RD5), from its first segment */
    int have_salt;
} seg_reader;

static void seg_close(seg_reader *s)
{
    if (s->fd >= 0) {
        s->io->close(s->io, s->fd);
        s->fd = -1;
    }
    s->win_len = 0;
}

static int seg_open(seg_reader *s, const char *dir, const char *name,
                    keel_diag *diag)
{
    char *path = keel__path_join(dir, name);
    int rc = path != NULL ? s->io->open(s->io, path, O_RDONLY, 0, &s->fd)
                          : KEEL_ENOMEM;
    free(path);
    if (rc == KEEL_OK) {
        rc = s->io->size(s->io, s->fd, &s->fsize);
    }
    if (rc < 0) {
        seg_close(s);
        return keel__diag(diag, rc, "wal/%s: cannot read: %s", name,
                          keel_strerror(rc));
    }
    s->win_len = 0;
    return KEEL_OK;
}

/* Bytes [off, off + len) of the segment (the caller checked they exist). */
static int seg_bytes(seg_reader *s, uint64_t off, size_t len, const uint8_t **p)
{
    if (off >= s->win_off && off + len <= s->win_off + s->win_len) {
        *p = s->win + (off - s->win_off);
        return KEEL_OK;
    }
    size_t want = len > WINDOW_BYTES ? len : WINDOW_BYTES;
    if (want > s->fsize - off) {
        want = (size_t)(s->fsize - off);
    }
    if (want > s->win_cap) {
        uint8_t *nw = realloc(s->win, want);
        if (nw == NULL) {
            return KEEL_ENOMEM;
        }
        s->win = nw;
        s->win_cap = want;
    }
    size_t got = 0;
    int rc = s->io->pread(s->io, s->fd, s->win, want, off, &got);
    if (rc < 0) {
        return rc;
    }
    s->win_off = off;
    s->win_len = got;
    if (got < len) {
        return KEEL_EIO; /* the file shrank under us */
    }
    *p = s->win;
    return KEEL_OK;
}

/*
 * R1..R4 for the record at off: 1 intact (header in *h, bytes at *p), 0
 * damaged (why), or an I/O error.
 */
static int record_at(seg_reader *s, uint64_t off, keel_wal_rec_header *h,
                     const uint8_t **p, char *why, size_t cap)
{
    const uint8_t *b;
    uint64_t left = s->fsize - off;
    if (left < KEEL_WAL_REC_OVERHEAD_BYTES) {
        snprintf(why, cap, "short record header: %" PRIu64 " bytes left", left);
        return 0;
    }
    int rc = seg_bytes(s, off, KEEL_WAL_REC_HEADER_BYTES, &b);
    if (rc < 0) {
        return rc;
    }
    if (keel__wal_rec_magic(b) != KEEL_WAL_REC_MAGIC) {
        snprintf(why, cap, "bad record magic 0x%08" PRIX32,
                 keel__wal_rec_magic(b));
        return 0;
    }
    keel__wal_rec_decode(b, h);
    uint64_t total = KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)h->stored_len;
    if (h->stored_len > KEEL_WAL_MAX_PAYLOAD_BYTES || total > left) {
        snprintf(why, cap, "record length %" PRIu32 " past end of file",
                 h->stored_len);
        return 0;
    }
    rc = seg_bytes(s, off, (size_t)total, &b);
    if (rc < 0) {
        return rc;
    }
    uint64_t stored =
        keel__get_u64(b + KEEL_WAL_REC_HEADER_BYTES + h->stored_len);
    if (stored != keel__wal_rec_checksum(s->salt, b,
                                         b + KEEL_WAL_REC_HEADER_BYTES,
                                         h->stored_len)) {
        snprintf(why, cap, "checksum mismatch");
        return 0;
    }
    *p = b;
    return 1;
}

/* R7: a compressed payload decodes to exactly raw_len bytes. */
static int payload_ok(seg_reader *s, const uint8_t *b,
                      const keel_wal_rec_header *h, char *why, size_t cap)
{
    if (!(h->flags & KEEL_WAL_FLAG_ZSTD)) {
        return 1;
    }
    if (h->raw_len > s->raw_cap || s->raw == NULL) {
        uint8_t *nr = realloc(s->raw, h->raw_len > 0 ? h->raw_len : 1);
        if (nr == NULL) {
            return KEEL_ENOMEM;
        }
        s->raw = nr;
        s->raw_cap = h->raw_len > 0 ? h->raw_len : 1;
    }
    int rc = keel__wal_decompress(&s->dctx, b + KEEL_WAL_REC_HEADER_BYTES,
                                  h->stored_len, s->raw, h->raw_len, why, cap);
    return rc == KEEL_ECORRUPT ? 0 : rc < 0 ? rc : 1;
}

/*
 * Records with a verifying checksum and a sane header at or after from in
 * the open segment, scanning for the record magic (RD2's rule, and the
 * "readable after the damage" figures). min_lsn: only those with LSN >=
 * it. @return the count (first and last LSN seen), or an I/O error.
 */
static int64_t readable_in(seg_reader *s, uint64_t from, uint64_t min_lsn,
                           uint64_t *first, uint64_t *last)
{
    uint8_t magic[4];
    int64_t n = 0;
    keel__put_u32(magic, KEEL_WAL_REC_MAGIC);
    for (uint64_t pos = from; pos + KEEL_WAL_REC_OVERHEAD_BYTES <= s->fsize;) {
        const uint8_t *b, *rec;
        size_t span = (size_t)(s->fsize - pos < WINDOW_BYTES ? s->fsize - pos
                                                             : WINDOW_BYTES);
        int rc = seg_bytes(s, pos, span, &b);
        if (rc < 0) {
            return rc;
        }
        const uint8_t *hit = memmem(b, span, magic, sizeof(magic));
        if (hit == NULL) {
            pos += span > 3 ? span - 3 : 1; /* a magic across windows */
            continue;
        }
        uint64_t cand = pos + (uint64_t)(hit - b);
        keel_wal_rec_header h;
        char why[200];
        rc = record_at(s, cand, &h, &rec, why, sizeof(why));
        if (rc < 0) {
            return rc;
        }
        if (rc == 1 && h.lsn >= min_lsn &&
            keel__wal_rec_sane(rec, &h, why, sizeof(why))) {
            *first = n == 0 || h.lsn < *first ? h.lsn : *first;
            *last = h.lsn > *last ? h.lsn : *last;
            n++;
            /* past it: a payload full of magics stays linear */
            pos = cand + KEEL_WAL_REC_OVERHEAD_BYTES + h.stored_len;
        } else {
            pos = cand + 1;
        }
    }
    return n;
}

typedef struct planner {
    seg_reader s;
    const char *dir; /* STATE/wal */
    keel__wal_seg *segs;
    size_t nsegs;
    keel__salvage *plan;
} planner;

/* Record that the log is damaged at segment i, offset off. */
static void damaged_at(planner *p, size_t i, uint64_t off, uint64_t lsn,
                       const char *why)
{
    keel__salvage *pl = p->plan;
    pl->damaged = 1;
    snprintf(pl->segment, sizeof(pl->segment), "%s", p->segs[i].name);
    pl->offset = off;
    pl->first_lsn = lsn;
    snprintf(pl->reason, sizeof(pl->reason), "%s", why);
    pl->cut_bytes = p->s.fsize - off;
}

/* Walk segment i from its header (expect: the LSN it must start at, 0 for
 * the first). @return KEEL_OK (damage recorded in the plan, or *expect
 * advanced past its last record), or an I/O error. */
static int walk_segment(planner *p, size_t i, uint64_t *expect, keel_diag *diag)
{
    seg_reader *s = &p->s;
    const char *name = p->segs[i].name;
    char why[240];
    const uint8_t *b;
    keel_wal_seg_header sh;
    int rc = seg_open(s, p->dir, name, diag);
    if (rc < 0) {
        return rc;
    }
    if (*expect == 0) {
        *expect = p->segs[i].first_lsn;
    }
    if (s->fsize < KEEL_WAL_SEG_HEADER_BYTES) {
        damaged_at(p, i, 0, *expect, "segment header cut short");
        return KEEL_OK;
    }
    rc = seg_bytes(s, 0, KEEL_WAL_SEG_HEADER_BYTES, &b);
    if (rc < 0) {
        return keel__diag(diag, rc, "wal/%s: offset 0: %s", name,
                          keel_strerror(rc));
    }
    if (keel__wal_seg_decode(b, &sh, why, sizeof(why)) < 0) {
        damaged_at(p, i, 0, *expect, why);
        return KEEL_OK;
    }
    if (!s->have_salt) {
        s->salt = sh.salt;
        s->have_salt = 1;
    }
    if (sh.salt != s->salt) {
        snprintf(why, sizeof(why),
                 "salt 0x%016" PRIX64 " differs from the log's 0x%016" PRIX64,
                 sh.salt, s->salt);
        damaged_at(p, i, 0, *expect, why);
        return KEEL_OK;
    }
    if (sh.first_lsn != *expect || sh.first_lsn != p->segs[i].first_lsn ||
        sh.kernel_id != p->plan->kernel_id) {
        snprintf(why, sizeof(why),
                 "segment of kernel 0x%016" PRIX64 " starting at LSN %" PRIu64
                 " (expected kernel 0x%016" PRIX64 ", LSN %" PRIu64 ")",
                 sh.kernel_id, sh.first_lsn, p->plan->kernel_id, *expect);
        damaged_at(p, i, 0, *expect, why);
        return KEEL_OK;
    }
    uint64_t off = KEEL_WAL_SEG_HEADER_BYTES;
    while (off < s->fsize) {
        keel_wal_rec_header h;
        rc = record_at(s, off, &h, &b, why, sizeof(why));
        if (rc == 0 && i + 1 == p->nsegs) {
            /* RD2: the last segment's damage is a torn tail unless a
             * verifying record at or after the expected LSN follows,
             * outside the damaged record's plausible length (RD6) */
            uint64_t f = 0, l = 0, from = off + 1;
            size_t have = s->fsize - off < KEEL_WAL_REC_HEADER_BYTES
                              ? (size_t)(s->fsize - off)
                              : KEEL_WAL_REC_HEADER_BYTES;
            rc = seg_bytes(s, off, have, &b);
            if (rc < 0) {
                return keel__diag(diag, rc, "wal/%s: offset %" PRIu64 ": %s",
                                  name, off, keel_strerror(rc));
            }
            from = keel__wal_rec_span(b, have, off, s->fsize, *expect);
            int64_t n = readable_in(s, from, *expect, &f, &l);
            if (n <= 0) {
                rc = n < 0 ? (int)n : KEEL_OK;
                break; /* TR2 */
            }
        }
        if (rc == 1 && !keel__wal_rec_sane(b, &h, why, sizeof(why))) {
            rc = 0;
        }
        if (rc == 1 && h.lsn != *expect) {
            snprintf(why, sizeof(why), "LSN gap: record has LSN %" PRIu64,
                     h.lsn);
            rc = 0;
        }
        if (rc == 1) {
            rc = payload_ok(s, b, &h, why, sizeof(why));
        }
        if (rc < 0) {
            return keel__diag(diag, rc, "wal/%s: offset %" PRIu64 ": %s", name,
                              off, keel_strerror(rc));
        }
        if (rc == 0) {
            damaged_at(p, i, off, *expect, why);
            return KEEL_OK;
        }
        off += KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)h.stored_len;
        (*expect)++;
    }
    return rc < 0 ? rc : KEEL_OK;
}

/* What is dropped beyond the damage: later segments, readable records. */
static int count_dropped(planner *p, size_t i, keel_diag *diag)
{
    keel__salvage *pl = p->plan;
    uint64_t first = 0, last = 0;
    /* the damaged segment past the bad record's first byte (all of it
     * when its header is bad), then every later one */
    int64_t n = readable_in(&p->s, pl->offset > 0 ? pl->offset + 1 : 0, 0,
                            &first, &last);
    seg_close(&p->s);
    for (size_t j = i + 1; n >= 0 && j < p->nsegs; j++) {
        uint64_t f = 0, l = 0;
        int rc = seg_open(&p->s, p->dir, p->segs[j].name, diag);
        if (rc < 0) {
            return rc;
        }
        if (j == i + 1) {
            snprintf(pl->first_deleted, sizeof(pl->first_deleted), "%s",
                     p->segs[j].name);
        }
        pl->seg_deleted++;
        pl->seg_bytes += p->s.fsize;
        int64_t m = readable_in(&p->s, 0, 0, &f, &l);
        seg_close(&p->s);
        if (m > 0) {
            first = n == 0 || f < first ? f : first;
            last = l > last ? l : last;
        }
        n = m < 0 ? m : n + m;
    }
    if (n < 0) {
        return keel__diag(diag, (int)n, "wal/: reading: %s",
                          keel_strerror((int)n));
    }
    pl->readable = (uint64_t)n;
    pl->readable_first_lsn = first;
    pl->readable_last_lsn = last;
    return KEEL_OK;
}

int keel__salvage_plan(const char *state_dir, keel_io *io, keel__salvage *plan,
                       keel_diag *diag)
{
    planner p;
    keel__store *st = NULL;
    keel__store_options so;
    keel_diag sd = {0};
    memset(&p, 0, sizeof(p));
    memset(plan, 0, sizeof(*plan));
    p.s.io = io != NULL ? io : keel__io_posix();
    p.s.fd = -1;
    p.plan = plan;
    char *store = keel__path_join(state_dir, "store");
    char *wal = keel__path_join(state_dir, "wal");
    int rc = store != NULL && wal != NULL ? KEEL_OK : KEEL_ENOMEM;
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    p.dir = wal;
    /* the store says which kernel the log must belong to, and how far its
     * checkpoint reached (TR1) */
    keel__store_options_init(&so);
    so.create = 0;
    rc = keel__store_open(store, &so, 0, &st, &sd);
    if (rc < 0) {
        keel__diag(diag, rc, "%s: %s", store, sd.msg);
        goto out;
    }
    plan->kernel_id = keel__store_kernel_id(st);
    plan->checkpoint_lsn = keel__store_checkpoint_lsn(st);
    keel__store_close(st);
    rc = keel__wal_list(wal, &p.segs, &p.nsegs, diag);
    uint64_t expect = 0;
    for (size_t i = 0; rc == KEEL_OK && i < p.nsegs; i++) {
        rc = walk_segment(&p, i, &expect, diag);
        if (rc == KEEL_OK && plan->damaged) {
            rc = count_dropped(&p, i, diag);
            break;
        }
        seg_close(&p.s);
    }
out:
    seg_close(&p.s);
    free(p.s.win);
    free(p.s.raw);
    keel__wal_zstd_free(NULL, p.s.dctx);
    free(p.segs);
    free(store);
    free(wal);
    return rc;
}

int keel__salvage_apply(const char *state_dir, keel_io *io,
                        const keel__salvage *plan, keel_diag *diag)
{
    keel__wal_seg *segs = NULL;
    size_t nsegs = 0, at = 0;
    int fd = -1, lock_fd = -1;
    char *path = NULL;
    io = io != NULL ? io : keel__io_posix();
    char *wal = keel__path_join(state_dir, "wal");
    int rc = wal != NULL ? KEEL_OK : KEEL_ENOMEM;
    if (rc < 0) {
        keel__diag(diag, rc, "out of memory");
        goto out;
    }
    if (!plan->damaged) {
        rc = keel__diag(diag, KEEL_EINVAL, "wal/: no corruption to salvage");
        goto out;
    }
    if (plan->checkpoint_lsn >= plan->first_lsn) { /* TR1 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "store/: its checkpoint at LSN %" PRIu64
                        " already holds effects of LSN %" PRIu64
                        " and later, which truncating wal/%s at offset %" PRIu64
                        " would drop; refusing (nothing changed)",
                        plan->checkpoint_lsn, plan->first_lsn, plan->segment,
                        plan->offset);
        goto out;
    }
    rc = keel__wal_lock(wal, &lock_fd, diag); /* TR5 */
    if (rc == KEEL_OK) {
        rc = keel__wal_list(wal, &segs, &nsegs, diag);
    }
    if (rc < 0) {
        goto out;
    }
    while (at < nsegs && strcmp(segs[at].name, plan->segment) != 0) {
        at++;
    }
    if (at == nsegs) {
        rc = keel__diag(diag, KEEL_EINVAL, "wal/%s: no longer there",
                        plan->segment);
        goto out;
    }
    /* TR3: newest first */
    for (size_t j = nsegs; rc == KEEL_OK && j-- > at;) {
        if (j == at && plan->offset > 0) {
            break;
        }
        free(path);
        path = keel__path_join(wal, segs[j].name);
        rc = path != NULL ? io->unlink(io, path) : KEEL_ENOMEM;
        if (rc < 0) {
            keel__diag(diag, rc, "wal/%s: unlink: %s", segs[j].name,
                       keel_strerror(rc));
        }
    }
    if (rc == KEEL_OK && plan->offset > 0) {
        free(path);
        path = keel__path_join(wal, plan->segment);
        rc = path != NULL ? io->open(io, path, O_RDWR, 0, &fd) : KEEL_ENOMEM;
        if (rc == KEEL_OK) {
            rc = io->truncate(io, fd, plan->offset);
        }
        if (rc == KEEL_OK) {
            rc = io->fsync(io, fd);
        }
        if (rc < 0) {
            keel__diag(diag, rc, "wal/%s: offset %" PRIu64 ": truncating: %s",
                       plan->segment, plan->offset, keel_strerror(rc));
        }
    }
    if (rc == KEEL_OK) {
        rc = io->fsync_dir(io, wal);
        if (rc < 0) {
            keel__diag(diag, rc, "wal/: fsync directory: %s",
                       keel_strerror(rc));
        }
    }
out:
    if (fd >= 0) {
        io->close(io, fd);
    }
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    free(path);
    free(segs);
    free(wal);
    return rc;
}
