/*
 * kernel/kernel.c — the kernel's lifecycle and transactions: open (lock,
 * store, WAL, replay, the cheap state checks, loading and starting vats)
 * and close, the state lock, store access inside a transaction, commit
 * (one WAL record per transaction, then apply), checkpoints, and the
 * crash hook's call sites. Boot, the run loop, external sends and status
 * are in run.c; the host the kernel runs on is injected (kernel_host.h:
 * host/compose.c builds it and defines keel_kernel_open).
 *
 * Invariants:
 *   K10 Every transaction is one WAL record; its write-set is applied to
 *       the store only after the record is appended (and, under sync=full,
 *       fdatasync'd). A transaction that aborts leaves nothing.
 *   K11 Log before data: a store checkpoint happens only after the WAL is
 *       durable up to the store's applied LSN.
 *   K12 The activity hash chains every transaction:
 *       h_n = xxh3_64(h_{n-1} LE ‖ kind ‖ crank LE ‖ ops), where ops is the
 *       canonical encoding of the write-set without the k.hash entry; the
 *       new hash is then written in the same transaction. The one code
 *       that hashes is store/activity.c (a restore checks a log with it).
 *   K13 After a storage error (WAL append, store apply, a checkpoint: a
 *       store full at its ceiling, store_max_bytes, or a disk out of room
 *       included) the kernel is FAILED: every later call returns
 *       KEEL_EFAILED until close + reopen, which recovers from the WAL;
 *       the store's messages name store/data.mdb.
 *   K14 On open, every WAL record after the store's applied LSN is
 *       replayed, in order, with no gap (keel__store_replay, RP1..RP4); a
 *       store ahead of its WAL is refused (KEEL_ECORRUPT).
 *   K15 Then cheap checks (check_state: the run queue's bounds and ends,
 *       every vat's state and name index) refuse a state that breaks
 *       them (KEEL_ECORRUPT naming the key); the full audit is
 *       keel_audit.
 *   K16 The WAL is opened with the store's checkpoint LSN as its floor:
 *       damage to a record the checkpoint proves acknowledged is refused
 *       (KEEL_ECORRUPT), never truncated as a torn tail.
 *   K17 A read-only open (options.read_only: status, recover --check)
 *       changes no byte under STATE: a shared lock on STATE/lock (not
 *       created), the store read-only (ST14), the WAL read-only (W11: a
 *       torn tail reported, not truncated), replay into memory only, no
 *       checkpoint, no vat started, and every transaction refused.
 *   K18 Open takes STATE/lock (common/state_lock.c, SL1..SL3) before
 *       anything in STATE is opened or created: exclusively for a writer,
 *       shared for a read-only open (K17); readers (K17, the audit,
 *       snapshot create) exclude writers, and a writer waits for them, up
 *       to 10 s.
 *   K19 The crash hook (options.crash_hook) is called at exactly five
 *       places: before the WAL append, after it, after the apply (with the
 *       transaction's kind), before and after the store checkpoint (kind
 *       0). The kernel neither parses crash points nor kills itself: that
 *       is the caller's (tools/crash_point.c).
 *   K25 A transaction whose record was appended and applied is committed:
 *       a checkpoint failing after it fails the kernel (K13) but not the
 *       commit, so a caller reports the committed result (once durable:
 *       keel_kernel_wait_durable asks the WAL alone) and the failure comes
 *       from the next call or from close.
 *   K27 The hot counters (k.rq.head, k.rq.tail, k.next.kp, k.next.ko,
 *       k.unresolved) are read through a cache in k->ctr that always
 *       equals what the store would answer: it is filled by a read, set
 *       by keel__k_put_u64 (the only writer of these keys) after the put
 *       went into the write-set, and forgotten whole when a transaction
 *       aborts. Every put still goes to the write-set as before, so the
 *       bytes logged do not change.
 *   K28 k->kb is one scratch buffer for encoding a run-queue item or a
 *       promise record, emptied before each use and kept across cranks;
 *       its bytes are copied into the write-set before the next use.
 *   K36 options.observe, when set, is called on the kernel's thread and
 *       never inside a delivery: once per committed transaction (after
 *       its append and apply, before a checkpoint it may trigger), per vat
 *       started or stopped or terminated, per checkpoint, and per
 *       run-loop iteration (a tick). It is given copies and counts only:
 *       nothing it does changes a byte logged or when anything becomes
 *       durable, and without it the kernel reads no clock for it.
 *   K37 The state's format version is KEEL_STATE_FORMAT_VERSION: a store
 *       whose k.version says another, or that still has version 1's
 *       string key "k.version", is refused with KEEL_EVERSION naming the
 *       version (older: what to do instead) before any vat is loaded.
 */
#include "kernel/kernel_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "common/clock.h"
#include "common/diag.h"
#include "common/io.h"
#include "common/state_lock.h"
#include "store/activity.h"
#include "store/replay.h"

/* Checkpoint once this much is applied but not yet in LMDB's files: it is
 * held in memory until then. */
#define CHECKPOINT_PENDING_BYTES (64u * 1024 * 1024)
/* Replay checkpoints sooner: the overlay's lookups miss the cache once it
 * is large (a 300,000-crank log replayed 1.7x faster with 8 MiB than with
 * one checkpoint at the end), and replayed records are durable already. */
#define REPLAY_CHECKPOINT_BYTES (8u * 1024 * 1024)

void keel_kernel_options_init(keel_kernel_options *o)
{
    memset(o, 0, sizeof(*o));
    o->sync = KEEL_SYNC_FULL;
    o->checkpoint_cranks = 10000;
    o->checkpoint_ms = 1000;
    o->snapshot_keep = 2;
    o->snapshot_level = 3;
    o->create = 1;
}

