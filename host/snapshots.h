/*
 * host/snapshots.h — the periodic snapshots of a running kernel
 * (keel_kernel_options.snapshot_every), driven by the host that composes
 * it (host/compose.c): checked before the kernel opens, attached once it
 * recovered, taken after cranks. Invariants KS1..KS6 in host/snapshots.c.
 */
#ifndef KEEL_HOST_SNAPSHOTS_H
#define KEEL_HOST_SNAPSHOTS_H

#include <stdint.h>

#include "keel/keel.h"

typedef struct keel__psnap {
    char *dir;      /* NULL: no periodic snapshots */
    uint64_t every; /* cranks between two */
    uint32_t keep;  /* at least 1 */
    uint64_t crank; /* crank of the last one (attach: the kernel's) */
} keel__psnap;

/* From o (none when snapshot_every is 0 or o->read_only), before
 * state_dir is opened or created: KEEL_EINVAL without a directory, then
 * KS5. keel__psnap_free() afterwards, failed or not. */
int keel__psnap_init(keel__psnap *p, const keel_kernel_options *o,
                     const char *state_dir, keel_diag *diag);
/* The kernel recovered (before any vat starts): KS6 on the directory. */
int keel__psnap_attach(keel__psnap *p, keel_kernel *k, keel_diag *diag);
/* After a crank: the snapshot, prune and WAL retirement if due (KS2). */
int keel__psnap_after_crank(keel__psnap *p, keel_kernel *k, keel_diag *diag);
void keel__psnap_free(keel__psnap *p);

#endif
