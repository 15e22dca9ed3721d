/*
 * vats/counter.c — a counter kept in the vatstore (SPEC §9.10), built in as
 * "counter". No params.
 *
 *   incr({"n":k})  count += k; answers {"value":count}
 *   get({})        answers {"value":count}
 *
 * Vatstore: count (decimal; absent = 0).
 *
 * Invariants:
 *   C1  The count lives only in the vatstore: no in-memory copy, so after a
 *       restart it continues from exactly the committed value.
 *   C2  count never wraps: an incr that would overflow fails the delivery.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "vats/vutil.h"

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    *state = NULL; /* C1: nothing in memory */
    return KEEL_OK;
}

/* Answer d with {"value":count}. */
static int answer_count(keel_syscall *sys, const keel_delivery *d,
                        uint64_t count)
{
    char *body = keel__vutil_json("{sI}", "value", (json_int_t)count);
    int rc = body == NULL ? KEEL_ENOMEM : keel__vutil_answer(sys, d, body);
    free(body);
    return rc;
}

static int incr(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t count = 0;
    uint64_t n = 0;
    int rc = keel__vutil_body_u64(&d->args, "n", &n);
    if (rc < 0) {
        goto out;
    }
    rc = keel__vutil_get_u64(sys, "count", &count);
    if (rc < 0) {
        goto out;
    }
    if (n > (uint64_t)LLONG_MAX - count) {
        rc = KEEL_EINVAL; /* C2 (and the answer must be a JSON integer) */
        goto out;
    }
    count += n;
    rc = keel__vutil_set_u64(sys, "count", count);
    if (rc < 0) {
        goto out;
    }
    rc = answer_count(sys, d, count);
out:
    return rc;
}

static int get(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t count = 0;
    int rc = keel__vutil_get_u64(sys, "count", &count);
    if (rc == KEEL_OK) {
        rc = answer_count(sys, d, count);
    }
    return rc;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL; /* the counter subscribes to nothing */
    }
    if (strcmp(d->method, "incr") == 0) {
        return incr(sys, d);
    }
    if (strcmp(d->method, "get") == 0) {
        return get(sys, d);
    }
    return KEEL_EINVAL;
}

static void stop(void *state)
{
}

const keel_vat_ops keel__vat_counter = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "counter",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};
