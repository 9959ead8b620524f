"""The preload library against a stand-in router, in a network namespace of its own (no Docker).

The library is built from client/preload with `make`; the programs under it (peer.py) use only the socket
module, so every call goes through libc and the library. The stand-in router (standin_router.py) pairs
whatever asks, never grafts, never answers, or hands out only one end, depending on its mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.namespaces import delete_namespace

HERE = Path(__file__).parent
SOURCES = Path(__file__).parents[3] / "client" / "preload"
ADDRESS = "10.199.0.1"
PORT = 7100
# Every wait in the library is bounded (router.h); a run that takes longer than this hangs somewhere.
HANG = 30


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("building the preload library needs make and a C compiler")
    build = tmp_path_factory.mktemp("preload")
    for source in SOURCES.glob("*.[ch]"):
        shutil.copy(source, build)
    shutil.copy(SOURCES / "Makefile", build)
    subprocess.run(["make", "-s", "-C", str(build)], check=True, capture_output=True, timeout=120)
    return build / "libfreeflow.so"


@dataclass
class Namespace:
    name: str
    library: Path

    def run(self, *argv: str, preload: bool = True, **env: str) -> subprocess.Popen[str]:
        environ = {**os.environ, **env}
        if preload:
            environ["LD_PRELOAD"] = str(self.library)
        return subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, *argv], env=environ,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def router(self, mode: str, **env: str) -> subprocess.Popen[str]:
        router = self.run(str(HERE / "standin_router.py"), mode, preload=False,
                          PYTHONPATH=str(Path(__file__).parents[3]), **env)
        assert router.stdout is not None
        assert json.loads(router.stdout.readline()) == {"event": "ready"}, router.stderr.read()
        return router

    def server(self, *args: str, **env: str) -> subprocess.Popen[str]:
        server = self.run(str(HERE / "peer.py"), "server", str(PORT), *args, **env)
        assert server.stdout is not None
        assert json.loads(server.stdout.readline()) == {"listening": PORT}, server.stderr.read()
        return server

    def client(self, size: int, mode: str = "blocking", **env: str) -> dict:
        client = self.run(str(HERE / "peer.py"), "client", ADDRESS, str(PORT), str(size), mode, **env)
        out, err = client.communicate(timeout=HANG)
        assert client.returncode == 0, err
        return json.loads(out.splitlines()[-1])


def _output(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What an exited process printed after its first line, read through the same buffered pipes as that line.

    Not communicate(): it reads the raw descriptors, so lines that the first readline() took into the pipe's
    buffer along with the first one would be lost (a busy machine prints them before the test reads).
    """
    process.wait(timeout=HANG)  # the peers print a few short lines: no pipe fills up before they exit
    assert process.stdout is not None and process.stderr is not None
    return process.stdout.read(), process.stderr.read()


def finish(process: subprocess.Popen[str]) -> list[dict]:
    """The JSON lines a peer printed, once it exited by itself."""
    out, err = _output(process)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


