"""client/preload/protocol.h is what `freeflow protocol-header` generates from router/protocol.py."""

from __future__ import annotations

from pathlib import Path

from freeflow.router.protocol import c_header

HEADER = Path(__file__).parents[3] / "client" / "preload" / "protocol.h"


def test_the_committed_header_is_the_generated_one() -> None:
    assert HEADER.read_text() == c_header(), "run: freeflow protocol-header > client/preload/protocol.h"
