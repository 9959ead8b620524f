"""Grafted sockets on request, for programs that would rather not patch socket.socket (install()).

Socket carries the same methods install() puts on every socket; the functions mirror socket's own.
"""

from __future__ import annotations

import socket
from typing import Any

from freeflow.client import graft, methods


class Socket(socket.socket):
    """A socket.socket whose TCP/IPv4 connections are grafted, and whose accept() returns the same kind."""

    __slots__ = ()

    connect = methods.connect
    connect_ex = methods.connect_ex
    listen = methods.listen
    getsockname = methods.getsockname
    getpeername = methods.getpeername
    setsockopt = methods.setsockopt
    getsockopt = methods.getsockopt
    sendto = methods.sendto
    detach = methods.detach
    dup = methods.dup
    _real_close = methods.real_close

    def accept(self) -> tuple[Socket, Any]:
        conn, peer = methods.accept(self)
        kernel = graft.grafted.pop(conn, None)
        timeout = conn.gettimeout()
        own = Socket(conn.family, conn.type, conn.proto, fileno=conn.detach())
        own.settimeout(timeout)
        if kernel is not None:
            graft.grafted[own] = kernel
        return own, peer


def create_connection(address: tuple[str, int], timeout: float | None = None) -> Socket:
    """Like socket.create_connection: the first address of `address` that answers, grafted when paired."""
    host, port = address
    errors: list[OSError] = []
    for family, kind, proto, _, target in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = Socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(target)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        return sock
    raise errors[0] if errors else OSError(f"{host} has no address")


def create_server(address: tuple[str, int], backlog: int = 128) -> Socket:
    """Like socket.create_server for IPv4: a listening socket registered with the router."""
    sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
