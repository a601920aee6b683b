"""The loopback limit: processes that answer every query with one fixed, precomputed
answer through the same batched calls as a replica (recvmmsg/sendmmsg on one shared
socket), doing nothing else. bench/dns.py runs it beside networkd so its figures show
how far the real server is from what this host's loopback allows.

``python -m bench.dns_baseline PORT PROCESSES``: serves 127.0.0.1:PORT until killed.
"""

import multiprocessing
import select
import socket
import sys
from typing import List

from networkd.dns.mmsg import BatchedUdp
from networkd.dns.server import register_shared
from networkd.dns.sockets import create_listener

# The fixed answer after the query's ID: QR RD RA, NOERROR, no sections (dnsperf matches
# answers by ID only, so this is the least work an answer can take).
ANSWER_TAIL = b"\x81\x80\x00\x00\x00\x00\x00\x00\x00\x00"


def serve(sock: socket.socket) -> None:
    batched = BatchedUdp(sock)
    ep = select.epoll()
    register_shared(ep, sock.fileno())  # as a replica watches the shared socket
    while True:
        ep.poll(1.0)
        while True:
            got = batched.receive()
            if not got:
                break
            batched.reply([(slot, data[:2] + ANSWER_TAIL) for slot, data in got])


def main(argv: List[str]) -> None:
    port, processes = int(argv[0]), int(argv[1])
    udp, tcp = create_listener("127.0.0.1", port)
    tcp.close()
    workers = [multiprocessing.Process(target=serve, args=(udp,)) for _ in range(processes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main(sys.argv[1:])
