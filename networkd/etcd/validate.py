"""Validation of every etcd value of SPEC section 1 into the typed bus messages.

``validate(key, value)`` never raises: it returns a ``Parsed`` whose ``error`` lists every
problem of the value, each prefixed by the field it concerns (``ports[0].src: ...``), or
the typed item. A rejected value is absent from the state: the state is a function of
what etcd holds, the same on every node and after every restart.

Decisions where SPEC section 1 leaves room:
- Ports may be JSON numbers or decimal strings (the Go daemon wrote strings).
- ``proto`` is case-insensitive; missing, null or ``""`` means ``tcp``.
- Domain ``ips``: entries that are not IP addresses are dropped (SPEC), not an error.
- Pod groups may be up to 1 MiB (deployd embeds ``docker inspect`` output per container);
  every other value up to 64 KiB.
- Unknown extra fields in a value are ignored (forward compatibility).
"""

import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from networkd import keys
from networkd.bus.messages import (
    AclList,
    AppsKey,
    DomainEntry,
    DomainServers,
    HealthCheck,
    LeaderAddress,
    LocalContainer,
    PortSpec,
    StreamrouterPool,
    VipConfig,
)

log = logging.getLogger("networkd.etcd")

MAX_VALUE_BYTES = 64 * 1024
MAX_POD_GROUP_BYTES = 1024 * 1024
PROTOS = ("tcp", "udp")
DOMAIN_TYPES = ("", "node", "webrouter")
DEFAULT_DNS_PORT = 53


@dataclass
class PodGroupInfo:
    """A validated pod group: every placed container of one proc (any node)."""

    app: str
    proc: str
    containers: List[LocalContainer] = field(default_factory=list)


