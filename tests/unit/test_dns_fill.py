"""Cache fills parsed with dnslib: what is kept, dropped and rewritten from an upstream
answer, and that nothing malformed gets through."""

import struct

import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from networkd.dns import wire
from networkd.dns.cache import TTL_FIELD
from networkd.dns.fill import BadAnswer
from tests.support.dnswire import fill_of


def response(name: str = "a.example.", rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_response(dns.message.make_query(name, rdtype, use_edns=0))


def test_opt_dropped_sections_and_ttls_recorded() -> None:
    resp = response()
    resp.answer.append(dns.rrset.from_text("a.example.", 300, "IN", "A", "10.0.0.1", "10.0.0.2"))
    resp.authority.append(dns.rrset.from_text("example.", 900, "IN", "NS", "ns.example."))
    fill = fill_of(resp.to_wire(), 0.0)
    entry = fill.entry
    assert fill.cacheable and entry.counts == (2, 1, 0)  # OPT not counted, not kept
    assert b"\x00\x00\x29" not in entry.body
    assert [ttl for _offset, ttl in TTL_FIELD.iter_unpack(entry.ttls)] == [300, 300, 900]
    assert entry.ends[0] == 32 and entry.ends[1] == len(entry.body)
    assert entry.expires_at == 300.0


def test_owner_names_point_at_the_question() -> None:
    resp = response("WwW.Example.")
    resp.answer.append(dns.rrset.from_text("WwW.Example.", 60, "IN", "A", "10.0.0.1"))
    entry = fill_of(resp.to_wire(), 0.0).entry
    assert entry.body.startswith(b"\xc0\x0c")  # the name as each client spelled it


def test_records_after_opt_are_dropped_with_it() -> None:
    resp = response()
    resp.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "10.0.0.1"))
    data = resp.to_wire()  # ..., OPT last
    extra = b"\x01x\x07example\x00" + struct.pack(">HHIH", 1, 1, 60, 4) + b"\x0a\x09\x09\x09"
    patched = bytearray(data + extra)
    patched[11] += 1  # arcount: OPT, then one more record
    entry = fill_of(bytes(patched), 0.0).entry
    assert entry.counts == (1, 0, 0) and b"\x0a\x09\x09\x09" not in entry.body


def test_rdlength_dnslib_would_not_honour_is_refused() -> None:
    resp = response()
    resp.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "10.0.0.1"))
    data = bytearray(resp.to_wire())
    at = data.index(b"\x00\x04\x0a\x00\x00\x01")
    data[at : at + 2] = b"\x00\x08"  # an A record claiming 8 bytes of address
    data += b"\x00" * 4
    with pytest.raises(BadAnswer):
        fill_of(bytes(data), 0.0)


def test_top_bit_ttl_means_zero() -> None:
    resp = response()
    resp.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "10.0.0.1"))
    data = bytearray(resp.to_wire())
    at = data.index(b"\x00\x00\x00\x3c")
    data[at : at + 4] = b"\x80\x00\x00\x3c"
    assert not fill_of(bytes(data), 0.0).cacheable
    assert [ttl for _o, ttl in TTL_FIELD.iter_unpack(fill_of(bytes(data), 0.0).entry.ttls)] == [0]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 12,
        response().to_wire()[:20],
        bytes(response().to_wire()[:4]) + b"\x00\x02" + response().to_wire()[6:],
    ],
)
def test_garbage_is_a_bad_answer(data: bytes) -> None:
    with pytest.raises(BadAnswer):
        fill_of(data, 0.0)


@settings(max_examples=1500, deadline=None)
@given(st.integers(min_value=0, max_value=120), st.binary(min_size=1, max_size=12))
def test_mutated_answers_never_raise_anything_else(cut: int, noise: bytes) -> None:
    resp = response()
    resp.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "CNAME", "b.example."))
    resp.answer.append(dns.rrset.from_text("b.example.", 60, "IN", "A", "10.0.0.1"))
    data = resp.to_wire()
    for mutated in (data[:cut], data[:cut] + noise + data[cut:], data[:cut] + noise):
        try:
            fill = fill_of(mutated, 0.0)
        except BadAnswer:
            continue
        assert len(fill.entry.body) <= 65535
        wire.skip_name(fill.entry.body, 0) if fill.entry.body else None
