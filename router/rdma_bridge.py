"""One side of a cross-host channel over RDMA (pyverbs), for hosts that both have an RDMA device: the ring memory
itself is registered, and each side writes into the peer's ring with one-sided RDMA writes with immediate data.

The host TCP connection the routers set up stays as the control channel: the two sides exchange their queue
pair and ring (QP number, GID, rkey, address) over it, then credits (how far each container has read) and the
end of the stream. Either side that cannot set up RDMA says so during the exchange, and both run the TCP bridge
on the same connection instead. `python -m freeflow.router.rdma_bridge` takes the arguments of tcp_bridge.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freeflow import logs
from freeflow.config.settings import load_settings
from freeflow.router.tcp_bridge import TcpBridge
from freeflow.shm.channel import ChannelFds
from freeflow.shm.doorbell import fence
from freeflow.shm.ring import Ring

log = logging.getLogger(__name__)

# Setup: b"R" + QpInfo, or b"T" (no RDMA here). Then control messages: kind (u8) and a u64.
_INFO = struct.Struct("<IIH16sIQI")  # qp number, psn, lid, gid, rkey, address of the ring data, capacity
_CONTROL = struct.Struct("<BQ")
CREDIT, FIN = 1, 2
MAX_IN_FLIGHT = 64  # RDMA writes posted and not yet completed
SETUP_TIMEOUT = 10.0  # seconds the other side has to say whether it does RDMA
PORT = 1


def rdma_available() -> bool:
    """Whether this host has an RDMA device and pyverbs to drive it (what a host advertises)."""
    try:
        import pyverbs.device  # noqa: F401
    except ImportError:
        return False
    devices = Path("/sys/class/infiniband")
    return devices.is_dir() and any(devices.iterdir())


@dataclass(frozen=True)
class QpInfo:
    qpn: int
    psn: int
    lid: int
    gid: bytes
    rkey: int
    address: int
    capacity: int

    def encode(self) -> bytes:
        return _INFO.pack(self.qpn, self.psn, self.lid, self.gid, self.rkey, self.address, self.capacity)

    @classmethod
    def decode(cls, data: bytes) -> QpInfo:
        return cls(*_INFO.unpack(data))


class RemoteRing:
    """Where our next write goes in the peer's ring, and how much of it is free (pure bookkeeping).

    `head` counts bytes we wrote; `tail` is the peer container's read position, known from its credits.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.head = 0
        self.tail = 0

    def free(self) -> int:
        return self.capacity - (self.head - self.tail)

    def segments(self, n: int) -> list[tuple[int, int]]:
        """(offset in the ring, length) pieces for the next `n` bytes (at most what is free), split at the wrap."""
        n = min(n, self.free())
        pos = self.head % self.capacity
        first = min(n, self.capacity - pos)
        return [(pos, first)] + ([(0, n - first)] if n > first else [])

    def wrote(self, n: int) -> None:
        self.head += n

    def credit(self, tail: int) -> None:
        if not self.tail <= tail <= self.head:
            raise ValueError(f"credit {tail} outside [{self.tail}, {self.head}]: the peer is confused")
        self.tail = tail


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the peer's bridge closed during the RDMA setup")
        data += chunk
    return data


def _address(ring: Ring) -> tuple[int, Any]:
    """The address of a ring's data area, and the object that pins it (drop it before the ring closes)."""
    pinned = ctypes.c_char.from_buffer(ring.data)
    return ctypes.addressof(pinned), pinned


def read_position(ring: Ring) -> int:
    """How far the reader of `ring` has read, in bytes since the start (the writer's view of the tail)."""
    return ring.total_written - (ring.capacity - ring.writable())


