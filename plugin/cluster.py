"""Keeps this host's part of a swarm-wide network in step with the orchestrator.

It heartbeats with a full report of the local endpoints (so a restarted orchestrator rebuilds its
directory), follows the orchestrator's changes, and programs every remote endpoint of a local network
as static VXLAN entries. When the orchestrator is away, what is programmed stays: existing paths keep
working.
"""

from __future__ import annotations

import logging
import threading

from freeflow.orchestrator.client import OrchestratorClient, OrchestratorUnavailable, follow
from freeflow.orchestrator.schema import Endpoint, Host
from freeflow.plugin.driver import Driver
from freeflow.router.rdma_bridge import rdma_available

log = logging.getLogger(__name__)


class ClusterSync:
    def __init__(self, driver: Driver, client: OrchestratorClient, host_id: str, heartbeat_every: float,
                 watch_wait: int = 25) -> None:
        self.driver = driver
        self.client = client
        self.host_id = host_id
        self.heartbeat_every = heartbeat_every
        self.watch_wait = watch_wait
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.rdma = rdma_available()  # advertised, so routers of two RDMA hosts bridge channels over it

    @property
    def host(self) -> Host:
        """This host as the directory knows it: its swarm address, learnt from Docker's discovery."""
        address = self.driver.heartbeat_address
        return Host(self.host_id or address, address, self.rdma)

    def local_endpoints(self) -> list[Endpoint]:
        with self.driver.lock:
            return [Endpoint(ep.endpoint_id, ep.network_id, ep.address.split("/")[0], ep.mac, self.host.host_id)
                    for ep in self.driver.state.endpoints.values() if ep.address and ep.sandbox_key]

    def beat(self) -> None:
        """Renew the lease and report the local endpoints."""
        self.client.heartbeat(self.host)
        self.client.report(self.host.host_id, self.local_endpoints())

    def resync(self) -> None:
        """Program every remote endpoint of the local networks from a full listing."""
        remote = [e for e in self.client.endpoints() if e.host_id != self.host.host_id]
        addresses = {h.host_id: h.address for h in self.client.hosts()}
        self.driver.set_remote_endpoints(
            [(e.network_id, e.ip, e.mac, addresses[e.host_id]) for e in remote if e.host_id in addresses])

    def poke(self) -> None:
        """The local endpoints changed: report them now rather than at the next heartbeat."""
        self.wake.set()

    def start(self) -> None:
        self.driver.on_change.append(self.poke)
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        threading.Thread(target=follow, name="watch", daemon=True,
                         args=(self.client, self.resync, self.stop, self.watch_wait)).start()

    def _heartbeats(self) -> None:
        while not self.stop.is_set():
            if not self.driver.heartbeat_address:
                log.info("waiting for Docker to tell this host's swarm address")
                self.stop.wait(1)
                continue
            self.wake.clear()
            try:
                self.beat()
            except OrchestratorUnavailable as exc:
                log.warning("orchestrator unreachable, existing paths keep working: %s", exc)
            except Exception:  # the heartbeat must outlive any one failure, or the lease runs out
                log.exception("heartbeat failed; trying again at the next one")
            self.wake.wait(self.heartbeat_every)

