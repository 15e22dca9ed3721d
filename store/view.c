/*
 * store/view.c — bulk load (a restore fills a new store straight into
 * LMDB), the timeline in the meta table, and read-only views of a store's
 * last checkpoint (snapshots, the audit's comparison). Contract:
 * store/store.h; the store's own structure: store/store_internal.h.
 *
 * Invariants (numbered with the store's, store/store.c):
 *   ST3  every entry a view or a load returns or writes carries its
 *        checksum, checked on every read (keel__st_verify()).
 *   ST12 view_open clears the reader slots of dead processes first.
 *   ST13 a bulk store commits unsynced until load_finish, which syncs the
 *        whole load and switches to LMDB's synced commits.
 *   ST14 view_open_unshared writes nothing (MDB_NOLOCK).
 */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "common/diag.h"
#include "common/io.h"
#include "store/store_internal.h"

/* ---------------------------------------------------------------------
 * Bulk load (restore) and read-only views (snapshots).
 */

/* Commit a bulk load's transaction once it holds this much, so a restore's
 * memory stays bounded whatever the state's size. Small, because LMDB
 * mallocs every dirty page and frees them at commit: 8 MiB of them are
 * reused from the heap commit after commit, where 64 MiB were handed back
 * to the system and faulted in again (a restore ran 1.7x slower). */
#define LOAD_COMMIT_BYTES (8u * 1024 * 1024)

int keel__store_load_put(keel__store *s, const void *key, size_t key_len,
                         const void *value, size_t value_len, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    KEEL_ASSERT(!s->ws_open && s->ov.nlive == 0 && s->applied_lsn == 0);
    if (rc < 0) {
        goto out;
    }
    if (key_len == 0 || key_len > KEEL__STORE_MAX_KEY_BYTES ||
        value_len > KEEL__STORE_MAX_VALUE_BYTES) {
        rc = keel__diag(diag, KEEL_EINVAL,
                        "load: key of %zu bytes or value of %zu bytes out "
                        "of range",
                        key_len, value_len);
        goto out;
    }
    /* Keys arrive in ascending order: MDB_APPEND fills pages front to back
     * and refuses a key that does not sort after the last. */
    int mrc = keel__st_put_checked(s, s->data_dbi, key, key_len, value,
                                   value_len, MDB_APPEND);
    if (mrc == MDB_KEYEXIST) {
        char kbuf[4 * KEY_PRINT_BYTES + 8];
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        "load: key \"%s\" does not sort after the previous "
                        "one",
                        keel__st_printable(key, key_len, kbuf, sizeof(kbuf)));
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_set_failed(
            s, keel__st_lmdb_error(s->env, mrc, "load", diag), diag);
        goto out;
    }
    s->load_bytes += key_len + value_len;
    if (s->load_bytes >= LOAD_COMMIT_BYTES) {
        s->load_bytes = 0;
        rc = keel__st_commit_txn(s, diag);
        int fd = -1;
        if (rc == KEEL_OK && s->bulk && mdb_env_get_fd(s->env, &fd) == 0) {
            /* Start writing back what this commit wrote (it is not synced)
             * while the load goes on, so the final sync waits for little:
             * a hint, its failure changes nothing. */
            sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        }
        if (rc == KEEL_OK) {
            rc = keel__st_begin_txn(s, diag);
        }
        if (rc < 0) {
            rc = keel__st_set_failed(s, rc, diag);
        }
    }
out:
    return rc;
}

int keel__store_synced(const keel__store *s)
{
    unsigned int flags = 0;
    return mdb_env_get_flags(s->env, &flags) == MDB_SUCCESS &&
           (flags &
            (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC | MDB_WRITEMAP)) == 0;
}

