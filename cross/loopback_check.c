/* cross/loopback_check.c: do the Linux facilities an epoll-based RPC server and client need work under
 * qemu-user? Built for every cross target; cross/loopback.sh runs a server of one target and a client of
 * another (two separate processes, each under its own qemu when needed) over 127.0.0.1 and checks every pair.
 *
 *   loopback_check server PORTFILE   listen on 127.0.0.1:0, write the port to PORTFILE, serve one client
 *   loopback_check client PORTFILE   connect, send requests, check the replies
 *   loopback_check local             syscall checks with no peer: eventfd/timerfd/signalfd/pipe2 across threads
 *
 * Covers: socket(SOCK_NONBLOCK|SOCK_CLOEXEC), setsockopt (SO_REUSEADDR, TCP_NODELAY, SO_KEEPALIVE, SO_RCVBUF),
 * bind/listen/getsockname/getpeername, accept4, non-blocking connect + SO_ERROR, epoll_create1/epoll_ctl/
 * epoll_wait/epoll_pwait (EPOLLET, data.u64 round trip), eventfd (counter value across the endianness
 * boundary), timerfd, signalfd, pipe2, writev/readv, send/recv with MSG_NOSIGNAL, shutdown, getaddrinfo of
 * "localhost", pthreads (a second thread wakes the loop through the eventfd), clock_gettime(CLOCK_MONOTONIC).
 * Each failure prints the call and errno; exit status 0 only when everything worked. The wire format is a 4-byte
 * big-endian length, then the payload; the server replies with the payload reversed followed by its length as a
 * 4-byte big-endian number, so byte-order mistakes between a little- and a big-endian peer show up. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, what)                                                                            \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "FAIL %s: %s (errno %d: %s) at line %d\n", role, what, errno,            \
                    strerror(errno), __LINE__);                                                      \
            failures++;                                                                              \
        }                                                                                            \
    } while (0)
#define REQUIRE(cond, what)                                                                          \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            CHECK(0, what);                                                                          \
            return 1;                                                                                \
        }                                                                                            \
    } while (0)

static const char *role = "?";

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads exactly n bytes from a non-blocking fd, waiting on the epoll set for readiness. */
static int read_full(int ep, int fd, uint8_t *buf, size_t n) {
    size_t got = 0;
    int64_t deadline = now_ms() + 10000;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r > 0) { got += (size_t)r; continue; }
        if (r == 0) return -1;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        struct epoll_event ev;
        if (now_ms() > deadline) { errno = ETIMEDOUT; return -1; }
        if (epoll_wait(ep, &ev, 1, 1000) < 0 && errno != EINTR) return -1;
    }
    return 0;
}

static int write_full(int ep, int fd, const uint8_t *buf, size_t n) {
    size_t put = 0;
    int64_t deadline = now_ms() + 10000;
    while (put < n) {
        ssize_t w = send(fd, buf + put, n - put, MSG_NOSIGNAL);
        if (w > 0) { put += (size_t)w; continue; }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        struct epoll_event ev;
        if (now_ms() > deadline) { errno = ETIMEDOUT; return -1; }
        if (epoll_wait(ep, &ev, 1, 1000) < 0 && errno != EINTR) return -1;
    }
    return 0;
}

struct waker { int efd; uint64_t value; };
static void *waker_main(void *arg) {
    struct waker *w = arg;
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, NULL);
    if (write(w->efd, &w->value, sizeof w->value) != (ssize_t)sizeof w->value) perror("waker write");
    return NULL;
}

