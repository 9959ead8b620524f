"""Channels between namespaces: shared memory when the router pairs them, TCP otherwise, never a crash.

Also fuzzes both ends of the hand-off: requests sent to a real router, and replies fed to the client.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from unittest import mock

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from freeflow.client import graft
from freeflow.client.channel import Channel
from freeflow.client.errors import AcceptTimeout, ChannelMemoryCap
from freeflow.router import protocol as p
from freeflow.shm.channel import channel_fds
from tests.router.test_fuzz_control import header, open_fds, send_fuzzed

PORT = 7000

# Accepts one channel, hashes everything until the end of the stream, answers the digest as a message;
# then, with {again}, accepts until a channel arrives over shared memory again.
SERVER = textwrap.dedent("""
    import hashlib
    from freeflow.client import Channel
    listener = Channel.listen({port})
    print("listening", listener.registered, flush=True)
    ch = listener.accept(timeout=30)
    digest, total, buf = hashlib.sha256(), 0, bytearray(1 << 20)
    while n := ch.recv_into(buf):
        digest.update(memoryview(buf)[:n])
        total += n
    ch.send_msg(digest.hexdigest().encode())
    ch.close()
    print(ch.path, total, flush=True)
    while {again}:
        ch = listener.accept(timeout=10)
        ch.close()
        if ch.path == "shm":
            print("again", ch.path, listener.registered, flush=True)
            break
""")

# Sends {mb} MiB, pausing (a line on stdout, then one on stdin) before MiB number {pause}.
CLIENT = textwrap.dedent("""
    import hashlib, os, sys
    from freeflow.client import Channel
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    ch = Channel.connect(("{ip}", {port}), timeout=30)
    for i in range({mb}):
        if i == {pause}:
            print("paused", flush=True)
            sys.stdin.readline()
        chunk = i.to_bytes(8, "little") + block[8:]
        digest.update(chunk)
        ch.sendall(chunk)
    ch.shutdown_write()
    echoed = ch.recv_msg().decode()
    ch.close()
    print(ch.path, echoed == digest.hexdigest(), flush=True)
""")

# Connects until the channel is over shared memory again (the listener registers with a new router lazily).
RECONNECT = textwrap.dedent("""
    import time
    from freeflow.client import Channel
    for _ in range(100):
        ch = Channel.connect(("{ip}", {port}), timeout=5)
        ch.close()
        if ch.path == "shm":
            break
        time.sleep(0.05)
    print(ch.path)
