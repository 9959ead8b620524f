"""Two bridge processes carry a channel over a real loopback TCP connection, as two hosts' routers start them."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from freeflow.shm.channel import Channel, channel_fds
from freeflow.shm.errors import PeerClosed


def start_bridge(fds, sock: socket.socket, program: str = "freeflow.router.tcp_bridge") -> subprocess.Popen[bytes]:
    """The bridge as the router starts it: descriptors inherited, numbers on the command line."""
    numbers = [*dataclasses.astuple(fds), sock.fileno()]
    process = subprocess.Popen([sys.executable, "-m", program, *map(str, numbers)], pass_fds=numbers,
                               start_new_session=True)
    fds.close()
    sock.close()
    return process


@contextmanager
def bridged_by(program: str) -> Iterator[tuple[Channel, Channel, list[subprocess.Popen[bytes]]]]:
    """A client and a server channel end, each on its own "host", joined by two bridges of `program` over TCP."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        dialled = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    client_fds, bridge_a = channel_fds(1 << 16)
    bridge_b, server_fds = channel_fds(1 << 16)
    bridges = [start_bridge(bridge_a, dialled, program), start_bridge(bridge_b, accepted, program)]
    client, server = Channel.from_fds(client_fds, timeout=30), Channel.from_fds(server_fds, timeout=30)
    try:
        yield client, server, bridges
    finally:
        for bridge in bridges:
            if bridge.poll() is None:
                bridge.kill()
            bridge.wait(10)


@pytest.fixture
def bridged() -> Iterator[tuple[Channel, Channel, list[subprocess.Popen[bytes]]]]:
    with bridged_by("freeflow.router.tcp_bridge") as ends:
        yield ends


def stream_through(client: Channel, server: Channel, bridges: list[subprocess.Popen[bytes]]) -> None:
    """20 MB in odd-sized writes from client to server, its digest back, and both bridges end with the stream."""
    data = os.urandom(20_000_000)
    received = hashlib.sha256()

    def serve() -> None:
        while chunk := server.recv(1 << 20):
            received.update(chunk)
        server.send_msg(received.hexdigest().encode())
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    view = memoryview(data)
    for start in range(0, len(data), 1_000_003):  # sizes that never line up with the 64 KiB rings
        client.sendall(view[start:start + 1_000_003])
    client.shutdown_write()
    assert client.recv_msg().decode() == hashlib.sha256(data).hexdigest()
    assert client.recv(10) == b"", "the server's close reaches the client as the end of the stream"
    thread.join(30)
    client.close()
    assert [bridge.wait(10) for bridge in bridges] == [0, 0]


def test_a_stream_crosses_both_ways_intact_and_the_bridges_end_with_it(bridged) -> None:
    stream_through(*bridged)


def test_small_messages_back_and_forth_all_arrive_in_order(bridged) -> None:
    """Each message is a short read for the bridge (it then waits for the socket to say it is readable)."""
    client, server, bridges = bridged

    def echo() -> None:
        while True:
            try:
                server.send_msg(server.recv_msg())
            except EOFError:
                server.close()
                return

    thread = threading.Thread(target=echo)
    thread.start()
    for number in range(2000):
        message = os.urandom(1 + number % 300)
        client.send_msg(message)
        assert client.recv_msg() == message
    client.close()
    thread.join(30)
    assert [bridge.wait(10) for bridge in bridges] == [0, 0]


def test_a_dead_bridge_is_the_end_of_the_channel_not_a_hang(bridged) -> None:
    client, server, bridges = bridged
    client.send_msg(b"before")
    assert server.recv_msg() == b"before"
    os.kill(bridges[1].pid, signal.SIGKILL)
    assert client.recv(10) == b"", "the other host's side is gone: end of stream"
    with pytest.raises(PeerClosed):
        for _ in range(100):
            client.sendall(b"x" * 65536)


def test_a_container_that_dies_ends_the_other_side(bridged) -> None:
    client, server, _ = bridged
    client.sendall(b"last words")
    client.close()
    got = b""
    while chunk := server.recv(100):
        got += chunk
    assert got == b"last words"
