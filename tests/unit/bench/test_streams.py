"""Cells of the stream probes: the rows they make, the probe output they read, and the samples they fill."""

from __future__ import annotations

import pytest

from freeflow.bench import channels
from freeflow.bench.errors import ToolOutputError
from freeflow.bench.plan import SHORT
from freeflow.bench.probe_stream import CHANNEL, PINGPONG, THROUGHPUT, UNIX, PingPong, Throughput, Trial, result_line
from freeflow.bench.results import Row, Rtt, Sample
from freeflow.bench.streams import Cell, read_results, rows, samples

CELLS = (
    Cell("channel", "throughput_gbps", CHANNEL, THROUGHPUT, 65536),
    Cell("channel", "unpinned", CHANNEL, PINGPONG, 64, spin=1.0),
    Cell("unix", "same_core", UNIX, PINGPONG, 64),
)


def test_rows_come_in_the_order_of_their_first_cell_with_every_metric_they_fill():
    assert rows(CELLS) == (Row("channel", frozenset({"throughput_gbps", "unpinned"})),
                           Row("unix", frozenset({"same_core"})))


def test_a_cell_becomes_a_trial_with_the_plans_durations():
    assert CELLS[0].trial(SHORT) == Trial(CHANNEL, THROUGHPUT, 65536, SHORT.stream_seconds)
    assert CELLS[1].trial(SHORT) == Trial(CHANNEL, PINGPONG, 64, SHORT.stream_seconds, SHORT.warmup_seconds, 1.0)
    assert CELLS[2].pinned and not CELLS[1].pinned


def test_results_fill_the_samples_of_their_cells():
    results = [Throughput("shm", 10**9, 0.5), PingPong("shm", 1.5, 3.0, 100), PingPong("unix", 9.0, 12.0, 50)]
    assert samples(CELLS, results) == {"channel": Sample(throughput_gbps=16.0, unpinned=Rtt(1.5, 3.0)),
                                       "unix": Sample(same_core=Rtt(9.0, 12.0))}


def test_probe_output_is_read_line_by_line_and_noise_skipped():
    out = "\n".join(["starting", result_line(Throughput("shm", 8, 1.0)), result_line(PingPong("shm", 1, 2, 3))])
    assert read_results(out, "", 2, "the probe") == [Throughput("shm", 8, 1.0), PingPong("shm", 1, 2, 3)]


def test_missing_results_quote_the_probe_s_error():
    with pytest.raises(ToolOutputError, match=r"printed 0 of 2 results: .*ConnectionRefusedError"):
        read_results("", "Traceback\nConnectionRefusedError: [Errno 111]\n", 2, "the channel probe")


def test_an_unreadable_result_is_quoted():
    with pytest.raises(ToolOutputError, match="cannot read"):
        read_results('{"kind": "throughput"}', "", 1, "the C ring")


def test_channel_trials_say_how_to_wait():
    spins = {cell.row: cell.spin for cell in channels.CELLS if cell.kind == PINGPONG}
    assert spins[channels.CHANNEL_SPIN] == channels.SPINNING > 0.1
    assert spins[channels.CHANNEL_SLEEP] == channels.SLEEPING == 0
    assert {cell.spin for cell in channels.ACROSS_CELLS if cell.kind == PINGPONG} == {channels.SLEEPING}
