/*
 * vats/chain5.c — the five-hop chain of SPEC §9.12: three built-in vats,
 * "coordinator", "provider" and "keyring".
 *
 * Params: coordinator {"rounds":N (default 5), "provider":"<vat name>"
 *         (default "provider"), "keyring":"<vat name>" (default
 *         "keyring")}; provider and keyring take none.
 *
 * Round i = 1..N:
 *   hop 1  coordinator ── fetch({"i":i}) result P1 ──► provider
 *          The provider records job.<P1> = i and starts thread-pool work
 *          v = chain_value(i) = i*i + 7. Its crank ends with P1 unresolved
 *          and (in this cluster) the run queue empty. The work's done
 *          callback then resolves P1 {"value":v} OUT OF CRANK (SPEC §5):
 *          nothing else would ever deliver the answer.
 *   hop 2  notify(P1) ──► coordinator; it checks v == chain_value(i).
 *   hop 3  coordinator ── sign({"v":v,"provider":{"@slot":0}},
 *                              slots [provider's root]) result P2 ──► keyring
 *          Capability passing: the keyring was never given the provider;
 *          it reaches it only through slot 0 of this message.
 *   hop 4  keyring ── record({"sig":s}) result P3 ──► provider, where
 *          s = chain_sig(v) = (v * 7919 + 13) mod 65521. The provider
 *          stores record.<n> = s and resolves P3 {"ok":s} in that crank.
 *   hop 5  notify(P3) ──► keyring, which resolves P2 {"sig":s};
 *          notify(P2) ──► coordinator: it checks s ==
 *          chain_sig(chain_value(i)), stores result.<i> = s and
 *          rounds_done = i, then starts round i+1, or sets done = "1".
 *
 * Expected final values (chain5.json runs 5 rounds):
 *   i    1      2      3      4      5      6      7      8      9     10
 *   v    8     11     16     23     32     43     56     71     88    107
 *   s 63365  21601  61196  51108  56858  12925  50351  38094  41675  61094
 *   coordinator: rounds_done = N, result.<i> = s(i), done = "1"
 *   provider:    records = N, record.<i> = s(i), no job.* key left
 *   keyring:     no wait.* key left
 *
 * Vatstore:
 *   coordinator  provider, keyring (root vrefs from bootstrap),
 *                wait.<P> = "fetch" | "sign" (the one outstanding question),
 *                rounds_done, result.<i>, done
 *   provider     job.<P1> = i (a fetch whose answer is not yet resolved),
 *                records, record.<n>
 *   keyring      wait.<P3> = P2 (the sign request a record answers)
 *
 * Invariants:
 *   F1  Every vat's progress is in its vatstore (in memory: params, and the
 *       provider's list of jobs in flight), so a restart resumes exactly.
 *   F2  A fetch's job.<P1> key is written in the fetch crank and deleted
 *       by `done` right after it resolves P1. The provider's start() starts
 *       the work again for every job.<P1> left, so a kill between the fetch
 *       crank and the resolve loses no answer. start() itself makes no
 *       writes (no transaction on restart). The resolve and the delete must
 *       commit together: this relies on the kernel committing the syscalls
 *       of one async callback as one out-of-crank transaction. If each were
 *       its own transaction, a kill between the two would leave job.<P1>
 *       behind an already-resolved P1, and the restarted work would resolve
 *       it a second time (illegal: the provider is terminated).
 *   F3  Each job is freed exactly once, by whichever of these ends it:
 *       `done` (the normal path); stop(), for a job whose work has returned
 *       but whose `done` will never run; or the work function itself, for
 *       a job that stop() orphaned while its work was still running (the
 *       kernel may stop a vat, on termination or close, with work in
 *       flight). job.phase, swapped atomically, decides between the last
 *       two. The work function touches only its job (it runs on a
 *       thread-pool thread and makes no syscalls).
 *   F4  Values are checked at the coordinator against chain_value and
 *       chain_sig; a mismatch or a rejected answer fails the delivery.
 *   F5  A message a vat does not accept (an unknown method; fetch without
 *       an integer "i" <= CHAIN_MAX_ROUNDS; record without an integer
 *       "sig" < 65521; sign without an integer "v" and exactly one slot,
 *       "provider":{"@slot":0}; a second or malformed bootstrap) is
 *       refused: its result is rejected and the vat lives on. A fetch or
 *       sign without a result promise is dropped (nobody would get the
 *       answer).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

/* Bounds i so that i*i + 7 cannot overflow and stays a JSON integer. */
#define CHAIN_MAX_ROUNDS 1000000000u

