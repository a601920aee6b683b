"""The etcd reading loop: a full range read, then a watch from that revision on.

``EtcdReader`` is a thread. It never touches the bus: it puts ``Snapshot``, ``Events`` and
``Health`` messages on a ``queue.Queue`` that the worker's main thread drains (ZeroMQ
sockets belong to that thread).

- Start: read every range of ``keys.WATCH_RANGES`` at one revision R (paginated), hand
  over a Snapshot, then watch all ranges on one gRPC stream from R+1.
- Connection lost (etcd killed, restarted, unreachable): Health(connected=False), back
  off, connect again (failing over between endpoints), and resume the watch from the
  last revision applied. Events seen twice are harmless: the state is idempotent.
- A hung etcd (SIGSTOP, a black hole) is noticed by a probe read every ``probe_interval``
  seconds: the stream is cancelled when a probe fails with an error or none has answered
  for ``probe_interval + 2 * probe_timeout``; a late answer counts (networkd.etcd.probe_pace).
- Compaction past the resume revision (the watch is canceled with ``compact_revision``),
  a different cluster id, or a revision that went backwards (etcd restored from a backup):
  a fresh full read, which the main thread diffs against its state.

The raw Watch stub is used instead of etcd3's Watcher, which spins without backoff when
the server is down and hides the compaction revision.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import grpc

from networkd import keys
from networkd.etcd.channel import iterate_requests
from networkd.etcd.client import (
    Backoff,
    EtcdConnectError,
    EtcdConnector,
    describe_error,
    probe,
    probe_future,
)
from networkd.etcd.probe_pace import ProbePace

log = logging.getLogger("networkd.etcd")

PAGE_SIZE = 2000
# A dead connection is noticed PROBE_INTERVAL + 2 * PROBE_TIMEOUT after the last probe answer
# (2.5 to 3 s after it stopped answering: a probe goes out every PROBE_INTERVAL; answers
# that became up to 2 s slower at once still count, steady ones however late), and
# reconnecting is retried at least every RECONNECT_MAX seconds: after a partition heals the
# watcher is back within about three seconds (networkd.etcd.channel explains why it must probe).
PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0
PROBE_LATE_MAX = 10.0  # a probe's own deadline: a late answer still proves etcd answers
RECONNECT_MAX = 1.0
READ_ATTEMPTS = 5


@dataclass
class Snapshot:
    """Every key of every range at ``revision``: replaces the whole state."""

    revision: int
    pairs: List[Tuple[bytes, bytes]]
    endpoint: str
    elapsed: float = 0.0


@dataclass
class Events:
    """Watch events in order: ``(key, value)`` for a put, ``(key, None)`` for a delete."""

    revision: int
    changes: List[Tuple[bytes, Optional[bytes]]] = field(default_factory=list)


@dataclass
class Health:
    connected: bool
    endpoint: str = ""
    error: str = ""
    revision: int = 0


class Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


class WatchCanceled(Exception):
    pass


def _rpc_options(client: Any) -> dict:
    return {"credentials": client.call_credentials, "metadata": client.metadata}


def read_ranges(
    client: Any, ranges: Sequence[keys.WatchRange], timeout: float, page_size: int = PAGE_SIZE
) -> Tuple[int, List[Tuple[bytes, bytes]]]:
    """Every key of ``ranges`` at one revision (the first response's); paginated."""
    from etcd3.etcdrpc import rpc_pb2

    revision = 0
    pairs: List[Tuple[bytes, bytes]] = []
    for watch_range in ranges:
        start = watch_range.key.encode()
        end = keys.prefix_range_end(watch_range.key) if watch_range.prefix else b""
        while True:
            request = rpc_pb2.RangeRequest(key=start, range_end=end, revision=revision)
            if watch_range.prefix:
                request.limit = page_size
            response = client.kvstub.Range(request, timeout, **_rpc_options(client))
            if revision == 0:
                revision = int(response.header.revision)
            for kv in response.kvs:
                pairs.append((bytes(kv.key), bytes(kv.value)))
            if not watch_range.prefix or not response.more or not response.kvs:
                break
            start = bytes(response.kvs[-1].key) + b"\0"
    return revision, pairs


class EtcdReader(threading.Thread):
    """Reads and watches ``ranges``; reports to ``out``. ``stop()`` ends it."""

    def __init__(
        self,
        connector: EtcdConnector,
        out: "queue.Queue[Any]",
        ranges: Sequence[keys.WatchRange] = keys.WATCH_RANGES,
        probe_interval: float = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        backoff: Optional[Backoff] = None,
    ) -> None:
        super().__init__(name="etcd-reader", daemon=True)
        self.connector = connector
        self.out = out
        self.ranges = tuple(ranges)
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.backoff = backoff or Backoff(maximum=RECONNECT_MAX)
        self.revision = 0  # last revision handed over (snapshot or events)
        self.cluster_id = 0
        self.full_reads = 0
        self._need_full_read = True
        self._stopping = threading.Event()
        self._call: Any = None
        self._requests: Optional[queue.Queue[Any]] = None
        self._connected = False

    # --- control ------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._cancel_stream()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _cancel_stream(self) -> None:
        requests, call = self._requests, self._call
        if requests is not None:
            requests.put(None)
        if call is not None:
            try:
                call.cancel()
            except Exception:
                pass

    # --- main loop ----------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            try:
                client = self.connector.connect()
            except EtcdConnectError as exc:
                self._report_down(str(exc), "")
                self._stopping.wait(self.backoff.next())
                continue
            except Exception as exc:  # e.g. unreadable TLS files: keep trying, say why
                self._report_down(describe_error(exc), "")
                self._stopping.wait(self.backoff.next())
                continue
            endpoint = client.endpoint.url
            try:
                self._session(client, endpoint)
                self.connector.failed(client)
            except Compacted as exc:
                log.info(
                    "etcd watch compacted revision=%d compact_revision=%d",
                    self.revision,
                    exc.compact_revision,
                )
                self._need_full_read = True
                self.connector.failed(client)
                # Not an outage: read again at once.
            except Exception as exc:
                reason = describe_error(exc)
                self.connector.failed(client, exc)
                if self.stopping:
                    break
                self._report_down(reason, endpoint)
                self._stopping.wait(self.backoff.next())

    def _report_down(self, reason: str, endpoint: str) -> None:
        if self._connected:
            log.warning("etcd connection lost endpoint=%s reason=%s", endpoint, reason)
        self._connected = False
        self.out.put(Health(False, endpoint, reason, self.revision))

    def _session(self, client: Any, endpoint: str) -> None:
        header = probe(client, self.probe_timeout)
        if self.cluster_id and header.cluster_id != self.cluster_id:
            log.warning(
                "etcd cluster changed old=%x new=%x: full read", self.cluster_id, header.cluster_id
            )
            self._need_full_read = True
        elif header.revision < self.revision:
            log.warning(
                "etcd revision went back old=%d new=%d: full read", self.revision, header.revision
            )
            self._need_full_read = True
        if self._need_full_read:
            self._full_read(client, endpoint)
        self.cluster_id = header.cluster_id
        self._watch(client, endpoint)

    def _full_read(self, client: Any, endpoint: str) -> None:
        last: Optional[BaseException] = None
        for _attempt in range(READ_ATTEMPTS):
            started = time.monotonic()
            try:
                revision, pairs = read_ranges(client, self.ranges, self.connector.timeout)
            except grpc.RpcError as exc:
                # Compacted between two pages: read again; anything else: reconnect.
                if exc.code() != grpc.StatusCode.OUT_OF_RANGE:
                    raise
                last = exc
                continue
            elapsed = time.monotonic() - started
            self.full_reads += 1
            self.revision = revision
            self._need_full_read = False
            log.info(
                "etcd read done revision=%d keys=%d elapsed_ms=%.1f",
                revision,
                len(pairs),
                elapsed * 1000,
            )
            self.out.put(Snapshot(revision, pairs, endpoint, elapsed))
            return
        raise RuntimeError(f"full read kept failing: {describe_error(last) if last else '?'}")

    def _watch(self, client: Any, endpoint: str) -> None:
        from etcd3.etcdrpc import rpc_pb2

        # Start at the last revision handed over, inclusive: after a full read its events
        # are already in the snapshot, after a lost connection some of them may not have
        # arrived (one revision's events are split over the per-range watches). Applying
        # an event twice is harmless: the state ignores a put of the value it holds.
        start_revision = max(self.revision, 1)
        requests: queue.Queue[Any] = queue.Queue()
        for watch_range in self.ranges:
            create = rpc_pb2.WatchCreateRequest(
                key=watch_range.key.encode(), start_revision=start_revision
            )
            if watch_range.prefix:
                create.range_end = keys.prefix_range_end(watch_range.key)
            requests.put(rpc_pb2.WatchRequest(create_request=create))
        from etcd3.etcdrpc import rpc_pb2_grpc

        stub = rpc_pb2_grpc.WatchStub(client.channel)
        call = stub.Watch(iterate_requests(requests), **_rpc_options(client))
        self._requests, self._call = requests, call
        if self.stopping:
            self._cancel_stream()
        probe_failure: List[str] = []
        done = threading.Event()
        prober = threading.Thread(
            target=self._probe_loop,
            args=(client, call, done, probe_failure),
            name="etcd-probe",
            daemon=True,
        )
        prober.start()
        created = 0
        try:
            for response in call:
                if response.compact_revision:
                    raise Compacted(int(response.compact_revision))
                if response.canceled:
                    raise WatchCanceled(
                        f"watch canceled by etcd: {response.cancel_reason or 'no reason given'}"
                    )
                if response.created:
                    created += 1
                    if created == len(self.ranges):
                        self._on_watching(endpoint)
                if response.events:
                    self._on_events(response.events)
            raise WatchCanceled("watch stream ended")
        except grpc.RpcError:
            if probe_failure:
                raise WatchCanceled(f"etcd not answering: {probe_failure[0]}") from None
            raise
        finally:
            done.set()
            self._requests, self._call = None, None
            requests.put(None)
            try:
                call.cancel()
            except Exception:
                pass

    def _on_watching(self, endpoint: str) -> None:
        if not self._connected:
            log.info("etcd watching endpoint=%s revision=%d", endpoint, self.revision)
        self._connected = True
        self.backoff.reset()
        self.out.put(Health(True, endpoint, "", self.revision))

    def _on_events(self, events: Any) -> None:
        changes: List[Tuple[bytes, Optional[bytes]]] = []
        revision = self.revision
        for event in events:
            kv = event.kv
            if event.type == 1:  # DELETE
                changes.append((bytes(kv.key), None))
            else:
                changes.append((bytes(kv.key), bytes(kv.value)))
            revision = max(revision, int(kv.mod_revision))
        self.revision = revision
        self.out.put(Events(revision, changes))

    def _probe_loop(
        self, client: Any, call: Any, done: threading.Event, failure: List[str]
    ) -> None:
        """Probe every ``probe_interval``; cancel the watch when a probe fails with an error
        or none has answered for ``probe_interval + 2 * probe_timeout`` (probe_pace.py: a
        late answer counts)."""
        silence = self.probe_interval + 2 * self.probe_timeout
        lock = threading.Lock()
        pace = ProbePace(silence, time.monotonic())
        errors: List[str] = []
        pending: List[Any] = []

        def on_done(future: Any) -> None:
            try:
                future.result()
            except Exception as exc:
                with lock:
                    pace.failed()
                if not done.is_set() and not future.cancelled():
                    errors.append(describe_error(exc))
                return
            with lock:
                pace.answered(time.monotonic())

        try:
            while not done.wait(self.probe_interval):
                with lock:
                    stuck = pace.stuck(time.monotonic())
                    send = not stuck and not errors and pace.send()
                reason = errors[0] if errors else ""
                if stuck and not reason:
                    reason = f"no probe answered for {silence:.1f}s"
                if reason:
                    if done.is_set():
                        return
                    failure.append(reason)
                    log.debug("etcd probe failed reason=%s", reason)
                    try:
                        call.cancel()
                    except Exception:
                        pass
                    return
                if send:
                    try:
                        future = probe_future(client, PROBE_LATE_MAX)
                    except Exception as exc:  # the channel closed under us (the watch ended)
                        with lock:
                            pace.failed()
                        errors.append(describe_error(exc))
                        continue
                    pending[:] = [f for f in pending if not f.done()] + [future]
                    future.add_done_callback(on_done)
        finally:
            for future in pending:
                future.cancel()
