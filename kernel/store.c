/*
 * kernel/store.c — the kernel's LMDB store: one long-lived write
 * transaction committed only at checkpoints, a write-set in front of it,
 * and a checksum on every stored value. Contract and byte layouts:
 * kernel/store.h. This is the only file that includes <lmdb.h>; MDB_*
 * codes are translated to KEEL_E* here (xlate()) and go no further.
 *
 * Invariants:
 *   ST1  Between checkpoints the files on disk hold exactly the last
 *        checkpoint: every change goes into the one write transaction `txn`,
 *        which only keel__store_checkpoint() commits, with LMDB's full sync
 *        (env flags 0: no NOSYNC, NOMETASYNC, MAPASYNC or WRITEMAP).
 *   ST2  A checkpoint commits meta "applied_lsn" = applied_lsn in the same
 *        transaction as the data it covers, so data and LSN agree on disk.
 *   ST3  Every stored value (data and meta) is value ‖ u64 LE
 *        xxh3_64(key ‖ value), checked on every read; a short value or a
 *        mismatch is KEEL_ECORRUPT naming the key and is never returned.
 *   ST4  While a write-set is open, reads see it first: a put shadows the
 *        transaction, a tombstone hides it. The write-set reaches LMDB only
 *        through apply(), which applies all of it or fails the store.
 *   ST5  An encoded write-set is canonical: one op per key, keys strictly
 *        ascending. apply_encoded() accepts exactly such bytes and validates
 *        all of them before changing anything, so a rejected payload leaves
 *        the store as it was (and not FAILED).
 *   ST6  After an LMDB error while writing (put, delete, commit, begin) the
 *        store is FAILED: that call returns the translated error, every
 *        later one KEEL_EFAILED, until close + reopen. The transaction may
 *        hold part of a write-set, so it must never be committed; close()
 *        aborts it and the WAL replays what it held.
 *   ST7  checkpoint_lsn <= applied_lsn, and applied_lsn only increases.
 *   ST8  Keys are 1..KEEL__STORE_MAX_KEY_BYTES bytes and values at most
 *        KEEL__STORE_MAX_VALUE_BYTES, checked when they enter a write-set:
 *        a write-set the WAL has accepted can always be applied.
 *
 * States (the function behind each transition):
 *
 *        keel__store_open()
 *               |
 *               v          ws_begin()               ws_put/ws_delete/get/
 *   +------> READY ------------------------> WS_OPEN  next_key/count/encode
 *   |         |  |  <-- ws_abort() ---------   |  ^            |
 *   |         |  |  <-- ws_apply(lsn) --------+  +------------+
 *   |         |  +-- apply_encoded(lsn) --> READY
 *   |         +----- checkpoint(): commit (full sync), begin --> READY
 *   |
 *   |  any LMDB write error in ws_apply / apply_encoded / checkpoint
 *   +--------------------------------------------------------> FAILED
 *                       (every call: KEEL_EFAILED; close() from any state)
 *
 * The write-set is a treap over an index-addressed node array, keys and
 * values copied into one byte arena; both are reset, not freed, between
 * cranks. Priorities come from a PRNG, not from the keys, so keys chosen by
 * a vat cannot unbalance it.
 */
#include "kernel/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <lmdb.h>
#include <xxhash.h>

#include "common/diag.h"
#include "common/io.h"

#define DATA_FILE "data.mdb"
/* Bytes of an encoded op before its key; and the smallest op (1-byte key). */
#define OP_HEAD_BYTES 5u
#define OP_MIN_BYTES  (OP_HEAD_BYTES + 1u)
/* Keys longer than this are shortened ("...") in messages. */
#define KEY_PRINT_BYTES 96u

_Static_assert(KEEL__STORE_MAX_VALUE_BYTES <= UINT32_MAX - 8u,
               "a stored value with its checksum fits LMDB's u32 sizes");
_Static_assert(KEEL__STORE_CHECKSUM_BYTES == 8u, "u64 xxh3 checksum");

typedef struct ws_node {
    size_t key_off; /* into arena */
    size_t val_off;
    uint32_t key_len;
    uint32_t val_len;
    uint32_t left; /* node indices; 0 is "none" (nodes[0] is unused) */
    uint32_t right;
    uint32_t prio; /* treap heap order: a parent's is >= its children's */
    uint8_t kind;  /* KEEL__STORE_PUT or KEEL__STORE_DELETE */
} ws_node;

struct keel__store {
    keel_io *io;
    char *dir;
    MDB_env *env;
    MDB_txn *txn; /* the long-lived write transaction (ST1) */
    MDB_dbi data_dbi;
    MDB_dbi meta_dbi;
    XXH3_state_t *hash;
    uint64_t kernel_id;
    uint64_t applied_lsn;
    uint64_t ckpt_lsn;
    uint64_t pending_bytes;
    int failed; /* ST6: 0 or the original error */
    keel_diag fail_diag;

