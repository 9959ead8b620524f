"""The driver's persistent state: networks and endpoints, saved atomically as one JSON file.

dockerd never replays CreateNetwork or CreateEndpoint, so this file is what survives plugin restarts,
dockerd restarts and reboots. Each save writes a temporary file, fsyncs it and renames it over the old one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from freeflow.plugin.errors import DriverError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Network:
    network_id: str
    bridge: str
    mtu: int
    ipv4_pools: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    vxlan: str = ""  # swarm-wide networks only
    vni: int = 0
    local_address: str = ""


@dataclass
class Endpoint:
    endpoint_id: str
    network_id: str
    host_veth: str
    container_veth: str
    mac: str
    address: str = ""
    address_ipv6: str = ""
    sandbox_key: str = ""


@dataclass
class State:
    networks: dict[str, Network] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def endpoints_of(self, network_id: str) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.network_id == network_id]


# What an operator can do about a state file the plugin cannot read.
REMEDY = ("; to start without it, move it aside: running containers keep their links, and the networks that "
          "`docker network ls --filter driver=freeflow` lists must then be removed and created again")


class Store:
    """Loads and saves `State` under `state_dir/state.json`."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "state.json"

    def load(self) -> State:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return State()
        except (OSError, ValueError) as exc:
            raise DriverError(f"cannot read the state file {self.path}: {exc}{REMEDY}") from exc
        if not isinstance(raw, dict):
            raise DriverError(f"the state file {self.path} is damaged: it holds a JSON {type(raw).__name__}, "
                              f"not an object{REMEDY}")
        if raw.get("version") != FORMAT_VERSION:
            raise DriverError(f"{self.path} has format version {raw.get('version')!r}; "
                              f"this plugin reads version {FORMAT_VERSION}{REMEDY}")
        try:
            return State(
                networks={k: Network(**v) for k, v in raw["networks"].items()},
                endpoints={k: Endpoint(**v) for k, v in raw["endpoints"].items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:  # AttributeError: a list where an object belongs
            raise DriverError(f"the state file {self.path} is damaged or from another version of the plugin: "
                              f"{exc}{REMEDY}") from exc

    def save(self, state: State) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "version": FORMAT_VERSION,
            "networks": {k: asdict(v) for k, v in state.networks.items()},
            "endpoints": {k: asdict(v) for k, v in state.endpoints.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
