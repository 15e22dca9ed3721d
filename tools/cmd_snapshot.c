/*
 * tools/cmd_snapshot.c — `keel snapshot create|verify|info|restore`: back
 * up a kernel state, check a snapshot file, show its manifest, and build a
 * new state from one (rolled forward through a log to a point in time).
 *
 * Invariants:
 *   SC1 create needs no lock and never writes into STATE: it reads the last
 *       checkpoint in a read transaction (a running kernel goes on).
 *   SC2 verify exits 0 only when every checksum, frame and count is sound;
 *       info reads the header, trailer and manifest (all checksummed) but
 *       not the frames: it says so.
 *   SC3 restore never overwrites: NEWSTATE must not exist.
 *   SC4 Errors are one line on stderr, `keel: snapshot <cmd>: ` and the
 *       library's diag (file, offset or LSN, what); exit 1; usage exit 2.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"

#include "tools/cli.h"
#include "tools/ctl_client.h"

static int fail(const char *command, int code, const keel_diag *d)
{
    fflush(stdout);
    fprintf(stderr, "keel: %s: %s\n", command,
            d->msg[0] != '\0' ? d->msg : keel_strerror(code));
    return KEEL_CLI_FAIL;
}

static int emit(json_t *o)
{
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) {
        fprintf(stderr, "keel: out of memory\n");
        return KEEL_CLI_FAIL;
    }
    printf("%s\n", s);
    free(s);
    return KEEL_CLI_OK;
}

/* The activity hash as the manifest, `keel status` and `keel run` spell
 * it: 16 hex digits. */
static json_t *hash_json(uint64_t v)
{
    char buf[17];
    snprintf(buf, sizeof(buf), "%016" PRIx64, v);
    return json_string(buf);
}

static json_t *info_json(const keel_snapshot_info *i)
{
    return json_pack(
        "{s:i, s:s, s:I, s:o, s:I, s:I, s:o, s:o, s:o, s:I, s:i, s:i, s:I, "
        "s:I, s:I, s:I}",
        "format", (int)i->format, "keel_version", i->keel_version,
        "created_unix_ms", (json_int_t)i->meta.created_unix_ms, "kernel_id",
        keel__cli_hex64(i->meta.kernel_id), "lsn", (json_int_t)i->meta.lsn,
        "crank", (json_int_t)i->meta.crank, "activity_hash",
        hash_json(i->meta.activity_hash), "timeline",
        hash_json(i->meta.timeline), "timeline_parent",
        hash_json(i->meta.timeline_parent), "timeline_branch_lsn",
        (json_int_t)i->meta.timeline_branch_lsn, "level", i->level, "tables",
        (int)i->tables, "entries", (json_int_t)i->entries, "bytes",
        (json_int_t)i->bytes, "frames", (json_int_t)i->frames, "file_bytes",
        (json_int_t)i->file_bytes);
}

static void print_summary(const keel_snapshot_info *i)
{
    double ratio =
        i->file_bytes > 0 ? (double)i->bytes / (double)i->file_bytes : 0.0;
    printf("LSN %" PRIu64 ", crank %" PRIu64 ", activity hash %016" PRIx64
           ", kernel 0x%016" PRIx64 "\n",
           i->meta.lsn, i->meta.crank, i->meta.activity_hash,
           i->meta.kernel_id);
    printf("timeline %016" PRIx64 " (parent %016" PRIx64
           ", branched after LSN %" PRIu64 ")\n",
           i->meta.timeline, i->meta.timeline_parent,
           i->meta.timeline_branch_lsn);
    printf("%" PRIu64 " entries in %" PRIu32 " tables, %" PRIu64
           " bytes of state in %" PRIu64 " bytes (%.2fx), %" PRIu64
           " frames, zstd level %d\n",
           i->entries, i->tables, i->bytes, i->file_bytes, ratio, i->frames,
           i->level);
}

/* ---------------------------------------------------------------- create */

enum { CREATE_LEVEL, CREATE_JSON, CREATE_NOPTS };

static const keel_cli_opt create_opts[CREATE_NOPTS] = {
    [CREATE_LEVEL] = {"level", "L"},
    [CREATE_JSON] = {"json", NULL},
};

