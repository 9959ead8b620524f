"""Every row of the report, in the order of the table, with the metrics each has (its other cells are dashes).

The TCP paths have every metric; the channel, AF_UNIX and C ring rows only throughput and round trips.
"""

from __future__ import annotations

from freeflow.bench import c_ring, channels
from freeflow.bench.paths import PATHS
from freeflow.bench.results import METRICS, Row

ROWS: tuple[Row, ...] = (
    *(Row(path.name, frozenset(METRICS)) for path in PATHS),
    *channels.ROWS,
    *c_ring.ROWS,
)
