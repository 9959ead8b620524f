/* The libc calls libfreeflow.so interposes (LD_PRELOAD), each with what it does differently and why.
 *
 * Everything else (read, write, send, recv without MSG_TRUNC, poll, select, epoll_wait, sendfile, splice,
 * ioctl FIONREAD) works unchanged on a grafted socket: it is a connected AF_UNIX stream socket. A unix socket
 * the library does not know (it crossed exec) is recognised as grafted by its name when a real getsockname,
 * getpeername, getsockopt, setsockopt, sendto, sendmsg, recvfrom or recvmsg shows it to be unix, or at a
 * shutdown that is not SHUT_WR.
 * With FREEFLOW_DISABLE=1 every call below goes straight to libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "emulate.h"
#include "fdtable.h"
#include "graft.h"
#include "recognise.h"
#include "runtime.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define FF_EXPORT __attribute__((visibility("default")))

/* socket: unchanged, except that a stale entry under the new number (a close we never saw, e.g. a raw
 * syscall) is forgotten, so the new socket is not taken for what the old fd was. */
FF_EXPORT int socket(int domain, int type, int protocol)
{
    FF_INIT();
    int fd = ff_real.socket(domain, type, protocol);
    if (fd >= 0) {
        int saved = errno;
        ff_fd_forget(fd);
        errno = saved;
    }
    return fd;
}

/* socketpair: unchanged, except that stale entries under the two new numbers are forgotten, as for socket. */
FF_EXPORT int socketpair(int domain, int type, int protocol, int fds[2])
{
    FF_INIT();
    int rc = ff_real.socketpair(domain, type, protocol, fds);
    if (rc == 0) {
        int saved = errno;
        ff_fd_forget(fds[0]);
        ff_fd_forget(fds[1]);
        errno = saved;
    }
    return rc;
}

/* connect: a TCP socket connecting to an IPv4 address another container may have asks the router first
 * (INTENT, after binding an ephemeral port to name it). On "go" it connects for real, then asks for the
 * graft (GRAFT) and swaps the socket pair in under fd. A non-blocking socket is connected within the
 * call (bounded) and still reports EINPROGRESS. No router, "overlay", a timeout or a failed handshake:
 * the plain connect, with the app's errno. Other families, UDP, loopback: untouched. */
FF_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    FF_INIT();
    struct in_addr ip;
    uint16_t port;
    if (ff_disabled || !ff_container_address(addr, len, &ip, &port))
        return ff_real.connect(fd, addr, len);
    if (ff_fd_of(fd, FF_GRAFTED)) {
        errno = EISCONN; /* what connect() on a connected TCP socket says */
        return -1;
    }
    return ff_graft_connect(fd, addr, len, ip, port);
}

/* listen: after the real listen, a TCP socket reachable from other containers is registered with the
 * router (LISTEN) on a control connection kept open for as long as the socket listens, so that clients
 * know to ask for a graft. */
FF_EXPORT int listen(int fd, int backlog)
{
    FF_INIT();
    int rc = ff_real.listen(fd, backlog);
    if (rc == 0 && !ff_disabled) {
        int saved = errno;
        ff_listener_listen(fd, backlog);
        errno = saved;
    }
    return rc;
}

static int accepted(int listener, int fd)
{
    if (fd >= 0) {
        int saved = errno;
        ff_fd_forget(fd);
        if (!ff_disabled)
            ff_graft_accepted(listener, fd);
        errno = saved;
    }
    return fd;
}

/* accept: after the real accept on a registered listener, asks for the graft of the new connection
 * (GRAFT, role server) and swaps the socket pair in, keeping the flags the app asked for. The peer
 * address the app gets is the TCP one, as the kernel filled it in. */
FF_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    FF_INIT();
    return accepted(fd, ff_real.accept(fd, addr, len));
}

/* accept4: as accept; SOCK_NONBLOCK and SOCK_CLOEXEC carry over to the grafted socket. */
FF_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    FF_INIT();
    return accepted(fd, ff_real.accept4(fd, addr, len, flags));
}

/* close: forgets fd; closing a registered listener also closes its control connection, which ends the
 * registration once no other copy of the listener (dup, fork) holds one. */
FF_EXPORT int close(int fd)
{
    FF_INIT();
    int saved = errno;
    ff_fd_forget(fd);
    errno = saved;
    return ff_real.close(fd);
}

/* fclose: as close, for the stream's descriptor (a socket the app wrapped with fdopen): libc closes it
 * without calling close(). Forgotten before, while the number cannot yet be reused by another thread. */
FF_EXPORT int fclose(FILE *stream)
{
    FF_INIT();
    int saved = errno;
    int fd = stream ? fileno(stream) : -1; /* EBADF for a stream without a descriptor (fmemopen) */
    if (fd >= 0)
        ff_fd_forget(fd);
    errno = saved;
    return ff_real.fclose(stream);
}