int keel__k_fail(keel_kernel *k, int rc, const char *what)
{
    if (!k->failed) {
        k->failed = rc;
        if (k->fail_diag.msg[0] == '\0') {
            keel__diag(&k->fail_diag, rc, "%s: %s", what, keel_strerror(rc));
        }
    }
    return rc;
}

void keel__k_crash_point(keel_kernel *k, int event, int kind)
{
    if (k->o.crash_hook != NULL) { /* K19 */
        k->o.crash_hook(k->o.crash_arg, event, kind);
    }
}

/* Name the store's file in a diag from the store ("data.mdb: ..." becomes
 * "store/data.mdb: ..."). */
static void store_diag(keel_diag *d)
{
    keel_diag o = *d;
    if (strncmp(o.msg, "data.mdb", 8) == 0) {
        keel__diag(d, o.code, "store/%s", o.msg);
    }
}

/* Remember the first storage diag as the kernel's failure (K13). */
static int fail_with(keel_kernel *k, int rc, const keel_diag *d)
{
    if (!k->failed) {
        k->fail_diag = *d;
        k->failed = rc;
    }
    return rc;
}

/* ---- store access inside a transaction -------------------------------- */

/* An empty diag without zeroing its whole message: the store writes one
 * only on failure, and the hot accessors below run several times a
 * crank. */
static inline void diag_clear(keel_diag *d)
{
    d->code = 0;
    d->msg[0] = '\0';
}

int keel__k_get(keel_kernel *k, const keel__key *key, keel_bytes *val)
{
    keel_diag d;
    diag_clear(&d);
    int rc = keel__store_get(k->store, key->b, key->n, val, &d);
    return rc < 0 ? fail_with(k, rc, &d) : rc;
}

int keel__k_fail_key(keel_kernel *k, int rc, const keel__key *key)
{
    char name[KEY_MAX];
    return keel__k_fail(k, rc,
                        keel__ks_render(key->b, key->n, name, sizeof(name)));
}

/* The k->ctr slot of a hot counter key (K27), or -1. */
static int ctr_slot(const keel__key *key)
{
    if (key->n != 2 || key->b[0] != KS_META) {
        return -1;
    }
    switch (key->b[1]) {
    case KM_RQ_HEAD:
        return 0;
    case KM_RQ_TAIL:
        return 1;
    case KM_NEXT_KP:
        return 2;
    case KM_NEXT_KO:
        return 3;
    case KM_UNRESOLVED:
        return 4;
    default:
        return -1;
    }
}

static void ctr_forget(keel_kernel *k)
{
    for (size_t i = 0; i < sizeof(k->ctr) / sizeof(k->ctr[0]); i++) {
        k->ctr[i].state = 0;
    }
}

int keel__k_get_u64(keel_kernel *k, const keel__key *key, uint64_t *v)
{
    int slot = ctr_slot(key);
    if (slot >= 0 && k->ctr[slot].state != 0 && !k->failed) { /* K27 */
        if (k->ctr[slot].state == 2) {
            return 0;
        }
        *v = k->ctr[slot].val;
        return 1;
    }
    keel_bytes b;
    int rc = keel__k_get(k, key, &b);
    if (rc <= 0) {
        if (rc == 0 && slot >= 0) {
            k->ctr[slot].state = 2;
        }
        return rc;
    }
    if (b.len != 8) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, key);
    }
    *v = keel__ks_rd64(b.ptr);
    if (slot >= 0) {
        k->ctr[slot].val = *v;
        k->ctr[slot].state = 1;
    }
    return 1;
}

int keel__k_get_u32(keel_kernel *k, const keel__key *key, uint32_t *v)
{
    keel_bytes b;
    int rc = keel__k_get(k, key, &b);
    if (rc == 1 && b.len != 4) {
        return keel__k_fail_key(k, KEEL_ECORRUPT, key);
    }
    if (rc == 1) {
        *v = keel__ks_rd32(b.ptr);
    }
    return rc;
}

int keel__k_put(keel_kernel *k, const keel__key *key, const void *val,
                size_t len)
{
    keel_diag d;
    diag_clear(&d);
    KEEL_ASSERT(k->in_txn);
    int rc = keel__gc_track(k, key, val, len, 0); /* G1 */
    if (rc < 0) {
        return rc;
    }
    rc = keel__store_ws_put(k->store, key->b, key->n, val, len, &d);
    return rc < 0 ? fail_with(k, rc, &d) : rc;
}

int keel__k_put_u64(keel_kernel *k, const keel__key *key, uint64_t v)
{
    uint8_t buf[8];
    keel__ks_be64(buf, v);
    int slot = ctr_slot(key);
    int rc = keel__k_put(k, key, buf, sizeof(buf));
    if (slot >= 0) { /* K27 */
        k->ctr[slot].val = v;
        k->ctr[slot].state = rc == KEEL_OK ? 1 : 0;
    }
    return rc;
}

int keel__k_put_u32(keel_kernel *k, const keel__key *key, uint32_t v)
{
    uint8_t buf[4];
    keel__ks_be32(buf, v);
    return keel__k_put(k, key, buf, sizeof(buf));
}

int keel__k_meta_get(keel_kernel *k, uint8_t field, uint64_t *v)
{
    keel__key key;
    return keel__k_get_u64(k, keel__ks_meta(&key, field), v);
}

int keel__k_meta_put(keel_kernel *k, uint8_t field, uint64_t v)
{
    keel__key key;
    return keel__k_put_u64(k, keel__ks_meta(&key, field), v);
}

int keel__k_del(keel_kernel *k, const keel__key *key)
{
    keel_diag d;
    diag_clear(&d);
    KEEL_ASSERT(k->in_txn);
    int rc = keel__gc_track(k, key, NULL, 0, 1); /* G1 */
    if (rc < 0) {
        return rc;
    }
    rc = keel__store_ws_delete(k->store, key->b, key->n, &d);
    return rc < 0 ? fail_with(k, rc, &d) : rc;
}

