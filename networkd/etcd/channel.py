"""Noticing a dead etcd connection within about a second, on every channel.

A TCP connection to etcd does not fail when the path to etcd does: after a link cut or a
partition, packets are retransmitted with a growing timeout, and once the path is back
the connection resumes only at the next retransmission, seconds later (seen: an owner
learned 5-6.6 s after a heal that its lease was gone). gRPC's own keepalive pings could
notice, but etcd's default ``--grpc-keepalive-min-time`` is 5 s and it answers more
frequent pings on an idle stream with GOAWAY ``too_many_pings``: pings fast enough to
matter would break the connection they are meant to test. So every user of a channel
checks it at the application level instead, and replaces it when it does not answer:

- ``ClientHolder``: one etcd client (one gRPC channel) that is thrown away and made anew
  when a call on it fails with a transport error (UNAVAILABLE, DEADLINE_EXCEEDED). The new
  channel opens a new TCP connection at once (``grpc.use_local_subchannel_pool`` keeps
  gRPC from handing back the old, stuck connection), so a healed path is used on the next
  attempt instead of at the next retransmission.
- ``StreamWatchdog``: a watch stream gets a progress request (etcd >= 3.4) every
  ``interval`` seconds and is cancelled when no response arrived within ``deadline``. An
  etcd that ignores progress requests (older than 3.4) is detected once, by a cheap
  serializable read that succeeds while the progress response does not come and the
  version the member reports; from then on that read is the probe.
"""

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import grpc

log = logging.getLogger("networkd.etcd")

TRANSPORT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The serialized WatchRequest{progress_request: {}} (field 3, an empty message): etcd3 0.12
# ships the 3.3 protocol, which has no WatchProgressRequest type. Parsing these bytes
# keeps the field as an unknown one, which protobuf sends on as it is.
PROGRESS_REQUEST_BYTES = b"\x1a\x00"
PROGRESS_INTERVAL = 0.4
STREAM_DEADLINE = 1.0


def is_transport_error(exc: BaseException) -> bool:
    """A failure of the connection rather than an answer from etcd."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", lambda: None)()
        return code in TRANSPORT_CODES
    # etcd3 wraps some gRPC errors in its own exceptions
    name = type(exc).__name__
    return name in ("ConnectionFailedError", "ConnectionTimeoutError")


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken channel: nothing left to do
        pass


class ClientHolder:
    """An etcd client that is replaced by a fresh one when its connection stops answering.

    ``factory`` makes a client (one gRPC channel). ``get()`` returns the current one,
    making it when needed; ``failed(exc)`` after a call failed replaces it when the failure
    is a transport error, at most once per ``min_interval`` seconds.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        name: str,
        min_interval: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self.name = name
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._client: Any = None
        self._made_at = -1e18
        self.recycles = 0

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
                self._made_at = self._clock()
            return self._client

    def make(self) -> Any:
        """A new client from the factory (not kept: see ``replace``)."""
        return self._factory()

    def peek(self) -> Any:
        """The current client or None, without making one."""
        with self._lock:
            return self._client

    def failed(self, exc: BaseException) -> bool:
        """A call on the current client failed: replace it if the connection is at fault."""
        if not is_transport_error(exc):
            return False
        return self.recycle(str(getattr(exc, "code", lambda: exc)()))

    def recycle(self, reason: str = "") -> bool:
        """Drop the current client (the next ``get`` makes a new one); rate-limited."""
        with self._lock:
            if self._client is None or self._clock() - self._made_at < self.min_interval:
                return False
            old, self._client = self._client, None
            self.recycles += 1
        log.debug("etcd channel replaced user=%s reason=%s", self.name, reason or "-")
        _close(old)
        return True

    def replace(self, client: Any) -> Any:
        """Use ``client`` from now on; returns the previous one (not closed)."""
        with self._lock:
            old, self._client = self._client, client
            self._made_at = self._clock()
        return old

    def close(self) -> None:
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            _close(old)


def iterate_requests(requests: "queue.Queue[Any]") -> Iterator[Any]:
    """The request side of a gRPC stream: what is put on ``requests``, until None."""
    while True:
        item = requests.get()
        if item is None:
            return
        yield item


