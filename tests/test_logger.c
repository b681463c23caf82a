/* Logger: the seed's Logger + LockQueue. Asynchronous, level per message,
 * day-named files, bounded queue that drops and counts, nothing queued lost
 * at a clean stop. */
#define MPRPC_IMPLEMENTATION
#include "mprpc.h"
#include "test.h"

#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[128];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/mprpc-test-log-%d", (int)getpid());
    mkdir(dir, 0700);
}

static void today_file(char *out, size_t n)
{
    char day[16];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    snprintf(out, n, "%s/%s-log.txt", dir, day);
}

static int count_lines(const char *file, const char *needle)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!needle || strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static void lines_reach_the_day_file_with_time_thread_and_level(void)
{
    mprpc_config c;
    char file[256], line[1024];
    FILE *f;
    int y, mo, d, h, mi, s, ms;
    long tid;
    char level[16];
    make_dir();
    today_file(file, sizeof file);
    unlink(file);
    mprpc_config_init(&c);
    snprintf(c.log_dir, sizeof c.log_dir, "%s", dir);
    c.log_level = MPRPC_LOG_LEVEL_INFO;
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    MPRPC_LOG_DEBUG("hidden %d", 1);
    MPRPC_LOG_INFO("hello %s", "world");
    MPRPC_LOG_ERROR("bad %d", 42);
    mprpc_logger_stop();
    CHECK(count_lines(file, NULL) == 2);
    CHECK(count_lines(file, "hidden") == 0);
    f = fopen(file, "r");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK(sscanf(line, "%4d-%2d-%2d %2d:%2d:%2d.%3d %ld %15s", &y, &mo, &d, &h, &mi, &s, &ms, &tid, level) == 9);
    CHECK(strcmp(level, "INFO") == 0);
    CHECK(tid > 0);
    CHECK_CONTAINS(line, "test_logger.c:");
    CHECK_CONTAINS(line, "hello world");
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK_CONTAINS(line, " ERROR ");
    CHECK_CONTAINS(line, "bad 42");
    fclose(f);
}

static int evaluated;
static int side_effect(void) { return ++evaluated; }

static void disabled_levels_do_not_format_their_arguments(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    c.log_level = MPRPC_LOG_LEVEL_WARN;
    evaluated = 0;
    MPRPC_LOG_INFO("before start %d", side_effect());
    CHECK(evaluated == 0);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    MPRPC_LOG_INFO("%d", side_effect());
    CHECK(evaluated == 0);
    MPRPC_LOG_WARN("%d", side_effect());
    CHECK(evaluated == 1);
    mprpc_logger_stop();
    MPRPC_LOG_ERROR("after stop %d", side_effect());
    CHECK(evaluated == 1);
}

/* A sink that blocks until released, so the queue fills up behind it. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, sink_seen;

static void blocking_sink(mprpc_log_level level, const char *line, void *user)
{
    (void)level; (void)line; (void)user;
    pthread_mutex_lock(&gate_mu);
    while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
    sink_seen++;
    pthread_mutex_unlock(&gate_mu);
}

static void full_queue_drops_and_counts_without_blocking(void)
{
    mprpc_config c;
    mprpc_logger_stats st;
    int i;
    mprpc_config_init(&c);
    c.log_queue_size = 8;
    gate_open = 0;
    sink_seen = 0;
    mprpc_logger_set_sink(blocking_sink, NULL);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    for (i = 0; i < 100; i++) MPRPC_LOG_INFO("line %d", i); /* must not block */
    mprpc_logger_get_stats(&st);
    CHECK(st.dropped >= 100 - 8 - 1); /* the writer may hold one batch already */
    CHECK(st.dropped < 100);
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    mprpc_logger_stop();
    mprpc_logger_get_stats(&st);
    CHECK(st.written + st.dropped == 100); /* every queued line was written at stop */
    CHECK((uint64_t)sink_seen == st.written);
    mprpc_logger_set_sink(NULL, NULL);
}

static void *log_many(void *arg)
{
    int i;
    for (i = 0; i < 1000; i++) MPRPC_LOG_INFO("thread %d line %d", *(int *)arg, i);
    return NULL;
}

static void many_threads_lose_nothing_when_the_queue_is_large(void)
{
    mprpc_config c;
    mprpc_logger_stats st;
    pthread_t t[4];
    int ids[4] = { 0, 1, 2, 3 }, i;
    char file[256];
    make_dir();
    today_file(file, sizeof file);
    unlink(file);
    mprpc_config_init(&c);
    snprintf(c.log_dir, sizeof c.log_dir, "%s", dir);
    c.log_queue_size = 8192;
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    for (i = 0; i < 4; i++) pthread_create(&t[i], NULL, log_many, &ids[i]);
    for (i = 0; i < 4; i++) pthread_join(t[i], NULL);
    mprpc_logger_stop();
    mprpc_logger_get_stats(&st);
    CHECK(st.dropped == 0);
    CHECK(st.written == 4000);
    CHECK(count_lines(file, "line ") == 4000);
    CHECK(count_lines(file, "thread 3 line 999") == 1);
}

static void unwritable_directory_is_a_clear_error(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    snprintf(c.log_dir, sizeof c.log_dir, "/nonexistent/logs");
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_ERR_IO);
    CHECK_CONTAINS(c.error, "/nonexistent/logs");
    MPRPC_LOG_ERROR("nobody hears this"); /* harmless when not started */
    /* and the logger can still be started properly afterwards */
    c.log_dir[0] = '\0';
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    mprpc_logger_stop();
}

static void starting_twice_is_refused_and_stop_is_idempotent(void)
{
    mprpc_config c;
    mprpc_config_init(&c);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(c.error, "already started");
    mprpc_logger_stop();
    mprpc_logger_stop();
}

static void long_lines_are_truncated_not_overflowed(void)
{
    mprpc_config c;
    char big[4000], file[256], line[2048];
    FILE *f;
    make_dir();
    today_file(file, sizeof file);
    unlink(file);
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mprpc_config_init(&c);
    snprintf(c.log_dir, sizeof c.log_dir, "%s", dir);
    CHECK_STATUS(mprpc_logger_start(&c), MPRPC_OK);
    MPRPC_LOG_INFO("%s", big);
    mprpc_logger_stop();
    f = fopen(file, "r");
    CHECK(f && fgets(line, sizeof line, f));
    CHECK(strlen(line) <= MPRPC_LOG_LINE_MAX);
    if (f) fclose(f);
}

int main(void)
{
    RUN(lines_reach_the_day_file_with_time_thread_and_level);
    RUN(disabled_levels_do_not_format_their_arguments);
    RUN(full_queue_drops_and_counts_without_blocking);
    RUN(many_threads_lose_nothing_when_the_queue_is_large);
    RUN(unwritable_directory_is_a_clear_error);
    RUN(starting_twice_is_refused_and_stop_is_idempotent);
    RUN(long_lines_are_truncated_not_overflowed);
    {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (dir[0] && system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    }
    return test_summary("test_logger");
}