int keel__k_next(keel_kernel *k, const keel__key *prefix,
                 const keel__key *after, keel__key *out)
{
    keel_diag d = {0};
    keel_bytes key;
    int rc = keel__store_next_key(
        k->store, after != NULL ? after->b : prefix->b,
        after != NULL ? after->n : 0, prefix->b, prefix->n, &key, &d);
    if (rc < 0) {
        return fail_with(k, rc, &d);
    }
    if (rc == 1) {
        if (key.len > sizeof(out->b)) {
            return keel__k_fail(k, KEEL_ECORRUPT, "key too long");
        }
        memcpy(out->b, key.ptr, key.len);
        out->n = key.len;
    }
    return rc;
}

/* ---- transactions ----------------------------------------------------- */

int keel__k_txn_begin(keel_kernel *k)
{
    keel_diag d = {0};
    KEEL_ASSERT(!k->in_txn);
    if (k->failed) {
        return KEEL_EFAILED;
    }
    if (k->o.read_only) { /* K17 */
        keel__diag(&k->fail_diag, KEEL_EINVAL,
                   "%s: opened read-only; no transaction may commit", k->dir);
        return KEEL_EINVAL;
    }
    int rc = keel__store_ws_begin(k->store, &d);
    if (rc < 0) {
        return fail_with(k, rc, &d);
    }
    k->in_txn = 1;
    k->illegal = 0;
    k->illegal_msg[0] = '\0';
    k->exit_vid = 0;
    k->txn_vid = 0;
    if (k->o.observe != NULL) { /* K36 */
        k->obs_t0 = keel__now_ns();
        k->obs_syscalls = 0;
        k->obs_notify = 0;
        k->obs_method[0] = '\0';
    }
    return KEEL_OK;
}

void keel__k_observe(keel_kernel *k, int what, uint32_t vid, uint64_t lsn)
{
    if (k->o.observe == NULL) {
        return;
    }
    kvat *v = vid != 0 ? keel__k_vat(k, vid) : NULL;
    keel_observation ob = {.what = what,
                           .lsn = lsn,
                           .crank = k->crank,
                           .vat = vid,
                           .vat_name = v != NULL ? v->name : NULL};
    k->o.observe(k->o.observe_arg, &ob);
}

/* K36: the transaction of kind committed as lsn. */
static void observe_txn(keel_kernel *k, int kind, uint64_t lsn)
{
    uint32_t vid = k->txn_vid;
    kvat *v = vid != 0 ? keel__k_vat(k, vid) : NULL;
    keel_observation ob = {
        .what = KEEL_OBS_TXN,
        .kind = kind,
        .lsn = lsn,
        .crank = k->crank,
        .vat = vid,
        .vat_name = v != NULL ? v->name : NULL,
        .method = kind == KEEL_WAL_CRANK && k->obs_method[0] != '\0'
                      ? k->obs_method
                      : NULL,
        .notify = kind == KEEL_WAL_CRANK && k->obs_notify,
        .syscalls = k->obs_syscalls,
        .duration_ns = keel__now_ns() - k->obs_t0,
        .aborted = kind == KEEL_WAL_KERNEL_OP && k->obs_aborted};
    k->o.observe(k->o.observe_arg, &ob);
}

void keel__k_txn_abort(keel_kernel *k)
{
    ctr_forget(k); /* K27 */
    keel__gc_abort(k);
    if (k->in_txn) {
        keel__store_ws_abort(k->store);
        k->in_txn = 0;
        keel__k_async_aborted(k); /* K34 */
    }
}

static int encode_ws(keel_kernel *k, size_t *len, keel_diag *d)
{
    size_t need = keel__store_ws_encode_bound(k->store);
    if (need > k->enc_cap) {
        uint8_t *p = realloc(k->enc, need);
        if (p == NULL) {
            return keel__diag(d, KEEL_ENOMEM, "encoding a transaction");
        }
        k->enc = p;
        k->enc_cap = need;
    }
    return keel__store_ws_encode(k->store, k->enc, k->enc_cap, len, d);
}

int keel__k_checkpoint(keel_kernel *k, keel_diag *diag)
{
    keel_diag d = {0};
    if (k->o.read_only) { /* K17 */
        return keel__diag(diag, KEEL_EINVAL,
                          "%s: opened read-only; no checkpoint", k->dir);
    }
    uint64_t t0 = k->o.observe != NULL ? keel__now_ns() : 0; /* K36 */
    /* K11: the WAL first, then the store that depends on it. */
    int rc = keel_wal_wait(k->wal, keel__store_applied_lsn(k->store), &d);
    if (rc == KEEL_OK) {
        keel__k_crash_point(k, KEEL_CRASH_CKPT_BEFORE, 0);
        rc = keel__store_checkpoint(k->store, &d);
        keel__k_crash_point(k, KEEL_CRASH_CKPT_AFTER, 0);
        if (rc < 0) {
            store_diag(&d); /* K13: a store full or out of disk */
        }
    }
    if (rc < 0) {
        fail_with(k, rc, &d);
        if (diag != NULL) {
            *diag = d;
        }
        return rc;
    }
    k->txns_since_ckpt = 0;
    k->ckpt_ns = keel__now_ns();
    if (k->o.observe != NULL) { /* K36 */
        keel_observation ob = {.what = KEEL_OBS_CHECKPOINT,
                               .lsn = keel__store_applied_lsn(k->store),
                               .crank = k->crank,
                               .duration_ns = k->ckpt_ns - t0};
        k->o.observe(k->o.observe_arg, &ob);
    }
    return KEEL_OK;
}

