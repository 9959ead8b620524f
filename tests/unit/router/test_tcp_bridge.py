"""Two bridge processes carry a channel over a real loopback TCP connection, as two hosts' routers start them."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from freeflow.shm.channel import Channel, channel_fds
from freeflow.shm.errors import PeerClosed
from tests.namespaces import delete_namespace


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


# In a namespace of its own: a channel bridged over loopback TCP to a "host" that then goes silent (every packet
# dropped, as when it loses power: no reset ever comes). Prints what the container's side saw.
SILENT_HOST = textwrap.dedent("""
    import socket, subprocess, sys, time
    from freeflow.shm.channel import Channel, channel_fds
    from tests.unit.router.test_tcp_bridge import start_bridge
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        dialled = socket.create_connection(listener.getsockname())
        other_host, _ = listener.accept()
    client_fds, bridge_fds = channel_fds(1 << 16)
    bridge = start_bridge(bridge_fds, dialled)
    client = Channel.from_fds(client_fds, timeout=60)
    other_host.sendall(b"hello")
    print(client.recv(10), flush=True)
    subprocess.run(["iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP"], check=True)
    try:
        got = client.recv(10)
    except TimeoutError:
        sys.exit("no end of stream: the channel would wait forever")
    client.close()
    print(repr(got), bridge.wait(30), flush=True)
""")


def test_a_host_gone_silent_ends_a_bridged_channel_instead_of_a_hang() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    ns = f"ffbr{os.urandom(3).hex()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        env = {**os.environ, "FREEFLOW_BRIDGE_TIMEOUT": "3", "PYTHONPATH": str(Path(__file__).parents[3])}
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SILENT_HOST], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        delete_namespace(ns)
    assert done.stdout.splitlines() == ["b'hello'", "b'' 0"], done.stdout + done.stderr