@dataclass
class Parsed:
    """The outcome for one key: an item (or None: nothing to publish) or an error."""

    kind: str
    item_key: str = ""
    item: Any = None
    error: str = ""
    # A part of an accepted value that was rejected alone (a VIP's bad ``health`` object:
    # the VIP works without a check); shown as a config error under the same key.
    warning: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Problems:
    """Collects every problem of one value; ``reason`` joins them."""

    def __init__(self) -> None:
        self.items: List[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def reason(self) -> str:
        return "; ".join(self.items)


class _Rejected(Exception):
    """Stops validating a value whose shape makes going on pointless."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_text(value: bytes, limit: int, problems: Problems) -> str:
    if len(value) > limit:
        problems.add("value", f"too large: {len(value)} bytes (limit {limit})")
        raise _Rejected
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add("value", f"not valid UTF-8 at byte {exc.start}")
        raise _Rejected


def decode_json(value: bytes, problems: Problems, limit: int = MAX_VALUE_BYTES) -> Any:
    text = decode_text(value, limit, problems)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        problems.add("value", "JSON nested too deeply")
    except ValueError as exc:
        problems.add("value", f"not valid JSON: {exc}")
    raise _Rejected


def _object(value: Any, where: str, problems: Problems) -> Dict[str, Any]:
    if not isinstance(value, dict):
        problems.add(where, f"expected a JSON object, got {_type_name(value)}")
        raise _Rejected
    return value


def _string(
    obj: Dict[str, Any], name: str, where: str, problems: Problems, required: bool = True
) -> str:
    value = obj.get(name)
    path = f"{where}{name}"
    if value is None:
        if required:
            problems.add(path, "missing")
        return ""
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {_type_name(value)}")
        return ""
    if required and not value.strip():
        problems.add(path, "empty")
    return value


def _optional_list(value: Any, path: str, problems: Problems) -> Optional[List[Any]]:
    """None and a missing value give []; a non-list is a problem (None returned)."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, f"expected a list, got {_type_name(value)}")
        return None
    return value


def parse_port_value(value: Any, path: str, problems: Problems) -> int:
    """A port from a JSON number or a decimal string; 0 and a problem when bad."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        problems.add(path, f"expected a port number, got {_type_name(value)}")
        return 0
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii() or len(text) > 5:
            problems.add(path, f"not a port number: {value!r}")
            return 0
        value = int(text)
    if not 0 < value < 65536:
        problems.add(path, f"port {value} out of range 1..65535")
        return 0
    return value


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _ip(text: Any, path: str, problems: Problems) -> str:
    if not isinstance(text, str):
        problems.add(path, f"expected an IP address string, got {_type_name(text)}")
        return ""
    try:
        return str(keys.parse_ip(text.strip()))
    except keys.KeyLayoutError:
        problems.add(path, f"not an IP address: {text!r}")
        return ""


# --- health checks (SPEC section 9) ----------------------------------------------------

HEALTH_TYPES = ("tcp", "http")
LOCAL_HEALTH_TYPES = ("tcp", "http", "exec")
MAX_COMMAND_ARGS = 64


def _number(
    obj: Dict[str, Any],
    name: str,
    default: float,
    bounds: Tuple[float, float],
    where: str,
    problems: Problems,
) -> float:
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(where + name, f"expected a number, got {_type_name(value)}")
        return default
    if not bounds[0] <= value <= bounds[1]:
        problems.add(where + name, f"{value} out of range {bounds[0]:g}..{bounds[1]:g}")
        return default
    return float(value)


def parse_health(
    raw: Any, problems: Problems, local: bool = False, where: str = "health."
) -> Optional[HealthCheck]:
    """A health check object: from a VIP's etcd value (``tcp``, ``http``), or, with
    ``local``, from a node's own check file (also ``exec`` with its ``command``). Checks that
    run a command never come from etcd: any value writer would run code on every node."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add(where.rstrip(".") or "value", f"expected a JSON object, got {_type_name(raw)}")
        return None
    allowed = LOCAL_HEALTH_TYPES if local else HEALTH_TYPES
    kind = raw.get("type")
    if not isinstance(kind, str) or kind.strip().lower() not in allowed:
        extra = "; exec checks come only from check files of the node" if not local else ""
        problems.add(where + "type", f"expected one of {', '.join(allowed)}, got {kind!r}{extra}")
        return None
    kind = kind.strip().lower()
    port = (
        0
        if _absent(raw.get("port"))
        else parse_port_value(raw.get("port"), where + "port", problems)
    )
    interval = _number(raw, "interval", 1.0, (0.1, 3600.0), where, problems)
    timeout = _number(raw, "timeout", min(1.0, interval), (0.05, 3600.0), where, problems)
    fall = int(_number(raw, "fall", 3, (1, 100), where, problems))
    rise = int(_number(raw, "rise", 2, (1, 100), where, problems))
    path = "/"
    expect = [200]
    command: List[str] = []
    if kind == "http":
        path = _string(raw, "path", where, problems, required=False) or "/"
        if not path.startswith("/") or len(path) > 1024 or not path.isprintable() or " " in path:
            problems.add(where + "path", f"expected an absolute URL path, got {path!r}")
        codes = _optional_list(raw.get("expect"), where + "expect", problems)
        if codes:
            expect = []
            for i, code in enumerate(codes):
                if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                    problems.add(
                        f"{where}expect[{i}]", f"expected an HTTP status code, got {code!r}"
                    )
                else:
                    expect.append(code)
    if kind == "exec":
        args = raw.get("command")
        if (
            not isinstance(args, list)
            or not args
            or len(args) > MAX_COMMAND_ARGS
            or not all(isinstance(a, str) and a and "\0" not in a for a in args)
        ):
            problems.add(where + "command", "expected a list of strings: program and arguments")
        elif not args[0].startswith("/"):
            problems.add(
                where + "command", f"the program must be an absolute path, got {args[0]!r}"
            )
        else:
            command = list(args)
    if problems:
        return None
    return HealthCheck(
        type=kind,
        port=port,
        path=path,
        expect=expect,
        interval=interval,
        timeout=timeout,
        fall=fall,
        rise=rise,
        command=command,
    )


# --- per kind --------------------------------------------------------------------------


def _vip(suffix: str, value: bytes, problems: Problems) -> Parsed:
    try:
        vip = keys.parse_vip_suffix(suffix)
    except keys.KeyLayoutError as exc:
        problems.add("key", str(exc))
        raise _Rejected
    item_key = keys.vip_item_key(vip.ip, vip.port)
    obj = _object(decode_json(value, problems), "value", problems)
    app = _string(obj, "app", "", problems)
    proc = _string(obj, "proc", "", problems)
    ports: List[PortSpec] = []
    raw_ports = obj.get("ports")
    if raw_ports is None:
        problems.add("ports", "missing")
    elif not isinstance(raw_ports, list):
        problems.add("ports", f"expected a list, got {_type_name(raw_ports)}")
    else:
        seen: Dict[str, int] = {}
        for i, raw in enumerate(raw_ports):
            where = f"ports[{i}]"
            if not isinstance(raw, dict):
                problems.add(where, f"expected a JSON object, got {_type_name(raw)}")
                continue
            count = len(problems.items)
            src_value = raw.get("src")
            if _absent(src_value):
                if vip.floating:
                    problems.add(f"{where}.src", "missing")
                src = vip.port
            else:
                src = parse_port_value(src_value, f"{where}.src", problems)
            proto_value = raw.get("proto")
            proto = "tcp"
            if not _absent(proto_value):
                if not isinstance(proto_value, str):
                    problems.add(
                        f"{where}.proto", f"expected a string, got {_type_name(proto_value)}"
                    )
                elif proto_value.strip().lower() not in PROTOS:
                    problems.add(f"{where}.proto", f"unknown protocol {proto_value!r} (tcp or udp)")
                else:
                    proto = proto_value.strip().lower()
            dest_value = raw.get("dest")
            dest = (
                src
                if _absent(dest_value)
                else parse_port_value(dest_value, f"{where}.dest", problems)
            )
            if len(problems.items) != count:
                continue
            ident = f"{src}/{proto}"
            if ident in seen:
                problems.add(where, f"duplicate port {ident} (also ports[{seen[ident]}])")
                continue
            seen[ident] = i
            ports.append(PortSpec(src=src, proto=proto, dest=dest))
    excluded: List[str] = []
    raw_excluded = _optional_list(obj.get("excluded_nodes"), "excluded_nodes", problems)
    for i, node in enumerate(raw_excluded or []):
        if not isinstance(node, str) or not node.strip():
            problems.add(f"excluded_nodes[{i}]", f"expected a node name, got {node!r}")
        else:
            excluded.append(node.strip())
    if problems:
        raise _Rejected
    health_problems = Problems()
    health = parse_health(obj.get("health"), health_problems)
    warning = ""
    if health_problems:
        warning = f"{health_problems.reason} (the VIP works without a check)"
    elif health is not None and not vip.floating:
        warning = "health: only floating VIPs are checked (ignored on a port-only key)"
        health = None
    return Parsed(
        keys.KIND_VIP,
        item_key,
        VipConfig(
            ip=vip.ip,
            app=app.strip(),
            proc=proc.strip(),
            ports=ports,
            excluded_nodes=excluded,
            port=vip.port,
            health=health,
        ),
        warning=warning,
    )


def _domain(suffix: str, value: bytes, problems: Problems) -> Parsed:
    try:
        name = keys.normalize_domain(suffix, allow_wildcard=True)
    except keys.KeyLayoutError as exc:
        problems.add("key", str(exc))
        raise _Rejected
    obj = _object(decode_json(value, problems), "value", problems)
    ips: List[str] = []
    raw_ips = _optional_list(obj.get("ips"), "ips", problems)
    dropped: List[Any] = []
    for raw in raw_ips or []:
        try:
            ip = str(keys.parse_ip(raw.strip())) if isinstance(raw, str) else ""
        except keys.KeyLayoutError:
            ip = ""
        if not ip:
            dropped.append(raw)
        elif ip not in ips:
            ips.append(ip)
    kind = obj.get("type")
    if kind is None:
        kind = ""
    if not isinstance(kind, str):
        problems.add("type", f"expected a string, got {_type_name(kind)}")
    elif kind.strip().lower() not in DOMAIN_TYPES:
        problems.add("type", f"unknown type {kind!r} (expected '', 'node' or 'webrouter')")
    if problems:
        raise _Rejected
    if dropped:
        log.debug("domain ips dropped name=%s dropped=%r", name, dropped[:5])
    return Parsed(
        keys.KIND_DOMAIN, name, DomainEntry(name=name, ips=ips, type=str(kind).strip().lower())
    )


def parse_server(text: Any, path: str, problems: Problems) -> str:
    """``ip#port`` (or ``ip``, port 53) normalised to ``ip#port``; "" and a problem if bad."""
    if not isinstance(text, str):
        problems.add(path, f"expected 'ip#port', got {_type_name(text)}")
        return ""
    host, sep, port_text = text.strip().partition("#")
    count = len(problems.items)
    ip = _ip(host, path, problems)
    port = parse_port_value(port_text, path, problems) if sep else DEFAULT_DNS_PORT
    if len(problems.items) != count:
        return ""
    return f"{ip}#{port}"


def _domain_servers(suffix: str, value: bytes, problems: Problems) -> Parsed:
    try:
        domain = keys.normalize_domain(suffix)
    except keys.KeyLayoutError as exc:
        problems.add("key", str(exc))
        raise _Rejected
    data = decode_json(value, problems)
    if data is None:
        return Parsed(keys.KIND_DOMAIN_SERVERS, domain, None)
    obj = _object(data, "value", problems)
    raw_servers = _optional_list(obj.get("servers"), "servers", problems)
    servers: List[str] = []
    for i, raw in enumerate(raw_servers or []):
        server = parse_server(raw, f"servers[{i}]", problems)
        if server and server not in servers:
            servers.append(server)
    if problems:
        raise _Rejected
    if not servers:  # null or empty: no override
        return Parsed(keys.KIND_DOMAIN_SERVERS, domain, None)
    return Parsed(keys.KIND_DOMAIN_SERVERS, domain, DomainServers(domain=domain, servers=servers))


def _int_field(
    obj: Dict[str, Any], name: str, path: str, problems: Problems, default: int = 0
) -> int:
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"expected an integer, got {_type_name(value)}")
        return default
    return value


