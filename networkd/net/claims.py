"""Duplicate-claim detection: another MAC announcing a VIP this node holds.

An AF_PACKET socket reads every ARP packet on the VIP interface. A request or reply whose
sender IP is one of our bound VIPs and whose sender MAC is not ours is a claim: another
node believes it owns the VIP (a partitioned old owner, or a new owner after our lease
was lost). The applier publishes it and, under fencing, yields.
"""

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Set

from networkd.net.garp import ETH_P_ARP, ETH_P_IP, mac_text

log = logging.getLogger("networkd.applier")

PACKET_OUTGOING = 4


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def parse_arp(frame: bytes) -> Optional[ArpPacket]:
    """An Ethernet frame carrying IPv4-over-Ethernet ARP, or None for anything else."""
    if len(frame) < 42:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    offset = 14
    if ethertype == 0x8100 and len(frame) >= 46:  # one VLAN tag
        (ethertype,) = struct.unpack("!H", frame[16:18])
        offset = 18
    if ethertype != ETH_P_ARP:
        return None
    body = frame[offset : offset + 28]
    if len(body) < 28:
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


def find_claim(packet: ArpPacket, owned: Iterable[str], own_macs: Iterable[str]) -> Optional[str]:
    """The VIP claimed by ``packet`` (sender IP owned by us, sender MAC not ours), or None."""
    if packet.op not in (1, 2) or packet.sender_ip == "0.0.0.0":
        return None
    if packet.sender_mac.lower() in {m.lower() for m in own_macs}:
        return None
    return packet.sender_ip if packet.sender_ip in set(owned) else None


@dataclass(frozen=True)
class Claim:
    ip: str
    mac: str


class ClaimListener:
    """Non-blocking ARP reader on one interface; ``read`` returns the claims seen."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._sock: Optional[socket.socket] = None

    def open(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            try:
                sock.bind((self.interface, ETH_P_ARP))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def fileno(self) -> int:
        return self.open().fileno()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def read(self, owned: Set[str], own_macs: Set[str], limit: int = 1000) -> List[Claim]:
        claims: List[Claim] = []
        try:
            sock = self.open()
        except OSError as exc:
            log.debug("claim listener unavailable interface=%s reason=%s", self.interface, exc)
            return claims
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
            packet = parse_arp(frame)
            if packet is None:
                continue
            ip = find_claim(packet, owned, own_macs)
            if ip is not None:
                claims.append(Claim(ip=ip, mac=packet.sender_mac))
        return claims
