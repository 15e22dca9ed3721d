/*
 * wal/wal_internal.h — what the WAL writer, the reader and the salvage of
 * recovery/truncate.c share: the sorted list of segment files in a WAL
 * directory, the log's salt, and the writer's lock.
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
 * Take the writer's lock of a WAL directory: an exclusive, non-blocking
 * flock(2) on `<dir>/lock` (created if absent). Readers never take it.
 * @param[out] fd  the lock's descriptor (close it to release), or -1.
 * @return KEEL_OK, KEEL_EBUSY (another writer holds it: the diag names the
 *         directory), KEEL_ENOENT (no such directory), or the error.
 */
int keel__wal_lock(const char *dir, int *fd, keel_diag *diag);

#endif
