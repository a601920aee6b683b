"""Watching VIPs from outside the daemon: who holds an address over time, and what clients see.

``AddressTimeline`` follows ``ip monitor address`` in every node namespace (an event per
change, time-stamped when read), so moves, instants with two holders and time without an
owner are exact rather than sampled. ``TcpProber`` opens a TCP connection to a VIP every
few milliseconds from a client namespace and records how each one ended (answered by
which node, refused, timed out, unreachable).
"""

import errno
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from tests.lab.lab import LabClient, LabNode
from tests.lab.netns import in_netns


def lock_owner(etcd: Any, vip: str) -> str:
    """The node holding ``vip``'s lock in etcd, "" for none."""
    value = etcd.get(f"/lain/networkd/vips/{vip}.lock")[0]
    return value.decode() if value else ""


@dataclass(frozen=True)
class Change:
    at: float  # time.monotonic() in the test process
    node: str
    address: str
    present: bool


def parse_monitor_line(line: str) -> Optional[Tuple[str, bool]]:
    """(address, present) from one ``ip -o monitor address`` line; None for other lines."""
    words = line.split()
    for kind in ("inet", "inet6"):
        if kind in words:
            index = words.index(kind)
            if index + 1 < len(words):
                address = words[index + 1].split("/", 1)[0]
                return address, not line.startswith("Deleted")
    return None


