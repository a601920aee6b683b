"""A replica's link to the forwarder, over real unix sockets: a forwarder that goes away
at any moment, even between accepting the replica and reading its first message, costs
no handed query, and never leaves the replica watching a closed fd."""

import os
import socket
import tempfile
from typing import Any, Iterator, List, Tuple

import dns.message
import pytest

from networkd.dns import channel
from networkd.dns.cache import ForwardCache
from networkd.dns.replica_link import RECONNECT, ForwarderLink
from networkd.dns.stats import ReplicaStats

CLIENT = ("127.0.0.1", 40000)


@pytest.fixture
def path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="networkd-link-") as d:
        yield os.path.join(d, "forwarder.sock")


def listener(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(path)
    sock.listen(4)
    return sock


def query(name: str) -> bytes:
    return dns.message.make_query(name, "A").to_wire()


def messages(conn: socket.socket) -> List[Tuple[str, Any]]:
    conn.settimeout(2)
    out = [channel.decode(conn.recv(1 << 20))]
    conn.setblocking(False)
    while True:
        try:
            out.append(channel.decode(conn.recv(1 << 20)))
        except BlockingIOError:
            return out


def test_connect_returns_a_live_fd_and_sends_nothing_yet(path: str) -> None:
    server = listener(path)
    link = ForwarderLink(path, "dns.0", ForwardCache(1 << 20), ReplicaStats())
    link.ask(CLIENT, query("a.example"), False, 1.0)
    fd = link.connect(1.0)
    assert fd is not None and fd == link.fileno()
    os.fstat(fd)  # open: the caller may register it
    conn, _ = server.accept()
    conn.setblocking(False)
    with pytest.raises(BlockingIOError):
        conn.recv(1 << 20)  # the hello and the ask wait for the caller's flush
    assert link.flush() is False
    kinds = [kind for kind, _ in messages(conn)]
    assert kinds[:2] == ["hello", "ask"]
    conn.close()
    server.close()


def test_forwarder_gone_before_the_first_send_keeps_every_handed_query(path: str) -> None:
    """The forwarder is killed after the replica's connect() but before its first send:
    the send fails, the link is down with its queries still handed, and the next
    forwarder gets them all."""
    first = listener(path)
    link = ForwarderLink(path, "dns.0", ForwardCache(1 << 20), ReplicaStats())
    sent = [query("a.example"), query("b.example")]
    for data in sent:
        link.ask(CLIENT, data, False, 1.0)
    assert link.connect(1.0) is not None
    first.close()  # the not yet accepted connection is reset
    assert link.flush() is False
    assert not link.connected and link.fileno() == -1
    assert len(link.handed) == 2

    second = listener(path)
    assert link.connect(1.0 + RECONNECT) is not None
    link.flush()
    conn, _ = second.accept()
    got = messages(conn)
    assert got[0][0] == "hello"
    asks = [item for kind, payload in got if kind == "ask" for item in payload]
    assert sorted(seq for seq, _addr, _data in asks) == sorted(link.handed)
    assert sorted(data for _seq, _addr, data in asks) == sorted(sent)
    conn.close()
    second.close()