/* eventfd/timerfd/signalfd/pipe2/epoll_pwait, threads: no peer needed. */
static int local_checks(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0, "epoll_create1(EPOLL_CLOEXEC)");

    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    REQUIRE(efd >= 0, "eventfd(EFD_NONBLOCK|EFD_CLOEXEC)");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = UINT64_C(0x1122334455667788)};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0, "epoll_ctl(ADD eventfd, EPOLLET)");
    struct waker w = {efd, UINT64_C(0x0000000100000002)};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, waker_main, &w) == 0, "pthread_create");
    struct epoll_event out[4];
    sigset_t none;
    sigemptyset(&none);
    int n = epoll_pwait(ep, out, 4, 5000, &none);
    CHECK(n == 1, "epoll_pwait woken by eventfd written from another thread");
    CHECK(n != 1 || out[0].data.u64 == UINT64_C(0x1122334455667788), "epoll data.u64 round trip");
    uint64_t v = 0;
    CHECK(read(efd, &v, sizeof v) == (ssize_t)sizeof v, "read(eventfd)");
    CHECK(v == UINT64_C(0x0000000100000002), "eventfd counter value (byte order of the 8-byte counter)");
    CHECK(read(efd, &v, sizeof v) < 0 && errno == EAGAIN, "read(empty nonblocking eventfd) gives EAGAIN");
    pthread_join(th, NULL);

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    CHECK(tfd >= 0, "timerfd_create");
    if (tfd >= 0) {
        struct itimerspec its = {.it_value = {0, 20 * 1000 * 1000}};
        CHECK(timerfd_settime(tfd, 0, &its, NULL) == 0, "timerfd_settime");
        ev.events = EPOLLIN; ev.data.fd = tfd;
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == 0, "epoll_ctl(ADD timerfd)");
        n = epoll_wait(ep, out, 4, 5000);
        CHECK(n == 1 && out[0].data.fd == tfd, "epoll_wait woken by timerfd");
        v = 0;
        CHECK(read(tfd, &v, sizeof v) == (ssize_t)sizeof v && v == 1, "read(timerfd) expirations == 1");
        close(tfd);
    }

    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGUSR1);
    CHECK(pthread_sigmask(SIG_BLOCK, &ss, NULL) == 0, "pthread_sigmask");
    int sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    CHECK(sfd >= 0, "signalfd");
    if (sfd >= 0) {
        CHECK(raise(SIGUSR1) == 0, "raise(SIGUSR1)");
        struct signalfd_siginfo si;
        CHECK(read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo == SIGUSR1, "read(signalfd)");
        close(sfd);
    }

    int p[2];
    CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2(O_NONBLOCK|O_CLOEXEC)");
    CHECK(signal(SIGPIPE, SIG_IGN) != SIG_ERR, "signal(SIGPIPE, SIG_IGN)");

    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo("localhost", "7", &hints, &ai);
    CHECK(g == 0, "getaddrinfo(\"localhost\")");
    if (g != 0) fprintf(stderr, "  getaddrinfo: %s\n", gai_strerror(g));
    if (ai) freeaddrinfo(ai);

    close(efd);
    close(ep);
    return 0;
}

