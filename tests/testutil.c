/*
 * tests/testutil.c — see testutil.h.
 */
#include "tests/testutil.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/io_fault.h"
#include "keel/keel.h"

char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/keel-%s-XXXXXX", base, tag);
    char *d = mkdtemp(tmpl);
    ck_assert_msg(d != NULL, "mkdtemp %s failed", tmpl);
    return strdup(d);
}

void tu_rmrf(const char *path)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
                continue;
            }
            char *p = tu_path(path, e->d_name);
            tu_rmrf(p);
            free(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

char *tu_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

uint8_t *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    ck_assert_uint_eq(got, (size_t)n);
    *len = (size_t)n;
    return buf;
}

void tu_write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "open %s", path);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

void tu_copy_dir(const char *from, const char *to)
{
    mkdir(to, 0700); /* a copied STATE, as keel makes one (control.md) */
    DIR *d = opendir(from);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char *src = tu_path(from, e->d_name);
        char *dst = tu_path(to, e->d_name);
        size_t len = 0;
        uint8_t *buf = tu_read_file(src, &len);
        if (buf != NULL) {
            tu_write_file(dst, buf, len);
            free(buf);
        }
        free(src);
        free(dst);
    }
    closedir(d);
}

uint64_t tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

int tu_run_keel(const char *const *args, char **out, char **err)
{
    char outp[] = "/tmp/keel-out-XXXXXX";
    char errp[] = "/tmp/keel-err-XXXXXX";
    int ofd = mkstemp(outp);
    int efd = mkstemp(errp);
    ck_assert(ofd >= 0 && efd >= 0);
    unlink(outp);
    unlink(errp);
    size_t n = 0;
    while (args[n] != NULL) {
        n++;
    }
    const char **argv = calloc(n + 2, sizeof(*argv));
    ck_assert_ptr_nonnull(argv);
    argv[0] = KEEL_BIN;
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = args[i];
    }
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        execv(KEEL_BIN, (char *const *)argv);
        _exit(127);
    }
    free(argv);
    int st = 0;
    ck_assert(waitpid(pid, &st, 0) == pid);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    if (out != NULL) {
        *out = slurp_fd(ofd);
    }
    if (err != NULL) {
        *err = slurp_fd(efd);
    }
    close(ofd);
    close(efd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

size_t tu_count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++) {
        n += *s == '\n';
    }
    return n;
}

void tu_assert_one_error_line(const char *err)
{
    ck_assert_msg(strncmp(err, "keel: ", 6) == 0, "stderr: %s", err);
    ck_assert_msg(tu_count_lines(err) == 1, "stderr not one line: %s", err);
}

struct keel_io_fault *tu_fault_failing(int op, uint64_t nth, int err)
{
    keel_io_fault *f = NULL;
    ck_assert_int_eq(keel__io_fault_new(&f), KEEL_OK);
    keel_io_fault_plan plan = {.kind = KEEL_IO_FAULT_FAIL,
                               .op = (enum keel_io_op)op,
                               .nth = nth,
                               .err = err};
    keel__io_fault_set_plan(f, &plan);
    return f;
}
