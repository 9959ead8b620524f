/* The graft sequences of protocol.py (connect-then-swap): the kernel connection always exists first, so
 * every failure before the swap simply leaves the application on it. */
#define _GNU_SOURCE
#include "graft.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/time.h>

#include "emulate.h"
#include "fdtable.h"
#include "router.h"
#include "runtime.h"

static int reachable(struct in_addr ip)
{
    uint32_t host = ntohl(ip.s_addr);
    uint8_t first = (uint8_t)(host >> 24);
    return first != 0 && first != 127 && first < 224; /* not this host, not multicast or broadcast */
}

/* The IPv4 address and port in `addr`, whether AF_INET or IPv4-mapped AF_INET6. */
static int inet4(const struct sockaddr *addr, socklen_t len, struct in_addr *ip, uint16_t *port)
{
    struct sockaddr_in6 any; /* a copy: `addr` need not be aligned */
    if (!addr || len < sizeof(sa_family_t))
        return 0;
    memset(&any, 0, sizeof any);
    memcpy(&any, addr, len < sizeof any ? len : sizeof any);
    if (any.sin6_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, &any, sizeof in);
        *ip = in.sin_addr;
        *port = ntohs(in.sin_port);
        return 1;
    }
    if (any.sin6_family == AF_INET6 && len >= sizeof(struct sockaddr_in6) &&
        IN6_IS_ADDR_V4MAPPED(&any.sin6_addr)) {
        memcpy(ip, &any.sin6_addr.s6_addr[12], sizeof *ip);
        *port = ntohs(any.sin6_port);
        return 1;
    }
    return 0;
}

int ff_container_address(const struct sockaddr *addr, socklen_t len, struct in_addr *ip, uint16_t *port)
{
    return inet4(addr, len, ip, port) && reachable(*ip) && *port != 0;
}

static int int_option(int fd, int level, int name)
{
    int value = 0;
    socklen_t len = sizeof value;
    return ff_real.getsockopt(fd, level, name, &value, &len) == 0 ? value : -1;
}

static int is_tcp(int fd)
{
    return int_option(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM &&
           int_option(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP;
}

static uint16_t local_port(int fd)
{
    struct sockaddr_in6 addr;
    socklen_t len = sizeof addr;
    if (ff_real.getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        return 0;
    /* sin_port and sin6_port sit at the same offset. */
    return ntohs(addr.sin6_port);
}

/* Bind an unbound socket to the wildcard address and an ephemeral port, which INTENT must name. */
static int bind_ephemeral(int fd, int family)
{
    struct sockaddr_in6 any;
    memset(&any, 0, sizeof any);
    any.sin6_family = (sa_family_t)family;
    socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    return bind(fd, (struct sockaddr *)&any, len);
}

/* A connect() in progress: wait for it until `deadline`. 0 when connected, else EINPROGRESS, whether it is
 * still going or failed: a failure's error stays pending on the socket (SO_ERROR, EPOLLERR) for the program
 * to find, as TCP leaves it, so the library never reads it. */
static int finish_connect(int fd, uint64_t deadline)
{
    struct sockaddr_in6 peer;
    socklen_t len = sizeof peer;
    if (ff_wait(fd, POLLOUT, deadline) <= 0 || ff_real.getpeername(fd, (struct sockaddr *)&peer, &len) < 0)
        return EINPROGRESS;
    return 0;
}

/* Both ends write one byte and read the other's, before `deadline`: an end whose peer never got its socket
 * reads EOF. */
static int handshake(int s, uint64_t deadline)
{
    unsigned char byte = 1;
    for (;;) {
        ssize_t sent = send(s, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent == 1)
            break;
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && errno == EAGAIN && ff_wait(s, POLLOUT, deadline) > 0)
            continue;
        return 0;
    }
    for (;;) {
        ssize_t got = recv(s, &byte, 1, MSG_DONTWAIT);
        if (got == 1)
            return byte == 1;
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN && ff_wait(s, POLLIN, deadline) > 0)
            continue;
        return 0;
    }
}

/* Socket options the app set on its TCP socket (before connect, or on the listener an accepted socket
 * inherits them from) hold on the new socket too: timeouts, keepalive, priority, linger. Buffer sizes are
 * left as the new socket has them: a TCP socket's default sizes are not the app's choice. */
static void copy_socket_options(int from, int to)
{
    static const int timeouts[] = {SO_RCVTIMEO, SO_SNDTIMEO};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        struct timeval tv;
        socklen_t len = sizeof tv;
        if (ff_real.getsockopt(from, SOL_SOCKET, timeouts[i], &tv, &len) == 0 && (tv.tv_sec || tv.tv_usec))
            ff_real.setsockopt(to, SOL_SOCKET, timeouts[i], &tv, len);
    }
    static const int flags[] = {SO_KEEPALIVE, SO_PRIORITY};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        int value = int_option(from, SOL_SOCKET, flags[i]);
        if (value > 0)
            ff_real.setsockopt(to, SOL_SOCKET, flags[i], &value, sizeof value);
    }
    struct linger linger;
    socklen_t len = sizeof linger;
    if (ff_real.getsockopt(from, SOL_SOCKET, SO_LINGER, &linger, &len) == 0 && linger.l_onoff)
        ff_real.setsockopt(to, SOL_SOCKET, SO_LINGER, &linger, len);
}

