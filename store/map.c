/*
 * store/map.c — kv_map (store/map.h): a key-ordered map of byte-string
 * keys to puts and tombstones, the structure of both the store's
 * write-set and its overlay.
 *
 * The write-set and the overlay are the same structure, a kv_map: a treap
 * over an index-addressed node array, keys and values copied into one byte
 * arena. A rewrite of a key reuses its value's bytes when the new value
 * fits the space it had; otherwise the old bytes stay unused in the arena
 * until the map is reset (the write-set at every crank, the overlay at
 * every checkpoint), which keel__store_pending_bytes() counts. Priorities
 * come from a PRNG, not from the keys, so keys chosen by a vat cannot
 * unbalance either treap. The overlay, which holds tens of thousands of
 * keys between checkpoints, adds two things: a hash index (open
 * addressing) for the point lookups of every get and every merged op,
 * leaving the treap to ordered scans and the checkpoint; and a free list
 * of dropped nodes, whose key and value space a new key reuses where it
 * fits. The hash (XXH3 of the key) only places keys in the index; keys
 * are always compared in full, so colliding keys cost probes, never a
 * wrong answer. Its seed, like the treaps' PRNG, is random for each open,
 * so that a vat cannot choose keys offline that pile into one probe run.
 *
 * Invariants (checked by keel__map_ok() and keel__map_index_ok() in
 * KEEL_DEBUG builds):
 *   MP1 The treap's in-order walk gives strictly ascending keys
 *       (keel__keycmp, LMDB's order), and a parent's priority is >= its
 *       children's.
 *   MP2 Every node is in the tree or on the free list, never both; every
 *       key and value lies inside the arena, within its node's capacity.
 *   MP3 An indexed map's index holds exactly the tree's nodes, each where
 *       a probe for its key finds it, and is at most half full; keys are
 *       compared in full, so a hash collision costs a probe, never a
 *       wrong answer.
 *   MP4 A failed keel__map_reserve() or keel__map_set() leaves the map as
 *       it was (KEEL_ENOMEM, KEEL_ETOOBIG).
 */
#include "store/map.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "common/keys.h"
#include "store/writeset_format.h"

int keel__map_cmp(const kv_map *m, const uint8_t *k, size_t klen, uint32_t n)
{
    return keel__keycmp(k, klen, keel__map_key(m, n), m->nodes[n].key_len);
}

static uint32_t key_hash(const kv_map *m, const void *k, size_t klen)
{
    return (uint32_t)XXH3_64bits_withSeed(k, klen, m->hash_seed);
}

/* The index slot that holds node n, or for a key of hash h not in the
 * index, the empty slot where probing for it stops (n == 0). */
static size_t slot_of(const kv_map *m, const uint8_t *k, size_t klen,
                      uint32_t h)
{
    size_t mask = m->slots_cap - 1;
    size_t i = h & mask;
    for (;;) {
        uint32_t n = m->slots[i];
        if (n == 0 || (m->nodes[n].hash == h && m->nodes[n].key_len == klen &&
                       memcmp(keel__map_key(m, n), k, klen) == 0)) {
            break;
        }
        i = (i + 1) & mask;
    }
    return i;
}

uint32_t keel__map_find(const kv_map *m, const uint8_t *k, size_t klen)
{
    uint32_t t = m->root;
    if (m->indexed) {
        t = t != 0 ? m->slots[slot_of(m, k, klen, key_hash(m, k, klen))] : 0;
    } else {
        while (t != 0) {
            int c = keel__map_cmp(m, k, klen, t);
            if (c == 0) {
                break;
            }
            t = c < 0 ? m->nodes[t].left : m->nodes[t].right;
        }
    }
    return t;
}

/* Index node n (its hash set, its key absent from the index). */
static void index_add(kv_map *m, uint32_t n)
{
    size_t mask = m->slots_cap - 1;
    size_t i = m->nodes[n].hash & mask;
    while (m->slots[i] != 0) {
        i = (i + 1) & mask;
    }
    m->slots[i] = n;
}

/* Take node n out of the index, shifting back the entries after it that
 * would otherwise no longer be found (no deletion markers). */