def _pod_group(suffix: str, value: bytes, problems: Problems) -> Parsed:
    try:
        keys.parse_pod_group_suffix(suffix)
    except keys.KeyLayoutError as exc:
        problems.add("key", str(exc))
        raise _Rejected
    obj = _object(decode_json(value, problems, MAX_POD_GROUP_BYTES), "value", problems)
    spec = _object(obj.get("Spec"), "Spec", problems)
    app = _string(spec, "Namespace", "Spec.", problems).strip()
    name = _string(spec, "Name", "Spec.", problems).strip()
    proc = name.rsplit(".", 1)[-1]
    if name and not proc:
        problems.add("Spec.Name", f"no proc after the last dot: {name!r}")
    containers: List[LocalContainer] = []
    raw_pods = _optional_list(obj.get("Pods"), "Pods", problems)
    for i, raw_pod in enumerate(raw_pods or []):
        where = f"Pods[{i}]"
        if not isinstance(raw_pod, dict):
            problems.add(where, f"expected a JSON object, got {_type_name(raw_pod)}")
            continue
        instance = _int_field(raw_pod, "InstanceNo", f"{where}.InstanceNo", problems)
        if instance < 0:
            problems.add(f"{where}.InstanceNo", f"negative: {instance}")
        raw_containers = _optional_list(raw_pod.get("Containers"), f"{where}.Containers", problems)
        for j, raw in enumerate(raw_containers or []):
            cwhere = f"{where}.Containers[{j}]"
            if not isinstance(raw, dict):
                problems.add(cwhere, f"expected a JSON object, got {_type_name(raw)}")
                continue
            count = len(problems.items)
            cid = _string(raw, "Id", f"{cwhere}.", problems, required=False)
            node_name = _string(raw, "NodeName", f"{cwhere}.", problems, required=False).strip()
            node_ip_text = _string(raw, "NodeIp", f"{cwhere}.", problems, required=False).strip()
            cip_text = _string(raw, "ContainerIp", f"{cwhere}.", problems, required=False).strip()
            node_ip = _ip(node_ip_text, f"{cwhere}.NodeIp", problems) if node_ip_text else ""
            cip = _ip(cip_text, f"{cwhere}.ContainerIp", problems) if cip_text else ""
            port = _int_field(raw, "ContainerPort", f"{cwhere}.ContainerPort", problems)
            if not 0 <= port < 65536:
                problems.add(f"{cwhere}.ContainerPort", f"port {port} out of range 0..65535")
            if len(problems.items) != count or not node_name:
                continue  # not placed yet (no node): nothing to run here
            containers.append(
                LocalContainer(
                    app=app,
                    proc=proc,
                    instance_no=instance,
                    container_id=cid,
                    container_ip=cip,
                    container_port=port,
                    node_name=node_name,
                    node_ip=node_ip,
                )
            )
    if problems:
        raise _Rejected
    item_key = keys.proc_item_key(app, proc)
    return Parsed(
        keys.KIND_POD_GROUP, item_key, PodGroupInfo(app=app, proc=proc, containers=containers)
    )


