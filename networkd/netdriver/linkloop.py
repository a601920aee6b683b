"""The netlinks worker's loop (root): container links and routes on this host.

Two inputs only, neither of them Docker's JSON:

- typed requests on its channel (``CheckParent``, ``CreateLink``, ``DeleteLink``),
  accepted only from the netstore process: the peer's uid must be the workers' user and
  its pid the netstore's, as the supervisor (root) publishes it on ``state.workers``;
- the netstore's ``state.net_networks``, ``state.net_blocks`` and ``state.net_addresses``
  on the bus, from which the routes of this host are planned (``routes``) and
  reconciled: on every change and once a second, so outside changes are repaired.

Links whose endpoint this host no longer has are removed (the netstore reclaimed it);
a link made by a request is protected for a while, since the netstore's state showing
its endpoint may reach us after the request. A restart touches nothing; the final stop
leaves links and routes to the containers that still run.
"""

import logging
import os
import pwd
import time
from typing import Any, Dict, List, Optional, Set

from networkd.bus import endpoint_access
from networkd.bus.messages import NetLinksCounters, NetRoute
from networkd.netdriver import messages as m
from networkd.netdriver.channel import ChannelServer, Peer
from networkd.netdriver.forward_rules import ForwardRules
from networkd.netdriver.links import LinkError, LinkTable
from networkd.netdriver.routes import (
    CONTAINER_VETH,
    HOST_VETH,
    ID_CHARS,
    IPVLAN,
    LINK_PREFIXES,
    MACVLAN,
    LocalEndpoint,
    RemoteBlock,
    Route,
    RoutePlan,
    desired_routes,
    link_name,
    plan_routes,
    stale_links,
)
from networkd.workers.base import WorkerContext

log = logging.getLogger("networkd.netlinks")

LINKS_SOCKET = "links.sock"
NETSTORE_TOPICS = ["state.net_networks", "state.net_blocks", "state.net_addresses"]
RECONCILE_S = 1.0
# A change from the netstore is reconciled once it has settled: a container start is three
# netstore commits (address, endpoint, link) within ~40 ms, and a reconcile run between
# them competed for the CPU with the start that caused it.
SETTLE_S = 0.15
PROTECT_S = 120.0
POLL_MS = 50


def on_link(network: Any) -> bool:
    """Networks whose containers reach everything on-link through this host (L3)."""
    return network.mode == "routed" or (network.mode == "ipvlan" and network.ipvlan_mode == "l3")


