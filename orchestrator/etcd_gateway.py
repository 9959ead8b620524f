"""etcd's v3 API through its JSON gateway (/v3/...), standard library only: keys, transactions, leases, watches.

The wire details (base64 keys and values, 64-bit numbers as strings, gRPC codes) stay in this module.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from freeflow.orchestrator.errors import LeaseNotFound, RevisionCompacted, StoreError, StoreUnavailable

# gRPC status codes etcd answers with, as the gateway passes them on.
NOT_FOUND = 5
DEADLINE_EXCEEDED = 4
UNAVAILABLE = 14

IDLE_CONNECTIONS = 32


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str) -> str:
    return base64.b64decode(b64).decode()


def _prefix_end(prefix: str) -> str:
    """The range_end that makes a range cover every key starting with `prefix` (its last byte plus one)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _key_range(key: str, prefix: bool) -> dict[str, str]:
    return {"key": _b64(key), "range_end": _prefix_end(key)} if prefix else {"key": _b64(key)}


# Operations and comparisons of a transaction.

def put_op(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    return {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}


def delete_op(key: str) -> dict[str, Any]:
    return {"request_delete_range": _key_range(key, False)}


def range_op(key: str) -> dict[str, Any]:
    return {"request_range": _key_range(key, False)}


def unchanged(key: str, mod_revision: int) -> dict[str, Any]:
    """True while `key` was last written at `mod_revision` (0: while it does not exist)."""
    return {"target": "MOD", "key": _b64(key), "result": "EQUAL", "mod_revision": str(mod_revision)}


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: list[list[KeyValue]]  # what each range_op found, in order


@dataclass(frozen=True)
class Event:
    revision: int
    key: str
    value: str | None  # None: the key was deleted


def _key_values(kvs: list[dict[str, Any]] | None) -> list[KeyValue]:
    return [KeyValue(_text(kv["key"]), _text(kv.get("value", "")), int(kv["mod_revision"]), int(kv.get("lease", 0)))
            for kv in kvs or []]


class EtcdGateway:
    """One etcd member's gateway at host:port; keeps a few connections alive, safe to share between threads."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.address = f"{host}:{port}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout), False

    def _release(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def _unreachable(self, exc: BaseException) -> StoreUnavailable:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return StoreUnavailable(f"etcd at {self.address} cannot be reached: {reason}. Is it running, and is "
                                f"FREEFLOW_ORCHESTRATOR_STORE its client address?")

    def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to /v3/`method` (e.g. "kv/range") and return etcd's answer."""
        payload = json.dumps(body).encode()
        while True:
            connection, reused = self._connection()
            try:
                connection.request("POST", f"/v3/{method}", payload, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                connection.close()
                if reused:
                    continue  # a kept-alive connection etcd had closed meanwhile: try a new one
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise self._unreachable(exc) from None
            self._release(connection)
            return self._answer(method, response.status, data)

    def _answer(self, method: str, status: int, data: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(data)
        except ValueError:
            raise StoreError(f"{self.address} does not answer etcd's v3 JSON gateway at /v3/{method} (HTTP {status}): "
                             f"FREEFLOW_ORCHESTRATOR_STORE needs etcd 3.4 or later") from None
        if status == 200 and isinstance(answer, dict):
            return answer
        if not isinstance(answer, dict):
            raise StoreError(f"etcd at {self.address} answered {method} with HTTP {status}: {answer}")
        code, message = answer.get("code"), answer.get("message") or answer.get("error")
        if code == NOT_FOUND and "lease not found" in str(message):
            raise LeaseNotFound(f"etcd at {self.address}: {message}")
        if code in (DEADLINE_EXCEEDED, UNAVAILABLE):
            raise StoreUnavailable(f"etcd at {self.address} cannot serve now: {message}")
        raise StoreError(f"etcd at {self.address} refused {method}: {message}")

    # Keys.

    def revision(self) -> int:
        """etcd's current revision."""
        answer = self.call("kv/range", {"key": _b64("\0"), "count_only": True})
        return int(answer["header"]["revision"])

    def get(self, key: str, prefix: bool = False) -> list[KeyValue]:
        """The key, or with `prefix` every key under it, in key order."""
        return _key_values(self.call("kv/range", _key_range(key, prefix)).get("kvs"))

    def delete(self, key: str) -> tuple[int, int]:
        """Delete `key`: (how many keys went, the revision after)."""
        answer = self.call("kv/deleterange", _key_range(key, False))
        return int(answer.get("deleted", 0)), int(answer["header"]["revision"])

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> TxnResult:
        """Apply `success` atomically if every comparison holds."""
        answer = self.call("kv/txn", {"compare": compare, "success": success})
        ranges = [_key_values(r["response_range"].get("kvs")) for r in answer.get("responses", [])
                  if "response_range" in r]
        return TxnResult(bool(answer.get("succeeded")), int(answer["header"]["revision"]), ranges)

    def read(self, *keys: str) -> list[KeyValue | None]:
        """Several keys in one consistent read."""
        return [found[0] if found else None for found in self.txn([], [range_op(k) for k in keys]).ranges]

    # Leases.

    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its ID."""
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def keep_alive(self, lease: int) -> bool:
        """Renew `lease` to its full TTL; False when it has already expired."""
        answer = self.call("lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> int | None:
        """End `lease` now, deleting every key attached to it: the revision of that, or None if it was gone."""
        try:
            return int(self.call("lease/revoke", {"ID": str(lease)})["header"]["revision"])
        except LeaseNotFound:
            return None

    # Watches.

    def watch(self, prefix: str, start_revision: int) -> WatchStream:
        """Every change of the keys under `prefix` from `start_revision` on, as etcd streams them."""
        return WatchStream(self, {"create_request": {**_key_range(prefix, True),
                                                     "start_revision": str(start_revision)}})

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class WatchStream:
    """One watch held open on its own connection: one thread iterates for batches of events; `close()` from
    any thread ends that."""

    def __init__(self, gateway: EtcdGateway, request: dict[str, Any]) -> None:
        self.gateway = gateway
        self.connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=gateway.timeout)
        try:
            self.connection.request("POST", "/v3/watch", json.dumps(request).encode(),
                                    {"Content-Type": "application/json"})
            self.response = self.connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            raise gateway._unreachable(exc) from None
        if self.response.status != 200:
            self.connection.close()
            raise StoreError(f"etcd at {gateway.address} refused a watch (HTTP {self.response.status})")
        sock = self.connection.sock
        # Quiet directories stay quiet for hours: no read timeout, but TCP keepalives notice a dead etcd.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)

    def __iter__(self) -> Iterator[list[Event]]:
        """Batches of events, each batch whole revisions; raises RevisionCompacted when the history asked
        for is gone, StoreUnavailable when the stream breaks or is closed."""
        try:
            while True:
                try:
                    line = self.response.readline()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    raise self.gateway._unreachable(exc) from None
                if not line:
                    raise StoreUnavailable(f"etcd at {self.gateway.address} ended the watch")
                events = self._events(json.loads(line))
                if events:
                    yield events
        finally:
            self.connection.close()

    def _events(self, message: dict[str, Any]) -> list[Event]:
        if "error" in message:
            raise StoreError(f"etcd at {self.gateway.address} ended the watch: {message['error']}")
        result = message["result"]
        if int(result.get("compact_revision", 0)):
            raise RevisionCompacted(int(result["compact_revision"]))
        if result.get("canceled"):
            raise StoreError(f"etcd at {self.gateway.address} cancelled the watch: "
                             f"{result.get('cancel_reason', 'no reason given')}")
        return [Event(int(e["kv"]["mod_revision"]), _text(e["kv"]["key"]),
                      None if e.get("type") == "DELETE" else _text(e["kv"].get("value", "")))
                for e in result.get("events", [])]

    def close(self) -> None:
        """Make the reader's iteration end (from any thread); the reader closes the connection."""
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # etcd's side closed it already: the reader is ending anyway
                sock.shutdown(socket.SHUT_RDWR)
