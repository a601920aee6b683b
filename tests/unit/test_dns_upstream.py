"""Upstream query building and matching: IDs, 0x20, strict replies, our OPT."""

import dns.edns
import dns.message

from networkd.dns import wire
from networkd.dns.forwarder import upstream_query
from networkd.dns.upstream import QueryIds, randomize_case, reply_matches


def test_query_ids_random_and_not_repeating() -> None:
    ids = QueryIds()
    drawn = [ids.next() for _ in range(4000)]
    assert len(set(drawn)) == 4000
    assert max(drawn) > 50000 and min(drawn) < 15000


def test_0x20_changes_letters_only() -> None:
    name = b"\x03www\x07example\x04test\x00"
    spellings = {randomize_case(name) for _ in range(50)}
    assert len(spellings) > 40
    assert all(s.lower() == name and len(s) == len(name) for s in spellings)
    digits = b"\x0312-\x01_\x00"
    assert randomize_case(digits) == digits


def test_reply_matching_is_strict() -> None:
    question = b"\x03WwW\x07example\x00\x00\x01\x00\x01"
    good = wire.HEADER.pack(0x1234, 0x8180, 1, 0, 0, 0) + question
    assert reply_matches(good, 0x1234, question, exact_case=True)
    assert not reply_matches(good, 0x1235, question, exact_case=True)  # wrong ID
    not_response = wire.HEADER.pack(0x1234, 0x0100, 1, 0, 0, 0) + question
    assert not reply_matches(not_response, 0x1234, question, exact_case=True)
    other = wire.HEADER.pack(0x1234, 0x8180, 1, 0, 0, 0) + b"\x03www\x04evil\x00\x00\x01\x00\x01"
    assert not reply_matches(other, 0x1234, question, exact_case=False)
    lower = wire.HEADER.pack(0x1234, 0x8180, 1, 0, 0, 0) + question.lower()
    assert reply_matches(lower, 0x1234, question, exact_case=False)
    assert not reply_matches(lower, 0x1234, question, exact_case=True)  # 0x20 not echoed
    assert not reply_matches(good[:20], 0x1234, question, exact_case=False)


def test_upstream_query_keeps_the_clients_opt_or_adds_ours() -> None:
    cookie = dns.edns.GenericOption(10, b"abcdefgh")
    with_opt = dns.message.make_query("a.example", "A", use_edns=0, payload=1400, options=[cookie])
    data = with_opt.to_wire()
    rest, question = upstream_query(wire.parse_query(data), data, case_randomize=False)
    assert rest == data[2:] and question == wire.parse_query(data).question
    plain = dns.message.make_query("a.example", "A").to_wire()
    rest, _question = upstream_query(wire.parse_query(plain), plain, case_randomize=False)
    parsed = wire.parse_query(b"\x00\x00" + rest)
    assert parsed.edns is not None and parsed.edns.udp_size == wire.OUR_UDP_SIZE
    rest, question = upstream_query(wire.parse_query(plain), plain, case_randomize=True)
    assert question.lower() == wire.parse_query(plain).question
    assert wire.parse_query(b"\x00\x00" + rest).question == question
