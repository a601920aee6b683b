"""The etcd key layout of SPEC sections 1 and 2, in one place: paths, parsers, builders.

Inputs (read by the watcher) live under ``/lain/config``, ``/lain/deployd`` and
``/lain/swarm``; outputs (written by the elector) under ``/lain/networkd`` and, for the
leader jobs, back under ``/lain/config``. Every worker builds and parses keys here, never
by hand, so a layout question has one answer.

``classify(key)`` names the kind of an input key and returns its suffix; the parsers turn
a suffix into typed parts or raise ``KeyLayoutError`` with a reason.
"""

import ipaddress
import re
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# --- inputs (SPEC section 1) -----------------------------------------------------------

CONFIG_PREFIX = "/lain/config/"
VIPS_PREFIX = "/lain/config/vips/"
DOMAINS_PREFIX = "/lain/config/domains/"
DOMAIN_SERVERS_PREFIX = "/lain/config/domain_servers/"
STREAMROUTER_VIPPOOL = "/lain/config/streamrouter/vippool"
WHITELIST_IPS = "/lain/config/whitelist_ips"
WHITELIST_EX_PORTS_PREFIX = "/lain/config/whitelist_ex_ports/"
WHITELIST_IN_PORTS_PREFIX = "/lain/config/whitelist_in_ports/"
POD_GROUPS_PREFIX = "/lain/deployd/pod_groups/"
DEPLOYD_LEADER = "/lain/deployd/leader"
SWARM_LEADER = "/lain/swarm/docker/swarm/leader"

# --- outputs (SPEC section 2) ----------------------------------------------------------

NETWORKD_PREFIX = "/lain/networkd/"
VIP_LOCKS_PREFIX = "/lain/networkd/vips/"
VIP_LOCK_SUFFIX = ".lock"
LEADER = "/lain/networkd/leader"
APPS_PREFIX = "/lain/networkd/apps/"
# Presence of a live node (value: hostname), bound to the node lease: fair spreading
# counts only nodes that are alive. Written once per lease, never in steady state.
NODES_PREFIX = "/lain/networkd/nodes/"
# Each node's VIP health verdicts (value: JSON {ip: [state, detail]}), bound to its lease,
# written when a verdict changes: how every node (and `networkdctl vip list`) sees FAILING.
HEALTH_PREFIX = "/lain/networkd/health/"
# A planned move in progress (value: JSON {"from": node, "to": node or ""}), bound to the
# lease of the node that asked for it.
MOVES_PREFIX = "/lain/networkd/moves/"
TINYDNS_FQDNS_PREFIX = "/lain/config/tinydns_fqdns/"
DEPLOYD_DOMAIN = "/lain/config/domains/deployd.lain"
SWARM_DOMAIN = "/lain/config/domains/swarm.lain"

# --- kinds of input keys (what the watcher reads) --------------------------------------

KIND_VIP = "vip"
KIND_DOMAIN = "domain"
KIND_DOMAIN_SERVERS = "domain_servers"
KIND_POD_GROUP = "pod_group"
KIND_LEADER = "leader"
KIND_STREAMROUTER = "streamrouter"
KIND_WHITELIST_IPS = "whitelist_ips"
KIND_WHITELIST_EX_PORTS = "whitelist_ex_ports"
KIND_WHITELIST_IN_PORTS = "whitelist_in_ports"
KIND_APPS = "apps"

# Leader keys by name (the item keys of ``state.leaders``).
LEADER_KEYS = {"deployd": DEPLOYD_LEADER, "swarm": SWARM_LEADER}
LEADER_NAMES = {path: name for name, path in LEADER_KEYS.items()}


class WatchRange(NamedTuple):
    """One range the watcher reads and watches: a prefix, or one exact key."""

    key: str
    prefix: bool


# Everything the watcher reads. ``/lain/config/`` covers vips, domains, domain servers,
# the streamrouter pool and the ACL keys in one range; unknown keys there are ignored.
WATCH_RANGES: Tuple[WatchRange, ...] = (
    WatchRange(CONFIG_PREFIX, True),
    WatchRange(POD_GROUPS_PREFIX, True),
    WatchRange(DEPLOYD_LEADER, False),
    WatchRange(SWARM_LEADER, False),
    WatchRange(APPS_PREFIX, True),
)


