/*
 * tools/cmd_recover.c — `keel recover STATE [--check] [--json]
 * [--truncate-at-corruption] [--base SNAPSHOT]`: run a state's recovery
 * and report it; with --check, audit the whole retained log
 * (keel/recovery.h); with --truncate-at-corruption, first salvage a log
 * damaged mid-way (recovery/truncate.c).
 *
 * Invariants (C1..C4 of cli.h hold too):
 *   R1  The salvage runs only when asked, prints exactly what it will drop
 *       before it drops anything, and refuses (exit 1, nothing changed)
 *       when the store's checkpoint is already past the damage.
 *   R2  Exit status: 0 recovery (and the audit, if asked) passed; 1 a
 *       violation, a refused salvage, or any error (a corrupt, locked or
 *       missing STATE); 2 usage error.
 *   R3  --json prints one object on stdout once everything ran: the parts
 *       that ran ("salvage", "recovery", "audit") and "ok". Errors still
 *       go to stderr as one line.
 *   R4  --check without --truncate-at-corruption changes no byte under
 *       STATE (DESIGN §2.7): recovery runs read-only (a torn tail is
 *       reported, not truncated; nothing is checkpointed) and so does the
 *       audit.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel/keel.h"
#include "keel/kernel.h"
#include "keel/recovery.h"

#include "common/state_lock.h"
#include "recovery/recovery_internal.h"
#include "tools/cli.h"

enum { OPT_CHECK, OPT_JSON, OPT_TRUNCATE, OPT_BASE, NOPTS };

static const keel_cli_opt recover_opts[NOPTS] = {
    [OPT_CHECK] = {"check", NULL},
    [OPT_JSON] = {"json", NULL},
    [OPT_TRUNCATE] = {"truncate-at-corruption", NULL},
    [OPT_BASE] = {"base", "SNAPSHOT"},
};

static const keel_cli_spec recover_spec = {
    .command = "recover",
    .help =
        "usage: keel recover STATE [--check] [--json]\n"
        "                    [--truncate-at-corruption] [--base SNAPSHOT]\n"
        "\n"
        "Run the recovery that opening the kernel in STATE does, and report\n"
        "it: the store's checkpoint LSN, the LSNs the log retains, the\n"
        "records replayed after the checkpoint, whether a torn tail (an\n"
        "interrupted last write) was truncated, where, how many bytes and\n"
        "from which LSN on (none of them was ever reported durable), and\n"
        "the time. Vats are started and stopped again; no crank runs.\n"
        "With --check (and no --truncate-at-corruption) nothing under STATE\n"
        "changes: recovery runs read-only (a torn tail is reported and left\n"
        "for the next writer, nothing is checkpointed, no vat is started).\n"
        "\n"
        "With --check, then audit the whole retained log: replay it from\n"
        "genesis (or from --base) into a model of the keyspace, checking\n"
        "after every transaction that no notification is lost, messages\n"
        "wait only on unresolved promises, c-lists are bijections, every\n"
        "kref named exists, only deciders resolve (at most once) and the\n"
        "activity hash chain holds; at the end the model must equal the\n"
        "store, key by key. The first violation is reported with its LSN\n"
        "and crank (docs/recovery.md lists the checks).\n"
        "\n"
        "Options:\n"
        "  --check          audit the log after recovery\n"
        "  --base SNAPSHOT  with --check: start from this snapshot of the\n"
        "                   state (the log must retain the LSN after it)\n"
        "  --truncate-at-corruption\n"
        "                   before recovery, if the log is corrupt mid-way\n"
        "                   (which opening refuses), drop it from the first\n"
        "                   bad record on: truncate that segment there and\n"
        "                   delete the later ones. Prints what it drops\n"
        "                   first. Refused, changing nothing, when the\n"
        "                   store's checkpoint is past the damage. The\n"
        "                   dropped transactions are lost.\n"
        "  --json           one JSON object: salvage, recovery, audit, ok\n"
        "\n"
        "Only one keel process may use a STATE at a time.\n"
        "\n"
        "Exit status: 0 recovery (and the audit) passed; 1 a violation, a\n"
        "refused salvage, or an error (missing, locked or corrupt STATE);\n"
        "2 usage error.\n",
    .opts = recover_opts,
    .nopts = NOPTS,
    .min_pos = 1,
    .max_pos = 1,
    .pos = "STATE",
};

typedef struct job {
    const char *state;
    int check;
    int json;
    int truncate;
    const char *base;
    json_t *out; /* --json: the object printed at the end */
} job;

