/*
 * wal/wal_writer.c — the write-ahead log writer: append, group commit,
 * segment rollover, retirement. Layout of what it writes: wal_format.h.
 *
 * Invariants:
 *   W1  LSNs increase by exactly one across segments; the first is 1.
 *   W2  durable_lsn only ever covers records whose bytes were written and
 *       then covered by a successful fdatasync of their segment (FULL and
 *       GROUP; under OFF only keel_wal_wait()/sync() advance it, by the same
 *       rule). Nothing half-written is ever reported durable.
 *   W3  After any failed write, fsync, truncate, rename or directory sync the
 *       writer is FAILED: the first call to see it returns the original
 *       error, every later call KEEL_EFAILED, until close + reopen (which
 *       revalidates the log). An fsync is never retried: the page cache may
 *       already have dropped the data it failed to write.
 *   W4  Appends go right after the last *valid* record: on open a torn tail
 *       is truncated (and the truncation synced) before anything is written,
 *       so a torn header's length can never swallow records appended later.
 *   W5  A segment appears under its final name only complete: its header is
 *       written to `<name>.tmp`, fsync'd, renamed, and the directory fsync'd.
 *       Stale `.tmp` files are removed on open.
 *   W6  Under GROUP at most group_max_records appended records are not yet
 *       durable (an append past that waits), and the syncer writes a batch
 *       no later than group_window_us after its oldest record was appended.
 *   W7  A new segment is created only after every record of the previous
 *       one is synced, whatever the policy, so a power loss never leaves a
 *       later segment behind a gap (which would make the log unopenable).
 *   W8  One writer per log: open takes an exclusive, non-blocking flock on
 *       `<dir>/lock` before it changes anything (stale files, a torn tail,
 *       a new segment) and holds it until close; a second writer, in this
 *       process or another, gets KEEL_EBUSY and changes nothing.
 *   W9  Never truncate at or below opts->floor_lsn (the LSN the caller's
 *       store proves was acknowledged): damage to a record with LSN <=
 *       floor is KEEL_ECORRUPT (acknowledged records damaged), however
 *       torn it looks, and nothing is changed.
 *   W10 Every segment of a log carries the salt of its first (drawn with
 *       getrandom(2) when the log is created) and every record checksum is
 *       seeded with it (wal_format.h).
 *   W11 A read-only open (opts->read_only) takes no lock and creates,
 *       removes, truncates and writes nothing: it finds where the valid
 *       log ends (a torn tail is reported, not truncated) and refuses
 *       appends and retirement.
 *   W12 Every fdatasync of records (write_pending, the syncer) is timed
 *       into sync_* (atomics, relaxed): counting never takes a lock and
 *       never changes what is written or when durable_lsn moves.
 *
 * Threads (GROUP only): the caller's thread appends into `pend` under `mu`;
 * the syncer thread swaps `pend` with `spare` under `mu`, then writes and
 * fsyncs `spare` without the lock, so appends go on during the fsync. Only
 * the caller's thread touches the segment list and rolls segments over, and
 * it first drains the syncer (drain()) so the syncer never sees a segment
 * change under a batch.
 *
 * States:
 *   OPEN --append/wait ok--> OPEN
 *   OPEN --write/fsync/rename error (set_failed)--> FAILED
 *   FAILED --every call--> FAILED (KEEL_EFAILED)     close() from any state
 */
#include "keel/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/diag.h"
#include "common/io.h"
#include "wal/wal_format.h"
#include "wal/wal_internal.h"

/* Under OFF, pending bytes are written once this many accumulate. */
#define OFF_BATCH_BYTES (1u << 20)

struct keel_wal {
    keel_io *io;
    char *dir;
    keel_wal_options o;
    uint64_t kernel_id;
    uint64_t salt;       /* W10 */
    int lock_fd;         /* W8; -1 when read-only */
    keel__wal_seg *segs; /* caller's thread only */
    size_t nsegs;
    size_t segs_cap;
    int fd;             /* last segment; syncer reads it under mu */
    uint64_t seg_bytes; /* its logical size, pending bytes included */
    uint64_t last_lsn;  /* last appended */

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* syncer: there is something to write */
    pthread_cond_t cv_done; /* callers: durable_lsn moved or FAILED */
    uint8_t *pend;          /* encoded records not yet written (mu) */
    size_t pend_len;
    size_t pend_cap;
    uint64_t pend_off; /* file offset of pend[0] */
    uint64_t pend_last_lsn;
    uint32_t pend_count;
    uint64_t pend_since_ns; /* when its oldest record was appended */
    uint8_t *spare;
    size_t spare_cap;
    _Atomic uint64_t durable_lsn;
    int failed; /* W3: 0 or the original error (mu) */
    int failed_reported;
    keel_diag fail_diag;
    int flush_req;
    int stop;
    int have_thread;
    pthread_t thread;

