/* The library's runtime: libc's own entry points behind the interposed ones, the environment switches
 * (FREEFLOW_DISABLE, FREEFLOW_DEBUG), the clock and the debug log. */
#ifndef FREEFLOW_RUNTIME_H
#define FREEFLOW_RUNTIME_H

#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

/* libc's implementations of what intercept.c interposes. The library itself calls only these, never its
 * own interposed symbols. */
struct ff_libc {
    int (*socket)(int, int, int);
    int (*socketpair)(int, int, int, int[2]);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*close)(int);
    int (*fclose)(FILE *);
    int (*close_range)(unsigned int, unsigned int, int); /* NULL before glibc 2.34 */
    void (*closefrom)(int);                              /* NULL before glibc 2.34 */
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...); /* libc's fcntl where it has no fcntl64 */
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*shutdown)(int, int);
};

extern struct ff_libc ff_real;
extern int ff_ready;    /* ff_real is filled in */
extern int ff_disabled; /* FREEFLOW_DISABLE=1: every interposed call goes straight to libc */

void ff_runtime_init(void);

/* Every interposed call starts with this: another library's constructor may call us before ours ran. */
#define FF_INIT()                                                                                       \
    do {                                                                                                \
        if (__builtin_expect(!__atomic_load_n(&ff_ready, __ATOMIC_ACQUIRE), 0))                         \
            ff_runtime_init();                                                                          \
    } while (0)

/* 1 in the child of a vfork (or of a clone sharing memory, as posix_spawn's): it runs in its parent's memory
 * until it execs or exits, so it must leave the parent's descriptor table as it is. fork() children have their
 * own copy (a fork handler tells them apart); a child made without fork handlers (a raw clone system call,
 * _Fork) is taken for one too, and its closes go unrecorded. */
int ff_memory_borrowed(void);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t ff_now_ms(void);

/* A line on stderr when FREEFLOW_DEBUG=1; errno is left as it was. */
void ff_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* An IPv4 address (struct in_addr) and port, for ff_debug: "%u.%u.%u.%u:%u". */
#define FF_ADDR_FMT "%u.%u.%u.%u:%u"
#define FF_ADDR_ARGS(ip, port)                                                                          \
    ((const unsigned char *)&(ip))[0], ((const unsigned char *)&(ip))[1],                               \
        ((const unsigned char *)&(ip))[2], ((const unsigned char *)&(ip))[3], (unsigned)(port)

/* The library's own descriptors are never 0, 1 or 2: a program that closed its standard streams opens them
 * again and expects those numbers (a daemon reopening /dev/null). */
#define FF_FIRST_HIDDEN_FD 3

/* `fd` itself, or (when below FF_FIRST_HIDDEN_FD) a close-on-exec copy at or above it, `fd` closed; -1 on
 * failure. */
int ff_hidden_fd(int fd);

#endif