class RdmaBridge:
    """The verbs objects of one side; everything else (rings, doorbell) is a TcpBridge's."""

    def __init__(self, rings: TcpBridge) -> None:
        import pyverbs.device as d
        import pyverbs.enums as e
        from pyverbs.cq import CQ
        from pyverbs.mr import MR
        from pyverbs.pd import PD
        from pyverbs.qp import QP, QPCap, QPInitAttr

        self.e = e
        self.rings = rings
        name = os.environ.get("FREEFLOW_RDMA_DEVICE") or d.get_device_list()[0].name.decode()
        self.ctx = d.Context(name=name)
        self.pd = PD(self.ctx)
        self.cq = CQ(self.ctx, 2 * MAX_IN_FLIGHT + 2, None, None, 0)
        self.qp = QP(self.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq,
                                         cap=QPCap(max_send_wr=MAX_IN_FLIGHT, max_recv_wr=MAX_IN_FLIGHT)))
        # Our outgoing ring is read by the device; our incoming one is written by the peer's device.
        rx_address, self._rx_pin = _address(rings.rx)
        tx_address, self._tx_pin = _address(rings.tx)
        self.rx_mr = MR(self.pd, rings.rx.capacity, e.IBV_ACCESS_LOCAL_WRITE, address=rx_address)
        self.tx_mr = MR(self.pd, rings.tx.capacity, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE,
                        address=tx_address)
        self.scratch = MR(self.pd, 64, e.IBV_ACCESS_LOCAL_WRITE)  # receives carry no data: the imm is the size
        self.in_flight: list[int] = []

    def info(self) -> QpInfo:
        gid = self.ctx.query_gid(PORT, 0)
        raw = bytes.fromhex(gid.gid.replace(":", ""))
        return QpInfo(self.qp.qp_num, 0, self.ctx.query_port(PORT).lid, raw, self.tx_mr.rkey, self.tx_mr.buf,
                      self.rings.tx.capacity)

    def connect(self, peer: QpInfo) -> None:
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr

        e = self.e
        gid = GID(":".join(peer.gid.hex()[i:i + 4] for i in range(0, 32, 4)))
        attr = QPAttr(qp_state=e.IBV_QPS_INIT, port_num=PORT, cur_qp_state=e.IBV_QPS_RESET)
        attr.qp_access_flags = e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_LOCAL_WRITE
        attr.dest_qp_num = peer.qpn
        attr.rq_psn = peer.psn
        attr.sq_psn = 0
        attr.path_mtu = e.IBV_MTU_1024
        attr.max_dest_rd_atomic = attr.max_rd_atomic = 1
        attr.min_rnr_timer, attr.timeout, attr.retry_cnt, attr.rnr_retry = 12, 14, 7, 7
        attr.ah_attr = AHAttr(gr=GlobalRoute(dgid=gid, sgid_index=0), is_global=1, dlid=peer.lid, port_num=PORT)
        self.qp.to_rts(attr)
        for _ in range(MAX_IN_FLIGHT):
            self._post_recv()

    def _post_recv(self) -> None:
        from pyverbs.wr import SGE, RecvWR

        self.qp.post_recv(RecvWR(num_sge=1, sg=[SGE(self.scratch.buf, 64, self.scratch.lkey)]))

    def write(self, offset: int, length: int, remote_offset: int, peer: QpInfo) -> None:
        from pyverbs.wr import SGE, SendWR

        wr = SendWR(opcode=self.e.IBV_WR_RDMA_WRITE_WITH_IMM, num_sge=1, imm_data=socket.htonl(length),
                    sg=[SGE(self.rx_mr.buf + offset, length, self.rx_mr.lkey)])
        wr.set_wr_rdma(peer.rkey, peer.address + remote_offset)
        self.qp.post_send(wr)
        self.in_flight.append(length)

    def completions(self) -> tuple[list[int], list[int]]:
        """(sizes of our writes now complete, sizes of the peer's writes into our ring), in order; each is one
        contiguous piece of its ring."""
        sent: list[int] = []
        received: list[int] = []
        while True:
            polled, wcs = self.cq.poll(num_entries=16)
            if not polled:
                return sent, received
            for wc in wcs:
                if wc.status != self.e.IBV_WC_SUCCESS:
                    raise ConnectionError(f"an RDMA work request failed (status {wc.status})")
                if wc.opcode == self.e.IBV_WC_RECV_RDMA_WITH_IMM:
                    received.append(socket.ntohl(wc.imm_data))
                    self._post_recv()
                else:
                    sent.append(self.in_flight.pop(0))

    def close(self) -> None:
        for resource in (self.qp, self.rx_mr, self.tx_mr, self.scratch, self.cq, self.pd, self.ctx):
            resource.close()
        del self._rx_pin, self._tx_pin  # the rings can be unmapped now


