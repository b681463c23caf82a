/* raw_echo_server.c - the "physical limit" baseline for the benchmarks.
 *
 * Frames are a 4-byte little-endian length followed by that many bytes;
 * every complete frame is echoed back unchanged.  The main thread accepts
 * (blocking) and hands connections round-robin to N event-loop threads by
 * adding them to that thread's epoll set; afterwards only that thread
 * touches the connection.  Level-triggered: a connection waits for EPOLLIN
 * while it has no pending output and for EPOLLOUT (only) while it has, so
 * memory per connection stays bounded.  Complete frames are written
 * straight from the input buffer.
 *
 *   raw_echo_server [-p PORT] [-t THREADS]    (PORT 0 = ephemeral)
 *
 * Prints "PORT <n>" once listening; runs until SIGINT/SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (64u << 20)
#define READ_CHUNK 65536u
#define MAX_EVENTS 256

typedef struct conn {
    int fd;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
} conn;

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_close(conn *c)
{
    close(c->fd);   /* also removes it from the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    size_t n = *cap ? *cap : READ_CHUNK;
    uint8_t *p;
    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    p = (uint8_t *)realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int set_events(int ep, conn *c, uint32_t ev)
{
    struct epoll_event e;
    e.events = ev;
    e.data.ptr = c;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes pending output.  Returns -1 on error, else 0. */
static int flush_out(int ep, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return set_events(ep, c, EPOLLIN | EPOLLRDHUP);
}

/* Reads once, echoes every complete frame.  Returns -1 to close. */
static int on_readable(int ep, conn *c)
{
    size_t pos = 0, sent = 0;
    ssize_t n;

    if (reserve(&c->in, &c->in_cap, c->in_len + READ_CHUNK) < 0)
        return -1;
    n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n <= 0)
        return (n < 0 && (errno == EAGAIN || errno == EINTR)) ? 0 : -1;
    c->in_len += (size_t)n;

    while (c->in_len - pos >= 4) {
        const uint8_t *h = c->in + pos;
        uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                       (uint32_t)h[3] << 24;
        if (len > MAX_FRAME)
            return -1;
        if (c->in_len - pos - 4 < len)
            break;
        pos += 4 + (size_t)len;
    }
    if (pos == 0)
        return 0;

    /* No output is pending here (we only listen for EPOLLIN then). */
    while (sent < pos) {
        n = send(c->fd, c->in + sent, pos - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        sent += (size_t)n;
    }
    if (sent < pos) {
        if (reserve(&c->out, &c->out_cap, pos - sent) < 0)
            return -1;
        memcpy(c->out, c->in + sent, pos - sent);
        c->out_off = 0;
        c->out_len = pos - sent;
        if (set_events(ep, c, EPOLLOUT) < 0)
            return -1;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return 0;
}

static void *loop_main(void *arg)
{
    int ep = (int)(intptr_t)arg;
    struct epoll_event ev[MAX_EVENTS];

    for (;;) {
        int i, n = epoll_wait(ep, ev, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (i = 0; i < n; i++) {
            conn *c = (conn *)ev[i].data.ptr;
            int rc = 0;
            if (ev[i].events & EPOLLOUT)
                rc = flush_out(ep, c);
            else if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
                rc = on_readable(ep, c);
            if (rc < 0)
                conn_close(c);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int port = 0, nthreads = 2, opt, lfd, one = 1, i, next = 0;
    int *eps;
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    struct sigaction sa;
    sigset_t all, old;

    while ((opt = getopt(argc, argv, "p:t:h")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 't': nthreads = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-p PORT] [-t THREADS]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (port < 0 || port > 65535 || nthreads < 1 || nthreads > 1024) {
        fprintf(stderr, "%s: bad -p or -t\n", argv[0]);
        return 2;
    }

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 1024) < 0)
        die("listen");
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("getsockname");

    /* Loop threads must not take the signals: block them while spawning. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    eps = (int *)calloc((size_t)nthreads, sizeof *eps);
    if (!eps)
        die("calloc");
    for (i = 0; i < nthreads; i++) {
        pthread_t th;
        eps[i] = epoll_create1(EPOLL_CLOEXEC);
        if (eps[i] < 0)
            die("epoll_create1");
        if (pthread_create(&th, NULL, loop_main, (void *)(intptr_t)eps[i]) != 0)
            die("pthread_create");
        pthread_detach(th);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;      /* no SA_RESTART: accept() returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    while (!stop_flag) {
        struct epoll_event e;
        conn *c;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            die("accept4");
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = (conn *)calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        e.events = EPOLLIN | EPOLLRDHUP;
        e.data.ptr = c;
        if (epoll_ctl(eps[next], EPOLL_CTL_ADD, fd, &e) < 0) {
            conn_close(c);
            continue;
        }
        next = (next + 1) % nthreads;
    }
    return 0;
}
