/*
 * vats/mixed.c — the mixed workload of crash testing (`keel crashtest`,
 * tests/test_crashtest.c), built in as "mixed": one vat code in six roles,
 * chosen by params {"role": ...}. vats/mixed.json is the cluster:
 *
 *   driver    (bootstrap) {"role":"driver", "rounds":N (default 40)}
 *   echo      ping({"n":n}) answers {"value":n+1}
 *   counter0, counter1, counter2
 *             incr({"by":b}) count += b, answers {"count":count}
 *   factory   makeAdder({"base":b}) answers a new object (o+N, fulfilled
 *             to it: KEEL_CAPDATA_SLOT0) whose add({"x":x}) answers
 *             {"sum":b+x}
 *   clock     sleep({"i":i,"ms":m}) answers {"woke":i*i mod 1000} from a
 *             keel_vat_timer of m ms; hash({"i":i}) answers
 *             {"h":mix(i)} computed by keel_vat_work: both OUT OF CRANK
 *   quitter, crasher  (role "doomed") ping as echo; hold({"i":i}) keeps its
 *             result promise unresolved; quit({"i":i}) answers {"bye":i}
 *             and exits; boom() writes to its vatstore and fails the
 *             delivery (the crank aborts, the kernel terminates it)
 *
 * The driver runs N rounds; round i starts once every answer of round i-1
 * has come back. Its phase 1 asks all of these at once (so the run queue
 * mixes them):
 *   ping-pong  a chain of 1 + i%3 pings to echo, each asking with the
 *              value the previous one answered (start n = i)
 *   fan-out    1 + i%5 incr to counter((i+j)%3), by = j+1, j = 0..
 *   pipelining makeAdder({"base":i}) to factory with result P, then at
 *              once add({"x":2i}) to P (a promise not yet resolved: the
 *              message waits on it), and in even rounds add({"x":i}) too;
 *              answers 3i and 2i, in that order; P's own notify brings
 *              the adder, which the driver drops at once (M7)
 *   quitter    i < Q: hold({"i":i}) (answered only by the quitter's exit)
 *              and ping({"n":i}); i = Q: quit({"i":i}), whose exit
 *              rejects every held promise ("vat terminated"): round Q
 *              waits for those Q-1 rejections too; i > Q: ping, and hold
 *              with result P followed by use() sent to P: both rejected
 *   crasher    i < C: ping({"n":i}); i = C: boom(), rejected;
 *              i > C: ping, rejected
 * where Q = 1 + N/3 and C = 1 + 2N/3. Once all of them are answered,
 * phase 2 asks the clock sleep({"i":i,"ms":i mod 3}) and, in odd rounds,
 * after its answer, hash({"i":i}). About 25 transactions a round: N = 40
 * makes 1,008 (boot included).
 *
 * Every answer is checked against the value the driver expects (counter
 * answers against the driver's own running total per counter, "ctr.<c>");
 * a wrong one, or a fulfilment where a rejection was due (or the reverse),
 * fails the delivery, so the driver is terminated and never sets done.
 * Final vatstore of a run of N rounds:
 *   driver    done = "1", rounds_done = N, answers = A(N),
 *             rejections = R(N), out = 0, ctr.<c> = the count of counter c
 *   counter<c> count = the sum of the b's sent to it
 *   (A, R and the counts follow from the plan above; tests/
 *   test_crashtest.c recomputes them on its own.)
 *
 * Vatstore (driver): ref.<vat> (root vrefs from bootstrap), round (current
 * round), phase (1 or 2), out (answers the phase still waits for), w.<P>
 * (what the answer to P must be: {"k":kind,"e":expected,"h":hops}),
 * answers, rejections, ctr.<c>, rounds_done, done.
 * clock: seq (next request number), q.<seq, 10 digits> = one request
 * {"p":promise,"k":"sleep"|"hash","i":i,"ms":m}, in arrival order.
 * factory: adder.<o+N> = base, deleted when it is told the adder is
 * retired. driver: a.<P> while makeAdder's answer P (the adder) is due.
 * doomed: held.<P>; boom (never committed).
 *
 * Invariants:
 *   M1  Every vat's progress is in its vatstore; in memory: params, and
 *       the clock's one armed request. start() makes no writes, so a
 *       restart adds no transaction.
 *   M2  The clock has at most one timer or job armed, always for its
 *       oldest request (the first q.* key); its callback resolves that
 *       request's promise, deletes its key and arms the next, in one
 *       out-of-crank transaction (K33), and start() arms the oldest again.
 *       So the order of out-of-crank answers is the order of the
 *       requests, whatever the host's clock, and a run resumed after a
 *       crash makes the same ones in the same order as an uninterrupted
 *       run.
 *   M3  A job is freed exactly once (as chain5.c's F3): by its done
 *       callback; or, when done will never run, by whichever of stop()
 *       and the work function comes last (job.phase, swapped atomically).
 *   M4  Everything is a pure function of params, the vatstore and the
 *       deliveries: no clock, no randomness.
 *   M6  A message a vat does not accept (an unknown method, arguments
 *       that are not an object with the integer fields it needs in range,
 *       slots, a second or malformed bootstrap, add to the factory's root)
 *       is refused: its result is rejected with the reason and the vat
 *       lives on; one without a result promise is dropped. The one
 *       exception is boom(), whose purpose is to fail its delivery. A vat
 *       fails otherwise only on a broken invariant of its own (a wrong
 *       answer at the driver, a notify it never asked for).
 *   M7  Objects are passed and dropped: the driver subscribes to each
 *       makeAdder result too, and on its notify forgets the adder import
 *       (vutil.h keel__vutil_forget_import) while its adds, sent to the
 *       promise, are still queued; once they are answered nothing holds
 *       the adder and the factory, told retireExports, deletes its
 *       adder.<o+N>. So neither vat keeps a key per round for it.
 *   M5  Nothing else is in flight while the clock works: phase 2 starts
 *       only when phase 1 is fully answered (the rejections the quitter's
 *       exit queues included), and asks one question at a time. So even
 *       on libuv's real clock and thread pool (plain `keel run`) a
 *       completion can only come while the run queue is empty, exactly
 *       where deterministic mode runs it, and both make the same
 *       transactions in the same order.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

/* Bounds rounds so that every value stays a small JSON integer. */
#define MIXED_MAX_ROUNDS 1000000u
#define NCOUNTERS        3

