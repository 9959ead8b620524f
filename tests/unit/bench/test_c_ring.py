"""The C ring: built with gcc, run briefly, its two results read into the ring's row."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from freeflow.bench import c_ring
from freeflow.bench.c_ring import CRing
from freeflow.bench.errors import BenchError
from freeflow.bench.plan import SHORT


@pytest.fixture(autouse=True)
def _gcc() -> None:
    if shutil.which("gcc") is None:
        pytest.fail("the C ring needs gcc (scripts/install-prereqs.sh installs it)")


def test_the_ring_is_built_run_and_removed():
    with CRing() as ring:
        binary = ring.binary
        measured = ring.sample(replace(SHORT, stream_seconds=0.05, warmup_seconds=0.01))
    assert not binary.exists() and not binary.parent.exists()
    s = measured[c_ring.ROW]
    assert s.throughput_gbps is not None and s.throughput_gbps > 0
    assert s.unpinned is not None and s.unpinned.avg_us > 0 and s.same_core is None


def test_a_source_gcc_refuses_is_an_error_with_its_message(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return missing; }\n")
    monkeypatch.setattr(c_ring, "SOURCE", broken)
    with pytest.raises(BenchError, match="missing"):
        CRing()
