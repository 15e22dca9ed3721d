/*
 * fuzz/replay.c — runs a fuzz target over stored inputs without libFuzzer,
 * so that every build (any compiler, any sanitizer) checks the seed corpus
 * and every crash ever found, as an ordinary ctest.
 *
 *   usage: fuzz_replay_<target> PATH...
 *
 * Each PATH is a file or a directory; every regular file of a directory
 * (not recursive, names starting with '.' skipped) is one input, run in
 * name order. Each input's name and size are printed before it runs, so a
 * failing oracle (which abort()s) shows which input it was.
 *
 * Invariants:
 *   P1  Replay never passes vacuously: a PATH that cannot be read, or no
 *       input at all, is exit status 1.
 *   P2  An input is handed over exactly as stored, in a buffer of exactly
 *       its size (allocated at its size, so ASan sees any over-read).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/fuzz_helpers.h"

/* Run one file. @return 1 if it ran, 0 if it could not be read. */
static int run_file(const char *path)
{
    size_t len = 0;
    uint8_t *buf = fuzz_read_file(path, &len);
    if (buf == NULL) {
        fprintf(stderr, "fuzz_replay: cannot read %s\n", path);
        return 0;
    }
    printf("fuzz_replay: %s (%zu bytes)\n", path, len);
    fflush(stdout);
    /* P2: fuzz_read_file allocated exactly len bytes (1 for len 0). */
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 1;
}

static int skip_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Run every regular file of dir. @return inputs run, or -1 on an error. */
static long run_dir(const char *dir)
{
    struct dirent **names = NULL;
    long ran = 0;
    int n = scandir(dir, &names, skip_hidden, alphasort);
    if (n < 0) {
        fprintf(stderr, "fuzz_replay: cannot list %s: %s\n", dir,
                strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char *path = fuzz_path(dir, names[i]->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path)) {
                ran++;
            } else {
                ran = -1;
            }
        }
        free(path);
        free(names[i]);
        if (ran < 0) {
            for (int j = i + 1; j < n; j++) {
                free(names[j]);
            }
            break;
        }
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    int rc = 1;
    long total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH...\n", argv[0]);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        long ran = -1;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "fuzz_replay: %s: %s\n", argv[i], strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            ran = run_dir(argv[i]);
        } else {
            ran = run_file(argv[i]) ? 1 : -1;
        }
        if (ran < 0) {
            goto out; /* P1 */
        }
        total += ran;
    }
    printf("fuzz_replay: ran %ld inputs\n", total);
    if (total == 0) {
        fprintf(stderr, "fuzz_replay: no inputs found: refusing to pass\n");
        goto out; /* P1 */
    }
    rc = 0;
out:
    return rc;
}
