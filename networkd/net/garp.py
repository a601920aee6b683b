"""Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for owned VIPs.

A VIP is announced in a burst when it is bound, in a second burst two seconds later (a
switch or peer that missed the first), and then every ``-vip.garp.refresh`` seconds.
Packets are built here and sent through an AF_PACKET raw socket (ARP) or a raw ICMPv6
socket (NA); nothing is shelled out.
"""

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

log = logging.getLogger("networkd.applier")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
ICMPV6_NS = 135
ICMPV6_NA = 136
NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = "ff02::1"

SECOND_BURST_DELAY = 2.0
BURST_PACKETS = 3


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def build_garp(mac: str, ip: str, op: int = ARP_REQUEST) -> bytes:
    """An Ethernet frame: broadcast ARP with sender = target = ``ip`` at ``mac``."""
    hw = mac_bytes(mac)
    addr = ipaddress.IPv4Address(ip).packed
    target_hw = b"\x00" * 6 if op == ARP_REQUEST else BROADCAST
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + hw + addr + target_hw + addr
    return BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp


def build_arp_probe(mac: str, ip: str) -> bytes:
    """An RFC 5227 ARP probe for ``ip``: sender IP 0.0.0.0, so nobody's ARP cache changes,
    and whoever has ``ip`` answers with a reply naming its MAC."""
    hw = mac_bytes(mac)
    target = ipaddress.IPv4Address(ip).packed
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARP_REQUEST)
    arp += hw + b"\x00" * 4 + b"\x00" * 6 + target
    return BROADCAST + hw + struct.pack("!H", ETH_P_ARP) + arp


def solicited_node(ip: str) -> str:
    """The solicited-node multicast address of an IPv6 address (ff02::1:ffXX:XXXX)."""
    low = ipaddress.IPv6Address(ip).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))


def build_neighbor_solicitation(mac: str, ip: str) -> bytes:
    """An ICMPv6 neighbour solicitation for ``ip`` with our link-layer address: whoever has
    ``ip`` answers with a neighbour advertisement naming its MAC (checksum: the kernel)."""
    target = ipaddress.IPv6Address(ip).packed
    option = struct.pack("!BB", 1, 1) + mac_bytes(mac)
    return struct.pack("!BBHI", ICMPV6_NS, 0, 0, 0) + target + option


def build_unsolicited_na(mac: str, ip: str) -> bytes:
    """An ICMPv6 neighbour advertisement (override set) with the target link-layer option.

    The checksum is left zero: the kernel fills it in for raw ICMPv6 sockets."""
    target = ipaddress.IPv6Address(ip).packed
    option = struct.pack("!BB", 2, 1) + mac_bytes(mac)
    return struct.pack("!BBHI", ICMPV6_NA, 0, 0, NA_FLAG_OVERRIDE) + target + option


class Announcer:
    """Sends announcements on one interface; sockets are opened lazily and reopened on error."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._arp: Optional[socket.socket] = None
        self._icmp6: Optional[socket.socket] = None

    def close(self) -> None:
        for sock in (self._arp, self._icmp6):
            if sock is not None:
                sock.close()
        self._arp = self._icmp6 = None

    def _arp_socket(self) -> socket.socket:
        if self._arp is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            try:
                sock.bind((self.interface, ETH_P_ARP))
            except OSError:
                sock.close()
                raise
            self._arp = sock
        return self._arp

    def _icmp6_socket(self) -> socket.socket:
        if self._icmp6 is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            index = socket.if_nametoindex(self.interface)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            self._icmp6 = sock
        return self._icmp6

    def probe(self, ip: str, mac: str) -> bool:
        """Ask who has ``ip`` (an ARP probe, or a neighbour solicitation for IPv6) without
        claiming it: a node that keeps a VIP while its lease is dead learns this way, at
        once, that another node answers for it. Errors are logged, never raised."""
        try:
            if ipaddress.ip_address(ip).version == 4:
                self._arp_socket().send(build_arp_probe(mac, ip))
            else:
                index = socket.if_nametoindex(self.interface)
                self._icmp6_socket().sendto(
                    build_neighbor_solicitation(mac, ip), (solicited_node(ip), 0, 0, index)
                )
        except OSError as exc:
            log.debug("probe failed ip=%s interface=%s reason=%s", ip, self.interface, exc)
            self.close()
            return False
        return True

    def announce(self, ip: str, mac: str, packets: int = BURST_PACKETS) -> int:
        """One burst for ``ip``; returns packets sent. Errors are logged, never raised."""
        version = ipaddress.ip_address(ip).version
        sent = 0
        try:
            if version == 4:
                sock = self._arp_socket()
                for i in range(packets):
                    # requests (what keepalived and arping -U send), one reply for old stacks
                    op = ARP_REPLY if i == packets - 1 and packets > 1 else ARP_REQUEST
                    sock.send(build_garp(mac, ip, op))
                    sent += 1
            else:
                sock6 = self._icmp6_socket()
                index = socket.if_nametoindex(self.interface)
                for _ in range(packets):
                    sock6.sendto(build_unsolicited_na(mac, ip), (ALL_NODES, 0, 0, index))
                    sent += 1
        except OSError as exc:
            log.warning("announce failed ip=%s interface=%s reason=%s", ip, self.interface, exc)
            self.close()
        return sent


@dataclass
class _Due:
    next_at: float
    second_burst: bool


class GarpSchedule:
    """When each bound VIP is announced next: now, +2 s, then every ``refresh`` seconds."""

    def __init__(self, refresh: float) -> None:
        self.refresh = max(1.0, float(refresh))
        self._due: Dict[str, _Due] = {}

    def bound(self, ip: str, now: float) -> None:
        """``ip`` was just bound (or adopted): first burst now, second burst at +2 s."""
        self._due[ip] = _Due(next_at=now, second_burst=True)

    def forget(self, ip: str) -> None:
        self._due.pop(ip, None)

    def known(self) -> List[str]:
        return sorted(self._due)

    def due(self, now: float) -> List[str]:
        """The VIPs to announce now; advances their schedule."""
        out: List[str] = []
        for ip, item in self._due.items():
            if now >= item.next_at:
                out.append(ip)
                if item.second_burst:
                    item.second_burst = False
                    item.next_at = now + SECOND_BURST_DELAY
                else:
                    item.next_at = now + self.refresh
        return sorted(out)

    def next_time(self) -> Optional[float]:
        return min((item.next_at for item in self._due.values()), default=None)

    def snapshot(self) -> List[Tuple[str, float]]:
        return sorted((ip, item.next_at) for ip, item in self._due.items())
