"""Docker's remote network-driver and IPAM plugin protocol: the one module that reads
Docker's JSON.

Docker POSTs JSON to ``/Plugin.Activate``, ``/NetworkDriver.<Method>`` and
``/IpamDriver.<Method>``. ``parse(path, body)`` turns a request into either a ready
answer (the handshake, capabilities and the calls networkd has nothing to do for) or a
typed request of ``networkd.netdriver.messages`` for the netstore worker; ``answer``
renders the netstore's ``Reply`` as Docker's response.

Errors, as the protocol asks: an unknown path is ``NotFound`` (HTTP 404, which Docker
takes as "not implemented"); a body that is not JSON or has fields of the wrong shape is
``BadRequest`` (HTTP 400, with ``{"Err": ...}`` naming the field); a well-formed request
that cannot be done (an unknown mode, an unsupported option) is answered ``{"Err": ...}``
(``Refused``), and Docker shows that text to the user. (Docker's IPAM client reads the
field ``Error`` where its network-driver client reads ``Err``: errors carry both.)
"""

import ipaddress
import json
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from networkd.json_object import load_object
from networkd.netdriver import messages as m
from networkd.netdriver.records import (
    IPVLAN_MODES,
    MODES,
    RecordError,
    check_docker_id,
    check_ifname,
)

MAX_BODY = 1024 * 1024
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
GENERIC_OPTIONS = "com.docker.network.generic"
ADDRESS_TYPE = "RequestAddressType"
GATEWAY_TYPE = "com.docker.network.gateway"
DEFAULT_MODE = "routed"
NETWORK_OPTIONS = ("mode", "parent", "ipvlan_mode")
IPAM_OPTIONS = ("block",)
CONTAINER_PREFIX = "eth"
ROUTE_CONNECTED = 1


class ProtocolError(Exception):
    status = 500


class NotFound(ProtocolError):
    """No such plugin method (HTTP 404)."""

    status = 404


class BadRequest(ProtocolError):
    """Not JSON, or a field of the wrong shape (HTTP 400); the message names it."""

    status = 400


class Refused(ProtocolError):
    """Well-formed but cannot be done: answered ``{"Err": ...}`` with HTTP 200."""

    status = 200


Request = Union[
    m.RequestPool,
    m.ReleasePool,
    m.RequestAddress,
    m.ReleaseAddress,
    m.CreateNetwork,
    m.DeleteNetwork,
    m.CreateEndpoint,
    m.DeleteEndpoint,
    m.EndpointInfo,
    m.Join,
    m.Leave,
]
Parsed = Union[Request, Dict[str, Any]]


# --- reading fields ---------------------------------------------------------------------


def decode(body: bytes) -> Dict[str, Any]:
    """The JSON object of a request body (an empty body is ``{}``); raises BadRequest."""
    if not body.strip():
        return {}
    try:
        return load_object(body, MAX_BODY)
    except ValueError as exc:
        raise BadRequest(f"request body: {exc}") from None


