/*
 * kernel/store.h — the kernel's materialized state: one LMDB environment
 * (the directory STATE/store) holding one keyspace of byte-string keys, a
 * write-set (the crank buffer) in front of it, and checkpoints.
 *
 * Overview
 *   The store keeps ONE long-lived LMDB write transaction open between
 *   checkpoints. Committed cranks are applied into it; nothing reaches the
 *   files until keel__store_checkpoint() writes the applied LSN into the
 *   meta table and commits that transaction with LMDB's normal full sync,
 *   then begins the next one. So between checkpoints the files on disk hold
 *   exactly the last checkpoint, and after a crash the kernel replays the
 *   WAL records after keel__store_applied_lsn() (which, right after open,
 *   is the LSN of the last checkpoint).
 *
 *   A write-set is an in-memory, key-ordered map of puts and deletes
 *   (tombstones). While one is open every read sees it first, then the
 *   write transaction. keel__store_ws_encode() gives its canonical bytes
 *   (the WAL payload, layout below); keel__store_ws_apply() applies it;
 *   keel__store_apply_encoded() applies such bytes read back from the WAL.
 *
 *   Every stored value, in the keyspace and in the meta table, is kept in
 *   LMDB as  value ‖ u64 LE xxh3_64(key ‖ value)  and checked on every read:
 *   LMDB keeps no checksums, and a flipped bit must give KEEL_ECORRUPT
 *   naming the key, never a wrong answer.
 *
 * Calling sequence
 *     keel__store_options o; keel__store_options_init(&o);
 *     keel__store *s; rc = keel__store_open("STATE/store", &o, kid, &s, &d);
 *     replay: for each WAL record with lsn > keel__store_applied_lsn(s):
 *             rc = keel__store_apply_encoded(s, lsn, payload, len, &d);
 *     crank:  keel__store_ws_begin(s);
 *             keel__store_ws_put / _ws_delete / _get / _next_key ...;
 *             failed crank: keel__store_ws_abort(s);
 *             committed:    n = keel__store_ws_encode_bound(s);
 *                           keel__store_ws_encode(s, buf, n, &len);
 *                           append buf to the WAL -> lsn;
 *                           rc = keel__store_ws_apply(s, lsn, &d);
 *     every N cranks / T ms: rc = keel__store_checkpoint(s, &d);
 *                            then WAL segments before
 *                            keel__store_checkpoint_lsn(s) may retire
 *     keel__store_close(s);      (drops everything not checkpointed)
 *
 * Encoded write-set (little-endian, no padding; what ws_encode writes and
 * apply_encoded accepts, nothing else):
 *     +0  u32 op_count
 *     then op_count ops, keys in strictly ascending order (bytewise memcmp,
 *     a proper prefix sorts first: LMDB's default order), each
 *         u8  kind        1 = put, 2 = delete
 *         u32 key_len     1 .. KEEL__STORE_MAX_KEY_BYTES
 *         key_len bytes   the key
 *         put only:
 *         u32 value_len   0 .. KEEL__STORE_MAX_VALUE_BYTES
 *         value_len bytes the value
 *     and no byte after the last op. An empty write-set is the 4 bytes
 *     00 00 00 00. Being canonical (one op per key, sorted), the same
 *     effects always encode to the same bytes, which the activity hash
 *     relies on.
 *
 * Stored layout (LMDB, env flags 0, two named databases):
 *     "data"  key -> value ‖ u64 LE xxh3_64(key ‖ value)
 *     "meta"  "format"      -> u32 LE store format (KEEL__STORE_FORMAT)
 *             "kernel_id"   -> u64 LE
 *             "applied_lsn" -> u64 LE, the LSN of the last write-set
 *                              applied before the checkpoint
 *             each followed by its u64 LE xxh3_64(name ‖ value).
 *
 * LMDB environment flags, and why
 *   0: LMDB's default, fully synced commit (data pages fdatasync'd before
 *   the meta page is written and synced). Never MDB_NOSYNC, MDB_NOMETASYNC,
 *   MDB_MAPASYNC or MDB_WRITEMAP: without ordered, synced writes a power
 *   loss can leave the B-tree pointing at pages that never reached the
 *   disk. Not MDB_NOTLS: the store never opens a read-only transaction (all
 *   reads go through the write transaction), so reader-slot ownership by
 *   thread never arises. The map size is only an address-space reservation:
 *   data.mdb is sparse and grows as pages are written, so the 4 GiB default
 *   costs nothing on disk; it may differ from one open to the next.
 *
 * Errors
 *   KEEL_ECORRUPT for bad stored bytes or a bad encoded payload (never an
 *   assert); KEEL_EVERSION for a store of a newer format; KEEL_ENOSPC when
 *   the map is full; KEEL_EFAILED once the store is FAILED (any error while
 *   writing to LMDB: the transaction may hold a partial write-set and must
 *   never be committed). Diags name the file relative to the store
 *   directory ("data.mdb"), the key in printable form (bytes outside
 *   0x20..0x7e, and `"` and `\`, as \xNN) and, for payloads, the byte
 *   offset; the caller adds "store/" or the WAL record it decoded.
 *
 * Threading
 *   A store is used by one thread at a time, and never across fork(): LMDB
 *   forbids using an environment in a child (open a new one there).
 *
 * Caveats
 *   - The write transaction holds LMDB's writer lock for the store's whole
 *     life: a second process opening the same directory would block in
 *     open. The kernel's lock file is what keeps a second process out.
 *   - Dirty pages of the open transaction live in memory (up to LMDB's
 *     dirty-list limit, ~512 MiB, beyond which LMDB spills them into free
 *     pages of data.mdb, never over the last checkpoint). Checkpoint by
 *     keel__store_pending_bytes() as well as by time and count.
 *   - Checksums cover key and value, so a damaged value or key is caught
 *     when that entry is read; but a key damaged on disk makes a get() of
 *     its original name report "absent". Only a full scan finds that.
 *   - Borrowed bytes (values from get, keys from next_key) stay valid until
 *     the next call on the store that reads or writes.
 */
