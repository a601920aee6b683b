"""Answer construction, without sockets: flags, OPT, TTLs, truncation by sections, errors."""

from typing import List

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from networkd.dns import answers, wire
from networkd.dns.fill import fill_from_answer
from networkd.dns.records import record_for


def query(name: str = "Mx.Example.", rdtype: str = "MX", **kw) -> wire.Query:
    return wire.parse_query(dns.message.make_query(name, rdtype, **kw).to_wire())


def upstream(mx: int = 12, glue: int = 13, aa: bool = True, ad: bool = False) -> bytes:
    """An authoritative MX answer: ``mx`` records, NS in authority, ``glue`` addresses."""
    q = dns.message.make_query("mx.example.", "MX", use_edns=0, payload=4096)
    resp = dns.message.make_response(q)
    if aa:
        resp.flags |= dns.flags.AA
    if ad:
        resp.flags |= dns.flags.AD
    targets = [f"{10 + i} mail{i}.example." for i in range(mx)]
    resp.answer.append(dns.rrset.from_text("mx.example.", 300, "IN", "MX", *targets))
    resp.authority.append(dns.rrset.from_text("example.", 3600, "IN", "NS", "ns1.example."))
    for i in range(glue):
        resp.additional.append(
            dns.rrset.from_text(f"mail{i % mx}.example.", 300, "IN", "A", f"10.4.0.{i + 1}")
        )
    return resp.to_wire()


def parse(data: bytes) -> dns.message.Message:
    return dns.message.from_wire(data)


def names(msg: dns.message.Message) -> List[str]:
    return [r.name.to_text() for r in msg.answer]


def test_forwarded_answer_flags_ra_set_aa_cleared_names_as_asked() -> None:
    entry = fill_from_answer(upstream(), 100.0).entry
    q = query("Mx.Example.", use_edns=0, payload=4096)
    msg = parse(answers.cached_answer(q, entry, 110.0, answers.limit_for(q, False)))
    assert msg.flags & dns.flags.RA and msg.flags & dns.flags.RD
    assert not msg.flags & dns.flags.AA
    assert names(msg) == ["Mx.Example."]
    assert msg.answer[0].ttl == 290
    assert msg.edns == 0 and msg.payload == wire.OUR_UDP_SIZE
    assert sum(len(r) for r in msg.additional) == 13


def test_ad_only_to_clients_that_ask_for_it() -> None:
    entry = fill_from_answer(upstream(ad=True), 0.0).entry
    plain = parse(answers.cached_answer(query(), entry, 0.0, 65535))
    assert not plain.flags & dns.flags.AD
    with_do = query(use_edns=0, want_dnssec=True)
    assert parse(answers.cached_answer(with_do, entry, 0.0, 65535)).flags & dns.flags.AD


@pytest.mark.parametrize(
    "limit, sections",
    [
        (4096, (12, 1, 13)),  # everything fits
        (512, (12, 1, 0)),  # glue dropped, no TC
        (300, (12, 0, 0)),  # authority dropped too, still no TC
        (200, (0, 0, 0)),  # the answer section does not fit: TC, no records
    ],
)
def test_truncation_drops_additional_then_authority_then_sets_tc(limit: int, sections) -> None:
    entry = fill_from_answer(upstream(), 0.0).entry
    q = query()
    data = answers.cached_answer(q, entry, 0.0, limit)
    msg = parse(data)
    got = (
        sum(len(r) for r in msg.answer),
        sum(len(r) for r in msg.authority),
        sum(len(r) for r in msg.additional),
    )
    assert got == sections
    assert bool(msg.flags & dns.flags.TC) == (sections[0] == 0)
    assert len(data) <= limit


def test_negative_answer_keeps_its_soa_or_sets_tc() -> None:
    q = dns.message.make_query("nx.example.", "A")
    resp = dns.message.make_response(q)
    resp.set_rcode(dns.rcode.NXDOMAIN)
    resp.authority.append(
        dns.rrset.from_text("example.", 3600, "IN", "SOA", "ns. admin. 1 2 3 4 60")
    )
    entry = fill_from_answer(resp.to_wire(), 0.0).entry
    parsed = wire.parse_query(q.to_wire())
    msg = parse(answers.cached_answer(parsed, entry, 10.0, 512))
    assert msg.rcode() == dns.rcode.NXDOMAIN and msg.authority[0].ttl == 50
    tiny = parse(answers.cached_answer(parsed, entry, 10.0, 40))
    assert tiny.flags & dns.flags.TC and not tiny.authority


def test_local_answer_over_tcp_is_cut_to_65535_with_tc() -> None:
    record = record_for([f"fd00::{i:x}" for i in range(1, 3001)], 600)
    q = query("many.lain.", "AAAA")
    data = answers.local_answer(q, record, answers.limit_for(q, tcp=True))
    msg = parse(data)
    assert len(data) <= 65535 and msg.flags & dns.flags.TC and msg.flags & dns.flags.AA
    assert 2000 < sum(len(r) for r in msg.answer) < 3000


def test_error_answers_echo_the_question_and_carry_our_opt() -> None:
    q = query("FoO.example.", "AXFR", use_edns=0, want_dnssec=True)
    refused = parse(answers.error_answer(q, wire.RCODE_REFUSED))
    assert refused.rcode() == dns.rcode.REFUSED and refused.id == q.id
    assert refused.question[0].name.to_text() == "FoO.example."
    assert refused.edns == 0 and refused.payload == 1232 and refused.ednsflags & dns.flags.DO
    badvers = parse(answers.error_answer(query(use_edns=0), wire.RCODE_BADVERS))
    assert badvers.rcode() == dns.rcode.BADVERS
    plain = parse(answers.error_answer(query(), wire.RCODE_SERVFAIL))
    assert plain.rcode() == dns.rcode.SERVFAIL and plain.edns == -1


def test_formerr_for_what_does_not_parse() -> None:
    data = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03foo\x00\x00\x01\x00\x01junk"
    resp = parse(answers.formerr_answer(data) or b"")
    assert resp.id == 0xABCD and resp.rcode() == dns.rcode.FORMERR and resp.flags & dns.flags.QR
    assert resp.question[0].name.to_text() == "foo."
    assert answers.formerr_answer(b"\x00" * 5) is None
    assert answers.formerr_answer(b"\x00\x01\x80\x00" + b"\x00" * 8) is None  # a response


def test_cut_to_fit_guards_framing() -> None:
    q = query("big.lain.", "A")
    big = wire.HEADER.pack(q.id, 0x8180, 1, 1, 0, 0) + q.question + b"\x00" * 70000
    cut = answers.cut_to_fit(big)
    msg = parse(cut)
    assert msg.flags & dns.flags.TC and msg.question[0].name.to_text() == "big.lain."
    assert answers.cut_to_fit(b"short") == b"short"
