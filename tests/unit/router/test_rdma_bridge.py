"""The RDMA bridge: its bookkeeping, its fallback to TCP where there is no device (real processes), and a
transfer over RDMA where there is one."""

from __future__ import annotations

import pytest

from freeflow.router.rdma_bridge import QpInfo, RemoteRing, rdma_available
from tests.unit.router.test_tcp_bridge import bridged_by, stream_through

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


@pytest.mark.skipif(rdma_available(), reason="this host has RDMA: the fallback is not taken")
def test_without_a_device_both_sides_agree_on_tcp_and_the_stream_arrives() -> None:
    with bridged_by("freeflow.router.rdma_bridge") as ends:
        stream_through(*ends)


@pytest.mark.skipif(not rdma_available(), reason=NO_RDMA)
def test_over_rdma_the_stream_arrives_intact() -> None:
    with bridged_by("freeflow.router.rdma_bridge") as ends:
        stream_through(*ends)
