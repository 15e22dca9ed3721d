/*
 * tools/cli.h — what the files of the `keel` program share: exit codes, the
 * option parser every subcommand uses, strict number parsing, and the entry
 * points the dispatch table in tools/keel.c calls.
 *
 * Invariants:
 *   C1  Exit status: 0 success, 1 the data or the system failed (a corrupt
 *       log, an I/O error), 2 the command line was wrong. Nothing else.
 *   C2  A usage error is one line on stderr, `keel: <command>: <what>`, and
 *       nothing on stdout.
 *   C3  A number on the command line is accepted only when all of it is
 *       decimal digits that fit the option's range; the error names the
 *       option.
 *   C4  Help goes to stdout and exits 0; it names only commands and options
 *       that exist in this build.
 *   C5  Every option is given at most once: a repeated one (`--n 1 --n 2`,
 *       a flag twice) is a usage error naming it, never "the last wins".
 *   C6  A config file is read with its length (keel__cli_read_config): a
 *       NUL byte in it is refused naming its offset, since it would end the
 *       C string the kernel parses and whatever followed would be ignored.
 *
 * Calling sequence of a subcommand (see cmd_wal.c):
 *     keel_cli_args a;
 *     rc = keel__cli_parse(&spec, argc, argv, &a);
 *     if (rc != KEEL_CLI_CONTINUE) goto out;   (help printed, or usage error)
 *     ... a.pos[0], a.val[OPT_FROM] ...
 */
#ifndef KEEL_TOOLS_CLI_H
#define KEEL_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "keel/base.h"

/* C1 */
enum keel_cli_exit {
    KEEL_CLI_OK = 0,
    KEEL_CLI_FAIL = 1,
    KEEL_CLI_USAGE = 2,
    /* not an exit status: keel__cli_parse() wants the command to go on */
    KEEL_CLI_CONTINUE = -1,
};

#define KEEL_CLI_MAX_OPTS 24
#define KEEL_CLI_MAX_POS  4

/* One `--name` option of a subcommand. */
typedef struct keel_cli_opt {
    const char *name;    /* without the dashes: "from" */
    const char *metavar; /* "LSN" for an option taking a value; NULL: flag */
} keel_cli_opt;

/* What a subcommand accepts, and the help it prints for --help. */
typedef struct keel_cli_spec {
    const char *command; /* "wal dump": used in error messages */
    const char *help;    /* the whole --help text, starting "usage: " */
    const keel_cli_opt *opts;
    size_t nopts;    /* <= KEEL_CLI_MAX_OPTS */
    size_t min_pos;  /* positional arguments required */
    size_t max_pos;  /* ... and allowed (<= KEEL_CLI_MAX_POS) */
    const char *pos; /* their names for the error message, e.g. "DIR" */
} keel_cli_spec;

/* A parsed command line; strings borrowed from argv. */
typedef struct keel_cli_args {
    /* per spec option, by index: its value, "" for a flag that was given,
     * NULL when absent (a repeated option is a usage error: C5) */
    const char *val[KEEL_CLI_MAX_OPTS];
    const char *pos[KEEL_CLI_MAX_POS];
    size_t npos;
} keel_cli_args;

/*
 * Parse argv[0..argc) (the words after the command's name) against spec.
 * Accepts `--name VALUE`, `--name=VALUE`, flags, `--help`/`-h`, and `--`
 * (everything after it is positional); each option at most once (C5).
 * @return KEEL_CLI_CONTINUE when the command should run with *out;
 *         KEEL_CLI_OK after printing the help to stdout;
 *         KEEL_CLI_USAGE after printing a one-line error to stderr (C2).
 */
int keel__cli_parse(const keel_cli_spec *spec, int argc, char **argv,
                    keel_cli_args *out);

/*
 * Parse s, the value of option --opt of command, as a decimal integer in
 * [min, max] (C3). Rejects signs, spaces, hex, garbage and overflow.
 * @return KEEL_CLI_CONTINUE with *out set, or KEEL_CLI_USAGE after printing
 *         `keel: <command>: --<opt>: ...` to stderr.
 */
int keel__cli_parse_u64(const char *command, const char *opt, const char *s,
                        uint64_t min, uint64_t max, uint64_t *out);

/*
 * Print `keel: <command>: <message>` (one line) to stderr.
 * @return KEEL_CLI_USAGE.
 */
int keel__cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A call's diag message, or the code's message when it left none (every
 * error line names what failed, never an empty message). */
const char *keel__cli_diag_msg(const keel_diag *d, int code);

/* A 64-bit id (kernel id, checksum) as JSON: "0x" and 16 hex digits.
 * NULL when out of memory (jansson's json_pack then fails). */
struct json_t *keel__cli_hex64(uint64_t v);

/* Configs are small; a bigger file is a mistake, not a cluster. */
#define KEEL_CLI_CONFIG_MAX (16u * 1024 * 1024)

/*
 * Read the cluster config at path into a malloc'd NUL-terminated string
 * (*out; free()), refusing a NUL byte inside it and a file over
 * KEEL_CLI_CONFIG_MAX (C6).
 * @return KEEL_CLI_OK, or KEEL_CLI_FAIL after printing `keel: <command>:
 *         ...` naming the file (and the offset of a NUL).
 */
int keel__cli_read_config(const char *command, const char *path, char **out);

/* Subcommands, each run with the words after its name (tools/cmd_wal.c). */
int keel__cli_wal_dump(int argc, char **argv);
int keel__cli_wal_verify(int argc, char **argv);
/* tools/cmd_wal_demo.c */
int keel__cli_wal_demo(int argc, char **argv);
/* tools/cmd_kernel.c */
int keel__cli_run(int argc, char **argv);
int keel__cli_status(int argc, char **argv);
int keel__cli_send(int argc, char **argv);
/* tools/cmd_control.c */
int keel__cli_stop(int argc, char **argv);
int keel__cli_vats(int argc, char **argv);
int keel__cli_inspect(int argc, char **argv);
int keel__cli_graph(int argc, char **argv);
int keel__cli_metrics(int argc, char **argv);
int keel__cli_watch(int argc, char **argv);
/* tools/cmd_recover.c */
int keel__cli_recover(int argc, char **argv);
/* tools/cmd_crashtest.c */
int keel__cli_crashtest(int argc, char **argv);
/* tools/cmd_snapshot.c */
int keel__cli_snapshot_create(int argc, char **argv);
int keel__cli_snapshot_verify(int argc, char **argv);
int keel__cli_snapshot_info(int argc, char **argv);
int keel__cli_snapshot_restore(int argc, char **argv);

#endif