/* "w." / "q." / "adder." / "held." + a vref or a number */
typedef char mkey[16 + KEEL_VREF_MAX];

static const char *const vat_names[] = {
    "echo",    "counter0", "counter1", "counter2",
    "factory", "clock",    "quitter",  "crasher",
};

/* The clock's work function: any fixed mixing of i. */
static uint64_t mix(uint64_t i)
{
    return (i * 2654435761u + 97) % 1000003u;
}

static uint64_t quit_round(uint64_t rounds)
{
    return 1 + rounds / 3;
}

static uint64_t crash_round(uint64_t rounds)
{
    return 1 + 2 * rounds / 3;
}

/* Answer d's result with json_pack(fmt, ...) (no slots). */
static int answer_fmt(keel_syscall *sys, const keel_delivery *d,
                      const char *fmt, const char *field, uint64_t v)
{
    char *body = keel__vutil_json(fmt, field, (json_int_t)v);
    int rc = body == NULL ? KEEL_ENOMEM : keel__vutil_answer(sys, d, body);
    free(body);
    return rc;
}

/* ======================================================================== */
/* echo, counter, doomed                                                    */
/* ======================================================================== */

static int echo_ping(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t n = 0;
    keel__vutil_why why;
    if (keel__vutil_args_u64(d, "n", MIXED_MAX_ROUNDS * 4 - 1, &n, why) < 0) {
        return keel__vutil_refuse(sys, d, why); /* M6 */
    }
    return answer_fmt(sys, d, "{sI}", "value", n + 1);
}

static int counter_incr(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t by = 0, count = 0;
    keel__vutil_why why;
    if (keel__vutil_args_u64(d, "by", 16, &by, why) < 0) {
        return keel__vutil_refuse(sys, d, why); /* M6 */
    }
    int rc = keel__vutil_get_u64(sys, "count", &count);
    if (rc == KEEL_OK && count > UINT64_MAX / 2) {
        rc = KEEL_EINVAL; /* not a count this vat wrote */
    }
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "count", count + by);
    return rc < 0 ? rc : answer_fmt(sys, d, "{sI}", "count", count + by);
}

static int doomed_deliver(keel_syscall *sys, const keel_delivery *d)
{
    mkey key;
    uint64_t i = 0;
    keel_capdata info = {{"{}", 2}, NULL, 0};
    keel__vutil_why why;
    int rc = KEEL_EINVAL;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        goto out; /* it asks nothing: a notify breaks the kernel's rules */
    }
    if (strcmp(d->method, "ping") == 0) {
        rc = echo_ping(sys, d);
    } else if (strcmp(d->method, "hold") == 0) {
        /* kept unresolved: termination rejects it; none: dropped */
        rc = d->result == NULL
                 ? KEEL_OK
                 : keel__vutil_key(key, sizeof(key), "held.", d->result);
        rc = rc < 0 || d->result == NULL ? rc
                                         : keel__vutil_set_str(sys, key, "1");
    } else if (strcmp(d->method, "quit") == 0) {
        if (keel__vutil_args_u64(d, "i", MIXED_MAX_ROUNDS, &i, why) < 0) {
            return keel__vutil_refuse(sys, d, why); /* M6 */
        }
        rc = answer_fmt(sys, d, "{sI}", "bye", i);
        rc = rc < 0 ? rc : keel_syscall_exit(sys, 0, &info);
    } else if (strcmp(d->method, "boom") == 0) {
        /* its purpose: the write is discarded with the crank, which fails
         * and the kernel terminates the vat (M6's one exception) */
        keel__vutil_set_str(sys, "boom", "1");
        rc = KEEL_EINVAL;
    } else {
        rc = keel__vutil_refuse(sys, d, "unknown method"); /* M6 */
    }
