"""Channels: a byte stream to a peer over shared-memory rings the router hands out, or TCP when it cannot.

Standard library only. The router only introduces the two sides; the data never passes through it.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from typing import TYPE_CHECKING, Protocol

from freeflow.client import graft
from freeflow.client.errors import AcceptTimeout, ChannelMemoryCap
from freeflow.router import protocol as p
from freeflow.shm import channel as rings
from freeflow.shm.errors import EndOfChannel, ShmError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)

DEFAULT_RING = rings.DEFAULT_CAPACITY
REREGISTER_INTERVAL = 1.0  # seconds between attempts to register a listener with a (restarted) router
_PREFIX = struct.Struct("<I")  # the length before each message of send_msg(), as the shared-memory channel
_SMALL_MESSAGE = 4096
_RECV_PIECE = 1 << 20

SHM, GRAFTED, TCP = "shm", "grafted", "tcp"
# The calls a Channel passes on to its stream unchanged; each instance binds them to the stream's own methods,
# so the wrapper costs nothing per message (the methods of the class document them and type them).
_PASSED_ON = ("send", "sendall", "send_msg", "recv", "recv_into", "recv_msg")
_SOCKET_CALLS = ("send", "sendall", "recv", "recv_into")  # those of them a socket has as they are


class _Stream(Protocol):
    """What a Channel delegates to: a shared-memory channel, or a socket behind _SocketStream."""

    timeout: float | None

    def send(self, data: ReadableBuffer) -> int: ...
    def sendall(self, data: ReadableBuffer) -> None: ...
    def send_msg(self, data: ReadableBuffer) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def recv_into(self, buf: WriteableBuffer, nbytes: int = 0) -> int: ...
    def recv_msg(self) -> bytes: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class Channel:
    """A bidirectional byte stream with optional message framing; `path` says how it travels.

    "shm": shared-memory rings from the router; "grafted": a TCP connection the router turned into a
    unix socket pair; "tcp": plain TCP. The interface and the framing of send_msg() are the same on all.
    Errors are those of the path: PeerClosed/BrokenPipeError on send to a closed peer, TimeoutError
    after `timeout`, EndOfChannel/EOFError from recv_msg() at the end of the stream.
    """

    def __init__(self, stream: _Stream, path: str, peer: tuple[str, int]) -> None:
        self._stream = stream
        self.path = path
        self.peer = peer
        for name in _PASSED_ON:
            setattr(self, name, getattr(stream, name))

    @classmethod
    def connect(cls, address: tuple[str, int], ring_size: int = DEFAULT_RING,
                timeout: float | None = None) -> Channel:
        """A channel to the ChannelListener at `address`, each direction's ring `ring_size` bytes.

        Shared memory when the router pairs the two containers; otherwise, transparently, a TCP connection
        (grafted when possible). `timeout` bounds the TCP connect and every later call. Raises
        ChannelMemoryCap when the router refuses the channel for the memory cap (no fallback: the
        operator should see it), and OSError as socket.connect would when the TCP connection fails.
        """
        if ring_size & (ring_size - 1) or not p.MIN_RING <= ring_size <= p.MAX_RING:
            raise ValueError(f"ring_size {ring_size} is not a power of two between {p.MIN_RING} and {p.MAX_RING}")
        host, port = address
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        ip = _ipv4(host)
        shm = _connect_shm(ip, port, ring_size, timeout)
        if shm is not None:
            return cls(shm, SHM, (ip, port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            path = GRAFTED if graft.connect(sock, (ip, port)) else _nodelay(sock)
        except BaseException:
            sock.close()
            raise
        return cls(_SocketStream(sock), path, (ip, port))

    @classmethod
    def listen(cls, port: int, backlog: int = 128) -> ChannelListener:
        """Accept channels on `port` (0: any free port, see `.port`): shared memory and TCP fallbacks."""
        return ChannelListener(port, backlog)

    @property
    def timeout(self) -> float | None:
        """Seconds any one call may wait (None: until data, space or the peer's end)."""
        return self._stream.timeout

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._stream.timeout = seconds

    @property
    def spin(self) -> float:
        """Seconds a wait on shared memory spins before it sleeps on its doorbell (0: at once); a socket: 0."""
        return self._stream.spin if isinstance(self._stream, rings.Channel) else 0.0

    @spin.setter
    def spin(self, seconds: float) -> None:
        if isinstance(self._stream, rings.Channel):  # a socket always waits in the kernel
            self._stream.spin = seconds

    def send(self, data: ReadableBuffer) -> int:
        """Write what fits of `data`; return the count."""
        return self._stream.send(data)

    def sendall(self, data: ReadableBuffer) -> None:
        """Write all of `data`."""
        self._stream.sendall(data)

    def send_msg(self, data: ReadableBuffer) -> None:
        """Send `data` as one message: its length on 4 bytes (little-endian), then the bytes."""
        self._stream.send_msg(data)

    def recv(self, n: int) -> bytes:
        """Up to `n` bytes; b"" at the end of the stream (the peer closed, shut down or died)."""
        return self._stream.recv(n)

    def recv_into(self, buf: WriteableBuffer, nbytes: int = 0) -> int:
        """Like recv(), into `buf` (its first `nbytes` bytes if given); 0 at the end of the stream."""
        return self._stream.recv_into(buf, nbytes)

    def recv_msg(self) -> bytes:
        """The next message of the peer's send_msg(); EndOfChannel (an EOFError) if the stream ends first."""
        return self._stream.recv_msg()

    def shutdown_write(self) -> None:
        """Half-close: the peer reads the rest, then the end of the stream; this side can still receive."""
        self._stream.shutdown_write()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Channel {self.path} with {self.peer[0]}:{self.peer[1]}>"


class ChannelListener:
    """Where channels arrive: offers from the router, and TCP connections from peers it could not pair.

    The router's registrations (channel offers, and grafting of the TCP fallback) each live on a control
    connection held open; when one ends (the router restarted), accept() registers again, at most once
    per REREGISTER_INTERVAL. Without a router, only TCP connections arrive. One thread at a time.
    """

    def __init__(self, port: int, backlog: int = 128) -> None:
        self.backlog = backlog
        self._tcp: socket.socket | None = socket.create_server(("0.0.0.0", port), backlog=backlog)
        self._tcp.setblocking(False)
        self.port: int = self._tcp.getsockname()[1]
        self._offers: socket.socket | None = None  # CHANNEL_LISTEN: channel offers arrive on it
        self._grafting: socket.socket | None = None  # LISTEN: the TCP fallback may be grafted
        self._retry_at = 0.0
        try:
            self._register()
        except BaseException:
            self.close()
            raise

    @property
    def registered(self) -> bool:
        """Whether the router currently offers channels to this listener."""
        return self._offers is not None

    def accept(self, timeout: float | None = None) -> Channel:
        """The next channel, from whichever path comes first; AcceptTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._tcp is None:
                raise ValueError("accept on a closed ChannelListener")
            self._register()
            poller = select.poll()
            for sock in (self._offers, self._grafting, self._tcp):
                if sock is not None:
                    poller.register(sock, select.POLLIN)
            now = time.monotonic()
            wait = None if deadline is None else max(0.0, deadline - now)
            if self._offers is None or self._grafting is None:
                retry = max(0.0, self._retry_at - now)
                wait = retry if wait is None else min(wait, retry)
            ready = {fd for fd, _ in poller.poll(None if wait is None else wait * 1000)}
            channel = None
            if self._offers is not None and self._offers.fileno() in ready:
                channel = self._take_offer()
            if channel is None and self._grafting is not None and self._grafting.fileno() in ready:
                # The router never writes on a LISTEN connection: readable means it ended.
                self._grafting.close()
                self._grafting = None
                self._retry_at = 0.0
            if channel is None and self._tcp.fileno() in ready:
                channel = self._accept_tcp()
            if channel is not None:
                return channel
            if deadline is not None and time.monotonic() >= deadline:
                raise AcceptTimeout(f"no channel arrived on port {self.port} within {timeout} s")

    def _register(self) -> None:
        if (self._offers is not None and self._grafting is not None) or time.monotonic() < self._retry_at:
            return
        if self._offers is None:
            self._offers = _register_offers(self.port)
        if self._grafting is None:
            self._grafting = graft.register_listener(self.port, self.backlog)
        if self._offers is None or self._grafting is None:
            self._retry_at = time.monotonic() + REREGISTER_INTERVAL

    def _take_offer(self) -> Channel | None:
        assert self._offers is not None
        try:
            message, fds = graft.receive(self._offers)
        except graft.Fallback as exc:
            log.info("channel registration of port %d ended (%s): registering again", self.port, exc)
            self._offers.close()
            self._offers = None
            self._retry_at = 0.0
            return None
        if not isinstance(message, p.ChannelOffer) or len(fds) != p.CHANNEL_FDS:
            graft.close_fds(fds)
            log.warning("ignoring %s with %d descriptors from the router on port %d", type(message).__name__,
                        len(fds), self.port)
            return None
        stream = _open_rings(fds)
        return None if stream is None else Channel(stream, SHM, (message.peer_ip, message.peer_port))

    def _accept_tcp(self) -> Channel | None:
        assert self._tcp is not None
        try:
            conn, peer = self._tcp.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        try:
            conn.settimeout(None)
            grafted = graft.accepted(conn, peer, self.port)
            path = GRAFTED if grafted else _nodelay(conn)
        except BaseException:
            conn.close()
            raise
        return Channel(_SocketStream(conn), path, peer)

    def close(self) -> None:
        """Stop listening; channels already accepted stay open, offers not yet accepted are dropped."""
        for sock in (self._offers, self._grafting, self._tcp):
            if sock is not None:
                sock.close()
        self._offers = self._grafting = self._tcp = None

    def __enter__(self) -> ChannelListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _SocketStream:
    """A connected socket with the shared-memory channel's interface and framing."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        for name in _SOCKET_CALLS:  # the socket's own methods, bound: no frame of ours per message
            setattr(self, name, getattr(sock, name))

    @property
    def timeout(self) -> float | None:
        return self._sock.gettimeout()

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._sock.settimeout(seconds)

    def send(self, data: ReadableBuffer) -> int:
        return self._sock.send(data)

    def sendall(self, data: ReadableBuffer) -> None:
        self._sock.sendall(data)

    def send_msg(self, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        if view.nbytes > rings.MAX_MESSAGE:
            raise ValueError(f"a message holds at most {rings.MAX_MESSAGE} bytes, not {view.nbytes}")
        prefix = _PREFIX.pack(view.nbytes)
        if view.nbytes <= _SMALL_MESSAGE:
            self._sock.sendall(prefix + view)
        else:
            self._sock.sendall(prefix)
            self._sock.sendall(view)

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def recv_into(self, buf: WriteableBuffer, nbytes: int = 0) -> int:
        return self._sock.recv_into(buf, nbytes)

    def recv_msg(self) -> bytes:
        (size,) = _PREFIX.unpack(self._recv_exactly(_PREFIX.size, "before a message"))
        return self._recv_exactly(size, f"inside a {size}-byte message")

    def _recv_exactly(self, n: int, where: str) -> bytes:
        # In pieces, so a bogus length costs memory only as the bytes actually arrive.
        pieces = []
        got = 0
        while got < n:
            piece = self._sock.recv(min(n - got, _RECV_PIECE))
            if not piece:
                raise EndOfChannel(f"the peer closed the connection {where} (got {got} of {n} bytes)")
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


def _ipv4(host: str) -> str:
    """`host` as a dotted IPv4 address, resolving a name as a TCP connect would."""
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return socket.gethostbyname(host)
    return host


def _nodelay(sock: socket.socket) -> str:
    """Send small messages at once on a plain TCP connection, as the rings do."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return TCP


def _connect_shm(ip: str, port: int, ring_size: int, timeout: float | None) -> rings.Channel | None:
    """The client side of a channel from the router; None to fall back to TCP."""
    control = graft.open_control()
    if control is None:
        return None
    with control:
        try:
            reply, fds = graft.exchange_fds(control, p.ChannelConnect(ip, port, 0, ring_size))
        except graft.Fallback as exc:
            log.debug("channel to %s:%d falls back to TCP: %s", ip, port, exc)
            return None
    return channel_from_reply(reply, fds, f"{ip}:{port}", timeout)


def channel_from_reply(reply: p.Message, fds: list[int], target: str,
                       timeout: float | None = None) -> rings.Channel | None:
    """The router's answer to CHANNEL_CONNECT as a channel (taking `fds`), or None to fall back to TCP.

    Raises ChannelMemoryCap for a refusal over the memory cap, having closed every descriptor.
    """
    if isinstance(reply, p.ChannelReady) and len(fds) == p.CHANNEL_FDS:
        return _open_rings(fds, timeout)
    graft.close_fds(fds)
    if isinstance(reply, p.VerdictReply) and reply.verdict == p.Verdict.REFUSED \
            and reply.reason == p.Reason.MEMORY_CAP:
        raise ChannelMemoryCap(
            f"the router refused a shared-memory channel to {target}: it would exceed the channel memory "
            "cap of this container or of the peer's (FREEFLOW_CHANNEL_MEMORY on the router); close idle "
            "channels, ask for a smaller ring_size or raise the cap")
    log.debug("channel to %s falls back to TCP: the router answered %s with %d descriptors", target, reply,
              len(fds))
    return None


def _open_rings(fds: list[int], timeout: float | None = None) -> rings.Channel | None:
    """Map a side of a channel, taking the descriptors; None (all closed) if they are not a channel."""
    try:
        return rings.Channel.from_fds(rings.ChannelFds(*fds), timeout=timeout)
    except (OSError, ValueError, ShmError) as exc:
        log.warning("the router's channel descriptors are unusable: %s", exc)
        return None


def _register_offers(port: int) -> socket.socket | None:
    """A control connection on which the router offers channels to `port`, or None."""
    control = graft.open_control()
    if control is None:
        return None
    try:
        reply, fds = graft.exchange_fds(control, p.ChannelListen(port, 0))
    except graft.Fallback as exc:
        log.debug("channel listener on port %d not registered: %s", port, exc)
        control.close()
        return None
    graft.close_fds(fds)
    if not isinstance(reply, p.VerdictReply) or reply.verdict != p.Verdict.GO:
        log.debug("channel listener on port %d not registered: the router answered %s", port, reply)
        control.close()
        return None
    return control