    int ws_open;
    ws_node *nodes; /* nodes[1 .. nnodes-1] */
    uint32_t nnodes;
    uint32_t nodes_cap;
    uint32_t root;
    uint8_t *arena;
    size_t arena_len;
    size_t arena_cap;
    size_t ws_enc_bytes; /* exact encoded length of the open write-set */
    uint64_t prio_state;
};

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
static int lmdb_error(const keel__store *s, int mrc, const char *what,
                      keel_diag *diag)
{
    int rc = xlate(mrc);
    if (mrc == MDB_MAP_FULL) {
        MDB_envinfo info;
        mdb_env_info(s->env, &info);
        keel__diag(diag, rc,
                   DATA_FILE ": %s: map full (map size %zu bytes); reopen "
                             "with a larger map size",
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
static int set_failed(keel__store *s, int rc, keel_diag *diag)
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
static int check_failed(const keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (s->failed != 0) {
        rc = keel__diag(diag, KEEL_EFAILED,
                        "store failed earlier (%s); close and reopen",
                        s->fail_diag.msg);
    }
    return rc;
}

/* Bytewise order, a proper prefix first: LMDB's default key order. */
static int keycmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c == 0) {
        c = (alen > blen) - (alen < blen);
    }
    return c;
}

static int has_prefix(const uint8_t *k, size_t klen, const uint8_t *p,
                      size_t plen)
{
    return plen == 0 || (klen >= plen && memcmp(k, p, plen) == 0);
}

/* The key in printable form for messages: \xNN for bytes outside
 * 0x20..0x7e and for `"` and `\`; long keys end in "...". */
static const char *printable(const uint8_t *k, size_t klen, char *buf,
                             size_t cap)
{
    size_t o = 0;
    size_t n = klen < KEY_PRINT_BYTES ? klen : KEY_PRINT_BYTES;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        uint8_t c = k[i];
        if (c >= 0x20 && c <= 0x7e && c != '"' && c != '\\') {
            buf[o++] = (char)c;
        } else {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        }
    }
    if (n < klen && o + 4 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* ST3: xxh3_64(key ‖ value), streamed so that neither is copied. */
static uint64_t kv_hash(keel__store *s, const void *key, size_t klen,
                        const void *val, size_t vlen)
{
    XXH3_64bits_reset(s->hash);
    XXH3_64bits_update(s->hash, key, klen);
    if (vlen > 0) {
        XXH3_64bits_update(s->hash, val, vlen);
    }
    return XXH3_64bits_digest(s->hash);
}

/*
 * ST3: check a stored value d read under key (what: "key" or "meta") and
 * give the value without its checksum.
 */
static int verify(keel__store *s, const char *what, const uint8_t *key,
                  size_t klen, const MDB_val *d, keel_bytes *out,
                  keel_diag *diag)
{
    int rc = KEEL_OK;
    char kbuf[4 * KEY_PRINT_BYTES + 8];
    if (d->mv_size < KEEL__STORE_CHECKSUM_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": %s \"%s\": stored value is %zu bytes, "
                                  "shorter than its 8-byte checksum",
                        what, printable(key, klen, kbuf, sizeof(kbuf)),
                        d->mv_size);
        goto out;
    }
    size_t vlen = d->mv_size - KEEL__STORE_CHECKSUM_BYTES;
    const uint8_t *v = d->mv_data;
    uint64_t stored = keel__get_u64(v + vlen);
    uint64_t computed = kv_hash(s, key, klen, v, vlen);
    if (stored != computed) {
        rc = keel__diag(
            diag, KEEL_ECORRUPT,
            DATA_FILE ": %s \"%s\": checksum mismatch (stored "
                      "0x%016" PRIx64 ", computed 0x%016" PRIx64 ")",
            what, printable(key, klen, kbuf, sizeof(kbuf)), stored, computed);
        goto out;
    }
    out->ptr = v;
    out->len = vlen;
out:
    return rc;
}

/* Store value ‖ checksum under key (ST3). @return an LMDB code. */
static int put_checked(keel__store *s, MDB_dbi dbi, const uint8_t *key,
                       size_t klen, const uint8_t *val, size_t vlen)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    MDB_val d = {.mv_size = vlen + KEEL__STORE_CHECKSUM_BYTES, .mv_data = NULL};
    /* MDB_RESERVE hands out the value's space in the page: the value and
     * its checksum are written there once, with no staging copy. */
    int mrc = mdb_put(s->txn, dbi, &k, &d, MDB_RESERVE);
    if (mrc == MDB_SUCCESS) {
        uint8_t *p = d.mv_data;
        if (vlen > 0) {
            memcpy(p, val, vlen);
        }
        keel__put_u64(p + vlen, kv_hash(s, key, klen, val, vlen));
    }
    return mrc;
}

