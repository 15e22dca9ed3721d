/*
 * store/store.h — the kernel's materialized state: one LMDB environment
 * (the directory STATE/store) holding one keyspace of byte-string keys, an
 * in-memory overlay of the changes since the last checkpoint over it, a
 * write-set (the crank buffer) over that, and checkpoints.
 *
 * Overview
 *   The store keeps ONE long-lived LMDB write transaction open between
 *   checkpoints, and writes nothing into it until a checkpoint. Committed
 *   cranks are applied into the OVERLAY, an in-memory map (an append log
 *   with a hash index, put in key order only when a scan or the checkpoint
 *   needs it) of each key changed since the last checkpoint to its latest
 *   value or a tombstone: a key rewritten every crank (the crank counter, a
 * queue head) is one entry however many cranks rewrote it, so LMDB sees each
 *   key at most once per checkpoint, and a key created and deleted between
 *   two checkpoints (a queue item) leaves no entry and never reaches LMDB
 *   (a tombstone is kept only for a key the last checkpoint holds).
 *   keel__store_checkpoint() writes the overlay into the transaction in
 *   key order, with the applied LSN in the meta table, commits it with
 *   LMDB's normal full sync, begins the next one and empties the overlay.
 *   So between checkpoints the files on disk hold exactly the last
 *   checkpoint, and after a crash the kernel replays the WAL records after
 *   keel__store_applied_lsn() (which, right after open, is the LSN of the
 *   last checkpoint).
 *
 *   A write-set is an in-memory map of puts and deletes (tombstones), of
 *   the same kind: one op per key, found by hash, sorted at encode. Every read
 * sees three layers, the first that has the key answering: the open write-set,
 * the overlay, then LMDB (a tombstone answers "absent" and hides the key in the
 * layers below). keel__store_ws_encode() gives a write-set's canonical bytes
 * (the WAL payload, layout below); keel__store_ws_apply() merges it into the
 *   overlay; keel__store_apply_encoded() merges such bytes read back from
 *   the WAL.
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
 *             (the loop is keel__store_replay(), store/replay.h: every
 *             replay of a log into a store uses it)
 *     crank:  keel__store_ws_begin(s);
 *             keel__store_ws_put / _ws_delete / _get / _next_key ...;
 *             failed crank: keel__store_ws_abort(s);
 *             committed:    n = keel__store_ws_encode_bound(s);
 *                           keel__store_ws_encode(s, buf, n, &len);
 *                           append buf to the WAL -> lsn;
 *                           rc = keel__store_ws_apply(s, lsn, &d);
 *                                (into the overlay: memory only)
 *     every N cranks / T ms, or when keel__store_pending_bytes(s) reaches
 *     a bound: wait until the WAL is durable up to
 *              keel__store_applied_lsn(s), then
 *              rc = keel__store_checkpoint(s, &d);
 *              then WAL segments before keel__store_checkpoint_lsn(s)
 *              may retire
 *     keel__store_close(s);      (drops the overlay: all not checkpointed)
 *
 * Encoded write-set: drawn byte by byte in store/writeset_format.h, with
 *   the one encoder (ws_encode uses it) and the one decoder
 *   (apply_encoded, the activity hash and the audit use it).
 *
 * Stored layout (LMDB, env flags 0, two named databases):
 *     "data"  key -> value ‖ u64 LE xxh3_64(key ‖ value)
 *     "meta"  "format"      -> u32 LE store format (KEEL__STORE_FORMAT)
 *             "kernel_id"   -> u64 LE
 *             "applied_lsn" -> u64 LE, the LSN of the last write-set
 *                              applied before the checkpoint
 *             "timeline", "timeline_parent", "timeline_branch_lsn"
 *                           -> u64 LE each, only in a restored state
 *                              (keel__store_set_timeline; absent: 0)
 *             each followed by its u64 LE xxh3_64(name ‖ value).
 *
 * LMDB environment flags, and why
 *   0: LMDB's default, fully synced commit (data pages fdatasync'd before
 *   the meta page is written and synced). Never MDB_NOSYNC, MDB_NOMETASYNC,
 *   MDB_MAPASYNC or MDB_WRITEMAP: without ordered, synced writes a power
 *   loss can leave the B-tree pointing at pages that never reached the
 *   disk. Not MDB_NOTLS: the store never opens a read-only transaction (all
 *   reads go through the write transaction, which holds exactly the last
 *   checkpoint between checkpoints), so reader-slot ownership by thread
 *   never arises.
 *
 * Map size
 *   LMDB's map is an address-space reservation (data.mdb grows only as
 *   pages are written, never past the map) and also the most data.mdb may
 *   hold. A store opens with map_bytes (default 1 GiB; LMDB raises it to
 *   what data.mdb already holds) and, when a checkpoint fills it
 *   (MDB_MAP_FULL), grows it by KEEL__STORE_MAP_GROWTH, never past
 *   map_max_bytes (default 1 TiB; the kernel's store_max_bytes, `keel run
 *   --store-max`): the checkpoint aborts its transaction (LMDB resizes a
 *   map only while this process has no transaction open), resizes, and
 *   writes the whole overlay again into a new one (ST11). At the ceiling
 *   the checkpoint fails, KEEL_ENOSPC "store full", and so does a write
 *   the disk refuses (ENOSPC, EDQUOT, EFBIG past RLIMIT_FSIZE, or the short
 *   write LMDB reports as EIO when one of them cuts a write in two, told
 *   apart by the file's size and the file system's free space): either
 *   way the disk holds the last checkpoint and the WAL the rest, so a
 *   reopen with more room replays it. A view in another process maps what
 *   the writer last committed, and adopts a map grown since
 *   (MDB_MAP_RESIZED).
 *
 * Reader slots
 *   Every LMDB read transaction (a view) holds a slot in lock.mdb until it
 *   ends; a process killed inside one (a `keel snapshot create` killed
 *   mid-read) leaves it, and while other processes keep the environment
 *   open LMDB itself never clears it: the writer then never reuses the
 *   pages that reader could see, and data.mdb only grows. Opening a store
 *   or a view, and every checkpoint, clears the slots of dead processes
 *   (mdb_reader_check; ST12).
 *
 * Errors
 *   KEEL_ECORRUPT for bad stored bytes or a bad encoded payload (never an
 *   assert); KEEL_EVERSION for a store of a newer format; KEEL_ENOSPC when
 *   the store is full (the map at its ceiling, the disk, a quota or the
 *   file size limit: the message says which and how to make room);
 *   KEEL_EFAILED once the store is FAILED (no memory to
 *   merge a write-set into the overlay, or any error while a checkpoint
 *   writes to LMDB: the overlay may lack a write-set the WAL holds, the
 *   transaction may hold part of the overlay, and neither may be used
 *   again). Applying touches only memory, so a full store and LMDB's I/O
 *   errors are reported by the checkpoint, not by the apply that caused
 *   them. Diags name the file relative to the store directory
 *   ("data.mdb"), the key in printable form (bytes outside 0x20..0x7e, and
 *   `"` and `\`, as \xNN) and, for payloads, the byte offset; the caller
 *   adds "store/" or the WAL record it decoded.
 *
 * Threading
 *   A store is used by one thread at a time, and never across fork(): LMDB
 *   forbids using an environment in a child (open a new one there).
 *
 * Caveats
 *   - The write transaction holds LMDB's writer lock for the store's whole
 *     life: a second process opening the same directory would block in
 *     open. The kernel's lock file is what keeps a second process out.
 *   - Memory: the overlay holds every key changed since the last
 *     checkpoint with its latest value (keel__store_pending_bytes() says
 *     how much), and nothing but a checkpoint shrinks it: it is bounded
 *     only by the caller's checkpoint policy, so checkpoint on
 *     keel__store_pending_bytes() as well as on time and count. During a
 *     checkpoint LMDB also holds the dirty pages it writes the overlay
 *     into (up to its dirty-list limit, ~512 MiB, beyond which it spills
 *     them into free pages of data.mdb, never over the last checkpoint).
 *     A checkpoint frees overlay buffers over 16 MiB, so a burst does not
 *     pin its memory.
 *   - Another process, or a read-only transaction, reading data.mdb sees
 *     the last checkpoint only, never the overlay.
 *   - Checksums cover key and value, so a damaged value or key is caught
 *     when that entry is read; but a key damaged on disk makes a get() of
 *     its original name report "absent". Only a full scan finds that.
 *   - Borrowed bytes (values from get, keys from next_key) stay valid until
 *     the next call on the store that reads or writes.
 */
