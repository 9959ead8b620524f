"""The socket.socket methods that graft TCP/IPv4 connections between containers (client/graft.py).

install() puts them on socket.socket for a whole program; api.Socket carries them for chosen sockets.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freeflow.client import graft

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0  # between attempts to register a listener while the router is away
DEFAULT_BACKLOG = 128  # socket.listen()'s own default, and the guess for sockets first seen in accept()

# The methods these replace, as socket.socket had them when this module was imported.
PLAIN: dict[str, Callable[..., Any]] = {
    name: getattr(socket.socket, name)
    for name in ("connect", "connect_ex", "listen", "accept", "getsockname", "getpeername", "setsockopt",
                 "getsockopt", "sendto", "detach", "dup", "_real_close")
}
# Sockets whose connect() went through grafting once: a second call is the plain one (graft.connect's
# own, or a program polling a non-blocking connect).
_attempted: weakref.WeakSet[socket.socket] = weakref.WeakSet()
# Grafted descriptors detached from their socket object, by inode, until another object takes them over
# (ssl.SSLContext.wrap_socket does exactly that).
_detached: dict[int, graft.Addresses] = {}


@dataclass
class Listener:
    """A listening socket's registration with the router, renewed when the router restarts."""

    port: int
    backlog: int
    control: socket.socket | None = None
    # When to try registering again; never for ports the router cannot pair (loopback only, unbound).
    retry_at: float = 0.0
    # Threads may accept() on one socket together.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def refresh(self) -> None:
        """Register unless a live registration exists; a dead one means the router went away."""
        with self.lock:
            if self.control is not None:
                if _alive(self.control):
                    return
                log.info("the router dropped the listener on port %d: registering again", self.port)
                self.close()
            now = time.monotonic()
            if now >= self.retry_at:
                self.control = graft.register_listener(self.port, self.backlog)
                if self.control is None:
                    self.retry_at = now + RETRY_INTERVAL

    def close(self) -> None:
        with self.lock:
            if self.control is not None:
                self.control.close()
                self.control = None


listeners: weakref.WeakKeyDictionary[socket.socket, Listener] = weakref.WeakKeyDictionary()


def _alive(control: socket.socket) -> bool:
    """The router never writes on a listener's control connection: readable means closed."""
    try:
        control.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _tcp(sock: socket.socket) -> bool:
    return sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM


def addresses(sock: socket.socket) -> graft.Addresses | None:
    """The kernel addresses of a grafted socket (taking over a descriptor another object detached)."""
    kernel = graft.grafted.get(sock)
    if kernel is None and _detached:
        try:
            kernel = _detached.pop(os.fstat(sock.fileno()).st_ino, None)
        except OSError:
            return None
        if kernel is not None:
            graft.grafted[sock] = kernel
    return kernel


def is_grafted(sock: socket.socket) -> bool:
    """Whether `sock` is a grafted connection (its descriptor is then one end of a Unix socket pair)."""
    return addresses(sock) is not None


def _listener(sock: socket.socket, backlog: int) -> Listener:
    """A new registration for a listening socket."""
    host, port = PLAIN["getsockname"](sock)
    entry = Listener(port, max(0, backlog))
    if port == 0 or host.startswith("127."):
        entry.retry_at = math.inf
    listeners[sock] = entry
    weakref.finalize(sock, entry.close)  # a listening socket dropped without close()
    entry.refresh()
    return entry


