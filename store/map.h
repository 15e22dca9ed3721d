/*
 * store/map.h — (internal to store/) kv_map, the key-ordered map of puts
 * and tombstones that the store's write-set and overlay both are: a treap
 * over an index-addressed node array, keys and values in one arena, and
 * for the overlay a hash index (store/map.c, invariants MP1..MP4).
 * Keys are compared with keel__keycmp() (common/keys.h: LMDB's order). Nothing
 * here touches LMDB.
 */
#ifndef KEEL_STORE_MAP_H
#define KEEL_STORE_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

typedef struct kv_node {
    size_t key_off; /* into the map's arena */
    size_t val_off;
    uint32_t key_len;
    uint32_t val_len;
    uint32_t key_cap; /* arena bytes at key_off / val_off this node may */
    uint32_t val_cap; /* reuse, for a new value or, once freed, a new key */
    uint32_t left;    /* node indices; 0 is "none" (nodes[0] is unused); */
    uint32_t right;   /* a free node's left is the next free node */
    uint32_t prio;    /* treap heap order: a parent's is >= its children's */
    uint32_t hash;    /* indexed maps: key_hash(m, key) */
    uint8_t kind;     /* KEEL__STORE_PUT or KEEL__STORE_DELETE; 0: free */
    uint8_t on_disk;  /* overlay: 1 once the key is known to be in the
                         transaction, which holds until the checkpoint */
} kv_node;

/* A key-ordered map of puts and tombstones: the write-set or the overlay. */
typedef struct kv_map {
    const char *name; /* "write-set" or "overlay", for messages */
    kv_node *nodes;   /* nodes[1 .. nnodes-1]: in the tree, or free */
    uint32_t nnodes;
    uint32_t nodes_cap;
    uint32_t root;
    uint32_t free_head; /* removed nodes, for reuse (the overlay only) */
    uint32_t nfree;
    /* The overlay only (indexed): a hash index of the tree's nodes, open
     * addressing with linear probing, at most half full; 0 is empty. The
     * treap gives key order (scans, the checkpoint); the index makes the
     * point lookups of every op and get O(1) in an overlay of many keys. */
    int indexed;
    uint32_t *slots;
    size_t slots_cap; /* 0 or a power of two */
    uint8_t *arena;
    size_t arena_len;
    size_t arena_cap;
    uint64_t prio_state; /* PRNG of treap priorities; random at open */
    uint64_t hash_seed;  /* of the index; random at open */
} kv_map;

static inline const uint8_t *keel__map_key(const kv_map *m, uint32_t n)
{
    return m->arena + m->nodes[n].key_off;
}

/* keel__keycmp(k, node n's key). */
int keel__map_cmp(const kv_map *m, const uint8_t *k, size_t klen, uint32_t n);
/* The node holding key k, or 0. */
uint32_t keel__map_find(const kv_map *m, const uint8_t *k, size_t klen);
/* The node with the smallest key > k (strict) or >= k; 0 if none. */
uint32_t keel__map_lower(const kv_map *m, const uint8_t *k, size_t klen,
                         int strict);
/* Make room for need more arena bytes and new_nodes more nodes (MP4).
 * @return KEEL_OK, KEEL_ENOMEM, KEEL_ETOOBIG. */
int keel__map_reserve(kv_map *m, size_t need, size_t new_nodes,
                      keel_diag *diag);
/*
 * Set key to a put of val or (kind DELETE, vlen 0) a tombstone. n is
 * keel__map_find(m, key) (0: a new key). key and val may point into m's
 * arena.
 * @param[out] node_out  optional: the key's node on success.
 * @return KEEL_OK, or KEEL_ENOMEM / KEEL_ETOOBIG with m unchanged (MP4).
 */
int keel__map_set(kv_map *m, uint32_t n, uint8_t kind, const void *key,
                  size_t klen, const void *val, size_t vlen, uint32_t *node_out,
                  keel_diag *diag);
/* Take node n out of m, onto the free list with its arena space. */
void keel__map_remove(kv_map *m, uint32_t n);
/* Empty m, keeping its buffers for reuse. */
void keel__map_reset(kv_map *m);
void keel__map_free(kv_map *m);
#ifdef KEEL_DEBUG
/* MP1, MP2; *enc_bytes: the encoded length of the tree's ops. */
int keel__map_ok(const kv_map *m, size_t *enc_bytes);
/* MP3. */
int keel__map_index_ok(const kv_map *m);
#endif

#endif
