"""Where to forward a name: domain servers (longest suffix) or the resolv.conf upstreams."""

import logging
import socket
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from networkd.dns import wire

log = logging.getLogger("networkd.dns")

Address = Tuple[str, int]

DOWN_SECONDS = 5.0  # a server that timed out goes to the back of the line this long


def parse_server(text: str, default_port: int = 53) -> Address:
    """``ip``, ``ip#port`` (dnsmasq style) or ``ip:port`` -> (ip, port); ValueError if bad."""
    if not isinstance(text, str):
        raise ValueError(f"server is not a string: {text!r}")
    text = text.strip()
    host, port_text = text, ""
    if "#" in text:
        host, _, port_text = text.partition("#")
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in server {text!r}")
        port = int(port_text)
    try:
        family, packed = wire.parse_ip(host)
    except ValueError:
        raise ValueError(f"bad address in server {text!r}")
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, packed), port
    return socket.inet_ntop(socket.AF_INET6, packed), port


def _unique(addresses: Iterable[Address]) -> List[Address]:
    out: List[Address] = []
    for address in addresses:
        if address not in out:
            out.append(address)
    return out


class Forwarding:
    """An immutable forwarding table."""

    def __init__(
        self,
        upstreams: Sequence[str] = (),
        domain_servers: Optional[Mapping[str, Sequence[str]]] = None,
        own: Iterable[Address] = (),
    ) -> None:
        self.own: Set[Address] = set(own)
        self.upstreams: List[Address] = _unique(self._parse_all(upstreams, "upstream"))
        self.domain_servers: Dict[bytes, List[Address]] = {}
        for domain, servers in (domain_servers or {}).items():
            try:
                key = wire.encode_name(domain)
            except ValueError as exc:
                log.warning("domain server rejected domain=%r reason=%s", domain, exc)
                continue
            parsed = _unique(self._parse_all(servers or (), domain))
            if parsed:
                self.domain_servers[key] = parsed

    def _parse_all(self, servers: Iterable[str], what: str) -> List[Address]:
        out = []
        for text in servers:
            try:
                address = parse_server(text)
            except ValueError as exc:
                log.warning("server rejected for=%s reason=%s", what, exc)
                continue
            if address in self.own:
                continue  # never forward to ourselves
            out.append(address)
        return out

    def servers_for(self, lname: bytes) -> List[Address]:
        table = self.domain_servers
        if table:
            pos = 0
            end = len(lname)
            while pos < end and lname[pos]:
                found = table.get(lname[pos:])
                if found is not None:
                    return found
                pos += 1 + lname[pos]
        return self.upstreams


class Health:
    """Remembers upstreams that timed out lately, to try them after the healthy ones."""

    def __init__(self) -> None:
        self._down_until: Dict[Address, float] = {}

    def order(self, servers: List[Address], now: Optional[float] = None) -> List[Address]:
        if not self._down_until:
            return servers
        now = time.monotonic() if now is None else now
        down = self._down_until
        healthy = [s for s in servers if down.get(s, 0.0) <= now]
        if len(healthy) == len(servers):
            return servers
        return healthy + [s for s in servers if down.get(s, 0.0) > now]

    def failed(self, server: Address, now: float) -> None:
        self._down_until[server] = now + DOWN_SECONDS

    def ok(self, server: Address) -> None:
        if self._down_until:
            self._down_until.pop(server, None)
