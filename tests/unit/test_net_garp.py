"""Pure GARP/NA packet building, ARP parsing, the announcement schedule and claim detection."""

import struct

from networkd.net.claims import find_claim, parse_arp
from networkd.net.garp import ARP_REPLY, GarpSchedule, build_garp, build_unsolicited_na

MAC = "02:00:00:00:00:01"


def test_garp_roundtrip():
    frame = build_garp(MAC, "10.0.0.1")
    assert frame[:6] == b"\xff" * 6 and len(frame) == 42
    arp = parse_arp(frame)
    assert arp is not None
    assert arp.op == 1 and arp.sender_ip == arp.target_ip == "10.0.0.1" and arp.sender_mac == MAC
    assert parse_arp(build_garp(MAC, "10.0.0.1", ARP_REPLY)).op == 2  # type: ignore[union-attr]


def test_parse_arp_rejects_garbage():
    assert parse_arp(b"") is None
    assert parse_arp(b"\x00" * 60) is None
    frame = bytearray(build_garp(MAC, "10.0.0.1"))
    frame[14:16] = struct.pack("!H", 6)  # hardware type not Ethernet
    assert parse_arp(bytes(frame)) is None


def test_na_layout():
    na = build_unsolicited_na(MAC, "fd00::1")
    assert na[0] == 136 and len(na) == 32
    assert na[4] & 0x20  # override flag
    assert na[24:26] == b"\x02\x01"


def test_claims():
    other = parse_arp(build_garp("02:00:00:00:00:02", "10.0.0.1"))
    mine = parse_arp(build_garp(MAC, "10.0.0.1"))
    assert other is not None and mine is not None
    assert find_claim(other, {"10.0.0.1"}, {MAC}) == "10.0.0.1"
    assert find_claim(mine, {"10.0.0.1"}, {MAC}) is None
    assert find_claim(other, {"110.0.0.1"}, {MAC}) is None


def test_schedule_burst_second_burst_refresh():
    sched = GarpSchedule(refresh=60)
    sched.bound("10.0.0.1", now=100.0)
    assert sched.due(100.0) == ["10.0.0.1"]
    assert sched.due(101.9) == []
    assert sched.due(102.0) == ["10.0.0.1"]
    assert sched.due(150.0) == []
    assert sched.due(162.0) == ["10.0.0.1"]
    sched.forget("10.0.0.1")
    assert sched.due(1000.0) == [] and sched.next_time() is None
