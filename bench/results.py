"""What one measurement of a row yields, and the row of the report: medians over the runs and ratios to the baseline.

A row has only the metrics its path can measure (a shared-memory channel has no redis); the others stay None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from statistics import median
from typing import Any, get_type_hints

from freeflow.bench.errors import BenchError


@dataclass(frozen=True)
class Rtt:
    """A ping-pong round trip in microseconds."""

    avg_us: float
    p99_us: float


Value = float | Rtt


@dataclass(frozen=True)
class Sample:
    """One run of the metrics of one row; None for a metric the row does not have."""

    throughput_gbps: float | None = None
    same_core: Rtt | None = None  # both ends pinned on one CPU: what the path itself costs
    unpinned: Rtt | None = None  # ends free to run on any CPU: what an application gets
    connect_p50_us: float | None = None  # median time of a TCP connect() (grafting included)
    redis_get_rps: float | None = None
    redis_set_rps: float | None = None


METRICS: tuple[str, ...] = tuple(f.name for f in fields(Sample))
RTT_METRICS = frozenset(name for name, hint in get_type_hints(Sample).items() if hint == Rtt | None)


@dataclass(frozen=True)
class Row:
    """A row of the report and the metrics it has; its other cells are dashes."""

    name: str
    metrics: frozenset[str]


@dataclass(frozen=True)
class PathResult:
    """One row of the report: the median of each metric, and each metric's ratio to the baseline's."""

    path: str
    runs: int
    median: Sample
    ratios: Mapping[str, float]  # metric -> this median / the baseline's (RTTs: of the averages); both must have it

    def value(self, metric: str) -> Value | None:
        value: Value | None = getattr(self.median, metric)
        return value


def headline(value: Value) -> float:
    """The one figure of a value that ratios and targets compare: an RTT's average."""
    return value.avg_us if isinstance(value, Rtt) else value


def _median(values: Sequence[Value]) -> Value | None:
    if not values:
        return None
    if isinstance(values[0], Rtt):
        rtts = [v for v in values if isinstance(v, Rtt)]
        return Rtt(median(r.avg_us for r in rtts), median(r.p99_us for r in rtts))
    return median(headline(v) for v in values)


def sample_of(values: Mapping[str, Value | None]) -> Sample:
    """A Sample of the given metrics, the others None; BenchError for an unknown metric or a value of another kind."""
    checked: dict[str, Any] = {}
    for metric, value in values.items():
        if metric not in METRICS:
            raise BenchError(f"no metric is called {metric!r}")
        if value is not None and isinstance(value, Rtt) != (metric in RTT_METRICS):
            raise BenchError(f"{metric} cannot be {value!r}")
        checked[metric] = value
    return Sample(**checked)


def median_sample(samples: Sequence[Sample]) -> Sample:
    """The median of each metric on its own (not the sample with the median throughput)."""
    if not samples:
        raise BenchError("no runs to take a median of")
    return sample_of({metric: _median([v for s in samples if (v := getattr(s, metric)) is not None])
                      for metric in METRICS})


def _ratios(row: Sample, base: Sample) -> dict[str, float]:
    ratios = {}
    for metric in METRICS:
        value, reference = getattr(row, metric), getattr(base, metric)
        if value is not None and reference is not None and headline(reference):
            ratios[metric] = headline(value) / headline(reference)
    return ratios


def summarise(samples: Mapping[str, Sequence[Sample]], baseline: str) -> list[PathResult]:
    """One row per path, in the mapping's order, each with its ratios to the `baseline` path."""
    if baseline not in samples:
        raise BenchError(f"the baseline path {baseline!r} was not measured")
    medians = {path: median_sample(runs) for path, runs in samples.items()}
    base = medians[baseline]
    return [PathResult(path, len(samples[path]), m, _ratios(m, base)) for path, m in medians.items()]
