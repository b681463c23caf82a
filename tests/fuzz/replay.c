/* Replays fuzz inputs through a target's LLVMFuzzerTestOneInput without
 * libFuzzer: `make test` runs every file of tests/fuzz/corpus/<target>/
 * (the seeds and every input that once crashed) this way.
 *   test_fuzz_<target> [DIR_OR_FILE...]   (default: tests/fuzz/corpus/<target>) */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) { perror(path); return 0; }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); return 0; }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n); /* a finding aborts the process */
    free(buf);
    return 1;
}

static int replay(const char *path, int *files)
{
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) { *files += replay_file(path); return 1; }
    while ((e = readdir(d)) != NULL) {
        char full[4096];
        if (e->d_name[0] == '.') continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        *files += replay_file(full);
    }
    closedir(d);
    return 1;
}

int main(int argc, char **argv)
{
    int i, files = 0;
    if (argc < 2) replay("tests/fuzz/corpus/" FUZZ_TARGET, &files);
    for (i = 1; i < argc; i++) replay(argv[i], &files);
    printf("%s %d corpus inputs replayed\n", files > 0 ? "ok  " : "FAIL", files);
    printf("MPRPC-TEST-SUMMARY fuzz_%s passed=%d failed=%d\n", FUZZ_TARGET, files > 0, files == 0);
    return files > 0 ? 0 : 1;
}