static int serve(const char *portfile) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(ls >= 0, "socket(SOCK_NONBLOCK|SOCK_CLOEXEC)");
    int one = 1;
    CHECK(setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "setsockopt(SO_REUSEADDR)");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(bind(ls, (struct sockaddr *)&a, sizeof a) == 0, "bind(127.0.0.1:0)");
    REQUIRE(listen(ls, 16) == 0, "listen");
    socklen_t al = sizeof a;
    REQUIRE(getsockname(ls, (struct sockaddr *)&a, &al) == 0, "getsockname");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0, "epoll_create1");
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    REQUIRE(efd >= 0, "eventfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) == 0, "epoll_ctl(ADD listener)");
    ev.data.u64 = 2;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0, "epoll_ctl(ADD eventfd)");

    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
    FILE *f = fopen(tmp, "w");
    REQUIRE(f != NULL, "fopen(portfile)");
    fprintf(f, "%u\n", (unsigned)ntohs(a.sin_port));
    fclose(f);
    REQUIRE(rename(tmp, portfile) == 0, "rename(portfile)");

    /* wait for the client on the epoll set (level-triggered) */
    int cs = -1;
    int64_t deadline = now_ms() + 20000;
    while (cs < 0 && now_ms() < deadline) {
        struct epoll_event out[2];
        int n = epoll_wait(ep, out, 2, 1000);
        if (n < 0 && errno == EINTR) continue;
        REQUIRE(n >= 0, "epoll_wait(listener)");
        for (int i = 0; i < n; i++)
            if (out[i].data.u64 == 1) {
                struct sockaddr_in peer;
                socklen_t pl = sizeof peer;
                cs = accept4(ls, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                REQUIRE(cs >= 0 || errno == EAGAIN, "accept4(SOCK_NONBLOCK|SOCK_CLOEXEC)");
                if (cs >= 0) CHECK(peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "peer address 127.0.0.1");
            }
    }
    REQUIRE(cs >= 0, "a client connected within 20 s");
    CHECK(setsockopt(cs, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "setsockopt(TCP_NODELAY)");
    CHECK(setsockopt(cs, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0, "setsockopt(SO_KEEPALIVE)");
    int fl = fcntl(cs, F_GETFL);
    CHECK(fl >= 0 && (fl & O_NONBLOCK), "accept4 gave a non-blocking socket");
    int cl = fcntl(cs, F_GETFD);
    CHECK(cl >= 0 && (cl & FD_CLOEXEC), "accept4 gave a close-on-exec socket");
    struct sockaddr_in pa;
    socklen_t pal = sizeof pa;
    CHECK(getpeername(cs, (struct sockaddr *)&pa, &pal) == 0, "getpeername");
    int cep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(cep >= 0, "epoll_create1(conn)");
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.fd = cs;
    REQUIRE(epoll_ctl(cep, EPOLL_CTL_ADD, cs, &ev) == 0, "epoll_ctl(ADD conn, EPOLLET|EPOLLRDHUP)");

    /* serve requests until the client closes: each is [be32 len][payload] */
    static uint8_t req[1 << 20], rep[(1 << 20) + 4];
    int served = 0;
    for (;;) {
        uint8_t hdr[4];
        if (read_full(cep, cs, hdr, 4) != 0) break;
        uint32_t len = get_be32(hdr);
        REQUIRE(len <= sizeof req, "request length in range");
        REQUIRE(read_full(cep, cs, req, len) == 0, "read request payload");
        for (uint32_t i = 0; i < len; i++) rep[i] = req[len - 1 - i];
        put_be32(rep + len, len);
        uint8_t rh[4];
        put_be32(rh, len + 4);
        struct iovec iov[2] = {{rh, 4}, {rep, len + 4}};
        ssize_t w = writev(cs, iov, 2);     /* first part via writev, rest through the loop */
        REQUIRE(w >= 0 || errno == EAGAIN, "writev(reply)");
        if (w < 0) w = 0;
        size_t total = (size_t)len + 8, done = (size_t)w;
        if (done < 4) {
            REQUIRE(write_full(cep, cs, rh + done, 4 - done) == 0, "send(reply header)");
            done = 4;
        }
        REQUIRE(write_full(cep, cs, rep + (done - 4), total - done) == 0, "send(reply)");
        served++;
    }
    /* tell ourselves through the eventfd, as a loop thread would be told to stop */
    uint64_t one64 = 1;
    CHECK(write(efd, &one64, sizeof one64) == 8, "write(eventfd)");
    struct epoll_event out[2];
    int n = epoll_wait(ep, out, 2, 1000);
    CHECK(n >= 1, "epoll_wait woken by eventfd");
    CHECK(served == 3, "served 3 requests");
    close(cs); close(cep); close(ls); close(efd); close(ep);
    return 0;
}

static int client(const char *portfile) {
    unsigned port = 0;
    int64_t deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int ok = fscanf(f, "%u", &port) == 1;
            fclose(f);
            if (ok && port) break;
        }
        struct timespec d = {0, 20 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    REQUIRE(port != 0, "read the server's port within 20 s");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0, "socket");
    int big = 1 << 16;
    CHECK(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big) == 0, "setsockopt(SO_RCVBUF)");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    REQUIRE(r == 0 || errno == EINPROGRESS, "connect(non-blocking) returns 0 or EINPROGRESS");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0, "epoll_create1");
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLET, .data.fd = s};
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0, "epoll_ctl(ADD socket)");
    struct epoll_event out;
    REQUIRE(epoll_wait(ep, &out, 1, 10000) == 1 && (out.events & EPOLLOUT), "epoll_wait(EPOLLOUT) after connect");
    int err = -1;
    socklen_t el = sizeof err;
    REQUIRE(getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "getsockopt(SO_ERROR) == 0");

    static uint8_t msg[1 << 20], rep[(1 << 20) + 8];
    const size_t sizes[3] = {0, 5, 1 << 20};   /* empty, small, 1 MiB (several partial reads/writes) */
    for (int k = 0; k < 3; k++) {
        size_t len = sizes[k];
        for (size_t i = 0; i < len; i++) msg[i] = (uint8_t)(i * 7 + (size_t)k);
        uint8_t hdr[4];
        put_be32(hdr, (uint32_t)len);
        REQUIRE(write_full(ep, s, hdr, 4) == 0, "send(request header)");
        REQUIRE(write_full(ep, s, msg, len) == 0, "send(request)");
        REQUIRE(read_full(ep, s, hdr, 4) == 0, "recv(reply header)");
        uint32_t rl = get_be32(hdr);
        REQUIRE(rl == len + 4, "reply length == request length + 4");
        REQUIRE(read_full(ep, s, rep, rl) == 0, "recv(reply)");
        int same = 1;
        for (size_t i = 0; i < len; i++) same &= rep[i] == msg[len - 1 - i];
        CHECK(same, "reply payload is the request reversed");
        CHECK(get_be32(rep + len) == len, "reply trailer is the request length (big-endian)");
    }
    CHECK(shutdown(s, SHUT_WR) == 0, "shutdown(SHUT_WR)");
    uint8_t b;
    int64_t end = now_ms() + 10000;
    ssize_t rr;
    while ((rr = recv(s, &b, 1, 0)) < 0 && errno == EAGAIN && now_ms() < end) epoll_wait(ep, &out, 1, 500);
    CHECK(rr == 0, "server closed after our shutdown (recv == 0)");
    close(s);
    close(ep);
    return 0;
}

int main(int argc, char **argv) {
    int rc;
    if (argc == 3 && strcmp(argv[1], "server") == 0) { role = "server"; rc = serve(argv[2]); }
    else if (argc == 3 && strcmp(argv[1], "client") == 0) { role = "client"; rc = client(argv[2]); }
    else if (argc == 2 && strcmp(argv[1], "local") == 0) { role = "local"; rc = local_checks(); }
    else {
        fprintf(stderr, "usage: %s server PORTFILE | client PORTFILE | local\n", argv[0]);
        return 2;
    }
    if (rc == 0 && failures == 0) printf("%s ok\n", role);
    return rc != 0 || failures != 0;
}
