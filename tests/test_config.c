/* Config: the seed's MprpcApplication. key=value files, seed key spellings,
 * errors that name file, line and key, nothing half-applied, and -i. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"

#include <errno.h>
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
    CHECK_STATUS(mprpc_config_load(&c, write_file("zookeeperip=127.0.0.3\n")), MPRPC_ERR_UNSUPPORTED);
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

/* zookeeper_seed_layout defaults to auto (-1); the loader records whether a key came in the seed's spelling,
 * which is what auto decides on (a provider then also publishes the seed's nodes); "auto", 0 and 1 parse. */
static void seed_layout_is_auto_and_spellings_are_recorded(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK(c.zookeeper_seed_layout == -1 && c.seed_spellings == 0);
    CHECK_STATUS(mprpc_config_load(&c, write_file("rpcserver_ip=127.0.0.2\nrpcserver_port=7000\n")), MPRPC_OK);
    CHECK(c.seed_spellings == 0);
    CHECK_STATUS(mprpc_config_load(&c, write_file("rpcserverport=7001\n")), MPRPC_OK);
    CHECK(c.seed_spellings == 1 && c.zookeeper_seed_layout == -1);
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, write_file("zookeeper_seed_layout = 0\nrpcserverip=127.0.0.4\n")), MPRPC_OK);
    CHECK(c.zookeeper_seed_layout == 0 && c.seed_spellings == 1);
    CHECK_STATUS(mprpc_config_set(&c, "zookeeper_seed_layout", "auto"), MPRPC_OK);
    CHECK(c.zookeeper_seed_layout == -1);
    CHECK_STATUS(mprpc_config_set(&c, "zookeeper_seed_layout", "yes"), MPRPC_OK);
    CHECK(c.zookeeper_seed_layout == 1);
    CHECK_STATUS(mprpc_config_set(&c, "zookeeper_seed_layout", "2"), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "auto or a boolean");
    c.zookeeper_seed_layout = -2; /* set from C, out of range */
    CHECK_STATUS(mprpc_config_validate(&c), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "zookeeper_seed_layout = -2 is out of range -1..1");
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
    check_load_error("rpcserver_port=9999\nrpcserver_ip=local host\n", NULL, "neither an IPv4 nor an IPv6");
}

/* This file is built without MPRPC_TLS: asking for TLS must not silently give plaintext. */
static void tls_without_mprpc_tls_is_unsupported(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_set(&c, "tls_enable", "1"), MPRPC_OK);
    CHECK_STATUS(mprpc_config_validate(&c), MPRPC_ERR_UNSUPPORTED);
    CHECK_CONTAINS(c.error, "built without MPRPC_TLS");
}

/* What this build lacks is MPRPC_ERR_UNSUPPORTED wherever the config is checked, not only in validate. */
static void server_channel_and_logger_say_unsupported_as_validate_does(void)
{
    mprpc_config c;
    mprpc_server *srv = NULL;
    mprpc_channel *ch = NULL;
    mprpc_config_init(&c);
    c.tls_enable = 1;
    CHECK_STATUS(mprpc_server_new(&srv, &c), MPRPC_ERR_UNSUPPORTED);
    CHECK(srv == NULL);
    if (srv) mprpc_server_free(srv);
    CHECK_STATUS(mprpc_channel_new(&ch, &c), MPRPC_ERR_UNSUPPORTED);
    CHECK(ch == NULL);
    if (ch) mprpc_channel_free(ch);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_ERR_UNSUPPORTED);
    CHECK_CONTAINS(c.error, "built without MPRPC_TLS");
    mprpc_logger_stop();
    write_file("tls_enable = 1\n");
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, path), MPRPC_ERR_UNSUPPORTED);
    CHECK_CONTAINS(c.error, "built without MPRPC_TLS");
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
    CHECK_STATUS(mprpc_config_from_args(&c, 2, unknown), MPRPC_ERR_CONFIG); /* no -i at all */
    CHECK_CONTAINS(c.error, "usage:");
    CHECK_STATUS(mprpc_config_from_args(&c, 2, noarg), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "usage:");
    CHECK_CONTAINS(c.error, "-i needs a file name");
    /* other arguments are the program's own */
    CHECK_STATUS(mprpc_config_from_args(&c, 4, trailing), MPRPC_OK);
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