def _is_local(ip: str) -> bool:
    """Whether `ip` belongs to this network namespace: the kernel then answers it as the source."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((ip, 9))
            return probe.getsockname()[0] == ip
    except OSError:
        return False


def _target(sock: socket.socket, address: Any) -> tuple[str, int] | None:
    """The IPv4 destination of a connect() to graft, or None to leave the socket alone."""
    if not _tcp(sock) or sock in _attempted or addresses(sock) is not None:
        return None
    # Anything unusual is left to the plain connect(), which raises what the program expects.
    if not isinstance(address, tuple) or len(address) != 2 or not isinstance(address[1], int):
        return None
    host, port = address
    if not 0 < port < 65536:
        return None
    try:
        ip = str(socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except (OSError, UnicodeError):
        return None
    first = int(ip.split(".")[0])
    if first in (0, 127) or first >= 224:
        return None
    # A connection to a listener of this very process: the graft would wait for an accept() that
    # this thread (or event loop) cannot run until connect() returns.
    if any(e.port == port and e.control is not None for e in listeners.values()) and _is_local(ip):
        return None
    return ip, port


def connect(self: socket.socket, address: Any) -> None:
    target = _target(self, address)
    if target is None:
        PLAIN["connect"](self, address)
        return
    _attempted.add(self)
    graft.connect(self, target)


def connect_ex(self: socket.socket, address: Any) -> int:
    target = _target(self, address)
    if target is None:
        return PLAIN["connect_ex"](self, address)
    _attempted.add(self)
    try:
        graft.connect(self, target)
    except OSError as exc:
        return exc.errno if exc.errno is not None else errno.EAGAIN  # a timeout, as connect_ex has it
    return 0


def listen(self: socket.socket, *backlog: int) -> None:
    PLAIN["listen"](self, *backlog)
    if _tcp(self):
        previous = listeners.pop(self, None)
        if previous is not None:
            previous.close()
        _listener(self, backlog[0] if backlog else DEFAULT_BACKLOG)


def accept(self: socket.socket) -> tuple[socket.socket, Any]:
    if not _tcp(self):
        return PLAIN["accept"](self)
    entry = listeners.get(self)
    if entry is not None:
        entry.refresh()
    conn, peer = PLAIN["accept"](self)
    if entry is None:
        # Listening since before install(), or taken over from another object: registered from now on.
        _listener(self, DEFAULT_BACKLOG)
    elif entry.control is not None and not peer[0].startswith("127."):
        graft.accepted(conn, peer, entry.port)
    return conn, peer


def getsockname(self: socket.socket) -> Any:
    kernel = addresses(self)
    return PLAIN["getsockname"](self) if kernel is None else kernel.local


def getpeername(self: socket.socket) -> Any:
    kernel = addresses(self)
    return PLAIN["getpeername"](self) if kernel is None else kernel.peer


# TCP options as a grafted socket answers them until set: Linux's defaults.
TCP_DEFAULTS = {socket.TCP_NODELAY: 0, socket.TCP_KEEPIDLE: 7200, socket.TCP_KEEPINTVL: 75, socket.TCP_KEEPCNT: 9}
TCP_ESTABLISHED = 1  # the first byte of struct tcp_info
# What each grafted socket was told at the TCP level, read back by getsockopt().
_tcp_options: weakref.WeakKeyDictionary[socket.socket, dict[int, Any]] = weakref.WeakKeyDictionary()


def setsockopt(self: socket.socket, level: int, optname: int, *args: Any) -> None:
    # TCP and IP options mean nothing to a socket pair (no Nagle, no TOS): accepted, remembered and read
    # back, as asyncio and http.client set TCP_NODELAY on every connection.
    if level in (socket.IPPROTO_TCP, socket.IPPROTO_IP) and addresses(self) is not None:
        if level == socket.IPPROTO_TCP and len(args) == 1 and isinstance(args[0], int):
            _tcp_options.setdefault(self, {})[optname] = args[0]
        return
    PLAIN["setsockopt"](self, level, optname, *args)


def getsockopt(self: socket.socket, level: int, optname: int, *buflen: int) -> Any:
    """TCP options of a grafted socket answer what was set (else TCP's defaults; TCP_INFO: an established
    connection, counters zero); IP options 0; socket-level ones are the socket pair's."""
    if level in (socket.IPPROTO_TCP, socket.IPPROTO_IP) and addresses(self) is not None:
        if buflen:  # a structure: TCP_INFO, or anything asked for as bytes
            size = buflen[0]
            return bytes([TCP_ESTABLISHED]) + bytes(size - 1) if optname == socket.TCP_INFO and size else bytes(size)
        if level == socket.IPPROTO_IP:
            return 0
        return _tcp_options.get(self, {}).get(optname, TCP_DEFAULTS.get(optname, 0))
    return PLAIN["getsockopt"](self, level, optname, *buflen)


def sendto(self: socket.socket, data: Any, *args: Any) -> int:
    """TCP ignores the address given on a connected socket; a socket pair would refuse it (EISCONN)."""
    if args and addresses(self) is not None:
        return self.send(data, *args[:-1])
    return PLAIN["sendto"](self, data, *args)  # type: ignore[no-any-return]


def detach(self: socket.socket) -> int:
    kernel = graft.grafted.pop(self, None)
    entry = listeners.pop(self, None)
    if entry is not None:
        entry.close()  # whoever takes the descriptor over registers again in its accept()
    fd = PLAIN["detach"](self)
    if kernel is not None and fd >= 0:
        _detached[os.fstat(fd).st_ino] = kernel
    return fd


def dup(self: socket.socket) -> socket.socket:
    copy = PLAIN["dup"](self)
    kernel = addresses(self)
    if kernel is not None:
        graft.grafted[copy] = kernel
    return copy


def real_close(self: socket.socket, _grafted: Any = graft.grafted, _listeners: Any = listeners,
               _close: Callable[[socket.socket], None] = PLAIN["_real_close"]) -> None:
    # What close() ends in, also when the last makefile() closes. Like the original, it reaches no
    # module globals: it may run while the interpreter shuts down.
    _grafted.pop(self, None)
    entry = _listeners.pop(self, None)
    if entry is not None:
        entry.close()
    _close(self)


# What install() puts on socket.socket.
REPLACEMENTS: dict[str, Callable[..., Any]] = {
    "connect": connect, "connect_ex": connect_ex, "listen": listen, "accept": accept,
    "getsockname": getsockname, "getpeername": getpeername, "setsockopt": setsockopt,
    "getsockopt": getsockopt, "sendto": sendto, "detach": detach, "dup": dup, "_real_close": real_close,
}
