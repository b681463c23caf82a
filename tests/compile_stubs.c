/* The generated stubs compile as C11 and C++ with the project's -Werror flags
 * (tests/run.sh), and misuse does not: with -DWRONG_CALL a stub call gets the
 * wrong request type, with -DWRONG_HANDLER a handler table gets a handler of the
 * wrong type; run.sh expects both of those builds to fail and this plain one to
 * pass, so the check could fail either way. Declarations only: never run. */
#include "user.mprpc.h"
#include "testsvc.mprpc.h"

static void login(mprpc_call *call, const fixbug_LoginRequest *rq, fixbug_LoginResponse *rs, void *user)
{
    (void)call; (void)user;
    rs->success = rq->name.size > 0;
}

#ifdef WRONG_HANDLER
/* Register's types, put where Login's belong. */
static void not_login(mprpc_call *call, const fixbug_RegisterRequest *rq, fixbug_RegisterResponse *rs,
                      void *user)
{
    (void)call; (void)rq; (void)rs; (void)user;
}
#endif

static void echo(mprpc_call *call, const testsvc_EchoRequest *rq, testsvc_EchoResponse *rs, void *user)
{
    (void)call; (void)user;
    rs->seq = rq->seq;
}

static void big_prepare(mprpc_call *call, testsvc_BigRequest *rq, testsvc_BigResponse *rs, void *user)
{
    (void)call; (void)user;
    rq->data.funcs.decode = mprpc_bytes_decode;
    rs->data.funcs.encode = mprpc_bytes_encode;
}

static void done(mprpc_controller *ctl, void *response, void *user)
{
    (void)ctl; (void)response; (void)user;
}

mprpc_status stubs_provider(mprpc_server *srv);
mprpc_status stubs_provider(mprpc_server *srv)
{
    static fixbug_UserServiceRpc_service user_svc;
    static testsvc_TestService_service test_svc;
    fixbug_UserServiceRpc_handlers uh;
    testsvc_TestService_handlers th;
    memset(&uh, 0, sizeof uh);
    memset(&th, 0, sizeof th);
#ifdef WRONG_HANDLER
    uh.Login = not_login;
    (void)login;
#else
    uh.Login = login;
#endif
    th.Echo = echo;
    th.Big_prepare = big_prepare;
    if (fixbug_UserServiceRpc_service_init(&user_svc, &uh, NULL) != MPRPC_OK) return MPRPC_ERR_INVALID_ARGUMENT;
    if (testsvc_TestService_service_init(&test_svc, &th, srv) != MPRPC_OK) return MPRPC_ERR_INVALID_ARGUMENT;
    if (mprpc_server_add_service(srv, &user_svc.service) != MPRPC_OK) return MPRPC_ERR_INVALID_ARGUMENT;
    return mprpc_server_add_service(srv, &test_svc.service);
}

mprpc_status stubs_caller(mprpc_channel *ch);
mprpc_status stubs_caller(mprpc_channel *ch)
{
    static fixbug_LoginResponse async_rs;
    static mprpc_controller async_ctl;
    fixbug_LoginRequest rq = fixbug_LoginRequest_init_zero;
    fixbug_LoginResponse rs = fixbug_LoginResponse_init_zero;
    fixbug_RegisterRequest reg = fixbug_RegisterRequest_init_zero;
    mprpc_controller ctl;
    mprpc_controller_init(&ctl);
    (void)reg;
#ifdef WRONG_CALL
    fixbug_UserServiceRpc_Login(ch, &reg, &rs, &ctl);      /* a RegisterRequest sent to Login */
#else
    fixbug_UserServiceRpc_Login(ch, &rq, &rs, &ctl);
#endif
    return fixbug_UserServiceRpc_Login_async(ch, &rq, &async_rs, &async_ctl, done, NULL);
}
