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


def ethernet_ipv6(src_mac: str, icmp: bytes, hop_limit: int = 255) -> bytes:
    from networkd.net.garp import mac_bytes

    header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, hop_limit) + b"\xfe\x80" + b"\0" * 30
    return b"\x33\x33\x00\x00\x00\x01" + mac_bytes(src_mac) + b"\x86\xdd" + header + icmp


def test_arp_probe_asks_without_claiming():
    from networkd.net.garp import build_arp_probe

    probe = parse_arp(build_arp_probe(MAC, "10.0.0.1"))
    assert probe is not None
    assert probe.op == 1 and probe.sender_ip == "0.0.0.0" and probe.target_ip == "10.0.0.1"
    # a probe names nobody as owner: it is never a claim
    assert find_claim(probe, {"10.0.0.1"}, {"02:00:00:00:00:09"}) is None


def test_neighbor_solicitation_and_solicited_node_address():
    from networkd.net.garp import build_neighbor_solicitation, solicited_node

    assert solicited_node("fd00::12:3456") == "ff02::1:ff12:3456"
    ns = build_neighbor_solicitation(MAC, "fd00::1")
    assert ns[0] == 135 and len(ns) == 32 and ns[24:26] == b"\x01\x01"


def test_neighbor_advertisements_are_claims_from_other_macs():
    from networkd.net.claims import find_na_claim, parse_neighbor_advert

    other = "02:00:00:00:00:02"
    advert = parse_neighbor_advert(ethernet_ipv6(other, build_unsolicited_na(other, "fd00::1")))
    assert advert is not None and advert.target == "fd00::1" and advert.mac == other
    assert find_na_claim(advert, {"fd00::1"}, {MAC}) == "fd00::1"
    assert find_na_claim(advert, {"fd00::2"}, {MAC}) is None
    # the target link-layer option names the claimant, whatever the Ethernet source
    relayed = parse_neighbor_advert(ethernet_ipv6(MAC, build_unsolicited_na(other, "fd00::1")))
    assert relayed is not None and relayed.mac == other
    mine = parse_neighbor_advert(ethernet_ipv6(MAC, build_unsolicited_na(MAC, "fd00::1")))
    assert mine is not None and find_na_claim(mine, {"fd00::1"}, {MAC}) is None
    # not a neighbour advertisement, or forwarded (hop limit below 255), or cut short
    na = build_unsolicited_na(other, "fd00::1")
    assert parse_neighbor_advert(ethernet_ipv6(other, na, hop_limit=64)) is None
    assert parse_neighbor_advert(ethernet_ipv6(other, b"\x87" + na[1:])) is None
    assert parse_neighbor_advert(ethernet_ipv6(other, na)[:70]) is None
    assert parse_neighbor_advert(build_garp(MAC, "10.0.0.1")) is None


def test_carrier_changes_from_netlink_link_messages():
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from networkd.net.carrier import IFF_LOWER_UP, carrier_of, decode_links

    def link(name: str, flags: int) -> bytes:
        msg = ifinfmsg()
        msg["header"]["type"] = 16  # RTM_NEWLINK
        msg["index"] = 2
        msg["flags"] = flags
        msg["attrs"] = [("IFLA_IFNAME", name)]
        msg.encode()
        return bytes(msg.data)

    messages = decode_links(link("eth0", IFF_LOWER_UP) + link("eth1", 0) + link("eth0", 0))
    assert [carrier_of(m, "eth0") for m in messages] == [True, None, False]
    assert decode_links(b"\x00" * 10) == []
