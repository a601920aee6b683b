"""Duplicate-claim detection: another MAC announcing a VIP this node holds.

AF_PACKET sockets read every ARP packet on the VIP interface and, while an IPv6 VIP is
bound, every IPv6 packet (kept only when it is an ICMPv6 neighbour advertisement). An ARP
request or reply whose sender IP is one of our bound VIPs, or a neighbour advertisement
whose target is one, sent from a MAC that is not ours, is a claim: another node believes
it owns the VIP (a partitioned old owner, or a new owner after our lease was lost), or
answers our probe for it. The applier publishes it and either re-announces (its lease is
alive: the VIP is ours) or yields (its lease is dead or unknown).
"""

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Set

from networkd.net.garp import ETH_P_ARP, ETH_P_IP, ICMPV6_NA, mac_text

log = logging.getLogger("networkd.applier")

PACKET_OUTGOING = 4
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


@dataclass(frozen=True)
class NeighborAdvert:
    """An ICMPv6 neighbour advertisement: who says it has ``target``."""

    target: str
    mac: str  # the target link-layer address option, else the Ethernet source


def _payload(frame: bytes, ethertype: int) -> Optional[bytes]:
    """The Ethernet payload when the frame (one VLAN tag allowed) carries ``ethertype``."""
    if len(frame) < 14:
        return None
    (kind,) = struct.unpack("!H", frame[12:14])
    offset = 14
    if kind == 0x8100 and len(frame) >= 18:  # one VLAN tag
        (kind,) = struct.unpack("!H", frame[16:18])
        offset = 18
    return frame[offset:] if kind == ethertype else None


def parse_arp(frame: bytes) -> Optional[ArpPacket]:
    """An Ethernet frame carrying IPv4-over-Ethernet ARP, or None for anything else."""
    if len(frame) < 42:
        return None
    body = _payload(frame, ETH_P_ARP)
    if body is None or len(body) < 28:
        return None
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", body[:8])
    if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
        return None
    return ArpPacket(
        op=op,
        sender_mac=mac_text(body[8:14]),
        sender_ip=str(ipaddress.IPv4Address(body[14:18])),
        target_mac=mac_text(body[18:24]),
        target_ip=str(ipaddress.IPv4Address(body[24:28])),
    )


def parse_neighbor_advert(frame: bytes) -> Optional[NeighborAdvert]:
    """An Ethernet frame carrying an ICMPv6 neighbour advertisement, or None."""
    packet = _payload(frame, ETH_P_IPV6)
    if packet is None or len(packet) < 40 + 24 or packet[0] >> 4 != 6:
        return None
    if packet[6] != IPPROTO_ICMPV6 or packet[7] != 255:  # RFC 4861: hop limit 255
        return None
    icmp = packet[40:]
    if icmp[0] != ICMPV6_NA or icmp[1] != 0:
        return None
    target = str(ipaddress.IPv6Address(icmp[8:24]))
    mac = mac_text(frame[6:12])
    options = icmp[24:]
    while len(options) >= 8:
        kind, units = options[0], options[1]
        if units == 0:
            break
        if kind == 2 and units == 1:  # target link-layer address
            mac = mac_text(options[2:8])
            break
        options = options[units * 8 :]
    return NeighborAdvert(target=target, mac=mac)


def find_claim(packet: ArpPacket, owned: Iterable[str], own_macs: Iterable[str]) -> Optional[str]:
    """The VIP claimed by ``packet`` (sender IP owned by us, sender MAC not ours), or None."""
    if packet.op not in (1, 2) or packet.sender_ip == "0.0.0.0":
        return None
    if packet.sender_mac.lower() in {m.lower() for m in own_macs}:
        return None
    return packet.sender_ip if packet.sender_ip in set(owned) else None


def find_na_claim(
    advert: NeighborAdvert, owned: Iterable[str], own_macs: Iterable[str]
) -> Optional[str]:
    """The VIP claimed by a neighbour advertisement from another MAC, or None."""
    if advert.mac.lower() in {m.lower() for m in own_macs}:
        return None
    return advert.target if advert.target in set(owned) else None


@dataclass(frozen=True)
class Claim:
    ip: str
    mac: str


class ClaimListener:
    """Non-blocking ARP (and, when asked, IPv6) reader on one interface; ``read`` returns
    the claims seen."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._sock: Optional[socket.socket] = None
        self._sock6: Optional[socket.socket] = None

    def _open(self, ethertype: int) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        try:
            sock.bind((self.interface, ethertype))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def open(self, ipv6: bool = False) -> socket.socket:
        """Listen for ARP (and for neighbour advertisements when ``ipv6``)."""
        if self._sock is None:
            self._sock = self._open(ETH_P_ARP)
        if ipv6 and self._sock6 is None:
            self._sock6 = self._open(ETH_P_IPV6)
        elif not ipv6 and self._sock6 is not None:
            self._sock6.close()
            self._sock6 = None
        return self._sock

    def filenos(self) -> List[int]:
        return [s.fileno() for s in (self._sock, self._sock6) if s is not None]

    def close(self) -> None:
        for sock in (self._sock, self._sock6):
            if sock is not None:
                sock.close()
        self._sock = self._sock6 = None

    def read(self, owned: Set[str], own_macs: Set[str], limit: int = 1000) -> List[Claim]:
        claims: List[Claim] = []
        if self._sock is None:
            return claims
        for sock in [s for s in (self._sock, self._sock6) if s is not None]:
            for frame in self._frames(sock, limit):
                ip: Optional[str] = None
                mac = ""
                packet = parse_arp(frame)
                if packet is not None:
                    ip, mac = find_claim(packet, owned, own_macs), packet.sender_mac
                else:
                    advert = parse_neighbor_advert(frame)
                    if advert is not None:
                        ip, mac = find_na_claim(advert, owned, own_macs), advert.mac
                if ip is not None:
                    claims.append(Claim(ip=ip, mac=mac))
        return claims

    def _frames(self, sock: socket.socket, limit: int) -> List[bytes]:
        frames: List[bytes] = []
        for _ in range(limit):
            try:
                frame, address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("claim listener failed interface=%s reason=%s", self.interface, exc)
                self.close()
                break
            if len(address) > 2 and address[2] == PACKET_OUTGOING:
                continue
            frames.append(frame)
        return frames
