"""The RDMA bridge: its bookkeeping, its fallback to TCP where there is no device (real processes), and a
transfer over RDMA where there is one."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import threading

import pytest

from freeflow.router.rdma_bridge import QpInfo, RemoteRing, rdma_available
from freeflow.shm.channel import Channel, channel_fds

NO_RDMA = "no RDMA device here: this kernel has no InfiniBand support (and so no Soft-RoCE)"


def test_writes_split_at_the_peers_wrap_and_wait_for_credit() -> None:
    ring = RemoteRing(capacity=100)
    assert ring.segments(30) == [(0, 30)]
    ring.wrote(30)
    ring.credit(30)
    ring.wrote(60)
    assert ring.free() == 40
    assert ring.segments(50) == [(90, 10), (0, 30)], "no more than is free, split where the peer's ring wraps"
    ring.credit(80)
    assert ring.segments(25) == [(90, 10), (0, 15)]
    with pytest.raises(ValueError, match="confused"):
        ring.credit(200)
    with pytest.raises(ValueError, match="confused"):
        ring.credit(10)


def test_queue_pair_information_survives_the_wire() -> None:
    info = QpInfo(0x1234, 7, 3, bytes(range(16)), 0xDEADBEEF, 0x7F0000001000, 1 << 20)
    assert QpInfo.decode(info.encode()) == info


def start(program: str, fds, sock: socket.socket) -> subprocess.Popen[bytes]:
    numbers = [*dataclasses.astuple(fds), sock.fileno()]
    process = subprocess.Popen([sys.executable, "-m", program, *map(str, numbers)], pass_fds=numbers,
                               start_new_session=True)
    fds.close()
    sock.close()
    return process


def stream_through(program: str) -> None:
    """20 MB from one channel end to the other through two bridge processes of `program`, and back a digest."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        dialled = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    client_fds, bridge_a = channel_fds(1 << 16)
    bridge_b, server_fds = channel_fds(1 << 16)
    bridges = [start(program, bridge_a, dialled), start(program, bridge_b, accepted)]
    client, server = Channel.from_fds(client_fds, timeout=30), Channel.from_fds(server_fds, timeout=30)
    data = os.urandom(20_000_000)

    def serve() -> None:
        digest = hashlib.sha256()
        while chunk := server.recv(1 << 20):
            digest.update(chunk)
        server.send_msg(digest.hexdigest().encode())
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    client.sendall(data)
    client.shutdown_write()
    assert client.recv_msg().decode() == hashlib.sha256(data).hexdigest()
    thread.join(30)
    client.close()
    assert [bridge.wait(30) for bridge in bridges] == [0, 0]


@pytest.mark.skipif(rdma_available(), reason="this host has RDMA: the fallback is not taken")
def test_without_a_device_both_sides_agree_on_tcp_and_the_stream_arrives() -> None:
    stream_through("freeflow.router.rdma_bridge")


@pytest.mark.skipif(not rdma_available(), reason=NO_RDMA)
def test_over_rdma_the_stream_arrives_intact() -> None:
    stream_through("freeflow.router.rdma_bridge")
