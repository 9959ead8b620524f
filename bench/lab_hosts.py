"""The two lab hosts `freeflow bench --hosts` measures between: the lab that is up when it suits (left up), or a
two-host lab in global scope brought up for the run and taken down after it.

Clients run on h1, the swarm's manager, where the swarm-scoped networks are made; servers run on h2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from freeflow.bench.engine import DockerHost
from freeflow.bench.errors import BenchError
from freeflow.bench.paths import Placement
from freeflow.bench.signals import shielded
from freeflow.lab import lifecycle, state
from freeflow.lab.layout import Host
from freeflow.lab.lifecycle import HostStatus
from freeflow.lab.state import LabState

CLIENT, SERVER = Host(1), Host(2)
COUNT = 2  # hosts of a lab the bench brings up
SCOPE = "global"  # swarm-scoped freeflow networks, routers that follow the orchestrator


def engine_of(host: Host) -> DockerHost:
    return DockerHost(host.name, host.docker_host, host.address)


PLACEMENT = Placement(server=engine_of(SERVER), client=engine_of(CLIENT), manager=engine_of(CLIENT))
BRING_UP = f"`freeflow lab up --hosts {COUNT} --plugin-scope {SCOPE}`"


def check_usable(lab: LabState, found: Sequence[HostStatus]) -> None:
    """BenchError saying what keeps the lab that is up from serving the cross-host rows."""
    if lab.plugin_scope != SCOPE:
        raise BenchError(f"the lab that is up runs the plugin in {lab.plugin_scope} scope, and the cross-host rows "
                         f"need {SCOPE} scope (swarm-wide freeflow networks): `freeflow lab down`, then run the "
                         f"bench again (it brings up its own lab) or {BRING_UP} first")
    statuses = {status.name: status for status in found}
    for host, roles in ((CLIENT, ("manager",)), (SERVER, ("manager", "worker"))):
        status = statuses.get(host.name)
        if status is None:
            raise BenchError(f"the lab that is up has no host {host.name}; the cross-host rows run on "
                             f"{CLIENT.name} and {SERVER.name}")
        if not status.running:
            raise BenchError(f"the dockerd of lab host {host.name} is not running: `freeflow lab start {host.name}`")
        if status.swarm not in roles:
            raise BenchError(f"lab host {host.name} is {status.swarm} in the swarm, not {' or '.join(roles)}")
        if status.plugin != "enabled":
            raise BenchError(f"the freeflow plugin is {status.plugin} on lab host {host.name}")


def _lab_report(progress: Callable[[str], None]) -> Callable[[str], None]:
    """The lab's messages as progress lines: their first lines (the rest tell an operator how to use the lab)."""
    return lambda message: progress(f"lab: {message.splitlines()[0]}")


@contextmanager
def lab_placement(progress: Callable[[str], None], existing: bool) -> Iterator[Placement]:
    """PLACEMENT on the lab that is up (checked, left up) or, unless `existing`, on a lab brought up for the run."""
    lab = state.load()
    if lab is not None:
        check_usable(lab, lifecycle.status())
        progress(f"using the lab that is up ({', '.join(r.name for r in lab.hosts)}); it is left up")
        yield PLACEMENT
        return
    if existing:
        raise BenchError(f"no lab is up, and --existing-lab says to use one: {BRING_UP} first")
    progress(f"no lab is up: bringing up {COUNT} hosts in {SCOPE} scope (about a minute and a half); "
             "they are taken down at the end")
    lifecycle.up(COUNT, scope=SCOPE, report=_lab_report(progress))
    try:
        yield PLACEMENT
    finally:
        with shielded():
            progress("taking down the lab this run brought up")
            lifecycle.down(report=_lab_report(progress))
