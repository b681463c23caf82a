/* Addresses: one syntax wherever a provider listens, a channel dials and a provider advertises:
 * "1.2.3.4:80", "[::1]:80", "host.name:80", "unix:/path/to.sock", "unix:@name". Every provider
 * here is real and every call crosses a real socket of the kind named. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"
#include "support.h"

#include <sys/stat.h>
#include <sys/un.h>

/* A provider listening on `address` (the full syntax); NULL after recording a failure. */
static mprpc_server *provider_at(mprpc_config *cfg, const char *address)
{
    test_config(cfg);
    CHECK_STATUS(mprpc_config_set(cfg, "rpcserver_address", address), MPRPC_OK);
    return start_provider(cfg, 0);
}

/* One echo call through a new channel dialling `list` (rpcserver_list). */
static mprpc_status call_via(const char *list, mprpc_controller *ctl)
{
    mprpc_config cfg;
    mprpc_channel *ch = NULL;
    testsvc_EchoResponse rs;
    mprpc_status st;
    test_config(&cfg);
    cfg.rpc_timeout_ms = 3000;
    mprpc_controller_init(ctl);
    if (mprpc_config_set(&cfg, "rpcserver_list", list) != MPRPC_OK ||
        mprpc_channel_new(&ch, &cfg) != MPRPC_OK)
        return MPRPC_ERR_CONFIG;
    st = echo_call(ch, "over there", 7, ctl, &rs);
    if (st == MPRPC_OK) CHECK(rs.seq == 7 && rs.payload.size == 10);
    mprpc_channel_free(ch);
    return st;
}

static uint64_t calls_served(mprpc_server *srv)
{
    mprpc_server_stats s;
    mprpc_server_get_stats(srv, &s);
    return s.calls;
}

static void a_provider_on_ipv6_loopback_is_called_over_ipv6(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv;
    char list[64];
    test_config(&cfg);
    CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_ip", "::1"), MPRPC_OK); /* the old key takes IPv6 */
    srv = start_provider(&cfg, 0);
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(list, sizeof list, "[::1]:%d", cfg.rpcserver_port);
    CHECK_STATUS(call_via(list, &ctl), MPRPC_OK);
    snprintf(list, sizeof list, "127.0.0.1:%d", cfg.rpcserver_port); /* ::1 only: IPv4 is refused */
    CHECK_STATUS(call_via(list, &ctl), MPRPC_ERR_CONNECT);
    mprpc_server_free(srv);
}

static void a_provider_on_the_ipv6_wildcard_serves_ipv4_and_ipv6_callers(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv = provider_at(&cfg, "[::]:0");
    char list[64];
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(list, sizeof list, "127.0.0.1:%d", mprpc_server_port(srv));
    CHECK_STATUS(call_via(list, &ctl), MPRPC_OK);
    snprintf(list, sizeof list, "[::1]:%d", mprpc_server_port(srv));
    CHECK_STATUS(call_via(list, &ctl), MPRPC_OK);
    CHECK(calls_served(srv) == 2);
    mprpc_server_free(srv);
}

static void a_provider_on_a_unix_socket_file_is_called_and_removes_the_file(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv;
    char addr[80];
    struct stat st;
    snprintf(addr, sizeof addr, "unix:/tmp/mprpc-test-%d.sock", (int)getpid());
    srv = provider_at(&cfg, addr);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK(mprpc_server_port(srv) == 0); /* no port: a path */
    CHECK(stat(addr + 5, &st) == 0 && S_ISSOCK(st.st_mode));
    CHECK_STATUS(call_via(addr, &ctl), MPRPC_OK);
    mprpc_server_free(srv);
    CHECK(stat(addr + 5, &st) != 0); /* gone with the provider */
}

