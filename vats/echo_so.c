/*
 * vats/echo_so.c — the "echo" vat as a loadable module
 * (libkeel_vat_echo.so), to test dlopen hosting. Every message that carries
 * a result promise is answered with its own arguments, body and slots;
 * notifications are ignored (echo subscribes to nothing).
 *
 * The module links nothing: the keel_syscall_* functions it calls are
 * resolved at dlopen time from the program that loads it, which must export
 * them (linked with ENABLE_EXPORTS / -rdynamic). Its only export is
 * keel_vat_entry (KEEL_VAT_ENTRY_SYMBOL); everything else is hidden.
 *
 * Invariants:
 *   E1  Stateless: nothing in memory or in the vatstore, so a restart
 *       changes nothing.
 *   E2  The answer is exactly the arguments: slots are echoed in order, so
 *       a reference passed in comes back as the same reference.
 */
#include <stddef.h>

#include "keel/keel.h" /* the entry header; it includes keel/vat.h */
#include "keel/vat.h"

static int start(keel_syscall *sys, const char *params_json, void **state)
{
    *state = NULL; /* E1 */
    return KEEL_OK;
}

static int deliver(void *state, keel_syscall *sys, const keel_delivery *d)
{
    if (d->kind >= KEEL_DELIVER_DROP_EXPORTS) {
        return 0; /* GC: nothing of its own to let go */
    }
    if (d->kind != KEEL_DELIVER_MESSAGE || d->result == NULL) {
        return KEEL_OK;
    }
    return keel_syscall_resolve(sys, d->result, 0, &d->args); /* E2 */
}

static void stop(void *state)
{
}

static const keel_vat_ops echo_ops = {
    .abi_version = KEEL_VAT_ABI_VERSION,
    .name = "echo",
    .start = start,
    .deliver = deliver,
    .stop = stop,
};

KEEL_API const keel_vat_ops *keel_vat_entry(void);

KEEL_API const keel_vat_ops *keel_vat_entry(void)
{
    return &echo_ops;
}
