"""Each lab host's dockerd: starting it in its own namespaces (dockerd.sh), waiting for it, and stopping it
with every process it left (containerd, shims, containers), found by PID and by the paths on their command lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from freeflow.lab.docker import docker, responds
from freeflow.lab.errors import CommandError, HostStartError
from freeflow.lab.layout import SHADOWED, Host

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).with_name("dockerd.sh")


def start(host: Host) -> int:
    """Start the host's dockerd in the background; return its PID (unshare, nsenter and sh all exec)."""
    host.dir.mkdir(parents=True, exist_ok=True)
    host.config_file.write_text(json.dumps({"deprecated-key-path": str(host.key_file)}, indent=1) + "\n")
    shadows = [f"{folder}:{path}" for folder, path in SHADOWED.items()]
    env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
    with open(host.log, "ab") as log_file:
        process = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private",
             "sh", str(SCRIPT), host.name, str(host.dir), *shadows],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    return process.pid


def wait_ready(host: Host, pid: int, timeout: float = 60) -> None:
    """Wait until the host's dockerd answers; raise HostStartError (with its log) if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if responds(host):
            return
        if not alive(pid):
            raise HostStartError(f"the dockerd of {host.name} exited while starting:\n{log_tail(host)}")
        time.sleep(0.3)
    raise HostStartError(f"the dockerd of {host.name} did not answer within {timeout:.0f} s:\n{log_tail(host)}")


def log_tail(host: Host, lines: int = 15) -> str:
    try:
        return "\n".join(host.log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log in {host.log})"


def stop(host: Host, pid: int | None, timeout: float = 30) -> None:
    """Stop the host's containers and dockerd; kill whatever of the host survives `timeout` seconds."""
    if pid is not None and is_dockerd(host, pid):
        if responds(host):
            _kill_containers(host)
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone([pid], timeout):
            log.warning("the dockerd of %s (PID %d) did not stop within %.0f s", host.name, pid, timeout)
    for leftover in processes(host):
        log.warning("killing PID %d, left behind by %s", leftover, host.name)
    kill(host)


def kill(host: Host) -> None:
    """SIGKILL every process of the host at once, as a power cut would stop them."""
    leftovers = processes(host)
    for pid in leftovers:
        _signal(pid, signal.SIGKILL)
    if not _wait_gone(leftovers, 10):
        raise CommandError(f"processes of {host.name} survive SIGKILL: {', '.join(map(str, leftovers))}")
    host.pidfile.unlink(missing_ok=True)  # a killed dockerd leaves it, and refuses to start over it


def _kill_containers(host: Host) -> None:
    """Kill the containers first: dockerd would give each its 10 s stop timeout on the way down."""
    try:
        running = docker(host, "ps", "--quiet", timeout=20).split()
        if running:
            docker(host, "kill", *running, timeout=60)
    except CommandError as exc:
        log.warning("could not kill the containers of %s before stopping it: %s", host.name, exc)


def is_dockerd(host: Host, pid: int) -> bool:
    """Whether `pid` is still the host's dockerd (and not a process that reused the PID)."""
    return alive(pid) and host.docker_host in _cmdline(pid)


def processes(host: Host) -> list[int]:
    """PIDs of the host's dockerd, containerd and shims (known by their arguments) and their descendants."""
    parents: dict[int, int] = {}
    owned: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _belongs(host, _cmdline(pid)):
            owned.add(pid)
        parent = _parent(pid)
        if parent is not None:
            parents[pid] = parent
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in owned} - owned
        owned |= children
        grew = bool(children)
    return sorted(pid for pid in owned if alive(pid))


def _belongs(host: Host, args: list[str]) -> bool:
    if not args:  # gone while we looked
        return False
    program = os.path.basename(args[0])
    if program == "dockerd":
        return host.docker_host in args
    if program.startswith("containerd"):  # containerd and its shims name the host's exec root
        return any(arg.startswith(f"{host.exec_root}/") for arg in args)
    return False


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not; our own exited children are reaped here)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