/* ---------------------------------------------------------------------
 * The write-set: a treap keyed by bytes (ST4).
 */

static const uint8_t *node_key(const keel__store *s, uint32_t n)
{
    return s->arena + s->nodes[n].key_off;
}

static int node_cmp(const keel__store *s, const uint8_t *k, size_t klen,
                    uint32_t n)
{
    return keycmp(k, klen, node_key(s, n), s->nodes[n].key_len);
}

static size_t op_bytes(uint8_t kind, size_t klen, size_t vlen)
{
    return OP_HEAD_BYTES + klen + (kind == KEEL__STORE_PUT ? 4 + vlen : 0);
}

static uint32_t ws_find(const keel__store *s, const uint8_t *k, size_t klen)
{
    uint32_t t = s->root;
    while (t != 0) {
        int c = node_cmp(s, k, klen, t);
        if (c == 0) {
            break;
        }
        t = c < 0 ? s->nodes[t].left : s->nodes[t].right;
    }
    return t;
}

/* The node with the smallest key > k (strict) or >= k; 0 if none. */
static uint32_t ws_lower(const keel__store *s, const uint8_t *k, size_t klen,
                         int strict)
{
    uint32_t best = 0;
    uint32_t t = s->ws_open ? s->root : 0;
    while (t != 0) {
        int c = node_cmp(s, k, klen, t);
        if (c < 0 || (c == 0 && !strict)) {
            best = t;
            t = s->nodes[t].left;
        } else {
            t = s->nodes[t].right;
        }
    }
    return best;
}

/* Insert node n (not yet linked) under t; @return the new subtree root. */
static uint32_t ws_insert(keel__store *s, uint32_t t, uint32_t n)
{
    uint32_t r = n;
    if (t != 0) {
        ws_node *nodes = s->nodes;
        r = t;
        if (node_cmp(s, node_key(s, n), nodes[n].key_len, t) < 0) {
            uint32_t l = ws_insert(s, nodes[t].left, n);
            nodes[t].left = l;
            if (nodes[l].prio > nodes[t].prio) {
                nodes[t].left = nodes[l].right;
                nodes[l].right = t;
                r = l;
            }
        } else {
            uint32_t rt = ws_insert(s, nodes[t].right, n);
            nodes[t].right = rt;
            if (nodes[rt].prio > nodes[t].prio) {
                nodes[t].right = nodes[rt].left;
                nodes[rt].left = t;
                r = rt;
            }
        }
    }
    return r;
}

/* If p points into the arena, its offset there (so it survives a
 * realloc); else SIZE_MAX. Callers may pass bytes the store lent them. */
static size_t arena_offset(const keel__store *s, const void *p)
{
    uintptr_t a = (uintptr_t)s->arena;
    uintptr_t x = (uintptr_t)p;
    return (s->arena != NULL && x >= a && x < a + s->arena_len)
               ? (size_t)(x - a)
               : SIZE_MAX;
}

/* Make room for need more arena bytes and, if new_node, one more node. */
static int ws_reserve(keel__store *s, size_t need, int new_node,
                      keel_diag *diag)
{
    int rc = KEEL_OK;
    if (s->arena_cap - s->arena_len < need) {
        size_t cap = s->arena_cap > 0 ? s->arena_cap : 4096;
        while (cap - s->arena_len < need) {
            cap *= 2;
        }
        uint8_t *a = realloc(s->arena, cap);
        if (a == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "write-set: out of memory");
            goto out;
        }
        s->arena = a;
        s->arena_cap = cap;
    }
    if (new_node && s->nnodes == s->nodes_cap) {
        if (s->nodes_cap == UINT32_MAX) {
            rc = keel__diag(diag, KEEL_ETOOBIG, "write-set: too many ops");
            goto out;
        }
        uint32_t cap =
            s->nodes_cap < UINT32_MAX / 2 ? 2 * s->nodes_cap : UINT32_MAX;
        ws_node *n = realloc(s->nodes, (size_t)cap * sizeof(*n));
        if (n == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "write-set: out of memory");
            goto out;
        }
        s->nodes = n;
        s->nodes_cap = cap;
    }
out:
    return rc;
}

/* Copy len bytes from p (possibly inside the arena, at offset poff) to the
 * arena at offset dst. */
