"""Request channels between workers: one request, one reply, over a unix socket whose
server checks who the peer is.

The bus is publish/subscribe; Docker's Join needs an answer (the interface name) only
after the link exists, so the container-network workers also talk request/response:
``netplugin -> netstore -> netlinks``. A ``ChannelServer`` listens on a
``SOCK_SEQPACKET`` socket (message boundaries kept, no framing) in its worker's bus
directory, and on every connection asks the kernel who connected (``SO_PEERCRED``: pid,
uid, gid, which a peer cannot forge) and lets ``allow`` decide. So the root ``netlinks``
acts only on requests from the netstore process, and the netstore only on requests from
the plugin worker's own user: another worker cannot speak on these channels.

Frames are msgpack maps ``{"id", "type", "body"}``; bodies are the dataclasses of
``networkd.netdriver.messages``, rebuilt with the bus codec's shape checks.
"""

import errno
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgpack

from networkd.bus.codec import CodecError, from_plain, to_plain
from networkd.netdriver.messages import REQUESTS, Reply

log = logging.getLogger("networkd.channel")

MAX_FRAME = 256 * 1024
_CRED = struct.Struct("3i")


class ChannelError(ConnectionError):
    """The peer could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return Peer(pid, uid, gid)


def encode(request_id: int, message: Any) -> bytes:
    frame = {"id": request_id, "type": type(message).__name__, "body": to_plain(message)}
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes) -> Tuple[int, Any]:
    """(request id, message); raises CodecError on anything malformed."""
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise CodecError("undecodable channel frame") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("id"), int):
        raise CodecError("channel frame is not a map with an id")
    cls = REQUESTS.get(str(frame.get("type")))
    if cls is None:
        raise CodecError(f"unknown channel message {frame.get('type')!r}")
    try:
        return frame["id"], from_plain(cls, frame.get("body"), cls.__name__)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{cls.__name__}: {exc}") from None


Allow = Callable[[Peer], Optional[str]]  # None: allowed; else the reason for refusing
Handler = Callable[[Any, Peer], Reply]


class ChannelServer:
    """Accepts connections and answers requests; poll its ``fds()`` and call ``serve``."""

    def __init__(self, path: str, allow: Allow, handler: Handler, mode: int = 0o666) -> None:
        self.path = path
        self.allow = allow
        self.handler = handler
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o777 & ~mode)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.conns: Dict[int, Tuple[socket.socket, Peer]] = {}
        self.refused = 0

    def fds(self) -> List[int]:
        return [self.sock.fileno(), *self.conns]

    def serve(self, ready: Any) -> int:
        """Accept and answer whatever is ready among ``ready`` (fds); returns requests served."""
        served = 0
        if self.sock.fileno() in ready:
            self._accept()
        for fd in [fd for fd in list(self.conns) if fd in ready]:
            served += self._serve_one(fd)
        return served

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            peer = peer_of(conn)
            reason = self.allow(peer)
            if reason is not None:
                self.refused += 1
                log.warning(
                    "channel peer refused path=%s pid=%d uid=%d reason=%s",
                    self.path,
                    peer.pid,
                    peer.uid,
                    reason,
                )
                conn.close()
                continue
            conn.setblocking(False)
            self.conns[conn.fileno()] = (conn, peer)

    def _serve_one(self, fd: int) -> int:
        conn, peer = self.conns[fd]
        served = 0
        while True:
            try:
                data = conn.recv(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return served
            except OSError:
                data = b""
            if not data:
                self._drop(fd)
                return served
            try:
                request_id, request = decode(data)
            except CodecError as exc:
                log.warning("channel request rejected pid=%d reason=%s", peer.pid, exc)
                self._drop(fd)
                return served
            try:
                reply = self.handler(request, peer)
            except Exception as exc:  # a handler bug must answer, not kill the worker
                log.exception("channel handler failed request=%s", type(request).__name__)
                reply = Reply(error=f"internal error: {type(exc).__name__}: {exc}")
            served += 1
            try:
                conn.setblocking(True)
                conn.settimeout(5.0)
                conn.send(encode(request_id, reply))
                conn.setblocking(False)
            except OSError:
                self._drop(fd)
                return served

    def _drop(self, fd: int) -> None:
        conn, _ = self.conns.pop(fd)
        conn.close()

    def close(self) -> None:
        for fd in list(self.conns):
            self._drop(fd)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class ChannelClient:
    """Calls a ChannelServer; reconnects on a broken connection until ``timeout`` runs out.

    A request whose reply was lost is sent again: every request is idempotent on the
    server or, for an address request, leaves at most an allocation that the netstore's
    reconciliation reclaims.
    """

    def __init__(self, path: str, timeout: float = 20.0, retry_interval: float = 0.05) -> None:
        self.path = path
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._sock: Optional[socket.socket] = None
        self._next_id = 0

    def call(self, request: Any, timeout: Optional[float] = None) -> Reply:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last = ""
        while True:
            try:
                return self._call_once(request, deadline)
            except (OSError, CodecError) as exc:
                self.close()
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, socket.timeout) or time.monotonic() >= deadline:
                    raise ChannelError(f"no answer from {self.path}: {last}") from None
                time.sleep(self.retry_interval)

    def _call_once(self, request: Any, deadline: float) -> Reply:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        self._next_id += 1
        request_id = self._next_id
        self._sock.settimeout(max(0.01, deadline - time.monotonic()))
        self._sock.send(encode(request_id, request))
        while True:
            self._sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self._sock.recv(MAX_FRAME)
            if not data:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed by the server")
            reply_id, reply = decode(data)
            if reply_id == request_id and isinstance(reply, Reply):
                return reply
            # An answer to an earlier request whose wait timed out: skip it.

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