/* Put socket `s` under the app's `fd`, keeping fd's O_NONBLOCK and FD_CLOEXEC. 1 on success. */
static int swap(int fd, int s)
{
    int status = ff_real.fcntl(fd, F_GETFL);
    int flags = ff_real.fcntl(fd, F_GETFD);
    int fresh = ff_real.fcntl(s, F_GETFL);
    if (status < 0 || flags < 0 || fresh < 0)
        return 0;
    if (ff_real.fcntl(s, F_SETFL, (fresh & ~O_NONBLOCK) | (status & O_NONBLOCK)) < 0)
        return 0;
    if (ff_real.dup3(s, fd, (flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
        return 0;
    ff_real.close(s);
    /* Closing the TCP socket took it out of the epoll instance the app had already added fd to (nginx
     * adds a socket before connecting it): add the new socket the same way. */
    struct ff_fd *e = ff_fd_at(fd);
    if (e && e->epfd) {
        struct ff_fd *ep = ff_fd_at(e->epfd - 1);
        struct epoll_event event = e->event;
        if (ep && ep->gen == e->epgen && ff_real.epoll_ctl(e->epfd - 1, EPOLL_CTL_ADD, fd, &event) < 0)
            ff_debug("fd %d: cannot add the grafted socket to epoll %d: %s", fd, e->epfd - 1, strerror(errno));
    }
    return 1;
}

/* Ask for the socket pair on `ctl` and check it with the peer, both before `deadline` (0: the usual bounds),
 * and swap it in under `fd`. 1 when grafted. */
static int graft(int ctl, int fd, int role, struct in_addr peer, uint16_t peer_port, uint16_t port,
                 uint64_t deadline)
{
    struct ff_fd *e = ff_fd_slot(fd);
    uint64_t now = ff_now_ms();
    if (!e || (deadline && now >= deadline))
        return 0;
    /* What the TCP socket answers, read before the GRAFT: past the handshake nothing may depend on the TCP
     * connection, since the peer then gives up its end, and one with SO_LINGER {on, 0} resets it. */
    struct ff_fd facts;
    memset(&facts, 0, sizeof facts);
    facts.local_len = sizeof facts.local;
    facts.peer_len = sizeof facts.peer;
    if (ff_real.getsockname(fd, (struct sockaddr *)&facts.local, &facts.local_len) < 0 ||
        ff_real.getpeername(fd, (struct sockaddr *)&facts.peer, &facts.peer_len) < 0)
        return 0;
    facts.nodelay = int_option(fd, IPPROTO_TCP, TCP_NODELAY) > 0;
    ff_grafted_take_options(&facts, fd);
    int s = ff_router_graft(ctl, role, peer, peer_port, port, deadline ? (int)(deadline - now) : FF_GRAFT_MS);
    if (s < 0) {
        ff_debug("fd %d: the router leaves " FF_ADDR_FMT " on the overlay", fd, FF_ADDR_ARGS(peer, peer_port));
        return 0;
    }
    if (!handshake(s, deadline ? deadline : ff_now_ms() + FF_HANDSHAKE_MS)) {
        ff_debug("fd %d: the peer did not take its end: overlay", fd);
        ff_real.close(s);
        return 0;
    }
    copy_socket_options(fd, s);
    if (!swap(fd, s)) {
        ff_debug("fd %d: swap failed: %s", fd, strerror(errno));
        ff_real.close(s);
        return 0;
    }
    e->kind = FF_GRAFTED;
    e->nodelay = facts.nodelay;
    memcpy(e->tcp_kept, facts.tcp_kept, sizeof e->tcp_kept);
    /* Across hosts the router hands over a real TCP connection: what the app set on its socket holds. */
    e->host_tcp = int_option(fd, SOL_SOCKET, SO_DOMAIN) != AF_UNIX;
    if (e->host_tcp) {
        int on = 1;
        if (facts.nodelay)
            ff_real.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        ff_grafted_put_options(e, fd);
    }
    e->local = facts.local;
    e->local_len = facts.local_len;
    e->peer = facts.peer;
    e->peer_len = facts.peer_len;
    ff_debug("fd %d: grafted %s " FF_ADDR_FMT, fd, role == FF_ROLE_CLIENT ? "to" : "from",
             FF_ADDR_ARGS(peer, peer_port));
    return 1;
}

int ff_graft_connect(int fd, const struct sockaddr *addr, socklen_t len, struct in_addr ip, uint16_t port)
{
    int saved = errno;
    struct sockaddr_in6 connected;
    socklen_t connected_len = sizeof connected;
    if (!ff_fd_slot(fd) || !is_tcp(fd) ||
        ff_real.getpeername(fd, (struct sockaddr *)&connected, &connected_len) == 0)
        goto plain;
    /* An event loop's socket gets a short budget for the whole graft; a blocking one waits for the router. */
    int status = ff_real.fcntl(fd, F_GETFL);
    int nonblocking = status >= 0 && (status & O_NONBLOCK);
    uint64_t deadline = ff_now_ms() + (nonblocking ? FF_NONBLOCK_MS : FF_GRAFT_MS);
    int ctl = ff_router_open(0);
    if (ctl < 0)
        goto plain;
    uint16_t sport = local_port(fd);
    if (sport == 0 && (bind_ephemeral(fd, addr->sa_family) < 0 || (sport = local_port(fd)) == 0))
        goto plain_close;
    int verdict = ff_router_intent(ctl, ip, port, sport, nonblocking ? FF_NONBLOCK_MS : FF_REPLY_MS);
    if (verdict != FF_VERDICT_GO) {
        ff_debug("fd %d: " FF_ADDR_FMT " stays on the overlay (verdict %d)", fd, FF_ADDR_ARGS(ip, port),
                 verdict);
        goto plain_close;
    }

    int rc = ff_real.connect(fd, addr, len);
    int error = rc < 0 ? errno : 0;
    if (error == EINPROGRESS)
        error = finish_connect(fd, deadline);
    if (error) {
        ff_real.close(ctl); /* the router forgets the connection it was told of */
        errno = error;
        return -1;
    }
    graft(ctl, fd, FF_ROLE_CLIENT, ip, port, sport, nonblocking ? deadline : 0);
    ff_real.close(ctl);
    /* A non-blocking socket reports the connect as in progress, as the app expects: it then finds the
     * socket writable and SO_ERROR 0, grafted or not. */
    errno = rc < 0 ? EINPROGRESS : saved;
    return rc;

plain_close:
    ff_real.close(ctl);
plain:
    errno = saved;
    return ff_real.connect(fd, addr, len);
}

/* Whether listening socket `fd` can be reached by other containers over TCP, and accepts without waiting
 * for data (TCP_DEFER_ACCEPT: ff_listener_deferred); its port if so. */
static int reachable_listener(int fd, uint16_t *port)
{
    struct sockaddr_in6 addr;
    socklen_t len = sizeof addr;
    if (!is_tcp(fd) || int_option(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0 ||
        ff_real.getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        return 0;
    *port = ntohs(addr.sin6_port);
    if (addr.sin6_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, &addr, sizeof in);
        return in.sin_addr.s_addr == htonl(INADDR_ANY) || reachable(in.sin_addr);
    }
    if (addr.sin6_family != AF_INET6 || int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY) != 0)
        return 0;
    if (IN6_IS_ADDR_UNSPECIFIED(&addr.sin6_addr))
        return 1;
    struct in_addr ip;
    uint16_t ignored;
    return inet4((struct sockaddr *)&addr, len, &ip, &ignored) && reachable(ip);
}

/* Keep listener `fd` registered: drop a control connection the router closed (it restarted), and ask
 * again when it is time to. */
static void keep_registered(int fd, struct ff_fd *l)
{
    if (l->control >= 0) {
        struct pollfd p = {.fd = l->control, .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            return;
        ff_debug("fd %d: the router dropped the listener of port %u", fd, l->port);
        ff_fd_close_control(fd);
    }
    if (ff_now_ms() < l->retry_ms || __atomic_exchange_n(&l->registering, 1, __ATOMIC_ACQ_REL))
        return;
    int ctl = ff_router_open(0);
    if (ctl >= 0 && ff_router_listen(ctl, l->port, l->backlog) == 0) {
        /* The registration lives as long as the listening socket, across exec too when it does. */
        int flags = ff_real.fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC))
            ff_real.fcntl(ctl, F_SETFD, 0);
        ff_fd_attach_control(fd, ctl);
        ff_debug("fd %d: port %u registered with the router", fd, l->port);
    } else {
        if (ctl >= 0)
            ff_real.close(ctl);
        l->retry_ms = ff_now_ms() + FF_RETRY_MS;
    }
    __atomic_store_n(&l->registering, 0, __ATOMIC_RELEASE);
}

/* Classify listening socket `fd`, registering it when it is ours. */
static struct ff_fd *adopt(int fd, int backlog)
{
    struct ff_fd *l = ff_fd_slot(fd);
    uint16_t port = 0;
    if (!l)
        return NULL;
    if (!reachable_listener(fd, &port)) {
        l->kind = FF_PLAIN;
        return NULL;
    }
    l->kind = FF_LISTENER;
    l->control = -1;
    l->port = port;
    l->backlog = (uint16_t)(backlog < 0 ? 0 : backlog > 65535 ? 65535 : backlog);
    l->retry_ms = 0;
    keep_registered(fd, l);
    return l;
}

void ff_listener_listen(int fd, int backlog)
{
    struct ff_fd *l = ff_fd_of(fd, FF_LISTENER);
    if (l)
        keep_registered(fd, l); /* listen() again, to change the backlog */
    else
        adopt(fd, backlog);
}

void ff_listener_deferred(int fd)
{
    int saved = errno;
    struct ff_fd *l = ff_fd_of(fd, FF_LISTENER);
    if (l && int_option(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0) {
        ff_fd_close_control(fd);
        l->kind = FF_PLAIN;
        ff_debug("fd %d: port %u defers its accepts: no longer registered with the router", fd, l->port);
    }
    errno = saved;
}

void ff_graft_accepted(int listener, int fd)
{
    int saved = errno;
    struct ff_fd *l = ff_fd_at(listener);
    if (!l || l->kind == FF_UNKNOWN)
        l = adopt(listener, SOMAXCONN); /* listening since before exec */
    else if (l->kind == FF_LISTENER)
        keep_registered(listener, l);
    else
        l = NULL;
    /* Only a registered listener can have clients that asked for a graft. */
    if (!l || l->control < 0)
        goto out;

    struct sockaddr_in6 peer;
    socklen_t len = sizeof peer;
    struct in_addr ip;
    uint16_t peer_port;
    if (ff_real.getpeername(fd, (struct sockaddr *)&peer, &len) < 0 ||
        !ff_container_address((struct sockaddr *)&peer, len, &ip, &peer_port))
        goto out;
    /* Sent even while the router is skipped (a client may wait for it there), but then briefly: a router
     * that hung since it took the registration must not hold every accept for FF_GRAFT_MS. */
    int ctl = ff_router_open(1);
    if (ctl < 0)
        goto out;
    uint64_t deadline = ff_router_skipped() ? ff_now_ms() + FF_NONBLOCK_MS : 0;
    graft(ctl, fd, FF_ROLE_SERVER, ip, peer_port, l->port, deadline);
    ff_real.close(ctl);
out:
    errno = saved;
}
