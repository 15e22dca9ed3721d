/*
 * tools/ctl_client.h — the `keel` commands' side of the control socket
 * (tools/ctl_client.c): find a live kernel through STATE/lock and ask it
 * one request at a time (protocol v1, docs/control.md).
 */
#ifndef KEEL_TOOLS_CTL_CLIENT_H
#define KEEL_TOOLS_CTL_CLIENT_H

#include <jansson.h>

/*
 * Is a kernel running on STATE? If a writer holds STATE/lock, connect to
 * STATE/control.sock: 1 with *fd connected. 0: no writer holds the lock
 * (the caller reads the state as before). -1: a writer holds it but its
 * socket does not answer (printed, unless command is NULL: `keel:
 * <command>: ...`, naming --no-control).
 */
int keel__ctl_find(const char *command, const char *state, int *fd);
/*
 * Send req (stolen; "v" and "id" added) and read answers until the one
 * whose id matches (new reference into *ans). @return 0; -1 (printed)
 * when the connection ended first.
 */
int keel__ctl_call(const char *command, int fd, json_t *req, json_t **ans);
/* Send req (stolen; "v" and "id" added) as one line, answers unread.
 * @return 0; -1 out of memory; -2 the connection ended. */
int keel__ctl_send(int fd, json_t *req, json_int_t id);
/* The next answer line from fd (new reference), waiting up to timeout_ms
 * (0: forever). @return 1 an answer, 0 the connection ended, -1 timed out
 * or failed. */
int keel__ctl_read(int fd, json_t **ans, int timeout_ms);
/* Print an {"ok":false} answer as `keel: <command>: <message>`.
 * @return 1 (KEEL_CLI_FAIL). */
int keel__ctl_failed(const char *command, const json_t *ans);

#endif
