"""The control protocol fuzzed against a real router: no crash, no leaked descriptors, others unaffected."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freeflow.router import protocol as p
from freeflow.router.server import MAX_CONNS_PER_SANDBOX
from tests.integration.conftest import wait_for

# A client in the lab namespace that sends each hex-encoded message of stdin on a fresh control
# connection, then reports how the router answered: the bytes received before it closed, "?" when it reset the
# connection, "hang" when it did neither within 2 s.
SENDER = textwrap.dedent("""
    import socket, sys
    for line in sys.stdin:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(b"\\0freeflow")
        try:
            s.sendall(bytes.fromhex(line.strip()))
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(4096):
                got += chunk
            answer = len(got)
        except TimeoutError:
            answer = "hang"
        except OSError:
            answer = "?"
        s.close()
        print(answer, flush=True)
""")
# What the router logs when it refuses a request (a malformed one, or one it could not carry out).
REFUSED = re.compile(r"closing a control connection from \S+: |a request from \S+ failed: ")


def header(op: int, length: int, magic: int = p.MAGIC, version: int = p.VERSION) -> bytes:
    return p.HEADER.pack(length, magic, version, op)


messages = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda op, body: header(op, len(body)) + body, st.integers(0, 255), st.binary(max_size=32)),
    st.builds(lambda kind, body: header(kind.op, kind.layout.size) + body,
              st.sampled_from([p.Intent, p.Graft, p.Listen]),
              st.binary(min_size=12, max_size=12)),
    st.builds(lambda m, v, n: header(p.Op.INTENT, n, m, v), st.integers(0, 65535), st.integers(0, 255),
              st.integers(0, 2**32 - 1)),
)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def send_fuzzed(lab, ns: str, drawn: st.SearchStrategy[bytes], max_examples: int) -> int:
    """Send each message `drawn` gives on a control connection of its own from namespace `ns`, checking after each
    that the router answered or closed it and is still up; return the router's descriptor count from before."""
    sender = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    baseline = open_fds(lab.router.pid)

    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(drawn)
    def one(message: bytes) -> None:
        refusals = refused(lab)
        sender.stdin.write(message.hex() + "\n")
        sender.stdin.flush()
        answer = sender.stdout.readline().strip()
        assert answer != "hang", f"the router neither answered nor closed the connection within 2 s: {message!r}"
        assert answer == "?" or answer.isdigit(), answer
        assert lab.router.poll() is None, lab.router_log()
        if answer in ("0", "?") and whole(message):
            wait_for(lambda: refused(lab) > refusals, 5,
                     f"a log line saying why the router closed on {message!r} without an answer")

    try:
        one()
    finally:
        sender.stdin.close()
        sender.wait(10)
    return baseline


def refused(lab) -> int:
    """How many requests the router's log says it refused so far."""
    return len(REFUSED.findall(lab.full_router_log()))


def whole(message: bytes) -> bool:
    """Whether `message` holds at least one whole message by its header: the router read it all, so closing on
    it without an answer is a refusal it must explain (a part of one ends in silence: the sender left)."""
    if len(message) < p.HEADER.size:
        return False
    length = p.HEADER.unpack_from(message)[0]
    return len(message) >= p.HEADER.size + length



