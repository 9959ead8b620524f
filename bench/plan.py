"""How long each measurement of a run lasts: the full plan, and the short one the tests use.

Every tool and probe reads its durations and counts from the Plan it is given, never from a constant of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

PINNED_CPUS = "0"  # the CPU both ends share for the "same core" figures


@dataclass(frozen=True)
class Plan:
    """Durations and counts of one run."""

    iperf3_seconds: int
    iperf3_omit_seconds: int  # the first seconds, left out of the result (TCP ramp-up)
    sockperf_seconds: int  # sockperf itself leaves out the first 0.4 s
    connections: int  # TCP connections opened one after the other for the set-up time
    redis_requests: int  # per redis-benchmark test (GET, then SET)
    stream_seconds: float  # each channel, AF_UNIX and C ring test
    warmup_seconds: float  # the first round trips of a ping-pong probe, left out of the result


FULL = Plan(iperf3_seconds=4, iperf3_omit_seconds=1, sockperf_seconds=3, connections=1000, redis_requests=100_000,
            stream_seconds=2.0, warmup_seconds=0.4)
SHORT = Plan(iperf3_seconds=1, iperf3_omit_seconds=0, sockperf_seconds=1, connections=100, redis_requests=10_000,
             stream_seconds=0.5, warmup_seconds=0.1)
