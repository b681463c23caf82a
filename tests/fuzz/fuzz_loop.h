/* What the provider-side fuzz targets share: one event loop of a server that never starts (its
 * connections are driven by hand, over socketpairs), the split-point generator, and draining the
 * peer's end like a client reading replies. Include after mprpc.h (with MPRPC_IMPLEMENTATION). */
#ifndef MPRPC_FUZZ_LOOP_H
#define MPRPC_FUZZ_LOOP_H

#include <stdlib.h>
#include <sys/socket.h>

/* srv's only loop, index 1 (no listener); srv must have its routes built. abort()s on failure. */
static mprpc__loop *fz_loop_new(mprpc_server *srv)
{
    mprpc__loop *loop = (mprpc__loop *)calloc(1, sizeof *loop);
    if (!loop || mprpc__loop_init(srv, loop, 1) != MPRPC_OK) abort();
    srv->loops = loop;
    srv->nloops = 1;
    return loop;
}

static uint32_t rng; /* the split points: seeded from the input by fz_conn_new */
static uint32_t fz_next(void)
{
    rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
    return rng;
}

/* A connection on loop over a fresh socketpair (the provider may shut its write side), as accepted
 * (with its TLS session, handshake pending, when tls); sv[1] is the peer's end. Seeds rng. */
static mprpc__conn *fz_conn_new(mprpc__loop *loop, int tls, uint8_t seed, int sv[2])
{
    mprpc__conn *c = (mprpc__conn *)calloc(1, sizeof *c);
    rng = 0x9e3779b9u ^ ((uint32_t)seed * 2654435761u);
    if (!c || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) abort();
    c->fd = sv[0]; /* the connection closes it */
    c->counted_open = 1;
    MPRPC__ADD(&loop->srv->open_conns, 1);
    if (tls && !mprpc__accept_tls(loop->srv, c)) abort();
    mprpc__conn_attach(loop, c);
    return c;
}

static void fz_drain_peer(int peer)
{
    uint8_t sink[65536];
    while (recv(peer, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
}

#endif