def stop(process: subprocess.Popen[str]) -> list[dict]:
    """Stop the stand-in router; the events it printed."""
    process.kill()
    out, _ = _output(process)
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def netns(library: Path) -> Iterator[Namespace]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    name = f"ffpre-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # A veth pair with both ends inside: an address that is neither loopback nor on another host.
        for command in (["link", "set", "lo", "up"], ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                        ["address", "add", f"{ADDRESS}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                        ["link", "set", "eth1", "up"]):
            subprocess.run(["ip", "-n", name, *command], check=True)
        yield Namespace(name, library)
    finally:
        delete_namespace(name)


def assert_passes_for_tcp(line: dict) -> None:
    """What a TCP program reads off its socket, grafted or not."""
    assert line["digest_ok"] is True
    assert line["domain"] == 2 and line["protocol"] == 6  # AF_INET, IPPROTO_TCP
    assert line["local"][0] == ADDRESS and line["peer"] == [ADDRESS, PORT] == line["dup_peer"]
    assert line["nodelay"] == 1
    assert line["tcp_state"] == 1  # TCP_ESTABLISHED
    assert line["ip_options"] == 0
    assert line["keepalive"] == 1 and line["priority"] == 6 and line["keepidle"] == 30, "set before connect"


@pytest.mark.parametrize("mode", ["blocking", "epoll", "epoll-first", "sendto"])
def test_connections_are_grafted_and_still_look_like_tcp(netns: Namespace, mode: str) -> None:
    router = netns.router("go")
    server = netns.server()
    line = netns.client(2_000_000, mode)
    [accepted] = finish(server)
    assert line["grafted"] and accepted["grafted"], stop(router)
    assert_passes_for_tcp(line)
    assert accepted["peer"] == line["local"] == accepted["accepted_addr"]
    assert accepted["keepalive"] == 1, "inherited from the listener"
    assert accepted["keepidle"] == 7200, "TCP's default, as the accepted TCP socket had it"
    if mode == "blocking":
        assert line["keepintvl"] == 5, "set after connect"
    if mode.startswith("epoll"):
        assert line["connect_errno"] == "EINPROGRESS" and line["writable"] and line["so_error"] == 0
    assert "grafted" in [event["event"] for event in stop(router)]


@pytest.mark.parametrize(("client_mode", "server_how"), [("linger", ""), ("blocking", "linger")])
def test_connections_whose_close_resets_are_grafted_whole(netns: Namespace, client_mode: str, server_how: str):
    """With SO_LINGER {on, 0} on one end, giving up its TCP socket resets the connection: the other end, past
    the handshake that commits both to the socket pair, must not depend on that connection any more (it
    did in 15-70% of connections here: both ends were left on dead sockets)."""
    count = 60
    router = netns.router("go")
    server = netns.server(str(count), server_how)
    client = netns.run(str(HERE / "peer.py"), "client", ADDRESS, str(PORT), "1000", client_mode, str(count))
    out, err = client.communicate(timeout=HANG)
    assert client.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    accepted = finish(server)
    assert [(line["grafted"], line["digest_ok"]) for line in lines] == [(True, True)] * count, stop(router)
    assert [line["grafted"] for line in accepted] == [True] * count
    stop(router)


def test_the_librarys_own_descriptors_leave_the_standard_streams_free(netns: Namespace) -> None:
    """A listener's control connection, made at listen(), is not given number 0 when stdin is closed: the
    program opening /dev/null again for it gets 0, as without the library, and the listener still grafts."""
    router = netns.router("go")
    server = netns.server("1", "nostdin")
    line = netns.client(100_000)
    reopened, accepted = finish(server)
    assert reopened == {"reopened_fd": 0}
    assert line["grafted"] and accepted["grafted"], stop(router)
    stop(router)


@pytest.mark.parametrize("router", ["always", None])
def test_a_refused_non_blocking_connect_reports_as_on_tcp(netns: Namespace, router: str | None) -> None:
    """EINPROGRESS from connect(), then EPOLLERR and ECONNREFUSED in SO_ERROR: code that only reads SO_ERROR
    after the socket is writable must see the failure (the library returned ECONNREFUSED from connect() and
    left SO_ERROR 0)."""
    running = netns.router(router) if router else None
    line = netns.client(0, "refused")
    assert line == {"connect_errno": "EINPROGRESS", "error_event": True, "so_error": "ECONNREFUSED"}, line
    if running:
        assert any(event["event"] == "intent" for event in stop(running)), "the library asked the router"


def test_a_router_hung_since_it_took_a_registration_costs_event_loops_little(netns: Namespace) -> None:
    """It answers nothing any more. An event loop's connect pays its 0.1 s budget at most three times in a
    row, then the library skips the router; a server pays the full GRAFT bound (2 s) once, then only a
    short wait per accept while it skips the router."""
    count = 5
    router = netns.router("mute")
    server = netns.server(str(count))
    client = netns.run(str(HERE / "peer.py"), "client", ADDRESS, str(PORT), "1000", "epoll", str(count))
    out, err = client.communicate(timeout=HANG)
    assert client.returncode == 0, err
    connects = [json.loads(line)["connect_seconds"] for line in out.splitlines()]
    accepts = [line["accept_seconds"] for line in finish(server)]
    stop(router)
    assert max(connects[3:]) < min(connects[:3]) / 4, connects  # asked three times, then skipped
    assert max(accepts[1:]) < accepts[0] / 4, accepts  # the first GRAFT found the router hung


def test_a_process_skipping_a_slow_router_still_grafts_what_it_accepts(netns: Namespace) -> None:
    """After a reply that came too late, the library skips the router for new connections of its own; the
    GRAFT of an accepted connection is not skipped, since its client waits for it in the router (each client
    waited the router's graft wait, then stayed on TCP)."""
    router = netns.router("go", STANDIN_FIRST_INTENT_DELAY="0.7")  # past FF_REPLY_MS, 0.5 s
    server = netns.server("1", "skipping")
    line = netns.client(100_000)
    [accepted] = finish(server)
    assert line["grafted"] and accepted["grafted"], stop(router)
    stop(router)


def test_a_non_blocking_connect_that_ran_out_of_its_budget_does_not_skip_the_router(netns: Namespace) -> None:
    """An event loop's connect gives the router FF_NONBLOCK_MS (0.1 s): a reply later than that is its own
    haste, not a hung router, so the next connection asks the router again."""
    router = netns.router("go", STANDIN_FIRST_INTENT_DELAY="0.2")
    server = netns.server("2")
    client = netns.run(str(HERE / "peer.py"), "client", ADDRESS, str(PORT), "100000", "epoll", "2")
    out, err = client.communicate(timeout=HANG)
    assert client.returncode == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    finish(server)
    assert not first["grafted"] and second["grafted"], stop(router)
    stop(router)


@pytest.mark.parametrize("router", ["go", None])
def test_shutdown_both_ways_ends_a_read_blocked_in_another_thread_as_on_tcp(netns: Namespace, router: str | None):
    """A server stops a reader thread with shutdown(SHUT_RDWR); on a grafted socket that shut writing only,
    and the read waited for the peer."""
    running = netns.router(router) if router else None
    server = netns.server()
    line = netns.client(1000, "unblock")
    [accepted] = finish(server)
    assert line["grafted"] is (router is not None), stop(running) if running else line
    ended = [["eof"]] if router else [["eof"], ["ECONNRESET"]]  # TCP: the peer's answer may reset it first
    assert line["read_after_shutdown"] in ended, line
    assert accepted["answered"] is (router is None), "a socket pair refuses the write at once, TCP one later"
    if running:
        stop(running)


@pytest.mark.parametrize("router", ["go", None])
def test_recv_with_msg_trunc_discards_without_a_buffer_as_on_tcp(netns: Namespace, router: str | None) -> None:
    """haproxy drains a connection with recv(fd, NULL, n, MSG_TRUNC): a unix socket would fail with EFAULT."""
    running = netns.router(router) if router else None
    server = netns.server()
    line = netns.client(100_000, "trunc")
    finish(server)
    assert line["grafted"] is (router is not None), stop(running) if running else line
    assert line["digest_ok"] and line["truncated"] == [56, 0, 56, 0, True], line
    if running:
        stop(running)


def test_a_non_blocking_connect_does_not_wait_for_a_slow_accept(netns: Namespace, tmp_path: Path) -> None:
    """An event loop's connect gets a short budget (FF_NONBLOCK_MS, 0.1 s) for the graft, then stays on TCP;
    the router is not blamed for it, so the next connection is grafted again. Here the server accepts only
    once the client's connect has returned, and the router would wait 60 s for that accept: a connect that
    waits for it is cut off by the library's own bound on a graft (FF_GRAFT_MS, 2 s). Before, the connect
    stalled so, and the library then skipped the router for 5 s."""
    mark = {"PEER_CONNECTED_MARK": str(tmp_path / "connected")}
    router = netns.router("go", STANDIN_GRAFT_WAIT="60")
    server = netns.server("2", "slow", **mark)
    first = netns.client(1_000_000, "epoll", **mark)
    second = netns.client(1_000_000)
    lines = finish(server)
    events = stop(router)
    assert first["connect_errno"] == "EINPROGRESS" and not first["grafted"], events
    assert first["connect_seconds"] < 1.0, "the event loop waited for the graft's own bound"
    assert_passes_for_tcp(first)
    assert second["grafted"], events
    assert [line["grafted"] for line in lines] == [False, True]


def test_a_grafted_socket_closed_through_fclose_leaves_nothing_behind(netns: Namespace) -> None:
    """libc's fclose closes the descriptor without close(): the library must still forget the graft, or the
    next socket under that number would answer as the old TCP connection."""
    router = netns.router("go")
    server = netns.server()
    line = netns.client(100_000, "fclose")
    finish(server)
    assert line["grafted"], stop(router)
    assert line["after_close"] == {"same_fd": True, "getsockopt": "ENOTSOCK"}
    stop(router)


def test_a_socket_pair_under_the_number_of_a_grafted_socket_answers_as_unix(netns: Namespace) -> None:
    """A close the library never saw (a raw system call): the socket pair that takes the number is new."""
    router = netns.router("go")
    server = netns.server()
    line = netns.client(100_000, "rawclose")
    finish(server)
    assert line["grafted"], stop(router)
    assert line["after_close"] == {"same_fd": True, "domains": [1, 1]}  # AF_UNIX
    stop(router)


def test_a_forked_childs_close_is_its_own(netns: Namespace) -> None:
    """A forked child has its own copy of the library's table: the socket pair that takes the number of the
    grafted socket it closed is new, while the parent's socket still answers as TCP."""
    router = netns.router("go")
    server = netns.server()
    line = netns.client(100_000, "forkclose")
    finish(server)
    assert line["grafted"], stop(router)
    assert_passes_for_tcp(line)
    assert line["after_close"] == {"same_fd": True, "domains": [1, 1]}  # AF_UNIX
    stop(router)


def test_a_grafted_socket_handed_across_exec_still_answers_as_tcp(netns: Namespace) -> None:
    """The new program has none of the library's memory: it knows the socket by the name the router gave it."""
    router = netns.router("go")
    server = netns.server("1", "exec")
    line = netns.client(1_000_000)
    [accepted] = finish(server)
    assert line["grafted"] and accepted["grafted"], stop(router)
    assert (accepted["domain"], accepted["protocol"], accepted["tcp_state"]) == (2, 6, 1)  # AF_INET, TCP, established
    assert accepted["peer"] == line["local"] == accepted["dup_peer"] and accepted["local"] == [ADDRESS, PORT]
    assert accepted["keepidle"] == 7200, "TCP's default"
    assert accepted["ip_options"] == 0, "sshd refuses a connection with IP options"
    assert line["digest_ok"]
    stop(router)


def test_a_forked_child_accepts_on_the_parents_registration(netns: Namespace) -> None:
    router = netns.router("go")
    server = netns.server("2", "fork")
    first, second = netns.client(100_000), netns.client(100_000)
    lines = finish(server)
    assert {"parent_closed": True} in lines
    assert first["grafted"] and second["grafted"], stop(router)
    assert [line["grafted"] for line in lines if "grafted" in line] == [True, True]


def test_a_program_run_through_vfork_leaves_the_parents_sockets_as_they_were(netns: Namespace) -> None:
    """Python's subprocess (as OpenJDK's and others) vforks: the child shares its parent's memory, and its
    dup2 and close calls, before exec, must not change what the parent's library knows of its sockets."""
    router = netns.router("go")
    server = netns.server("1", "spawn")
    line = netns.client(100_000, "spawn")
    [accepted] = finish(server)
    assert line["grafted"] and accepted["grafted"], stop(router)
    assert_passes_for_tcp(line)
    assert accepted["keepalive"] == 1 and accepted["peer"] == line["local"]
    stop(router)


def test_a_router_that_says_overlay_leaves_tcp_alone(netns: Namespace) -> None:
    router = netns.router("overlay")
    server = netns.server()
    line = netns.client(1_000_000)
    [accepted] = finish(server)
    assert not line["grafted"] and not accepted["grafted"]
    assert_passes_for_tcp(line)
    assert [e["go"] for e in stop(router) if e["event"] == "intent"] == [False]


@pytest.mark.parametrize("mode", ["silent", "half"])
def test_a_router_that_fails_midway_costs_a_bounded_wait_and_no_data(netns: Namespace, mode: str) -> None:
    """`silent` never answers, `half` gives only the client its end: both ends stay on TCP, intact."""
    router = netns.router(mode)
    server = netns.server()
    line = netns.client(1_000_000)
    [accepted] = finish(server)
    assert not line["grafted"] and not accepted["grafted"]
    assert_passes_for_tcp(line)
    stop(router)


def test_no_router_and_disabled_library_use_plain_tcp(netns: Namespace) -> None:
    server = netns.server("2")
    without_router = netns.client(500_000)
    router = netns.router("go")
    disabled = netns.client(500_000, FREEFLOW_DISABLE="1")
    lines = finish(server)
    assert not without_router["grafted"] and not disabled["grafted"]
    assert [line["grafted"] for line in lines] == [False, False]
    assert_passes_for_tcp(without_router)
    assert_passes_for_tcp(disabled)
    assert not [e for e in stop(router) if e["event"] == "intent"]
