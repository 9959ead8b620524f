"""Grafting for Python sockets: ask the router, make the kernel connection, swap in the socket pair.

Standard library only. Every exchange with the router is bounded; any failure leaves the socket on the
overlay exactly as if the router did not exist. The swap is `dup2` of the new socket over the
application's descriptor, so every reference to the socket object sees the grafted connection.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import select
import socket
import time
import weakref
from typing import NamedTuple

from freeflow.router import protocol as p

log = logging.getLogger(__name__)

ROUTER_TIMEOUT = 2.0  # above the router's own graft wait, so the router decides, not this side
# A non-blocking socket belongs to an event loop that must not stall: its kernel connect and the server's
# accept together get this long to be grafted, then the connection stays on the overlay (the preload's
# FF_NONBLOCK_MS).
NONBLOCKING_BUDGET = 0.1
HANDSHAKE = b"\x01"


class Fallback(Exception):
    """The connection stays on the overlay."""


class Addresses(NamedTuple):
    """The kernel connection's IPv4 (ip, port) pairs, which the swap replaces by a socket pair's."""

    local: tuple[str, int]
    peer: tuple[str, int]


# Every socket grafted in this process, with the addresses getsockname/getpeername should keep answering
# (client/patching.py); an entry goes with its socket object.
grafted: weakref.WeakKeyDictionary[socket.socket, Addresses] = weakref.WeakKeyDictionary()


def open_control(timeout: float = ROUTER_TIMEOUT) -> socket.socket | None:
    """A connection to the router in this network namespace, or None when there is no router (or no
    descriptor left: the application's connection must not fail for the router's sake)."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError:
        return None
    sock.settimeout(timeout)
    try:
        sock.connect(p.SOCKET_NAME)
    except OSError:
        sock.close()
        return None
    return sock


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> bytes:
    data = b""
    while len(data) < size:
        chunk, ancdata, _, _ = sock.recvmsg(size - len(data), socket.CMSG_SPACE(4 * p.MAX_FDS),
                                            socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % 4])
                fds.extend(received)
        if not chunk:
            raise Fallback("the router closed the control connection")
        data += chunk
    return data


def close_fds(fds: list[int]) -> None:
    """Close descriptors the router sent that nobody will use."""
    for fd in fds:
        os.close(fd)


def receive(sock: socket.socket) -> tuple[p.Message, list[int]]:
    """The router's next message and every descriptor that came with it, which the caller must close.

    Raises Fallback (having closed any descriptor received) when the connection ends or speaks garbage.
    """
    fds: list[int] = []
    try:
        header = _recv_exact(sock, p.HEADER.size, fds)
        kind, length = p.parse_header(header, p.REPLIES)
        reply = kind.decode_body(_recv_exact(sock, length, fds))
    except (OSError, p.ProtocolError, Fallback) as exc:
        close_fds(fds)
        raise Fallback(f"router exchange failed: {exc}") from None
    return reply, fds


def exchange_fds(sock: socket.socket, message: p.Message) -> tuple[p.Message, list[int]]:
    """Send `message`, return the router's reply and all its descriptors (CHANNEL_FDS for a channel)."""
    try:
        sock.sendall(message.encode())
    except OSError as exc:
        raise Fallback(f"router exchange failed: {exc}") from None
    return receive(sock)


def exchange(sock: socket.socket, message: p.Message) -> tuple[p.Message, socket.socket | None]:
    """Send `message`, return the router's reply and the socket that came with it, if any."""
    reply, fds = exchange_fds(sock, message)
    if not fds:
        return reply, None
    close_fds(fds[1:])
    try:
        return reply, socket.socket(fileno=fds[0])
    except OSError as exc:
        os.close(fds[0])
        raise Fallback(f"the router sent a descriptor that is no socket: {exc}") from None


def _handshake(new: socket.socket, timeout: float) -> None:
    """Both ends write a byte and read the peer's: a pair only one side received reads EOF."""
    new.settimeout(timeout)
    try:
        new.sendall(HANDSHAKE)
        if new.recv(1) != HANDSHAKE:
            raise Fallback("the peer did not take its end of the pair")
    except OSError as exc:
        raise Fallback(f"handshake failed: {exc}") from None


# Socket-level options a program may set before connect (or on its listener), carried to the socket pair.
_CARRIED = (socket.SO_KEEPALIVE, socket.SO_PRIORITY)
_LINGER_SIZE = 8  # struct linger: two ints


