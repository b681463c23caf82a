/* The seed's example provider in C: UserServiceRpc (Login, Register) and
 * FriendServiceRpc (GetFriendLists), published with mprpc.h through the typed
 * handler tables mprpc_generator.py writes from proto/user.proto.
 *   ./provider -i provider.conf      (stops on SIGINT/SIGTERM) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "user.mprpc.h"    /* mprpc_generator.py: typed handler tables (includes user.pb.h) */

#include <signal.h>
#include <stdio.h>
#include <string.h>

static void set_bytes(pb_byte_t *dst, pb_size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap) n = cap;
    memcpy(dst, s, n);
    *len = (pb_size_t)n;
}

static void login(mprpc_call *call, const fixbug_LoginRequest *rq, fixbug_LoginResponse *rs, void *user)
{
    (void)user;
    rs->has_result = true;
    if (rq->name.size == 0) {
        MPRPC_LOG_INFO("Login refused: empty name");
        rs->result.errcode = 1;
        set_bytes(rs->result.errmsg.bytes, &rs->result.errmsg.size, sizeof rs->result.errmsg.bytes,
                  "name must not be empty");
        rs->success = false;
        return;
    }
    MPRPC_LOG_INFO("Login name=%.*s%s%s", (int)rq->name.size, (const char *)rq->name.bytes,
                   mprpc_call_peer_identity(call)[0] ? " from " : "", mprpc_call_peer_identity(call));
    rs->success = true;
}

static void register_user(mprpc_call *call, const fixbug_RegisterRequest *rq, fixbug_RegisterResponse *rs,
                          void *user)
{
    (void)call; (void)user;
    MPRPC_LOG_INFO("Register id=%u name=%.*s", (unsigned)rq->id, (int)rq->name.size,
                   (const char *)rq->name.bytes);
    rs->has_result = true;
    rs->success = true;
}

static void get_friend_lists(mprpc_call *call, const fixbug_GetFriendListsRequest *rq,
                             fixbug_GetFriendListsResponse *rs, void *user)
{
    static const char *const friends[] = { "gao yang", "liu hong", "wang shuo" };
    size_t i;
    (void)call; (void)user;
    MPRPC_LOG_INFO("GetFriendLists userid=%u", (unsigned)rq->userid);
    rs->has_result = true;
    for (i = 0; i < MPRPC_COUNTOF(friends); i++)
        set_bytes(rs->friends[i].bytes, &rs->friends[i].size, sizeof rs->friends[i].bytes, friends[i]);
    rs->friends_count = (pb_size_t)MPRPC_COUNTOF(friends);
}

/* A handler of the wrong type here is a compile error. */
static const fixbug_UserServiceRpc_handlers user_handlers = { .Login = login, .Register = register_user };
static const fixbug_FriendServiceRpc_handlers friend_handlers = { .GetFriendLists = get_friend_lists };
static fixbug_UserServiceRpc_service user_service;      /* must outlive the server */
static fixbug_FriendServiceRpc_service friend_service;

static mprpc_server *server;

static void on_signal(int sig)
{
    (void)sig;
    mprpc_server_stop(server); /* async-signal-safe */
}

int main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_status st;
    mprpc_config_init(&cfg);
    fixbug_UserServiceRpc_service_init(&user_service, &user_handlers, NULL);
    fixbug_FriendServiceRpc_service_init(&friend_service, &friend_handlers, NULL);
    if (mprpc_config_from_args(&cfg, argc, argv) != MPRPC_OK) {
        fprintf(stderr, "%s\n", cfg.error);
        return 2;
    }
    if (mprpc_logger_start(&cfg) != MPRPC_OK) {
        fprintf(stderr, "logger: %s\n", cfg.error);
        return 1;
    }
    if (mprpc_server_new(&server, &cfg) != MPRPC_OK ||
        mprpc_server_add_service(server, &user_service.service) != MPRPC_OK ||
        mprpc_server_add_service(server, &friend_service.service) != MPRPC_OK ||
        mprpc_server_start(server) != MPRPC_OK) {
        fprintf(stderr, "provider: %s\n", server ? mprpc_server_error(server) : "out of memory");
        mprpc_server_free(server);
        mprpc_logger_stop();
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("provider listening on %s\n", mprpc_server_address(server));
    fflush(stdout);
    st = mprpc_server_run(server);
    mprpc_server_free(server);
    mprpc_logger_stop();
    printf("provider stopped\n");
    return st == MPRPC_OK ? 0 : 1;
}