static int failed(const keel_diag *d, int code, const char *hint)
{
    fflush(stdout);
    fprintf(stderr, "keel: recover: %s%s\n",
            d->msg[0] != '\0' ? d->msg : keel_strerror(code), hint);
    return KEEL_CLI_FAIL;
}

/* --json: set key of j->out to v (a NULL v is an out-of-memory). */
static int put(job *j, const char *key, json_t *v)
{
    if (v == NULL || json_object_set_new(j->out, key, v) != 0) {
        fprintf(stderr, "keel: recover: out of memory\n");
        return KEEL_CLI_FAIL;
    }
    return KEEL_CLI_OK;
}

/* ---------------------------------------------------------------- salvage */

static void print_plan(const keel__salvage *p)
{
    printf("salvage: keeping LSN %" PRIu64 " and before; dropping LSN %" PRIu64
           " on: %" PRIu64 " byte(s) of %s",
           p->first_lsn - 1, p->first_lsn, p->cut_bytes, p->segment);
    if (p->seg_deleted > 0) {
        printf(" and %" PRIu64 " later segment(s) from %s (%" PRIu64 " bytes)",
               p->seg_deleted, p->first_deleted, p->seg_bytes);
    }
    printf("\n");
    if (p->readable > 0) {
        printf("salvage: %" PRIu64 " record(s) after the damage still verify"
               " (LSN %" PRIu64 "..%" PRIu64 "); they are dropped too\n",
               p->readable, p->readable_first_lsn, p->readable_last_lsn);
    } else {
        printf("salvage: no record after the damage verifies\n");
    }
}

static json_t *plan_json(const keel__salvage *p, int done)
{
    if (!p->damaged) {
        return json_pack("{s:b}", "damaged", 0);
    }
    return json_pack(
        "{s:b, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, "
        "s:I, s:b}",
        "damaged", 1, "segment", p->segment, "offset", (json_int_t)p->offset,
        "first_dropped_lsn", (json_int_t)p->first_lsn, "reason", p->reason,
        "kept_last_lsn", (json_int_t)(p->first_lsn - 1), "checkpoint_lsn",
        (json_int_t)p->checkpoint_lsn, "cut_bytes", (json_int_t)p->cut_bytes,
        "segments_deleted", (json_int_t)p->seg_deleted, "first_deleted",
        p->first_deleted, "segment_bytes_deleted", (json_int_t)p->seg_bytes,
        "readable_after", (json_int_t)p->readable, "readable_first_lsn",
        (json_int_t)p->readable_first_lsn, "readable_last_lsn",
        (json_int_t)p->readable_last_lsn, "done", done);
}

