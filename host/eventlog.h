/*
 * host/eventlog.h — the event log: one JSON object per line (jansson) for
 * every durable observation (host/observe.c), written to --event-log FILE
 * with size-based rotation, and handed to subscribers (the control
 * socket's subscribe-events). Schema: docs/operations.md. Invariants
 * EL1..EL4 in host/eventlog.c.
 */
#ifndef KEEL_HOST_EVENTLOG_H
#define KEEL_HOST_EVENTLOG_H

#include <stddef.h>
#include <stdint.h>

#include "host/metrics.h"
#include "keel/keel.h"

typedef struct keel_eventlog keel_eventlog;

/* path NULL: no file (subscribers only). max_bytes 0: never rotate; keep:
 * rotated files kept (FILE.1 newest .. FILE.keep). m (may be NULL) counts
 * write errors. @return KEEL_OK, KEEL_ENOMEM, or the open's error (diag
 * names the file). */
int keel__eventlog_open(const char *path, uint64_t max_bytes, uint32_t keep,
                        keel_metrics *m, keel_eventlog **out, keel_diag *diag);
void keel__eventlog_close(keel_eventlog *el);

/* Kernel's thread: log one durable observation. Never fails the caller
 * (EL2). */
void keel__eventlog_observe(keel_eventlog *el, const keel_observation *ob);
/* Write the lines gathered so far (EL1). */
void keel__eventlog_flush(keel_eventlog *el);
/* Log a torn-tail repair found by recovery. */
void keel__eventlog_torn(keel_eventlog *el, const keel_kernel_recovery *r);

/* A subscriber gets every line (without its newline) on the kernel's
 * thread; it must not block. @return an id > 0, or 0 (out of memory). */
uint64_t keel__eventlog_subscribe(keel_eventlog *el,
                                  void (*cb)(void *arg, const char *line,
                                             size_t len),
                                  void *arg);
void keel__eventlog_unsubscribe(keel_eventlog *el, uint64_t id);

/* 1 if a line would go anywhere (a file or a subscriber): without, the
 * caller skips formatting it. */
int keel__eventlog_active(const keel_eventlog *el);

/* Lines written to the file and write errors so far (tests). */
uint64_t keel__eventlog_errors(const keel_eventlog *el);

#endif
