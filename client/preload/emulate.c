/* What a grafted socket answers so that it passes for the TCP connection it replaced: the recorded TCP
 * addresses, and socket options that either apply to the unix socket as they are (buffers, timeouts,
 * keepalive, linger) or have no meaning without TCP underneath (Nagle, keepalive timing, IP options),
 * which succeed and read back plausible values. A socket grafted onto a host TCP connection to another
 * host has TCP underneath: its TCP options are the real ones; only its addresses are the overlay's. */
#define _GNU_SOURCE
#include "emulate.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

/* What TCP_MAXSEG and the MSS fields of TCP_INFO answer: loopback's, the closest TCP comes to a socket
 * pair. */
#define FF_MSS 65483

int ff_grafted_name(const struct ff_fd *e, int local, struct sockaddr *addr, socklen_t *len)
{
    const void *src = local ? (const void *)&e->local : (const void *)&e->peer;
    socklen_t src_len = local ? e->local_len : e->peer_len;
    memcpy(addr, src, *len < src_len ? *len : src_len);
    *len = src_len; /* as the kernel does: the full length, even when it truncated */
    return 0;
}

static int answer(void *value, socklen_t *len, const void *data, socklen_t size)
{
    socklen_t n = *len < size ? *len : size;
    memcpy(value, data, n);
    *len = n;
    return 0;
}

static int answer_int(void *value, socklen_t *len, int data)
{
    return answer(value, len, &data, sizeof data);
}

/* The TCP options a grafted socket keeps as set, beside TCP_NODELAY: ff_fd.tcp_kept in this order. */
static const int kept_names[FF_TCP_KEPT] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT};

/* The index of `name` in kept_names, or -1. */
static int kept_index(int name)
{
    for (int i = 0; i < FF_TCP_KEPT; i++)
        if (kept_names[i] == name)
            return i;
    return -1;
}

void ff_grafted_take_options(struct ff_fd *e, int tcp)
{
    for (int i = 0; i < FF_TCP_KEPT; i++) {
        int value = 0;
        socklen_t len = sizeof value;
        if (ff_real.getsockopt(tcp, IPPROTO_TCP, kept_names[i], &value, &len) == 0)
            e->tcp_kept[i] = value;
    }
}

void ff_grafted_put_options(const struct ff_fd *e, int fd)
{
    for (int i = 0; i < FF_TCP_KEPT; i++)
        if (e->tcp_kept[i] > 0)
            ff_real.setsockopt(fd, IPPROTO_TCP, kept_names[i], &e->tcp_kept[i], sizeof e->tcp_kept[i]);
}

/* TCP_CONGESTION: the algorithm a new TCP socket of this namespace gets, as its 16-byte name. */
static int congestion(void *value, socklen_t *len)
{
    char name[16] = {0};
    int fd = open("/proc/sys/net/ipv4/tcp_congestion_control", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, name, sizeof name - 1) : -1;
    if (fd >= 0)
        ff_real.close(fd);
    if (got <= 0)
        strcpy(name, "cubic"); /* the kernel's own default */
    name[strcspn(name, "\n")] = '\0';
    return answer(value, len, name, sizeof name);
}

static int tcp_option(const struct ff_fd *e, int name, void *value, socklen_t *len)
{
    int kept = kept_index(name);
    if (kept >= 0)
        return answer_int(value, len, e->tcp_kept[kept]);
    switch (name) {
    case TCP_NODELAY:
        return answer_int(value, len, e->nodelay);
    case TCP_MAXSEG:
        return answer_int(value, len, FF_MSS);
    case TCP_CONGESTION:
        return congestion(value, len);
    case TCP_INFO: {
        struct tcp_info info;
        memset(&info, 0, sizeof info);
        info.tcpi_state = TCP_ESTABLISHED;
        info.tcpi_snd_mss = info.tcpi_rcv_mss = info.tcpi_advmss = FF_MSS;
        return answer(value, len, &info, sizeof info);
    }
    default:
        return answer_int(value, len, 0);
    }
}

int ff_grafted_getsockopt(const struct ff_fd *e, int fd, int level, int name, void *value, socklen_t *len)
{
    if (!value || !len)
        return ff_real.getsockopt(fd, level, name, value, len); /* the kernel's EFAULT */
    if (level == SOL_SOCKET && name == SO_DOMAIN)
        return answer_int(value, len, e->local.sin6_family);
    if (level == SOL_SOCKET && name == SO_PROTOCOL)
        return answer_int(value, len, IPPROTO_TCP);
    if (level == IPPROTO_TCP)
        return e->host_tcp ? ff_real.getsockopt(fd, level, name, value, len) : tcp_option(e, name, value, len);
    if (level == IPPROTO_IP && name == IP_OPTIONS)
        return *len = 0, 0; /* none, as TCP says: sshd drops a connection that has any */
    if ((level == IPPROTO_IP && name == IP_TTL) || (level == IPPROTO_IPV6 && name == IPV6_UNICAST_HOPS))
        return answer_int(value, len, 64); /* the kernel's default hop limit */
    if (level == IPPROTO_IP || level == IPPROTO_IPV6)
        return answer_int(value, len, 0);
    int saved = errno;
    int rc = ff_real.getsockopt(fd, level, name, value, len);
    if (rc < 0 && level == SOL_SOCKET && errno == ENOPROTOOPT) {
        errno = saved;
        return answer_int(value, len, 0);
    }
    return rc;
}

int ff_grafted_setsockopt(struct ff_fd *e, int fd, int level, int name, const void *value, socklen_t len)
{
    if (level == IPPROTO_TCP && e->host_tcp)
        return ff_real.setsockopt(fd, level, name, value, len);
    if (level == IPPROTO_TCP || level == IPPROTO_IP || level == IPPROTO_IPV6) {
        if (!value && len)
            return errno = EFAULT, -1;
        int kept = level == IPPROTO_TCP ? kept_index(name) : -1;
        if (level == IPPROTO_TCP && (name == TCP_NODELAY || kept >= 0)) {
            int on;
            if (len < sizeof on)
                return errno = EINVAL, -1;
            memcpy(&on, value, sizeof on);
            if (kept >= 0 && (on < 0 || (on == 0 && name != TCP_USER_TIMEOUT)))
                return errno = EINVAL, -1; /* what TCP says to a keepalive time, interval or count below 1 */
            if (kept >= 0)
                e->tcp_kept[kept] = on;
            else
                e->nodelay = on != 0;
        }
        return 0;
    }
    int saved = errno;
    int rc = ff_real.setsockopt(fd, level, name, value, len);
    if (rc < 0 && level == SOL_SOCKET && errno == ENOPROTOOPT) {
        errno = saved;
        return 0;
    }
    return rc;
}