static void arena_copy(keel__store *s, size_t dst, const void *p, size_t poff,
                       size_t len)
{
    if (len > 0) {
        memmove(s->arena + dst, poff != SIZE_MAX ? s->arena + poff : p, len);
    }
}

#ifdef KEEL_DEBUG
/* KEEL_DEBUG checker for ST4/ST5/ST7 on the write-set's structure: keys
 * in strictly ascending in-order sequence, heap order of priorities, and
 * the op count and encoded length it claims. */
static int ws_walk_ok(const keel__store *s, uint32_t t, uint32_t *prev,
                      size_t *count, size_t *bytes)
{
    int ok = 1;
    if (t != 0) {
        const ws_node *n = &s->nodes[t];
        ok = (n->left == 0 || s->nodes[n->left].prio <= n->prio) &&
             (n->right == 0 || s->nodes[n->right].prio <= n->prio) &&
             ws_walk_ok(s, n->left, prev, count, bytes);
        ok = ok && (*prev == 0 || node_cmp(s, node_key(s, *prev),
                                           s->nodes[*prev].key_len, t) < 0);
        *prev = t;
        *count += 1;
        *bytes += op_bytes(n->kind, n->key_len, n->val_len);
        ok = ok && ws_walk_ok(s, n->right, prev, count, bytes);
    }
    return ok;
}

static int store_invariants_ok(const keel__store *s)
{
    uint32_t prev = 0;
    size_t count = 0;
    size_t bytes = 4;
    int ok =
        s->ckpt_lsn <= s->applied_lsn && (s->failed != 0 || s->txn != NULL);
    if (s->ws_open) {
        ok = ok && ws_walk_ok(s, s->root, &prev, &count, &bytes) &&
             count + 1 == s->nnodes && bytes == s->ws_enc_bytes;
    }
    return ok;
}
#endif

static int ws_set(keel__store *s, uint8_t kind, const void *key, size_t klen,
                  const void *val, size_t vlen, keel_diag *diag)
{
    int rc = check_failed(s, diag);
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
    size_t koff = arena_offset(s, key);
    size_t voff = vlen > 0 ? arena_offset(s, val) : SIZE_MAX;
    uint32_t n = ws_find(s, key, klen);
    /* An overwrite that fits reuses the old value's bytes, so a crank that
     * rewrites one key many times does not grow the arena. */
    int in_place = n != 0 && vlen <= s->nodes[n].val_len;
    rc = ws_reserve(s, (in_place ? 0 : vlen) + (n == 0 ? klen : 0), n == 0,
                    diag);
    if (rc < 0) {
        goto out;
    }
    if (n != 0) {
        ws_node *node = &s->nodes[n];
        s->ws_enc_bytes -= op_bytes(node->kind, node->key_len, node->val_len);
        if (!in_place) {
            node->val_off = s->arena_len;
            s->arena_len += vlen;
        }
        arena_copy(s, node->val_off, val, voff, vlen);
        node->val_len = (uint32_t)vlen;
        node->kind = kind;
    } else {
        n = s->nnodes++;
        ws_node *node = &s->nodes[n];
        memset(node, 0, sizeof(*node));
        node->key_off = s->arena_len;
        arena_copy(s, node->key_off, key, koff, klen);
        node->val_off = s->arena_len + klen;
        arena_copy(s, node->val_off, val, voff, vlen);
        s->arena_len += klen + vlen;
        node->key_len = (uint32_t)klen;
        node->val_len = (uint32_t)vlen;
        node->kind = kind;
        s->prio_state += 0x9e3779b97f4a7c15ull; /* splitmix64 */
        uint64_t z = s->prio_state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        node->prio = (uint32_t)(z ^ (z >> 31));
        s->root = ws_insert(s, s->root, n);
    }
    s->ws_enc_bytes += op_bytes(kind, klen, vlen);
#ifdef KEEL_DEBUG
    KEEL_ASSERT(store_invariants_ok(s));
#endif
out:
    return rc;
}

static void ws_reset(keel__store *s)
{
    s->ws_open = 0;
    s->root = 0;
    s->nnodes = 1;
    s->arena_len = 0;
    s->ws_enc_bytes = 4;
}

int keel__store_ws_begin(keel__store *s, keel_diag *diag)
{
    int rc = check_failed(s, diag);
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
    return s->ws_open ? (size_t)s->nnodes - 1 : 0;
}

size_t keel__store_ws_encode_bound(const keel__store *s)
{
    KEEL_ASSERT(s->ws_open);
    return s->ws_enc_bytes;
}

