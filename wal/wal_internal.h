/*
 * wal/wal_internal.h — what the WAL writer, the reader and the salvage of
 * recovery/truncate.c share: the sorted list of segment files in a WAL
 * directory, the log's salt, the writer's lock, and the two reader entry
 * points the salvage uses instead of walking records itself (a reader that
 * checks segment headers as it reaches them, and the scan for records that
 * still verify after damage).
 */
#ifndef KEEL_WAL_INTERNAL_H
#define KEEL_WAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"
#include "wal/wal_format.h"

typedef struct keel__wal_seg {
    uint64_t first_lsn;
    char name[KEEL_WAL_SEG_NAME_BYTES];
} keel__wal_seg;

/*
 * List the segment files of dir, sorted by first LSN. Files whose names are
 * not segment names (including `*.tmp`) are ignored.
 * @param[out] segs  malloc'd array (NULL when *n == 0); caller frees.
 * @return KEEL_OK, KEEL_ENOENT (no such directory), KEEL_EIO, KEEL_ENOMEM.
 */
int keel__wal_list(const char *dir, keel__wal_seg **segs, size_t *n,
                   keel_diag *diag);

struct keel_wal_reader;
/* The log's salt (wal_format.h), from its first segment; 0 before any
 * segment header was read. */
uint64_t keel__wal_reader_salt(const struct keel_wal_reader *r);

/*
 * keel_wal_reader_open() with segment headers validated only as the reader
 * reaches them, not all at open: a damaged header is then reported by
 * next() and keel_wal_reader_pos() in log order, after the records before
 * it (what a salvage needs to find the first damage).
 */
int keel__wal_reader_open_lazy(const char *dir, const keel_wal_options *opts,
                               uint64_t from_lsn, struct keel_wal_reader **out,
                               keel_diag *diag);

/* What keel__wal_reader_scan() found. */
typedef struct keel__wal_found {
    char segment[KEEL_WAL_SEG_NAME_BYTES]; /* the segment scanned */
    uint64_t seg_bytes;                    /* its size */
    uint64_t count;                        /* verifying records found */
    uint64_t first_lsn, last_lsn; /* lowest and highest LSN (0: none) */
} keel__wal_found;

/*
 * Scan bytes [from, end) of segment seg (an index below
 * keel_wal_pos.segs) for records that verify by the resynchronisation
 * rule (RD2: record magic, R1..R5 with the log's salt, LSN >= min_lsn),
 * whatever the segment's header says; each one found is skipped whole.
 * Only after next() returned 0 or an error (the reader is done; it stays
 * so). @return KEEL_OK, KEEL_EINVAL (still reading, seg out of range) or
 * an I/O error.
 */
int keel__wal_reader_scan(struct keel_wal_reader *r, size_t seg, uint64_t from,
                          uint64_t min_lsn, keel__wal_found *out,
                          keel_diag *diag);

/*
 * Take the writer's lock of a WAL directory: an exclusive, non-blocking
 * flock(2) on `<dir>/lock` (created if absent). Readers never take it.
 * @param[out] fd  the lock's descriptor (close it to release), or -1.
 * @return KEEL_OK, KEEL_EBUSY (another writer holds it: the diag names the
 *         directory), KEEL_ENOENT (no such directory), or the error.
 */
int keel__wal_lock(const char *dir, int *fd, keel_diag *diag);

#endif
