/*
 * kernel/kernel_internal.h — what the kernel's files share: the kernel and
 * vat structures and the transaction helpers over the store (the binary
 * codec of run-queue items and promise records is store/codec.h).
 *
 * Keyspace: the keys and what they hold are store/keyspace.h's format;
 * the kernel composes every key with its encoders (never by formatting).
 */
#ifndef KEEL_KERNEL_INTERNAL_H
#define KEEL_KERNEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernel/gc_refs.h"
#include "kernel/kernel_host.h"
#include "store/codec.h"
#include "store/keyspace.h"
#include "store/store.h"
#include "keel/kernel.h"
#include "keel/vat.h"

struct keel_syscall {
    keel_kernel *k;
    struct kvat *v;
};

typedef struct kvat {
    uint32_t id;
    char name[64];
    int alive;
    int stop_pending; /* terminated; stop() not yet called */
    int cleanup;      /* terminated; v.<id>.cleanup pending (K6) */
    const keel_vat_ops *ops;
    void *state;
    void *dl; /* dlopen handle, or NULL for a built-in */
    keel_syscall sys;
    uint64_t next_o; /* in memory; durable as v.<id>.maxo when used */
    uint64_t next_p;
    keel_bytes vs_val; /* last vatstore_get value (borrowed) */
} kvat;

/* A syscall as data, so one arriving during another vat's crank can be
 * held and run as its own transaction after that crank (SPEC §5). */
enum sc_kind {
    SC_SEND,
    SC_SUBSCRIBE,
    SC_RESOLVE,
    SC_EXIT,
    SC_VS_SET,
    SC_VS_DEL,
    SC_GC,     /* flag: what (gc.c keel__gc_syscall), a: the vref */
    SC_ILLEGAL /* a read the vat made illegally; a: what (K31) */
};

typedef struct kdeferred {
    struct kdeferred *next;
    uint32_t vid;
    enum sc_kind kind;
    int flag;        /* resolve: rejected; exit: failure */
    char *a, *b, *c; /* target/promise/key, method, result */
    uint8_t *body;
    size_t body_len;
    char **slots;
    size_t nslots;
} kdeferred;

/* A vat's pending timer (work == NULL) or thread-pool job. It is held by
 * the kernel until the transaction that asked for it is durable (K34),
 * then handed to the host. */
typedef struct kasync {
    struct kasync *prev, *next; /* k->async_head: every one not yet done */
    struct kasync *hnext;       /* k->held_head: those not yet started */
    keel_kernel *k;
    uint32_t vid;
    void (*work)(void *arg);
    void (*done)(void *arg, keel_syscall *sys);
    void *arg;
    uint64_t delay_ms;
    uint64_t lsn;     /* held: starts once the WAL is durable up to it */
    int in_txn;       /* held with the open transaction (lsn not known) */
    int held;         /* not yet handed to the host */
    uint64_t host_id; /* a started timer: its id for the host's cancel */
} kasync;

struct keel_kernel {
    char *dir;
    char *dir_wal;
    int lock_fd;
    keel_kernel_options o;
    keel__store *store;
    keel_wal *wal;
    keel__khost host; /* KH1, KH2: the table the kernel was opened with */
    int hostless;     /* KH2: opened without a host */
    uint64_t kernel_id;
    kvat **vats; /* by id - 1; NULL for ids never created */
    size_t nvats;
    int booted;
    uint64_t crank;
    uint64_t hash;
    /* transaction state */
    int in_txn;
    kvat *delivering; /* the vat the current crank delivers to */
    uint32_t txn_vid; /* the vat whose syscalls this transaction holds */
    int illegal;      /* a syscall in this transaction was illegal */
    uint32_t crashed; /* KH3: this crank's worker vat crashed */
    char illegal_msg[256];
    uint32_t exit_vid; /* exit requested in this transaction */
    kdeferred *defer_head, *defer_tail;
    kasync *async_head;
    kasync *held_head, *held_tail; /* K34: in order of request */
    uint64_t nheld;
    /* checkpoint policy */
    uint64_t txns_since_ckpt;
    uint64_t ckpt_ns;
    /* stats of the current run */
    uint64_t stat_txns;
    uint64_t stat_deliveries;
    int failed; /* sticky: a storage error broke the kernel */
    keel_diag fail_diag;
    keel_kernel_recovery recovery; /* what open found and did */
    void *hash_state;              /* XXH3_state_t, reused by every commit */
    uint8_t *enc;                  /* scratch for encodings */
    size_t enc_cap;
    kbuf kb; /* scratch for run-queue items and promise records (K28) */
    /* K36: what options.observe is told of the open transaction */
    uint64_t obs_t0;
    uint32_t obs_syscalls;
    int obs_notify;
    int obs_aborted; /* the next terminate follows an aborted crank */
    char obs_method[KEEL_METHOD_MAX + 1];
    /* K27: the hot counters' values as the store holds them (kernel.c) */
    struct {
        uint64_t val;
        uint8_t state; /* 0 not known, 1 present (val), 2 absent */
    } ctr[5];
    /* kernel/gc.c: G1's scratch, G2's krefs to look at when the
     * transaction ends, whether gc.* actions may be queued */
    void *gc_work, *gc_maybe;
    void *gc_delta; /* G1: count changes of the open transaction, applied
                       to rc.<kref> when it ends (keel__gc_end) */
    int gc_pending;
    int gc_off; /* KEEL_GC_OFF in a KEEL_GC_AB build: no counts (A/B) */
    int gc_new; /* the next holder put is of a key known to be absent */
    const keel_bytes *gc_old; /* the next holder delete's value, known */
};

