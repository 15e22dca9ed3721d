/*
 * wal/wal_internal.h — what the WAL writer and reader share: the sorted
 * list of segment files in a WAL directory and path building.
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

#endif
