"""The forwarder and the replicas against a real authoritative upstream (BIND), in one
process: real sockets, the real unix channel, BIND's query log as the upstream's word.

Issue 10: unpredictable and merged upstream queries, strict reply matching, 0x20, the
cache keyed with DO and CD, the same flags on a miss and a hit, TC only when the answer
section does not fit, TCP clients forwarded over TCP, AXFR refused, TCP limits, and one
unsendable datagram not dropping its batch.
"""

import socket
import struct
import threading
import time
from typing import Iterator, List

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from networkd.dns.mmsg import BatchedUdp
from networkd.dns.tcp import TcpLimits
from tests.support.bind import Bind, zone
from tests.support.dnsharness import DnsHarness
from tests.support.dnsrelay import SPOOF_IP, Relay

MX_TARGETS = 12
EXAMPLE_ZONE = zone(
    "www A 10.0.0.1",
    "merge A 10.0.0.2",
    "tcp A 10.0.0.3",
    "udp A 10.0.0.4",
    "*.miss A 10.3.0.1",
    "spoofed A 10.0.0.5",
    *(f"mx MX {10 + i} mx{i}" for i in range(1, MX_TARGETS + 1)),
    *(f"mx{i} A 10.4.0.{i}" for i in range(1, MX_TARGETS + 1)),
    "mx1 AAAA fd00::4:1",  # the 13th glue record
)
SIGNED_ZONE = zone("www A 10.0.1.1", "other A 10.0.1.2")


