/*
 * tests/opsutil.c — see tests/opsutil.h.
 */
#include "tests/opsutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/testutil.h"

char *ou_read_text(const char *path)
{
    size_t len = 0;
    char *s = (char *)tu_read_file(path, &len);
    if (s != NULL) {
        s[len] = '\0'; /* tu_read_file leaves room for it */
    }
    return s;
}

char *ou_pingpong_config(uint64_t rounds)
{
    char *s = NULL;
    ck_assert(asprintf(&s,
                       "{\"bootstrap\": \"alice\", \"vats\": {"
                       "\"alice\": {\"builtin\": \"pingpong\", \"params\": "
                       "{\"role\": \"alice\", \"rounds\": %" PRIu64 "}},"
                       "\"bob\": {\"builtin\": \"pingpong\", \"params\": "
                       "{\"role\": \"bob\"}}}}",
                       rounds) > 0);
    return s;
}

pid_t ou_spawn(const char *const *args, const char *const *env,
               const char *out_path, const char *err_path)
{
    size_t n = 0;
    while (args[n] != NULL) {
        n++;
    }
    const char **argv = calloc(n + 2, sizeof(*argv));
    ck_assert_ptr_nonnull(argv);
    argv[0] = KEEL_BIN;
    memcpy(argv + 1, args, n * sizeof(*argv));
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (o < 0 || e < 0) {
            _exit(126);
        }
        dup2(o, 1);
        dup2(e, 2);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
            putenv((char *)env[i]);
        }
        execv(KEEL_BIN, (char *const *)argv);
        _exit(127);
    }
    free(argv);
    return pid;
}

int ou_wait(pid_t pid)
{
    int st = 0;
    ck_assert(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

char *ou_wait_for(const char *path, const char *needle)
{
    for (int i = 0; i < 2000; i++) {
        char *s = ou_read_text(path);
        if (s != NULL && strstr(s, needle) != NULL) {
            return s;
        }
        free(s);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

unsigned ou_metrics_port(const char *err_path)
{
    char *s = ou_wait_for(err_path, "/metrics\n");
    ck_assert_msg(s != NULL, "no metrics line on stderr");
    const char *p = strstr(s, "metrics at http://127.0.0.1:");
    ck_assert_msg(p != NULL, "stderr: %s", s);
    unsigned port =
        (unsigned)strtoul(p + strlen("metrics at http://127.0.0.1:"), NULL, 10);
    free(s);
    ck_assert(port > 0 && port < 65536);
    return port;
}

char *ou_http_get(unsigned port, const char *path, int *status)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int rl = snprintf(req, sizeof(req),
                      "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    ck_assert(write(fd, req, (size_t)rl) == rl);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0) {
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    ck_assert_msg(strncmp(buf, "HTTP/1.", 7) == 0, "reply: %s", buf);
    *status = atoi(buf + 9);
    char *body = strstr(buf, "\r\n\r\n");
    ck_assert_msg(body != NULL, "no header end: %s", buf);
    char *out = strdup(body + 4);
    free(buf);
    return out;
}

static int name_char(int c, int first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

/* Parse a metric name at *p; copy it into out. */
static int parse_name(const char **p, char *out, size_t cap)
{
    size_t n = 0;
    while (name_char((unsigned char)(*p)[n], n == 0)) {
        n++;
    }
    if (n == 0 || n >= cap) {
        return 0;
    }
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    return 1;
}

/* {name="value",...}: escapes \\ \" \n only. */
static int parse_labels(const char **p)
{
    if (**p != '{') {
        return 1;
    }
    (*p)++;
    while (**p != '}') {
        char lname[128];
        if (!parse_name(p, lname, sizeof(lname)) || strchr(lname, ':') ||
            **p != '=' || (*p)[1] != '"') {
            return 0;
        }
        *p += 2;
        while (**p != '"') {
            if (**p == '\0' || **p == '\n') {
                return 0;
            }
            if (**p == '\\') {
                char e = (*p)[1];
                if (e != '\\' && e != '"' && e != 'n') {
                    return 0;
                }
                (*p)++;
            }
            (*p)++;
        }
        (*p)++;
        if (**p == ',') {
            (*p)++;
        } else if (**p != '}') {
            return 0;
        }
    }
    (*p)++;
    return 1;
}

void ou_check_exposition(const char *text)
{
    char typed[128][128];
    char types[128][16];
    size_t ntyped = 0;
    const char *line = text;
    size_t samples = 0;
    ck_assert_msg(text[0] != '\0', "empty exposition");
    ck_assert_msg(text[strlen(text) - 1] == '\n', "no final newline");
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        ck_assert(end != NULL);
        int len = (int)(end - line);
        const char *p = line;
        char name[128];
        if (strncmp(p, "# HELP ", 7) == 0) {
            p += 7;
            ck_assert_msg(parse_name(&p, name, sizeof(name)) && *p == ' ',
                          "bad HELP line: %.*s", len, line);
        } else if (strncmp(p, "# TYPE ", 7) == 0) {
            p += 7;
            ck_assert_msg(parse_name(&p, name, sizeof(name)) && *p == ' ',
                          "bad TYPE line: %.*s", len, line);
            p++;
            int tl = (int)(end - p);
            ck_assert_msg((tl == 7 && strncmp(p, "counter", 7) == 0) ||
                              (tl == 5 && strncmp(p, "gauge", 5) == 0) ||
                              (tl == 9 && strncmp(p, "histogram", 9) == 0),
                          "bad type: %.*s", len, line);
            for (size_t i = 0; i < ntyped; i++) {
                ck_assert_msg(strcmp(typed[i], name) != 0, "TYPE twice: %s",
                              name);
            }
            ck_assert(ntyped < 128);
            snprintf(typed[ntyped], sizeof(typed[0]), "%s", name);
            snprintf(types[ntyped], sizeof(types[0]), "%.*s", tl, p);
            ntyped++;
        } else {
            ck_assert_msg(line[0] != '#', "unknown comment: %.*s", len, line);
            ck_assert_msg(parse_name(&p, name, sizeof(name)),
                          "bad sample name: %.*s", len, line);
            ck_assert_msg(parse_labels(&p), "bad labels: %.*s", len, line);
            ck_assert_msg(*p == ' ', "no value: %.*s", len, line);
            p++;
            char *vend = NULL;
            double v = strtod(p, &vend);
            (void)v;
            ck_assert_msg(vend == end && vend != p, "bad value: %.*s", len,
                          line);
            /* the family: the name, or a histogram's with its suffix cut */
            int found = 0;
            for (size_t i = 0; i < ntyped && !found; i++) {
                size_t tl = strlen(typed[i]);
                if (strcmp(typed[i], name) == 0) {
                    found = strcmp(types[i], "histogram") != 0;
                } else if (strcmp(types[i], "histogram") == 0 &&
                           strncmp(typed[i], name, tl) == 0) {
                    const char *suf = name + tl;
                    found = strcmp(suf, "_bucket") == 0 ||
                            strcmp(suf, "_sum") == 0 ||
                            strcmp(suf, "_count") == 0;
                }
            }
            ck_assert_msg(found, "sample without a TYPE before it: %.*s", len,
                          line);
            samples++;
        }
        line = end + 1;
    }
    ck_assert(samples > 0);
}

double ou_sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    const char *line = text;
    while (*line != '\0') {
        if (strncmp(line, name, n) == 0 && line[n] == ' ') {
            return strtod(line + n + 1, NULL);
        }
        const char *end = strchr(line, '\n');
        if (end == NULL) {
            break;
        }
        line = end + 1;
    }
    return -1;
}
