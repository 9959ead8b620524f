"""The stream probe: its result lines, its percentile, real runs over a socket pair and over in-process rings."""

from __future__ import annotations

import socket
import threading

import pytest

from freeflow.bench import probe_stream
from freeflow.bench.probe_stream import (
    CHANNEL,
    PINGPONG,
    THROUGHPUT,
    UNIX,
    UNIX_BETWEEN,
    PingPong,
    Throughput,
    Trial,
    read_result,
    result_line,
)
from freeflow.client.channel import Channel, _SocketStream
from freeflow.shm import channel_pair


def test_round_trips_give_their_average_and_nearest_rank_99th_percentile():
    trips = list(range(100, 0, -1))  # 1..100 ns, in any order
    assert PingPong.of("shm", trips) == PingPong("shm", 0.0505, 0.099, 100)
    assert PingPong.of("shm", [2000]) == PingPong("shm", 2.0, 2.0, 1)
    assert PingPong.of("shm", list(range(1, 201))).p99_us == 0.198


def test_no_round_trip_is_an_error():
    with pytest.raises(ValueError, match="no round trip"):
        PingPong.of("shm", [])


def test_throughput_is_bits_per_second_in_giga():
    assert Throughput("unix", 10**9, 2.0).gbps == 4.0


@pytest.mark.parametrize("result", [Throughput("shm", 123, 0.5), PingPong("c-ring", 0.6, 0.7, 1000)])
def test_a_result_line_reads_back_as_the_same_result(result):
    assert read_result(result_line(result)) == result


@pytest.mark.parametrize("line", ['{"kind": "mystery", "path": "x"}', '{"kind": "throughput", "path": "x"}',
                                  "{}", '{"kind": "pingpong", "path": "x", "avg_us": "fast", "p99_us": 1,'
                                        ' "count": 1}'])
def test_a_line_without_a_result_is_refused(line):
    with pytest.raises((ValueError, KeyError, TypeError)):
        read_result(line)


def test_the_c_ring_prints_lines_the_probe_reads():
    line = '{"kind": "pingpong", "path": "c-ring", "avg_us": 0.5123, "p99_us": 0.6000, "count": 12}'
    assert read_result(line) == PingPong("c-ring", 0.5123, 0.6, 12)


def test_unix_tests_fork_a_child_that_answers():
    trials = [Trial(UNIX, THROUGHPUT, 65536, 0.05), Trial(UNIX, PINGPONG, 64, 0.05, warmup=0.01)]
    moved, trips = list(probe_stream.run("unused", 0, trials))
    assert isinstance(moved, Throughput) and moved.path == UNIX and moved.bytes >= 65536
    assert isinstance(trips, PingPong) and trips.path == UNIX and trips.count > 0 and trips.avg_us > 0


def test_unix_between_tests_connect_to_the_servers_socket(tmp_path):
    path = str(tmp_path / "probe.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    threading.Thread(target=probe_stream._serve_unix, args=(listener,), daemon=True).start()
    trials = [Trial(UNIX_BETWEEN, THROUGHPUT, 65536, 0.05), Trial(UNIX_BETWEEN, PINGPONG, 64, 0.05, warmup=0.01)]
    moved, trips = list(probe_stream.run("unused", 0, trials, path))
    assert isinstance(moved, Throughput) and moved.path == UNIX_BETWEEN and moved.bytes >= 65536
    assert isinstance(trips, PingPong) and trips.path == UNIX_BETWEEN and trips.count > 0
    listener.close()


def test_unix_between_tests_need_the_socket_path():
    with pytest.raises(ValueError, match="socket path"):
        list(probe_stream.run("unused", 0, [Trial(UNIX_BETWEEN, PINGPONG, 64, 0.05)]))


@pytest.fixture
def channels():
    """Both sides of an in-process shared-memory channel, as the client library hands them out."""
    a, b = channel_pair(capacity=1 << 16, timeout=10)
    sides = Channel(a, "shm", ("10.0.0.3", 1)), Channel(b, "shm", ("10.0.0.2", 2))
    yield sides
    for side in sides:
        side.close()


def serve_in_thread(channel: Channel) -> threading.Thread:
    thread = threading.Thread(target=probe_stream.answer, args=(channel,), daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("trial", [Trial(CHANNEL, THROUGHPUT, 1 << 20, 0.05),
                                  Trial(CHANNEL, PINGPONG, 64, 0.05, 0.0, spin=0.0),
                                  Trial(CHANNEL, PINGPONG, 64, 0.05, 0.01, spin=1.0)])
def test_a_channel_test_is_answered_by_the_server_side(channels, trial):
    client, server = channels
    thread = serve_in_thread(server)
    probe_stream.send_request(client, trial)
    if trial.kind == THROUGHPUT:
        result = probe_stream.throughput(client, client.path, trial)
        assert isinstance(result, Throughput) and result.bytes % trial.size == 0 and result.bytes > 0
    else:
        result = probe_stream.pingpong(client, client.path, trial)
        assert isinstance(result, PingPong) and result.count > 0
        client.shutdown_write()
    thread.join(10)
    assert not thread.is_alive()
    if trial.spin is not None:
        assert server.spin == trial.spin


def test_spin_reaches_the_rings_of_a_channel(channels):
    client, _ = channels
    probe_stream._set_spin(client, 0.0)
    assert client.spin == 0.0 == client._stream.spin
    client.spin = 0.25
    assert client._stream.spin == 0.25


def test_a_channel_over_a_socket_never_spins():
    mine, theirs = socket.socketpair()
    with theirs, Channel(_SocketStream(mine), "tcp", ("10.0.0.2", 1)) as channel:
        channel.spin = 1.0
        assert channel.spin == 0.0


def test_a_client_without_the_spin_setting_is_named():
    class OldChannel:
        pass

    with pytest.raises(RuntimeError, match="make up"):
        probe_stream._set_spin(OldChannel(), 0.0)  # type: ignore[arg-type]


def test_this_checkout_s_client_can_run_every_trial():
    assert probe_stream.check_client() == "ok"