/* In key order (ST5). */
static uint8_t *encode_walk(const keel__store *s, uint32_t t, uint8_t *p)
{
    if (t != 0) {
        const ws_node *n = &s->nodes[t];
        p = encode_walk(s, n->left, p);
        *p++ = n->kind;
        keel__put_u32(p, n->key_len);
        memcpy(p + 4, s->arena + n->key_off, n->key_len);
        p += 4 + n->key_len;
        if (n->kind == KEEL__STORE_PUT) {
            keel__put_u32(p, n->val_len);
            if (n->val_len > 0) {
                memcpy(p + 4, s->arena + n->val_off, n->val_len);
            }
            p += 4 + n->val_len;
        }
        p = encode_walk(s, n->right, p);
    }
    return p;
}

int keel__store_ws_encode(const keel__store *s, uint8_t *buf, size_t cap,
                          size_t *len, keel_diag *diag)
{
    int rc = check_failed(s, diag);
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
    keel__put_u32(buf, s->nnodes - 1);
    uint8_t *end = encode_walk(s, s->root, buf + 4);
    KEEL_ASSERT((size_t)(end - buf) == s->ws_enc_bytes);
out:
    return rc;
}

/* ---------------------------------------------------------------------
 * Applying write-sets to the transaction.
 */

/* One op into the transaction. @return an LMDB code. */
static int apply_op(keel__store *s, uint8_t kind, const uint8_t *key,
                    size_t klen, const uint8_t *val, size_t vlen)
{
    int mrc;
    if (kind == KEEL__STORE_PUT) {
        mrc = put_checked(s, s->data_dbi, key, klen, val, vlen);
        s->pending_bytes += klen + vlen + KEEL__STORE_CHECKSUM_BYTES;
    } else {
        MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
        mrc = mdb_del(s->txn, s->data_dbi, &k, NULL);
        if (mrc == MDB_NOTFOUND) {
            mrc = MDB_SUCCESS;
        }
        s->pending_bytes += klen;
    }
    return mrc;
}

static int apply_walk(keel__store *s, uint32_t t)
{
    int mrc = MDB_SUCCESS;
    if (t != 0) {
        const ws_node *n = &s->nodes[t];
        uint32_t right = n->right;
        mrc = apply_walk(s, n->left);
        if (mrc == MDB_SUCCESS) {
            mrc = apply_op(s, n->kind, s->arena + n->key_off, n->key_len,
                           s->arena + n->val_off, n->val_len);
        }
        if (mrc == MDB_SUCCESS) {
            mrc = apply_walk(s, right);
        }
    }
    return mrc;
}

int keel__store_ws_apply(keel__store *s, uint64_t lsn, keel_diag *diag)
{
    int rc = check_failed(s, diag);
    KEEL_ASSERT(s->ws_open);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(lsn > s->applied_lsn); /* ST7 */
    int mrc = apply_walk(s, s->root);
    if (mrc != MDB_SUCCESS) {
        /* ST6: the transaction may now hold part of this write-set. */
        rc = set_failed(s, lmdb_error(s, mrc, "applying a write-set", diag),
                        diag);
        goto out;
    }
    s->applied_lsn = lsn;
out:
    ws_reset(s);
    return rc;
}

typedef struct enc_op {
    uint8_t kind;
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *val;
    uint32_t val_len;
} enc_op;

/* Decode the op at *off of an encoded write-set, checking every length
 * against the bytes left before reading through it (ST5, ST8). */
static int decode_op(const uint8_t *p, size_t len, size_t *off, enc_op *op,
                     keel_diag *diag)
{
    int rc = KEEL_OK;
    size_t o = *off;
    if (len - o < OP_HEAD_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset %zu: op header cut short (%zu bytes "
                        "left, expected at least %u)",
                        o, len - o, OP_HEAD_BYTES);
        goto out;
    }
    op->kind = p[o];
    if (op->kind != KEEL__STORE_PUT && op->kind != KEEL__STORE_DELETE) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset %zu: bad op kind %u, expected 1 "
                        "(put) or 2 (delete)",
                        o, op->kind);
        goto out;
    }
    op->key_len = keel__get_u32(p + o + 1);
    if (op->key_len == 0 || op->key_len > KEEL__STORE_MAX_KEY_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset %zu: key length %" PRIu32
                        " outside 1..%u",
                        o + 1, op->key_len, KEEL__STORE_MAX_KEY_BYTES);
        goto out;
    }
    if (op->key_len > len - o - OP_HEAD_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset %zu: key length %" PRIu32
                        " past end of payload (%zu bytes)",
                        o + 1, op->key_len, len);
        goto out;
    }
    op->key = p + o + OP_HEAD_BYTES;
    o += OP_HEAD_BYTES + op->key_len;
    op->val = NULL;
    op->val_len = 0;
    if (op->kind == KEEL__STORE_PUT) {
        if (len - o < 4) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "payload offset %zu: value length cut short "
                            "(%zu bytes left, expected 4)",
                            o, len - o);
            goto out;
        }
        op->val_len = keel__get_u32(p + o);
        if (op->val_len > KEEL__STORE_MAX_VALUE_BYTES) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "payload offset %zu: value length %" PRIu32
                            " over the limit of %u",
                            o, op->val_len, KEEL__STORE_MAX_VALUE_BYTES);
            goto out;
        }
        if (op->val_len > len - o - 4) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "payload offset %zu: value length %" PRIu32
                            " past end of payload (%zu bytes)",
                            o, op->val_len, len);
            goto out;
        }
        op->val = p + o + 4;
        o += 4 + op->val_len;
    }
    *off = o;
