"""A DNS replica (the server class on create_listeners sockets) against SPEC section 4,
queried with dnspython over UDP and TCP, forwarding to real dnsmasq upstreams."""

import os
import random
import socket
import struct
import time
from typing import Iterator, List

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from networkd.bus.messages import PortSpec, VipConfig
from networkd.dns import wire
from networkd.dns.tcp import TcpLimits
from tests.support.dnsharness import DnsHarness
from tests.support.dnsmasq import Dnsmasq, FakeUpstream
from tests.support.ports import free_port


@pytest.fixture
def harness() -> Iterator[DnsHarness]:
    h = DnsHarness(upstream_timeout=0.4, forward_deadline=2.0)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def upstream() -> Iterator[Dnsmasq]:
    d = Dnsmasq(
        {
            "up.example": "10.20.0.1",
            "x.corp": "10.20.0.9",
            "big.example": [f"10.30.0.{i}" for i in range(1, 101)],
        },
        local_ttl=30,
        extra_args=["--address=/nx.example/"],
    ).start()
    try:
        yield d
    finally:
        d.close()


def ips(msg: dns.message.Message) -> List[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


@pytest.fixture
def zone(harness: DnsHarness) -> DnsHarness:
    vips = {
        "10.1.0.1": VipConfig(ip="10.1.0.1", app="webrouter", proc="worker", ports=[PortSpec(80)]),
        "10.1.0.2": VipConfig(ip="10.1.0.2", app="webrouter", proc="worker", ports=[PortSpec(80)]),
        "10.1.0.3": VipConfig(ip="10.1.0.3", app="registry", proc="web", ports=[PortSpec(80)]),
    }
    harness.set_data(
        domains={
            "foo.lain": ["10.0.0.1"],
            "*.lain": ["10.0.0.2"],
            "*.app.lain": ["10.0.0.3"],
            "exact.app.lain": ["10.0.0.4"],
            "MiXeD.Lain": ["10.0.0.5"],
            "dual.lain": ["10.0.0.6", "fd00::6", "10.0.0.7", "fd00::7"],
            "v4only.lain": ["10.0.0.8"],
            "node.lain": "node",
            "webrouter.lain": "webrouter",
            "both.test": ["10.0.0.10"],
            "big.lain": [f"10.2.0.{i}" for i in range(1, 101)],
        },
        hosts={"multi.test": ["10.9.0.1", "10.9.0.2", "fd00::9"], "both.test": ["10.9.9.9"]},
        vips=vips,
        node_address="192.168.50.5",
    )
    return harness


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_local_rules(zone: DnsHarness, tcp: bool) -> None:
    cases = {
        "foo.lain": ["10.0.0.1"],  # exact
        "any.lain": ["10.0.0.2"],  # one-label wildcard
        "a.b.c.lain": ["10.0.0.2"],
        "lain": ["10.0.0.2"],  # apex
        "app.lain": ["10.0.0.3"],  # apex of the longer suffix
        "x.app.lain": ["10.0.0.3"],  # longest suffix
        "exact.app.lain": ["10.0.0.4"],  # exact over wildcard
        "mixed.lain": ["10.0.0.5"],  # key case-insensitive
        "node.lain": ["192.168.50.5"],
        "webrouter.lain": ["10.1.0.1", "10.1.0.2"],
        "multi.test": ["10.9.0.1", "10.9.0.2"],  # hosts, several addresses
        "both.test": ["10.0.0.10"],  # etcd over hosts
        "dual.lain": ["10.0.0.6", "10.0.0.7"],
    }
    for name, expected in cases.items():
        msg = zone.query(name, "A", tcp=tcp)
        assert msg.rcode() == dns.rcode.NOERROR, name
        assert ips(msg) == expected, name
        assert all(rrset.ttl == 600 for rrset in msg.answer)
        assert msg.flags & dns.flags.AA
    assert ips(zone.query("dual.lain", "AAAA", tcp=tcp)) == ["fd00::6", "fd00::7"]
    assert ips(zone.query("multi.test", "AAAA", tcp=tcp)) == ["fd00::9"]


def test_case_as_asked_and_flags(zone: DnsHarness) -> None:
    q = dns.message.make_query("FoO.LaIn", "A")
    q.flags &= ~dns.flags.RD
    msg = dns.query.udp(q, "127.0.0.1", port=zone.port, timeout=2)
    assert msg.question[0].name.to_text() == "FoO.LaIn."
    assert msg.answer[0].name.to_text() == "FoO.LaIn."
    assert not msg.flags & dns.flags.RD and msg.flags & dns.flags.RA
    # the memo keeps spellings apart
    for spelling in ("foo.lain", "FOO.LAIN", "FoO.LaIn"):
        assert zone.query(spelling).answer[0].name.to_text() == spelling + "."


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nodata_and_other_types(zone: DnsHarness, tcp: bool) -> None:
    for name, rdtype in (
        ("v4only.lain", "AAAA"),
        ("foo.lain", "MX"),
        ("foo.lain", "TXT"),
        ("x.lain", "AAAA"),
    ):
        msg = zone.query(name, rdtype, tcp=tcp)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer == [], (name, rdtype)
    zone.set_data(domains={"node.lain": "node"})  # no node address: local but empty
    assert zone.query("node.lain").answer == []


def test_no_mapped_aaaa(zone: DnsHarness) -> None:
    zone.set_data(domains={"m.lain": ["::ffff:10.0.0.1"]})
    assert ips(zone.query("m.lain", "A")) == ["10.0.0.1"]
    assert zone.query("m.lain", "AAAA").answer == []


def test_deletion_and_update_seen_at_once(zone: DnsHarness, upstream: Dnsmasq) -> None:
    zone.set_forwarding([upstream.address])
    assert ips(zone.query("foo.lain")) == ["10.0.0.1"]
    zone.set_data(domains={"foo.lain": ["10.0.0.99"]})
    assert ips(zone.query("foo.lain")) == ["10.0.0.99"]
    zone.set_data(domains={})
    msg = zone.query("foo.lain")  # no longer local: forwarded, dnsmasq knows nothing of it
    assert msg.answer == [] and not msg.flags & dns.flags.AA


def test_truncation_over_udp_whole_over_tcp(zone: DnsHarness) -> None:
    msg = zone.query("big.lain", "A")
    assert msg.flags & dns.flags.TC
    assert len(msg.to_wire()) <= 512
    whole = zone.query("big.lain", "A", tcp=True)
    assert not whole.flags & dns.flags.TC and len(ips(whole)) == 100
    edns = zone.query("big.lain", "A", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(ips(edns)) == 100
    small = zone.query("big.lain", "A", use_edns=0, payload=1232)
    assert small.flags & dns.flags.TC and len(small.to_wire()) <= 1232


def test_edns_answers_carry_one_opt(zone: DnsHarness) -> None:
    msg = zone.query("foo.lain", use_edns=0, payload=1400, want_dnssec=True)
    assert msg.edns == 0 and msg.ednsflags & dns.flags.DO
    raw = msg.to_wire()
    assert raw.count(b"\x00\x00\x29") == 1
    bad = dns.message.make_query("foo.lain", "A", use_edns=1)
    reply = dns.query.udp(bad, "127.0.0.1", port=zone.port, timeout=2)
    assert reply.rcode() == dns.rcode.BADVERS


def test_malformed_gets_formerr_or_silence(zone: DnsHarness) -> None:
    bad = b"\xbe\xef\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x03foo\x00\x00\x01\x00\x01"
    reply = zone.raw_udp(bad)
    assert reply is not None and reply[:2] == b"\xbe\xef" and reply[3] & 0xF == 1
    assert zone.raw_udp(b"\x00\x01\x02") is None  # shorter than a header: silence
    assert zone.raw_udp(b"\xbe\xef\x81\x80" + b"\x00" * 8) is None  # a response: silence
    notify = b"\xbe\xef\x20\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03foo\x00\x00\x06\x00\x01"
    reply = zone.raw_udp(notify)
    assert reply is not None and reply[3] & 0xF == wire.RCODE_NOTIMP


def test_random_and_truncated_packets_udp_and_tcp(zone: DnsHarness) -> None:
    rng = random.Random(4)
    good = dns.message.make_query("foo.lain", "A", use_edns=0).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(3000):
            kind = i % 3
            if kind == 0:
                data = os.urandom(rng.randrange(0, 300))
            elif kind == 1:
                data = good[: rng.randrange(0, len(good))]
            else:
                data = bytearray(good)
                for _ in range(3):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                data = bytes(data)
            s.sendto(data, ("127.0.0.1", zone.port))
    for i in range(300):
        with socket.create_connection(("127.0.0.1", zone.port), timeout=2) as c:
            if i % 2:
                payload = os.urandom(rng.randrange(1, 200))
            else:
                payload = struct.pack(">H", 200) + good[: rng.randrange(len(good))]
            c.sendall(payload)
    # TCP garbage framed properly gets FORMERR and the connection stays usable
    with socket.create_connection(("127.0.0.1", zone.port), timeout=2) as c:
        junk = b"\x12\x34\x01\x00\x00\x05" + b"\x00" * 6
        c.sendall(struct.pack(">H", len(junk)) + junk + struct.pack(">H", len(good)) + good)
        buf = b""
        while len(buf) < 4 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0] + 2:
            chunk = c.recv(4096)
            assert chunk
            buf += chunk
        first_len = struct.unpack(">H", buf[:2])[0]
        assert buf[2 + 3] & 0xF == 1  # FORMERR
        rest = buf[2 + first_len :]
        while len(rest) < 2 + struct.unpack(">H", rest[:2])[0]:
            rest += c.recv(4096)
        assert dns.message.from_wire(rest[2:]).answer
    assert zone.alive()
    assert ips(zone.query("foo.lain")) == ["10.0.0.1"]
    assert ips(zone.query("foo.lain", tcp=True)) == ["10.0.0.1"]


def test_tcp_idle_timeout() -> None:
    h = DnsHarness(tcp_limits=TcpLimits(idle=0.3))
    try:
        with socket.create_connection(("127.0.0.1", h.port), timeout=3) as c:
            start = time.monotonic()
            assert c.recv(10) == b""  # closed by the server
            assert time.monotonic() - start < 2.0
    finally:
        h.close()


# ----------------------------------------------------------------------------- forwarding


def test_forward_answer_and_nxdomain_relayed(harness: DnsHarness, upstream: Dnsmasq) -> None:
    harness.set_forwarding([upstream.address])
    msg = harness.query("up.example")
    assert ips(msg) == ["10.20.0.1"]
    assert harness.query("no.nx.example").rcode() == dns.rcode.NXDOMAIN
    assert harness.query("no.nx.example", tcp=True).rcode() == dns.rcode.NXDOMAIN


def test_servfail_then_second_upstream(harness: DnsHarness, upstream: Dnsmasq) -> None:
    bad = FakeUpstream("servfail")
    try:
        harness.set_forwarding([bad.address, upstream.address])
        assert ips(harness.query("up.example")) == ["10.20.0.1"]
        assert bad.questions()  # the first server was asked first
        assert harness.forwarder.stats.upstream_failures >= 1
    finally:
        bad.close()


def test_all_dead_then_back(harness: DnsHarness) -> None:
    dead1, dead2 = FakeUpstream("dead"), FakeUpstream("dead")
    port = dead2.port
    try:
        harness.set_forwarding([dead1.address, dead2.address])
        start = time.monotonic()
        msg = harness.query("up.example", timeout=5)
        elapsed = time.monotonic() - start
        assert msg.rcode() == dns.rcode.SERVFAIL
        assert elapsed < 2.5  # two servers, 0.4 s each, within the 2 s deadline
        dead2.close()
        back = Dnsmasq({"up.example": "10.20.0.1"}, port=port).start()
        try:
            deadline = time.monotonic() + 5
            while True:
                msg = harness.query("up.example", timeout=5)
                if msg.rcode() == dns.rcode.NOERROR:
                    break
                assert time.monotonic() < deadline, "no good answer after the upstream came back"
                time.sleep(0.2)
            assert ips(msg) == ["10.20.0.1"]
            assert time.monotonic() - deadline < 0  # within the few seconds of SERVFAIL caching
        finally:
            back.close()
    finally:
        dead1.close()
        dead2.close()


def test_edns_reaches_upstream_with_one_opt(harness: DnsHarness) -> None:
    fake = FakeUpstream("answer")
    try:
        harness.set_forwarding([fake.address])
        cookie = dns.edns.GenericOption(10, b"abcdefgh")
        msg = harness.query("e.example", use_edns=0, payload=1400, options=[cookie])
        assert ips(msg) == ["10.9.9.9"]
        assert msg.to_wire().count(b"\x00\x00\x29") == 1
        raw = fake.received[-1]
        parsed = wire.parse_query(raw)  # raises FormatError on two OPT records
        assert parsed.edns is not None and parsed.edns.udp_size == 1400
        assert parsed.edns.raw.endswith(b"abcdefgh")
        assert struct.unpack(">H", raw[10:12])[0] == 1
        plain = harness.query("p.example")
        assert plain.edns == -1  # the client asked without EDNS: no OPT in its answer
        upstream_opt = wire.parse_query(fake.received[-1]).edns  # ours, so answers come whole
        assert upstream_opt is not None and upstream_opt.udp_size == wire.OUR_UDP_SIZE
    finally:
        fake.close()


def test_domain_server_override_routes_only_its_suffix(
    harness: DnsHarness, upstream: Dnsmasq
) -> None:
    corp = Dnsmasq({"x.corp": "10.40.0.1", "up.example": "10.40.0.2"}).start()
    try:
        harness.set_forwarding([upstream.address], {"corp": [corp.address]})
        assert ips(harness.query("x.corp")) == ["10.40.0.1"]
        assert ips(harness.query("X.Corp", "A", tcp=True)) == ["10.40.0.1"]
        assert ips(harness.query("up.example")) == ["10.20.0.1"]
        assert "up.example" not in corp.queries()
        assert "x.corp" not in upstream.queries()
    finally:
        corp.close()


def test_ttls_count_down_in_cached_answers(harness: DnsHarness, upstream: Dnsmasq) -> None:
    harness.set_forwarding([upstream.address])
    first = harness.query("up.example")
    assert first.answer[0].ttl == 30
    time.sleep(2.1)
    second = harness.query("up.example")
    again = harness.query("up.example", tcp=True)
    assert 26 <= second.answer[0].ttl <= 28
    assert 26 <= again.answer[0].ttl <= 28
    assert upstream.queries().count("up.example") == 1
    assert harness.server.stats.cache_hits >= 2


def test_a_cached_answer_asked_after_its_second_is_rebuilt_as_a_fresh_one(
    harness: DnsHarness, upstream: Dnsmasq
) -> None:
    """The same query bytes again after a TTL counted down: the memo's answer has expired
    and is rebuilt from the query parsed before (Memo.stale). It must be what the slow
    path builds (a TCP query, never memoised) but for the ID."""
    harness.set_forwarding([upstream.address])
    harness.query("up.example")  # a miss: the cache fills
    query = dns.message.make_query("up.example", "A", use_edns=0)
    data = query.to_wire()
    for _ in range(4):  # built on the slow path, then served from the memo
        assert harness.raw_udp(data) is not None
    first = dns.message.from_wire(harness.raw_udp(data) or b"")
    time.sleep(1.2)
    for delay in range(4):
        rebuilt = dns.message.from_wire(harness.raw_udp(data) or b"")
        fresh = harness.send(query, tcp=True)
        if rebuilt.answer[0].ttl == fresh.answer[0].ttl:
            break
        time.sleep(0.1 * delay)  # the second turned between the two
    assert rebuilt.id == query.id
    assert rebuilt.flags == fresh.flags
    assert rebuilt.question == fresh.question
    assert rebuilt.answer == fresh.answer
    assert rebuilt.answer[0].ttl == fresh.answer[0].ttl <= first.answer[0].ttl - 1
    assert [str(r) for r in rebuilt.answer[0]] == ["10.20.0.1"]
    assert rebuilt.opt is not None and fresh.opt is not None


def test_negative_answers_cached_for_soa_minimum(harness: DnsHarness) -> None:
    fake = FakeUpstream("nxdomain", soa_ttl=300, soa_minimum=20)
    try:
        harness.set_forwarding([fake.address])
        first = harness.query("gone.example")
        second = harness.query("gone.example")
        assert first.rcode() == second.rcode() == dns.rcode.NXDOMAIN
        assert len(fake.received) == 1
        assert second.authority[0].ttl <= 20
    finally:
        fake.close()


def test_truncated_upstream_answer_fetched_over_tcp(harness: DnsHarness, upstream: Dnsmasq) -> None:
    harness.set_forwarding([upstream.address])
    udp = harness.query("big.example")
    assert udp.flags & dns.flags.TC
    whole = harness.query("big.example", tcp=True)
    assert not whole.flags & dns.flags.TC and len(ips(whole)) == 100


def test_no_forward_to_ourselves(harness: DnsHarness) -> None:
    harness.set_forwarding([f"127.0.0.1#{harness.port}"])
    assert harness.forwarder.forwarding.upstreams == []
    assert harness.query("loop.example").rcode() == dns.rcode.SERVFAIL


def test_two_replicas_share_the_port() -> None:
    h = DnsHarness(replicas=2)
    try:
        h.set_data(domains={"r.lain": ["10.0.0.1"]})
        for _ in range(50):
            assert ips(h.query("r.lain")) == ["10.0.0.1"]
        assert sum(s.stats.queries for s in h.servers) == 50
    finally:
        h.close()


def test_create_listener_port_taken() -> None:
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    try:
        from networkd.dns.sockets import create_listener

        with pytest.raises(OSError):
            create_listener("127.0.0.1", port)
    finally:
        blocker.close()
