/* Talking to the router on @freeflow: the framing of protocol.h, descriptors received with SCM_RIGHTS,
 * every wait bounded with poll so that a slow or absent router only ever means "overlay". */
#ifndef FREEFLOW_ROUTER_H
#define FREEFLOW_ROUTER_H

#include <netinet/in.h>
#include <stdint.h>

#include "protocol.h"

/* INTENT and LISTEN: the router answers at once, so waiting longer only delays the overlay. */
#define FF_REPLY_MS 500
/* GRAFT: above the router's own wait for the other end (FREEFLOW_GRAFT_WAIT, 0.5 s), so the router
 * decides and both ends hear the same answer. */
#define FF_GRAFT_MS 2000
/* The one-byte handshake on a new socket: both ends got theirs together, so this only runs out when
 * something is badly wrong. */
#define FF_HANDSHAKE_MS 2000
/* A non-blocking socket belongs to an event loop that must not stall: its TCP connect and the server's
 * accept together get this long to be grafted, after which the connection simply stays on the overlay. */
#define FF_NONBLOCK_MS 100
/* A listener the router did not take is offered again at most this often (on accept). */
#define FF_RETRY_MS 1000

/* A new control connection to the router of this network namespace (non-blocking, close-on-exec), or -1
 * when there is none, or when the router is being skipped (it was too slow lately) and `even_if_skipped`
 * is 0. An accepted connection's GRAFT passes 1: a client may be waiting for it in the router. */
int ff_router_open(int even_if_skipped);

/* Whether the router is being skipped: it was too slow to answer lately. */
int ff_router_skipped(void);

/* INTENT(dst, src_port): the router's FF_VERDICT_*, or -1 when it did not answer within `timeout_ms`
 * (FF_REPLY_MS: a router that slow is skipped for a while; or a non-blocking socket's shorter budget,
 * the caller's own haste, unless it is missed several times in a row). */
int ff_router_intent(int ctl, struct in_addr dst, uint16_t dst_port, uint16_t src_port, int timeout_ms);

/* GRAFT: the new connected socket (close-on-exec) when the router pairs us within `timeout_ms`, else -1
 * (overlay). A timeout shorter than FF_GRAFT_MS is the caller's own budget, not a sign of a hung router. */
int ff_router_graft(int ctl, int role, struct in_addr peer, uint16_t peer_port, uint16_t local_port,
                    int timeout_ms);

/* LISTEN(port, backlog): 0 when the router took the registration. */
int ff_router_listen(int ctl, uint16_t port, uint16_t backlog);

/* Wait until `fd` has `events` (or an error) before `deadline` (ff_now_ms): 1 ready, 0 timed out,
 * -1 poll failed. Signals do not cut the wait short. */
int ff_wait(int fd, short events, uint64_t deadline);

#endif
