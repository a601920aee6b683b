"""The thin netlink adapter of container networks (pyroute2): links, sysctls, routes.

Used only by the root ``netlinks`` worker. Names and plans come from ``routes``; this
module only reads and changes the kernel, and turns kernel errors into messages that
say what is missing (a parent interface, the ipvlan module).
"""

import errno
import logging
import os
import socket
from typing import Any, Dict, List, Set, Tuple

from networkd.net.netlink import NetlinkSocket, netlink_errno
from networkd.netdriver.routes import (
    KIND_LOCAL,
    KIND_REMOTE,
    KIND_UNREACHABLE,
    LINK_GATEWAY,
    ROUTE_PROTO,
    Route,
    RoutePlan,
    endpoint_of_link,
)

log = logging.getLogger("networkd.netlinks")

RTN_UNICAST = 1
RTN_UNREACHABLE = 7
RT_SCOPE_LINK = 253
MAIN_TABLE = 254
IPVLAN_MODES = {"l2": 0, "l3": 1}
SYSCTL_ROOT = "/proc/sys/net/ipv4"


class LinkError(RuntimeError):
    """A link operation that cannot be done; the message is shown to the user."""


def missing_kind_message(kind: str) -> str:
    return (
        f"mode {kind}: this kernel has no {kind} link type: "
        f"the kernel module {kind} is missing (modprobe {kind}; CONFIG_{kind.upper()})"
    )


class LinkTable(NetlinkSocket):
    """Netlink in the worker's network namespace; one socket, reopened after errors."""

    # -- links ------------------------------------------------------------------------

    # Names and indexes come from libc (if_nameindex, if_nametoindex: a netlink request of
    # the worker's namespace answered in C). pyroute2's get_links parses every attribute of
    # every link: 27 ms for 120 links here against 1 ms, and a reconcile that took that
    # long three times over delayed the container start that had triggered it.

    @staticmethod
    def index(name: str) -> int:
        try:
            return socket.if_nametoindex(name)
        except OSError:
            return 0

    @staticmethod
    def names() -> Dict[int, str]:
        return dict(socket.if_nameindex())

    def our_links(self) -> Set[str]:
        """Links named like an endpoint's (see routes.LINK_PREFIXES)."""
        return {name for name in self.names().values() if endpoint_of_link(name)}

    def require_parent(self, parent: str) -> int:
        index = self.index(parent)
        if not index:
            raise LinkError(f"parent interface {parent!r} does not exist on this host")
        return index

    def create_veth(self, host: str, peer: str) -> bool:
        """A veth pair, host side up with the containers' gateway address and proxy ARP."""
        created = self._add(host, kind="veth", peer={"ifname": peer})
        index = self.index(host)
        self._route().link("set", index=index, state="up")
        try:
            self._route().addr(
                "add", index=index, address=LINK_GATEWAY, prefixlen=32, scope=RT_SCOPE_LINK
            )
        except Exception as exc:
            if netlink_errno(exc) != errno.EEXIST:
                raise LinkError(f"cannot give {host} the gateway address: {exc}") from None
        # The container's default route is on-link: the host side must answer its ARP for
        # any address (proxy_arp) without the default 0.8 s proxy delay.
        self.write_sysctl(f"conf/{host}/proxy_arp", "1")
        self.write_sysctl(f"neigh/{host}/proxy_delay", "0")
        return created

    def create_macvlan(self, name: str, parent: str) -> bool:
        return self._add(
            name, kind="macvlan", link=self.require_parent(parent), macvlan_mode="bridge"
        )

    def create_ipvlan(self, name: str, parent: str, mode: str) -> bool:
        return self._add(
            name, kind="ipvlan", link=self.require_parent(parent), ipvlan_mode=IPVLAN_MODES[mode]
        )

    def probe_kind(self, kind: str, parent: str, probe_name: str) -> None:
        """Make and remove a throw-away link of ``kind`` on ``parent``; raises LinkError."""
        extra: Dict[str, Any] = (
            {"macvlan_mode": "bridge"} if kind == "macvlan" else {"ipvlan_mode": 0}
        )
        self._add(probe_name, kind=kind, link=self.require_parent(parent), **extra)
        self.delete(probe_name)

    def _add(self, name: str, **kwargs: Any) -> bool:
        try:
            self._route().link("add", ifname=name, **kwargs)
        except Exception as exc:
            code = netlink_errno(exc)
            if code == errno.EEXIST:
                return False
            if code == errno.EOPNOTSUPP:
                raise LinkError(missing_kind_message(str(kwargs.get("kind")))) from None
            raise LinkError(f"cannot create {kwargs.get('kind')} link {name}: {exc}") from None
        return True

    def delete(self, name: str) -> bool:
        index = self.index(name)
        if not index:
            return False
        try:
            self._route().link("del", index=index)
        except Exception as exc:
            if netlink_errno(exc) in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    @staticmethod
    def write_sysctl(name: str, value: str) -> None:
        with open(os.path.join(SYSCTL_ROOT, name), "w") as f:
            f.write(value)

    # -- routes -----------------------------------------------------------------------

    def routes(self) -> Dict[str, Route]:
        """Our IPv4 routes in the main table (protocol ROUTE_PROTO), keyed by destination."""
        names = self.names()
        out: Dict[str, Route] = {}
        for msg in self._route().get_routes(family=socket.AF_INET, proto=ROUTE_PROTO):
            if msg.get_attr("RTA_TABLE", msg["table"]) != MAIN_TABLE:
                continue
            dst = f"{msg.get_attr('RTA_DST') or '0.0.0.0'}/{msg['dst_len']}"
            if msg["type"] == RTN_UNREACHABLE:
                out[dst] = Route(dst, KIND_UNREACHABLE)
            elif msg.get_attr("RTA_GATEWAY"):
                out[dst] = Route(dst, KIND_REMOTE, via=str(msg.get_attr("RTA_GATEWAY")))
            else:
                oif = msg.get_attr("RTA_OIF")
                out[dst] = Route(dst, KIND_LOCAL, dev=names.get(int(oif or 0), ""))
        return out

    def _route_args(self, route: Route) -> Dict[str, Any]:
        args: Dict[str, Any] = {"dst": route.dst, "proto": ROUTE_PROTO, "table": MAIN_TABLE}
        if route.kind == KIND_UNREACHABLE:
            args["type"] = "unreachable"
        elif route.kind == KIND_REMOTE:
            args["gateway"] = route.via
        else:
            args["oif"] = self.index(route.dev)
            args["scope"] = RT_SCOPE_LINK
        return args

    def apply(self, plan: RoutePlan) -> Tuple[int, List[str]]:
        """Apply a route plan; (routes changed, errors). One failing route stops no other."""
        changed = 0
        errors: List[str] = []
        ipr = self._route()
        for route in plan.remove:
            try:
                ipr.route("del", dst=route.dst, proto=ROUTE_PROTO, table=MAIN_TABLE)
                changed += 1
            except Exception as exc:
                if netlink_errno(exc) not in (errno.ESRCH, errno.ENOENT):
                    errors.append(f"remove {route.dst}: {exc}")
        for route in plan.add + plan.replace:
            try:
                ipr.route("replace", **self._route_args(route))
                changed += 1
            except Exception as exc:
                errors.append(f"route {route.dst} {route.kind} {route.via or route.dev}: {exc}")
        return changed, errors
