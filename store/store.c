/*
 * store/store.c — the kernel's LMDB store: a write-set (the open crank)
 * over an in-memory overlay (every change since the last checkpoint,
 * coalesced by key) over one long-lived LMDB write transaction that only a
 * checkpoint writes to and commits; a checksum on every stored value.
 * Contract and byte layouts: store/store.h; the write-set's bytes:
 * store/writeset_format.h. Only store/ includes <lmdb.h> (this file,
 * store/view.c and store/store_internal.h); MDB_* codes are translated to
 * KEEL_E* here (xlate(), keel__st_lmdb_error()) and go no further.
 *
 * The store's files: the write-set and the overlay are each a kv_map
 * (store/map.c: an append log, a hash index, a lazily sorted view; ST15);
 * their ops are encoded and decoded by store/writeset.c;
 * this file holds the write-set, the overlay, reads, checkpoints, open
 * and close; store/view.c bulk load, the timeline and read-only views;
 * store/replay.c the one WAL replay loop.
 *
 * Invariants:
 *   ST1  Between checkpoints the files on disk hold exactly the last
 *        checkpoint, and so does the write transaction `txn`: nothing is
 *        written into it except by keel__store_checkpoint(), which writes
 *        the overlay and commits it with LMDB's full sync (env flags 0: no
 *        NOSYNC, NOMETASYNC, MAPASYNC or WRITEMAP).
 *   ST2  A checkpoint commits meta "applied_lsn" = applied_lsn in the same
 *        transaction as the data it covers, so data and LSN agree on disk.
 *   ST3  Every stored value (data and meta) is value ‖ u64 LE
 *        xxh3_64(key ‖ value), checked on every read; a short value or a
 *        mismatch is KEEL_ECORRUPT naming the key and is never returned.
 *   ST4  Reads see three layers, the higher one winning for a key: the
 *        open write-set, then the overlay, then the transaction. A put
 *        shadows the layers below, a tombstone hides them. The write-set
 *        reaches the overlay only through apply(), which merges all of it
 *        or fails the store.
 *   ST5  An encoded write-set is canonical: one op per key, keys strictly
 *        ascending. apply_encoded() accepts exactly such bytes and validates
 *        all of them before changing anything, so a rejected payload leaves
 *        the store as it was (and not FAILED).
 *   ST6  After an error while applying (no memory for the overlay) or while
 *        writing to LMDB (put, delete, commit, begin in a checkpoint) the
 *        store is FAILED: that call returns the translated error, every
 *        later one KEEL_EFAILED, until close + reopen. A write-set the WAL
 *        holds may be missing from the overlay, and the transaction may
 *        hold part of the overlay, so neither may be used again; close()
 *        drops both and the WAL replays what they held.
 *   ST7  checkpoint_lsn <= applied_lsn, and applied_lsn only increases.
 *   ST8  Keys are 1..KEEL__STORE_MAX_KEY_BYTES bytes and values at most
 *        KEEL__STORE_MAX_VALUE_BYTES, checked when they enter a write-set:
 *        a write-set the WAL has accepted can always be applied.
 *   ST9  The overlay holds one entry per key changed since the last
 *        checkpoint: its last value if its last op was a put; a tombstone
 *        if it was a delete and the transaction holds the key; nothing if
 *        it was a delete and the transaction does not (nothing to hide or
 *        delete). A node marked on_disk, and every tombstone, names a key
 *        the transaction holds. The overlay is empty when applied_lsn ==
 *        checkpoint_lsn, and a checkpoint empties it. So LMDB sees each
 *        key at most once per checkpoint, however often a hot key (the
 *        crank counter, a queue head) was rewritten, and never sees a key
 *        that lived and died between two checkpoints (a queue item).
 *   ST10 A store directory holds a data.mdb only once its tables were
 *        created and committed: a new store is built in `<dir>.new` and
 *        renamed (create_if_new), so no crash leaves a half-made one.
 *   ST11 The map starts at min(map_bytes, map_max) (LMDB raises it to
 *        what data.mdb holds) and changes only in a checkpoint that got
 *        MDB_MAP_FULL, with no transaction open in this process: the
 *        failed transaction is aborted (the disk and the overlay are as
 *        before it), the map grows by KEEL__STORE_MAP_GROWTH to at most
 *        map_max, the table handles are opened again in a new
 *        transaction, and the whole overlay is written again. A map
 *        already at map_max fails the checkpoint (KEEL_ENOSPC "store
 *        full", ST6); so does a write the disk refuses, with a message that
 *        says which limit was hit.
 *   ST12 Reader slots of dead processes are cleared (mdb_reader_check) at
 *        every open of a store or a view and at every checkpoint, so a
 *        reader killed mid-snapshot pins no pages for longer than that.
 *   ST13 A bulk store (a restore's, seen by nobody) is the one exception
 *        to ST1's flags, and only until load_finish: that syncs the whole
 *        load and clears MDB_NOSYNC|MDB_NOMETASYNC, so every later commit
 *        is synced in LMDB's order (keel__store_synced() says so).
 *   ST14 A read-only store (options.read_only) changes no file: LMDB is
 *        opened MDB_RDONLY | MDB_NOLOCK (lock.mdb not even opened) under
 *        the caller's STATE lock, reads go through a read transaction,
 *        applied write-sets live only in the overlay, and a checkpoint is
 *        refused. keel__store_view_open_unshared() is the same for views.
 *   ST15 The steady state allocates nothing: the write-set and the overlay
 *        are append logs with a hash index (store/map.c) whose buffers
 *        grow geometrically and are kept across transactions (the
 *        overlay's up to OVERLAY_KEEP_BYTES each across checkpoints); one
 *        hash seed serves both, so a key is hashed once per get and a
 *        write-set op's hash is reused when it merges into the overlay.
 *        Key order is built only when asked for: the encoder sorts the
 *        write-set's keys at commit (ST5), a scan merges the keys added
 *        since the last scan into each map's ordered view, and the
 *        checkpoint sorts the overlay once. Scans use one LMDB cursor per
 *        write transaction (`cur`), forgotten whenever the transaction
 *        ends (a write transaction frees its cursors) and closed by
 *        close() for a read-only store; apply_encoded() decodes into the
 *        reused op array `dec` (WC4).
 *
 * States (the function behind each transition):
 *
 *        keel__store_open()
 *               |
 *               v          ws_begin()               ws_put/ws_delete/get/
 *   +------> READY ------------------------> WS_OPEN  next_key/count/encode
 *   |         |  |  <-- ws_abort() ---------   |  ^            |
 *   |         |  |  <-- ws_apply(lsn) --------+  +------------+
 *   |         |  |      (write-set merged into the overlay)
 *   |         |  +-- apply_encoded(lsn) --> READY (merged likewise)
 *   |         +----- checkpoint(): overlay into txn, commit (full sync),
 *   |                begin, overlay emptied --> READY (map full: abort,
 *   |                grow the map, begin, write the overlay again; ST11)
 *   |
 *   |  no memory in ws_apply / apply_encoded; any LMDB write error in
 *   |  checkpoint, a full map at its ceiling included
 *   +--------------------------------------------------------> FAILED
 *                       (every call: KEEL_EFAILED; close() from any state)
 */
#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "common/diag.h"
#include "common/keys.h"
#include "common/io.h"
#include "store/map.h"
#include "store/store_internal.h"
#include "store/writeset_format.h"

/* A checkpoint keeps the overlay's buffers for the next round up to this
 * size each, and frees larger ones: a burst must not pin its memory. */
#define OVERLAY_KEEP_BYTES (16u * 1024 * 1024)

_Static_assert(KEEL__STORE_MAX_VALUE_BYTES <= UINT32_MAX - 8u,
               "a stored value with its checksum fits LMDB's u32 sizes");
