"""An in-process DNS replica for tests: a DnsServer thread on create_listeners sockets."""

import socket
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence

import dns.message
import dns.query

from networkd.bus.messages import DomainEntry, HostsEntry
from networkd.dns.server import DnsServer
from networkd.dns.sockets import create_listeners
from networkd.dns.zone import ZoneBuilder
from tests.support.ports import free_port


class DnsHarness:
    def __init__(self, replicas: int = 1, **server_args: Any) -> None:
        self.port = free_port()
        self.pairs = create_listeners("127.0.0.1", self.port, replicas)
        self.builder = ZoneBuilder(600)
        self.servers: List[DnsServer] = []
        self.threads: List[threading.Thread] = []
        for udp, tcp in self.pairs:
            server = DnsServer(udp, tcp, **server_args)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self.servers.append(server)
            self.threads.append(thread)

    @property
    def server(self) -> DnsServer:
        return self.servers[0]

    def set_data(
        self,
        domains: Optional[Dict[str, Any]] = None,
        hosts: Optional[Dict[str, List[str]]] = None,
        vips: Optional[Mapping[str, Any]] = None,
        node_address: str = "",
    ) -> None:
        entries = {}
        for name, value in (domains or {}).items():
            if isinstance(value, str):
                entries[name] = DomainEntry(name=name, ips=[], type=value)
            else:
                entries[name] = DomainEntry(name=name, ips=list(value))
        host_entries = {n: HostsEntry(name=n, ips=ips) for n, ips in (hosts or {}).items()}
        zone = self.builder.build(entries, host_entries, vips, node_address)
        for server in self.servers:
            server.set_zone(zone)

    def set_forwarding(
        self, upstreams: Sequence[str], domain_servers: Optional[Dict[str, List[str]]] = None
    ) -> None:
        for server in self.servers:
            server.set_forwarding(upstreams, domain_servers)

    def query(
        self, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 3.0, **kw: Any
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=timeout)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout)

    def raw_udp(self, data: bytes, timeout: float = 0.5) -> Optional[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, ("127.0.0.1", self.port))
            try:
                return s.recv(65535)
            except socket.timeout:
                return None

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        for thread in self.threads:
            thread.join(3)
        for udp, tcp in self.pairs:
            udp.close()
            tcp.close()
