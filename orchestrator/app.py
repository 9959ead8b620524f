"""The orchestrator's HTTP API (Flask): parse and authenticate at the edge, the directory does the rest.

Reads are open to the cluster; every write needs `Authorization: Bearer <token>`. Watchers long-poll
/v1/watch with the last revision they saw.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, request

from freeflow.orchestrator.errors import BadRequest, NotFound, OrchestratorError, Unauthorized
from freeflow.orchestrator.schema import Endpoint, Host, Listener, parse
from freeflow.orchestrator.store import DirectoryStore

log = logging.getLogger(__name__)
Report = TypeVar("Report", Endpoint, Listener)  # what a host reports in full

MAX_WATCH_WAIT = 30.0
RESERVED_THREADS = 32  # never taken by long-polling watches: heartbeats, reports and lookups


def watch_slots_for(threads: int) -> int:
    """How many of `threads` may long-poll at once: all but RESERVED_THREADS (half of them, below 64)."""
    return max(1, threads - min(RESERVED_THREADS, threads // 2))


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _body() -> Any:
    try:
        return json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body nests JSON too deeply") from None


def _object_body(**path_fields: str) -> dict[str, Any]:
    """The JSON object body with the fields that come from the URL path added."""
    body = _body()
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return {**body, **path_fields}


def _int_arg(name: str, default: int | None = None, low: int = 0, high: int = 2**63 - 1) -> int:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"the query needs {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _arg(name: str) -> str:
    value = request.args.get(name)
    if not value:
        raise BadRequest(f"the query needs {name}")
    return value


def create_app(directory: DirectoryStore, token: str, lease_ttl: float = 15.0,
               expire_every: float | None = 1.0, max_watchers: int = watch_slots_for(256)) -> Flask:
    """The API over `directory`; writes need `token`. With `expire_every`, a thread expires leases. At most
    `max_watchers` watches long-poll at once: each holds a thread, and heartbeats must find one."""
    if not token:
        raise ValueError("the orchestrator needs a token for writes")
    app = Flask("freeflow.orchestrator")
    watch_slots = threading.BoundedSemaphore(max_watchers)
    long_polls: list[None] = []  # one item per watch waiting now (list.append and pop are atomic)

    def authorised() -> None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("writes need the header 'Authorization: Bearer <token>' with the cluster's token")

    def route(rule: str, methods: list[str], write: bool = False) -> Callable[[Callable[..., Any]], Any]:
        def wrap(handler: Callable[..., Any]) -> Any:
            def endpoint(**kwargs: Any) -> Response:
                try:
                    if write:
                        authorised()
                    result = handler(**kwargs)
                    return _json(result if result is not None else {})
                except OrchestratorError as exc:
                    if exc.status >= 500:
                        log.error("%s %s: %s", request.method, request.path, exc)
                    return _json({"error": str(exc)}, exc.status)
                except Exception:
                    log.exception("%s %s failed", request.method, request.path)
                    return _json({"error": "internal error; see the orchestrator log"}, 500)
            endpoint.__name__ = f"{handler.__name__}_{'_'.join(methods).lower()}"
            app.add_url_rule(rule, view_func=endpoint, methods=methods)
            return handler
        return wrap

    @route("/v1/health", ["GET"])
    def health() -> dict[str, Any]:
        return {"revision": directory.revision(), "hosts": len(directory.hosts()), "long_polls": len(long_polls),
                "long_poll_slots": max_watchers}

    @route("/v1/hosts", ["GET"])
    def hosts() -> dict[str, Any]:
        return {"hosts": [vars(h) for h in directory.hosts()]}

    @route("/v1/hosts/<host_id>", ["PUT"], write=True)
    def heartbeat(host_id: str) -> None:
        host = parse(Host, _object_body(host_id=host_id))
        directory.heartbeat(host, lease_ttl)

    def host_report(host_id: str, field: str, shape: type[Report]) -> list[Report]:
        """The `field` list of a host's full report, every item of `shape` and of that host, which has a lease."""
        body = _body()
        if not isinstance(body, dict) or not isinstance(body.get(field), list):
            raise BadRequest(f'the body must be {{"{field}": [...]}}')
        items = [parse(shape, item) for item in body[field]]
        if any(item.host_id != host_id for item in items):
            raise BadRequest(f"every item of the {field} report must have host_id {host_id!r}")
        if not directory.host_known(host_id):
            raise NotFound(f"host {host_id} has no lease: send its heartbeat first")
        return items

    @route("/v1/hosts/<host_id>/endpoints", ["PUT"], write=True)
    def report(host_id: str) -> None:
        directory.replace_host_endpoints(host_id, host_report(host_id, "endpoints", Endpoint))

    @route("/v1/endpoints", ["GET"])
    def endpoints() -> dict[str, Any]:
        return {"endpoints": [vars(e) for e in directory.endpoints(request.args.get("network"))]}

    @route("/v1/endpoints/<endpoint_id>", ["PUT"], write=True)
    def put_endpoint(endpoint_id: str) -> None:
        endpoint = parse(Endpoint, _object_body(endpoint_id=endpoint_id))
        if not directory.host_known(endpoint.host_id):
            raise NotFound(f"host {endpoint.host_id} has no lease: send its heartbeat first")
        directory.put_endpoint(endpoint)

    @route("/v1/endpoints/<endpoint_id>", ["DELETE"], write=True)
    def delete_endpoint(endpoint_id: str) -> dict[str, Any]:
        return {"deleted": directory.delete_endpoint(endpoint_id)}

    @route("/v1/lookup", ["GET"])
    def lookup() -> dict[str, Any]:
        found = directory.lookup(_arg("network"), _arg("ip"))
        if found is None:
            raise NotFound(f"no endpoint {request.args['ip']} on network {request.args['network']}")
        return {"endpoint": vars(found[0]), "host": vars(found[1])}

    @route("/v1/listeners", ["PUT"], write=True)
    def put_listener() -> None:
        listener = parse(Listener, _body())
        if not directory.host_known(listener.host_id):
            raise NotFound(f"host {listener.host_id} has no lease: send its heartbeat first")
        directory.put_listener(listener)

    @route("/v1/listeners", ["DELETE"], write=True)
    def delete_listener() -> dict[str, Any]:
        listener = parse(Listener, _body())
        return {"deleted": directory.delete_listener(listener.network_id, listener.ip, listener.port, listener.kind)}

    @route("/v1/listeners", ["GET"])
    def find_listener() -> dict[str, Any]:
        """With no query, every listener; with network, ip, port and kind, that one listener."""
        if not request.args:
            return {"listeners": [vars(x) for x in directory.listeners()]}
        found = directory.listener(_arg("network"), _arg("ip"), _int_arg("port", low=1, high=65535), _arg("kind"))
        if found is None:
            raise NotFound("no such listener")
        return vars(found)

    @route("/v1/hosts/<host_id>/listeners", ["PUT"], write=True)
    def report_listeners(host_id: str) -> None:
        directory.replace_host_listeners(host_id, host_report(host_id, "listeners", Listener))

    @route("/v1/watch", ["GET"])
    def watch() -> dict[str, Any]:
        since = _int_arg("since", 0)
        wait = min(float(_int_arg("wait", 0, high=int(MAX_WATCH_WAIT))), MAX_WATCH_WAIT)

        def answer(wait: float) -> dict[str, Any]:
            revision, changes, reset = directory.changes_since(since, wait)
            return {"revision": revision, "changes": changes, "reset": reset}

        if not wait:
            return answer(0)
        if not watch_slots.acquire(blocking=False):
            # Every long-poll slot is taken: answer at once, and the watcher polls again in a while.
            return {**answer(0), "busy": True}
        long_polls.append(None)
        try:
            return answer(wait)
        finally:
            long_polls.pop()
            watch_slots.release()

    if expire_every:
        stop = threading.Event()
        app.extensions["freeflow.stop_expiry"] = stop  # setting it ends the expiry thread

        def expire_forever() -> None:
            # The leases in the store ran on while this orchestrator was away (a restart, a move to another
            # node): every host gets one whole lease to heartbeat to it before anyone is expired.
            if stop.wait(lease_ttl):
                return
            while not stop.wait(expire_every):
                try:
                    for host_id in directory.expire():
                        log.warning("host %s missed its heartbeats: its endpoints are removed", host_id)
                except OrchestratorError as exc:
                    log.warning("lease expiry failed (retrying): %s", exc)
                except Exception:
                    log.exception("lease expiry failed")
        threading.Thread(target=expire_forever, name="leases", daemon=True).start()

    return app