int keel__k_txn_commit(keel_kernel *k, int kind, keel_diag *diag)
{
    keel_diag d = {0};
    size_t len = 0;
    uint64_t lsn = 0;
    KEEL_ASSERT(k->in_txn);
    int rc = keel__gc_end(k); /* G2 */
    if (rc == KEEL_OK && kind == KEEL_WAL_CRANK) {
        rc = keel__k_meta_put(k, KM_CRANK, k->crank);
    }
    if (rc == KEEL_OK) {
        rc = encode_ws(k, &len, &d);
    }
    /* 64: room for the k.hash entry still to come. */
    if (rc == KEEL_OK && len + 64 > KEEL_WAL_MAX_PAYLOAD_BYTES) {
        /* Too big for one WAL record: the transaction's fault, not the
         * kernel's. It aborts before anything (the hash included) changed;
         * the caller decides (a crank's vat is terminated). */
        keel__k_txn_abort(k);
        return keel__diag(diag, KEEL_ETOOBIG,
                          "transaction of %zu bytes exceeds the WAL's %u", len,
                          KEEL_WAL_MAX_PAYLOAD_BYTES);
    }
    if (rc == KEEL_OK) { /* K12 */
        uint64_t h = keel__activity_hash(k->hash_state, k->hash, kind, k->crank,
                                         k->enc, len);
        rc = keel__k_meta_put(k, KM_HASH, h);
        if (rc == KEEL_OK) {
            k->hash = h;
        }
    }
    if (rc == KEEL_OK) {
        rc = encode_ws(k, &len, &d);
    }
    if (rc == KEEL_OK) { /* K10: log, then apply */
        keel__k_crash_point(k, KEEL_CRASH_COMMIT_BEFORE, kind);
        rc = keel_wal_append(k->wal, kind, k->crank, k->enc, len, &lsn, &d);
    }
    if (rc == KEEL_OK) {
        keel__k_crash_point(k, KEEL_CRASH_COMMIT_AFTER, kind);
        keel__k_async_committed(k, lsn); /* K34 */
        k->in_txn = 0;
        rc = keel__store_ws_apply(k->store, lsn, &d);
        keel__k_crash_point(k, KEEL_CRASH_APPLY_AFTER, kind);
    }
    if (rc < 0) {
        keel__k_txn_abort(k);
        fail_with(k, rc, &d); /* K13 */
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
        return rc;
    }
    if (k->o.observe != NULL) {
        observe_txn(k, kind, lsn); /* K36 */
    }
    k->stat_txns++;
    k->txns_since_ckpt++;
    if (k->txns_since_ckpt >= k->o.checkpoint_cranks ||
        keel__store_pending_bytes(k->store) >= CHECKPOINT_PENDING_BYTES ||
        keel__now_ns() - k->ckpt_ns >=
            (uint64_t)k->o.checkpoint_ms * 1000000u) {
        /* K25: the transaction is committed (logged and applied); a
         * checkpoint failing now fails the kernel, not the transaction.
         * The next call, or close, reports it. */
        keel__k_checkpoint(k, NULL);
    }
    return KEEL_OK;
}

/* ---- vats ------------------------------------------------------------- */

const keel_vat_ops *keel__k_builtin(const keel_kernel *k, const char *name)
{
    const keel_vat_ops *ops = NULL;
    if (k->o.resolve_vat != NULL) {
        ops = k->o.resolve_vat(k->o.resolve_arg, name);
    }
    return ops != NULL ? ops : keel_vat_builtin(name);
}

/* dlopen path and find a vat of our ABI in it; *dl and *ops on success. */
static int open_library(const char *name, const char *path, void **dl,
                        const keel_vat_ops **ops, keel_diag *diag)
{
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (*dl == NULL) {
        return keel__diag(diag, KEEL_EINVAL, "vats.%s.path: %s", name,
                          dlerror());
    }
    keel_vat_entry_fn entry;
    *(void **)&entry = dlsym(*dl, KEEL_VAT_ENTRY_SYMBOL);
    if (entry == NULL) {
        return keel__diag(diag, KEEL_EINVAL, "vats.%s.path: %s exports no %s",
                          name, path, KEEL_VAT_ENTRY_SYMBOL);
    }
    *ops = entry();
    if (*ops != NULL && (*ops)->abi_version != KEEL_VAT_ABI_VERSION &&
        (*ops)->deliver != NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "vats.%s.path: %s was built for vat ABI %d; this "
                          "keel speaks ABI %d (rebuild it against keel/vat.h)",
                          name, path, (*ops)->abi_version,
                          KEEL_VAT_ABI_VERSION);
    }
    if (*ops == NULL || (*ops)->abi_version != KEEL_VAT_ABI_VERSION ||
        (*ops)->deliver == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "vats.%s.path: %s: not a keel vat of ABI %d", name,
                          path, KEEL_VAT_ABI_VERSION);
    }
    return KEEL_OK;
}

int keel__k_check_library(const char *name, const char *path, keel_diag *diag)
{
    void *dl = NULL;
    const keel_vat_ops *ops = NULL;
    int rc = open_library(name, path, &dl, &ops, diag);
    if (dl != NULL) {
        dlclose(dl);
    }
    return rc;
}

static int load_ops(keel_kernel *k, kvat *v, json_t *src, keel_diag *diag)
{
    const char *builtin = json_string_value(json_object_get(src, "builtin"));
    const char *path = json_string_value(json_object_get(src, "path"));
    if (builtin != NULL) {
        v->ops = keel__k_builtin(k, builtin);
        if (v->ops == NULL) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.builtin: no built-in vat named \"%s\"",
                              v->name, builtin);
        }
        if (v->ops->abi_version != KEEL_VAT_ABI_VERSION) {
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.builtin: \"%s\" was built for vat ABI "
                              "%d; this keel speaks ABI %d (rebuild it against "
                              "keel/vat.h)",
                              v->name, builtin, v->ops->abi_version,
                              KEEL_VAT_ABI_VERSION);
        }
        return KEEL_OK;
    }
    if (json_object_get(src, "worker") != NULL) {
        v->ops = k->host.worker_ops; /* KH3 */
        if (v->ops == NULL) {        /* KH2 */
            return keel__diag(diag, KEEL_EINVAL,
                              "vats.%s.worker: this kernel has no worker host "
                              "(worker vats need keel's libuv host)",
                              v->name);
        }
        return KEEL_OK;
    }
    if (path == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "vats.%s: needs \"builtin\", \"path\" or "
                          "\"worker\"",
                          v->name);
    }
    return open_library(v->name, path, &v->dl, &v->ops, diag);
}

