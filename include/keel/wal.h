/*
 * keel/wal.h — the write-ahead log.
 *
 * Overview
 *   The WAL is a directory of append-only segment files named
 *   `<first-lsn>.seg` (20 decimal digits, so names sort by LSN). Each
 *   segment starts with a header (magic, format version, kernel id, first
 *   LSN, the log's random salt) and holds records: magic, LSN, kind, crank
 *   number, flags, payload length, payload (zstd-compressed above a
 *   threshold), and an xxh3-64 seeded with the salt over header and
 *   payload. The directory also holds `lock`, the writer's flock. LSNs start at
 * 1 and rise by exactly one. The byte layout is drawn in wal/wal_format.h.
 *
 * Calling sequence (writer)
 *     keel_wal_options o; keel_wal_options_init(&o); o.sync = KEEL_SYNC_GROUP;
 *     keel_wal *w; rc = keel_wal_open("STATE/wal", &o, &w, &info, &diag);
 *     rc = keel_wal_append(w, KEEL_WAL_CRANK, crank, bytes, len, &lsn, &diag);
 *     rc = keel_wal_wait(w, lsn, &diag);    (group: block until durable)
 *     rc = keel_wal_close(w, &diag);
 *   Opening for writing validates the whole retained log, truncates a torn
 *   tail (reported in keel_wal_open_info) and positions appends right after
 *   the last valid record, never at the file's physical end.
 *
 * Calling sequence (reader)
 *     keel_wal_reader *r; keel_wal_reader_open("STATE/wal", NULL, from, &r,
 * &d); while ((rc = keel_wal_reader_next(r, &rec, &d)) == 1) { use rec; } rc <
 * 0: corruption (or I/O error); rc == 0: end, see keel_wal_reader_tail
 *     keel_wal_reader_close(r);
 *   The reader never modifies anything.
 *
 * Damage
 *   - torn tail: the last record(s) of the last segment incomplete or failing
 *     their checksum with no valid record after them (a zero-filled or
 *     preallocated tail included). The reader stops before it and reports its
 *     position; the writer truncates it on open, unless it reaches down to
 *     opts->floor_lsn: then it is damage to acknowledged records.
 *   - corruption: a bad record followed by a valid one, damage in a segment
 *     that is not the last, an LSN gap (also a missing middle segment), a
 *     bad segment header, a segment of another kernel: KEEL_ECORRUPT (an
 *     unknown format version: KEEL_EVERSION), with a diag naming the segment
 *     file, the byte offset, the LSN expected and what was wrong. Never
 *     skipped.
 *
 * Threading
 *   A keel_wal is used by one thread at a time; under KEEL_SYNC_GROUP it runs
 *   its own syncer thread internally. keel_wal_durable_lsn() may be called
 *   from any thread. Readers are independent of writers.
 */
#ifndef KEEL_WAL_H
#define KEEL_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Record kinds. */
enum keel_wal_kind {
    KEEL_WAL_CRANK = 1,        /* one crank's write-set */
    KEEL_WAL_OUT_OF_CRANK = 2, /* one syscall made outside a crank */
    KEEL_WAL_KERNEL_OP = 3,    /* boot, terminate, external send, ... */
    KEEL_WAL_CHECKPOINT = 4,   /* the store is durable up to an LSN */
};

/* The name of a kind ("crank", "out-of-crank", ...), or "unknown". Static. */
KEEL_API const char *keel_wal_kind_name(int kind);

/* Sync policies. */
enum keel_sync {
    KEEL_SYNC_FULL = 0,  /* every append fdatasync'd before it returns */
    KEEL_SYNC_GROUP = 1, /* appends batched; a syncer thread writes and syncs
                            them; window bounded by time and count */
    KEEL_SYNC_OFF = 2,   /* never synced (benchmarks only) */
};

/* Parse "full" / "group" / "off". @return KEEL_OK or KEEL_EINVAL. */
KEEL_API int keel_sync_parse(const char *s, int *out);
KEEL_API const char *keel_sync_name(int sync);

#define KEEL_WAL_DEFAULT_SEGMENT_BYTES (64u * 1024 * 1024)
#define KEEL_WAL_MAX_PAYLOAD_BYTES     (64u * 1024 * 1024)

struct keel_io; /* internal: common/io.h; NULL selects POSIX */

