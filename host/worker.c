/*
 * host/worker.c — a vat in a worker process (docs/worker-protocol.md): the
 * proxy vat the kernel delivers to (keel__worker_ops, kernel_host.h KH3),
 * which runs the config's command as a child and speaks the protocol with
 * the one codec (keel/worker_format.h) over fds 3 (kernel → worker) and 4
 * (worker → kernel); fd 0 is /dev/null, 1 and 2 are captured line by line
 * to keel's stderr prefixed "[vat NAME] ".
 *
 * Limits (RLIMIT_AS, RLIMIT_CPU) are applied in the child before the
 * command runs by an exec wrapper: /bin/sh -c 'ulimit -v K; ulimit -t S;
 * exec "$@"'. uv_spawn has no pre-exec hook; prlimit(2) on the pid after
 * the spawn would leave the command running unlimited for a moment, and
 * re-executing keel would need keel's own path, which a library user
 * does not have. sh is POSIX and the limits then hold from the command's
 * first instruction.
 *
 * Invariants:
 *   WK1 Everything the kernel reads from a worker goes through
 *       keel_wf_frame_length (a length above 16 MiB is a crash before a
 *       byte of it is allocated) and keel_wf_decode (WF1) before anything
 *       is applied; the read buffer grows to at most one frame.
 *   WK2 During a delivery the kernel blocks on fd 4 (poll(2), draining
 *       fds 1 and 2 so the worker never blocks on them) until DONE, for at
 *       most timeout_ms; EOF, a malformed frame or the timeout is a crash:
 *       the process is SIGKILLed and reaped, and deliver returns
 *       KEEL__VAT_CRASHED (the kernel aborts the crank, then calls
 *       keel__worker_restart).
 *   WK3 Between cranks, fd 4 is watched by a uv_poll: a SYSCALL is its own
 *       out-of-crank transaction (keel__k_oc_txn), a BEGIN..END group one
 *       transaction served synchronously; a group that ends in a crash is
 *       discarded. A group that crossed a DELIVER is held and committed as
 *       its own transaction after that crank (a keel_vat_timer of 0 asked
 *       in the crank: it runs once the crank is durable, and not at all if
 *       the crank aborts).
 *   WK4 DURABLE notices are keel_vat_timer(0) callbacks asked in the
 *       transaction they report on (K34: they run only once it is
 *       durable, never if it aborts), and are sent only to the process
 *       generation that made the transaction.
 *   WK5 Restarts: at most restarts.max crashes in any window_ms (the
 *       next one gives up: the vat is terminated), each restart after a
 *       backoff of 10 ms doubling to 1 s (reset after a quiet window).
 *       The backoff blocks the kernel's thread; a kernel never fails
 *       because of a worker.
 *   WK6 A worker struct is freed only after its uv handles closed: stop
 *       marks it, kills what is left (STOP, then SIGKILL after 5 s) and
 *       closes the handles; the last close callback frees it.
 *   WK7 A running worker holds the host loop (keel__host_keep, H11): it
 *       may send an out-of-crank syscall at any time, so the run loop
 *       waits on its pipe and a kernel with a live worker is never idle
 *       (`keel run` goes on until it is stopped).
 */
#include "host/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/clock.h"
#include "host/host.h"
#include "keel/worker_format.h"

extern char **environ;

#define STOP_GRACE_MS   5000
#define BACKOFF_MIN_MS  10
#define BACKOFF_MAX_MS  1000
#define DEFAULT_TIMEOUT 30000
#define DEFAULT_RMAX    5
#define DEFAULT_RWINDOW 60000
#define LINE_MAX_BYTES  4096

typedef struct wk wk;

/* A DURABLE notice or a held group waiting for its timer (WK3, WK4). */
typedef struct notice {
    struct notice *prev, *next;
    wk *w;
    uint64_t gen;
    unsigned what;
    uint64_t seq;
    uint8_t *frames; /* a held group: its frames, back to back */
    size_t nframes;
} notice;

struct wk {
    wk *next_all; /* every worker (keel__worker_detach) */
    keel_syscall *sys;
    keel_host *host;
    uv_loop_t *loop;
    char name[64];
    char **argv;
    char **envp;
    char *cwd;
    char *params;
    uint64_t timeout_ms;
    int rmax;
    uint64_t rwindow;
    uint64_t *crashes; /* times (ms) of the last rmax+1 crashes, a ring */
    size_t ncrash;
    uint64_t backoff_ms;
    /* the process */
    int up;
    uint64_t gen;
    pid_t pid;
    int to, from, out[2];
    uv_poll_t *pfrom, *pout[2];
    int handles; /* open uv handles (WK6) */
    int kept;    /* WK7: holds the loop's pending count */
    int stopped;
    uint8_t *rb;
    size_t rlen, rcap;
    char line[2][LINE_MAX_BYTES];
    size_t linelen[2];
    keel_wf_buf wb;
    uint64_t seq;
    uint64_t group_seq; /* the group being served, 0 none */
    notice *notices;
};

static wk *all_workers;

