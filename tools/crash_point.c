/*
 * tools/crash_point.c — crash points parsed from a string and carried out
 * by the kernel's crash hook (tools/crash_point.h). Linked into the keel
 * program and the tests through the test kit (keel_testkit), never into
 * libkeel: the kernel only calls a hook.
 *
 * Invariants:
 *   CP1 A crash point is parsed strictly (EVENT[/KIND]:N, N decimal
 *       digits 1..2^64-1, nothing else); anything else is refused naming
 *       KEEL_CRASH_POINT. Callers parse before opening STATE, so a bad
 *       one leaves STATE untouched.
 *   CP2 The hook counts only events that match (event, and kind when
 *       given) and kills the process with SIGKILL at the nth: a real
 *       crash, no atexit, no flush, no close.
 */
#include "tools/crash_point.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/diag.h"

/* CP1: N of a crash point: decimal digits only, 1 .. 2^64-1. */
static int parse_nth(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (s[0] < '0' || s[0] > '9') {
        return KEEL_EINVAL; /* strtoull would take "-1", "+1", " 1" */
    }
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE || n == 0) {
        return KEEL_EINVAL;
    }
    *out = (uint64_t)n;
    return KEEL_OK;
}

int keel__crash_point_parse(const char *s, keel__crash_point *cp,
                            keel_diag *diag)
{
    static const char *const events[] = {"commit-before", "commit-after",
                                         "apply-after", "checkpoint-before",
                                         "checkpoint-after"};
    static const char *const kinds[] = {"crank", "out-of-crank", "kernel-op"};
    char ev[32] = "", kind[32] = "";
    uint64_t n = 0;
    memset(cp, 0, sizeof(*cp));
    if (s == NULL) {
        return KEEL_OK;
    }
    const char *colon = strrchr(s, ':');
    const char *slash = strchr(s, '/');
    if (colon == NULL) {
        goto bad;
    }
    size_t evlen = (size_t)((slash != NULL ? slash : colon) - s);
    if (evlen == 0 || evlen >= sizeof(ev)) {
        goto bad;
    }
    if (parse_nth(colon + 1, &n) != KEEL_OK) {
        return keel__diag(diag, KEEL_EINVAL,
                          "KEEL_CRASH_POINT \"%s\": N must be decimal digits "
                          "from 1 to 18446744073709551615",
                          s);
    }
    memcpy(ev, s, evlen);
    if (slash != NULL) {
        if (slash > colon) {
            goto bad;
        }
        size_t kl = (size_t)(colon - slash - 1);
        if (kl == 0 || kl >= sizeof(kind)) {
            goto bad;
        }
        memcpy(kind, slash + 1, kl);
    }
    for (int i = 0; i < 5; i++) {
        if (strcmp(ev, events[i]) == 0) {
            cp->event = KEEL_CRASH_COMMIT_BEFORE + i;
        }
    }
    for (int i = 0; kind[0] != '\0' && i < 3; i++) {
        if (strcmp(kind, kinds[i]) == 0) {
            cp->kind = KEEL_WAL_CRANK + i;
        }
    }
    if (cp->event == 0 || (kind[0] != '\0' && cp->kind == 0)) {
        goto bad;
    }
    cp->nth = n;
    return KEEL_OK;
bad:
    memset(cp, 0, sizeof(*cp));
    return keel__diag(diag, KEEL_EINVAL,
                      "KEEL_CRASH_POINT \"%s\": expected EVENT[/KIND]:N "
                      "(EVENT commit-before, commit-after, apply-after, "
                      "checkpoint-before or checkpoint-after; KIND crank, "
                      "out-of-crank or kernel-op)",
                      s);
}

void keel__crash_point_install(keel__crash_point *cp, keel_kernel_options *o)
{
    if (cp->event != 0) {
        o->crash_hook = keel__crash_point_hook;
        o->crash_arg = cp;
    }
}

void keel__crash_point_hook(void *arg, int event, int kind)
{
    keel__crash_point *cp = arg;
    if (cp->event != event || (cp->kind != 0 && cp->kind != kind)) {
        return;
    }
    if (++cp->seen == cp->nth) {
        raise(SIGKILL); /* CP2 */
    }
}
