/*
 * vats/registry.c — keel_vat_builtin(): the vats compiled into keel, found
 * by the name a cluster config gives as {"builtin": name}.
 *
 * Invariants:
 *   R1  The table is const and each entry's name is its ops->name, so the
 *       name a config uses is the name the vat reports.
 */
#include <string.h>

#include "vats/vutil.h"

static const keel_vat_ops *const builtins[] = {
    &keel__vat_pingpong,    &keel__vat_counter,  &keel__vat_counter_driver,
    &keel__vat_coordinator, &keel__vat_provider, &keel__vat_keyring,
    &keel__vat_mixed,       &keel__vat_churn,
};

const keel_vat_ops *keel_vat_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(builtins[i]->name, name) == 0) { /* R1 */
            return builtins[i];
        }
    }
    return NULL;
}
