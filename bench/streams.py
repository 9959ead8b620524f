"""The rows measured by stream probes (probe_stream in containers, the C ring on the host): cells, output, samples.

A Cell says which row and metric one probe trial fills; the rows and their metrics are derived from the cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from freeflow.bench.errors import ToolOutputError
from freeflow.bench.plan import Plan
from freeflow.bench.probe_stream import PINGPONG, Result, Throughput, Trial, read_result
from freeflow.bench.results import Row, Rtt, Sample, Value, sample_of


@dataclass(frozen=True)
class Cell:
    """The row and metric one probe trial fills, and that trial but for its durations (the plan's)."""

    row: str
    metric: str  # throughput_gbps for a throughput trial; same_core (both ends on one CPU) or unpinned for a ping-pong
    transport: str
    kind: str
    size: int
    spin: float | None = None

    @property
    def pinned(self) -> bool:
        return self.metric == "same_core"

    def trial(self, plan: Plan) -> Trial:
        warmup = plan.warmup_seconds if self.kind == PINGPONG else 0.0
        return Trial(self.transport, self.kind, self.size, plan.stream_seconds, warmup, self.spin)


def rows(cells: Sequence[Cell]) -> tuple[Row, ...]:
    """The rows the cells fill, in the order they first appear, each with the metrics it has."""
    metrics: dict[str, set[str]] = {}
    for cell in cells:
        metrics.setdefault(cell.row, set()).add(cell.metric)
    return tuple(Row(name, frozenset(names)) for name, names in metrics.items())


def read_results(stdout: str, stderr: str, expected: int, probe: str) -> list[Result]:
    """The `expected` results a probe printed, one JSON line each; ToolOutputError quoting it otherwise."""
    results = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                results.append(read_result(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ToolOutputError(f"{probe} printed a result the bench cannot read ({exc}): {line[:200]}") \
                    from None
    if len(results) != expected:
        said = [line for line in stderr.splitlines() if line.strip()]
        raise ToolOutputError(f"{probe} printed {len(results)} of {expected} results: "
                              + " | ".join(said[-3:] or ["no error message"]))
    return results


def _value(result: Result) -> Value:
    return result.gbps if isinstance(result, Throughput) else Rtt(result.avg_us, result.p99_us)


def samples(cells: Sequence[Cell], results: Sequence[Result]) -> dict[str, Sample]:
    """One Sample per row from the results of the cells' trials, in the same order."""
    values: dict[str, dict[str, Value]] = {}
    for cell, result in zip(cells, results, strict=True):
        values.setdefault(cell.row, {})[cell.metric] = _value(result)
    return {row: sample_of(metrics) for row, metrics in values.items()}
