"""Where everything of the lab lives: each host's name, address, socket and folders follow from its number.

Host N is `hN` at 10.99.0.N/24 on the bridge `fflab0` (10.99.0.254), with its files in /var/lib/freeflow-lab/hN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from freeflow.lab.errors import LabError

LAB_DIR = Path("/var/lib/freeflow-lab")
STATE_FILE = LAB_DIR / "lab.json"
IMAGES_TAR = LAB_DIR / "images.tar"
LOCK_FILE = Path("/run/lock/freeflow-lab.lock")
BRIDGE = "fflab0"
SUBNET = "10.99.0.0/24"
BRIDGE_ADDRESS = "10.99.0.254/24"
MAX_HOSTS = 16
SWARM_PORT = 2377

# Paths dockerd or the freeflow plugin use whatever dockerd's --exec-root says, and the per-host folder (under
# the host's folder) mounted over each inside the host's own mount namespace. dockerd.sh holds the same list.
SHADOWED = {
    "plugins": "/run/docker/plugins",  # managed plugins' sockets, and the alias socket `freeflow.sock`
    "netns": "/run/docker/netns",  # libnetwork's default folder of sandbox namespaces
    "state": "/var/lib/freeflow",  # the plugin's state.json
    "run": "/run/freeflow",  # the router's admin socket and the library containers mount
}


@dataclass(frozen=True)
class Host:
    """One lab host, `h<index>`."""

    index: int

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def address(self) -> str:
        return f"10.99.0.{self.index}"

    @property
    def veth(self) -> str:
        """The root-namespace end of the host's link to the bridge; the other end is the host's eth0."""
        return f"fflab-{self.name}"

    @property
    def netns(self) -> Path:
        return Path("/run/netns") / self.name

    @property
    def dir(self) -> Path:
        return LAB_DIR / self.name

    @property
    def data_root(self) -> Path:
        return self.dir / "docker"

    @property
    def exec_root(self) -> Path:
        return Path(f"/run/docker-{self.name}")

    @property
    def socket(self) -> Path:
        return Path(f"/run/docker-{self.name}.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def config_file(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def key_file(self) -> Path:
        return self.dir / "key.json"

    def shadow(self, folder: str) -> Path:
        """The per-host folder mounted over SHADOWED[folder] in the host's mount namespace."""
        return self.dir / folder


def hosts(count: int) -> list[Host]:
    """Hosts h1..h<count>."""
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"a lab has 1 to {MAX_HOSTS} hosts (each runs a dockerd and a containerd), not {count}")
    return [Host(index) for index in range(1, count + 1)]


def is_host_name(name: str) -> bool:
    match = re.fullmatch(r"h([1-9][0-9]*)", name)
    return match is not None and int(match[1]) <= MAX_HOSTS


def host_named(name: str) -> Host:
    """The host called `name` (h1, h2, ...)."""
    if not is_host_name(name):
        raise LabError(f"{name!r} is not a lab host name: they are h1 to h{MAX_HOSTS}")
    return Host(int(name[1:]))
