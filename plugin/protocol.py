"""Message shapes of Docker's remote NetworkDriver protocol, declared once for parsing, answering and tests.

Each request dataclass maps attributes to Docker's wire names through field metadata; `parse` validates a
decoded JSON body against it and `to_wire` builds the body Docker would send.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Self, TypeVar

from freeflow.plugin.errors import BadRequest

# Local network and endpoint IDs are 64 hex digits; swarm network IDs are 25 characters of [0-9a-z].
_ID = re.compile(r"[0-9a-z]{12,64}")
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")


def _id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise BadRequest(f"{name} must be a Docker ID (12 to 64 characters of [0-9a-z]), got {value!r}")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, got {type(value).__name__}")
    return value


def _cidr(name: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    try:
        ipaddress.ip_interface(_text(name, value))
    except ValueError:
        raise BadRequest(f"{name} must be an address in CIDR form such as 10.1.0.2/24, got {value!r}") from None
    return value


def _mac(name: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _MAC.fullmatch(value.lower()):
        raise BadRequest(f"{name} must be a MAC address such as 02:42:0a:01:00:02, got {value!r}")
    if int(value[:2], 16) & 1 or value.lower() == "00:00:00:00:00:00":
        raise BadRequest(f"{name} must be a unicast MAC address (even first byte, not all zeros), got {value!r}")
    return value.lower()


def _object(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _wire(name: str, check: Any, default: Any = MISSING) -> Any:
    """A dataclass field carried on the wire as `name` and validated by `check(name, value)`."""
    metadata = {"wire": name, "check": check}
    if default is MISSING:
        return field(metadata=metadata)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


M = TypeVar("M", bound="Message")


class Message:
    """Parsing and serialising shared by every request shape."""

    @classmethod
    def parse(cls, body: Any, where: str = "the request body") -> Self:
        """The message in `body`; BadRequest naming the field (`where` names a nested message)."""
        if not isinstance(body, dict):
            raise BadRequest(f"{where} must be a JSON object, got {type(body).__name__}")
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            wire = f.metadata["wire"]
            if wire in body:
                values[f.name] = f.metadata["check"](wire, body[wire])
            elif f.default is MISSING and f.default_factory is MISSING:
                raise BadRequest(f"{where} has no {wire}")
        return cls(**values)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = [v.to_wire() if isinstance(v, Message) else v for v in value]
            out[f.metadata["wire"]] = value
        return out


@dataclass(frozen=True)
class IPAMData(Message):
    """One address pool of a network, as IPAM assigned it (gateway in CIDR form)."""

    pool: str = _wire("Pool", _cidr)
    gateway: str = _wire("Gateway", _cidr, "")
    address_space: str = _wire("AddressSpace", _text, "")
    aux_addresses: dict[str, Any] = _wire("AuxAddresses", _object, {})


def _ipam_list(name: str, value: Any) -> list[IPAMData]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list, got {type(value).__name__}")
    return [IPAMData.parse(item, f"{name}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True)
class CreateNetworkRequest(Message):
    network_id: str = _wire("NetworkID", _id)
    options: dict[str, Any] = _wire("Options", _object, {})
    ipv4: list[IPAMData] = _wire("IPv4Data", _ipam_list, [])
    ipv6: list[IPAMData] = _wire("IPv6Data", _ipam_list, [])

    @property
    def generic_options(self) -> dict[str, Any]:
        """The `-o key=value` options of `docker network create`."""
        return _object("com.docker.network.generic", self.options.get("com.docker.network.generic"))


@dataclass(frozen=True)
class NetworkRequest(Message):
    """DeleteNetwork and FreeNetwork."""

    network_id: str = _wire("NetworkID", _id)


@dataclass(frozen=True)
class EndpointInterface(Message):
    address: str = _wire("Address", _cidr, "")
    address_ipv6: str = _wire("AddressIPv6", _cidr, "")
    mac_address: str = _wire("MacAddress", _mac, "")


def _interface(name: str, value: Any) -> EndpointInterface:
    return EndpointInterface.parse(_object(name, value), name)


@dataclass(frozen=True)
class CreateEndpointRequest(Message):
    network_id: str = _wire("NetworkID", _id)
    endpoint_id: str = _wire("EndpointID", _id)
    interface: EndpointInterface = _wire("Interface", _interface, EndpointInterface())
    options: dict[str, Any] = _wire("Options", _object, {})

    def to_wire(self) -> dict[str, Any]:
        out = super().to_wire()
        out["Interface"] = self.interface.to_wire()
        return out


@dataclass(frozen=True)
class EndpointRequest(Message):
    """DeleteEndpoint, EndpointOperInfo, Leave and RevokeExternalConnectivity."""

    network_id: str = _wire("NetworkID", _id)
    endpoint_id: str = _wire("EndpointID", _id)


@dataclass(frozen=True)
class JoinRequest(Message):
    network_id: str = _wire("NetworkID", _id)
    endpoint_id: str = _wire("EndpointID", _id)
    sandbox_key: str = _wire("SandboxKey", _text)
    options: dict[str, Any] = _wire("Options", _object, {})


@dataclass(frozen=True)
class ExternalConnectivityRequest(Message):
    """ProgramExternalConnectivity."""

    network_id: str = _wire("NetworkID", _id)
    endpoint_id: str = _wire("EndpointID", _id)
    options: dict[str, Any] = _wire("Options", _object, {})


def _discovery_type(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class DiscoveryRequest(Message):
    """DiscoverNew and DiscoverDelete: type 1 is a node joining or leaving ({"Address", "Self"})."""

    discovery_type: int = _wire("DiscoveryType", _discovery_type)
    data: dict[str, Any] = _wire("DiscoveryData", _object, {})


@dataclass(frozen=True)
class AllocateNetworkRequest(Message):
    network_id: str = _wire("NetworkID", _id)
    options: dict[str, Any] = _wire("Options", _object, {})
    ipv4: list[IPAMData] = _wire("IPv4Data", _ipam_list, [])
    ipv6: list[IPAMData] = _wire("IPv6Data", _ipam_list, [])


# Answers.

@dataclass(frozen=True)
class JoinResponse:
    src_name: str
    dst_prefix: str = "eth"

    def to_wire(self) -> dict[str, Any]:
        # No gateway: dockerd then attaches the container to docker_gwbridge for outside access.
        return {
            "InterfaceName": {"SrcName": self.src_name, "DstPrefix": self.dst_prefix},
            "Gateway": "",
            "StaticRoutes": [],
            "DisableGatewayService": False,
        }


@dataclass(frozen=True)
class CreateEndpointResponse:
    mac_address: str = ""

    def to_wire(self) -> dict[str, Any]:
        # Only fields that came empty may be returned; the MAC is the one we fill in.
        return {"Interface": {"MacAddress": self.mac_address}} if self.mac_address else {}