typedef struct keel_wal_options {
    struct keel_io *io;          /* NULL: plain POSIX I/O */
    uint64_t kernel_id;          /* 0: take it from the existing log, or pick a
                                    random one for a new log */
    uint64_t segment_bytes;      /* rollover size; default 64 MiB */
    int sync;                    /* enum keel_sync; default FULL */
    uint32_t group_max_records;  /* GROUP: at most this many appended records
                                    are not yet durable; an append past it
                                    waits. Default 65536 */
    uint32_t group_window_us;    /* GROUP: a record becomes durable within
                                    about this long. Default 2000 (2 ms) */
    uint32_t compress_min_bytes; /* payloads at least this long are zstd-
                                    compressed when that saves space;
                                    0 disables. Default 4096 */
    int compress_level;          /* zstd level; default 1 */
    int create;                  /* 1 (default): create the directory and a
                                    first segment when absent */
    uint64_t first_lsn;          /* a NEW log's first LSN (default 1): a
                                    state restored from a snapshot at LSN s
                                    continues its log at s + 1. Ignored
                                    when the log exists. */
    uint64_t floor_lsn;          /* never truncate at or below this LSN
                                    (default 0): the LSN the caller's store
                                    proves was acknowledged (a kernel passes
                                    its store's checkpoint). A damaged
                                    record at or below it is KEEL_ECORRUPT
                                    (damage to acknowledged records), never
                                    a torn tail, and nothing is changed. */
    int read_only;               /* 1: open only to find where the valid
                                    log ends and read its LSNs: no lock, no
                                    directory, segment or stale file created
                                    or removed, a torn tail reported in
                                    keel_wal_open_info but not truncated;
                                    append and retire return KEEL_EINVAL.
                                    Default 0. */
} keel_wal_options;

/* Fill o with the defaults above. */
KEEL_API void keel_wal_options_init(keel_wal_options *o);

/* What opening for writing found and did. */
typedef struct keel_wal_open_info {
    uint64_t kernel_id;
    uint64_t first_lsn;    /* first retained LSN (0: empty log) */
    uint64_t last_lsn;     /* last valid LSN (0: empty log) */
    uint64_t segments;     /* segment files after open */
    int torn;              /* 1 if a torn tail was truncated (read-only:
                              found, and left as it is) */
    char torn_segment[64]; /* its file name, relative to the WAL dir */
    uint64_t torn_offset;  /* where the valid data ended in it */
    uint64_t torn_bytes;   /* bytes dropped */
    char torn_reason[200]; /* what was wrong at torn_offset */
} keel_wal_open_info;

typedef struct keel_wal keel_wal;

/*
 * Open (or create) the WAL in directory dir for appending, validating every
 * retained record and truncating a torn tail (then fsyncing the file).
 * First takes the log's writer lock, an exclusive flock(2) on `<dir>/lock`
 * (non-blocking: a second writer gets KEEL_EBUSY, in this process or
 * another). A torn tail that would drop LSN opts->floor_lsn or below is
 * refused (KEEL_ECORRUPT, nothing changed). With opts->read_only nothing
 * is locked or changed at all.
 * Stale `*.tmp` files left by an interrupted segment creation are removed.
 * @param[in]  opts  NULL for defaults; copied, not retained (opts->io must
 *                   outlive the writer).
 * @param[out] out   the writer, or NULL on failure; end it with
 *                   keel_wal_close(). Nothing to free on failure.
 * @param[out] info  optional; what was found (see keel_wal_open_info).
 * @param[out] diag  optional; on failure names file, offset, expectation.
 * @return KEEL_OK, KEEL_ENOENT (no log and opts->create == 0), KEEL_EBUSY
 *         (another writer has the log open), KEEL_ECORRUPT, KEEL_EVERSION,
 *         KEEL_EIO, KEEL_ENOSPC, KEEL_ENOMEM, KEEL_EINVAL. Blocks; fsyncs.
 */
KEEL_API int keel_wal_open(const char *dir, const keel_wal_options *opts,
                           keel_wal **out, keel_wal_open_info *info,
                           keel_diag *diag);

/*
 * Append one record. The payload is copied before the call returns.
 * FULL: written and fdatasync'd before returning (durable on KEEL_OK).
 * GROUP: copied into the batch; durable once keel_wal_durable_lsn() >= *lsn
 *        (use keel_wal_wait()). Blocks while group_max_records are pending.
 * OFF: written (to the page cache) before returning; never synced.
 * A record that does not fit the current segment starts a new one (created
 * as `.tmp`, synced, renamed, directory synced).
 * @param[out] lsn  optional; the record's LSN.
 * @return KEEL_OK, KEEL_EINVAL (unknown kind, payload over
 *         KEEL_WAL_MAX_PAYLOAD_BYTES), KEEL_EIO / KEEL_ENOSPC (the writer is
 *         now failed), KEEL_EFAILED (it failed earlier), KEEL_ENOMEM.
 */
