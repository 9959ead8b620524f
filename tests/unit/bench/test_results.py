"""Medians per metric and ratios to the baseline path."""

from __future__ import annotations

import pytest

from freeflow.bench.errors import BenchError
from freeflow.bench.results import Rtt, Sample, median_sample, summarise


def s(gbps: float, same: float, unpinned: float) -> Sample:
    return Sample(gbps, Rtt(same, same + 1), Rtt(unpinned, unpinned + 10))


def test_median_is_taken_per_metric():
    runs = [s(10, 9, 70), s(30, 7, 50), s(20, 8, 90)]
    assert median_sample(runs) == Sample(20, Rtt(8, 9), Rtt(70, 80))


def test_median_of_an_even_count_averages_the_middle_two():
    assert median_sample([s(10, 6, 50), s(20, 8, 70)]).throughput_gbps == 15


def test_median_of_nothing_is_an_error():
    with pytest.raises(BenchError):
        median_sample([])


def test_ratios_are_to_the_baseline_and_rows_keep_the_measuring_order():
    rows = summarise({"bridge": [s(10, 8, 60)], "host": [s(20, 6, 30)], "fast": [s(50, 2, 60)]}, "bridge")
    assert [r.path for r in rows] == ["bridge", "host", "fast"]
    bridge, host, fast = rows
    assert (bridge.throughput_ratio, bridge.same_core_rtt_ratio, bridge.unpinned_rtt_ratio) == (1, 1, 1)
    assert host.throughput_ratio == 2
    assert host.same_core_rtt_ratio == pytest.approx(0.75)
    assert host.unpinned_rtt_ratio == pytest.approx(0.5)
    assert fast.throughput_ratio == 5 and fast.same_core_rtt_ratio == pytest.approx(0.25)


def test_rows_count_their_runs():
    rows = summarise({"bridge": [s(10, 8, 60)] * 3}, "bridge")
    assert rows[0].runs == 3


def test_missing_baseline_is_an_error():
    with pytest.raises(BenchError, match="baseline"):
        summarise({"host": [s(20, 6, 30)]}, "bridge")
