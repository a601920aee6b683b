"""Carrier changes of the VIP interface, from netlink link events (pyroute2).

A node that kept its VIPs through a cut (fencing ``hold``) probes for other owners every
200 ms; when its own link comes back (a cable, a switch port) it need not wait for the
next probe: the applier probes the moment the carrier returns, so a VIP that moved is
given up one round trip after the heal.
"""

import logging
import socket
import struct
from typing import Any, List, Optional

log = logging.getLogger("networkd.applier")

IFF_LOWER_UP = 0x10000
RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
NETLINK_ROUTE = 0


def carrier_of(message: Any, interface: str) -> Optional[bool]:
    """Whether ``message`` (an RTM_NEWLINK) says ``interface`` has carrier; None if it is
    about another interface or says nothing."""
    if message.get("event") != "RTM_NEWLINK":
        return None
    if message.get_attr("IFLA_IFNAME") != interface:
        return None
    carrier = message.get_attr("IFLA_CARRIER")
    if carrier is not None:
        return bool(carrier)
    return bool(int(message.get("flags", 0)) & IFF_LOWER_UP)


class CarrierWatch:
    """Non-blocking reader of link events; ``came_up()`` is true once per carrier return.

    A plain netlink socket bound to the link group (so reads never block), its messages
    decoded by pyroute2's ``ifinfmsg``."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._sock: Optional[socket.socket] = None
        self._up: Optional[bool] = None

    def open(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            sock.bind((0, RTMGRP_LINK))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def fileno(self) -> int:
        self.open()
        assert self._sock is not None
        return self._sock.fileno()

    def came_up(self) -> bool:
        """Drain the events; True when the carrier went from down to up meanwhile."""
        if self._sock is None:
            return False
        rose = False
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ENOBUFS after a flood: reopened on next use
                log.debug("link events unreadable reason=%s", exc)
                self.close()
                break
            for message in decode_links(data):
                up = carrier_of(message, self.interface)
                if up is None:
                    continue
                if up and self._up is False:
                    rose = True
                self._up = up
        return rose

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def decode_links(data: bytes) -> List[Any]:
    """The RTM_NEWLINK messages of one netlink datagram (others are skipped)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            break
        if kind == RTM_NEWLINK:
            message = ifinfmsg(data[offset : offset + length])
            try:
                message.decode()
            except Exception:  # a message we cannot read is not a carrier change
                pass
            else:
                message["event"] = "RTM_NEWLINK"
                out.append(message)
        offset += (length + 3) & ~3
    return out