def _field(data: Dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name}: missing")
        return kind()
    if kind is int and isinstance(value, bool):
        raise BadRequest(f"{name}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        raise BadRequest(f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _string_map(data: Dict[str, Any], name: str) -> Dict[str, str]:
    value = _field(data, name, dict, required=False)
    out = {}
    for key, item in value.items():
        if isinstance(item, (dict, list)) or item is None:
            raise BadRequest(f"{name}.{key}: expected a string, got {type(item).__name__}")
        out[str(key)] = item if isinstance(item, str) else json.dumps(item)
    return out


def _docker_id(data: Dict[str, Any], name: str) -> str:
    try:
        return check_docker_id(_field(data, name, str), name)
    except RecordError as exc:
        raise BadRequest(str(exc)) from None


def _ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise BadRequest(f"{what}: not an IPv4 address: {text!r}") from None


def _ipv4_interface(text: str, what: str) -> str:
    """``ip/prefix`` (Docker's form of an address on a network); "" stays ""."""
    if not text:
        return ""
    try:
        return ipaddress.IPv4Interface(text).with_prefixlen
    except ValueError:
        raise BadRequest(f"{what}: not an IPv4 address with prefix: {text!r}") from None


# --- one parser per forwarded method ---------------------------------------------------


def _request_pool(data: Dict[str, Any]) -> m.RequestPool:
    _field(data, "AddressSpace", str, required=False)
    pool = _field(data, "Pool", str, required=False)
    sub_pool = _field(data, "SubPool", str, required=False)
    options = _string_map(data, "Options")
    if _field(data, "V6", bool, required=False):
        raise Refused("IPv6 pools are not supported by networkd (IPv4 only)")
    if not pool:
        raise Refused("networkd IPAM needs the network's subnet: docker network create --subnet")
    try:
        net = ipaddress.ip_network(pool, strict=True)
    except ValueError as exc:
        raise Refused(f"Pool: not a subnet: {pool!r} ({exc})") from None
    if net.version != 4:
        raise Refused(f"IPv6 pools are not supported by networkd (IPv4 only): {pool}")
    if sub_pool:
        raise Refused("--ip-range is not supported: networkd hands out the whole subnet")
    unknown = sorted(set(options) - set(IPAM_OPTIONS))
    if unknown:
        raise Refused(f"unknown --ipam-opt {', '.join(unknown)} (known: {', '.join(IPAM_OPTIONS)})")
    return m.RequestPool(pool=str(net), options=options)


def _release_pool(data: Dict[str, Any]) -> m.ReleasePool:
    return m.ReleasePool(pool_id=_field(data, "PoolID", str))


def _request_address(data: Dict[str, Any]) -> m.RequestAddress:
    address = _field(data, "Address", str, required=False)
    options = _string_map(data, "Options")
    return m.RequestAddress(
        pool_id=_field(data, "PoolID", str),
        address=_ipv4(address, "Address") if address else "",
        gateway=options.get(ADDRESS_TYPE) == GATEWAY_TYPE,
    )


def _release_address(data: Dict[str, Any]) -> m.ReleaseAddress:
    return m.ReleaseAddress(
        pool_id=_field(data, "PoolID", str),
        address=_ipv4(_field(data, "Address", str), "Address"),
    )


def _create_network(data: Dict[str, Any]) -> m.CreateNetwork:
    docker_id = _docker_id(data, "NetworkID")
    options = _field(data, "Options", dict, required=False)
    generic = options.get(GENERIC_OPTIONS) or {}
    if not isinstance(generic, dict):
        raise BadRequest(f"Options.{GENERIC_OPTIONS}: expected an object")
    v4 = _field(data, "IPv4Data", list, required=False)
    if _field(data, "IPv6Data", list, required=False):
        raise Refused("IPv6 is not supported by networkd networks (IPv4 only)")
    if len(v4) != 1 or not isinstance(v4[0], dict):
        raise Refused(f"a networkd network has exactly one IPv4 subnet, got {len(v4)}")
    pool = _field(v4[0], "Pool", str)
    gateway = _field(v4[0], "Gateway", str, required=False)
    try:
        pool = str(ipaddress.ip_network(pool, strict=True))
    except ValueError:
        raise BadRequest(f"IPv4Data.Pool: not a subnet: {pool!r}") from None
    gateway = _ipv4_interface(gateway, "IPv4Data.Gateway").split("/")[0]
    for key, value in generic.items():
        if key not in NETWORK_OPTIONS:
            raise Refused(f"unknown option {key!r} (known: {', '.join(NETWORK_OPTIONS)})")
        if not isinstance(value, str):
            raise BadRequest(f"option {key}: expected a string, got {type(value).__name__}")
    mode = generic.get("mode") or DEFAULT_MODE
    if mode not in MODES:
        raise Refused(f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})")
    parent = generic.get("parent", "")
    ipvlan_mode = generic.get("ipvlan_mode", "")
    if mode == "routed" and parent:
        raise Refused("mode routed takes no parent: containers get a veth and host routes")
    if mode != "routed":
        if not parent:
            raise Refused(f"mode {mode} needs the parent interface: -o parent=<interface>")
        try:
            check_ifname(parent, "parent")
        except RecordError as exc:
            raise Refused(str(exc)) from None
    if ipvlan_mode and mode != "ipvlan":
        raise Refused(f"ipvlan_mode is an option of mode ipvlan, not {mode}")
    if mode == "ipvlan":
        ipvlan_mode = ipvlan_mode or "l2"
        if ipvlan_mode not in IPVLAN_MODES:
            raise Refused(f"unknown ipvlan_mode {ipvlan_mode!r} (expected l2 or l3)")
    return m.CreateNetwork(docker_id, pool, gateway, mode, parent, ipvlan_mode)


def _network_only(data: Dict[str, Any]) -> m.DeleteNetwork:
    return m.DeleteNetwork(docker_id=_docker_id(data, "NetworkID"))


def _ids(data: Dict[str, Any]) -> Tuple[str, str]:
    return _docker_id(data, "NetworkID"), _docker_id(data, "EndpointID")


def _create_endpoint(data: Dict[str, Any]) -> m.CreateEndpoint:
    docker_id, endpoint_id = _ids(data)
    interface = _field(data, "Interface", dict, required=False)
    address = _ipv4_interface(_field(interface, "Address", str, required=False), "Address")
    if _field(interface, "AddressIPv6", str, required=False):
        raise Refused("IPv6 is not supported by networkd networks (IPv4 only)")
    if not address:
        raise Refused(
            "the endpoint has no IPv4 address: create the network with --ipam-driver networkd"
        )
    return m.CreateEndpoint(docker_id, endpoint_id, address)