int keel__store_load_finish(keel__store *s, uint64_t lsn, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    KEEL_ASSERT(!s->ws_open && s->ov.nlive == 0 && s->applied_lsn == 0);
    if (rc < 0) {
        goto out;
    }
    int mrc = keel__st_meta_put_u64(s, "applied_lsn", lsn);
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_set_failed(
            s, keel__st_lmdb_error(s->env, mrc, "load", diag), diag);
        goto out;
    }
    rc = keel__st_commit_txn(s, diag);
    if (rc == KEEL_OK) {
        /* A no-op for a normal store, whose commit synced; everything of a
         * bulk one (keel__store_options.bulk). */
        mrc = mdb_env_sync(s->env, 1);
        if (mrc != MDB_SUCCESS) {
            rc = keel__st_lmdb_error(s->env, mrc, "sync", diag);
        }
    }
    if (rc == KEEL_OK && s->bulk) {
        /* ST1 from here on: the load is on disk, and every later commit
         * (a roll-forward's checkpoints) is LMDB's synced one, data pages
         * before the meta page. LMDB lets these two flags change on an
         * open environment. */
        mrc = mdb_env_set_flags(s->env, MDB_NOSYNC | MDB_NOMETASYNC, 0);
        if (mrc != MDB_SUCCESS) {
            rc = keel__st_lmdb_error(s->env, mrc, "set flags", diag);
        } else {
            s->bulk = 0;
        }
    }
    if (rc == KEEL_OK) {
        s->applied_lsn = lsn;
        s->ckpt_lsn = lsn;
        s->load_bytes = 0;
        rc = keel__st_begin_txn(s, diag);
    }
    if (rc < 0) {
        rc = keel__st_set_failed(s, rc, diag);
    }
out:
    return rc;
}

/* Meta value name as a u64, or 0 when absent (*out). */
static int meta_read_u64_opt(MDB_env *env, MDB_txn *txn, MDB_dbi dbi,
                             XXH3_state_t *h, const char *name, uint64_t *out,
                             keel_diag *diag)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val d;
    uint8_t b[8];
    *out = 0;
    int mrc = mdb_get(txn, dbi, &k, &d);
    if (mrc == MDB_NOTFOUND) {
        return KEEL_OK;
    }
    int rc = keel__st_meta_read(env, txn, dbi, h, name, b, 8, diag);
    if (rc == KEEL_OK) {
        *out = keel__get_u64(b);
    }
    return rc;
}

/* The timeline's meta values (store.h), each 0 when absent. */
static int timeline_read(MDB_env *env, MDB_txn *txn, MDB_dbi dbi,
                         XXH3_state_t *h, keel__store_timeline *t,
                         keel_diag *diag)
{
    int rc = meta_read_u64_opt(env, txn, dbi, h, "timeline", &t->id, diag);
    if (rc == KEEL_OK) {
        rc = meta_read_u64_opt(env, txn, dbi, h, "timeline_parent", &t->parent,
                               diag);
    }
    if (rc == KEEL_OK) {
        rc = meta_read_u64_opt(env, txn, dbi, h, "timeline_branch_lsn",
                               &t->branch_lsn, diag);
    }
    return rc;
}

int keel__store_get_timeline(keel__store *s, keel__store_timeline *t,
                             keel_diag *diag)
{
    memset(t, 0, sizeof(*t));
    int rc = keel__st_check_failed(s, diag);
    if (rc == KEEL_OK) {
        rc = timeline_read(s->env, s->txn, s->meta_dbi, s->hash, t, diag);
    }
    return rc;
}

int keel__store_set_timeline(keel__store *s, const keel__store_timeline *t,
                             keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    KEEL_ASSERT(!s->ws_open && s->applied_lsn == s->ckpt_lsn &&
                keel__store_synced(s));
    if (rc < 0) {
        return rc;
    }
    int mrc = keel__st_meta_put_u64(s, "timeline", t->id);
    if (mrc == MDB_SUCCESS) {
        mrc = keel__st_meta_put_u64(s, "timeline_parent", t->parent);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = keel__st_meta_put_u64(s, "timeline_branch_lsn", t->branch_lsn);
    }
    if (mrc != MDB_SUCCESS) {
        return keel__st_set_failed(
            s, keel__st_lmdb_error(s->env, mrc, "timeline", diag), diag);
    }
    rc = keel__st_commit_txn(s, diag); /* ST1: synced */
    if (rc == KEEL_OK) {
        rc = keel__st_begin_txn(s, diag);
    }
    return rc < 0 ? keel__st_set_failed(s, rc, diag) : rc;
}

struct keel__store_view {
    MDB_env *env; /* own environment (view_open), or the store's */
    MDB_txn *txn; /* own read transaction, or the store's write one */
    int own;      /* 1: env and txn are this view's to close */
    MDB_dbi data_dbi;
    MDB_dbi meta_dbi;
    MDB_cursor *cur;
    int started;      /* the cursor has returned an entry */
    uint64_t walked;  /* own view: bytes walked since pages were dropped */
    uintptr_t lo, hi; /* ... and where in the map they were */
    XXH3_state_t *hash;
    uint64_t kernel_id;
    uint64_t lsn;
    uint64_t readers_cleared; /* ST12 */
    keel__store_timeline timeline;
};

