"""The supervisor (arbiter): owns the lock, the run dir and the DNS sockets; runs workers.

Signal handlers only queue the signal; the main loop calls ``handle_<signal>`` (or logs
``signal ignored`` for the signals of ``networkd.signals``). Workers are started through
a multiprocessing fork server, created before this process opens any ZeroMQ context, so
nothing that breaks across fork exists where the forking happens. The loop waits on
process sentinels, the signal pipe and the control socket, on the monotonic clock. What
follows a worker's exit is ``proc_state.decide``; this module only carries it out. An
exception in the loop starts the graceful stop (VIPs released), never a bare exit.
"""

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from networkd import log as logsetup
from networkd import node as nodeinfo
from networkd import rundir, sdnotify, signals, testhooks, users
from networkd.bus.messages import (
    SupervisorStopping,
    WorkerExited,
    WorkerInfo,
    WorkerStarted,
    WorkerStateChanged,
)
from networkd.config import FLAGS, Config, ConfigError
from networkd.control import ControlServer
from networkd.lockfile import PidLock
from networkd.proc_state import (
    START_SECONDS,
    Decision,
    Exit,
    ProcessState,
    check_transition,
    decide,
    is_up,
)
from networkd.workers import SUPERVISOR_SUBSCRIBERS, WorkerSpec, all_specs, worker_config
from networkd.workers.base import NodeIdentity, WorkerLaunch, worker_entry

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
FLAG_OF_FIELD = {field: flag for flag, (field, _kind, _help) in FLAGS.items()}
# The supervisor stopped gracefully after an exception in its main loop (EX_SOFTWARE).
EXIT_INTERNAL_ERROR = 70
# Flags a HUP cannot change: sockets, the worker set and accounts are fixed at start.
RESTART_ONLY_FIELDS = (
    "godns_addr",
    "dns_replicas",
    "workers",
    "user",
    "dns_user",
    "user_fallback",
    "libnetwork",
    "docker_plugin_socket",
    "netplugin_user",
)
# Workers that get the DNS listening sockets (replicas read them, the forwarder sends on UDP).
DNS_SOCKET_MODULES = ("dns", "dns_forwarder")


