"""The results as a Markdown table (stdout), a CSV file and a PNG bar chart; one row per path, in measuring order.

COLUMNS says once how each metric reads. A table cell holds the figure and, in parentheses, its ratio to the
baseline; a row without a metric shows a dash there and leaves the CSV cells empty.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from freeflow.bench.results import RTT_METRICS, PathResult, Rtt, Sample, Value, headline

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CSV_NAME = "results.csv"
PLOT_NAME = "results.png"
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


@dataclass(frozen=True)
class Column:
    """How one metric reads: in the table's header, in progress lines and targets, and in the CSV."""

    metric: str  # a Sample field
    title: str  # the table's header
    label: str  # its name in a sentence
    unit: str
    csv: str  # the stem of its CSV columns: <metric> (or <stem>_avg_us and <stem>_p99_us), <stem>_ratio
    digits: int  # decimals in the table

    def figure(self, value: Value) -> str:
        if isinstance(value, Rtt):
            return f"{value.avg_us:.{self.digits}f} / {value.p99_us:.{self.digits}f}"
        return f"{value:.{self.digits}f}"

    @property
    def csv_names(self) -> list[str]:
        values = [f"{self.csv}_avg_us", f"{self.csv}_p99_us"] if self.metric in RTT_METRICS else [self.metric]
        return [*values, f"{self.csv}_ratio"]

    def csv_cells(self, r: PathResult) -> list[object]:
        value = r.value(self.metric)
        if value is None:
            return [None] * len(self.csv_names)
        values = [value.avg_us, value.p99_us] if isinstance(value, Rtt) else [value]
        return [*values, r.ratios.get(self.metric)]


COLUMNS: tuple[Column, ...] = (
    Column("throughput_gbps", "throughput Gbit/s", "throughput", "Gbit/s", "throughput", 1),
    Column("same_core", "RTT µs same core (avg / p99)", "RTT same core", "µs", "rtt_same_core", 1),
    Column("unpinned", "RTT µs unpinned (avg / p99)", "RTT unpinned", "µs", "rtt_unpinned", 1),
    Column("connect_p50_us", "connect µs p50", "connection set-up p50", "µs", "connect_p50", 0),
    Column("redis_get_rps", "redis GET req/s", "redis GET", "req/s", "redis_get", 0),
    Column("redis_set_rps", "redis SET req/s", "redis SET", "req/s", "redis_set", 0),
)
BY_METRIC = {column.metric: column for column in COLUMNS}
CSV_HEADER = ["path", "runs", *(name for column in COLUMNS for name in column.csv_names)]


@dataclass(frozen=True)
class Panel:
    """One chart of the plot: the metrics drawn side by side in it."""

    xlabel: str
    metrics: tuple[str, ...]
    log: bool = False  # a logarithmic axis, for values that span orders of magnitude


PANELS: tuple[Panel, ...] = (
    Panel("throughput, Gbit/s", ("throughput_gbps",)),
    Panel("round trip, µs, 64 B (avg, whisker to p99; log scale)", ("same_core", "unpinned"), log=True),
    Panel("TCP connection set-up, µs (p50)", ("connect_p50_us",)),
    Panel("redis-benchmark, requests/s", ("redis_get_rps", "redis_set_rps")),
)
COLOURS = ("tab:blue", "tab:orange")


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}{TIMES}"


def describe(sample: Sample) -> str:
    """The metrics a sample has, in words, for progress lines."""
    return ", ".join(f"{c.label} {c.figure(v)} {c.unit}" for c in COLUMNS
                     if (v := getattr(sample, c.metric)) is not None)


def _table_cell(r: PathResult, column: Column) -> str:
    value = r.value(column.metric)
    if value is None:
        return DASH
    ratio = r.ratios.get(column.metric)
    return column.figure(value) if ratio is None else f"{column.figure(value)} ({_ratio(ratio)})"


def format_table(results: Sequence[PathResult], baseline: str) -> str:
    """A Markdown table with the columns aligned, ratios to `baseline` in parentheses, dashes for missing metrics."""
    header = [f"path (ratios: vs {baseline})", *(column.title for column in COLUMNS)]
    rows = [header, *([r.path, *(_table_cell(r, column) for column in COLUMNS)] for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths,
                                                                                              strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows[1:])])


def write_csv(results: Sequence[PathResult], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        for r in results:
            writer.writerow([r.path, r.runs, *(cell for column in COLUMNS for cell in column.csv_cells(r))])


def _draw_panel(axes: Axes, results: Sequence[PathResult], panel: Panel) -> None:
    """Horizontal bars of each metric per row (none where a row lacks it), labelled with the ratio."""
    metrics = panel.metrics
    height = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        column = BY_METRIC[metric]
        offset = (i - (len(metrics) - 1) / 2) * height
        drawn = [(y + offset, r) for y, r in enumerate(results) if r.value(metric) is not None]
        values = [r.value(metric) for _, r in drawn]
        ys = [y for y, _ in drawn]
        lengths = [headline(v) for v in values if v is not None]
        # A few long stalls can put the average above the 99th percentile: no whisker then.
        whiskers = [max(0.0, v.p99_us - v.avg_us) if isinstance(v, Rtt) else 0.0 for v in values]
        axes.barh(ys, lengths, height, xerr=[[0.0] * len(ys), whiskers] if any(whiskers) else None,
                  color=COLOURS[i % len(COLOURS)], label=column.label, error_kw={"capsize": 2})
        for y, r, length, whisker in zip(ys, (r for _, r in drawn), lengths, whiskers, strict=True):
            axes.annotate(_ratio(r.ratios.get(metric)), (length + whisker, y), xytext=(3, 0),
                          textcoords="offset points", va="center", fontsize=7)
    axes.set_xlabel(panel.xlabel)
    axes.margins(x=0.2)
    if panel.log:
        from matplotlib.ticker import NullFormatter

        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # over a narrow range the minor labels overlap
    if len(metrics) > 1:
        axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(metrics), fontsize=8, frameon=False)


def write_plot(results: Sequence[PathResult], path: Path, baseline: str) -> None:
    """Each panel of PANELS as horizontal bars per row, each bar labelled with its ratio to `baseline`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(range(len(results)))
    fig, panels = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS) + 3, 1.2 + 0.45 * len(results)),
                               sharey=True)
    try:
        for axes, panel in zip(panels, PANELS, strict=True):
            _draw_panel(axes, results, panel)
        panels[0].set_yticks(rows, [r.path for r in results])
        panels[0].invert_yaxis()
        runs = max(r.runs for r in results)
        fig.suptitle(f"FreeFlow bench: median of {runs} run{'s' if runs > 1 else ''}; ratios to {baseline}")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def write_reports(results: Sequence[PathResult], out_dir: Path, baseline: str) -> list[Path]:
    """Write the CSV and the plot into out_dir (created if missing); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, plot_path = out_dir / CSV_NAME, out_dir / PLOT_NAME
    write_csv(results, csv_path)
    write_plot(results, plot_path, baseline)
    return [csv_path, plot_path]