void keel__store_view_close(keel__store_view *v)
{
    if (v != NULL) {
        if (v->cur != NULL) {
            mdb_cursor_close(v->cur);
        }
        if (v->own) {
            if (v->txn != NULL) {
                mdb_txn_abort(v->txn);
            }
            if (v->env != NULL) {
                mdb_env_close(v->env);
            }
        }
        XXH3_freeState(v->hash);
        free(v);
    }
}

/* Read the view's meta values and open its cursor. */
static int view_init(keel__store_view *v, keel_diag *diag)
{
    uint8_t b[8];
    int rc = keel__st_meta_read(v->env, v->txn, v->meta_dbi, v->hash, "format",
                                b, 4, diag);
    if (rc == KEEL_OK && keel__get_u32(b) != KEEL__STORE_FORMAT) {
        rc = keel__diag(diag, KEEL_EVERSION,
                        DATA_FILE ": unsupported store format version %" PRIu32
                                  " (this keel reads version %u)",
                        keel__get_u32(b), KEEL__STORE_FORMAT);
    }
    if (rc == KEEL_OK) {
        rc = keel__st_meta_read(v->env, v->txn, v->meta_dbi, v->hash,
                                "kernel_id", b, 8, diag);
        v->kernel_id = keel__get_u64(b);
    }
    if (rc == KEEL_OK) {
        rc = keel__st_meta_read(v->env, v->txn, v->meta_dbi, v->hash,
                                "applied_lsn", b, 8, diag);
        v->lsn = keel__get_u64(b);
    }
    if (rc == KEEL_OK) {
        rc = timeline_read(v->env, v->txn, v->meta_dbi, v->hash, &v->timeline,
                           diag);
    }
    if (rc == KEEL_OK) {
        int mrc = mdb_cursor_open(v->txn, v->data_dbi, &v->cur);
        if (mrc != MDB_SUCCESS) {
            v->cur = NULL;
            rc = keel__st_lmdb_error(v->env, mrc, "cursor open", diag);
        }
    }
    return rc;
}

static keel__store_view *view_new(void)
{
    keel__store_view *v = calloc(1, sizeof(*v));
    if (v != NULL) {
        v->lo = UINTPTR_MAX;
        v->hash = XXH3_createState();
        if (v->hash == NULL) {
            free(v);
            v = NULL;
        }
    }
    return v;
}

static int view_open(const char *dir, unsigned flags, keel__store_view **out,
                     keel_diag *diag);

int keel__store_view_open(const char *dir, keel__store_view **out,
                          keel_diag *diag)
{
    return view_open(dir, MDB_RDONLY, out, diag);
}

int keel__store_view_open_unshared(const char *dir, keel__store_view **out,
                                   keel_diag *diag)
{
    return view_open(dir, MDB_RDONLY | MDB_NOLOCK, out, diag); /* ST14 */
}

static int view_open(const char *dir, unsigned flags, keel__store_view **out,
                     keel_diag *diag)
{
    int rc = KEEL_OK;
    *out = NULL;
    keel__store_view *v = view_new();
    if (v == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    v->own = 1;
    char *data = keel__path_join(dir, DATA_FILE);
    struct stat st;
    int have = data != NULL && stat(data, &st) == 0;
    free(data);
    if (!have) {
        rc = keel__diag(diag, KEEL_ENOENT, DATA_FILE ": no store");
        goto out;
    }
    int mrc = mdb_env_create(&v->env);
    if (mrc != MDB_SUCCESS) {
        v->env = NULL;
        rc = keel__st_lmdb_error(NULL, mrc, "create environment", diag);
        goto out;
    }
    /* No map size: LMDB maps what the writer last committed (ST11). */
    mrc = mdb_env_set_maxdbs(v->env, 2);
    if (mrc == MDB_SUCCESS) {
        /* A reader beside a running kernel: it sees the last committed
         * checkpoint and never blocks the kernel's writer. */
        mrc = mdb_env_open(v->env, dir, flags, 0644);
    }
    if (mrc == MDB_SUCCESS) {
        v->readers_cleared = keel__st_reader_check(v->env); /* ST12 */
    }
    /* A kernel that grew the map after our open makes the first try
     * MDB_MAP_RESIZED: adopt its size (0) and begin again. */
    for (int tries = 0; mrc == MDB_SUCCESS || mrc == MDB_MAP_RESIZED; tries++) {
        mrc = mdb_txn_begin(v->env, NULL, MDB_RDONLY, &v->txn);
        if (mrc != MDB_SUCCESS) {
            v->txn = NULL;
        }
        if (mrc != MDB_MAP_RESIZED || tries == 8) {
            break;
        }
        mrc = mdb_env_set_mapsize(v->env, 0);
        mrc = mrc == MDB_SUCCESS ? MDB_MAP_RESIZED : mrc;
    }
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_dbi_open(v->txn, "meta", 0, &v->meta_dbi);
    }
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_dbi_open(v->txn, "data", 0, &v->data_dbi);
    }
    if (mrc == MDB_NOTFOUND) {
        rc = keel__diag(diag, KEEL_ECORRUPT,
                        DATA_FILE ": not a keel store (no tables)");
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(v->env, mrc, "open read-only", diag);
        goto out;
    }
    rc = view_init(v, diag);
