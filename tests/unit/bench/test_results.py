"""Medians per metric, ratios to the baseline path, and rows that have only some of the metrics."""

from __future__ import annotations

import pytest

from freeflow.bench.errors import BenchError
from freeflow.bench.results import METRICS, RTT_METRICS, Rtt, Sample, headline, median_sample, sample_of, summarise


def s(gbps: float, same: float, unpinned: float, connect: float = 100, get: float = 1000) -> Sample:
    return Sample(gbps, Rtt(same, same + 1), Rtt(unpinned, unpinned + 10), connect, get, get * 2)


def test_median_is_taken_per_metric():
    runs = [s(10, 9, 70, 300), s(30, 7, 50, 100), s(20, 8, 90, 200)]
    assert median_sample(runs) == Sample(20, Rtt(8, 9), Rtt(70, 80), 200, 1000, 2000)


def test_median_of_an_even_count_averages_the_middle_two():
    assert median_sample([s(10, 6, 50), s(20, 8, 70)]).throughput_gbps == 15


def test_median_of_nothing_is_an_error():
    with pytest.raises(BenchError):
        median_sample([])


def test_metrics_a_row_lacks_stay_missing():
    spin = [Sample(unpinned=Rtt(1.0, 2.0)), Sample(unpinned=Rtt(3.0, 4.0))]
    assert median_sample(spin) == Sample(unpinned=Rtt(2.0, 3.0))


def test_ratios_are_to_the_baseline_and_rows_keep_the_measuring_order():
    rows = summarise({"bridge": [s(10, 8, 60, 100, 1000)], "host": [s(20, 6, 30, 50, 3000)],
                      "fast": [s(50, 2, 60)]}, "bridge")
    assert [r.path for r in rows] == ["bridge", "host", "fast"]
    bridge, host, fast = rows
    assert bridge.ratios == dict.fromkeys(METRICS, 1.0)
    assert host.ratios["throughput_gbps"] == 2
    assert host.ratios["same_core"] == pytest.approx(0.75)
    assert host.ratios["unpinned"] == pytest.approx(0.5)
    assert host.ratios["connect_p50_us"] == pytest.approx(0.5)
    assert host.ratios["redis_get_rps"] == host.ratios["redis_set_rps"] == 3
    assert fast.ratios["throughput_gbps"] == 5 and fast.ratios["same_core"] == pytest.approx(0.25)


def test_a_row_has_ratios_only_for_its_own_metrics():
    rows = summarise({"bridge": [s(10, 8, 60)], "channel": [Sample(throughput_gbps=80.0)]}, "bridge")
    assert rows[1].ratios == {"throughput_gbps": 8.0}
    assert rows[1].value("same_core") is None and rows[1].value("throughput_gbps") == 80.0


def test_no_ratio_to_a_metric_the_baseline_lacks():
    rows = summarise({"bridge": [Sample(throughput_gbps=10.0)], "spin": [Sample(unpinned=Rtt(1.0, 2.0))]}, "bridge")
    assert rows[1].ratios == {}


def test_rows_count_their_runs():
    rows = summarise({"bridge": [s(10, 8, 60)] * 3}, "bridge")
    assert rows[0].runs == 3


def test_missing_baseline_is_an_error():
    with pytest.raises(BenchError, match="baseline"):
        summarise({"host": [s(20, 6, 30)]}, "bridge")


def test_round_trips_are_the_rtt_metrics_and_their_headline_is_the_average():
    assert {"same_core", "unpinned"} == RTT_METRICS
    assert headline(Rtt(3.0, 9.0)) == 3.0 and headline(4.5) == 4.5


def test_a_sample_is_made_of_named_metrics_of_the_right_kind():
    assert sample_of({"throughput_gbps": 2.0, "unpinned": Rtt(1, 2)}) == Sample(2.0, unpinned=Rtt(1, 2))
    with pytest.raises(BenchError, match="no metric"):
        sample_of({"latency": 1.0})
    with pytest.raises(BenchError, match="same_core"):
        sample_of({"same_core": 1.0})
    with pytest.raises(BenchError, match="throughput_gbps"):
        sample_of({"throughput_gbps": Rtt(1, 2)})