/* --- kernel.c: transactions and store access --------------------------- */
int keel__k_txn_begin(keel_kernel *k);
/* Commit the open transaction as one WAL record of kind. */
int keel__k_txn_commit(keel_kernel *k, int kind, keel_diag *diag);
void keel__k_txn_abort(keel_kernel *k);
/* Store access by keys composed with store/keyspace.h's encoders. */
int keel__k_get(keel_kernel *k, const keel__key *key, keel_bytes *val);
/* A u64 value (8 bytes big-endian): counters, maxima. @return 1, 0
 * absent, < 0 (a value of another length is ECORRUPT). */
int keel__k_get_u64(keel_kernel *k, const keel__key *key, uint64_t *v);
/* A u32 value (4 bytes big-endian): vat ids. */
int keel__k_get_u32(keel_kernel *k, const keel__key *key, uint32_t *v);
int keel__k_put(keel_kernel *k, const keel__key *key, const void *val,
                size_t len);
int keel__k_put_u64(keel_kernel *k, const keel__key *key, uint64_t v);
int keel__k_put_u32(keel_kernel *k, const keel__key *key, uint32_t v);
int keel__k_del(keel_kernel *k, const keel__key *key);
/* The meta counter field (keyspace.h KM_*), through the K27 cache. */
int keel__k_meta_get(keel_kernel *k, uint8_t field, uint64_t *v);
int keel__k_meta_put(keel_kernel *k, uint8_t field, uint64_t v);
/* Smallest key > after (NULL: none) starting with prefix, into *out.
 * @return 1, 0 (none), < 0. */
int keel__k_next(keel_kernel *k, const keel__key *prefix,
                 const keel__key *after, keel__key *out);
/* Storage failure naming a key (rendered, keel__ks_render). @return rc. */
int keel__k_fail_key(keel_kernel *k, int rc, const keel__key *key);
/* K23 (run.c): KEEL_OK if m is 1..KEEL_METHOD_MAX bytes of valid UTF-8;
 * else KEEL_EINVAL and, when why != NULL, what is wrong ("is not valid
 * UTF-8", checked by jansson) in why[cap]. */
int keel__k_method_check(const char *m, char *why, size_t cap);
/* Checkpoint now (K11: after the WAL is durable). */
int keel__k_checkpoint(keel_kernel *k, keel_diag *diag);
/*
 * K14: apply the durable records of the log in wal_dir after s's applied
 * LSN up to last, in order with no gap, checkpointing s on the way (every
 * 8 MiB pending), with the store's one loop (keel__store_replay). Kernel
 * open and `keel bench recover` use it.
 * @param[out] replayed, bytes  records and payload bytes applied.
 * @return KEEL_OK; KEEL_ECORRUPT (a gap, a store ahead of the log, a bad
 *         payload: the diag names segment, offset, LSN); reader or store
 *         errors.
 */
int keel__k_replay(keel__store *s, const char *wal_dir, struct keel_io *io,
                   uint64_t last, uint64_t *replayed, uint64_t *bytes,
                   keel_diag *diag);
/* Storage failure: make the kernel FAILED. @return rc. */
int keel__k_fail(keel_kernel *k, int rc, const char *what);
kvat *keel__k_vat(keel_kernel *k, uint32_t vid);
int keel__k_vat_start(keel_kernel *k, kvat *v, keel_diag *diag);
/* Load every vat from the store and start the live ones. */
int keel__k_load_vats(keel_kernel *k, keel_diag *diag);
/* Can path be loaded as a vat (for a config's vat `name`)? */
int keel__k_check_library(const char *name, const char *path, keel_diag *diag);
/* The options' resolver, then keel's built-ins. */
const keel_vat_ops *keel__k_builtin(const keel_kernel *k, const char *name);

/* K36: hand ob to options.observe, if set (kernel.c). */
void keel__k_observe(keel_kernel *k, int what, uint32_t vid, uint64_t lsn);

/* K19: call the options' crash hook, if any, at event (enum
 * keel_crash_event) of a transaction of kind (0: a checkpoint). */
void keel__k_crash_point(keel_kernel *k, int event, int kind);

/* --- crank.c: routing, promises, translation, termination -------------- */
int keel__k_enqueue_send(keel_kernel *k, const char *target, const char *method,
                         const void *body, size_t body_len, char *const *slots,
                         size_t nslots, const char *result);
