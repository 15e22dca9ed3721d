/*
 * store/keyspace.h — the kernel's keyspace: its keys (below), how long a
 * key and a value may be in the store, and the buffer a key composed from
 * its parts fits in. Shared by the store, the write-set format, the
 * kernel, snapshots and the audit, so that every one of them agrees on
 * what a key is and what fits.
 *
 * Keyspace (one LMDB keyspace, string keys; values are decimal strings
 * unless said otherwise):
 *   k.version            state format version (KEEL_STATE_FORMAT_VERSION)
 *   k.booted             "1" once boot committed
 *   k.crank              cranks committed
 *   k.hash               activity hash, 16 hex digits
 *   k.next.vat|ko|kp     next id to allocate (never reused)
 *   k.rq.head|tail       run queue: items rq.<head> .. rq.<tail - 1>
 *   k.unresolved         promises not yet settled
 *   k.bootstrap          the bootstrap vat's id
 *   rq.<seq, 20 digits>  a run-queue item (binary, see codec)
 *   v.<vid>.name|state|src|root|maxo|maxp
 *                        vat name, "alive"/"terminated", its config entry
 *                        (JSON), root kref, highest o+N / p+N exported
 *   v.<vid>.cleanup      "<crank> <key>": the vat is terminated and its
 *                        cleanup goes on in batches (K6): the promises it
 *                        decides rejected (its d.<vid>.* keys), then its
 *                        c.<vid>.* and vs.<vid>.* keys deleted; <crank> is
 *                        the crank of the last batch, <key> the last key
 *                        done ("" for none yet). Absent once nothing of the
 *                        vat is left
 *   vn.<name>            vat id by name
 *   c.<vid>.k.<kref>     c-list: kref -> vref
 *   c.<vid>.v.<vref>     c-list: vref -> kref
 *   ko.<n>               owner vat id of object ko<n>
 *   kp.<n>               promise record (binary, see codec)
 *   d.<vid>.<kpref>      index: promises vat <vid> decides
 *   vs.<vid>.<key>       the vat's vatstore
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
