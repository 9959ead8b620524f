"""The cluster directory in etcd v3, for clusters that outgrow one orchestrator: several orchestrators share
it, host leases are etcd leases, and watchers follow etcd's own revisions.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from freeflow.orchestrator.errors import LeaseNotFound, RevisionCompacted, StoreError
from freeflow.orchestrator.etcd_gateway import (
    EtcdGateway,
    Event,
    KeyValue,
    WatchStream,
    delete_op,
    put_op,
    unchanged,
)
from freeflow.orchestrator.schema import Endpoint, Host, Listener, listener_key
from freeflow.orchestrator.store import DirectoryStore, change, clock, report_changes

log = logging.getLogger(__name__)

BACKSTOP = 2  # lease periods after which etcd drops a host by itself
ATTEMPTS = 10  # an optimistic write is tried again when another writer changed its keys in between
CATCH_UP = 2.0  # seconds a watch waits for the change feed to reach this orchestrator's own writes
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
RETRY_FOLLOW = 1.0  # seconds between attempts to watch etcd again

T = TypeVar("T", Host, Endpoint, Listener)
R = TypeVar("R")


def _encode(record: Host | Endpoint | Listener) -> str:
    return json.dumps(asdict(record), sort_keys=True, separators=(",", ":"))


def _decode(cls: type[T], kv: KeyValue) -> T:
    return cls(**json.loads(kv.value))


def _lease(record: KeyValue | None) -> int:
    """The etcd lease in a host's lease record; 0 (no lease) without one."""
    return int(json.loads(record.value)["lease"]) if record else 0


def _mod(kv: KeyValue | None) -> int:
    return kv.mod_revision if kv else 0


@dataclass
class _Write:
    """The comparisons and operations of one record's write: they go into the same transaction."""

    compare: list[dict[str, Any]]
    ops: list[dict[str, Any]]