static const keel_cli_spec create_spec = {
    .command = "snapshot create",
    .help =
        "usage: keel snapshot create STATE FILE [--level L] [--json]\n"
        "\n"
        "Write a snapshot of the kernel state in directory STATE to FILE.\n"
        "While `keel run` works on STATE, the running kernel is asked over\n"
        "STATE/control.sock: it checkpoints between two cranks and writes\n"
        "the snapshot of that checkpoint (its own zstd level; --level is\n"
        "not used then). A kernel run with --no-control is snapshot as of\n"
        "its last checkpoint, read in one read transaction without\n"
        "stopping it; so is a stopped state. The file is written as FILE.tmp, "
        "synced and\n"
        "renamed, so FILE is never half-written; an existing FILE is\n"
        "replaced, a stale FILE.tmp is refused. A kernel checkpoints every\n"
        "--checkpoint-cranks cranks / --checkpoint-ms ms and at exit, so\n"
        "the snapshot is at most that far behind a running kernel; records\n"
        "after it stay in STATE/wal (use `snapshot restore --wal`).\n"
        "\n"
        "Options:\n"
        "  --level L   zstd level (default 3; 1 is fastest, 19 smallest)\n"
        "  --json      the manifest written, as one JSON object\n"
        "\n"
        "Exit status: 0 written and durable; 1 error; 2 usage error.\n",
    .opts = create_opts,
    .nopts = CREATE_NOPTS,
    .min_pos = 2,
    .max_pos = 2,
    .pos = "STATE FILE",
};

/* Ask the live kernel on fd to checkpoint and snapshot itself to file
 * (absolute, since the kernel's working directory is its own), then read
 * the manifest back for the summary. */
static int live_snapshot(int fd, const char *file, keel_snapshot_info *info)
{
    char abs[PATH_MAX + 256], dir[PATH_MAX];
    keel_diag d = {0};
    json_t *ans = NULL;
    snprintf(dir, sizeof(dir), "%s", file);
    const char *base =
        strrchr(file, '/') != NULL ? strrchr(file, '/') + 1 : file;
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    char real[PATH_MAX];
    if (realpath(slash != NULL ? (dir[0] != '\0' ? dir : "/") : ".", real) ==
        NULL) {
        fprintf(stderr, "keel: snapshot create: %s: %s\n", file,
                strerror(errno));
        return KEEL_CLI_FAIL;
    }
    snprintf(abs, sizeof(abs), "%s/%s", strcmp(real, "/") == 0 ? "" : real,
             base);
    if (keel__ctl_call(create_spec.command, fd,
                       json_pack("{s:s, s:s}", "op", "snapshot", "path", abs),
                       &ans) < 0) {
        return KEEL_CLI_FAIL;
    }
    int rc = KEEL_CLI_OK;
    if (!json_is_true(json_object_get(ans, "ok"))) {
        rc = keel__ctl_failed(create_spec.command, ans);
    }
    json_decref(ans);
    if (rc != KEEL_CLI_OK) {
        return rc;
    }
    keel_snapshot_reader *r = NULL;
    int err = keel_snapshot_reader_open(abs, NULL, &r, &d);
    if (err < 0) {
        return fail(create_spec.command, err, &d);
    }
    keel_snapshot_reader_info(r, info);
    keel_snapshot_reader_close(r);
    return KEEL_CLI_OK;
}

