"""Brings the whole lab up and down, reports on it and says how to run a command on one of its hosts.

Every step is one of the other modules'; this one keeps the order and the record (state.py), so that a failed
`up` and any `down` remove exactly what was made.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from freeflow.lab import hosts, images, network, orchestrator, plugin, state, swarm
from freeflow.lab.errors import CommandError, LabError
from freeflow.lab.layout import BRIDGE, LAB_DIR, Host, host_named, is_host_name
from freeflow.lab.layout import hosts as lab_hosts
from freeflow.lab.state import HostRecord, LabState

Report = Callable[[str], None]
T = TypeVar("T")


def _each(items: Iterable[Host], action: Callable[[Host], T]) -> list[T]:
    """Run `action` on every host at once; the first failure is raised once all have finished."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=len(items) or 1) as pool:
        futures = [pool.submit(action, item) for item in items]
    return [future.result() for future in futures]


def up(count: int, plugin_dir: Path | None = None, scope: str = "local", report: Report = print) -> LabState:
    """Start `count` hosts in one swarm with the images and the plugin; a lab already up is only reported."""
    wanted = lab_hosts(count)
    with state.locked():
        existing = state.load()
        if existing is not None and abandoned(existing):
            report("a lab left behind by a run that ended without `freeflow lab down` (none of its dockerds "
                   "runs): removing it")
            _remove(_every_host(existing), existing, report)
            existing = None
        if existing is not None:
            if len(existing.hosts) != count:
                raise LabError(f"a lab of {len(existing.hosts)} hosts is up; `freeflow lab down` first")
            report(f"a lab of {count} hosts is already up: " + ", ".join(r.name for r in existing.hosts))
            return existing
        network.check_free(wanted)
        folder = plugin.build_folder(plugin_dir)
        lab = LabState(hosts=[HostRecord(host.name) for host in wanted], plugin_scope=scope)
        state.save(lab)
        try:
            _build(wanted, lab, folder, report)
        except BaseException:
            report("lab up failed: removing what it made")
            _remove(wanted, lab, report)
            raise
    report(usage(wanted))
    return lab


def _build(wanted: list[Host], lab: LabState, folder: Path, report: Report) -> None:
    manager, workers = wanted[0], wanted[1:]
    report(f"network: bridge {BRIDGE}, namespaces " + ", ".join(host.name for host in wanted))
    network.create_bridge()
    network.allow_forwarding()
    for host in wanted:
        network.create_host(host)
    report("starting dockerds")
    pids = {host: hosts.start(host) for host in wanted}
    for host, pid in pids.items():
        lab.set_pid(host, pid)
    state.save(lab)
    _each(wanted, lambda host: hosts.wait_ready(host, pids[host]))
    swarm_wide = lab.plugin_scope == "global"
    wanted_images = [*images.IMAGES, *([orchestrator.IMAGE] if swarm_wide else [])]
    report("loading images " + ", ".join(wanted_images))
    images.save(wanted_images)
    _each(wanted, images.load)
    images.discard()
    settings = {"FREEFLOW_SCOPE": lab.plugin_scope}
    if swarm_wide:
        token_file = orchestrator.share_token(wanted)
        settings["FREEFLOW_ORCHESTRATOR_URL"] = orchestrator.url(manager)
    report(f"installing the plugin {plugin.NAME} from {folder} (scope {lab.plugin_scope})")
    _each(wanted, lambda host: plugin.install(host, folder, settings))
    report(f"swarm: {manager.name} manager" + (", workers " + ", ".join(h.name for h in workers) if workers else ""))
    token = swarm.init(manager)
    _each(workers, lambda host: swarm.join(host, manager, token))
    swarm.wait_ready(manager, wanted)
    if swarm_wide:
        report(f"orchestrator: stack {orchestrator.STACK} on {manager.name}, {orchestrator.url(manager)}")
        orchestrator.deploy(manager, token_file)


def down(report: Report = print) -> None:
    """Remove the lab: dockerds and everything they started, namespaces, links, the FORWARD rule, the files."""
    with state.locked():
        lab = state.load()
        every = _every_host(lab)
        if lab is None and not every and not LAB_DIR.exists() and not network.link_exists(BRIDGE):
            report("no lab is up")
            return
        _remove(every, lab or LabState(), report)
    report("lab removed")


def abandoned(lab: LabState) -> bool:
    """Whether no dockerd of the recorded lab runs: what a killed run (or `lab kill` of every host) leaves."""
    running = [record for record in lab.hosts
               if record.pid is not None and hosts.is_dockerd(host_named(record.name), record.pid)]
    return not running


def _every_host(lab: LabState | None) -> list[Host]:
    """The hosts the record names and those whose folders exist (a record can be lost mid-`up`)."""
    recorded = [host_named(record.name) for record in lab.hosts] if lab else []
    found = [host_named(path.name) for path in LAB_DIR.glob("h*") if is_host_name(path.name)]
    return sorted(set(recorded) | set(found), key=lambda host: host.index)


