"""Throughput and ping-pong probe over a freeflow Channel or an AF_UNIX socket, run with a container's python3.

`serve PORT [SOCKET]` answers channels (and AF_UNIX connections on the socket path SOCKET); `run HOST PORT TRIALS
[SOCKET]` runs each Trial of the JSON list and prints one JSON line per result; `check` says whether the
container's client can. A "unix" trial forks a child that answers on a socket pair, a "unix-between" trial
connects to the server's SOCKET (a folder both containers mount), both through the same code as the channel
server. Standard library only, plus freeflow.client (PYTHONPATH=/run/freeflow/python) for channels.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from freeflow.client import Channel

CHANNEL, UNIX, UNIX_BETWEEN = "channel", "unix", "unix-between"
THROUGHPUT, PINGPONG = "throughput", "pingpong"
SHM_WAIT_S = 5.0  # how long a client retries until the router pairs it over shared memory (a listener starting)
CALL_TIMEOUT_S = 30.0  # bounds connecting a channel or a socket
_LENGTH = 4  # bytes of the length before a request
_COUNT = 8  # bytes of the count a throughput receiver answers with


@dataclass(frozen=True)
class Trial:
    """One measurement; THROUGHPUT: `size`-byte messages one way for `seconds`; PINGPONG: `size` bytes each way."""

    transport: str  # CHANNEL: a freeflow Channel to the server; UNIX: a socket pair with a forked child;
    # UNIX_BETWEEN: an AF_UNIX socket to the server container
    kind: str
    size: int
    seconds: float
    warmup: float = 0.0  # PINGPONG: seconds of round trips before the timed ones
    spin: float | None = None  # CHANNEL: seconds each wait spins before it sleeps, on both ends (None: the default)


@dataclass(frozen=True)
class Throughput:
    """Bytes the receiver counted, and the seconds from the first send until its count arrived."""

    path: str
    bytes: int
    seconds: float

    @property
    def gbps(self) -> float:
        return self.bytes * 8 / self.seconds / 1e9


@dataclass(frozen=True)
class PingPong:
    """The timed round trips: their average and 99th percentile (nearest rank) in µs, and how many."""

    path: str
    avg_us: float
    p99_us: float
    count: int

    @classmethod
    def of(cls, path: str, round_trips_ns: list[int]) -> PingPong:
        if not round_trips_ns:
            raise ValueError("no round trip was timed")
        ordered = sorted(round_trips_ns)
        p99 = ordered[(99 * len(ordered) + 99) // 100 - 1]
        return cls(path, sum(ordered) / len(ordered) / 1000, p99 / 1000, len(ordered))


Result = Throughput | PingPong


def result_line(result: Result) -> str:
    """A result as the one JSON line the probe prints (the C ring prints the same)."""
    kind = THROUGHPUT if isinstance(result, Throughput) else PINGPONG
    return json.dumps({"kind": kind, **asdict(result)})


def read_result(line: str) -> Result:
    """The result a line of result_line() holds; ValueError, KeyError or TypeError when it holds none."""
    fields = json.loads(line)
    kind = fields.pop("kind")
    if kind == THROUGHPUT:
        return Throughput(str(fields["path"]), int(fields["bytes"]), float(fields["seconds"]))
    if kind == PINGPONG:
        return PingPong(str(fields["path"]), float(fields["avg_us"]), float(fields["p99_us"]), int(fields["count"]))
    raise ValueError(f"unknown kind of result {kind!r}")


class Stream(Protocol):
    """What a Channel and a socket both offer."""

    def sendall(self, data: bytes | bytearray | memoryview) -> None: ...
    def recv_into(self, buf: bytearray | memoryview, nbytes: int = 0) -> int: ...
    def close(self) -> None: ...


def _fill(stream: Stream, view: memoryview) -> bool:
    """Read exactly len(view) bytes into view; False when the stream ends before the first."""
    n = stream.recv_into(view)
    return n == len(view) or _filled(stream, view, n)


def _filled(stream: Stream, view: memoryview, got: int) -> bool:
    """The rest of _fill() after a first read of `got` bytes (0: it found the end of the stream)."""
    if not got:
        return False
    while got < len(view):
        n = stream.recv_into(view[got:])
        if not n:
            raise EOFError(f"the stream ended {got} bytes into a {len(view)}-byte message")
        got += n
    return True


def _read(stream: Stream, n: int) -> bytes:
    buf = bytearray(n)
    if not _fill(stream, memoryview(buf)):
        raise EOFError("the stream ended")
    return bytes(buf)


def _end_writes(stream: Stream) -> None:
    if isinstance(stream, socket.socket):
        stream.shutdown(socket.SHUT_WR)
    else:
        cast("Channel", stream).shutdown_write()


OLD_CLIENT = ("this freeflow client's Channel has no `spin` setting: the client published in /run/freeflow/python "
              "is older than the bench (rebuild the plugin: make up)")


def _spins(channel_type: type) -> bool:
    return isinstance(getattr(channel_type, "spin", None), property)


def _set_spin(channel: Stream, seconds: float) -> None:
    if not _spins(type(channel)):
        raise RuntimeError(OLD_CLIENT)
    cast("Channel", channel).spin = seconds


def check_client() -> str:
    """Return "ok" when the freeflow client can run every trial, else why not."""
    try:
        from freeflow.client import Channel
    except ImportError as exc:
        return f"no freeflow client ({exc}): is PYTHONPATH=/run/freeflow/python set and /run/freeflow mounted?"
    return "ok" if _spins(Channel) else OLD_CLIENT


def send_request(stream: Stream, trial: Trial) -> None:
    body = json.dumps(asdict(trial)).encode()
    stream.sendall(len(body).to_bytes(_LENGTH, "little") + body)


def answer(stream: Stream) -> None:
    """The server side of one trial: read its request, then count what arrives or echo each message."""
    length = int.from_bytes(_read(stream, _LENGTH), "little")
    trial = Trial(**json.loads(_read(stream, length)))
    if trial.spin is not None:
        _set_spin(stream, trial.spin)
    buf = bytearray(trial.size)
    if trial.kind == THROUGHPUT:
        total = 0
        while n := stream.recv_into(buf):
            total += n
        stream.sendall(total.to_bytes(_COUNT, "little"))
    else:
        _echo(stream, buf)


def _echo(stream: Stream, buf: bytearray) -> None:
    """Send back each message of len(buf) bytes until the stream ends; the loop keeps the methods it calls at
    hand, so the round trip it is part of measures the stream rather than the probe."""
    view = memoryview(buf)
    size = len(buf)
    recv_into, sendall = stream.recv_into, stream.sendall
    while (got := recv_into(view)) == size or _filled(stream, view, got):
        sendall(buf)


def _answered(stream: Stream) -> bool:
    """answer(), with a failure reported on stderr instead of raised; whether it succeeded."""
    try:
        answer(stream)
    except (EOFError, OSError, RuntimeError, ValueError, TypeError) as exc:
        print(f"probe_stream: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return False
    return True


def throughput(stream: Stream, path: str, trial: Trial) -> Throughput:
    """Send `trial.size`-byte messages for `trial.seconds`, then end the stream and wait for the receiver's count."""
    payload = bytes(trial.size)
    sent = 0
    started = time.perf_counter()
    end = started + trial.seconds
    while time.perf_counter() < end:
        stream.sendall(payload)
        sent += trial.size
    _end_writes(stream)
    counted = int.from_bytes(_read(stream, _COUNT), "little")
    seconds = time.perf_counter() - started
    if counted != sent:
        raise RuntimeError(f"the receiver counted {counted} bytes of the {sent} sent")
    return Throughput(path, counted, seconds)