/* ---- issue 11, items 15-18 ---- */

static void a_directory_is_not_a_config_file(void)
{
    mprpc_config c, before;
    mprpc_config_init(&c);
    before = c;
    CHECK_STATUS(mprpc_config_load(&c, "/tmp"), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "/tmp");
    CHECK_CONTAINS(c.error, strerror(EISDIR));
    memset(c.error, 0, sizeof c.error);
    CHECK(memcmp(&c, &before, sizeof c) == 0);
}

static void a_file_that_cannot_be_read_is_an_error(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    /* opens fine, but reading at offset 0 fails with EIO: a read error, not an empty file */
    CHECK_STATUS(mprpc_config_load(&c, "/proc/self/mem"), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "/proc/self/mem");
    CHECK_CONTAINS(c.error, "cannot read");
}

static void validate_checks_every_numeric_key_against_its_range(void)
{
    size_t i;
    for (i = 0; i < MPRPC_COUNTOF(mprpc__config_keys); i++) {
        const mprpc__config_key *k = &mprpc__config_keys[i];
        long long bad[2];
        int j;
        if (k->type == MPRPC__KEY_STR) continue;
        bad[0] = k->min - 1;
        bad[1] = k->max + 1;
        for (j = 0; j < 2; j++) {
            mprpc_config c;
            char value[32];
            mprpc_config_init(&c);
            if (k->type == MPRPC__KEY_U32) *(uint32_t *)(void *)((char *)&c + k->offset) = (uint32_t)bad[j];
            else *(int *)(void *)((char *)&c + k->offset) = (int)bad[j];
            snprintf(value, sizeof value, "%lld", bad[j]);
            CHECK_STATUS(mprpc_config_validate(&c), MPRPC_ERR_CONFIG);
            CHECK_CONTAINS(c.error, k->name);
            CHECK_CONTAINS(c.error, value);
        }
    }
}

static void validate_names_the_key_the_value_and_the_range(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    c.io_threads = 0;
    CHECK_STATUS(mprpc_config_validate(&c), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "io_threads = 0");
    CHECK_CONTAINS(c.error, "1..64");
}

static void validate_refuses_a_string_without_its_terminator(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    memset(c.log_dir, 'd', sizeof c.log_dir);
    CHECK_STATUS(mprpc_config_validate(&c), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "log_dir");
}

static void server_channel_and_logger_refuse_an_invalid_config(void)
{
    mprpc_config c;
    mprpc_server *srv = NULL;
    mprpc_channel *ch = NULL;
    mprpc_config_init(&c);
    c.io_threads = 0;
    CHECK_STATUS(mprpc_server_new(&srv, &c), MPRPC_ERR_CONFIG);
    CHECK(srv == NULL);
    if (srv) mprpc_server_free(srv);
    mprpc_config_init(&c);
    c.rpc_timeout_ms = 0;
    CHECK_STATUS(mprpc_channel_new(&ch, &c), MPRPC_ERR_CONFIG);
    CHECK(ch == NULL);
    if (ch) mprpc_channel_free(ch);
    mprpc_config_init(&c);
    c.log_level = 9;
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "log_level = 9");
    mprpc_logger_stop();
}

static void a_key_given_twice_is_an_error_naming_both_lines(void)
{
    check_load_error("rpcserver_port=9000\nio_threads=4\n\nrpcserver_port=9001\n", ":4:", "also set on line 1");
    /* the seed's spelling names the same field */
    check_load_error("rpcserverport=9000\nrpcserver_port=9001\n", ":2:", "also set on line 1");
}

static void a_utf8_byte_order_mark_is_skipped(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, write_file("\xef\xbb\xbfrpcserver_port=4321\n")), MPRPC_OK);
    CHECK(c.rpcserver_port == 4321);
    /* only at the very start: elsewhere it is part of a key */
    check_load_error("io_threads=3\n\xef\xbb\xbfrpcserver_port=4321\n", ":2:", "unknown key");
}

