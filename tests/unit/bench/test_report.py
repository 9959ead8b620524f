"""The table, the CSV and the plot, written from hand-made rows."""

from __future__ import annotations

import csv

import pytest

from freeflow.bench.report import CSV_COLUMNS, TIMES, format_table, write_csv, write_plot, write_reports
from freeflow.bench.results import Rtt, Sample, summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rows():
    return summarise({
        "Docker bridge": [Sample(17.3, Rtt(7.2, 7.7), Rtt(66.0, 80.0))],
        "host network": [Sample(20.6, Rtt(5.7, 6.1), Rtt(61.0, 75.0))],
        "freeflow grafted (same host)": [Sample(37.5, Rtt(3.3, 4.0), Rtt(50.0, 60.0))],
    }, "Docker bridge")


def test_table_has_a_row_per_path_with_values_and_ratios(rows):
    lines = format_table(rows, "Docker bridge").splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({len(line) for line in lines}) == 1, "columns are aligned"
    assert "vs Docker bridge" in lines[0]
    host = next(line for line in lines if line.startswith("| host network"))
    cells = [c.strip() for c in host.strip("|").split("|")]
    assert cells == ["host network", "20.6", f"1.19{TIMES}", "5.7 / 6.1", f"0.79{TIMES}", "61.0 / 75.0",
                     f"0.92{TIMES}"]


def test_table_is_markdown_with_numbers_right_aligned(rows):
    rule = format_table(rows, "Docker bridge").splitlines()[1]
    cells = rule.strip("|").split("|")
    assert cells[0].endswith("-") and all(c.endswith(":") for c in cells[1:])


def test_csv_has_every_column_and_path(rows, tmp_path):
    path = tmp_path / "results.csv"
    write_csv(rows, path)
    with path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == [name for name, _ in CSV_COLUMNS]
    assert [r["path"] for r in read] == ["Docker bridge", "host network", "freeflow grafted (same host)"]
    grafted = read[2]
    assert float(grafted["throughput_gbps"]) == 37.5
    assert float(grafted["throughput_ratio"]) == pytest.approx(37.5 / 17.3)
    assert float(grafted["rtt_same_core_p99_us"]) == 4.0
    assert float(grafted["rtt_unpinned_ratio"]) == pytest.approx(50 / 66)
    assert grafted["runs"] == "1"


def test_plot_is_a_png(rows, tmp_path):
    path = tmp_path / "results.png"
    write_plot(rows, path, "Docker bridge")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_reports_go_into_a_folder_made_on_demand(rows, tmp_path):
    out = tmp_path / "a" / "b"
    written = write_reports(rows, out, "Docker bridge")
    assert sorted(p.name for p in written) == ["results.csv", "results.png"]
    assert all(p.parent == out and p.stat().st_size > 0 for p in written)