out:
    return rc;
}

/* ======================================================================== */
/* factory                                                                  */
/* ======================================================================== */

static int factory_deliver(keel_syscall *sys, const keel_delivery *d)
{
    mkey key;
    char obj[KEEL_VREF_MAX];
    keel_bytes val;
    uint64_t base = 0, x = 0;
    keel__vutil_why why;
    int rc = KEEL_EINVAL;
    int root = strcmp(d->target, "o+0") == 0;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        goto out; /* it asks nothing: a notify breaks the kernel's rules */
    }
    if (root && strcmp(d->method, "makeAdder") == 0) {
        const char *slots[1] = {obj};
        keel_capdata cd = {
            {KEEL_CAPDATA_SLOT0, sizeof(KEEL_CAPDATA_SLOT0) - 1}, slots, 1};
        if (keel__vutil_args_u64(d, "base", MIXED_MAX_ROUNDS, &base, why) < 0) {
            return keel__vutil_refuse(sys, d, why); /* M6 */
        }
        if (d->result == NULL) {
            return KEEL_OK; /* M6: nobody would get the adder */
        }
        rc = keel_syscall_alloc_object(sys, obj);
        rc = rc < 0 ? rc : keel__vutil_key(key, sizeof(key), "adder.", obj);
        rc = rc < 0 ? rc : keel__vutil_set_u64(sys, key, base);
        rc = rc < 0 ? rc : keel_syscall_resolve(sys, d->result, 0, &cd);
    } else if (!root && strcmp(d->method, "add") == 0) {
        rc = keel__vutil_key(key, sizeof(key), "adder.", d->target);
        rc = rc < 0 ? rc : keel_syscall_vatstore_get(sys, key, &val);
        if (rc == 0) {
            rc = KEEL_EINVAL; /* an object it exported is not an adder */
        }
        rc = rc < 0 ? rc : keel__vutil_get_u64(sys, key, &base);
        if (rc == KEEL_OK &&
            keel__vutil_args_u64(d, "x", MIXED_MAX_ROUNDS * 2, &x, why) < 0) {
            return keel__vutil_refuse(sys, d, why); /* M6 */
        }
        rc = rc < 0 ? rc : answer_fmt(sys, d, "{sI}", "sum", base + x);
    } else {
        rc = keel__vutil_refuse(sys, d, "unknown method"); /* M6 */
    }
out:
    return rc;
}

/* ======================================================================== */
/* clock                                                                    */
/* ======================================================================== */

typedef struct clock clock_vat;

enum job_phase { JOB_RUNNING, JOB_WORKED, JOB_ORPHANED };

typedef struct clock_job {
    clock_vat *cv;
    uint64_t i;
    uint64_t h;       /* written by the work function */
    atomic_int phase; /* M3 */
} clock_job;

struct clock {
    int armed;      /* M2: a timer or job is out for the oldest request */
    clock_job *job; /* the job out, if the armed one is a job */
};

/* The oldest request: its key into key[] and its JSON (*req, caller
 * decrefs). @return 1, 0 (none), or < 0. */
static int oldest(keel_syscall *sys, char *key, size_t cap, json_t **req)
{
    char buf[256];
    int rc = keel_syscall_vatstore_next_key(sys, "q.", key, cap);
    if (rc == 1 && strncmp(key, "q.", 2) != 0) {
        rc = 0; /* past the q.* range */
    }
    if (rc == 1) {
        rc = keel__vutil_get_str(sys, key, buf, sizeof(buf));
        rc = rc == 0 ? KEEL_EINVAL : rc;
    }
    if (rc == 1) {
        *req = json_loads(buf, 0, NULL);
        rc = *req != NULL ? 1 : KEEL_EINVAL;
    }
    return rc;
}

static void clock_arm(clock_vat *cv, keel_syscall *sys);

/* Out of crank: answer the oldest request (a sleep's {"woke":i*i mod 1000},
 * or a hash's {"h":h}), forget it, arm the next (M2). A failed syscall
 * dooms the vat: then nothing is armed. */
static void clock_answer(clock_vat *cv, keel_syscall *sys, int is_hash,
                         uint64_t h)
{
    char key[KEEL_VATSTORE_KEY_MAX + 1];
    json_t *req = NULL;
    char *body = NULL;
    uint64_t i = 0;
    cv->armed = 0;
    if (oldest(sys, key, sizeof(key), &req) == 1 &&
        keel__vutil_field_u64(req, "i", &i) == KEEL_OK) {
        body = is_hash ? keel__vutil_json("{sI}", "h", (json_int_t)h)
                       : keel__vutil_json("{sI}", "woke",
                                          (json_int_t)(i * i % 1000));
    }
    const char *p = json_string_value(json_object_get(req, "p"));
    if (body != NULL && p != NULL &&
        keel__vutil_resolve(sys, p, body) == KEEL_OK &&
        keel_syscall_vatstore_delete(sys, key) == KEEL_OK) {
        clock_arm(cv, sys);
    }
    free(body);
    json_decref(req);
}

