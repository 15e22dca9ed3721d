/*
 * tools/cmd_wal_demo.c — `keel wal demo`: write a write-ahead log through the
 * public writer so the other wal commands (and a reader of the README) have
 * a real log to look at. It appends to an existing log, showing that opening
 * resumes after the last valid record (and truncates a torn tail).
 *
 * The records imitate what the kernel will write: mostly small crank
 * write-sets, an occasional out-of-crank syscall and kernel operation, and a
 * large, repetitive payload every 100 records, which is stored zstd-
 * compressed. Payload bytes are a pure function of the LSN, so two demo
 * runs write identical logs.
 *
 * Invariants:
 *   WD1 A run appends at least one record (--n is 1 or more), so the LSN
 *       range it prints, first..last, is never empty.
 *   WD2 The summary is printed only once every appended record is durable
 *       under the chosen sync policy (off: never synced, and it says so).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "keel/keel.h"

#include "common/clock.h"
#include "tools/cli.h"

enum { DEMO_N, DEMO_SIZE, DEMO_SYNC, DEMO_NOPTS };

static const keel_cli_opt demo_opts[DEMO_NOPTS] = {
    [DEMO_N] = {"n", "N"},
    [DEMO_SIZE] = {"size", "BYTES"},
    [DEMO_SYNC] = {"sync", "POLICY"},
};

static const keel_cli_spec demo_spec = {
    .command = "wal demo",
    .help =
        "usage: keel wal demo DIR [--n N] [--size BYTES] "
        "[--sync full|group|off]\n"
        "\n"
        "Append N demonstration records to the write-ahead log in DIR\n"
        "(created if absent; an existing log is resumed after its last\n"
        "valid record, and a torn tail is truncated first), wait until\n"
        "they are durable, and print a summary. Most records are small\n"
        "crank write-sets of BYTES bytes; every 7th is out-of-crank,\n"
        "every 50th a kernel operation, and every 100th a 64 KiB\n"
        "repetitive payload that is stored zstd-compressed.\n"
        "\n"
        "Options:\n"
        "  --n N          records to append, 1 to 100000000 (default 1000)\n"
        "  --size BYTES   size of the small payloads (default 256)\n"
        "  --sync POLICY  full (default), group or off\n"
        "\n"
        "Exit status: 0 success; 1 the log could not be opened or\n"
        "written (the error names file and offset); 2 usage error.\n",
    .opts = demo_opts,
    .nopts = DEMO_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "DIR",
};

#define BIG_BYTES (64u * 1024)

/* Deterministic payload for lsn: small records vary, big ones repeat. */
static size_t fill(uint8_t *buf, uint64_t lsn, size_t size)
{
    size_t len = lsn % 100 == 0 ? BIG_BYTES : size;
    uint64_t x = lsn * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < len; i++) {
        if (len == BIG_BYTES) {
            buf[i] = (uint8_t) "keel write-ahead log "[i % 21];
        } else {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            buf[i] = (uint8_t)(x * 0x2545F4914F6CDD1Dull >> 56);
        }
    }
    return len;
}

/* mkdir -p of the parents of dir (keel_wal_open creates dir itself). */
static int make_parents(const char *dir)
{
    char *p = strdup(dir);
    if (p == NULL) {
        return -1;
    }
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755); /* an error shows when the WAL is opened */
            *s = '/';
        }
    }
    free(p);
    return 0;
}

static int kind_for(uint64_t lsn)
{
    if (lsn % 50 == 0) {
        return KEEL_WAL_KERNEL_OP;
    }
    return lsn % 7 == 0 ? KEEL_WAL_OUT_OF_CRANK : KEEL_WAL_CRANK;
}

int keel__cli_wal_demo(int argc, char **argv)
{
    keel_cli_args a;
    keel_wal *w = NULL;
    keel_diag d = {0};
    keel_wal_open_info info;
    uint8_t *buf = NULL;
    uint64_t n = 1000, size = 256;
    int sync = KEEL_SYNC_FULL;
    int rc = keel__cli_parse(&demo_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[DEMO_N] != NULL &&
        (rc = keel__cli_parse_u64("wal demo", "n", a.val[DEMO_N], 1, 100000000,
                                  &n)) != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[DEMO_SIZE] != NULL &&
        (rc = keel__cli_parse_u64("wal demo", "size", a.val[DEMO_SIZE], 0,
                                  BIG_BYTES, &size)) != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[DEMO_SYNC] != NULL &&
        keel_sync_parse(a.val[DEMO_SYNC], &sync) != KEEL_OK) {
        rc = keel__cli_usage_error("wal demo",
                                   "--sync: '%s' is not full, group or off",
                                   a.val[DEMO_SYNC]);
        goto out;
    }
    buf = malloc(BIG_BYTES);
    if (buf == NULL) {
        fprintf(stderr, "keel: wal demo: out of memory\n");
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    keel_wal_options o;
    keel_wal_options_init(&o);
    o.sync = sync;
    rc = KEEL_CLI_FAIL;
    if (make_parents(a.pos[0]) < 0) {
        fprintf(stderr, "keel: wal demo: out of memory\n");
        goto out;
    }
    int err = keel_wal_open(a.pos[0], &o, &w, &info, &d);
    if (err < 0) {
        fprintf(stderr, "keel: wal demo: %s\n", d.msg);
        goto out;
    }
    if (info.torn) {
        printf("truncated a torn tail: %s offset %" PRIu64 ", %" PRIu64
               " bytes (%s)\n",
               info.torn_segment, info.torn_offset, info.torn_bytes,
               info.torn_reason);
    }
    double t0 = keel__now_s();
    uint64_t first = keel_wal_last_lsn(w) + 1;
    for (uint64_t i = 0; i < n && err == KEEL_OK; i++) {
        uint64_t lsn = first + i;
        size_t len = fill(buf, lsn, (size_t)size);
        err = keel_wal_append(w, kind_for(lsn), lsn, buf, len, NULL, &d);
    }
    if (err == KEEL_OK && sync != KEEL_SYNC_OFF) {
        err = keel_wal_sync(w, &d);
    }
    double secs = keel__now_s() - t0;
    if (err < 0) {
        fprintf(stderr, "keel: wal demo: %s\n", d.msg);
        goto out;
    }
    printf("wrote %" PRIu64 " records (LSN %" PRIu64 "..%" PRIu64
           ") to %s in %.3f s, sync=%s; durable LSN %" PRIu64
           ", kernel 0x%016" PRIx64 "\n",
           n, first, keel_wal_last_lsn(w), a.pos[0], secs, keel_sync_name(sync),
           keel_wal_durable_lsn(w), keel_wal_kernel_id(w));
    rc = KEEL_CLI_OK;
out:
    if (keel_wal_close(w, &d) < 0 && rc == KEEL_CLI_OK) {
        fprintf(stderr, "keel: wal demo: %s\n", d.msg);
        rc = KEEL_CLI_FAIL;
    }
    free(buf);
    return rc;
}
