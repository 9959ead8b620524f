/* What a grafted socket answers so that it passes for the TCP connection it replaced: its addresses and
 * the socket options a TCP application sets and reads. */
#ifndef FREEFLOW_EMULATE_H
#define FREEFLOW_EMULATE_H

#include <sys/socket.h>

#include "fdtable.h"

/* getsockname (local) or getpeername (!local) of a grafted socket. */
int ff_grafted_name(const struct ff_fd *e, int local, struct sockaddr *addr, socklen_t *len);

/* Read into `e` the TCP options a grafted socket remembers (keepalive timing, user timeout: tcp_kept) from the TCP
 * socket `tcp` it replaces; ff_grafted_put_options sets them on a real TCP socket `fd` (grafted across hosts). */
void ff_grafted_take_options(struct ff_fd *e, int tcp);
void ff_grafted_put_options(const struct ff_fd *e, int fd);

int ff_grafted_getsockopt(const struct ff_fd *e, int fd, int level, int name, void *value, socklen_t *len);
int ff_grafted_setsockopt(struct ff_fd *e, int fd, int level, int name, const void *value, socklen_t len);

#endif