static void clock_timer_fired(void *arg, keel_syscall *sys)
{
    clock_answer(arg, sys, 0, 0);
}

/* On a thread-pool thread (or, deterministic, the kernel's): the job
 * only (M3). */
static void clock_job_work(void *arg)
{
    clock_job *jb = arg;
    int running = JOB_RUNNING;
    jb->h = mix(jb->i);
    if (!atomic_compare_exchange_strong(&jb->phase, &running, JOB_WORKED)) {
        free(jb); /* M3: orphaned by stop() */
    }
}

static void clock_job_done(void *arg, keel_syscall *sys)
{
    clock_job *jb = arg;
    clock_vat *cv = jb->cv;
    uint64_t h = jb->h;
    cv->job = NULL; /* M3: this callback alone owns jb now */
    free(jb);
    clock_answer(cv, sys, 1, h);
}

/* Start the job of a hash request. @return 1 armed, 0 not. */
static int clock_start_job(clock_vat *cv, keel_syscall *sys, uint64_t i)
{
    int armed = 0;
    clock_job *jb = calloc(1, sizeof(*jb));
    if (jb != NULL) {
        jb->cv = cv;
        jb->i = i;
        atomic_init(&jb->phase, JOB_RUNNING);
        cv->job = jb;
        armed =
            keel_vat_work(sys, clock_job_work, clock_job_done, jb) == KEEL_OK;
        if (!armed) {
            cv->job = NULL;
            free(jb);
        }
    }
    return armed;
}

/* Arm a timer or job for the oldest request, if any and none is (M2). */
static void clock_arm(clock_vat *cv, keel_syscall *sys)
{
    char key[KEEL_VATSTORE_KEY_MAX + 1];
    json_t *req = NULL;
    uint64_t i = 0, ms = 0;
    if (!cv->armed && oldest(sys, key, sizeof(key), &req) == 1 &&
        keel__vutil_field_u64(req, "i", &i) == KEEL_OK) {
        const char *kind = json_string_value(json_object_get(req, "k"));
        if (kind != NULL && strcmp(kind, "sleep") == 0 &&
            keel__vutil_field_u64(req, "ms", &ms) == KEEL_OK) {
            cv->armed =
                keel_vat_timer(sys, ms, clock_timer_fired, cv) == KEEL_OK;
        } else if (kind != NULL && strcmp(kind, "hash") == 0) {
            cv->armed = clock_start_job(cv, sys, i);
        }
    }
    json_decref(req);
}

/* sleep / hash: queue the request, arm it if it is the only one. */
static int clock_deliver(clock_vat *cv, keel_syscall *sys,
                         const keel_delivery *d)
{
    char key[32];
    uint64_t seq = 0, i = 0, ms = 0;
    char *req = NULL;
    json_t *args = NULL;
    keel__vutil_why why;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL; /* it asks nothing: a notify breaks the rules */
    }
    int is_sleep = strcmp(d->method, "sleep") == 0;
    int is_hash = strcmp(d->method, "hash") == 0;
    if (!is_sleep && !is_hash) {
        return keel__vutil_refuse(sys, d, "unknown method"); /* M6 */
    }
    int rc = keel__vutil_args(d, 0, &args, why);
    rc =
        rc < 0 ? rc : keel__vutil_arg_u64(args, "i", MIXED_MAX_ROUNDS, &i, why);
    if (rc == KEEL_OK && is_sleep) {
        rc = keel__vutil_arg_u64(args, "ms", 1000, &ms, why);
    }
    json_decref(args);
    if (rc < 0) {
        return keel__vutil_refuse(sys, d, why); /* M6 */
    }
    if (d->result == NULL) {
        return KEEL_OK; /* M6: nobody would get the answer */
    }
    rc = keel__vutil_get_u64(sys, "seq", &seq);
    if (rc == KEEL_OK) {
        req = keel__vutil_json("{sssssIsI}", "p", d->result, "k",
                               is_sleep ? "sleep" : "hash", "i", (json_int_t)i,
                               "ms", (json_int_t)ms);
        rc = req == NULL ? KEEL_ENOMEM : KEEL_OK;
    }
    if (rc == KEEL_OK) {
        snprintf(key, sizeof(key), "q.%010llu", (unsigned long long)seq);
        rc = keel__vutil_set_str(sys, key, req);
    }
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "seq", seq + 1);
    if (rc == KEEL_OK) {
        clock_arm(cv, sys);
    }
    free(req);
    return rc;
}

static void clock_stop(clock_vat *cv)
{
    /* M3: a job whose done will never run: free it if its work returned,
     * else the work will. */
    if (cv->job != NULL &&
        atomic_exchange(&cv->job->phase, JOB_ORPHANED) == JOB_WORKED) {
        free(cv->job);
    }
    free(cv);
}

/* ======================================================================== */
/* driver                                                                   */
/* ======================================================================== */

typedef struct driver {
    uint64_t rounds;
} driver;