#ifndef KEEL_STORE_STORE_H
#define KEEL_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"
#include "store/keyspace.h"
#include "store/writeset_format.h"

/* The store format this code writes and the newest it reads. */
#define KEEL__STORE_FORMAT 1u
/* The LMDB map a store opens with, and the ceiling it may grow to (see
 * "Map size" above). */
#define KEEL__STORE_DEFAULT_MAP_BYTES (1ull << 30)
#define KEEL__STORE_DEFAULT_MAX_BYTES (1ull << 40)
/* The map doubles when it fills, up to the ceiling. */
#define KEEL__STORE_MAP_GROWTH 2u
/* The bytes a checksum adds to every stored value. */
#define KEEL__STORE_CHECKSUM_BYTES 8u

typedef struct keel__store keel__store;

struct keel_io; /* common/io.h */

typedef struct keel__store_options {
    struct keel_io *io;     /* directory fsyncs on creation; NULL: POSIX */
    uint64_t map_bytes;     /* LMDB map to open with (at least what the
                               store already holds; at most map_max_bytes);
                               default 1 GiB (an address-space reservation) */
    uint64_t map_max_bytes; /* the ceiling the map may grow to: data.mdb
                               never exceeds it; default 1 TiB (`keel run
                               --store-max`) */
    int create;             /* 1 (default): create the directory and an empty
                               store when absent */
    int bulk;               /* 1: a store a restore builds, seen by nobody
                               before keel__store_load_finish() returns: its
                               commits are not synced (MDB_NOSYNC), and
                               load_finish syncs everything. Never for a
                               kernel. */
    int read_only;          /* 1: read-only commands (status, recover --check,
                               audit): LMDB opened MDB_RDONLY | MDB_NOLOCK, a
                               read transaction instead of the write one, no
                               file created or written (not even lock.mdb);
                               write-sets still apply to the overlay (memory),
                               a checkpoint is refused (KEEL_EINVAL). The
                               caller must hold STATE's lock (shared is
                               enough), so no writer runs beside it. */
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
 * Drop the overlay and any open write-set (everything applied since the
 * last checkpoint: it is in the WAL and gets replayed), abort the write
 * transaction (unchanged since the last checkpoint) and close the
 * environment. NULL is a no-op. Never fails.
 */
void keel__store_close(keel__store *s);

uint64_t keel__store_kernel_id(const keel__store *s);
/* The LSN of the last write-set applied (checkpointed or not). */
uint64_t keel__store_applied_lsn(const keel__store *s);
/* The LSN recorded by the last checkpoint: what is on disk. */
uint64_t keel__store_checkpoint_lsn(const keel__store *s);
/* Memory held by the overlay: the key and value bytes of every key
 * changed since the last checkpoint (a value replaced by a longer one
 * keeps its old space until then; one replaced by one that fits reuses
 * it, as does a new key the space of a dropped one), plus a fixed per-key
 * node. 0 right after a checkpoint or open. Checkpoint when it reaches a
 * bound (see Caveats). */
uint64_t keel__store_pending_bytes(const keel__store *s);
/* 0, or the error that made the store FAILED (ST6). */
int keel__store_failed(const keel__store *s);
/* The LMDB map's current size in bytes: the open size, grown by every
 * checkpoint that filled it (ST11). */
uint64_t keel__store_map_bytes(const keel__store *s);
/*
 * LMDB's reader table (ST12): *slots, the reader slots in use now by any
 * process (mdb_reader_list), and *cleared, the stale slots of dead
 * processes this store has cleared since it opened (mdb_reader_check, run
 * at open and at every checkpoint). @return KEEL_OK, or KEEL_EIO.
 */
int keel__store_readers(keel__store *s, uint32_t *slots, uint64_t *cleared,
                        keel_diag *diag);
/* 1 if opened with options.read_only (ST14). */
int keel__store_read_only(const keel__store *s);

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
int keel__store_ws_encode(keel__store *s, uint8_t *buf, size_t cap, size_t *len,
                          keel_diag *diag);

/*
 * Merge the open write-set into the overlay (a put replaces the key's
 * entry; a delete makes it a tombstone, or drops it when the last
 * checkpoint lacks the key), close it, and record lsn as applied (durable
 * at the next checkpoint). LMDB is only read (is a deleted key on disk?),
 * never written. Asserts a write-set is open and
 * lsn > keel__store_applied_lsn().
 * @return KEEL_OK; KEEL_ENOMEM, KEEL_ETOOBIG (over 2^32 keys in the
 *         overlay): the overlay is unchanged but the store is now FAILED
 *         (ST6), since the WAL holds this write-set; KEEL_EFAILED. The
 *         write-set is closed whatever the result.
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
 * Look key up: the open write-set first, then the overlay (in either, a
 * tombstone answers "absent"), then the write transaction, checking the
 * stored checksum.
 * @param[out] value  on 1, borrowed until the next call on the store.
 * @return 1 found, 0 absent; KEEL_EINVAL (key length), KEEL_ECORRUPT
 *         (checksum mismatch or short value: the diag names the key),
 *         KEEL_EIO, KEEL_EFAILED.
 */
int keel__store_get(keel__store *s, const void *key, size_t key_len,
                    keel_bytes *value, keel_diag *diag);

/*
 * The smallest visible key > after that starts with prefix (the write-set
 * merged over the overlay over the transaction; a tombstone hides the key
 * in the layers below it). after may be empty (from the start) and may
 * sort before prefix. The entry's checksum is checked. Backs getNextKey
 * and prefix scans. Cost: O(log n) compares per map, plus, on the first
 * scan after k new keys in a map of n, sorting the k and an O(n) merge
 * (store/map.h); allocates nothing once the transaction's cursor exists.
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
 * Make everything applied so far durable: write the overlay into the write
 * transaction in key order (a put as value ‖ checksum, a tombstone as a
 * delete), write applied_lsn into the meta table, commit with LMDB's full
 * sync, begin the next transaction and empty the overlay. A no-op when
 * nothing was applied since the last checkpoint. Asserts no write-set is
 * open. The caller must first have the WAL durable up to
 * keel__store_applied_lsn().
 * A map that fills is grown and the checkpoint redone (see "Map size").
 * @return KEEL_OK; KEEL_ENOSPC ("store full" at the map's ceiling, the
 *         disk, a quota or the file size limit, or too many pages
 *         dirtied: "write transaction full"), KEEL_EIO, KEEL_ENOMEM: the
 *         store is now FAILED (ST6) and the disk still holds the previous
 *         checkpoint; KEEL_EFAILED. Blocks; fsyncs; its time and LMDB's
 *         memory grow with keel__store_pending_bytes().
 */
int keel__store_checkpoint(keel__store *s, keel_diag *diag);

/*
 * Bulk load, for a restore: fill a NEW store (nothing applied yet) with
 * entries in strictly ascending key order, straight into LMDB (no
 * overlay), committing every 8 MiB so memory stays bounded whatever the
 * size; then load_finish records lsn as the applied and checkpointed LSN
 * and commits (with a full sync, also for a bulk store). Only a store
 * nobody else sees may be loaded this way: an interrupted load leaves part
 * of the entries committed.
 * @return KEEL_OK; KEEL_ECORRUPT (a key not after the previous one: the
 *         store is unchanged by it); KEEL_EINVAL (key or value length);
 *         LMDB errors (the store is FAILED); KEEL_EFAILED.
 */
int keel__store_load_put(keel__store *s, const void *key, size_t key_len,
                         const void *value, size_t value_len, keel_diag *diag);
int keel__store_load_finish(keel__store *s, uint64_t lsn, keel_diag *diag);

/*
 * The timeline of a state (snapshot/state.c SS5): which history it is.
 * Stored in the meta table as "timeline", "timeline_parent" and
 * "timeline_branch_lsn" (u64 LE each, checksummed like every meta value);
 * a store without them (every kernel's first state, and any older store)
 * is timeline 0 with parent 0 and branch LSN 0.
 */
typedef struct keel__store_timeline {
    uint64_t id;
    uint64_t parent;
    uint64_t branch_lsn; /* the last LSN shared with the parent */
} keel__store_timeline;

/* @return KEEL_OK (*t filled), KEEL_ECORRUPT (a bad meta value),
 *         KEEL_EFAILED. */
int keel__store_get_timeline(keel__store *s, keel__store_timeline *t,
                             keel_diag *diag);

/*
 * Record t as the store's timeline, in a commit of its own (synced). Only
 * for a store a restore builds, after load_finish and with nothing
 * applied since its last checkpoint (asserted).
 * @return KEEL_OK; LMDB errors (the store is FAILED); KEEL_EFAILED.
 */
int keel__store_set_timeline(keel__store *s, const keel__store_timeline *t,
                             keel_diag *diag);

/* 1 if every commit of s from now on is LMDB's fully synced one (env flags
 * without NOSYNC, NOMETASYNC, MAPASYNC, WRITEMAP): always for a kernel's
 * store, and for a bulk one once load_finish returned KEEL_OK. */
int keel__store_synced(const keel__store *s);

/*
 * A read-only view of a store's last checkpoint, for snapshots: its
 * kernel id, its LSN, point lookups and an in-order walk of every entry
 * (each checksum checked).
 *   keel__store_view_open(dir): from any process, while a kernel runs on
 *       the store (an LMDB read transaction: it never blocks the kernel,
 *       and sees exactly the checkpoint committed when it began; it first
 *       clears the reader slots of dead processes). Not in
 *       a process that has the same store open (LMDB forbids opening one
 *       environment twice in a process).
 *   keel__store_view_of(s): over an open store with nothing applied since
 *       its last checkpoint (asserted: checkpoint first); borrows s, which
 *       must not be used until the view is closed.
 * Bytes returned are borrowed until the next call on the view.
 * @return view_open: KEEL_OK, KEEL_ENOENT (no store), KEEL_ECORRUPT (not
 *         a keel store, bad meta), KEEL_EVERSION, KEEL_EIO, KEEL_ENOMEM;
 *         view_get/view_next: 1 (an entry), 0 (absent / no more),
 *         KEEL_ECORRUPT (checksum: the diag names the key), KEEL_EIO.
 */
typedef struct keel__store_view keel__store_view;
int keel__store_view_open(const char *dir, keel__store_view **out,
                          keel_diag *diag);
/* As keel__store_view_open(), for a caller that holds STATE's lock (no
 * kernel runs on the store): MDB_NOLOCK, so not even lock.mdb's reader
 * table is written. */
int keel__store_view_open_unshared(const char *dir, keel__store_view **out,
                                   keel_diag *diag);
int keel__store_view_of(keel__store *s, keel__store_view **out,
                        keel_diag *diag);
uint64_t keel__store_view_kernel_id(const keel__store_view *v);
uint64_t keel__store_view_lsn(const keel__store_view *v);
/* Stale reader slots (of dead processes) view_open cleared (ST12); 0 for
 * a view_of. */
uint64_t keel__store_view_readers_cleared(const keel__store_view *v);
void keel__store_view_timeline(const keel__store_view *v,
                               keel__store_timeline *out);
int keel__store_view_get(keel__store_view *v, const void *key, size_t key_len,
                         keel_bytes *value, keel_diag *diag);
int keel__store_view_next(keel__store_view *v, keel_bytes *key,
                          keel_bytes *value, keel_diag *diag);
/* NULL is a no-op. */
void keel__store_view_close(keel__store_view *v);

#endif
