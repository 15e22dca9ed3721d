/*
 * store/store_internal.h — (internal to store/) the store's structure and
 * the helpers store/store.c (the write-set, overlay, checkpoints, open)
 * and store/view.c (bulk load, timeline, views) share: LMDB error
 * translation, the FAILED state (ST6), checksummed reads and writes
 * (ST3), the meta table and the write transaction (ST1). This and the
 * files of store/ are the only ones that include <lmdb.h>.
 */
#ifndef KEEL_STORE_STORE_INTERNAL_H
#define KEEL_STORE_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>
#include <xxhash.h>

#include "common/io.h"
#include "store/map.h"
#include "store/store.h"
#include "store/writeset_format.h"

#define DATA_FILE "data.mdb"
/* Keys longer than this are shortened ("...") in messages. */
#define KEY_PRINT_BYTES 96u

struct keel__store {
    keel_io *io;
    char *dir;
    MDB_env *env;
    MDB_txn *txn;    /* the long-lived write transaction (ST1) */
    MDB_cursor *cur; /* txn's cursor for scans, or NULL (ST15) */
    MDB_dbi data_dbi;
    MDB_dbi meta_dbi;
    XXH3_state_t *hash;
    uint64_t kernel_id;
    uint64_t applied_lsn;
    uint64_t ckpt_lsn;
    int failed; /* ST6: 0 or the original error */
    keel_diag fail_diag;

    int ws_open;
    kv_map ws;                /* the open write-set (ST4) */
    size_t ws_enc_bytes;      /* exact encoded length of the open write-set */
    kv_map ov;                /* the overlay (ST9) */
    keel__ws_ops dec;         /* apply_encoded's decoded ops, reused */
    uint64_t load_bytes;      /* bulk load: bytes since the last commit */
    int bulk;                 /* keel__store_options.bulk */
    uint64_t readers_cleared; /* ST12: stale reader slots cleared */
    uint64_t map_max;         /* ST11: the ceiling, a multiple of pages */
    uint32_t page_bytes;      /* LMDB's page size */
    int read_only;            /* keel__store_options.read_only (ST14) */
};

/* Fill diag for a failed LMDB call `what` and return the KEEL_E* code. */
int keel__st_lmdb_error(MDB_env *env, int mrc, const char *what,
                        keel_diag *diag);
/* ST6: the store is FAILED from now on; the caller returns rc. */
int keel__st_set_failed(keel__store *s, int rc, keel_diag *diag);
/* ST6: what every call returns once FAILED. */
int keel__st_check_failed(const keel__store *s, keel_diag *diag);
/* Read meta value name, exactly want bytes, checksum checked (ST3). */
int keel__st_meta_read(MDB_env *env, MDB_txn *txn, MDB_dbi dbi, XXH3_state_t *h,
                       const char *name, uint8_t *out, size_t want,
                       keel_diag *diag);
/* Put meta name = v (u64 LE) into the write transaction. @return an
 * LMDB code. */
int keel__st_meta_put_u64(keel__store *s, const char *name, uint64_t v);
int keel__st_commit_txn(keel__store *s, keel_diag *diag);
int keel__st_begin_txn(keel__store *s, keel_diag *diag);
/* ST3: check a stored value d read under key (what: "key" or "meta") and
 * give the value without its checksum. */
int keel__st_verify(XXH3_state_t *h, const char *what, const uint8_t *key,
                    size_t klen, const MDB_val *d, keel_bytes *out,
                    keel_diag *diag);
/* ST12: clear the reader slots of dead processes. @return how many. */
uint64_t keel__st_reader_check(MDB_env *env);
/* Store value ‖ checksum under key (ST3). @return an LMDB code. */
int keel__st_put_checked(keel__store *s, MDB_dbi dbi, const uint8_t *key,
                         size_t klen, const uint8_t *val, size_t vlen,
                         unsigned flags);
/* The key in printable form for messages, at most KEY_PRINT_BYTES. */
const char *keel__st_printable(const uint8_t *k, size_t klen, char *buf,
                               size_t cap);
/* Look key up in dbi of txn and check its checksum (ST3).
 * @return 1 found (*value borrowed), 0 absent, or < 0. */
int keel__st_lmdb_get(MDB_env *env, MDB_txn *txn, MDB_dbi dbi, XXH3_state_t *h,
                      const void *key, size_t key_len, keel_bytes *value,
                      keel_diag *diag);

#endif
