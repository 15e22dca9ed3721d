#!/usr/bin/python3
"""Recompute keel's activity hash from a dump of the whole log, with no keel
code: `keel wal dump STATE/wal --json --payload | activity_hash.py [H0]`.
Prints the hash as `keel status --json` spells it; exits 1 if any record's
k.hash disagrees. H0 (hex): the hash before the first record dumped (0 for
a log from LSN 1; a snapshot's activity hash for a log continuing one).
The bytes hashed are defined in docs/recovery.md, "The activity hash".
Needs python3-xxhash (Debian)."""
import json, struct, sys
import xxhash

KINDS = {'crank': 1, 'out-of-crank': 2, 'kernel-op': 3, 'checkpoint': 4}
HASH_KEY = b'\x01\x04'  # k.hash: table meta, field hash (store/keyspace.h)
h = int(sys.argv[1], 16) if len(sys.argv) > 1 else 0
for line in sys.stdin:
    rec = json.loads(line)
    if 'error' in rec:
        sys.exit('dump failed: ' + rec['error']['message'])
    if 'tail' in rec:
        continue
    p = bytes.fromhex(rec['payload'])
    (n,), off, ops, stored = struct.unpack_from('<I', p), 4, [], None
    for _ in range(n):                       # u8 kind, u32 key_len, key,
        start = off                          # put: u32 value_len, value
        kind, klen = struct.unpack_from('<BI', p, off)
        key, off = p[off + 5:off + 5 + klen], off + 5 + klen
        if kind == 1:
            (vlen,), off = struct.unpack_from('<I', p, off), off + 4
            value, off = p[off:off + vlen], off + vlen
        if key == HASH_KEY:                  # a u64, big-endian; the hash
            stored = int.from_bytes(value, 'big')  # excludes its own op
        else:
            ops.append(p[start:off])
    head = struct.pack('<QBQ', h, KINDS[rec['kind']], rec['crank'])
    h = xxhash.xxh3_64_intdigest(
        head + struct.pack('<I', len(ops)) + b''.join(ops))
    if stored != h:
        sys.exit('LSN %d: computed %016x, the record stores %s'
                 % (rec['lsn'], h,
                    'none' if stored is None else '%016x' % stored))
print('%016x' % h)