int keel__k_vat_start(keel_kernel *k, kvat *v, keel_diag *diag)
{
    keel__key key;
    keel_bytes b;
    char name[KEY_MAX];
    int rc = keel__k_get(k, keel__ks_vat(&key, v->id, KV_SRC), &b);
    keel__ks_render(key.b, key.n, name, sizeof(name));
    if (rc <= 0) {
        return rc < 0 ? rc
                      : keel__diag(diag, KEEL_ECORRUPT, "%s missing", name);
    }
    json_error_t je;
    json_t *src = json_loadb(b.ptr, b.len, 0, &je);
    if (src == NULL) {
        return keel__diag(diag, KEEL_ECORRUPT, "%s: bad JSON", name);
    }
    rc = load_ops(k, v, src, diag);
    char *params = NULL;
    if (rc == KEEL_OK) {
        json_t *p = json_object_get(src, "params");
        if (json_object_get(src, "worker") != NULL) {
            p = src; /* KH3: the worker host gets the whole entry */
        }
        params = p != NULL ? json_dumps(p, JSON_COMPACT) : strdup("{}");
        rc = params == NULL ? KEEL_ENOMEM : KEEL_OK;
    }
    json_decref(src);
    uint64_t maxo = 0, maxp = 0;
    if (rc == KEEL_OK) {
        rc = keel__k_get_u64(k, keel__ks_vat(&key, v->id, KV_MAXO), &maxo);
    }
    if (rc >= 0) {
        rc = keel__k_get_u64(k, keel__ks_vat(&key, v->id, KV_MAXP), &maxp);
    }
    if (rc >= 0) {
        v->next_o = maxo + 1;
        v->next_p = maxp + 1;
        v->alive = 1;
        rc = KEEL_OK;
        if (v->ops->start != NULL &&
            v->ops->start(&v->sys, params, &v->state) != 0) {
            /* A vat that cannot start is terminated, like a failed crank. */
            rc = keel__k_terminate(k, v->id, diag);
        } else {
            keel__k_observe(k, KEEL_OBS_VAT_START, v->id,
                            keel_wal_last_lsn(k->wal)); /* K36 */
        }
    }
    free(params);
    return rc;
}