def _endpoint(cls: Callable[[str, str], Any]) -> Callable[[Dict[str, Any]], Any]:
    def parse_ids(data: Dict[str, Any]) -> Any:
        return cls(*_ids(data))

    return parse_ids


def _join(data: Dict[str, Any]) -> m.Join:
    _field(data, "SandboxKey", str, required=False)
    _field(data, "Options", dict, required=False)
    return m.Join(*_ids(data))


FORWARDED: Dict[str, Callable[[Dict[str, Any]], Request]] = {
    "/IpamDriver.RequestPool": _request_pool,
    "/IpamDriver.ReleasePool": _release_pool,
    "/IpamDriver.RequestAddress": _request_address,
    "/IpamDriver.ReleaseAddress": _release_address,
    "/NetworkDriver.CreateNetwork": _create_network,
    "/NetworkDriver.DeleteNetwork": _network_only,
    "/NetworkDriver.CreateEndpoint": _create_endpoint,
    "/NetworkDriver.DeleteEndpoint": _endpoint(m.DeleteEndpoint),
    "/NetworkDriver.EndpointOperInfo": _endpoint(m.EndpointInfo),
    "/NetworkDriver.Join": _join,
    "/NetworkDriver.Leave": _endpoint(m.Leave),
}


def _checked(*required: Tuple[str, type]) -> Callable[[Dict[str, Any]], None]:
    def check(data: Dict[str, Any]) -> None:
        for name, kind in required:
            _field(data, name, kind)

    return check


# Methods answered by netplugin itself: (fields to check, answer).
LOCAL: Dict[str, Tuple[Optional[Callable[[Dict[str, Any]], None]], Dict[str, Any]]] = {
    "/Plugin.Activate": (None, {"Implements": ["NetworkDriver", "IpamDriver"]}),
    "/NetworkDriver.GetCapabilities": (None, {"Scope": "local", "ConnectivityScope": "global"}),
    "/IpamDriver.GetCapabilities": (
        None,
        {"RequiresMACAddress": False, "RequiresRequestReplay": False},
    ),
    "/IpamDriver.GetDefaultAddressSpaces": (
        None,
        {"LocalDefaultAddressSpace": "networkd", "GlobalDefaultAddressSpace": "networkd"},
    ),
    "/NetworkDriver.DiscoverNew": (_checked(("DiscoveryType", int)), {}),
    "/NetworkDriver.DiscoverDelete": (_checked(("DiscoveryType", int)), {}),
    # Port publishing (-p) is not offered: VIPs are networkd's way in (docs/NETWORKS.md).
    "/NetworkDriver.ProgramExternalConnectivity": (
        _checked(("NetworkID", str), ("EndpointID", str)),
        {},
    ),
    "/NetworkDriver.RevokeExternalConnectivity": (
        _checked(("NetworkID", str), ("EndpointID", str)),
        {},
    ),
}

METHODS: List[str] = sorted(set(FORWARDED) | set(LOCAL))


def parse(path: str, body: bytes) -> Parsed:
    """A typed request for netstore, or the finished answer of a local method.

    Raises NotFound, BadRequest or Refused."""
    local = LOCAL.get(path)
    parser = FORWARDED.get(path)
    if local is None and parser is None:
        raise NotFound(f"no plugin method {path!r}")
    data = decode(body)
    if local is not None:
        check, answer_body = local
        if check is not None:
            check(data)
        return dict(answer_body)
    assert parser is not None
    return parser(data)


def method_name(path: str) -> str:
    """``/IpamDriver.RequestPool`` -> ``RequestPool`` (for logs and metrics)."""
    return path.rsplit(".", 1)[-1].lstrip("/")


def error_body(message: str) -> Dict[str, Any]:
    """The network-driver API reads ``Err``, the IPAM API ``Error``: both are sent."""
    return {"Err": message, "Error": message}


def answer(request: Request, reply: m.Reply) -> Dict[str, Any]:
    """Docker's response for ``request`` from the netstore's reply."""
    if reply.error:
        return error_body(reply.error)
    if isinstance(request, m.RequestPool):
        return {"PoolID": reply.pool_id, "Pool": reply.pool, "Data": {}}
    if isinstance(request, m.RequestAddress):
        return {"Address": reply.address, "Data": {}}
    if isinstance(request, m.EndpointInfo):
        return {"Value": dict(reply.info)}
    if isinstance(request, m.Join):
        routes = []
        if reply.gateway_on_link:
            # The gateway is not in the container's subnet (routed mode: an address of
            # the host side of its veth): a connected route to it first. Docker adds the
            # default route through it, so other networks of the container can coexist.
            routes.append({"Destination": f"{reply.gateway}/32", "RouteType": ROUTE_CONNECTED})
        return {
            "InterfaceName": {"SrcName": reply.ifname, "DstPrefix": CONTAINER_PREFIX},
            "Gateway": reply.gateway,
            "StaticRoutes": routes,
        }
    return {}
