/*
 * vats/counter_driver.c — drives a counter vat with a fan-out of incr
 * messages, built in as "counter_driver".
 *
 * Params: {"target":"<vat name>" (default "counter"), or instead
 *          "targets":["<vat name>", ...] (1 to DRIVER_MAX_TARGETS names),
 *          "incrs":N (default 100)}.
 *
 *   bootstrap(vats): sends N × incr({"n":1}) in this one crank, the j-th
 *                    (j = 0..N-1) to the root of targets[j mod T], each
 *                    with its own result promise, and subscribes to every
 *                    one.
 *   notify(P_j) {"value":c}: seen += 1, max = max(max, c); when seen == N,
 *                    done = "1".
 *
 * A counter answers the k-th incr it receives with k, so starting from
 * fresh counters the final state is seen = N, max = ceil(N / T) (T targets;
 * the first ones get one more when T does not divide N), done = "1".
 *
 * Vatstore: seen, max, done.
 *
 * Invariants:
 *   D1  All progress is in the vatstore (in memory only the params), so a
 *       restart resumes counting exactly.
 *   D2  A rejected answer or one after seen == N fails the delivery.
 *   D3  A message it does not accept (any method but bootstrap, a
 *       bootstrap without its targets' slots) is refused: its result is
 *       rejected and the driver lives on. A second well-formed bootstrap
 *       (only another vat holding the driver's root could send one) would
 *       start a second fan-out, whose extra answers break D2.
 */
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

#define DRIVER_MAX_TARGETS 16

typedef struct driver {
    char target[DRIVER_MAX_TARGETS][64];
    size_t ntargets;
    uint64_t incrs;
} driver;

/* The "targets" param: 1..DRIVER_MAX_TARGETS vat names, each a string
 * that fits. @return KEEL_OK or KEEL_EINVAL. */
static int param_targets(const json_t *arr, driver *dr)
{
    size_t i;
    const json_t *name;
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > DRIVER_MAX_TARGETS) {
        return KEEL_EINVAL;
    }
    json_array_foreach(arr, i, name)
    {
        const char *s = json_string_value(name);
        if (s == NULL || strlen(s) >= sizeof(dr->target[i])) {
            return KEEL_EINVAL;
        }
        strcpy(dr->target[i], s);
    }
    dr->ntargets = json_array_size(arr);
    return KEEL_OK;
}

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    json_t *params = NULL;
    driver *dr = calloc(1, sizeof(*dr));
    int rc = KEEL_OK;
    if (dr == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_params(params_json, &params);
    if (rc < 0) {
        goto out;
    }
    const json_t *targets = json_object_get(params, "targets");
    if (targets != NULL && json_object_get(params, "target") != NULL) {
        rc = KEEL_EINVAL; /* one or the other */
    } else if (targets != NULL) {
        rc = param_targets(targets, dr);
    } else {
        rc = keel__vutil_param_str(params, "target", "counter", dr->target[0],
                                   sizeof(dr->target[0]));
        dr->ntargets = 1;
    }
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_param_u64(params, "incrs", 100, &dr->incrs);
out:
    json_decref(params);
    if (rc < 0) {
        free(dr);
        dr = NULL;
    }
    *state = dr;
    return rc;
}

static int on_bootstrap(driver *dr, keel_syscall *sys, const keel_delivery *d)
{
    char target[DRIVER_MAX_TARGETS][KEEL_VREF_MAX];
    char result[KEEL_VREF_MAX];
    keel__vutil_why why;
    char *body = NULL;
    int rc = KEEL_OK;
    for (size_t i = 0; i < dr->ntargets; i++) {
        if (keel__vutil_bootstrap_root(&d->args, dr->target[i], target[i]) <
            0) {
            /* D3 */
            snprintf(why, sizeof(why),
                     "arguments must be {\"vats\":{\"%s\":{\"@slot\":i}, "
                     "...}} with slot i",
                     dr->target[i]);
            return keel__vutil_refuse(sys, d, why);
        }
    }
    body = keel__vutil_json("{sI}", "n", (json_int_t)1);
    if (body == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    rc = keel__vutil_answer(sys, d, "null");
    if (rc < 0) {
        goto out;
    }
    if (dr->incrs == 0) {
        rc = keel__vutil_set_str(sys, "done", "1");
        goto out;
    }
    for (uint64_t j = 0; j < dr->incrs && rc == KEEL_OK; j++) {
        rc = keel__vutil_ask(sys, target[j % dr->ntargets], "incr", body, NULL,
                             0, result);
    }
out:
    free(body);
    return rc;
}

static int on_notify(driver *dr, keel_syscall *sys, const keel_delivery *d)
{
    uint64_t seen = 0;
    uint64_t max = 0;
    uint64_t value = 0;
    int rc = KEEL_EINVAL;
    if (d->rejected) {
        goto out; /* D2 */
    }
    rc = keel__vutil_body_u64(&d->resolution, "value", &value);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "seen", &seen);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "max", &max);
    if (rc < 0) {
        goto out;
    }
    if (seen >= dr->incrs) {
        rc = KEEL_EINVAL; /* D2: more answers than questions */
        goto out;
    }
    seen++;
    rc = keel__vutil_set_u64(sys, "seen", seen);
    if (rc < 0) {
        goto out;
    }
    if (value > max) {
        rc = keel__vutil_set_u64(sys, "max", value);
        if (rc < 0) {
            goto out;
        }
    }
    if (seen == dr->incrs) {
        rc = keel__vutil_set_str(sys, "done", "1");
    }
out:
    return rc;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    driver *dr = state;
    if (d->kind == KEEL_DELIVER_MESSAGE &&
        strcmp(d->method, "bootstrap") == 0) {
        return on_bootstrap(dr, sys, d);
    }
    if (d->kind == KEEL_DELIVER_NOTIFY) {
        return on_notify(dr, sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* D3 */
}

static void stop(void *state)
{
    free(state);
}

const keel_vat_ops keel__vat_counter_driver = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "counter_driver",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};
