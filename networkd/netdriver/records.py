"""The values under ``/lain/networkd/networks/``: typed records, validated here only.

Every key is parsed alone (``parse(key, value)``): a key or value that does not validate
is rejected with a reason naming the field and treated as absent, the rest is used. The
same dataclasses are rendered back to JSON by ``render`` so what is written is what is
read.

Values (JSON):

- ``<net>``: ``{"subnet": "10.50.0.0/16", "block": 26, "mode": "routed", "ipvlan_mode":
  "", "gateway": "10.50.0.1"}``; ``mode`` and ``gateway`` are empty until the first
  host's Docker creates the network and asks for its gateway.
- ``<net>/hosts/<host>``: ``{"refs": 1, "docker": {"<docker network id>": {"parent":
  "eth0", "name": "n1"}}, "since": 1700000000.0}``: ``refs`` counts the host's pool
  references (Docker's RequestPool / ReleasePool).
- ``<net>/blocks/<block>``: ``{"host": "node1"}``.
- ``<net>/addresses/<ip>``: ``{"host": "node1", "kind": "container", "endpoint": "<id>",
  "since": 1700000000.0}``; kind ``gateway`` has no host: it belongs to the network.
- ``<net>/routes/<host>``: ``{"address": "10.77.0.11"}``, bound to the host's lease.
"""

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

from networkd import keys
from networkd.json_object import load_object

MAX_VALUE_BYTES = 64 * 1024
MODES = ("macvlan", "ipvlan", "routed")
IPVLAN_MODES = ("l2", "l3")
ADDRESS_KINDS = ("container", "gateway", "aux")
_DOCKER_ID = re.compile(r"^[0-9a-f]{64}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,14}$")


class RecordError(ValueError):
    """A value that does not validate; the message names the field."""


def check_docker_id(text: Any, what: str) -> str:
    """Docker's network and endpoint IDs: 64 lower-case hex digits."""
    if not isinstance(text, str) or not _DOCKER_ID.match(text):
        raise RecordError(f"{what}: expected a Docker ID (64 hex digits), got {text!r}")
    return text


def check_ifname(text: Any, what: str) -> str:
    """A Linux interface name: 1-15 characters, no ``/`` or white space."""
    if not isinstance(text, str) or not _IFNAME.match(text):
        raise RecordError(f"{what}: not an interface name: {text!r}")
    return text


