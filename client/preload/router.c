/* Talking to the router on @freeflow: the framing of protocol.h, descriptors received with SCM_RIGHTS,
 * every wait bounded with poll so that a slow or absent router only ever means "overlay". */
#define _GNU_SOURCE
#include "router.h"

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "runtime.h"

#define MAX_BODY 64 /* protocol.MAX_BODY */

/* What the router answered: a verdict, or a grafted socket. */
struct reply {
    uint8_t op;
    uint8_t verdict; /* FF_OP_VERDICT: FF_VERDICT_* */
    int fd;          /* FF_OP_GRAFTED: the socket that came with it, or -1 */
};

/* After the router failed to answer in time, new connections skip it for a while: a hung router must
 * not cost every connect() its reply budget. An event loop's INTENT that misses its own short budget is
 * its haste, once; HASTY_MISSES of them in a row is a router too slow to ask. */
#define QUIET_MS 5000
#define HASTY_MISSES 3
static uint64_t quiet_until;
static unsigned hasty_misses;

enum blame { BLAME_NONE, BLAME_NOW, BLAME_REPEATED };

int ff_router_skipped(void)
{
    return ff_now_ms() < __atomic_load_n(&quiet_until, __ATOMIC_RELAXED);
}

int ff_wait(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = ff_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int ready = poll(&p, 1, (int)(deadline - now));
        if (ready > 0)
            return 1;
        if (ready == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

int ff_router_open(int even_if_skipped)
{
    if (!even_if_skipped && ff_router_skipped())
        return -1;
    int ctl = ff_hidden_fd(ff_real.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (ctl < 0)
        return -1;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path + 1, FF_SOCKET_NAME, sizeof FF_SOCKET_NAME - 1); /* abstract: leading NUL */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof FF_SOCKET_NAME);
    /* A unix connect completes at once or fails (EAGAIN when the router's backlog is full). */
    if (ff_real.connect(ctl, (struct sockaddr *)&addr, len) < 0) {
        ff_debug("no router on @%s: %s", FF_SOCKET_NAME, strerror(errno));
        ff_real.close(ctl);
        return -1;
    }
    return ctl;
}

static int send_all(int ctl, const unsigned char *data, size_t len, uint64_t deadline)
{
    while (len) {
        ssize_t sent = send(ctl, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent > 0) {
            data += sent;
            len -= (size_t)sent;
        } else if (sent < 0 && errno == EINTR) {
            continue;
        } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ff_wait(ctl, POLLOUT, deadline) > 0) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Keep the first descriptor that came with a message in *fd, close any other. */
static void take_fds(struct msghdr *msg, int *fd)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int received;
            memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
            if (*fd < 0)
                *fd = received;
            else
                ff_real.close(received);
        }
    }
}

