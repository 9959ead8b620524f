/* The library's runtime: libc's own entry points behind the interposed ones, the environment switches,
 * the clock and the debug log. */
#define _GNU_SOURCE
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ff_libc ff_real;
int ff_ready;
int ff_disabled;
static int debugging;
static pid_t memory_owner; /* the process whose memory this is: set at load, and in every forked child */

static int switched_on(const char *name)
{
    const char *value = getenv(name);
    return value && *value && strcmp(value, "0") != 0;
}

void ff_runtime_init(void)
{
    int saved = errno;
    /* Concurrent first calls may both get here: they store the same values. */
    ff_real.socket = dlsym(RTLD_NEXT, "socket");
    ff_real.socketpair = dlsym(RTLD_NEXT, "socketpair");
    ff_real.connect = dlsym(RTLD_NEXT, "connect");
    ff_real.listen = dlsym(RTLD_NEXT, "listen");
    ff_real.accept = dlsym(RTLD_NEXT, "accept");
    ff_real.accept4 = dlsym(RTLD_NEXT, "accept4");
    ff_real.close = dlsym(RTLD_NEXT, "close");
    ff_real.fclose = dlsym(RTLD_NEXT, "fclose");
    ff_real.close_range = dlsym(RTLD_NEXT, "close_range");
    ff_real.closefrom = dlsym(RTLD_NEXT, "closefrom");
    ff_real.dup = dlsym(RTLD_NEXT, "dup");
    ff_real.dup2 = dlsym(RTLD_NEXT, "dup2");
    ff_real.dup3 = dlsym(RTLD_NEXT, "dup3");
    ff_real.fcntl = dlsym(RTLD_NEXT, "fcntl");
    ff_real.fcntl64 = dlsym(RTLD_NEXT, "fcntl64");
    if (!ff_real.fcntl64)
        ff_real.fcntl64 = ff_real.fcntl;
    ff_real.getsockname = dlsym(RTLD_NEXT, "getsockname");
    ff_real.getpeername = dlsym(RTLD_NEXT, "getpeername");
    ff_real.getsockopt = dlsym(RTLD_NEXT, "getsockopt");
    ff_real.setsockopt = dlsym(RTLD_NEXT, "setsockopt");
    ff_real.epoll_ctl = dlsym(RTLD_NEXT, "epoll_ctl");
    ff_real.sendto = dlsym(RTLD_NEXT, "sendto");
    ff_real.sendmsg = dlsym(RTLD_NEXT, "sendmsg");
    ff_real.recvfrom = dlsym(RTLD_NEXT, "recvfrom");
    ff_real.recvmsg = dlsym(RTLD_NEXT, "recvmsg");
    ff_real.shutdown = dlsym(RTLD_NEXT, "shutdown");
    ff_disabled = switched_on("FREEFLOW_DISABLE");
    debugging = switched_on("FREEFLOW_DEBUG");
    __atomic_store_n(&ff_ready, 1, __ATOMIC_RELEASE);
    errno = saved;
}

static void forked_child(void)
{
    memory_owner = getpid();
}

__attribute__((constructor)) static void runtime_constructor(void)
{
    FF_INIT();
    memory_owner = getpid();
    pthread_atfork(NULL, NULL, forked_child);
}

int ff_memory_borrowed(void)
{
    return memory_owner != 0 && getpid() != memory_owner;
}

uint64_t ff_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

void ff_debug(const char *fmt, ...)
{
    if (!debugging)
        return;
    int saved = errno;
    char line[512];
    int used = snprintf(line, sizeof line, "freeflow[%d]: ", (int)getpid());
    va_list args;
    va_start(args, fmt);
    int more = vsnprintf(line + used, sizeof line - (size_t)used - 1, fmt, args);
    va_end(args);
    used = more < 0 ? used : used + more;
    if (used > (int)sizeof line - 2)
        used = (int)sizeof line - 2;
    line[used++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)used);
    (void)ignored;
    errno = saved;
}

int ff_hidden_fd(int fd)
{
    if (fd < 0 || fd >= FF_FIRST_HIDDEN_FD)
        return fd;
    int moved = ff_real.fcntl(fd, F_DUPFD_CLOEXEC, FF_FIRST_HIDDEN_FD);
    ff_real.close(fd);
    return moved;
}