/* Ask vat `name` (or, with name NULL, the promise or object `target`)
 * method(body), and remember under w.<P> what the answer must be: kind
 * "rej" a rejection, any other a fulfilment carrying `expect`; hops: the
 * pings of a chain still to go, or for a sleep 1 if a hash follows. */
static int ask(keel_syscall *sys, const char *name, const char *target,
               const char *method, const char *body, const char *kind,
               uint64_t expect, uint64_t hops, char *result)
{
    char ref[KEEL_VREF_MAX];
    mkey key;
    char *w = NULL;
    int rc = KEEL_OK;
    if (name != NULL) {
        rc = keel__vutil_key(key, sizeof(key), "ref.", name);
        rc = rc < 0 ? rc : keel__vutil_get_str(sys, key, ref, sizeof(ref));
        if (rc == 0) {
            rc = KEEL_EINVAL; /* bootstrap never ran */
        }
        target = ref;
    }
    rc = rc < 0 ? rc
                : keel__vutil_ask(sys, target, method, body, NULL, 0, result);
    if (rc >= 0) {
        w = keel__vutil_json("{sssIsI}", "k", kind, "e", (json_int_t)expect,
                             "h", (json_int_t)hops);
        rc = w == NULL ? KEEL_ENOMEM : KEEL_OK;
    }
    rc = rc < 0 ? rc : keel__vutil_key(key, sizeof(key), "w.", result);
    rc = rc < 0 ? rc : keel__vutil_set_str(sys, key, w);
    free(w);
    return rc < 0 ? rc : KEEL_OK;
}

/* ask() with a body of one integer field. */
static int ask1(keel_syscall *sys, const char *name, const char *method,
                const char *field, uint64_t v, const char *kind,
                uint64_t expect, uint64_t hops)
{
    char result[KEEL_VREF_MAX];
    char *body = keel__vutil_json("{sI}", field, (json_int_t)v);
    int rc = body == NULL ? KEEL_ENOMEM
                          : ask(sys, name, NULL, method, body, kind, expect,
                                hops, result);
    free(body);
    return rc;
}

/* Send method(body) to target with a fresh result promise into result,
 * not subscribed: only a message sent to it later waits on it. */
static int send_to(keel_syscall *sys, const char *name, const char *method,
                   const char *body, char *result)
{
    char ref[KEEL_VREF_MAX];
    mkey key;
    keel_capdata cd = {{body, strlen(body)}, NULL, 0};
    int rc = keel__vutil_key(key, sizeof(key), "ref.", name);
    rc = rc < 0 ? rc : keel__vutil_get_str(sys, key, ref, sizeof(ref));
    if (rc == 0) {
        rc = KEEL_EINVAL;
    }
    rc = rc < 0 ? rc : keel_syscall_alloc_promise(sys, result);
    rc = rc < 0 ? rc : keel_syscall_send(sys, ref, method, &cd, result);
    return rc < 0 ? rc : KEEL_OK;
}

/* The fan-out: 1 + i%5 incr, each checked against the driver's own count
 * of that counter. */
static int fan_out(keel_syscall *sys, uint64_t i, uint64_t *out)
{
    int rc = KEEL_OK;
    for (uint64_t j = 0; rc == KEEL_OK && j < 1 + i % 5; j++) {
        char name[16], key[16];
        uint64_t c = (i + j) % NCOUNTERS, count = 0;
        snprintf(name, sizeof(name), "counter%llu", (unsigned long long)c);
        snprintf(key, sizeof(key), "ctr.%llu", (unsigned long long)c);
        rc = keel__vutil_get_u64(sys, key, &count);
        count += j + 1;
        rc = rc < 0 ? rc : keel__vutil_set_u64(sys, key, count);
        rc =
            rc < 0 ? rc : ask1(sys, name, "incr", "by", j + 1, "ctr", count, 0);
        ++*out;
    }
    return rc;
}

/* The pipelining: add sent to makeAdder's result before it resolves. */
static int pipeline(keel_syscall *sys, uint64_t i, uint64_t *out)
{
    char p[KEEL_VREF_MAX], r[KEEL_VREF_MAX];
    char *body = keel__vutil_json("{sI}", "base", (json_int_t)i);
    char *add1 = keel__vutil_json("{sI}", "x", (json_int_t)(2 * i));
    char *add2 = keel__vutil_json("{sI}", "x", (json_int_t)i);
    int rc =
        body == NULL || add1 == NULL || add2 == NULL ? KEEL_ENOMEM : KEEL_OK;
    rc = rc < 0 ? rc : send_to(sys, "factory", "makeAdder", body, p);
    /* the adder itself comes back too (a.<P>): the driver lets it go at
     * once, so the factory is told to forget it once the adds are done */
    mkey akey;
    rc = rc < 0 ? rc : keel_syscall_subscribe(sys, p);
    rc = rc < 0 ? rc : keel__vutil_key(akey, sizeof(akey), "a.", p);
    rc = rc < 0 ? rc : keel__vutil_set_str(sys, akey, "1");
    rc = rc < 0 ? rc : ask(sys, NULL, p, "add", add1, "add", 3 * i, 0, r);
    ++*out;
    if (rc == KEEL_OK && i % 2 == 0) {
        rc = ask(sys, NULL, p, "add", add2, "add", 2 * i, 0, r);
        ++*out;
    }
    free(body);
    free(add1);
    free(add2);
    return rc;
}

