/* Grafted sockets that crossed exec, recognised by the name the router gave their end. */
#define _GNU_SOURCE
#include "recognise.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "protocol.h"
#include "runtime.h"

/* TCP's own defaults for the options a grafted socket remembers (emulate.c's order): the TCP socket they
 * were read from is gone. */
static const int tcp_defaults[FF_TCP_KEPT] = {7200, 75, 9, 0};

/* "A.B.C.D:PORT" at *text (advanced past it) into `out`. */
static int parse_address(const char **text, struct sockaddr_in *out)
{
    unsigned a, b, c, d, port;
    int used = 0;
    if (sscanf(*text, "%3u.%3u.%3u.%3u:%5u%n", &a, &b, &c, &d, &port, &used) != 5 || used == 0)
        return 0;
    if (a > 255 || b > 255 || c > 255 || d > 255 || port == 0 || port > 65535)
        return 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    out->sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d);
    *text += used;
    return 1;
}

/* The addresses in the router's name for `fd`'s end: 1 when it has one, 0 for another unix socket, -1 when
 * fd is no unix socket. */
static int named_end(int fd, struct sockaddr_in *local, struct sockaddr_in *peer)
{
    struct sockaddr_un name;
    socklen_t len = sizeof name;
    if (ff_real.getsockname(fd, (struct sockaddr *)&name, &len) < 0 || name.sun_family != AF_UNIX)
        return -1;
    size_t size = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (size < 2 || size > sizeof name.sun_path || name.sun_path[0] != '\0')
        return 0; /* unnamed, or a path: not the router's */
    char text[sizeof name.sun_path];
    memcpy(text, name.sun_path + 1, size - 1);
    text[size - 1] = '\0';
    const size_t prefix = sizeof FF_GRAFT_NAME_PREFIX - 1;
    const char *at = text + prefix;
    return strncmp(text, FF_GRAFT_NAME_PREFIX, prefix) == 0 && parse_address(&at, local) && *at++ == ' ' &&
           parse_address(&at, peer) && *at == ' ';
}

struct ff_fd *ff_recognise(int fd)
{
    const struct ff_fd *known = ff_fd_at(fd);
    if (known && known->kind != FF_UNKNOWN)
        return NULL;
    struct ff_fd *e = ff_fd_slot(fd);
    if (!e)
        return NULL;
    struct sockaddr_in local, peer;
    int named = named_end(fd, &local, &peer);
    if (named <= 0) {
        if (named == 0)
            e->kind = FF_PLAIN; /* looked at once: an ordinary unix socket costs no further getsockname */
        return NULL;
    }
    memset(&e->local, 0, sizeof e->local);
    memset(&e->peer, 0, sizeof e->peer);
    memcpy(&e->local, &local, sizeof local);
    memcpy(&e->peer, &peer, sizeof peer);
    e->local_len = e->peer_len = sizeof local;
    e->nodelay = 0;
    e->host_tcp = 0;
    memcpy(e->tcp_kept, tcp_defaults, sizeof e->tcp_kept);
    __atomic_store_n(&e->kind, FF_GRAFTED, __ATOMIC_RELEASE);
    ff_debug("fd %d: recognised as grafted " FF_ADDR_FMT, fd, FF_ADDR_ARGS(peer.sin_addr, ntohs(peer.sin_port)));
    return e;
}
