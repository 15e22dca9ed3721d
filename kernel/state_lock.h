/*
 * kernel/state_lock.h — STATE/lock for the readers of a kernel's state
 * that are not a kernel (the audit): the lock kernel/kernel.c takes for a
 * read-only open, so that no writer runs beside them (DESIGN §2.7).
 */
#ifndef KEEL_KERNEL_STATE_LOCK_H
#define KEEL_KERNEL_STATE_LOCK_H

#include "keel/keel.h"

/* A reader's lock on STATE/lock: shared, the file not created (none: *fd
 * is -1 and KEEL_OK). KEEL_EBUSY while a writer holds it. */
int keel__k_lock_state_shared(const char *dir, int *fd, keel_diag *diag);

#endif
