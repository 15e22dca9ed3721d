/*
 * host/metrics.h — keel's metrics in the Prometheus text exposition
 * format (version 0.0.4): counters fed with the observations that are
 * durable (host/observe.c), gauges sampled between cranks, rendered into a
 * buffer on any thread (for GET /metrics and the control socket's
 * `metrics` request). Invariants M1..M4 in host/metrics.c; the list of
 * metrics is in docs/operations.md.
 */
#ifndef KEEL_HOST_METRICS_H
#define KEEL_HOST_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

typedef struct keel_metrics keel_metrics;

/* @return KEEL_OK or KEEL_ENOMEM. */
int keel__metrics_new(keel_metrics **out);
/* Stops the HTTP listener first (if any). NULL is a no-op. */
void keel__metrics_free(keel_metrics *m);

/* Kernel's thread: count n observations that are durable. */
void keel__metrics_observe(keel_metrics *m, const keel_observation *const *ob,
                           size_t n);
/* Kernel's thread, between cranks: sample the gauges of k (state_dir: for
 * the WAL's and store's sizes on disk). */
void keel__metrics_sample(keel_metrics *m, keel_kernel *k,
                          const char *state_dir);
/* Any thread: the event log failed a write (counted, M3). */
void keel__metrics_event_log_error(keel_metrics *m);

/* Any thread: the exposition text, malloc'd and NUL-terminated (*len
 * without the NUL). @return KEEL_OK or KEEL_ENOMEM. */
int keel__metrics_render(keel_metrics *m, char **text, size_t *len);

/* Append to buf a Prometheus label value, escaped (backslash, double
 * quote, newline). @return bytes it needs (without NUL), like snprintf. */
size_t keel__metrics_escape(char *buf, size_t cap, const char *v);

/*
 * Serve GET /metrics on addr ("HOST:PORT", HOST a numeric IPv4 address or
 * a bracketed IPv6 one) with libmicrohttpd's own thread (M2). A HOST that
 * is not loopback is refused (KEEL_EINVAL) unless allow_remote.
 * @param[out] port  the port bound (PORT 0: a free one).
 */
int keel__metrics_listen(keel_metrics *m, const char *addr, int allow_remote,
                         uint16_t *port, keel_diag *diag);

#endif
