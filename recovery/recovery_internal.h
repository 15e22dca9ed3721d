/*
 * recovery/recovery_internal.h — what the recovery module's files share,
 * and what `keel recover` and the tests use beyond keel/recovery.h: the
 * audit's shadow map of the keyspace (shadow.c) and the salvage of a log
 * damaged mid-way (truncate.c).
 *
 * Shadow map: an in-memory map of byte-string keys to byte-string values,
 * hashed (xxh3-64) with open addressing and linear probing; a delete
 * shifts the entries after it back (no tombstones), so a run queue that
 * inserts and deletes a key every crank never degrades it. Order is only
 * needed once, at the end of an audit: keel__shadow_sorted() sorts the
 * entries then.
 *
 * Salvage calling sequence (the caller holds STATE's lock, see
 * keel__state_lock):
 *     keel__salvage plan;
 *     rc = keel__salvage_plan("STATE", io, &plan, &d);   (reads only)
 *     if (plan.damaged) { print plan; rc = keel__salvage_apply(..); }
 */
#ifndef KEEL_RECOVERY_INTERNAL_H
#define KEEL_RECOVERY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "keel/keel.h"

struct keel_io;

/* ---- shadow.c ---------------------------------------------------------- */

/* A slot: kv == NULL marks an empty one. 16 bytes, so a probe run stays
 * in a cache line or two. */
typedef struct keel__shadow_entry {
    uint8_t *kv;   /* u32 vlen, u32 vcap, key (klen bytes), value room */
    uint32_t hash; /* the low 32 bits of keel__shadow_hash() */
    uint32_t klen;
} keel__shadow_entry;

typedef struct keel__shadow {
    keel__shadow_entry *slots;
    size_t mask; /* slot count - 1; the count is a power of two */
    size_t count;
} keel__shadow;

static inline keel_bytes keel__shadow_key(const keel__shadow_entry *e)
{
    return (keel_bytes){e->kv + 8, e->klen};
}

static inline keel_bytes keel__shadow_value(const keel__shadow_entry *e)
{
    uint32_t vlen;
    memcpy(&vlen, e->kv, sizeof(vlen));
    return (keel_bytes){e->kv + 8 + e->klen, vlen};
}

/* The hash every call below takes, so a caller hashes a key once. */
uint64_t keel__shadow_hash(const void *key, size_t klen);
/* Init to empty. @return KEEL_OK or KEEL_ENOMEM. */
int keel__shadow_init(keel__shadow *m);
void keel__shadow_free(keel__shadow *m);
/* The entry of key, or NULL; valid until the next put or delete of a key
 * not in the map (keel__shadow_set() keeps it). */
keel__shadow_entry *keel__shadow_find(const keel__shadow *m, const void *key,
                                      size_t klen, uint64_t hash);
/* Set key to value (both copied). @return 1 (a new key), 0 (replaced),
 * KEEL_ENOMEM (the map is unchanged). */
int keel__shadow_put(keel__shadow *m, const void *key, size_t klen,
                     uint64_t hash, const void *val, size_t vlen);
/* Replace the value of an entry found (no probe; every entry pointer
 * stays valid). @return KEEL_OK or KEEL_ENOMEM (unchanged). */
int keel__shadow_set(keel__shadow_entry *e, const void *val, size_t vlen);
/* @return 1 (removed), 0 (absent). */
int keel__shadow_del(keel__shadow *m, const void *key, size_t klen,
                     uint64_t hash);
/* Every entry, in key order (bytewise, a proper prefix first), as a
 * malloc'd array of count pointers (the caller frees the array, NULL when
 * empty); valid until the next put or delete. @return KEEL_OK, ENOMEM. */
int keel__shadow_sorted(const keel__shadow *m, const keel__shadow_entry ***out);

/* ---- truncate.c -------------------------------------------------------- */

/* What --truncate-at-corruption found and would drop. */
typedef struct keel__salvage {
    int damaged;             /* 1: the log is corrupt mid-way (below) */
    uint64_t kernel_id;      /* the store's */
    uint64_t checkpoint_lsn; /* the store's applied LSN on disk */
    /* the first bad record */
    char segment[64];       /* its segment, relative to STATE/wal */
    uint64_t offset;        /* its byte offset there (0: the header) */
    uint64_t first_lsn;     /* the LSN it should have carried: the first
                               dropped (kept: first_lsn - 1 and before) */
    char reason[256];       /* what was wrong there */
    uint64_t cut_bytes;     /* bytes cut from the end of `segment` */
    uint64_t seg_deleted;   /* whole segments after it, deleted */
    uint64_t seg_bytes;     /* ... holding this many bytes */
    char first_deleted[64]; /* the first of them ("" if none) */
    /* records with a good checksum found after the damage (they go too) */
    uint64_t readable;
    uint64_t readable_first_lsn; /* lowest LSN among them (0: none) */
    uint64_t readable_last_lsn;  /* highest */
} keel__salvage;

/*
 * Find the first record the WAL reader would refuse (KEEL_ECORRUPT) in
 * STATE/wal and what truncating there would drop; a torn tail is not
 * damage here (opening the kernel truncates it). Reads only. The caller
 * holds STATE's lock.
 * @param[in] io  NULL: POSIX.
 * @return KEEL_OK (plan filled; plan->damaged says whether there is
 *         anything to do), KEEL_ENOENT (no store or WAL), KEEL_EIO,
 *         KEEL_ENOMEM, or the store's open error.
 */
int keel__salvage_plan(const char *state_dir, struct keel_io *io,
                       keel__salvage *plan, keel_diag *diag);

/*
 * Carry plan out: delete the segments after the damaged one (newest
 * first), truncate the damaged one at plan->offset (a segment whose
 * header is bad is deleted instead), fsync it and the directory.
 * Refuses, changing nothing, when the store's checkpoint already holds
 * effects of a record it would drop (checkpoint_lsn >= first_lsn).
 * @return KEEL_OK, KEEL_EINVAL (refused: diag says why; or no damage),
 *         KEEL_EIO, KEEL_ENOMEM. Interrupted, it leaves a log that a new
 *         plan salvages the same way.
 */
int keel__salvage_apply(const char *state_dir, struct keel_io *io,
                        const keel__salvage *plan, keel_diag *diag);

#endif
