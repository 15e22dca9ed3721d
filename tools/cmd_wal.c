/*
 * tools/cmd_wal.c — `keel wal dump` and `keel wal verify`: read a
 * write-ahead log with the public reader and print what is in it.
 *
 * Invariants:
 *   V1  Both commands only read: they use keel_wal_reader_*, which never
 *       modifies a file, and never keel_wal_open (which truncates a torn
 *       tail).
 *   V2  What was read before an error is printed before the error, so the
 *       output shows exactly how far the log is good.
 *   V3  The error line is the reader's keel_diag message verbatim (segment
 *       file, offset, expectation), prefixed `keel: wal <cmd>: ` (C2 format,
 *       exit 1 per C1).
 *   V4  A torn tail is not corruption: dump shows it and exits 0; verify
 *       exits 1 because the log is not clean (its help says so).
 *   V5  --json writes one compact JSON object per line, built with jansson.
 *   V6  --payload adds each record's payload as the reader returns it
 *       (decompressed: the encoded write-set the activity hash covers) in
 *       lower-case hex, two digits per byte, and, when it decodes as a
 *       write-set (store/writeset_format.h's decoder), its ops with each
 *       key and value in store/keyspace.h's human form ("k.crank",
 *       "c.4.v.o+5"): JSON "ops", text one line per op.
 *
 * dump output: a column header, one line per record, one for the tail
 * (SEG abbreviates a segment name such as 00000000000000000001.seg):
 *      LSN KIND         CRANK STORED  RAW FLAGS SEGMENT OFFSET CHECKSUM
 *        1 crank            7    256  256 -     SEG         40 ok
 *              payload: 0300000001...      (with --payload)
 *              put k.crank = 7              (with --payload)
 *     tail: clean at SEG offset 936, last LSN 3
 *     tail: torn at SEG offset 936 (17 bytes after it: <reason>)
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

#include "store/keyspace.h"
#include "store/writeset_format.h"
#include "tools/cli.h"

/* ---------------------------------------------------------------- shared */

/* Print one JSON value as a compact line and release it (V5). */
static int emit_json(json_t *o)
{
    int rc = KEEL_CLI_FAIL;
    char *s = NULL;
    if (o == NULL) {
        goto out;
    }
    s = json_dumps(o, JSON_COMPACT);
    if (s == NULL) {
        goto out;
    }
    printf("%s\n", s);
    rc = KEEL_CLI_OK;
out:
    free(s);
    json_decref(o);
    return rc;
}

static json_t *tail_json(const keel_wal_tail *t, uint64_t kernel_id)
{
    json_t *o =
        json_pack("{s:b, s:s, s:I, s:I, s:I, s:o}", "torn", t->torn, "segment",
                  t->segment, "offset", (json_int_t)t->offset, "bytes",
                  (json_int_t)t->bytes, "last_lsn", (json_int_t)t->last_lsn,
                  "kernel_id", keel__cli_hex64(kernel_id));
    if (o != NULL && t->torn) {
        json_object_set_new(o, "reason", json_string(t->reason));
    }
    return o;
}

static json_t *error_json(int code, const char *message)
{
    return json_pack("{s:{s:s, s:s}}", "error", "code", keel_err_name(code),
                     "message", message);
}

/* Report a failed read: the JSON error object, then the stderr line. */
static int read_failed(const char *command, int json, int code,
                       const keel_diag *d)
{
    if (json) {
        emit_json(error_json(code, keel__cli_diag_msg(d, code)));
    }
    /* V2: what was read reaches the terminal before the error */
    fflush(stdout);
    fprintf(stderr, "keel: %s: %s\n", command, keel__cli_diag_msg(d, code));
    return KEEL_CLI_FAIL;
}

/* ------------------------------------------------------------------ dump */

enum { DUMP_FROM, DUMP_JSON, DUMP_PAYLOAD, DUMP_NOPTS };

static const keel_cli_opt dump_opts[DUMP_NOPTS] = {
    [DUMP_FROM] = {"from", "LSN"},
    [DUMP_JSON] = {"json", NULL},
    [DUMP_PAYLOAD] = {"payload", NULL},
};