    /* W12 */
    _Atomic uint64_t sync_n;
    _Atomic uint64_t sync_ns;
    _Atomic uint64_t sync_count[KEEL_WAL_SYNC_NBUCKETS + 1];

    void *cctx;
    uint8_t *cbuf;
    size_t ccap;
};

const char *keel_wal_kind_name(int kind)
{
    switch (kind) {
    case KEEL_WAL_CRANK:
        return "crank";
    case KEEL_WAL_OUT_OF_CRANK:
        return "out-of-crank";
    case KEEL_WAL_KERNEL_OP:
        return "kernel-op";
    case KEEL_WAL_CHECKPOINT:
        return "checkpoint";
    default:
        return "unknown";
    }
}

int keel_sync_parse(const char *s, int *out)
{
    static const char *const names[] = {"full", "group", "off"};
    for (int i = 0; i < 3; i++) {
        if (s != NULL && strcmp(s, names[i]) == 0) {
            *out = i;
            return KEEL_OK;
        }
    }
    return KEEL_EINVAL;
}

const char *keel_sync_name(int sync)
{
    switch (sync) {
    case KEEL_SYNC_FULL:
        return "full";
    case KEEL_SYNC_GROUP:
        return "group";
    case KEEL_SYNC_OFF:
        return "off";
    default:
        return "unknown";
    }
}

void keel_wal_options_init(keel_wal_options *o)
{
    memset(o, 0, sizeof(*o));
    o->segment_bytes = KEEL_WAL_DEFAULT_SEGMENT_BYTES;
    o->sync = KEEL_SYNC_FULL;
    o->group_max_records = 65536;
    o->group_window_us = 2000;
    o->compress_min_bytes = 4096;
    o->compress_level = 1;
    o->create = 1;
    o->first_lsn = 1;
}

/* W3: enter FAILED. Called with mu held when the syncer runs. */
static void set_failed(keel_wal *w, int rc, const char *what, const char *name)
{
    if (w->failed == 0) {
        w->failed = rc;
        keel__diag(&w->fail_diag, rc, "%s: %s: %s", name, what,
                   keel_strerror(rc));
    }
}

/* What a call returns once the writer is FAILED (W3). Needs mu under
 * GROUP. */
static int failure(keel_wal *w, keel_diag *diag)
{
    if (!w->failed_reported) {
        w->failed_reported = 1;
        if (diag != NULL) {
            *diag = w->fail_diag;
        }
        return w->failed;
    }
    return keel__diag(diag, KEEL_EFAILED,
                      "WAL writer failed earlier (%s); close and reopen",
                      w->fail_diag.msg);
}

/* mu guards what the GROUP syncer shares; FULL and OFF have no syncer. */
static void group_lock(keel_wal *w)
{
    if (w->o.sync == KEEL_SYNC_GROUP) {
        pthread_mutex_lock(&w->mu);
    }
}

static void group_unlock(keel_wal *w)
{
    if (w->o.sync == KEEL_SYNC_GROUP) {
        pthread_mutex_unlock(&w->mu);
    }
}

/* W3 from the caller's thread: enter FAILED and report it. */
static int fail_now(keel_wal *w, int rc, const char *what, const char *name,
                    keel_diag *diag)
{
    group_lock(w);
    set_failed(w, rc, what, name);
    rc = failure(w, diag);
    group_unlock(w);
    return rc;
}

static int check_failed(keel_wal *w, keel_diag *diag)
{
    int rc = KEEL_OK;
    group_lock(w);
    if (w->failed) {
        rc = failure(w, diag);
    }
    group_unlock(w);
    return rc;
}

static const char *cur_name(const keel_wal *w)
{
    return w->nsegs > 0 ? w->segs[w->nsegs - 1].name : "(none)";
}

/* W12: one record sync took ns. */
static void sync_timed(keel_wal *w, uint64_t ns)
{
    static const uint64_t bounds[] = KEEL_WAL_SYNC_BUCKETS_US;
    size_t i = 0;
    while (i < KEEL_WAL_SYNC_NBUCKETS && ns > bounds[i] * 1000u) {
        i++;
    }
    atomic_fetch_add_explicit(&w->sync_count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->sync_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->sync_n, 1, memory_order_relaxed);
}

