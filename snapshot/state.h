/*
 * snapshot/state.h — what the kernel uses of snapshot/state.c: writing a
 * snapshot from a store view it already holds (its periodic snapshots).
 */
#ifndef KEEL_SNAPSHOT_STATE_H
#define KEEL_SNAPSHOT_STATE_H

#include "keel/snapshot.h"
#include "store/store.h"

/*
 * Write the state snapshot of view v (its checkpoint: SS1) to path, as
 * keel_snapshot_create() does. The view's cursor is consumed.
 * @return as keel_snapshot_create().
 */
int keel__snapshot_write_view(keel__store_view *v, const char *path,
                              const keel_snapshot_options *o,
                              keel_snapshot_info *info, keel_diag *diag);

#endif