/* R1: under STATE's lock: plan, print, refuse or do. */
static int salvage(job *j)
{
    keel__salvage plan;
    keel_diag d = {0};
    int fd = -1, done = 0;
    int rc = KEEL_CLI_OK;
    int err = keel__state_lock(j->state, &fd, &d);
    if (err == KEEL_OK) {
        err = keel__salvage_plan(j->state, NULL, &plan, &d);
    }
    if (err < 0) {
        rc = failed(&d, err, "");
        goto out;
    }
    if (!plan.damaged && !j->json) {
        printf("salvage: no corruption in the log; nothing dropped\n");
    }
    if (plan.damaged && !j->json) {
        printf("salvage: the log is corrupt at wal/%s offset %" PRIu64
               " (expected LSN %" PRIu64 "): %s\n",
               plan.segment, plan.offset, plan.first_lsn, plan.reason);
        if (plan.checkpoint_lsn < plan.first_lsn) {
            print_plan(&plan); /* R1: what goes, before it goes */
        }
        fflush(stdout);
    }
    if (plan.damaged) {
        err = keel__salvage_apply(j->state, NULL, &plan, &d);
        if (err < 0) {
            rc = failed(&d, err, "");
            goto out;
        }
        done = 1;
        if (!j->json) {
            printf("salvage: done; the log now ends at LSN %" PRIu64 "\n",
                   plan.first_lsn - 1);
        }
    }
    if (j->json) {
        rc = put(j, "salvage", plan_json(&plan, done));
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

/* --------------------------------------------------------------- recovery */

static json_t *recovery_json(const keel_kernel_recovery *r, int read_only)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:b, s:f}",
                          "checkpoint_lsn", (json_int_t)r->checkpoint_lsn,
                          "wal_first_lsn", (json_int_t)r->wal_first_lsn,
                          "wal_last_lsn", (json_int_t)r->wal_last_lsn,
                          "replayed", (json_int_t)r->replayed, "replayed_bytes",
                          (json_int_t)r->replayed_bytes, "torn", r->torn,
                          "seconds", r->seconds);
    if (o != NULL && r->torn) {
        json_t *t =
            json_pack("{s:s, s:I, s:I, s:I, s:s, s:b}", "segment",
                      r->torn_segment, "offset", (json_int_t)r->torn_offset,
                      "bytes", (json_int_t)r->torn_bytes, "lost_from_lsn",
                      (json_int_t)(r->wal_last_lsn + 1), "reason",
                      r->torn_reason, "truncated", !read_only);
        if (t == NULL || json_object_set_new(o, "tail", t) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

static void print_recovery(const keel_kernel_recovery *r, int read_only)
{
    printf("recovery: store checkpoint at LSN %" PRIu64, r->checkpoint_lsn);
    if (r->wal_last_lsn > 0) {
        printf("; log holds LSN %" PRIu64 "..%" PRIu64, r->wal_first_lsn,
               r->wal_last_lsn);
    } else {
        printf("; log empty");
    }
    printf("; replayed %" PRIu64 " record(s) (%" PRIu64 " bytes) in %.3f s\n",
           r->replayed, r->replayed_bytes, r->seconds);
    if (r->torn && read_only) {
        printf("tail: torn at wal/%s offset %" PRIu64 ": %" PRIu64
               " byte(s) (%s), records from LSN %" PRIu64
               " on, none of them ever reported durable; left as they are "
               "(--check is read-only): the next writer truncates them\n",
               r->torn_segment, r->torn_offset, r->torn_bytes, r->torn_reason,
               r->wal_last_lsn + 1);
    } else if (r->torn) {
        printf("tail: torn at wal/%s offset %" PRIu64 ": %" PRIu64
               " byte(s) truncated (%s); they held records from LSN %" PRIu64
               " on, none of them ever reported durable\n",
               r->torn_segment, r->torn_offset, r->torn_bytes, r->torn_reason,
               r->wal_last_lsn + 1);
    } else {
        printf("tail: clean\n");
    }
}

static int recover(job *j)
{
    keel_kernel_options o;
    keel_kernel *k = NULL;
    keel_kernel_recovery r;
    keel_diag d = {0};
    int rc = KEEL_CLI_OK;
    keel_kernel_options_init(&o);
    o.create = 0;
    /* R4: --check only looks; a salvage has already changed the log */
    o.read_only = j->check && !j->truncate;
    int err = keel_kernel_open(j->state, &o, &k, &d);
    if (err == KEEL_ECORRUPT && !j->truncate &&
        strstr(d.msg, "damage to acknowledged records") == NULL) {
        rc = failed(&d, err,
                    " (keel recover --truncate-at-corruption drops the log "
                    "from the damage on)");
        goto out;
    }
    if (err < 0) {
        rc = failed(&d, err, "");
        goto out;
    }
    keel_kernel_recovery_info(k, &r);
    err = keel_kernel_close(k, &d);
    k = NULL;
    if (err < 0) {
        rc = failed(&d, err, "");
        goto out;
    }
    if (j->json) {
        rc = put(j, "recovery", recovery_json(&r, o.read_only));
    } else {
        print_recovery(&r, o.read_only);
    }
out:
    keel_kernel_close(k, NULL);
    return rc;
}

/* ------------------------------------------------------------------ audit */

static json_t *audit_json(const keel_audit_report *a)
{
    char hash[17];
    snprintf(hash, sizeof(hash), "%016" PRIx64, a->final_hash);
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f, s:f, s:I}", "base_lsn",
        (json_int_t)a->base_lsn, "first_lsn", (json_int_t)a->first_lsn,
        "last_lsn", (json_int_t)a->last_lsn, "transactions",
        (json_int_t)a->transactions, "cranks", (json_int_t)a->cranks, "bytes",
        (json_int_t)a->bytes, "keys", (json_int_t)a->keys, "activity_hash",
        hash, "seconds", a->seconds, "transactions_per_s",
        a->seconds > 0 ? (double)a->transactions / a->seconds : 0.0,
        "violations", (json_int_t)a->violations);
    if (o != NULL && a->violations > 0) {
        json_t *v = json_pack(
            "{s:I, s:I, s:s}", "lsn", (json_int_t)a->violation_lsn, "crank",
            (json_int_t)a->violation_crank, "what", a->violation);
        if (v == NULL || json_object_set_new(o, "violation", v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

static void print_audit(const keel_audit_report *a)
{
    printf("audit: %" PRIu64 " transaction(s) (%" PRIu64 " cranks, %" PRIu64
           " bytes)",
           a->transactions, a->cranks, a->bytes);
    if (a->transactions > 0) {
        printf(", LSN %" PRIu64 "..%" PRIu64, a->first_lsn, a->last_lsn);
    }
    if (a->base_lsn > 0) {
        printf(", from the base snapshot at LSN %" PRIu64 "\n", a->base_lsn);
    } else {
        printf(", from genesis\n");
    }
    printf("audit: %.3f s (%.0f transactions/s)\n", a->seconds,
           a->seconds > 0 ? (double)a->transactions / a->seconds : 0.0);
    if (a->violations > 0) {
        printf("audit: VIOLATION at LSN %" PRIu64 " (crank %" PRIu64 "): %s\n",
               a->violation_lsn, a->violation_crank, a->violation);
    } else {
        printf("audit: sound: every check passed; %" PRIu64
               " key(s) equal the store's; activity hash %016" PRIx64 "\n",
               a->keys, a->final_hash);
    }
}

static int audit(job *j, int *violated)
{
    keel_audit_options o;
    keel_audit_report rep;
    keel_diag d = {0};
    int rc = KEEL_CLI_OK;
    keel_audit_options_init(&o);
    o.base_snapshot = j->base;
    int err = keel_audit(j->state, &o, &rep, &d);
    if (err < 0) {
        rc = failed(&d, err, "");
        goto out;
    }
    *violated = rep.violations > 0;
    if (j->json) {
        rc = put(j, "audit", audit_json(&rep));
    } else {
        print_audit(&rep);
    }
out:
    return rc;
}

/* ------------------------------------------------------------------------ */

int keel__cli_recover(int argc, char **argv)
{
    keel_cli_args a;
    job j;
    struct stat st;
    int violated = 0;
    memset(&j, 0, sizeof(j));
    int rc = keel__cli_parse(&recover_spec, argc, argv, &a);
    if (rc != KEEL_CLI_CONTINUE) {
        goto out;
    }
    j.state = a.pos[0];
    j.check = a.val[OPT_CHECK] != NULL;
    j.json = a.val[OPT_JSON] != NULL;
    j.truncate = a.val[OPT_TRUNCATE] != NULL;
    j.base = a.val[OPT_BASE];
    if (j.base != NULL && !j.check) {
        rc = keel__cli_usage_error("recover", "--base needs --check");
        goto out;
    }
    if (stat(j.state, &st) != 0) {
        fprintf(stderr, "keel: recover: no such state directory: %s\n",
                j.state);
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    j.out = j.json ? json_object() : NULL;
    if (j.json && j.out == NULL) {
        fprintf(stderr, "keel: recover: out of memory\n");
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    rc = j.truncate ? salvage(&j) : KEEL_CLI_OK;
    if (rc == KEEL_CLI_OK) {
        rc = recover(&j);
    }
    if (rc == KEEL_CLI_OK && j.check) {
        rc = audit(&j, &violated);
    }
    if (rc == KEEL_CLI_OK && j.json) {
        char *s = NULL;
        rc = put(&j, "ok", json_boolean(!violated));
        s = rc == KEEL_CLI_OK ? json_dumps(j.out, JSON_COMPACT) : NULL;
        if (s != NULL) {
            printf("%s\n", s);
        } else if (rc == KEEL_CLI_OK) {
            fprintf(stderr, "keel: recover: out of memory\n");
            rc = KEEL_CLI_FAIL;
        }
        free(s);
    }
    if (rc == KEEL_CLI_OK && violated) {
        rc = KEEL_CLI_FAIL; /* R2 */
    }
out:
    json_decref(j.out);
    return rc;
}