def _plain_text(value: bytes, problems: Problems) -> str:
    """A raw text value, or a JSON string (both forms exist in the wild)."""
    text = decode_text(value, MAX_VALUE_BYTES, problems).strip()
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError as exc:
            problems.add("value", f"not valid JSON: {exc}")
            raise _Rejected
        if not isinstance(decoded, str):
            problems.add("value", f"expected a string, got {_type_name(decoded)}")
            raise _Rejected
        text = decoded.strip()
    return text


def _leader(key: str, value: bytes, problems: Problems) -> Parsed:
    name = keys.leader_name(key) or key
    text = _plain_text(value, problems)
    try:
        ip, port = keys.split_ip_port(text)
    except keys.KeyLayoutError as exc:
        problems.add("value", str(exc))
        raise _Rejected
    return Parsed(keys.KIND_LEADER, name, LeaderAddress(name=name, ip=ip, port=port))


def _ip_list(data: Any, problems: Problems) -> List[str]:
    raw = _optional_list(data, "value", problems)
    out: List[str] = []
    for i, item in enumerate(raw or []):
        ip = _ip(item, f"value[{i}]", problems)
        if ip and ip not in out:
            out.append(ip)
    return out


def _streamrouter(key: str, value: bytes, problems: Problems) -> Parsed:
    ips = _ip_list(decode_json(value, problems), problems)
    if problems:
        raise _Rejected
    return Parsed(keys.KIND_STREAMROUTER, "pool", StreamrouterPool(ips=ips))