int keel__k_load_vats(keel_kernel *k, keel_diag *diag)
{
    uint64_t next = 1;
    int rc = keel__k_meta_get(k, KM_NEXT_VAT, &next);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        next = 1;
    }
    k->nvats = (size_t)(next - 1);
    k->vats = k->nvats ? calloc(k->nvats, sizeof(*k->vats)) : NULL;
    if (k->nvats && k->vats == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    for (uint32_t id = 1; id <= k->nvats; id++) {
        keel__key key;
        char name[KEY_MAX];
        kvat *v = calloc(1, sizeof(*v));
        if (v == NULL) {
            return keel__diag(diag, KEEL_ENOMEM, "out of memory");
        }
        k->vats[id - 1] = v;
        v->id = id;
        v->sys.k = k;
        v->sys.v = v;
        keel_bytes b;
        rc = keel__k_get(k, keel__ks_vat(&key, id, KV_NAME), &b);
        if (rc <= 0 || b.len >= sizeof(v->name)) {
            return keel__diag(
                diag, KEEL_ECORRUPT, "store: %s",
                keel__ks_render(key.b, key.n, name, sizeof(name)));
        }
        memcpy(v->name, b.ptr, b.len);
        rc = keel__k_get(k, keel__ks_vat(&key, id, KV_STATE), &b);
        const uint8_t *st = b.ptr;
        if (rc <= 0 || b.len != 1 ||
            (st[0] != KS_ALIVE && st[0] != KS_TERMINATED)) {
            return keel__diag(
                diag, KEEL_ECORRUPT, "store: %s",
                keel__ks_render(key.b, key.n, name, sizeof(name)));
        }
        v->alive = st[0] == KS_ALIVE;
        rc = keel__k_get(k, keel__ks_vat(&key, id, KV_CLEANUP), &b);
        if (rc < 0) {
            if (diag != NULL) {
                *diag = k->fail_diag;
            }
            return rc;
        }
        v->cleanup = !v->alive && rc == 1; /* K6: resumes after a restart */
    }
    for (uint32_t id = 1; id <= k->nvats && !k->o.read_only; id++) { /* K17 */
        kvat *v = k->vats[id - 1];
        if (v->alive) {
            rc = keel__k_vat_start(k, v, diag);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return KEEL_OK;
}

/* ---- open, recovery, close -------------------------------------------- */

int keel__k_replay(keel__store *s, const char *wal_dir, keel_io *io,
                   uint64_t last, uint64_t *replayed, uint64_t *bytes,
                   keel_diag *diag)
{
    keel__store_replay_options o;
    keel__store_replay_report rep;
    keel__store_replay_options_init(&o);
    o.io = io;
    o.last_lsn = last;
    /* The records replayed are durable (K11 holds). */
    o.checkpoint_bytes = REPLAY_CHECKPOINT_BYTES;
    int rc = keel__store_replay(s, wal_dir, &o, &rep, diag);
    *replayed = rep.replayed;
    *bytes = rep.bytes;
    return rc;
}

/* K14: replay the WAL after the store's applied LSN. */
static int replay(keel_kernel *k, keel_diag *diag)
{
    return keel__k_replay(k->store, k->dir_wal, k->o.io,
                          keel_wal_last_lsn(k->wal), &k->recovery.replayed,
                          &k->recovery.replayed_bytes, diag);
}

/* K37: a state of another format version is refused by name. */
static int version_refused(uint64_t v, keel_diag *diag)
{
    if (v > KEEL_STATE_FORMAT_VERSION) {
        return keel__diag(diag, KEEL_EVERSION,
                          "store/: state format version %" PRIu64
                          ", this keel reads up to %d",
                          v, KEEL_STATE_FORMAT_VERSION);
    }
    return keel__diag(diag, KEEL_EVERSION,
                      "store/: state format version %" PRIu64
                      " is older than this keel's %d; this keel cannot read "
                      "it: restore from a snapshot made by the same keel "
                      "version or start a new state",
                      v, KEEL_STATE_FORMAT_VERSION);
}

static int load_meta(keel_kernel *k, keel_diag *diag)
{
    uint64_t v = 0;
    keel_bytes b;
    keel__key key;
    int rc = keel__k_meta_get(k, KM_VERSION, &v);
    if (rc == 1 && v != KEEL_STATE_FORMAT_VERSION) {
        return version_refused(v, diag);
    }
    if (rc == 0) { /* K37: version 1 kept it as the string key k.version */
        memcpy(key.b, KEEL__KS_V1_VERSION_KEY, strlen(KEEL__KS_V1_VERSION_KEY));
        key.n = strlen(KEEL__KS_V1_VERSION_KEY);
        rc = keel__k_get(k, &key, &b);
        if (rc == 1) {
            uint64_t old = 0;
            const char *p = b.ptr;
            for (size_t i = 0;
                 i < b.len && i < 20 && p[i] >= '0' && p[i] <= '9'; i++) {
                old = old * 10 + (uint64_t)(p[i] - '0');
            }
            return version_refused(old, diag);
        }
    }
    if (rc >= 0) {
        rc = keel__k_meta_get(k, KM_BOOTED, &v);
        k->booted = rc == 1 && v == 1;
    }
    if (rc >= 0) {
        rc = keel__k_meta_get(k, KM_CRANK, &k->crank);
    }
    if (rc >= 0) {
        rc = keel__k_meta_get(k, KM_HASH, &k->hash);
    }
    if (rc < 0) {
        *diag = k->fail_diag;
        return rc;
    }
    return KEEL_OK;
}

/* K15: the cheap checks after recovery, O(vats): the run queue's bounds
 * and its ends, and every vat's state and name index. A full audit is
 * keel_audit (`keel recover --check`). */
static int check_state(keel_kernel *k, keel_diag *diag)
{
    keel__key key;
    char name[KEY_MAX];
    keel_bytes b;
    uint64_t head = 0, tail = 0, next = 1;
    int rc = KEEL_OK;
    if (!k->booted) {
        return KEEL_OK;
    }
    /* Absent bounds are 0: the queue was never used. */
    if (keel__k_meta_get(k, KM_RQ_HEAD, &head) < 0 ||
        keel__k_meta_get(k, KM_RQ_TAIL, &tail) < 0 || head > tail) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "store/: run queue bounds unreadable or inverted "
                          "(head %" PRIu64 ", tail %" PRIu64 ")",
                          head, tail);
    }
    if (head < tail && keel__k_get(k, keel__ks_runq(&key, head), &b) != 1) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "store/: run queue head %s missing",
                          keel__ks_render(key.b, key.n, name, sizeof(name)));
    }
    if (keel__k_get(k, keel__ks_runq(&key, tail), &b) != 0) {
        return keel__diag(diag, KEEL_ECORRUPT,
                          "store/: %s lies past the run queue's tail",
                          keel__ks_render(key.b, key.n, name, sizeof(name)));
    }
    if (keel__k_meta_get(k, KM_NEXT_VAT, &next) != 1) {
        return keel__diag(diag, KEEL_ECORRUPT, "store/: k.next.vat missing");
    }
    for (uint64_t id = 1; id < next && rc == KEEL_OK; id++) {
        char vname[64];
        uint32_t vid = (uint32_t)id;
        rc = keel__k_get(k, keel__ks_vat(&key, vid, KV_NAME), &b) == 1 &&
                     b.len < sizeof(vname) && b.len > 0
                 ? KEEL_OK
                 : -1;
        if (rc == KEEL_OK) {
            memcpy(vname, b.ptr, b.len);
            vname[b.len] = '\0';
            rc = keel__k_get(k, keel__ks_vat(&key, vid, KV_STATE), &b) == 1 &&
                         b.len == 1 &&
                         (*(const uint8_t *)b.ptr == KS_ALIVE ||
                          *(const uint8_t *)b.ptr == KS_TERMINATED)
                     ? KEEL_OK
                     : -1;
        }
        uint32_t back = 0;
        if (rc == KEEL_OK) {
            keel__ks_vatname(&key, vname, strlen(vname));
            rc = keel__k_get_u32(k, &key, &back) == 1 && back == vid ? KEEL_OK
                                                                     : -1;
        }
        if (rc < 0) {
            rc = keel__diag(diag, KEEL_ECORRUPT,
                            "store/: vat %" PRIu64 ": %s missing or wrong", id,
                            keel__ks_render(key.b, key.n, name, sizeof(name)));
        }
    }
    return rc;
}

/* KH2: the host of a kernel opened without one: nothing is ever pending
 * (keel_vat_timer and keel_vat_work refuse before anything is held). */
static int no_timer(void *ctx, uint64_t delay_ms, void (*cb)(void *arg),
                    void *arg, uint64_t *id)
{
    return KEEL_EINVAL;
}