int keel__cli_snapshot_create(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    keel_snapshot_info info;
    int rc = keel__cli_parse(&create_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    keel_snapshot_options o;
    keel_snapshot_options_init(&o);
    if (a.val[CREATE_LEVEL] != NULL) {
        long level = 0;
        char *end = NULL;
        level = strtol(a.val[CREATE_LEVEL], &end, 10);
        if (*a.val[CREATE_LEVEL] == '\0' || *end != '\0' || level < -7 ||
            level > 22) {
            return keel__cli_usage_error(create_spec.command,
                                         "--level: expected an integer in "
                                         "-7..22, got '%s'",
                                         a.val[CREATE_LEVEL]);
        }
        o.level = (int)level;
    }
    int fd = -1;
    /* quiet: a kernel without a socket is snapshot as of its checkpoint */
    int live = keel__ctl_find(NULL, a.pos[0], &fd);
    int err = KEEL_OK;
    if (live > 0) { /* a consistent snapshot of the live kernel, now */
        err = live_snapshot(fd, a.pos[1], &info);
        close(fd);
        if (err != KEEL_CLI_OK) {
            return err;
        }
    } else if ((err = keel_snapshot_create(a.pos[0], a.pos[1], &o, &info, &d)) <
               0) {
        return fail(create_spec.command, err, &d);
    }
    if (a.val[CREATE_JSON] != NULL) {
        return emit(info_json(&info));
    }
    printf("wrote %s\n", a.pos[1]);
    print_summary(&info);
    return KEEL_CLI_OK;
}

/* ---------------------------------------------------------- verify, info */

enum { READ_JSON, READ_NOPTS };

static const keel_cli_opt read_opts[READ_NOPTS] = {
    [READ_JSON] = {"json", NULL},
};

static const keel_cli_spec verify_spec = {
    .command = "snapshot verify",
    .help = "usage: keel snapshot verify FILE [--json]\n"
            "\n"
            "Read the whole snapshot FILE: check the header, every frame's\n"
            "checksums, decompress every frame, check every entry's bounds\n"
            "and order, the counts against the manifest, and the checksum\n"
            "of the whole file. Prints `ok: ...` and the manifest summary.\n"
            "\n"
            "Options:\n"
            "  --json   one JSON object: {\"ok\", the manifest fields} or\n"
            "           {\"ok\": false, \"error\": {\"code\", \"message\"}}\n"
            "\n"
            "Exit status: 0 everything is sound; 1 damaged, truncated, of a\n"
            "newer format or unreadable (the error names the offset); 2\n"
            "usage error.\n",
    .opts = read_opts,
    .nopts = READ_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "FILE",
};

int keel__cli_snapshot_verify(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    keel_snapshot_info info;
    int rc = keel__cli_parse(&verify_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int json = a.val[READ_JSON] != NULL;
    int err = keel_snapshot_verify(a.pos[0], NULL, &info, &d);
    if (json) {
        json_t *o = err == 0 ? info_json(&info) : json_object();
        if (o != NULL) {
            json_object_set_new(o, "ok", json_boolean(err == 0));
            if (err < 0) {
                json_object_set_new(o, "error",
                                    json_pack("{s:s, s:s}", "code",
                                              keel_err_name(err), "message",
                                              d.msg));
            }
        }
        rc = emit(o);
    } else if (err == 0) {
        printf("ok: %s\n", a.pos[0]);
        print_summary(&info);
        rc = KEEL_CLI_OK;
    }
    if (err < 0) {
        rc = fail(verify_spec.command, err, &d);
    }
    return rc;
}

static const keel_cli_spec info_spec = {
    .command = "snapshot info",
    .help = "usage: keel snapshot info FILE [--json]\n"
            "\n"
            "Print the manifest of snapshot FILE: format and keel version,\n"
            "creation time, kernel id, LSN, crank and activity hash, each\n"
            "table's entries and bytes, totals. The header, trailer and\n"
            "manifest are checked; the frames are not read (use verify).\n"
            "\n"
            "Options:\n"
            "  --json   one JSON object with the fields above and \"tables\":\n"
            "           [{\"name\", \"entries\", \"bytes\"}, ...]\n"
            "\n"
            "Exit status: 0 printed; 1 damaged or unreadable; 2 usage error.\n",
    .opts = read_opts,
    .nopts = READ_NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "FILE",
};

int keel__cli_snapshot_info(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    keel_snapshot_info info;
    keel_snapshot_reader *r = NULL;
    int rc = keel__cli_parse(&info_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    int err = keel_snapshot_reader_open(a.pos[0], NULL, &r, &d);
    if (err < 0) {
        return fail(info_spec.command, err, &d);
    }
    keel_snapshot_reader_info(r, &info);
    if (a.val[READ_JSON] != NULL) {
        json_t *o = info_json(&info);
        json_t *tables = json_array();
        for (uint32_t i = 0; i < info.tables; i++) {
            const keel_snapshot_table *t = keel_snapshot_reader_table(r, i);
            json_array_append_new(tables,
                                  json_pack("{s:s, s:I, s:I}", "name", t->name,
                                            "entries", (json_int_t)t->entries,
                                            "bytes", (json_int_t)t->bytes));
        }
        if (o != NULL) {
            json_object_set_new(o, "tables", tables);
        }
        rc = emit(o);
    } else {
        time_t secs = (time_t)(info.meta.created_unix_ms / 1000);
        struct tm tm;
        char when[64] = "?";
        if (gmtime_r(&secs, &tm) != NULL) {
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        printf("snapshot format %" PRIu32 ", written by keel %s at %s\n",
               info.format, info.keel_version, when);
        print_summary(&info);
        printf("%-8s %12s %14s\n", "TABLE", "ENTRIES", "BYTES");
        for (uint32_t i = 0; i < info.tables; i++) {
            const keel_snapshot_table *t = keel_snapshot_reader_table(r, i);
            printf("%-8s %12" PRIu64 " %14" PRIu64 "\n", t->name, t->entries,
                   t->bytes);
        }
        rc = KEEL_CLI_OK;
    }
    keel_snapshot_reader_close(r);
    return rc;
}

/* --------------------------------------------------------------- restore */

enum {
    RESTORE_WAL,
    RESTORE_TO_LSN,
    RESTORE_TO_CRANK,
    RESTORE_JSON,
    RESTORE_NOPTS
};

static const keel_cli_opt restore_opts[RESTORE_NOPTS] = {
    [RESTORE_WAL] = {"wal", "DIR"},
    [RESTORE_TO_LSN] = {"to-lsn", "L"},
    [RESTORE_TO_CRANK] = {"to-crank", "C"},
    [RESTORE_JSON] = {"json", NULL},
};

static const keel_cli_spec restore_spec = {
    .command = "snapshot restore",
    .help =
        "usage: keel snapshot restore FILE NEWSTATE [--wal DIR]\n"
        "                             [--to-lsn L | --to-crank C] [--json]\n"
        "\n"
        "Build a new kernel state directory NEWSTATE from snapshot FILE.\n"
        "With --wal, roll it forward through the log in DIR (e.g. the old\n"
        "STATE/wal) from the snapshot's LSN + 1 to the end of the log, or\n"
        "to a point in time. The log must belong to the same kernel and\n"
        "continue the snapshot without a gap. NEWSTATE is built as\n"
        "NEWSTATE.restoring and renamed only when complete and synced; it\n"
        "must not exist (a restore never overwrites). `keel run NEWSTATE`\n"
        "then resumes the kernel exactly where the original was at that\n"
        "point. NEWSTATE's log holds the records rolled forward, so\n"
        "`keel recover NEWSTATE --check --base FILE` audits the result.\n"
        "\n"
        "Options:\n"
        "  --wal DIR      roll forward through this write-ahead log\n"
        "  --to-lsn L     stop after LSN L (needs --wal)\n"
        "  --to-crank C   stop at the end of crank C: before the first\n"
        "                 record of crank C + 1 (needs --wal)\n"
        "  --json         the result as one JSON object\n"
        "\n"
        "Exit status: 0 NEWSTATE built; 1 error (nothing is left behind);\n"
        "2 usage error.\n",
    .opts = restore_opts,
    .nopts = RESTORE_NOPTS,
    .min_pos = 2,
    .max_pos = 2,
    .pos = "FILE NEWSTATE",
};

int keel__cli_snapshot_restore(int argc, char **argv)
{
    keel_cli_args a;
    keel_diag d = {0};
    keel_snapshot_restore_report rep;
    int rc = keel__cli_parse(&restore_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        return rc;
    }
    keel_snapshot_restore_options o;
    keel_snapshot_restore_options_init(&o);
    o.wal_dir = a.val[RESTORE_WAL];
    if (a.val[RESTORE_TO_LSN] != NULL && a.val[RESTORE_TO_CRANK] != NULL) {
        return keel__cli_usage_error(restore_spec.command,
                                     "give --to-lsn or --to-crank, not both");
    }
    if ((a.val[RESTORE_TO_LSN] != NULL || a.val[RESTORE_TO_CRANK] != NULL) &&
        o.wal_dir == NULL) {
        return keel__cli_usage_error(restore_spec.command,
                                     "a point in time needs --wal DIR");
    }
    if (a.val[RESTORE_TO_LSN] != NULL) {
        rc =
            keel__cli_parse_u64(restore_spec.command, "to-lsn",
                                a.val[RESTORE_TO_LSN], 1, INT64_MAX, &o.to_lsn);
        if (rc != KEEL_CLI_CONTINUE) {
            return rc;
        }
    }
    if (a.val[RESTORE_TO_CRANK] != NULL) {
        rc = keel__cli_parse_u64(restore_spec.command, "to-crank",
                                 a.val[RESTORE_TO_CRANK], 1, INT64_MAX,
                                 &o.to_crank);
        if (rc != KEEL_CLI_CONTINUE) {
            return rc;
        }
    }
    int err = keel_snapshot_restore(a.pos[0], a.pos[1], &o, &rep, &d);
    if (err < 0) {
        return fail(restore_spec.command, err, &d);
    }
    if (a.val[RESTORE_JSON] != NULL) {
        return emit(json_pack(
            "{s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:f}", "state", a.pos[1],
            "snapshot_lsn", (json_int_t)rep.snapshot.meta.lsn, "rolled_forward",
            (json_int_t)rep.rolled_forward, "lsn", (json_int_t)rep.lsn, "crank",
            (json_int_t)rep.crank, "timeline", hash_json(rep.timeline),
            "timeline_parent", hash_json(rep.snapshot.meta.timeline), "seconds",
            rep.seconds));
    }
    printf("restored %s from %s: snapshot at LSN %" PRIu64 " (crank %" PRIu64
           "), %" PRIu64 " log records rolled forward, now at LSN %" PRIu64
           ", crank %" PRIu64 ", new timeline %016" PRIx64
           " branched from %016" PRIx64 " (%.3f s)\n",
           a.pos[1], a.pos[0], rep.snapshot.meta.lsn, rep.snapshot.meta.crank,
           rep.rolled_forward, rep.lsn, rep.crank, rep.timeline,
           rep.snapshot.meta.timeline, rep.seconds);
    return KEEL_CLI_OK;
}