def replica_index(name: str) -> int:
    """``dns.3`` -> 3; 0 for a worker that is not a numbered replica."""
    suffix = name.rpartition(".")[2]
    return int(suffix) if "." in name and suffix.isdigit() else 0


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
        self.started_at = 0.0  # wall clock, for display only
        self.started_mono = 0.0
        self.last_exit = ""
        self.start_failures = 0
        self.next_start = 0.0
        self.stop_deadline = 0.0

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
            "uptime_s": round(time.monotonic() - self.started_mono, 3) if info.pid else 0.0,
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
        self.accounts: Dict[str, users.Account] = {}
        self.signal_queue: List[int] = []
        self.stopping = False
        self.exit_code = 0
        self.stop_groups: List[List[str]] = []
        self.group_deadline = 0.0
        self.stop_deadline = 0.0
        self.dns_sockets: Optional[Tuple[socket.socket, socket.socket]] = None
        self.plugin_socket: Optional[socket.socket] = None
        self.lock = PidLock(config.lock_filename)
        self.publisher: Any = None
        self.control: Optional[ControlServer] = None
        self.mp: Any = None
        self._sig_r = -1
        self._sig_w = -1

    # ---------------------------------------------------------------- start-up

    def run(self) -> int:
        specs = all_specs(self.config.dns_replicas, self.config.workers, self.config.libnetwork)
        self.accounts = self.check_accounts(specs)
        try:
            self.lock.acquire()
        except OSError as exc:
            raise StartupError(
                f"-lock.filename: cannot lock {self.config.lock_filename}: {exc.strerror}"
            ) from None
        try:
            return self._run_locked(specs)
        finally:
            self.lock.release()

    def check_accounts(self, specs: Sequence[WorkerSpec]) -> Dict[str, users.Account]:
        """Resolve and check -user / -dns.user (networkd.users); UserError means exit 78."""
        if os.geteuid() != 0:
            log.info("worker users unchanged reason=not root uid=%d", os.geteuid())
            return {}
        kinds = {s.user for s in specs}
        flags = {"user": self.config.user, "dns": self.config.dns_user}
        flags["plugin"] = self.config.netplugin_user
        names = {kind: name for kind, name in flags.items() if kind in kinds}
        accounts = users.resolve_accounts(names, self.config.user_fallback)
        users.check_importable(accounts, users.import_paths())
        for kind, account in accounts.items():
            if account.name != names[kind]:
                log.warning("user missing name=%s fallback=%s", names[kind], account.name)
        return accounts

    def _run_locked(self, specs: Sequence[WorkerSpec]) -> int:
        self.start_fork_server()
        self.node = nodeinfo.resolve(self.config)
        self.prepare_run_dir(specs)
        if any(s.module in DNS_SOCKET_MODULES for s in specs):
            self.open_dns_sockets()
        if any(s.module == "netplugin" for s in specs):
            self.open_plugin_socket()
        self.install_signals()
        self.open_bus_and_control()
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
            self.main_loop()
        finally:
            self.shutdown_resources()
        log.info("supervisor stopped exit=%d", self.exit_code)
        return self.exit_code

    def start_fork_server(self) -> None:
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(FORKSERVER_PRELOAD)
        from multiprocessing import forkserver

        forkserver.ensure_running()  # before any ZeroMQ context or thread exists here

    def open_bus_and_control(self) -> None:
        import zmq

        from networkd.bus.publisher import Publisher

        self.publisher = Publisher(
            zmq.Context(),
            self.config.run_dir,
            "supervisor",
            allowed_groups=self.bus_groups(SUPERVISOR_SUBSCRIBERS),
        )
        self.workers_topic = self.publisher.state("state.workers")
        self.control = ControlServer(self.config.run_dir, self.handle_control)

    def prepare_run_dir(self, specs: Sequence[WorkerSpec]) -> None:
        """Run dir and bus dir are root's; each publisher gets a directory only it may write."""
        owners = {"supervisor": (0, 0)}
        for spec in specs:
            owners[spec.name] = self.owner_of(spec)
        try:
            rundir.prepare(self.config.run_dir, owners)
        except rundir.RunDirError as exc:
            raise StartupError(f"-run.dir: {exc.strerror}") from None

    def account_of(self, spec: WorkerSpec) -> Optional[users.Account]:
        return None if spec.user == "root" else self.accounts.get(spec.user)

    def user_for(self, spec: WorkerSpec) -> str:
        """Who the worker runs as, for logs: its account, root, or (not root) our uid."""
        account = self.account_of(spec)
        if account is not None:
            return account.name
        return "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"

    def owner_of(self, spec: WorkerSpec) -> Tuple[int, int]:
        """(uid, gid) owning the worker's bus and state directories."""
        account = self.account_of(spec)
        if account is not None:
            return account.uid, account.gid
        return os.geteuid(), os.getegid()

    def bus_groups(self, kinds: Sequence[str]) -> Optional[Tuple[int, ...]]:
        """The groups of the running worker kinds allowed to connect to a root endpoint
        (None: no restriction, for unprivileged publishers)."""
        if not kinds:
            return None
        return tuple(self.accounts[k].gid for k in kinds if k in self.accounts)

    def open_dns_sockets(self) -> None:
        """One UDP and one TCP socket that every DNS replica shares (networkd/dns/sockets.py)."""
        from networkd.dns.sockets import create_listener

        host, port = self.config.dns_host_port
        try:
            self.dns_sockets = create_listener(host, port)
        except OSError as exc:
            raise StartupError(
                f"-godns.addr: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        log.info("dns sockets bound addr=%s:%d replicas=%d", host, port, self.config.dns_replicas)

    def dns_fds(self, spec: WorkerSpec) -> Dict[str, socket.socket]:
        """The listening sockets a worker gets: both for a replica, the UDP one (to send
        answers on) for the forwarder, none for the others."""
        if self.dns_sockets is None or spec.module not in DNS_SOCKET_MODULES:
            return {}
        udp, tcp = self.dns_sockets
        return {"udp": udp, "tcp": tcp} if spec.module == "dns" else {"udp": udp}

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
        for sig in (*self.SIGNALS, *signals.LOGGED):
            signal.signal(sig, self._queue_signal)
        for sig in signals.QUIET:
            signal.signal(sig, signal.SIG_IGN)

    def _queue_signal(self, signum: int, frame: Any) -> None:
        self.signal_queue.append(signum)

    # ---------------------------------------------------------------- workers

    def spawn(self, wp: WorkerProcess) -> None:
        launch = WorkerLaunch(
            name=wp.name,
            module=wp.spec.module,
            config=worker_config(self.config, wp.spec),
            node=self.node,
            user=self.user_for(wp.spec),
            replica=replica_index(wp.name),
            account=self.account_of(wp.spec),
            bus_groups=self.bus_groups(wp.spec.subscribers),
        )
        fds = self.dns_fds(wp.spec)
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
        wp.started_mono = time.monotonic()
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
        """The worker's process ended: record it, then do what the restart policy says."""
        how = self.record_exit(wp)
        self.carry_out(wp, decide(wp.state, how, self.stopping, wp.start_failures))

    def record_exit(self, wp: WorkerProcess) -> Exit:
        process = wp.process
        process.join(0)
        how = Exit.from_exitcode(process.exitcode)
        pid = wp.pid
        wp.last_exit = how.text
        wp.process = None
        self.publisher.event(
            f"worker.{wp.name}.exit", WorkerExited(wp.name, pid, how.code, how.signal)
        )
        quiet = how.code == 0 or how.signal in ("SIGTERM", "SIGINT", "SIGHUP")
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "worker exited name=%s pid=%d how=%s after=%.1fs",
            wp.name,
            pid,
            how.text,
            time.monotonic() - wp.started_mono,
        )
        return how

    def carry_out(self, wp: WorkerProcess, decision: Decision) -> None:
        wp.start_failures = decision.start_failures
        self.transition(wp, decision.state, decision.reason)
        if decision.state == ProcessState.FATAL:
            log.error("worker fatal name=%s reason=%s", wp.name, decision.reason)
        if decision.restart_in == 0:
            self.spawn(wp)
        elif decision.restart_in is not None:
            wp.next_start = time.monotonic() + decision.restart_in

    def request_restart(self, wp: WorkerProcess, reason: str) -> None:
        if wp.state in (ProcessState.FATAL, ProcessState.BACKOFF, ProcessState.EXITED):
            wp.start_failures = 0
            if wp.state == ProcessState.BACKOFF:
                self.transition(wp, ProcessState.EXITED, reason)
            self.spawn(wp)
            return
        if wp.state == ProcessState.STOPPING:
            return
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

    def main_loop(self) -> None:
        failed_before = False
        while not (self.stopping and not self.stop_groups):
            try:
                self.tick()
            except Exception:
                if not self.recover(failed_before):
                    return
                failed_before = True

    def recover(self, failed_before: bool) -> bool:
        """An exception escaped the loop: stop gracefully, as on TERM (VIPs released), and
        exit 70. Returns False to give up once the stop deadline has passed (the shutdown
        then SIGKILLs what is left)."""
        log.exception("supervisor loop failed action=graceful stop")
        self.exit_code = EXIT_INTERNAL_ERROR
        if failed_before:
            time.sleep(TICK)  # failing on every pass: do not spin
        try:
            if not self.stopping:
                self.begin_stop("internal error")
            self.advance_stop()  # the stop goes on even if the failing part comes first
        except Exception:
            log.exception("supervisor stop step failed")
        return time.monotonic() < self.stop_deadline + 2.0

    def tick(self) -> None:
        sentinels = {
            wp.process.sentinel: wp for wp in self.workers.values() if wp.process is not None
        }
        ready = self.wait(list(sentinels))
        while self.signal_queue:
            self.dispatch_signal(self.signal_queue.pop(0))
        for sentinel, wp in sentinels.items():
            if sentinel in ready or not wp.alive():
                self.reap(wp)
        if self.control is not None and self.control.sock in ready:
            self.control.serve_ready()
        now = time.monotonic()
        for wp in self.workers.values():
            self.check_timers(wp, now)
        if self.stopping:
            self.advance_stop()
        self.publisher.poll()

    def wait(self, sentinels: List[Any]) -> List[Any]:
        """Wait up to TICK for a signal, a worker's exit or a control request."""
        waitables: List[Any] = [self._sig_r, *sentinels]
        if self.control is not None:
            waitables.append(self.control.sock)
        ready = multiprocessing.connection.wait(waitables, timeout=TICK)
        if self._sig_r in ready:
            try:
                while os.read(self._sig_r, 512):
                    pass
            except BlockingIOError:
                pass
        return list(ready)

    def check_timers(self, wp: WorkerProcess, now: float) -> None:
        """Up long enough, backoff over, stop timeout passed (monotonic clock)."""
        if is_up(wp.state, wp.alive(), wp.started_mono, now):
            self.transition(wp, ProcessState.RUNNING, f"up {START_SECONDS:.0f}s")
        elif wp.state == ProcessState.BACKOFF and not self.stopping and now >= wp.next_start:
            self.spawn(wp)
        elif wp.state == ProcessState.STOPPING and wp.alive() and now >= wp.stop_deadline:
            log.warning("worker stop timeout name=%s pid=%d action=SIGKILL", wp.name, wp.pid)
            self._signal(wp, signal.SIGKILL)
            wp.stop_deadline = now + self.config.stop_timeout

    def dispatch_signal(self, signum: int) -> None:
        name = signals.name(signum)
        handler = getattr(self, f"handle_{name[3:].lower()}", None)
        if handler is None:
            log.info("signal ignored name=%s", name)
            return
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
        self.node = nodeinfo.resolve(new)
        self.config = self.keep_restart_only(old, new)
        changed = [
            wp
            for wp in self.workers.values()
            if old.section_digest(wp.spec.config_fields)
            != self.config.section_digest(wp.spec.config_fields)
        ]
        log.info("reload done restarting=%s", ",".join(wp.name for wp in changed) or "-")
        for wp in changed:
            self.request_restart(wp, "configuration changed")

    @staticmethod
    def keep_restart_only(old: Config, new: Config) -> Config:
        """``new`` with the fields only a restart can change put back to ``old``'s."""
        changed = [f for f in RESTART_ONLY_FIELDS if getattr(old, f) != getattr(new, f)]
        if not changed:
            return new
        log.warning(
            "reload needs a restart of networkd for changes to %s",
            ", ".join("-" + FLAG_OF_FIELD[f] for f in changed),
        )
        return dataclasses.replace(new, **{f: getattr(old, f) for f in RESTART_ONLY_FIELDS})

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
            return self.control_restart(request.get("worker"))
        if cmd == "test-raise" and testhooks.enabled():
            raise testhooks.InjectedFault("test hook: main loop failure")
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def control_restart(self, name: Any) -> Dict[str, Any]:
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

    # ---------------------------------------------------------------- stopping

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            log.warning("second stop signal: killing workers now")
            for wp in self.workers.values():
                self._signal(wp, signal.SIGKILL)
            return
        self.stopping = True
        groups: Dict[int, List[str]] = {}
        for wp in self.workers.values():
            groups.setdefault(wp.spec.stop_group, []).append(wp.name)
        self.stop_groups = [groups[k] for k in sorted(groups)]
        self.group_deadline = 0.0
        # -stop.timeout bounds the whole stop, not each group: systemd's TimeoutStopSec must
        # only be longer than it (plus the 2 s of the final SIGKILL round).
        self.stop_deadline = time.monotonic() + self.config.stop_timeout
        log.info("supervisor stopping reason=%s", reason)
        sdnotify.notify("STOPPING=1")
        self.publisher.event("supervisor.stopping", SupervisorStopping(reason))

    def advance_stop(self) -> None:
        """Stop one group at a time: INT (final stop), then KILL after the timeout."""
        while self.stop_groups:
            group = [self.workers[name] for name in self.stop_groups[0]]
            if not self.group_deadline:
                self.group_deadline = max(self.stop_deadline, time.monotonic() + 0.5)
                for wp in group:
                    self.stop_worker(wp)
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

    def stop_worker(self, wp: WorkerProcess) -> None:
        """The final stop of one worker: INT (it tears down what it owns), by the deadline."""
        if wp.state == ProcessState.BACKOFF:
            self.transition(wp, ProcessState.EXITED, "daemon stopping")
        if wp.alive():
            wp.stop_deadline = self.group_deadline
            if wp.state != ProcessState.STOPPING:
                self.transition(wp, ProcessState.STOPPING, "daemon stopping")
            self._signal(wp, signal.SIGINT)

    def shutdown_resources(self) -> None:
        for wp in self.workers.values():
            if wp.alive():
                self._signal(wp, signal.SIGKILL)
                wp.process.join(2)
        if self.control is not None:
            self.control.close()
        if self.dns_sockets is not None:
            for sock in self.dns_sockets:
                sock.close()
        if self.plugin_socket is not None:
            from networkd.netdriver.plugin_socket import close_plugin_socket

            close_plugin_socket(self.plugin_socket, self.config.docker_plugin_socket)
        if self.publisher is not None:
            self.publisher.close()