_Static_assert(KEEL__STORE_CHECKSUM_BYTES == 8u, "u64 xxh3 checksum");

/* ---------------------------------------------------------------------
 * Helpers: errors, key printing, checksums.
 */

/* Translate an LMDB return code (MDB_* or a positive errno). */
static int xlate(int mrc)
{
    int rc = KEEL_EIO;
    switch (mrc) {
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        rc = KEEL_ENOSPC;
        break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        rc = KEEL_ECORRUPT;
        break;
    case MDB_VERSION_MISMATCH:
        rc = KEEL_EVERSION;
        break;
    case MDB_BAD_VALSIZE:
        rc = KEEL_EINVAL;
        break;
    default:
        if (mrc > 0) {
            rc = keel_translate_errno(mrc);
        }
        break;
    }
    return rc;
}

/* Fill diag for a failed LMDB call `what` and return the KEEL_E* code. */
int keel__st_lmdb_error(MDB_env *env, int mrc, const char *what,
                        keel_diag *diag)
{
    int rc = xlate(mrc);
    if (mrc == MDB_MAP_FULL) {
        MDB_envinfo info;
        mdb_env_info(env, &info);
        keel__diag(diag, rc, DATA_FILE ": %s: map full (map size %zu bytes)",
                   what, info.me_mapsize);
    } else if (mrc == MDB_TXN_FULL) {
        keel__diag(diag, rc,
                   DATA_FILE ": %s: write transaction full (too many pages "
                             "dirtied since the last checkpoint); checkpoint "
                             "more often",
                   what);
    } else {
        keel__diag(diag, rc, DATA_FILE ": %s: %s", what, mdb_strerror(mrc));
    }
    return rc;
}

/* ST6: the store is FAILED from now on; the caller returns rc. */
int keel__st_set_failed(keel__store *s, int rc, keel_diag *diag)
{
    if (s->failed == 0) {
        s->failed = rc;
        if (diag != NULL) {
            s->fail_diag = *diag;
        } else {
            keel__diag(&s->fail_diag, rc, "%s", keel_strerror(rc));
        }
    }
    return rc;
}

/* ST6: what every call returns once FAILED. */
int keel__st_check_failed(const keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (s->failed != 0) {
        rc = keel__diag(diag, KEEL_EFAILED,
                        "store failed earlier (%s); close and reopen",
                        s->fail_diag.msg);
    }
    return rc;
}

/* The key in printable form for messages (keel__printable), at most
 * KEY_PRINT_BYTES of it. */
const char *keel__st_printable(const uint8_t *k, size_t klen, char *buf,
                               size_t cap)
{
    return keel__printable(k, klen < KEY_PRINT_BYTES ? klen : KEY_PRINT_BYTES,
                           klen > KEY_PRINT_BYTES, buf, cap);
}

/* ST3: xxh3_64(key ‖ value), streamed so that neither is copied. */
static uint64_t kv_hash(XXH3_state_t *h, const void *key, size_t klen,
                        const void *val, size_t vlen)
{
    XXH3_64bits_reset(h);
    XXH3_64bits_update(h, key, klen);
    if (vlen > 0) {
        XXH3_64bits_update(h, val, vlen);
    }
    return XXH3_64bits_digest(h);
}

/*
 * ST3: check a stored value d read under key (what: "key" or "meta") and
 * give the value without its checksum.
 */
int keel__st_verify(XXH3_state_t *h, const char *what, const uint8_t *key,
                    size_t klen, const MDB_val *d, keel_bytes *out,
                    keel_diag *diag)
{
    int rc = KEEL_OK;
    char kbuf[4 * KEY_PRINT_BYTES + 8];
    if (d->mv_size < KEEL__STORE_CHECKSUM_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": %s \"%s\": stored value is %zu bytes, "
                                  "shorter than its 8-byte checksum",
                        what, keel__st_printable(key, klen, kbuf, sizeof(kbuf)),
                        d->mv_size);
        goto out;
    }
    size_t vlen = d->mv_size - KEEL__STORE_CHECKSUM_BYTES;
    const uint8_t *v = d->mv_data;
    uint64_t stored = keel__get_u64(v + vlen);
    uint64_t computed = kv_hash(h, key, klen, v, vlen);
    if (stored != computed) {
        rc =
            keel__diag(diag, KEEL_ECORRUPT,
                       DATA_FILE ": %s \"%s\": checksum mismatch (stored "
                                 "0x%016" PRIx64 ", computed 0x%016" PRIx64 ")",
                       what, keel__st_printable(key, klen, kbuf, sizeof(kbuf)),
                       stored, computed);
        goto out;
    }
    out->ptr = v;
    out->len = vlen;
out:
    return rc;
}

/* Store value ‖ checksum under key (ST3). @return an LMDB code. */
int keel__st_put_checked(keel__store *s, MDB_dbi dbi, const uint8_t *key,
                         size_t klen, const uint8_t *val, size_t vlen,
                         unsigned flags)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    MDB_val d = {.mv_size = vlen + KEEL__STORE_CHECKSUM_BYTES, .mv_data = NULL};
    /* MDB_RESERVE hands out the value's space in the page: the value and
     * its checksum are written there once, with no staging copy. */
    int mrc = mdb_put(s->txn, dbi, &k, &d, MDB_RESERVE | flags);
    if (mrc == MDB_SUCCESS) {
        uint8_t *p = d.mv_data;
        if (vlen > 0) {
            memcpy(p, val, vlen);
        }
        keel__put_u64(p + vlen, kv_hash(s->hash, key, klen, val, vlen));
    }
    return mrc;
}

#ifdef KEEL_DEBUG
/* ST4/ST5/ST7 on the write-set's structure and the length it claims. */
static int ws_invariants_ok(const keel__store *s)
{
    size_t bytes = 0;
    int ok =
        s->ckpt_lsn <= s->applied_lsn && (s->failed != 0 || s->txn != NULL);
    if (s->ws_open) {
        ok = ok && keel__map_ok(&s->ws, &bytes) && bytes == s->ws_enc_bytes &&
             s->ws.nfree == 0 && s->ws.nretired == 0;
    }
    return ok;
}

/* ST9: every tombstone, and every node marked on_disk, is marked and
 * names a key the transaction holds. */
static int ov_disk_ok(const keel__store *s)
{
    int ok = 1;
    for (uint32_t i = 1; i < s->ov.nnodes && ok; i++) {
        const kv_node *n = &s->ov.nodes[i];
        if (n->kind != 0 && (n->on_disk || n->kind == KEEL__STORE_DELETE)) {
            MDB_val k = {.mv_size = n->key_len,
                         .mv_data = s->ov.arena + n->key_off};
            MDB_val d;
            ok = n->on_disk &&
                 mdb_get(s->txn, s->data_dbi, &k, &d) == MDB_SUCCESS;
        }
    }
    return ok;
}

/* ST7/ST9 on the overlay: O(overlay), so apply runs it only while the
 * overlay is small (tests), and checkpoint before and after every flush. */
#define OV_CHECK_ON_APPLY_NODES 1024u
static int ov_invariants_ok(const keel__store *s)
{
    size_t bytes = 0;
    return s->ckpt_lsn <= s->applied_lsn && keel__map_ok(&s->ov, &bytes) &&
           keel__map_index_ok(&s->ov) &&
           (s->applied_lsn != s->ckpt_lsn || s->ov.nnodes == 1) &&
           (s->failed != 0 || ov_disk_ok(s));
}
#endif

/* ---------------------------------------------------------------------
 * The write-set (ST4, ST5, ST8).
 */

