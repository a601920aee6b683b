"""Batched UDP I/O (recvmmsg/sendmmsg) on real loopback sockets."""

import socket
import time
from typing import List, Set, Tuple

import pytest

from networkd.dns.mmsg import BatchedUdp


def drain(clients: List[socket.socket], server: Tuple) -> Set[Tuple[int, bytes]]:
    time.sleep(0.05)
    seen = set()
    for index, sock in enumerate(clients):
        while True:
            try:
                data, peer = sock.recvfrom(100)
            except BlockingIOError:
                break
            assert peer[:2] == server[:2]
            seen.add((index, data))
    return seen


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_each_answer_reaches_the_sender_of_its_query(family: int, host: str) -> None:
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    address: Tuple = server.getsockname()
    clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    for c in clients:
        c.setblocking(False)
    batched = BatchedUdp(server, batch=8)
    try:
        assert batched.receive() == []
        for n in range(10):  # more than one batch
            clients[n % 3].sendto(b"q%d" % n, address)
        ports = {c.getsockname()[1] for c in clients}
        answered = 0
        while answered < 10:
            got = batched.receive()  # slots are reused by the next receive: answer first
            assert got, "every query arrives"
            for slot, _payload in got:
                assert batched.address(slot)[1] in ports
            assert batched.reply([(slot, b"a" + payload) for slot, payload in got]) == len(got)
            answered += len(got)
        assert answered == 10
        assert drain(clients, address) == {(n % 3, b"aq%d" % n) for n in range(10)}
    finally:
        server.close()
        for c in clients:
            c.close()
