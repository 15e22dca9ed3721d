/*
 * vats/pingpong.c — the ping-pong vat (SPEC §9.1), built in as "pingpong".
 *
 * Params: {"role":"alice"|"bob", "rounds":N (alice; default 10),
 *          "peer":"<vat name>" (alice; default "bob")}.
 *
 *   alice                                   bob
 *   bootstrap(vats) ── ping({"i":1}) P1 ──►  ping: resolve P1 {"value":2}
 *   notify(P1) {"value":2} → answer.1 = 2
 *             ── ping({"i":2}) P2 ──►        resolve P2 {"value":3}
 *   ...       until answer.N = N+1, then done = "1"
 *
 * alice keeps one ping outstanding at a time, so the round being answered
 * is always answers + 1.
 *
 * Vatstore (alice): peer (bob's root vref), answers (count), last (the
 * value of the last round answered), done ("1" when all rounds are
 * answered): a constant number of keys whatever the rounds (nothing per
 * round is kept, so a long run's state stays bounded). bob keeps nothing.
 * Final state for rounds N: answers = N, last = N+1, done = "1".
 *
 * Invariants:
 *   PP1 Everything alice needs to go on is in the vatstore (her in-memory
 *       state is only her params), so a restart resumes exactly.
 *   PP2 Answers are checked: answer i must be i+1 and arrive for round
 *       answers + 1, else the delivery fails (the vat is terminated).
 *   PP3 A message either vat does not accept (an unknown method, ping
 *       without an integer "i", a second or malformed bootstrap) is
 *       refused: its result is rejected and the vat lives on (vutil.h).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

typedef struct pingpong {
    int alice;
    uint64_t rounds;
    char peer[64];
} pingpong;

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    json_t *params = NULL;
    const char *role = NULL;
    pingpong *pp = calloc(1, sizeof(*pp));
    int rc = KEEL_OK;
    if (pp == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_params(params_json, &params);
    if (rc < 0) {
        goto out;
    }
    role = json_string_value(json_object_get(params, "role"));
    if (role == NULL ||
        (strcmp(role, "alice") != 0 && strcmp(role, "bob") != 0)) {
        rc = KEEL_EINVAL;
        goto out;
    }
    pp->alice = strcmp(role, "alice") == 0;
    rc = keel__vutil_param_u64(params, "rounds", 10, &pp->rounds);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_param_str(params, "peer", "bob", pp->peer,
                               sizeof(pp->peer));
out:
    json_decref(params);
    if (rc < 0) {
        free(pp);
        pp = NULL;
    }
    *state = pp;
    return rc;
}

/* alice: ask the peer for round i. */
static int send_ping(keel_syscall *sys, uint64_t i)
{
    char peer[KEEL_VREF_MAX];
    char result[KEEL_VREF_MAX];
    char *body = NULL;
    int rc = keel__vutil_get_str(sys, "peer", peer, sizeof(peer));
    if (rc <= 0) {
        rc = rc == 0 ? KEEL_EINVAL : rc; /* no peer: bootstrap never ran */
        goto out;
    }
    body = keel__vutil_json("{sI}", "i", (json_int_t)i);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_ask(sys, peer, "ping", body, NULL, 0, result);
out:
    free(body);
    return rc;
}

/* alice: find the peer, start round 1 (PP3: refused unless it is the
 * one bootstrap, naming the peer). */
static int alice_bootstrap(pingpong *pp, keel_syscall *sys,
                           const keel_delivery *d)
{
    char peer[KEEL_VREF_MAX];
    keel__vutil_why why;
    int rc = keel__vutil_get_str(sys, "peer", peer, sizeof(peer));
    if (rc != 0) {
        return rc < 0 ? rc : keel__vutil_refuse(sys, d, "already bootstrapped");
    }
    if (keel__vutil_bootstrap_root(&d->args, pp->peer, peer) < 0) {
        snprintf(why, sizeof(why),
                 "arguments must be {\"vats\":{\"%s\":{\"@slot\":i}}} "
                 "with slot i",
                 pp->peer);
        return keel__vutil_refuse(sys, d, why);
    }
    rc = keel__vutil_set_str(sys, "peer", peer); /* PP1 */
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_answer(sys, d, "null");
    if (rc < 0) {
        goto out;
    }
    if (pp->rounds == 0) {
        rc = keel__vutil_set_str(sys, "done", "1");
    } else {
        rc = send_ping(sys, 1);
    }
out:
    return rc;
}

/* alice: the answer to round answers + 1 arrived. */
static int alice_notify(pingpong *pp, keel_syscall *sys, const keel_delivery *d)
{
    uint64_t answers = 0;
    uint64_t value = 0;
    uint64_t i;
    int rc = KEEL_EINVAL;
    if (d->rejected) {
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "answers", &answers);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_body_u64(&d->resolution, "value", &value);
    if (rc < 0) {
        goto out;
    }
    i = answers + 1;
    if (i > pp->rounds || value != i + 1) {
        rc = KEEL_EINVAL; /* PP2 */
        goto out;
    }
    rc = keel__vutil_set_u64(sys, "last", value);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_set_u64(sys, "answers", i);
    if (rc < 0) {
        goto out;
    }
    if (i < pp->rounds) {
        rc = send_ping(sys, i + 1);
    } else {
        rc = keel__vutil_set_str(sys, "done", "1");
    }
out:
    return rc;
}

/* bob: ping(i) answers i + 1 (PP3: anything else is refused). */
static int bob_ping(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t i = 0;
    char *body = NULL;
    keel__vutil_why why;
    /* i + 1 must be a JSON integer */
    int rc = keel__vutil_args_u64(d, "i", (uint64_t)LLONG_MAX - 1, &i, why);
    if (rc < 0) {
        return keel__vutil_refuse(sys, d, why);
    }
    body = keel__vutil_json("{sI}", "value", (json_int_t)(i + 1));
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_answer(sys, d, body);
out:
    free(body);
    return rc;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    pingpong *pp = state;
    if (pp->alice && d->kind == KEEL_DELIVER_MESSAGE &&
        strcmp(d->method, "bootstrap") == 0) {
        return alice_bootstrap(pp, sys, d);
    }
    if (pp->alice && d->kind == KEEL_DELIVER_NOTIFY) {
        return alice_notify(pp, sys, d);
    }
    if (!pp->alice && d->kind == KEEL_DELIVER_MESSAGE &&
        strcmp(d->method, "ping") == 0) {
        return bob_ping(sys, d);
    }
    if (d->kind == KEEL_DELIVER_MESSAGE) {
        return keel__vutil_refuse(sys, d, "unknown method"); /* PP3 */
    }
    return KEEL_EINVAL; /* bob asks nothing: a notify breaks PP2 */
}

static void stop(void *state)
{
    free(state);
}

const keel_vat_ops keel__vat_pingpong = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "pingpong",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};