static int ws_set(keel__store *s, uint8_t kind, const void *key, size_t klen,
                  const void *val, size_t vlen, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(s->ws_open);
    if (klen == 0 || klen > KEEL__STORE_MAX_KEY_BYTES) { /* ST8 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "write-set: key length %zu outside 1..%u", klen,
                        KEEL__STORE_MAX_KEY_BYTES);
        goto out;
    }
    if (vlen > KEEL__STORE_MAX_VALUE_BYTES) {
        rc = keel__diag(diag, KEEL_ETOOBIG,
                        "write-set: value of %zu bytes over the limit of %u",
                        vlen, KEEL__STORE_MAX_VALUE_BYTES);
        goto out;
    }
    /* ST15: one hash serves the write-set and, at apply, the overlay. */
    uint32_t h = keel__map_hash(&s->ws, key, klen);
    uint32_t n = keel__map_find(&s->ws, key, klen, h);
    size_t old = n != 0 ? keel__ws_op_bytes(s->ws.nodes[n].kind, klen,
                                            s->ws.nodes[n].val_len)
                        : 0;
    rc = keel__map_set(&s->ws, n, kind, key, klen, h, val, vlen, NULL, diag);
    if (rc < 0) {
        goto out;
    }
    s->ws_enc_bytes =
        s->ws_enc_bytes - old + keel__ws_op_bytes(kind, klen, vlen);
#ifdef KEEL_DEBUG
    KEEL_ASSERT(ws_invariants_ok(s));
#endif
out:
    return rc;
}

static void ws_reset(keel__store *s)
{
    s->ws_open = 0;
    keel__map_reset(&s->ws);
    s->ws_enc_bytes = 4;
}

int keel__store_ws_begin(keel__store *s, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc == KEEL_OK) {
        KEEL_ASSERT(!s->ws_open);
        ws_reset(s);
        s->ws_open = 1;
    }
    return rc;
}

int keel__store_ws_put(keel__store *s, const void *key, size_t key_len,
                       const void *value, size_t value_len, keel_diag *diag)
{
    return ws_set(s, KEEL__STORE_PUT, key, key_len, value, value_len, diag);
}

int keel__store_ws_delete(keel__store *s, const void *key, size_t key_len,
                          keel_diag *diag)
{
    return ws_set(s, KEEL__STORE_DELETE, key, key_len, NULL, 0, diag);
}

void keel__store_ws_abort(keel__store *s)
{
    KEEL_ASSERT(s->ws_open);
    ws_reset(s);
}

size_t keel__store_ws_count(const keel__store *s)
{
    return s->ws_open ? (size_t)s->ws.nlive : 0;
}

size_t keel__store_ws_encode_bound(const keel__store *s)
{
    KEEL_ASSERT(s->ws_open);
    return s->ws_enc_bytes;
}

int keel__store_ws_encode(keel__store *s, uint8_t *buf, size_t cap, size_t *len,
                          keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(s->ws_open);
    *len = s->ws_enc_bytes;
    if (cap < s->ws_enc_bytes) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "write-set: encoding needs %zu bytes, buffer has %zu",
                        s->ws_enc_bytes, cap);
        goto out;
    }
    /* ST5: in key order. The write-set's few keys are sorted here, once
     * (or merged with those a scan already sorted): cheaper than keeping
     * them ordered on every put (ST15). */
    kv_map *m = &s->ws;
    keel__map_order(m);
    keel__ws_encode_count(buf, m->nlive);
    uint8_t *end = buf + KEEL__WS_COUNT_BYTES;
    for (uint32_t i = 0; i < m->nsorted; i++) {
        const kv_node *n = &m->nodes[m->sorted[i]];
        end = keel__ws_encode_op(end, n->kind, m->arena + n->key_off,
                                 n->key_len, m->arena + n->val_off, n->val_len);
    }
    KEEL_ASSERT((size_t)(end - buf) == s->ws_enc_bytes);
out:
    return rc;
}

/* ---------------------------------------------------------------------
 * Applying write-sets: merging them into the overlay (ST9).
 */

/*
 * Make room in the overlay for up to ops new keys and bytes of keys and
 * values, so that the merges that follow cannot fail half-way. A failure
 * makes the store FAILED (ST6): the WAL already holds the write-set, and
 * applying a later one over its absence would diverge from the log.
 */
static int ov_reserve(keel__store *s, size_t bytes, size_t ops, keel_diag *diag)
{
    int rc = keel__map_reserve(&s->ov, bytes, ops, diag);
    if (rc < 0) {
        rc = keel__st_set_failed(s, rc, diag);
    }
    return rc;
}

/* Whether the transaction (the last checkpoint) holds key. An error
 * answers yes: a tombstone is never wrong, and the read that needs the
 * entry reports the error. */
static int on_disk(keel__store *s, const uint8_t *key, size_t klen)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    MDB_val d;
    return mdb_get(s->txn, s->data_dbi, &k, &d) != MDB_NOTFOUND;
}

/*
 * One op into the overlay (ST9): a put overwrites the key's entry; a
 * delete makes it a tombstone if the key is on disk, and otherwise drops
 * the entry, since there is nothing to hide or delete: short-lived keys (a
 * queue item, a promise) then leave nothing behind for the lookups and the
 * checkpoint to wade through. The transaction does not change until the
 * checkpoint, so a key found on disk is marked and not looked up again
 * (a hot key deleted and put back every few cranks). Room was reserved by
 * ov_reserve().
 */
static void ov_merge(keel__store *s, uint8_t kind, const uint8_t *key,
                     size_t klen, uint32_t h, const uint8_t *val, size_t vlen)
{
    kv_map *m = &s->ov;
    uint32_t n = keel__map_find(m, key, klen, h);
    int disk = n != 0 &&
               (m->nodes[n].on_disk || m->nodes[n].kind == KEEL__STORE_DELETE);
    if (kind == KEEL__STORE_DELETE && !disk) {
        disk = on_disk(s, key, klen);
    }
    if (kind == KEEL__STORE_DELETE && !disk) {
        if (n != 0) {
            keel__map_remove(m, n);
        }
    } else {
        int rc = keel__map_set(m, n, kind, key, klen, h, val, vlen, &n, NULL);
        KEEL_ASSERT(rc == KEEL_OK);
        m->nodes[n].on_disk = (uint8_t)disk;
    }
}

int keel__store_ws_apply(keel__store *s, uint64_t lsn, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    KEEL_ASSERT(s->ws_open);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(lsn > s->applied_lsn); /* ST7 */
    /* The write-set's arena holds every key and live value it has. */
    rc = ov_reserve(s, s->ws.arena_len, s->ws.nlive, diag);
    if (rc < 0) {
        goto out;
    }
    /* One op per node, in the log's order: the order of merging distinct
     * keys is immaterial, and the node's hash is the overlay's (ST15). */
    for (uint32_t i = 1; i < s->ws.nnodes; i++) {
        const kv_node *n = &s->ws.nodes[i];
        ov_merge(s, n->kind, s->ws.arena + n->key_off, n->key_len, n->hash,
                 s->ws.arena + n->val_off, n->val_len);
    }
    s->applied_lsn = lsn;
#ifdef KEEL_DEBUG
    KEEL_ASSERT(s->ov.nnodes > OV_CHECK_ON_APPLY_NODES || ov_invariants_ok(s));
#endif
out:
    ws_reset(s);
    return rc;
}

int keel__store_apply_encoded(keel__store *s, uint64_t lsn, const void *payload,
                              size_t len, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(!s->ws_open);
    KEEL_ASSERT(lsn > s->applied_lsn); /* ST7 */
    /* ST5: all of it decoded and checked, in one pass into the store's
     * reused op array (WC4), before anything changes. */
    keel__ws_ops *ops = &s->dec;
    rc = keel__ws_decode_all(ops, payload, len, diag);
    if (rc == KEEL_ENOMEM) {
        rc = keel__st_set_failed(s, rc, diag); /* ST6, as ov_reserve */
    }
    if (rc < 0) {
        goto out;
    }
    /* The payload holds every key and value it sets. */
    rc = ov_reserve(s, len, ops->n, diag);
    if (rc < 0) {
        goto out;
    }
    for (uint32_t i = 0; i < ops->n; i++) {
        const keel__ws_op *op = &ops->op[i];
        ov_merge(s, op->kind, op->key, op->key_len,
                 keel__map_hash(&s->ov, op->key, op->key_len), op->val,
                 op->val_len);
    }
    s->applied_lsn = lsn;
#ifdef KEEL_DEBUG
    KEEL_ASSERT(s->ov.nnodes > OV_CHECK_ON_APPLY_NODES || ov_invariants_ok(s));
#endif
out:
    return rc;
}