out:
    if (rc < 0) {
        keel__store_view_close(v);
    } else {
        *out = v;
    }
    return rc;
}

int keel__store_view_of(keel__store *s, keel__store_view **out, keel_diag *diag)
{
    int rc = keel__st_check_failed(s, diag);
    *out = NULL;
    KEEL_ASSERT(!s->ws_open && s->applied_lsn == s->ckpt_lsn);
    keel__store_view *v = NULL;
    if (rc < 0) {
        goto out;
    }
    v = view_new();
    if (v == NULL) {
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    v->env = s->env;
    v->txn = s->txn;
    v->data_dbi = s->data_dbi;
    v->meta_dbi = s->meta_dbi;
    rc = view_init(v, diag);
out:
    if (rc < 0) {
        keel__store_view_close(v);
    } else {
        *out = v;
    }
    return rc;
}

uint64_t keel__store_view_kernel_id(const keel__store_view *v)
{
    return v->kernel_id;
}

uint64_t keel__store_view_lsn(const keel__store_view *v)
{
    return v->lsn;
}

uint64_t keel__store_view_readers_cleared(const keel__store_view *v)
{
    return v->readers_cleared;
}

void keel__store_view_timeline(const keel__store_view *v,
                               keel__store_timeline *out)
{
    *out = v->timeline;
}

int keel__store_view_get(keel__store_view *v, const void *key, size_t key_len,
                         keel_bytes *value, keel_diag *diag)
{
    return keel__st_lmdb_get(v->env, v->txn, v->data_dbi, v->hash, key, key_len,
                             value, diag);
}

/*
 * An own view walks the whole map once: without help every page it reads
 * stays mapped into this process, and its resident memory grows with the
 * state. Dropping the mapping's pages (they stay in the page cache, and
 * any still in use fault back in unchanged: the map is a read-only shared
 * file mapping, so pointers into it stay valid) every VIEW_DROP_BYTES
 * keeps it bounded.
 */
#define VIEW_DROP_BYTES (8u * 1024 * 1024)

static void drop_pages(keel__store_view *v)
{
    /* LMDB does not tell where its map is; the entries walked since the
     * last drop lie in it, between lo and hi. */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = v->lo & ~(page - 1);
    uintptr_t hi = (v->hi + page - 1) & ~(page - 1);
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
    v->walked = 0;
    v->lo = UINTPTR_MAX;
    v->hi = 0;
}

/* Widen the walked range [lo, hi) over p[0, n). */
static void walked_over(keel__store_view *v, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    v->lo = a < v->lo ? a : v->lo;
    v->hi = a + n > v->hi ? a + n : v->hi;
    v->walked += n;
}

int keel__store_view_next(keel__store_view *v, keel_bytes *key,
                          keel_bytes *value, keel_diag *diag)
{
    int rc = KEEL_OK;
    MDB_val k, d;
    int mrc = mdb_cursor_get(v->cur, &k, &d, v->started ? MDB_NEXT : MDB_FIRST);
    v->started = 1;
    if (mrc == MDB_NOTFOUND) {
        goto out;
    }
    if (mrc != MDB_SUCCESS) {
        rc = keel__st_lmdb_error(v->env, mrc, "next", diag);
        goto out;
    }
    rc = keel__st_verify(v->hash, "key", k.mv_data, k.mv_size, &d, value, diag);
    if (rc == KEEL_OK) {
        key->ptr = k.mv_data;
        key->len = k.mv_size;
        rc = 1;
        walked_over(v, k.mv_data, k.mv_size);
        walked_over(v, d.mv_data, d.mv_size);
    }
    if (v->own && v->walked >= VIEW_DROP_BYTES) {
        drop_pages(v);
    }
out:
    return rc;
}
