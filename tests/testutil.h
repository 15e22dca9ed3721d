/*
 * tests/testutil.h — helpers shared by the Check suites: scratch
 * directories, whole-file reads and writes, a seeded PRNG, and running the
 * `keel` program.
 */
#ifndef KEEL_TESTS_TESTUTIL_H
#define KEEL_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Make a fresh directory under $TMPDIR (or /tmp); returns a malloc'd path.
 * Aborts the test on failure. */
char *tu_tmpdir(const char *tag);
/* rm -rf path (best effort). */
void tu_rmrf(const char *path);
/* Join dir and name into a malloc'd path. */
char *tu_path(const char *dir, const char *name);
/* Read a whole file; *len set; malloc'd (NULL if missing). */
uint8_t *tu_read_file(const char *path, size_t *len);
/* Replace a file's contents. Aborts the test on failure. */
void tu_write_file(const char *path, const void *buf, size_t len);
/* Copy every regular file of dir `from` into dir `to` (created). */
void tu_copy_dir(const char *from, const char *to);

/* Newlines in s. */
size_t tu_count_lines(const char *s);
/* Assert err is exactly one line starting "keel: " (a CLI error). */
void tu_assert_one_error_line(const char *err);

/* splitmix64: a seeded PRNG; print the seed on failure. */
uint64_t tu_rand(uint64_t *state);

/*
 * Run the keel program (KEEL_BIN) with argv (NULL-terminated, without
 * argv[0]); capture stdout and stderr (malloc'd, NUL-terminated; may pass
 * NULL). @return the exit status (or 128+signal).
 */
int tu_run_keel(const char *const *args, char **out, char **err);

struct keel_io_fault;
/* A fault layer (common/io_fault.h) whose plan fails the nth op of kind op
 * (enum keel_io_op) with err; free it with keel__io_fault_free(). */
struct keel_io_fault *tu_fault_failing(int op, uint64_t nth, int err);

#endif