static const keel_cli_spec dump_spec = {
    .command = "wal dump",
    .help =
        "usage: keel wal dump DIR [--from LSN] [--json] [--payload]\n"
        "\n"
        "Print every record of the write-ahead log in directory DIR (the\n"
        "directory holding the *.seg files), one line each: LSN, kind,\n"
        "crank, stored and raw payload length, flags (zstd: the payload is\n"
        "compressed), segment file and byte offset, and the checksum state.\n"
        "The last line says where the valid log ends:\n"
        "  tail: clean at SEGMENT offset N, last LSN L\n"
        "  tail: torn at SEGMENT offset N (B bytes after it: REASON)\n"
        "A torn tail is an interrupted last write; opening the log for\n"
        "writing would truncate it. This command changes nothing.\n"
        "\n"
        "Options:\n"
        "  --from LSN   start at the first record with an LSN >= LSN\n"
        "  --json       one JSON object per line: one per record, then\n"
        "               {\"tail\": {...}}, or {\"error\": {\"code\", "
        "\"message\"}}\n"
        "  --payload    also each record's payload, decompressed, in hex\n"
        "               (JSON: \"payload\"; text: a `payload:` line after\n"
        "               the record): the write-set the activity hash covers\n"
        "               (docs/recovery.md, \"The activity hash\"); and its\n"
        "               ops, keys and values for humans (JSON: \"ops\",\n"
        "               [{\"op\", \"key\", \"value\"}]; text: one line each)\n"
        "\n"
        "Exit status: 0 the log was read to its end (clean or torn tail);\n"
        "1 it is corrupt or unreadable: the records before the damage are\n"
        "printed, then the error; 2 usage error.\n",
    .opts = dump_opts,
    .nopts = DUMP_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "DIR",
};

static void dump_header(void)
{
    printf("%8s %-12s %8s %7s %7s %-5s %-24s %8s %s\n", "LSN", "KIND", "CRANK",
           "STORED", "RAW", "FLAGS", "SEGMENT", "OFFSET", "CHECKSUM");
}

/* The payload in lower-case hex (V6), malloc'd; NULL: out of memory. */
static char *payload_hex(const keel_bytes *b)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = b->ptr;
    char *s = malloc(2 * b->len + 1);
    if (s != NULL) {
        for (size_t i = 0; i < b->len; i++) {
            s[2 * i] = digits[p[i] >> 4];
            s[2 * i + 1] = digits[p[i] & 15];
        }
        s[2 * b->len] = '\0';
    }
    return s;
}

/* The payload's ops for humans (V6): a JSON array when arr != NULL, else
 * printed lines. Nothing for a payload that is no write-set. */
static void dump_ops(const keel_bytes *b, json_t *arr)
{
    keel__ws_decoder dec;
    keel__ws_op op;
    keel_diag d = {0};
    if (keel__ws_validate(b->ptr, b->len, NULL, &d) != KEEL_OK ||
        keel__ws_decode_begin(&dec, b->ptr, b->len, &d) != KEEL_OK) {
        return;
    }
    while (keel__ws_decode_next(&dec, &op, &d) == 1) {
        char key[2 * KEY_MAX], val[4 * KEY_MAX];
        int put = op.kind == KEEL__STORE_PUT;
        keel__ks_render(op.key, op.key_len, key, sizeof(key));
        if (put) {
            keel__ks_render_value(op.key, op.key_len, op.val, op.val_len, val,
                                  sizeof(val));
        }
        if (arr != NULL) {
            json_t *o =
                put ? json_pack("{s:s, s:s, s:s}", "op", "put", "key", key,
                                "value", val)
                    : json_pack("{s:s, s:s}", "op", "delete", "key", key);
            json_array_append_new(arr, o);
        } else if (put) {
            printf("         put %s = %s\n", key, val);
        } else {
            printf("         delete %s\n", key);
        }
    }
}

