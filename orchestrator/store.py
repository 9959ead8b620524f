"""What a store of the cluster directory must do, whichever keeps it (sqlite_directory.py, etcd_directory.py),
and the logic the stores share; the API (app.py) sees only `DirectoryStore`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from freeflow.orchestrator.schema import Endpoint, Host, Listener


class DirectoryStore(ABC):
    """Every write is a change under a new revision, so a watcher that knows revision R asks for everything
    after R and misses nothing. A host whose lease expires is removed with everything it owned."""

    # Hosts and leases.

    @abstractmethod
    def heartbeat(self, host: Host, ttl: float, now: float | None = None) -> None:
        """Create or renew a host's lease for `ttl` seconds from `now` (default: the wall clock)."""

    @abstractmethod
    def expire(self, now: float | None = None) -> list[str]:
        """Remove hosts whose lease ran out, with their endpoints and listeners; return their IDs."""

    @abstractmethod
    def hosts(self) -> list[Host]:
        """Every host with a lease, by host ID."""

    @abstractmethod
    def host_known(self, host_id: str) -> bool:
        """Whether the host has a lease."""

    # Endpoints.

    @abstractmethod
    def put_endpoint(self, endpoint: Endpoint) -> None:
        """Add or replace one endpoint."""

    @abstractmethod
    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove one endpoint; whether it was there."""

    @abstractmethod
    def replace_host_endpoints(self, host_id: str, endpoints: list[Endpoint]) -> None:
        """A router's full report: its host's endpoints become exactly `endpoints` (rebuilds the directory
        after the orchestrator lost its state). Only what differs from the directory is written."""

    @abstractmethod
    def lookup(self, network_id: str, ip: str) -> tuple[Endpoint, Host] | None:
        """The endpoint at `ip` on `network_id` and its host."""

    @abstractmethod
    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Every endpoint, or those of one network."""

    # Listeners.

    @abstractmethod
    def put_listener(self, listener: Listener) -> None:
        """Add or replace an accelerated listener."""

    @abstractmethod
    def delete_listener(self, network_id: str, ip: str, port: int, kind: str) -> bool:
        """Remove a listener; whether it was there."""

    @abstractmethod
    def listener(self, network_id: str, ip: str, port: int, kind: str) -> Listener | None:
        """The listener at that address, if any."""

    @abstractmethod
    def listeners(self) -> list[Listener]:
        """Every accelerated listener of the cluster."""

    def replace_host_listeners(self, host_id: str, listeners: list[Listener]) -> None:
        """A router's full report: its host's listeners become exactly `listeners` (only the difference is
        written, so watchers sleep through reports that change nothing)."""
        known = {x.key: x for x in self.listeners() if x.host_id == host_id}
        wanted = {x.key: x for x in listeners}
        for key in sorted(known.keys() - wanted.keys()):
            gone = known[key]
            self.delete_listener(gone.network_id, gone.ip, gone.port, gone.kind)
        for key, listener in sorted(wanted.items()):
            if known.get(key) != listener:
                self.put_listener(listener)

    # Watching.

    @abstractmethod
    def revision(self) -> int:
        """The latest revision: after a full listing, watch from here."""

    @abstractmethod
    def changes_since(self, revision: int, wait: float = 0.0,
                      limit: int = 1000) -> tuple[int, list[dict[str, Any]], bool]:
        """Changes after `revision`, waiting up to `wait` seconds for one: (revision reached, changes, reset).

        Each change is made by `change()`. `reset` says the watcher's revision is one the directory can no
        longer answer from (another life of the directory, or history it no longer keeps): the watcher must
        list everything again and watch from the revision returned.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the store (connections, threads)."""


def clock(now: float | None) -> float:
    """`now` as given (tests pass their own time), else the wall clock that leases are measured in."""
    return time.time() if now is None else now


def change(revision: int, kind: str, key: str, value: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of the change feed: a put of `value` under (kind, key), or a delete when `value` is None."""
    return {"revision": revision, "kind": kind, "key": key, "op": "delete" if value is None else "put",
            "value": value}


def report_changes(known: Mapping[str, Endpoint],
                   reported: list[Endpoint]) -> tuple[list[str], list[Endpoint]]:
    """What a full report changes against the host's `known` endpoints: (IDs to delete, endpoints to write).

    Routers report every heartbeat; writing only the difference keeps watchers asleep when nothing moved.
    """
    wanted = {e.endpoint_id: e for e in reported}
    return sorted(set(known) - set(wanted)), [e for i, e in wanted.items() if known.get(i) != e]
