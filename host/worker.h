/*
 * host/worker.h — the proxy vat that runs a {"worker": ...} config entry
 * as a child process speaking docs/worker-protocol.md (host/worker.c).
 * host/compose.c hands keel__worker_ops and keel__worker_restart to the
 * kernel as its worker host (kernel/kernel_host.h KH3).
 */
#ifndef KEEL_HOST_WORKER_H
#define KEEL_HOST_WORKER_H

#include "kernel/kernel_host.h"
#include "keel/vat.h"

struct keel_host;

/* The worker proxy's vat ops (start gets the whole config entry, KH3). */
extern const keel_vat_ops keel__worker_ops;
/* KH3's worker_restart (ctx unused). */
int keel__worker_restart(void *ctx, keel_syscall *sys, void *state);
/* Close every worker's handles on loop h (before the loop is freed; the
 * processes live on until their vat's stop). */
void keel__worker_detach(struct keel_host *h);

#endif