static int no_work(void *ctx, void (*work)(void *arg), void (*done)(void *arg),
                   void *arg)
{
    return KEEL_EINVAL;
}

static int no_cancel(void *ctx, uint64_t id)
{
    return 0;
}

static uint64_t no_pending(void *ctx)
{
    return 0;
}

static int no_run(void *ctx, uint64_t timeout_ms)
{
    return 0;
}

static int no_poll(void *ctx)
{
    return 0;
}

static void no_close(void *ctx)
{
}

static const keel__khost no_host = {.timer = no_timer,
                                    .work = no_work,
                                    .cancel = no_cancel,
                                    .pending = no_pending,
                                    .run_once = no_run,
                                    .poll = no_poll,
                                    .close = no_close};

int keel__k_open(const char *state_dir, const keel_kernel_options *o,
                 const keel__khost *host, keel_kernel **out, keel_diag *diag)
{
    int rc = KEEL_OK;
    uint64_t t0 = keel__now_ns();
    *out = NULL;
    keel_kernel *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        if (host != NULL) {
            host->close(host->ctx); /* KH1 */
        }
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    k->host = host != NULL ? *host : no_host; /* KH1: closed by close */
    k->hostless = host == NULL;               /* KH2 */
    k->lock_fd = -1;
    k->hash_state = XXH3_createState();
    k->gc_work = keel__gc_list_new();
    k->gc_maybe = keel__gc_list_new();
    k->gc_delta = keel__gc_list_new();
    k->gc_pending = 1; /* G3: look once whether actions are queued */
#ifdef KEEL_GC_AB
    /* only a -DKEEL_GC_AB=ON build, for a benchmark's A/B: such a state
     * has no reference counts and fails the audit */
    k->gc_off = getenv("KEEL_GC_OFF") != NULL;
#endif
    if (k->hash_state == NULL) {
        keel_kernel_close(k, NULL);
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    if (o != NULL) {
        k->o = *o;
    } else {
        keel_kernel_options_init(&k->o);
    }
    if (k->o.checkpoint_cranks == 0) {
        k->o.checkpoint_cranks = 1;
    }
    if (k->o.read_only) { /* K17 */
        k->o.create = 0;
    }
    k->o.snapshot_dir = NULL; /* not retained: the host's (host/compose.c) */
    size_t n = strlen(state_dir);
    k->dir = strdup(state_dir);
    k->dir_wal = malloc(n + 5);
    char *dir_store = malloc(n + 7);
    if (k->dir == NULL || k->dir_wal == NULL || dir_store == NULL) {
        free(dir_store);
        rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(k->dir_wal, n + 5, "%s/wal", state_dir);
    snprintf(dir_store, n + 7, "%s/store", state_dir);
    keel_io *io = k->o.io != NULL ? k->o.io : keel__io_posix();
    rc = keel__state_check(state_dir, diag); /* K18: before anything */
    if (rc < 0) {
        free(dir_store);
        goto out;
    }
    /* 0700: STATE holds the control socket (host/control.c, CT1) */
    int made = k->o.create ? io->mkdir(io, state_dir, 0700) : KEEL_EEXIST;
    if (made == KEEL_OK) {
        /* A new STATE: its name must survive a power loss with the data
         * that will be acknowledged inside it. */
        char *parent = malloc(n + 4);
        if (parent == NULL) {
            rc = keel__diag(diag, KEEL_ENOMEM, "out of memory");
            free(dir_store);
            goto out;
        }
        snprintf(parent, n + 4, "%s/..", state_dir);
        rc = io->fsync_dir(io, parent);
        free(parent);
        if (rc < 0) {
            keel__diag(diag, rc, "%s: fsync parent directory: %s", state_dir,
                       keel_strerror(rc));
            free(dir_store);
            goto out;
        }
    } else if (made != KEEL_EEXIST) {
        rc = made;
        keel__diag(diag, rc, "%s: %s", state_dir, keel_strerror(rc));
        free(dir_store);
        goto out;
    }
    struct stat st;
    if (!k->o.create && stat(dir_store, &st) != 0) {
        rc = keel__diag(diag, KEEL_ENOENT, "%s: no keel state here", state_dir);
        free(dir_store);
        goto out;
    }
    rc = k->o.read_only ? keel__state_lock_shared(k->dir, &k->lock_fd, diag)
                        : keel__state_lock(k->dir, &k->lock_fd, diag);
    if (rc == KEEL_OK) {
        keel__store_options so;
        keel__store_options_init(&so);
        so.create = k->o.create;
        if (k->o.store_max_bytes != 0) {
            so.map_max_bytes = k->o.store_max_bytes;
        }
        so.read_only = k->o.read_only; /* K17 */
        rc = keel__store_open(dir_store, &so, 0, &k->store, diag);
    }
    free(dir_store);
    if (rc < 0) {
        goto out;
    }
    k->kernel_id = keel__store_kernel_id(k->store);
    keel_wal_options wo;
    keel_wal_options_init(&wo);
    wo.io = k->o.io;
    wo.sync = k->o.sync;
    wo.kernel_id = k->kernel_id;
    if (k->o.wal_segment_bytes != 0) {
        wo.segment_bytes = k->o.wal_segment_bytes;
    }
    /* K16: the checkpoint proves every LSN up to it was acknowledged */
    wo.floor_lsn = keel__store_checkpoint_lsn(k->store);
    wo.read_only = k->o.read_only; /* K17 */
    keel_wal_open_info wi;
    rc = keel_wal_open(k->dir_wal, &wo, &k->wal, &wi, diag);
    if (rc == KEEL_OK) {
        keel_kernel_recovery *r = &k->recovery;
        r->checkpoint_lsn = keel__store_applied_lsn(k->store);
        r->wal_first_lsn = wi.first_lsn;
        r->wal_last_lsn = wi.last_lsn;
        r->torn = wi.torn;
        memcpy(r->torn_segment, wi.torn_segment, sizeof(r->torn_segment));
        r->torn_offset = wi.torn_offset;
        r->torn_bytes = wi.torn_bytes;
        memcpy(r->torn_reason, wi.torn_reason, sizeof(r->torn_reason));
        rc = replay(k, diag);
    }
    if (rc == KEEL_OK && !k->o.read_only) { /* K17: replayed in memory */
        rc = keel__k_checkpoint(k, diag);
    }
    if (rc == KEEL_OK) {
        rc = load_meta(k, diag);
    }
    if (rc == KEEL_OK && k->host.attached != NULL) {
        rc = k->host.attached(k->host.ctx, k, diag); /* e.g. KS6 */
    }
    if (rc == KEEL_OK) {
        rc = check_state(k, diag);
    }
    if (rc == KEEL_OK) {
        rc = keel__k_load_vats(k, diag);
    }
out:
    if (rc < 0) {
        keel_kernel_close(k, NULL);
        return rc;
    }
    k->recovery.seconds = (double)(keel__now_ns() - t0) / 1e9;
    *out = k;
    return KEEL_OK;
}

int keel_kernel_close(keel_kernel *k, keel_diag *diag)
{
    int rc = KEEL_OK;
    if (k == NULL) {
        return KEEL_OK;
    }
    /* Async work first: what is held starts now its log is durable (K35;
     * on a failed kernel only jobs' work, whose done is dropped), then
     * free waits for thread-pool jobs to return (their `done` callbacks
     * are dropped), so no vat is stopped under a running job and no vat
     * code is unloaded while it runs. */
    if (k->wal != NULL && !k->failed) {
        keel__k_start_async(k, 1, NULL);
    } else if (k->wal != NULL) {
        keel__k_start_held_work(k);
    }
    k->host.close(k->host.ctx); /* KH1 */
    keel__k_free_async(k);
    keel__k_reap(k);
    for (size_t i = 0; i < k->nvats; i++) {
        kvat *v = k->vats[i];
        if (v != NULL && v->alive && v->ops != NULL && v->ops->stop != NULL) {
            v->ops->stop(v->state);
        }
        if (v != NULL && v->alive && v->ops != NULL && k->wal != NULL) {
            keel__k_observe(k, KEEL_OBS_VAT_STOP, v->id,
                            keel_wal_last_lsn(k->wal)); /* K36 */
        }
    }
    if (k->failed) {
        rc = k->failed; /* K25: a failure nothing has reported yet */
        if (diag != NULL) {
            *diag = k->fail_diag;
        }
    } else if (k->store != NULL && k->wal != NULL && !k->o.read_only) {
        rc = keel__k_checkpoint(k, diag);
    }
    if (k->wal != NULL) {
        int wrc = keel_wal_close(k->wal, rc == KEEL_OK ? diag : NULL);
        rc = rc == KEEL_OK ? wrc : rc;
    }
    keel__store_close(k->store);
    for (size_t i = 0; i < k->nvats; i++) {
        if (k->vats[i] != NULL && k->vats[i]->dl != NULL) {
            dlclose(k->vats[i]->dl);
        }
        free(k->vats[i]);
    }
    free(k->vats);
    while (k->defer_head != NULL) {
        kdeferred *d = k->defer_head;
        k->defer_head = d->next;
        keel__k_free_deferred(d);
    }
    if (k->lock_fd >= 0) {
        close(k->lock_fd); /* releases the flock */
    }
    free(k->enc);
    keel__kb_free(&k->kb);
    XXH3_freeState(k->hash_state);
    keel__gc_list_free(k->gc_work);
    keel__gc_list_free(k->gc_maybe);
    keel__gc_list_free(k->gc_delta);
    free(k->dir_wal);
    free(k->dir);
    free(k);
    return rc;
}

void keel_kernel_recovery_info(const keel_kernel *k, keel_kernel_recovery *out)
{
    *out = k->recovery;
}

int keel_kernel_booted(const keel_kernel *k)
{
    return k->booted;
}

uint64_t keel_kernel_activity_hash(const keel_kernel *k)
{
    return k->hash;
}

uint64_t keel_kernel_crank_number(const keel_kernel *k)
{
    return k->crank;
}

uint64_t keel_kernel_durable_lsn(keel_kernel *k)
{
    return keel_wal_durable_lsn(k->wal);
}

void keel_kernel_sync_stats(keel_kernel *k, keel_wal_sync_stats *out)
{
    keel_wal_sync_stats_get(k->wal, out);
}

int keel_kernel_gauges_get(keel_kernel *k, keel_kernel_gauges *g)
{
    uint64_t head = 0, tail = 0;
    int rc = keel__k_meta_get(k, KM_RQ_HEAD, &head); /* K27: cached */
    rc = rc >= 0 ? keel__k_meta_get(k, KM_RQ_TAIL, &tail) : rc;
    if (rc < 0) {
        return rc;
    }
    memset(g, 0, sizeof(*g));
    g->crank = k->crank;
    g->run_queue = tail - head;
    g->applied_lsn = keel__store_applied_lsn(k->store);
    g->durable_lsn = keel_wal_durable_lsn(k->wal);
    g->last_lsn = keel_wal_last_lsn(k->wal);
    for (size_t i = 0; i < k->nvats; i++) {
        g->vats_alive += k->vats[i] != NULL && k->vats[i]->alive;
    }
    return KEEL_OK;
}

int keel_kernel_wait_durable(keel_kernel *k, keel_diag *diag)
{
    /* K25: durability is the log's alone. A kernel a checkpoint failed
     * still has its committed records; a failed log says so itself. */
    return keel_wal_sync(k->wal, diag);
}