static void a_socket_file_left_by_a_dead_provider_is_replaced(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv;
    struct sockaddr_un un;
    char addr[80];
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(addr, sizeof addr, "unix:/tmp/mprpc-test-stale-%d.sock", (int)getpid());
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    snprintf(un.sun_path, sizeof un.sun_path, "%s", addr + 5);
    CHECK(bind(fd, (struct sockaddr *)&un, sizeof un) == 0); /* the file stays, nobody listens */
    close(fd);
    srv = provider_at(&cfg, addr);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK_STATUS(call_via(addr, &ctl), MPRPC_OK);
    mprpc_server_free(srv);
}

static void a_provider_on_an_abstract_unix_socket_is_called(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv;
    char addr[80];
    snprintf(addr, sizeof addr, "unix:@mprpc-test-%d", (int)getpid());
    srv = provider_at(&cfg, addr);
    CHECK(srv != NULL);
    if (!srv) return;
    CHECK_STATUS(call_via(addr, &ctl), MPRPC_OK);
    mprpc_server_free(srv);
    CHECK_STATUS(call_via(addr, &ctl), MPRPC_ERR_CONNECT); /* nothing left behind to answer */
}

/* localhost may resolve to ::1 first: the channel then tries 127.0.0.1 next. */
static void a_channel_dials_localhost_by_name(void)
{
    mprpc_config cfg;
    mprpc_controller ctl;
    mprpc_server *srv = provider_at(&cfg, "127.0.0.1:0");
    char list[64];
    CHECK(srv != NULL);
    if (!srv) return;
    snprintf(list, sizeof list, "localhost:%d", mprpc_server_port(srv));
    CHECK_STATUS(call_via(list, &ctl), MPRPC_OK);
    mprpc_server_free(srv);
}

static void an_unresolvable_name_fails_with_a_clear_text(void)
{
    mprpc_controller ctl;
    CHECK_STATUS(call_via("no-such-host.invalid:8000", &ctl), MPRPC_ERR_CONNECT);
    CHECK_CONTAINS(mprpc_controller_error_text(&ctl), "cannot resolve host name 'no-such-host.invalid'");
    CHECK(!mprpc_controller_may_have_run(&ctl));
}

static void rpcserver_list_mixes_every_form(void)
{
    mprpc_config c4, c6, cu;
    mprpc_server *s4 = provider_at(&c4, "127.0.0.1:0"), *s6 = provider_at(&c6, "[::1]:0"), *su;
    mprpc_config cfg;
    mprpc_channel *ch = NULL;
    mprpc_controller ctl;
    testsvc_EchoResponse rs;
    char unix_addr[64], list[256];
    int i;
    snprintf(unix_addr, sizeof unix_addr, "unix:/tmp/mprpc-test-mix-%d.sock", (int)getpid());
    su = provider_at(&cu, unix_addr);
    CHECK(s4 && s6 && su);
    if (!s4 || !s6 || !su) goto out;
    snprintf(list, sizeof list, "127.0.0.1:%d, [::1]:%d,localhost:%d,%s", mprpc_server_port(s4),
             mprpc_server_port(s6), mprpc_server_port(s4), unix_addr);
    test_config(&cfg);
    CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_list", list), MPRPC_OK);
    CHECK_STATUS(mprpc_channel_new(&ch, &cfg), MPRPC_OK);
    for (i = 0; i < 12; i++) { /* round robin: each provider gets its share */
        mprpc_controller_init(&ctl);
        CHECK_STATUS(echo_call(ch, "mix", (uint64_t)i, &ctl, &rs), MPRPC_OK);
    }
    CHECK(calls_served(s4) == 6 && calls_served(s6) == 3 && calls_served(su) == 3);
    mprpc_channel_free(ch);
out:
    mprpc_server_free(s4);
    mprpc_server_free(s6);
    mprpc_server_free(su);
}