/* `blame`: whether a timeout means the router is stuck, so that new connections skip it for a while. */
static int recv_exact(int ctl, void *buf, size_t len, int *fd, uint64_t deadline, enum blame blame)
{
    unsigned char *at = buf;
    while (len) {
        union {
            char space[CMSG_SPACE(4 * sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {.iov_base = at, .iov_len = len};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
        ssize_t got = recvmsg(ctl, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (got > 0) {
            take_fds(&msg, fd);
            at += got;
            len -= (size_t)got;
        } else if (got == 0) {
            return -1; /* the router closed the connection: overlay */
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return -1;
        } else {
            int ready = ff_wait(ctl, POLLIN, deadline);
            if (ready == 0 && (blame == BLAME_NOW ||
                               (blame == BLAME_REPEATED &&
                                __atomic_add_fetch(&hasty_misses, 1, __ATOMIC_RELAXED) >= HASTY_MISSES))) {
                ff_debug("the router did not answer in time: skipping it for %d ms", QUIET_MS);
                __atomic_store_n(&quiet_until, ff_now_ms() + QUIET_MS, __ATOMIC_RELAXED);
                __atomic_store_n(&hasty_misses, 0, __ATOMIC_RELAXED);
            }
            if (ready <= 0)
                return -1;
        }
    }
    return 0;
}

/* Send one request and read one reply; -1 on anything unexpected (the caller falls back). */
static int request(int ctl, uint8_t op, const void *body, uint32_t len, struct reply *out, int timeout_ms,
                   enum blame blame)
{
    uint64_t deadline = ff_now_ms() + (uint64_t)timeout_ms;
    unsigned char message[sizeof(struct ff_header) + MAX_BODY];
    struct ff_header header = {.length = htole32(len), .magic = htole16(FF_MAGIC), .version = FF_VERSION,
                               .op = op};
    memcpy(message, &header, sizeof header);
    memcpy(message + sizeof header, body, len);
    if (send_all(ctl, message, sizeof header + len, deadline) < 0)
        return -1;

    out->fd = -1;
    if (recv_exact(ctl, &header, sizeof header, &out->fd, deadline, blame) < 0)
        goto fail;
    if (le16toh(header.magic) != FF_MAGIC || header.version != FF_VERSION)
        goto fail;
    out->op = header.op;
    uint32_t length = le32toh(header.length);
    if (header.op == FF_OP_VERDICT && length == sizeof(struct ff_verdictreply)) {
        struct ff_verdictreply verdict;
        if (recv_exact(ctl, &verdict, sizeof verdict, &out->fd, deadline, blame) < 0)
            goto fail;
        if (verdict.verdict != FF_VERDICT_OVERLAY && verdict.verdict != FF_VERDICT_GO &&
            verdict.verdict != FF_VERDICT_REFUSED)
            goto fail;
        out->verdict = verdict.verdict;
    } else if (header.op == FF_OP_GRAFTED && length == sizeof(struct ff_graftedreply)) {
        struct ff_graftedreply grafted;
        if (recv_exact(ctl, &grafted, sizeof grafted, &out->fd, deadline, blame) < 0)
            goto fail;
    } else {
        ff_debug("unexpected reply op %u length %u from the router", header.op, length);
        goto fail;
    }
    return 0;
fail:
    if (out->fd >= 0)
        ff_real.close(out->fd);
    out->fd = -1;
    return -1;
}

int ff_router_intent(int ctl, struct in_addr dst, uint16_t dst_port, uint16_t src_port, int timeout_ms)
{
    struct ff_intent intent;
    memcpy(intent.dst_ip, &dst, sizeof intent.dst_ip);
    intent.dst_port = htole16(dst_port);
    intent.src_port = htole16(src_port);
    struct reply reply;
    if (request(ctl, FF_OP_INTENT, &intent, sizeof intent, &reply, timeout_ms,
                timeout_ms >= FF_REPLY_MS ? BLAME_NOW : BLAME_REPEATED) < 0)
        return -1;
    __atomic_store_n(&hasty_misses, 0, __ATOMIC_RELAXED);
    if (reply.fd >= 0)
        ff_real.close(reply.fd);
    return reply.op == FF_OP_VERDICT ? reply.verdict : -1;
}

int ff_router_graft(int ctl, int role, struct in_addr peer, uint16_t peer_port, uint16_t local_port,
                    int timeout_ms)
{
    struct ff_graft graft;
    memset(&graft, 0, sizeof graft);
    graft.role = (uint8_t)role;
    memcpy(graft.peer_ip, &peer, sizeof graft.peer_ip);
    graft.peer_port = htole16(peer_port);
    graft.local_port = htole16(local_port);
    struct reply reply;
    if (request(ctl, FF_OP_GRAFT, &graft, sizeof graft, &reply, timeout_ms,
                timeout_ms >= FF_GRAFT_MS ? BLAME_NOW : BLAME_NONE) < 0)
        return -1;
    if (reply.op == FF_OP_GRAFTED && reply.fd >= 0)
        return reply.fd;
    if (reply.fd >= 0)
        ff_real.close(reply.fd);
    return -1;
}

int ff_router_listen(int ctl, uint16_t port, uint16_t backlog)
{
    struct ff_listen listen = {.port = htole16(port), .backlog = htole16(backlog)};
    struct reply reply;
    if (request(ctl, FF_OP_LISTEN, &listen, sizeof listen, &reply, FF_REPLY_MS, BLAME_NOW) < 0)
        return -1;
    if (reply.fd >= 0)
        ff_real.close(reply.fd);
    return reply.op == FF_OP_VERDICT && reply.verdict == FF_VERDICT_GO ? 0 : -1;
}
