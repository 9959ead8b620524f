"""The router's view of the rest of the cluster, kept by a thread that follows the orchestrator: which host every
remote endpoint lives on and what listens there accelerated; and this host's own listeners, reported to it.

The broker asks it from the router's loop and never waits for the network: answers come from the last copy,
which stays as it was while the orchestrator is away (new connections to known peers keep being accelerated).
"""

from __future__ import annotations

import logging
import threading

from freeflow.orchestrator.client import OrchestratorClient, OrchestratorUnavailable, follow
from freeflow.orchestrator.schema import Listener
from freeflow.router.rdma_bridge import rdma_available

log = logging.getLogger(__name__)

ListenerKey = tuple[str, str, int, str]  # network, ip, port, kind


class ClusterView:
    def __init__(self, client: OrchestratorClient, report_every: float, watch_wait: int = 25) -> None:
        self.client = client
        self.report_every = report_every
        self.watch_wait = watch_wait
        self.host_id = ""  # this host's address, once known (the plugin learns it from Docker)
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._hosts: dict[tuple[str, str], str] = {}  # (network, ip) -> host address, other hosts only
        self._listeners: set[ListenerKey] = set()  # other hosts' accelerated listeners
        self._rdma: set[str] = set()  # addresses of the hosts that advertise an RDMA device
        self.rdma = rdma_available()
        self._local: set[ListenerKey] | None = None  # unknown until the router's first publish()
        self._reported: set[ListenerKey] | None = None

    # Asked by the broker, from the router's loop.

    def host_of(self, network_id: str, ip: str) -> str | None:
        return self._hosts.get((network_id, ip))

    def listens(self, network_id: str, ip: str, port: int, kind: str) -> bool:
        return (network_id, ip, port, kind) in self._listeners

    def rdma_with(self, host: str) -> bool:
        """Whether a channel to `host` can try RDMA: both hosts have a device."""
        return self.rdma and host in self._rdma

    def publish(self, listeners: set[ListenerKey]) -> None:
        """This host's accelerated listeners now; the reporting thread sends them if they changed."""
        with self._lock:
            if listeners == self._local:
                return
            self._local = set(listeners)
        self._wake.set()

    # The threads.

    def start(self) -> None:
        threading.Thread(target=self._report_forever, name="listeners", daemon=True).start()
        threading.Thread(target=follow, name="cluster-watch", daemon=True,
                         args=(self.client, self.refresh, self.stop, self.watch_wait)).start()

    def refresh(self) -> None:
        """Copy the directory's endpoints and listeners (a full listing after every change)."""
        every = self.client.hosts()
        addresses = {host.host_id: host.address for host in every}
        hosts = {(e.network_id, e.ip): addresses[e.host_id] for e in self.client.endpoints()
                 if e.host_id != self.host_id and e.host_id in addresses}
        listeners = {(lst.network_id, lst.ip, lst.port, lst.kind) for lst in self.client.listeners()
                     if lst.host_id != self.host_id}
        # Whole-object swaps: the router's thread reads without a lock and always sees one consistent copy.
        self._hosts, self._listeners = hosts, listeners
        self._rdma = {host.address for host in every if host.rdma}

    def _report_forever(self) -> None:
        """Report this host's listeners when they change, and again every `report_every` seconds (a
        restarted orchestrator learns them back)."""
        while not self.stop.is_set():
            self._wake.clear()
            with self._lock:
                local = None if self._local is None else set(self._local)
            # Not before the router has said what listens here: a restarted router's empty start would
            # withdraw every listener of the host from the directory until it reported them again.
            if self.host_id and local is not None:
                try:
                    self.client.report_listeners(self.host_id, [Listener(*key, self.host_id) for key in local])
                    if local != self._reported:
                        log.info("reported %d accelerated listeners to the orchestrator", len(local))
                    self._reported = local
                except OrchestratorUnavailable as exc:
                    log.warning("cannot report listeners (retrying): %s", exc)
                except Exception:  # reporting must outlive any one failure
                    log.exception("reporting listeners failed; trying again")
            self._wake.wait(self.report_every if self.host_id and local is not None else 1.0)