def run_rdma(rings: TcpBridge, verbs: RdmaBridge, peer: QpInfo) -> None:
    """Move the channel over RDMA until both directions end; credits and FIN travel over the TCP socket."""
    remote = RemoteRing(peer.capacity)
    sock, rx, tx = rings.sock, rings.rx, rings.tx
    selector = selectors.DefaultSelector()
    selector.register(rings.bell.fileno(), selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    released = 0  # bytes of rx whose writes completed and that went back to the container
    credited = 0  # the container's read position in tx as last told to the peer
    fin_total: int | None = None  # what the peer says it wrote in all, once it is done
    fin_sent = shut = peer_gone = False
    control = bytearray()
    try:
        while not (fin_sent and shut) and not peer_gone and not (fin_sent and rings.container_gone):
            sent, received = verbs.completions()
            for n in sent:
                rx.peek()
                rx.release(n)
                released += n
            for n in received:
                tx.reserve(n)  # the peer's device already put the bytes there
                tx.commit(n)
            if sent or received:
                fence()
                if (sent and rx.writer_waiting) or (received and tx.reader_waiting):
                    rings.bell.ring()
            in_flight = sum(verbs.in_flight)
            unposted = rx.readable() - in_flight
            while unposted and remote.free() and len(verbs.in_flight) < MAX_IN_FLIGHT:
                local = (released + in_flight) % rx.capacity
                [(remote_offset, length), *_] = remote.segments(min(unposted, rx.capacity - local))
                verbs.write(local, length, remote_offset, peer)
                remote.wrote(length)
                in_flight += length
                unposted -= length
            closed = rx.writer_closed or rings.container_gone
            if not fin_sent and closed and not rx.readable() and not verbs.in_flight:
                sock.sendall(_CONTROL.pack(FIN, remote.head))
                fin_sent = True
            position = read_position(tx)
            if position != credited:
                sock.sendall(_CONTROL.pack(CREDIT, position))
                credited = position
            if not shut and fin_total is not None and tx.total_written >= fin_total:
                tx.shutdown_write()  # every byte the peer wrote is in: the container reads the end of the stream
                fence()
                rings.bell.ring()
                shut = True
            rings.announce(True)
            for key, _ in selector.select(0 if verbs.in_flight or (fin_total is not None and not shut) else 0.001):
                if key.fd == rings.bell.fileno():
                    if not rings.bell.drain():  # the container's end closed: it is gone
                        rings.container_gone = True
                        selector.unregister(rings.bell.fileno())
                elif key.fd == sock.fileno():
                    chunk = sock.recv(4096)
                    if not chunk:
                        peer_gone = True  # the other bridge is gone: nothing more can come or go
                        selector.unregister(sock)
                    control += chunk
            rings.announce(False)
            while len(control) >= _CONTROL.size:
                kind, value = _CONTROL.unpack(control[:_CONTROL.size])
                del control[:_CONTROL.size]
                if kind == CREDIT:
                    remote.credit(value)
                elif kind == FIN:
                    fin_total = value
    finally:
        selector.close()
        verbs.close()


def main(argv: list[str]) -> int:
    logs.setup(os.environ.get("FREEFLOW_LOG_LEVEL", "INFO"),
               "%(asctime)s %(levelname)s freeflow.rdma-bridge[%(process)d]: %(message)s")
    tx, rx, bell, fd = (int(arg) for arg in argv)
    sock = socket.socket(fileno=fd)
    rings = TcpBridge(ChannelFds(tx, rx, bell), sock, load_settings().bridge_timeout)
    sock.setblocking(True)  # TcpBridge made it non-blocking; the setup and the control messages block
    verbs = None
    try:
        verbs = RdmaBridge(rings) if rdma_available() else None
    except Exception as exc:  # noqa: BLE001 - any verbs failure means: use TCP
        log.warning("RDMA is not usable here, the channel goes over TCP: %s", exc)
    try:
        sock.settimeout(SETUP_TIMEOUT)
        sock.sendall(b"R" + verbs.info().encode() if verbs else b"T")
        answer = _exact(sock, 1)
        peer = QpInfo.decode(_exact(sock, _INFO.size)) if answer == b"R" else None
        sock.settimeout(None)
    except (OSError, ConnectionError) as exc:
        log.error("the channel's setup with the other host failed: %s", exc)
        if verbs is not None:
            verbs.close()
        rings.close()
        return 1
    if verbs is None or peer is None:
        if verbs is not None:
            verbs.close()
        sock.setblocking(False)
        rings.run()
        return 0
    try:
        verbs.connect(peer)
        run_rdma(rings, verbs, peer)
    finally:
        rings.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
