/* What this process's descriptors are to the library: a fixed table indexed by fd, without locks. */
#define _GNU_SOURCE
#include "fdtable.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "runtime.h"

static struct ff_fd *table;

struct ff_fd *ff_fd_at(int fd)
{
    struct ff_fd *t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
    if (!t || fd < 0 || fd >= FF_MAX_FDS)
        return NULL;
    return &t[fd];
}

struct ff_fd *ff_fd_of(int fd, enum ff_kind kind)
{
    struct ff_fd *e = ff_fd_at(fd);
    return e && e->kind == kind ? e : NULL;
}

struct ff_fd *ff_fd_slot(int fd)
{
    if (fd < 0 || fd >= FF_MAX_FDS)
        return NULL;
    struct ff_fd *t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
    if (!t) {
        /* mmap rather than malloc: zeroed, touched page by page, and safe wherever we are called from. */
        struct ff_fd *fresh = mmap(NULL, FF_MAX_FDS * sizeof *fresh, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (fresh == MAP_FAILED)
            return NULL;
        struct ff_fd *expected = NULL;
        if (__atomic_compare_exchange_n(&table, &expected, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            t = fresh;
        } else {
            munmap(fresh, FF_MAX_FDS * sizeof *fresh);
            t = expected;
        }
    }
    return &t[fd];
}

static void clear(struct ff_fd *e)
{
    uint32_t gen = e->gen;
    memset(e, 0, sizeof *e);
    e->gen = gen + 1;
}

/* Close control connection `ctl` of `listener` if it still is that: the app may have closed it behind our
 * back (fclose, a direct syscall) and the number been reused. */
static void close_control(int ctl, int listener)
{
    struct ff_fd *c = ff_fd_of(ctl, FF_CONTROL);
    if (!c || c->owner != listener)
        return;
    struct stat st;
    if (fstat(ctl, &st) == 0 && st.st_ino == c->ino)
        ff_real.close(ctl);
    clear(c);
}

void ff_fd_forget(int fd)
{
    struct ff_fd *e = ff_fd_at(fd);
    if (!e || ff_memory_borrowed())
        return;
    struct ff_fd old = *e;
    clear(e);
    if (old.kind == FF_LISTENER && old.control >= 0) {
        close_control(old.control, fd);
    } else if (old.kind == FF_CONTROL) {
        struct ff_fd *listener = ff_fd_of(old.owner, FF_LISTENER);
        if (listener && listener->control == fd)
            listener->control = -1;
    }
}

void ff_fd_forget_range(unsigned int first, unsigned int last)
{
    if (!ff_fd_at(0) || ff_memory_borrowed())
        return;
    for (unsigned int fd = first; fd <= last && fd < FF_MAX_FDS; fd++) {
        if (ff_fd_at((int)fd)->kind != FF_UNKNOWN || ff_fd_at((int)fd)->epfd)
            ff_fd_forget((int)fd);
    }
}

void ff_fd_attach_control(int listener, int ctl)
{
    struct ff_fd *l = ff_fd_of(listener, FF_LISTENER);
    struct ff_fd *c = ff_fd_slot(ctl);
    struct stat st;
    if (!l || !c || fstat(ctl, &st) < 0) {
        ff_real.close(ctl);
        return;
    }
    clear(c);
    c->kind = FF_CONTROL;
    c->owner = listener;
    c->ino = st.st_ino;
    l->control = ctl;
}

void ff_fd_close_control(int listener)
{
    struct ff_fd *l = ff_fd_of(listener, FF_LISTENER);
    if (!l || l->control < 0)
        return;
    close_control(l->control, listener);
    l->control = -1;
}

void ff_fd_copied(int from, int to, int cloexec)
{
    struct ff_fd *src = ff_fd_at(from);
    if (!src || src->kind == FF_UNKNOWN || src->kind == FF_CONTROL || ff_memory_borrowed())
        return;
    struct ff_fd *dst = ff_fd_slot(to);
    if (!dst)
        return;
    uint32_t gen = dst->gen;
    *dst = *src;
    /* An epoll registration belongs to (file, fd number): `to` is in no instance yet. */
    dst->epfd = 0;
    dst->gen = gen;
    if (src->kind != FF_LISTENER)
        return;
    dst->control = -1;
    dst->registering = 0;
    if (src->control < 0)
        return;
    int ctl = ff_real.fcntl(src->control, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, FF_FIRST_HIDDEN_FD);
    if (ctl >= 0)
        ff_fd_attach_control(to, ctl);
}

void ff_fd_epoll_set(int epfd, int fd, const struct epoll_event *event)
{
    struct ff_fd *e = ff_fd_slot(fd);
    struct ff_fd *ep = ff_fd_slot(epfd);
    if (!e || !ep || !event)
        return;
    e->epfd = epfd + 1;
    e->epgen = ep->gen;
    e->event = *event;
}

void ff_fd_epoll_unset(int epfd, int fd)
{
    struct ff_fd *e = ff_fd_at(fd);
    if (e && e->epfd == epfd + 1)
        e->epfd = 0;
}
