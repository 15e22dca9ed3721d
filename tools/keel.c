/*
 * tools/keel.c — the `keel` program: the command table, dispatch, help, and
 * the option and number parsing every subcommand shares (tools/cli.h).
 *
 * Invariants (C1..C4 are in cli.h; these are the dispatcher's):
 *   D1  Every command is one row of `commands`; the top-level help, the group
 *       help (`keel wal --help`) and dispatch are all generated from it, so
 *       help cannot list a command that does not exist (C4).
 *   D2  `keel help WORDS...` behaves exactly as `keel WORDS... --help`: the
 *       command's own --help text is the one place its options are described.
 *   D3  The library never prints or exits; only this program chooses exit
 *       statuses (C1), and main() turns a failed write to stdout into 1.
 *
 * Dispatch:
 *     keel --help | -h | help        top-level help, 0
 *     keel --version                 `keel <version>`, 0
 *     keel help WORDS...             -> keel WORDS... --help (D2)
 *     keel GROUP NAME ARGS...        row {GROUP, NAME}: run(ARGS)
 *     keel NAME ARGS...              row {NULL, NAME}: run(ARGS)
 *     keel GROUP [--help]            the group's help (0), or a usage error
 *     anything else                  `keel: unknown command ...`, 2
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "keel/keel.h"

#include "bench/bench.h"
#include "common/diag.h"
#include "tools/cli.h"

/* One command of the program (D1). */
typedef struct cli_command {
    const char *group;    /* "wal", or NULL for a command of one word */
    const char *name;     /* "dump" */
    const char *synopsis; /* its arguments, for the help listing */
    const char *summary;  /* one line */
    int (*run)(int argc, char **argv);
} cli_command;

static const cli_command commands[] = {
    {NULL, "run", "STATE [--config FILE] [OPTIONS]",
     "boot or resume a kernel and run it", keel__cli_run},
    {NULL, "status", "STATE [--json]", "show a kernel's crank, queue and vats",
     keel__cli_status},
    {NULL, "send", "STATE VAT METHOD ARGS_JSON [--wait]",
     "queue a message to a vat's root object", keel__cli_send},
    {NULL, "stop", "STATE", "stop a running kernel cleanly", keel__cli_stop},
    {NULL, "vats", "STATE [--json]", "list a kernel's vats", keel__cli_vats},
    {NULL, "inspect", "STATE KREF | VAT VREF [--json]",
     "show an object or promise: owner, holders, state", keel__cli_inspect},
    {NULL, "graph", "STATE", "print the object and promise graph as DOT",
     keel__cli_graph},
    {NULL, "metrics", "STATE", "print a running kernel's Prometheus metrics",
     keel__cli_metrics},
    {NULL, "watch", "STATE [--json]", "show a running kernel's events live",
     keel__cli_watch},
    {NULL, "recover", "STATE [--check] [OPTIONS]",
     "recover a state; audit its whole log", keel__cli_recover},
    {NULL, "crashtest", "--config FILE [OPTIONS]",
     "crash a cluster every way and check each recovery", keel__cli_crashtest},
    {"wal", "demo", "DIR [--n N] [--size BYTES] [--sync P]",
     "append demonstration records to a WAL", keel__cli_wal_demo},
    {"wal", "dump", "DIR [--from LSN] [--json]",
     "print a WAL's records and where it ends", keel__cli_wal_dump},
    {"wal", "verify", "DIR [--json]", "check a WAL without changing it",
     keel__cli_wal_verify},
    {"snapshot", "create", "STATE FILE [--level L]",
     "snapshot a state's last checkpoint (also while it runs)",
     keel__cli_snapshot_create},
    {"snapshot", "verify", "FILE [--json]", "check every byte of a snapshot",
     keel__cli_snapshot_verify},
    {"snapshot", "info", "FILE [--json]", "print a snapshot's manifest",
     keel__cli_snapshot_info},
    {"snapshot", "restore", "FILE NEWSTATE [OPTIONS]",
     "build a state from a snapshot, to a point in time",
     keel__cli_snapshot_restore},
    {NULL, "bench", "WORKLOAD [OPTIONS]", "time a workload against baselines",
     keel__bench_main},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static int is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static void print_row(const cli_command *c)
{
    char words[64];
    if (c->group != NULL) {
        snprintf(words, sizeof(words), "%s %s %s", c->group, c->name,
                 c->synopsis);
    } else {
        snprintf(words, sizeof(words), "%s %s", c->name, c->synopsis);
    }
    printf("  %-42s %s\n", words, c->summary);
}

static int top_help(void)
{
    printf("usage: keel COMMAND [ARGS...]\n"
           "       keel COMMAND --help    (or: keel help COMMAND)\n"
           "       keel --version\n"
           "\n"
           "keel is a durable object-capability kernel. Commands in this "
           "build:\n\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        print_row(&commands[i]);
    }
    printf("\n"
           "Exit status: 0 success; 1 the data or the system failed (a "
           "corrupt\n"
           "log, an I/O error); 2 the command line was wrong.\n");
    return KEEL_CLI_OK;
}

static int is_group(const char *word)
{
    int found = 0;
    for (size_t i = 0; i < NCOMMANDS && !found; i++) {
        found =
            commands[i].group != NULL && strcmp(commands[i].group, word) == 0;
    }
    return found;
}

/* The names of a group's commands, "dump, verify", for error messages. */
static void group_names(const char *group, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (commands[i].group == NULL ||
            strcmp(commands[i].group, group) != 0) {
            continue;
        }
        int n = snprintf(buf + len, cap - len, "%s%s", len > 0 ? ", " : "",
                         commands[i].name);
        if (n < 0 || (size_t)n >= cap - len) {
            break;
        }
        len += (size_t)n;
    }
}