KEEL_API int keel_wal_append(keel_wal *w, int kind, uint64_t crank,
                             const void *payload, size_t len, uint64_t *lsn,
                             keel_diag *diag);

/*
 * Block until every record with LSN <= lsn is durable (FULL: at once; GROUP:
 * asks the syncer to flush now rather than at the end of its window; OFF:
 * writes out pending bytes and fdatasyncs them).
 * @return KEEL_OK, KEEL_EINVAL (lsn beyond the last appended), or the
 *         writer's failure.
 */
KEEL_API int keel_wal_wait(keel_wal *w, uint64_t lsn, keel_diag *diag);

/* keel_wal_wait() on the last appended LSN. */
KEEL_API int keel_wal_sync(keel_wal *w, keel_diag *diag);

/* The highest LSN known durable. Any thread. */
KEEL_API uint64_t keel_wal_durable_lsn(keel_wal *w);
/* fdatasync timings of the records' syncs (FULL, GROUP, and OFF's
 * explicit ones), for a latency histogram: count[i] syncs took at most
 * KEEL_WAL_SYNC_BUCKETS_US[i] microseconds and more than the bound before
 * it; count[KEEL_WAL_SYNC_NBUCKETS] the rest. */
#define KEEL_WAL_SYNC_NBUCKETS 12
#define KEEL_WAL_SYNC_BUCKETS_US                                          \
    {                                                                     \
        50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, \
            1000000                                                       \
    }
typedef struct keel_wal_sync_stats {
    uint64_t syncs;
    uint64_t total_ns;
    uint64_t count[KEEL_WAL_SYNC_NBUCKETS + 1];
} keel_wal_sync_stats;
/* A copy of the timings so far. Any thread; each field is read atomically
 * (a sync finishing meanwhile may be counted in some fields only). */
KEEL_API void keel_wal_sync_stats_get(keel_wal *w, keel_wal_sync_stats *out);
/* The last LSN appended (durable or not); 0 for an empty log. */
KEEL_API uint64_t keel_wal_last_lsn(const keel_wal *w);
KEEL_API uint64_t keel_wal_kernel_id(const keel_wal *w);
/* 0, or the error that made the writer fail (W3). */
KEEL_API int keel_wal_failed(const keel_wal *w);

/*
 * Delete whole segments every record of which has LSN < before_lsn (the
 * segment holding the newest records is never deleted). The directory is
 * fsync'd. @param[out] removed optional count of files removed.
 * @return KEEL_OK or the I/O error (the writer fails only on fsync errors).
 */
KEEL_API int keel_wal_retire(keel_wal *w, uint64_t before_lsn,
                             uint64_t *removed, keel_diag *diag);

/*
 * Flush and sync what is pending (unless the policy is OFF), stop the
 * syncer and free the writer. NULL is a no-op.
 * @return KEEL_OK or the error of the final sync (the writer is freed
 *         whatever the result).
 */
KEEL_API int keel_wal_close(keel_wal *w, keel_diag *diag);

/* One record as read. payload is borrowed until the next call on the reader
 * (it is the uncompressed payload). */
typedef struct keel_wal_record {
    uint64_t lsn;
    uint64_t crank;
    int kind;
    uint32_t flags;      /* KEEL_WAL_FLAG_* as stored */
    uint32_t stored_len; /* bytes on disk (compressed length if so) */
    uint64_t checksum;   /* the stored (and verified) xxh3-64 */
    char segment[64];    /* file name of its segment */
    uint64_t offset;     /* byte offset of the record in it */
    keel_bytes payload;
} keel_wal_record;

#define KEEL_WAL_FLAG_ZSTD 1u

/* Where the valid log ends. */
typedef struct keel_wal_tail {
    int torn;          /* 0: clean end; 1: torn tail */
    char segment[64];  /* last segment's file name ("" if none) */
    uint64_t offset;   /* end of the valid data in it */
    uint64_t bytes;    /* bytes after it (0 if clean) */
    uint64_t last_lsn; /* last valid LSN (0 if none) */
    char reason[200];  /* torn: what was wrong at offset */
} keel_wal_tail;

typedef struct keel_wal_reader keel_wal_reader;