class LinkLoop:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.hostname = ctx.hostname
        self.node_address = ctx.node_address
        self.links = LinkTable()
        self.forward = ForwardRules()
        self.sub = ctx.subscriber({"supervisor": ["state.workers"], "netstore": NETSTORE_TOPICS})
        self.pub = ctx.publisher()
        self.routes_topic = self.pub.state("state.net_routes")
        self.counters_topic = self.pub.state("state.netlinks")
        self.counters = NetLinksCounters()
        self.store_uid = _uid(ctx.config.user)
        self.server = ChannelServer(
            os.path.join(ctx.run_dir, "bus", ctx.name, LINKS_SOCKET), self.allow, self.handle
        )
        if ctx.bus_groups is not None and os.geteuid() == 0:
            # Like this worker's bus endpoint: root and the -user group may connect; the
            # peer check then admits the netstore process alone.
            endpoint_access.restrict(self.server.path, list(ctx.bus_groups))
        self.protected: Dict[str, float] = {}  # endpoint ID prefix -> until (monotonic)
        self.made: Dict[str, LocalEndpoint] = {}  # routed links made by a request
        self.errors_logged: Set[str] = set()
        self.forwarding_checked = False
        self.next_reconcile = 0.0

    # -- requests -----------------------------------------------------------------------

    def netstore_pid(self) -> int:
        workers = self.sub.state("supervisor", "state.workers") or {}
        info = workers.get("netstore")
        return int(info.pid) if info is not None else 0

    def allow(self, peer: Peer) -> Optional[str]:
        """Root, or the netstore process itself (not merely a process of its user)."""
        if peer.uid == 0 or os.geteuid() != 0:
            return None
        if peer.uid != self.store_uid:
            return f"uid {peer.uid} is not the netstore's user"
        if peer.pid != self.netstore_pid():
            self.sub.poll(0)  # a netstore that just restarted: its pid may be on the bus now
        if peer.pid != self.netstore_pid():
            return f"pid {peer.pid} is not the netstore (pid {self.netstore_pid()})"
        return None

    def handle(self, request: Any, peer: Peer) -> m.Reply:
        started = time.perf_counter()
        try:
            return self._handle(request)
        finally:
            log.debug("request done request=%s ms=%.1f", type(request).__name__,
                      (time.perf_counter() - started) * 1000)  # fmt: skip

    def _handle(self, request: Any) -> m.Reply:
        try:
            if isinstance(request, m.CheckParent):
                return self.check_parent(request)
            if isinstance(request, m.CreateLink):
                return self.create_link(request)
            if isinstance(request, m.DeleteLink):
                return self.delete_link(request.endpoint_id)
        except LinkError as exc:
            return m.Reply(error=str(exc))
        return m.Reply(error=f"netlinks does not handle {type(request).__name__}")

    def check_parent(self, req: m.CheckParent) -> m.Reply:
        self.links.require_parent(req.parent)
        if req.mode == "ipvlan":
            self.links.probe_kind("ipvlan", req.parent, f"niprobe{os.getpid() % 100000}")
        return m.Reply()

    def create_link(self, req: m.CreateLink) -> m.Reply:
        endpoint = req.endpoint_id
        self.protected[endpoint[:ID_CHARS]] = time.monotonic() + PROTECT_S
        if req.mode == "routed":
            host, peer = link_name(HOST_VETH, endpoint), link_name(CONTAINER_VETH, endpoint)
            created = self.links.create_veth(host, peer)
            # The host route exists before Docker starts the container.
            local = LocalEndpoint(endpoint, req.address, routed=True)
            self.made[endpoint[:ID_CHARS]] = local
            route = desired_routes([local], {host}, (), (), self.node_address)
            self.note_errors(self.links.apply(RoutePlan(tuple(route.values()), (), ()))[1])
            self.ensure_forwarding()
            name = peer
        elif req.mode == "macvlan":
            name = link_name(MACVLAN, endpoint)
            created = self.links.create_macvlan(name, req.parent)
        elif req.mode == "ipvlan":
            name = link_name(IPVLAN, endpoint)
            created = self.links.create_ipvlan(name, req.parent, req.ipvlan_mode or "l2")
        else:
            raise LinkError(f"unknown mode {req.mode!r}")
        if created:
            self.counters.links_created += 1
        log.info(
            "link ready endpoint=%s mode=%s name=%s created=%s",
            endpoint[:12],
            req.mode,
            name,
            created,
        )
        return m.Reply(ifname=name)

    def delete_link(self, endpoint: str) -> m.Reply:
        removed = 0
        for prefix in LINK_PREFIXES:
            if self.links.delete(link_name(prefix, endpoint)):
                removed += 1
        self.protected.pop(endpoint[:ID_CHARS], None)
        self.made.pop(endpoint[:ID_CHARS], None)
        if removed:
            self.counters.links_removed += removed
            log.info("link removed endpoint=%s links=%d", endpoint[:12], removed)
        self.next_reconcile = 0.0
        return m.Reply()

    # -- reconciliation -----------------------------------------------------------------

    def inputs(self) -> Optional[Dict[str, Any]]:
        networks = self.sub.state("netstore", "state.net_networks")
        blocks = self.sub.state("netstore", "state.net_blocks")
        addresses = self.sub.state("netstore", "state.net_addresses")
        if networks is None or blocks is None or addresses is None:
            return None
        return {"networks": networks, "blocks": blocks, "addresses": addresses}

    def desired(self, inputs: Dict[str, Any], present: Set[str]) -> Dict[str, Any]:
        networks = inputs["networks"]
        endpoints: List[LocalEndpoint] = []
        for a in inputs["addresses"].values():
            net = networks.get(a.net)
            if a.host == self.hostname and a.endpoint and net is not None:
                endpoints.append(LocalEndpoint(a.endpoint, a.ip, net.mode == "routed"))
        known = {e.endpoint_id[:ID_CHARS] for e in endpoints}
        endpoints += [e for k, e in self.made.items() if k not in known and k in self.protected]
        own: List[str] = []
        remote: List[RemoteBlock] = []
        for b in inputs["blocks"].values():
            net = networks.get(b.net)
            if net is None or not on_link(net):
                continue
            if b.host == self.hostname:
                own.append(b.block)
            else:
                remote.append(RemoteBlock(b.block, b.via))
        routes = desired_routes(endpoints, present, own, remote, self.node_address)
        subnets = sorted(n.subnet for n in networks.values() if on_link(n))
        return {"endpoints": endpoints, "routes": routes, "subnets": subnets}

    def apply_routes(self, wanted: Dict[str, Any]) -> Dict[str, Route]:
        """Make our routes ``wanted``; returns the routes the kernel has afterwards."""
        actual = self.links.routes()
        plan = plan_routes(wanted, actual)
        if plan.empty:
            return actual
        changed, errors = self.links.apply(plan)
        self.counters.route_changes += changed
        for route in plan.add + plan.replace:
            log.info(
                "route set dst=%s kind=%s via=%s", route.dst, route.kind, route.via or route.dev
            )
        for route in plan.remove:
            log.info("route removed dst=%s kind=%s", route.dst, route.kind)
        self.note_errors(errors)
        return self.links.routes()

    def note_errors(self, errors: List[str]) -> None:
        self.counters.route_errors += len(errors)
        for error in errors:
            self.counters.last_error = error
            if error not in self.errors_logged:
                self.errors_logged.add(error)
                log.warning("route failed reason=%s", error)

    def ensure_forwarding(self) -> None:
        """Routed containers need IPv4 forwarding on (Docker turns it on the same way)."""
        if self.forwarding_checked:
            return
        self.forwarding_checked = True
        try:
            with open("/proc/sys/net/ipv4/ip_forward") as f:
                if f.read().strip() == "1":
                    return
            self.links.write_sysctl("ip_forward", "1")
            log.info("ip forwarding enabled reason=routed container network")
        except OSError as exc:
            log.warning("ip forwarding unknown reason=%s", exc)

    def reconcile(self) -> None:
        inputs = self.inputs()
        if inputs is None:
            return
        now = time.monotonic()
        self.protected = {k: v for k, v in self.protected.items() if v > now}
        self.made = {k: v for k, v in self.made.items() if k in self.protected}
        present = self.links.our_links()
        desired = self.desired(inputs, present)
        for name in stale_links(
            present, [e.endpoint_id for e in desired["endpoints"]], self.protected
        ):
            if self.links.delete(name):
                self.counters.links_removed += 1
                log.info("link removed name=%s reason=no endpoint of this host uses it", name)
        if desired["subnets"] or any(e.routed for e in desired["endpoints"]):
            self.ensure_forwarding()
        try:
            self.forward.apply(desired["subnets"])
        except Exception as exc:
            self.note_errors([f"forward rules: {exc}"])
        actual = self.apply_routes(desired["routes"])
        self.routes_topic.replace(
            {dst: NetRoute(r.dst, r.kind, r.via, r.dev) for dst, r in actual.items()}
        )

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        log.info("netlinks started host=%s address=%s", self.hostname, self.node_address or "-")
        try:
            while not self.ctx.stopping:
                envelopes = self.sub.poll(POLL_MS, extra=self.server.fds())
                self.server.serve(set(self.server.fds()))
                now = time.monotonic()
                if any(e.sender == "netstore" for e in envelopes):
                    self.next_reconcile = min(self.next_reconcile, now + SETTLE_S)
                if now >= self.next_reconcile:
                    self.next_reconcile = now + RECONCILE_S
                    try:
                        started = time.perf_counter()
                        self.reconcile()
                        log.debug("reconcile done ms=%.1f",
                                  (time.perf_counter() - started) * 1000)  # fmt: skip
                    except Exception as exc:
                        log.warning("reconcile failed reason=%s", exc)
                        self.links.close()
                    self.counters_topic.set("counters", NetLinksCounters(**vars(self.counters)))
                self.pub.poll()
        finally:
            self.server.close()
            self.links.close()
        return 0


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -1
