/*
 * store/activity.h — the activity hash chain (kernel.c K12) in one place:
 * the kernel's commit computes it, a restore's roll-forward checks that a
 * log continues a snapshot's history with it. It knows only the encoded
 * write-set of store/writeset_format.h and the k.hash key
 * (store/keyspace.h), never vats, so
 * kernel/ and snapshot/ both use it.
 *
 * The hashed bytes of transaction n, chained from h_{n-1}:
 *     h_n = xxh3_64(h_{n-1} u64 LE ‖ kind u8 ‖ crank u64 LE ‖ ops)
 * where kind and crank are the WAL record's and ops is the canonical
 * encoding (u32 LE op count, then the ops: store/writeset_format.h) of the
 * transaction's write-set without its k.hash op. The record then puts
 * k.hash = h_n as a u64 (8 bytes big-endian, store/keyspace.h).
 */
#ifndef KEEL_STORE_ACTIVITY_H
#define KEEL_STORE_ACTIVITY_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

struct XXH3_state_s; /* <xxhash.h>'s XXH3_state_t */

/*
 * h_n from h_{n-1} = prev for the write-set ops[0, len) encoded without
 * its k.hash op. st: a state to use (reset here), so that a caller on a
 * hot path allocates none.
 */
uint64_t keel__activity_hash(struct XXH3_state_s *st, uint64_t prev, int kind,
                             uint64_t crank, const void *ops, size_t len);

/*
 * For a logged transaction (payload: its write-set WITH the k.hash op, as
 * the WAL holds it): *computed = the hash its ops chain to from prev, and
 * *stored = the k.hash it puts. They are equal exactly when the record
 * continues a history whose hash was prev.
 * @return KEEL_OK; KEEL_ECORRUPT (not a canonical write-set, or no k.hash
 *         put of 8 bytes: the diag says which).
 */
int keel__activity_hash_record(struct XXH3_state_s *st, uint64_t prev, int kind,
                               uint64_t crank, const void *payload, size_t len,
                               uint64_t *computed, uint64_t *stored,
                               keel_diag *diag);

#endif
