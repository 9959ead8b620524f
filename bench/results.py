"""What one measurement of a path yields, and the per-path row: medians over the runs and ratios to the baseline.

A row knows nothing of which paths exist; adding a path to paths.PATHS adds a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from freeflow.bench.errors import BenchError


@dataclass(frozen=True)
class Rtt:
    """A ping-pong round trip in microseconds."""

    avg_us: float
    p99_us: float


@dataclass(frozen=True)
class Sample:
    """One run of every metric on one path."""

    throughput_gbps: float
    same_core: Rtt  # both containers pinned on one CPU: what the path itself costs
    unpinned: Rtt  # containers free to run on any CPU: what an application gets


@dataclass(frozen=True)
class PathResult:
    """One row of the report. Ratios divide this path's median by the baseline's (RTT ratios use the average)."""

    path: str
    runs: int
    median: Sample
    throughput_ratio: float
    same_core_rtt_ratio: float
    unpinned_rtt_ratio: float


def median_sample(samples: Sequence[Sample]) -> Sample:
    """The median of each metric on its own (not the sample with the median throughput)."""
    if not samples:
        raise BenchError("no runs to take a median of")

    def rtt(pick: str) -> Rtt:
        rtts = [getattr(s, pick) for s in samples]
        return Rtt(median(r.avg_us for r in rtts), median(r.p99_us for r in rtts))

    return Sample(median(s.throughput_gbps for s in samples), rtt("same_core"), rtt("unpinned"))


def summarise(samples: Mapping[str, Sequence[Sample]], baseline: str) -> list[PathResult]:
    """One row per path, in the mapping's order, each with its ratios to the `baseline` path."""
    if baseline not in samples:
        raise BenchError(f"the baseline path {baseline!r} was not measured")
    medians = {path: median_sample(runs) for path, runs in samples.items()}
    base = medians[baseline]
    return [
        PathResult(
            path=path,
            runs=len(samples[path]),
            median=m,
            throughput_ratio=m.throughput_gbps / base.throughput_gbps,
            same_core_rtt_ratio=m.same_core.avg_us / base.same_core.avg_us,
            unpinned_rtt_ratio=m.unpinned.avg_us / base.unpinned.avg_us,
        )
        for path, m in medians.items()
    ]
