"""A UDP "upstream" in front of a real server, for what a real server will not do on cue:
hold each query a while (so identical queries overlap in flight), record the source port
and ID of every query it gets, and play an off-path attacker who races the real answer
with forged replies.

Each query is relayed to the real server (``target``) after ``delay`` seconds from a
fresh socket, and the real answer goes back from the relay's own address and port. With
``spoof`` set, three forged answers (address SPOOF_IP) reach the asker first: one from
another port of the relay's address with the right ID and question, one from the right
port with a wrong ID, and one from the right port with the right ID and another question.
"""

import socket
import threading
import time
from typing import List, Tuple

import dns.message
import dns.name
import dns.rrset

from tests.support.dnsmasq import DatagramServer

SPOOF_IP = "6.6.6.6"


class Relay(DatagramServer):
    def __init__(
        self,
        target: Tuple[str, int],
        host: str = "127.0.0.1",
        delay: float = 0.0,
        spoof: bool = False,
    ) -> None:
        super().__init__(host)
        self.target = target
        self.delay = delay
        self.spoof = spoof
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind((host, 0))  # the attacker's port on the relay's address
        self.seen: List[Tuple[int, int, bytes]] = []  # (source port, query ID, query)
        self.start()

    def handle(self, data: bytes, addr: Tuple[str, int]) -> None:
        self.seen.append((addr[1], int.from_bytes(data[:2], "big"), data))
        if self.spoof:
            self._forge(data, addr)
        threading.Thread(target=self._relay, args=(data, addr), daemon=True).start()

    def _forge(self, data: bytes, addr: Tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        name = query.question[0].name

        def forged(qname: dns.name.Name, qid: int) -> bytes:
            reply = dns.message.make_response(query)
            reply.id = qid
            reply.question[0] = dns.rrset.RRset(qname, 1, query.question[0].rdtype)
            reply.answer.append(dns.rrset.from_text(qname, 86400, "IN", "A", SPOOF_IP))
            return reply.to_wire()

        self.other.sendto(forged(name, query.id), addr)
        self.sock.sendto(forged(name, query.id ^ 0x5A5A), addr)
        self.sock.sendto(forged(dns.name.from_text("evil.invalid."), query.id), addr)

    def _relay(self, data: bytes, addr: Tuple[str, int]) -> None:
        if self.delay:
            time.sleep(self.delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            up.sendto(data, self.target)
            try:
                answer = up.recv(65535)
            except OSError:
                return
        try:
            self.sock.sendto(answer, addr)
        except OSError:
            pass

    def close(self) -> None:
        super().close()
        self.other.close()
