"""A local copy of every key under one etcd prefix: a range read, then a watch.

The elector mirrors ``/lain/networkd/``: VIP locks, the leader key, presence and apps
keys. Contenders learn at once when a lock goes (a watch event, no polling interval).

The watch runs on its own gRPC stream in its own thread (not ``etcd3``'s shared watcher,
which spins when etcd is down), on a channel of its own (a ``ClientHolder``). A
``StreamWatchdog`` cancels a stream that stops answering progress requests for a second;
a broken stream leads to a new watch after a short back-off, on a new channel when the
old one's connection was at fault, so a healed partition is noticed within a second. The
new watch resumes from the last revision whose events arrived, after one count-only read
that checks the cluster is the same and its revision did not go back; only then, or when
etcd compacted past that revision, is the prefix read again (at 1,000 nodes, re-reading
every presence and lock key on every reconnect was O(N) per node and O(N²) for a cluster
whose etcd had stalled). The copy is kept meanwhile, so an etcd outage looks like
"nothing changed", which is what the fencing policy ``hold`` wants.
Transactions of this node are applied locally right away (``note_put`` and
``note_delete``) so the controller never waits for its own echo.
"""

import logging
import queue
import random
import threading
import time
from typing import Any, Callable, Dict, NamedTuple, Optional

from networkd.etcd.channel import (
    ClientHolder,
    StreamWatchdog,
    is_transport_error,
    iterate_requests,
    stream_failure,
)
from networkd.keys import prefix_range_end

log = logging.getLogger("networkd.elector")


class Entry(NamedTuple):
    """One key's value, its lease (0: none) and its last modification revision."""

    value: str
    lease: int
    mod_revision: int


