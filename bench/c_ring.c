/* The limit of `freeflow bench`'s shared-memory rows: a single-producer single-consumer byte ring in shared
 * memory between two processes, both spinning. The bench builds it with gcc and runs it on the host.
 *
 * usage: c_ring SECONDS WARMUP CHUNK MESSAGE
 * Prints two JSON lines, as bench/probe_stream.py does: CHUNK-byte writes through a 1 MiB ring for SECONDS,
 * then MESSAGE-byte ping-pongs over two rings for SECONDS after WARMUP seconds of untimed ones.
 * head and tail are C11 atomics (release stores, acquire loads), each on its own cache line; the child dies
 * with its parent (PR_SET_PDEATHSIG), so a killed run leaves nothing spinning.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RING_BYTES ((size_t)1 << 20)

struct ring {
    alignas(64) _Atomic uint64_t head; /* bytes written; stored by the producer only */
    alignas(64) _Atomic uint64_t tail; /* bytes read; stored by the consumer only */
    alignas(64) _Atomic int stop;      /* the parent tells the consumer waiting on this ring to end */
    alignas(64) unsigned char data[RING_BYTES];
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

/* Spin until n bytes fit, copy them in (wrapping at the end), then publish them. */
static void put(struct ring *r, const unsigned char *src, size_t n)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    while (RING_BYTES - (head - atomic_load_explicit(&r->tail, memory_order_acquire)) < n)
        ;
    size_t at = head & (RING_BYTES - 1);
    size_t first = n < RING_BYTES - at ? n : RING_BYTES - at;
    memcpy(r->data + at, src, first);
    memcpy(r->data, src + first, n - first);
    atomic_store_explicit(&r->head, head + n, memory_order_release);
}

/* Spin until n bytes are there, copy them out, then free them. 0 when the ring's stop is set first. */
static int get(struct ring *r, unsigned char *dst, size_t n)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    while (atomic_load_explicit(&r->head, memory_order_acquire) - tail < n)
        if (atomic_load_explicit(&r->stop, memory_order_acquire))
            return 0;
    size_t at = tail & (RING_BYTES - 1);
    size_t first = n < RING_BYTES - at ? n : RING_BYTES - at;
    memcpy(dst, r->data + at, first);
    memcpy(dst + first, r->data, n - first);
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
    return 1;
}

static unsigned char *buffer(size_t n)
{
    unsigned char *buf = calloc(1, n);
    if (!buf)
        fail("calloc");
    return buf;
}

/* Fork the consumer of `in`: it takes n bytes at a time (into its copy of buf) and, when `out` is given,
 * sends them back on it, until the parent sets in->stop. The parent gets the child's pid. */
static pid_t fork_consumer(struct ring *in, struct ring *out, size_t n, unsigned char *buf)
{
    pid_t parent = getpid();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid > 0)
        return pid;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);
    while (get(in, buf, n))
        if (out)
            put(out, buf, n);
    _exit(0);
}

static void end_child(struct ring *r, pid_t pid)
{
    atomic_store_explicit(&r->stop, 1, memory_order_release);
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "c_ring: the consumer process failed\n");
        exit(1);
    }
}

static void throughput(struct ring *r, size_t chunk, double seconds)
{
    unsigned char *buf = buffer(chunk);
    pid_t pid = fork_consumer(r, NULL, chunk, buf);
    uint64_t started = now_ns(), end = started + (uint64_t)(seconds * 1e9);
    while (now_ns() < end)
        put(r, buf, chunk);
    uint64_t sent = atomic_load_explicit(&r->head, memory_order_relaxed);
    while (atomic_load_explicit(&r->tail, memory_order_acquire) != sent)
        ;
    uint64_t elapsed = now_ns() - started;
    end_child(r, pid);
    printf("{\"kind\": \"throughput\", \"path\": \"c-ring\", \"bytes\": %llu, \"seconds\": %.9f}\n",
           (unsigned long long)sent, elapsed / 1e9);
    free(buf);
}

static int ascending(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void pingpong(struct ring *there, struct ring *back, size_t size, double warmup, double seconds)
{
    unsigned char *buf = buffer(size);
    pid_t pid = fork_consumer(there, back, size, buf);
    size_t count = 0, room = 1 << 20;
    uint64_t *trips = malloc(room * sizeof *trips);
    if (!trips)
        fail("malloc");
    uint64_t timed_from = now_ns() + (uint64_t)(warmup * 1e9), end = timed_from + (uint64_t)(seconds * 1e9);
    for (;;) {
        uint64_t started = now_ns();
        put(there, buf, size);
        get(back, buf, size);
        uint64_t now = now_ns();
        if (now >= timed_from) {
            if (count == room && !(trips = realloc(trips, (room *= 2) * sizeof *trips)))
                fail("realloc");
            trips[count++] = now - started;
        }
        if (now >= end)
            break;
    }
    end_child(there, pid);
    qsort(trips, count, sizeof *trips, ascending);
    double sum = 0;
    for (size_t i = 0; i < count; i++)
        sum += (double)trips[i];
    printf("{\"kind\": \"pingpong\", \"path\": \"c-ring\", \"avg_us\": %.4f, \"p99_us\": %.4f, \"count\": %zu}\n",
           sum / count / 1000, trips[(99 * count + 99) / 100 - 1] / 1000.0, count);
    free(trips);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: c_ring SECONDS WARMUP CHUNK MESSAGE\n");
        return 2;
    }
    double seconds = atof(argv[1]), warmup = atof(argv[2]);
    size_t chunk = strtoul(argv[3], NULL, 10), message = strtoul(argv[4], NULL, 10);
    if (seconds <= 0 || warmup < 0 || !chunk || chunk > RING_BYTES || !message || message > RING_BYTES) {
        fprintf(stderr, "c_ring: SECONDS > 0, WARMUP >= 0, 0 < CHUNK, MESSAGE <= %zu\n", RING_BYTES);
        return 2;
    }
    struct ring *rings = mmap(NULL, 3 * sizeof *rings, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rings == MAP_FAILED)
        fail("mmap");
    throughput(&rings[0], chunk, seconds);
    pingpong(&rings[1], &rings[2], message, warmup, seconds);
    return 0;
}
