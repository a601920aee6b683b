"""Batched UDP I/O: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

Python has no binding for these calls. Under load a replica receives up to ``BATCH``
queries with one system call and sends the answers with one more, instead of two calls
per query. Buffers are allocated once; answers are sent straight from the bytes objects
that hold them (the iovec points into them), so nothing is copied on the way out.
"""

import ctypes
import ctypes.util
import errno
import socket
from typing import Any, List, Optional, Sequence, Tuple

# Up to BATCH queries live only in process memory between the two calls: a replica killed
# there loses them (clients retry). recvmmsg takes only what is queued (never waits for a
# full batch) and a replica answers a batch before it reads the next, so a SIGKILL loses
# at most min(BATCH, queued) queries; 16 keeps most of the saving and little exposure.
BATCH = 16
BUFFER = 4096
MSG_DONTWAIT = 0x40
SOCKADDR_SIZE = 128


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def _libc() -> Optional[Any]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(MMsgHdr),
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        libc.sendmmsg.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(MMsgHdr),
            ctypes.c_uint,
            ctypes.c_int,
        ]
        return libc
    except (OSError, AttributeError):
        return None


LIBC = _libc()


class BatchedUdp:
    """Receives and answers UDP datagrams in batches on one non-blocking socket."""

    def __init__(self, sock: socket.socket, batch: int = BATCH) -> None:
        if LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg not available")
        self.fd = sock.fileno()
        self.batch = batch
        self._bufs = (ctypes.c_char * (BUFFER * batch))()
        self._names = (ctypes.c_char * (SOCKADDR_SIZE * batch))()
        self._rx_iov = (IoVec * batch)()
        self._rx = (MMsgHdr * batch)()
        base = ctypes.addressof(self._bufs)
        names = ctypes.addressof(self._names)
        self._buf_addr = [base + i * BUFFER for i in range(batch)]
        self._name_addr = [names + i * SOCKADDR_SIZE for i in range(batch)]
        for i in range(batch):
            self._rx_iov[i].iov_base = self._buf_addr[i]
            self._rx_iov[i].iov_len = BUFFER
            hdr = self._rx[i].msg_hdr
            hdr.msg_name = self._name_addr[i]
            hdr.msg_iov = ctypes.pointer(self._rx_iov[i])
            hdr.msg_iovlen = 1
        self._tx_iov = (IoVec * batch)()
        self._tx = (MMsgHdr * batch)()
        for i in range(batch):
            hdr = self._tx[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._tx_iov[i])
            hdr.msg_iovlen = 1
        self._keep: List[bytes] = []

    def receive(self) -> List[Tuple[int, bytes]]:
        """Up to ``batch`` waiting datagrams as (slot, payload); [] when none wait."""
        for i in range(self.batch):
            self._rx[i].msg_hdr.msg_namelen = SOCKADDR_SIZE
        count = LIBC.recvmmsg(self.fd, self._rx, self.batch, MSG_DONTWAIT, None)  # type: ignore[union-attr]
        if count < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, "recvmmsg failed")
        rx = self._rx
        addr = self._buf_addr
        string_at = ctypes.string_at
        return [(i, string_at(addr[i], rx[i].msg_len)) for i in range(count)]

    def address(self, slot: int) -> Any:
        """The sender of slot ``slot`` as a Python socket address (slow path only)."""
        raw = ctypes.string_at(self._name_addr[slot], self._rx[slot].msg_hdr.msg_namelen)
        family = int.from_bytes(raw[:2], "little")
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big"), 0, 0

    def reply(self, answers: Sequence[Tuple[int, bytes]]) -> int:
        """Send each payload back to the sender of its slot; returns how many went out."""
        if not answers:
            return 0
        keep = self._keep = [payload for _slot, payload in answers]
        tx = self._tx
        iov = self._tx_iov
        for n, (slot, payload) in enumerate(answers):
            iov[n].iov_base = ctypes.cast(ctypes.c_char_p(keep[n]), ctypes.c_void_p).value
            iov[n].iov_len = len(payload)
            hdr = tx[n].msg_hdr
            hdr.msg_name = self._name_addr[slot]
            hdr.msg_namelen = self._rx[slot].msg_hdr.msg_namelen
        sent = 0
        first = 0
        total = len(answers)
        while first < total:
            done = LIBC.sendmmsg(self.fd, ctypes.byref(tx[first]), total - first, 0)  # type: ignore[union-attr]
            if done <= 0:
                # the datagram at ``first`` failed (sendmmsg reports an error only when
                # the first one fails): drop that one alone, as sendto would, and go on
                first += 1
                continue
            sent += done
            first += done
        return sent


class PlainUdp:
    """The same interface with one recvfrom/sendto per datagram (NETWORKD_DNS_MMSG=0)."""

    def __init__(self, sock: socket.socket, batch: int = BATCH) -> None:
        self.sock = sock
        self.batch = batch
        self._addresses: List[Any] = []

    def receive(self) -> List[Tuple[int, bytes]]:
        self._addresses = []
        out = []
        for slot in range(self.batch):
            try:
                data, addr = self.sock.recvfrom(BUFFER)
            except (BlockingIOError, InterruptedError):
                break
            self._addresses.append(addr)
            out.append((slot, data))
        return out

    def address(self, slot: int) -> Any:
        return self._addresses[slot]

    def reply(self, answers: Sequence[Tuple[int, bytes]]) -> int:
        sent = 0
        for slot, payload in answers:
            try:
                self.sock.sendto(payload, self._addresses[slot])
                sent += 1
            except OSError:
                pass
        return sent