static void wk_free(wk *w)
{
    for (wk **pp = &all_workers; *pp != NULL; pp = &(*pp)->next_all) {
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    }
    while (w->notices != NULL) {
        notice *n = w->notices;
        w->notices = n->next;
        free(n->frames);
        free(n);
    }
    for (size_t i = 0; w->argv != NULL && w->argv[i] != NULL; i++) {
        free(w->argv[i]);
    }
    free(w->argv);
    for (size_t i = 0; w->envp != NULL && w->envp[i] != NULL; i++) {
        free(w->envp[i]);
    }
    free(w->envp);
    free(w->cwd);
    free(w->params);
    free(w->crashes);
    free(w->rb);
    keel_wf_buf_free(&w->wb);
    free(w);
}

static void handle_closed(uv_handle_t *h)
{
    wk *w = h->data;
    free(h);
    if (--w->handles == 0 && w->stopped) {
        wk_free(w); /* WK6 */
    }
}

static void close_handle(wk *w, uv_poll_t **p)
{
    if (*p != NULL) {
        uv_poll_stop(*p);
        uv_close((uv_handle_t *)*p, handle_closed);
        *p = NULL;
    }
    (void)w;
}

/* ---- output lines ------------------------------------------------------ */

static void put_line(wk *w, int i)
{
    fprintf(stderr, "[vat %s] %.*s\n", w->name, (int)w->linelen[i], w->line[i]);
    w->linelen[i] = 0;
}

/* Read what fd out[i] has (non-blocking); 0 at EOF or error. */
static int drain_out(wk *w, int i)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(w->out[i], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        }
        for (ssize_t j = 0; j < n; j++) {
            if (buf[j] == '\n') {
                put_line(w, i);
            } else {
                if (w->linelen[i] == LINE_MAX_BYTES) {
                    put_line(w, i); /* an over-long line, in pieces */
                }
                w->line[i][w->linelen[i]++] = buf[j];
            }
        }
    }
}

/* ---- the process --------------------------------------------------------
 */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* SIGKILL and reap what is left of the process; close its pipes. */
static void kill_proc(wk *w)
{
    close_handle(w, &w->pfrom);
    for (int i = 0; i < 2; i++) {
        if (w->out[i] >= 0) {
            drain_out(w, i);
            if (w->linelen[i] > 0) {
                put_line(w, i);
            }
        }
        close_handle(w, &w->pout[i]);
        close_fd(&w->out[i]);
    }
    close_fd(&w->to);
    close_fd(&w->from);
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        w->pid = 0;
    }
    if (w->kept && w->host != NULL) {
        keel__host_keep(w->host, -1); /* WK7 */
    }
    w->kept = 0;
    w->up = 0;
    w->rlen = 0;
    w->gen++;
}

static int write_all(wk *w, const uint8_t *p, size_t n)
{
    uint64_t deadline = keel__now_ms() + w->timeout_ms;
    while (n > 0) {
        ssize_t k = write(w->to, p, n);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uint64_t now = keel__now_ms();
            if (now >= deadline) {
                return -1;
            }
            struct pollfd pf = {.fd = w->to, .events = POLLOUT};
            poll(&pf, 1, (int)(deadline - now));
            continue;
        }
        return -1; /* EPIPE: it is gone */
    }
    return 0;
}

/* Send the frame(s) in w->wb. @return 0, or -1 (crashed). */
static int flush(wk *w)
{
    int rc = w->up ? write_all(w, w->wb.ptr, w->wb.len) : -1;
    w->wb.len = 0;
    return rc;
}

/* Read what fd 4 has into rb. @return 1 read, 0 nothing now, -1 EOF. */
static int fill(wk *w)
{
    if (w->rcap - w->rlen < 65536) {
        size_t cap =
            w->rcap * 2 > w->rlen + 65536 ? w->rcap * 2 : w->rlen + 65536;
        uint8_t *p = realloc(w->rb, cap);
        if (p == NULL) {
            return -1;
        }
        w->rb = p;
        w->rcap = cap;
    }
    for (;;) {
        ssize_t n = read(w->from, w->rb + w->rlen, w->rcap - w->rlen);
        if (n > 0) {
            w->rlen += (size_t)n;
            return 1;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        }
        return -1;
    }
}

/* A whole frame at the head of rb? @return its size, 0 not yet, -1
 * malformed length (WK1). */
static long frame_ready(wk *w)
{
    if (w->rlen < KEEL_WF_LEN_BYTES) {
        return 0;
    }
    uint32_t len;
    char why[KEEL_WF_WHY_BYTES];
    if (keel_wf_frame_length(w->rb, &len, why, sizeof(why)) < 0) {
        fprintf(stderr, "keel: vat %s: worker sent a malformed frame: %s\n",
                w->name, why);
        return -1;
    }
    size_t need = KEEL_WF_LEN_BYTES + (size_t)len;
    if (w->rlen < need) {
        if (w->rcap < need) { /* WK1: at most one frame */
            uint8_t *p = realloc(w->rb, need);
            if (p == NULL) {
                return -1;
            }
            w->rb = p;
            w->rcap = need;
        }
        return 0;
    }
    return (long)need;
}

static void consume(wk *w, size_t n)
{
    memmove(w->rb, w->rb + n, w->rlen - n);
    w->rlen -= n;
}

/*
 * The next whole frame, copied to *out (malloc'd, *n bytes), blocking up to
 * the deadline while draining stdout/stderr (WK2). @return 1, or -1
 * (EOF, timeout, malformed length).
 */