void keel_wal_sync_stats_get(keel_wal *w, keel_wal_sync_stats *out)
{
    out->syncs = atomic_load_explicit(&w->sync_n, memory_order_relaxed);
    out->total_ns = atomic_load_explicit(&w->sync_ns, memory_order_relaxed);
    for (size_t i = 0; i <= KEEL_WAL_SYNC_NBUCKETS; i++) {
        out->count[i] =
            atomic_load_explicit(&w->sync_count[i], memory_order_relaxed);
    }
}

/* FULL and OFF: write what is pending on the caller's thread, then fsync
 * if asked (W2: durable_lsn moves only after the fsync succeeded). */
static int write_pending(keel_wal *w, int do_sync, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (w->pend_len > 0) {
        rc = w->io->pwrite(w->io, w->fd, w->pend, w->pend_len, w->pend_off);
        if (rc < 0) {
            return fail_now(w, rc, "write", cur_name(w), diag);
        }
        w->pend_off += w->pend_len;
        w->pend_len = 0;
        w->pend_count = 0;
    }
    if (do_sync) {
        uint64_t t0 = keel__now_ns();
        rc = w->io->fsync(w->io, w->fd);
        sync_timed(w, keel__now_ns() - t0); /* W12 */
        if (rc < 0) {
            return fail_now(w, rc, "fdatasync", cur_name(w), diag);
        }
        atomic_store(&w->durable_lsn, w->last_lsn);
    }
    return KEEL_OK;
}

/* The GROUP syncer thread. */
static void *syncer(void *arg)
{
    keel_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && !w->failed) {
            if (w->pend_count == 0) {
                pthread_cond_wait(&w->cv_work, &w->mu);
                continue;
            }
            uint64_t deadline =
                w->pend_since_ns + (uint64_t)w->o.group_window_us * 1000u;
            if (w->flush_req || w->pend_count >= w->o.group_max_records / 2 ||
                keel__now_ns() >= deadline) {
                break;
            }
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                                  .tv_nsec = (long)(deadline % 1000000000u)};
            pthread_cond_timedwait(&w->cv_work, &w->mu, &ts);
        }
        if (w->failed || w->pend_count == 0) {
            break; /* only reached with stop or failed set */
        }
        /* Swap buffers so appends continue while this batch is written. */
        uint8_t *buf = w->pend;
        size_t len = w->pend_len;
        uint64_t off = w->pend_off;
        uint64_t last = w->pend_last_lsn;
        int fd = w->fd;
        w->pend = w->spare;
        w->spare = buf;
        size_t cap = w->pend_cap;
        w->pend_cap = w->spare_cap;
        w->spare_cap = cap;
        w->pend_len = 0;
        w->pend_count = 0;
        w->pend_off += len;
        w->flush_req = 0;
        pthread_mutex_unlock(&w->mu);

        int rc = w->io->pwrite(w->io, fd, buf, len, off);
        const char *what = "write";
        if (rc == KEEL_OK) {
            uint64_t t0 = keel__now_ns();
            rc = w->io->fsync(w->io, fd);
            sync_timed(w, keel__now_ns() - t0); /* W12 */
            what = "fdatasync";
        }

        pthread_mutex_lock(&w->mu);
        if (rc < 0) {
            set_failed(w, rc, what, cur_name(w));
        } else {
            atomic_store(&w->durable_lsn, last); /* W2 */
        }
        pthread_cond_broadcast(&w->cv_done);
    }
    pthread_cond_broadcast(&w->cv_done);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* GROUP: block until durable_lsn >= lsn or FAILED. */