static int dump_record(const keel_wal_record *rec, int json, int payload)
{
    int rc = KEEL_CLI_OK;
    int zstd = (rec->flags & KEEL_WAL_FLAG_ZSTD) != 0;
    char *hex = payload ? payload_hex(&rec->payload) : NULL;
    if (payload && hex == NULL) {
        return KEEL_CLI_FAIL;
    }
    if (json) {
        /* checksum: the reader returns only records whose xxh3 verified */
        json_t *o = json_pack(
            "{s:I, s:s, s:I, s:I, s:I, s:i, s:b, s:s, s:I, s:s, s:o}", "lsn",
            (json_int_t)rec->lsn, "kind", keel_wal_kind_name(rec->kind),
            "crank", (json_int_t)rec->crank, "stored_len",
            (json_int_t)rec->stored_len, "raw_len",
            (json_int_t)rec->payload.len, "flags", (int)rec->flags, "zstd",
            zstd, "segment", rec->segment, "offset", (json_int_t)rec->offset,
            "checksum", "ok", "xxh3", keel__cli_hex64(rec->checksum));
        if (o != NULL && hex != NULL &&
            json_object_set_new(o, "payload", json_string(hex)) != 0) {
            json_decref(o);
            o = NULL;
        }
        json_t *ops = o != NULL && hex != NULL ? json_array() : NULL;
        if (ops != NULL) {
            dump_ops(&rec->payload, ops);
            json_object_set_new(o, "ops", ops);
        }
        rc = emit_json(o);
    } else {
        printf("%8" PRIu64 " %-12s %8" PRIu64 " %7" PRIu32 " %7zu %-5s "
               "%-24s %8" PRIu64 " ok\n",
               rec->lsn, keel_wal_kind_name(rec->kind), rec->crank,
               rec->stored_len, rec->payload.len, zstd ? "zstd" : "-",
               rec->segment, rec->offset);
        if (hex != NULL) {
            printf("         payload: %s\n", hex);
            dump_ops(&rec->payload, NULL);
        }
    }
    free(hex);
    return rc;
}

static int dump_tail(const keel_wal_tail *t, uint64_t kernel_id, int json)
{
    int rc = KEEL_CLI_OK;
    if (json) {
        rc = emit_json(json_pack("{s:o}", "tail", tail_json(t, kernel_id)));
    } else if (t->torn) {
        printf("tail: torn at %s offset %" PRIu64 " (%" PRIu64
               " bytes after it: %s)\n",
               t->segment, t->offset, t->bytes, t->reason);
    } else if (t->segment[0] == '\0') {
        printf("tail: clean, the log is empty (no segment files)\n");
    } else {
        printf("tail: clean at %s offset %" PRIu64 ", last LSN %" PRIu64 "\n",
               t->segment, t->offset, t->last_lsn);
    }
    return rc;
}

