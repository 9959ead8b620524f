"""The Flask application of Docker's remote NetworkDriver protocol: parse, call the driver, answer JSON.

Docker sends `POST /<Interface>.<Method>` without a Content-Type and sometimes with an empty body, so
bodies are decoded here by hand. Failures answer {"Err": message}; unknown methods answer 404, other paths and
HTTP methods 404 or 405, bodies over MAX_BODY 413, all in JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from freeflow.plugin import protocol as p
from freeflow.plugin.driver import Driver
from freeflow.plugin.errors import BadRequest, DriverError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 4 << 20  # bytes; dockerd's largest calls (CreateNetwork with labels) are a few KiB


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=CONTENT_TYPE)


def _body() -> Any:
    """The request's JSON body ({} when empty), with MAX_BODY as a hard limit kept here: Werkzeug's
    MAX_CONTENT_LENGTH misses chunked bodies, and Debian's 2.2 (the image's) applies it to forms only."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY:
        raise RequestEntityTooLarge()
    try:  # (the plugin's worker read the body already, under its deadline: http_worker.py)
        raw = request.stream.read(MAX_BODY + 1)
    except ClientDisconnected:  # Werkzeug's word for a body shorter than its Content-Length
        raise BadRequest(f"the request body ended before the {declared} bytes it declared") from None
    if len(raw) > MAX_BODY:
        raise RequestEntityTooLarge()
    if declared is not None and len(raw) < declared:
        raise BadRequest(f"the request body ended after {len(raw)} bytes, before the {declared} bytes it declared")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadRequest("the request body nests JSON too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _handlers(driver: Driver) -> dict[str, Callable[[Any], dict[str, Any]]]:
    """Each protocol method: body in, answer out."""

    def none(call: Callable[[Any], Any], shape: type[p.Message]) -> Callable[[Any], dict[str, Any]]:
        def handle(body: Any) -> dict[str, Any]:
            call(shape.parse(body))
            return {}
        return handle

    def discovery(new: bool) -> Callable[[Any], dict[str, Any]]:
        def handle(body: Any) -> dict[str, Any]:
            req = p.DiscoveryRequest.parse(body)
            log.info("discovery %s, type %d: %s", "new" if new else "deleted", req.discovery_type, req.data)
            if new:
                driver.discover(req)
            return {}
        return handle

    return {
        "Plugin.Activate": lambda body: {"Implements": ["NetworkDriver"]},
        "NetworkDriver.GetCapabilities": lambda body: driver.capabilities(),
        "NetworkDriver.CreateNetwork": none(driver.create_network, p.CreateNetworkRequest),
        "NetworkDriver.DeleteNetwork": none(driver.delete_network, p.NetworkRequest),
        "NetworkDriver.AllocateNetwork": lambda body: driver.allocate_network(p.AllocateNetworkRequest.parse(body)),
        "NetworkDriver.FreeNetwork": none(lambda req: log.info("freed swarm network %s", req.network_id[:12]),
                                          p.NetworkRequest),
        "NetworkDriver.CreateEndpoint": lambda body: driver.create_endpoint(
            p.CreateEndpointRequest.parse(body)).to_wire(),
        "NetworkDriver.DeleteEndpoint": none(driver.delete_endpoint, p.EndpointRequest),
        "NetworkDriver.EndpointOperInfo": lambda body: driver.endpoint_info(p.EndpointRequest.parse(body)),
        "NetworkDriver.Join": lambda body: driver.join(p.JoinRequest.parse(body)).to_wire(),
        "NetworkDriver.Leave": none(driver.leave, p.EndpointRequest),
        "NetworkDriver.DiscoverNew": discovery(new=True),
        "NetworkDriver.DiscoverDelete": discovery(new=False),  # the address stays the VXLAN source of its networks
        # Published ports and outside access go through docker_gwbridge, which dockerd programs itself.
        "NetworkDriver.ProgramExternalConnectivity": none(
            lambda req: log.info("endpoint %s: outside access through docker_gwbridge", req.endpoint_id[:12]),
            p.ExternalConnectivityRequest),
        "NetworkDriver.RevokeExternalConnectivity": none(
            lambda req: log.info("endpoint %s: outside access revoked", req.endpoint_id[:12]), p.EndpointRequest),
    }


def create_app(driver: Driver) -> Flask:
    """The protocol application around `driver`."""
    app = Flask("freeflow.plugin")
    handlers = _handlers(driver)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        """Wrong method, path or size: answered in the protocol's JSON too, never an HTML page."""
        if exc.code == 413:
            message = f"the request body is larger than {MAX_BODY} bytes"
        else:
            message = f"{request.method} {request.path}: {exc.name} (the protocol is POST /<Interface>.<Method>)"
        log.warning("refused: %s", message)
        return _answer({"Err": message}, exc.code or 400)

    @app.post("/<method>")
    def call(method: str) -> Response:
        handler = handlers.get(method)
        if handler is None:
            return _answer({"Err": f"{method} is not implemented by the freeflow driver"}, 404)
        try:
            body = _body()
            log.debug("%s %s", method, body)
            return _answer(handler(body))
        except HTTPException:
            raise  # to http_error()
        except DriverError as exc:
            log.warning("%s refused: %s", method, exc)
            return _answer({"Err": str(exc)}, exc.status)
        except Exception:
            log.exception("%s failed", method)
            return _answer({"Err": f"{method} failed inside the freeflow plugin; see the plugin log"}, 500)

    return app
