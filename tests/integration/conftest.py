"""Fixtures for tests against the real dockerd with the managed freeflow plugin enabled (`make up`)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

PLUGIN = "freeflow/driver"
DRIVER = "freeflow"
TOOLS_IMAGE = "freeflow-tools"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip() if check else (done.stdout + done.stderr).strip()


def docker_fails(*args: str) -> str:
    """Run a docker command that must fail; return its error text."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, f"docker {' '.join(args)} unexpectedly succeeded"
    return done.stderr.strip()


def inspect(kind: str, name: str) -> dict:
    return json.loads(docker(kind, "inspect", name))[0]


def container_ip(container: str, network: str) -> str:
    return inspect("container", container)["NetworkSettings"]["Networks"][network]["IPAddress"]


def our_links() -> set[str]:
    """Names of the host's links that freeflow owns."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith(("ff-", "ffh", "ffc"))}


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def plugin_enabled() -> bool:
    return docker("plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN, check=False) == "true"


@pytest.fixture(scope="session", autouse=True)
def _require_plugin() -> None:
    if not plugin_enabled():
        pytest.fail(f"the managed plugin {PLUGIN} is not enabled: run `make up` first")


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique names for this test's Docker objects."""
    tag = uuid.uuid4().hex[:6]
    return lambda what: f"fft-{tag}-{what}"


@pytest.fixture
def network(names) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def create(what: str = "net", *args: str) -> str:
        name = names(what)
        docker("network", "create", "-d", DRIVER, *args, name)
        made.append(name)
        return name

    yield create
    for name in reversed(made):
        docker("network", "rm", name, check=False)


@pytest.fixture
def container(names) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def run(what: str, network: str, *args: str, image: str = TOOLS_IMAGE) -> str:
        name = names(what)
        made.append(name)
        docker("run", "-d", "--name", name, "--network", network, *args, image, "sleep", "infinity")
        return name

    yield run
    if made:
        docker("rm", "-f", *made, check=False)


def ping(source: str, target: str, count: int = 2) -> bool:
    out = subprocess.run(["docker", "exec", source, "ping", "-c", str(count), "-W", "2", target],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0
