"""Client of the router's admin socket: `freeflow status`, with container names from Docker."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

from freeflow.config.settings import Settings
from freeflow.router.errors import RouterUnavailable

log = logging.getLogger(__name__)


def ask_router(settings: Settings, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    path = f"{settings.state_dir}/router.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise RouterUnavailable(f"the router does not answer on {path}: {exc.strerror or exc}") from None
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise RouterUnavailable(answer["error"])
    return answer


def _container_names() -> dict[str, str]:
    """Sandbox key -> container name, from Docker (empty when Docker cannot be asked)."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        return {c.attrs["NetworkSettings"]["SandboxKey"]: c.name for c in client.containers.list()}
    except Exception as exc:  # noqa: BLE001 - status still shows sandboxes without Docker's names
        log.info("container names unavailable: %s", exc)
        return {}


def print_status(settings: Settings, as_json: bool = False) -> int:
    answer = ask_router(settings, {"op": "status"})
    if as_json:
        print(json.dumps(answer, indent=2))
        return 0
    names = _container_names()
    for sandbox, info in answer["sandboxes"].items():
        print(f"{names.get(sandbox, sandbox)}")
        for ep in info["endpoints"]:
            print(f"  endpoint {ep['endpoint']}  network {ep['network']}  {ep['ip']}")
        for conn in info["connections"]:
            print(f"  {conn['path']:8} {conn['local']:>21} -> {conn['remote']}")
        for ch in info.get("channels", []):
            moved = ("bytes moved unknown (made before the router restarted)" if ch["bytes_moved"] is None
                     else f"{ch['bytes_moved']} B moved")
            print(f"  channel  {ch['client']:>21} -> {ch['server']}  rings {ch['ring_size']} B, {moved}, {ch['path']}")
    return 0
