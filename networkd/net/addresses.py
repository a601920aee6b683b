"""VIP addresses on the VIP interface: a pure plan and a pyroute2 adapter.

VIPs are host addresses (``/32``, IPv6 ``/128``) on ``-net.interface``. The plan adopts
what is already right (an address present and desired is left alone: never removed and
re-added), adds what is missing, and removes only addresses that are both removable
(known to be VIPs: configured in the cluster or recorded as added by us) and not desired.
The node's primary address is never removed.
"""

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Iterable, List, Set, Tuple

from networkd.net.netlink import NetlinkSocket, netlink_errno

log = logging.getLogger("networkd.applier")

IFA_F_NODAD = 0x02


def normalize_ip(text: str) -> str:
    """The canonical text of an IP address; raises ValueError naming the bad value."""
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}")


def host_prefix(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


@dataclass(frozen=True)
class AddressPlan:
    """What to change on the interface. ``keep`` are adopted as they are."""

    add: Tuple[str, ...]
    remove: Tuple[str, ...]
    keep: Tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan_addresses(
    desired: Iterable[str],
    actual: Iterable[str],
    removable: Iterable[str],
    protected: Iterable[str] = (),
) -> AddressPlan:
    """Diff desired VIPs against the host addresses present on the interface.

    ``actual``: host-prefix addresses on the interface. ``removable``: addresses known to be
    VIPs (configured, or added by us before); only those are ever removed. ``protected``
    (the node's own addresses) are never removed, even when listed as removable.
    """
    want = {normalize_ip(ip) for ip in desired}
    have = {normalize_ip(ip) for ip in actual}
    may_remove = {normalize_ip(ip) for ip in removable} - {
        normalize_ip(ip) for ip in protected if ip
    }
    return AddressPlan(
        add=tuple(sorted(want - have)),
        remove=tuple(sorted((have & may_remove) - want)),
        keep=tuple(sorted(want & have)),
    )


class InterfaceMissing(RuntimeError):
    """The VIP interface does not exist (yet)."""


class AddressTable(NetlinkSocket):
    """Host-prefix addresses of one interface through netlink (pyroute2 IPRoute)."""

    def __init__(self, interface: str) -> None:
        super().__init__()
        self.interface = interface

    def index(self) -> int:
        links = self._route().link_lookup(ifname=self.interface)
        if not links:
            raise InterfaceMissing(f"interface {self.interface!r} does not exist")
        return int(links[0])

    def mac(self) -> str:
        for msg in self._route().get_links(self.index()):
            address = msg.get_attr("IFLA_ADDRESS")
            if address:
                return str(address)
        return ""

    def addresses(self) -> List[Tuple[str, int]]:
        """Every (address, prefixlen) on the interface, both families."""
        out: List[Tuple[str, int]] = []
        for msg in self._route().get_addr(index=self.index()):
            address = msg.get_attr("IFA_ADDRESS")
            if msg.get("family") == socket.AF_INET:
                # IFA_LOCAL is the interface's own address on point-to-point links
                address = msg.get_attr("IFA_LOCAL") or address
            if address:
                out.append((normalize_ip(str(address)), int(msg.get("prefixlen"))))
        return out

    def host_addresses(self) -> Set[str]:
        """Addresses with a host prefix (/32, /128): the ones a VIP can be."""
        return {ip for ip, plen in self.addresses() if plen == host_prefix(ip)}

    def add(self, ip: str) -> bool:
        """Bind ``ip`` with a host prefix; False when it was already there."""
        ip = normalize_ip(ip)
        kwargs = {}
        if ipaddress.ip_address(ip).version == 6:
            kwargs["flags"] = IFA_F_NODAD  # usable at once: no duplicate address detection delay
        try:
            self._route().addr(
                "add", index=self.index(), address=ip, prefixlen=host_prefix(ip), **kwargs
            )
        except Exception as exc:
            if netlink_errno(exc) == errno.EEXIST:
                return False
            raise
        return True

    def remove(self, ip: str) -> bool:
        """Remove ``ip``; False when it was not there."""
        ip = normalize_ip(ip)
        try:
            self._route().addr("del", index=self.index(), address=ip, prefixlen=host_prefix(ip))
        except Exception as exc:
            if netlink_errno(exc) in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    def apply(self, plan: AddressPlan) -> Tuple[List[str], List[str]]:
        """Apply a plan; returns (added, removed) as actually changed."""
        added = [ip for ip in plan.add if self.add(ip)]
        removed = [ip for ip in plan.remove if self.remove(ip)]
        return added, removed
