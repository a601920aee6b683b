"""The DNS wire parser: valid queries, every kind of malformed input; nothing ever crashes
the parsers (the query parser, dnslib on upstream answers, the FORMERR builder)."""

import struct

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from networkd.dns import wire
from networkd.dns.answers import formerr_answer
from networkd.dns.fill import BadAnswer
from tests.support.dnswire import fill_of


def q(name: str = "foo.lain", rdtype: str = "A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def test_parse_plain_query() -> None:
    msg = dns.message.make_query("Foo.Lain", "AAAA")
    parsed = wire.parse_query(msg.to_wire())
    assert parsed.id == msg.id
    assert parsed.qname == b"\x03Foo\x04Lain\x00"
    assert parsed.lname == b"\x03foo\x04lain\x00"
    assert parsed.qtype == 28 and parsed.qclass == 1
    assert parsed.edns is None and parsed.max_udp == 512
    assert parsed.flags & wire.FLAG_RD


def test_parse_edns_query() -> None:
    data = q(
        use_edns=0,
        payload=4096,
        want_dnssec=True,
        options=[dns.edns.GenericOption(10, b"12345678")],
    )
    parsed = wire.parse_query(data)
    assert parsed.edns is not None
    assert parsed.edns.udp_size == 4096 and parsed.edns.flags & wire.EDNS_DO
    assert parsed.max_udp == 4096
    assert parsed.edns.raw.endswith(b"12345678")


def test_small_and_huge_edns_sizes_are_clamped() -> None:
    assert wire.parse_query(q(use_edns=0, payload=100)).max_udp == 512
    assert wire.parse_query(q(use_edns=0, payload=65000)).max_udp == wire.MAX_UDP_SIZE


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", wire.Ignore),
        (b"\x00" * 11, wire.Ignore),
        (b"\x12\x34\x81\x80" + b"\x00\x01" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01", wire.Ignore),
        (b"\x12\x34\x01\x00" + b"\x00\x00" + b"\x00" * 6, wire.FormatError),  # no question
        (
            b"\x12\x34\x01\x00" + b"\x00\x02" + b"\x00" * 6 + b"\x00\x00\x01\x00\x01" * 2,
            wire.FormatError,
        ),
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x03foo", wire.FormatError),  # name cut
        (
            b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x03foo\x00\x00",
            wire.FormatError,
        ),  # type cut
        (b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c\x00\x01\x00\x01", wire.FormatError),
        (
            b"\x12\x34\x01\x00\x00\x01"
            + b"\x00" * 6
            + b"\x40"
            + b"a" * 64
            + b"\x00\x00\x01\x00\x01",
            wire.FormatError,
        ),
        (
            b"\x12\x34\x01\x00\x00\x01"
            + b"\x00" * 6
            + b"\x3fa" * 0
            + (b"\x3f" + b"a" * 63) * 5
            + b"\x00\x00\x01\x00\x01",
            wire.FormatError,
        ),
        (
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
            + b"\x00\x00\x01\x00\x01"
            + b"\x00\x00\x29",
            wire.FormatError,
        ),
        (
            b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x01\x00\x01" + b"junk",
            wire.FormatError,
        ),
    ],
)
def test_malformed(data: bytes, error: type) -> None:
    with pytest.raises(error):
        wire.parse_query(data)


def test_two_opt_records_are_formerr() -> None:
    base = bytearray(q(use_edns=0))
    opt = base[-11:]
    struct.pack_into(">H", base, 10, 2)
    with pytest.raises(wire.FormatError):
        wire.parse_query(bytes(base + opt))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_never_crashes_on_random_bytes(data: bytes) -> None:
    try:
        wire.parse_query(data)
    except (wire.FormatError, wire.Ignore):
        pass
    formerr_answer(data)
    try:
        fill_of(data, 0.0)
    except BadAnswer:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=8))
def test_never_crashes_on_mutated_queries(cut: int, noise: bytes) -> None:
    data = q("a.b.example", "A", use_edns=0)
    for mutated in (data[:cut], data[:cut] + noise + data[cut:], noise + data):
        try:
            wire.parse_query(mutated)
        except (wire.FormatError, wire.Ignore):
            pass


def test_encode_name() -> None:
    assert wire.encode_name("Foo.LAIN.") == b"\x03foo\x04lain\x00"
    assert wire.encode_name("") == b"\x00"
    for bad in ("a..b", "x" * 64 + ".lain", ".".join(["abcdefgh"] * 40)):
        with pytest.raises(ValueError):
            wire.encode_name(bad)
    assert wire.decode_name(b"\x03foo\x04lain\x00") == "foo.lain."
    assert wire.label_offsets(b"\x03foo\x04lain\x00") == [0, 4]


def test_parse_ip_treats_mapped_v6_as_v4() -> None:
    assert wire.parse_ip("10.0.0.1") == (4, b"\x0a\x00\x00\x01")
    assert wire.parse_ip("::ffff:10.0.0.1") == (4, b"\x0a\x00\x00\x01")
    assert wire.parse_ip("fd00::1")[0] == 6
    for bad in ("", "10.0.0", "fe80::1%eth0", "x", "1.2.3.4.5"):
        with pytest.raises(ValueError):
            wire.parse_ip(bad)


def test_ixfr_query_with_its_soa_parses() -> None:
    query = dns.message.make_query("example.test", "IXFR")
    query.authority.append(dns.rrset.from_text("example.test.", 0, "IN", "SOA", "a. b. 1 1 1 1 1"))
    parsed = wire.parse_query(query.to_wire())
    assert parsed.qtype == wire.TYPE_IXFR
    with pytest.raises(wire.FormatError):  # an SOA in any other query is still malformed
        wire.parse_query(query.to_wire().replace(b"\x00\xfb\x00\x01", b"\x00\x01\x00\x01", 1))


def test_cache_key_carries_do_and_cd() -> None:
    plain = wire.parse_query(q("WWW.example", "A"))
    signed = wire.parse_query(q("www.example", "A", use_edns=0, want_dnssec=True))
    assert plain.cache_key()[:-1] == signed.cache_key()[:-1]
    assert plain.cache_key() != signed.cache_key()
    cd = dns.message.make_query("www.example", "A")
    cd.flags |= dns.flags.CD
    assert wire.parse_query(cd.to_wire()).cache_key() not in (plain.cache_key(), signed.cache_key())
