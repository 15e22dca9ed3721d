/*
 * keel/vat.h — the vat ABI: how the kernel delivers to a vat and how a vat
 * makes syscalls.
 *
 * Overview
 *   A vat is a table of three functions (keel_vat_ops): start (on every
 *   kernel start, boot or restart: rebuild from the vatstore), deliver (one
 *   message or promise notification), stop. Vats are built in (registered by
 *   name, see keel_vat_builtin()) or loaded with dlopen from a shared object
 *   that exports `const keel_vat_ops *keel_vat_entry(void)`.
 *
 *   A vat names things by vrefs: `o+N` an object it exports (o+0 is its
 *   root object), `o-N` one it imported, `p+N` a promise it allocated,
 *   `p-N` one the kernel gave it. It can only use vrefs in its c-list or
 *   new `o+N`/`p+N` it allocates (keel_syscall_alloc_object / _promise).
 *   Using an `o-N`/`p-N` it was never given is forging: the syscall is
 *   illegal and the vat is terminated.
 *
 * Capdata
 *   Message arguments and resolutions are capdata: a body (bytes; by
 *   convention JSON, which the kernel never parses) and an ordered list of
 *   slots (vrefs), which the kernel translates. The body refers to slot i as
 *   {"@slot":i}. A resolution whose body is exactly KEEL_CAPDATA_SLOT0 with
 *   one object slot is "fulfilled to that object": messages sent to the
 *   promise are forwarded to it. Any other fulfilment is plain data.
 *
 * In and out of a crank
 *   Syscalls a vat makes inside deliver() belong to that crank: buffered,
 *   committed together at crank end, or discarded if the crank aborts
 *   (deliver returned nonzero or any syscall was illegal). The syscalls one
 *   async completion (a keel_vat_timer or keel_vat_work callback) makes run
 *   between cranks and together form one out-of-crank transaction,
 *   committed and enqueued the moment the callback returns (an illegal one
 *   discards them all and terminates the vat). A syscall made outside any
 *   crank and any callback (in start) is its own transaction.
 *
 * Threading
 *   Every function here must be called on the kernel's thread (deliver,
 *   start, and the `done` callbacks run there). keel_vat_work's `work`
 *   function runs on a thread-pool thread and must not make syscalls.
 */
#ifndef KEEL_VAT_H
#define KEEL_VAT_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2: the GC deliveries and syscalls. A vat built for 1 is refused at
 * load (it would mistake a GC delivery for a message). */
#define KEEL_VAT_ABI_VERSION    2
#define KEEL_VAT_ENTRY_SYMBOL   "keel_vat_entry"
#define KEEL_CAPDATA_SLOT0      "{\"@slot\":0}"
#define KEEL_VREF_MAX           24  /* "p+18446744073709551615" + NUL */
#define KEEL_VATSTORE_KEY_MAX   480 /* the store keys it under a prefix */
#define KEEL_VATSTORE_VALUE_MAX (1024u * 1024)
/* A method name is 1..KEEL_METHOD_MAX bytes of valid UTF-8 (RFC 3629),
 * without the NUL; keel_syscall_send with any other is illegal, and
 * keel_kernel_send refuses it. */
#define KEEL_METHOD_MAX 255

typedef struct keel_capdata {
    keel_bytes body;
    const char *const *slots; /* nslots vrefs */
    size_t nslots;
} keel_capdata;

enum keel_delivery_kind {
    KEEL_DELIVER_MESSAGE = 1,
    KEEL_DELIVER_NOTIFY = 2,
    /* Garbage collection (docs/kernel.md): vrefs lists the vrefs. Each
     * is its own crank, delivered before any message or notify. */
    KEEL_DELIVER_DROP_EXPORTS = 3,   /* o+N: no one else reaches these now;
                                        the vat may let them go */
    KEEL_DELIVER_RETIRE_EXPORTS = 4, /* o+N: nor recognizes them: gone from
                                        its c-list; forget them */
    KEEL_DELIVER_RETIRE_IMPORTS = 5, /* o-N: their exporter retired or
                                        lost them: gone from its c-list */
};

/* One delivery; everything is borrowed for the duration of deliver(). */
typedef struct keel_delivery {
    int kind;
    /* MESSAGE: target is an o+N of this vat; result is a vref (p-N) this
     * vat now decides, or NULL. */
    const char *target;
    const char *method;
    keel_capdata args;
    const char *result;
    /* NOTIFY: promise is the settled promise; rejected and resolution. */
    const char *promise;
    int rejected;
    keel_capdata resolution;
    /* DROP_EXPORTS, RETIRE_EXPORTS, RETIRE_IMPORTS */
    const char *const *vrefs;
    size_t nvrefs;
} keel_delivery;

typedef struct keel_syscall keel_syscall; /* per-vat handle, kernel-owned */

typedef struct keel_vat_ops {
    int abi_version; /* KEEL_VAT_ABI_VERSION */
    const char *name;
    /* Start (boot and every restart). params_json: the config's "params"
     * (never NULL; "{}" when absent). *state is passed back to deliver.
     * Syscalls made here are out of crank. @return 0, or nonzero to fail
     * the start (the vat is then terminated). */
    int (*start)(keel_syscall *sys, const char *params_json, void **state);
    /* @return 0, or nonzero: the vat failed; the crank aborts and the vat
     * is terminated. Fail only on a broken invariant of the vat's own: a
     * message it does not accept is refused by rejecting its result
     * (docs/kernel.md, "Writing a vat"). */
    int (*deliver)(void *state, keel_syscall *sys, const keel_delivery *d);
    void (*stop)(void *state);
} keel_vat_ops;

typedef const keel_vat_ops *(*keel_vat_entry_fn)(void);

