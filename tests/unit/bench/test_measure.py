"""Reading iperf3's JSON and sockperf's text, from output captured on this project's tools image."""

from __future__ import annotations

from pathlib import Path

import pytest

from freeflow.bench.errors import ToolOutputError
from freeflow.bench.measure import parse_iperf3, parse_sockperf
from freeflow.bench.results import Rtt

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_iperf3_throughput_is_the_receivers_rate_in_gbits():
    assert parse_iperf3(sample("iperf3_tcp.json")) == pytest.approx(21.0542579, rel=1e-6)  # not sum_sent: 21.0539213


def test_iperf3_error_report_names_the_cause():
    with pytest.raises(ToolOutputError, match="Connection refused"):
        parse_iperf3(sample("iperf3_refused.json"))


@pytest.mark.parametrize("text", ["", "iperf3: error - unable to connect", "{}", '{"end": {"sum_received": null}}'])
def test_iperf3_output_without_a_result_is_refused(text):
    with pytest.raises(ToolOutputError):
        parse_iperf3(text)


def test_sockperf_one_way_latency_is_doubled_into_a_round_trip():
    assert parse_sockperf(sample("sockperf_pingpong_tcp.txt")) == Rtt(avg_us=2 * 15.541, p99_us=2 * 24.700)


def test_sockperf_older_avg_lat_spelling_is_read():
    text = "sockperf: ====> avg-lat= 10.5 (std-dev=1.0)\nsockperf: ---> percentile 99.000 =   12.0\n"
    assert parse_sockperf(text) == Rtt(21.0, 24.0)


def test_sockperf_error_is_quoted():
    with pytest.raises(ToolOutputError, match=r"Can`t connect socket.*Connection refused"):
        parse_sockperf(sample("sockperf_refused.txt"))


def test_sockperf_without_a_percentile_is_refused():
    with pytest.raises(ToolOutputError, match="no latency"):
        parse_sockperf("sockperf: ====> avg-latency=15.541 (std-dev=9.872)\n")
