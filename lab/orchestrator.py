"""The orchestrator of a global-scope lab: one token in every host's plugin state folder, and the stack of
config/stack.yml deployed on the manager as an operator would, reached by every plugin at 10.99.0.1:7470."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path

from freeflow.lab.docker import docker
from freeflow.lab.errors import LabError
from freeflow.lab.layout import Host

IMAGE = "freeflow-orchestrator:latest"
PORT = 7470
STACK = "freeflow"
SECRET = "freeflow_token"
TOKEN_FILE = "orchestrator.token"  # in the plugin's state folder: FREEFLOW_ORCHESTRATOR_TOKEN_FILE in config.json


def url(manager: Host) -> str:
    return f"http://{manager.address}:{PORT}"


def share_token(hosts: list[Host]) -> Path:
    """Write a new token into every host's plugin state folder; return the manager's copy."""
    token = secrets.token_hex(24)
    for host in hosts:
        path = host.shadow("state") / TOKEN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(token)
    return hosts[0].shadow("state") / TOKEN_FILE


def deploy(manager: Host, token_file: Path, timeout: float = 120) -> None:
    """`docker stack deploy` the orchestrator on `manager` with the token as a swarm secret; wait until it answers."""
    docker(manager, "secret", "create", SECRET, str(token_file))
    stack = files("freeflow.config").joinpath("stack.yml")
    docker(manager, "stack", "deploy", "--resolve-image", "never", "--compose-file", str(stack), STACK, timeout=120)
    deadline = time.monotonic() + timeout
    while not healthy(manager):
        if time.monotonic() > deadline:
            tasks = docker(manager, "service", "ps", "--no-trunc", f"{STACK}_orchestrator", timeout=20)
            raise LabError(f"the orchestrator does not answer at {url(manager)} after {timeout:.0f} s:\n{tasks}")
        time.sleep(0.5)


def healthy(manager: Host) -> bool:
    try:
        with urllib.request.urlopen(f"{url(manager)}/v1/health", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
