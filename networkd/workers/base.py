"""What every worker process runs before its own ``main``: the worker runtime.

The supervisor starts workers through a multiprocessing fork server, so the forking
process has no gRPC channel, ZeroMQ context or thread. In the new process this module
sets the process title and the parent-death signal, sets up logging, drops privileges,
installs the signal handlers, and then calls ``networkd.workers.<module>.main(ctx)``.

Signals to a worker: TERM or HUP ask for a restart (exit quickly, touch nothing on the
host); INT is the supervisor's final stop (tear down what the worker owns, then exit);
USR1 reopens the log file.
"""

import ctypes
import dataclasses
import grp
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

from networkd import log as logsetup
from networkd import testhooks
from networkd.config import Config
from networkd.proc_state import EXIT_FATAL as EXIT_FATAL  # re-exported for the workers
from networkd.users import Account
from networkd.wakeup import Wakeup

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# Set when this worker process is asked to stop: code that waits (for etcd, say) in a
# thread or before the main loop runs waits on it instead of sleeping.
STOP_EVENT = threading.Event()

# Exit codes a worker returns; EXIT_FATAL (78, from proc_state) means "restarting will
# not help".
EXIT_OK = 0
EXIT_ERROR = 1


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    """This node's name and address, resolved once by the supervisor."""

    hostname: str
    address: str


@dataclasses.dataclass(frozen=True)
class WorkerLaunch:
    """Everything a worker process receives from the supervisor (pickled).

    ``config`` is the worker's own Config (``networkd.workers.worker_config``), never the
    supervisor's: the pickle lands in the worker's memory. ``account`` is who the worker
    becomes (None: it stays root, or the daemon does not run as root); ``bus_groups`` the
    groups allowed to connect to its bus endpoint besides root (None: every local user).
    """

    name: str
    module: str
    config: Config
    node: NodeIdentity
    user: str
    replica: int = 0
    account: Optional[Account] = None
    bus_groups: Optional[Tuple[int, ...]] = None


class WorkerContext:
    """The worker's view of the daemon: config, identity, bus helpers, stop flags."""

    def __init__(self, launch: WorkerLaunch, fds: Optional[Dict[str, Any]] = None) -> None:
        self.name = launch.name
        self.config = launch.config
        self.run_dir = launch.config.run_dir
        self.hostname = launch.node.hostname
        self.node_address = launch.node.address
        self.replica = launch.replica
        self.bus_groups = launch.bus_groups
        self.fds: Dict[str, Any] = dict(fds or {})
        self.log = logging.getLogger(f"networkd.{launch.name}")
        self.stopping = False
        self.final = False
        # Readable once a stop is asked for: loops that sleep long in a poll add ``rfd``
        # (a signal handler runs between the poll's retries; this makes the retry return).
        self.stop_wakeup = Wakeup()
        self.started_at = time.time()
        self._zmq: Any = None

    @property
    def state_dir(self) -> str:
        """A directory this worker's uid may write (e.g. the elector's lease file)."""
        return os.path.join(self.run_dir, "state", self.name.split(".")[0])

    @property
    def zmq_context(self) -> Any:
        if self._zmq is None:
            import zmq

            self._zmq = zmq.Context()
        return self._zmq

    def publisher(self) -> Any:
        from networkd.bus.publisher import Publisher

        return Publisher(
            self.zmq_context,
            self.run_dir,
            self.name,
            epoch=self.started_at,
            allowed_groups=self.bus_groups,
        )

    def subscriber(self, sources: Dict[str, List[str]]) -> Any:
        from networkd.bus.subscriber import Subscriber

        return Subscriber(self.zmq_context, self.run_dir, sources)

    def dns_replica_names(self) -> List[str]:
        return [f"dns.{i}" for i in range(self.config.dns_replicas)]

    def request_stop(self, final: bool) -> None:
        self.stopping = True
        self.final = self.final or final
        STOP_EVENT.set()
        self.stop_wakeup.poke()

    def close(self) -> None:
        if self._zmq is not None:
            self._zmq.destroy(linger=0)
            self._zmq = None


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Die with the parent: systemd restarting the unit leaves no orphans behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def set_no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def drop_privileges(account: Optional[Account]) -> None:
    """Become ``account`` for good: no supplementary groups, no capabilities, no way back.

    The supervisor resolved and checked the account at start (``networkd.users``)."""
    if account is None or os.geteuid() != 0:
        return
    os.setgroups([])
    os.setgid(account.gid)
    os.setuid(account.uid)
    set_no_new_privs()


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def process_title(name: str) -> str:
    if name.startswith("dns."):
        return f"networkd: dns [{name.split('.', 1)[1]}]"
    if name == "dns-forwarder":
        return "networkd: dns forwarder"
    return f"networkd: {name}"


def release_fork_server_pipe() -> None:
    """Close the fork server's "alive" pipe that multiprocessing hands to every child.

    The fork server exits when the supervisor's end of that pipe closes; while workers
    hold a copy it never does, and so the workers never get their parent-death signal
    when the supervisor is killed. Workers start no processes of their own.
    """
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


def worker_entry(launch: WorkerLaunch, fds: Dict[str, socket.socket]) -> None:
    """Process target: runs in the new worker process."""
    parent = os.getppid()
    set_parent_death_signal()
    release_fork_server_pipe()
    try:
        import setproctitle

        setproctitle.setproctitle(process_title(launch.name))
    except ImportError:  # pragma: no cover - a dependency; the title is cosmetic
        pass
    logsetup.setup(launch.config, launch.name)
    ctx = WorkerContext(launch, fds)

    def on_restart(signum: int, frame: Optional[FrameType]) -> None:
        ctx.request_stop(final=False)

    def on_final(signum: int, frame: Optional[FrameType]) -> None:
        ctx.request_stop(final=True)

    def on_reopen(signum: int, frame: Optional[FrameType]) -> None:
        logsetup.reopen()

    signal.signal(signal.SIGTERM, on_restart)
    signal.signal(signal.SIGHUP, on_restart)
    signal.signal(signal.SIGINT, on_final)
    signal.signal(signal.SIGUSR1, on_reopen)
    testhooks.install_worker_hooks()
    try:
        # Import first: the code is read with root's rights, then the rights go.
        module = importlib.import_module(f"networkd.workers.{launch.module}")
        drop_privileges(launch.account)
        # A change of credentials clears the parent-death signal (prctl(2)): set it again,
        # and leave at once if the parent is already gone.
        set_parent_death_signal()
        if os.getppid() != parent:
            os._exit(EXIT_ERROR)
        code = module.main(ctx)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except BaseException:
        ctx.log.exception("worker crashed name=%s", launch.name)
        code = EXIT_ERROR
    finally:
        ctx.close()
        logging.shutdown()
    sys.stdout.flush()
    os._exit(int(code or 0))