def pingpong(stream: Stream, path: str, trial: Trial) -> PingPong:
    """Time round trips of `trial.size` bytes for `trial.seconds`, after `trial.warmup` seconds of untimed ones."""
    message = bytes(trial.size)
    view = memoryview(bytearray(trial.size))
    size = trial.size
    recv_into, sendall = stream.recv_into, stream.sendall
    clock = time.perf_counter_ns
    timed_from = clock() + int(trial.warmup * 1e9)
    end = timed_from + int(trial.seconds * 1e9)
    round_trips: list[int] = []
    timed = round_trips.append
    while True:
        started = clock()
        sendall(message)
        got = recv_into(view)
        if got != size and not _filled(stream, view, got):
            raise EOFError("the peer ended the ping-pong")
        now = clock()
        if now >= timed_from:
            timed(now - started)
            if now >= end:
                return PingPong.of(path, round_trips)


def _channel(host: str, port: int) -> Channel:
    from freeflow.client import Channel

    deadline = time.monotonic() + SHM_WAIT_S
    while True:
        channel = Channel.connect((host, port), timeout=CALL_TIMEOUT_S)
        if channel.path == "shm" or time.monotonic() > deadline:
            return channel  # the bench refuses a result whose path is not shared memory
        channel.close()
        time.sleep(0.1)


