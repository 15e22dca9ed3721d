/*
 * host/control.c — the control socket: STATE/control.sock, a libuv pipe
 * on the kernel's host loop, one JSON request per line and one JSON
 * answer per line (protocol v1, docs/control.md).
 *
 * Every callback here runs on the kernel's thread inside the host's
 * run_once/poll, which the kernel calls only between cranks (host.h), so
 * a request sees a committed state and its effect (a send, a terminate) is
 * a transaction of its own between two cranks.
 *
 * Invariants:
 *   CT1 The socket is created only in a STATE that group and others cannot
 *       enter, with mode 0600, and only while the kernel holds STATE/lock
 *       (a socket file there is a crashed kernel's: replaced). No TCP.
 *   CT2 A connection is served only if its peer (SO_PEERCRED) is the
 *       kernel's own uid or root; any other is logged and closed unread.
 *   CT3 An answer that reports an effect (send, terminate-vat, a settled
 *       "wait", restart-vat) is queued on `acks` with the LSN that made it and
 * written only once keel_kernel_durable_lsn() reaches that LSN. LSNs are
 *       assigned in commit order, so `acks` is in LSN order and one pass
 *       from its head releases exactly the durable ones: under group one
 *       fdatasync releases every client's sends it covered.
 *   CT4 Memory per connection is bounded: its input buffer is
 *       KEEL_CONTROL_LINE_MAX bytes (a line that does not fit: error, then
 *       closed), its answers queued in libuv at most KEEL_CONTROL_OUT_MAX
 *       (more: the client is dropped), its waits KEEL_CONTROL_WAITS_MAX;
 *       connections at most KEEL_CONTROL_CONNS_MAX (one more is told so
 *       and closed).
 *   CT5 Nothing here blocks on a client: reads and writes are libuv's
 *       non-blocking ones; a client that stops reading costs its own
 *       buffer, then its connection.
 *   CT6 A connection's record is freed only once libuv closed its handle
 *       and no ack or wait refers to it (refs == 0); a closed connection's
 *       acks and waits are dropped unwritten.
 *   CT7 Each request is one handler of the table `ops`; an unknown op is
 *       an "unknown_op" error and the connection stays open.
 *   CT8 A subscribed connection (subscribe-events) is given each event-log
 *       line verbatim with its newline, as the event log publishes it
 *       (only durable observations, OB1), through conn_write: a
 *       subscriber that does not read is dropped by CT4's bound like any
 *       client, never waited for. It is unsubscribed when its connection
 *       closes (conn_close), so the event log never calls a closed one.
 */
#include "host/control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/diag.h"
#include "host/host.h"
#include "kernel/inspect.h"
#include "keel/snapshot.h"

typedef struct conn {
    uv_pipe_t pipe; /* first: callbacks get &pipe */
    struct keel__control *c;
    struct conn *prev, *next;
    size_t in_len;
    int closing;   /* uv_close called */
    int closed;    /* its close callback ran */
    unsigned refs; /* CT6: acks and waits naming it */
    unsigned nwaits;
    uint64_t sub_id; /* CT8: its event-log subscription, 0 none */
    char in[KEEL_CONTROL_LINE_MAX];
} conn;

typedef struct ack {
    struct ack *next;
    conn *to;
    uint64_t lsn; /* CT3 */
    char *line;   /* the answer with its newline */
    size_t len;
    json_t *wait_id; /* "wait": the request id, then wait on wait_kp */
    char wait_kp[KEEL_VREF_MAX];
} ack;

typedef struct waiter {
    struct waiter *next;
    conn *to;
    json_t *id;
    char kp[KEEL_VREF_MAX];
} waiter;

struct keel__control {
    keel_kernel *k;
    keel_host *host;
    uv_loop_t *loop;
    uv_pipe_t *server;
    uv_timer_t *tick;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    keel__control_opts o;
    conn *conns;
    size_t nconns;
    ack *ack_head, *ack_tail;
    waiter *waiters;
    int stopping;
    int kept;
    uid_t uid;
};

