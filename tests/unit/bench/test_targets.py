"""The issues' targets checked against hand-made rows: ratios, offsets, absolute bounds and missing rows."""

from __future__ import annotations

import pytest

from freeflow.bench.report import TIMES
from freeflow.bench.results import Rtt, Sample, summarise
from freeflow.bench.targets import ACROSS_TARGETS, AT_LEAST, AT_MOST, TARGETS, Target, check, format_verdicts, heading


@pytest.fixture
def results():
    return summarise({
        "bridge": [Sample(10.0, Rtt(8.0, 9.0), Rtt(60.0, 70.0), 100.0, 1000.0, 1000.0)],
        "fast": [Sample(25.0, Rtt(5.0, 6.0), Rtt(30.0, 40.0), 1300.0, 1200.0, 1400.0)],
        "spin": [Sample(unpinned=Rtt(1.2, 2.0))],
    }, "bridge")


def verdict(results, target):
    return check(results, [target])[0]


def test_a_ratio_to_another_row(results):
    v = verdict(results, Target(3, "fast", "throughput_gbps", AT_LEAST, 2.0, "bridge"))
    assert (v.value, v.bound, v.met) == (25.0, 20.0, True)
    assert verdict(results, Target(3, "fast", "redis_get_rps", AT_LEAST, 1.3, "bridge")).met is False


def test_an_rtt_is_judged_by_its_average(results):
    v = verdict(results, Target(3, "fast", "same_core", AT_MOST, 0.5, "bridge"))
    assert (v.value, v.bound, v.met) == (5.0, 4.0, False)


def test_an_offset_from_another_row(results):
    v = verdict(results, Target(3, "fast", "connect_p50_us", AT_MOST, 1.0, "bridge", offset=1000.0))
    assert (v.bound, v.met) == (1100.0, False)


def test_an_absolute_bound(results):
    v = verdict(results, Target(4, "spin", "unpinned", AT_MOST, offset=1.5))
    assert (v.bound, v.met) == (1.5, True)


def test_a_missing_row_or_metric_is_neither_met_nor_failed(results):
    assert verdict(results, Target(4, "absent", "throughput_gbps", AT_LEAST, 5.0, "bridge")).met is None
    assert verdict(results, Target(4, "spin", "unpinned", AT_MOST, 1.0, "absent")).met is None
    assert verdict(results, Target(4, "spin", "throughput_gbps", AT_LEAST, 1.0, "bridge")).met is None


def test_verdicts_read_as_one_line_each(results):
    text = format_verdicts(check(results, [Target(3, "fast", "throughput_gbps", AT_LEAST, 2.0, "bridge"),
                                           Target(3, "fast", "connect_p50_us", AT_MOST, 1.0, "bridge", 1000.0),
                                           Target(4, "spin", "unpinned", AT_MOST, offset=1.5),
                                           Target(4, "absent", "unpinned", AT_MOST, offset=1.5)]))
    assert text.splitlines() == [
        f"  met      issue 3: fast, throughput 25.00 Gbit/s ≥ 20.00 (2{TIMES} bridge)",
        "  not met  issue 3: fast, connection set-up p50 1300.0 µs ≤ 1100.0 (bridge + 1000 µs)",
        "  met      issue 4: spin, RTT unpinned 1.20 µs ≤ 1.50 (1.5 µs)",
        "  missing  issue 4: absent, RTT unpinned not measured ≤ 1.50 (1.5 µs)",
    ]


def test_the_heading_names_the_issues_of_the_targets():
    assert heading(TARGETS) == "Targets of issues 3 and 4 (read, not enforced):"
    assert heading(ACROSS_TARGETS) == "Targets of issue 5 (read, not enforced):"
    assert heading([*TARGETS, *ACROSS_TARGETS]) == "Targets of issues 3, 4 and 5 (read, not enforced):"


def test_the_cross_host_targets_are_issue_5s():
    bounds = {(t.row, t.metric): (t.relation, t.factor, t.against) for t in ACROSS_TARGETS}
    assert bounds == {
        ("freeflow grafted (across hosts)", "throughput_gbps"): (AT_LEAST, 1.15, "Docker overlay (across hosts)"),
        ("freeflow grafted (across hosts)", "same_core"): (AT_MOST, 0.75, "Docker overlay (across hosts)"),
        ("freeflow overlay (across hosts)", "throughput_gbps"): (AT_LEAST, 0.9, "Docker overlay (across hosts)"),
        ("freeflow overlay (across hosts)", "same_core"): (AT_MOST, 1.1, "Docker overlay (across hosts)"),
    }