#ifndef KEEL_KERNEL_STORE_H
#define KEEL_KERNEL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

/* The store format this code writes and the newest it reads. */
#define KEEL__STORE_FORMAT 1u
/* LMDB's compile-time key limit (checked against the library on open). */
#define KEEL__STORE_MAX_KEY_BYTES     511u
#define KEEL__STORE_MAX_VALUE_BYTES   (16u * 1024 * 1024)
#define KEEL__STORE_DEFAULT_MAP_BYTES (4ull * 1024 * 1024 * 1024)
/* The bytes a checksum adds to every stored value. */
#define KEEL__STORE_CHECKSUM_BYTES 8u

enum keel__store_op {
    KEEL__STORE_PUT = 1,
    KEEL__STORE_DELETE = 2,
};

typedef struct keel__store keel__store;

struct keel_io; /* common/io.h */

typedef struct keel__store_options {
    struct keel_io *io; /* directory fsyncs on creation; NULL: POSIX */
    uint64_t map_bytes; /* LMDB map size; default 4 GiB (sparse) */
    int create;         /* 1 (default): create the directory and an empty
                           store when absent */
} keel__store_options;

/* Fill o with the defaults above. */
void keel__store_options_init(keel__store_options *o);

/*
 * Open (or create) the store in directory dir and begin its write
 * transaction.
 * @param[in]  opts       NULL for defaults; copied (opts->io must outlive
 *                        the store).
 * @param[in]  kernel_id  the kernel this store must belong to; 0 accepts
 *                        any existing store, and a new store then gets a
 *                        random id (read it with keel__store_kernel_id()).
 * @param[out] out        the store, or NULL on failure; end it with
 *                        keel__store_close(). Nothing to free on failure.
 * @return KEEL_OK; KEEL_ENOENT (no store and opts->create == 0);
 *         KEEL_ECORRUPT (not a keel store, a bad meta value, or
 *         "store belongs to kernel 0x..., expected 0x..."); KEEL_EVERSION
 *         (a newer store format); KEEL_ENOSPC (map too small to create);
 *         KEEL_EINVAL (options, or an LMDB built with a smaller key limit);
 *         KEEL_EIO, KEEL_EACCES, KEEL_ENOMEM. Blocks; a new store is
 *         committed with a full sync and its directory fsync'd.
 */
int keel__store_open(const char *dir, const keel__store_options *opts,
                     uint64_t kernel_id, keel__store **out, keel_diag *diag);

/*
 * Abort the write transaction (dropping everything applied since the last
 * checkpoint, a write-set included: it is in the WAL and gets replayed)
 * and close the environment. NULL is a no-op. Never fails.
 */
void keel__store_close(keel__store *s);

uint64_t keel__store_kernel_id(const keel__store *s);
/* The LSN of the last write-set applied (checkpointed or not). */
uint64_t keel__store_applied_lsn(const keel__store *s);
/* The LSN recorded by the last checkpoint: what is on disk. */
uint64_t keel__store_checkpoint_lsn(const keel__store *s);
/* Key and value bytes applied since the last checkpoint (a hint for when
 * to checkpoint: memory held by LMDB's dirty pages grows with it). */
uint64_t keel__store_pending_bytes(const keel__store *s);
/* 0, or the error that made the store FAILED (ST6). */
int keel__store_failed(const keel__store *s);

/*
 * Open a write-set: from here until ws_abort/ws_apply, ws_put/ws_delete
 * buffer changes in memory and reads see them first.
 * Asserts that none is open. @return KEEL_OK or KEEL_EFAILED.
 */
int keel__store_ws_begin(keel__store *s, keel_diag *diag);

