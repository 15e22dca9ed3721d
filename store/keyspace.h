/*
 * store/keyspace.h — the size limits of the kernel's keyspace: how long a
 * key and a value may be in the store, and the buffer a composed key of
 * the kernel's keyspace (kernel/kernel_internal.h lists the keys) fits
 * in. Shared by the store, the write-set format, the kernel, snapshots
 * and the audit, so that every one of them agrees on what fits.
 */
#ifndef KEEL_STORE_KEYSPACE_H
#define KEEL_STORE_KEYSPACE_H

/* LMDB's compile-time key limit (checked against the library on open). */
#define KEEL__STORE_MAX_KEY_BYTES   511u
#define KEEL__STORE_MAX_VALUE_BYTES (16u * 1024 * 1024)
/* A buffer for a key of the kernel's keyspace composed from its parts,
 * with its NUL: larger than any key the store accepts, so a composed key
 * too long for the store is caught by the store's length check. */
#define KEY_MAX 1200

_Static_assert(KEY_MAX > KEEL__STORE_MAX_KEY_BYTES,
               "a composed key buffer holds every storable key");

#endif
