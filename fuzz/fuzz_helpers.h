/*
 * fuzz/fuzz_helpers.h — what keel's fuzz targets, their replay driver and
 * the corpus generator share: an assertion that is never compiled out, the
 * libFuzzer entry point's prototype, and small file helpers.
 *
 * Invariants:
 *   H1  FUZZ_ASSERT checks in every build (no NDEBUG switch): the oracle of
 *       a fuzz target is its only output, so it cannot depend on the build
 *       type. A failure prints expression, file, line and details, then
 *       abort()s, which libFuzzer and the replay driver both report.
 *   H2  The file helpers never return failure: a scratch file that cannot be
 *       written is a broken test machine, not a finding, and aborts with
 *       errno named.
 */
#ifndef KEEL_FUZZ_FUZZ_HELPERS_H
#define KEEL_FUZZ_FUZZ_HELPERS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The libFuzzer entry point each target defines (and replay.c calls). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline _Noreturn void fuzz_fail(const char *expr, const char *file,
                                       int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline _Noreturn void fuzz_fail(const char *expr, const char *file,
                                       int line, const char *fmt, ...)
{
    fprintf(stderr, "fuzz: assertion failed: %s (%s:%d)", expr, file, line);
    if (fmt != NULL && fmt[0] != '\0') {
        va_list ap;
        va_start(ap, fmt);
        fputs(": ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    abort();
}

/* H1 */
#define FUZZ_ASSERT(expr) \
    ((expr) ? (void)0 : fuzz_fail(#expr, __FILE__, __LINE__, "%s", ""))
#define FUZZ_ASSERTF(expr, ...) \
    ((expr) ? (void)0 : fuzz_fail(#expr, __FILE__, __LINE__, __VA_ARGS__))

/* Join dir and name into a malloc'd path. */
static inline char *fuzz_path(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    FUZZ_ASSERT(p != NULL);
    snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/*
 * Make a fresh directory for scratch files; returns a malloc'd path. Under
 * $TMPDIR when set, else /dev/shm when usable (fsyncs there cost nothing,
 * which keeps a fuzz target fast), else /tmp.
 */
static inline char *fuzz_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    size_t len = strlen(base) + strlen(tag) + 16;
    char *p = malloc(len);
    FUZZ_ASSERT(p != NULL);
    snprintf(p, len, "%s/%s-XXXXXX", base, tag);
    FUZZ_ASSERTF(mkdtemp(p) != NULL, "mkdtemp %s: %s", p, strerror(errno));
    return p;
}

/* Replace the contents of path with buf[len] (H2). */
static inline void fuzz_write_file(const char *path, const void *buf,
                                   size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FUZZ_ASSERTF(fd >= 0, "open %s: %s", path, strerror(errno));
    const uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        FUZZ_ASSERTF(n > 0 || (n < 0 && errno == EINTR), "write %s: %s", path,
                     strerror(errno));
        if (n > 0) {
            done += (size_t)n;
        }
    }
    FUZZ_ASSERTF(close(fd) == 0, "close %s: %s", path, strerror(errno));
}

/* Read a whole regular file into a malloc'd buffer (at least 1 byte
 * allocated, so an empty file still gives a pointer). NULL if it cannot be
 * opened or read. */
static inline uint8_t *fuzz_read_file(const char *path, size_t *len)
{
    uint8_t *buf = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        goto out;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size > 0 ? size : 1);
    FUZZ_ASSERT(buf != NULL);
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, buf + done, size - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            free(buf);
            buf = NULL;
            goto out;
        }
        done += (size_t)n;
    }
    *len = size;
out:
    close(fd);
    return buf;
}

/* Remove every entry of directory dir (not recursive), then dir itself.
 * A missing dir is fine. */
static inline void fuzz_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        FUZZ_ASSERTF(errno == ENOENT, "opendir %s: %s", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char *p = fuzz_path(dir, e->d_name);
        FUZZ_ASSERTF(unlink(p) == 0, "unlink %s: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    FUZZ_ASSERTF(rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
}

#endif
