/*
 * kernel/inspect.h — read-only queries of a kernel's state for the host's
 * control socket and the CLI (kernel/inspect.c): the vats, one kref's
 * owner, holders and promise record, the object and promise graph as DOT,
 * plus the operator actions the control socket offers (terminate and
 * restart a vat by name) and what it needs of the WAL (the last LSN appended).
 */
#ifndef KEEL_KERNEL_INSPECT_H
#define KEEL_KERNEL_INSPECT_H

#include <stdint.h>

#include "keel/kernel.h"

struct json_t;

/* The last LSN appended to the kernel's WAL (durable or not): a
 * transaction just committed is durable once keel_kernel_durable_lsn()
 * reaches it. */
uint64_t keel__k_last_lsn(keel_kernel *k);
/* The host table's ctx the kernel was opened with (kernel_host.h), NULL
 * without a host. */
void *keel__k_host_ctx(keel_kernel *k);
/* [{"id":N,"name":..,"state":"alive"|"terminated","root":"koN",
 *   "clist":entries}] (new reference into *out). */
int keel__k_vats_json(keel_kernel *k, struct json_t **out, keel_diag *diag);
/* What the state holds of kref, or of vref in vat's c-list when vat is
 * not NULL: {"kref", "kind":"object"|"promise", "owner" (objects: vat
 * name), "holders":[{"vat","vref"}], and for promises "state",
 * "decider", "subscribers":[vat], "queued":[{"method","result"}],
 * "body" when settled}. @return KEEL_OK, KEEL_ENOENT (no such kref, vat
 * or vref; diag says which), KEEL_EINVAL (not a kref), or a storage
 * error. */
int keel__k_inspect_json(keel_kernel *k, const char *kref, const char *vat,
                         const char *vref, struct json_t **out,
                         keel_diag *diag);
/* Terminate the live vat `name` as one kernel-op transaction (as a vat
 * that made an illegal syscall is: its promises rejected, its c-list
 * cleaned up in batches). @return KEEL_OK, KEEL_ENOENT (no live vat of
 * that name), or a storage error. */
int keel__k_terminate_vat(keel_kernel *k, const char *name, keel_diag *diag);
/* Restart the live vat `name` between cranks: its stop(), then its start
 * from its vatstore as a kernel open does (a start that fails terminates
 * it, as at open). *alive: whether it is alive after. The restart writes
 * nothing itself; the vat's start may (its own transactions), so an answer
 * waits for the last LSN. @return KEEL_OK, KEEL_ENOENT (no live vat of
 * that name), KEEL_EBUSY (timers or jobs of the vat pending: nothing
 * done), or a storage error. */
int keel__k_restart_vat(keel_kernel *k, const char *name, int *alive,
                        keel_diag *diag);
/* Checkpoint the store now (after the WAL is durable up to it). */
int keel__k_checkpoint_now(keel_kernel *k, keel_diag *diag);
/* The graph as Graphviz DOT (malloc'd, caller frees): a node per vat,
 * object and promise; edges owner -> object, vat -> kref for every c-list
 * entry (labelled with the vref), promise -> decider, promise ->
 * subscriber. */
int keel__k_graph_dot(keel_kernel *k, char **out, keel_diag *diag);

#endif
