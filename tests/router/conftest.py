"""A router under test against real network namespaces, without Docker.

Each test gets namespaces `ffr-<tag>-N` on a bridge of its own, a plugin state file naming them as
endpoints of freeflow networks, and a router process following that file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freeflow.plugin.store import Endpoint, Network, State, Store
from tests.namespaces import delete_namespace


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class Lab:
    tag: str
    state_dir: Path
    run_dir: Path
    bridge: str
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # veths made in the root namespace
    router: subprocess.Popen | None = None
    state: State = field(default_factory=State)
    extra_env: dict[str, str] = field(default_factory=dict)  # router settings a test overrides

    def add_host(self, index: int, network: str = "n1", subnet: str = "10.213.0", network_id: str = "") -> str:
        """A namespace with an address on the lab's bridge, recorded as a joined endpoint of `network` (its id
        the lab's own unless `network_id` names one that labs share)."""
        name = f"ffr-{self.tag}-{index}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        outer, inner = f"frh{self.tag}{index}", f"frc{self.tag}{index}"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        self.links.append(outer)
        sh("ip", "link", "set", outer, "master", self.bridge, "up")
        sh("ip", "link", "set", inner, "netns", name)
        ip = f"{subnet}.{index}"
        sh("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", inner)
        sh("ip", "-n", name, "link", "set", inner, "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        net_id = network_id or (f"{self.tag}{network}" * 64)[:64]  # other labs' routers share this namespace
        self.state.networks.setdefault(net_id, Network(net_id, "ff-x", 1500))
        ep_id = f"{self.tag}{index:02d}".ljust(64, "0")
        self.state.endpoints[ep_id] = Endpoint(ep_id, net_id, "h", "c", "02:00:00:00:00:01",
                                               address=f"{ip}/24", sandbox_key=f"/run/netns/{name}")
        Store(self.state_dir).save(self.state)
        return name

    def leave(self, ns: str) -> None:
        for ep in self.state.endpoints.values():
            if ep.sandbox_key == f"/run/netns/{ns}":
                ep.sandbox_key = ""
        Store(self.state_dir).save(self.state)

    def env(self) -> dict[str, str]:
        return {**os.environ, "FREEFLOW_STATE_DIR": str(self.state_dir), "FREEFLOW_RUN_DIR": str(self.run_dir),
                "FREEFLOW_LOG_LEVEL": "DEBUG", "FREEFLOW_GRAFT_WAIT": "0.5", **self.extra_env}

    def start_router(self, prefix: tuple[str, ...] = ()) -> None:
        """Start the router (through `prefix`, a command that execs it, such as prlimit) and wait for it."""
        log = open(self.run_dir.parent / "router.log", "ab")  # noqa: SIM115 - the router's stdout
        self.router = subprocess.Popen([*prefix, sys.executable, "-m", "freeflow.cli", "router"], env=self.env(),
                                       stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (self.state_dir / "router.sock").exists() and self.bound_everywhere():
                return
            time.sleep(0.05)
        raise AssertionError("the router did not come up: " + self.router_log())

    def bound_everywhere(self) -> bool:
        for ns in self.namespaces:
            if not any(ep.sandbox_key.endswith(ns) for ep in self.state.endpoints.values()):
                continue
            out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/unix"], capture_output=True,
                                 text=True).stdout
            if "@freeflow" not in out:
                return False
        return True

    def kill_router(self) -> None:
        if self.router and self.router.poll() is None:
            self.router.send_signal(signal.SIGKILL)
            self.router.wait(10)

    def router_log(self) -> str:
        """The end of the router's log, for assertion messages."""
        return self.full_router_log()[-3000:]

    def full_router_log(self) -> str:
        return (self.run_dir.parent / "router.log").read_text()

    def python(self, ns: str, code: str, background: bool = False, timeout: float = 60):
        """Run Python `code` inside namespace `ns` (with freeflow importable)."""
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code]
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"python in {ns} failed:\n{done.stderr}\nrouter log:\n{self.router_log()}")
        return done.stdout

    def status(self) -> dict:
        from freeflow.config.settings import load_settings
        from freeflow.router.admin import ask_router

        return ask_router(load_settings(self.env()), {"op": "status"})


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    tag = uuid.uuid4().hex[:4]
    bridge = f"ffrb{tag}"
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "link", "set", bridge, "up")
    subprocess.run(["iptables", "-I", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], capture_output=True)
    lab = Lab(tag, tmp_path / "state", tmp_path / "run", bridge)
    try:
        yield lab
    finally:
        lab.kill_router()
        for ns in lab.namespaces:
            delete_namespace(ns)
        for link in lab.links:  # left in the root namespace when a step of add_host failed
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["iptables", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                       capture_output=True)
