"""Shapes of the orchestrator API, declared once: parsed and validated from JSON, used by both sides."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from freeflow.orchestrator.errors import BadRequest

_ID = re.compile(r"[0-9a-zA-Z][0-9a-zA-Z_.-]{0,127}")
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
LISTENER_KINDS = ("graft", "channel")

T = TypeVar("T")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _check(name: str, value: Any, kind: str) -> Any:
    if kind == "id":
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise BadRequest(f"{name} must be 1 to 128 characters of [0-9A-Za-z_.-], got {value!r}")
    elif kind == "ip":
        if not isinstance(value, str) or not _is_ipv4(value):  # IPv4Address alone takes a number too
            raise BadRequest(f"{name} must be an IPv4 address, got {value!r}")
    elif kind == "mac":
        if not isinstance(value, str) or not _MAC.fullmatch(value):
            raise BadRequest(f"{name} must be a lower-case MAC address, got {value!r}")
    elif kind == "port":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise BadRequest(f"{name} must be a port number, got {value!r}")
    elif kind == "bool" and not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    elif kind == "listener" and value not in LISTENER_KINDS:
        raise BadRequest(f"{name} must be one of {', '.join(LISTENER_KINDS)}, got {value!r}")
    return value


def parse(cls: type[T], body: Any) -> T:
    """An instance of dataclass `cls` from a JSON object, each field checked by the kind in its metadata."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    unknown = set(body) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in body:
            raise BadRequest(f"the body has no {f.name}")
        values[f.name] = _check(f.name, body[f.name], f.metadata["kind"])
    return cls(**values)


def _field(kind: str) -> Any:
    return field(metadata={"kind": kind})


@dataclass(frozen=True)
class Host:
    host_id: str = _field("id")
    address: str = _field("ip")
    rdma: bool = _field("bool")


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str = _field("id")
    network_id: str = _field("id")
    ip: str = _field("ip")
    mac: str = _field("mac")
    host_id: str = _field("id")


@dataclass(frozen=True)
class Listener:
    network_id: str = _field("id")
    ip: str = _field("ip")
    port: int = _field("port")
    kind: str = _field("listener")
    host_id: str = _field("id")

    @property
    def key(self) -> str:
        return listener_key(self.network_id, self.ip, self.port, self.kind)


def listener_key(network_id: str, ip: str, port: int, kind: str) -> str:
    """How changes name a listener: network/ip/port/kind."""
    return f"{network_id}/{ip}/{port}/{kind}"
