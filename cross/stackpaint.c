/* cross/stackpaint.c: painted-stack measurement for scripts/footprint.py. Link it into a program with
 * -Wl,--wrap=pthread_create: every thread the program starts gets a stack of STACKPAINT_SIZE bytes (default
 * 1 MiB) from mmap, filled with 0xA5 first. At exit the untouched bytes are counted from the low end (stacks
 * grow down on every target here), and one line per thread, in creation order, goes to $STACKPAINT_OUT (or
 * stderr): "stackpaint thread N used BYTES". The first line, "thread -1", is an empty thread started by this
 * file's constructor: the fixed cost every thread pays at the top of its stack (struct pthread, static TLS,
 * start-up frames), to subtract or not. */
#define _GNU_SOURCE 1
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define STACKPAINT_MAX 64
#define STACKPAINT_BYTE 0xA5

int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

static struct { unsigned char *base; size_t size; } stackpaint_threads[STACKPAINT_MAX + 1];
static int stackpaint_count; /* index 0 is the empty baseline thread */
static pthread_mutex_t stackpaint_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t stackpaint_size(void)
{
    const char *s = getenv("STACKPAINT_SIZE");
    size_t n = s ? (size_t)strtoul(s, NULL, 0) : 0;
    return n >= 65536 ? n : (size_t)1 << 20;
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    pthread_attr_t a;
    size_t size = stackpaint_size();
    unsigned char *base;
    int rc, slot;
    (void)attr; /* the library passes NULL or only a stack size, which this replaces */
    pthread_mutex_lock(&stackpaint_mu);
    slot = stackpaint_count < STACKPAINT_MAX ? stackpaint_count++ : -1;
    pthread_mutex_unlock(&stackpaint_mu);
    if (slot < 0) return __real_pthread_create(t, attr, fn, arg);
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return __real_pthread_create(t, attr, fn, arg);
    memset(base, STACKPAINT_BYTE, size);
    stackpaint_threads[slot].base = base;
    stackpaint_threads[slot].size = size;
    pthread_attr_init(&a);
    pthread_attr_setstack(&a, base, size);
    rc = __real_pthread_create(t, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc;
}

static void *stackpaint_empty(void *arg)
{
    return arg;
}

__attribute__((constructor)) static void stackpaint_init(void)
{
    pthread_t t;
    if (__wrap_pthread_create(&t, NULL, stackpaint_empty, NULL) == 0) pthread_join(t, NULL);
}

__attribute__((destructor)) static void stackpaint_report(void)
{
    const char *path = getenv("STACKPAINT_OUT");
    FILE *f = path ? fopen(path, "w") : NULL;
    int i;
    if (!f) f = stderr;
    for (i = 0; i < stackpaint_count; i++) {
        size_t j = 0;
        if (!stackpaint_threads[i].base) continue;
        while (j < stackpaint_threads[i].size && stackpaint_threads[i].base[j] == STACKPAINT_BYTE) j++;
        fprintf(f, "stackpaint thread %d used %zu\n", i - 1, stackpaint_threads[i].size - j);
    }
    if (f != stderr) fclose(f);
}