/*
 * Syscalls. Each returns KEEL_OK or a negative error; an illegal syscall
 * returns KEEL_EINVAL and dooms the vat (the crank aborts; out of crank the
 * vat is terminated at once).
 */
/* Queue a message to target (o+N, o-N, p+N, p-N). method: 1..
 * KEEL_METHOD_MAX bytes of valid UTF-8 (anything else is illegal). result:
 * NULL, or a fresh p+N (from keel_syscall_alloc_promise) that the receiver
 * will decide. */
KEEL_API int keel_syscall_send(keel_syscall *sys, const char *target,
                               const char *method, const keel_capdata *args,
                               const char *result);
/* Ask for one notify when promise settles (at once if it already has). */
KEEL_API int keel_syscall_subscribe(keel_syscall *sys, const char *promise);
/* Settle a promise this vat decides. */
KEEL_API int keel_syscall_resolve(keel_syscall *sys, const char *promise,
                                  int rejected, const keel_capdata *data);
/* Terminate this vat after the current transaction commits. */
KEEL_API int keel_syscall_exit(keel_syscall *sys, int failure,
                               const keel_capdata *info);
/* Garbage collection (docs/kernel.md, "Garbage collection"). Each takes
 * n vrefs; one not held by the vat makes the syscall illegal.
 * drop_imports: o-N it no longer reaches (it may still recognize them,
 *   e.g. as keys of a weak table); a vref already dropped is illegal.
 * retire_imports: o-N it dropped and no longer recognizes: they leave its
 *   c-list; one still reachable (not dropped) is illegal. The same object
 *   given to it later arrives under a fresh o-N.
 * retire_exports: o+N it was told were dropped (dropExports) and that it
 *   forgets; importers that still recognize them get retireImports.
 *   Retiring an export that is still reachable is illegal.
 * abandon_exports: o+N it gives up though others may still hold them:
 *   messages to them are rejected from now on. */
KEEL_API int keel_syscall_drop_imports(keel_syscall *sys,
                                       const char *const *vrefs, size_t n);
KEEL_API int keel_syscall_retire_imports(keel_syscall *sys,
                                         const char *const *vrefs, size_t n);
KEEL_API int keel_syscall_retire_exports(keel_syscall *sys,
                                         const char *const *vrefs, size_t n);
KEEL_API int keel_syscall_abandon_exports(keel_syscall *sys,
                                          const char *const *vrefs, size_t n);
/* The vat's own durable key-value space. Keys are UTF-8, 1..480 bytes;
 * values at most 1 MiB. get: 1 found (*val borrowed until the next syscall),
 * 0 absent. next_key: 1 and the smallest key > after ("" for the first)
 * copied into buf (cap >= KEEL_VATSTORE_KEY_MAX + 1), 0 when none. */
KEEL_API int keel_syscall_vatstore_get(keel_syscall *sys, const char *key,
                                       keel_bytes *val);
KEEL_API int keel_syscall_vatstore_set(keel_syscall *sys, const char *key,
                                       const void *val, size_t len);
KEEL_API int keel_syscall_vatstore_delete(keel_syscall *sys, const char *key);
KEEL_API int keel_syscall_vatstore_next_key(keel_syscall *sys,
                                            const char *after, char *buf,
                                            size_t cap);
/* Allocate a fresh o+N / p+N into buf[KEEL_VREF_MAX]. The counters are in
 * memory: nothing is written until the vref is used in a syscall, which
 * records the highest number used (durable with that syscall's
 * transaction). So a number used is never handed out again, even after a
 * restart; one allocated but never used may be. */
KEEL_API int keel_syscall_alloc_object(keel_syscall *sys, char *buf);
KEEL_API int keel_syscall_alloc_promise(keel_syscall *sys, char *buf);
/* The vat's name in the cluster config. Static while the vat lives. */
KEEL_API const char *keel_syscall_vat_name(const keel_syscall *sys);

/*
 * Async work, run by the host loop. Callbacks run on the kernel's thread
 * between cranks; syscalls they make are out of crank (one transaction per
 * callback, above).
 *
 * Output commit: a request only asks. The timer is started, or the job
 * handed to the thread pool, after the transaction the request was made in
 * (the crank, or the callback's transaction) has committed and its WAL
 * record is durable, under every sync policy (under `group` that may be a
 * few milliseconds later). If that transaction aborts (deliver failed, a
 * syscall was illegal, the crank was too big), the request is dropped:
 * neither work nor done ever runs, and freeing arg is up to the vat. A
 * request made outside the vat's own transaction (in start) waits until
 * everything committed so far is durable. Requests start in the order they
 * were made. So nothing the work does outside can precede its cause.
 *
 * A job whose transaction committed has its work run exactly once, even if
 * the vat terminates or the kernel closes or fails before it started (the
 * vat may free what it shares with the job there); in those cases its done
 * is not called. The one exception: a log that fails before the job's
 * transaction is durable drops the job unrun (its effects may not precede
 * their cause), and the kernel with it.
 * When a vat terminates, its timers are cancelled (they never fire), and a
 * request made with its handle afterwards returns KEEL_OK and never runs.
 * Pending work of live vats (held or started) keeps `keel run` from
 * deciding it is idle; a terminated vat's timers never do (its jobs only
 * until their work returns).
 */
KEEL_API int keel_vat_timer(keel_syscall *sys, uint64_t delay_ms,
                            void (*cb)(void *arg, keel_syscall *sys),
                            void *arg);
KEEL_API int keel_vat_work(keel_syscall *sys, void (*work)(void *arg),
                           void (*done)(void *arg, keel_syscall *sys),
                           void *arg);

/* Built-in vats compiled into keel, by name (NULL if none). */
KEEL_API const keel_vat_ops *keel_vat_builtin(const char *name);

#ifdef __cplusplus
}
#endif

#endif
