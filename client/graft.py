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

from freeflow.router import protocol as p

log = logging.getLogger(__name__)

ROUTER_TIMEOUT = 2.0  # above the router's own graft wait, so the router decides, not this side
CONNECT_TIMEOUT = 5.0
HANDSHAKE = b"\x01"


class Fallback(Exception):
    """The connection stays on the overlay."""


def open_control(timeout: float = ROUTER_TIMEOUT) -> socket.socket | None:
    """A connection to the router in this network namespace, or None when there is no router."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
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
        chunk, ancdata, _, _ = sock.recvmsg(size - len(data), socket.CMSG_SPACE(4 * p.MAX_FDS))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % 4])
                fds.extend(received)
        if not chunk:
            raise Fallback("the router closed the control connection")
        data += chunk
    return data


def exchange(sock: socket.socket, message: p.Message) -> tuple[p.Message, socket.socket | None]:
    """Send `message`, return the router's reply and the socket that came with it, if any."""
    fds: list[int] = []
    try:
        sock.sendall(message.encode())
        header = _recv_exact(sock, p.HEADER.size, fds)
        kind, length = p.parse_header(header, p.REPLIES)
        reply = kind.decode_body(_recv_exact(sock, length, fds))
    except (OSError, p.ProtocolError) as exc:
        for fd in fds:
            os.close(fd)
        raise Fallback(f"router exchange failed: {exc}") from None
    extra = [socket.socket(fileno=fd) for fd in fds]
    for unexpected in extra[1:]:
        unexpected.close()
    return reply, (extra[0] if extra else None)


def _handshake(new: socket.socket) -> None:
    """Both ends write a byte and read the peer's: a pair only one side received reads EOF."""
    new.settimeout(ROUTER_TIMEOUT)
    try:
        new.sendall(HANDSHAKE)
        if new.recv(1) != HANDSHAKE:
            raise Fallback("the peer did not take its end of the pair")
    except OSError as exc:
        raise Fallback(f"handshake failed: {exc}") from None


def _swap(app: socket.socket, new: socket.socket) -> None:
    """Put `new` under the application's descriptor, keeping its blocking mode and timeout."""
    timeout = app.gettimeout()
    inheritable = os.get_inheritable(app.fileno())
    os.dup2(new.fileno(), app.fileno(), inheritable=inheritable)
    new.close()
    app.settimeout(timeout)


def _wait_connected(sock: socket.socket, address: tuple[str, int]) -> None:
    """connect() for real; on a non-blocking socket, wait (bounded) for it to complete."""
    code = sock.connect_ex(address)
    if code in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
        _, writable, _ = select.select([], [sock], [], CONNECT_TIMEOUT)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if writable else errno.ETIMEDOUT
    if code not in (0, errno.EISCONN):
        raise OSError(code, os.strerror(code))


def connect(sock: socket.socket, address: tuple[str, int]) -> bool:
    """Connect `sock` to `address`, grafted when the router pairs it. True when grafted.

    Raises OSError exactly as socket.connect would when the connection itself fails.
    """
    control = open_control()
    if control is None:
        _wait_connected(sock, address)
        return False
    with control:
        try:
            if sock.getsockname()[1] == 0:
                sock.bind(("0.0.0.0", 0))
            verdict, _ = exchange(control, p.Intent(address[0], address[1], sock.getsockname()[1]))
        except (Fallback, OSError, p.ProtocolError):
            verdict = None
        _wait_connected(sock, address)
        if not isinstance(verdict, p.VerdictReply) or verdict.verdict != p.Verdict.GO:
            return False
        return _graft(control, sock, p.Role.CLIENT, address, sock.getsockname()[1])


def accepted(conn: socket.socket, peer: tuple[str, int], local_port: int) -> bool:
    """Graft a connection just accepted on a listening port; True when grafted."""
    control = open_control()
    if control is None:
        return False
    with control:
        return _graft(control, conn, p.Role.SERVER, peer, local_port)


def _graft(control: socket.socket, app: socket.socket, role: int, peer: tuple[str, int], local_port: int) -> bool:
    started = time.monotonic()
    try:
        reply, new = exchange(control, p.Graft(role, peer[0], peer[1], local_port))
        if not isinstance(reply, p.GraftedReply) or new is None:
            return False
        try:
            _handshake(new)
        except Fallback:
            new.close()
            raise
        _swap(app, new)
    except Fallback as exc:
        log.debug("%s:%d stays on the overlay: %s", peer[0], peer[1], exc)
        return False
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