class ChangeFeed:
    """The directory's recent history, followed from etcd by one watch that long polls wait on.

    Keeps the last `keep` changes. A watcher whose revision is below `floor` may have missed changes (etcd
    compacted them, or they were dropped from the feed): it gets `reset` and lists everything again.
    """

    def __init__(self, gateway: EtcdGateway, prefix: str, keep: int) -> None:
        self.gateway = gateway
        self.prefix = prefix
        self.keep = keep
        self.changed = threading.Condition()
        self.revisions: list[int] = []
        self.changes: list[dict[str, Any]] = []
        self.floor = 0
        self.seen = 0  # the revision of the latest change followed
        self.closed = threading.Event()
        self.stream: WatchStream | None = None
        self.thread = threading.Thread(target=self._follow, name="etcd-changes", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        start = 1  # everything etcd still has; it says where its history begins if compacted
        failing = False
        while not self.closed.is_set():
            try:
                stream = self.gateway.watch(self.prefix, start)
                with self.changed:
                    self.stream = stream
                if self.closed.is_set():
                    stream.close()  # closed while connecting: the loop below ends at once
                if failing:
                    log.info("following etcd's changes again from revision %d", start)
                    failing = False
                for events in stream:
                    self._add(events)
                    start = events[-1].revision + 1
            except RevisionCompacted as exc:
                log.info("etcd keeps history from revision %d on: watchers from before list everything again",
                         exc.revision)
                self._restart(exc.revision)
                start = exc.revision
            except StoreError as exc:
                if self.closed.is_set():
                    return
                if not failing:
                    log.warning("cannot follow etcd's changes (retrying): %s", exc)
                    failing = True
                self.closed.wait(RETRY_FOLLOW)
            except Exception:
                log.exception("following etcd's changes failed at revision %d (retrying)", start)
                failing = True
                self.closed.wait(RETRY_FOLLOW)

    def _add(self, events: list[Event]) -> None:
        added = []
        for event in events:
            kind, _, key = event.key[len(self.prefix):].partition("/")
            added.append(change(event.revision, kind, key, None if event.value is None else json.loads(event.value)))
        with self.changed:
            self.revisions += [e.revision for e in events]
            self.changes += added
            excess = len(self.changes) - self.keep
            if excess > 0:
                self.floor = max(self.floor, self.revisions[excess - 1])
                del self.revisions[:excess], self.changes[:excess]
            self.seen = events[-1].revision
            self.changed.notify_all()

    def _restart(self, compacted: int) -> None:
        """etcd's history now begins at `compacted`: what came before it cannot be told apart any more."""
        with self.changed:
            self.revisions.clear()
            self.changes.clear()
            self.floor = max(self.floor, compacted - 1)
            self.seen = max(self.seen, compacted - 1)
            self.changed.notify_all()

    def wait_for(self, revision: int, timeout: float) -> None:
        """Until the feed has followed `revision` (or `timeout` seconds)."""
        with self.changed:
            self.changed.wait_for(lambda: self.seen >= revision or self.closed.is_set(), timeout)

    def after(self, revision: int, wait: float, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Changes after `revision` in whole revisions, about `limit` of them, waiting up to `wait` seconds
        for one: (changes, reset)."""
        deadline = time.monotonic() + wait
        with self.changed:
            while True:
                if revision < self.floor:
                    return [], True
                first = bisect.bisect_right(self.revisions, revision)
                remaining = deadline - time.monotonic()
                if first < len(self.revisions) or remaining <= 0 or self.closed.is_set():
                    break
                self.changed.wait(remaining)
            end = min(first + limit, len(self.revisions))
            if first < end < len(self.revisions):
                end = bisect.bisect_right(self.revisions, self.revisions[end - 1])  # never half a revision
            return self.changes[first:end], False

    def close(self) -> None:
        self.closed.set()
        with self.changed:
            stream = self.stream
            self.changed.notify_all()
        if stream is not None:
            stream.close()
        self.thread.join(5)


class EtcdDirectory(DirectoryStore):
    """The directory under /`prefix`/ in the etcd whose client address is host:port. Its keys:

    directory/host/<host_id>, directory/endpoint/<endpoint_id>, directory/listener/<net>/<ip>/<port>/<kind>
        the records (JSON); etcd's history of this range is the change feed watchers follow.
    lease/<host_id>
        the host's etcd lease and when its heartbeats run out (not watched: heartbeats wake nobody).
    index/ip/<net>/<ip>/<endpoint_id>, index/host/<host_id>/<endpoint_id>
        copies of each endpoint for lookups by address and full reports by host (not watched).

    Every key a host owns is attached to its etcd lease. Orchestrators revoke a lease when the heartbeats
    run out; etcd itself drops it after BACKSTOP lease periods, when no orchestrator is left to do it.
    """

    def __init__(self, host: str, port: int, prefix: str = "freeflow", keep: int = 10_000,
                 timeout: float = 5.0) -> None:
        self.gateway = EtcdGateway(host, port, timeout)
        self.root = f"/{prefix}/"
        self._written = 0  # this orchestrator's latest write to the watched keys
        self._written_lock = threading.Lock()
        self.feed = ChangeFeed(self.gateway, self.root + "directory/", keep)

    # Keys.

    def _record_key(self, kind: str, name: str = "") -> str:
        return f"{self.root}directory/{kind}/{name}"

    def _lease_key(self, host_id: str = "") -> str:
        return f"{self.root}lease/{host_id}"

    def _ip_index_key(self, network_id: str, ip: str, endpoint_id: str = "") -> str:
        return f"{self.root}index/ip/{network_id}/{ip}/{endpoint_id}"

    def _host_index_key(self, host_id: str, endpoint_id: str = "") -> str:
        return f"{self.root}index/host/{host_id}/{endpoint_id}"

    def _endpoint_keys(self, e: Endpoint) -> tuple[str, str, str]:
        return (self._record_key("endpoint", e.endpoint_id), self._ip_index_key(e.network_id, e.ip, e.endpoint_id),
                self._host_index_key(e.host_id, e.endpoint_id))

    # Writing.

    def _wrote(self, revision: int) -> None:
        with self._written_lock:
            self._written = max(self._written, revision)

    def _commit(self, writes: list[_Write]) -> bool | None:
        """Apply `writes` in as few transactions as etcd allows: True, or None when a comparison failed (or a
        lease ran out) in between, to read again and retry."""
        batches: list[_Write] = []
        for write in writes:
            if not batches or len(batches[-1].ops) + len(write.ops) > MAX_TXN_OPS or \
                    len(batches[-1].compare) + len(write.compare) > MAX_TXN_OPS:
                batches.append(_Write([], []))
            batches[-1].compare += write.compare
            batches[-1].ops += write.ops
        for batch in batches:
            try:
                result = self.gateway.txn(batch.compare, batch.ops)
            except LeaseNotFound:
                return None
            if not result.succeeded:
                return None
            self._wrote(result.revision)
        return True

    def _retry(self, what: str, attempt: Callable[[], R | None]) -> R:
        """The first result of `attempt` that is not None (None: another writer came in between)."""
        for _ in range(ATTEMPTS):
            result = attempt()
            if result is not None:
                return result
        raise StoreError(f"{what}: other writers kept changing the same keys in etcd at {self.gateway.address}; "
                         f"try again")

    # Hosts and leases.

    def heartbeat(self, host: Host, ttl: float, now: float | None = None) -> None:
        expires = clock(now) + ttl
        lease_key, host_key = self._lease_key(host.host_id), self._record_key("host", host.host_id)

        def attempt() -> bool | None:
            record, known = self.gateway.read(lease_key, host_key)
            lease = _lease(record)
            if lease and not self.gateway.keep_alive(lease):
                lease = 0  # etcd dropped it, with every key the host had
            if not lease:
                lease = self.gateway.grant(max(1, math.ceil(BACKSTOP * ttl)))
            ops = [put_op(lease_key, json.dumps({"lease": lease, "expires": expires}), lease)]
            if known is None or known.lease != lease or _decode(Host, known) != host:
                ops.append(put_op(host_key, _encode(host), lease))
            try:
                result = self.gateway.txn([unchanged(lease_key, _mod(record))], ops)
            except LeaseNotFound:
                return None
            if not result.succeeded:
                return None
            if len(ops) > 1:
                self._wrote(result.revision)
            return True

        self._retry(f"heartbeat of host {host.host_id}", attempt)

    def expire(self, now: float | None = None) -> list[str]:
        now = clock(now)
        gone = []
        for record in self.gateway.get(self._lease_key(), prefix=True):
            if json.loads(record.value)["expires"] >= now:
                continue
            # Taking the record away first means a heartbeat in between wins, and only one orchestrator revokes.
            if not self.gateway.txn([unchanged(record.key, record.mod_revision)], [delete_op(record.key)]).succeeded:
                continue
            revision = self.gateway.revoke(_lease(record))
            if revision is not None:
                self._wrote(revision)
                gone.append(record.key[len(self._lease_key()):])
        return gone

    def hosts(self) -> list[Host]:
        return [_decode(Host, kv) for kv in self.gateway.get(self._record_key("host"), prefix=True)]

    def host_known(self, host_id: str) -> bool:
        return bool(self.gateway.get(self._record_key("host", host_id)))

    # Endpoints.

    def _stored_endpoints(self, endpoint_ids: list[str]) -> dict[str, KeyValue]:
        stored = {}
        for first in range(0, len(endpoint_ids), MAX_TXN_OPS):
            chunk = endpoint_ids[first:first + MAX_TXN_OPS]
            for endpoint_id, kv in zip(chunk, self.gateway.read(*[self._record_key("endpoint", i) for i in chunk]),
                                       strict=True):
                if kv is not None:
                    stored[endpoint_id] = kv
        return stored

    def _put_endpoint(self, endpoint: Endpoint, stored: KeyValue | None, lease_record: KeyValue | None) -> _Write:
        value, lease, keys = _encode(endpoint), _lease(lease_record), self._endpoint_keys(endpoint)
        ops = [put_op(key, value, lease) for key in keys]
        if stored is not None:  # index keys of where the endpoint was before
            ops += [delete_op(key) for key in self._endpoint_keys(_decode(Endpoint, stored))[1:] if key not in keys]
        return _Write([unchanged(keys[0], _mod(stored)), unchanged(self._lease_key(endpoint.host_id),
                                                                   _mod(lease_record))], ops)

    def _delete_endpoint(self, stored: KeyValue) -> _Write:
        return _Write([unchanged(stored.key, stored.mod_revision)],
                      [delete_op(key) for key in self._endpoint_keys(_decode(Endpoint, stored))])

    def _write_endpoints(self, puts: list[Endpoint], deletes: list[str]) -> set[str] | None:
        """One attempt to write `puts` and delete `deletes`: the IDs deleted, or None to read again and retry."""
        stored = self._stored_endpoints([e.endpoint_id for e in puts] + deletes)
        hosts = sorted({e.host_id for e in puts})
        lease_records = dict(zip(hosts, self.gateway.read(*[self._lease_key(h) for h in hosts]), strict=True))
        gone = {i for i in deletes if i in stored}
        writes = [self._put_endpoint(e, stored.get(e.endpoint_id), lease_records[e.host_id]) for e in puts]
        writes += [self._delete_endpoint(stored[i]) for i in sorted(gone)]
        return gone if self._commit(writes) else None

    def put_endpoint(self, endpoint: Endpoint) -> None:
        self._retry(f"endpoint {endpoint.endpoint_id}", lambda: self._write_endpoints([endpoint], []))

    def delete_endpoint(self, endpoint_id: str) -> bool:
        return bool(self._retry(f"endpoint {endpoint_id}", lambda: self._write_endpoints([], [endpoint_id])))

    def replace_host_endpoints(self, host_id: str, endpoints: list[Endpoint]) -> None:
        def attempt() -> bool | None:
            (record,) = self.gateway.read(self._lease_key(host_id))
            # An endpoint still on an older lease of the host counts as unknown: written again, it lives as
            # long as the host does.
            known = {e.endpoint_id: e for e in (_decode(Endpoint, kv) for kv in self.gateway.get(
                self._host_index_key(host_id), prefix=True) if kv.lease == _lease(record))}
            deleted, written = report_changes(known, endpoints)
            if not (deleted or written):
                return True
            return None if self._write_endpoints(written, deleted) is None else True

        self._retry(f"report of host {host_id}", attempt)

    def lookup(self, network_id: str, ip: str) -> tuple[Endpoint, Host] | None:
        for kv in self.gateway.get(self._ip_index_key(network_id, ip), prefix=True):
            endpoint = _decode(Endpoint, kv)
            host = self.gateway.get(self._record_key("host", endpoint.host_id))
            if host:
                return endpoint, _decode(Host, host[0])
        return None

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        every = (_decode(Endpoint, kv) for kv in self.gateway.get(self._record_key("endpoint"), prefix=True))
        return [e for e in every if network_id is None or e.network_id == network_id]

    # Listeners.

    def put_listener(self, listener: Listener) -> None:
        lease_key = self._lease_key(listener.host_id)

        def attempt() -> bool | None:
            (record,) = self.gateway.read(lease_key)
            return self._commit([_Write([unchanged(lease_key, _mod(record))],
                                        [put_op(self._record_key("listener", listener.key), _encode(listener),
                                                _lease(record))])])

        self._retry(f"listener {listener.key}", attempt)

    def delete_listener(self, network_id: str, ip: str, port: int, kind: str) -> bool:
        deleted, revision = self.gateway.delete(self._record_key("listener", listener_key(network_id, ip, port, kind)))
        if deleted:
            self._wrote(revision)
        return deleted > 0

    def listener(self, network_id: str, ip: str, port: int, kind: str) -> Listener | None:
        found = self.gateway.get(self._record_key("listener", listener_key(network_id, ip, port, kind)))
        return _decode(Listener, found[0]) if found else None

    def listeners(self) -> list[Listener]:
        return [_decode(Listener, kv) for kv in self.gateway.get(self._record_key("listener"), prefix=True)]

    # Watching.

    def revision(self) -> int:
        return self.gateway.revision()

    def changes_since(self, revision: int, wait: float = 0.0,
                      limit: int = 1000) -> tuple[int, list[dict[str, Any]], bool]:
        latest = self.gateway.revision()
        if revision > latest:  # from another etcd cluster
            return latest, [], True
        with self._written_lock:
            written = self._written
        self.feed.wait_for(written, CATCH_UP)
        changes, reset = self.feed.after(revision, wait, limit)
        if reset:
            return latest, [], True
        return (changes[-1]["revision"] if changes else revision), changes, False

    def close(self) -> None:
        self.feed.close()
        self.gateway.close()