/* ---------------------------------------------------------------------
 * Reads: the write-set, then the overlay, then the transaction (ST4).
 */

/* Look key up in dbi of txn and check its checksum (ST3).
 * @return 1 found (*value borrowed), 0 absent, or < 0. */
int keel__st_lmdb_get(MDB_env *env, MDB_txn *txn, MDB_dbi dbi, XXH3_state_t *h,
                      const void *key, size_t key_len, keel_bytes *value,
                      keel_diag *diag)
{
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val d;
    int mrc = mdb_get(txn, dbi, &k, &d);
    if (mrc == MDB_NOTFOUND) {
        return 0;
    }
    if (mrc != MDB_SUCCESS) {
        return keel__st_lmdb_error(env, mrc, "get", diag);
    }
    int rc = keel__st_verify(h, "key", key, key_len, &d, value, diag);
    return rc == KEEL_OK ? 1 : rc;
}

int keel__store_get(keel__store *s, const void *key, size_t key_len,
                    keel_bytes *value, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    if (key_len == 0 || key_len > KEEL__STORE_MAX_KEY_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL, "get: key length %zu outside 1..%u",
                        key_len, KEEL__STORE_MAX_KEY_BYTES);
        goto out;
    }
    const kv_map *m = &s->ws;
    uint32_t h = keel__map_hash(m, key, key_len); /* ST15: one for both */
    uint32_t n = s->ws_open ? keel__map_find(m, key, key_len, h) : 0;
    if (n == 0) {
        m = &s->ov;
        n = keel__map_find(m, key, key_len, h);
    }
    if (n != 0) { /* ST4 */
        if (m->nodes[n].kind == KEEL__STORE_PUT) {
            value->ptr = m->arena + m->nodes[n].val_off;
            value->len = m->nodes[n].val_len;
            rc = 1;
        }
        goto out;
    }
    rc = keel__st_lmdb_get(s->env, s->txn, s->data_dbi, s->hash, key, key_len,
                           value, diag);
out:
    return rc;
}

/* Position the cursor at the first key > t (strict) or >= t.
 * @return an LMDB code; MDB_NOTFOUND when there is none. */
static int cursor_seek(MDB_cursor *cur, const uint8_t *t, size_t tlen,
                       int strict, MDB_val *k, MDB_val *d)
{
    int mrc;
    if (tlen == 0) {
        /* LMDB refuses an empty key for MDB_SET_RANGE; every key is > "". */
        mrc = mdb_cursor_get(cur, k, d, MDB_FIRST);
    } else {
        k->mv_size = tlen;
        k->mv_data = (void *)t;
        mrc = mdb_cursor_get(cur, k, d, MDB_SET_RANGE);
        if (mrc == MDB_SUCCESS && strict &&
            keel__keycmp(k->mv_data, k->mv_size, t, tlen) == 0) {
            mrc = mdb_cursor_get(cur, k, d, MDB_NEXT);
        }
    }
    return mrc;
}

/* One map's candidate in merged_next(): node n of m (0: none left), at
 * position pos of m's ordered view. */
typedef struct map_cursor {
    const kv_map *m;
    uint32_t pos;
    uint32_t n;
} map_cursor;

/* Position c at the first key of its map > t (strict) or >= t. The map's
 * ordered view is current (keel__map_order()). */
static void map_cursor_seek(map_cursor *c, const kv_map *m, const uint8_t *t,
                            size_t tlen, int strict)
{
    c->m = m;
    c->pos = keel__map_seek(m, t, tlen, strict);
    c->n = c->pos < m->nsorted ? m->sorted[c->pos] : 0;
}

/* If c's candidate is the key k, step it to the next key after k. */
static void map_cursor_skip(map_cursor *c, const uint8_t *k, size_t klen)
{
    if (c->n != 0 && keel__map_cmp(c->m, k, klen, c->n) == 0) {
        c->pos++;
        c->n = c->pos < c->m->nsorted ? c->m->sorted[c->pos] : 0;
    }
}

/*
 * The smallest visible key > t (strict) or >= t that starts with prefix:
 * the candidates of the write-set, the overlay and the cursor merged, the
 * higher layer winning ties, a tombstone skipped in every layer along with
 * the entries it hides (ST4).
 * @return 1 (key set), 0, or an error.
 */
static int merged_next(keel__store *s, MDB_cursor *cur, const uint8_t *t,
                       size_t tlen, int strict, const uint8_t *prefix,
                       size_t plen, keel_bytes *key, keel_diag *diag)
{
    int rc = KEEL_OK;
    MDB_val lk;
    MDB_val ld;
    int mrc = cursor_seek(cur, t, tlen, strict, &lk, &ld);
    /* Highest layer last, so that it wins a tie below. The callers made
     * both maps' ordered views current (ST15); a closed write-set is
     * empty. */
    map_cursor layers[2];
    map_cursor_seek(&layers[0], &s->ov, t, tlen, strict);
    map_cursor_seek(&layers[1], &s->ws, t, tlen, strict);
    for (;;) {
        if (mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND) {
            rc = keel__st_lmdb_error(s->env, mrc, "next key", diag);
            break;
        }
        const uint8_t *mk = mrc == MDB_SUCCESS ? lk.mv_data : NULL;
        size_t mlen = mrc == MDB_SUCCESS ? lk.mv_size : 0;
        const map_cursor *top = NULL; /* NULL: the transaction's entry */
        for (int i = 0; i < 2; i++) {
            const map_cursor *c = &layers[i];
            if (c->n != 0 &&
                (mk == NULL || keel__map_cmp(c->m, mk, mlen, c->n) >= 0)) {
                top = c;
                mk = keel__map_key(c->m, c->n);
                mlen = c->m->nodes[c->n].key_len;
            }
        }
        /* Keys with the prefix are contiguous from the first one >= t that
         * has it, so the first key without it ends the search. */
        if (mk == NULL || !keel__key_has_prefix(mk, mlen, prefix, plen)) {
            break;
        }
        if (top == NULL) {
            keel_bytes v;
            rc = keel__st_verify(s->hash, "key", mk, mlen, &ld, &v, diag);
            if (rc == KEEL_OK) {
                key->ptr = mk;
                key->len = mlen;
                rc = 1;
            }
            break;
        }
        if (top->m->nodes[top->n].kind == KEEL__STORE_PUT) {
            key->ptr = mk;
            key->len = mlen;
            rc = 1;
            break;
        }
        /* A tombstone: step every layer past it (mk stays valid: it is in
         * a map's arena, and nothing writes during the loop). */
        if (mrc == MDB_SUCCESS &&
            keel__keycmp(lk.mv_data, lk.mv_size, mk, mlen) == 0) {
            mrc = mdb_cursor_get(cur, &lk, &ld, MDB_NEXT);
        }
        for (int i = 0; i < 2; i++) {
            map_cursor_skip(&layers[i], mk, mlen);
        }
    }
    return rc;
}

/*
 * ST15: the transaction's cursor for a scan, opened once per transaction
 * (mdb_cursor_open allocates), and the two maps' ordered views made
 * current. A write transaction frees its cursors when it ends;
 * keel__st_begin_txn() forgets this one, and close closes a read-only
 * store's.
 */
