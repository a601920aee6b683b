"""The replica <-> forwarder messages: entries survive the trip, bad shapes are refused."""

from typing import Any, List

import dns.message
import dns.rrset
import pytest

from networkd.dns import channel
from tests.support.dnswire import fill_of

KEY = b"\x01a\x07example\x00\x00\x01\x00\x01\x00"


def entry_item() -> List[Any]:
    q = dns.message.make_query("a.example.", "A")
    resp = dns.message.make_response(q)
    resp.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "10.0.0.1"))
    return channel.encode_entry(KEY, fill_of(resp.to_wire(), 5.0).entry)


def test_entry_round_trip() -> None:
    item = entry_item()
    kind, payload = channel.decode(channel.encode("fill", [item]))
    key, entry = channel.decode_entry(payload[0])
    assert kind == "fill" and key == KEY and entry.expires_at == 65.0
    assert channel.encode_entry(key, entry) == item


def broken(index: int, value: Any) -> List[Any]:
    item = entry_item()
    item[index] = value
    return item


@pytest.mark.parametrize(
    "item",
    [
        "not a list",
        entry_item()[:8],
        broken(0, "text key"),
        broken(0, b"k"),  # shorter than any (name, type, class, bits)
        broken(1, 16),  # rcode out of range
        broken(3, [1, 0]),
        broken(4, 42),
        broken(5, [10**6, 0]),  # past the body
        broken(5, [9, 3]),  # answer ends after the authority
        broken(6, b"\x00\x01\x00\x00"),  # not whole TTL fields
        broken(6, b"\xff\xff\x00\x00\x00\x01"),  # a TTL field past the body
        broken(7, "yesterday"),
    ],
)
def test_bad_entries_are_refused(item: Any) -> None:
    with pytest.raises(channel.ChannelError):
        channel.decode_entry(item)


@pytest.mark.parametrize(
    "data",
    [b"\xc1", channel.encode("nonsense", []), b"\x92\xa4fill\x05", b"\x93\xa4fill\x90\x90"],
)
def test_bad_messages_are_refused(data: bytes) -> None:
    with pytest.raises(channel.ChannelError):
        channel.decode(data)


def test_chunks_stay_under_the_message_size() -> None:
    items = [entry_item() for _ in range(5000)]
    messages = list(channel.chunked("fill", items, channel.entry_wire_size))
    assert len(messages) > 1 and all(len(m) <= channel.MAX_MESSAGE for m in messages)
    assert sum(len(channel.decode(m)[1]) for m in messages) == 5000