static int group_help(const char *group)
{
    printf("usage: keel %s SUBCOMMAND [ARGS...]\n\n", group);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (commands[i].group != NULL &&
            strcmp(commands[i].group, group) == 0) {
            print_row(&commands[i]);
        }
    }
    printf("\n'keel %s SUBCOMMAND --help' describes each one.\n", group);
    return KEEL_CLI_OK;
}

/* Run a group's command, argv[0] being the group's name. */
static int run_group(int argc, char **argv)
{
    int rc = KEEL_CLI_USAGE;
    char names[128];
    const char *group = argv[0];
    group_names(group, names, sizeof(names));
    if (argc < 2) {
        rc = keel__cli_usage_error(group, "missing subcommand (one of: %s)",
                                   names);
        goto out;
    }
    if (is_help(argv[1])) {
        rc = group_help(group);
        goto out;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const cli_command *c = &commands[i];
        if (c->group != NULL && strcmp(c->group, group) == 0 &&
            strcmp(c->name, argv[1]) == 0) {
            rc = c->run(argc - 2, argv + 2);
            goto out;
        }
    }
    rc = keel__cli_usage_error(group, "unknown subcommand '%s' (one of: %s)",
                               argv[1], names);
out:
    return rc;
}

/* Dispatch argv[0..argc), argv[0] being the command's first word. */
static int dispatch(int argc, char **argv)
{
    int rc = KEEL_CLI_USAGE;
    if (is_group(argv[0])) {
        rc = run_group(argc, argv);
        goto out;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const cli_command *c = &commands[i];
        if (c->group == NULL && strcmp(c->name, argv[0]) == 0) {
            rc = c->run(argc - 1, argv + 1);
            goto out;
        }
    }
    fprintf(stderr, "keel: unknown command '%s' (try 'keel --help')\n",
            argv[0]);
out:
    return rc;
}

/* `keel help WORDS...`: dispatch WORDS... --help (D2). */
static int help_command(int argc, char **argv)
{
    int rc = KEEL_CLI_OK;
    char **words = NULL;
    if (argc == 0) {
        rc = top_help();
        goto out;
    }
    words = calloc((size_t)argc + 2, sizeof(*words));
    if (words == NULL) {
        fprintf(stderr, "keel: help: out of memory\n");
        rc = KEEL_CLI_FAIL;
        goto out;
    }
    memcpy(words, argv, (size_t)argc * sizeof(*words));
    words[argc] = "--help";
    rc = dispatch(argc + 1, words);
out:
    free(words);
    return rc;
}