static int scan_begin(keel__store *s, MDB_cursor **cur, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    if (rc == KEEL_OK && s->cur == NULL) {
        int mrc = mdb_cursor_open(s->txn, s->data_dbi, &s->cur);
        if (mrc != MDB_SUCCESS) {
            s->cur = NULL;
            rc = keel__st_lmdb_error(s->env, mrc, "cursor open", diag);
        }
    }
    if (rc == KEEL_OK) {
        keel__map_order(&s->ws);
        keel__map_order(&s->ov);
        *cur = s->cur;
    }
    return rc;
}

int keel__store_next_key(keel__store *s, const void *after, size_t after_len,
                         const void *prefix, size_t prefix_len, keel_bytes *key,
                         keel_diag *diag)
{
    MDB_cursor *cur = NULL;
    int rc = scan_begin(s, &cur, diag);
    if (rc < 0) {
        goto out;
    }
    /* Keys with the prefix are a contiguous range starting at the prefix
     * itself: if after sorts before it, start there instead. */
    if (prefix_len > 0 &&
        keel__keycmp(after, after_len, prefix, prefix_len) < 0) {
        rc = merged_next(s, cur, prefix, prefix_len, 0, prefix, prefix_len, key,
                         diag);
    } else {
        rc = merged_next(s, cur, after, after_len, 1, prefix, prefix_len, key,
                         diag);
    }
out:
    return rc;
}

int keel__store_count_prefix(keel__store *s, const void *prefix,
                             size_t prefix_len, uint64_t *count,
                             keel_diag *diag)
{
    MDB_cursor *cur = NULL;
    uint64_t n = 0;
    int rc = scan_begin(s, &cur, diag);
    if (rc < 0) {
        goto out;
    }
    keel_bytes k = {.ptr = prefix, .len = prefix_len};
    int strict = 0;
    /* Nothing writes during the loop, so each borrowed key stays valid as
     * the next target. */
    while ((rc = merged_next(s, cur, k.ptr, k.len, strict, prefix, prefix_len,
                             &k, diag)) == 1) {
        n++;
        strict = 1;
    }
    if (rc == KEEL_OK) {
        *count = n;
    }
out:
    return rc;
}

/* ---------------------------------------------------------------------
 * Meta table, checkpoints, open and close.
 */

/* Read meta value name, exactly want bytes, checksum checked (ST3). */
/* Read meta value `name` of exactly want bytes from txn's meta table. */
int keel__st_meta_read(MDB_env *env, MDB_txn *txn, MDB_dbi dbi, XXH3_state_t *h,
                       const char *name, uint8_t *out, size_t want,
                       keel_diag *diag)
{
    int rc = KEEL_OK;
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val d;
    int mrc = mdb_get(txn, dbi, &k, &d);
    if (mrc == MDB_NOTFOUND) {
        rc = keel__diag(diag, KEEL_ECORRUPT, DATA_FILE ": meta \"%s\" missing",
                        name);
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(env, mrc, "reading meta", diag);
        goto out;
    }
    keel_bytes v;
    rc = keel__st_verify(h, "meta", (const uint8_t *)name, k.mv_size, &d, &v,
                         diag);
    if (rc < 0) {
        goto out;
    }
    if (v.len != want) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": meta \"%s\" is %zu bytes, expected %zu",
                        name, v.len, want);
        goto out;
    }
    memcpy(out, v.ptr, want);
out:
    return rc;
}

static int meta_get(keel__store *s, const char *name, uint8_t *out, size_t want,
                    keel_diag *diag)
{
    return keel__st_meta_read(s->env, s->txn, s->meta_dbi, s->hash, name, out,
                              want, diag);
}

int keel__st_meta_put_u64(keel__store *s, const char *name, uint64_t v)
{
    uint8_t b[8];
    keel__put_u64(b, v);
    return keel__st_put_checked(s, s->meta_dbi, (const uint8_t *)name,
                                strlen(name), b, sizeof(b), 0);
}

int keel__st_begin_txn(keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    s->cur = NULL; /* ST15: went with the transaction it belonged to */
    int mrc = mdb_txn_begin(s->env, NULL, s->read_only ? MDB_RDONLY : 0,
                            &s->txn); /* ST14 */
    if (mrc != MDB_SUCCESS) {
        s->txn = NULL;
        rc = keel__st_lmdb_error(s->env, mrc, "begin write transaction", diag);
    }
    return rc;
}

/* Commit txn with LMDB's full sync (ST1); the handle is gone either way. */
int keel__st_commit_txn(keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    s->cur = NULL; /* ST15: freed with it */
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(s->env, mrc, "commit", diag);
    }
    return rc;
}

/* Write the overlay's entries into the transaction in key order (LMDB
 * then fills pages front to back, each put landing next to the last);
 * the overlay is sorted here, once per checkpoint unless a scan already
 * did (ST15). @return an LMDB code. */
static int flush_overlay(keel__store *s)
{
    int mrc = MDB_SUCCESS;
    kv_map *m = &s->ov;
    keel__map_order(m);
    for (uint32_t i = 0; i < m->nsorted && mrc == MDB_SUCCESS; i++) {
        const kv_node *n = &m->nodes[m->sorted[i]];
        const uint8_t *key = m->arena + n->key_off;
        if (n->kind == KEEL__STORE_PUT) {
            mrc = keel__st_put_checked(s, s->data_dbi, key, n->key_len,
                                       m->arena + n->val_off, n->val_len, 0);
        } else {
            /* A tombstone: the key may or may not be in the last
             * checkpoint; absent is what we want either way. */
            MDB_val k = {.mv_size = n->key_len, .mv_data = (void *)key};
            mrc = mdb_del(s->txn, s->data_dbi, &k, NULL);
            if (mrc == MDB_NOTFOUND) {
                mrc = MDB_SUCCESS;
            }
        }
    }
    return mrc;
}

/* Empty the overlay after a commit (ST9), freeing buffers a burst grew. */
static void ov_clear(keel__store *s)
{
    kv_map *m = &s->ov;
    /* Reset first: it may walk the nodes to clear their index slots. */
    keel__map_reset(m);
    if (m->arena_cap > OVERLAY_KEEP_BYTES) {
        free(m->arena);
        m->arena = NULL;
        m->arena_cap = 0;
    }
    if ((size_t)m->nodes_cap * sizeof(kv_node) > OVERLAY_KEEP_BYTES) {
        free(m->nodes);
        free(m->sorted);
        free(m->pend);
        m->nodes = NULL;
        m->sorted = NULL;
        m->pend = NULL;
        m->nodes_cap = 0;
    }
    if (m->slots_cap * sizeof(*m->slots) > OVERLAY_KEEP_BYTES) {
        free(m->slots);
        m->slots = NULL;
        m->slots_cap = 0;
    }
}

/* Bytes for messages: "64 MiB", "1.5 GiB", "300 KiB", "100 bytes". */
static const char *human_bytes(uint64_t n, char *buf, size_t cap)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    if (u == 0) {
        snprintf(buf, cap, "%" PRIu64 " bytes", n);
    } else {
        snprintf(buf, cap, v == (double)(uint64_t)v ? "%.0f %s" : "%.1f %s", v,
                 units[u]);
    }
    return buf;
}

/* ST12: clear the reader slots of dead processes (a `keel snapshot create`
 * killed mid-read), which would otherwise pin the pages of their snapshot
 * for good: LMDB never reuses a page a reader may see, so data.mdb would
 * only grow. Best effort: a failure leaves the slots, no more. */
uint64_t keel__st_reader_check(MDB_env *env)
{
    int dead = 0;
    return mdb_reader_check(env, &dead) == MDB_SUCCESS && dead > 0
               ? (uint64_t)dead
               : 0;
}