class KeyLayoutError(ValueError):
    """A key under one of our prefixes whose shape is wrong; the message says why."""


def classify(key: str) -> Optional[Tuple[str, str]]:
    """``(kind, suffix)`` for an input key, None for a key networkd does not read.

    The suffix is what follows the kind's prefix (for exact keys: the key itself).
    """
    if key.startswith(CONFIG_PREFIX):
        if key.startswith(VIPS_PREFIX):
            return KIND_VIP, key[len(VIPS_PREFIX) :]
        if key.startswith(DOMAINS_PREFIX):
            return KIND_DOMAIN, key[len(DOMAINS_PREFIX) :]
        if key.startswith(DOMAIN_SERVERS_PREFIX):
            return KIND_DOMAIN_SERVERS, key[len(DOMAIN_SERVERS_PREFIX) :]
        if key == STREAMROUTER_VIPPOOL:
            return KIND_STREAMROUTER, key
        if key == WHITELIST_IPS:
            return KIND_WHITELIST_IPS, key
        if key.startswith(WHITELIST_EX_PORTS_PREFIX):
            return KIND_WHITELIST_EX_PORTS, key[len(WHITELIST_EX_PORTS_PREFIX) :]
        if key.startswith(WHITELIST_IN_PORTS_PREFIX):
            return KIND_WHITELIST_IN_PORTS, key[len(WHITELIST_IN_PORTS_PREFIX) :]
        return None
    if key.startswith(POD_GROUPS_PREFIX):
        return KIND_POD_GROUP, key[len(POD_GROUPS_PREFIX) :]
    if key in LEADER_NAMES:
        return KIND_LEADER, key
    if key.startswith(APPS_PREFIX):
        return KIND_APPS, key[len(APPS_PREFIX) :]
    return None


# --- addresses and ports ---------------------------------------------------------------


