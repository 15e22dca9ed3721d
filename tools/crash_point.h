/*
 * tools/crash_point.h — crash points for tests: the string
 * "EVENT[/KIND]:N" ($KEEL_CRASH_POINT of `keel run` and `keel send`, and
 * the in-process tests) parsed into a plan, and the kernel crash hook
 * (keel_kernel_options.crash_hook) that SIGKILLs the process at the N-th
 * EVENT of this process.
 *
 * EVENT is commit-before (before the WAL append), commit-after (appended,
 * not yet applied), apply-after, checkpoint-before or checkpoint-after;
 * KIND (commit events only) is crank, out-of-crank or kernel-op.
 *
 * Calling sequence
 *     keel__crash_point cp;
 *     rc = keel__crash_point_parse(getenv("KEEL_CRASH_POINT"), &cp, &d);
 *     keel__crash_point_install(&cp, &kernel_options);   (cp outlives it)
 */
#ifndef KEEL_TOOLS_CRASH_POINT_H
#define KEEL_TOOLS_CRASH_POINT_H

#include <stdint.h>

#include "keel/keel.h"

typedef struct keel__crash_point {
    int event;     /* enum keel_crash_event; 0: none */
    int kind;      /* a KEEL_WAL_* kind; 0: any */
    uint64_t nth;  /* 1..2^64-1 */
    uint64_t seen; /* matching events so far */
} keel__crash_point;

/*
 * Parse s into *cp; s NULL (no crash point) gives a plan that never
 * crashes (event 0).
 * @return KEEL_OK, or KEEL_EINVAL with a diag naming KEEL_CRASH_POINT and
 *         the form expected (CP1).
 */
int keel__crash_point_parse(const char *s, keel__crash_point *cp,
                            keel_diag *diag);
/* Set o's crash hook to cp's plan (nothing if cp plans no crash). */
void keel__crash_point_install(keel__crash_point *cp, keel_kernel_options *o);
/* The hook itself: arg is a keel__crash_point. */
void keel__crash_point_hook(void *arg, int event, int kind);

#endif