""")


def start_server(lab, ns: str, again: bool = False) -> subprocess.Popen:
    server = lab.python(ns, SERVER.format(port=PORT, again=again), background=True)
    assert server.stdout.readline().startswith("listening"), server.communicate(timeout=10)[1]
    return server


def run_client(lab, ns: str, mb: int, ip: str = "10.213.0.2") -> list[str]:
    return lab.python(ns, CLIENT.format(ip=ip, port=PORT, mb=mb, pause=-1)).split()


def paused_client(ns: str, mb: int, pause: int, ip: str = "10.213.0.2") -> subprocess.Popen:
    code = CLIENT.format(ip=ip, port=PORT, mb=mb, pause=pause)
    client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "paused", client.communicate(timeout=10)[1]
    return client


def finish(process: subprocess.Popen, stdin: str | None = None) -> list[str]:
    out, err = process.communicate(stdin, timeout=30)
    assert process.returncode == 0, err
    return out.split()


def test_a_channel_moves_200_mb_over_shared_memory(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = start_server(lab, b)
    assert run_client(lab, a, mb=200) == ["shm", "True"]
    assert finish(server) == ["shm", str(200 << 20)]


def test_messages_round_trip_on_every_path(lab):
    a, b = lab.add_host(1), lab.add_host(2, network="n2")
    c = lab.add_host(3)
    lab.start_router()
    echo = textwrap.dedent("""
        from freeflow.client import Channel
        listener = Channel.listen(7000)
        print("listening", flush=True)
        for _ in range(2):
            with listener.accept(timeout=20) as ch:
                for _ in range(4):
                    ch.send_msg(ch.recv_msg()[::-1])
    """)
    call = textwrap.dedent("""
        import os
        from freeflow.client import Channel
        with Channel.connect(("10.213.0.{n}", 7000), ring_size=1 << 16, timeout=20) as ch:
            sent = [b"", b"x", os.urandom(5000), os.urandom(300_000)]
            for message in sent:
                ch.send_msg(message)
            print(ch.path, all(ch.recv_msg() == m[::-1] for m in sent))
    """)
    servers = [lab.python(ns, echo, background=True) for ns in (b, c)]
    for server in servers:
        assert server.stdout.readline().strip() == "listening"
    assert lab.python(a, call.format(n=3)).split() == ["shm", "True"]
    assert lab.python(a, call.format(n=2)).split() == ["tcp", "True"], "another network is never paired"
    assert lab.python(c, call.format(n=2)).split() == ["tcp", "True"]
    assert lab.python(a, call.format(n=3)).split() == ["shm", "True"]
    for server in servers:
        finish(server)


def test_a_plain_grafted_server_speaks_the_same_framing(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = lab.python(b, textwrap.dedent("""
        import socket, struct
        from freeflow.client import graft
        srv = socket.create_server(("0.0.0.0", 7000))
        registration = graft.register_listener(7000)
        print("listening", flush=True)
        conn, peer = srv.accept()
        print(graft.accepted(conn, peer, 7000), flush=True)
        with conn, conn.makefile("rb") as stream:
            size = struct.unpack("<I", stream.read(4))[0]
            conn.sendall(struct.pack("<I", size) + stream.read(size)[::-1])
    """), background=True)
    assert server.stdout.readline().strip() == "listening"
    code = ("from freeflow.client import Channel\nwith Channel.connect(('10.213.0.2', 7000), timeout=10) as ch:\n"
            "    ch.send_msg(b'abc' * 1000)\n    print(ch.path, ch.recv_msg() == b'cba' * 1000)")
    assert lab.python(a, code).split() == ["grafted", "True"]
    assert finish(server) == ["True"]


def test_server_on_another_network_falls_back_to_tcp(lab):
    a, b = lab.add_host(1, network="n1"), lab.add_host(2, network="n2")
    lab.start_router()
    server = start_server(lab, b)
    assert run_client(lab, a, mb=8) == ["tcp", "True"]
    assert finish(server) == ["tcp", str(8 << 20)]


def test_without_router_channels_are_tcp(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    server = lab.python(b, SERVER.format(port=PORT, again=False), background=True)
    assert server.stdout.readline().split() == ["listening", "False"]
    assert run_client(lab, a, mb=8) == ["tcp", "True"]
    assert finish(server) == ["tcp", str(8 << 20)]


def test_memory_cap_refusal_is_an_error_until_a_channel_closes(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.extra_env["FREEFLOW_CHANNEL_MEMORY"] = str(3 << 20)  # one channel of two 1 MiB rings fits, not two
    lab.start_router()
    server = lab.python(b, textwrap.dedent("""
        from freeflow.client import Channel
        listener = Channel.listen(7000)
        print("listening", flush=True)
        with listener.accept(timeout=20) as first:
            while first.recv(100):
                pass
        with listener.accept(timeout=20) as again:
            print(again.path, flush=True)
    """), background=True)
    assert server.stdout.readline().strip() == "listening"
    client = textwrap.dedent("""
        import time
        from freeflow.client import Channel, ChannelMemoryCap
        first = Channel.connect(("10.213.0.2", 7000))
        try:
            Channel.connect(("10.213.0.2", 7000))
        except ChannelMemoryCap as exc:
            print("refused:", exc)
        first.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                again = Channel.connect(("10.213.0.2", 7000))
                break
            except ChannelMemoryCap:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        print(first.path, again.path)
        again.close()
    """)
    refused, paths = lab.python(a, client).strip().splitlines()
    assert refused.startswith("refused:") and "FREEFLOW_CHANNEL_MEMORY" in refused
    assert paths.split() == ["shm", "shm"]
    assert finish(server) == ["shm"]


def test_a_listener_that_does_not_accept_keeps_its_registration_and_every_channel(lab):
    """Offers queue in the listener's control connection until it accepts. When that queue is full, a new
    connector is refused (and falls back to TCP) rather than given a channel whose offer was lost, and the
    listener stays registered (the router used to drop it, with every offer still queued)."""
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    code = textwrap.dedent("""
        import sys
        from freeflow.client import Channel
        from freeflow.client.errors import AcceptTimeout
        listener = Channel.listen(7000)
        print("listening", flush=True)
        sys.stdin.readline()  # accepts nothing until the client has filled the queue
        paths = []
        while True:
            try:
                ch = listener.accept(timeout=3)
            except AcceptTimeout:
                break
            paths.append(ch.path)
            ch.close()
        print(paths.count("shm"), listener.registered, flush=True)
        sys.stdin.readline()
        with listener.accept(timeout=10) as last:
            print(last.path, flush=True)
    """)
    server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", code], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.stdin is not None and server.stdout is not None
    assert server.stdout.readline().strip() == "listening", server.communicate(timeout=10)[1]
    flood = textwrap.dedent("""
        from freeflow.client import Channel
        made = []
        while len(made) < 5000:
            ch = Channel.connect(("10.213.0.2", 7000), ring_size=4096, timeout=5)
            made.append(ch)
            if ch.path != "shm":
                break
        print(sum(ch.path == "shm" for ch in made), made[-1].path)
        for ch in made:
            ch.close()
    """)
    shm, last = lab.python(a, flood).split()
    assert last == "tcp" and int(shm) > 100, "the queue filled, and the next connector fell back to TCP"
    server.stdin.write("go\n")
    server.stdin.flush()
    assert server.stdout.readline().split() == [shm, "True"], "every channel a connector got was offered"
    assert "not accepting" in lab.router_log()
    server.stdin.write("go\n")
    server.stdin.flush()
    assert lab.python(a, RECONNECT.format(ip="10.213.0.2", port=7000)).strip() == "shm"
    assert finish(server) == ["shm"]


def test_router_restart_during_a_transfer_loses_nothing(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = start_server(lab, b, again=True)
    client = paused_client(a, mb=64, pause=32)
    lab.kill_router()
    lab.start_router()
    assert finish(client, "go\n") == ["shm", "True"]
    assert lab.python(a, RECONNECT.format(ip="10.213.0.2", port=PORT)).strip() == "shm"
    assert finish(server) == ["shm", str(64 << 20), "again", "shm", "True"]


def test_status_lists_an_open_channel_with_bytes_moved(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = start_server(lab, b)
    client = paused_client(a, mb=3, pause=2)
    sandboxes = lab.status()["sandboxes"]
    for ns in (a, b):
        channels = sandboxes[f"/run/netns/{ns}"]["channels"]
        assert len(channels) == 1, sandboxes
        assert channels[0]["ring_size"] == 1 << 20
        assert channels[0]["bytes_moved"] >= 2 << 20
        assert channels[0]["server"] == f"10.213.0.2:{PORT}"
    assert finish(client, "go\n") == ["shm", "True"]
    assert finish(server) == ["shm", str(3 << 20)]


def test_a_restarted_router_still_lists_the_open_channel(lab):
    """Found by the names of its doorbell's ends, and what it moved before the restart by its rings, which the
    router maps again from the processes of the channel."""
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = start_server(lab, b)
    client = paused_client(a, mb=3, pause=2)
    lab.kill_router()
    lab.start_router()
    sandboxes = lab.status()["sandboxes"]
    for ns in (a, b):
        [channel] = sandboxes[f"/run/netns/{ns}"]["channels"]
        assert (channel["ring_size"], channel["client"], channel["server"], channel["path"]) == (
            1 << 20, "10.213.0.1", f"10.213.0.2:{PORT}", "shm")
        assert channel["bytes_moved"] >= 2 << 20, "the client wrote 2 MiB before the restart"
    assert finish(client, "go\n") == ["shm", "True"]
    assert finish(server) == ["shm", str(3 << 20)]
    deadline = time.monotonic() + 10
    while any(lab.status()["sandboxes"][f"/run/netns/{ns}"]["channels"] for ns in (a, b)):
        assert time.monotonic() < deadline, "a closed channel is no longer listed"
        time.sleep(0.1)


def test_a_killed_peer_is_seen_as_the_end_of_the_stream(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = lab.python(b, textwrap.dedent("""
        from freeflow.client import Channel
        listener = Channel.listen(7000)
        print("listening", flush=True)
        ch = listener.accept(timeout=20)
        print(ch.path, ch.recv(5).decode(), flush=True)
        print("eof" if ch.recv(5) == b"" else "data", flush=True)
        try:
            ch.sendall(bytes(1 << 20))  # more than the ring holds: waits for a reader that is gone
        except BrokenPipeError as exc:
            print(type(exc).__name__, flush=True)
    """), background=True)
    assert server.stdout.readline().strip() == "listening"
    client = subprocess.Popen(
        ["ip", "netns", "exec", a, sys.executable, "-c",
         "import time\nfrom freeflow.client import Channel\n"
         "ch = Channel.connect(('10.213.0.2', 7000), ring_size=1 << 16)\nch.sendall(b'hello')\ntime.sleep(60)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert server.stdout.readline().split() == ["shm", "hello"]
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    assert finish(server) == ["eof", "PeerClosed"]


# The router's side: malformed channel requests.

def _connect(ip: str, port: int, reserved: int, ring: int) -> bytes:
    return header(p.Op.CHANNEL_CONNECT, 12) + struct.pack("<4sHHI", socket.inet_aton(ip), port, reserved, ring)


rings = st.one_of(st.sampled_from([4096, 1 << 16, 1 << 20, 0, 4095, 1 << 31]), st.integers(0, 2**32 - 1))
channel_connects = st.builds(_connect, st.sampled_from(["10.213.0.2", "10.213.0.1", "0.0.0.0", "10.9.9.9"]),
                             st.sampled_from([PORT, 0, 7001, 65535]), st.integers(0, 65535), rings)
channel_requests = st.one_of(
    channel_connects,
    st.builds(lambda port, reserved: header(p.Op.CHANNEL_LISTEN, 4) + struct.pack("<HH", port, reserved),
              st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(lambda op, body: header(op, len(body)) + body,
              st.sampled_from([p.Op.CHANNEL_CONNECT, p.Op.CHANNEL_LISTEN]), st.binary(max_size=20)),
    st.builds(lambda first, rest: first + rest, channel_connects, st.binary(max_size=24)),
    st.builds(lambda first, second: first + second, channel_connects, channel_connects),
)


def test_fuzzed_channel_requests_never_hurt_the_router(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    acceptor = lab.python(b, textwrap.dedent("""
        from freeflow.client import Channel
        listener = Channel.listen(7000)
        print("listening", listener.registered, flush=True)
        while True:
            listener.accept().close()
    """), background=True)
    try:
        assert acceptor.stdout.readline().split() == ["listening", "True"]
        baseline = send_fuzzed(lab, a, channel_requests, 200)
        deadline = time.monotonic() + 10
        while open_fds(lab.router.pid) > baseline and time.monotonic() < deadline:
            lab.status()  # forgets channels whose two sides are gone, with the router's mappings of them
            time.sleep(0.1)
        assert open_fds(lab.router.pid) <= baseline, "the router leaked descriptors"
        assert lab.router.poll() is None
        code = "from freeflow.client import Channel\nprint(Channel.connect(('10.213.0.2', 7000)).path)"
        assert lab.python(a, code).strip() == "shm"
    finally:
        acceptor.kill()
        acceptor.wait(10)


# The client's side: garbage replies from a fake router, in this process.

def _reply(kind: type[p.Message], ring: int = 4096) -> st.SearchStrategy[bytes]:
    if kind is p.VerdictReply:
        return st.builds(lambda v, r: p.VerdictReply(v, 0, r).encode(), st.integers(0, 3), st.integers(0, 6))
    if kind is p.GraftedReply:
        return st.just(p.GraftedReply("127.0.0.1", 1).encode())
    return st.builds(lambda ring: kind("127.0.0.1", PORT, 1, ring).encode(), st.sampled_from([ring, 1 << 16]))


reply_bytes = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.builds(lambda op, body: header(op, len(body)) + body, st.sampled_from(sorted(p.REPLIES)),
              st.binary(max_size=20)),
    *(_reply(kind) for kind in p.REPLIES.values()),
)
FD_KINDS = ("channel", "null", "pipe", "socket", "eventfd", "memfd")
well_formed = st.tuples(st.one_of(_reply(p.ChannelReady), _reply(p.ChannelOffer)), st.just(["channel"]))
segments = st.lists(st.one_of(st.tuples(reply_bytes, st.lists(st.sampled_from(FD_KINDS), max_size=3)), well_formed),
                    min_size=1, max_size=3)


def _make_fds(kinds: list[str]) -> tuple[list[int], list[int]]:
    """(descriptors to send, descriptors to close once sent); a "channel" is the 3 of one side."""
    send: list[int] = []
    close: list[int] = []
    for kind in kinds:
        if kind == "channel":
            mine, peer = channel_fds(4096)
            send += dataclasses.astuple(mine)
            close += dataclasses.astuple(peer)
        elif kind == "null":
            send.append(os.open(os.devnull, os.O_RDWR))
        elif kind == "pipe":
            r, w = os.pipe()
            send.append(r)
            close.append(w)
        elif kind == "socket":
            one, other = socket.socketpair()
            send.append(one.detach())
            close.append(other.detach())
        elif kind == "eventfd":
            send.append(os.eventfd(0))
        else:
            fd = os.memfd_create("fuzz")
            os.ftruncate(fd, 8192)
            send.append(fd)
    return send, close


def _fake_router(parts: list[tuple[bytes, list[str]]], prefix: bytes = b"") -> tuple[socket.socket, socket.socket]:
    """(client's end, router's end) of a control connection on which the "router" said all it will say."""
    client_end, router_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client_end.settimeout(2)
    if prefix:
        router_end.sendall(prefix)
    for data, kinds in parts:
        send, close = _make_fds(kinds)
        try:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", send))]
            router_end.sendmsg([data], ancillary if send else [])
        finally:
            graft.close_fds(send + close)
    router_end.shutdown(socket.SHUT_WR)
    return client_end, router_end


def _fd_count() -> int:
    gc.collect()  # so that descriptors of objects earlier tests dropped do not close in the middle of a count
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(segments, min_size=1, max_size=2))
def test_fuzzed_replies_give_a_channel_or_a_clear_error(replies: list[list[tuple[bytes, list[str]]]]) -> None:
    before = _fd_count()
    pairs = [_fake_router(parts) for parts in replies]
    fakes = [client_end for client_end, _ in pairs]
    try:
        with socket.create_server(("127.0.0.1", 0)) as fallback, \
                mock.patch.object(graft, "open_control", lambda timeout=0: fakes.pop(0) if fakes else None):
            try:
                with Channel.connect(fallback.getsockname(), ring_size=4096, timeout=5) as ch:
                    assert ch.path in ("shm", "tcp")
                    event(ch.path)
            except ChannelMemoryCap:
                event("memory cap")
    finally:
        for client_end, router_end in pairs:
            client_end.close()
            router_end.close()
    assert _fd_count() == before


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(segments, st.booleans())
def test_fuzzed_offers_give_channels_or_nothing(parts: list[tuple[bytes, list[str]]], registered: bool) -> None:
    before = _fd_count()
    pairs = [_fake_router(parts, p.VerdictReply(p.Verdict.GO, 0, 0).encode() if registered else b"")]
    fakes = [client_end for client_end, _ in pairs]
    try:
        with mock.patch.object(graft, "open_control", lambda timeout=0: fakes.pop(0) if fakes else None), \
                mock.patch.object(graft, "register_listener", lambda port, backlog=0: None), \
                Channel.listen(0) as listener:
            event("registered" if listener.registered else "not registered")
            for _ in range(8):
                try:
                    with listener.accept(timeout=0) as ch:
                        assert ch.path == "shm"
                        event("offer accepted")
                except AcceptTimeout:
                    pass
    finally:
        for client_end, router_end in pairs:
            client_end.close()
            router_end.close()
    assert _fd_count() == before
