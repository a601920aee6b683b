"""An in-process DNS service for tests: the forwarder and N replica threads on one shared
listening pair, talking over the real unix socket (in a temporary directory)."""

import os
import shutil
import socket
import tempfile
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence

import dns.message
import dns.query

from networkd.bus.messages import DomainEntry, HostsEntry
from networkd.dns.forwarder import Forwarder
from networkd.dns.server import DnsServer
from networkd.dns.sockets import create_listener
from networkd.dns.zone import ZoneBuilder
from networkd.workers.dns_forwarder import own_addresses
from tests.support.daemon import wait_for
from tests.support.ports import free_port

FORWARDER_ARGS = ("upstream_timeout", "forward_deadline", "servfail_ttl", "case_randomize")


class DnsHarness:
    def __init__(self, replicas: int = 1, **args: Any) -> None:
        self.port = free_port()
        self.udp, self.tcp = create_listener("127.0.0.1", self.port)
        self.dir = tempfile.mkdtemp(prefix="networkd-dns-")
        self.path = os.path.join(self.dir, "forwarder.sock")
        self.builder = ZoneBuilder(600)
        fwd_args = {k: args.pop(k) for k in FORWARDER_ARGS if k in args}
        cache_bytes = args.pop("cache_bytes", 64 << 20)
        self.forwarder = Forwarder(
            self.udp,
            self.path,
            cache_bytes=cache_bytes,
            own=own_addresses(self.udp.getsockname()),
            **fwd_args,
        )
        self.forwarder.listen()
        self.forwarder_thread = self._start(self.forwarder.serve_forever)
        self.servers: List[DnsServer] = []
        self.threads: List[threading.Thread] = []
        for index in range(replicas):
            server = DnsServer(
                self.udp, self.tcp, self.path, name=f"dns.{index}", cache_bytes=cache_bytes, **args
            )
            self.servers.append(server)
            self.threads.append(self._start(server.serve_forever))
        wait_for(lambda: all(s.link.synced for s in self.servers), 5, what="replicas connected")

    @staticmethod
    def _start(target: Any) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

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
        self.forwarder.set_forwarding(upstreams, domain_servers)

    def query(
        self, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 3.0, **kw: Any
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        return self.send(q, tcp, timeout)

    def send(self, q: dns.message.Message, tcp: bool = False, timeout: float = 3.0) -> Any:
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
        return self.forwarder_thread.is_alive() and all(t.is_alive() for t in self.threads)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.forwarder.stop()
        for thread in [*self.threads, self.forwarder_thread]:
            thread.join(3)
        self.udp.close()
        self.tcp.close()
        shutil.rmtree(self.dir, ignore_errors=True)
