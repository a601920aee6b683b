"""A real authoritative upstream for DNS tests: BIND 9 (``named`` from Debian's bind9).

``Bind`` serves the zones a test writes (zone file text, ``$ORIGIN`` given by the key) on
a loopback address, non-recursive (with glue and authority in answers unless
``minimal_responses`` says otherwise), with every query logged (``querylog yes``) so a test
can count what reached the upstream and how (``queries()``: name, type, flags such as
``T`` for TCP, ``D`` for DO, and the source port). Zones named in ``signed`` are signed
with fresh keys by dnssec-keygen and dnssec-signzone (bind9-utils) before named starts.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, Iterable, List, NamedTuple, Optional

import dns.exception
import dns.message
import dns.query

from tests.support.dnsmasq import read_text
from tests.support.ports import free_port

NAMED = shutil.which("named") or "/usr/sbin/named"
KEYGEN = shutil.which("dnssec-keygen") or "/usr/bin/dnssec-keygen"
SIGNZONE = shutil.which("dnssec-signzone") or "/usr/bin/dnssec-signzone"
QUERY_LINE = re.compile(r"client @\S+ (\S+)#(\d+) \((\S+)\): query: (\S+) (\S+) (\S+) (\S+)")


def zone(*records: str, ttl: int = 300, negative_ttl: int = 30) -> str:
    """Zone file text: the SOA (minimum ``negative_ttl``), NS and the name server's
    address, then ``records`` (one line each, names relative to the origin)."""
    head = [f"$TTL {ttl}", f"@ SOA ns admin 1 3600 600 86400 {negative_ttl}", "@ NS ns"]
    return "\n".join([*head, "ns A 10.0.0.53", *records]) + "\n"


class LoggedQuery(NamedTuple):
    source: str
    port: int
    name: str  # lower-cased, without the final dot
    rdtype: str
    flags: str  # e.g. "+E(0)K", "+E(0)TDC": T tcp, D DO, C CD, E EDNS

    @property
    def tcp(self) -> bool:
        return "T" in self.flags.split(")")[-1]


class Bind:
    def __init__(
        self,
        zones: Dict[str, str],
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        signed: Iterable[str] = (),
        minimal_responses: str = "no",
    ) -> None:
        if not os.path.exists(NAMED):
            raise RuntimeError("named not found: run scripts/setup.sh (apt bind9)")
        self.zones = dict(zones)
        self.signed = set(signed)
        self.minimal_responses = minimal_responses
        self.host = host
        self.port = port or free_port(host)
        self.dir = tempfile.mkdtemp(prefix="networkd-bind-")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = os.path.join(self.dir, "query.log")
        self._prepared = False

    @property
    def address(self) -> str:
        """``ip#port`` as networkd's domain servers spell it."""
        return f"{self.host}#{self.port}"

    def _zone_file(self, origin: str) -> str:
        path = os.path.join(self.dir, f"{origin}.zone")
        with open(path, "w") as f:
            f.write(f"$ORIGIN {origin}.\n{self.zones[origin]}")
        if origin not in self.signed:
            return path
        for extra in ([], ["-f", "KSK"]):
            subprocess.run(
                [
                    KEYGEN,
                    "-q",
                    "-K",
                    self.dir,
                    "-a",
                    "ECDSAP256SHA256",
                    *extra,
                    "-n",
                    "ZONE",
                    origin,
                ],
                check=True,
                capture_output=True,
                cwd=self.dir,
            )
        subprocess.run(
            [SIGNZONE, "-q", "-K", self.dir, "-S", "-o", origin, "-f", path + ".signed", path],
            check=True,
            capture_output=True,
            cwd=self.dir,
        )
        return path + ".signed"

    def _write_conf(self) -> str:
        zones = "".join(
            f'zone "{origin}" {{ type primary; file "{self._zone_file(origin)}"; }};\n'
            for origin in self.zones
        )
        conf = f"""options {{
    directory "{self.dir}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    pid-file none;
    session-keyfile none;
    minimal-responses {self.minimal_responses};
    querylog yes;
    dnssec-validation no;
    max-udp-size 4096;
    rate-limit {{ responses-per-second 0; }};
}};
controls {{ }};
logging {{
    channel queries_file {{ file "{self.log_path}"; print-time yes; }};
    category queries {{ queries_file; }};
    channel everything_else {{ file "{self.dir}/named.log"; print-time yes; }};
    category default {{ everything_else; }};
}};
{zones}"""
        path = os.path.join(self.dir, "named.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def start(self, timeout: float = 15.0) -> "Bind":
        conf = os.path.join(self.dir, "named.conf")
        if not self._prepared:
            conf = self._write_conf()
            self._prepared = True
        self.proc = subprocess.Popen(
            [NAMED, "-f", "-n", "1", "-c", conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "named.out"), "ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        probe = dns.message.make_query(f"{next(iter(self.zones))}.", "SOA")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"named exited {self.proc.returncode}: {self.stderr()[-2000:]}")
            try:
                dns.query.udp(probe, self.host, port=self.port, timeout=0.2)
                return self
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
        self.stop()  # it started but does not answer: leave nothing running
        raise RuntimeError(f"named did not answer: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        return "".join(read_text(os.path.join(self.dir, n)) for n in ("named.out", "named.log"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def queries(self, name: Optional[str] = None) -> List[LoggedQuery]:
        """Every query named logged so far (of ``name`` only, when given)."""
        out = []
        for match in QUERY_LINE.finditer(read_text(self.log_path)):
            source, port, _, qname, _cls, rdtype, flags = match.groups()
            logged = LoggedQuery(source, int(port), qname.rstrip(".").lower(), rdtype, flags)
            if name is None or logged.name == name.rstrip(".").lower():
                out.append(logged)
        return out
