"""The table, the CSV and the plot, written from hand-made rows, some of them with only a few metrics."""

from __future__ import annotations

import csv

import pytest

from freeflow.bench.report import (
    BY_METRIC,
    COLUMNS,
    CSV_HEADER,
    DASH,
    PANELS,
    TIMES,
    describe,
    format_table,
    write_csv,
    write_plot,
    write_reports,
)
from freeflow.bench.results import METRICS, Rtt, Sample, summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rows():
    return summarise({
        "Docker bridge": [Sample(17.3, Rtt(7.2, 7.7), Rtt(66.0, 80.0), 120.0, 40000.0, 38000.0)],
        "host network": [Sample(20.6, Rtt(5.7, 6.1), Rtt(61.0, 75.0), 90.0, 48000.0, 45000.0)],
        "freeflow grafted (same host)": [Sample(37.5, Rtt(3.3, 4.0), Rtt(50.0, 60.0), 700.0, 60000.0, 58000.0)],
        "freeflow channel, 64 KiB messages": [Sample(throughput_gbps=110.0)],
        "freeflow channel, 64 B, spinning": [Sample(unpinned=Rtt(0.9, 3.0))],
        "C ring": [Sample(throughput_gbps=120.0, unpinned=Rtt(0.7, 0.5))],  # stalls: the average above p99
    }, "Docker bridge")


def cells_of(table: str, path: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {path} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_every_metric_has_one_column_in_the_samples_order():
    assert tuple(c.metric for c in COLUMNS) == METRICS
    assert {m for panel in PANELS for m in panel.metrics} == set(METRICS)


def test_table_has_a_row_per_path_with_values_and_ratios(rows):
    table = format_table(rows, "Docker bridge")
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({len(line) for line in lines}) == 1, "columns are aligned"
    assert "vs Docker bridge" in lines[0]
    assert cells_of(table, "host network") == [
        "host network", f"20.6 (1.19{TIMES})", f"5.7 / 6.1 (0.79{TIMES})", f"61.0 / 75.0 (0.92{TIMES})",
        f"90 (0.75{TIMES})", f"48000 (1.20{TIMES})", f"45000 (1.18{TIMES})"]


def test_metrics_a_row_lacks_are_dashes(rows):
    table = format_table(rows, "Docker bridge")
    assert cells_of(table, "freeflow channel, 64 KiB messages")[1:] == [f"110.0 (6.36{TIMES})", *[DASH] * 5]
    assert cells_of(table, "freeflow channel, 64 B, spinning")[1:] == [
        DASH, DASH, f"0.9 / 3.0 (0.01{TIMES})", DASH, DASH, DASH]


def test_table_is_markdown_with_numbers_right_aligned(rows):
    rule = format_table(rows, "Docker bridge").splitlines()[1]
    cells = rule.strip("|").split("|")
    assert cells[0].endswith("-") and all(c.endswith(":") for c in cells[1:])


def test_progress_describes_only_the_metrics_a_sample_has():
    assert describe(Sample(throughput_gbps=12.34, unpinned=Rtt(1.0, 2.5))) == \
        "throughput 12.3 Gbit/s, RTT unpinned 1.0 / 2.5 µs"
    assert describe(Sample(connect_p50_us=812.4)) == "connection set-up p50 812 µs"


def test_csv_has_every_column_and_path(rows, tmp_path):
    path = tmp_path / "results.csv"
    write_csv(rows, path)
    with path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == CSV_HEADER
    assert CSV_HEADER[:10] == ["path", "runs", "throughput_gbps", "throughput_ratio", "rtt_same_core_avg_us",
                               "rtt_same_core_p99_us", "rtt_same_core_ratio", "rtt_unpinned_avg_us",
                               "rtt_unpinned_p99_us", "rtt_unpinned_ratio"]
    assert CSV_HEADER[10:] == ["connect_p50_us", "connect_p50_ratio", "redis_get_rps", "redis_get_ratio",
                               "redis_set_rps", "redis_set_ratio"]
    assert [r["path"] for r in read] == [r.path for r in rows]
    grafted = read[2]
    assert float(grafted["throughput_gbps"]) == 37.5
    assert float(grafted["throughput_ratio"]) == pytest.approx(37.5 / 17.3)
    assert float(grafted["rtt_same_core_p99_us"]) == 4.0
    assert float(grafted["rtt_unpinned_ratio"]) == pytest.approx(50 / 66)
    assert float(grafted["connect_p50_us"]) == 700.0
    assert float(grafted["redis_set_ratio"]) == pytest.approx(58 / 38)
    assert grafted["runs"] == "1"


def test_csv_cells_of_missing_metrics_are_empty(rows, tmp_path):
    path = tmp_path / "results.csv"
    write_csv(rows, path)
    with path.open(newline="") as f:
        spin = list(csv.DictReader(f))[4]
    filled = {name for name, value in spin.items() if value}
    assert filled == {"path", "runs", "rtt_unpinned_avg_us", "rtt_unpinned_p99_us", "rtt_unpinned_ratio"}


def test_csv_columns_follow_from_each_metric():
    assert BY_METRIC["same_core"].csv_names == ["rtt_same_core_avg_us", "rtt_same_core_p99_us", "rtt_same_core_ratio"]
    assert BY_METRIC["redis_get_rps"].csv_names == ["redis_get_rps", "redis_get_ratio"]


def test_plot_is_a_png(rows, tmp_path):
    path = tmp_path / "results.png"
    write_plot(rows, path, "Docker bridge")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_reports_go_into_a_folder_made_on_demand(rows, tmp_path):
    out = tmp_path / "a" / "b"
    written = write_reports(rows, out, "Docker bridge")
    assert sorted(p.name for p in written) == ["results.csv", "results.png"]
    assert all(p.parent == out and p.stat().st_size > 0 for p in written)
