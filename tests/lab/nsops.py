"""Functions the integration tests call inside a namespace through ``NsAgent``.

Adapters live in module globals so their caches persist between calls, as in the applier.
"""

from typing import Any, Dict, List, Optional, Tuple

from networkd.net.acl_rules import AclResult, AclRules, FilterRule
from networkd.net.addresses import AddressTable
from networkd.net.garp import Announcer
from networkd.net.nat_helper import FamilyNat
from networkd.net.nat_rules import NatResult, NatRule

_nat: Optional[FamilyNat] = None
_acl: Optional[AclRules] = None


def nat() -> FamilyNat:
    """The applier's nat adapter: IPv4 here, IPv6 in its helper process."""
    global _nat
    if _nat is None:
        _nat = FamilyNat()
    return _nat


def acl() -> AclRules:
    global _acl
    if _acl is None:
        _acl = AclRules()
    return _acl


def nat_apply(rules: List[NatRule], verify: bool = True) -> NatResult:
    return nat().apply(rules, verify=verify)


def nat_read() -> Dict[str, List[Optional[NatRule]]]:
    return nat().v4.read()


def nat_remove_all() -> int:
    return nat().remove_all()


def acl_apply(items: Dict[str, Any]) -> AclResult:
    return acl().apply(items)


def acl_read(family: int = 4) -> Dict[str, List[Optional[FilterRule]]]:
    return acl().read(family)


def acl_restart() -> None:
    """A new adapter, as in a restarted (or SIGKILLed and restarted) applier."""
    global _acl
    _acl = None


def acl_remove() -> int:
    return acl().remove()


def addr_host(interface: str) -> List[str]:
    return sorted(AddressTable(interface).host_addresses())


def addr_add(interface: str, ip: str) -> bool:
    return AddressTable(interface).add(ip)


def addr_remove(interface: str, ip: str) -> bool:
    return AddressTable(interface).remove(ip)


def addr_all(interface: str) -> List[Tuple[str, int]]:
    return AddressTable(interface).addresses()


def announce(interface: str, ip: str, packets: int = 3) -> int:
    table = AddressTable(interface)
    return Announcer(interface).announce(ip, table.mac(), packets)
