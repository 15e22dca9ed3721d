/*
 * host/notify.h — service-manager notification (systemd's sd_notify):
 * READY=1 once recovery is done, STOPPING=1 when a stop begins, and
 * WATCHDOG=1 at half of $WATCHDOG_USEC from between cranks. Without
 * $NOTIFY_SOCKET every call is a no-op. Invariants N1..N3 in
 * host/notify.c.
 */
#ifndef KEEL_HOST_NOTIFY_H
#define KEEL_HOST_NOTIFY_H

#include <stdint.h>

typedef struct keel_notify {
    int on;               /* $NOTIFY_SOCKET set */
    uint64_t watchdog_ns; /* ping interval (half of WATCHDOG_USEC); 0 none */
    uint64_t last_ping_ns;
    int stopping;
} keel_notify;

void keel__notify_init(keel_notify *n);
void keel__notify_ready(keel_notify *n);
void keel__notify_stopping(keel_notify *n);
/* Between cranks: WATCHDOG=1 if the interval passed. */
void keel__notify_tick(keel_notify *n);

#endif
