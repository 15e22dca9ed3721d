/*
 * store/map.c — kv_map (store/map.h): a map of byte-string keys to puts
 * and tombstones, the structure of both the store's write-set and its
 * overlay.
 *
 * Entries are appended to a node array in the order their keys are first
 * set, keys and values copied into one byte arena; an open-addressing hash
 * index (linear probing, at most half full) finds a key's node, so the
 * point lookup behind every put, delete, get and merged op is one hash
 * and a short probe, whatever the map's size. A rewrite of a key reuses
 * its value's bytes when the new value fits the space it had; otherwise
 * the old bytes stay unused in the arena until the map is reset (the
 * write-set at every transaction, the overlay at every checkpoint), which
 * keel__store_pending_bytes() counts. The overlay, which holds tens of
 * thousands of keys between checkpoints and drops keys that lived and
 * died between two of them, also keeps a free list of removed nodes,
 * whose key and value space a new key reuses where it fits.
 *
 * Key order is needed only by scans (next_key, count_prefix), by the
 * encoder (ST5: ops in key order) and by the checkpoint (LMDB is written
 * in key order), so it is built lazily: keel__map_order() sorts the ids
 * of the nodes added since its last call (a bottom-up merge sort,
 * insertion sort for short runs) and merges them into the sorted id
 * array, after dropping the ids of removed nodes. A transaction that
 * never scans sorts its handful of keys once, at encode; an overlay that
 * is never scanned is sorted once, at its checkpoint. All the arrays have
 * room for nodes_cap ids, grown with the nodes, so ordering never
 * allocates and cannot fail.
 *
 * The hash (XXH3 of the key) only places keys in the index; keys are
 * always compared in full, so colliding keys cost probes, never a wrong
 * answer. Its seed is random for each open, so that a vat cannot choose
 * keys offline that pile into one probe run.
 *
 * Invariants (checked by keel__map_ok() and keel__map_index_ok() in
 * KEEL_DEBUG builds):
 *   MP1 After keel__map_order(), sorted[0 .. nsorted-1] holds every live
 *       node exactly once, in strictly ascending key order (keel__keycmp,
 *       LMDB's order), and pend[] is empty. Between calls, every live
 *       node is listed in sorted[] (order KV_SORTED) or in pend[] (order
 *       KV_PENDING), never both and never twice.
 *   MP2 Every node is live, free or retired, exactly one of them; nlive,
 *       nfree and nretired count them. Every key and value lies inside
 *       the arena, within its node's capacity.
 *   MP3 The index holds exactly the live nodes, each where a probe for
 *       its key finds it, and is at most half full; keys are compared in
 *       full, so a hash collision costs a probe, never a wrong answer.
 *   MP4 A failed keel__map_reserve() or keel__map_set() leaves the map as
 *       it was (KEEL_ENOMEM, KEEL_ETOOBIG). Nothing else allocates.
 *   MP5 A removed node that sorted[] still lists is retired, not free: it
 *       keeps its key, so sorted[] stays ordered, and is not reused until
 *       keel__map_order() drops it from sorted[] and frees it.
 *   MP6 A live node's pfx is its key's first 8 bytes, big-endian and
 *       zero-padded; keys whose pfx differ are ordered as their pfx are
 *       (a shorter key's padding is below the other's byte there, or
 *       equal to it), so only keys with equal pfx need a memcmp.
 */
#include "store/map.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/diag.h"
#include "common/keys.h"
#include "store/writeset_format.h"

/* Runs this short are insertion-sorted before merging. */
#define SORT_RUN 16u

uint32_t keel__map_hash(const kv_map *m, const void *k, size_t klen)
{
    return (uint32_t)XXH3_64bits_withSeed(k, klen, m->hash_seed);
}

int keel__map_cmp(const kv_map *m, const uint8_t *k, size_t klen, uint32_t n)
{
    return keel__keycmp(k, klen, keel__map_key(m, n), m->nodes[n].key_len);
}

/* The first 8 bytes of key k as a big-endian integer, zero-padded: two
 * keys whose prefixes differ compare as their prefixes do (MP6). */
