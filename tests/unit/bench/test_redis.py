"""Reading redis-benchmark's CSV, from output captured on this project's tools image."""

from __future__ import annotations

from pathlib import Path

import pytest

from freeflow.bench.errors import ToolOutputError
from freeflow.bench.redis import Rates, parse_redis_benchmark

SAMPLES = Path(__file__).parent / "samples"


def test_get_and_set_rates_are_read_from_the_csv():
    assert parse_redis_benchmark((SAMPLES / "redis_benchmark.csv").read_text()) == Rates(get=17809.44, set=22172.95)


def test_an_unreachable_server_is_quoted():
    with pytest.raises(ToolOutputError, match="Could not connect to Redis"):
        parse_redis_benchmark((SAMPLES / "redis_benchmark_refused.txt").read_text())


def test_a_missing_test_is_refused():
    with pytest.raises(ToolOutputError, match="no GET and SET"):
        parse_redis_benchmark('"test","rps"\n"SET","100.0"\n')


def test_a_rate_that_is_no_number_is_refused():
    with pytest.raises(ToolOutputError, match="no number"):
        parse_redis_benchmark('"SET","fast"\n"GET","1.0"\n')
