"""A real etcd server for tests: started from the ``etcd`` binary in a temp dir.

Helpers stop, restart, pause (SIGSTOP) and compact it. Every suite reuses it.
``EtcdCluster`` runs several members on loopback (a real raft cluster: leader kill,
quorum) and ``scrape_metrics`` reads a member's Prometheus ``/metrics``.
``make_test_ca`` creates a throwaway CA with server and client certificates (openssl) for
``EtcdServer(tls=...)``; ``TcpProxy`` sits between a client and etcd and can cut the
connection (a partition) while etcd itself keeps running.
"""

import dataclasses
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from tests.support.ports import free_ports, shut_both, splice

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdServer:
    """One etcd member on loopback (or on ``host``, e.g. a bridge address in a lab)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        data_dir: Optional[str] = None,
        extra_args: Optional[List[str]] = None,
        scheme: str = "http",
        netns: Optional[str] = None,
        tls: Optional["TestCA"] = None,
        name: str = "test",
        initial_cluster: str = "",
        ports: Optional[Tuple[int, int]] = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
    ) -> None:
        if not os.path.exists(ETCD_BINARY):
            raise RuntimeError("etcd binary not found: run scripts/setup.sh (apt etcd-server)")
        self.host = host
        self.netns = netns
        self.name = name
        self.client_port, self.peer_port = ports or free_ports(2)
        # "name=peer-url,..." of every member; empty: a single-member cluster of this one
        self.initial_cluster = initial_cluster
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.tls = tls
        self.scheme = "https" if tls is not None else scheme
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="networkd-etcd-")
        self.extra_args = list(extra_args or [])
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> List[str]:
        peer = self.peer_url
        cmd = [
            ETCD_BINARY,
            "--name",
            self.name,
            "--data-dir",
            os.path.join(self.data_dir, "data"),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={peer}",
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            "--log-level",
            "error",
            *self.extra_args,
        ]
        if self.tls is not None:
            cmd += [
                "--cert-file",
                self.tls.server_cert,
                "--key-file",
                self.tls.server_key,
                "--trusted-ca-file",
                self.tls.ca_cert,
                "--client-cert-auth",
            ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, timeout: float = 15.0) -> "EtcdServer":
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting (the members of a cluster start together)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception = RuntimeError("not started")
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.tail_log()}")
            try:
                client = self.client()
                client.status()
                client.close()
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.05)
        raise RuntimeError(f"etcd did not become ready: {last}; log: {self.tail_log()}")

    def tail_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def client(self, timeout: float = 5.0) -> Any:
        import etcd3

        if self.tls is not None:
            return etcd3.client(
                host=self.host,
                port=self.client_port,
                timeout=timeout,
                ca_cert=self.tls.ca_cert,
                cert_key=self.tls.client_key,
                cert_cert=self.tls.client_cert,
            )
        return etcd3.client(host=self.host, port=self.client_port, timeout=timeout)

    def stop(self) -> None:
        """Kill etcd (SIGKILL: as a crash); data stays for restart()."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: etcd stays listening but answers nothing (a hung server)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def compact(self) -> int:
        """Compact up to the current revision; returns that revision."""
        client = self.client()
        try:
            revision = current_revision(client)
            client.compact(revision, physical=True)
            return revision
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class EtcdCluster:
    """``size`` etcd members on loopback forming one raft cluster.

    Timing flags default to etcd's own (heartbeat 100 ms, election 1 s), as a production
    cluster runs them; ``kill(i)`` is a member's crash (SIGKILL), ``restart(i)`` its return
    with its data."""

    def __init__(self, size: int = 3, heartbeat_ms: int = 100, election_ms: int = 1000) -> None:
        ports = free_ports(2 * size)
        self.base_dir = tempfile.mkdtemp(prefix="networkd-etcd-cluster-")
        names = [f"m{i}" for i in range(size)]
        urls = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
        initial = ",".join(f"{n}={u}" for n, u in zip(names, urls))
        self.members = [
            EtcdServer(
                data_dir=os.path.join(self.base_dir, name),
                name=name,
                initial_cluster=initial,
                ports=(ports[2 * i], ports[2 * i + 1]),
                heartbeat_ms=heartbeat_ms,
                election_ms=election_ms,
            )
            for i, name in enumerate(names)
        ]
        for member in self.members:
            os.makedirs(member.data_dir, exist_ok=True)

    @property
    def endpoints(self) -> List[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        for member in self.members:
            member.launch()
        for member in self.members:
            member.wait_ready(timeout)
        self.wait_leader(timeout)
        return self

    def leader_index(self) -> Optional[int]:
        """The index of the member that is leader now (asked of the live members)."""
        ids: Dict[int, int] = {}
        leaders = set()
        for index, member in enumerate(self.members):
            if member.proc is None:
                continue
            try:
                member_id, leader_id = _status(member)
            except Exception:  # down or not answering: ask the others
                continue
            ids[member_id] = index
            if leader_id:
                leaders.add(leader_id)
        for leader_id in leaders:
            if leader_id in ids:
                return ids[leader_id]
        return None

    def wait_leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = self.leader_index()
            if index is not None:
                return index
            time.sleep(0.05)
        raise RuntimeError("etcd cluster elected no leader")

    def kill(self, index: int) -> None:
        self.members[index].stop()

    def restart(self, index: int) -> None:
        self.members[index].start()

    def client(self, timeout: float = 5.0) -> Any:
        """A client of the first live member."""
        live = [m for m in self.members if m.proc is not None]
        return live[0].client(timeout)

    def pids(self) -> List[int]:
        return [m.proc.pid for m in self.members if m.proc is not None]

    def metrics(self) -> Dict[int, "Metrics"]:
        """Every live member's /metrics by member index, parsed (see ``scrape_metrics``)."""
        return {i: scrape_metrics(m.endpoint) for i, m in enumerate(self.members) if m.proc}

    def close(self) -> None:
        for member in self.members:
            member.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _status(member: EtcdServer) -> Tuple[int, int]:
    """(this member's id, the leader's id as it sees it; 0: none)."""
    from etcd3.etcdrpc import rpc_pb2

    client = member.client(timeout=1.0)
    try:
        response = client.maintenancestub.Status(rpc_pb2.StatusRequest(), 1.0)
        return int(response.header.member_id), int(response.leader)
    finally:
        client.close()


Metrics = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(endpoint: str, timeout: float = 5.0) -> Metrics:
    """One member's Prometheus text: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=timeout) as response:
        text = response.read().decode("utf-8", errors="replace")
    return parse_metrics(text)


def parse_metrics(text: str) -> Metrics:
    out: Metrics = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        try:
            out[(name, pairs)] = float(value)
        except ValueError:
            continue
    return out


def current_revision(client: Any) -> int:
    """The store's current revision, from a range response header."""
    from etcd3.etcdrpc import rpc_pb2

    request = rpc_pb2.RangeRequest(key=b"\0", limit=1)
    response = client.kvstub.Range(
        request, client.timeout, credentials=client.call_credentials, metadata=client.metadata
    )
    return int(response.header.revision)


@dataclasses.dataclass
class TestCA:
    """Files of a throwaway CA, a server certificate (for ``host``) and a client certificate."""

    directory: str
    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_test_ca(directory: str, host: str = "127.0.0.1") -> TestCA:
    """A CA plus server and client certificates (ECDSA P-256, valid one day), via openssl."""
    os.makedirs(directory, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        *newkey,
        "-keyout",
        path("ca.key"),
        "-out",
        path("ca.crt"),
        "-days",
        "1",
        "-subj",
        "/CN=networkd-test-ca",
    )
    for name, usage, san in (
        ("server", "serverAuth,clientAuth", f"IP:{host},DNS:localhost"),
        ("client", "clientAuth", "DNS:networkd"),
    ):
        with open(path(f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
        run(
            "req",
            *newkey,
            "-keyout",
            path(f"{name}.key"),
            "-out",
            path(f"{name}.csr"),
            "-subj",
            f"/CN=networkd-test-{name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            path(f"{name}.csr"),
            "-CA",
            path("ca.crt"),
            "-CAkey",
            path("ca.key"),
            "-CAcreateserial",
            "-out",
            path(f"{name}.crt"),
            "-days",
            "1",
            "-extfile",
            path(f"{name}.ext"),
        )
    for name in os.listdir(directory):  # the unprivileged watcher must read them
        os.chmod(path(name), 0o644)
    return TestCA(
        directory,
        path("ca.crt"),
        path("server.crt"),
        path("server.key"),
        path("client.crt"),
        path("client.key"),
    )


class TcpProxy:
    """A loopback TCP relay to ``target``. ``cut()`` drops every connection and refuses
    new ones (clients see resets) until ``restore()``: a partition from etcd. ``delay``
    (seconds, 0 by default) holds back what the target sends by that much, in order: a
    slow etcd whose answers all come late but keep coming."""

    def __init__(self, target: Tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.delay = 0.0
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=splice, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._delayed, args=(upstream, client), daemon=True).start()

    def _delayed(self, src: socket.socket, dst: socket.socket) -> None:
        """``splice`` with every chunk sent ``delay`` seconds after it was received."""
        chunks: queue.Queue[Optional[Tuple[float, bytes]]] = queue.Queue()

        def send() -> None:
            try:
                while True:
                    item = chunks.get()
                    if item is None:
                        break
                    due, data = item
                    time.sleep(max(0.0, due - time.monotonic()))
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                shut_both(src, dst)

        threading.Thread(target=send, daemon=True).start()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                chunks.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        chunks.put(None)

    def cut(self) -> None:
        self.blocked = True
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            _abort(sock)

    def restore(self) -> None:
        self.blocked = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a vanished peer would look."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