static uint64_t chain_value(uint64_t i)
{
    return i * i + 7;
}

static uint64_t chain_sig(uint64_t v)
{
    return ((v % 65521) * 7919 + 13) % 65521;
}

/* prefix + vref, e.g. "job.p-3". */
typedef char vref_key[8 + KEEL_VREF_MAX];

/* ======================================================================== */
/* provider                                                                 */
/* ======================================================================== */

typedef struct job job;

typedef struct provider {
    job *jobs; /* F3: `done` not yet run (kernel thread only) */
} provider;

enum job_phase { JOB_RUNNING, JOB_WORKED, JOB_ORPHANED };

struct job {
    job *next;
    provider *pv;
    char promise[KEEL_VREF_MAX]; /* P1, decided by the provider */
    uint64_t i;
    uint64_t v;       /* written by job_work */
    atomic_int phase; /* F3: enum job_phase */
};

static void job_unlink(job *jb)
{
    job **pp = &jb->pv->jobs;
    while (*pp != jb) {
        pp = &(*pp)->next;
    }
    *pp = jb->next;
}

/* On a thread-pool thread: only the job itself (F3). */
static void job_work(void *arg)
{
    job *jb = arg;
    int running = JOB_RUNNING;
    jb->v = chain_value(jb->i);
    if (!atomic_compare_exchange_strong(&jb->phase, &running, JOB_WORKED)) {
        free(jb); /* F3: orphaned by stop(); nobody else will free it */
    }
}

/* On the kernel's thread, between cranks: the out-of-crank resolve. */
static void job_done(void *arg, keel_syscall *sys)
{
    job *jb = arg;
    vref_key key;
    char *body = NULL;
    /* F3: off the list first, so this callback alone owns the job: a
     * syscall below that fails may terminate the vat, and the kernel may
     * then call stop() (freeing pv) before the syscall returns. */
    job_unlink(jb);
    body = keel__vutil_json("{sI}", "value", (json_int_t)jb->v);
    /* A failed syscall dooms the vat (vat.h): nothing is left to undo, and
     * nothing but jb may be touched after one. */
    if (body != NULL &&
        keel__vutil_resolve(sys, jb->promise, body) == KEEL_OK &&
        keel__vutil_key(key, sizeof(key), "job.", jb->promise) == KEEL_OK) {
        keel_syscall_vatstore_delete(sys, key); /* F2 */
    }
    free(body);
    free(jb);
}

