"""The supervisor (arbiter): owns the lock, the run dir and the DNS sockets; runs workers.

Signal handlers only queue the signal; the main loop calls ``handle_<signal>``. Workers
are started through a multiprocessing fork server, created before this process opens any
ZeroMQ context, so nothing that breaks across fork exists where the forking happens. The
loop waits on process sentinels, the signal pipe and the control socket.
"""

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import pwd
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from networkd import log as logsetup
from networkd import node as nodeinfo
from networkd import sdnotify
from networkd.bus.messages import (
    SupervisorStopping,
    WorkerExited,
    WorkerInfo,
    WorkerStarted,
    WorkerStateChanged,
)
from networkd.config import Config, ConfigError
from networkd.control import ControlServer
from networkd.lockfile import PidLock
from networkd.proc_state import (
    MAX_START_FAILURES,
    START_SECONDS,
    ProcessState,
    backoff_delay,
    check_transition,
)
from networkd.workers import WorkerSpec, all_specs
from networkd.workers.base import EXIT_FATAL, NodeIdentity, WorkerLaunch, resolve_user, worker_entry

log = logging.getLogger("networkd.supervisor")

TICK = 0.1
FORKSERVER_PRELOAD = [
    "networkd.workers.forkguard",
    "networkd.workers.base",
    "networkd.bus.codec",
    "networkd.bus.messages",
    "zmq",
    "msgpack",
]
# Exits that an operator or the kernel caused: restart at once, never count as start failures.
EXTERNAL_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def describe_exit(exitcode: Optional[int]) -> Tuple[Optional[int], str, str]:
    """(exit code or None, signal name or "", human text) from a Process.exitcode."""
    if exitcode is None:
        return None, "", "unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return None, name, f"signal {name}"
    return exitcode, "", f"exit {exitcode}"


class StartupError(RuntimeError):
    """The daemon cannot start (a port in use, a directory it cannot create); exit 1."""