int keel__cli_wal_dump(int argc, char **argv)
{
    keel_cli_args a;
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    keel_wal_record rec;
    keel_wal_tail tail;
    uint64_t from = 0;
    int rc = keel__cli_parse(&dump_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    if (a.val[DUMP_FROM] != NULL) {
        rc = keel__cli_parse_u64(dump_spec.command, "from", a.val[DUMP_FROM], 0,
                                 UINT64_MAX, &from);
        if (rc != KEEL_CLI_CONTINUE) {
            goto out;
        }
    }
    int json = a.val[DUMP_JSON] != NULL;
    int err = keel_wal_reader_open(a.pos[0], NULL, from, &r, &d); /* V1 */
    if (err < 0) {
        rc = read_failed(dump_spec.command, json, err, &d);
        goto out;
    }
    if (!json) {
        dump_header();
    }
    rc = KEEL_CLI_OK;
    while (rc == KEEL_CLI_OK &&
           (err = keel_wal_reader_next(r, &rec, &d)) == 1) {
        rc = dump_record(&rec, json, a.val[DUMP_PAYLOAD] != NULL);
    }
    if (rc != KEEL_CLI_OK) {
        fprintf(stderr, "keel: wal dump: out of memory\n");
        goto out;
    }
    if (err < 0) {
        rc = read_failed(dump_spec.command, json, err, &d);
        goto out;
    }
    keel_wal_reader_tail(r, &tail);
    rc = dump_tail(&tail, keel_wal_reader_kernel_id(r), json);
    if (rc != KEEL_CLI_OK) {
        fprintf(stderr, "keel: wal dump: out of memory\n");
    }
out:
    keel_wal_reader_close(r);
    return rc;
}

/* ---------------------------------------------------------------- verify */

enum { VERIFY_JSON, VERIFY_NOPTS };

static const keel_cli_opt verify_opts[VERIFY_NOPTS] = {
    [VERIFY_JSON] = {"json", NULL},
};

static const keel_cli_spec verify_spec = {
    .command = "wal verify",
    .help =
        "usage: keel wal verify DIR [--json]\n"
        "\n"
        "Read the whole write-ahead log in directory DIR and check every\n"
        "segment header and every record (magic, length, checksum, LSN\n"
        "sequence, compressed payloads) without changing anything.\n"
        "\n"
        "A clean log prints `ok: N records, LSN A..B, ...` and exits 0.\n"
        "A torn tail (an interrupted last write) is reported as\n"
        "`torn tail at SEGMENT offset N ...` and exits 1: the log is not\n"
        "clean, though opening it for writing would repair it by truncating\n"
        "the torn bytes (this command never does; a kernel refuses to when\n"
        "its store's checkpoint proves the record acknowledged). Corruption\n"
        "(damage followed by valid data, an LSN gap, a bad segment header,\n"
        "...) prints the reader's error naming the segment file and offset, "
        "and\n"
        "exits 1.\n"
        "\n"
        "Options:\n"
        "  --json   one JSON object: {\"ok\", \"records\", \"first_lsn\",\n"
        "           \"last_lsn\", \"tail\": {...}} plus \"error\": {\"code\",\n"
        "           \"message\"} when the log is corrupt\n"
        "\n"
        "Exit status: 0 clean; 1 torn tail, corrupt or unreadable; 2 usage\n"
        "error.\n",
    .opts = verify_opts,
    .nopts = VERIFY_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "DIR",
};

/* What verify counted. */
typedef struct verify_sum {
    uint64_t records;
    uint64_t first_lsn;
    uint64_t last_lsn;
    uint64_t kernel_id;
} verify_sum;

static int verify_json(const verify_sum *s, const keel_wal_tail *t, int err,
                       const keel_diag *d)
{
    json_t *o =
        json_pack("{s:b, s:I, s:I, s:I}", "ok", err == 0 && !t->torn, "records",
                  (json_int_t)s->records, "first_lsn", (json_int_t)s->first_lsn,
                  "last_lsn", (json_int_t)s->last_lsn);
    if (o != NULL && err == 0) {
        json_object_set_new(o, "tail", tail_json(t, s->kernel_id));
    }
    if (o != NULL && err < 0) {
        json_object_set_new(o, "error",
                            json_pack("{s:s, s:s}", "code", keel_err_name(err),
                                      "message", keel__cli_diag_msg(d, err)));
    }
    return emit_json(o);
}

static void verify_ok_line(const verify_sum *s, const keel_wal_tail *t)
{
    if (s->records == 0) {
        printf("ok: 0 records, tail clean%s%s\n",
               t->segment[0] != '\0' ? " at " : " (no segment files)",
               t->segment);
    } else {
        printf("ok: %" PRIu64 " records, LSN %" PRIu64 "..%" PRIu64
               ", kernel 0x%016" PRIx64 ", tail clean at %s offset %" PRIu64
               "\n",
               s->records, s->first_lsn, s->last_lsn, s->kernel_id, t->segment,
               t->offset);
    }
}

int keel__cli_wal_verify(int argc, char **argv)
{
    keel_cli_args a;
    keel_wal_reader *r = NULL;
    keel_diag d = {0};
    keel_wal_record rec;
    keel_wal_tail tail;
    verify_sum sum = {0};
    memset(&tail, 0, sizeof(tail));
    int rc = keel__cli_parse(&verify_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    int json = a.val[VERIFY_JSON] != NULL;
    int err = keel_wal_reader_open(a.pos[0], NULL, 0, &r, &d); /* V1 */
    while (err == 0 && (err = keel_wal_reader_next(r, &rec, &d)) == 1) {
        sum.first_lsn = sum.records == 0 ? rec.lsn : sum.first_lsn;
        sum.last_lsn = rec.lsn;
        sum.records++;
        err = 0;
    }
    if (err == 0) {
        keel_wal_reader_tail(r, &tail);
        sum.kernel_id = keel_wal_reader_kernel_id(r);
    }
    if (json && verify_json(&sum, &tail, err, &d) != KEEL_CLI_OK) {
        fprintf(stderr, "keel: wal verify: out of memory\n");
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    fflush(stdout);
    if (err < 0) {
        fprintf(stderr, "keel: wal verify: %s\n", keel__cli_diag_msg(&d, err));
        rc = KEEL_CLI_FAIL;
    } else if (tail.torn) {
        /* V4: not clean, though keel_wal_open would repair it */
        fprintf(stderr,
                "keel: wal verify: torn tail at %s offset %" PRIu64 ": %" PRIu64
                " bytes (%s); a writer truncates it unless the store's "
                "checkpoint proves it acknowledged\n",
                tail.segment, tail.offset, tail.bytes, tail.reason);
        rc = KEEL_CLI_FAIL;
    } else {
        if (!json) {
            verify_ok_line(&sum, &tail);
        }
        rc = KEEL_CLI_OK;
    }
out:
    keel_wal_reader_close(r);
    return rc;
}
