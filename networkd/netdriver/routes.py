"""Routes and links of container networks on this host: pure desired-vs-actual plans.

Desired, per routed network (and ipvlan l3):

- a ``/32`` host route to each local container through its host-side veth (``dev``);
- ``unreachable`` for each block this host owns, so an address of ours that no container
  holds is answered at once instead of leaving through the default route;
- each other host's block ``via`` that host's address, while its lease-bound route key
  exists (a departed host's blocks are withdrawn with its lease).

Every route networkd installs carries protocol ``ROUTE_PROTO``; routes with that protocol
that are not desired are removed, others are never touched.

Links: an endpoint's links are named after its ID (``LINK_PREFIXES``); a link with one of
those prefixes whose endpoint this host no longer has is a leftover and is removed.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Set, Tuple

ROUTE_PROTO = 77  # "networkd": marks our routes, so leftovers are found after a restart
# The default gateway of routed (and ipvlan l3) containers: a link-local address that every
# host-side veth holds, so the host answers the container's ARP for it; the container
# reaches it through a connected /32 route. Other addresses of the container's subnet are
# on-link too (the subnet's mask): the host side answers for them by proxy ARP.
LINK_GATEWAY = "169.254.1.1"
ID_CHARS = 12

HOST_VETH = "nr"  # routed: the host side of the container's veth
CONTAINER_VETH = "nc"  # routed: the container side (moved into the container by Docker)
MACVLAN = "nm"
IPVLAN = "ni"
LINK_PREFIXES = (HOST_VETH, CONTAINER_VETH, MACVLAN, IPVLAN)

KIND_LOCAL = "local"
KIND_REMOTE = "remote"
KIND_UNREACHABLE = "unreachable"


def link_name(prefix: str, endpoint_id: str) -> str:
    """The interface name of one of an endpoint's links (15 characters at most)."""
    return prefix + endpoint_id[:ID_CHARS]


def endpoint_of_link(name: str) -> str:
    """The endpoint-ID prefix a link of ours belongs to, "" for any other link."""
    prefix, rest = name[:2], name[2:]
    if (
        prefix in LINK_PREFIXES
        and len(rest) == ID_CHARS
        and all(c in "0123456789abcdef" for c in rest)
    ):
        return rest
    return ""


@dataclass(frozen=True)
class Route:
    """One IPv4 route in the main table: ``dst`` is a CIDR."""

    dst: str
    kind: str
    via: str = ""
    dev: str = ""


@dataclass(frozen=True)
class LocalEndpoint:
    endpoint_id: str
    address: str  # the container's IPv4 address
    routed: bool  # a veth with a /32 host route (routed, ipvlan l3 has none: kernel routes)


@dataclass(frozen=True)
class RemoteBlock:
    block: str
    via: str


def desired_routes(
    endpoints: Iterable[LocalEndpoint],
    present_links: Set[str],
    own_blocks: Iterable[str],
    remote_blocks: Iterable[RemoteBlock],
    node_address: str,
) -> Dict[str, Route]:
    """Routes this host should have, keyed by destination.

    A container's /32 route is desired only while its host-side veth exists (the route
    goes with the link); a remote block through our own address is skipped.
    """
    out: Dict[str, Route] = {}
    for block in own_blocks:
        out[block] = Route(block, KIND_UNREACHABLE)
    for remote in remote_blocks:
        if remote.via and remote.via != node_address and remote.block not in out:
            out[remote.block] = Route(remote.block, KIND_REMOTE, via=remote.via)
    for ep in endpoints:
        dev = link_name(HOST_VETH, ep.endpoint_id)
        if ep.routed and dev in present_links:
            dst = f"{ep.address}/32"
            out[dst] = Route(dst, KIND_LOCAL, dev=dev)
    return out


@dataclass(frozen=True)
class RoutePlan:
    add: Tuple[Route, ...]
    replace: Tuple[Route, ...]
    remove: Tuple[Route, ...]

    @property
    def empty(self) -> bool:
        return not (self.add or self.replace or self.remove)

    @property
    def changes(self) -> int:
        return len(self.add) + len(self.replace) + len(self.remove)


def plan_routes(desired: Mapping[str, Route], actual: Mapping[str, Route]) -> RoutePlan:
    """Diff desired routes against our routes present in the kernel (protocol ROUTE_PROTO)."""
    add = [r for dst, r in sorted(desired.items()) if dst not in actual]
    replace = [r for dst, r in sorted(desired.items()) if dst in actual and actual[dst] != r]
    remove = [r for dst, r in sorted(actual.items()) if dst not in desired]
    return RoutePlan(tuple(add), tuple(replace), tuple(remove))


def stale_links(
    present: Iterable[str], endpoints: Iterable[str], protected: Iterable[str] = ()
) -> List[str]:
    """Our links whose endpoint is neither known here nor protected (being made right now)."""
    keep = {e[:ID_CHARS] for e in endpoints} | {e[:ID_CHARS] for e in protected}
    return sorted(n for n in present if endpoint_of_link(n) and endpoint_of_link(n) not in keep)
