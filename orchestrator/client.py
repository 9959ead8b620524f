"""A small client of the orchestrator API (standard library only), used by plugins and routers, and the loop
both use to follow the directory's changes."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from freeflow.orchestrator.errors import OrchestratorError
from freeflow.orchestrator.schema import Endpoint, Host, Listener, parse

log = logging.getLogger(__name__)

BUSY_PAUSE = 2.0  # seconds between polls while the orchestrator has no long-poll to spare


class OrchestratorUnavailable(OrchestratorError):
    """The orchestrator cannot be reached or answered with an error."""


def _error_of(exc: urllib.error.HTTPError) -> str:
    """The orchestrator's {"error": ...} message in a refusal, or "" when the body holds none."""
    try:
        body = json.loads(exc.read())
    except (ValueError, OSError, http.client.HTTPException):
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


class OrchestratorClient:
    def __init__(self, url: str, token: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise OrchestratorUnavailable(f"{method} {path}: {exc.code} {_error_of(exc)}") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # HTTPException: cut off mid-answer
            raise OrchestratorUnavailable(f"{method} {path}: {exc!r}") from None

    def heartbeat(self, host: Host) -> None:
        self._call("PUT", f"/v1/hosts/{host.host_id}", {"address": host.address, "rdma": host.rdma})

    def report(self, host_id: str, endpoints: list[Endpoint]) -> None:
        self._call("PUT", f"/v1/hosts/{host_id}/endpoints", {"endpoints": [asdict(e) for e in endpoints]})

    def put_endpoint(self, endpoint: Endpoint) -> None:
        body = asdict(endpoint)
        del body["endpoint_id"]
        self._call("PUT", f"/v1/endpoints/{endpoint.endpoint_id}", body)

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._call("DELETE", f"/v1/endpoints/{endpoint_id}")

    def put_listener(self, listener: Listener) -> None:
        self._call("PUT", "/v1/listeners", asdict(listener))

    def report_listeners(self, host_id: str, listeners: list[Listener]) -> None:
        """Replace every accelerated listener of `host_id` by `listeners`."""
        self._call("PUT", f"/v1/hosts/{host_id}/listeners", {"listeners": [asdict(x) for x in listeners]})

    def listeners(self) -> list[Listener]:
        return [parse(Listener, x) for x in self._call("GET", "/v1/listeners")["listeners"]]

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        query = f"?network={network_id}" if network_id else ""
        return [parse(Endpoint, e) for e in self._call("GET", f"/v1/endpoints{query}")["endpoints"]]

    def hosts(self) -> list[Host]:
        return [parse(Host, h) for h in self._call("GET", "/v1/hosts")["hosts"]]

    def revision(self) -> int:
        """The directory's latest revision: watch from here after a full listing."""
        return int(self._call("GET", "/v1/health")["revision"])

    def watch(self, since: int, wait: int = 25) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/watch?since={since}&wait={wait}", timeout=wait + 10))


def follow(client: OrchestratorClient, resync: Callable[[], None], stop: threading.Event, wait: int = 25) -> None:
    """Call `resync` for a full listing, then again after every change the directory reports, until `stop`.

    On a gap in the change log, an error (of the orchestrator's or of `resync`) or an orchestrator that is away,
    it starts over with a full listing (retrying every 2 s); what the caller copied stays as it was in between.
    """
    synced = False
    revision = 0
    while not stop.is_set():
        try:
            if not synced:
                revision = client.revision()
                resync()
                synced = True
            answer = client.watch(revision, wait)
            if answer["reset"]:
                synced = False
                continue
            if answer["changes"]:
                resync()
            revision = answer["revision"]
            if answer.get("busy"):  # the orchestrator had no thread to spare for a long poll
                stop.wait(BUSY_PAUSE)
        except OrchestratorUnavailable as exc:
            log.warning("cannot follow the orchestrator (retrying): %s", exc)
            synced = False
            stop.wait(2)
        except Exception:  # following must outlive any one bad listing or kernel refusal
            log.exception("applying the orchestrator's directory failed; listing everything again in 2 s")
            synced = False
            stop.wait(2)