/* The doomed vats' part of round i. The holds of rounds before Q are
 * answered (rejected) only when the quitter exits: round Q waits for
 * them. */
static int doomed_round(keel_syscall *sys, uint64_t i, uint64_t rounds,
                        uint64_t *out)
{
    char p[KEEL_VREF_MAX], r[KEEL_VREF_MAX];
    uint64_t q = quit_round(rounds), c = crash_round(rounds);
    int rc = KEEL_OK;
    if (i < q) {
        rc = ask1(sys, "quitter", "hold", "i", i, "rej", 0, 0);
        rc = rc < 0 ? rc
                    : ask1(sys, "quitter", "ping", "n", i, "ping", i + 1, 1);
        ++*out;
    } else if (i == q) {
        rc = ask1(sys, "quitter", "quit", "i", i, "quit", i, 0);
        *out += 1 + (q - 1);
    } else {
        rc = ask1(sys, "quitter", "ping", "n", i, "rej", 0, 0);
        rc = rc < 0 ? rc : send_to(sys, "quitter", "hold", "{}", p);
        rc = rc < 0 ? rc : ask(sys, NULL, p, "use", "{}", "rej", 0, 0, r);
        *out += 2;
    }
    if (rc == KEEL_OK && i < c) {
        rc = ask1(sys, "crasher", "ping", "n", i, "ping", i + 1, 1);
    } else if (rc == KEEL_OK) {
        rc = i == c ? ask(sys, "crasher", NULL, "boom", "{}", "rej", 0, 0, r)
                    : ask1(sys, "crasher", "ping", "n", i, "rej", 0, 0);
    }
    ++*out;
    return rc;
}

/* Phase 1 of round i: every question but the clock's, at once. */
static int start_round(driver *dv, keel_syscall *sys, uint64_t i)
{
    uint64_t out = 1; /* the ping chain */
    int rc = keel__vutil_set_u64(sys, "round", i);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "phase", 1);
    rc = rc < 0 ? rc
                : ask1(sys, "echo", "ping", "n", i, "ping", i + 1, 1 + i % 3);
    rc = rc < 0 ? rc : fan_out(sys, i, &out);
    rc = rc < 0 ? rc : pipeline(sys, i, &out);
    rc = rc < 0 ? rc : doomed_round(sys, i, dv->rounds, &out);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "out", out);
    return rc;
}

/* Phase 2 of round i: sleep({"i":i,"ms":i mod 3}) to the clock, then in
 * odd rounds hash({"i":i}), one after the other (M5). */
static int ask_clock(keel_syscall *sys, uint64_t i)
{
    char r[KEEL_VREF_MAX];
    char *body = keel__vutil_json("{sIsI}", "i", (json_int_t)i, "ms",
                                  (json_int_t)(i % 3));
    int rc = body == NULL ? KEEL_ENOMEM
                          : ask(sys, "clock", NULL, "sleep", body, "sleep",
                                i * i % 1000, i % 2, r);
    free(body);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "phase", 2);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "out", 1);
    return rc;
}

/* Every answer of the current phase of round i came: go on. */
static int end_phase(driver *dv, keel_syscall *sys, uint64_t i)
{
    uint64_t phase = 0;
    int rc = keel__vutil_get_u64(sys, "phase", &phase);
    if (rc == KEEL_OK && phase == 1) {
        rc = ask_clock(sys, i);
    } else if (rc == KEEL_OK) {
        rc = keel__vutil_set_u64(sys, "rounds_done", i);
        if (rc == KEEL_OK && i < dv->rounds) {
            rc = start_round(dv, sys, i + 1);
        } else if (rc == KEEL_OK) {
            rc = keel__vutil_set_str(sys, "done", "1");
        }
    }
    return rc;
}

static int driver_bootstrap(driver *dv, keel_syscall *sys,
                            const keel_delivery *d)
{
    enum { NV = sizeof(vat_names) / sizeof(*vat_names) };
    char ref[NV][KEEL_VREF_MAX];
    mkey key;
    int rc = keel__vutil_get_str(sys, "ref.echo", ref[0], sizeof(ref[0]));
    if (rc != 0) {
        return rc < 0 ? rc : keel__vutil_refuse(sys, d, "already bootstrapped");
    }
    for (size_t n = 0; n < NV; n++) { /* M6: check all before any write */
        if (keel__vutil_bootstrap_root(&d->args, vat_names[n], ref[n]) < 0) {
            keel__vutil_why why;
            snprintf(why, sizeof(why),
                     "arguments must be {\"vats\":{...}} with a slot for "
                     "\"%s\"",
                     vat_names[n]);
            return keel__vutil_refuse(sys, d, why);
        }
    }
    for (size_t n = 0; rc == KEEL_OK && n < NV; n++) {
        rc = keel__vutil_key(key, sizeof(key), "ref.", vat_names[n]);
        rc = rc < 0 ? rc : keel__vutil_set_str(sys, key, ref[n]);
    }
    rc = rc < 0 ? rc : keel__vutil_answer(sys, d, "null");
    if (rc == KEEL_OK) {
        rc = dv->rounds == 0 ? keel__vutil_set_str(sys, "done", "1")
                             : start_round(dv, sys, 1);
    }
    return rc;
}