/*
 * ST11: the map filled. No transaction may be open in this process while
 * the map is resized (LMDB's rule for mdb_env_set_mapsize): the caller has
 * aborted the write transaction. Double the map, at most to the ceiling.
 * @return KEEL_OK (grown: begin a transaction and redo the work), or
 *         KEEL_ENOSPC at the ceiling ("store full ..."), or LMDB's error.
 */
static int grow_map(keel__store *s, const char *what, keel_diag *diag)
{
    KEEL_ASSERT(s->txn == NULL);
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    uint64_t cur = info.me_mapsize;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t next = cur > s->map_max / KEEL__STORE_MAP_GROWTH
                        ? s->map_max
                        : cur * KEEL__STORE_MAP_GROWTH;
    next -= next % page;
    char h[32], h2[32];
    if (next <= cur) {
        /* A store opened under a ceiling lower than what it holds got a
         * map of what it holds (LMDB's rule): say so. */
        char held[80] = "the map is at";
        if (cur > s->map_max) {
            snprintf(held, sizeof(held), "data.mdb already holds %s, over",
                     human_bytes(cur, h2, sizeof(h2)));
        }
        return keel__diag(
            diag, KEEL_ENOSPC,
            DATA_FILE ": %s: store full: %s its size limit of %s (%" PRIu64
                      " bytes) and needs more; restart with a larger limit "
                      "(keel run --store-max): nothing acknowledged is lost, "
                      "the log replays",
            what, held, human_bytes(s->map_max, h, sizeof(h)), s->map_max);
    }
    int mrc = mdb_env_set_mapsize(s->env, (size_t)next);
    if (mrc != MDB_SUCCESS) {
        /* mmap refused: the address space (ulimit -v), not the disk. */
        return keel__diag(diag, xlate(mrc),
                          DATA_FILE ": %s: cannot grow the map from %s to %s: "
                                    "%s (address space: see ulimit -v)",
                          what, human_bytes(cur, h2, sizeof(h2)),
                          human_bytes(next, h, sizeof(h)), mdb_strerror(mrc));
    }
    return KEEL_OK;
}

/*
 * The message for a failed write into data.mdb (put, commit): out of room
 * (the disk, a quota, the file size limit) says which and what to do.
 * LMDB reports a short write as EIO, and a write that crosses a full disk
 * or RLIMIT_FSIZE is a short one: EIO is explained by the file's size
 * against the limit, and by the file system's free space.
 */
static int write_error(keel__store *s, int mrc, const char *what,
                       keel_diag *diag)
{
    static const char *const after = "; nothing acknowledged is lost: "
                                     "the log replays on restart";
    int fd = -1;
    struct stat st;
    struct rlimit rl;
    struct statvfs vfs;
    char h[32];
    char h2[32];
    int have_st =
        mdb_env_get_fd(s->env, &fd) == MDB_SUCCESS && fstat(fd, &st) == 0;
    int at_fsize = have_st && getrlimit(RLIMIT_FSIZE, &rl) == 0 &&
                   rl.rlim_cur != RLIM_INFINITY &&
                   (uint64_t)st.st_size + 2 * (uint64_t)s->page_bytes >=
                       (uint64_t)rl.rlim_cur;
    int disk_full =
        have_st && fstatvfs(fd, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < 64 * (uint64_t)s->page_bytes;
    if (mrc == EFBIG || (mrc == EIO && at_fsize)) {
        return keel__diag(
            diag, KEEL_ENOSPC,
            DATA_FILE ": %s: %s: data.mdb is %s, at the file size limit of "
                      "%s (RLIMIT_FSIZE, ulimit -f); raise it and restart%s",
            what, mrc == EFBIG ? "file too large" : "short write",
            human_bytes(have_st ? (uint64_t)st.st_size : 0, h, sizeof(h)),
            at_fsize ? human_bytes((uint64_t)rl.rlim_cur, h2, sizeof(h2))
                     : "the file system's",
            after);
    }
    if (mrc == ENOSPC || mrc == EDQUOT || (mrc == EIO && disk_full)) {
        return keel__diag(diag, KEEL_ENOSPC,
                          DATA_FILE ": %s: %s: the file system holding the "
                                    "store is full; free space and restart%s",
                          what,
                          mrc == EDQUOT   ? "disk quota exceeded"
                          : mrc == ENOSPC ? "no space left on device"
                                          : "short write",
                          after);
    }
    return keel__st_lmdb_error(s->env, mrc, what, diag);
}

int keel__store_checkpoint(keel__store *s, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    KEEL_ASSERT(!s->ws_open);
    if (rc < 0 || s->applied_lsn == s->ckpt_lsn) {
        goto out;
    }
    if (s->read_only) { /* ST14 */
        rc = keel__diag(diag, KEEL_EINVAL,
                        "checkpoint: the store was opened read-only");
        goto out;
    }
#ifdef KEEL_DEBUG
    KEEL_ASSERT(ov_invariants_ok(s));
#endif
    s->readers_cleared += keel__st_reader_check(s->env); /* ST12 */
    const char *what = "checkpoint";
    int mrc;
    for (;;) {
        /* ST1: the first writes into the transaction since it began. */
        mrc = flush_overlay(s);
        if (mrc == MDB_SUCCESS) {
            mrc = keel__st_meta_put_u64(s, "applied_lsn",
                                        s->applied_lsn); /* ST2 */
        }
        if (mrc == MDB_SUCCESS) {
            what = "commit";
            mrc = mdb_txn_commit(s->txn); /* full sync (ST1) */
            s->txn = NULL;                /* gone, committed or not */
            s->cur = NULL;                /* freed with it (ST15) */
        }
        if (mrc != MDB_MAP_FULL) {
            break;
        }
        /* ST11: the overlay is intact (a checkpoint only reads it) and
         * the disk holds the last checkpoint: drop what was written,
         * grow the map, and write it all again. */
        if (s->txn != NULL) {
            mdb_txn_abort(s->txn);
            s->txn = NULL;
        }
        s->cur = NULL;
        s->readers_cleared += keel__st_reader_check(s->env);
        rc = grow_map(s, what, diag);
        if (rc == KEEL_OK) {
            rc = keel__st_begin_txn(s, diag);
        }
        if (rc == KEEL_OK) {
            /* Table handles opened in a transaction that never committed
             * (the first since open) went with its abort. */
            mrc = mdb_dbi_open(s->txn, "data", 0, &s->data_dbi);
            mrc = mrc == MDB_SUCCESS
                      ? mdb_dbi_open(s->txn, "meta", 0, &s->meta_dbi)
                      : mrc;
            rc = mrc == MDB_SUCCESS
                     ? KEEL_OK
                     : keel__st_lmdb_error(s->env, mrc, "open tables", diag);
        }
        if (rc < 0) {
            rc = keel__st_set_failed(s, rc, diag); /* ST6 */
            goto out;
        }
        what = "checkpoint";
    }
    if (mrc != MDB_SUCCESS) {
        /* ST6: the transaction holds part of the overlay, or is gone. */
        rc = keel__st_set_failed(s, write_error(s, mrc, what, diag), diag);
        goto out;
    }
    s->ckpt_lsn = s->applied_lsn;
    ov_clear(s);
    rc = keel__st_begin_txn(s, diag);
    if (rc < 0) {
        rc = keel__st_set_failed(s, rc,
                                 diag); /* ST6: no transaction to write to */
    }
#ifdef KEEL_DEBUG
    KEEL_ASSERT(ov_invariants_ok(s));
#endif
out:
    return rc;
}

/* Make a new store's tables and meta values, committed and synced. */
static int create_tables(keel__store *s, uint64_t kernel_id, keel_diag *diag)
{
    int rc = KEEL_OK;
    const char *what = "create tables";
    int mrc = mdb_dbi_open(s->txn, "meta", MDB_CREATE, &s->meta_dbi);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_dbi_open(s->txn, "data", MDB_CREATE, &s->data_dbi);
    }
    if (mrc == MDB_SUCCESS) {
        uint8_t b[4];
        keel__put_u32(b, KEEL__STORE_FORMAT);
        what = "write meta";
        mrc = keel__st_put_checked(s, s->meta_dbi, (const uint8_t *)"format", 6,
                                   b, 4, 0);
    }
    s->kernel_id = kernel_id;
    if (mrc == MDB_SUCCESS && s->kernel_id == 0) {
        while (s->kernel_id == 0) {
            if (getrandom(&s->kernel_id, sizeof(s->kernel_id), 0) !=
                (ssize_t)sizeof(s->kernel_id)) {
                rc = keel__diag(diag, keel_translate_errno(errno),
                                "getrandom: %s", strerror(errno));
                goto out;
            }
        }
    }
    if (mrc == MDB_SUCCESS) {
        mrc = keel__st_meta_put_u64(s, "kernel_id", s->kernel_id);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = keel__st_meta_put_u64(s, "applied_lsn", 0);
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(s->env, mrc, what, diag);
        goto out;
    }
    rc = keel__st_commit_txn(s, diag);
    if (rc < 0) {
        goto out;
    }
    /* LMDB does not sync the directory: make data.mdb's name durable
     * before anything comes to depend on it. */
    rc = s->io->fsync_dir(s->io, s->dir);
    if (rc < 0) {
        keel__diag(diag, rc, "fsync store directory: %s", keel_strerror(rc));
        goto out;
    }
    rc = keel__st_begin_txn(s, diag);
out:
    return rc;
}

