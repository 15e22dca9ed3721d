/*
 * vats/counter.c — a counter kept in the vatstore (SPEC §9.10), built in as
 * "counter". No params.
 *
 *   incr({"n":k})  count += k; answers {"value":count}
 *   get({})        answers {"value":count}
 *   anything else  rejected: {"error":"<method>: <what was expected>"}
 *
 * Vatstore: count (decimal; absent = 0).
 *
 * Invariants:
 *   C1  The count lives only in the vatstore: no in-memory copy, so after a
 *       restart it continues from exactly the committed value.
 *   C2  count never passes 2^63-1 (so it is a JSON integer): an incr that
 *       would take it there is refused, and the count is unchanged.
 *   C3  A message it does not accept (an unknown method, incr without an
 *       integer "n" >= 0, arguments that are not an object, slots) is
 *       refused: its result is rejected and the counter lives on.
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
    keel__vutil_why why;
    int rc = keel__vutil_args_u64(d, "n", (uint64_t)LLONG_MAX, &n, why);
    if (rc < 0) {
        return keel__vutil_refuse(sys, d, why); /* C3 */
    }
    rc = keel__vutil_get_u64(sys, "count", &count);
    if (rc < 0) {
        goto out;
    }
    if (count > (uint64_t)LLONG_MAX) {
        rc = KEEL_EINVAL; /* C2 broken: not a count this vat wrote */
        goto out;
    }
    if (n > (uint64_t)LLONG_MAX - count) {
        /* C2 (and the answer must be a JSON integer) */
        return keel__vutil_refuse(sys, d, "the count would pass 2^63-1");
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
    json_t *args = NULL;
    keel__vutil_why why;
    if (keel__vutil_args(d, 0, &args, why) < 0) {
        return keel__vutil_refuse(sys, d, why); /* C3 */
    }
    json_decref(args);
    int rc = keel__vutil_get_u64(sys, "count", &count);
    if (rc == KEEL_OK) {
        rc = answer_count(sys, d, count);
    }
    return rc;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_EINVAL; /* the counter subscribes to nothing */
    }
    if (strcmp(d->method, "incr") == 0) {
        return incr(sys, d);
    }
    if (strcmp(d->method, "get") == 0) {
        return get(sys, d);
    }
    return keel__vutil_refuse(sys, d, "unknown method"); /* C3 */
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
