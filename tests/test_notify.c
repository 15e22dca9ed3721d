/*
 * tests/test_notify.c — `keel run` under a service manager: the test is
 * the manager, with its own AF_UNIX datagram socket as NOTIFY_SOCKET and
 * WATCHDOG_USEC set; it must receive READY=1 (after recovery), WATCHDOG=1
 * pings while the kernel idles with --forever, and STOPPING=1 after
 * SIGTERM, in that order, and the run exits 0; and STOPPING=1 the same
 * when the stop is asked over the control socket (`keel stop`).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/opsutil.h"
#include "tests/testutil.h"

/* Receive datagrams until one contains want (at most 200 x 100 ms);
 * @return 1 seen. Every message is appended to log. */
static int await(int fd, const char *want, char *log, size_t cap)
{
    for (int i = 0; i < 200; i++) {
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0) {
            continue; /* SO_RCVTIMEO */
        }
        buf[n] = '\0';
        strncat(log, buf, cap - strlen(log) - 2);
        strcat(log, "|");
        if (strstr(buf, want) != NULL) {
            return 1;
        }
    }
    return 0;
}

START_TEST(test_notify_ready_watchdog_stopping)
{
    char *root = tu_tmpdir("notify");
    char *cfg = tu_path(root, "cluster.json");
    char *state = tu_path(root, "state");
    char *sock = tu_path(root, "notify.sock");
    char *outp = tu_path(root, "out"), *errp = tu_path(root, "err");
    char *config = ou_pingpong_config(5);
    tu_write_file(cfg, config, strlen(config));

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert(strlen(sock) < sizeof(sun.sun_path));
    strcpy(sun.sun_path, sock);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    struct timeval tv = {0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    char env_sock[4200], env_wd[] = "WATCHDOG_USEC=200000";
    snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", sock);
    const char *env[] = {env_sock, env_wd, NULL};
    const char *args[] = {"run", state, "--config", cfg, "--forever", NULL};
    pid_t pid = ou_spawn(args, env, outp, errp);

    char log[8192] = "";
    ck_assert_msg(await(fd, "READY=1", log, sizeof(log)), "got: %s", log);
    ck_assert_msg(strstr(log, "WATCHDOG=1") == NULL, "ping before READY");
    ck_assert_msg(await(fd, "WATCHDOG=1", log, sizeof(log)), "got: %s", log);
    ck_assert_msg(await(fd, "WATCHDOG=1", log, sizeof(log)), "got: %s", log);
    ck_assert_msg(strstr(log, "STOPPING=1") == NULL, "stopping too soon");
    kill(pid, SIGTERM);
    ck_assert_msg(await(fd, "STOPPING=1", log, sizeof(log)), "got: %s", log);
    ck_assert_int_eq(ou_wait(pid), 0);
    ck_assert_uint_eq(
        strstr(log, "READY=1") - log < strstr(log, "STOPPING=1") - log, 1);

    close(fd);
    free(config);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
    free(sock);
    free(outp);
    free(errp);
}
END_TEST

START_TEST(test_notify_control_stop_sends_stopping)
{
    char *root = tu_tmpdir("notify-stop");
    char *cfg = tu_path(root, "cluster.json");
    char *state = tu_path(root, "state");
    char *sock = tu_path(root, "notify.sock");
    char *outp = tu_path(root, "out"), *errp = tu_path(root, "err");
    char *config = ou_pingpong_config(5);
    tu_write_file(cfg, config, strlen(config));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    ck_assert(strlen(sock) < sizeof(sun.sun_path));
    strcpy(sun.sun_path, sock);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    struct timeval tv = {0, 100000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char env_sock[4200];
    snprintf(env_sock, sizeof(env_sock), "NOTIFY_SOCKET=%s", sock);
    const char *env[] = {env_sock, NULL};
    const char *args[] = {"run", state, "--config", cfg, "--forever", NULL};
    pid_t pid = ou_spawn(args, env, outp, errp);
    char log[8192] = "";
    ck_assert_msg(await(fd, "READY=1", log, sizeof(log)), "got: %s", log);
    /* READY=1 comes before the socket listens: ask until it answers */
    char *out = NULL, *err = NULL;
    const char *stop[] = {"stop", state, NULL};
    int rc = 1;
    for (int i = 0; i < 2000 && rc != 0; i++) {
        free(out);
        free(err);
        rc = tu_run_keel(stop, &out, &err);
        if (rc != 0) {
            usleep(10000);
        }
    }
    ck_assert_msg(rc == 0, "keel stop: %s", err);
    free(out);
    free(err);
    ck_assert_msg(await(fd, "STOPPING=1", log, sizeof(log)), "got: %s", log);
    ck_assert_int_eq(ou_wait(pid), 0);
    close(fd);
    free(config);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
    free(sock);
    free(outp);
    free(errp);
}
END_TEST

START_TEST(test_notify_without_socket_sends_nothing)
{
    /* no NOTIFY_SOCKET: the run is as before (and nothing crashes on a
     * WATCHDOG_USEC alone) */
    char *root = tu_tmpdir("notify-none");
    char *cfg = tu_path(root, "cluster.json");
    char *state = tu_path(root, "state");
    char *outp = tu_path(root, "out"), *errp = tu_path(root, "err");
    char *config = ou_pingpong_config(5);
    tu_write_file(cfg, config, strlen(config));
    const char *env[] = {"WATCHDOG_USEC=1000", NULL};
    const char *args[] = {"run", state, "--config", cfg, NULL};
    pid_t pid = ou_spawn(args, env, outp, errp);
    ck_assert_int_eq(ou_wait(pid), 0);
    char *out = ou_read_text(outp);
    ck_assert_ptr_nonnull(strstr(out, "cranks: 11\n"));
    free(out);
    free(config);
    tu_rmrf(root);
    free(root);
    free(cfg);
    free(state);
    free(outp);
    free(errp);
}
END_TEST

Suite *notify_suite(void);
Suite *notify_suite(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_notify_ready_watchdog_stopping);
    tcase_add_test(tc, test_notify_without_socket_sends_nothing);
    tcase_add_test(tc, test_notify_control_stop_sends_stopping);
    suite_add_tcase(s, tc);
    return s;
}