def _remove(every: list[Host], lab: LabState, report: Report) -> None:
    if every:
        report("stopping dockerds on " + ", ".join(host.name for host in every))
        _each(every, lambda host: hosts.stop(host, lab.pid(host)))
    for host in every:
        network.delete_host(host)
        for path in (host.dir, host.exec_root, host.socket):
            _delete(path)
    network.remove_forwarding()
    network.delete_bridge()
    _delete(LAB_DIR)


def _delete(path: Path) -> None:
    """Delete a file or folder of the lab, refusing if something is mounted in it (it would be deleted too)."""
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    if any(target == str(path) or target.startswith(f"{path}/") for target in mounted):
        raise CommandError(f"{path} still has mounts in it; unmount them and run `freeflow lab down` again")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class HostStatus:
    """One host as `lab status` shows it."""

    name: str
    address: str
    pid: int | None
    running: bool
    swarm: str
    plugin: str
    docker_host: str


def status() -> list[HostStatus]:
    """Every recorded host and how it is doing; empty when no lab is up."""
    lab = state.load()
    if lab is None:
        return []
    return _each([host_named(record.name) for record in lab.hosts], lambda host: _host_status(host, lab))


def _host_status(host: Host, lab: LabState) -> HostStatus:
    pid = lab.pid(host)
    running = pid is not None and hosts.is_dockerd(host, pid)
    role, enabled = "-", "-"
    if running:
        try:
            role = swarm.role(host)
            enabled = "enabled" if plugin.enabled(host) else "disabled"
        except CommandError:
            role = "no answer"
    return HostStatus(host.name, host.address, pid, running, role, enabled, host.docker_host)


def _recorded(name: str) -> tuple[Host, LabState]:
    host = host_named(name)
    lab = state.load()
    if lab is None or lab.pid(host) is None:
        raise LabError(f"{name} is not a host of the lab; `freeflow lab status` lists them")
    return host, lab


def kill_host(name: str, report: Report = print) -> None:
    """SIGKILL every process of host `name` (dockerd, containerd, the plugin, containers): a host lost."""
    with state.locked():
        host, _ = _recorded(name)
        hosts.kill(host)
    report(f"{name} killed: its dockerd, plugin and containers are gone; `freeflow lab start {name}` brings it back")


def start_host(name: str, report: Report = print) -> None:
    """Start the dockerd of host `name` again after `kill_host` (or a crash); it rejoins the swarm by itself."""
    with state.locked():
        host, lab = _recorded(name)
        old = lab.pid(host)
        if old is not None and hosts.is_dockerd(host, old):
            report(f"{name} is running (dockerd PID {old})")
            return
        hosts.kill(host)  # whatever of it survived (a containerd without its dockerd)
        pid = hosts.start(host)
        lab.set_pid(host, pid)
        state.save(lab)
        hosts.wait_ready(host, pid)
    report(f"{name} started (dockerd PID {pid})")


def exec_command(name: str, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run `command` on host `name`: in its mount, UTS and network
    namespaces (its hostname, its /var/lib/freeflow, its interfaces), with DOCKER_HOST aimed at its dockerd."""
    host, lab = _recorded(name)
    pid = lab.pid(host)
    assert pid is not None
    if not hosts.is_dockerd(host, pid):
        raise LabError(f"the dockerd of {name} (PID {pid}) is not running; `freeflow lab start {name}` starts it")
    command = command or [os.environ.get("SHELL", "/bin/sh")]
    argv = ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", f"--wd={os.getcwd()}", "--", *command]
    return argv, {**os.environ, "DOCKER_HOST": host.docker_host}


def usage(wanted: list[Host]) -> str:
    manager = wanted[0]
    other = wanted[-1]
    lines = [f"lab up: {len(wanted)} Docker hosts in one swarm ({manager.name} manager), plugin {plugin.NAME} "
             "enabled on each, images " + ", ".join(images.IMAGES) + " loaded (nothing can be pulled)."]
    lines += [f"  {host.name}  {host.address:<10}  DOCKER_HOST={host.docker_host}" for host in wanted]
    lines += [
        "Try:",
        f"  freeflow lab exec {manager.name} -- docker node ls",
        f"  freeflow lab exec {manager.name} -- docker network create -d overlay --attachable demo",
        f"  freeflow lab exec {manager.name} -- docker run -d --name c1 --network demo freeflow-tools sleep infinity",
        f"  freeflow lab exec {other.name} -- docker run --rm --network demo freeflow-tools ping -c 3 c1",
        f"  freeflow lab exec {other.name} -- docker network create -d freeflow local-net",
        "Services: docker service create --no-resolve-image --endpoint-mode dnsrr ... (no IPVS on this kernel).",
        "A shell on a host: freeflow lab exec h1.  Remove it all: freeflow lab down",
    ]
    return "\n".join(lines)