class AddressTimeline:
    """Every add/remove of the watched addresses on every node, from the kernel's events."""

    def __init__(self, nodes: Sequence[LabNode], addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.changes: List[Change] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._procs: List[subprocess.Popen] = []
        self._threads: List[threading.Thread] = []
        for node in nodes:
            proc = subprocess.Popen(
                ["ip", "-n", node.ns, "-o", "monitor", "address"],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self._procs.append(proc)
            thread = threading.Thread(target=self._read, args=(node.name, proc), daemon=True)
            thread.start()
            self._threads.append(thread)
        time.sleep(0.2)  # the monitors listen before the initial state is read
        self.initial: Dict[str, Set[str]] = {
            ip: {n.name for n in nodes if n.has_address(ip)} for ip in self.addresses
        }

    def _read(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parsed = parse_monitor_line(line)
            if parsed is None or parsed[0] not in self.addresses:
                continue
            with self._lock:
                self.changes.append(Change(time.monotonic(), name, parsed[0], parsed[1]))

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "AddressTimeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what happened -----------------------------------------------------------------

    def spans(self, address: str, until: Optional[float] = None) -> List[Tuple[float, Set[str]]]:
        """(start time, holders) for each stretch with a constant set of holders."""
        holders = set(self.initial.get(address, set()))
        out: List[Tuple[float, Set[str]]] = [(self.started, set(holders))]
        with self._lock:
            changes = [c for c in self.changes if c.address == address]
        for change in sorted(changes, key=lambda c: c.at):
            if until is not None and change.at > until:
                break
            if change.present:
                holders.add(change.node)
            else:
                holders.discard(change.node)
            out.append((change.at, set(holders)))
        return out

    def holders_now(self, address: str) -> Set[str]:
        return self.spans(address)[-1][1]

    def moves(self, address: str) -> int:
        """How often the address went to a node other than its previous holder."""
        count = 0
        last = ""
        for _, holders in self.spans(address):
            if len(holders) == 1:
                (holder,) = holders
                if last and holder != last:
                    count += 1
                last = holder
        return count

    def two_holder_seconds(
        self, address: str, since: float = 0.0, until: Optional[float] = None
    ) -> float:
        """Seconds with more than one holder, within [since, until] when given."""
        return self._time_where(address, lambda h: len(h) > 1, since, until)

    def max_holders(self, address: str) -> int:
        return max(len(h) for _, h in self.spans(address))

    def no_owner_longest(self, address: str, since: float = 0.0) -> float:
        """The longest stretch (after ``since``) during which nobody held the address."""
        longest = 0.0
        spans = self.spans(address) + [(time.monotonic(), set())]
        for (start, holders), (end, _) in zip(spans, spans[1:]):
            if not holders and end > since:
                longest = max(longest, end - max(start, since))
        return longest

    def _time_where(
        self, address: str, test, since: float = 0.0, until: Optional[float] = None
    ) -> float:
        total = 0.0
        now = time.monotonic()
        spans = self.spans(address) + [(now, set())]
        for (start, holders), (end, _) in zip(spans, spans[1:]):
            if test(holders):
                total += max(0.0, min(end, now if until is None else until) - max(start, since))
        return total


@dataclass(frozen=True)
class Outcome:
    at: float  # when the connection was started
    result: str  # the answering node's name, or "refused", "timeout", "unreachable", "error:N"
    ended: float = 0.0  # when the answer (or the failure) came


class TcpProber:
    """A TCP connection to ``ip:port`` from ``client`` every ``interval`` seconds."""

    def __init__(
        self, client: LabClient, ip: str, port: int, interval: float = 0.01, timeout: float = 1.0
    ) -> None:
        self.client = client
        self.target = (ip, port)
        self.interval = interval
        self.timeout = timeout
        self.outcomes: List[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _new_socket(self) -> socket.socket:
        with in_netns(self.client.ns):
            sock = socket.socket(socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET)
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        pending: Dict[socket.socket, Tuple[float, bytes]] = {}
        next_at = time.monotonic()
        while not self._stop.is_set() or pending:
            now = time.monotonic()
            if now >= next_at and not self._stop.is_set():
                next_at = now + self.interval
                sock = self._new_socket()
                code = sock.connect_ex(self.target)
                if code in (0, errno.EINPROGRESS):
                    pending[sock] = (now, b"")
                    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                else:
                    self._record(now, code)
                    sock.close()
            wait = max(0.0, min(next_at - time.monotonic(), 0.005))
            for key, _mask in selector.select(wait) if pending else []:
                sock = key.fileobj  # type: ignore[assignment]
                self._progress(selector, pending, sock)
            now = time.monotonic()
            for sock, (started, _) in list(pending.items()):
                if now - started > self.timeout:
                    self._finish(selector, pending, sock, "timeout")
            if not pending:
                time.sleep(max(0.0, min(next_at - time.monotonic(), 0.005)))

    def _progress(self, selector, pending, sock: socket.socket) -> None:
        started, data = pending[sock]
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._finish(selector, pending, sock, "", code)
            return
        try:
            chunk = sock.recv(256)
        except BlockingIOError:
            selector.modify(sock, selectors.EVENT_READ)
            return
        except OSError as exc:
            self._finish(selector, pending, sock, "", exc.errno or -1)
            return
        data += chunk
        if not chunk or data.endswith(b"\n"):
            text = data.decode(errors="replace").strip()
            self._finish(selector, pending, sock, text.split()[0] if text else "closed")
        else:
            pending[sock] = (started, data)

    def _finish(self, selector, pending, sock, result: str, code: int = 0) -> None:
        started, _ = pending.pop(sock)
        selector.unregister(sock)
        sock.close()
        if code:
            self._record(started, code)
        else:
            self.outcomes.append(Outcome(started, result, time.monotonic()))

    def _record(self, at: float, code: int) -> None:
        if code == errno.ECONNREFUSED:
            result = "refused"
        elif code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            result = "unreachable"
        elif code == errno.ETIMEDOUT:
            result = "timeout"
        else:
            result = f"error:{errno.errorcode.get(code, code)}"
        self.outcomes.append(Outcome(at, result, time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    def summary(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for outcome in self.outcomes:
            out[outcome.result] = out.get(outcome.result, 0) + 1
        return out


class LockViews:
    """Each node's view of who owns a VIP, from its elector's ``state.vip_status`` (the
    same messages ``networkdctl tap state.vip_status`` prints), time-stamped on arrival."""

    def __init__(self, nodes: Sequence[LabNode], vip: str) -> None:
        self.vip = vip
        self.names = [n.name for n in nodes]
        self.run_dirs = {n.name: n.daemon.run_dir for n in nodes}
        self.seen: List[Tuple[float, str, str]] = []  # (at, node, owner in its view)
        self._last: Dict[str, str] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        import zmq

        from networkd.bus.subscriber import Subscriber

        context = zmq.Context()
        subs = {
            name: Subscriber(context, run_dir, {"elector": ["state.vip_status"]})
            for name, run_dir in self.run_dirs.items()
        }
        self._ready.set()
        try:
            while not self._stop.is_set():
                for name, sub in subs.items():
                    sub.poll(timeout_ms=5)
                    items = sub.state("elector", "state.vip_status") or {}
                    item = items.get(self.vip)
                    owner = getattr(item, "owner", "") if item is not None else ""
                    if self._last.get(name) != owner:
                        self._last[name] = owner
                        self.seen.append((time.monotonic(), name, owner))
        finally:
            for sub in subs.values():
                sub.close()
            context.destroy(0)

    def view(self, name: str, at: float) -> str:
        """The owner node ``name`` published last before ``at``."""
        owner = ""
        for when, node, value in list(self.seen):
            if node == name and when <= at:
                owner = value
        return owner

    def current_after(self, name: str, owner: str, since: float) -> Optional[float]:
        """When ``name``'s view became ``owner`` for good, counted from ``since`` (0 if it
        already was); None if it is not ``owner`` now."""
        if self._last.get(name) != owner:
            return None
        changes = [when for when, node, _ in list(self.seen) if node == name and when > since]
        return (changes[-1] - since) if changes else 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
