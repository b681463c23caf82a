/* Config: the seed's MprpcApplication. key=value files, seed key spellings,
 * errors that name file, line and key, nothing half-applied, and -i. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"

#include <unistd.h>

static char path[256];

static const char *write_file(const char *text)
{
    FILE *f;
    snprintf(path, sizeof path, "/tmp/mprpc-test-config-%d.conf", (int)getpid());
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void defaults_are_documented_values(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK(strcmp(c.rpcserver_ip, "127.0.0.1") == 0);
    CHECK(c.rpcserver_port == 8000);
    CHECK(c.io_threads == 2);
    CHECK(c.rpc_timeout_ms == 5000);
    CHECK(c.connect_timeout_ms == 2000);
    CHECK(c.max_message_size == 4u * 1024 * 1024);
    CHECK(c.zookeeper_port == 2181);
    CHECK(c.zookeeper_ip[0] == '\0');
    CHECK(strcmp(c.zookeeper_root, "/mprpc") == 0);
    CHECK(c.log_level == MPRPC_LOG_LEVEL_INFO);
    CHECK(mprpc_config_validate(&c) == MPRPC_OK);
}

static void file_with_comments_blanks_and_spaces_loads(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, write_file(
        "# provider\n"
        "\n"
        "   rpcserver_ip   =   10.0.0.7  \n"
        "rpcserver_port=9001\r\n"
        "\t# indented comment\n"
        "io_threads = 4\n"
        "max_message_size = 65536\n"
        "log_level = warn\n"
        "log_stderr = yes\n"
        "zookeeper_seed_layout = true\n"
        "zookeeper_root = /services\n")), MPRPC_OK);
    CHECK(strcmp(c.rpcserver_ip, "10.0.0.7") == 0);
    CHECK(c.rpcserver_port == 9001);
    CHECK(c.io_threads == 4);
    CHECK(c.max_message_size == 65536);
    CHECK(c.log_level == MPRPC_LOG_LEVEL_WARN);
    CHECK(c.log_stderr == 1);
    CHECK(c.zookeeper_seed_layout == 1);
    CHECK(strcmp(c.zookeeper_root, "/services") == 0);
    CHECK(c.error[0] == '\0');
}

static void seed_spellings_are_accepted(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
#ifdef MPRPC_NO_ZOOKEEPER /* the keys are known, but a build without ZooKeeper refuses to use one */
    CHECK_STATUS(mprpc_config_load(&c, write_file(
        "rpcserverip=127.0.0.2\nrpcserverport=7000\nzookeeperport=2182\n")), MPRPC_OK);
    CHECK(c.zookeeper_port == 2182);
    CHECK_STATUS(mprpc_config_load(&c, write_file("zookeeperip=127.0.0.3\n")), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "MPRPC_NO_ZOOKEEPER");
#else
    CHECK_STATUS(mprpc_config_load(&c, write_file(
        "rpcserverip=127.0.0.2\nrpcserverport=7000\nzookeeperip=127.0.0.3\nzookeeperport=2182\n")),
        MPRPC_OK);
    CHECK(strcmp(c.zookeeper_ip, "127.0.0.3") == 0);
    CHECK(c.zookeeper_port == 2182);
#endif
    CHECK(strcmp(c.rpcserver_ip, "127.0.0.2") == 0);
    CHECK(c.rpcserver_port == 7000);
}

/* Every error names the file and line, and leaves the config untouched. */
static void check_load_error(const char *text, const char *want_line, const char *want_text)
{
    mprpc_config c, before;
    mprpc_config_init(&c);
    before = c;
    CHECK_STATUS(mprpc_config_load(&c, write_file(text)), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, path);
    if (want_line) CHECK_CONTAINS(c.error, want_line);
    CHECK_CONTAINS(c.error, want_text);
    memset(c.error, 0, sizeof c.error);
    CHECK(memcmp(&c, &before, sizeof c) == 0);
}

static void unknown_key_is_named_with_its_line(void)
{
    check_load_error("rpcserver_ip=127.0.0.1\n\nrpcserver_prot=8000\n", ":3:", "unknown key 'rpcserver_prot'");
}

static void malformed_line_is_rejected(void)
{
    check_load_error("# ok\nrpcserver_port 8000\n", ":2:", "expected key=value");
    check_load_error("= 5\n", ":1:", "missing key");
}

