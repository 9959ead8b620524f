/* The graft sequences of protocol.py (connect-then-swap): the client's INTENT, connect and GRAFT, the
 * server's LISTEN and per-accept GRAFT, the one-byte handshake, and the swap of the new socket under the
 * application's descriptor. Any failure before the swap leaves the kernel TCP connection in place. */
#ifndef FREEFLOW_GRAFT_H
#define FREEFLOW_GRAFT_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

/* The IPv4 address and port in `addr` (AF_INET, or IPv4-mapped AF_INET6) when it could belong to another
 * container: not loopback, unspecified, multicast or broadcast. */
int ff_container_address(const struct sockaddr *addr, socklen_t len, struct in_addr *ip, uint16_t *port);

/* connect() of a TCP socket to `ip`:`port` (the decoded `addr`), grafted when the router pairs it. Returns
 * and sets errno as connect() would. */
int ff_graft_connect(int fd, const struct sockaddr *addr, socklen_t len, struct in_addr ip, uint16_t port);

/* listen() succeeded on `fd`: register it with the router if it is a TCP socket other containers can reach. */
void ff_listener_listen(int fd, int backlog);

/* setsockopt(TCP_DEFER_ACCEPT) succeeded on `fd`: a registered listener that now defers its accepts until
 * data arrives is registered no longer (a client waiting for the graft sends nothing, so the server would
 * accept only after the router gave up: every connection would wait that long, then stay on TCP). */
void ff_listener_deferred(int fd);

/* accept() on `listener` returned `fd`: graft it when the router pairs it. Listeners the library has not
 * seen listen (inherited through exec) are classified here first. Leaves errno alone. */
void ff_graft_accepted(int listener, int fd);

#endif