out:
    return rc;
}

/* ST5: the whole payload, before anything is applied. */
static int validate_encoded(const uint8_t *p, size_t len, uint32_t *count,
                            keel_diag *diag)
{
    int rc = KEEL_OK;
    if (len < 4) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset 0: op count cut short (payload is "
                        "%zu bytes, expected at least 4)",
                        len);
        goto out;
    }
    *count = keel__get_u32(p);
    /* A lying count cannot make us loop past what the bytes can hold. */
    if (*count > (len - 4) / OP_MIN_BYTES) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset 0: op count %" PRIu32
                        " cannot fit in %zu bytes",
                        *count, len);
        goto out;
    }
    size_t off = 4;
    enc_op prev = {0};
    for (uint32_t i = 0; i < *count; i++) {
        size_t at = off;
        enc_op op = {0};
        rc = decode_op(p, len, &off, &op, diag);
        if (rc < 0) {
            goto out;
        }
        if (i > 0 && keycmp(prev.key, prev.key_len, op.key, op.key_len) >= 0) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "payload offset %zu: key not after the previous "
                            "key (expected strictly ascending keys)",
                            at);
            goto out;
        }
        prev = op;
    }
    if (off != len) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "payload offset %zu: %zu bytes after the last op, "
                        "expected none",
                        off, len - off);
    }
out:
    return rc;
}

int keel__store_apply_encoded(keel__store *s, uint64_t lsn, const void *payload,
                              size_t len, keel_diag *diag)
{
    uint32_t count = 0;
    int rc = check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    KEEL_ASSERT(!s->ws_open);
    KEEL_ASSERT(lsn > s->applied_lsn); /* ST7 */
    const uint8_t *p = payload;
    rc = validate_encoded(p, len, &count, diag);
    if (rc < 0) {
        goto out;
    }
    size_t off = 4;
    for (uint32_t i = 0; i < count; i++) {
        enc_op op = {0};
        rc = decode_op(p, len, &off, &op, diag);
        KEEL_ASSERT(rc == KEEL_OK); /* validated above */
        int mrc = apply_op(s, op.kind, op.key, op.key_len, op.val, op.val_len);
        if (mrc != MDB_SUCCESS) {
            rc = set_failed(
                s, lmdb_error(s, mrc, "applying an encoded write-set", diag),
                diag);
            goto out;
        }
    }
    s->applied_lsn = lsn;
out:
    return rc;
}

/* ---------------------------------------------------------------------
 * Reads.
 */

int keel__store_get(keel__store *s, const void *key, size_t key_len,
                    keel_bytes *value, keel_diag *diag)
{
    int rc = check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    if (key_len == 0 || key_len > KEEL__STORE_MAX_KEY_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL, "get: key length %zu outside 1..%u",
                        key_len, KEEL__STORE_MAX_KEY_BYTES);
        goto out;
    }
    uint32_t n = s->ws_open ? ws_find(s, key, key_len) : 0;
    if (n != 0) { /* ST4 */
        if (s->nodes[n].kind == KEEL__STORE_PUT) {
            value->ptr = s->arena + s->nodes[n].val_off;
            value->len = s->nodes[n].val_len;
            rc = 1;
        }
        goto out;
    }
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val d;
    int mrc = mdb_get(s->txn, s->data_dbi, &k, &d);
    if (mrc == MDB_NOTFOUND) {
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, "get", diag);
        goto out;
    }
    rc = verify(s, "key", key, key_len, &d, value, diag);
    if (rc == KEEL_OK) {
        rc = 1;
    }
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
            keycmp(k->mv_data, k->mv_size, t, tlen) == 0) {
            mrc = mdb_cursor_get(cur, k, d, MDB_NEXT);
        }
    }
    return mrc;
}

