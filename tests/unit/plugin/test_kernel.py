"""HostKernel's view of sandbox namespaces, against real ones (`ip netns add` mounts one, as Docker does)."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from freeflow.plugin.kernel import HostKernel


def test_a_sandbox_exists_only_while_a_namespace_is_mounted_there(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    name = f"ffk-{uuid.uuid4().hex[:6]}"
    kernel = HostKernel()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert kernel.sandbox_exists(f"/run/netns/{name}")
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert not kernel.sandbox_exists(f"/run/netns/{name}")
    leftover = tmp_path / "587d2c5ab249"
    leftover.touch()  # what a crashed host leaves: the empty file the namespace was mounted on
    assert not kernel.sandbox_exists(str(leftover))