static void bad_numbers_and_ports_are_rejected(void)
{
    check_load_error("rpcserver_port=70000\n", ":1:", "rpcserver_port");
    check_load_error("rpcserver_port=-1\n", ":1:", "rpcserver_port");
    check_load_error("rpcserver_port=80a\n", ":1:", "bad value '80a'");
    check_load_error("rpcserver_port=\n", ":1:", "rpcserver_port");
    check_load_error("io_threads=0\n", ":1:", "io_threads");
    check_load_error("rpc_timeout_ms=99999999999999999999\n", ":1:", "rpc_timeout_ms");
    check_load_error("log_level=loud\n", ":1:", "log_level");
    check_load_error("log_stderr=maybe\n", ":1:", "log_stderr");
}

static void values_that_do_not_fit_are_rejected(void)
{
    char text[600];
    memset(text, 0, sizeof text);
    strcpy(text, "rpcserver_ip=");
    memset(text + strlen(text), '1', 100);
    strcat(text, "\n");
    check_load_error(text, ":1:", "longer than 63 bytes");
}

static void nothing_is_half_applied(void)
{
    /* valid lines before the bad one must not take effect */
    check_load_error("rpcserver_port=9999\nio_threads=8\nbogus=1\n", ":3:", "bogus");
    /* nor when the whole file parses but fails validation */
    check_load_error("rpcserver_port=9999\nrpcserver_ip=localhost\n", NULL, "not an IPv4 address");
}

static void missing_file_is_an_error(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, "/nonexistent/mprpc.conf"), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "/nonexistent/mprpc.conf");
    CHECK_CONTAINS(c.error, "No such file");
}

static void set_applies_one_key(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_set(&c, "rpc_timeout_ms", "250"), MPRPC_OK);
    CHECK(c.rpc_timeout_ms == 250);
    CHECK_STATUS(mprpc_config_set(&c, "rpc_timeout_ms", "fast"), MPRPC_ERR_CONFIG);
    CHECK(c.rpc_timeout_ms == 250);
    CHECK_STATUS(mprpc_config_set(&c, "nope", "1"), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "unknown key 'nope'");
}

static void command_line_takes_dash_i(void)
{
    mprpc_config c;
    char prog[] = "provider", dash_i[] = "-i", dash_x[] = "-x", extra[] = "extra";
    char file[256];
    char *good[] = { prog, dash_i, file, NULL };
    char *none[] = { prog, NULL };
    char *unknown[] = { prog, dash_x, NULL };
    char *noarg[] = { prog, dash_i, NULL };
    char *trailing[] = { prog, dash_i, file, extra, NULL };
    snprintf(file, sizeof file, "%s", write_file("rpcserver_port=1234\n"));
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_from_args(&c, 3, good), MPRPC_OK);
    CHECK(c.rpcserver_port == 1234);
    CHECK_STATUS(mprpc_config_from_args(&c, 1, none), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "usage: provider -i <configfile>");
    CHECK_STATUS(mprpc_config_from_args(&c, 2, unknown), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "usage:");
    CHECK_STATUS(mprpc_config_from_args(&c, 2, noarg), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "usage:");
    CHECK_STATUS(mprpc_config_from_args(&c, 4, trailing), MPRPC_ERR_CONFIG);
    /* getopt state is reset: a second good parse still works */
    CHECK_STATUS(mprpc_config_from_args(&c, 3, good), MPRPC_OK);
}

static void zookeeper_root_must_be_absolute(void)
{
    check_load_error("zookeeper_root=mprpc\n", NULL, "must start with '/'");
}

static void long_lines_are_rejected(void)
{
    static char text[3000];
    memset(text, 0, sizeof text);
    memcpy(text, "# ", 2);
    memset(text + 2, 'x', 2000);
    strcat(text, "\n");
    check_load_error(text, ":1:", "line longer");
}

int main(void)
{
    RUN(defaults_are_documented_values);
    RUN(file_with_comments_blanks_and_spaces_loads);
    RUN(seed_spellings_are_accepted);
    RUN(unknown_key_is_named_with_its_line);
    RUN(malformed_line_is_rejected);
    RUN(bad_numbers_and_ports_are_rejected);
    RUN(values_that_do_not_fit_are_rejected);
    RUN(nothing_is_half_applied);
    RUN(missing_file_is_an_error);
    RUN(set_applies_one_key);
    RUN(command_line_takes_dash_i);
    RUN(zookeeper_root_must_be_absolute);
    RUN(long_lines_are_rejected);
    unlink(path);
    return test_summary("test_config");
}
