"""Connection set-up probe, run with a container's python3: `accept PORT ADDRESS` serves, `connect` measures.

`connect HOST PORT COUNT` opens and closes COUNT connections one after the other and prints the time of each
connect() call as JSON. Under the freeflow preload library libc's connect() and accept() are intercepted, so
the grafting of each connection is part of what is timed. `peer HOST PORT` opens one connection and prints the
peer the kernel gives its socket, past the library: the address dialled unless the connection was grafted.
Standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys
import time

UNIX_PEER = "unix"  # the peer of a socket grafted within a host: one end of a unix socket pair


def serve(address: str, port: int) -> None:
    """Accept connections and close them at once, until killed."""
    with socket.create_server((address, port), backlog=128) as server:
        while True:
            conn, _ = server.accept()
            conn.close()


def connect_times(host: str, port: int, count: int) -> list[int]:
    """Nanoseconds of each of `count` blocking connect() calls to host:port."""
    times = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            started = time.perf_counter_ns()
            sock.connect((host, port))
            times.append(time.perf_counter_ns() - started)
    return times


def peer_name(raw: bytes) -> str:
    """The address in a struct sockaddr: IPv4 or IPv6 text, UNIX_PEER, or the family's number."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return UNIX_PEER if family == socket.AF_UNIX else f"family {family}"


def kernel_peer(sock: socket.socket) -> str:
    """The socket's peer from libc's own getpeername(): looked up in libc itself, so a preloaded one is passed by."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    raw, size = ctypes.create_string_buffer(128), ctypes.c_uint32(128)
    if libc.getpeername(sock.fileno(), raw, ctypes.byref(size)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return peer_name(raw.raw[:size.value])


def main(argv: list[str]) -> None:
    if argv[:1] == ["accept"] and len(argv) == 3:
        serve(argv[2], int(argv[1]))
    elif argv[:1] == ["connect"] and len(argv) == 4:
        print(json.dumps({"connect_ns": connect_times(argv[1], int(argv[2]), int(argv[3]))}))
    elif argv[:1] == ["peer"] and len(argv) == 3:
        with socket.create_connection((argv[1], int(argv[2]))) as sock:
            print(json.dumps({"peer": kernel_peer(sock)}))
    else:
        sys.exit("usage: probe_connect.py accept PORT ADDRESS | connect HOST PORT COUNT | peer HOST PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