/* close_range: as close, for every fd in the range (unless it only sets close-on-exec). */
FF_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
    FF_INIT();
    if (!(flags & (int)CLOSE_RANGE_CLOEXEC)) {
        int saved = errno;
        ff_fd_forget_range(first, last);
        errno = saved;
    }
    if (ff_real.close_range)
        return ff_real.close_range(first, last, flags);
    return (int)syscall(SYS_close_range, first, last, flags);
}

/* closefrom: as close, for every fd from lowfd up. */
FF_EXPORT void closefrom(int lowfd)
{
    FF_INIT();
    int saved = errno;
    ff_fd_forget_range(lowfd < 0 ? 0 : (unsigned int)lowfd, ~0U);
    errno = saved;
    if (ff_real.closefrom)
        ff_real.closefrom(lowfd);
    else
        syscall(SYS_close_range, lowfd < 0 ? 0U : (unsigned int)lowfd, ~0U, 0);
}

static int duplicated(int from, int to, int cloexec)
{
    if (to >= 0 && to != from) {
        int saved = errno;
        ff_fd_forget(to);
        ff_fd_copied(from, to, cloexec);
        errno = saved;
    }
    return to;
}

/* dup: the copy is what the original is (grafted, listener with its own copy of the control connection). */
FF_EXPORT int dup(int fd)
{
    FF_INIT();
    return duplicated(fd, ff_real.dup(fd), 0);
}

/* dup2: as dup; whatever newfd was is forgotten, as the kernel closed it. */
FF_EXPORT int dup2(int oldfd, int newfd)
{
    FF_INIT();
    return duplicated(oldfd, ff_real.dup2(oldfd, newfd), 0);
}

/* dup3: as dup2; a listener's control connection copy follows O_CLOEXEC. */
FF_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    FF_INIT();
    return duplicated(oldfd, ff_real.dup3(oldfd, newfd, flags), (flags & O_CLOEXEC) != 0);
}

static int fcntl_done(int fd, int cmd, intptr_t arg, int rc)
{
    if (rc < 0)
        return rc;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        return duplicated(fd, rc, cmd == F_DUPFD_CLOEXEC);
    if (cmd == F_SETFD) {
        /* The control connection crosses exec exactly when the listener does. */
        struct ff_fd *l = ff_fd_of(fd, FF_LISTENER);
        if (l && l->control >= 0) {
            int saved = errno;
            ff_real.fcntl(l->control, F_SETFD, (int)(arg & FD_CLOEXEC));
            errno = saved;
        }
    }
    return rc;
}

/* fcntl: F_DUPFD and F_DUPFD_CLOEXEC as dup; F_SETFD on a listener also sets its control connection's
 * close-on-exec. Every other command is libc's. */
FF_EXPORT int fcntl(int fd, int cmd, ...)
{
    FF_INIT();
    va_list args;
    va_start(args, cmd);
    intptr_t arg = va_arg(args, intptr_t); /* int or pointer, as libc reads it */
    va_end(args);
    return fcntl_done(fd, cmd, arg, ff_real.fcntl(fd, cmd, arg));
}

/* fcntl64: what fcntl is called as with _FILE_OFFSET_BITS=64; as fcntl. */
FF_EXPORT int fcntl64(int fd, int cmd, ...)
{
    FF_INIT();
    va_list args;
    va_start(args, cmd);
    intptr_t arg = va_arg(args, intptr_t);
    va_end(args);
    return fcntl_done(fd, cmd, arg, ff_real.fcntl64(fd, cmd, arg));
}

/* A descriptor the library does not know turned out to be a unix socket: it may be a grafted one that
 * crossed exec (recognise.h). Its entry if so. */
static struct ff_fd *crossed_exec(int fd)
{
    return ff_disabled ? NULL : ff_recognise(fd);
}

/* getsockname and getpeername: a grafted socket answers the TCP connection's addresses, not unix ones. */
static int name(int fd, struct sockaddr *addr, socklen_t *len, int local)
{
    const struct ff_fd *e = ff_fd_of(fd, FF_GRAFTED);
    if (e && addr && len)
        return ff_grafted_name(e, local, addr, len);
    socklen_t room = len ? *len : 0;
    int rc = local ? ff_real.getsockname(fd, addr, len) : ff_real.getpeername(fd, addr, len);
    if (rc == 0 && room >= sizeof(sa_family_t) && addr->sa_family == AF_UNIX && (e = crossed_exec(fd))) {
        *len = room;
        return ff_grafted_name(e, local, addr, len);
    }
    return rc;
}

