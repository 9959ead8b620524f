"""Servers in the containers: how the bench's own probe scripts are run there, and the wait until servers listen.

A probe is a standard-library module of this package; its source is passed to the container's python3 with -c.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from freeflow.bench import engine
from freeflow.bench.errors import BenchError

SERVER_START_S = 15.0
SS_TIMEOUT_S = 30.0


def probe(module: ModuleType, *args: str) -> list[str]:
    """The command that runs `module`'s source with the container's python3, as if it were a script."""
    return ["python3", "-c", Path(module.__file__ or "").read_text(), *args]


def listening_ports(ss_output: str) -> set[int]:
    """Ports in the local-address column of `ss -Hltn` (`0.0.0.0:5201`, `*:5201`, `[::]:5201`)."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return ports


def wait_listening(container: str, ports: Iterable[int], servers: str) -> None:
    """Return once something listens on every port in the container; BenchError after SERVER_START_S."""
    wanted = set(ports)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        ss = engine.execute(container, ["ss", "-Hltn"], timeout=SS_TIMEOUT_S)
        if wanted <= listening_ports(ss.stdout):
            return
        if time.monotonic() > deadline:
            missing = ", ".join(str(port) for port in sorted(wanted - listening_ports(ss.stdout)))
            raise BenchError(f"{servers} in {container} do not listen after {SERVER_START_S:.0f} s "
                             f"(nothing on port {missing})")
        time.sleep(0.2)