def parse_source(text: Any, path: str, problems: Problems) -> str:
    """An ACL source: an IP, a CIDR (host bits allowed) or a range ``a-b``; normalised."""
    if not isinstance(text, str):
        problems.add(path, f"expected an IP, CIDR or range, got {_type_name(text)}")
        return ""
    text = text.strip()
    if "-" in text:
        first, _, last = text.partition("-")
        count = len(problems.items)
        a = _ip(first, path, problems)
        b = _ip(last, path, problems)
        if len(problems.items) != count:
            return ""
        ipa, ipb = ipaddress.ip_address(a), ipaddress.ip_address(b)
        if ipa.version != ipb.version or int(ipa) > int(ipb):
            problems.add(path, f"not an address range: {text!r}")
            return ""
        return f"{a}-{b}"
    try:
        if "/" in text:
            if "%" in text:  # a zone (fe80::%eth0/64) means nothing to iptables
                raise ValueError(text)
            return str(ipaddress.ip_network(text, strict=False))
        return str(keys.parse_ip(text))
    except (ValueError, keys.KeyLayoutError):
        problems.add(path, f"not an IP, CIDR or range: {text!r}")
        return ""


def parse_acl_port(value: Any, path: str, problems: Problems) -> str:
    """A port or a range ``a:b`` as iptables multiport takes it."""
    if isinstance(value, str) and ":" in value:
        first, _, last = value.partition(":")
        count = len(problems.items)
        a = parse_port_value(first, path, problems)
        b = parse_port_value(last, path, problems)
        if len(problems.items) != count:
            return ""
        if a > b:
            problems.add(path, f"empty port range {value!r}")
            return ""
        return f"{a}:{b}"
    port = parse_port_value(value, path, problems)
    return str(port) if port else ""


def _port_list(data: Any, where: str, problems: Problems) -> List[str]:
    raw = _optional_list(data, where, problems)
    out: List[str] = []
    for i, item in enumerate(raw or []):
        port = parse_acl_port(item, f"{where}[{i}]", problems)
        if port and port not in out:
            out.append(port)
    return out