static int next_frame(wk *w, uint64_t deadline, uint8_t **out, size_t *n)
{
    for (;;) {
        long need = frame_ready(w);
        if (need < 0) {
            return -1;
        }
        if (need > 0) {
            *out = malloc((size_t)need);
            if (*out == NULL) {
                return -1;
            }
            memcpy(*out, w->rb, (size_t)need);
            *n = (size_t)need;
            consume(w, (size_t)need);
            return 1;
        }
        int r = fill(w);
        if (r < 0) {
            return -1;
        }
        if (r > 0) {
            continue;
        }
        uint64_t now = keel__now_ms();
        if (now >= deadline) {
            fprintf(stderr,
                    "keel: vat %s: worker took longer than timeout_ms "
                    "(%llu)\n",
                    w->name, (unsigned long long)w->timeout_ms);
            return -1;
        }
        struct pollfd pf[3] = {{.fd = w->from, .events = POLLIN},
                               {.fd = w->out[0], .events = POLLIN},
                               {.fd = w->out[1], .events = POLLIN}};
        poll(pf, 3, (int)(deadline - now));
        for (int i = 0; i < 2; i++) {
            if (w->out[i] >= 0 && (pf[1 + i].revents & (POLLIN | POLLHUP))) {
                if (!drain_out(w, i)) {
                    close_handle(w, &w->pout[i]);
                    close_fd(&w->out[i]);
                }
            }
        }
    }
}

static int decode(wk *w, const uint8_t *p, size_t n, keel_wf_frame *f,
                  keel_bytes *strs, size_t cap)
{
    char why[KEEL_WF_WHY_BYTES];
    if (keel_wf_decode(p, n, KEEL_WF_FROM_WORKER, f, strs, cap, why,
                       sizeof(why)) < 0) {
        fprintf(stderr, "keel: vat %s: worker sent a malformed frame: %s\n",
                w->name, why);
        return -1;
    }
    return 0;
}

/* ---- syscalls ---------------------------------------------------------- */

static void cstr(char *dst, keel_bytes b)
{
    memcpy(dst, b.ptr, b.len);
    dst[b.len] = '\0';
}

/* A decoded strs as NUL-terminated vrefs (WF1 checked the syntax). */
static char **vrefs_of(const keel_wf_strs *s)
{
    char **v = calloc(s->n + 1, sizeof(*v));
    size_t pos = 0, i = 0;
    keel_bytes b;
    while (v != NULL && keel_wf_strs_next(s, &pos, &b)) {
        v[i] = malloc(b.len + 1);
        if (v[i] == NULL) {
            break;
        }
        cstr(v[i++], b);
    }
    return v;
}

static void vrefs_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
        free(v[i]);
    }
    free(v);
}

/*
 * Apply one decoded SYSCALL frame with sys (in whatever transaction is
 * open); answer a read with RESULT. @return 0, or -1 (could not answer:
 * crashed).
 */
static int apply_syscall(wk *w, keel_syscall *sys, const keel_wf_frame *f)
{
    char a[KEEL_WF_KEY_MAX + 1], m[KEEL_WF_METHOD_MAX + 1], r[KEEL_VREF_MAX];
    char **slots = NULL;
    keel_capdata cd = {.body = f->cap.body};
    if (f->op == KEEL_WF_OP_SEND || f->op == KEEL_WF_OP_RESOLVE ||
        f->op == KEEL_WF_OP_EXIT) {
        slots = vrefs_of(&f->cap.slots);
        if (slots == NULL) {
            return -1;
        }
        cd.slots = (const char *const *)slots;
        cd.nslots = f->cap.slots.n;
    }
    int rc = 0;
    switch (f->op) {
    case KEEL_WF_OP_SEND:
        cstr(a, f->target);
        cstr(m, f->method);
        if (f->has_result) {
            cstr(r, f->result);
        }
        keel_syscall_send(sys, a, m, &cd, f->has_result ? r : NULL);
        break;
    case KEEL_WF_OP_SUBSCRIBE:
        cstr(a, f->promise);
        keel_syscall_subscribe(sys, a);
        break;
    case KEEL_WF_OP_RESOLVE:
        cstr(a, f->promise);
        keel_syscall_resolve(sys, a, f->rejected, &cd);
        break;
    case KEEL_WF_OP_EXIT:
        keel_syscall_exit(sys, f->failure, &cd);
        break;
    case KEEL_WF_OP_VS_SET:
        cstr(a, f->key);
        keel_syscall_vatstore_set(sys, a, f->value.ptr, f->value.len);
        break;
    case KEEL_WF_OP_VS_DELETE:
        cstr(a, f->key);
        keel_syscall_vatstore_delete(sys, a);
        break;
    case KEEL_WF_OP_VS_GET: {
        keel_bytes val = {0};
        cstr(a, f->key);
        int g = keel_syscall_vatstore_get(sys, a, &val);
        rc = keel_wf_put_result(&w->wb, g < 0 ? g : g, g == 1 ? val.ptr : NULL,
                                g == 1 ? val.len : 0);
        rc = rc < 0 ? rc : flush(w);
        break;
    }
    case KEEL_WF_OP_VS_NEXT_KEY: {
        char key[KEEL_VATSTORE_KEY_MAX + 1];
        cstr(a, f->key);
        int g = keel_syscall_vatstore_next_key(sys, a, key, sizeof(key));
        rc = keel_wf_put_result(&w->wb, g, g == 1 ? key : NULL,
                                g == 1 ? strlen(key) : 0);
        rc = rc < 0 ? rc : flush(w);
        break;
    }
    default: { /* the GC ops: 9..12 */
        char **v = vrefs_of(&f->vrefs);
        if (v == NULL) {
            return -1;
        }
        const char *const *cv = (const char *const *)v;
        size_t n = f->vrefs.n;
        if (f->op == KEEL_WF_OP_DROP_IMPORTS) {
            keel_syscall_drop_imports(sys, cv, n);
        } else if (f->op == KEEL_WF_OP_RETIRE_IMPORTS) {
            keel_syscall_retire_imports(sys, cv, n);
        } else if (f->op == KEEL_WF_OP_RETIRE_EXPORTS) {
            keel_syscall_retire_exports(sys, cv, n);
        } else {
            keel_syscall_abandon_exports(sys, cv, n);
        }
        vrefs_free(v);
    }
    }
    vrefs_free(slots);
    return rc < 0 ? -1 : 0;
}