static int group_wait(keel_wal *w, uint64_t lsn, keel_diag *diag)
{
    int rc = KEEL_OK;
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->durable_lsn) < lsn && !w->failed) {
        w->flush_req = 1;
        pthread_cond_signal(&w->cv_work);
        pthread_cond_wait(&w->cv_done, &w->mu);
    }
    if (w->failed) {
        rc = failure(w, diag);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/*
 * Everything appended so far written and synced, before a rollover. Even
 * under OFF: the new segment's header is synced, and a power loss that kept
 * it while the old segment lost its unsynced tail would leave an LSN gap
 * between segments, which the reader must refuse as corruption (W7).
 */
static int drain(keel_wal *w, keel_diag *diag)
{
    if (w->o.sync == KEEL_SYNC_GROUP) {
        return group_wait(w, w->last_lsn, diag);
    }
    return write_pending(w, 1, diag);
}

static int push_seg(keel_wal *w, uint64_t first_lsn)
{
    if (w->nsegs == w->segs_cap) {
        size_t ncap = w->segs_cap ? w->segs_cap * 2 : 16;
        keel__wal_seg *n = realloc(w->segs, ncap * sizeof(*n));
        if (n == NULL) {
            return KEEL_ENOMEM;
        }
        w->segs = n;
        w->segs_cap = ncap;
    }
    w->segs[w->nsegs].first_lsn = first_lsn;
    keel__wal_seg_name(w->segs[w->nsegs].name, first_lsn);
    w->nsegs++;
    return KEEL_OK;
}

/*
 * W5: create segment `first_lsn` and make it the one appended to. The
 * previous segment must be drained first. Any I/O failure is sticky.
 */
static int new_segment(keel_wal *w, uint64_t first_lsn, keel_diag *diag)
{
    char name[KEEL_WAL_SEG_NAME_BYTES];
    char tmpname[KEEL_WAL_SEG_NAME_BYTES + 4];
    keel__wal_seg_name(name, first_lsn);
    snprintf(tmpname, sizeof(tmpname), "%s.tmp", name);
    char *path = keel__path_join(w->dir, name);
    char *tmp = keel__path_join(w->dir, tmpname);
    int fd = -1;
    int rc = KEEL_OK;
    const char *what = "create";
    if (path == NULL || tmp == NULL || push_seg(w, first_lsn) < 0) {
        rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", name);
        goto out;
    }
    w->nsegs--; /* pushed for real only once the file exists */
    uint8_t hdr[KEEL_WAL_SEG_HEADER_BYTES];
    keel_wal_seg_header h = {.version = KEEL_WAL_FORMAT_VERSION,
                             .kernel_id = w->kernel_id,
                             .first_lsn = first_lsn,
                             .salt = w->salt}; /* W10 */
    keel__wal_seg_encode(hdr, &h);
    rc = w->io->open(w->io, tmp, O_RDWR | O_CREAT | O_EXCL, 0644, &fd);
    if (rc == KEEL_OK) {
        what = "write header";
        rc = w->io->pwrite(w->io, fd, hdr, sizeof(hdr), 0);
    }
    if (rc == KEEL_OK) {
        what = "fdatasync";
        rc = w->io->fsync(w->io, fd);
    }
    if (rc == KEEL_OK) {
        what = "rename";
        rc = w->io->rename(w->io, tmp, path);
    }
    if (rc == KEEL_OK) {
        what = "fsync directory";
        rc = w->io->fsync_dir(w->io, w->dir);
    }
    if (rc < 0) {
        if (fd >= 0) {
            w->io->close(w->io, fd);
        }
        rc = fail_now(w, rc, what, tmpname, diag);
        goto out;
    }
    group_lock(w);
    int old = w->fd;
    w->fd = fd;
    w->pend_off = KEEL_WAL_SEG_HEADER_BYTES;
    group_unlock(w);
    if (old >= 0) {
        w->io->close(w->io, old);
    }
    w->nsegs++;
    w->seg_bytes = KEEL_WAL_SEG_HEADER_BYTES;
out:
    free(path);
    free(tmp);
    return rc;
}

/* Make room in w->pend for n more bytes. */
static int pend_reserve(keel_wal *w, size_t n)
{
    if (w->pend_len + n <= w->pend_cap) {
        return KEEL_OK;
    }
    size_t ncap = w->pend_cap ? w->pend_cap : 64 * 1024;
    while (ncap < w->pend_len + n) {
        ncap *= 2;
    }
    uint8_t *nb = realloc(w->pend, ncap);
    if (nb == NULL) {
        return KEEL_ENOMEM;
    }
    w->pend = nb;
    w->pend_cap = ncap;
    return KEEL_OK;
}

int keel_wal_append(keel_wal *w, int kind, uint64_t crank, const void *payload,
                    size_t len, uint64_t *lsn_out, keel_diag *diag)
{
    int rc = check_failed(w, diag);
    if (rc < 0) {
        return rc;
    }
    if (w->o.read_only) { /* W11 */
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: the log was opened read-only; not appending",
                          w->dir);
    }
    if (kind < KEEL_WAL_CRANK || kind > KEEL_WAL_CHECKPOINT) {
        return keel__diag(diag, KEEL_EINVAL, "unknown record kind %d", kind);
    }
    if (len > KEEL_WAL_MAX_PAYLOAD_BYTES || (len > 0 && payload == NULL)) {
        return keel__diag(diag, KEEL_EINVAL,
                          "payload of %zu bytes (maximum %u)", len,
                          KEEL_WAL_MAX_PAYLOAD_BYTES);
    }
    const void *stored = payload;
    size_t stored_len = len;
    uint8_t flags = 0;
    if (w->o.compress_min_bytes > 0 && len >= w->o.compress_min_bytes) {
        size_t clen = 0;
        rc = keel__wal_compress(&w->cctx, w->o.compress_level, payload, len,
                                &w->cbuf, &w->ccap, &clen);
        if (rc < 0) {
            return keel__diag(diag, rc, "compressing a record: out of memory");
        }
        if (clen < len) {
            stored = w->cbuf;
            stored_len = clen;
            flags = KEEL_WAL_FLAG_ZSTD;
        }
    }
    uint64_t total = KEEL_WAL_REC_OVERHEAD_BYTES + (uint64_t)stored_len;
    uint64_t lsn = w->last_lsn + 1; /* W1 */
    if (w->seg_bytes + total > w->o.segment_bytes &&
        w->seg_bytes > KEEL_WAL_SEG_HEADER_BYTES) {
        rc = drain(w, diag);
        if (rc == KEEL_OK) {
            rc = new_segment(w, lsn, diag);
        }
        if (rc < 0) {
            return rc;
        }
    }
    uint8_t hdr[KEEL_WAL_REC_HEADER_BYTES];
    keel_wal_rec_header h = {.kind = (uint8_t)kind,
                             .flags = flags,
                             .lsn = lsn,
                             .crank = crank,
                             .stored_len = (uint32_t)stored_len,
                             .raw_len = (uint32_t)len};
    keel__wal_rec_encode(hdr, &h);
    uint8_t trailer[KEEL_WAL_REC_TRAILER_BYTES];
    keel__put_u64(trailer,
                  keel__wal_rec_checksum(w->salt, hdr, stored, stored_len));

    int group = w->o.sync == KEEL_SYNC_GROUP;
    if (group) {
        pthread_mutex_lock(&w->mu);
        /* W6: bound what a power loss may take. */
        while (!w->failed && w->last_lsn - atomic_load(&w->durable_lsn) >=
                                 w->o.group_max_records) {
            w->flush_req = 1;
            pthread_cond_signal(&w->cv_work);
            pthread_cond_wait(&w->cv_done, &w->mu);
        }
        if (w->failed) {
            rc = failure(w, diag);
            pthread_mutex_unlock(&w->mu);
            return rc;
        }
    }
    rc = pend_reserve(w, (size_t)total);
    if (rc < 0) {
        if (group) {
            pthread_mutex_unlock(&w->mu);
        }
        return keel__diag(diag, rc, "appending a record: out of memory");
    }
    uint8_t *p = w->pend + w->pend_len;
    memcpy(p, hdr, sizeof(hdr));
    if (stored_len > 0) {
        memcpy(p + sizeof(hdr), stored, stored_len);
    }
    memcpy(p + sizeof(hdr) + stored_len, trailer, sizeof(trailer));
    w->pend_len += (size_t)total;
    if (w->pend_count++ == 0) {
        w->pend_since_ns = group ? keel__now_ns() : 0;
    }
    w->pend_last_lsn = lsn;
    w->last_lsn = lsn;
    w->seg_bytes += total;
    if (group) {
        if (w->pend_count == 1 || w->pend_count >= w->o.group_max_records / 2) {
            pthread_cond_signal(&w->cv_work);
        }
        pthread_mutex_unlock(&w->mu);
    } else if (w->o.sync == KEEL_SYNC_FULL) {
        rc = write_pending(w, 1, diag);
    } else if (w->pend_len >= OFF_BATCH_BYTES) {
        rc = write_pending(w, 0, diag);
    }
    if (rc == KEEL_OK && lsn_out != NULL) {
        *lsn_out = lsn;
    }
    return rc;
}

