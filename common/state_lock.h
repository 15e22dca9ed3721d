/*
 * common/state_lock.h — STATE/lock (state_lock.c, SL1..SL3): one writer
 * per kernel state, readers beside none.
 */
#ifndef KEEL_COMMON_STATE_LOCK_H
#define KEEL_COMMON_STATE_LOCK_H

#include "keel/keel.h"

/* SL1 alone: KEEL_EINVAL, naming what is wrong, if dir exists and is
 * not a directory or its lock path exists and is not a regular file;
 * else KEEL_OK. Both locks below check it first. */
int keel__state_check(const char *dir, keel_diag *diag);
/* A writer's lock: STATE/lock (created if absent) held exclusively, taken
 * without waiting for another writer and waiting up to 10 s for readers.
 * *fd holds the flock until closed; -1 on failure.
 * @return KEEL_OK; KEEL_EBUSY ("locked by another keel process");
 *         KEEL_EINVAL (STATE not a directory, the lock not a regular
 *         file); or the open error. */
int keel__state_lock(const char *dir, int *fd, keel_diag *diag);
/* A reader's lock on STATE/lock: shared, the file not created (none: *fd
 * is -1 and KEEL_OK). KEEL_EBUSY while a writer holds it; KEEL_EINVAL as
 * keel__state_lock. */
int keel__state_lock_shared(const char *dir, int *fd, keel_diag *diag);

#endif