def check_ipv4(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise RecordError(f"{what}: expected an IPv4 address, got {text!r}")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise RecordError(f"{what}: not an IPv4 address: {text!r}") from None


@dataclass(frozen=True)
class NetworkRecord:
    net: str
    subnet: str
    block: int
    mode: str = ""
    ipvlan_mode: str = ""
    gateway: str = ""

    @property
    def routed(self) -> bool:
        return self.mode == "routed"

    @property
    def borrow(self) -> bool:
        """L2 modes may hand out addresses of other hosts' blocks (see ipam)."""
        return self.mode != "routed" and not (self.mode == "ipvlan" and self.ipvlan_mode == "l3")


@dataclass(frozen=True)
class DockerNetwork:
    parent: str = ""
    name: str = ""


@dataclass(frozen=True)
class HostRecord:
    net: str
    host: str
    refs: int
    docker: Dict[str, DockerNetwork] = field(default_factory=dict)
    since: float = 0.0


@dataclass(frozen=True)
class BlockRecord:
    net: str
    block: str
    host: str


@dataclass(frozen=True)
class AddressRecord:
    net: str
    ip: str
    kind: str
    host: str = ""
    endpoint: str = ""
    since: float = 0.0


@dataclass(frozen=True)
class RouteRecord:
    net: str
    host: str
    address: str


Record = Union[NetworkRecord, HostRecord, BlockRecord, AddressRecord, RouteRecord]


def _object(value: bytes) -> Dict[str, Any]:
    try:
        return load_object(value, MAX_VALUE_BYTES)
    except ValueError as exc:
        raise RecordError(str(exc)) from None


def _str(data: Dict[str, Any], name: str, default: Optional[str] = None) -> str:
    value = data.get(name, default)
    if value is None:
        raise RecordError(f"{name}: missing")
    if not isinstance(value, str):
        raise RecordError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _number(data: Dict[str, Any], name: str, default: float = 0.0) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _network(net: str, data: Dict[str, Any]) -> NetworkRecord:
    subnet = _str(data, "subnet")
    if subnet != keys.cidr_of_name(net):
        raise RecordError(f"subnet: {subnet!r} does not match the key {net!r}")
    pool = ipaddress.ip_network(subnet)
    block = data.get("block")
    if isinstance(block, bool) or not isinstance(block, int):
        raise RecordError(f"block: expected a prefix length, got {block!r}")
    if not pool.prefixlen <= block <= 32:
        raise RecordError(f"block: /{block} does not fit {subnet}")
    mode = _str(data, "mode", "")
    if mode and mode not in MODES:
        raise RecordError(f"mode: unknown mode {mode!r}")
    ipvlan_mode = _str(data, "ipvlan_mode", "")
    if ipvlan_mode and ipvlan_mode not in IPVLAN_MODES:
        raise RecordError(f"ipvlan_mode: unknown {ipvlan_mode!r}")
    gateway = _str(data, "gateway", "")
    if gateway and ipaddress.IPv4Address(check_ipv4(gateway, "gateway")) not in pool:
        raise RecordError(f"gateway: {gateway} is not in {subnet}")
    return NetworkRecord(net, subnet, block, mode, ipvlan_mode, gateway)


def _host(net: str, host: str, data: Dict[str, Any]) -> HostRecord:
    refs = data.get("refs")
    if isinstance(refs, bool) or not isinstance(refs, int) or refs < 0:
        raise RecordError(f"refs: expected a count, got {refs!r}")
    docker_raw = data.get("docker", {})
    if not isinstance(docker_raw, dict):
        raise RecordError("docker: expected an object")
    docker = {}
    for docker_id, info in docker_raw.items():
        check_docker_id(docker_id, "docker")
        if not isinstance(info, dict):
            raise RecordError(f"docker.{docker_id[:12]}: expected an object")
        parent = _str(info, "parent", "")
        if parent:
            check_ifname(parent, f"docker.{docker_id[:12]}.parent")
        docker[docker_id] = DockerNetwork(parent=parent, name=_str(info, "name", ""))
    return HostRecord(net, host, refs, docker, _number(data, "since"))


def _address(net: str, ip: str, data: Dict[str, Any]) -> AddressRecord:
    kind = _str(data, "kind", "container")
    if kind not in ADDRESS_KINDS:
        raise RecordError(f"kind: unknown {kind!r}")
    host = _str(data, "host", "")
    if host:
        keys.parse_hostname(host)
    elif kind != "gateway":
        raise RecordError("host: missing")
    endpoint = _str(data, "endpoint", "")
    if endpoint:
        check_docker_id(endpoint, "endpoint")
    if ipaddress.ip_address(ip) not in ipaddress.ip_network(keys.cidr_of_name(net)):
        raise RecordError(f"address {ip} is not in the network's subnet")
    return AddressRecord(net, ip, kind, host, endpoint, _number(data, "since"))


def parse(key: str, value: bytes) -> Record:
    """The typed record of one key; raises RecordError naming the problem."""
    try:
        parts = keys.parse_network_key(key)
        data = _object(value)
        if parts.kind == "":
            return _network(parts.net, data)
        if parts.kind == keys.NET_HOSTS:
            return _host(parts.net, parts.name, data)
        if parts.kind == keys.NET_BLOCKS:
            block = ipaddress.ip_network(parts.name)
            if not block.subnet_of(ipaddress.ip_network(keys.cidr_of_name(parts.net))):  # type: ignore[arg-type]
                raise RecordError(f"block {parts.name} is not in the network's subnet")
            return BlockRecord(parts.net, parts.name, keys.parse_hostname(_str(data, "host")))
        if parts.kind == keys.NET_ADDRESSES:
            return _address(parts.net, parts.name, data)
        return RouteRecord(parts.net, parts.name, check_ipv4(_str(data, "address"), "address"))
    except keys.KeyLayoutError as exc:
        raise RecordError(str(exc)) from None


def render(record: Record) -> Tuple[str, str]:
    """(key, JSON value) of a record: the only place values are written from."""
    body: Dict[str, Any]
    if isinstance(record, NetworkRecord):
        key = keys.network_key(record.net)
        body = {
            "subnet": record.subnet,
            "block": record.block,
            "mode": record.mode,
            "ipvlan_mode": record.ipvlan_mode,
            "gateway": record.gateway,
        }
    elif isinstance(record, HostRecord):
        key = keys.network_host_key(record.net, record.host)
        body = {
            "refs": record.refs,
            "docker": {
                k: {"parent": v.parent, "name": v.name} for k, v in sorted(record.docker.items())
            },
            "since": record.since,
        }
    elif isinstance(record, BlockRecord):
        key = keys.network_block_key(record.net, record.block)
        body = {"host": record.host}
    elif isinstance(record, AddressRecord):
        key = keys.network_address_key(record.net, record.ip)
        body = {"host": record.host, "kind": record.kind, "endpoint": record.endpoint}
        body["since"] = record.since
    else:
        key = keys.network_route_key(record.net, record.host)
        body = {"address": record.address}
    return key, json.dumps(body, sort_keys=True, separators=(",", ":"))