int keel__cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "keel: %s: ", command);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return KEEL_CLI_USAGE;
}

static int find_opt(const keel_cli_spec *spec, const char *name, size_t len)
{
    int idx = -1;
    for (size_t i = 0; i < spec->nopts && idx < 0; i++) {
        if (strlen(spec->opts[i].name) == len &&
            strncmp(spec->opts[i].name, name, len) == 0) {
            idx = (int)i;
        }
    }
    return idx;
}

/* 1 if --help or -h appears before any `--`: help wins over errors. */
static int wants_help(int argc, char **argv)
{
    int found = 0;
    for (int i = 0; i < argc && !found && strcmp(argv[i], "--") != 0; i++) {
        found = is_help(argv[i]);
    }
    return found;
}

/* Parse one option argv[*i] (starting with '-') into out. */
static int parse_opt(const keel_cli_spec *spec, int argc, char **argv, int *i,
                     keel_cli_args *out)
{
    int rc = KEEL_CLI_CONTINUE;
    const char *a = argv[*i];
    if (a[1] != '-') {
        rc = keel__cli_usage_error(spec->command,
                                   "unknown option '%s' (see 'keel %s "
                                   "--help')",
                                   a, spec->command);
        goto out;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    int idx = find_opt(spec, name, len);
    if (idx < 0) {
        rc = keel__cli_usage_error(spec->command,
                                   "unknown option '--%.*s' (see 'keel %s "
                                   "--help')",
                                   (int)len, name, spec->command);
        goto out;
    }
    const keel_cli_opt *o = &spec->opts[idx];
    if (out->val[idx] != NULL) {
        /* C5: which of two values was meant is not ours to guess */
        rc = keel__cli_usage_error(spec->command,
                                   "option --%s given twice (see 'keel %s "
                                   "--help')",
                                   o->name, spec->command);
        goto out;
    }
    if (o->metavar == NULL) {
        if (eq != NULL) {
            rc = keel__cli_usage_error(spec->command,
                                       "option --%s takes no value", o->name);
            goto out;
        }
        out->val[idx] = "";
    } else if (eq != NULL) {
        out->val[idx] = eq + 1;
    } else if (*i + 1 < argc) {
        *i += 1;
        out->val[idx] = argv[*i];
    } else {
        rc = keel__cli_usage_error(spec->command,
                                   "option --%s needs a value (%s)", o->name,
                                   o->metavar);
    }
out:
    return rc;
}

int keel__cli_parse(const keel_cli_spec *spec, int argc, char **argv,
                    keel_cli_args *out)
{
    int rc = KEEL_CLI_CONTINUE;
    int only_pos = 0;
    memset(out, 0, sizeof(*out));
    KEEL_ASSERT(spec->nopts <= KEEL_CLI_MAX_OPTS);
    KEEL_ASSERT(spec->max_pos <= KEEL_CLI_MAX_POS);
    if (wants_help(argc, argv)) {
        fputs(spec->help, stdout);
        rc = KEEL_CLI_OK;
        goto out;
    }
    for (int i = 0; i < argc && rc == KEEL_CLI_CONTINUE; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (!only_pos && a[0] == '-' && a[1] != '\0') {
            rc = parse_opt(spec, argc, argv, &i, out);
        } else if (out->npos < spec->max_pos) {
            out->pos[out->npos++] = a;
        } else {
            rc = keel__cli_usage_error(spec->command,
                                       "unexpected argument '%s' (see 'keel "
                                       "%s --help')",
                                       a, spec->command);
        }
    }
    if (rc == KEEL_CLI_CONTINUE && out->npos < spec->min_pos) {
        rc = keel__cli_usage_error(spec->command,
                                   "missing %s (see 'keel %s "
                                   "--help')",
                                   spec->pos, spec->command);
    }
out:
    return rc;
}

int keel__cli_parse_u64(const char *command, const char *opt, const char *s,
                        uint64_t min, uint64_t max, uint64_t *out)
{
    int rc = KEEL_CLI_CONTINUE;
    char *end = NULL;
    /* strtoull alone would accept " 7", "+7" and "-1" (as 2^64-1) (C3) */
    if (s[0] < '0' || s[0] > '9') {
        rc = keel__cli_usage_error(command,
                                   "--%s: '%s' is not a non-negative decimal "
                                   "integer",
                                   opt, s);
        goto out;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0') {
        rc = keel__cli_usage_error(command,
                                   "--%s: '%s' is not a non-negative decimal "
                                   "integer",
                                   opt, s);
        goto out;
    }
    if (errno == ERANGE || v < min || v > max) {
        rc = keel__cli_usage_error(
            command, "--%s: %s is out of range (%llu to %llu)", opt, s,
            (unsigned long long)min, (unsigned long long)max);
        goto out;
    }
    *out = (uint64_t)v;
out:
    return rc;
}

/* C6 */
const char *keel__cli_diag_msg(const keel_diag *d, int code)
{
    return d->msg[0] != '\0' ? d->msg : keel_strerror(code);
}

struct json_t *keel__cli_hex64(uint64_t v)
{
    char buf[19];
    snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
    return json_string(buf);
}

int keel__cli_read_config(const char *command, const char *path, char **out)
{
    int rc = KEEL_CLI_FAIL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (f == NULL) {
        fprintf(stderr, "keel: %s: cannot read config %s: %s\n", command, path,
                strerror(errno));
        goto out;
    }
    buf = malloc(KEEL_CLI_CONFIG_MAX + 1);
    if (buf == NULL) {
        fprintf(stderr, "keel: %s: out of memory\n", command);
        goto out;
    }
    len = fread(buf, 1, KEEL_CLI_CONFIG_MAX + 1, f);
    if (ferror(f)) {
        fprintf(stderr, "keel: %s: cannot read config %s: %s\n", command, path,
                strerror(errno));
        goto out;
    }
    if (len > KEEL_CLI_CONFIG_MAX) {
        fprintf(stderr, "keel: %s: config %s is larger than %u bytes\n",
                command, path, KEEL_CLI_CONFIG_MAX);
        goto out;
    }
    /* the text ends where the file ends, not at a NUL inside it */
    const char *nul = memchr(buf, '\0', len);
    if (nul != NULL) {
        fprintf(stderr,
                "keel: %s: config %s: NUL byte at offset %zu (a config is "
                "JSON text)\n",
                command, path, (size_t)(nul - buf));
        goto out;
    }
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    rc = KEEL_CLI_OK;
out:
    free(buf);
    if (f != NULL) {
        fclose(f);
    }
    return rc;
}

int main(int argc, char **argv)
{
    int rc = KEEL_CLI_USAGE;
    if (argc < 2) {
        fprintf(stderr, "keel: no command given (try 'keel --help')\n");
        goto out;
    }
    const char *first = argv[1];
    if (is_help(first)) {
        rc = top_help();
    } else if (strcmp(first, "--version") == 0) {
        printf("keel %s\n", keel_version());
        rc = KEEL_CLI_OK;
    } else if (strcmp(first, "help") == 0) {
        rc = help_command(argc - 2, argv + 2);
    } else if (first[0] == '-') {
        fprintf(stderr, "keel: unknown option '%s' (try 'keel --help')\n",
                first);
    } else {
        rc = dispatch(argc - 1, argv + 1);
    }
out:
    /* D3: output that did not reach its destination is a failure */
    if (fflush(stdout) != 0 && rc == KEEL_CLI_OK) {
        fprintf(stderr, "keel: writing to standard output: %s\n",
                strerror(errno));
        rc = KEEL_CLI_FAIL;
    }
    return rc;
}
