"""Run the real networkd daemon as a subprocess and look at it through its bus."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

import zmq

from networkd import status as statusmod
from networkd.bus.codec import Envelope
from networkd.bus.view import BusView
from tests.support.ports import free_ports

VENV_BIN = os.path.join(os.path.dirname(sys.executable))
NETWORKD = os.path.join(VENV_BIN, "networkd")
NETWORKDCTL = os.path.join(VENV_BIN, "networkdctl")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}; last value {value!r}"
    )


class Tap:
    """Collects bus envelopes in a background thread (its own ZeroMQ socket and context)."""

    def __init__(self, run_dir: str, prefixes: Iterable[str] = ("",)) -> None:
        self.run_dir = run_dir
        self.prefixes = list(prefixes)
        self.envelopes: List[Envelope] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        context = zmq.Context()
        view = BusView(context, self.run_dir, self.prefixes)
        self._ready.set()
        try:
            while not self._stop.is_set():
                self.envelopes.extend(view.poll(50))
        finally:
            view.close()
            context.destroy(0)

    def topics(self) -> List[str]:
        return [e.topic for e in list(self.envelopes)]

    def wait_topic(self, topic: str, timeout: float = 10.0) -> Envelope:
        def find() -> Optional[Envelope]:
            for env in list(self.envelopes):
                if env.topic == topic:
                    return env
            return None

        return wait_for(find, timeout, what=f"bus topic {topic}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Daemon:
    """One networkd daemon with its own run dir, lock file, resolv.conf and hosts file."""

    def __init__(
        self,
        base_dir: str,
        etcd_endpoint: str = "http://127.0.0.1:9",
        workers: Iterable[str] = ("api",),
        netns: Optional[str] = None,
        hostname: str = "node1",
        extra_args: Optional[List[str]] = None,
        flags: Optional[Dict[str, Any]] = None,
        env: Optional[Dict[str, str]] = None,
        **more_flags: Any,
    ) -> None:
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        # Unprivileged workers must reach the run dir: pytest's temp dirs are 0700.
        self.run_dir = tempfile.mkdtemp(prefix="networkd-run-")
        os.chmod(self.run_dir, 0o755)
        self.lock_file = os.path.join(base_dir, "networkd.pid")
        self.resolv_conf = os.path.join(base_dir, "resolv.conf")
        self.hosts_file = os.path.join(base_dir, "hosts")
        self.log_path = os.path.join(base_dir, "networkd.log")
        self.netns = netns
        dns_port, api_port = free_ports(2)
        self.flags: Dict[str, Any] = {
            "run.dir": self.run_dir,
            "lock.filename": self.lock_file,
            "etcd.endpoint": etcd_endpoint,
            "hostname": hostname,
            "godns.addr": f"127.0.0.1:{dns_port}",
            "api.addr": f"127.0.0.1:{api_port}",
            "resolv.conf": self.resolv_conf,
            "hosts.file": self.hosts_file,
            "net.interface": "eth0",
            "workers": ",".join(workers),
            "stop.timeout": 5,
        }
        self.flags.update(flags or {})
        self.flags.update(more_flags)
        self.extra_args = list(extra_args or [])
        self.env = dict(os.environ, **(env or {}))
        if not os.path.exists(self.resolv_conf):
            with open(self.resolv_conf, "w") as f:
                f.write("nameserver 127.0.0.53\n")
        if not os.path.exists(self.hosts_file):
            with open(self.hosts_file, "w") as f:
                f.write("127.0.0.1 localhost\n")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._context: Any = None
        self._view: Optional[BusView] = None

    @property
    def dns_addr(self) -> tuple:
        host, port = str(self.flags["godns.addr"]).rsplit(":", 1)
        return host, int(port)

    @property
    def api_url(self) -> str:
        return f"http://{self.flags['api.addr']}"

    def command(self) -> List[str]:
        cmd = [NETWORKD]
        for key, value in self.flags.items():
            if value is True:
                cmd.append(f"-{key}")
            elif value is False or value is None:
                continue
            else:
                cmd.append(f"-{key}={value}")
        cmd += self.extra_args
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def start(self) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env
        )
        log.close()
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------- observing

    def view(self) -> BusView:
        if self._view is None:
            self._context = zmq.Context()
            self._view = BusView(self._context, self.run_dir, ["state."])
        return self._view

    def status(self, settle: float = 0.3) -> Dict[str, Any]:
        """The status document as networkdctl would print it (from a persistent bus view)."""
        view = self.view()
        deadline = time.monotonic() + settle
        while True:
            view.poll(30)
            if time.monotonic() >= deadline:
                break
        return statusmod.assemble(view.mirror, view.sources)

    def ctl(self, *args: str, timeout: float = 15.0) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [NETWORKDCTL, "-run.dir", self.run_dir, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctl_status(self) -> Dict[str, Any]:
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        doc: Dict[str, Any] = json.loads(result.stdout)
        return doc

    def workers(self) -> Dict[str, Dict[str, Any]]:
        return {w["name"]: w for w in self.status(0.15)["workers"]}

    def wait_running(
        self, names: Optional[Iterable[str]] = None, timeout: float = 15.0
    ) -> Dict[str, Dict[str, Any]]:
        def ready() -> Optional[Dict[str, Dict[str, Any]]]:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"networkd exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            workers = self.workers()
            wanted = list(names) if names is not None else list(workers)
            if wanted and all(workers.get(n, {}).get("state") == "RUNNING" for n in wanted):
                return workers
            return None

        try:
            result: Dict[str, Dict[str, Any]] = wait_for(ready, timeout, what="workers RUNNING")
        except AssertionError:
            raise AssertionError(
                f"workers not RUNNING: {self.workers()}\n{self.log()[-3000:]}"
            ) from None
        return result

    def wait_restarted(
        self, worker: str, old_pid: int, timeout: float = 15.0
    ) -> Dict[str, Dict[str, Any]]:
        """Wait until ``worker`` is RUNNING again under a pid other than ``old_pid``."""

        def restarted() -> Optional[Dict[str, Dict[str, Any]]]:
            workers = self.workers()
            info = workers.get(worker, {})
            if info.get("pid") not in (None, 0, old_pid) and info.get("state") == "RUNNING":
                return workers
            return None

        result: Dict[str, Dict[str, Any]] = wait_for(
            restarted, timeout, what=f"{worker} RUNNING with a new pid"
        )
        return result

    def pid(self, worker: str) -> int:
        return int(self.workers()[worker]["pid"])

    def tap(self, prefixes: Iterable[str] = ("",)) -> Tap:
        return Tap(self.run_dir, prefixes)

    # ------------------------------------------------------------- stopping

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.close_view()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close_view(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None
        if self._context is not None:
            self._context.destroy(0)
            self._context = None

    def close(self) -> None:
        """Stop the daemon and make sure no process of it is left (tests must not leak)."""
        try:
            self.stop(timeout=10)
        finally:
            for pid in networkd_pids(self.run_dir):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.run_dir, ignore_errors=True)


def networkd_pids(run_dir: str) -> List[int]:
    """Pids of every process whose command line names this run dir, or that is its worker."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if run_dir in cmdline:
            pids.append(int(entry))
    return pids + worker_pids_of(pids)


def worker_pids_of(parents: List[int]) -> List[int]:
    """Descendants of ``parents`` (workers live under the fork server)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: List[int] = []
    todo = list(parents)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def title_of(pid: int) -> str:
    """A process's title (``networkd: dns [0]``), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def dns_worker_pids(daemon: "Daemon") -> Dict[str, int]:
    """From /proc (fast, no bus): ``dns.N`` replicas and ``dns-forwarder`` -> pid."""
    out: Dict[str, int] = {}
    for pid in worker_pids_of([daemon.proc.pid] if daemon.proc is not None else []):
        title = title_of(pid)
        if title.startswith("networkd: dns ["):
            out["dns." + title.split("[", 1)[1].split("]")[0]] = pid
        elif title == "networkd: dns forwarder":
            out["dns-forwarder"] = pid
    return out