static void zookeeper_root_must_be_a_clean_path_below_the_root(void)
{
    check_load_error("zookeeper_root=/\n", NULL, "zookeeper_root '/'");
    check_load_error("zookeeper_root=/a//b\n", NULL, "empty component");
    check_load_error("zookeeper_root=/mprpc/\n", NULL, "must not end with '/'");
    check_load_error("zookeeper_root=/a/./b\n", NULL, "'.' or '..'");
}

static void a_nul_byte_is_reported_as_such(void)
{
    static const char text[] = "rpcserver_port=9000\nio_threads=\0003\n";
    mprpc_config c;
    FILE *f;
    snprintf(path, sizeof path, "/tmp/mprpc-test-config-%d.conf", (int)getpid());
    f = fopen(path, "w");
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_load(&c, path), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, ":2:");
    CHECK_CONTAINS(c.error, "NUL byte on line 2");
}

/* The library takes -i FILE and leaves every other argument to the program. */
static void command_line_leaves_other_arguments_to_the_program(void)
{
    mprpc_config c;
    char prog[] = "provider", dash_v[] = "-v", dash_i[] = "-i", port[] = "--port=1", pos[] = "input.txt";
    char file[256], joined[260], dashdash[] = "--", longopt[] = "--config";
    char *mixed[] = { prog, dash_v, dash_i, file, port, pos, NULL };
    char *before[7];
    char *glued[] = { prog, joined, pos, NULL };
    char *longform[] = { prog, pos, longopt, file, NULL };
    char *after_dashdash[] = { prog, dashdash, dash_i, file, NULL };
    snprintf(file, sizeof file, "%s", write_file("rpcserver_port=1234\n"));
    snprintf(joined, sizeof joined, "-i%s", file);
    memcpy(before, mixed, sizeof before);
    optind = 3; /* whatever the program left there */
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_from_args(&c, 6, mixed), MPRPC_OK);
    CHECK(c.rpcserver_port == 1234);
    CHECK(memcmp(before, mixed, sizeof before) == 0); /* argv is not permuted */
    CHECK(optind == 3);                               /* getopt's state is not touched */
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_from_args(&c, 3, glued), MPRPC_OK);
    CHECK(c.rpcserver_port == 1234);
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_config_from_args(&c, 4, longform), MPRPC_OK);
    CHECK(c.rpcserver_port == 1234);
    /* after "--" everything is the program's */
    CHECK_STATUS(mprpc_config_from_args(&c, 4, after_dashdash), MPRPC_ERR_CONFIG);
    CHECK_CONTAINS(c.error, "usage: provider -i <configfile>");
    optind = 1;
}

int main(void)
{
    RUN(defaults_are_documented_values);
    RUN(file_with_comments_blanks_and_spaces_loads);
    RUN(seed_spellings_are_accepted);
    RUN(seed_layout_is_auto_and_spellings_are_recorded);
    RUN(unknown_key_is_named_with_its_line);
    RUN(malformed_line_is_rejected);
    RUN(bad_numbers_and_ports_are_rejected);
    RUN(values_that_do_not_fit_are_rejected);
    RUN(nothing_is_half_applied);
    RUN(tls_without_mprpc_tls_is_unsupported);
    RUN(server_channel_and_logger_say_unsupported_as_validate_does);
    RUN(missing_file_is_an_error);
    RUN(set_applies_one_key);
    RUN(command_line_takes_dash_i);
    RUN(zookeeper_root_must_be_absolute);
    RUN(long_lines_are_rejected);
    RUN(a_directory_is_not_a_config_file);
    RUN(a_file_that_cannot_be_read_is_an_error);
    RUN(validate_checks_every_numeric_key_against_its_range);
    RUN(validate_names_the_key_the_value_and_the_range);
    RUN(validate_refuses_a_string_without_its_terminator);
    RUN(server_channel_and_logger_refuse_an_invalid_config);
    RUN(a_key_given_twice_is_an_error_naming_both_lines);
    RUN(a_utf8_byte_order_mark_is_skipped);
    RUN(zookeeper_root_must_be_a_clean_path_below_the_root);
    RUN(a_nul_byte_is_reported_as_such);
    RUN(command_line_leaves_other_arguments_to_the_program);
    unlink(path);
    return test_summary("test_config");
}
