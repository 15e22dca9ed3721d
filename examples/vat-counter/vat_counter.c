/*
 * examples/vat-counter/vat_counter.c — a counter vat built out of tree
 * against an installed keel, with nothing but <keel/vat.h>. `keel run`
 * loads it from counter.json ({"path": "libvat_counter.so"}).
 *
 *   bootstrap(...)  sends itself incr() three times (no result)
 *   incr()          count += 1; answers {"value":count} if asked
 *   get()           answers {"value":count}
 *   anything else   rejected: {"error":"unknown method"}
 *
 * Vatstore: count (decimal; absent = 0).
 *
 * The library links nothing: keel_syscall_* resolve, when it is loaded,
 * from the program that loads it (the keel program, or any program linked
 * with libkeel.so, or with libkeel.a and -rdynamic). Its one export is
 * keel_vat_entry; the rest is static.
 *
 * Invariants:
 *   VC1 The count lives only in the vatstore: nothing in memory, so a
 *       restarted kernel continues from exactly the committed count.
 *   VC2 A message it does not accept is refused (its result rejected), and
 *       the vat lives on; deliver fails only on a count it did not write.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel/vat.h>

#define BOOT_INCRS 3

/* The count from the vatstore into *out (0 when absent). */
static int load_count(keel_syscall *sys, uint64_t *out)
{
    keel_bytes v;
    char buf[24];
    int rc = keel_syscall_vatstore_get(sys, "count", &v);
    if (rc < 0) {
        return rc;
    }
    *out = 0;
    if (rc == 0) {
        return KEEL_OK;
    }
    if (v.len == 0 || v.len >= sizeof buf) {
        return KEEL_EINVAL; /* VC2: not a count this vat wrote */
    }
    memcpy(buf, v.ptr, v.len);
    buf[v.len] = '\0';
    char *end = NULL;
    *out = strtoull(buf, &end, 10);
    return *end == '\0' ? KEEL_OK : KEEL_EINVAL;
}

/* Settle d's result (if it has one) with body, fulfilled or rejected. */
static int answer(keel_syscall *sys, const keel_delivery *d, int rejected,
                  const char *body)
{
    if (d->result == NULL) {
        return KEEL_OK;
    }
    keel_capdata data = {
        .body = {.ptr = body, .len = strlen(body)},
        .slots = NULL,
        .nslots = 0,
    };
    return keel_syscall_resolve(sys, d->result, rejected, &data);
}

static int answer_count(keel_syscall *sys, const keel_delivery *d,
                        uint64_t count)
{
    char body[48];
    snprintf(body, sizeof body, "{\"value\":%" PRIu64 "}", count);
    return answer(sys, d, 0, body);
}

static int incr(keel_syscall *sys, const keel_delivery *d)
{
    uint64_t count = 0;
    int rc = load_count(sys, &count);
    if (rc < 0) {
        return rc;
    }
    count++;
    char text[24];
    int n = snprintf(text, sizeof text, "%" PRIu64, count);
    rc = keel_syscall_vatstore_set(sys, "count", text, (size_t)n); /* VC1 */
    if (rc < 0) {
        return rc;
    }
    return answer_count(sys, d, count);
}

static int bootstrap(keel_syscall *sys)
{
    static const char empty[] = "{}";
    keel_capdata args = {
        .body = {.ptr = empty, .len = sizeof empty - 1},
        .slots = NULL,
        .nslots = 0,
    };
    for (int i = 0; i < BOOT_INCRS; i++) {
        /* o+0 is this vat's own root object. */
        int rc = keel_syscall_send(sys, "o+0", "incr", &args, NULL);
        if (rc < 0) {
            return rc;
        }
    }
    return KEEL_OK; /* bootstrap has no result promise */
}

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    (void)sys;
    (void)params_json;
    *state = NULL; /* VC1 */
    return KEEL_OK;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    (void)state;
    if (d->kind != KEEL_DELIVER_MESSAGE) {
        return KEEL_OK; /* no subscriptions; GC: nothing to let go */
    }
    if (strcmp(d->method, "bootstrap") == 0) {
        return bootstrap(sys);
    }
    if (strcmp(d->method, "incr") == 0) {
        return incr(sys, d);
    }
    if (strcmp(d->method, "get") == 0) {
        uint64_t count = 0;
        int rc = load_count(sys, &count);
        return rc < 0 ? rc : answer_count(sys, d, count);
    }
    return answer(sys, d, 1, "{\"error\":\"unknown method\"}"); /* VC2 */
}

static void stop(void *state)
{
    (void)state;
}

static const keel_vat_ops counter_ops = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "vat-counter",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};

KEEL_API const keel_vat_ops *keel_vat_entry(void);

KEEL_API const keel_vat_ops *keel_vat_entry(void)
{
    return &counter_ops;
}