/* getsockname: a grafted socket answers the TCP connection's local address, not an unnamed unix one. */
FF_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    FF_INIT();
    return name(fd, addr, len, 1);
}

/* getpeername: a grafted socket answers the TCP peer's address. */
FF_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    FF_INIT();
    return name(fd, addr, len, 0);
}

/* getsockopt: a grafted socket says SO_DOMAIN AF_INET(6) and SO_PROTOCOL IPPROTO_TCP; TCP options read
 * back what was set (TCP_NODELAY) or what TCP would say (TCP_INFO: an established connection, zeroed
 * counters; TCP_CONGESTION: the namespace's default); IP options read 0 (IP_TTL, IPV6_UNICAST_HOPS: 64);
 * socket-level options are the unix socket's. */
FF_EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
    FF_INIT();
    const struct ff_fd *e = ff_fd_of(fd, FF_GRAFTED);
    if (e)
        return ff_grafted_getsockopt(e, fd, level, name, value, len);
    int saved = errno;
    socklen_t room = len ? *len : 0;
    int rc = ff_real.getsockopt(fd, level, name, value, len);
    int said = 0; /* what an int option answered */
    if (rc == 0 && level == SOL_SOCKET && *len >= sizeof said)
        memcpy(&said, value, sizeof said);
    int unix_socket = rc < 0 ? errno == EOPNOTSUPP && level != SOL_SOCKET
                             : level == SOL_SOCKET && ((name == SO_DOMAIN && said == AF_UNIX) ||
                                                       (name == SO_PROTOCOL && said == 0));
    if (unix_socket && len && (e = crossed_exec(fd))) {
        errno = saved;
        *len = room;
        return ff_grafted_getsockopt(e, fd, level, name, value, len);
    }
    return rc;
}

/* setsockopt: on a grafted socket, TCP and IP options succeed without effect (there is no TCP under it;
 * TCP_NODELAY is remembered), socket-level ones apply to the unix socket (buffers, timeouts, linger). A
 * listener given TCP_DEFER_ACCEPT (nginx's `listen ... deferred`) is no longer grafted (graft.h). */
FF_EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
    FF_INIT();
    struct ff_fd *e = ff_fd_of(fd, FF_GRAFTED);
    if (e)
        return ff_grafted_setsockopt(e, fd, level, name, value, len);
    int saved = errno;
    int rc = ff_real.setsockopt(fd, level, name, value, len);
    if (rc == 0 && level == IPPROTO_TCP && name == TCP_DEFER_ACCEPT)
        ff_listener_deferred(fd);
    if (rc < 0 && errno == EOPNOTSUPP && level != SOL_SOCKET && (e = crossed_exec(fd))) {
        errno = saved;
        return ff_grafted_setsockopt(e, fd, level, name, value, len);
    }
    return rc;
}

/* epoll_ctl: unchanged, but remembers where each fd was added, because a graft replaces the socket under
 * fd and with it the app's registration: an app that adds a socket before connecting it (nginx) gets the
 * grafted socket added back the same way. */
FF_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
    FF_INIT();
    int rc = ff_real.epoll_ctl(epfd, op, fd, event);
    if (rc == 0 && !ff_disabled) {
        int saved = errno;
        if (op == EPOLL_CTL_DEL)
            ff_fd_epoll_unset(epfd, fd);
        else
            ff_fd_epoll_set(epfd, fd, event);
        errno = saved;
    }
    return rc;
}

/* sendto: TCP ignores the destination given on a connected socket (sockperf passes one on every send), a
 * unix stream socket refuses it with EISCONN: on a grafted socket the address is dropped. */
FF_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                         socklen_t addrlen)
{
    FF_INIT();
    if (addr && ff_fd_of(fd, FF_GRAFTED))
        return ff_real.sendto(fd, buf, len, flags, NULL, 0);
    ssize_t sent = ff_real.sendto(fd, buf, len, flags, addr, addrlen);
    if (sent < 0 && addr && errno == EISCONN && crossed_exec(fd))
        return ff_real.sendto(fd, buf, len, flags, NULL, 0);
    return sent;
}

/* sendmsg: as sendto, for msg_name. */
FF_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    FF_INIT();
    if (!msg || !msg->msg_name)
        return ff_real.sendmsg(fd, msg, flags);
    struct msghdr unnamed = *msg;
    unnamed.msg_name = NULL;
    unnamed.msg_namelen = 0;
    if (ff_fd_of(fd, FF_GRAFTED))
        return ff_real.sendmsg(fd, &unnamed, flags);
    ssize_t sent = ff_real.sendmsg(fd, msg, flags);
    if (sent < 0 && errno == EISCONN && crossed_exec(fd))
        return ff_real.sendmsg(fd, &unnamed, flags);
    return sent;
}

