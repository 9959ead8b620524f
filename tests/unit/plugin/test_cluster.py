"""Two hosts' plugins in step through a real orchestrator over HTTP on loopback (kernels are fakes)."""

from __future__ import annotations

import logging
import threading

import pytest
from werkzeug.serving import make_server

from freeflow.orchestrator.app import create_app
from freeflow.orchestrator.client import OrchestratorClient
from freeflow.orchestrator.sqlite_directory import SqliteDirectory
from freeflow.plugin import protocol as p
from freeflow.plugin.cluster import ClusterSync
from freeflow.plugin.driver import Driver, vxlan_name
from freeflow.plugin.store import Store
from tests.integration.conftest import wait_for
from tests.unit.plugin.fake_kernel import FakeKernel
from tests.unit.plugin.test_app import NET, create_endpoint_body, create_network_body

TOKEN = "a-token-of-sixteen+"


class Orchestrator:
    """The orchestrator app on a loopback port; stop() and start() again on the same port."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.port = 0
        self.start()

    def start(self) -> None:
        self.app = create_app(SqliteDirectory(), TOKEN, lease_ttl=30)
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving, and end the app's lease-expiry thread (which would log about its hosts later on)."""
        self.server.shutdown()
        self.server.server_close()
        self.app.extensions["freeflow.stop_expiry"].set()


@pytest.fixture
def orchestrator():
    running = Orchestrator()
    yield running
    running.stop()


def host(tmp_path, name: str, address: str, orchestrator: Orchestrator, ep: str, ip: str,
         heartbeat_every: float = 0.2):
    driver = Driver(Store(tmp_path / name), FakeKernel(), scope="global", host_address=address)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    body = create_endpoint_body(ep=ep)
    body["Interface"]["Address"] = f"{ip}/24"
    driver.create_endpoint(p.CreateEndpointRequest.parse(body))
    driver.join(p.JoinRequest(NET, ep, f"/var/run/docker/netns/{name}"))
    sync = ClusterSync(driver, OrchestratorClient(f"http://127.0.0.1:{orchestrator.port}", TOKEN, timeout=2),
                       "", heartbeat_every=heartbeat_every, watch_wait=1)
    sync.start()
    return driver, sync


def remotes(driver: Driver) -> set:
    return driver.kernel.remote_entries(vxlan_name(NET))


def test_hosts_learn_each_others_endpoints_and_survive_an_orchestrator_restart(tmp_path, orchestrator):
    a, sync_a = host(tmp_path, "a", "10.99.0.1", orchestrator, "a" * 64, "10.55.0.2")
    b, sync_b = host(tmp_path, "b", "10.99.0.2", orchestrator, "b" * 64, "10.55.0.3")
    try:
        wait_for(lambda: remotes(a) == {("10.55.0.3", "02:42:0a:37:00:03", "10.99.0.2")}, 10, "a to learn b")
        wait_for(lambda: remotes(b) == {("10.55.0.2", "02:42:0a:37:00:02", "10.99.0.1")}, 10, "b to learn a")

        orchestrator.stop()
        assert remotes(a) and remotes(b), "entries stay while the orchestrator is away"
        orchestrator.start()  # empty: rebuilt from the hosts' reports
        client = OrchestratorClient(f"http://127.0.0.1:{orchestrator.port}", TOKEN)
        wait_for(lambda: len(client.endpoints()) == 2, 10, "the directory to be rebuilt")

        b.delete_endpoint(p.EndpointRequest(NET, "b" * 64))
        wait_for(lambda: remotes(a) == set(), 10, "a to forget b's endpoint")
    finally:
        sync_a.stop.set()
        sync_b.stop.set()


def test_a_new_endpoint_is_reported_at_once_not_at_the_next_heartbeat(tmp_path, orchestrator):
    a, sync_a = host(tmp_path, "a", "10.99.0.1", orchestrator, "a" * 64, "10.55.0.2", heartbeat_every=3600)
    b, sync_b = host(tmp_path, "b", "10.99.0.2", orchestrator, "b" * 64, "10.55.0.3", heartbeat_every=3600)
    try:
        wait_for(lambda: len(remotes(a)) == 1, 10, "a to learn b's first endpoint")
        body = create_endpoint_body(ep="c" * 64)
        body["Interface"]["Address"] = "10.55.0.4/24"
        b.create_endpoint(p.CreateEndpointRequest.parse(body))
        assert len(remotes(a)) == 1, "an endpoint is reported once it joins a sandbox"
        b.join(p.JoinRequest(NET, "c" * 64, "/var/run/docker/netns/c"))
        wait_for(lambda: len(remotes(a)) == 2, 10, "a to learn b's new endpoint")
    finally:
        sync_a.stop.set()
        sync_b.stop.set()