/*
 * The smallest visible key > t (strict) or >= t that starts with prefix:
 * the write-set's candidate and the cursor's merged, the write-set winning
 * ties, tombstones skipped along with the entry they hide (ST4).
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
    uint32_t wn = ws_lower(s, t, tlen, strict);
    for (;;) {
        if (mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND) {
            rc = lmdb_error(s, mrc, "next key", diag);
            break;
        }
        int lhave = mrc == MDB_SUCCESS;
        if (!lhave && wn == 0) {
            break;
        }
        const uint8_t *wk = wn != 0 ? node_key(s, wn) : NULL;
        size_t wlen = wn != 0 ? s->nodes[wn].key_len : 0;
        int c = !lhave    ? 1
                : wn == 0 ? -1
                          : keycmp(lk.mv_data, lk.mv_size, wk, wlen);
        if (c < 0) {
            if (has_prefix(lk.mv_data, lk.mv_size, prefix, plen)) {
                keel_bytes v;
                rc = verify(s, "key", lk.mv_data, lk.mv_size, &ld, &v, diag);
                if (rc == KEEL_OK) {
                    key->ptr = lk.mv_data;
                    key->len = lk.mv_size;
                    rc = 1;
                }
            }
            break;
        }
        if (!has_prefix(wk, wlen, prefix, plen)) {
            break;
        }
        if (s->nodes[wn].kind == KEEL__STORE_PUT) {
            key->ptr = wk;
            key->len = wlen;
            rc = 1;
            break;
        }
        /* A tombstone: step past it and past the entry it hides. */
        if (c == 0) {
            mrc = mdb_cursor_get(cur, &lk, &ld, MDB_NEXT);
        }
        wn = ws_lower(s, wk, wlen, 1);
    }
    return rc;
}

int keel__store_next_key(keel__store *s, const void *after, size_t after_len,
                         const void *prefix, size_t prefix_len, keel_bytes *key,
                         keel_diag *diag)
{
    MDB_cursor *cur = NULL;
    int rc = check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    int mrc = mdb_cursor_open(s->txn, s->data_dbi, &cur);
    if (mrc != MDB_SUCCESS) {
        cur = NULL;
        rc = lmdb_error(s, mrc, "cursor open", diag);
        goto out;
    }
    /* Keys with the prefix are a contiguous range starting at the prefix
     * itself: if after sorts before it, start there instead. */
    if (prefix_len > 0 && keycmp(after, after_len, prefix, prefix_len) < 0) {
        rc = merged_next(s, cur, prefix, prefix_len, 0, prefix, prefix_len, key,
                         diag);
    } else {
        rc = merged_next(s, cur, after, after_len, 1, prefix, prefix_len, key,
                         diag);
    }
out:
    if (cur != NULL) {
        mdb_cursor_close(cur);
    }
    return rc;
}

int keel__store_count_prefix(keel__store *s, const void *prefix,
                             size_t prefix_len, uint64_t *count,
                             keel_diag *diag)
{
    MDB_cursor *cur = NULL;
    uint64_t n = 0;
    int rc = check_failed(s, diag);
    if (rc < 0) {
        goto out;
    }
    int mrc = mdb_cursor_open(s->txn, s->data_dbi, &cur);
    if (mrc != MDB_SUCCESS) {
        cur = NULL;
        rc = lmdb_error(s, mrc, "cursor open", diag);
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
    if (cur != NULL) {
        mdb_cursor_close(cur);
    }
    return rc;
}

/* ---------------------------------------------------------------------
 * Meta table, checkpoints, open and close.
 */

/* Read meta value name, exactly want bytes, checksum checked (ST3). */
static int meta_get(keel__store *s, const char *name, uint8_t *out, size_t want,
                    keel_diag *diag)
{
    int rc = KEEL_OK;
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val d;
    int mrc = mdb_get(s->txn, s->meta_dbi, &k, &d);
    if (mrc == MDB_NOTFOUND) {
        rc = keel__diag(diag, KEEL_ECORRUPT, DATA_FILE ": meta \"%s\" missing",
                        name);
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, "reading meta", diag);
        goto out;
    }
    keel_bytes v;
    rc = verify(s, "meta", (const uint8_t *)name, k.mv_size, &d, &v, diag);
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

static int meta_put_u64(keel__store *s, const char *name, uint64_t v)
{
    uint8_t b[8];
    keel__put_u64(b, v);
    return put_checked(s, s->meta_dbi, (const uint8_t *)name, strlen(name), b,
                       sizeof(b));
}

static int begin_txn(keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_txn_begin(s->env, NULL, 0, &s->txn);
    if (mrc != MDB_SUCCESS) {
        s->txn = NULL;
        rc = lmdb_error(s, mrc, "begin write transaction", diag);
    }
    return rc;
}

/* Commit txn with LMDB's full sync (ST1); the handle is gone either way. */
static int commit_txn(keel__store *s, keel_diag *diag)
{
    int rc = KEEL_OK;
    int mrc = mdb_txn_commit(s->txn);
    s->txn = NULL;
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, "commit", diag);
    }
    return rc;
}