static uint64_t key_pfx(const uint8_t *k, size_t klen)
{
    uint8_t b[8] = {0};
    const uint8_t *p = k;
    if (klen < 8) {
        memcpy(b, k, klen);
        p = b;
    }
    return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 |
           (uint64_t)p[3] << 32 | (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
           (uint64_t)p[6] << 8 | (uint64_t)p[7];
}

/* keel__keycmp of nodes a and b's keys. */
static int node_cmp(const kv_map *m, uint32_t a, uint32_t b)
{
    uint64_t pa = m->nodes[a].pfx;
    uint64_t pb = m->nodes[b].pfx;
    if (pa != pb) {
        return pa < pb ? -1 : 1;
    }
    return keel__keycmp(keel__map_key(m, a), m->nodes[a].key_len,
                        keel__map_key(m, b), m->nodes[b].key_len);
}

/* The index slot that holds key k's node, or for a key of hash h not in
 * the index, the empty slot where probing for it stops. */
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

uint32_t keel__map_find(const kv_map *m, const uint8_t *k, size_t klen,
                        uint32_t h)
{
    return m->nlive != 0 ? m->slots[slot_of(m, k, klen, h)] : 0;
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
    uint64_t want = 2 * ((uint64_t)m->nlive + new_nodes);
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

/* Sort ids a[0 .. n-1] by key; tmp has room for n ids. */
static void sort_ids(const kv_map *m, uint32_t *a, uint32_t *tmp, size_t n)
{
    for (size_t lo = 0; lo < n; lo += SORT_RUN) {
        size_t hi = n - lo < SORT_RUN ? n : lo + SORT_RUN;
        for (size_t i = lo + 1; i < hi; i++) {
            uint32_t x = a[i];
            size_t j = i;
            while (j > lo && node_cmp(m, a[j - 1], x) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
    }
    uint32_t *src = a;
    uint32_t *dst = tmp;
    for (size_t w = SORT_RUN; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = n - lo < w ? n : lo + w;
            size_t hi = n - mid < w ? n : mid + w;
            size_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                dst[o++] =
                    node_cmp(m, src[j], src[i]) < 0 ? src[j++] : src[i++];
            }
            while (i < mid) {
                dst[o++] = src[i++];
            }
            while (j < hi) {
                dst[o++] = src[j++];
            }
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) {
        memcpy(a, src, n * sizeof(*a));
    }
}

void keel__map_order(kv_map *m)
{
    kv_node *nodes = m->nodes;
    if (m->nretired > 0) { /* MP5: drop the removed, then free them */
        uint32_t j = 0;
        for (uint32_t i = 0; i < m->nsorted; i++) {
            uint32_t n = m->sorted[i];
            if (nodes[n].kind != 0) {
                m->sorted[j++] = n;
            } else {
                nodes[n].order = KV_UNLISTED;
            }
        }
        m->nsorted = j;
        while (m->retired_head != 0) {
            uint32_t n = m->retired_head;
            m->retired_head = nodes[n].next;
            nodes[n].next = m->free_head;
            m->free_head = n;
            m->nfree++;
        }
        m->nretired = 0;
    }
    if (m->npend == 0) {
        return;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < m->npend; i++) {
        uint32_t n = m->pend[i];
        if (nodes[n].kind != 0) { /* a node removed since is not listed */
            m->pend[k++] = n;
            nodes[n].order = KV_SORTED;
        } else {
            nodes[n].order = KV_UNLISTED;
        }
    }
    m->npend = 0;
    /* sorted[] has room for every live node: its free tail is scratch. */
    uint32_t ns = m->nsorted;
    KEEL_ASSERT((uint64_t)ns + k <= m->nodes_cap);
    sort_ids(m, m->pend, m->sorted + ns, k);
    /* Merge from the back, in place: sorted[0 .. ns+k-1]. */
    size_t i = ns;
    size_t j = k;
    size_t o = (size_t)ns + k;
    while (j > 0) {
        if (i > 0 && node_cmp(m, m->sorted[i - 1], m->pend[j - 1]) > 0) {
            m->sorted[--o] = m->sorted[--i];
        } else {
            m->sorted[--o] = m->pend[--j];
        }
    }
    m->nsorted = ns + k;
}

uint32_t keel__map_seek(const kv_map *m, const uint8_t *k, size_t klen,
                        int strict)
{
    KEEL_ASSERT(m->npend == 0 && m->nretired == 0);
    uint64_t pk = key_pfx(k, klen);
    uint32_t lo = 0;
    uint32_t hi = m->nsorted;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t pn = m->nodes[m->sorted[mid]].pfx;
        int c = pk != pn ? (pk < pn ? -1 : 1)
                         : keel__map_cmp(m, k, klen, m->sorted[mid]);
        if (c > 0 || (c == 0 && strict)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
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

/* Grow the node array and the two id arrays to cap entries. Each
 * realloc that succeeds is kept (a larger buffer is harmless); nodes_cap
 * changes only once all three have. */
static int grow_nodes(kv_map *m, uint64_t cap, keel_diag *diag)
{
    kv_node *n = realloc(m->nodes, (size_t)cap * sizeof(*n));
    if (n != NULL) {
        m->nodes = n;
    }
    uint32_t *s =
        n != NULL ? realloc(m->sorted, (size_t)cap * sizeof(*s)) : NULL;
    if (s != NULL) {
        m->sorted = s;
    }
    uint32_t *p = s != NULL ? realloc(m->pend, (size_t)cap * sizeof(*p)) : NULL;
    if (p == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "%s: out of memory", m->name);
    }
    m->pend = p;
    m->nodes_cap = (uint32_t)cap;
    return KEEL_OK;
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
    /* nodes_cap may be 0 (nothing allocated yet) while nnodes is 1. Free
     * nodes are reused first, so only the rest need new ones. */
    size_t fresh = new_nodes > m->nfree ? new_nodes - m->nfree : 0;
    if ((uint64_t)m->nnodes + fresh > m->nodes_cap) {
        if (fresh > UINT32_MAX - m->nnodes) {
            rc = keel__diag(diag, KEEL_ETOOBIG, "%s: too many ops", m->name);
            goto out;
        }
        uint64_t cap = m->nodes_cap > 0 ? m->nodes_cap : 16;
        while (cap < (uint64_t)m->nnodes + fresh) {
            cap *= 2;
        }
        if (cap > UINT32_MAX) {
            cap = UINT32_MAX;
        }
        rc = grow_nodes(m, cap, diag);
        if (rc < 0) {
            goto out;
        }
    }
    if (new_nodes > 0) {
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

int keel__map_set(kv_map *m, uint32_t n, uint8_t kind, const void *key,
                  size_t klen, uint32_t h, const void *val, size_t vlen,
                  uint32_t *node_out, keel_diag *diag)
{
    if (n != 0 && vlen <= m->nodes[n].val_cap) {
        /* A rewrite that fits: no room to make, nothing can move. */
        kv_node *node = &m->nodes[n];
        if (vlen > 0) {
            memmove(m->arena + node->val_off, val, vlen);
        }
        node->val_len = (uint32_t)vlen;
        node->kind = kind;
        if (node_out != NULL) {
            *node_out = n;
        }
        return KEEL_OK;
    }
    size_t koff = arena_offset(m, key);
    size_t voff = vlen > 0 ? arena_offset(m, val) : SIZE_MAX;
    /* A new key takes a free node if there is one. Bytes that fit the
     * node's old space reuse it, so a key rewritten many times (within a
     * transaction, or across the transactions between checkpoints), or a
     * short-lived key replaced by one of its size, does not grow the
     * arena. */
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
        m->free_head = m->nodes[slot].next;
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
        node->next = 0;
        node->on_disk = 0;
        node->hash = h;
        node->pfx = key_pfx(m->arena + node->key_off, klen);
        index_add(m, slot);
        m->nlive++;
        if (node->order == KV_UNLISTED) { /* MP1: listed once */
            node->order = KV_PENDING;
            m->pend[m->npend++] = slot;
        }
    }
    if (node_out != NULL) {
        *node_out = slot;
    }
out:
    return rc;
}

void keel__map_remove(kv_map *m, uint32_t n)
{
    kv_node *node = &m->nodes[n];
    index_remove(m, n);
    node->kind = 0;
    m->nlive--;
    if (node->order == KV_SORTED) { /* MP5 */
        node->next = m->retired_head;
        m->retired_head = n;
        m->nretired++;
    } else {
        node->next = m->free_head;
        m->free_head = n;
        m->nfree++;
    }
}

void keel__map_reset(kv_map *m)
{
    /* A small map in a large index (the write-set after one big
     * transaction) clears its own probe runs, not the whole index: a slot
     * holding a node lies in the run of full slots from its home on. */
    if (m->slots_cap > 0 && (size_t)m->nlive * 16 < m->slots_cap) {
        size_t mask = m->slots_cap - 1;
        for (uint32_t n = 1; n < m->nnodes; n++) {
            if (m->nodes[n].kind != 0) {
                for (size_t i = m->nodes[n].hash & mask; m->slots[i] != 0;
                     i = (i + 1) & mask) {
                    m->slots[i] = 0;
                }
            }
        }
    } else if (m->slots_cap > 0) {
        memset(m->slots, 0, m->slots_cap * sizeof(*m->slots));
    }
    m->nnodes = 1;
    m->nlive = 0;
    m->free_head = 0;
    m->nfree = 0;
    m->retired_head = 0;
    m->nretired = 0;
    m->nsorted = 0;
    m->npend = 0;
    m->arena_len = 0;
}

void keel__map_free(kv_map *m)
{
    free(m->nodes);
    free(m->sorted);
    free(m->pend);
    free(m->arena);
    free(m->slots);
}

#ifdef KEEL_DEBUG
/* Count the nodes of list head (free or retired), at most limit. */
static uint32_t list_len(const kv_map *m, uint32_t head, uint32_t limit,
                         int *dead)
{
    uint32_t c = 0;
    for (uint32_t f = head; f != 0 && c <= limit; f = m->nodes[f].next) {
        *dead = *dead && m->nodes[f].kind == 0;
        c++;
    }
    return c;
}

int keel__map_ok(const kv_map *m, size_t *enc_bytes)
{
    int ok = 1;
    uint32_t live = 0;
    uint32_t listed_sorted = 0;
    uint32_t listed_pend = 0;
    *enc_bytes = 4;
    for (uint32_t i = 1; i < m->nnodes && ok; i++) {
        const kv_node *n = &m->nodes[i];
        ok = n->order <= KV_SORTED;
        if (n->kind == 0) {
            continue;
        }
        live++;
        ok = ok && n->order != KV_UNLISTED && n->val_len <= n->val_cap &&
             n->key_len <= n->key_cap &&
             n->key_off + n->key_cap <= m->arena_len &&
             n->val_off + n->val_cap <= m->arena_len &&
             (n->kind == KEEL__STORE_PUT || n->val_len == 0) &&
             n->pfx == key_pfx(keel__map_key(m, i), n->key_len);
        *enc_bytes += keel__ws_op_bytes(n->kind, n->key_len, n->val_len);
    }
    for (uint32_t i = 0; i < m->nsorted && ok; i++) {
        uint32_t n = m->sorted[i];
        ok = n != 0 && n < m->nnodes && m->nodes[n].order == KV_SORTED;
        listed_sorted += ok && m->nodes[n].kind != 0;
        /* MP1/MP5: listed keys ascend, the retired ones' included. */
        ok = ok && (i == 0 || node_cmp(m, m->sorted[i - 1], n) < 0);
    }
    for (uint32_t i = 0; i < m->npend && ok; i++) {
        uint32_t n = m->pend[i];
        ok = n != 0 && n < m->nnodes && m->nodes[n].order == KV_PENDING;
        listed_pend += ok && m->nodes[n].kind != 0;
    }
    int dead = 1;
    uint32_t nfree = list_len(m, m->free_head, m->nnodes, &dead);
    uint32_t nret = list_len(m, m->retired_head, m->nnodes, &dead);
    return ok && dead && live == m->nlive && nfree == m->nfree &&
           nret == m->nretired && live + nfree + nret + 1 == m->nnodes &&
           listed_sorted + listed_pend == live;
}

int keel__map_index_ok(const kv_map *m)
{
    size_t used = 0;
    int ok = 1;
    for (uint32_t n = 1; n < m->nnodes && ok; n++) {
        if (m->nodes[n].kind != 0) {
            ok = m->nodes[n].hash == keel__map_hash(m, keel__map_key(m, n),
                                                    m->nodes[n].key_len) &&
                 keel__map_find(m, keel__map_key(m, n), m->nodes[n].key_len,
                                m->nodes[n].hash) == n;
        }
    }
    for (size_t i = 0; i < m->slots_cap; i++) {
        used += m->slots[i] != 0;
    }
    return ok && used == m->nlive && 2 * (size_t)m->nlive <= m->slots_cap;
}

#endif