def test_fuzzed_control_messages_never_hurt_the_router(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    baseline = send_fuzzed(lab, a, messages, 300)
    assert lab.router.poll() is None
    assert open_fds(lab.router.pid) <= baseline, "the router leaked descriptors"
    # Still serving well-formed requests.
    verdict = lab.python(b, "from freeflow.client import graft\nfrom freeflow.router import protocol as p\n"
                            "c = graft.open_control()\n"
                            "print(graft.exchange(c, p.Intent('10.213.0.1', 80, 999))[0])")
    assert "VerdictReply" in verdict


def test_a_valid_request_split_into_single_bytes_is_understood(lab):
    lab.add_host(1)
    lab.add_host(2)
    lab.start_router()
    message = p.Intent("10.213.0.2", 80, 1234).encode()
    code = textwrap.dedent(f"""
        import socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(b"\\0freeflow")
        for byte in bytes.fromhex("{message.hex()}"):
            s.send(bytes([byte])); time.sleep(0.01)
        print(s.recv(64).hex())
    """)
    reply = bytes.fromhex(lab.python(lab.namespaces[0], code).strip())
    length, magic, version, op = struct.unpack("<IHBB", reply[:8])
    assert (length, magic, version, op) == (p.VerdictReply.layout.size, p.MAGIC, p.VERSION, p.Op.VERDICT)


def test_a_container_holding_too_many_control_connections_is_refused_more_and_others_are_not(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    # Opens the cap's worth of connections, checks the router answers an INTENT on each, then on one more;
    # holds them until told, then closes ten and tries again.
    code = textwrap.dedent(f"""
        import resource, socket, sys
        from freeflow.router import protocol as p
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        def one():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(b"\\0freeflow")
            s.sendall(p.Intent("10.213.0.2", 80, 1000).encode())
            try:
                served = len(s.recv(64)) > 0
            except OSError:
                served = False
            return s, served
        held = [one() for _ in range({MAX_CONNS_PER_SANDBOX})]
        print(all(served for _, served in held), one()[1], flush=True)
        sys.stdin.readline()
        for s, _ in held[:10]:
            s.close()
        print(one()[1], flush=True)
    """)
    holder = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", code], text=True, env=lab.env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().split() == ["True", "False"], lab.router_log()
        verdict = lab.python(b, "from freeflow.client import graft\nfrom freeflow.router import protocol as p\n"
                                "c = graft.open_control()\n"
                                "print(graft.exchange(c, p.Intent('10.213.0.1', 80, 999))[0])")
        assert "VerdictReply" in verdict, "another container is served meanwhile"
        out, _ = holder.communicate("\n", timeout=30)
        assert out.split() == ["True"], "room again once some closed"
    finally:
        holder.kill()
    assert lab.router.poll() is None


def test_the_router_raises_its_descriptor_limit_to_the_hard_one(lab):
    """README: every container may hold up to 1024 control connections, more than a soft limit of 1024 allows."""
    lab.add_host(1)
    lab.start_router(prefix=("prlimit", "--nofile=256:4096"))
    limits = Path(f"/proc/{lab.router.pid}/limits").read_text()
    assert re.search(r"Max open files\s+4096\s+4096\s", limits), limits


def test_a_router_out_of_descriptors_stays_up_and_serves_again_once_some_are_free(lab):
    a, _ = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    limit = open_fds(lab.router.pid) + 40
    subprocess.run(["prlimit", f"--pid={lab.router.pid}", f"--nofile={limit}:{limit}"], check=True)
    # More connections than the router has descriptors left: those it cannot accept wait in the backlog.
    code = textwrap.dedent("""
        import socket, sys
        held = []
        for _ in range(60):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(b"\\0freeflow")
            held.append(s)
        print("holding", flush=True)
        sys.stdin.readline()
    """)
    holder = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", code], text=True, env=lab.env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding"
        wait_for(lambda: "cannot accept a control connection" in lab.router_log(), 10,
                 "the router to run out of descriptors")
        assert lab.router.poll() is None, lab.router_log()
        holder.communicate("\n", timeout=10)
    finally:
        holder.kill()
    # The held connections are closed: once the listener in the container has rested, it is served again.
    verdict = lab.python(a, "import time\nfrom freeflow.client import graft\n"
                            "from freeflow.router import protocol as p\ntime.sleep(1.5)\nc = graft.open_control()\n"
                            "print(graft.exchange(c, p.Intent('10.213.0.1', 80, 999))[0])")
    assert "VerdictReply" in verdict, lab.router_log()
    assert lab.router.poll() is None