/* Open an existing store's tables and check its meta values. */
static int check_tables(keel__store *s, uint64_t kernel_id, keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_dbi_open(s->txn, "data", 0, &s->data_dbi);
    if (mrc == MDB_NOTFOUND) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": table \"data\" missing");
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(s->env, mrc, "open table \"data\"", diag);
        goto out;
    }
    uint8_t b[8];
    rc = meta_get(s, "format", b, 4, diag);
    if (rc < 0) {
        goto out;
    }
    uint32_t format = keel__get_u32(b);
    if (format != KEEL__STORE_FORMAT) {
        rc = keel__diag(diag, KEEL_EVERSION,
                        DATA_FILE ": unsupported store format version %" PRIu32
                                  " (this keel reads version %u)",
                        format, KEEL__STORE_FORMAT);
        goto out;
    }
    rc = meta_get(s, "kernel_id", b, 8, diag);
    if (rc < 0) {
        goto out;
    }
    s->kernel_id = keel__get_u64(b);
    if (kernel_id != 0 && kernel_id != s->kernel_id) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": store belongs to kernel 0x%016" PRIx64
                                  ", expected 0x%016" PRIx64,
                        s->kernel_id, kernel_id);
        goto out;
    }
    rc = meta_get(s, "applied_lsn", b, 8, diag);
    if (rc < 0) {
        goto out;
    }
    s->applied_lsn = keel__get_u64(b);
    s->ckpt_lsn = s->applied_lsn;
out:
    return rc;
}

/*
 * Open the tables, creating them when the environment has none yet (a new
 * data.mdb, or one whose creation was interrupted before its first commit:
 * an empty main table).
 */
static int open_tables(keel__store *s, int create, uint64_t kernel_id,
                       keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_dbi_open(s->txn, "meta", 0, &s->meta_dbi);
    if (mrc == MDB_SUCCESS) {
        rc = check_tables(s, kernel_id, diag);
        goto out;
    }
    if (mrc != MDB_NOTFOUND) {
        rc = keel__st_lmdb_error(s->env, mrc, "open table \"meta\"", diag);
        goto out;
    }
    MDB_dbi main_dbi;
    MDB_stat st;
    mrc = mdb_dbi_open(s->txn, NULL, 0, &main_dbi);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_stat(s->txn, main_dbi, &st);
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(s->env, mrc, "stat", diag);
        goto out;
    }
    if (st.ms_entries != 0) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": not a keel store (no meta table)");
        goto out;
    }
    if (!create) {
        rc = keel__diag(diag, KEEL_ENOENT,
                        DATA_FILE ": no store (never initialized)");
        goto out;
    }
    rc = create_tables(s, kernel_id, diag);
out:
    return rc;
}

void keel__store_options_init(keel__store_options *o)
{
    memset(o, 0, sizeof(*o));
    o->map_bytes = KEEL__STORE_DEFAULT_MAP_BYTES;
    o->map_max_bytes = KEEL__STORE_DEFAULT_MAX_BYTES;
    o->create = 1;
}

/* Create dir if allowed and absent (its name synced into the parent), and
 * refuse to create a store when not allowed. */
static int prepare_dir(keel__store *s, int create, keel_diag *diag)
{
    int rc = KEEL_OK;
    char *parent = NULL;
    char *file = NULL;
    if (create && s->io->mkdir(s->io, s->dir, 0755) == KEEL_OK) {
        parent = keel__path_join(s->dir, "..");
        rc = parent != NULL ? s->io->fsync_dir(s->io, parent) : KEEL_ENOMEM;
        if (rc < 0) {
            keel__diag(diag, rc, "fsync parent of %s: %s", s->dir,
                       keel_strerror(rc));
            goto out;
        }
    }
    file = keel__path_join(s->dir, DATA_FILE);
    if (file == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    struct stat st;
    if (!create && stat(file, &st) != 0) {
        rc = keel__diag(diag, keel_translate_errno(errno), "%s: %s", file,
                        strerror(errno));
    }
out:
    free(file);
    free(parent);
    return rc;
}

/* Open the LMDB environment in dir into s->env. */
static int open_env(keel__store *s, const char *dir,
                    const keel__store_options *o, keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_env_create(&s->env);
    if (mrc != MDB_SUCCESS) {
        s->env = NULL;
        return keel__st_lmdb_error(NULL, mrc, "create environment", diag);
    }
    mrc = mdb_env_set_mapsize(s->env, (size_t)o->map_bytes);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_env_set_maxdbs(s->env, 2);
    }
    if (mrc == MDB_SUCCESS) {
        /* Flags 0: fully synced commits; see store.h for why. A bulk
         * store is invisible until load_finish syncs it all. A read-only
         * store (ST14) touches no file, lock.mdb included: its caller
         * holds STATE's lock, so no writer runs beside it. */
        unsigned flags = o->read_only ? MDB_RDONLY | MDB_NOLOCK
                         : o->bulk    ? MDB_NOSYNC | MDB_NOMETASYNC
                                      : 0;
        mrc = mdb_env_open(s->env, dir, flags, 0644);
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(s->env, mrc, "open environment", diag);
    } else if (mdb_env_get_maxkeysize(s->env) <
               (int)KEEL__STORE_MAX_KEY_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "LMDB built with a %d-byte key limit, keel needs %u",
                        mdb_env_get_maxkeysize(s->env),
                        KEEL__STORE_MAX_KEY_BYTES);
    }
    return rc;
}

/* Remove dir if it holds nothing but LMDB's two files (a store that was
 * never created to its end: ST10). @return KEEL_OK, or the error. */
static int remove_unborn(keel__store *s, const char *dir, keel_diag *diag)
{
    static const char *const names[] = {DATA_FILE, "lock.mdb"};
    int rc = KEEL_OK;
    for (size_t i = 0; i < 2 && rc == KEEL_OK; i++) {
        char *f = keel__path_join(dir, names[i]);
        rc = f == NULL ? KEEL_ENOMEM : s->io->unlink(s->io, f);
        rc = rc == KEEL_ENOENT ? KEEL_OK : rc;
        free(f);
    }
    if (rc == KEEL_OK) {
        rc = s->io->rmdir(s->io, dir);
        rc = rc == KEEL_ENOENT ? KEEL_OK : rc;
    }
    if (rc < 0) {
        keel__diag(diag, rc, "%s: cannot remove an unfinished store: %s", dir,
                   keel_strerror(rc));
    }
    return rc;
}

