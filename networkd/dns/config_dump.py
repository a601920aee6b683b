"""``GET /v1/dns/config``: the DNS data as text, in the Go daemon's format.

    # exact domains
    deployd.lain [10.0.0.2 10.0.0.3]

    # wildcard domains
    address=/lain/10.0.0.1

    # domain servers (tinydns)
    server=/lain/10.0.0.9:53

    # name servers (synchronized with /etc/resolv.conf)
    nameserver 10.0.0.53:53

Lines are sorted so the dump is stable. ``node`` and ``webrouter`` entries show the
addresses they stand for; /etc/hosts names are listed with the exact domains (etcd
wins for a name in both), as the Go daemon did.
"""

import socket
from typing import Callable, Dict, List, Mapping, Optional

from networkd.dns import forward
from networkd.dns.records import split_addresses, webrouter_ips
from networkd.dns.zone import DOMAIN_TYPES


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _valid_ips(ips: object) -> List[str]:
    if not isinstance(ips, (list, tuple)):
        return []
    v4, v6 = split_addresses([ip for ip in ips if isinstance(ip, str)])
    return [socket.inet_ntop(socket.AF_INET, p) for p in v4] + [
        socket.inet_ntop(socket.AF_INET6, p) for p in v6
    ]


def render(
    domains: Optional[Mapping[str, object]],
    domain_servers: Optional[Mapping[str, object]],
    upstreams: Optional[Mapping[str, object]],
    hosts: Optional[Mapping[str, object]] = None,
    vips: Optional[Mapping[str, object]] = None,
    node_address: str = "",
) -> str:
    """The dump, from the bus mirrors of state.domains (DomainEntry), state.domain_servers
    (DomainServers), state.upstreams (Upstreams), and optionally state.hosts (HostsEntry),
    state.vips (VipConfig) and the node address. A None mirror counts as empty."""
    exact: Dict[str, List[str]] = {}
    wildcard: Dict[str, List[str]] = {}
    for name, item in (hosts or {}).items():
        ips = _valid_ips(getattr(item, "ips", None))
        if ips:
            exact[str(getattr(item, "name", "") or name).lower()] = ips
    webrouter = webrouter_ips(vips)
    for name, item in (domains or {}).items():
        text = str(getattr(item, "name", "") or name).strip().lower().rstrip(".")
        kind = getattr(item, "type", "")
        if kind not in DOMAIN_TYPES:
            continue
        if kind == "node":
            ips = [node_address] if node_address else []
        elif kind == "webrouter":
            ips = list(webrouter)
        else:
            ips = _valid_ips(getattr(item, "ips", None))
            if not ips:
                continue
        if text.startswith("*."):
            wildcard[text[2:]] = ips
        else:
            exact[text] = ips
    lines = ["# exact domains"]
    for name in sorted(exact):
        lines.append(f"{name} [{' '.join(exact[name])}]")
    lines += ["", "# wildcard domains"]
    for suffix in sorted(wildcard):
        for ip in wildcard[suffix]:
            lines.append(f"address=/{suffix}/{ip}")
    lines += ["", "# domain servers (tinydns)"]
    for domain, item in sorted((domain_servers or {}).items()):
        name = str(getattr(item, "domain", "") or domain).lower().rstrip(".")
        for text in getattr(item, "servers", None) or []:
            try:
                host, port = forward.parse_server(text)
            except ValueError:
                continue
            lines.append(f"server=/{name}/{_join_host_port(host, port)}")
    lines += ["", "# name servers (synchronized with /etc/resolv.conf)"]
    for item in (upstreams or {}).values():
        for text in getattr(item, "servers", None) or []:
            try:
                host, port = forward.parse_server(text)
            except ValueError:
                continue
            lines.append(f"nameserver {_join_host_port(host, port)}")
    return "\n".join(lines) + "\n"


def render_from_mirrors(
    mirror: Callable[[str, str], Optional[Mapping[str, object]]], node_address: str = ""
) -> str:
    """``render`` from a bus view: ``mirror(sender, topic)`` as ``BusView.mirror``."""
    return render(
        mirror("watcher", "state.domains"),
        mirror("watcher", "state.domain_servers"),
        mirror("resolvconf", "state.upstreams"),
        hosts=mirror("resolvconf", "state.hosts"),
        vips=mirror("watcher", "state.vips"),
        node_address=node_address,
    )