int keel__k_enqueue_notify(keel_kernel *k, uint32_t vid, const char *kp);
int keel__k_promise_new(keel_kernel *k, uint32_t decider, char *out);
int keel__k_vref_to_kref(keel_kernel *k, kvat *v, const char *vref, char *out);
int keel__k_kref_to_vref(keel_kernel *k, kvat *v, const char *kref, char *out);
int keel__k_illegal(keel_kernel *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Run one syscall of vat v in the open transaction. */
int keel__k_exec(keel_kernel *k, kvat *v, const kdeferred *sc);
int keel__k_terminate(keel_kernel *k, uint32_t vid, keel_diag *diag);
/* 1 if a terminated vat's cleanup is pending (K6). */
int keel__k_cleanup_pending(const keel_kernel *k);
/* K6: one cleanup batch of the lowest-numbered vat with a cleanup pending,
 * as its own kernel-op transaction: only if no batch ran since the last
 * crank committed, unless force. @return 1 a batch committed, 0 none due,
 * < 0. */
int keel__k_cleanup(keel_kernel *k, int force, keel_diag *diag);
/* Commit the open transaction as keel__k_txn_commit() does; a vat that
 * asked to exit in it is terminated in the same transaction (K6), so its
 * exit is durable with the syscalls that made it, or lost with them. */
int keel__k_txn_commit_exits(keel_kernel *k, int kind, keel_diag *diag);
/* Call stop() of vats terminated since the last call: only where no vat
 * code is on the stack (after a crank, after an async callback, at close).
 */
void keel__k_reap(keel_kernel *k);
int keel__k_subscribe(keel_kernel *k, uint32_t vid, const char *kp);
int keel__k_settle(keel_kernel *k, const char *kp, int rejected,
                   const void *body, size_t body_len, char *const *slots,
                   size_t nslots);
/* Decode a promise's state (0/1/2) and body. */
int keel__k_promise_state(keel_kernel *k, const char *kp, int *state,
                          char **body);

/* --- gc.c: reference counts and GC actions (G1..G4) ------------------- */
/* G1: adjust the counts for a write of key (a put of val, or a delete). */
int keel__gc_track(keel_kernel *k, const keel__key *key, const void *val,
                   size_t len, int del);
/* G2: settle the krefs whose counts fell to zero, before commit. */
int keel__gc_end(keel_kernel *k);
void keel__gc_abort(keel_kernel *k);
/* r's stored counts (rc.<kref>; absent: 0 and 0), without the open
 * transaction's changes. @return KEEL_OK or < 0. */
int keel__gc_stored(keel_kernel *k, keel__kref r, uint32_t *reach,
                    uint32_t *recog);
/* The first queued GC action, deleted in the open transaction, into *act.
 * @return 1, 0 (none), < 0. */
int keel__gc_next(keel_kernel *k, keel__ks_key *act);
/* G3: deliver act with call (crank.c's call_vat), if still due. */
int keel__gc_deliver(keel_kernel *k, const keel__ks_key *act,
                     int (*call)(keel_kernel *, kvat *, const keel_delivery *));
/* A GC syscall: what 0 dropImports, 1 retireImports, 2 retireExports,
 * 3 abandonExports, of one vref. */
int keel__gc_syscall(keel_kernel *k, kvat *v, int what, const char *vref);
/* Queue retireImports of r to every live vat but except that holds it. */
int keel__gc_retire_importers(keel_kernel *k, uint32_t except, keel__kref r);
/* Set vid's c-list entry for r (vref vr) reachable or dropped. */
int keel__gc_set_reach(keel_kernel *k, uint32_t vid, keel__kref r,
                       keel__vref vr, int reach);
/* --- syscall.c ---------------------------------------------------------- */
/* Run the syscalls held during another vat's crank. */
int keel__k_run_deferred(keel_kernel *k, keel_diag *diag);
void keel__k_free_deferred(kdeferred *d);
/* Free the closures of async work the host dropped unrun. */
void keel__k_free_async(keel_kernel *k);
/* K34: the open transaction committed as the record at lsn: the async
 * work it asked for starts once lsn is durable. */
void keel__k_async_committed(keel_kernel *k, uint64_t lsn);
/* K34: the open transaction aborted: the work it asked for never starts. */
void keel__k_async_aborted(keel_kernel *k);
/* K34: hand the held work whose transaction is durable to the host, in
 * order of request; with wait, first wait until all of it is durable. */
int keel__k_start_async(keel_kernel *k, int wait, keel_diag *diag);
/* K35, at the close of a failed kernel: start the held jobs' work whose
 * log is (or can still be made) durable; drop the rest of what is held. */
void keel__k_start_held_work(keel_kernel *k);
/* K32: drop vid's async work that has not started (held or in the host). */
void keel__k_cancel_async(keel_kernel *k, uint32_t vid);

#endif