class WorkerProcess:
    """One supervised worker: its spec, current process and state."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.state = ProcessState.EXITED
        self.process: Any = None
        self.pid = 0
        self.restarts = 0
        self.spawns = 0
        self.started_at = 0.0
        self.last_exit = ""
        self.start_failures = 0
        self.next_start = 0.0
        self.stop_deadline = 0.0
        self.restart_after_stop = True

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            name=self.name,
            pid=self.pid if self.alive() else 0,
            state=self.state.value,
            restarts=self.restarts,
            started_at=self.started_at,
            last_exit=self.last_exit,
            user=self.spec.user,
        )

    def status(self) -> Dict[str, Any]:
        info = self.info()
        return {
            "name": info.name,
            "pid": info.pid,
            "state": info.state,
            "restarts": info.restarts,
            "uptime_s": round(time.time() - info.started_at, 3) if info.pid else 0.0,
            "last_exit": info.last_exit,
        }


class Supervisor:
    """Runs the workers of one node until TERM/INT."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

    def __init__(
        self, config: Config, reload_config: Optional[Callable[[], Config]] = None
    ) -> None:
        self.config = config
        self.reload_config = reload_config
        self.node = NodeIdentity("", "")
        self.workers: Dict[str, WorkerProcess] = {}
        self.signal_queue: List[int] = []
        self.stopping = False
        self.stop_groups: List[List[str]] = []
        self.group_deadline = 0.0
        self.stop_deadline = 0.0
        self.dns_sockets: List[Tuple[socket.socket, socket.socket]] = []
        self.plugin_socket: Optional[socket.socket] = None
        self.lock = PidLock(config.lock_filename)
        self.publisher: Any = None
        self.control: Optional[ControlServer] = None
        self.mp: Any = None
        self._sig_r = -1
        self._sig_w = -1

    # ---------------------------------------------------------------- start-up

    def run(self) -> int:
        try:
            self.lock.acquire()
        except OSError as exc:
            raise StartupError(
                f"-lock.filename: cannot lock {self.config.lock_filename}: {exc.strerror}"
            ) from None
        try:
            return self._run_locked()
        finally:
            self.lock.release()

    def _run_locked(self) -> int:
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(FORKSERVER_PRELOAD)
        from multiprocessing import forkserver

        forkserver.ensure_running()  # before any ZeroMQ context or thread exists here
        self.node = nodeinfo.resolve(self.config)
        specs = all_specs(self.config.dns_replicas, self.config.workers, self.config.libnetwork)
        self.prepare_run_dir(specs)
        if any(s.module == "dns" for s in specs):
            self.open_dns_sockets()
        if any(s.module == "netplugin" for s in specs):
            self.open_plugin_socket()
        self.install_signals()
        import zmq

        from networkd.bus.publisher import Publisher

        self.publisher = Publisher(zmq.Context(), self.config.run_dir, "supervisor")
        self.workers_topic = self.publisher.state("state.workers")
        self.control = ControlServer(self.config.run_dir, self.handle_control)
        for spec in specs:
            self.workers[spec.name] = WorkerProcess(spec)
            self.spawn(self.workers[spec.name])
        log.info(
            "supervisor started pid=%d hostname=%s address=%s workers=%s",
            os.getpid(),
            self.node.hostname,
            self.node.address or "-",
            ",".join(self.workers),
        )
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running")
        try:
            while True:
                self.tick()
                if self.stopping and not self.stop_groups:
                    break
        finally:
            self.shutdown_resources()
        log.info("supervisor stopped")
        return 0

    def prepare_run_dir(self, specs: Sequence[WorkerSpec]) -> None:
        """Run dir and bus dir are root's; each publisher gets a directory only it may write."""
        run_dir = self.config.run_dir
        self.check_reachable(run_dir)
        try:
            for path in (run_dir, os.path.join(run_dir, "bus"), os.path.join(run_dir, "state")):
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o755)
        except OSError as exc:
            raise StartupError(f"-run.dir: cannot prepare {run_dir}: {exc.strerror}") from None
        owners = {"supervisor": 0}
        for spec in specs:
            owners[spec.name] = self.uid_for(spec)
        for name, uid in owners.items():
            self._own_dir(os.path.join(run_dir, "bus", name), uid, 0o755)
            self._own_dir(os.path.join(run_dir, "state", name.split(".")[0]), uid, 0o700)

    @staticmethod
    def check_reachable(run_dir: str) -> None:
        """Unprivileged workers reach the bus only if every parent directory is searchable."""
        path = os.path.dirname(os.path.abspath(run_dir))
        while path and path != "/":
            try:
                mode = os.stat(path).st_mode
            except OSError:
                break
            if not mode & 0o001:
                log.warning(
                    "run dir unreachable path=%s reason=%s is not searchable by other users",
                    run_dir,
                    path,
                )
                return
            path = os.path.dirname(path)

    @staticmethod
    def _own_dir(path: str, uid: int, mode: int) -> None:
        os.makedirs(path, exist_ok=True)
        if os.geteuid() == 0:
            gid = pwd.getpwuid(uid).pw_gid if uid else 0
            os.chown(path, uid, gid)
            for entry in os.listdir(path):
                os.lchown(os.path.join(path, entry), uid, gid)
        os.chmod(path, mode)

    def user_for(self, spec: WorkerSpec) -> str:
        if spec.user == "root":
            return "root"
        if spec.user == "plugin":
            return self.config.netplugin_user
        return self.config.dns_user if spec.user == "dns" else self.config.user

    def uid_for(self, spec: WorkerSpec) -> int:
        if os.geteuid() != 0:
            return os.geteuid()
        user = self.user_for(spec)
        return 0 if user == "root" else resolve_user(user).pw_uid

    def open_dns_sockets(self) -> None:
        from networkd.dns.sockets import create_listeners

        host, port = self.config.dns_host_port
        try:
            self.dns_sockets = create_listeners(host, port, self.config.dns_replicas)
        except OSError as exc:
            raise StartupError(
                f"-godns.addr: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        log.info("dns sockets bound addr=%s:%d replicas=%d", host, port, len(self.dns_sockets))

    def open_plugin_socket(self) -> None:
        from networkd.netdriver.plugin_socket import open_plugin_socket

        path = self.config.docker_plugin_socket
        try:
            self.plugin_socket = open_plugin_socket(path)
        except OSError as exc:
            raise StartupError(
                f"-docker.plugin.socket: cannot listen on {path}: {exc.strerror or exc}"
            ) from None
        log.info("docker plugin socket bound path=%s", path)

    def install_signals(self) -> None:
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._sig_w)
        for sig in self.SIGNALS:
            signal.signal(sig, self._queue_signal)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self.signal_queue.append(signum)

    # ---------------------------------------------------------------- workers

    def spawn(self, wp: WorkerProcess) -> None:
        launch = WorkerLaunch(
            name=wp.name,
            module=wp.spec.module,
            config=self.config,
            node=self.node,
            user=self.user_for(wp.spec),
            replica=int(wp.name.split(".")[1]) if "." in wp.name else 0,
        )
        fds: Dict[str, socket.socket] = {}
        if wp.spec.module == "dns" and launch.replica < len(self.dns_sockets):
            udp, tcp = self.dns_sockets[launch.replica]
            fds = {"udp": udp, "tcp": tcp}
        if wp.spec.module == "netplugin" and self.plugin_socket is not None:
            fds = {"plugin": self.plugin_socket}
        process = self.mp.Process(
            target=worker_entry, args=(launch, fds), name=wp.name, daemon=False
        )
        process.start()
        if wp.spawns:
            wp.restarts += 1
        wp.spawns += 1
        wp.process = process
        wp.pid = process.pid
        wp.started_at = time.time()
        self.transition(wp, ProcessState.STARTING, "spawned")
        self.publisher.event(f"worker.{wp.name}.start", WorkerStarted(wp.name, wp.pid))
        log.info("worker started name=%s pid=%d user=%s", wp.name, wp.pid, launch.user)

    def transition(self, wp: WorkerProcess, new: ProcessState, reason: str = "") -> None:
        old = wp.state
        if old == new:
            return
        check_transition(old, new)
        wp.state = new
        log.info(
            "worker state name=%s old=%s new=%s reason=%s",
            wp.name,
            old.value,
            new.value,
            reason or "-",
        )
        self.publisher.event(
            f"worker.{wp.name}.state", WorkerStateChanged(wp.name, old.value, new.value, reason)
        )
        self.publish_workers()

    def publish_workers(self) -> None:
        self.workers_topic.replace({name: wp.info() for name, wp in self.workers.items()})

    def reap(self, wp: WorkerProcess) -> None:
        """The worker's process ended: record it and decide what comes next."""
        process = wp.process
        process.join(0)
        code, signame, text = describe_exit(process.exitcode)
        pid = wp.pid
        lived = time.time() - wp.started_at
        wp.last_exit = text
        wp.process = None
        self.publisher.event(f"worker.{wp.name}.exit", WorkerExited(wp.name, pid, code, signame))
        level = (
            logging.INFO
            if code == 0 or signame in ("SIGTERM", "SIGINT", "SIGHUP")
            else logging.WARNING
        )
        log.log(level, "worker exited name=%s pid=%d how=%s after=%.1fs", wp.name, pid, text, lived)
        if self.stopping:
            self.transition(wp, ProcessState.EXITED, text)
            return
        if wp.state == ProcessState.STOPPING:
            self.transition(wp, ProcessState.EXITED, text)
            if wp.restart_after_stop:
                self.spawn(wp)
            return
        external = bool(signame) and signal.Signals[signame] in EXTERNAL_SIGNALS
        failed_start = wp.state == ProcessState.STARTING and not external and code != 0
        if code == EXIT_FATAL:
            wp.start_failures = MAX_START_FAILURES
            self.transition(wp, ProcessState.FATAL, f"{text}: worker said restarting will not help")
            log.error(
                "worker fatal name=%s reason=exit code %d means do not restart", wp.name, EXIT_FATAL
            )
            return
        if failed_start:
            wp.start_failures += 1
            if wp.start_failures >= MAX_START_FAILURES:
                self.transition(wp, ProcessState.FATAL, f"{wp.start_failures} failed starts")
                log.error(
                    "worker fatal name=%s reason=%d failed starts, last %s",
                    wp.name,
                    wp.start_failures,
                    text,
                )
                return
            delay = backoff_delay(wp.start_failures)
            wp.next_start = time.monotonic() + delay
            self.transition(wp, ProcessState.BACKOFF, f"{text}; retry in {delay:.2f}s")
            return
        if wp.state == ProcessState.RUNNING:
            wp.start_failures = 0
        self.transition(wp, ProcessState.EXITED, text)
        self.spawn(wp)

    def request_restart(self, wp: WorkerProcess, reason: str) -> None:
        if wp.state in (ProcessState.FATAL, ProcessState.BACKOFF, ProcessState.EXITED):
            wp.start_failures = 0
            if wp.state == ProcessState.BACKOFF:
                self.transition(wp, ProcessState.EXITED, reason)
            self.spawn(wp)
            return
        if wp.state == ProcessState.STOPPING:
            return
        wp.restart_after_stop = True
        wp.stop_deadline = time.monotonic() + self.config.stop_timeout
        self.transition(wp, ProcessState.STOPPING, reason)
        self._signal(wp, signal.SIGTERM)

    def _signal(self, wp: WorkerProcess, sig: int) -> None:
        if wp.alive():
            try:
                os.kill(wp.pid, sig)
            except ProcessLookupError:
                pass

    # ---------------------------------------------------------------- main loop

    def tick(self) -> None:
        waitables: List[Any] = [self._sig_r]
        if self.control is not None:
            waitables.append(self.control.sock)
        sentinels = {
            wp.process.sentinel: wp for wp in self.workers.values() if wp.process is not None
        }
        waitables.extend(sentinels)
        ready = multiprocessing.connection.wait(waitables, timeout=TICK)
        if self._sig_r in ready:
            try:
                while os.read(self._sig_r, 512):
                    pass
            except BlockingIOError:
                pass
        while self.signal_queue:
            self.dispatch_signal(self.signal_queue.pop(0))
        for sentinel, wp in sentinels.items():
            if sentinel in ready or not wp.alive():
                self.reap(wp)
        if self.control is not None and self.control.sock in ready:
            self.control.serve_ready()
        now = time.monotonic()
        for wp in self.workers.values():
            if (
                wp.state == ProcessState.STARTING
                and wp.alive()
                and time.time() - wp.started_at >= START_SECONDS
            ):
                self.transition(wp, ProcessState.RUNNING, f"up {START_SECONDS:.0f}s")
            elif wp.state == ProcessState.BACKOFF and not self.stopping and now >= wp.next_start:
                self.spawn(wp)
            elif wp.state == ProcessState.STOPPING and wp.alive() and now >= wp.stop_deadline:
                log.warning("worker stop timeout name=%s pid=%d action=SIGKILL", wp.name, wp.pid)
                self._signal(wp, signal.SIGKILL)
                wp.stop_deadline = now + self.config.stop_timeout
        if self.stopping:
            self.advance_stop()
        self.publisher.poll()

    def dispatch_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name.lower()
        handler = getattr(self, f"handle_{name[3:]}", None)
        if handler is not None:
            handler()

    def handle_term(self) -> None:
        """Graceful stop: workers stop in dependency order, VIPs are released."""
        self.begin_stop("SIGTERM")

    def handle_int(self) -> None:
        """Same as TERM (Ctrl-C in a terminal)."""
        self.begin_stop("SIGINT")

    def handle_hup(self) -> None:
        """Reload: re-read the configuration and restart the workers it affects."""
        if self.stopping:
            return
        logsetup.reopen()
        if self.reload_config is None:
            return
        try:
            new = self.reload_config()
        except (ConfigError, SystemExit) as exc:
            log.error("reload rejected reason=%s", exc)
            return
        old = self.config
        self.config = new
        self.node = nodeinfo.resolve(new)
        dns_sockets_changed = (old.godns_addr, old.dns_replicas) != (
            new.godns_addr,
            new.dns_replicas,
        )
        plugin_changed = (old.libnetwork, old.docker_plugin_socket) != (
            new.libnetwork,
            new.docker_plugin_socket,
        )
        if dns_sockets_changed or old.workers != new.workers or plugin_changed:
            log.warning(
                "reload needs a restart of networkd for changes to -godns.addr, -dns.replicas, "
                "-workers, -libnetwork or -docker.plugin.socket"
            )
            self.config = dataclasses.replace(
                new,
                godns_addr=old.godns_addr,
                dns_replicas=old.dns_replicas,
                workers=old.workers,
                libnetwork=old.libnetwork,
                docker_plugin_socket=old.docker_plugin_socket,
            )
        changed = [
            wp
            for wp in self.workers.values()
            if old.section_digest(wp.spec.config_fields)
            != self.config.section_digest(wp.spec.config_fields)
        ]
        log.info("reload done restarting=%s", ",".join(wp.name for wp in changed) or "-")
        for wp in changed:
            self.request_restart(wp, "configuration changed")

    def handle_usr1(self) -> None:
        """Reopen log files, here and in every worker."""
        logsetup.reopen()
        for wp in self.workers.values():
            self._signal(wp, signal.SIGUSR1)

    def handle_control(self, request: Dict[str, Any]) -> Dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "workers": [wp.status() for wp in self.workers.values()]}
        if cmd == "restart":
            name = request.get("worker")
            targets = [wp for wp in self.workers.values() if name in (wp.name, wp.spec.module)]
            if not targets:
                return {
                    "ok": False,
                    "error": f"no worker named {name!r}; have {', '.join(self.workers)}",
                }
            if self.stopping:
                return {"ok": False, "error": "networkd is stopping"}
            for wp in targets:
                self.request_restart(wp, "restart requested")
            return {"ok": True, "restarted": [wp.name for wp in targets]}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # ---------------------------------------------------------------- stopping

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            log.warning("second stop signal: killing workers now")
            for wp in self.workers.values():
                self._signal(wp, signal.SIGKILL)
            return
        self.stopping = True
        log.info("supervisor stopping reason=%s", reason)
        sdnotify.notify("STOPPING=1")
        self.publisher.event("supervisor.stopping", SupervisorStopping(reason))
        groups: Dict[int, List[str]] = {}
        for wp in self.workers.values():
            groups.setdefault(wp.spec.stop_group, []).append(wp.name)
        self.stop_groups = [groups[k] for k in sorted(groups)]
        self.group_deadline = 0.0
        # -stop.timeout bounds the whole stop, not each group: systemd's TimeoutStopSec must
        # only be longer than it (plus the 2 s of the final SIGKILL round).
        self.stop_deadline = time.monotonic() + self.config.stop_timeout

    def advance_stop(self) -> None:
        """Stop one group at a time: INT (final stop), then KILL after the timeout."""
        while self.stop_groups:
            group = [self.workers[name] for name in self.stop_groups[0]]
            if not self.group_deadline:
                self.group_deadline = max(self.stop_deadline, time.monotonic() + 0.5)
                for wp in group:
                    if wp.state == ProcessState.BACKOFF:
                        self.transition(wp, ProcessState.EXITED, "daemon stopping")
                    if wp.alive():
                        wp.restart_after_stop = False
                        wp.stop_deadline = self.group_deadline
                        if wp.state != ProcessState.STOPPING:
                            self.transition(wp, ProcessState.STOPPING, "daemon stopping")
                        self._signal(wp, signal.SIGINT)
            if any(wp.alive() for wp in group):
                if time.monotonic() >= self.group_deadline:
                    for wp in group:
                        if wp.alive():
                            log.warning(
                                "worker stop timeout name=%s pid=%d action=SIGKILL", wp.name, wp.pid
                            )
                            self._signal(wp, signal.SIGKILL)
                    self.group_deadline = time.monotonic() + 2.0
                return
            self.stop_groups.pop(0)
            self.group_deadline = 0.0

    def shutdown_resources(self) -> None:
        for wp in self.workers.values():
            if wp.alive():
                self._signal(wp, signal.SIGKILL)
                wp.process.join(2)
        if self.control is not None:
            self.control.close()
        for udp, tcp in self.dns_sockets:
            udp.close()
            tcp.close()
        if self.plugin_socket is not None:
            from networkd.netdriver.plugin_socket import close_plugin_socket

            close_plugin_socket(self.plugin_socket, self.config.docker_plugin_socket)
        if self.publisher is not None:
            self.publisher.close()
