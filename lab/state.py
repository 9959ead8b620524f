"""The lab's record in /var/lib/freeflow-lab/lab.json (its hosts and their dockerd PIDs), and the lock that
keeps two `freeflow lab` commands from changing the lab at once."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from freeflow.lab.errors import LabError
from freeflow.lab.layout import LAB_DIR, LOCK_FILE, STATE_FILE, Host


@dataclass
class HostRecord:
    """A host of the lab and its dockerd's PID (None until started)."""

    name: str
    pid: int | None = None


@dataclass
class LabState:
    """What `lab up` made; `lab down` undoes it."""

    hosts: list[HostRecord] = field(default_factory=list)
    plugin_scope: str = "local"

    def pid(self, host: Host) -> int | None:
        return next((record.pid for record in self.hosts if record.name == host.name), None)

    def set_pid(self, host: Host, pid: int) -> None:
        next(record for record in self.hosts if record.name == host.name).pid = pid


def load() -> LabState | None:
    """The lab's record, or None when no lab is up."""
    try:
        raw = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {STATE_FILE}: {exc}; `freeflow lab down` removes the lab anyway") from exc
    return LabState(hosts=[HostRecord(**record) for record in raw["hosts"]], plugin_scope=raw["plugin_scope"])


def save(state: LabState) -> None:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    temporary = STATE_FILE.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=1) + "\n")
    os.replace(temporary, STATE_FILE)


@contextmanager
def locked() -> Iterator[None]:
    """Hold the lab's lock; a second `up` or `down` waits for the first."""
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