int keel_wal_wait(keel_wal *w, uint64_t lsn, keel_diag *diag)
{
    int rc = check_failed(w, diag);
    if (rc < 0) {
        return rc;
    }
    if (lsn > w->last_lsn) {
        return keel__diag(diag, KEEL_EINVAL,
                          "LSN %" PRIu64 " not appended (last is %" PRIu64 ")",
                          lsn, w->last_lsn);
    }
    if (atomic_load(&w->durable_lsn) >= lsn) {
        return KEEL_OK;
    }
    if (w->o.sync == KEEL_SYNC_GROUP) {
        return group_wait(w, lsn, diag);
    }
    return write_pending(w, 1, diag);
}

int keel_wal_sync(keel_wal *w, keel_diag *diag)
{
    return keel_wal_wait(w, w->last_lsn, diag);
}

uint64_t keel_wal_durable_lsn(keel_wal *w)
{
    return atomic_load(&w->durable_lsn);
}

uint64_t keel_wal_last_lsn(const keel_wal *w)
{
    return w->last_lsn;
}

uint64_t keel_wal_kernel_id(const keel_wal *w)
{
    return w->kernel_id;
}

int keel_wal_failed(const keel_wal *w)
{
    keel_wal *m = (keel_wal *)w; /* the lock is not part of the value */
    group_lock(m);
    int f = w->failed;
    group_unlock(m);
    return f;
}