static void logf_(keel__control *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void logf_(keel__control *c, const char *fmt, ...)
{
    if (c->o.log == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("keel: run: control: ", c->o.log);
    vfprintf(c->o.log, fmt, ap);
    fputc('\n', c->o.log);
    fflush(c->o.log);
    va_end(ap);
}

/* ---- connections ------------------------------------------------------ */

static void conn_free_if_done(conn *cn)
{
    if (cn->closed && cn->refs == 0) {
        free(cn);
    }
}

static void conn_closed(uv_handle_t *h)
{
    conn *cn = (conn *)h;
    cn->closed = 1;
    conn_free_if_done(cn); /* CT6 */
}

static void conn_unref(conn *cn)
{
    cn->refs--;
    conn_free_if_done(cn);
}

static void conn_close(conn *cn)
{
    if (cn->closing) {
        return;
    }
    keel__control *c = cn->c;
    cn->closing = 1;
    if (cn->prev != NULL) {
        cn->prev->next = cn->next;
    } else {
        c->conns = cn->next;
    }
    if (cn->next != NULL) {
        cn->next->prev = cn->prev;
    }
    c->nconns--;
    if (cn->sub_id != 0) { /* CT8 */
        keel__eventlog_unsubscribe(keel__obs_eventlog(c->o.obs), cn->sub_id);
        cn->sub_id = 0;
    }
    uv_close((uv_handle_t *)&cn->pipe, conn_closed);
}

static void written(uv_write_t *req, int status)
{
    (void)status; /* a failed write: the read side sees the end */
    free(req);
}

/* Write len bytes of line to cn: at once where the socket takes them, the
 * rest queued in libuv (CT4, CT5). */
static void conn_write(conn *cn, const char *line, size_t len)
{
    if (cn->closing) {
        return;
    }
    uv_stream_t *s = (uv_stream_t *)&cn->pipe;
    uv_buf_t b = uv_buf_init((char *)line, (unsigned)len);
    int n = uv_stream_get_write_queue_size(s) == 0 ? uv_try_write(s, &b, 1)
                                                   : UV_EAGAIN;
    if (n == (int)len) {
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        logf_(cn->c, "a connection failed: %s", uv_strerror(n));
        conn_close(cn);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    size_t rest = len - done;
    if (uv_stream_get_write_queue_size(s) + rest > KEEL_CONTROL_OUT_MAX) {
        logf_(cn->c,
              "dropped a client that does not read its answers (over %u "
              "bytes queued)",
              KEEL_CONTROL_OUT_MAX);
        conn_close(cn);
        return;
    }
    uv_write_t *req = malloc(sizeof(*req) + rest);
    if (req == NULL) {
        conn_close(cn);
        return;
    }
    char *copy = (char *)(req + 1);
    memcpy(copy, line + done, rest);
    b = uv_buf_init(copy, (unsigned)rest);
    if (uv_write(req, s, &b, 1, written) < 0) {
        free(req);
        conn_close(cn);
    }
}

/* ---- answers ---------------------------------------------------------- */

/* The answer line for id with the fields of body (stolen). NULL: out of
 * memory. */
static char *answer_line(json_t *id, json_t *body, size_t *len)
{
    json_t *o = body != NULL ? body : json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "v", json_integer(1));
    json_object_set(o, "id", id != NULL ? id : json_null());
    if (json_object_get(o, "ok") == NULL) {
        json_object_set_new(o, "ok", json_true());
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (line == NULL) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

static void answer(conn *cn, json_t *id, json_t *body)
{
    size_t len = 0;
    char *line = answer_line(id, body, &len);
    if (line == NULL) {
        conn_close(cn);
        return;
    }
    conn_write(cn, line, len);
    free(line);
}

static void error_answer(conn *cn, json_t *id, const char *code,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void error_answer(conn *cn, json_t *id, const char *code,
                         const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    answer(cn, id,
           json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code", code,
                     "message", msg));
}

/* A kernel call's failure as an error answer (docs/control.md). */
static void kernel_error(conn *cn, json_t *id, int rc, const keel_diag *d)
{
    const char *code = rc == KEEL_ENOENT   ? "not_found"
                       : rc == KEEL_EINVAL ? "invalid"
                       : rc == KEEL_EEXIST ? "exists"
                       : rc == KEEL_ENOSPC ? "no_space"
                       : rc == KEEL_EACCES ? "permission"
                                           : "kernel_failed";
    error_answer(cn, id, code, "%s",
                 d->msg[0] != '\0' ? d->msg : keel_strerror(rc));
}

static void tick_update(keel__control *c);

/* CT3: queue body's answer until lsn is durable. wait_kp: then wait for
 * that promise to settle. */
static void ack_push(keel__control *c, conn *cn, uint64_t lsn, json_t *id,
                     json_t *body, const char *wait_kp)
{
    ack *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->line = answer_line(id, body, &a->len)) == NULL) {
        free(a);
        conn_close(cn);
        return;
    }
    a->to = cn;
    a->lsn = lsn;
    cn->refs++;
    if (wait_kp != NULL) {
        a->wait_id = json_incref(id != NULL ? id : json_null());
        snprintf(a->wait_kp, sizeof(a->wait_kp), "%s", wait_kp);
        cn->nwaits++;
    }
    if (c->ack_tail != NULL) {
        c->ack_tail->next = a;
    } else {
        c->ack_head = a;
    }
    c->ack_tail = a;
}

static void ack_free(ack *a)
{
    json_decref(a->wait_id);
    free(a->line);
    free(a);
}

/* Settled waits become acks of the settlement (CT3: the crank that settled
 * it is at or before the last LSN). */
static void check_waiters(keel__control *c)
{
    waiter **pp = &c->waiters;
    while (*pp != NULL) {
        waiter *w = *pp;
        char *body = NULL;
        keel_diag d = {0};
        int st =
            w->to->closing ? -1 : keel_kernel_promise(c->k, w->kp, &body, &d);
        if (st == 0) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (!w->to->closing) {
            json_t *o = json_pack("{s:s, s:s}", "promise", w->kp, "state",
                                  st == 1   ? "fulfilled"
                                  : st == 2 ? "rejected"
                                            : "unknown");
            if (o != NULL && body != NULL) {
                json_t *b = json_loads(body, JSON_DECODE_ANY, NULL);
                json_object_set_new(o, "body",
                                    b != NULL ? b : json_string(body));
            }
            if (st < 0) {
                json_decref(o);
                o = json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code",
                              "kernel_failed", "message", d.msg);
            }
            ack_push(c, w->to, keel__k_last_lsn(c->k), w->id, o, NULL);
        }
        free(body);
        w->to->nwaits--;
        json_decref(w->id);
        conn_unref(w->to);
        free(w);
    }
}

/* CT3: write every ack whose LSN is durable, in order. */
static void release(keel__control *c)
{
    for (int pass = 0; pass < 2; pass++) {
        uint64_t durable = keel_kernel_durable_lsn(c->k);
        while (c->ack_head != NULL && c->ack_head->lsn <= durable) {
            ack *a = c->ack_head;
            c->ack_head = a->next;
            if (c->ack_head == NULL) {
                c->ack_tail = NULL;
            }
            conn_write(a->to, a->line, a->len);
            if (a->wait_id != NULL && !a->to->closing) {
                waiter *w = calloc(1, sizeof(*w));
                if (w != NULL) {
                    w->to = a->to;
                    w->id = json_incref(a->wait_id);
                    snprintf(w->kp, sizeof(w->kp), "%s", a->wait_kp);
                    w->next = c->waiters;
                    c->waiters = w;
                    a->to->refs++;
                } else {
                    a->to->nwaits--;
                }
            } else if (a->wait_id != NULL) {
                a->to->nwaits--;
            }
            conn_unref(a->to);
            ack_free(a);
        }
        if (pass == 0) {
            check_waiters(c);
        }
    }
    tick_update(c);
}

static void on_tick(uv_timer_t *t)
{
    release(t->data);
}

/* The tick runs (every millisecond) only while an ack or a wait is
 * pending: the durable LSN advances on the WAL's syncer thread. */
static void tick_update(keel__control *c)
{
    int want = c->ack_head != NULL || c->waiters != NULL;
    int active = uv_is_active((uv_handle_t *)c->tick);
    if (want && !active) {
        uv_timer_start(c->tick, on_tick, 1, 1);
    } else if (!want && active) {
        uv_timer_stop(c->tick);
    }
}

/* ---- requests (CT7) --------------------------------------------------- */

typedef struct request {
    keel__control *c;
    conn *cn;
    json_t *id;
    json_t *req;
    int woke; /* queued work for the kernel: let the run loop crank */
} request;

/* A string field, or NULL after answering bad_request. */
static const char *need_str(request *r, const char *field)
{
    const char *s = json_string_value(json_object_get(r->req, field));
    if (s == NULL) {
        error_answer(r->cn, r->id, "bad_request", "%s: expected a string",
                     field);
    }
    return s;
}

static void op_status(request *r)
{
    char *s = NULL;
    keel_diag d = {0};
    int rc = keel_kernel_status_json(r->c->k, &s, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    json_t *st = json_loads(s, 0, NULL);
    free(s);
    size_t nacks = 0, nwaits = 0;
    for (ack *a = r->c->ack_head; a != NULL; a = a->next) {
        nacks++;
    }
    for (waiter *w = r->c->waiters; w != NULL; w = w->next) {
        nwaits++;
    }
    size_t nsubs = 0;
    for (conn *cn = r->c->conns; cn != NULL; cn = cn->next) {
        nsubs += cn->sub_id != 0;
    }
    answer(r->cn, r->id,
           json_pack("{s:o, s:{s:I, s:I, s:I, s:I}}", "status", st, "control",
                     "connections", (json_int_t)r->c->nconns, "pending_acks",
                     (json_int_t)nacks, "waits", (json_int_t)nwaits,
                     "subscribers", (json_int_t)nsubs));
}

static void op_send(request *r)
{
    const char *vat = need_str(r, "vat");
    const char *method = vat != NULL ? need_str(r, "method") : NULL;
    json_t *args = json_object_get(r->req, "args");
    int wait = json_is_true(json_object_get(r->req, "wait"));
    char kp[KEEL_VREF_MAX];
    keel_diag d = {0};
    if (method == NULL) {
        return;
    }
    if (args == NULL) {
        error_answer(r->cn, r->id, "bad_request",
                     "args: expected a JSON value (the message's body)");
        return;
    }
    if (r->c->stopping) {
        error_answer(r->cn, r->id, "stopping", "the kernel is stopping");
        return;
    }
    if (wait && r->cn->nwaits >= KEEL_CONTROL_WAITS_MAX) {
        error_answer(r->cn, r->id, "too_many_waits",
                     "more than %u sends with \"wait\" outstanding on this "
                     "connection",
                     KEEL_CONTROL_WAITS_MAX);
        return;
    }
    char *body = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    if (body == NULL) {
        error_answer(r->cn, r->id, "internal", "out of memory");
        return;
    }
    int rc = keel_kernel_send(r->c->k, vat, method, body, kp, &d);
    free(body);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    r->woke = 1;
    ack_push(r->c, r->cn, keel__k_last_lsn(r->c->k), r->id,
             json_pack("{s:s, s:s}", "promise", kp, "state", "queued"),
             wait ? kp : NULL);
}

static void op_vats(request *r)
{
    json_t *v = NULL;
    keel_diag d = {0};
    int rc = keel__k_vats_json(r->c->k, &v, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    answer(r->cn, r->id, json_pack("{s:o}", "vats", v));
}

static void op_inspect(request *r)
{
    json_t *o = NULL;
    keel_diag d = {0};
    const char *kref = json_string_value(json_object_get(r->req, "kref"));
    const char *vat = json_string_value(json_object_get(r->req, "vat"));
    const char *vref = json_string_value(json_object_get(r->req, "vref"));
    if ((kref == NULL) == (vat == NULL) || (vat != NULL) != (vref != NULL)) {
        error_answer(r->cn, r->id, "bad_request",
                     "expected \"kref\", or \"vat\" and \"vref\"");
        return;
    }
    int rc = keel__k_inspect_json(r->c->k, kref, vat, vref, &o, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    answer(r->cn, r->id, json_pack("{s:o}", "ref", o));
}

static void op_graph(request *r)
{
    char *dot = NULL;
    keel_diag d = {0};
    int rc = keel__k_graph_dot(r->c->k, &dot, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    answer(r->cn, r->id, json_pack("{s:s}", "dot", dot));
    free(dot);
}

static void op_checkpoint(request *r)
{
    keel_diag d = {0};
    int rc = keel__k_checkpoint_now(r->c->k, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    answer(r->cn, r->id,
           json_pack("{s:I}", "lsn", (json_int_t)keel__k_last_lsn(r->c->k)));
}

static void op_snapshot(request *r)
{
    const char *path = need_str(r, "path");
    keel_snapshot_info info;
    keel_diag d = {0};
    if (path == NULL) {
        return;
    }
    if (path[0] != '/') {
        error_answer(r->cn, r->id, "bad_request",
                     "path: expected an absolute path, got \"%s\"", path);
        return;
    }
    int rc = keel_kernel_snapshot(r->c->k, path, &info, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    answer(r->cn, r->id,
           json_pack("{s:s, s:I, s:I, s:I, s:I}", "path", path, "lsn",
                     (json_int_t)info.meta.lsn, "crank",
                     (json_int_t)info.meta.crank, "entries",
                     (json_int_t)info.entries, "bytes",
                     (json_int_t)info.file_bytes));
}

static void op_terminate(request *r)
{
    const char *vat = need_str(r, "vat");
    keel_diag d = {0};
    if (vat == NULL) {
        return;
    }
    int rc = keel__k_terminate_vat(r->c->k, vat, &d);
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    r->woke = 1; /* its cleanup batches run in the loop (K6) */
    ack_push(r->c, r->cn, keel__k_last_lsn(r->c->k), r->id,
             json_pack("{s:s, s:s}", "vat", vat, "state", "terminated"), NULL);
}

static void op_restart(request *r)
{
    const char *vat = need_str(r, "vat");
    keel_diag d = {0};
    int alive = 0;
    if (vat == NULL) {
        return;
    }
    int rc = keel__k_restart_vat(r->c->k, vat, &alive, &d);
    if (rc == KEEL_EBUSY) {
        error_answer(r->cn, r->id, "busy", "%s", d.msg);
        return;
    }
    if (rc < 0) {
        kernel_error(r->cn, r->id, rc, &d);
        return;
    }
    r->woke = 1; /* what its start asked for, or its cleanup, runs */
    /* CT3: its start (or its terminate) may have written */
    ack_push(r->c, r->cn, keel__k_last_lsn(r->c->k), r->id,
             json_pack("{s:s, s:s}", "vat", vat, "state",
                       alive ? "alive" : "terminated"),
             NULL);
}

static void op_stop(request *r)
{
    r->c->stopping = 1;
    if (r->c->o.stop_flag != NULL) {
        *r->c->o.stop_flag = r->c->o.stop_value;
    }
    r->woke = 1;
    answer(r->cn, r->id, json_pack("{s:b}", "stopping", 1));
}

static void op_metrics(request *r)
{
    char *text = NULL;
    size_t len = 0;
    if (r->c->o.obs == NULL) {
        error_answer(r->cn, r->id, "unavailable",
                     "this kernel keeps no metrics");
        return;
    }
    /* between cranks on the kernel's thread: what is durable now counted,
     * the gauges as of now (OB1 still holds: only durable ones) */
    keel__obs_refresh(r->c->o.obs);
    if (keel__metrics_render(keel__obs_metrics(r->c->o.obs), &text, &len) < 0) {
        error_answer(r->cn, r->id, "internal", "out of memory");
        return;
    }
    answer(r->cn, r->id,
           json_pack("{s:s%, s:s}", "metrics", text, len, "content_type",
                     "text/plain; version=0.0.4; charset=utf-8"));
    free(text);
}

/* CT8: one event-log line to its subscriber (the event log's callback). */
static void on_event(void *arg, const char *line, size_t len)
{
    conn *cn = arg;
    char small[2048];
    char *buf = len + 1 <= sizeof(small) ? small : malloc(len + 1);
    if (buf == NULL) {
        conn_close(cn);
        return;
    }
    memcpy(buf, line, len);
    buf[len] = '\n';
    conn_write(cn, buf, len + 1);
    if (buf != small) {
        free(buf);
    }
}

static void op_subscribe(request *r)
{
    if (r->c->o.obs == NULL) {
        error_answer(r->cn, r->id, "unavailable",
                     "this kernel has no event log");
        return;
    }
    if (r->cn->sub_id != 0) {
        error_answer(r->cn, r->id, "exists",
                     "this connection is subscribed already");
        return;
    }
    if (r->c->stopping) {
        error_answer(r->cn, r->id, "stopping", "the kernel is stopping");
        return;
    }
    /* what is durable now goes out before: every line after the answer
     * has an LSN above its durable_lsn */
    keel__obs_refresh(r->c->o.obs);
    uint64_t id = keel__eventlog_subscribe(keel__obs_eventlog(r->c->o.obs),
                                           on_event, r->cn);
    if (id == 0) {
        error_answer(r->cn, r->id, "internal", "out of memory");
        return;
    }
    r->cn->sub_id = id;
    /* the answer goes first: every line after it is an event (CT8) */
    answer(r->cn, r->id,
           json_pack("{s:b, s:I}", "subscribed", 1, "durable_lsn",
                     (json_int_t)keel_kernel_durable_lsn(r->c->k)));
}

static const struct {
    const char *op;
    void (*fn)(request *r);
} ops[] = {
    {"status", op_status},       {"send", op_send},
    {"vats", op_vats},           {"inspect", op_inspect},
    {"graph", op_graph},         {"checkpoint", op_checkpoint},
    {"snapshot", op_snapshot},   {"terminate-vat", op_terminate},
    {"restart-vat", op_restart}, {"stop", op_stop},
    {"metrics", op_metrics},     {"subscribe-events", op_subscribe},
};

/* One request line (without its newline). @return 1 if it queued work. */
static int handle_line(keel__control *c, conn *cn, const char *line, size_t len)
{
    json_error_t je;
    request r = {.c = c, .cn = cn};
    r.req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
    if (r.req == NULL) {
        error_answer(cn, NULL, "parse_error", "column %d: %s", je.column,
                     je.text);
        return 0;
    }
    if (!json_is_object(r.req)) {
        error_answer(cn, NULL, "bad_request", "expected a JSON object");
        json_decref(r.req);
        return 0;
    }
    r.id = json_object_get(r.req, "id");
    json_t *v = json_object_get(r.req, "v");
    const char *op = json_string_value(json_object_get(r.req, "op"));
    if (!json_is_integer(v) || json_integer_value(v) != 1) {
        error_answer(cn, r.id, "bad_version",
                     "v: expected 1 (this kernel speaks protocol 1)");
    } else if (op == NULL) {
        error_answer(cn, r.id, "bad_request", "op: expected a string");
    } else {
        size_t i = 0;
        while (i < sizeof(ops) / sizeof(ops[0]) && strcmp(ops[i].op, op) != 0) {
            i++;
        }
        if (i < sizeof(ops) / sizeof(ops[0])) {
            ops[i].fn(&r);
        } else {
            error_answer(cn, r.id, "unknown_op", "op: no request \"%.64s\"",
                         op);
        }
    }
    json_decref(r.req);
    return r.woke;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *cn = (conn *)h;
    /* CT4: the line buffer is never full here (a full one was closed) */
    buf->base = cn->in + cn->in_len;
    buf->len = sizeof(cn->in) - cn->in_len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    conn *cn = (conn *)s;
    keel__control *c = cn->c;
    if (nread < 0) {
        if (nread != UV_EOF) {
            logf_(c, "a connection failed: %s", uv_strerror((int)nread));
        }
        conn_close(cn); /* the end (a partial line is dropped) or an error */
        return;
    }
    cn->in_len += (size_t)nread;
    size_t start = 0;
    int woke = 0;
    while (!cn->closing) {
        char *nl = memchr(cn->in + start, '\n', cn->in_len - start);
        if (nl == NULL) {
            break;
        }
        size_t len = (size_t)(nl - (cn->in + start));
        size_t l = len > 0 && cn->in[start + len - 1] == '\r' ? len - 1 : len;
        if (l > 0) {
            woke |= handle_line(c, cn, cn->in + start, l);
        }
        start += len + 1;
    }
    if (!cn->closing) {
        memmove(cn->in, cn->in + start, cn->in_len - start);
        cn->in_len -= start;
        if (cn->in_len == sizeof(cn->in)) { /* CT4 */
            error_answer(cn, NULL, "line_too_long",
                         "a request line is at most %u bytes with its "
                         "newline",
                         KEEL_CONTROL_LINE_MAX);
            conn_close(cn);
        }
    }
    if (woke) {
        keel__host_woke(c->host);
    }
    release(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    keel__control *c = server->data;
    if (status < 0) {
        return;
    }
    conn *cn = calloc(1, sizeof(*cn));
    if (cn == NULL) {
        return;
    }
    cn->c = c;
    uv_pipe_init(c->loop, &cn->pipe, 0);
    cn->next = c->conns;
    if (c->conns != NULL) {
        c->conns->prev = cn;
    }
    c->conns = cn;
    c->nconns++;
    if (uv_accept(server, (uv_stream_t *)&cn->pipe) < 0) {
        conn_close(cn);
        return;
    }
    uv_os_fd_t fd = -1;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&cn->pipe, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
        logf_(c, "refused a connection: its peer credentials are unknown");
        conn_close(cn);
        return;
    }
    if (cred.uid != c->uid && cred.uid != 0) { /* CT2 */
        logf_(c,
              "refused a connection from uid %u (pid %d): only uid %u and "
              "root may connect",
              (unsigned)cred.uid, (int)cred.pid, (unsigned)c->uid);
        conn_close(cn);
        return;
    }
    if (c->nconns > KEEL_CONTROL_CONNS_MAX) { /* CT4 */
        error_answer(cn, NULL, "too_many_connections",
                     "at most %u connections at once", KEEL_CONTROL_CONNS_MAX);
        conn_close(cn);
        return;
    }
    uv_read_start((uv_stream_t *)&cn->pipe, on_alloc, on_read);
}

/* ---- open and close --------------------------------------------------- */

static void free_on_close(uv_handle_t *h)
{
    free(h);
}

int keel__control_open(keel_kernel *k, const char *state_dir,
                       const keel__control_opts *o, keel__control **out,
                       keel_diag *diag)
{
    struct stat st;
    *out = NULL;
    keel_host *host = keel__host_of(k);
    uv_loop_t *loop = host != NULL ? keel__host_uv(host) : NULL;
    if (loop == NULL) {
        return keel__diag(diag, KEEL_EINVAL,
                          "the control socket needs the libuv host "
                          "(--deterministic has none: add --no-control)");
    }
    if (stat(state_dir, &st) != 0) {
        return keel__diag(diag, keel_translate_errno(errno), "%s: %s",
                          state_dir, strerror(errno));
    }
    if ((st.st_mode & (S_IXGRP | S_IXOTH)) != 0) { /* CT1 */
        return keel__diag(diag, KEEL_EACCES,
                          "%s: group or others can enter it (mode %04o), and "
                          "it would hold the control socket: chmod 700 %s, "
                          "or run with --no-control",
                          state_dir, (unsigned)(st.st_mode & 07777), state_dir);
    }
    keel__control *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    int n = snprintf(c->path, sizeof(c->path), "%s/control.sock", state_dir);
    if (n < 0 || (size_t)n >= sizeof(c->path)) {
        free(c);
        return keel__diag(diag, KEEL_EINVAL,
                          "%s/control.sock: a socket path is at most %zu "
                          "bytes: use a shorter STATE path, or --no-control",
                          state_dir, sizeof(c->path) - 1);
    }
    c->k = k;
    c->host = host;
    c->loop = loop;
    c->o = *o;
    c->uid = geteuid();
    c->server = calloc(1, sizeof(*c->server));
    c->tick = calloc(1, sizeof(*c->tick));
    if (c->server == NULL || c->tick == NULL) {
        free(c->server);
        free(c->tick);
        free(c);
        return keel__diag(diag, KEEL_ENOMEM, "out of memory");
    }
    uv_timer_init(loop, c->tick);
    c->tick->data = c;
    uv_pipe_init(loop, c->server, 0);
    c->server->data = c;
    /* CT1: STATE/lock is held (the kernel is open): a socket file here is
     * a crashed kernel's */
    if (lstat(c->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(c->path);
    }
    mode_t old = umask(0177);
    int uv = uv_pipe_bind(c->server, c->path);
    umask(old);
    if (uv == 0 && chmod(c->path, 0600) != 0) {
        uv = -errno;
    }
    if (uv == 0) {
        uv = uv_listen((uv_stream_t *)c->server, SOMAXCONN, on_connection);
    }
    if (uv < 0) {
        uv_close((uv_handle_t *)c->server, free_on_close);
        uv_close((uv_handle_t *)c->tick, free_on_close);
        int rc = keel__diag(diag, keel_translate_errno(-uv), "%s: %s", c->path,
                            uv_strerror(uv));
        free(c);
        return rc;
    }
    if (o->keep_alive) {
        keel__host_keep(host, 1); /* H11 */
        c->kept = 1;
    }
    *out = c;
    return KEEL_OK;
}

static int queued_output(keel__control *c)
{
    for (conn *cn = c->conns; cn != NULL; cn = cn->next) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&cn->pipe) > 0) {
            return 1;
        }
    }
    return 0;
}

void keel__control_close(keel__control *c)
{
    if (c == NULL) {
        return;
    }
    c->stopping = 1;
    release(c);
    /* Stop taking requests; give the clients' queued answers up to a
     * second to drain (host poll: between cranks, as always). */
    uv_close((uv_handle_t *)c->server, free_on_close);
    for (conn *cn = c->conns; cn != NULL; cn = cn->next) {
        uv_read_stop((uv_stream_t *)&cn->pipe);
    }
    for (int i = 0; i < 1000 && queued_output(c); i++) {
        keel__host_poll(c->host);
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    while (c->ack_head != NULL) {
        ack *a = c->ack_head;
        c->ack_head = a->next;
        conn_unref(a->to);
        ack_free(a);
    }
    while (c->waiters != NULL) {
        waiter *w = c->waiters;
        c->waiters = w->next;
        json_decref(w->id);
        conn_unref(w->to);
        free(w);
    }
    while (c->conns != NULL) {
        conn_close(c->conns);
    }
    uv_timer_stop(c->tick);
    uv_close((uv_handle_t *)c->tick, free_on_close);
    unlink(c->path);
    if (c->kept) {
        keel__host_keep(c->host, -1);
    }
    /* the handles' close callbacks run in the host's next loop pass (at
     * the latest when it is freed) and free only their own records */
    free(c);
}
