/* Grafted sockets that crossed exec: the library's table went with the old program, but the router bound
 * each end of a socket pair to a name saying which TCP connection it stands for (FF_GRAFT_NAME_PREFIX). */
#ifndef FREEFLOW_RECOGNISE_H
#define FREEFLOW_RECOGNISE_H

#include "fdtable.h"

/* When `fd`, unknown to the library, is such an end: record it as grafted and return its entry; else NULL.
 * One getsockname(), once per descriptor (an ordinary one is then marked FF_PLAIN); callers ask only once
 * a real call showed fd to be a unix socket. */
struct ff_fd *ff_recognise(int fd);

#endif