/* One raw SYSCALL frame. @return 0, -1 crashed (malformed or no answer). */
static int apply_raw(wk *w, keel_syscall *sys, const uint8_t *p, size_t n)
{
    keel_wf_frame f;
    if (decode(w, p, n, &f, NULL, 0) < 0 || f.type != KEEL_WF_SYSCALL) {
        return -1;
    }
    return apply_syscall(w, sys, &f);
}

/* ---- DURABLE notices (WK4) ---------------------------------------------- */

static notice *notice_new(wk *w, unsigned what, uint64_t seq)
{
    notice *n = calloc(1, sizeof(*n));
    if (n != NULL) {
        n->w = w;
        n->gen = w->gen;
        n->what = what;
        n->seq = seq;
        n->next = w->notices;
        if (n->next != NULL) {
            n->next->prev = n;
        }
        w->notices = n;
    }
    return n;
}

static void notice_free(notice *n)
{
    if (n->prev != NULL) {
        n->prev->next = n->next;
    } else {
        n->w->notices = n->next;
    }
    if (n->next != NULL) {
        n->next->prev = n->prev;
    }
    free(n->frames);
    free(n);
}

static void durable_cb(void *arg, keel_syscall *sys)
{
    notice *n = arg;
    wk *w = n->w;
    (void)sys;
    if (n->gen == w->gen && w->up &&
        keel_wf_put_durable(&w->wb, n->what, n->seq) == KEEL_OK) {
        flush(w); /* a worker gone is seen on fd 4 */
    }
    notice_free(n);
}

static void ask_durable(wk *w, unsigned what, uint64_t seq)
{
    notice *n = notice_new(w, what, seq);
    if (n != NULL && keel_vat_timer(w->sys, 0, durable_cb, n) != KEEL_OK) {
        notice_free(n);
    }
}

/* ---- spawn, handshake, start ------------------------------------------- */

static void on_out(uv_poll_t *p, int status, int events);
static void on_from(uv_poll_t *p, int status, int events);

static uv_poll_t *watch(wk *w, int fd, uv_poll_cb cb)
{
    uv_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL || uv_poll_init(w->loop, p, fd) != 0) {
        free(p);
        return NULL;
    }
    p->data = w;
    w->handles++;
    uv_poll_start(p, UV_READABLE | UV_DISCONNECT, cb);
    return p;
}

static void proc_closed(uv_handle_t *h)
{
    free(h);
}

