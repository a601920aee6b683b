"""Batched UDP I/O: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

Python has no binding for these calls. Under load a replica receives up to ``BATCH``
queries with one system call and sends the answers with one more, instead of two calls
per query. Buffers and headers are allocated and filled once (see ``BatchedUdp``).
"""

import ctypes
import ctypes.util
import errno
import socket
import struct
from typing import Any, List, Optional, Sequence, Tuple

# Up to BATCH queries live only in process memory between the two calls: a replica killed
# there loses them (clients retry). recvmmsg takes only what is queued (never waits for a
# full batch) and a replica answers a batch before it reads the next, so a SIGKILL loses
# at most min(BATCH, queued) queries; 16 keeps most of the saving and little exposure.
BATCH = 16
BUFFER = 4096
MSG_DONTWAIT = 0x40
SOCKADDR_SIZE = 128
U32 = struct.Struct("=I")
SIZE_T = struct.Struct("@N")  # size_t, native


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
    """Receives and answers UDP datagrams in batches on one non-blocking socket.

    Every ctypes attribute access builds Python objects, which at a few queries per
    wake-up cost more than the system calls; so the headers are set up once, the
    receive side is reset with one copy of a template and read through memoryviews,
    and the send side keeps one header per slot (the answer to slot i goes out from
    header i, to the address recvmmsg wrote for slot i): an answer costs one copy into
    its slot's buffer and one length written, and a batch answered whole goes out with
    one sendmmsg."""

    def __init__(self, sock: socket.socket, batch: int = BATCH) -> None:
        if LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg not available")
        self.fd = sock.fileno()
        self.batch = batch
        namelen = 16 if sock.family == socket.AF_INET else 28  # sockaddr_in / sockaddr_in6
        self._bufs = (ctypes.c_char * (BUFFER * batch))()
        self._names = (ctypes.c_char * (SOCKADDR_SIZE * batch))()
        self._rx_iov = (IoVec * batch)()
        self._rx = (MMsgHdr * batch)()
        self._tx_bufs = (ctypes.c_char * (BUFFER * batch))()
        self._tx_iov = (IoVec * batch)()
        self._tx = (MMsgHdr * batch)()
        base = ctypes.addressof(self._bufs)
        names = ctypes.addressof(self._names)
        tx_base = ctypes.addressof(self._tx_bufs)
        self._name_addr = [names + i * SOCKADDR_SIZE for i in range(batch)]
        self._tx_addr = [tx_base + i * BUFFER for i in range(batch)]
        for i in range(batch):
            self._rx_iov[i].iov_base = base + i * BUFFER
            self._rx_iov[i].iov_len = BUFFER
            hdr = self._rx[i].msg_hdr
            hdr.msg_name = self._name_addr[i]
            hdr.msg_namelen = SOCKADDR_SIZE
            hdr.msg_iov = ctypes.pointer(self._rx_iov[i])
            hdr.msg_iovlen = 1
            self._tx_iov[i].iov_base = self._tx_addr[i]
            hdr = self._tx[i].msg_hdr
            hdr.msg_name = self._name_addr[i]
            hdr.msg_namelen = namelen
            hdr.msg_iov = ctypes.pointer(self._tx_iov[i])
            hdr.msg_iovlen = 1
        self._rx_template = bytes(self._rx)  # what recvmmsg overwrites, restored per call
        self._rx_size = ctypes.sizeof(self._rx)
        self._rx_view = memoryview(self._rx).cast("B")
        self._buf_view = memoryview(self._bufs).cast("B")
        self._tx_iov_view = memoryview(self._tx_iov).cast("B")
        self._stride = ctypes.sizeof(MMsgHdr)
        self._len_at = MMsgHdr.msg_len.offset
        self._namelen_at = MsgHdr.msg_namelen.offset
        self._iov_size = ctypes.sizeof(IoVec)
        self._iov_len_at = IoVec.iov_len.offset
        self._used = batch  # slots the last receive filled (their headers need a reset)
        self._keep: List[bytes] = []  # oversized answers sent from their own bytes

    def receive(self) -> List[Tuple[int, bytes]]:
        """Up to ``batch`` waiting datagrams as (slot, payload); [] when none wait."""
        if self._used:
            ctypes.memmove(self._rx, self._rx_template, self._rx_size)
        count = LIBC.recvmmsg(self.fd, self._rx, self.batch, MSG_DONTWAIT, None)  # type: ignore[union-attr]
        if count <= 0:
            self._used = 0
            if count == 0:
                return []
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, "recvmmsg failed")
        self._used = count
        lengths = U32.unpack_from
        rx = self._rx_view
        bufs = self._buf_view
        stride = self._stride
        at = self._len_at
        return [
            (i, bytes(bufs[i * BUFFER : i * BUFFER + lengths(rx, i * stride + at)[0]]))
            for i in range(count)
        ]

    def address(self, slot: int) -> Any:
        """The sender of slot ``slot`` as a Python socket address (slow path only)."""
        namelen = U32.unpack_from(self._rx_view, slot * self._stride + self._namelen_at)[0]
        raw = ctypes.string_at(self._name_addr[slot], namelen)
        family = int.from_bytes(raw[:2], "little")
        if family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big"), 0, 0

    def reply(self, answers: Sequence[Tuple[int, bytes]]) -> int:
        """Send each payload back to the sender of its slot; returns how many went out.
        Slots answered one after the other go out in one sendmmsg."""
        if not answers:
            return 0
        memmove = ctypes.memmove
        set_len = SIZE_T.pack_into
        iov = self._tx_iov_view
        iov_size = self._iov_size
        len_at = self._iov_len_at
        tx_addr = self._tx_addr
        oversized = []
        for slot, payload in answers:
            size = len(payload)
            if size > BUFFER:  # sent from its own bytes (then pointed back at the buffer)
                oversized.append(slot)
                self._tx_iov[slot].iov_base = ctypes.cast(
                    ctypes.c_char_p(payload), ctypes.c_void_p
                ).value
                self._keep.append(payload)
            else:
                memmove(tx_addr[slot], payload, size)
            set_len(iov, slot * iov_size + len_at, size)
        sent = 0
        first = answers[0][0]
        last = first
        for slot, _payload in answers[1:]:
            if slot != last + 1:
                sent += self._send_run(first, last + 1 - first)
                first = slot
            last = slot
        sent += self._send_run(first, last + 1 - first)
        for slot in oversized:
            self._tx_iov[slot].iov_base = tx_addr[slot]
        self._keep = []
        return sent

    def _send_run(self, first: int, count: int) -> int:
        """sendmmsg slots first .. first+count-1; one that fails is dropped alone."""
        sent = 0
        end = first + count
        while first < end:
            done = LIBC.sendmmsg(self.fd, ctypes.byref(self._tx[first]), end - first, 0)  # type: ignore[union-attr]
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
