/* Fuzz target: the config file parser (mprpc_config_load's parser on an
 * in-memory stream). On success the result validates and every string is
 * terminated; on failure the config is unchanged except its error text. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mprpc_config cfg, before;
    mprpc_status st;
    FILE *f;
    if (size == 0) return 0;
    f = fmemopen((void *)(uintptr_t)data, size, "r");
    if (!f) return 0;
    mprpc_config_init(&cfg);
    before = cfg;
    st = mprpc__config_parse(&cfg, f, "fuzz.conf");
    fclose(f);
    if (memchr(cfg.error, 0, sizeof cfg.error) == NULL) abort();
    if (st == MPRPC_OK) {
        if (mprpc_config_validate(&cfg) != MPRPC_OK) abort();
        if (!memchr(cfg.rpcserver_ip, 0, sizeof cfg.rpcserver_ip) || !memchr(cfg.log_dir, 0, sizeof cfg.log_dir) ||
            !memchr(cfg.zookeeper_hosts, 0, sizeof cfg.zookeeper_hosts) ||
            !memchr(cfg.zookeeper_auth, 0, sizeof cfg.zookeeper_auth))
            abort();
    } else {
        if (st != MPRPC_ERR_CONFIG || cfg.error[0] == '\0') abort();
        memcpy(before.error, cfg.error, sizeof cfg.error);
        if (memcmp(&before, &cfg, sizeof cfg) != 0) abort(); /* all or nothing */
    }
    return 0;
}
