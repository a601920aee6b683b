"""Lease renewals on one long-lived ``LeaseKeepAlive`` stream per channel.

etcd3's ``refresh_lease`` opens a new gRPC stream for every renewal, and gRPC starts a
thread to feed each stream's requests. At TTL/4 (two renewals a second per node, the pace then) that was
about half of a node's CPU in the scale simulation and a stream set-up per renewal on
etcd (docs/SCALE.md). Here one stream carries every renewal of the channel, as etcd's Go
client does: a request goes out, its answer must come back within the deadline.

Anything but a timely answer for the lease asked about (a timeout, an error, the stream
ending) closes the stream and raises; the next renewal opens a new one. A late answer is
never taken for a newer request's: the renewal time the keeper records is the send time
of the request that was answered, so the lease is never believed to live longer than it
does on the server.
"""

import queue
import threading
from typing import Any, Optional

from networkd.etcd.channel import iterate_requests


class KeepAliveTimeout(TimeoutError):
    """No answer on the keep-alive stream within the deadline."""


class KeepAliveStream:
    """One ``LeaseKeepAlive`` stream on ``client``'s channel; ``renew`` blocks until the
    answer or ``timeout``. Used from one thread at a time (the lease keeper)."""

    def __init__(self, client: Any) -> None:
        from etcd3 import etcdrpc

        self.client = client
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._closed = False
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

    def renew(self, lease_id: int, timeout: float) -> int:
        """The TTL etcd reports for ``lease_id`` after renewing it (<= 0: the lease is gone).

        Raises (and closes the stream) when no answer came in time or the stream failed."""
        from etcd3 import etcdrpc

        if self._closed:
            raise ConnectionError("lease keep-alive stream closed")
        self._requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise KeepAliveTimeout(f"no keep-alive answer within {timeout:.2f}s") from None
        if isinstance(item, BaseException):
            self.close()
            raise item
        if int(item.ID) != lease_id:
            self.close()  # answers come in order: this one is not ours; trust nothing more
            raise ConnectionError(f"keep-alive answer for lease {int(item.ID):x}, not {lease_id:x}")
        return int(item.TTL)

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
                self._responses.put(response)
        except Exception as exc:  # grpc errors, cancellation
            self._responses.put(exc)
            return
        self._responses.put(ConnectionError("lease keep-alive stream ended"))


class KeepAliveStreams:
    """The stream of the current client: a new one when the client changed or the last
    one failed. ``renew(client, lease_id)`` uses the client's own timeout as deadline."""

    def __init__(self) -> None:
        self._stream: Optional[KeepAliveStream] = None
        self.opened = 0

    def renew(self, client: Any, lease_id: int, timeout: Optional[float] = None) -> int:
        stream = self._stream
        if stream is None or stream.closed or stream.client is not client:
            if stream is not None:
                stream.close()
            stream = self._stream = KeepAliveStream(client)
            self.opened += 1
        deadline = timeout if timeout is not None else float(getattr(client, "timeout", 1.0) or 1.0)
        return stream.renew(lease_id, deadline)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