/*
 * ST10: a new store is built in `<dir>.new` (its tables created and
 * committed with a full sync, the environment closed) and renamed to dir:
 * LMDB writes a new environment's two meta pages in one write that a
 * SIGKILL can tear, leaving a data.mdb no open accepts. A dir that exists
 * without data.mdb (made by an older keel, or by hand) is replaced.
 */
static int create_if_new(keel__store *s, const keel__store_options *o,
                         uint64_t kernel_id, keel_diag *diag)
{
    int rc = KEEL_OK;
    char *data = keel__path_join(s->dir, DATA_FILE);
    size_t n = strlen(s->dir) + sizeof(".new");
    char *tmp = malloc(n);
    char *final = s->dir;
    char *parent = NULL;
    struct stat st;
    if (data == NULL || tmp == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (stat(data, &st) == 0) {
        goto out; /* it exists */
    }
    snprintf(tmp, n, "%s.new", s->dir);
    rc = remove_unborn(s, tmp, diag);
    if (rc == KEEL_OK && (rc = s->io->mkdir(s->io, tmp, 0755)) < 0) {
        keel__diag(diag, rc, "%s: %s", tmp, keel_strerror(rc));
    }
    if (rc < 0) {
        goto out;
    }
    s->dir = tmp; /* create_tables fsyncs s->dir */
    rc = open_env(s, tmp, o, diag);
    if (rc == KEEL_OK) {
        rc = keel__st_begin_txn(s, diag);
    }
    if (rc == KEEL_OK) {
        rc = create_tables(s, kernel_id, diag);
    }
    s->dir = final;
    if (s->txn != NULL) {
        mdb_txn_abort(s->txn);
        s->txn = NULL;
    }
    if (s->env != NULL) {
        mdb_env_close(s->env);
        s->env = NULL;
    }
    if (rc == KEEL_OK) {
        rc = remove_unborn(s, final, diag);
    }
    if (rc == KEEL_OK) {
        rc = s->io->rename(s->io, tmp, final);
        if (rc < 0) {
            keel__diag(diag, rc, "rename %s: %s", tmp, keel_strerror(rc));
        }
    }
    if (rc == KEEL_OK) {
        parent = keel__path_join(final, "..");
        rc = parent != NULL ? s->io->fsync_dir(s->io, parent) : KEEL_ENOMEM;
        if (rc < 0) {
            keel__diag(diag, rc, "fsync parent of %s: %s", final,
                       keel_strerror(rc));
        }
    }
out:
    free(data);
    free(tmp);
    free(parent);
    return rc;
}

int keel__store_open(const char *dir, const keel__store_options *opts,
                     uint64_t kernel_id, keel__store **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    keel__store_options o;
    *out = NULL;
    keel__store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (opts != NULL) {
        o = *opts;
    } else {
        keel__store_options_init(&o);
    }
    s->ws.name = "write-set";
    s->ov.name = "overlay";
    /* Without random bytes the seed stays 0: a store that a vat's choice
     * of keys could slow down, never one that answers wrongly. One seed
     * for both maps, so that a key's hash serves both (ST15). */
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) ==
        (ssize_t)sizeof(seed)) {
        s->ws.hash_seed = seed;
        s->ov.hash_seed = seed;
    }
    ws_reset(s);
    keel__map_reset(&s->ov);
    s->io = o.io != NULL ? o.io : keel__io_posix();
    s->bulk = o.bulk;
    s->read_only = o.read_only;
    if (o.read_only) {
        o.create = 0; /* ST14 */
    }
    s->dir = strdup(dir);
    s->hash = XXH3_createState();
    if (s->dir == NULL || s->hash == NULL ||
        keel__map_reserve(&s->ws, 0, 16, NULL) < 0 ||
        keel__map_reserve(&s->ov, 0, 16, NULL) < 0) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (o.map_bytes == 0 || o.map_max_bytes == 0) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "store map size %" PRIu64 ", ceiling %" PRIu64
                        ": both must be > 0",
                        o.map_bytes, o.map_max_bytes);
        goto out;
    }
    /* ST11: whole pages, no more than size_t holds, and the map starts no
     * larger than its ceiling. */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    s->map_max = o.map_max_bytes < SIZE_MAX ? o.map_max_bytes : SIZE_MAX;
    s->map_max -= s->map_max % page;
    s->map_max = s->map_max < page ? page : s->map_max;
    o.map_bytes = o.map_bytes < s->map_max ? o.map_bytes : s->map_max;
    if (o.create) {
        rc = create_if_new(s, &o, kernel_id, diag);
        if (rc < 0) {
            goto out;
        }
    }
    rc = prepare_dir(s, o.create, diag);
    if (rc < 0) {
        goto out;
    }
    rc = open_env(s, dir, &o, diag);
    if (rc < 0) {
        goto out;
    }
    MDB_stat est;
    s->page_bytes = mdb_env_stat(s->env, &est) == MDB_SUCCESS ? est.ms_psize
                                                              : (uint32_t)page;
    s->readers_cleared = keel__st_reader_check(s->env); /* ST12 */
    rc = keel__st_begin_txn(s, diag);
    if (rc == KEEL_OK) {
        rc = open_tables(s, o.create, kernel_id, diag);
    }
out:
    if (rc < 0) {
        keel__store_close(s);
    } else {
        *out = s;
    }
    return rc;
}

void keel__store_close(keel__store *s)
{
    if (s != NULL) {
        if (s->read_only && s->cur != NULL) {
            mdb_cursor_close(s->cur); /* ST15: a read transaction's */
        }
        if (s->txn != NULL) {
            /* Unchanged since the last checkpoint (ST1); the overlay,
             * freed below, is what gets dropped. */
            mdb_txn_abort(s->txn);
        }
        if (s->env != NULL) {
            mdb_env_close(s->env);
        }
        XXH3_freeState(s->hash);
        keel__map_free(&s->ws);
        keel__map_free(&s->ov);
        keel__ws_ops_free(&s->dec);
        free(s->dir);
        free(s);
    }
}

uint64_t keel__store_kernel_id(const keel__store *s)
{
    return s->kernel_id;
}

uint64_t keel__store_applied_lsn(const keel__store *s)
{
    return s->applied_lsn;
}

uint64_t keel__store_checkpoint_lsn(const keel__store *s)
{
    return s->ckpt_lsn;
}

uint64_t keel__store_pending_bytes(const keel__store *s)
{
    /* Memory the overlay holds: arena bytes (keys, values, and the space of
     * values later replaced by longer ones) and a node per key. */
    return (uint64_t)s->ov.arena_len +
           (uint64_t)(s->ov.nnodes - 1) * sizeof(kv_node);
}

int keel__store_failed(const keel__store *s)
{
    return s->failed;
}

uint64_t keel__store_map_bytes(const keel__store *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return info.me_mapsize;
}

/* mdb_reader_list's callback: count the lines that name a reader. */
static int count_reader(const char *msg, void *arg)
{
    uint32_t *n = arg;
    if (strncmp(msg, "    pid", 7) != 0 && msg[0] != '(') {
        (*n)++;
    }
    return 0;
}

int keel__store_readers(keel__store *s, uint32_t *slots, uint64_t *cleared,
                        keel_diag *diag)
{
    *slots = 0;
    *cleared = s->readers_cleared;
    int mrc = mdb_reader_list(s->env, count_reader, slots);
    return mrc < 0 ? keel__st_lmdb_error(s->env, mrc, "reader list", diag)
                   : KEEL_OK;
}

int keel__store_read_only(const keel__store *s)
{
    return s->read_only;
}