def progress_request() -> Any:
    from etcd3.etcdrpc import rpc_pb2

    return rpc_pb2.WatchRequest.FromString(PROGRESS_REQUEST_BYTES)


def serializable_probe(client: Any, key: bytes, timeout: float) -> None:
    """A read the contacted member answers alone (no quorum round): proves the connection."""
    from etcd3.etcdrpc import rpc_pb2

    request = rpc_pb2.RangeRequest(key=key, keys_only=True, limit=1, serializable=True)
    client.kvstub.Range(
        request, timeout, credentials=client.call_credentials, metadata=client.metadata
    )


def answers_progress(client: Any, timeout: float) -> Optional[bool]:
    """Whether etcd answers watch progress requests (3.4 and later), from the version its
    contacted member reports; None when it does not say (no answer, no version)."""
    from etcd3.etcdrpc import rpc_pb2

    try:
        response = client.maintenancestub.Status(
            rpc_pb2.StatusRequest(),
            timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
        major, minor = (int(part) for part in str(response.version).split(".")[:2])
    except Exception:
        return None
    return (major, minor) >= (3, 4)


class StreamWatchdog:
    """Cancels a watch ``call`` whose connection stopped answering.

    Call ``seen()`` for every response of the stream. A thread puts a progress request on
    ``requests`` every ``interval`` and cancels the call when nothing came back within
    ``deadline`` of the oldest unanswered request. ``failure`` says why it cancelled.
    """

    def __init__(
        self,
        client: Any,
        requests: "queue.Queue[Any]",
        call: Any,
        probe_key: bytes,
        interval: float = PROGRESS_INTERVAL,
        deadline: float = STREAM_DEADLINE,
    ) -> None:
        self.client = client
        self.requests = requests
        self.call = call
        self.probe_key = probe_key
        self.interval = interval
        self.deadline = deadline
        self.failure: List[str] = []
        self._done = threading.Event()
        self._last_seen = time.monotonic()
        self._progress_answered = False
        self._use_reads = False
        self._thread = threading.Thread(target=self._run, name="etcd-watchdog", daemon=True)

    def start(self) -> "StreamWatchdog":
        self._thread.start()
        return self

    def seen(self, response: Any = None) -> None:
        self._last_seen = time.monotonic()
        if response is not None and getattr(response, "watch_id", 0) == -1:
            self._progress_answered = True

    def stop(self) -> None:
        self._done.set()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            if self._use_reads:
                self._probe_by_read()
                continue
            asked = time.monotonic()
            self.requests.put(progress_request())
            if self._done.wait(self.deadline):
                return
            if self._last_seen >= asked:
                continue
            if (
                not self._progress_answered
                and self._read_answers()
                and answers_progress(self.client, self.deadline) is False
            ):
                # An etcd without progress requests (older than 3.4, by its version): its
                # reads are the probe from now on. Not on a mere unanswered request: a
                # loaded etcd 3.4 answers reads but not a watch that stopped delivering
                # (or one still catching up), and reads would then keep a dead stream.
                log.info("etcd progress requests unanswered: probing the watch with reads")
                self._use_reads = True
                continue
            self._cancel(f"no answer on the watch stream for {self.deadline:.1f}s")
            return

    def _read_answers(self) -> bool:
        try:
            serializable_probe(self.client, self.probe_key, self.deadline)
        except Exception:
            return False
        return True

    def _probe_by_read(self) -> None:
        try:
            serializable_probe(self.client, self.probe_key, self.deadline)
        except Exception as exc:
            self._cancel(f"probe read failed: {type(exc).__name__}")

    def _cancel(self, reason: str) -> None:
        if self._done.is_set():
            return
        self.failure.append(reason)
        log.debug("etcd watch stream cancelled reason=%s", reason)
        try:
            self.call.cancel()
        except Exception:
            pass


def stream_failure(watchdog: Optional[StreamWatchdog]) -> str:
    return watchdog.failure[0] if watchdog is not None and watchdog.failure else ""
