"""The connection set-up probe against a local server, and the median the bench reads from its output."""

from __future__ import annotations

import socket
import threading

import pytest

from freeflow.bench.connect import parse_connect_times
from freeflow.bench.errors import ToolOutputError
from freeflow.bench.probe_connect import connect_times


def test_median_of_the_connect_times_in_microseconds():
    assert parse_connect_times('{"connect_ns": [30000, 10000, 20000, 900000]}') == 25.0


@pytest.mark.parametrize("stdout", ["", "{}", '{"connect_ns": []}', '{"connect_ns": ["x"]}', "[1, 2]"])
def test_output_without_times_is_refused(stdout):
    with pytest.raises(ToolOutputError, match="no times"):
        parse_connect_times(stdout)


def test_a_failed_probe_is_quoted():
    stderr = "Traceback (most recent call last):\n  ...\nConnectionRefusedError: [Errno 111] Connection refused\n"
    with pytest.raises(ToolOutputError, match="ConnectionRefusedError"):
        parse_connect_times("", stderr)


def test_each_connection_is_timed():
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        port = server.getsockname()[1]

        def accept() -> None:
            for _ in range(5):
                server.accept()[0].close()

        acceptor = threading.Thread(target=accept)
        acceptor.start()
        times = connect_times("127.0.0.1", port, 5)
        acceptor.join(10)
    assert len(times) == 5 and all(t > 0 for t in times)