static void index_remove(kv_map *m, uint32_t n)
{
    size_t mask = m->slots_cap - 1;
    size_t i =
        slot_of(m, keel__map_key(m, n), m->nodes[n].key_len, m->nodes[n].hash);
    KEEL_ASSERT(m->slots[i] == n);
    m->slots[i] = 0;
    for (size_t j = (i + 1) & mask; m->slots[j] != 0; j = (j + 1) & mask) {
        size_t home = m->nodes[m->slots[j]].hash & mask;
        /* The entry at j stays if its home lies cyclically in (i, j]. */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            m->slots[j] = 0;
            i = j;
        }
    }
}

/* Make the index hold live + new_nodes keys at most half full. */
static int index_reserve(kv_map *m, size_t new_nodes, keel_diag *diag)
{
    int rc = KEEL_OK;
    uint64_t want = 2 * ((uint64_t)m->nnodes - 1 - m->nfree + new_nodes);
    if (want > m->slots_cap) {
        uint64_t cap = m->slots_cap > 0 ? m->slots_cap : 64;
        while (cap < want) {
            cap *= 2;
        }
        uint32_t *slots = cap <= SIZE_MAX / sizeof(*slots)
                              ? calloc(cap, sizeof(*slots))
                              : NULL;
        if (slots == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", m->name);
            goto out;
        }
        free(m->slots);
        m->slots = slots;
        m->slots_cap = (size_t)cap;
        for (uint32_t n = 1; n < m->nnodes; n++) {
            if (m->nodes[n].kind != 0) {
                index_add(m, n);
            }
        }
    }
out:
    return rc;
}

/* The node with the smallest key > k (strict) or >= k; 0 if none. */
uint32_t keel__map_lower(const kv_map *m, const uint8_t *k, size_t klen,
                         int strict)
{
    uint32_t best = 0;
    uint32_t t = m->root;
    while (t != 0) {
        int c = keel__map_cmp(m, k, klen, t);
        if (c < 0 || (c == 0 && !strict)) {
            best = t;
            t = m->nodes[t].left;
        } else {
            t = m->nodes[t].right;
        }
    }
    return best;
}

