/* What this process's descriptors are to the library: grafted sockets (with the TCP addresses they answer
 * with), listening sockets registered with the router, the library's own control connections, and the
 * epoll instance the app put each descriptor in.
 *
 * A fixed table indexed by fd, mapped on first use and never freed. It lives in process memory, so a
 * forked child inherits it along with the descriptors; it has no lock, so neither fork nor a signal
 * handler can find one held. A vfork child, which runs in its parent's memory, changes nothing in it
 * (ff_memory_borrowed). Descriptors at or above FF_MAX_FDS are never grafted. */
#ifndef FREEFLOW_FDTABLE_H
#define FREEFLOW_FDTABLE_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#define FF_MAX_FDS 65536
#define FF_TCP_KEPT 4 /* TCP options a grafted socket remembers beside TCP_NODELAY (emulate.c) */

enum ff_kind {
    FF_UNKNOWN = 0, /* nothing known: left to libc */
    FF_PLAIN,       /* not ours: a listener we do not graft (unix, loopback, IPv6-only...), a unix socket */
    FF_LISTENER,    /* a TCP listening socket whose accepted connections we graft */
    FF_GRAFTED,     /* a socket pair end standing in for a TCP connection */
    FF_CONTROL,     /* a listener's control connection to the router */
};

struct ff_fd {
    uint8_t kind;
    uint8_t nodelay;     /* grafted: TCP_NODELAY as last set, read back by getsockopt */
    int tcp_kept[FF_TCP_KEPT]; /* grafted: the TCP options of emulate.c's list, as last set (or the TCP socket's) */
    uint8_t host_tcp;    /* grafted onto a host TCP connection to another host: its TCP options are real */
    uint8_t registering; /* listener: a thread is registering it right now */
    uint16_t port;       /* listener: its TCP port */
    uint16_t backlog;    /* listener: what listen() was given */
    int control;         /* listener: its control connection, -1 while not registered */
    uint64_t retry_ms;   /* listener: do not ask the router again before this time */
    int owner;           /* control: the listening fd it registers */
    ino_t ino;           /* control: its socket's inode, so we never close a descriptor we do not own */
    socklen_t local_len; /* grafted: the TCP connection's addresses, as getsockname/getpeername gave them */
    socklen_t peer_len;
    struct sockaddr_in6 local; /* holds a sockaddr_in, or an IPv4-mapped sockaddr_in6 */
    struct sockaddr_in6 peer;
    int epfd;                 /* the epoll instance the app last added this fd to, plus one; 0 for none */
    uint32_t epgen;           /* that instance's `gen` when the fd was added */
    struct epoll_event event; /* and the events and data it was added with */
    uint32_t gen;             /* bumped whenever this fd number is closed: tells epoll instances apart */
};

/* The entry of `fd`, or NULL when fd is out of range or nothing was ever recorded in this process. */
struct ff_fd *ff_fd_at(int fd);
/* The entry of `fd` if it is of `kind`, else NULL. */
struct ff_fd *ff_fd_of(int fd, enum ff_kind kind);
/* The entry of `fd`, mapping the table on first use; NULL when fd is out of range or memory is short. */
struct ff_fd *ff_fd_slot(int fd);

/* `fd` was closed or replaced (or turned out to be new): forget it. A listener's control connection is
 * closed with it; a control connection closed by the app is detached from its listener. */
void ff_fd_forget(int fd);
/* ff_fd_forget for every known fd in [first, last]. */
void ff_fd_forget_range(unsigned int first, unsigned int last);

/* `to` was made a duplicate of `from`: it is what `from` is. A listener's copy gets its own duplicate of
 * the control connection (close-on-exec when `cloexec`), so the registration lasts while any copy of the
 * listening socket is open, in this process or a forked one. */
void ff_fd_copied(int from, int to, int cloexec);

/* Record `ctl` as the control connection of `listener`. */
void ff_fd_attach_control(int listener, int ctl);
/* Close the control connection of `listener`, if it has one. */
void ff_fd_close_control(int listener);

/* The app added (or modified) `fd` in epoll instance `epfd`, or removed it. */
void ff_fd_epoll_set(int epfd, int fd, const struct epoll_event *event);
void ff_fd_epoll_unset(int epfd, int fd);

#endif
