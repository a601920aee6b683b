"""Upstream DNS servers for tests: a real dnsmasq, and small scripted UDP servers.

``Dnsmasq`` runs the real binary on a loopback address and port with
``--no-resolv --no-hosts`` and ``--address=/name/ip`` records, logging every query it
sees (``queries()``), so tests can tell what reached the upstream.
``FakeUpstream`` answers in one fixed way: SERVFAIL, NXDOMAIN with an SOA (negative
caching), or never (a dead server); it records the raw queries it got.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Callable, Iterable, List, Mapping, Optional, Tuple

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.support.ports import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def read_text(path: str) -> str:
    """A log file's text; "" while it does not exist."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def serve_datagrams(
    sock: socket.socket, stop: threading.Event, handle: Callable[[bytes, Tuple[str, int]], None]
) -> None:
    """Call ``handle`` for each datagram on ``sock`` (which has a timeout) until ``stop``
    is set or the socket is closed."""
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        except OSError:
            return
        handle(data, addr)


class Dnsmasq:
    """A real dnsmasq upstream. ``records`` maps a name to one address or a list."""

    def __init__(
        self,
        records: Optional[Mapping[str, object]] = None,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        local_ttl: int = 300,
        extra_args: Iterable[str] = (),
        cache_size: int = 10000,
        log_queries: bool = True,
    ) -> None:
        if not os.path.exists(DNSMASQ):
            raise RuntimeError("dnsmasq not found: run scripts/setup.sh (apt dnsmasq)")
        self.host = host
        self.port = port or free_port(host)
        self.records = dict(records or {})
        self.local_ttl = local_ttl
        self.extra_args = list(extra_args)
        self.cache_size = cache_size
        self.log_queries = log_queries
        self.dir = tempfile.mkdtemp(prefix="networkd-dnsmasq-")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        self.conf_path = os.path.join(self.dir, "dnsmasq.conf")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def address(self) -> str:
        """``ip#port`` as networkd's domain servers spell it."""
        return f"{self.host}#{self.port}"

    def command(self) -> List[str]:
        return [
            DNSMASQ,
            "--keep-in-foreground",
            f"--conf-file={self.conf_path}",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={self.host}",
            f"--port={self.port}",
            "--user=root",
            "--pid-file=",
            f"--local-ttl={self.local_ttl}",
            f"--cache-size={self.cache_size}",
            *(["--log-queries"] if self.log_queries else []),
            f"--log-facility={self.log_path}",
            *self.extra_args,
        ]

    def write_conf(self) -> None:
        lines = []
        for name, value in self.records.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for ip in values:
                lines.append(f"address=/{name}/{ip}")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Dnsmasq":
        self.write_conf()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited {self.proc.returncode}: {err}")
            try:
                q = dns.message.make_query("ready.invalid", "A")
                dns.query.udp(q, self.host, port=self.port, timeout=0.2)
                return self
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def queries(self) -> List[str]:
        """Names dnsmasq logged a query for, in order."""
        out = []
        for line in read_text(self.log_path).splitlines():
            if "query[" in line:
                out.append(line.split("query[", 1)[1].split("] ", 1)[1].split(" from")[0])
        return out


class DatagramServer:
    """A UDP server thread on a loopback port: ``handle(data, addr)`` for each datagram.
    Subclasses set their own fields, then call ``start()``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=serve_datagrams, args=(self.sock, self._stop, self.handle), daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    @property
    def address(self) -> str:
        """``ip#port`` as networkd's domain servers spell it."""
        return f"{self.host}#{self.port}"

    def handle(self, data: bytes, addr: Tuple[str, int]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)  # the port is free only once the thread's recvfrom returned
        self.sock.close()


class FakeUpstream(DatagramServer):
    """A UDP server on loopback that answers every query one fixed way.

    mode: ``servfail``, ``nxdomain`` (with an SOA: ``soa_ttl``/``soa_minimum``),
    ``answer`` (A ``answer_ip``, TTL ``answer_ttl``) or ``dead`` (never answers)."""

    def __init__(
        self,
        mode: str,
        host: str = "127.0.0.1",
        soa_ttl: int = 60,
        soa_minimum: int = 30,
        answer_ip: str = "10.9.9.9",
        answer_ttl: int = 300,
    ) -> None:
        super().__init__(host)
        self.mode = mode
        self.soa_ttl = soa_ttl
        self.soa_minimum = soa_minimum
        self.answer_ip = answer_ip
        self.answer_ttl = answer_ttl
        self.received: List[bytes] = []
        self.start()

    def handle(self, data: bytes, addr: Tuple[str, int]) -> None:
        self.received.append(data)
        if self.mode == "dead":
            return
        self._reply(data, addr)

    def _reply(self, data: bytes, addr: Tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        reply = dns.message.make_response(query)
        name = query.question[0].name
        if self.mode == "servfail":
            reply.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "nxdomain":
            reply.set_rcode(dns.rcode.NXDOMAIN)
            zone = name.parent() if len(name) > 1 else name
            soa = dns.rrset.from_text(
                zone,
                self.soa_ttl,
                "IN",
                "SOA",
                f"ns.invalid. admin.invalid. 1 3600 600 86400 {self.soa_minimum}",
            )
            reply.authority.append(soa)
        elif self.mode == "answer" and query.question[0].rdtype == dns.rdatatype.A:
            reply.answer.append(
                dns.rrset.from_text(name, self.answer_ttl, "IN", "A", self.answer_ip)
            )
        try:
            self.sock.sendto(reply.to_wire(), addr)
        except OSError:
            pass

    def questions(self) -> List[Tuple[str, int]]:
        out = []
        for data in list(self.received):
            try:
                msg = dns.message.from_wire(data)
                out.append((msg.question[0].name.to_text(), msg.question[0].rdtype))
            except Exception:
                continue
        return out