/* Insert node n (not yet linked) under t; @return the new subtree root. */
static uint32_t map_insert(kv_map *m, uint32_t t, uint32_t n)
{
    uint32_t r = n;
    if (t != 0) {
        kv_node *nodes = m->nodes;
        r = t;
        if (keel__map_cmp(m, keel__map_key(m, n), nodes[n].key_len, t) < 0) {
            uint32_t l = map_insert(m, nodes[t].left, n);
            nodes[t].left = l;
            if (nodes[l].prio > nodes[t].prio) {
                nodes[t].left = nodes[l].right;
                nodes[l].right = t;
                r = l;
            }
        } else {
            uint32_t rt = map_insert(m, nodes[t].right, n);
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

/* If p points into m's arena, its offset there (so it survives a realloc);
 * else SIZE_MAX. Callers may pass bytes the store lent them. */
static size_t arena_offset(const kv_map *m, const void *p)
{
    uintptr_t a = (uintptr_t)m->arena;
    uintptr_t x = (uintptr_t)p;
    return (m->arena != NULL && x >= a && x < a + m->arena_len)
               ? (size_t)(x - a)
               : SIZE_MAX;
}

/* Make room for need more arena bytes and new_nodes more nodes. */
int keel__map_reserve(kv_map *m, size_t need, size_t new_nodes, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (m->arena_cap - m->arena_len < need) {
        size_t cap = m->arena_cap > 0 ? m->arena_cap : 4096;
        while (cap - m->arena_len < need) {
            cap *= 2;
        }
        uint8_t *a = realloc(m->arena, cap);
        if (a == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", m->name);
            goto out;
        }
        m->arena = a;
        m->arena_cap = cap;
    }
    /* nodes_cap may be 0 (nothing allocated yet) while nnodes is 1. */
    if ((uint64_t)m->nnodes + new_nodes > m->nodes_cap) {
        if (new_nodes > UINT32_MAX - m->nnodes) {
            rc = keel__diag(diag, KEEL_ETOOBIG, "%s: too many ops", m->name);
            goto out;
        }
        uint64_t cap = m->nodes_cap > 0 ? m->nodes_cap : 16;
        while (cap < (uint64_t)m->nnodes + new_nodes) {
            cap *= 2;
        }
        if (cap > UINT32_MAX) {
            cap = UINT32_MAX;
        }
        kv_node *n = realloc(m->nodes, (size_t)cap * sizeof(*n));
        if (n == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", m->name);
            goto out;
        }
        m->nodes = n;
        m->nodes_cap = (uint32_t)cap;
    }
    if (m->indexed && new_nodes > 0) {
        rc = index_reserve(m, new_nodes, diag);
    }
out:
    return rc;
}

/* Copy len bytes from p (possibly inside m's arena, at offset poff) to the
 * arena at offset dst. */
static void arena_copy(kv_map *m, size_t dst, const void *p, size_t poff,
                       size_t len)
{
    if (len > 0) {
        memmove(m->arena + dst, poff != SIZE_MAX ? m->arena + poff : p, len);
    }
}

/*
 * Set key to a put of val or (kind DELETE, vlen 0) a tombstone. n is
 * keel__map_find(m, key) (0: a new key). key and val may point into m's arena.
 * @param[out] node_out  optional: the key's node on success.
 * @return KEEL_OK, or KEEL_ENOMEM / KEEL_ETOOBIG with m unchanged.
 */
int keel__map_set(kv_map *m, uint32_t n, uint8_t kind, const void *key,
                  size_t klen, const void *val, size_t vlen, uint32_t *node_out,
                  keel_diag *diag)
{
    size_t koff = arena_offset(m, key);
    size_t voff = vlen > 0 ? arena_offset(m, val) : SIZE_MAX;
    /* A new key takes a free node if there is one. Bytes that fit the
     * node's old space reuse it, so a key rewritten many times (within a
     * crank, or across the cranks between checkpoints), or a short-lived
     * key replaced by one of its size, does not grow the arena. */
    uint32_t slot = n != 0 ? n : m->free_head;
    int key_fits = n != 0 || (slot != 0 && klen <= m->nodes[slot].key_cap);
    int val_fits = slot != 0 && vlen <= m->nodes[slot].val_cap;
    int rc = keel__map_reserve(m, (key_fits ? 0 : klen) + (val_fits ? 0 : vlen),
                               n == 0, diag);
    if (rc < 0) {
        goto out;
    }
    if (slot == 0) {
        slot = m->nnodes++;
        memset(&m->nodes[slot], 0, sizeof(m->nodes[slot]));
    } else if (n == 0) {
        m->free_head = m->nodes[slot].left;
        m->nfree--;
    }
    kv_node *node = &m->nodes[slot];
    if (!key_fits) {
        node->key_off = m->arena_len;
        node->key_cap = (uint32_t)klen;
        m->arena_len += klen;
    }
    if (!val_fits) {
        node->val_off = m->arena_len;
        node->val_cap = (uint32_t)vlen;
        m->arena_len += vlen;
    }
    if (n == 0) {
        arena_copy(m, node->key_off, key, koff, klen);
        node->key_len = (uint32_t)klen;
    }
    arena_copy(m, node->val_off, val, voff, vlen);
    node->val_len = (uint32_t)vlen;
    node->kind = kind;
    if (n == 0) {
        node->left = 0;
        node->right = 0;
        node->on_disk = 0;
        if (m->indexed) {
            node->hash = key_hash(m, keel__map_key(m, slot), klen);
            index_add(m, slot);
        }
        m->prio_state += 0x9e3779b97f4a7c15ull; /* splitmix64 */
        uint64_t z = m->prio_state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        node->prio = (uint32_t)(z ^ (z >> 31));
        m->root = map_insert(m, m->root, slot);
    }
    if (node_out != NULL) {
        *node_out = slot;
    }
out:
    return rc;
}

/* Join treaps a and b, every key in a below every key in b. */
static uint32_t map_join(kv_map *m, uint32_t a, uint32_t b)
{
    uint32_t r = a != 0 ? a : b;
    if (a != 0 && b != 0) {
        if (m->nodes[a].prio >= m->nodes[b].prio) {
            m->nodes[a].right = map_join(m, m->nodes[a].right, b);
        } else {
            m->nodes[b].left = map_join(m, a, m->nodes[b].left);
            r = b;
        }
    }
    return r;
}

/* Unlink node n from the subtree t that holds it; @return the new root. */
static uint32_t map_unlink(kv_map *m, uint32_t t, uint32_t n)
{
    uint32_t r = t;
    KEEL_ASSERT(t != 0);
    if (t == n) {
        r = map_join(m, m->nodes[n].left, m->nodes[n].right);
    } else if (keel__map_cmp(m, keel__map_key(m, n), m->nodes[n].key_len, t) <
               0) {
        m->nodes[t].left = map_unlink(m, m->nodes[t].left, n);
    } else {
        m->nodes[t].right = map_unlink(m, m->nodes[t].right, n);
    }
    return r;
}

/* Take node n out of m, onto the free list with its arena space. */
void keel__map_remove(kv_map *m, uint32_t n)
{
    if (m->indexed) {
        index_remove(m, n);
    }
    m->nodes[n].kind = 0;
    m->root = map_unlink(m, m->root, n);
    m->nodes[n].left = m->free_head;
    m->free_head = n;
    m->nfree++;
}

/* Empty m, keeping its buffers for reuse. */
void keel__map_reset(kv_map *m)
{
    m->root = 0;
    m->nnodes = 1;
    m->free_head = 0;
    m->nfree = 0;
    m->arena_len = 0;
    if (m->slots_cap > 0) {
        memset(m->slots, 0, m->slots_cap * sizeof(*m->slots));
    }
}

void keel__map_free(kv_map *m)
{
    free(m->nodes);
    free(m->arena);
    free(m->slots);
}

#ifdef KEEL_DEBUG
/* KEEL_DEBUG checker for a kv_map's structure: keys in strictly ascending
 * in-order sequence, heap order of priorities, every key and value inside
 * the arena; counts the nodes and the encoded length of the ops. */
static int map_walk_ok(const kv_map *m, uint32_t t, uint32_t *prev,
                       size_t *count, size_t *bytes)
{
    int ok = 1;
    if (t != 0) {
        const kv_node *n = &m->nodes[t];
        ok = (n->left == 0 || m->nodes[n->left].prio <= n->prio) &&
             (n->right == 0 || m->nodes[n->right].prio <= n->prio) &&
             n->val_len <= n->val_cap &&
             n->key_off + n->key_len <= m->arena_len &&
             n->val_off + n->val_cap <= m->arena_len &&
             (n->kind == KEEL__STORE_PUT || n->val_len == 0) &&
             map_walk_ok(m, n->left, prev, count, bytes);
        ok = ok && n->key_off + n->key_cap <= m->arena_len &&
             n->key_len <= n->key_cap;
        ok =
            ok && (*prev == 0 || keel__map_cmp(m, keel__map_key(m, *prev),
                                               m->nodes[*prev].key_len, t) < 0);
        *prev = t;
        *count += 1;
        *bytes += keel__ws_op_bytes(n->kind, n->key_len, n->val_len);
        ok = ok && map_walk_ok(m, n->right, prev, count, bytes);
    }
    return ok;
}

/* The whole map checks out: every node is either in the tree or on the
 * free list; *enc_bytes is set to the encoded length of the tree's ops. */
int keel__map_ok(const kv_map *m, size_t *enc_bytes)
{
    uint32_t prev = 0;
    size_t count = 0;
    *enc_bytes = 4;
    uint32_t nfree = 0;
    for (uint32_t f = m->free_head; f != 0 && nfree < m->nnodes;
         f = m->nodes[f].left) {
        nfree++;
    }
    return map_walk_ok(m, m->root, &prev, &count, enc_bytes) &&
           nfree == m->nfree && count + 1 + nfree == m->nnodes;
}

/* An indexed map's index holds exactly its tree's nodes, each where a
 * lookup of its key finds it, and is at most half full. */
int keel__map_index_ok(const kv_map *m)
{
    size_t live = 0;
    size_t used = 0;
    int ok = 1;
    for (uint32_t n = 1; n < m->nnodes && ok; n++) {
        if (m->nodes[n].kind != 0) {
            live++;
            ok = m->nodes[n].hash ==
                     key_hash(m, keel__map_key(m, n), m->nodes[n].key_len) &&
                 keel__map_find(m, keel__map_key(m, n), m->nodes[n].key_len) ==
                     n;
        }
    }
    for (size_t i = 0; i < m->slots_cap; i++) {
        used += m->slots[i] != 0;
    }
    return ok && used == live && 2 * live <= m->slots_cap;
}

#endif