def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address (no zone, no brackets); raises KeyLayoutError."""
    if not isinstance(text, str) or not text or "%" in text or text.strip() != text:
        raise KeyLayoutError(f"not an IP address: {text!r}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise KeyLayoutError(f"not an IP address: {text!r}") from None


def parse_port(text: str) -> int:
    """A port number 1..65535 written in decimal digits; raises KeyLayoutError."""
    if not text.isdigit() or not text.isascii() or len(text) > 5 or not 0 < int(text) < 65536:
        raise KeyLayoutError(f"not a port in 1..65535: {text!r}")
    return int(text)


def split_ip_port(text: str) -> Tuple[str, int]:
    """``ip:port`` or ``[v6]:port`` into (normalised ip, port); raises KeyLayoutError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise KeyLayoutError(f"expected ip:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise KeyLayoutError(f"IPv6 address needs brackets in ip:port: {text!r}")
    return str(parse_ip(host)), parse_port(port_text)


def join_ip_port(ip: str, port: int) -> str:
    """The inverse of ``split_ip_port``: IPv6 addresses get brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- /lain/config/vips -----------------------------------------------------------------


class VipKey(NamedTuple):
    """A parsed VIP key suffix: ``port`` 0 for a floating VIP, else a port-only mapping."""

    ip: str
    port: int

    @property
    def floating(self) -> bool:
        return self.port == 0


def parse_vip_suffix(suffix: str) -> VipKey:
    """``<ip>`` (floating) or ``<ip>:<port>`` / ``[<v6>]:<port>`` (port-only).

    A suffix that is a whole IPv6 address is a floating VIP even if it ends in ``:<digits>``;
    IPv6 port-only keys use brackets.
    """
    try:
        ip = parse_ip(suffix)
    except KeyLayoutError:
        pass
    else:
        if ip.is_unspecified or ip.is_multicast:
            raise KeyLayoutError(f"a floating VIP must be a unicast address: {suffix!r}")
        return VipKey(str(ip), 0)
    if ":" not in suffix:
        raise KeyLayoutError(f"VIP key is neither <ip> nor <ip>:<port>: {suffix!r}")
    ip_text, port = split_ip_port(suffix)
    return VipKey(ip_text, port)


def vip_key(ip: str, port: int = 0) -> str:
    """``/lain/config/vips/<ip>`` or, with a port, ``/lain/config/vips/<ip>:<port>``."""
    return VIPS_PREFIX + (join_ip_port(ip, port) if port else ip)


def vip_item_key(ip: str, port: int = 0) -> str:
    """The item key of ``state.vips``: the VIP key suffix."""
    return join_ip_port(ip, port) if port else ip


def vip_lock(ip: str) -> str:
    """``/lain/networkd/vips/<ip>.lock``: the lock of floating VIP ``ip``."""
    return f"{VIP_LOCKS_PREFIX}{ip}{VIP_LOCK_SUFFIX}"


def parse_vip_lock(key: str) -> Optional[str]:
    """The VIP of a lock key, or None if ``key`` is not a well-formed lock key."""
    if not key.startswith(VIP_LOCKS_PREFIX) or not key.endswith(VIP_LOCK_SUFFIX):
        return None
    text = key[len(VIP_LOCKS_PREFIX) : -len(VIP_LOCK_SUFFIX)]
    try:
        return str(parse_ip(text))
    except KeyLayoutError:
        return None


# --- domains ---------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalize_domain(text: str, allow_wildcard: bool = False) -> str:
    """Lower-case a DNS name and check it (labels of 1-63 letters, digits, ``-``, ``_``).

    With ``allow_wildcard`` the name may be ``*.suffix`` (one-label suffixes included).
    A trailing dot is dropped. Raises KeyLayoutError.
    """
    name = text.lower()
    if name.endswith(".") and name != ".":
        name = name[:-1]
    body = name
    if allow_wildcard and name.startswith("*."):
        body = name[2:]
    if not body or len(body) > 253:
        raise KeyLayoutError(f"not a DNS name: {text!r}")
    for label in body.split("."):
        if not _LABEL.match(label):
            raise KeyLayoutError(f"not a DNS name: {text!r} (bad label {label!r})")
    return name


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def domain_key(name: str) -> str:
    """``/lain/config/domains/<name>`` (``name`` may be ``*.suffix``)."""
    return DOMAINS_PREFIX + name


def domain_servers_key(domain: str) -> str:
    """``/lain/config/domain_servers/<domain>``."""
    return DOMAIN_SERVERS_PREFIX + domain


def tinydns_fqdn_key(name: str) -> str:
    """``/lain/config/tinydns_fqdns/<name>``."""
    return TINYDNS_FQDNS_PREFIX + name


# --- ACL -------------------------------------------------------------------------------

ACL_WHITELIST_IPS = "whitelist_ips"


def acl_item_key(kind: str, suffix: str) -> str:
    """Item key of ``state.acl``: ``whitelist_ips``, ``ex_ports/<proto>``, ``in_ports/<src>``."""
    if kind == KIND_WHITELIST_IPS:
        return ACL_WHITELIST_IPS
    if kind == KIND_WHITELIST_EX_PORTS:
        return f"ex_ports/{suffix}"
    return f"in_ports/{suffix}"


def whitelist_ex_ports_key(proto: str) -> str:
    return WHITELIST_EX_PORTS_PREFIX + proto


def whitelist_in_ports_key(source: str) -> str:
    return WHITELIST_IN_PORTS_PREFIX + source


# --- pod groups ------------------------------------------------------------------------


class PodGroupKey(NamedTuple):
    app: str
    podgroup: str


def parse_pod_group_suffix(suffix: str) -> PodGroupKey:
    """``<app>/<podgroup>``; raises KeyLayoutError for any other depth."""
    parts = suffix.split("/")
    if len(parts) != 2 or not all(parts):
        raise KeyLayoutError(
            f"expected /lain/deployd/pod_groups/<app>/<podgroup>, got suffix {suffix!r}"
        )
    return PodGroupKey(parts[0], parts[1])


def pod_group_key(app: str, podgroup: str) -> str:
    return f"{POD_GROUPS_PREFIX}{app}/{podgroup}"


def proc_item_key(app: str, proc: str) -> str:
    """Item key of ``state.containers`` and ``state.proc_nodes``: ``<app>/<proc>``."""
    return f"{app}/{proc}"


# --- leaders ---------------------------------------------------------------------------


def leader_name(key: str) -> Optional[str]:
    """``deployd`` or ``swarm`` for a leader key, else None."""
    return LEADER_NAMES.get(key)


# --- /lain/networkd/apps ---------------------------------------------------------------


class AppsKeyParts(NamedTuple):
    app: str
    proc: str
    ip: str
    port: int


def apps_key(app: str, proc: str, ip: str, port: int) -> str:
    """``/lain/networkd/apps/<app>/<proc>/<ip>:<port>``."""
    return f"{APPS_PREFIX}{app}/{proc}/{join_ip_port(ip, port)}"


def apps_prefix(app: str, proc: str) -> str:
    """``/lain/networkd/apps/<app>/<proc>/``: the range of one proc's apps keys."""
    return f"{APPS_PREFIX}{app}/{proc}/"


def parse_apps_suffix(suffix: str) -> AppsKeyParts:
    """``<app>/<proc>/<ip>:<port>``; raises KeyLayoutError."""
    parts = suffix.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise KeyLayoutError(
            f"expected /lain/networkd/apps/<app>/<proc>/<ip>:<port>, got suffix {suffix!r}"
        )
    ip, port = split_ip_port(parts[2])
    return AppsKeyParts(parts[0], parts[1], ip, port)


def apps_item_key(app: str, proc: str, ip: str, port: int) -> str:
    """Item key of ``state.apps``: the key suffix ``<app>/<proc>/<ip>:<port>``."""
    return f"{app}/{proc}/{join_ip_port(ip, port)}"


def parse_apps_key(key: str) -> Optional[AppsKeyParts]:
    """The parts of a full apps key, or None when it is not one."""
    if not key.startswith(APPS_PREFIX):
        return None
    try:
        return parse_apps_suffix(key[len(APPS_PREFIX) :])
    except KeyLayoutError:
        return None


def prefix_range_end(prefix: str) -> bytes:
    """The etcd ``range_end`` of a prefix range: the prefix with its last byte + 1."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


def all_input_prefixes() -> List[str]:
    return [r.key for r in WATCH_RANGES]


# --- /lain/networkd/health and /lain/networkd/moves ------------------------------------


def health_key(hostname: str) -> str:
    return HEALTH_PREFIX + hostname


def move_key(ip: str) -> str:
    return MOVES_PREFIX + ip


class Move(NamedTuple):
    """A planned move of a VIP: away from ``source``, to ``target`` ("": any other node)."""

    source: str
    target: str


def parse_move(text: str) -> Optional[Move]:
    """The move a ``/lain/networkd/moves/<ip>`` value asks for, None when malformed."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    source, target = data.get("from"), data.get("to", "")
    if not isinstance(source, str) or not source or not isinstance(target, str):
        return None
    return Move(source, target)


def encode_move(move: Move) -> str:
    import json

    return json.dumps({"from": move.source, "to": move.target}, sort_keys=True)


def parse_health_report(text: str) -> Dict[str, Tuple[str, str]]:
    """A node's ``/lain/networkd/health/<node>`` value: {ip: (state, detail)}; whatever does
    not parse is left out (another node wrote it: never trusted further than this)."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: Dict[str, Tuple[str, str]] = {}
    for ip, entry in data.items():
        if (
            isinstance(ip, str)
            and isinstance(entry, list)
            and len(entry) == 2
            and all(isinstance(x, str) for x in entry)
        ):
            out[ip] = (entry[0][:16], entry[1][:200])
    return out


def encode_health_report(report: Dict[str, Tuple[str, str]]) -> str:
    import json

    return json.dumps({ip: list(v) for ip, v in sorted(report.items())}, sort_keys=True)


# --- /lain/networkd/networks: container networks (SPEC section 10) ---------------------
#
#   networks/<net>                   the network: subnet, mode, gateway, block size
#   networks/<net>/hosts/<host>      a host that uses it: pool references, Docker networks
#   networks/<net>/blocks/<block>    a block of the pool owned by one host (persistent)
#   networks/<net>/addresses/<ip>    one allocated address: host, endpoint
#   networks/<net>/routes/<host>     the host's next-hop address, bound to its lease
#
# ``<net>`` and ``<block>`` are CIDRs with ``-`` for ``/`` (``10.50.0.0-16``).

NETWORKS_PREFIX = "/lain/networkd/networks/"
NET_HOSTS = "hosts"
NET_BLOCKS = "blocks"
NET_ADDRESSES = "addresses"
NET_ROUTES = "routes"
NET_SUBKINDS = (NET_HOSTS, NET_BLOCKS, NET_ADDRESSES, NET_ROUTES)


def cidr_name(cidr: str) -> str:
    """``10.50.0.0/16`` -> ``10.50.0.0-16``: a CIDR as one key segment (and a pool ID)."""
    return cidr.replace("/", "-")


def cidr_of_name(name: str) -> str:
    """The inverse of ``cidr_name``; raises KeyLayoutError when it is not a CIDR."""
    address, sep, length = name.rpartition("-")
    if not sep or not length.isdigit():
        raise KeyLayoutError(f"not a CIDR key segment: {name!r}")
    try:
        network = ipaddress.ip_network(f"{address}/{length}", strict=True)
    except ValueError as exc:
        raise KeyLayoutError(f"not a CIDR key segment: {name!r} ({exc})") from None
    return str(network)


def network_key(net: str) -> str:
    """``/lain/networkd/networks/<net>``: the network record."""
    return NETWORKS_PREFIX + net


def network_prefix(net: str) -> str:
    """Every key below the network record (not the record itself)."""
    return f"{NETWORKS_PREFIX}{net}/"


def network_sub_prefix(net: str, kind: str) -> str:
    return f"{NETWORKS_PREFIX}{net}/{kind}/"


def network_host_key(net: str, host: str) -> str:
    return network_sub_prefix(net, NET_HOSTS) + host


def network_block_key(net: str, block: str) -> str:
    return network_sub_prefix(net, NET_BLOCKS) + cidr_name(block)


def network_address_key(net: str, ip: str) -> str:
    return network_sub_prefix(net, NET_ADDRESSES) + ip


def network_route_key(net: str, host: str) -> str:
    return network_sub_prefix(net, NET_ROUTES) + host


class NetworkKey(NamedTuple):
    """A parsed key under ``/lain/networkd/networks/``: ``kind`` "" is the network record;
    ``name`` is the host, block CIDR or address (already parsed)."""

    net: str
    kind: str
    name: str


def parse_network_key(key: str) -> NetworkKey:
    """Split a key under NETWORKS_PREFIX; raises KeyLayoutError naming what is wrong."""
    if not key.startswith(NETWORKS_PREFIX):
        raise KeyLayoutError(f"not under {NETWORKS_PREFIX}: {key!r}")
    parts = key[len(NETWORKS_PREFIX) :].split("/")
    net = parts[0]
    cidr_of_name(net)
    if len(parts) == 1:
        return NetworkKey(net, "", "")
    if len(parts) != 3 or parts[1] not in NET_SUBKINDS or not parts[2]:
        raise KeyLayoutError(
            f"expected {NETWORKS_PREFIX}<net>[/hosts|blocks|addresses|routes/<name>], got {key!r}"
        )
    kind, name = parts[1], parts[2]
    if kind == NET_BLOCKS:
        name = cidr_of_name(name)
    elif kind == NET_ADDRESSES:
        name = str(parse_ip(name))
    else:
        name = parse_hostname(name)
    return NetworkKey(net, kind, name)


_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def parse_hostname(text: str) -> str:
    """A node name as used in keys: letters, digits, ``.``, ``-``, ``_``; raises KeyLayoutError."""
    if not _HOSTNAME.match(text):
        raise KeyLayoutError(f"not a host name: {text!r}")
    return text