/* Whether `fd` is a grafted socket, known or one that crossed exec (errno is left as it was). */
static int is_grafted(int fd)
{
    int saved = errno;
    int grafted = ff_fd_of(fd, FF_GRAFTED) || crossed_exec(fd);
    errno = saved;
    return grafted;
}

/* A received source address of `len` bytes at `addr`, on a socket the library does not know as grafted,
 * shows it to be one that crossed exec: a unix address, and the router's name (recognise.h). */
static int crossed_exec_source(int fd, const struct sockaddr *addr, socklen_t len)
{
    return len >= sizeof(sa_family_t) && addr->sa_family == AF_UNIX && is_grafted(fd);
}

/* TCP's MSG_TRUNC discards up to `len` bytes without a buffer (haproxy drains a connection with
 * recv(fd, NULL, INT_MAX, MSG_TRUNC | MSG_DONTWAIT)); a unix stream socket copies into the buffer it is given,
 * and fails with EFAULT on NULL. So on a grafted socket the bytes go through a scratch buffer: the first read
 * with the caller's flags (it may wait), the next ones only while more is there. With MSG_PEEK, how many bytes
 * could be read now, up to the scratch buffer's size. */
static ssize_t discard(int fd, size_t len, int flags)
{
    char scratch[16384];
    flags &= ~MSG_TRUNC;
    if (flags & MSG_PEEK)
        return ff_real.recvfrom(fd, scratch, len < sizeof scratch ? len : sizeof scratch, flags, NULL, NULL);
    size_t total = 0;
    while (total < len) {
        size_t want = len - total < sizeof scratch ? len - total : sizeof scratch;
        ssize_t got = ff_real.recvfrom(fd, scratch, want, total ? flags | MSG_DONTWAIT : flags, NULL, NULL);
        if (got < 0 && total == 0)
            return -1;
        if (got <= 0)
            break;
        total += (size_t)got;
        if ((size_t)got < want)
            break;
    }
    return (ssize_t)total;
}

/* recv: only for MSG_TRUNC (discard above); glibc's recv does not go through recvfrom. */
FF_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    FF_INIT();
    if (__builtin_expect(flags & MSG_TRUNC, 0) && is_grafted(fd))
        return discard(fd, len, flags);
    return ff_real.recvfrom(fd, buf, len, flags, NULL, NULL);
}

/* recvfrom: TCP gives no source address (its length comes back 0), a unix stream socket the router's name
 * of the pair's other end: a grafted socket gives none either. MSG_TRUNC discards, as recv. */
FF_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *addrlen)
{
    FF_INIT();
    if (__builtin_expect(flags & MSG_TRUNC, 0) && is_grafted(fd)) {
        ssize_t got = discard(fd, len, flags);
        if (got >= 0 && addrlen)
            *addrlen = 0;
        return got;
    }
    if (!addr || !addrlen)
        return ff_real.recvfrom(fd, buf, len, flags, addr, addrlen);
    if (ff_fd_of(fd, FF_GRAFTED)) { /* sockperf's every receive: one lookup, no name copied */
        ssize_t got = ff_real.recvfrom(fd, buf, len, flags, NULL, NULL);
        if (got >= 0)
            *addrlen = 0;
        return got;
    }
    socklen_t room = *addrlen;
    ssize_t got = ff_real.recvfrom(fd, buf, len, flags, addr, addrlen);
    if (got >= 0 && crossed_exec_source(fd, addr, room < *addrlen ? room : *addrlen))
        *addrlen = 0;
    return got;
}

/* recvmsg: as recvfrom, for msg_name. */
FF_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    FF_INIT();
    socklen_t room = msg && msg->msg_name ? msg->msg_namelen : 0;
    ssize_t got = ff_real.recvmsg(fd, msg, flags);
    if (got >= 0 && room &&
        (ff_fd_of(fd, FF_GRAFTED) ||
         crossed_exec_source(fd, msg->msg_name, room < msg->msg_namelen ? room : msg->msg_namelen)))
        msg->msg_namelen = 0;
    return got;
}

/* shutdown: TCP's SHUT_RD stops only this side's reading, a socket pair's also the other end's writing
 * (its next send fails with EPIPE, or kills it with SIGPIPE): on a grafted socket SHUT_RD does nothing (a
 * read after it then waits for data where TCP's returns 0). SHUT_RDWR goes through: it ends a read blocked
 * in another thread, as on TCP, and the peer's writes fail one write sooner than TCP's, as after a close. */
FF_EXPORT int shutdown(int fd, int how)
{
    FF_INIT();
    if (how == SHUT_RD && !ff_disabled && is_grafted(fd))
        return 0;
    return ff_real.shutdown(fd, how);
}
