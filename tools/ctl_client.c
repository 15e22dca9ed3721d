/*
 * tools/ctl_client.c — the client side of the control socket for the
 * `keel` commands (tools/ctl_client.h).
 *
 * Invariants:
 *   CC1 A kernel is live only while a writer holds STATE/lock (the shared
 *       lock is refused): a command never asks a socket file a crashed
 *       kernel left behind, and never falls back to reading a state that
 *       a live kernel is changing.
 *   CC2 Reads are buffered per call and bounded: an answer line longer than
 *       64 MiB is an error, not an allocation without end.
 */
#include "tools/ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/state_lock.h"

#define ANSWER_MAX (64u * 1024 * 1024)

int keel__ctl_find(const char *command, const char *state, int *fd)
{
    int lfd = -1;
    keel_diag d = {0};
    *fd = -1;
    int rc = keel__state_lock_shared(state, &lfd, &d);
    if (rc != KEEL_EBUSY) { /* CC1: no writer (or not a state at all) */
        if (lfd >= 0) {
            close(lfd);
        }
        return 0;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    int n =
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", state);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path) || s < 0 ||
        connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (command != NULL) {
            fprintf(stderr,
                    "keel: %s: %s is locked by another keel process and "
                    "%s/control.sock does not answer (%s): is it running "
                    "with --no-control?\n",
                    command, state, state, strerror(errno));
        }
        if (s >= 0) {
            close(s);
        }
        return -1;
    }
    *fd = s;
    return 1;
}

int keel__ctl_read(int fd, json_t **ans, int timeout_ms)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    *ans = NULL;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap == 0 ? 65536 : cap * 2;
            if (cap > ANSWER_MAX) { /* CC2 */
                free(buf);
                return -1;
            }
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                return -1;
            }
            buf = nb;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
        if (pr == 0) {
            free(buf);
            return -1;
        }
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        /* one byte at a time past the newline would be slow; peek */
        ssize_t n = recv(fd, buf + len, cap - len, MSG_PEEK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            free(buf);
            return n == 0 ? 0 : -1;
        }
        char *nl = memchr(buf + len, '\n', (size_t)n);
        size_t take = nl != NULL ? (size_t)(nl - (buf + len)) + 1 : (size_t)n;
        ssize_t got = recv(fd, buf + len, take, 0);
        if (got != (ssize_t)take) {
            free(buf);
            return -1;
        }
        len += take;
        if (nl != NULL) {
            *ans = json_loadb(buf, len - 1, 0, NULL);
            free(buf);
            return *ans != NULL ? 1 : -1;
        }
    }
}

int keel__ctl_send(int fd, json_t *req, json_int_t id)
{
    json_object_set_new(req, "v", json_integer(1));
    json_object_set_new(req, "id", json_integer(id));
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (s == NULL) {
        return -1;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps's NUL becomes the line's end */
    size_t off = 0;
    while (off < n + 1) {
        ssize_t w = send(fd, s + off, n + 1 - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            free(s);
            return -2;
        }
        off += (size_t)w;
    }
    free(s);
    return 0;
}

int keel__ctl_call(const char *command, int fd, json_t *req, json_t **ans)
{
    static json_int_t next_id = 1; /* one call at a time per program */
    json_int_t id = next_id++;
    *ans = NULL;
    int sent = keel__ctl_send(fd, req, id);
    if (sent < 0) {
        fprintf(stderr,
                sent == -1 ? "keel: %s: out of memory\n"
                           : "keel: %s: the kernel closed the control "
                             "connection\n",
                command);
        return -1;
    }
    for (;;) {
        json_t *a = NULL;
        int rc = keel__ctl_read(fd, &a, 0);
        if (rc <= 0) {
            fprintf(stderr,
                    "keel: %s: the kernel closed the control connection "
                    "before answering\n",
                    command);
            return -1;
        }
        json_t *aid = json_object_get(a, "id");
        if (json_is_integer(aid) && json_integer_value(aid) == id) {
            *ans = a;
            return 0;
        }
        json_decref(a);
    }
}

int keel__ctl_failed(const char *command, const json_t *ans)
{
    const json_t *e = json_object_get(ans, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *code = json_string_value(json_object_get(e, "code"));
    fprintf(stderr, "keel: %s: %s (%s)\n", command,
            msg != NULL ? msg : "the kernel refused",
            code != NULL ? code : "?");
    return 1;
}
