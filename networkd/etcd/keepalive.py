"""Lease renewals on one long-lived ``LeaseKeepAlive`` stream per channel.

etcd3's ``refresh_lease`` opens a new gRPC stream for every renewal, and gRPC starts a
thread to feed each stream's requests. At TTL/4 (two renewals a second per node, the pace then) that was
about half of a node's CPU in the scale simulation and a stream set-up per renewal on
etcd (docs/SCALE.md). Here one stream carries every renewal of the channel, as etcd's Go
client does: a request goes out, its answer should come back within the deadline.

etcd answers a stream's keep-alives one by one, in the order they were sent (its server
loop receives a request, renews, sends the answer, then receives the next), so the n-th
answer is the n-th request's. A request that missed its deadline stays counted
(``Outstanding``): when its answer arrives later, during a later renewal, it proves the
lease was renewed after *that* request was sent, and the keeper records that send time
(never a later one: the lease is never believed to live longer than it does on the
server). A slow etcd therefore costs late renewals, not a torn-down stream and a new
channel per missed deadline, which under load made more load (docs/SCALE.md, "Overload
feeds itself"). An error, the stream ending, an answer out of order, or
``MAX_OUTSTANDING`` requests without any answer close the stream; the next renewal opens
a new one.
"""

import collections
import math
import queue
import threading
import time
from typing import Any, Callable, Deque, Optional, Tuple

from networkd.etcd.channel import iterate_requests

MAX_OUTSTANDING = 4  # requests without an answer before the stream counts as dead

Renewal = Tuple[int, float]  # (TTL etcd reported, send time of the request it answered)


class KeepAliveTimeout(TimeoutError):
    """No answer on the keep-alive stream within the deadline."""


class Outstanding:
    """The requests of one stream still without an answer, oldest first (pure logic)."""

    def __init__(self) -> None:
        self._sent: Deque[Tuple[int, float]] = collections.deque()

    def __len__(self) -> int:
        return len(self._sent)

    def sent(self, lease_id: int, at: float) -> None:
        self._sent.append((lease_id, at))

    def answered(self, lease_id: int) -> float:
        """The send time of the request this answer (for ``lease_id``) belongs to.

        Raises ConnectionError when it cannot be the oldest request's answer."""
        if not self._sent:
            raise ConnectionError(f"keep-alive answer for lease {lease_id:x} nobody asked for")
        asked, at = self._sent.popleft()
        if asked != lease_id:
            raise ConnectionError(f"keep-alive answer for lease {lease_id:x}, not {asked:x}")
        return at


class KeepAliveStream:
    """One ``LeaseKeepAlive`` stream on ``client``'s channel; ``renew`` blocks until an
    answer or ``timeout``. Used from one thread at a time (the lease keeper)."""

    def __init__(self, client: Any, on_answer: Optional[Callable[[], None]] = None) -> None:
        from etcd3 import etcdrpc

        self.client = client
        self._on_answer = on_answer
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._outstanding = Outstanding()
        stub = etcdrpc.LeaseStub(client.channel)
        self._call = stub.LeaseKeepAlive(
            iterate_requests(self._requests),
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
        self._reader = threading.Thread(target=self._read, name="lease-stream", daemon=True)
        self._reader.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def renew(self, lease_id: int, timeout: float, now: float) -> Renewal:
        """Renew ``lease_id`` (``now``: the keeper's clock at sending): etcd's TTL for it (<= 0:
        the lease is gone) and the send time of the request that answer belongs to.

        Waits up to ``timeout`` for this request's answer. An earlier request's late answer
        for the same lease counts when this one's does not come in time. Raises
        KeepAliveTimeout when no answer for the lease came; closes the stream and raises
        when it failed."""
        from etcd3 import etcdrpc

        if self._closed:
            raise ConnectionError("lease keep-alive stream closed")
        self._outstanding.sent(lease_id, now)
        self._requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
        late: Optional[Renewal] = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if late is not None:
                    return late
                if len(self._outstanding) >= MAX_OUTSTANDING:
                    self.close()
                raise KeepAliveTimeout(f"no keep-alive answer within {timeout:.2f}s") from None
            if isinstance(item, BaseException):
                self.close()
                raise item
            try:
                sent = self._outstanding.answered(int(item.ID))
            except ConnectionError:
                self.close()  # answers come in order: this one is not ours; trust nothing more
                raise
            if int(item.ID) != lease_id:
                continue  # the other lease's late answer: its next renewal asks again
            if not self._outstanding or int(item.TTL) <= 0:  # ours (the newest), or gone
                return int(item.TTL), sent
            late = (int(item.TTL), sent)  # renewed, as of an earlier request; wait for ours

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        try:
            self._call.cancel()
        except Exception:  # a broken stream: nothing left to cancel
            pass

    def _read(self) -> None:
        try:
            for response in self._call:
                if self._on_answer is not None:
                    self._on_answer()
                self._responses.put(response)
        except Exception as exc:  # grpc errors, cancellation
            self._responses.put(exc)
            return
        self._responses.put(ConnectionError("lease keep-alive stream ended"))


class KeepAliveStreams:
    """The stream of the current client: a new one when the client changed or the last
    one failed. ``renew(client, lease_id)`` uses the client's own timeout as deadline.

    ``silent_for(seconds)`` tells a slow channel from a dead one: an overloaded etcd still
    answers, late; a stuck connection (a partition, a black hole) answers nothing. Only
    the second is worth a new channel (networkd.election.lease)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream: Optional[KeepAliveStream] = None
        self.opened = 0
        self._clock = clock
        self._client: Any = None
        self._last_answer = -math.inf  # any answer on any stream of the current client

    def _answered(self) -> None:
        self._last_answer = self._clock()

    def silent_for(self, seconds: float) -> bool:
        """No answer of any kind on the current client's channel for ``seconds`` (true for
        a channel that never answered)."""
        return self._clock() - self._last_answer >= seconds

    def renew(
        self, client: Any, lease_id: int, now: float, timeout: Optional[float] = None
    ) -> Renewal:
        stream = self._stream
        if client is not self._client:
            self._client = client
            self._last_answer = -math.inf
        if stream is None or stream.closed or stream.client is not client:
            if stream is not None:
                stream.close()
            stream = self._stream = KeepAliveStream(client, self._answered)
            self.opened += 1
        deadline = timeout if timeout is not None else float(getattr(client, "timeout", 1.0) or 1.0)
        return stream.renew(lease_id, deadline, now)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
