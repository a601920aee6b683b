"""The operator's view of container networks: ``networkdctl net list|show`` and
``GET /v1/networks``, built from the netstore's and netlinks' bus state.

One document per network: its subnet, mode and gateway, each host with its Docker
networks, blocks, next-hop address and endpoints, and the routes this host installed
for it. Names are Docker's network names as each host's Docker reports them.
"""

import ipaddress
from typing import Any, Callable, Dict, List, Mapping, Optional

from networkd.bus.codec import to_plain

MirrorLookup = Callable[[str, str], Optional[Mapping[str, Any]]]


def _order(address: str) -> int:
    try:
        return int(ipaddress.IPv4Address(address.split("/")[0]))
    except ValueError:
        return 0


def _host_entries(hosts: Dict[str, Dict[str, Any]]) -> Callable[[str], Dict[str, Any]]:
    def entry(name: str) -> Dict[str, Any]:
        empty = {
            "host": name,
            "docker": {},
            "parents": {},
            "via": "",
            "blocks": [],
            "endpoints": [],
        }
        return hosts.setdefault(name, empty)

    return entry


def networks_document(mirror: MirrorLookup) -> List[Dict[str, Any]]:
    networks = mirror("netstore", "state.net_networks") or {}
    blocks = mirror("netstore", "state.net_blocks") or {}
    addresses = mirror("netstore", "state.net_addresses") or {}
    routes = mirror("netlinks", "state.net_routes") or {}
    out: List[Dict[str, Any]] = []
    for net, network in sorted(networks.items()):
        subnet = ipaddress.IPv4Network(network.subnet)
        hosts: Dict[str, Dict[str, Any]] = {}

        host_entry = _host_entries(hosts)
        for name, member in network.hosts.items():
            entry = host_entry(name)
            entry["docker"] = dict(member.docker)
            entry["parents"] = dict(member.parents)
        for block in blocks.values():
            if block.net == net:
                entry = host_entry(block.host)
                entry["blocks"].append(block.block)
                entry["via"] = entry["via"] or block.via
        gateway = ""
        allocated = 0
        for a in addresses.values():
            if a.net != net:
                continue
            allocated += 1
            if a.kind == "gateway":
                gateway = a.ip
                continue
            host_entry(a.host)["endpoints"].append(
                {"ip": a.ip, "endpoint": a.endpoint, "kind": a.kind}
            )
        for entry in hosts.values():
            entry["blocks"].sort(key=_order)
            entry["endpoints"].sort(key=lambda e: _order(e["ip"]))
        names = sorted({n for h in hosts.values() for n in h["docker"].values() if n})
        out.append(
            {
                "net": net,
                "names": names,
                "subnet": network.subnet,
                "mode": network.mode,
                "ipvlan_mode": network.ipvlan_mode,
                "gateway": network.gateway or gateway,
                "block": network.block,
                "allocated": allocated,
                "hosts": [hosts[h] for h in sorted(hosts)],
                "routes": sorted(
                    (
                        to_plain(r)
                        for r in routes.values()
                        if ipaddress.IPv4Network(r.dst).subnet_of(subnet)
                    ),
                    key=lambda r: _order(r["dst"]),
                ),
            }
        )
    return out


def find(document: List[Dict[str, Any]], name: str) -> Optional[Dict[str, Any]]:
    """A network by Docker name, subnet or etcd name."""
    for network in document:
        if name in network["names"] or name in (network["subnet"], network["net"]):
            return network
    return None


def render_list(document: List[Dict[str, Any]]) -> str:
    lines = [f"{'NAME':<20} {'SUBNET':<18} {'MODE':<10} {'HOSTS':>5} {'ADDRESSES':>9}  GATEWAY"]
    for n in document:
        mode = n["mode"] + (f"/{n['ipvlan_mode']}" if n["ipvlan_mode"] else "")
        lines.append(
            f"{','.join(n['names']) or '-':<20} {n['subnet']:<18} {mode or '-':<10} "
            f"{len(n['hosts']):>5} {n['allocated']:>9}  {n['gateway'] or '-'}"
        )
    return "\n".join(lines) + "\n"


def render_show(network: Dict[str, Any]) -> str:
    mode = network["mode"] + (f" ({network['ipvlan_mode']})" if network["ipvlan_mode"] else "")
    lines = [
        f"network {','.join(network['names']) or '-'}  subnet {network['subnet']}  mode {mode or '-'}"
        f"  gateway {network['gateway'] or '-'}  blocks /{network['block']}",
    ]
    for host in network["hosts"]:
        docker = ", ".join(
            f"{name or '?'} ({i[:12]})" for i, name in sorted(host["docker"].items())
        )
        lines.append("")
        lines.append(f"host {host['host']}  via {host['via'] or '-'}  docker {docker or '-'}")
        lines.append(f"  blocks: {' '.join(host['blocks']) or '-'}")
        for ep in host["endpoints"]:
            lines.append(f"  {ep['ip']:<16} {ep['endpoint'][:12] or '(not bound)'}")
    if network["routes"]:
        lines.append("")
        lines.append("routes on this host:")
        for r in network["routes"]:
            target = f"via {r['via']}" if r["via"] else (f"dev {r['dev']}" if r["dev"] else "")
            lines.append(f"  {r['dst']:<18} {r['kind']:<12} {target}")
    return "\n".join(lines) + "\n"
