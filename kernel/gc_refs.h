/*
 * kernel/gc_refs.h — the holders a keyspace value names (store/keyspace.h
 * KS4), as lists of (kref, reachable delta, recognizable delta): what the
 * kernel's counts move by (kernel/gc.c G1) and what the audit recounts
 * (recovery/audit.c A13). One definition for both.
 *
 * Invariants:
 *   GR1 A list holds each kref once; adding a kref already in it adds to
 *       its deltas.
 */
#ifndef KEEL_KERNEL_GC_REFS_H
#define KEEL_KERNEL_GC_REFS_H

#include <stddef.h>
#include <stdint.h>

#include "store/keyspace.h"

/* Lists of (kref, reach delta, recognizable delta), for the audit too. */
void *keel__gc_list_new(void);
void keel__gc_list_free(void *list);
void keel__gc_list_clear(void *list);
int keel__gc_list_oom(const void *list);
size_t keel__gc_list_get(const void *list, size_t i, keel__kref *r,
                         int32_t *reach, int32_t *recog);
/* KS4: add the refs that the value of decoded key d holds, with sign,
 * to list. @return 0, or -1 if val does not decode. */
int keel__gc_refs(const keel__ks_key *d, const void *val, size_t len, int sign,
                  void *list);

#endif
