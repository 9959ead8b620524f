"""The results as a Markdown table (stdout), a CSV file and a PNG bar chart; one row per path, in measuring order."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from freeflow.bench.results import PathResult

CSV_NAME = "results.csv"
PLOT_NAME = "results.png"
TIMES = "\N{MULTIPLICATION SIGN}"

# Column name, then how a row's value is read; the CSV keeps full precision, the table rounds.
CSV_COLUMNS: tuple[tuple[str, Callable[[PathResult], object]], ...] = (
    ("path", lambda r: r.path),
    ("runs", lambda r: r.runs),
    ("throughput_gbps", lambda r: r.median.throughput_gbps),
    ("throughput_ratio", lambda r: r.throughput_ratio),
    ("rtt_same_core_avg_us", lambda r: r.median.same_core.avg_us),
    ("rtt_same_core_p99_us", lambda r: r.median.same_core.p99_us),
    ("rtt_same_core_ratio", lambda r: r.same_core_rtt_ratio),
    ("rtt_unpinned_avg_us", lambda r: r.median.unpinned.avg_us),
    ("rtt_unpinned_p99_us", lambda r: r.median.unpinned.p99_us),
    ("rtt_unpinned_ratio", lambda r: r.unpinned_rtt_ratio),
)


def _ratio(value: float) -> str:
    return f"{value:.2f}{TIMES}"


def _table_cells(r: PathResult) -> list[str]:
    m = r.median
    return [
        r.path,
        f"{m.throughput_gbps:.1f}",
        _ratio(r.throughput_ratio),
        f"{m.same_core.avg_us:.1f} / {m.same_core.p99_us:.1f}",
        _ratio(r.same_core_rtt_ratio),
        f"{m.unpinned.avg_us:.1f} / {m.unpinned.p99_us:.1f}",
        _ratio(r.unpinned_rtt_ratio),
    ]


def format_table(results: Sequence[PathResult], baseline: str) -> str:
    """A Markdown table with the columns aligned, ratios to `baseline`."""
    ratio = f"vs {baseline}"
    header = ["path", "throughput Gbit/s", ratio, "RTT µs same core (avg / p99)", ratio,
              "RTT µs unpinned (avg / p99)", ratio]
    rows = [header, *(_table_cells(r) for r in results)]
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
        writer.writerow(name for name, _ in CSV_COLUMNS)
        for r in results:
            writer.writerow(value(r) for _, value in CSV_COLUMNS)


def write_plot(results: Sequence[PathResult], path: Path, baseline: str) -> None:
    """Throughput and RTT per path as horizontal bars, each labelled with its ratio to `baseline`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.path for r in results]
    rows = list(range(len(results)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 1.0 + 0.8 * len(results)), sharey=True)
    try:
        bars = left.barh(rows, [r.median.throughput_gbps for r in results], color="tab:blue")
        left.bar_label(bars, labels=[_ratio(r.throughput_ratio) for r in results], padding=3)
        left.set_yticks(rows, names)
        left.invert_yaxis()
        left.set_xlabel("throughput, Gbit/s (one iperf3 TCP stream)")
        left.margins(x=0.15)

        height = 0.4
        pad = 0.01 * max(max(r.median.same_core.p99_us, r.median.unpinned.p99_us) for r in results)
        for offset, label, pick, ratio, colour in (
            (-height / 2, "same core", lambda r: r.median.same_core, lambda r: r.same_core_rtt_ratio, "tab:green"),
            (height / 2, "unpinned", lambda r: r.median.unpinned, lambda r: r.unpinned_rtt_ratio, "tab:orange"),
        ):
            ys = [y + offset for y in rows]
            avg = [pick(r).avg_us for r in results]
            whisker = [[0.0] * len(results), [pick(r).p99_us - pick(r).avg_us for r in results]]
            right.barh(ys, avg, height, xerr=whisker, color=colour, label=f"{label}: avg, whisker to p99",
                       error_kw={"capsize": 2})
            for y, r in zip(ys, results, strict=True):
                right.text(pick(r).p99_us + pad, y, _ratio(ratio(r)), va="center", fontsize=8)
        right.set_xlabel("round trip, µs (sockperf TCP ping-pong, 64 B)")
        right.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
        right.margins(x=0.15)

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