static void check_refused(const char *key, const char *value, const char *why)
{
    mprpc_config cfg;
    test_config(&cfg);
    mprpc_config_set(&cfg, key, value);
    CHECK_STATUS(mprpc_config_validate(&cfg), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(cfg.error, key);
    CHECK_CONTAINS(cfg.error, why);
}

static void config_takes_every_form_and_names_what_is_wrong(void)
{
    static const char *const hosts[] = { "::1", "[::1]", "localhost", "rpc-1.example.org", "10.0.0.7" };
    static const char *const addrs[] = { "1.2.3.4:80", "[::1]:80", "host.name:80", "unix:/run/x.sock",
                                         "unix:@name", "[::]:0" };
    mprpc_config cfg;
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(hosts); i++) {
        test_config(&cfg);
        CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_ip", hosts[i]), MPRPC_OK);
        CHECK_STATUS(mprpc_config_set(&cfg, "advertise_ip", hosts[i]), MPRPC_OK);
        CHECK_STATUS(mprpc_config_validate(&cfg), MPRPC_OK);
    }
    for (i = 0; i < MPRPC_COUNTOF(addrs); i++) {
        test_config(&cfg);
        CHECK_STATUS(mprpc_config_set(&cfg, "rpcserver_address", addrs[i]), MPRPC_OK);
        CHECK_STATUS(mprpc_config_set(&cfg, "advertise_address", addrs[i]), MPRPC_OK);
        CHECK_STATUS(mprpc_config_validate(&cfg), MPRPC_OK);
    }
    check_refused("rpcserver_ip", "1.2.3.4:80", "neither an IPv4 nor an IPv6 address nor a host name");
    check_refused("rpcserver_address", "::1:80", "takes brackets");
    check_refused("rpcserver_address", "[::1]:70000", "not a number 0..65535");
    check_refused("rpcserver_address", "unix:relative.sock", "unix:/absolute/path or unix:@name");
    check_refused("advertise_address", "host_without_port", "not host:port");
}

static void check_start_refused(const char *address, const char *why)
{
    mprpc_config cfg;
    mprpc_server *srv = NULL;
    test_config(&cfg);
    mprpc_config_set(&cfg, "rpcserver_address", address);
    mprpc_config_set(&cfg, "zookeeper_ip", "127.0.0.1"); /* refused before ZooKeeper is asked */
    mprpc_config_set(&cfg, "zookeeper_port", "1");
    CHECK_STATUS(mprpc_server_new(&srv, &cfg), MPRPC_OK);
    mprpc_server_add_service(srv, &test_service);
    CHECK_STATUS(mprpc_server_start(srv), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(mprpc_server_error(srv), why);
    mprpc_server_free(srv);
}

static void zookeeper_refuses_addresses_other_hosts_cannot_dial(void)
{
    char addr[80];
    snprintf(addr, sizeof addr, "unix:/tmp/mprpc-test-zk-%d.sock", (int)getpid());
    check_start_refused(addr, "is a unix socket but is no address a caller can use: set advertise_address");
    check_start_refused("[::]:0", "listens everywhere but is no address a caller can use");
    check_start_refused("0.0.0.0:0", "listens everywhere");
}

int main(void)
{
    RUN(a_provider_on_ipv6_loopback_is_called_over_ipv6);
    RUN(a_provider_on_the_ipv6_wildcard_serves_ipv4_and_ipv6_callers);
    RUN(a_provider_on_a_unix_socket_file_is_called_and_removes_the_file);
    RUN(a_socket_file_left_by_a_dead_provider_is_replaced);
    RUN(a_provider_on_an_abstract_unix_socket_is_called);
    RUN(a_channel_dials_localhost_by_name);
    RUN(an_unresolvable_name_fails_with_a_clear_text);
    RUN(rpcserver_list_mixes_every_form);
    RUN(config_takes_every_form_and_names_what_is_wrong);
#ifndef MPRPC_NO_ZOOKEEPER /* the cross builds: a ZooKeeper setting is refused before any address check */
    RUN(zookeeper_refuses_addresses_other_hosts_cannot_dial);
#endif
    return test_summary("test_address");
}
