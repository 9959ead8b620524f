"""One side of a cross-host channel: moves bytes between a container's rings and the host TCP connection to the
other host's bridge, straight from and into ring memory (send from a peeked view, recv_into a reserved one).

The router starts one process per channel (`python -m freeflow.router.tcp_bridge TX RX BELL SOCKET`,
descriptors inherited), in a session of its own, so a router restart leaves it running. It ends when both
directions have ended: the container closes or dies (its end of the doorbell closes), or the peer does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import sys

from freeflow import logs
from freeflow.config.settings import load_settings
from freeflow.shm.channel import ChannelFds, close_all
from freeflow.shm.doorbell import Doorbell, fence
from freeflow.shm.errors import RingCorrupted
from freeflow.shm.ring import Ring

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # at most this much per send or recv, so neither direction starves the other
IDLE = 1.0  # seconds between checks of a quiet channel (every wake-up is also rung)


class TcpBridge:
    """The bridge's rings (tx: to the container, rx: from it), its end of the doorbell, and the socket."""

    def __init__(self, fds: ChannelFds, sock: socket.socket, timeout: int = 60) -> None:
        self.tx, self.rx = Ring.attach(fds.tx), Ring.attach(fds.rx)
        os.close(fds.tx)
        os.close(fds.rx)
        self.bell = Doorbell(fds.bell)
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _end_after_silence(sock, timeout)
        self.sending = True  # container -> socket still open
        self.receiving = True  # socket -> container still open
        self.container_gone = False
        # Whether the socket may hold bytes: false after a read came back short, true again when the selector
        # reports it readable (or a quiet interval passed). Saves a failing recv on every step of a ping-pong.
        self.socket_readable = True

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.bell.fileno(), selectors.EVENT_READ)
        watched = 0
        try:
            while self.sending or self.receiving:
                if self._step():
                    continue
                self.announce(True)
                if self._step():  # something arrived between the last look and the announcement
                    self.announce(False)
                    continue
                # The socket only when it can unblock something: data to send, or space to receive into.
                wanted = ((selectors.EVENT_READ if self.receiving and self.tx.writable() else 0)
                          | (selectors.EVENT_WRITE if self.sending and self.rx.readable() else 0))
                if wanted != watched:
                    if not watched:
                        selector.register(self.sock, wanted)
                    elif not wanted:
                        selector.unregister(self.sock)
                    else:
                        selector.modify(self.sock, wanted)
                    watched = wanted
                ready = selector.select(IDLE)
                rung = False
                for key, _ in ready:
                    if key.fd == self.bell.fileno():
                        rung = True
                    else:
                        self.socket_readable = True  # readable or writable: a recv will tell
                if not ready:
                    self.socket_readable = True
                if rung and not self.bell.drain():
                    self._container_died()
                    selector.unregister(self.bell.fileno())
                self.announce(False)
        finally:
            selector.close()
            self.close()

    def _step(self) -> bool:
        """Move what can move without waiting; True if anything did."""
        moved = False
        if self.sending:
            moved |= self._to_socket()
        if self.receiving:
            moved |= self._to_container()
        return moved

    def _to_socket(self) -> bool:
        closed = self.rx.writer_closed  # read before the data, so nothing committed before the close is lost
        view = self.rx.peek()
        if view:
            try:
                sent = self.sock.send(view[:CHUNK])
            except BlockingIOError:
                return False
            except OSError:
                self._end_receiving()
                self.sending = False
                return True
            self.rx.release(sent)
            fence()
            if self.rx.writer_waiting:
                self.bell.ring()
            return True
        if closed or self.container_gone:
            with contextlib.suppress(OSError):  # the peer may have reset already
                self.sock.shutdown(socket.SHUT_WR)
            self.sending = False
            return True
        return False

    def _to_container(self) -> bool:
        if self.tx.reader_closed:
            self._end_receiving()
            return True
        if not self.socket_readable:
            return False
        view = self.tx.reserve(CHUNK)
        if not view:
            return False
        try:
            got = self.sock.recv_into(view)
        except BlockingIOError:
            self.socket_readable = False
            return False
        except OSError:
            got = 0
        if not got:
            self._end_receiving()
            return True
        if got < len(view):
            self.socket_readable = False  # it gave all it had
        self.tx.commit(got)
        fence()
        if self.tx.reader_waiting:
            self.bell.ring()
        return True

    def _end_receiving(self) -> None:
        """No more bytes for the container: it reads what is left, then end of stream."""
        self.receiving = False
        self.tx.shutdown_write()
        fence()
        self.bell.ring()

    def _container_died(self) -> None:
        self.container_gone = True
        if self.receiving:
            self._end_receiving()

    def announce(self, sleeping: bool) -> None:
        """Ask the container to ring when it adds data (rx) or frees space (tx)."""
        self.rx.reader_waiting = sleeping and self.sending
        self.tx.writer_waiting = sleeping and self.receiving
        fence()

    def close(self) -> None:
        self.tx.shutdown_write()
        self.rx.shutdown_read()
        fence()
        self.bell.ring()
        close_all(self.tx.close, self.rx.close, self.bell.close, self.sock.close)


def _end_after_silence(sock: socket.socket, timeout: int) -> None:
    """Make the connection fail once the other host has been silent for about `timeout` seconds: keepalive
    probes when it is idle, a user timeout for data it never acknowledges (a host that lost power sends no
    reset). The failure reads as the end of the stream, which the container then sees."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, timeout // 2))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, timeout // 6))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout * 1000)


def main(argv: list[str]) -> int:
    logs.setup(os.environ.get("FREEFLOW_LOG_LEVEL", "INFO"),
               "%(asctime)s %(levelname)s freeflow.bridge[%(process)d]: %(message)s")
    tx, rx, bell, sock = (int(arg) for arg in argv)
    try:
        bridge = TcpBridge(ChannelFds(tx, rx, bell), socket.socket(fileno=sock),
                           load_settings().bridge_timeout)
        bridge.run()
    except RingCorrupted as exc:
        log.error("channel closed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