int keel_wal_retire(keel_wal *w, uint64_t before_lsn, uint64_t *removed,
                    keel_diag *diag)
{
    int rc = check_failed(w, diag);
    size_t n = 0;
    if (rc == KEEL_OK && w->o.read_only) { /* W11 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "%s: the log was opened read-only; not retiring",
                        w->dir);
    }
    if (rc < 0) {
        goto out;
    }
    /* Oldest first, so a crash part-way leaves a contiguous suffix. */
    while (n + 1 < w->nsegs && w->segs[n + 1].first_lsn <= before_lsn) {
        char *path = keel__path_join(w->dir, w->segs[n].name);
        if (path == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
            break;
        }
        rc = w->io->unlink(w->io, path);
        free(path);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: unlink: %s", w->segs[n].name,
                       keel_strerror(rc));
            break;
        }
        n++;
    }
    if (n > 0) {
        memmove(w->segs, w->segs + n, (w->nsegs - n) * sizeof(*w->segs));
        w->nsegs -= n;
        int src = w->io->fsync_dir(w->io, w->dir);
        if (src < 0) {
            rc = fail_now(w, src, "fsync directory", ".", diag);
        }
    }
out:
    if (removed != NULL) {
        *removed = n;
    }
    return rc;
}

/* W5: remove `*.seg.tmp` left by an interrupted segment creation. */
static int remove_stale(keel_wal *w, keel_diag *diag)
{
    int rc = KEEL_OK;
    int removed = 0;
    DIR *d = opendir(w->dir);
    if (d == NULL) {
        rc = keel_translate_errno(errno);
        return keel__diag(diag, rc, "%s: cannot open WAL directory: %s", w->dir,
                          keel_strerror(rc));
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 8 || strcmp(e->d_name + n - 8, ".seg.tmp") != 0) {
            continue;
        }
        char *path = keel__path_join(w->dir, e->d_name);
        if (path == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
            break;
        }
        rc = w->io->unlink(w->io, path);
        free(path);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: unlink stale file: %s", e->d_name,
                       keel_strerror(rc));
            break;
        }
        removed = 1;
    }
    closedir(d);
    if (rc == KEEL_OK && removed) {
        rc = w->io->fsync_dir(w->io, w->dir);
        if (rc < 0) {
            keel__diag(diag, rc, ".: fsync directory: %s", keel_strerror(rc));
        }
    }
    return rc;
}

/* Read the whole retained log: where it ends, how, and its kernel id. */
static int scan(keel_wal *w, keel_wal_tail *tail, keel_diag *diag)
{
    keel_wal_reader *r = NULL;
    keel_wal_options ro;
    keel_wal_options_init(&ro);
    ro.io = w->io;
    ro.kernel_id = w->o.kernel_id;
    int rc = keel_wal_reader_open(w->dir, &ro, 0, &r, diag);
    if (rc < 0) {
        return rc;
    }
    keel_wal_record rec;
    while ((rc = keel_wal_reader_next(r, &rec, diag)) == 1) {
    }
    if (rc == 0) {
        keel_wal_reader_tail(r, tail);
        w->kernel_id = keel_wal_reader_kernel_id(r);
        w->salt = keel__wal_reader_salt(r);
    }
    keel_wal_reader_close(r);
    return rc;
}

/* A random u64, nonzero when nonzero is set. */
static int random_u64(uint64_t *out, int nonzero)
{
    uint64_t v = 0;
    do {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
            return keel_translate_errno(errno);
        }
    } while (nonzero && v == 0);
    *out = v;
    return KEEL_OK;
}

int keel__wal_lock(const char *dir, int *fd, keel_diag *diag)
{
    char *path = keel__path_join(dir, "lock");
    *fd = -1;
    if (path == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    int rc = KEEL_OK;
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
        rc = keel_translate_errno(errno);
        keel__diag(diag, rc, "%s: cannot open the WAL's lock file: %s", path,
                   keel_strerror(rc));
    } else if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int busy = errno == EWOULDBLOCK;
        rc = busy ? KEEL_EBUSY : keel_translate_errno(errno);
        if (busy) {
            keel__diag(diag, rc,
                       "%s: the write-ahead log is open for writing by "
                       "another process or handle (it holds %s); a log has "
                       "one writer at a time",
                       dir, path);
        } else {
            keel__diag(diag, rc, "%s: flock: %s", path, keel_strerror(rc));
        }
        close(f);
    } else {
        *fd = f;
    }
    free(path);
    return rc;
}

/* W9: a torn tail that would drop a record the store proves acknowledged
 * is damage to acknowledged records. */