@contextmanager
def opened(trial: Trial, host: str, port: int, unix_path: str | None = None) -> Iterator[tuple[Stream, str]]:
    """The client's end of the trial's stream, with the path it took, its request sent; closed on exit."""
    if trial.transport == UNIX_BETWEEN:
        if unix_path is None:
            raise ValueError("a unix-between trial needs the server's socket path")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CALL_TIMEOUT_S)
            sock.connect(unix_path)
            sock.settimeout(None)  # like the socket pair: the ping-pong blocks in the kernel
            send_request(sock, trial)
            yield sock, UNIX_BETWEEN
        return
    if trial.transport == CHANNEL:
        channel = _channel(host, port)
        channel.timeout = None  # like the sockets it is compared with, it waits until data or the peer's end
        try:
            if trial.spin is not None:
                _set_spin(channel, trial.spin)
            send_request(channel, trial)
            yield channel, channel.path
        finally:
            channel.close()
        return
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            mine.close()
            status = 0 if _answered(theirs) else 1
        finally:
            os._exit(status)  # never back into the parent's code
    theirs.close()
    try:
        send_request(mine, trial)
        yield mine, UNIX
    finally:
        mine.close()
        os.waitpid(child, 0)


def run(host: str, port: int, trials: list[Trial], unix_path: str | None = None) -> Iterator[Result]:
    for trial in trials:
        with opened(trial, host, port, unix_path) as (stream, path):
            yield throughput(stream, path, trial) if trial.kind == THROUGHPUT else pingpong(stream, path, trial)


def serve(port: int, unix_path: str | None = None) -> None:
    """Answer one channel after the other (and, with `unix_path`, one AF_UNIX connection after the other on that
    socket path, in a thread), until killed; a failed trial is reported and the next one served."""
    from freeflow.client import Channel

    if unix_path is not None:
        with suppress(FileNotFoundError):
            os.unlink(unix_path)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(unix_path)
        unix.listen()
        threading.Thread(target=_serve_unix, args=(unix,), daemon=True).start()
    with Channel.listen(port) as listener:
        while True:
            with listener.accept() as channel:
                _answered(channel)


def _serve_unix(listener: socket.socket) -> None:
    """Answer one connection after the other until the listener is closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed under us
            return
        with conn:
            _answered(conn)


def main(argv: list[str]) -> None:
    if argv == ["check"]:
        print(check_client())
    elif argv[:1] == ["serve"] and len(argv) in (2, 3):
        serve(int(argv[1]), argv[2] if len(argv) == 3 else None)
    elif argv[:1] == ["run"] and len(argv) in (4, 5):
        trials = [Trial(**fields) for fields in json.loads(argv[3])]
        for result in run(argv[1], int(argv[2]), trials, argv[4] if len(argv) == 5 else None):
            print(result_line(result), flush=True)
    else:
        sys.exit("usage: probe_stream.py check | serve PORT [SOCKET] | run HOST PORT TRIALS_JSON [SOCKET]")


if __name__ == "__main__":
    main(sys.argv[1:])
