/* The seed's example caller in C: calls Login, Register and GetFriendLists
 * through the typed stubs mprpc_generator.py writes from proto/user.proto.
 *   ./caller -i caller.conf          (exit status 0 only if every call worked) */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "user.mprpc.h"    /* mprpc_generator.py: typed calls (includes user.pb.h) */

#include <stdio.h>
#include <string.h>

static void set_bytes(pb_byte_t *dst, pb_size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap) n = cap;
    memcpy(dst, s, n);
    *len = (pb_size_t)n;
}

static int report(const char *what, const mprpc_controller *ctl)
{
    if (!mprpc_controller_failed(ctl)) return 1;
    printf("%s failed: %s (%s)\n", what, mprpc_controller_error_text(ctl),
           mprpc_status_name(ctl->status));
    return 0;
}

int main(int argc, char **argv)
{
    mprpc_config cfg;
    mprpc_channel *ch;
    mprpc_controller ctl;
    fixbug_LoginRequest login_rq = fixbug_LoginRequest_init_zero;
    fixbug_LoginResponse login_rs = fixbug_LoginResponse_init_zero;
    fixbug_RegisterRequest reg_rq = fixbug_RegisterRequest_init_zero;
    fixbug_RegisterResponse reg_rs = fixbug_RegisterResponse_init_zero;
    fixbug_GetFriendListsRequest fr_rq = fixbug_GetFriendListsRequest_init_zero;
    fixbug_GetFriendListsResponse fr_rs = fixbug_GetFriendListsResponse_init_zero;
    int ok = 1;
    pb_size_t i;

    mprpc_config_init(&cfg);
    if (mprpc_config_from_args(&cfg, argc, argv) != MPRPC_OK) {
        fprintf(stderr, "%s\n", cfg.error);
        return 2;
    }
    if (mprpc_channel_new(&ch, &cfg) != MPRPC_OK) return 1;
    mprpc_controller_init(&ctl);

    set_bytes(login_rq.name.bytes, &login_rq.name.size, sizeof login_rq.name.bytes, "zhang san");
    set_bytes(login_rq.pwd.bytes, &login_rq.pwd.size, sizeof login_rq.pwd.bytes, "123456");
    fixbug_UserServiceRpc_Login(ch, &login_rq, &login_rs, &ctl);
    if ((ok &= report("Login", &ctl)))
        printf("Login: errcode=%d success=%s\n", (int)login_rs.result.errcode,
               login_rs.success ? "true" : "false");

    login_rq.name.size = 0; /* an empty name: the provider answers errcode 1 */
    fixbug_UserServiceRpc_Login(ch, &login_rq, &login_rs, &ctl);
    if ((ok &= report("Login (empty name)", &ctl)))
        printf("Login (empty name): errcode=%d errmsg=%.*s success=%s\n", (int)login_rs.result.errcode,
               (int)login_rs.result.errmsg.size, (const char *)login_rs.result.errmsg.bytes,
               login_rs.success ? "true" : "false");

    reg_rq.id = 2000;
    set_bytes(reg_rq.name.bytes, &reg_rq.name.size, sizeof reg_rq.name.bytes, "mprpc");
    set_bytes(reg_rq.pwd.bytes, &reg_rq.pwd.size, sizeof reg_rq.pwd.bytes, "666666");
    fixbug_UserServiceRpc_Register(ch, &reg_rq, &reg_rs, &ctl);
    if ((ok &= report("Register", &ctl)))
        printf("Register: errcode=%d success=%s\n", (int)reg_rs.result.errcode,
               reg_rs.success ? "true" : "false");

    fr_rq.userid = 1000;
    fixbug_FriendServiceRpc_GetFriendLists(ch, &fr_rq, &fr_rs, &ctl);
    if ((ok &= report("GetFriendLists", &ctl))) {
        printf("GetFriendLists: %u friends:", (unsigned)fr_rs.friends_count);
        for (i = 0; i < fr_rs.friends_count; i++)
            printf(" [%.*s]", (int)fr_rs.friends[i].size, (const char *)fr_rs.friends[i].bytes);
        printf("\n");
    }
    mprpc_channel_free(ch);
    return ok && login_rs.result.errcode == 1 && fr_rs.friends_count > 0 ? 0 : 1;
}