def _acl(kind: str, suffix: str, value: bytes, problems: Problems) -> Parsed:
    if kind == keys.KIND_WHITELIST_IPS:
        raw = _optional_list(decode_json(value, problems), "value", problems)
        items: List[str] = []
        for i, item in enumerate(raw or []):
            source = parse_source(item, f"value[{i}]", problems)
            if source and source not in items:
                items.append(source)
        if problems:
            raise _Rejected
        return Parsed(
            kind, keys.ACL_WHITELIST_IPS, AclList(key=keys.ACL_WHITELIST_IPS, items=items)
        )
    if kind == keys.KIND_WHITELIST_EX_PORTS:
        proto = suffix.lower()
        if proto not in PROTOS:
            problems.add("key", f"unknown protocol {suffix!r} (tcp or udp)")
        ports = _port_list(decode_json(value, problems), "value", problems)
        if problems:
            raise _Rejected
        item_key = keys.acl_item_key(kind, proto)
        return Parsed(kind, item_key, AclList(key=item_key, items=ports))
    # whitelist_in_ports/<source>
    source = parse_source(suffix, "key", problems)
    obj = _object(decode_json(value, problems), "value", problems)
    raw_ports = obj.get("ports")
    by_proto: Dict[str, List[str]] = {}
    if raw_ports is not None and not isinstance(raw_ports, dict):
        problems.add("ports", f"expected an object of proto: [ports], got {_type_name(raw_ports)}")
    for proto_name, port_values in (
        sorted((raw_ports or {}).items()) if isinstance(raw_ports, dict) else []
    ):
        proto = proto_name.lower()
        if proto not in PROTOS:
            problems.add(f"ports.{proto_name}", "unknown protocol (tcp or udp)")
            continue
        ports = _port_list(port_values, f"ports.{proto_name}", problems)
        if ports:
            by_proto[proto] = ports
    if problems:
        raise _Rejected
    item_key = keys.acl_item_key(kind, source)
    return Parsed(kind, item_key, AclList(key=item_key, ports=by_proto))


def _apps(suffix: str, value: bytes, problems: Problems) -> Parsed:
    try:
        parts = keys.parse_apps_suffix(suffix)
    except keys.KeyLayoutError as exc:
        problems.add("key", str(exc))
        raise _Rejected
    node = _plain_text(value, problems)
    if not node:
        problems.add("value", "empty node name")
    elif len(node) > 253 or any(c.isspace() or not c.isprintable() for c in node):
        problems.add("value", f"not a node name: {node[:80]!r}")
    if problems:
        raise _Rejected
    item_key = keys.apps_item_key(parts.app, parts.proc, parts.ip, parts.port)
    return Parsed(
        keys.KIND_APPS,
        item_key,
        AppsKey(app=parts.app, proc=parts.proc, ip=parts.ip, port=parts.port, node=node),
    )


_BY_SUFFIX: Dict[str, Callable[[str, bytes, Problems], Parsed]] = {
    keys.KIND_VIP: _vip,
    keys.KIND_DOMAIN: _domain,
    keys.KIND_DOMAIN_SERVERS: _domain_servers,
    keys.KIND_POD_GROUP: _pod_group,
    keys.KIND_LEADER: _leader,
    keys.KIND_STREAMROUTER: _streamrouter,
    keys.KIND_APPS: _apps,
}


def validate(key: str, value: bytes) -> Optional[Parsed]:
    """Validate one etcd key and value; None when networkd does not read the key.

    Never raises: anything unexpected becomes an error naming the failure.
    """
    found = keys.classify(key)
    if found is None:
        return None
    kind, suffix = found
    problems = Problems()
    try:
        if not isinstance(value, (bytes, bytearray)):
            problems.add("value", f"expected bytes, got {type(value).__name__}")
            raise _Rejected
        value = bytes(value)
        if kind in (
            keys.KIND_WHITELIST_IPS,
            keys.KIND_WHITELIST_EX_PORTS,
            keys.KIND_WHITELIST_IN_PORTS,
        ):
            parsed = _acl(kind, suffix, value, problems)
        else:
            parsed = _BY_SUFFIX[kind](suffix, value, problems)
        if problems:  # defensive: a parser that collected problems but did not stop
            return Parsed(kind, error=problems.reason)
        return parsed
    except _Rejected:
        return Parsed(kind, error=problems.reason or "value: rejected")
    except Exception as exc:  # a validator bug must not take the watcher down
        log.exception("validation failed unexpectedly key=%s", key)
        return Parsed(kind, error=f"value: cannot validate ({type(exc).__name__}: {exc})")