static int check_floor(const keel_wal *w, const keel_wal_tail *tail,
                       keel_diag *diag)
{
    if (!tail->torn || tail->last_lsn >= w->o.floor_lsn) {
        return KEEL_OK;
    }
    return keel__diag(
        diag, KEEL_ECORRUPT,
        "%s: offset %" PRIu64 ": record LSN %" PRIu64
        " is damaged (%s); the store's checkpoint at LSN %" PRIu64
        " proves it was acknowledged, so this is damage to acknowledged "
        "records, not a torn tail, and nothing was truncated; the store "
        "holds its effects: `keel snapshot create` of this state and "
        "`keel snapshot restore` of that file continue from it (or restore "
        "an older snapshot)",
        tail->segment, tail->offset, tail->last_lsn + 1, tail->reason,
        w->o.floor_lsn);
}

/* Open the last segment for appending at the end of its valid data (W4). */
static int resume(keel_wal *w, const keel_wal_tail *tail,
                  keel_wal_open_info *info, keel_diag *diag)
{
    const char *name = tail->segment;
    char *path = keel__path_join(w->dir, name);
    if (path == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    int rc =
        w->io->open(w->io, path, w->o.read_only ? O_RDONLY : O_RDWR, 0, &w->fd);
    free(path);
    if (rc < 0) {
        w->fd = -1;
        return keel__diag(diag, rc, "%s: open: %s", name, keel_strerror(rc));
    }
    if (tail->torn && info != NULL) {
        info->torn = 1;
        snprintf(info->torn_segment, sizeof(info->torn_segment), "%s", name);
        info->torn_offset = tail->offset;
        info->torn_bytes = tail->bytes;
        snprintf(info->torn_reason, sizeof(info->torn_reason), "%s",
                 tail->reason);
    }
    if (tail->torn && !w->o.read_only) { /* W11: read-only keeps it */
        rc = w->io->truncate(w->io, w->fd, tail->offset);
        if (rc < 0) {
            return keel__diag(diag, rc,
                              "%s: offset %" PRIu64 ": truncating torn "
                              "tail: %s",
                              name, tail->offset, keel_strerror(rc));
        }
    }
    /* The valid records may still sit only in the page cache (a process
     * crash, not a power loss): sync them before calling them durable
     * (read-only too: a sync changes no byte). */
    rc = w->io->fsync(w->io, w->fd);
    if (rc < 0) {
        return keel__diag(diag, rc, "%s: fdatasync: %s", name,
                          keel_strerror(rc));
    }
    w->seg_bytes = tail->offset;
    w->pend_off = tail->offset;
    w->last_lsn = tail->last_lsn;
    atomic_store(&w->durable_lsn, tail->last_lsn);
    return KEEL_OK;
}

int keel_wal_open(const char *dir, const keel_wal_options *opts, keel_wal **out,
                  keel_wal_open_info *info, keel_diag *diag)
{
    int rc = KEEL_OK;
    *out = NULL;
    if (info != NULL) {
        memset(info, 0, sizeof(*info));
    }
    keel_wal *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    w->fd = -1;
    w->lock_fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv_work, &ca);
    pthread_cond_init(&w->cv_done, &ca);
    pthread_condattr_destroy(&ca);
    if (opts != NULL) {
        w->o = *opts;
    } else {
        keel_wal_options_init(&w->o);
    }
    if (w->o.read_only) { /* W11: nothing created, no syncer */
        w->o.create = 0;
        w->o.sync = KEEL_SYNC_FULL;
    }
    if (w->o.sync < KEEL_SYNC_FULL || w->o.sync > KEEL_SYNC_OFF ||
        w->o.segment_bytes <
            KEEL_WAL_SEG_HEADER_BYTES + KEEL_WAL_REC_OVERHEAD_BYTES ||
        (w->o.sync == KEEL_SYNC_GROUP && w->o.group_max_records == 0)) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "invalid WAL options (sync %d, segment_bytes %" PRIu64
                        ", group_max_records %" PRIu32 ")",
                        w->o.sync, w->o.segment_bytes, w->o.group_max_records);
        goto out;
    }
    w->io = w->o.io != NULL ? w->o.io : keel__io_posix();
    w->dir = strdup(dir);
    if (w->dir == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (w->o.create) {
        rc = w->io->mkdir(w->io, dir, 0755);
        rc = rc == KEEL_EEXIST ? KEEL_OK : rc;
        if (rc < 0) {
            keel__diag(diag, rc, "%s: mkdir: %s", dir, keel_strerror(rc));
            goto out;
        }
    }
    if (!w->o.read_only) {
        rc = keel__wal_lock(dir, &w->lock_fd, diag); /* W8: before changes */
        if (rc == KEEL_ENOENT) {
            keel__diag(diag, rc, "%s: cannot open WAL directory: %s", dir,
                       keel_strerror(rc));
        }
        if (rc == KEEL_OK) {
            rc = remove_stale(w, diag);
        }
        if (rc < 0) {
            goto out;
        }
    }
    keel_wal_tail tail;
    memset(&tail, 0, sizeof(tail));
    rc = scan(w, &tail, diag);
    if (rc == KEEL_OK) {
        rc = check_floor(w, &tail, diag); /* W9 */
    }
    if (rc == KEEL_OK && tail.torn && !w->o.read_only) {
        /* Truncation destroys bytes: make sure a torn tail is what the disk
         * holds, not a transient bad read of a durable record. */
        keel_wal_tail again;
        memset(&again, 0, sizeof(again));
        rc = scan(w, &again, diag);
        if (rc == KEEL_OK &&
            (again.torn != tail.torn || again.offset != tail.offset ||
             strcmp(again.segment, tail.segment) != 0)) {
            rc = keel__diag(diag, KEEL_EIO,
                            "%s: two reads of the log's tail disagree "
                            "(offset %" PRIu64 " vs %" PRIu64
                            "); not truncating",
                            tail.segment, tail.offset, again.offset);
        }
    }
    if (rc < 0) {
        goto out;
    }
    rc = keel__wal_list(dir, &w->segs, &w->nsegs, diag);
    if (rc < 0) {
        goto out;
    }
    w->segs_cap = w->nsegs;
    if (w->nsegs == 0) {
        if (!w->o.create) {
            rc = keel__diag(diag, KEEL_ENOENT, "%s: no WAL segments", dir);
            goto out;
        }
        w->kernel_id = w->o.kernel_id;
        rc = w->kernel_id == 0 ? random_u64(&w->kernel_id, 1) : KEEL_OK;
        if (rc == KEEL_OK) {
            rc = random_u64(&w->salt, 0); /* W10 */
        }
        if (rc < 0) {
            keel__diag(diag, rc, "getrandom: %s", keel_strerror(rc));
            goto out;
        }
        uint64_t first = w->o.first_lsn > 0 ? w->o.first_lsn : 1;
        rc = new_segment(w, first, diag);
        w->last_lsn = first - 1;
        atomic_store(&w->durable_lsn, first - 1);
        if (rc == KEEL_OK) {
            /* A new log: make the directory's own name durable too, even
             * when an earlier attempt created it and crashed (W5). */
            char *parent = keel__path_join(dir, "..");
            rc = parent != NULL ? w->io->fsync_dir(w->io, parent) : KEEL_ENOMEM;
            free(parent);
            if (rc < 0) {
                keel__diag(diag, rc, "%s: fsync parent directory: %s", dir,
                           keel_strerror(rc));
            }
        }
    } else {
        rc = resume(w, &tail, info, diag);
    }
    if (rc < 0) {
        goto out;
    }
    if (w->o.sync == KEEL_SYNC_GROUP) {
        if (pthread_create(&w->thread, NULL, syncer, w) != 0) {
            rc = keel__diag(diag, KEEL_ENOMEM, "cannot start syncer thread");
            goto out;
        }
        w->have_thread = 1;
    }
    if (info != NULL) {
        info->kernel_id = w->kernel_id;
        info->first_lsn = w->last_lsn > 0 ? w->segs[0].first_lsn : 0;
        info->last_lsn = w->last_lsn;
        info->segments = w->nsegs;
    }
out:
    if (rc < 0) {
        keel_wal_close(w, NULL);
        return rc;
    }
    *out = w;
    return KEEL_OK;
}

int keel_wal_close(keel_wal *w, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (w == NULL) {
        return KEEL_OK;
    }
    if (w->have_thread) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->cv_work);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        if (w->failed) {
            rc = failure(w, diag);
        }
    } else if (w->fd >= 0 && !w->failed) {
        rc = write_pending(w, 0, diag);
    } else if (w->failed) {
        rc = failure(w, diag);
    }
    if (w->fd >= 0) {
        w->io->close(w->io, w->fd);
    }
    if (w->lock_fd >= 0) {
        close(w->lock_fd); /* W8: releases the flock */
    }
    keel__wal_zstd_free(w->cctx, NULL);
    pthread_cond_destroy(&w->cv_work);
    pthread_cond_destroy(&w->cv_done);
    pthread_mutex_destroy(&w->mu);
    free(w->cbuf);
    free(w->pend);
    free(w->spare);
    free(w->segs);
    free(w->dir);
    free(w);
    return rc;
}
