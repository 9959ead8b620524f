"""What a run measures: on one host (`freeflow bench`) or between two lab hosts (`freeflow bench --hosts`).

A Suite names its TCP paths, its channel pair and the probe cells measured in it, the baseline of every ratio and
the targets read under the table; its rows follow from those.
"""

from __future__ import annotations

from dataclasses import dataclass

from freeflow.bench import c_ring, channels, paths, targets
from freeflow.bench.paths import PathSpec
from freeflow.bench.plan import PINNED_CPUS
from freeflow.bench.results import METRICS, Row
from freeflow.bench.streams import Cell, rows
from freeflow.bench.targets import Target


@dataclass(frozen=True)
class Suite:
    """The rows of one kind of run and how they are read."""

    paths: tuple[PathSpec, ...]  # TCP paths: every metric
    channels: PathSpec  # the pair the cells' probes run in
    cells: tuple[Cell, ...]
    baseline: str  # the row every ratio is to
    targets: tuple[Target, ...]
    c_ring: bool  # the C ring row, run on this machine itself
    note: str  # how the cells' rows and the same-core figures were measured, for the note under the table

    @property
    def rows(self) -> tuple[Row, ...]:
        """The table's rows in order: the paths, the cells' rows, then the C ring."""
        return (*(Row(path.name, frozenset(METRICS)) for path in self.paths), *rows(self.cells),
                *(c_ring.ROWS if self.c_ring else ()))


_STREAMS = f"one stream of {channels.SMALL >> 10} KiB writes and {channels.MESSAGE_BYTES} B ping-pongs"

SAME_HOST = Suite(
    paths=paths.PATHS, channels=paths.CHANNELS, cells=channels.CELLS, baseline=paths.BASELINE,
    targets=targets.TARGETS, c_ring=True,
    note=(f"Channel, AF_UNIX and C ring rows: {_STREAMS} (or 1 MiB writes), timed by the probe itself (Python; "
          f"the C ring in C). Same core: both ends on CPU {PINNED_CPUS}; a spinning path has no same-core figure."))

ACROSS_HOSTS = Suite(
    paths=paths.ACROSS_PATHS, channels=paths.ACROSS_CHANNELS, cells=channels.ACROSS_CELLS,
    baseline=paths.ACROSS_BASELINE, targets=targets.ACROSS_TARGETS, c_ring=False,
    note=(f"Servers on one lab host, clients on another (network namespaces of this machine, a dockerd each). "
          f"Channel row: {_STREAMS}, waits sleeping at once, timed by the probe; the two routers bridge it over "
          f"TCP. Same core: both containers on CPU {PINNED_CPUS} of the machine, whose CPUs the hosts share."))