/* The resolution field each kind of answer carries. */
static const char *answer_field(const char *kind)
{
    static const char *const fields[][2] = {
        {"ping", "value"}, {"ctr", "count"}, {"add", "sum"},
        {"sleep", "woke"}, {"hash", "h"},    {"quit", "bye"},
    };
    for (size_t n = 0; n < sizeof(fields) / sizeof(*fields); n++) {
        if (strcmp(kind, fields[n][0]) == 0) {
            return fields[n][1];
        }
    }
    return NULL;
}

/* A rejection must be the kernel's "vat terminated". */
static int terminated_reason(const keel_delivery *d)
{
    json_t *body = NULL;
    int ok = keel__vutil_parse(&d->resolution, &body) == KEEL_OK &&
             json_is_string(json_object_get(body, "error")) &&
             strcmp(json_string_value(json_object_get(body, "error")),
                    "vat terminated") == 0;
    json_decref(body);
    return ok;
}

/* Check an answer against its w.<P> record w, and count it. *got: the
 * value it carried (fulfilments). */
static int check_answer(keel_syscall *sys, const keel_delivery *d,
                        const json_t *w, uint64_t *got)
{
    uint64_t expect = 0, n = 0;
    const char *kind = json_string_value(json_object_get(w, "k"));
    int rej = kind != NULL && strcmp(kind, "rej") == 0;
    const char *field = kind != NULL ? answer_field(kind) : NULL;
    int rc = rej || field != NULL ? KEEL_OK : KEEL_EINVAL;
    if (rc == KEEL_OK && rej) {
        rc = d->rejected && terminated_reason(d) ? KEEL_OK : KEEL_EINVAL;
    } else if (rc == KEEL_OK) {
        rc = d->rejected ? KEEL_EINVAL : KEEL_OK;
        rc = rc < 0 ? rc : keel__vutil_field_u64(w, "e", &expect);
        rc = rc < 0 ? rc : keel__vutil_body_u64(&d->resolution, field, got);
        if (rc == KEEL_OK && *got != expect) {
            rc = KEEL_EINVAL; /* a wrong answer fails the driver */
        }
    }
    const char *count = rej ? "rejections" : "answers";
    rc = rc < 0 ? rc : keel__vutil_get_u64(sys, count, &n);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, count, n + 1);
    return rc;
}

/* An answer: check it against w.<P>, then ask the next hop of a chain, or
 * count it off the phase. */
static int driver_notify(driver *dv, keel_syscall *sys, const keel_delivery *d)
{
    mkey key;
    char wbuf[160];
    json_t *w = NULL;
    uint64_t hops = 0, got = 0, out = 0, i = 0;
    int rc = keel__vutil_key(key, sizeof(key), "w.", d->promise);
    rc = rc < 0 ? rc : keel__vutil_get_str(sys, key, wbuf, sizeof(wbuf));
    if (rc == 0) {
        rc = KEEL_EINVAL; /* not a question the driver asked */
    }
    rc = rc < 0 ? rc : keel_syscall_vatstore_delete(sys, key);
    if (rc == KEEL_OK) {
        w = json_loads(wbuf, 0, NULL);
        rc = w == NULL ? KEEL_EINVAL : KEEL_OK;
    }
    rc = rc < 0 ? rc : keel__vutil_field_u64(w, "h", &hops);
    rc = rc < 0 ? rc : check_answer(sys, d, w, &got);
    rc = rc < 0 ? rc : keel__vutil_get_u64(sys, "round", &i);
    if (rc < 0) {
        goto out;
    }
    const char *kind = json_string_value(json_object_get(w, "k"));
    if (strcmp(kind, "ping") == 0 && hops > 1) {
        /* ping-pong: the next hop takes this one's place in `out` */
        rc = ask1(sys, "echo", "ping", "n", got, "ping", got + 1, hops - 1);
        goto out;
    }
    if (strcmp(kind, "sleep") == 0 && hops > 0) {
        rc = ask1(sys, "clock", "hash", "i", i, "hash", mix(i), 0);
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "out", &out);
    if (rc == KEEL_OK && out == 0) {
        rc = KEEL_EINVAL; /* an answer nobody waits for */
    }
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "out", out - 1);
    if (rc == KEEL_OK && out == 1) {
        rc = end_phase(dv, sys, i);
    }
out:
    json_decref(w);
    return rc;
}

/* The adder a makeAdder answered (a.<P>): not an answer to count; the
 * driver needs it no more (its adds went to P) and forgets the import.
 * @return 1 handled, 0 not an adder's promise, < 0. */