def decode_value(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class KeyMirror:
    def __init__(
        self,
        holder: ClientHolder,
        prefix: str,
        on_change: Optional[Callable[[], None]] = None,
        backoff: float = 0.1,
        max_backoff: float = 0.2,
    ) -> None:
        self.prefix = prefix
        self._holder = holder
        self._on_change = on_change
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._data: Dict[str, Entry] = {}
        self._revs: Dict[str, int] = {}
        self._revision = 0
        self._synced = False
        self._connected = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._call: Any = None
        self._requests: Optional[queue.Queue[Any]] = None
        self._watchdog: Optional[StreamWatchdog] = None
        # Where a new watch starts: the revision of the last event received, inclusive (a
        # revision's events may be split over responses; applying one twice is harmless).
        # Not a response's header revision: etcd sends a catching-up watcher its events in
        # batches of at most 1,000 revisions, each with the store's current revision.
        self._resume = 0
        self._cluster_id = 0
        self._need_read = True
        self.resyncs = 0  # full reads
        self.resumes = 0  # watches resumed without one
        self.disconnects = 0  # times the connection was lost (an outage, a partition)

    # -- public view -------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a full read has been loaded (stays true through outages)."""
        return self._synced

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision

    def get(self, key: str) -> Optional[Entry]:
        with self._lock:
            return self._data.get(key)

    def snapshot(self, prefix: str = "") -> Dict[str, Entry]:
        with self._lock:
            if not prefix:
                return dict(self._data)
            return {k: v for k, v in self._data.items() if k.startswith(prefix)}

    def note_put(self, key: str, value: str, lease: int, revision: int) -> None:
        """Apply this node's own successful write before its watch event arrives."""
        with self._lock:
            self._apply(key, Entry(value, lease, revision), revision)
        self._changed()

    def note_delete(self, key: str, revision: int) -> None:
        with self._lock:
            self._apply(key, None, revision)
        self._changed()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="key-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel_stream()
        if self._thread is not None:
            self._thread.join(5.0)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._synced and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._synced

    # -- internals ---------------------------------------------------------------------

    def _apply(self, key: str, entry: Optional[Entry], revision: int) -> None:
        if revision < self._revs.get(key, 0):
            return
        self._revs[key] = revision
        if entry is None:
            self._data.pop(key, None)
        else:
            self._data[key] = entry

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _cancel_stream(self) -> None:
        requests = self._requests
        if requests is not None:
            requests.put(None)
        call = self._call
        if call is not None:
            try:
                call.cancel()
            except Exception:
                pass

    def _run(self) -> None:
        delay = self._backoff
        while not self._stop.is_set():
            client = None
            try:
                client = self._holder.get()
                start = self._resume_point(client)
                delay = self._backoff
                self._watch(client, start)
            except Exception as exc:  # grpc errors, etcd3 exceptions: retry
                if self._stop.is_set():
                    break
                reason = stream_failure(self._watchdog) or _reason(exc)
                if self._connected:
                    log.warning("etcd watch lost prefix=%s reason=%s", self.prefix, reason)
                    self.disconnects += 1
                self._connected = False
                if client is not None and (self._watchdog_fired() or is_transport_error(exc)):
                    self._holder.recycle(reason)
            # Jittered: after an etcd stall every node of the cluster lost its watch at the
            # same instant, and would otherwise come back in step.
            if self._stop.wait(delay * random.uniform(0.75, 1.25)):
                break
            delay = min(self._max_backoff, delay * 2)

    def _watchdog_fired(self) -> bool:
        return bool(stream_failure(self._watchdog))

    def _resume_point(self, client: Any) -> int:
        """The revision a new watch starts at: resumed, or after a full read."""
        if not self._need_read:
            header = client.get_prefix_response(self.prefix, count_only=True).header
            if header.cluster_id == self._cluster_id and header.revision >= self._resume:
                self._connected = True
                self.resumes += 1
                log.info("etcd mirror resumed prefix=%s revision=%d", self.prefix, self._resume)
                self._changed()
                return self._resume
            log.warning(
                "etcd mirror read again prefix=%s reason=%s",
                self.prefix,
                "cluster changed"
                if header.cluster_id != self._cluster_id
                else "revision went back",
            )
        return self._load(client) + 1

    def _load(self, client: Any) -> int:
        self._watchdog = None
        response = client.get_prefix_response(self.prefix)
        data: Dict[str, Entry] = {}
        for kv in response.kvs:
            key = kv.key.decode("utf-8", errors="replace")
            data[key] = Entry(decode_value(kv.value), int(kv.lease), int(kv.mod_revision))
        revision = int(response.header.revision)
        with self._lock:
            # Local writes (and deletions) newer than the read survive it.
            revs = {k: v.mod_revision for k, v in data.items()}
            for key, rev in self._revs.items():
                if rev > revision:
                    revs[key] = rev
                    entry = self._data.get(key)
                    if entry is None:
                        data.pop(key, None)
                    else:
                        data[key] = entry
            self._revs = revs
            self._data = data
            self._revision = max(self._revision, revision)
            self._resume = revision + 1
            self._cluster_id = int(response.header.cluster_id)
            self._need_read = False
        if not self._synced or not self._connected:
            log.info(
                "etcd mirror loaded prefix=%s keys=%d revision=%d", self.prefix, len(data), revision
            )
        self._synced = True
        self._connected = True
        self.resyncs += 1
        self._changed()
        return revision

    def _watch(self, client: Any, start_revision: int) -> None:
        from etcd3 import etcdrpc

        requests: queue.Queue[Any] = queue.Queue()
        create = etcdrpc.WatchCreateRequest(
            key=self.prefix.encode(),
            range_end=prefix_range_end(self.prefix),
            start_revision=start_revision,
        )
        requests.put(etcdrpc.WatchRequest(create_request=create))
        stub = etcdrpc.WatchStub(client.channel)
        self._requests = requests
        call = stub.Watch(
            iterate_requests(requests),
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
        self._call = call
        watchdog = self._watchdog = StreamWatchdog(client, requests, call, self.prefix.encode())
        watchdog.start()
        if self._stop.is_set():
            self._cancel_stream()
        try:
            for response in call:
                watchdog.seen(response)
                if response.compact_revision:
                    log.warning(
                        "etcd watch compacted prefix=%s revision=%d",
                        self.prefix,
                        response.compact_revision,
                    )
                    self._need_read = True
                    return
                if response.canceled:
                    self._need_read = True
                    return
                self._handle(response)
        finally:
            watchdog.stop()
            requests.put(None)
            self._call = None
            self._requests = None

    def _handle(self, response: Any) -> None:
        if not response.events:
            with self._lock:
                self._revision = max(self._revision, int(response.header.revision))
            return
        with self._lock:
            for event in response.events:
                kv = event.kv
                key = kv.key.decode("utf-8", errors="replace")
                revision = int(kv.mod_revision)
                if event.type == 0:  # PUT
                    self._apply(
                        key, Entry(decode_value(kv.value), int(kv.lease), revision), revision
                    )
                else:  # DELETE (also lease expiry)
                    self._apply(key, None, revision)
                self._resume = max(self._resume, revision)
            self._revision = max(self._revision, int(response.header.revision))
        self._changed()


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return f"{code()} {exc.details()}"  # type: ignore[attr-defined]
        except Exception:
            pass
    return f"{type(exc).__name__}: {exc}"
