/*
 * store/map.h — (internal to store/) kv_map, the map of puts and
 * tombstones that the store's write-set and overlay both are: an append
 * log of entries (keys and values in one arena) with an open-addressing
 * hash index over the keys, and a key-ordered view built lazily, only
 * when a scan, an encode or a checkpoint asks for it (store/map.c,
 * invariants MP1..MP6). Keys are compared with keel__keycmp()
 * (common/keys.h: LMDB's order). Nothing here touches LMDB.
 *
 * Costs, n live keys:
 *   find, set, remove      O(1) expected (one hash, a probe run)
 *   keel__map_order()      nothing when no key was added or removed since
 *                          the last call; else O(k log k) key compares to
 *                          sort the k keys added since, plus an O(n) merge
 *                          (and O(n) to drop removed keys) moving 4-byte
 *                          ids. A scan after every new key of a large map
 *                          pays the O(n) each time; a checkpoint after no
 *                          scan sorts once, O(n log n).
 *   keel__map_seek()       O(log n) compares on the ordered view
 *   reset                  O(n) (or one memset of the index)
 * No call allocates except keel__map_reserve() (and keel__map_set(),
 * through it); buffers grow geometrically and are kept across resets.
 */
#ifndef KEEL_STORE_MAP_H
#define KEEL_STORE_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

/* kv_node.order: where a node stands in the ordered view. */
enum {
    KV_UNLISTED = 0, /* in neither list */
    KV_PENDING = 1,  /* in pend[]: added since the last keel__map_order() */
    KV_SORTED = 2,   /* in sorted[] */
};

typedef struct kv_node {
    uint64_t pfx;   /* the key's first 8 bytes, big-endian, zero-padded */
    size_t key_off; /* into the map's arena */
    size_t val_off;
    uint32_t key_len;
    uint32_t val_len;
    uint32_t key_cap; /* arena bytes at key_off / val_off this node may */
    uint32_t val_cap; /* reuse, for a new value or, once freed, a new key */
    uint32_t next;    /* free or retired list: the next node; 0 ends it */
    uint32_t hash;    /* keel__map_hash() of the key */
    uint8_t kind;     /* KEEL__STORE_PUT or KEEL__STORE_DELETE; 0: free */
    uint8_t on_disk;  /* overlay: 1 once the key is known to be in the
                         transaction, which holds until the checkpoint */
    uint8_t order;    /* KV_UNLISTED, KV_PENDING or KV_SORTED */
} kv_node;

/* A map of puts and tombstones: the write-set or the overlay. */
typedef struct kv_map {
    const char *name; /* "write-set" or "overlay", for messages */
    kv_node *nodes;   /* nodes[1 .. nnodes-1], in the order first set */
    uint32_t nnodes;
    uint32_t nodes_cap;
    uint32_t nlive;     /* nodes holding a key (kind != 0) */
    uint32_t free_head; /* removed nodes, for reuse (the overlay only) */
    uint32_t nfree;
    uint32_t retired_head; /* removed nodes still in sorted[] (MP5) */
    uint32_t nretired;
    /* The hash index: open addressing with linear probing, at most half
     * full; 0 is empty. */
    uint32_t *slots;
    size_t slots_cap; /* 0 or a power of two */
    /* The ordered view: sorted[0 .. nsorted-1] are node ids in ascending
     * key order as of the last keel__map_order(); pend[0 .. npend-1] the
     * nodes given a key since. Both have room for nodes_cap ids. */
    uint32_t *sorted;
    uint32_t nsorted;
    uint32_t *pend;
    uint32_t npend;
    uint8_t *arena;
    size_t arena_len;
    size_t arena_cap;
    uint64_t hash_seed; /* of the index; random at open */
} kv_map;

static inline const uint8_t *keel__map_key(const kv_map *m, uint32_t n)
{
    return m->arena + m->nodes[n].key_off;
}

/* The hash of key k in m's index (maps with one seed share hashes). */
uint32_t keel__map_hash(const kv_map *m, const void *k, size_t klen);
/* keel__keycmp(k, node n's key). */
int keel__map_cmp(const kv_map *m, const uint8_t *k, size_t klen, uint32_t n);
/* The node holding key k (of hash h), or 0. */
uint32_t keel__map_find(const kv_map *m, const uint8_t *k, size_t klen,
                        uint32_t h);
/* Make the ordered view current (MP1): sorted[] then lists every live
 * node in ascending key order. Never allocates, never fails. */
void keel__map_order(kv_map *m);
/* After keel__map_order(): the position in sorted[] of the first key > k
 * (strict) or >= k; nsorted if none. */
uint32_t keel__map_seek(const kv_map *m, const uint8_t *k, size_t klen,
                        int strict);
/* Make room for need more arena bytes and new_nodes more nodes (MP4).
 * @return KEEL_OK, KEEL_ENOMEM, KEEL_ETOOBIG. */
int keel__map_reserve(kv_map *m, size_t need, size_t new_nodes,
                      keel_diag *diag);
/*
 * Set key (of hash h) to a put of val or (kind DELETE, vlen 0) a
 * tombstone. n is keel__map_find(m, key, h) (0: a new key). key and val
 * may point into m's arena.
 * @param[out] node_out  optional: the key's node on success.
 * @return KEEL_OK, or KEEL_ENOMEM / KEEL_ETOOBIG with m unchanged (MP4).
 */
int keel__map_set(kv_map *m, uint32_t n, uint8_t kind, const void *key,
                  size_t klen, uint32_t h, const void *val, size_t vlen,
                  uint32_t *node_out, keel_diag *diag);
/* Take node n out of m: onto the free list with its arena space, or, if
 * the ordered view lists it, onto the retired list until the next
 * keel__map_order() (MP5). */
void keel__map_remove(kv_map *m, uint32_t n);
/* Empty m, keeping its buffers for reuse. */
void keel__map_reset(kv_map *m);
void keel__map_free(kv_map *m);
#ifdef KEEL_DEBUG
/* MP1, MP2, MP5; *enc_bytes: the encoded length of the live ops. */
int keel__map_ok(const kv_map *m, size_t *enc_bytes);
/* MP3. */
int keel__map_index_ok(const kv_map *m);
#endif

#endif