/* Spawn the command (§1). @return 0, -1. */
static int spawn(wk *w)
{
    int p3[2], p4[2], po[2][2];
    if (pipe2(p3, O_CLOEXEC) < 0) {
        return -1;
    }
    if (pipe2(p4, O_CLOEXEC) < 0) {
        close(p3[0]);
        close(p3[1]);
        return -1;
    }
    if (pipe2(po[0], O_CLOEXEC) < 0 || pipe2(po[1], O_CLOEXEC) < 0) {
        close(p3[0]);
        close(p3[1]);
        close(p4[0]);
        close(p4[1]);
        return -1;
    }
    uv_stdio_container_t st[5];
    st[0].flags = UV_IGNORE;
    st[1].flags = UV_INHERIT_FD;
    st[1].data.fd = po[0][1];
    st[2].flags = UV_INHERIT_FD;
    st[2].data.fd = po[1][1];
    st[3].flags = UV_INHERIT_FD;
    st[3].data.fd = p3[0];
    st[4].flags = UV_INHERIT_FD;
    st[4].data.fd = p4[1];
    uv_process_options_t o;
    memset(&o, 0, sizeof(o));
    o.file = w->argv[0];
    o.args = w->argv;
    o.env = w->envp;
    o.cwd = w->cwd;
    o.stdio = st;
    o.stdio_count = 5;
    uv_process_t *proc = calloc(1, sizeof(*proc));
    int rc = proc != NULL ? uv_spawn(w->loop, proc, &o) : UV_ENOMEM;
    close(p3[0]);
    close(p4[1]);
    close(po[0][1]);
    close(po[1][1]);
    w->to = p3[1];
    w->from = p4[0];
    w->out[0] = po[0][0];
    w->out[1] = po[1][0];
    if (rc != 0) {
        fprintf(stderr, "keel: vat %s: cannot run %s: %s\n", w->name,
                w->argv[0], uv_strerror(rc));
        if (proc != NULL && rc != UV_ENOMEM) {
            uv_close((uv_handle_t *)proc, proc_closed);
        } else {
            free(proc);
        }
        close_fd(&w->to);
        close_fd(&w->from);
        close_fd(&w->out[0]);
        close_fd(&w->out[1]);
        return -1;
    }
    w->pid = proc->pid;
    /* The kernel reaps it itself (kill_proc): libuv forgets it now. */
    uv_close((uv_handle_t *)proc, proc_closed);
    int fds[4] = {w->to, w->from, w->out[0], w->out[1]};
    for (int i = 0; i < 4; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    w->up = 1;
    return 0;
}

/* Handshake and START (§4). @return 0 started, 1 STARTED 0 (terminate),
 * -1 crashed. */
static int start_proc(wk *w)
{
    if (spawn(w) < 0) {
        return -1;
    }
    uint32_t v = KEEL_WF_PROTOCOL_VERSION;
    uint64_t deadline = keel__now_ms() + w->timeout_ms;
    uint8_t *fr = NULL;
    size_t n = 0;
    keel_wf_frame f;
    if (keel_wf_put_hello(&w->wb, &v, 1, w->name) < 0 || flush(w) < 0 ||
        next_frame(w, deadline, &fr, &n) < 0 ||
        decode(w, fr, n, &f, NULL, 0) < 0 || f.type != KEEL_WF_W_HELLO ||
        f.version != KEEL_WF_PROTOCOL_VERSION) {
        free(fr);
        kill_proc(w);
        return -1;
    }
    free(fr);
    uint64_t no, np;
    keel__k_sys_next(w->sys, &no, &np);
    if (keel_wf_put_start(&w->wb, no, np, w->params, strlen(w->params)) < 0 ||
        flush(w) < 0) {
        kill_proc(w);
        return -1;
    }
    for (;;) {
        fr = NULL;
        if (next_frame(w, deadline, &fr, &n) < 0 ||
            decode(w, fr, n, &f, NULL, 0) < 0) {
            free(fr);
            kill_proc(w);
            return -1;
        }
        if (f.type == KEEL_WF_STARTED) {
            int ok = f.ok;
            if (!ok) {
                fprintf(stderr, "keel: vat %s: worker failed to start: %.*s\n",
                        w->name, (int)f.reason.len, (const char *)f.reason.ptr);
            }
            free(fr);
            if (!ok) {
                kill_proc(w);
                return 1;
            }
            break;
        }
        /* Before STARTED: out of crank (reads answered; a write is its own
         * transaction, no transaction being open). */
        int rc = f.type == KEEL_WF_SYSCALL ? apply_syscall(w, w->sys, &f) : -1;
        free(fr);
        if (rc < 0 || !keel__k_sys_alive(w->sys)) {
            kill_proc(w);
            return rc < 0 ? -1 : 1;
        }
    }
    ask_durable(w, KEEL_WF_DURABLE_START, 0);
    w->pfrom = watch(w, w->from, on_from);
    w->pout[0] = watch(w, w->out[0], on_out);
    w->pout[1] = watch(w, w->out[1], on_out);
    if (w->host != NULL) {
        keel__host_keep(w->host, 1); /* WK7 */
        w->kept = 1;
    }
    return 0;
}

/* WK5: a crash now; another process unless the policy gives up. @return
 * 0 running, 1 give up. */
static int restart(wk *w)
{
    for (;;) {
        uint64_t now = keel__now_ms();
        size_t cap = (size_t)w->rmax + 1;
        w->crashes[w->ncrash % cap] = now;
        w->ncrash++;
        size_t recent = 0;
        uint64_t newest_before = 0;
        for (size_t i = 0; i < cap && i < w->ncrash; i++) {
            if (now - w->crashes[i] < w->rwindow) {
                recent++;
            }
            if (w->crashes[i] != now && w->crashes[i] > newest_before) {
                newest_before = w->crashes[i];
            }
        }
        if (recent > (size_t)w->rmax) {
            fprintf(stderr,
                    "keel: vat %s: worker crashed %zu times in %llu ms "
                    "(restarts.max %d): terminating it\n",
                    w->name, recent, (unsigned long long)w->rwindow, w->rmax);
            return 1;
        }
        if (newest_before == 0 || now - newest_before >= w->rwindow) {
            w->backoff_ms = BACKOFF_MIN_MS;
        }
        fprintf(stderr, "keel: vat %s: worker crashed; restarting in %llu ms\n",
                w->name, (unsigned long long)w->backoff_ms);
        struct timespec ts = {(time_t)(w->backoff_ms / 1000),
                              (long)(w->backoff_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                           : w->backoff_ms * 2;
        int rc = start_proc(w);
        if (rc >= 0) {
            return rc;
        }
    }
}

int keel__worker_restart(void *ctx, keel_syscall *sys, void *state)
{
    (void)ctx;
    (void)sys;
    wk *w = state;
    kill_proc(w);
    return restart(w) == 0 ? 0 : -1;
}

static int exit_fn(void *arg, keel_syscall *sys)
{
    (void)arg;
    static const char body[] = "{\"error\":\"worker crashed too often\"}";
    keel_capdata cd = {.body = {body, sizeof(body) - 1}};
    keel_syscall_exit(sys, 1, &cd);
    return 0;
}

/* A crash between cranks: restart, or terminate the vat. */
static void crashed_between(wk *w)
{
    kill_proc(w);
    if (restart(w) != 0) {
        keel__k_oc_txn(w->sys, exit_fn, NULL);
    }
}

/* ---- between cranks (WK3) ------------------------------------------------ */

typedef struct grp {
    wk *w;
    const uint8_t *p; /* a single SYSCALL, or NULL: serve the group */
    size_t n;
    int crashed;
} grp;

static int one_fn(void *arg, keel_syscall *sys)
{
    grp *g = arg;
    g->crashed = apply_raw(g->w, sys, g->p, g->n) < 0;
    return g->crashed;
}

/* Serve BEGIN w->group_seq .. END synchronously in one transaction. */
static int group_fn(void *arg, keel_syscall *sys)
{
    grp *g = arg;
    wk *w = g->w;
    uint64_t deadline = keel__now_ms() + w->timeout_ms;
    for (;;) {
        uint8_t *fr = NULL;
        size_t n = 0;
        keel_wf_frame f;
        if (next_frame(w, deadline, &fr, &n) < 0 ||
            decode(w, fr, n, &f, NULL, 0) < 0) {
            free(fr);
            g->crashed = 1;
            return 1; /* discarded */
        }
        if (f.type == KEEL_WF_END && f.seq == w->group_seq) {
            free(fr);
            ask_durable(w, KEEL_WF_DURABLE_GROUP, w->group_seq);
            return 0;
        }
        int rc = f.type == KEEL_WF_SYSCALL ? apply_syscall(w, sys, &f) : -1;
        free(fr);
        if (rc < 0) {
            g->crashed = 1;
            return 1;
        }
    }
}

static void serve_between(wk *w)
{
    keel__host_woke(w->host);
    for (;;) {
        long need = frame_ready(w);
        if (need == 0) {
            int r = fill(w);
            if (r > 0) {
                continue;
            }
            if (r == 0) {
                return;
            }
        }
        if (need <= 0) {
            crashed_between(w);
            return;
        }
        keel_wf_frame f;
        grp g = {.w = w, .p = w->rb, .n = (size_t)need};
        if (decode(w, w->rb, (size_t)need, &f, NULL, 0) < 0) {
            crashed_between(w);
            return;
        }
        int rc;
        if (f.type == KEEL_WF_SYSCALL) {
            rc = keel__k_oc_txn(w->sys, one_fn, &g);
            if (rc != 0) {
                consume(w, (size_t)need);
            }
        } else if (f.type == KEEL_WF_BEGIN) {
            w->group_seq = f.seq;
            consume(w, (size_t)need);
            rc = keel__k_oc_txn(w->sys, group_fn, &g);
            w->group_seq = 0;
        } else {
            crashed_between(w);
            return;
        }
        if (rc <= 0) {
            return; /* terminated (or the kernel failed): w may be stopping */
        }
        if (g.crashed) {
            crashed_between(w);
            return;
        }
    }
}

static void on_from(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    wk *w = p->data;
    if (!w->stopped && w->up) {
        serve_between(w);
    }
}

static void on_out(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    wk *w = p->data;
    int i = p == w->pout[0] ? 0 : 1;
    if (w->out[i] >= 0 && !drain_out(w, i)) {
        if (w->linelen[i] > 0) {
            put_line(w, i);
        }
        close_handle(w, &w->pout[i]);
        close_fd(&w->out[i]);
    }
}

/* A group that crossed a DELIVER, committed after that crank (WK3). */
static void held_cb(void *arg, keel_syscall *sys)
{
    notice *n = arg;
    wk *w = n->w;
    if (n->gen == w->gen && w->up) {
        for (size_t off = 0; off < n->nframes;) {
            uint32_t len;
            keel_wf_frame_length(n->frames + off, &len, NULL, 0);
            size_t sz = KEEL_WF_LEN_BYTES + len;
            if (apply_raw(w, sys, n->frames + off, sz) < 0) {
                break; /* no answer possible: seen on fd 4 */
            }
            off += sz;
        }
        ask_durable(w, KEEL_WF_DURABLE_GROUP, n->seq);
    }
    notice_free(n);
}

/* ---- the vat ops --------------------------------------------------------- */

static char *dup_str(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static int parse_entry(wk *w, const char *entry_json)
{
    json_t *e = json_loads(entry_json, 0, NULL);
    json_t *c = json_object_get(e, "worker");
    json_t *cmd = json_object_get(c, "command");
    if (!json_is_array(cmd)) {
        json_decref(e);
        return -1;
    }
    json_t *lim = json_object_get(c, "limits");
    json_t *as = json_object_get(lim, "address_space");
    json_t *cpu = json_object_get(lim, "cpu_seconds");
    size_t nc = json_array_size(cmd), extra = 0;
    if (as != NULL || cpu != NULL) {
        extra = 4; /* /bin/sh -c SCRIPT sh */
    }
    w->argv = calloc(nc + extra + 1, sizeof(char *));
    if (w->argv == NULL) {
        json_decref(e);
        return -1;
    }
    size_t k = 0;
    if (extra) {
        char script[256];
        int len = snprintf(script, sizeof(script), "%s", "");
        if (as != NULL) {
            len += snprintf(script + len, sizeof(script) - (size_t)len,
                            "ulimit -v %lld || exit 126; ",
                            (long long)(json_integer_value(as) / 1024));
        }
        if (cpu != NULL) {
            snprintf(script + len, sizeof(script) - (size_t)len,
                     "ulimit -t %lld || exit 126; ",
                     (long long)json_integer_value(cpu));
        }
        strncat(script, "exec \"$@\"", sizeof(script) - strlen(script) - 1);
        w->argv[k++] = strdup("/bin/sh");
        w->argv[k++] = strdup("-c");
        w->argv[k++] = strdup(script);
        w->argv[k++] = strdup("sh");
    }
    for (size_t i = 0; i < nc; i++) {
        w->argv[k++] = dup_str(json_string_value(json_array_get(cmd, i)));
    }
    json_t *env = json_object_get(c, "env");
    size_t ne = 0;
    while (environ[ne] != NULL) {
        ne++;
    }
    w->envp = calloc(ne + json_object_size(env) + 1, sizeof(char *));
    size_t j = 0;
    const char *key;
    json_t *val;
    for (size_t i = 0; w->envp != NULL && i < ne; i++) {
        size_t kl = strcspn(environ[i], "=");
        int over = 0;
        json_object_foreach(env, key, val)
        {
            over |= strlen(key) == kl && strncmp(environ[i], key, kl) == 0;
        }
        if (!over) {
            w->envp[j++] = strdup(environ[i]);
        }
    }
    json_object_foreach(env, key, val)
    {
        if (w->envp == NULL) {
            break;
        }
        size_t l = strlen(key) + strlen(json_string_value(val)) + 2;
        w->envp[j] = malloc(l);
        if (w->envp[j] != NULL) {
            snprintf(w->envp[j++], l, "%s=%s", key, json_string_value(val));
        }
    }
    w->cwd = dup_str(json_string_value(json_object_get(c, "cwd")));
    json_t *to = json_object_get(c, "timeout_ms");
    w->timeout_ms =
        to != NULL ? (uint64_t)json_integer_value(to) : DEFAULT_TIMEOUT;
    json_t *r = json_object_get(c, "restarts");
    json_t *rm = json_object_get(r, "max");
    json_t *rw = json_object_get(r, "window_ms");
    w->rmax = rm != NULL ? (int)json_integer_value(rm) : DEFAULT_RMAX;
    w->rwindow =
        rw != NULL ? (uint64_t)json_integer_value(rw) : DEFAULT_RWINDOW;
    json_t *p = json_object_get(e, "params");
    w->params = p != NULL ? json_dumps(p, JSON_COMPACT) : strdup("{}");
    json_decref(e);
    w->crashes = calloc((size_t)w->rmax + 1, sizeof(uint64_t));
    w->backoff_ms = BACKOFF_MIN_MS;
    return w->envp != NULL && w->params != NULL && w->crashes != NULL ? 0 : -1;
}

static void wk_stop(void *state);

static int wk_start(keel_syscall *sys, const char *entry_json, void **state)
{
    keel_kernel *k = keel__k_sys_kernel(sys);
    keel_host *h = keel__host_of(k);
    uv_loop_t *loop = h != NULL ? keel__host_uv(h) : NULL;
    if (loop == NULL) {
        fprintf(stderr, "keel: vat %s: a worker needs keel's libuv host\n",
                keel_syscall_vat_name(sys));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a worker gone is EPIPE, not our death */
    wk *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return 1;
    }
    w->sys = sys;
    w->host = h;
    w->loop = loop;
    w->to = w->from = w->out[0] = w->out[1] = -1;
    snprintf(w->name, sizeof(w->name), "%s", keel_syscall_vat_name(sys));
    w->next_all = all_workers;
    all_workers = w;
    if (parse_entry(w, entry_json) < 0) {
        w->stopped = 1;
        wk_free(w);
        return 1;
    }
    *state = w;
    int rc = start_proc(w);
    if (rc < 0) {
        rc = restart(w);
    }
    if (rc != 0) {
        w->stopped = 1;
        kill_proc(w);
        if (w->handles == 0) {
            wk_free(w);
        }
        *state = NULL;
        return 1;
    }
    return 0;
}

static int encode_delivery(wk *w, const keel_delivery *d)
{
    switch (d->kind) {
    case KEEL_DELIVER_MESSAGE:
        return keel_wf_put_deliver_message(&w->wb, w->seq, d->target, d->method,
                                           &d->args, d->result);
    case KEEL_DELIVER_NOTIFY:
        return keel_wf_put_deliver_notify(&w->wb, w->seq, d->promise,
                                          d->rejected, &d->resolution);
    default:
        return keel_wf_put_deliver_gc(&w->wb, w->seq, d->kind, d->vrefs,
                                      d->nvrefs);
    }
}

/* Hold a group that crossed the DELIVER until after its crank (WK3). */
static int hold_group(wk *w, uint64_t seq, uint64_t deadline)
{
    notice *n = notice_new(w, KEEL_WF_DURABLE_GROUP, seq);
    if (n == NULL) {
        return -1;
    }
    for (;;) {
        uint8_t *fr = NULL;
        size_t len = 0;
        keel_wf_frame f;
        if (next_frame(w, deadline, &fr, &len) < 0 ||
            decode(w, fr, len, &f, NULL, 0) < 0 ||
            (f.type != KEEL_WF_SYSCALL && f.type != KEEL_WF_END)) {
            free(fr);
            notice_free(n);
            return -1;
        }
        if (f.type == KEEL_WF_END) {
            free(fr);
            if (f.seq != seq) {
                notice_free(n);
                return -1;
            }
            break;
        }
        uint8_t *p = realloc(n->frames, n->nframes + len);
        if (p == NULL) {
            free(fr);
            notice_free(n);
            return -1;
        }
        memcpy(p + n->nframes, fr, len);
        n->frames = p;
        n->nframes += len;
        free(fr);
    }
    if (keel_vat_timer(w->sys, 0, held_cb, n) != KEEL_OK) {
        notice_free(n);
    }
    return 0;
}

static int wk_deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    wk *w = state;
    if (!w->up) {
        return KEEL__VAT_CRASHED;
    }
    w->seq++;
    if (encode_delivery(w, d) < 0) {
        /* The kernel gave a field the format refuses: not the worker's
         * fault, and not a crash a restart would mend. */
        fprintf(stderr, "keel: vat %s: cannot encode a delivery: %s\n", w->name,
                w->wb.why);
        w->wb.len = 0;
        return 1;
    }
    if (flush(w) < 0) {
        kill_proc(w);
        return KEEL__VAT_CRASHED;
    }
    uint64_t deadline = keel__now_ms() + w->timeout_ms;
    for (;;) {
        uint8_t *fr = NULL;
        size_t n = 0;
        keel_wf_frame f;
        if (next_frame(w, deadline, &fr, &n) < 0 ||
            decode(w, fr, n, &f, NULL, 0) < 0) {
            free(fr);
            kill_proc(w);
            return KEEL__VAT_CRASHED; /* WK2 */
        }
        int rc = 0;
        if (f.type == KEEL_WF_SYSCALL) {
            rc = apply_syscall(w, sys, &f);
        } else if (f.type == KEEL_WF_DONE && f.seq == w->seq) {
            int ok = f.ok;
            if (!ok) {
                fprintf(stderr, "keel: vat %s: delivery failed: %.*s\n",
                        w->name, (int)f.reason.len, (const char *)f.reason.ptr);
            }
            free(fr);
            if (ok) {
                ask_durable(w, KEEL_WF_DURABLE_DELIVERY, w->seq);
            }
            return ok ? 0 : 1;
        } else if (f.type == KEEL_WF_BEGIN) {
            uint64_t seq = f.seq;
            free(fr);
            fr = NULL;
            rc = hold_group(w, seq, deadline);
        } else {
            fprintf(stderr, "keel: vat %s: worker sent %s during a delivery\n",
                    w->name, keel_wf_type_name(f.type));
            rc = -1;
        }
        free(fr);
        if (rc < 0) {
            kill_proc(w);
            return KEEL__VAT_CRASHED;
        }
    }
}

/* STOP, wait up to 5 s for it to go, then SIGKILL (§4). */
static void wk_stop(void *state)
{
    wk *w = state;
    if (w == NULL) {
        return;
    }
    w->stopped = 1;
    if (w->up && keel_wf_put_stop(&w->wb) == KEEL_OK && flush(w) == 0) {
        uint64_t deadline = keel__now_ms() + STOP_GRACE_MS;
        for (;;) {
            int r = fill(w);
            w->rlen = 0; /* frames after STOP are ignored */
            if (r < 0) {
                break;
            }
            uint64_t now = keel__now_ms();
            if (r == 0 && now >= deadline) {
                break;
            }
            if (r == 0) {
                struct pollfd pf[3] = {{.fd = w->from, .events = POLLIN},
                                       {.fd = w->out[0], .events = POLLIN},
                                       {.fd = w->out[1], .events = POLLIN}};
                poll(pf, 3, (int)(deadline - now));
                for (int i = 0; i < 2; i++) {
                    if (w->out[i] >= 0 && (pf[1 + i].revents & POLLIN)) {
                        drain_out(w, i);
                    }
                }
            }
        }
    }
    kill_proc(w);
    if (w->handles == 0) {
        wk_free(w); /* WK6 */
    }
}

void keel__worker_detach(keel_host *h)
{
    for (wk *w = all_workers; w != NULL; w = w->next_all) {
        if (w->host == h) {
            close_handle(w, &w->pfrom);
            close_handle(w, &w->pout[0]);
            close_handle(w, &w->pout[1]);
            if (w->kept) {
                keel__host_keep(h, -1);
                w->kept = 0;
            }
            w->host = NULL;
        }
    }
}

const keel_vat_ops keel__worker_ops = {.abi_version = KEEL_VAT_ABI_VERSION,
                                       .name = "worker",
                                       .start = wk_start,
                                       .deliver = wk_deliver,
                                       .stop = wk_stop};
