/*
 * host/observe.h — what `keel run` does with the kernel's observations
 * (keel_kernel_options.observe): hold each until it is durable, then count
 * it in the metrics and write it to the event log; sample the gauges and
 * ping the service manager from the run loop's ticks. Invariants OB1..OB3
 * in host/observe.c.
 */
#ifndef KEEL_HOST_OBSERVE_H
#define KEEL_HOST_OBSERVE_H

#include <stdint.h>

#include "host/eventlog.h"
#include "host/metrics.h"
#include "host/notify.h"
#include "keel/keel.h"

typedef struct keel_obs_config {
    const char *state_dir;
    const char *metrics_listen; /* NULL: no HTTP listener */
    int metrics_allow_remote;
    const char *event_log; /* NULL: no file */
    uint64_t event_log_max_bytes;
    uint32_t event_log_keep;
} keel_obs_config;

typedef struct keel_obs keel_obs;

/* Before keel_kernel_open: opens the event log, starts the listener,
 * reads $NOTIFY_SOCKET, and sets o->observe. The metrics and the event
 * log always exist (for the control socket), files and listener only when
 * asked. @param[out] port  the metrics port bound (0: none). */
int keel__obs_start(const keel_obs_config *c, keel_kernel_options *o,
                    keel_obs **out, uint16_t *port, keel_diag *diag);
/* keel_kernel_open succeeded: log a torn-tail repair, sample, READY=1. */
void keel__obs_attached(keel_obs *ob, keel_kernel *k);
/* The run loop returned and everything is durable: publish what is held,
 * sample, STOPPING=1. */
void keel__obs_stopping(keel_obs *ob);
/* After keel_kernel_close (whose vat stops and checkpoint are observed):
 * publish the rest if closed_ok (the close synced the log: all of it is
 * durable), stop the listener, close the log. NULL: no-op. */
void keel__obs_free(keel_obs *ob, int closed_ok);

/* Kernel's thread, between cranks (the control socket's metrics request):
 * publish what is held and durable now, and sample the gauges, so the
 * metrics are as of this moment rather than of the last tick. */
void keel__obs_refresh(keel_obs *ob);

keel_metrics *keel__obs_metrics(keel_obs *ob);
keel_eventlog *keel__obs_eventlog(keel_obs *ob);

#endif