/*
 * Buffer a put (replacing any earlier op on the key in this write-set).
 * key and value are copied. Asserts that a write-set is open.
 * @return KEEL_OK; KEEL_EINVAL (key empty or over
 *         KEEL__STORE_MAX_KEY_BYTES); KEEL_ETOOBIG (value over
 *         KEEL__STORE_MAX_VALUE_BYTES); KEEL_ENOMEM (the write-set is
 *         unchanged); KEEL_EFAILED.
 */
int keel__store_ws_put(keel__store *s, const void *key, size_t key_len,
                       const void *value, size_t value_len, keel_diag *diag);

/*
 * Buffer a delete (a tombstone: hides the key from reads; recorded even if
 * the key exists nowhere, so the encoding depends only on the calls made).
 * @return as keel__store_ws_put().
 */
int keel__store_ws_delete(keel__store *s, const void *key, size_t key_len,
                          keel_diag *diag);

/* Discard the open write-set (asserts one is open). Never fails. */
void keel__store_ws_abort(keel__store *s);

/* Ops in the open write-set (0 when none is open). */
size_t keel__store_ws_count(const keel__store *s);

/* The exact length keel__store_ws_encode() will produce for the open
 * write-set (asserts one is open). */
size_t keel__store_ws_encode_bound(const keel__store *s);

/*
 * Write the canonical encoding of the open write-set (layout above) into
 * the caller's buf. The write-set stays open.
 * @param[out] len  bytes written; on KEEL_EINVAL the length needed.
 * @return KEEL_OK, KEEL_EINVAL (cap < keel__store_ws_encode_bound()),
 *         KEEL_EFAILED.
 */
int keel__store_ws_encode(const keel__store *s, uint8_t *buf, size_t cap,
                          size_t *len, keel_diag *diag);

/*
 * Apply the open write-set to the write transaction in key order, close
 * it, and record lsn as applied (durable at the next checkpoint). Asserts
 * a write-set is open and lsn > keel__store_applied_lsn().
 * @return KEEL_OK; KEEL_ENOSPC (map full), KEEL_EIO, KEEL_ENOMEM: the
 *         store is now FAILED (ST6); KEEL_EFAILED. The write-set is closed
 *         whatever the result.
 */
int keel__store_ws_apply(keel__store *s, uint64_t lsn, keel_diag *diag);

/*
 * Decode an encoded write-set (validated completely first: a rejected
 * payload changes nothing and does not fail the store) and apply it as
 * ws_apply() would. Used by WAL replay. Asserts no write-set is open and
 * lsn > keel__store_applied_lsn().
 * @return KEEL_OK; KEEL_ECORRUPT ("payload offset N: ..." naming what was
 *         expected there); otherwise as keel__store_ws_apply().
 */
int keel__store_apply_encoded(keel__store *s, uint64_t lsn, const void *payload,
                              size_t len, keel_diag *diag);

/*
 * Look key up: the open write-set first (a tombstone answers "absent"),
 * then the write transaction, checking the stored checksum.
 * @param[out] value  on 1, borrowed until the next call on the store.
 * @return 1 found, 0 absent; KEEL_EINVAL (key length), KEEL_ECORRUPT
 *         (checksum mismatch or short value: the diag names the key),
 *         KEEL_EIO, KEEL_EFAILED.
 */
int keel__store_get(keel__store *s, const void *key, size_t key_len,
                    keel_bytes *value, keel_diag *diag);

/*
 * The smallest visible key > after that starts with prefix (the write-set
 * merged over the transaction; tombstones hide keys). after may be empty
 * (from the start) and may sort before prefix. The entry's checksum is
 * checked. Backs getNextKey and prefix scans.
 * @param[out] key  on 1, borrowed until the next call on the store.
 * @return 1 found, 0 none; KEEL_ECORRUPT (naming the key), KEEL_EIO,
 *         KEEL_EFAILED.
 */
int keel__store_next_key(keel__store *s, const void *after, size_t after_len,
                         const void *prefix, size_t prefix_len, keel_bytes *key,
                         keel_diag *diag);

/*
 * Count the visible keys that start with prefix (empty: all keys),
 * checking each entry's checksum.
 * @return KEEL_OK (*count set), KEEL_ECORRUPT, KEEL_EIO, KEEL_EFAILED.
 */
int keel__store_count_prefix(keel__store *s, const void *prefix,
                             size_t prefix_len, uint64_t *count,
                             keel_diag *diag);

/*
 * Make everything applied so far durable: write applied_lsn into the meta
 * table, commit the write transaction with LMDB's full sync, and begin the
 * next one. A no-op when nothing was applied since the last checkpoint.
 * Asserts no write-set is open.
 * @return KEEL_OK; KEEL_ENOSPC, KEEL_EIO, KEEL_ENOMEM: the store is now
 *         FAILED (ST6) and the disk still holds the previous checkpoint;
 *         KEEL_EFAILED. Blocks; fsyncs.
 */
int keel__store_checkpoint(keel__store *s, keel_diag *diag);

#endif