/*
 * Open a reader on the log in dir, positioned at the first record with
 * LSN >= from_lsn (1 or 0: from the start). Segment headers are validated
 * here; records as they are read.
 * @param[in] opts  NULL for defaults; only io and kernel_id (0: any, taken
 *                  from the first segment) are used.
 * @return KEEL_OK, KEEL_ENOENT (no such directory), KEEL_ECORRUPT,
 *         KEEL_EVERSION, KEEL_EIO, KEEL_ENOMEM.
 */
KEEL_API int keel_wal_reader_open(const char *dir, const keel_wal_options *opts,
                                  uint64_t from_lsn, keel_wal_reader **out,
                                  keel_diag *diag);
/*
 * Read the next record into rec.
 * @return 1 (a record), 0 (end of the valid log: see keel_wal_reader_tail),
 *         or KEEL_ECORRUPT / KEEL_EVERSION / KEEL_EIO / KEEL_ENOMEM. After an
 *         error every later call returns it again.
 */
KEEL_API int keel_wal_reader_next(keel_wal_reader *r, keel_wal_record *rec,
                                  keel_diag *diag);
/* What stopped a reader (keel_wal_pos.damage); R1..R7 are the rules of
 * wal/wal_format.h. */
enum keel_wal_damage {
    KEEL_WAL_DAMAGE_NONE = 0,     /* a record, or a clean end */
    KEEL_WAL_DAMAGE_SEG_HEADER,   /* a segment header short, or failing its
                                     magic, checksum, version or fields */
    KEEL_WAL_DAMAGE_SEG_NAME,     /* its first LSN is not its file name's */
    KEEL_WAL_DAMAGE_SEG_KERNEL,   /* a segment of another kernel */
    KEEL_WAL_DAMAGE_SEG_SALT,     /* a segment of another log (RD5) */
    KEEL_WAL_DAMAGE_SEG_GAP,      /* a segment starting at another LSN than
                                     expected (a missing segment) */
    KEEL_WAL_DAMAGE_REC_SHORT,    /* R1: fewer than 40 bytes left */
    KEEL_WAL_DAMAGE_REC_MAGIC,    /* R2 */
    KEEL_WAL_DAMAGE_REC_LENGTH,   /* R3: over the maximum or past the end */
    KEEL_WAL_DAMAGE_REC_CHECKSUM, /* R4 */
    KEEL_WAL_DAMAGE_REC_FIELDS,   /* R5 with a good checksum */
    KEEL_WAL_DAMAGE_REC_GAP,      /* R6: a good checksum, a wrong LSN */
    KEEL_WAL_DAMAGE_REC_PAYLOAD,  /* R7: a zstd payload that does not decode */
    KEEL_WAL_DAMAGE_IO,           /* no damage: an I/O error or no memory */
};

/* The name of a damage kind ("checksum", "segment-gap", ...). Static. */
KEEL_API const char *keel_wal_damage_name(int damage);

/* Where a reader is (keel_wal_reader_pos). */
typedef struct keel_wal_pos {
    int damage;            /* enum keel_wal_damage */
    int code;              /* what next() returned for it: 0 with damage
                              set is a torn tail; else KEEL_ECORRUPT,
                              KEEL_EVERSION, KEEL_EIO, ... (0: none) */
    size_t seg_index;      /* the segment's index, in LSN order */
    size_t segs;           /* segment files in the log */
    char segment[64];      /* its file name ("" when the log has none) */
    uint64_t seg_bytes;    /* its size */
    uint64_t offset;       /* the record's offset in it; 0 for damage to the
                              segment's header; at a clean end: the end */
    uint64_t lsn;          /* the record's LSN; at damage or an end: the LSN
                              expected there */
    int have_len;          /* 1: declared_len was read from a header that
                              carries the record magic */
    uint32_t declared_len; /* the record's stored_len as its header says */
    uint64_t valid_after;  /* corruption by RD2 (damage with a verifying
                              record after it): that record's offset; else 0 */
    char reason[200];      /* damage: what is wrong, without the position */
} keel_wal_pos;

/*
 * Where r is: after next() returned 1, the record it returned (damage
 * NONE); after it returned 0, the end (a torn tail: its damage, code 0);
 * after an error, where and why the reader stopped. Before the first
 * next(): all zero but segs.
 */
KEEL_API void keel_wal_reader_pos(const keel_wal_reader *r, keel_wal_pos *out);

/* After next() returned 0: the state of the tail. */
KEEL_API void keel_wal_reader_tail(const keel_wal_reader *r,
                                   keel_wal_tail *out);
KEEL_API uint64_t keel_wal_reader_kernel_id(const keel_wal_reader *r);
KEEL_API void keel_wal_reader_close(keel_wal_reader *r);

#ifdef __cplusplus
}
#endif

#endif