static int job_start(provider *pv, keel_syscall *sys, const char *promise,
                     uint64_t i)
{
    int rc = KEEL_OK;
    job *jb = calloc(1, sizeof(*jb));
    if (jb == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    if (strlen(promise) >= sizeof(jb->promise)) {
        rc = KEEL_EINVAL;
        goto out;
    }
    strcpy(jb->promise, promise);
    jb->pv = pv;
    jb->i = i;
    atomic_init(&jb->phase, JOB_RUNNING);
    jb->next = pv->jobs;
    pv->jobs = jb;
    rc = keel_vat_work(sys, job_work, job_done, jb);
    if (rc < 0) {
        job_unlink(jb); /* never queued: free it here */
        goto out;
    }
    jb = NULL; /* owned by the list until job_done or stop (F3) */
out:
    free(jb);
    return rc;
}

static void provider_stop(void *state)
{
    provider *pv = state;
    if (pv == NULL) {
        return;
    }
    while (pv->jobs != NULL) {
        job *jb = pv->jobs;
        pv->jobs = jb->next;
        /* F3: free it if its work has returned; else the work will. */
        if (atomic_exchange(&jb->phase, JOB_ORPHANED) == JOB_WORKED) {
            free(jb);
        }
    }
    free(pv);
}

/* F2: start the work again for every fetch not yet answered. */
static int provider_start(keel_syscall *sys, const char *params_json,
                          void **state)
{
    char after[KEEL_VATSTORE_KEY_MAX + 1] = "job.";
    char key[KEEL_VATSTORE_KEY_MAX + 1];
    uint64_t i = 0;
    int rc = KEEL_OK;
    provider *pv = calloc(1, sizeof(*pv));
    if (pv == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    for (;;) {
        rc = keel_syscall_vatstore_next_key(sys, after, key, sizeof(key));
        if (rc <= 0 || strncmp(key, "job.", 4) != 0) {
            break; /* the job.* range is over */
        }
        strcpy(after, key);
        rc = keel__vutil_get_u64(sys, key, &i);
        if (rc < 0) {
            goto out;
        }
        rc = job_start(pv, sys, key + 4, i);
        if (rc < 0) {
            goto out;
        }
    }
    rc = rc < 0 ? rc : KEEL_OK;
out:
    if (rc < 0) {
        provider_stop(pv);
        pv = NULL;
    }
    *state = pv;
    return rc;
}

/* fetch({"i":i}) → P1, answered later by job_done. */
static int provider_fetch(provider *pv, keel_syscall *sys,
                          const keel_delivery *d)
{
    vref_key key;
    uint64_t i = 0;
    keel__vutil_why why;
    int rc = keel__vutil_args_u64(d, "i", CHAIN_MAX_ROUNDS, &i, why);
    if (rc < 0) {
        return keel__vutil_refuse(sys, d, why); /* F5 */
    }
    if (d->result == NULL) {
        return KEEL_OK; /* F5: nobody would get the answer */
    }
    rc = keel__vutil_key(key, sizeof(key), "job.", d->result);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_u64(sys, key, i); /* F2 */
    if (rc < 0) {
        goto out;
    }
    rc = job_start(pv, sys, d->result, i);
out:
    return rc;
}

/* record({"sig":s}) → {"ok":s}. */
static int provider_record(keel_syscall *sys, const keel_delivery *d)
{
    char key[32];
    uint64_t s = 0;
    uint64_t n = 0;
    char *body = NULL;
    keel__vutil_why why;
    int rc = keel__vutil_args_u64(d, "sig", 65520, &s, why);
    if (rc < 0) {
        return keel__vutil_refuse(sys, d, why); /* F5 */
    }
    rc = keel__vutil_get_u64(sys, "records", &n);
    if (rc < 0) {
        goto out;
    }
    n++;
    snprintf(key, sizeof(key), "record.%llu", (unsigned long long)n);
    rc = keel__vutil_set_u64(sys, key, s);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_u64(sys, "records", n);
    if (rc < 0) {
        goto out;
    }
    body = keel__vutil_json("{sI}", "ok", (json_int_t)s);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_answer(sys, d, body);
out:
    free(body);
    return rc;
}

static int provider_deliver(void *state, keel_syscall *sys,
                            const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL; /* the provider subscribes to nothing */
    }
    if (strcmp(d->method, "fetch") == 0) {
        return provider_fetch(state, sys, d);
    }
    if (strcmp(d->method, "record") == 0) {
        return provider_record(sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* F5 */
}

const keel_vat_ops keel__vat_provider = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "provider",
    .start = provider_start,
    .deliver = provider_deliver,
    .stop = provider_stop,
};

/* ======================================================================== */
/* keyring                                                                  */
/* ======================================================================== */

static int keyring_start(keel_syscall *sys, const char *params_json,
                         void **state)
{
    *state = NULL; /* F1: everything is in the vatstore */
    return KEEL_OK;
}

/* sign({"v":v,"provider":{"@slot":0}}) → P2: ask the provider to record
 * s = chain_sig(v); P2 is answered when that record is. */
static int keyring_sign(keel_syscall *sys, const keel_delivery *d)
{
    json_t *args = NULL;
    const char *target = NULL;
    char p3[KEEL_VREF_MAX];
    vref_key key;
    uint64_t v = 0;
    char *body = NULL;
    keel__vutil_why why;
    int rc = keel__vutil_args(d, 1, &args, why);
    if (rc == KEEL_OK) {
        rc = keel__vutil_arg_u64(args, "v", (uint64_t)INT64_MAX, &v, why);
    }
    if (rc == KEEL_OK &&
        keel__vutil_slot(&d->args, json_object_get(args, "provider"), &target) <
            0) {
        snprintf(why, sizeof(why), "\"provider\" must be {\"@slot\":0}");
        rc = KEEL_EINVAL;
    }
    if (rc < 0) {
        rc = keel__vutil_refuse(sys, d, why); /* F5 */
        goto out;
    }
    if (d->result == NULL) {
        goto out; /* F5: nobody would get the signature */
    }
    body = keel__vutil_json("{sI}", "sig", (json_int_t)chain_sig(v));
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_ask(sys, target, "record", body, NULL, 0, p3);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_key(key, sizeof(key), "wait.", p3);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_str(sys, key, d->result);
out:
    free(body);
    json_decref(args);
    return rc;
}

/* notify(P3) {"ok":s}: resolve the P2 it answers with {"sig":s}. */
static int keyring_notify(keel_syscall *sys, const keel_delivery *d)
{
    vref_key key;
    char p2[KEEL_VREF_MAX];
    uint64_t s = 0;
    char *body = NULL;
    int rc = KEEL_EINVAL;
    if (d->rejected) {
        goto out; /* F4 */
    }
    rc = keel__vutil_key(key, sizeof(key), "wait.", d->promise);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_str(sys, key, p2, sizeof(p2));
    if (rc <= 0) {
        rc = rc == 0 ? KEEL_EINVAL : rc; /* not a record we asked for */
        goto out;
    }
    rc = keel_syscall_vatstore_delete(sys, key);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_body_u64(&d->resolution, "ok", &s);
    if (rc < 0) {
        goto out;
    }
    body = keel__vutil_json("{sI}", "sig", (json_int_t)s);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_resolve(sys, p2, body);
out:
    free(body);
    return rc;
}

static int keyring_deliver(void *state, keel_syscall *sys,
                           const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return keyring_notify(sys, d);
    }
    if (strcmp(d->method, "sign") == 0) {
        return keyring_sign(sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* F5 */
}

static void keyring_stop(void *state)
{
}

const keel_vat_ops keel__vat_keyring = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "keyring",
    .start = keyring_start,
    .deliver = keyring_deliver,
    .stop = keyring_stop,
};

/* ======================================================================== */
/* coordinator                                                              */
/* ======================================================================== */

typedef struct coordinator {
    uint64_t rounds;
    char provider[64]; /* vat names, used once at bootstrap */
    char keyring[64];
} coordinator;

static int coordinator_start(keel_syscall *sys, const char *params_json,
                             void **state)
{
    json_t *params = NULL;
    coordinator *co = calloc(1, sizeof(*co));
    int rc = KEEL_OK;
    if (co == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_params(params_json, &params);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_param_u64(params, "rounds", 5, &co->rounds);
    if (rc < 0 || co->rounds > CHAIN_MAX_ROUNDS) {
        rc = KEEL_EINVAL;
        goto out;
    }
    rc = keel__vutil_param_str(params, "provider", "provider", co->provider,
                               sizeof(co->provider));
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_param_str(params, "keyring", "keyring", co->keyring,
                               sizeof(co->keyring));
out:
    json_decref(params);
    if (rc < 0) {
        free(co);
        co = NULL;
    }
    *state = co;
    return rc;
}

/* Ask target method(body, slots) and remember the question's stage
 * ("fetch" or "sign") under wait.<P>. */
static int coordinator_ask(keel_syscall *sys, const char *target,
                           const char *method, const char *body,
                           const char *const *slots, size_t nslots,
                           const char *stage)
{
    char p[KEEL_VREF_MAX];
    vref_key key;
    int rc = keel__vutil_ask(sys, target, method, body, slots, nslots, p);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_key(key, sizeof(key), "wait.", p);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_str(sys, key, stage);
out:
    return rc;
}

/* hop 1 of round i. */
static int coordinator_fetch(keel_syscall *sys, uint64_t i)
{
    char provider_ref[KEEL_VREF_MAX];
    char *body = NULL;
    int rc = keel__vutil_get_str(sys, "provider", provider_ref,
                                 sizeof(provider_ref));
    if (rc <= 0) {
        rc = rc == 0 ? KEEL_EINVAL : rc;
        goto out;
    }
    body = keel__vutil_json("{sI}", "i", (json_int_t)i);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = coordinator_ask(sys, provider_ref, "fetch", body, NULL, 0, "fetch");
out:
    free(body);
    return rc;
}

/* hop 3 of round i: the provider's capability goes in slot 0. */
static int coordinator_sign(keel_syscall *sys, uint64_t v)
{
    char provider_ref[KEEL_VREF_MAX];
    char keyring_ref[KEEL_VREF_MAX];
    const char *slots[1] = {provider_ref};
    char *body = NULL;
    int rc = keel__vutil_get_str(sys, "provider", provider_ref,
                                 sizeof(provider_ref));
    if (rc > 0) {
        rc = keel__vutil_get_str(sys, "keyring", keyring_ref,
                                 sizeof(keyring_ref));
    }
    if (rc <= 0) {
        rc = rc == 0 ? KEEL_EINVAL : rc;
        goto out;
    }
    body = keel__vutil_json("{sIs{si}}", "v", (json_int_t)v, "provider",
                            "@slot", 0);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = coordinator_ask(sys, keyring_ref, "sign", body, slots, 1, "sign");
out:
    free(body);
    return rc;
}

static int coordinator_bootstrap(coordinator *co, keel_syscall *sys,
                                 const keel_delivery *d)
{
    char ref[KEEL_VREF_MAX], ref2[KEEL_VREF_MAX];
    keel__vutil_why why;
    int rc = keel__vutil_get_str(sys, "provider", ref, sizeof(ref));
    if (rc != 0) {
        return rc < 0 ? rc : keel__vutil_refuse(sys, d, "already bootstrapped");
    }
    if (keel__vutil_bootstrap_root(&d->args, co->provider, ref) < 0 ||
        keel__vutil_bootstrap_root(&d->args, co->keyring, ref2) < 0) {
        snprintf(why, sizeof(why),
                 "arguments must be {\"vats\":{\"%.40s\":{\"@slot\":i}, "
                 "\"%.40s\":{\"@slot\":j}}}",
                 co->provider, co->keyring);
        return keel__vutil_refuse(sys, d, why); /* F5 */
    }
    rc = keel__vutil_set_str(sys, "provider", ref);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_str(sys, "keyring", ref2);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_answer(sys, d, "null");
    if (rc < 0) {
        goto out;
    }
    if (co->rounds == 0) {
        rc = keel__vutil_set_str(sys, "done", "1");
    } else {
        rc = coordinator_fetch(sys, 1);
    }
out:
    return rc;
}

/* hop 5 ends round i with signature s. */
static int coordinator_finish(coordinator *co, keel_syscall *sys, uint64_t i,
                              uint64_t s)
{
    char key[32];
    snprintf(key, sizeof(key), "result.%llu", (unsigned long long)i);
    int rc = keel__vutil_set_u64(sys, key, s);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_u64(sys, "rounds_done", i);
    if (rc < 0) {
        goto out;
    }
    if (i < co->rounds) {
        rc = coordinator_fetch(sys, i + 1);
    } else {
        rc = keel__vutil_set_str(sys, "done", "1");
    }
out:
    return rc;
}

/* notify(P1) (hop 2) or notify(P2) (end of hop 5) of round rounds_done+1. */
static int coordinator_notify(coordinator *co, keel_syscall *sys,
                              const keel_delivery *d)
{
    vref_key key;
    char stage[8];
    uint64_t done = 0;
    uint64_t got = 0;
    uint64_t i;
    int rc = KEEL_EINVAL;
    if (d->rejected) {
        goto out; /* F4 */
    }
    rc = keel__vutil_key(key, sizeof(key), "wait.", d->promise);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_str(sys, key, stage, sizeof(stage));
    if (rc <= 0) {
        rc = rc == 0 ? KEEL_EINVAL : rc; /* not a question we asked */
        goto out;
    }
    rc = keel_syscall_vatstore_delete(sys, key);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "rounds_done", &done);
    if (rc < 0) {
        goto out;
    }
    i = done + 1;
    if (i > co->rounds) {
        rc = KEEL_EINVAL;
        goto out;
    }
    if (strcmp(stage, "fetch") == 0) {
        rc = keel__vutil_body_u64(&d->resolution, "value", &got);
        if (rc < 0 || got != chain_value(i)) {
            rc = KEEL_EINVAL; /* F4 */
            goto out;
        }
        rc = coordinator_sign(sys, got);
    } else if (strcmp(stage, "sign") == 0) {
        rc = keel__vutil_body_u64(&d->resolution, "sig", &got);
        if (rc < 0 || got != chain_sig(chain_value(i))) {
            rc = KEEL_EINVAL; /* F4 */
            goto out;
        }
        rc = coordinator_finish(co, sys, i, got);
    } else {
        rc = KEEL_EINVAL;
    }
out:
    return rc;
}

static int coordinator_deliver(void *state, keel_syscall *sys,
                               const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return coordinator_notify(state, sys, d);
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return coordinator_bootstrap(state, sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* F5 */
}

static void coordinator_stop(void *state)
{
    free(state);
}

const keel_vat_ops keel__vat_coordinator = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "coordinator",
    .start = coordinator_start,
    .deliver = coordinator_deliver,
    .stop = coordinator_stop,
};
