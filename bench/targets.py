"""The goals issues 3 and 4 (one host) and 5 (across hosts) set on this machine, checked against one run's rows
and printed under the table.

They are read, never enforced: neither the exit status nor any test depends on them (the machine is shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from freeflow.bench.c_ring import ROW as C_RING
from freeflow.bench.channels import CHANNEL_64K, CHANNEL_SLEEP, CHANNEL_SPIN, UNIX_BETWEEN_ROW
from freeflow.bench.paths import ACROSS_BASELINE, BASELINE, FREEFLOW_ACROSS, GRAFTED, GRAFTED_ACROSS
from freeflow.bench.report import BY_METRIC
from freeflow.bench.results import PathResult, headline

AT_LEAST, AT_MOST = "\N{GREATER-THAN OR EQUAL TO}", "\N{LESS-THAN OR EQUAL TO}"


@dataclass(frozen=True)
class Target:
    """`row`'s `metric` (an RTT's average) against a bound: `factor` times the `against` row's value plus `offset`.

    Without `against`, the bound is `offset` alone.
    """

    issue: int
    row: str
    metric: str
    relation: str  # AT_LEAST or AT_MOST
    factor: float = 1.0
    against: str | None = None
    offset: float = 0.0

    def wording(self) -> str:
        unit = BY_METRIC[self.metric].unit
        if self.against is None:
            return f"{self.offset:g} {unit}"
        scaled = self.against if self.factor == 1 else f"{self.factor:g}\N{MULTIPLICATION SIGN} {self.against}"
        return f"{scaled} + {self.offset:g} {unit}" if self.offset else scaled


TARGETS: tuple[Target, ...] = (
    Target(3, GRAFTED, "throughput_gbps", AT_LEAST, 2.0, BASELINE),
    Target(3, GRAFTED, "same_core", AT_MOST, 0.5, BASELINE),
    Target(3, GRAFTED, "connect_p50_us", AT_MOST, 1.0, BASELINE, offset=1000.0),
    Target(3, GRAFTED, "redis_get_rps", AT_LEAST, 1.3, BASELINE),
    Target(3, GRAFTED, "redis_set_rps", AT_LEAST, 1.3, BASELINE),
    Target(4, CHANNEL_64K, "throughput_gbps", AT_LEAST, 5.0, BASELINE),
    Target(4, CHANNEL_64K, "throughput_gbps", AT_LEAST, 0.8, C_RING),
    Target(4, CHANNEL_SPIN, "unpinned", AT_MOST, offset=1.5),
    Target(4, CHANNEL_SLEEP, "same_core", AT_MOST, 1.0, UNIX_BETWEEN_ROW),
    Target(4, CHANNEL_SLEEP, "unpinned", AT_MOST, 1.0, UNIX_BETWEEN_ROW),
)
ACROSS_TARGETS: tuple[Target, ...] = (
    Target(5, GRAFTED_ACROSS, "throughput_gbps", AT_LEAST, 1.15, ACROSS_BASELINE),
    Target(5, GRAFTED_ACROSS, "same_core", AT_MOST, 0.75, ACROSS_BASELINE),
    # "within 10% of Docker's overlay": no more than 10% slower, in throughput and in round trip
    Target(5, FREEFLOW_ACROSS, "throughput_gbps", AT_LEAST, 0.9, ACROSS_BASELINE),
    Target(5, FREEFLOW_ACROSS, "same_core", AT_MOST, 1.1, ACROSS_BASELINE),
)


@dataclass(frozen=True)
class Verdict:
    """A target checked: the measured figure and the bound it had to meet; met is None when one is missing."""

    target: Target
    value: float | None
    bound: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None or self.bound is None:
            return None
        return self.value >= self.bound if self.target.relation == AT_LEAST else self.value <= self.bound


def _figure(results: Sequence[PathResult], row: str, metric: str) -> float | None:
    for r in results:
        if r.path == row:
            value = r.value(metric)
            return None if value is None else headline(value)
    return None


def check(results: Sequence[PathResult], targets: Sequence[Target] = TARGETS) -> list[Verdict]:
    verdicts = []
    for t in targets:
        reference = 0.0 if t.against is None else _figure(results, t.against, t.metric)
        bound = None if reference is None else t.factor * reference + t.offset
        verdicts.append(Verdict(t, _figure(results, t.row, t.metric), bound))
    return verdicts


def heading(targets: Sequence[Target]) -> str:
    """The line above the verdicts, naming the issues the targets come from."""
    issues = [str(n) for n in sorted({t.issue for t in targets})]
    named = issues[0] if len(issues) == 1 else f"{', '.join(issues[:-1])} and {issues[-1]}"
    return f"Targets of issue{'s' if len(issues) > 1 else ''} {named} (read, not enforced):"


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    """One line per target: met / not met / missing, the figure, and the bound with where it comes from.

    Figures get one decimal more than in the table, so that a close miss does not read as equal.
    """
    lines = []
    for v in verdicts:
        t, column = v.target, BY_METRIC[v.target.metric]
        status = {True: "met", False: "not met", None: "missing"}[v.met]
        digits = column.digits + 1
        value = "not measured" if v.value is None else f"{v.value:.{digits}f} {column.unit}"
        bound = "?" if v.bound is None else f"{v.bound:.{digits}f}"
        lines.append(f"  {status:<8} issue {t.issue}: {t.row}, {column.label} {value} {t.relation} {bound} "
                     f"({t.wording()})")
    return "\n".join(lines)
