/*
 * host/notify.c — sd_notify for `keel run` (host/notify.h).
 *
 * Invariants:
 *   N1 READY=1 is sent once, after keel_kernel_open recovered the state
 *      (and a new one booted): a service manager that sees it may send
 *      the kernel work.
 *   N2 WATCHDOG=1 is sent only from the run loop's ticks (between
 *      cranks, and every idle slice of at most 100 ms), so a kernel stuck
 *      in a crank or a sync stops pinging and the manager restarts it.
 *      The interval is half of $WATCHDOG_USEC (sd_watchdog_enabled, which
 *      also checks $WATCHDOG_PID).
 *   N3 STOPPING=1 is sent once, when the run loop has stopped and before
 *      the final checkpoint and close.
 */
#include "host/notify.h"

#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "common/clock.h"

void keel__notify_init(keel_notify *n)
{
    memset(n, 0, sizeof(*n));
    const char *s = getenv("NOTIFY_SOCKET");
    n->on = s != NULL && s[0] != '\0';
    uint64_t usec = 0;
    if (n->on && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        n->watchdog_ns = usec * 1000u / 2; /* N2 */
    }
}

void keel__notify_ready(keel_notify *n)
{
    if (n->on) {
        sd_notify(0, "READY=1\nSTATUS=running");
        n->last_ping_ns = keel__now_ns();
    }
}

void keel__notify_stopping(keel_notify *n)
{
    if (n->on && !n->stopping) {
        n->stopping = 1;
        sd_notify(0, "STOPPING=1");
    }
}

void keel__notify_tick(keel_notify *n)
{
    if (n->watchdog_ns == 0 || n->stopping) {
        return;
    }
    uint64_t now = keel__now_ns();
    if (now - n->last_ping_ns >= n->watchdog_ns) {
        sd_notify(0, "WATCHDOG=1");
        n->last_ping_ns = now;
    }
}