@pytest.fixture(scope="module")
def bind() -> Iterator[Bind]:
    server = Bind(
        {"example.test": EXAMPLE_ZONE, "signed.test": SIGNED_ZONE}, signed=["signed.test"]
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def harness(bind: Bind) -> Iterator[DnsHarness]:
    h = DnsHarness(replicas=2, upstream_timeout=0.5, forward_deadline=2.0)
    h.set_forwarding([bind.address])
    try:
        yield h
    finally:
        h.close()


def ips(msg: dns.message.Message) -> List[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset if rd.rdtype in (1, 28))


# ----------------------------------------------------------------------------- RFC 5452


def test_upstream_ports_and_ids_unpredictable(bind: Bind) -> None:
    relay = Relay((bind.host, bind.port))
    h = DnsHarness(upstream_timeout=0.5, forward_deadline=2.0)
    try:
        h.set_forwarding([relay.address])
        for i in range(200):
            assert ips(h.query(f"n{i}.miss.example.test")) == ["10.3.0.1"]
        ports = {port for port, _qid, _data in relay.seen}
        ids = {qid for _port, qid, _data in relay.seen}
        assert len(relay.seen) == 200
        assert len(ports) >= 150, f"only {len(ports)} source ports for 200 queries"
        assert len(ids) == 200
    finally:
        h.close()
        relay.close()


def test_identical_concurrent_misses_are_one_upstream_query(bind: Bind) -> None:
    relay = Relay((bind.host, bind.port), delay=0.3)  # keeps the first query in flight
    h = DnsHarness(replicas=2, upstream_timeout=1.0, forward_deadline=3.0)
    answers: List[List[str]] = []
    try:
        h.set_forwarding([relay.address])

        def ask() -> None:
            answers.append(ips(h.query("merge.example.test", timeout=3)))

        threads = [threading.Thread(target=ask) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert answers == [["10.0.0.2"]] * 50
        assert len(relay.seen) == 1
        assert len(bind.queries("merge.example.test")) == 1
        assert h.forwarder.stats.merged + h.forwarder.stats.cache_hits == 49
    finally:
        h.close()
        relay.close()


def test_forged_replies_are_ignored(bind: Bind) -> None:
    relay = Relay((bind.host, bind.port), delay=0.1, spoof=True)
    h = DnsHarness(upstream_timeout=1.0, forward_deadline=3.0)
    try:
        h.set_forwarding([relay.address])
        assert ips(h.query("spoofed.example.test")) == ["10.0.0.5"]
        assert ips(h.query("spoofed.example.test")) == ["10.0.0.5"]  # the cache is clean
        assert h.forwarder.stats.rejected_replies == 2  # the other port: dropped by the kernel
        assert not any(SPOOF_IP in str(e) for _k, e in h.forwarder.cache.items())
    finally:
        h.close()
        relay.close()


def test_case_randomization_0x20(bind: Bind) -> None:
    h = DnsHarness(upstream_timeout=0.5, forward_deadline=2.0, case_randomize=True)
    try:
        h.set_forwarding([bind.address])
        for i in range(20):
            msg = h.query(f"Case{i}.Miss.Example.Test")
            assert ips(msg) == ["10.3.0.1"]
            assert msg.question[0].name.to_text() == f"Case{i}.Miss.Example.Test."
            assert msg.answer[0].name == dns.name.from_text(f"case{i}.miss.example.test.")
        with open(bind.log_path) as f:
            logged = [line.split("query: ")[1].split()[0] for line in f if ".miss." in line.lower()]
        spellings = {name for name in logged if "case" in name.lower()}
        assert len(spellings) == 20
        assert any(name != name.lower() and name[:4] != "Case" for name in spellings)
    finally:
        h.close()


# ----------------------------------------------------------------------------- RFC-exact


@pytest.mark.parametrize("first_do", [False, True], ids=["do0-first", "do1-first"])
def test_dnssec_ok_keys_the_cache(harness: DnsHarness, first_do: bool) -> None:
    name = "www.signed.test" if first_do else "other.signed.test"
    order = [first_do, not first_do, first_do, not first_do]  # miss, miss, hit, hit
    for want_dnssec in order:
        msg = harness.query(name, use_edns=0, want_dnssec=want_dnssec)
        sigs = [r for r in msg.answer if r.rdtype == dns.rdatatype.RRSIG]
        assert bool(sigs) == want_dnssec, (want_dnssec, msg.to_text())
        assert ips(msg)
    assert len(harness.forwarder.cache) == 2


def test_ra_set_aa_clear_and_our_opt_on_miss_and_hit(harness: DnsHarness) -> None:
    for _ in range(2):  # a miss, then a hit
        msg = harness.query("www.example.test", use_edns=0, payload=4000)
        assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA
        assert msg.edns == 0 and msg.payload == 1232
        assert msg.to_wire().count(b"\x00\x00\x29") == 1
    plain = harness.query("www.example.test")
    assert plain.flags & dns.flags.RA and not plain.flags & dns.flags.AA and plain.edns == -1
    nx = harness.query("nothing.example.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.RA
    assert not nx.flags & dns.flags.AA and 0 < nx.authority[0].ttl <= 30


def test_only_glue_overflowing_is_no_truncation(harness: DnsHarness) -> None:
    for tcp in (False, False, True):  # miss, hit, then TCP: everything
        msg = harness.query("mx.example.test", "MX", tcp=tcp)
        assert len(msg.answer[0]) == MX_TARGETS
        assert not msg.flags & dns.flags.TC
        if tcp:
            glue = sum(len(r) for r in msg.additional if r.name.labels[0].startswith(b"mx"))
            assert glue == MX_TARGETS + 1
        else:
            assert len(msg.to_wire()) <= 512


def test_tcp_clients_are_forwarded_over_tcp(harness: DnsHarness, bind: Bind) -> None:
    assert ips(harness.query("tcp.example.test", tcp=True)) == ["10.0.0.3"]
    assert ips(harness.query("udp.example.test")) == ["10.0.0.4"]
    assert [q.tcp for q in bind.queries("tcp.example.test")] == [True]
    assert [q.tcp for q in bind.queries("udp.example.test")] == [False]


def test_zone_transfers_refused_never_formerr(harness: DnsHarness) -> None:
    for rdtype in ("AXFR", "IXFR"):
        q = dns.message.make_query("example.test", rdtype)
        if rdtype == "IXFR":
            q.authority.append(
                dns.rrset.from_text("example.test.", 0, "IN", "SOA", "ns. admin. 1 1 1 1 1")
            )
        for tcp in (True, False):
            reply = harness.send(q, tcp=tcp)
            assert reply.rcode() == dns.rcode.REFUSED, (rdtype, tcp)


# ----------------------------------------------------------------------------- limits


def read_answer(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 2:
        chunk = sock.recv(2 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    size = struct.unpack(">H", head)[0]
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return body


def tcp_ask(sock: socket.socket, name: str) -> dns.message.Message:
    wire_query = dns.message.make_query(name, "A").to_wire()
    sock.sendall(struct.pack(">H", len(wire_query)) + wire_query)
    return dns.message.from_wire(read_answer(sock))


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_one_client_cannot_take_every_tcp_slot() -> None:
    h = DnsHarness(replicas=1, tcp_limits=TcpLimits(max_conns=8, per_source=3))
    held: List[socket.socket] = []
    try:
        h.set_data(domains={"t.lain": ["10.0.0.1"]})
        refused = False
        for _ in range(20):  # one client opens connections until one is refused
            sock = connect(h.port, "127.0.0.1")
            held.append(sock)
            try:
                assert ips(tcp_ask(sock, "t.lain")) == ["10.0.0.1"]
            except (ConnectionError, OSError):
                refused = True
                break
        assert refused and len(held) == 3 + 1
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            other = connect(h.port, source)
            held.append(other)
            assert ips(tcp_ask(other, "t.lain")) == ["10.0.0.1"]
        # every slot is taken now: a newcomer evicts the longest idle connection
        evicted_before = sum(s.tcp.evicted for s in h.servers if s.tcp is not None)
        for source in ("127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"):
            late = connect(h.port, source)
            held.append(late)
            assert ips(tcp_ask(late, "t.lain")) == ["10.0.0.1"]
        assert sum(s.tcp.evicted for s in h.servers if s.tcp is not None) > evicted_before
    finally:
        for sock in held:
            sock.close()
        h.close()


def test_one_unsendable_datagram_does_not_drop_its_batch() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for c in clients:
            c.settimeout(1)
            c.sendto(b"q", server.getsockname())
        time.sleep(0.05)
        batched = BatchedUdp(server)
        got = batched.receive()
        assert len(got) == 3
        too_big = b"x" * 70000  # more than a UDP datagram can carry: EMSGSIZE
        sent = batched.reply([(got[0][0], b"a0"), (got[1][0], too_big), (got[2][0], b"a2")])
        assert sent == 2
        assert clients[0].recv(100) == b"a0" and clients[2].recv(100) == b"a2"
    finally:
        server.close()
        for c in clients:
            c.close()