def _carry_options(app: socket.socket, new: socket.socket) -> None:
    for name in _CARRIED:
        value = app.getsockopt(socket.SOL_SOCKET, name)
        if value:
            new.setsockopt(socket.SOL_SOCKET, name, value)
    linger = app.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_SIZE)
    if int.from_bytes(linger[:4], "little"):
        new.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)


def _swap(app: socket.socket, new: socket.socket) -> None:
    """Put `new` under the application's descriptor, keeping its blocking mode, timeout and the socket
    options it was given."""
    timeout = app.gettimeout()
    _carry_options(app, new)
    inheritable = os.get_inheritable(app.fileno())
    os.dup2(new.fileno(), app.fileno(), inheritable=inheritable)
    app.settimeout(timeout)


def _connect_kernel(sock: socket.socket, address: tuple[str, int], wait_until: float | None) -> None:
    """connect() for real, with socket.connect's semantics (BlockingIOError on a non-blocking socket).

    With `wait_until`, a non-blocking socket waits until then for the connection, which the graft needs;
    one still connecting after that raises BlockingIOError as socket.connect would have at once. A blocking
    socket connects as it always does.
    """
    if wait_until is None or sock.gettimeout() != 0:
        sock.connect(address)
        return
    code = sock.connect_ex(address)
    if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        if not poller.poll(max(0.0, wait_until - time.monotonic()) * 1000):
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code not in (0, errno.EISCONN):
        raise OSError(code, os.strerror(code))


def connect(sock: socket.socket, address: tuple[str, int]) -> bool:
    """Connect `sock` to `address`, grafted when the router pairs it. True when grafted.

    Raises OSError exactly as socket.connect would when the connection itself fails, and like it
    BlockingIOError when a non-blocking socket stays on the overlay; a paired one is connected first.
    """
    control = open_control()
    if control is None:
        sock.connect(address)
        return False
    deadline = time.monotonic() + NONBLOCKING_BUDGET if sock.gettimeout() == 0 else None
    with control:  # closing it tells the router this client no longer waits
        if deadline is not None:
            control.settimeout(NONBLOCKING_BUDGET)
        try:
            if sock.getsockname()[1] == 0:
                sock.bind(("0.0.0.0", 0))
            verdict, _ = exchange(control, p.Intent(address[0], address[1], sock.getsockname()[1]))
        except (Fallback, OSError, p.ProtocolError):
            verdict = None
        go = isinstance(verdict, p.VerdictReply) and verdict.verdict == p.Verdict.GO
        _connect_kernel(sock, address, deadline if go else None)
        if not go:
            return False
        return _graft(control, sock, p.Role.CLIENT, address, sock.getsockname()[1], deadline)


def accepted(conn: socket.socket, peer: tuple[str, int], local_port: int) -> bool:
    """Graft a connection just accepted on a listening port; True when grafted."""
    control = open_control()
    if control is None:
        return False
    with control:
        return _graft(control, conn, p.Role.SERVER, peer, local_port)


def _graft(control: socket.socket, app: socket.socket, role: int, peer: tuple[str, int], local_port: int,
           deadline: float | None = None) -> bool:
    """Ask for the pair, check it with the peer and swap it in; all before `deadline` when one is given."""
    started = time.monotonic()

    def left() -> float:
        remaining = ROUTER_TIMEOUT if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise Fallback("the non-blocking budget ran out")
        return remaining

    try:
        kernel = Addresses(app.getsockname(), peer)
        control.settimeout(left())
        reply, new = exchange(control, p.Graft(role, peer[0], peer[1], local_port))
        if not isinstance(reply, p.GraftedReply) or new is None:
            return False
        with new:
            _handshake(new, left())
            _swap(app, new)
    except (Fallback, OSError) as exc:
        log.debug("%s:%d stays on the overlay: %s", peer[0], peer[1], exc)
        return False
    grafted[app] = kernel
    log.debug("grafted %s:%d in %.0f us", peer[0], peer[1], (time.monotonic() - started) * 1e6)
    return True


def register_listener(port: int, backlog: int = 128) -> socket.socket | None:
    """Tell the router a socket listens on `port`; keep the returned connection open while it does."""
    control = open_control()
    if control is None:
        return None
    try:
        reply, _ = exchange(control, p.Listen(port, min(backlog, 65535)))
    except Fallback:
        control.close()
        return None
    if not isinstance(reply, p.VerdictReply) or reply.verdict != p.Verdict.GO:
        control.close()
        return None
    control.setblocking(False)
    return control
