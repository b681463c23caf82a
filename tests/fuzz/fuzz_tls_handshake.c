/* Fuzz target: a TLS provider's handshake input (built with MPRPC_TLS). Arbitrary bytes from a
 * client that has not finished a handshake go through exactly the code the event loop runs for such
 * a connection (mprpc__accept_tls, then mprpc__conn_on_event: OpenSSL's record layer and ClientHello
 * parsing under the provider's mutual-TLS context, mprpc__conn_tls_failed, lingering, EOF), split at
 * arbitrary points, over a socketpair whose other end the harness drains like a client would.
 * Certificates come from scripts/tls-certs.sh at the first input (run from the repository root).
 *
 * Input: byte 0 seeds the split points (its low bit: the client then stays silent past the handshake
 * deadline before its EOF), the rest is what the client sends.
 *
 * Invariants checked (abort() = a finding): no bytes alone complete a handshake (the provider's
 * random makes a valid Finished unforgeable; tickets and PSKs are off), so the connection never
 * serves; after the client's EOF the connection is closed within a few events, never left waiting;
 * at the handshake deadline, one that still waits is closed; nothing is leaked or left in the loop. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support.h"
#include "tls_support.h"
#include "fuzz_loop.h"

#include <sys/epoll.h>
#include <sys/socket.h>

static mprpc_server *srv;
static mprpc__loop *loop;

static void fz_init(void)
{
    mprpc_config cfg;
    char why[256];
    mprpc_config_init(&cfg);
    cfg.log_level = MPRPC_LOG_LEVEL_OFF;
    if (!tls_certs_make()) abort();
    atexit(tls_certs_remove);
    tls_mutual_config(&cfg);
    if (mprpc_server_new(&srv, &cfg) != MPRPC_OK || mprpc_server_add_service(srv, &test_service) != MPRPC_OK ||
        mprpc__routes_build(srv) != MPRPC_OK || (srv->tls = mprpc__tls_io->ctx_new(&srv->cfg, 1, why, sizeof why)) == NULL)
        abort();
    loop = fz_loop_new(srv);
}

/* The event the loop would see next for c. */
static void fz_event(mprpc__conn *c, int peer)
{
    fz_drain_peer(peer);
    if (c->state != MPRPC__CONN_CLOSED) mprpc__conn_on_event(c, c->handshaking ? c->hs_want : EPOLLIN);
    if (c->state != MPRPC__CONN_CLOSED && !c->handshaking && c->state != MPRPC__CONN_LINGERING) {
        fprintf(stderr, "a handshake completed from the client's bytes alone\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2], i;
    mprpc__conn *c;
    size_t off = 1;
    if (!srv) fz_init();
    if (size < 1) return 0;
    c = fz_conn_new(loop, 1, data[0], sv);
    while (c->state != MPRPC__CONN_CLOSED && off < size) {
        uint32_t r = fz_next();
        size_t want = (r >> 8) % 4 == 0 ? 1 : (r >> 8) % 4 == 1 ? size - off : 1 + (r >> 12) % 300;
        ssize_t k = send(sv[1], data + off, size - off < want ? size - off : want, MSG_NOSIGNAL);
        if (k <= 0) break; /* the provider shut its side: the rest would be discarded */
        off += (size_t)k;
        fz_event(c, sv[1]);
    }
    if ((data[0] & 1) && c->state != MPRPC__CONN_CLOSED) { /* silence until tls_handshake_timeout_ms */
        c->hs_deadline_ms = 0;
        mprpc__loop_sweep(loop, mprpc__now_ms());
        if (c->state != MPRPC__CONN_CLOSED && c->handshaking) {
            fprintf(stderr, "connection still handshaking past its deadline\n");
            abort();
        }
    }
    shutdown(sv[1], SHUT_WR);
    for (i = 0; i < 4 && c->state != MPRPC__CONN_CLOSED; i++) fz_event(c, sv[1]);
    if (c->state != MPRPC__CONN_CLOSED) {
        fprintf(stderr, "connection stalled: still open after the client's EOF\n");
        abort();
    }
    mprpc__conn_free_dead(loop);
    if (loop->dead || loop->conns || loop->deferred) abort();
    close(sv[1]);
    return 0;
}
