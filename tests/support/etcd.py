"""A real etcd server for tests: started from the ``etcd`` binary in a temp dir.

Helpers stop, restart, pause (SIGSTOP) and compact it. Every suite reuses it.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, List, Optional

from tests.support.ports import free_ports

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"


class EtcdServer:
    """One etcd member on loopback (or on ``host``, e.g. a bridge address in a lab)."""

    def __init__(self, host: str = "127.0.0.1", data_dir: Optional[str] = None,
                 extra_args: Optional[List[str]] = None, scheme: str = "http",
                 netns: Optional[str] = None) -> None:
        if not os.path.exists(ETCD_BINARY):
            raise RuntimeError("etcd binary not found: run scripts/setup.sh (apt etcd-server)")
        self.host = host
        self.netns = netns
        self.client_port, self.peer_port = free_ports(2)
        self.scheme = scheme
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="networkd-etcd-")
        self.extra_args = list(extra_args or [])
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.log_path = os.path.join(self.data_dir, "etcd.log")

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    def command(self) -> List[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [
            ETCD_BINARY,
            "--name", "test",
            "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "error",
            *self.extra_args,
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self, timeout: float = 15.0) -> "EtcdServer":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

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


def current_revision(client: Any) -> int:
    """The store's current revision, from a range response header."""
    from etcd3.etcdrpc import rpc_pb2

    request = rpc_pb2.RangeRequest(key=b"\0", limit=1)
    response = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                   metadata=client.metadata)
    return int(response.header.revision)