int keel__store_checkpoint(keel__store *s, keel_diag *diag)
{
    int rc = check_failed(s, diag);
    KEEL_ASSERT(!s->ws_open);
    if (rc < 0 || s->applied_lsn == s->ckpt_lsn) {
        goto out;
    }
    int mrc = meta_put_u64(s, "applied_lsn", s->applied_lsn); /* ST2 */
    if (mrc != MDB_SUCCESS) {
        rc = set_failed(s, lmdb_error(s, mrc, "checkpoint", diag), diag);
        goto out;
    }
    rc = commit_txn(s, diag);
    if (rc == KEEL_OK) {
        s->ckpt_lsn = s->applied_lsn;
        s->pending_bytes = 0;
        rc = begin_txn(s, diag);
    }
    if (rc < 0) {
        rc = set_failed(s, rc, diag); /* ST6: no transaction to write to */
    }
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
        mrc = put_checked(s, s->meta_dbi, (const uint8_t *)"format", 6, b, 4);
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
        mrc = meta_put_u64(s, "kernel_id", s->kernel_id);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = meta_put_u64(s, "applied_lsn", 0);
    }
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, what, diag);
        goto out;
    }
    rc = commit_txn(s, diag);
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
    rc = begin_txn(s, diag);
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
        rc = lmdb_error(s, mrc, "open table \"data\"", diag);
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
        rc = lmdb_error(s, mrc, "open table \"meta\"", diag);
        goto out;
    }
    MDB_dbi main_dbi;
    MDB_stat st;
    mrc = mdb_dbi_open(s->txn, NULL, 0, &main_dbi);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_stat(s->txn, main_dbi, &st);
    }
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, "stat", diag);
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
    o->create = 1;
}

/* "dir/name" into a malloc'd string, or NULL when out of memory. */
static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

/* Create dir if allowed and absent (its name synced into the parent), and
 * refuse to create a store when not allowed. */
static int prepare_dir(keel__store *s, int create, keel_diag *diag)
{
    int rc = KEEL_OK;
    char *parent = NULL;
    char *file = NULL;
    if (create && mkdir(s->dir, 0755) == 0) {
        parent = path_join(s->dir, "..");
        rc = parent != NULL ? s->io->fsync_dir(s->io, parent) : KEEL_ENOMEM;
        if (rc < 0) {
            keel__diag(diag, rc, "fsync parent of %s: %s", s->dir,
                       keel_strerror(rc));
            goto out;
        }
    }
    file = path_join(s->dir, DATA_FILE);
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
    ws_reset(s);
    s->io = o.io != NULL ? o.io : keel__io_posix();
    s->dir = strdup(dir);
    s->hash = XXH3_createState();
    s->nodes = malloc(16 * sizeof(*s->nodes));
    s->nodes_cap = 16;
    if (s->dir == NULL || s->hash == NULL || s->nodes == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    if (o.map_bytes == 0) {
        rc = keel__diag(diag, KEEL_EINVAL, "store map size 0");
        goto out;
    }
    rc = prepare_dir(s, o.create, diag);
    if (rc < 0) {
        goto out;
    }
    int mrc = mdb_env_create(&s->env);
    if (mrc != MDB_SUCCESS) {
        s->env = NULL;
        rc = lmdb_error(s, mrc, "create environment", diag);
        goto out;
    }
    mrc = mdb_env_set_mapsize(s->env, (size_t)o.map_bytes);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_env_set_maxdbs(s->env, 2);
    }
    if (mrc == MDB_SUCCESS) {
        /* Flags 0: fully synced commits; see store.h for why. */
        mrc = mdb_env_open(s->env, dir, 0, 0644);
    }
    if (mrc != MDB_SUCCESS) {
        rc = lmdb_error(s, mrc, "open environment", diag);
        goto out;
    }
    if (mdb_env_get_maxkeysize(s->env) < (int)KEEL__STORE_MAX_KEY_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "LMDB built with a %d-byte key limit, keel needs %u",
                        mdb_env_get_maxkeysize(s->env),
                        KEEL__STORE_MAX_KEY_BYTES);
        goto out;
    }
    rc = begin_txn(s, diag);
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
        if (s->txn != NULL) {
            mdb_txn_abort(s->txn); /* ST1: uncheckpointed work is dropped */
        }
        if (s->env != NULL) {
            mdb_env_close(s->env);
        }
        XXH3_freeState(s->hash);
        free(s->nodes);
        free(s->arena);
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
    return s->pending_bytes;
}

int keel__store_failed(const keel__store *s)
{
    return s->failed;
}
