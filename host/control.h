/*
 * host/control.h — the control socket of a running kernel (host/control.c):
 * STATE/control.sock, a Unix stream socket on the kernel's host loop
 * speaking protocol v1 (docs/control.md), served between cranks only.
 */
#ifndef KEEL_HOST_CONTROL_H
#define KEEL_HOST_CONTROL_H

#include <stdio.h>

#include "host/observe.h"
#include "keel/kernel.h"

/* The bounds of docs/control.md: a request line with its newline; answers
 * queued to one client; connections at once; "wait" sends per
 * connection. */
#define KEEL_CONTROL_LINE_MAX  65536u
#define KEEL_CONTROL_OUT_MAX   1048576u
#define KEEL_CONTROL_CONNS_MAX 1024u
#define KEEL_CONTROL_WAITS_MAX 1024u

typedef struct keel__control keel__control;

typedef struct keel__control_opts {
    /* 1 (keel run --forever): the socket holds the host loop (H11), so the
     * run waits on it when idle. 0: it is served while the run works and
     * the run still ends when idle. */
    int keep_alive;
    /* "stop" writes stop_value here (keel_run_options.stop_flag). */
    volatile int *stop_flag;
    int stop_value;
    FILE *log; /* refused connections, dropped clients (one line each) */
    /* The run's observer: its metrics (the `metrics` request) and event
     * log (the `subscribe-events` request). NULL: both answer
     * "unavailable". It outlives the control socket. */
    keel_obs *obs;
} keel__control_opts;

/*
 * Listen on STATE/control.sock for kernel k (opened by keel_kernel_open,
 * so its lock is held: a socket file left by a crash is replaced).
 * @return KEEL_OK; KEEL_EACCES (STATE can be entered by group or others:
 *         diag says what to chmod); KEEL_EINVAL (the socket path is too
 *         long, or a deterministic host); or the bind's error.
 */
int keel__control_open(keel_kernel *k, const char *state_dir,
                       const keel__control_opts *o, keel__control **out,
                       keel_diag *diag);
/*
 * After the run: answer what is durable (call keel_kernel_wait_durable
 * first), flush the clients' queued answers (up to a second), close every
 * connection and the listener, remove the socket file. Before
 * keel_kernel_close. NULL is a no-op.
 */
void keel__control_close(keel__control *c);

#endif
