/*
 * vats/churn.c — the object-churn vat (`keel bench soak`), built in as
 * "churn": objects created, passed and dropped, one at a time.
 *
 * Params: {"role":"maker"|"taker", "rounds":N (maker; default 10),
 *          "peer":"<vat name>" (maker; default "taker")}.
 *
 *   maker                                    taker
 *   bootstrap ── take({"i":1}, o+1) P1 ──►   take: forget the import
 *                                            (drop + retire), answer {}
 *   notify(P1) ── take({"i":2}, o+2) ... until N are answered, done = "1"
 *   dropExports(o+i), retireExports(o+i): nothing kept to let go
 *
 * Each object lives for one round: once the taker forgot it and the
 * message that carried it is gone, the kernel tells the maker it was
 * dropped and retired (kernel/gc.c), and nothing of it stays anywhere.
 *
 * Vatstore (maker): peer (the taker's root vref), answers (count), done.
 * The taker keeps nothing.
 *
 * Invariants:
 *   CH1 Everything the maker needs to go on is in the vatstore (PP1 of
 *       pingpong.c); a constant number of keys whatever the rounds.
 *   CH2 A GC delivery for anything but an o+N the maker made (or to the
 *       taker, which exports nothing but its root) fails the delivery.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

typedef struct churn {
    int maker;
    uint64_t rounds;
    char peer[64];
} churn;

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    (void)sys;
    json_t *params = NULL;
    churn *c = calloc(1, sizeof(*c));
    int rc = c == NULL ? KEEL_ENOMEM : KEEL_OK;
    rc = rc < 0 ? rc : keel__vutil_params(params_json, &params);
    const char *role =
        rc < 0 ? NULL : json_string_value(json_object_get(params, "role"));
    if (rc == KEEL_OK && (role == NULL || (strcmp(role, "maker") != 0 &&
                                           strcmp(role, "taker") != 0))) {
        rc = KEEL_EINVAL;
    }
    if (rc == KEEL_OK) {
        c->maker = strcmp(role, "maker") == 0;
        rc = keel__vutil_param_u64(params, "rounds", 10, &c->rounds);
    }
    if (rc == KEEL_OK) {
        rc = keel__vutil_param_str(params, "peer", "taker", c->peer,
                                   sizeof(c->peer));
    }
    json_decref(params);
    if (rc < 0) {
        free(c);
        c = NULL;
    }
    *state = c;
    return rc;
}

/* maker: a fresh object to the taker in round i. */
static int give(keel_syscall *sys, uint64_t i)
{
    char peer[KEEL_VREF_MAX], obj[KEEL_VREF_MAX], result[KEEL_VREF_MAX];
    const char *slots[1] = {obj};
    int rc = keel__vutil_get_str(sys, "peer", peer, sizeof(peer));
    if (rc <= 0) {
        return rc == 0 ? KEEL_EINVAL : rc;
    }
    char *body =
        keel__vutil_json("{sIs{si}}", "i", (json_int_t)i, "obj", "@slot", 0);
    rc = body == NULL ? KEEL_ENOMEM : keel_syscall_alloc_object(sys, obj);
    rc = rc < 0 ? rc
                : keel__vutil_ask(sys, peer, "take", body, slots, 1, result);
    free(body);
    return rc;
}

static int maker_deliver(churn *c, keel_syscall *sys, const keel_delivery *d)
{
    uint64_t answers = 0;
    char peer[KEEL_VREF_MAX];
    if (keel__vutil_is_gc(d)) {
        for (size_t i = 0; i < d->nvrefs; i++) {
            if (d->kind == KEEL_DELIVER_RETIRE_IMPORTS ||
                strncmp(d->vrefs[i], "o+", 2) != 0 ||
                strcmp(d->vrefs[i], "o+0") == 0) {
                return KEEL_EINVAL; /* CH2 */
            }
        }
        return KEEL_OK;
    }
    if (d->kind == KEEL_DELIVER_MESSAGE) {
        if (strcmp(d->method, "bootstrap") != 0 ||
            keel__vutil_get_str(sys, "peer", peer, sizeof(peer)) != 0) {
            return keel__vutil_refuse(sys, d, "unknown method");
        }
        if (keel__vutil_bootstrap_root(&d->args, c->peer, peer) < 0) {
            return keel__vutil_refuse(sys, d, "no peer in the bootstrap");
        }
        int rc = keel__vutil_set_str(sys, "peer", peer);
        rc = rc < 0 ? rc : keel__vutil_answer(sys, d, "null");
        return rc < 0           ? rc
               : c->rounds == 0 ? keel__vutil_set_str(sys, "done", "1")
                                : give(sys, 1);
    }
    if (d->rejected) {
        return KEEL_EINVAL;
    }
    int rc = keel__vutil_get_u64(sys, "answers", &answers);
    rc = rc < 0 ? rc : keel__vutil_set_u64(sys, "answers", answers + 1);
    if (rc < 0) {
        return rc;
    }
    return answers + 1 < c->rounds ? give(sys, answers + 2)
                                   : keel__vutil_set_str(sys, "done", "1");
}

static int taker_deliver(keel_syscall *sys, const keel_delivery *d)
{
    if (keel__vutil_is_gc(d) || d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL; /* CH2: it exports nothing, asks nothing */
    }
    if (strcmp(d->method, "take") != 0 || d->args.nslots != 1) {
        return keel__vutil_refuse(sys, d, "expected take with one object");
    }
    /* "I no longer need this import" */
    int rc = keel__vutil_forget_import(sys, d->args.slots[0]);
    return rc < 0 ? rc : keel__vutil_answer(sys, d, "{}");
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    churn *c = state;
    return c->maker ? maker_deliver(c, sys, d) : taker_deliver(sys, d);
}

static void stop(void *state)
{
    free(state);
}

const keel_vat_ops keel__vat_churn = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "churn",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};