static int driver_adder(keel_syscall *sys, const keel_delivery *d)
{
    mkey key;
    char buf[4];
    int rc = keel__vutil_key(key, sizeof(key), "a.", d->promise);
    rc = rc < 0 ? rc : keel__vutil_get_str(sys, key, buf, sizeof(buf));
    if (rc <= 0) {
        return rc;
    }
    rc = keel_syscall_vatstore_delete(sys, key);
    if (rc == KEEL_OK && (d->rejected || d->resolution.nslots != 1)) {
        rc = KEEL_EINVAL; /* the factory always answers an adder */
    }
    rc = rc < 0 ? rc : keel__vutil_forget_import(sys, d->resolution.slots[0]);
    return rc < 0 ? rc : 1;
}

static int driver_deliver(driver *dv, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        int rc = driver_adder(sys, d);
        return rc != 0 ? (rc < 0 ? rc : KEEL_OK) : driver_notify(dv, sys, d);
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return driver_bootstrap(dv, sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* M6 */
}

/* ======================================================================== */
/* the vat                                                                  */
/* ======================================================================== */

enum role {
    ROLE_DRIVER,
    ROLE_ECHO,
    ROLE_COUNTER,
    ROLE_FACTORY,
    ROLE_CLOCK,
    ROLE_DOOMED
};

typedef struct mixed {
    enum role role;
    driver dv;
    clock_vat *cv;
} mixed;

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    static const char *const roles[] = {"driver",  "echo",  "counter",
                                        "factory", "clock", "doomed"};
    json_t *params = NULL;
    char role[16];
    mixed *m = calloc(1, sizeof(*m));
    int rc = m == NULL ? KEEL_ENOMEM : KEEL_OK;
    rc = rc < 0 ? rc : keel__vutil_params(params_json, &params);
    rc = rc < 0 ? rc
                : keel__vutil_param_str(params, "role", "", role, sizeof(role));
    if (rc == KEEL_OK) {
        rc = KEEL_EINVAL;
        for (size_t n = 0; n < sizeof(roles) / sizeof(*roles); n++) {
            if (strcmp(role, roles[n]) == 0) {
                m->role = (enum role)n;
                rc = KEEL_OK;
            }
        }
    }
    if (rc == KEEL_OK && m->role == ROLE_DRIVER) {
        rc = keel__vutil_param_u64(params, "rounds", 40, &m->dv.rounds);
        rc =
            rc == KEEL_OK && m->dv.rounds > MIXED_MAX_ROUNDS ? KEEL_EINVAL : rc;
    }
    if (rc == KEEL_OK && m->role == ROLE_CLOCK) {
        m->cv = calloc(1, sizeof(*m->cv));
        rc = m->cv == NULL ? KEEL_ENOMEM : KEEL_OK;
        if (rc == KEEL_OK) {
            clock_arm(m->cv, sys); /* M2: reads only (M1) */
        }
    }
    json_decref(params);
    if (rc < 0 && m != NULL) {
        if (m->cv != NULL) {
            clock_stop(m->cv);
        }
        free(m);
        m = NULL;
    }
    *state = m;
    return rc;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    mixed *m = state;
    if (keel__vutil_is_gc(d)) {
        /* the factory forgets an adder nobody holds any more (M7); the
         * other roles export nothing but their root */
        if (m->role == ROLE_FACTORY && d->kind == KEEL_DELIVER_RETIRE_EXPORTS) {
            for (size_t i = 0; i < d->nvrefs; i++) {
                mkey key;
                int rc =
                    keel__vutil_key(key, sizeof(key), "adder.", d->vrefs[i]);
                rc = rc < 0 ? rc : keel_syscall_vatstore_delete(sys, key);
                if (rc < 0) {
                    return rc;
                }
            }
        }
        return 0;
    }
    int msg = d->kind == KEEL_DELIVER_MESSAGE;
    switch (m->role) {
    case ROLE_DRIVER:
        return driver_deliver(&m->dv, sys, d);
    case ROLE_ECHO:
        return !msg ? KEEL_EINVAL
               : strcmp(d->method, "ping") == 0
                   ? echo_ping(sys, d)
                   : keel__vutil_refuse(sys, d, "unknown method");
    case ROLE_COUNTER:
        return !msg ? KEEL_EINVAL
               : strcmp(d->method, "incr") == 0
                   ? counter_incr(sys, d)
                   : keel__vutil_refuse(sys, d, "unknown method");
    case ROLE_FACTORY:
        return factory_deliver(sys, d);
    case ROLE_CLOCK:
        return clock_deliver(m->cv, sys, d);
    case ROLE_DOOMED:
        return doomed_deliver(sys, d);
    }
    return KEEL_EINVAL;
}

static void stop(void *state)
{
    mixed *m = state;
    if (m != NULL && m->cv != NULL) {
        clock_stop(m->cv);
    }
    free(m);
}

const keel_vat_ops keel__vat_mixed = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "mixed",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};
