"""The netstore's answers to Docker's requests: IPAM and network bookkeeping in etcd.

Each handler reads the cluster view (the etcd mirror, parsed), plans with ``ipam``, and
writes with one compare-and-swap transaction (``store``). A transaction that loses a
race waits until the mirror has caught up with the revision that beat it and plans
again. Link work is asked of the root ``netlinks`` worker (``links``), never done here.

Every handler is idempotent: Docker retries a request whose answer it did not get, so
the same request may arrive twice (a retried RequestAddress is the one exception: it
allocates a second address, which the reconciliation reclaims once Docker shows no
endpoint for it).
"""

import ipaddress
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Sequence

from networkd import keys
from networkd.bus.messages import NetStoreCounters
from networkd.netdriver import ipam
from networkd.netdriver import messages as m
from networkd.netdriver.cluster import ClusterView, NetworkState
from networkd.netdriver.reconcile import ReclaimPlan
from networkd.netdriver.records import (
    AddressRecord,
    BlockRecord,
    DockerNetwork,
    HostRecord,
    NetworkRecord,
    RouteRecord,
)
from networkd.netdriver.routes import LINK_GATEWAY
from networkd.netdriver.store import Absent, Condition, NetStore, Put, RangeEmpty

log = logging.getLogger("networkd.netstore")

ATTEMPTS = 20
CATCH_UP_S = 2.0
TXN_CHUNK = 50  # etcd allows 128 operations per transaction by default


class Refusal(Exception):
    """A request that cannot be done; the text goes back to Docker."""


class NetService:
    def __init__(
        self,
        store: NetStore,
        view: ClusterView,
        host: str,
        node_address: str,
        links: Callable[[Any], m.Reply],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.view = view
        self.host = host
        self.node_address = node_address
        self.links = links
        self.clock = clock
        self.cursors: Dict[ipaddress.IPv4Network, ipaddress.IPv4Address] = {}
        self.counters = NetStoreCounters()  # lease_alive and docker_error: set by the loop
        self.handlers: Dict[type, Callable[[Any], m.Reply]] = {
            m.RequestPool: self.request_pool,
            m.ReleasePool: self.release_pool,
            m.RequestAddress: self.request_address,
            m.ReleaseAddress: self.release_address,
            m.CreateNetwork: self.create_network,
            m.DeleteNetwork: self.delete_network,
            m.CreateEndpoint: self.create_endpoint,
            m.DeleteEndpoint: self.delete_endpoint,
            m.EndpointInfo: self.endpoint_info,
            m.Join: self.join,
            m.Leave: self.leave,
        }

    # -- plumbing -----------------------------------------------------------------------

    def refresh(self) -> None:
        self.view.update(self.store.mirror.snapshot())

    def handle(self, request: Any) -> m.Reply:
        self.counters.requests += 1
        handler = self.handlers.get(type(request))
        if handler is None:
            return m.Reply(error=f"netstore does not handle {type(request).__name__}")
        self.refresh()
        try:
            return handler(request)
        except (Refusal, ipam.IpamError) as exc:
            self.counters.refused += 1
            log.info("request refused request=%s reason=%s", type(request).__name__, exc)
            return m.Reply(error=str(exc))

    def commit(
        self,
        conditions: Sequence[Condition],
        puts: Sequence[Put] = (),
        deletes: Sequence[str] = (),
        delete_prefixes: Sequence[str] = (),
    ) -> bool:
        """One transaction; on a lost race, wait for the mirror to catch up and refresh."""
        result = self.store.commit(conditions, puts, deletes, delete_prefixes)
        if not result.succeeded:
            self.counters.conflicts += 1
            deadline = time.monotonic() + CATCH_UP_S
            while self.store.mirror.revision < result.revision and time.monotonic() < deadline:
                time.sleep(0.005)
        self.refresh()
        return result.succeeded

    def _net(self, pool_id: str) -> str:
        try:
            keys.cidr_of_name(pool_id)
        except keys.KeyLayoutError:
            raise Refusal(f"unknown pool ID {pool_id!r}") from None
        return pool_id

    def _known(self, net: str) -> NetworkState:
        state = self.view.network(net)
        if state.record is None:
            raise Refusal(f"pool {keys.cidr_of_name(net)} is not known to networkd")
        return state

    def _member(self, net: str) -> HostRecord:
        member = self._known(net).hosts.get(self.host)
        if member is None:
            raise Refusal(
                f"pool {keys.cidr_of_name(net)} was not requested from networkd's IPAM on this "
                "host: create the network with --ipam-driver networkd"
            )
        return member

    def _docker_network(self, docker_id: str) -> str:
        net = self.view.network_of_docker(self.host, docker_id)
        if net is None:
            raise Refusal(
                f"network {docker_id[:12]} is not a networkd network on this host "
                "(create it with -d networkd --ipam-driver networkd)"
            )
        return net

    def _endpoint(self, endpoint_id: str) -> AddressRecord:
        address = self.view.endpoint(self.host, endpoint_id)
        if address is None:
            raise Refusal(f"endpoint {endpoint_id[:12]} is not known on this host")
        return address

    # -- IPAM ---------------------------------------------------------------------------

    def request_pool(self, req: m.RequestPool) -> m.Reply:
        pool = ipam.parse_pool(req.pool)
        net = keys.cidr_name(str(pool))
        block = ipam.default_block_prefix(pool)
        if "block" in req.options:
            text = req.options["block"].lstrip("/")
            if not text.isdigit():
                raise Refusal(f"--ipam-opt block: expected a prefix length, got {text!r}")
            block = ipam.check_block_prefix(pool, int(text))
        for _ in range(ATTEMPTS):
            other = ipam.overlapping(pool, self.view.pools())
            if other is not None:
                raise Refusal(
                    f"subnet {pool} overlaps network {keys.cidr_of_name(other)} of the cluster"
                )
            state = self.view.network(net)
            now = self.clock()
            conditions: List[Condition] = []
            puts: List[Put] = []
            if state.record is None:
                conditions.append(Absent(keys.network_key(net)))
                puts.append(Put(NetworkRecord(net, str(pool), block)))
                # No network may appear meanwhile that this one would overlap.
                conditions.append(self.store.unchanged_since(keys.NETWORKS_PREFIX))
            elif "block" in req.options and state.record.block != block:
                raise Refusal(f"network {pool} exists with blocks of /{state.record.block}")
            member = state.hosts.get(self.host)
            host_key = keys.network_host_key(net, self.host)
            if member is None:
                conditions.append(Absent(host_key))
                puts.append(Put(HostRecord(net, self.host, refs=1, since=now)))
            else:
                conditions.append(self.store.expect(host_key))
                puts.append(Put(replace(member, refs=member.refs + 1, since=now)))
            if self.commit(conditions, puts):
                log.info("pool requested pool=%s host=%s", pool, self.host)
                return m.Reply(pool_id=net, pool=str(pool))
        raise Refusal(f"pool {pool}: too many concurrent changes, try again")

    def release_pool(self, req: m.ReleasePool) -> m.Reply:
        net = self._net(req.pool_id)
        for _ in range(ATTEMPTS):
            member = self.view.network(net).hosts.get(self.host)
            if member is None:
                return m.Reply()
            if member.refs > 1:
                key = keys.network_host_key(net, self.host)
                if self.commit(
                    [self.store.expect(key)], [Put(replace(member, refs=member.refs - 1))]
                ):
                    return m.Reply()
                continue
            self.leave_network(net)
            return m.Reply()
        raise Refusal(f"pool {keys.cidr_of_name(net)}: too many concurrent changes, try again")

    def leave_network(self, net: str) -> None:
        """This host no longer uses ``net``: its allocations, blocks, route key and
        membership go; the network itself goes with its last host."""
        state = self.view.network(net)
        mine = [
            keys.network_address_key(net, a.ip)
            for a in state.addresses.values()
            if a.host == self.host
        ]
        mine += [
            keys.network_block_key(net, b.block)
            for b in state.blocks.values()
            if b.host == self.host
        ]
        route_key = keys.network_route_key(net, self.host)
        if route_key in {keys.network_route_key(net, h) for h in state.routes}:
            mine.append(route_key)
        for i in range(0, len(mine), TXN_CHUNK):
            chunk = mine[i : i + TXN_CHUNK]
            self.commit([self.store.expect(k) for k in chunk], deletes=chunk)
        host_key = keys.network_host_key(net, self.host)
        if self.store.mirror.get(host_key) is not None:
            self.commit([self.store.expect(host_key)], deletes=[host_key])
        self._drop_network_if_unused(net)
        log.info("network left net=%s host=%s", keys.cidr_of_name(net), self.host)

    def _drop_network_if_unused(self, net: str) -> None:
        if self.view.network(net).hosts:
            return
        hosts_prefix = keys.network_sub_prefix(net, keys.NET_HOSTS)
        removed = self.commit(
            [RangeEmpty(hosts_prefix)],
            deletes=[keys.network_key(net)],
            delete_prefixes=[keys.network_prefix(net)],
        )
        if removed:
            log.info("network removed net=%s reason=no host uses it", keys.cidr_of_name(net))

    def request_address(self, req: m.RequestAddress) -> m.Reply:
        net = self._net(req.pool_id)
        self._member(net)
        if req.gateway:
            return self._gateway(net, req.address)
        for _ in range(ATTEMPTS):
            state = self._known(net)
            record = state.record
            assert record is not None
            pool = ipaddress.IPv4Network(record.subnet)
            owners = state.block_owners()
            if req.address:
                ip = ipaddress.IPv4Address(req.address)
                existing = state.addresses.get(req.address)
                if existing is not None and existing.host == self.host and not existing.endpoint:
                    return self._address_reply(pool, ip)  # a retried request
                step = ipam.plan_specific(
                    pool, record.block, owners, state.taken(), self.host, ip, record.borrow
                )
            else:
                step = ipam.plan_address(
                    pool,
                    record.block,
                    owners,
                    state.taken(),
                    self.host,
                    record.borrow,
                    self.cursors,
                )
            if isinstance(step, ipam.ClaimBlock):
                self._claim_block(net, step.block)
                continue
            key = keys.network_address_key(net, str(step.ip))
            block_key = keys.network_block_key(net, str(step.block))
            conditions: List[Condition] = [Absent(key)]
            if owners.get(step.block) == self.host:
                conditions.append(self.store.expect(block_key))
            address = AddressRecord(net, str(step.ip), "container", self.host, "", self.clock())
            if self.commit(conditions, [Put(address)]):
                self.cursors[step.block] = step.ip
                self.counters.allocations += 1
                return self._address_reply(pool, step.ip)
        raise Refusal(f"pool {keys.cidr_of_name(net)}: too many concurrent changes, try again")

    @staticmethod
    def _address_reply(pool: ipaddress.IPv4Network, ip: ipaddress.IPv4Address) -> m.Reply:
        return m.Reply(address=f"{ip}/{pool.prefixlen}")

    def _claim_block(self, net: str, block: ipaddress.IPv4Network) -> None:
        key = keys.network_block_key(net, str(block))
        if self.commit([Absent(key)], [Put(BlockRecord(net, str(block), self.host))]):
            self.counters.blocks_claimed += 1
            log.info(
                "block claimed net=%s block=%s host=%s", keys.cidr_of_name(net), block, self.host
            )

    def _gateway(self, net: str, wanted: str) -> m.Reply:
        for _ in range(ATTEMPTS):
            state = self._known(net)
            record = state.record
            assert record is not None
            pool = ipaddress.IPv4Network(record.subnet)
            gateway = wanted or record.gateway or str(next(pool.hosts(), pool.network_address))
            if record.gateway:
                if gateway != record.gateway:
                    raise Refusal(
                        f"gateway {gateway} differs from the network's gateway {record.gateway} "
                        "(every host must use the same --gateway)"
                    )
                return self._address_reply(pool, ipaddress.IPv4Address(gateway))
            ip = ipaddress.IPv4Address(gateway)
            if ip not in pool or ip in ipam.reserved(pool):
                raise Refusal(f"gateway {gateway} is not a usable address of {pool}")
            key = keys.network_address_key(net, gateway)
            if gateway in state.addresses:
                raise Refusal(f"gateway {gateway} is already in use in {pool}")
            conditions: List[Condition] = [self.store.expect(keys.network_key(net)), Absent(key)]
            puts = [
                Put(replace(record, gateway=gateway)),
                Put(AddressRecord(net, gateway, "gateway", "", "", self.clock())),
            ]
            if self.commit(conditions, puts):
                return self._address_reply(pool, ip)
        raise Refusal(f"pool {keys.cidr_of_name(net)}: too many concurrent changes, try again")

    def release_address(self, req: m.ReleaseAddress) -> m.Reply:
        net = self._net(req.pool_id)
        for _ in range(ATTEMPTS):
            address = self.view.network(net).addresses.get(req.address)
            if address is None or address.kind == "gateway":
                return m.Reply()  # already gone; the gateway goes with the network
            if address.host != self.host:
                log.warning("release refused address=%s holder=%s", req.address, address.host)
                return m.Reply()
            key = keys.network_address_key(net, req.address)
            if self.commit([self.store.expect(key)], deletes=[key]):
                self.counters.releases += 1
                return m.Reply()
        raise Refusal(f"address {req.address}: too many concurrent changes, try again")

    # -- network driver -----------------------------------------------------------------

    def create_network(self, req: m.CreateNetwork) -> m.Reply:
        net = keys.cidr_name(req.pool)
        for _ in range(ATTEMPTS):
            member = self._member(net)
            record = self._known(net).record
            assert record is not None
            if record.mode and (record.mode, record.ipvlan_mode) != (req.mode, req.ipvlan_mode):
                have = record.mode + (f" ({record.ipvlan_mode})" if record.ipvlan_mode else "")
                raise Refusal(
                    f"network {record.subnet} exists in the cluster with mode {have}: "
                    "create it with the same mode on every host"
                )
            if req.mode != "routed":
                reply = self.links(m.CheckParent(req.mode, req.parent, req.ipvlan_mode))
                if reply.error:
                    raise Refusal(reply.error)
            docker = dict(member.docker)
            docker[req.docker_id] = DockerNetwork(parent=req.parent, name="")
            host_key = keys.network_host_key(net, self.host)
            conditions: List[Condition] = [self.store.expect(host_key)]
            puts = [Put(replace(member, docker=docker))]
            if not record.mode:
                conditions.append(self.store.expect(keys.network_key(net)))
                puts.append(Put(replace(record, mode=req.mode, ipvlan_mode=req.ipvlan_mode)))
            if self.commit(conditions, puts):
                log.info(
                    "network created net=%s mode=%s docker=%s",
                    record.subnet,
                    req.mode,
                    req.docker_id[:12],
                )
                return m.Reply()
        raise Refusal("too many concurrent changes, try again")

    def delete_network(self, req: m.DeleteNetwork) -> m.Reply:
        for _ in range(ATTEMPTS):
            net = self.view.network_of_docker(self.host, req.docker_id)
            if net is None:
                return m.Reply()  # ReleasePool came first and the host left the network
            member = self.view.network(net).hosts[self.host]
            docker = {k: v for k, v in member.docker.items() if k != req.docker_id}
            key = keys.network_host_key(net, self.host)
            if self.commit([self.store.expect(key)], [Put(replace(member, docker=docker))]):
                return m.Reply()
        raise Refusal("too many concurrent changes, try again")

    def create_endpoint(self, req: m.CreateEndpoint) -> m.Reply:
        net = self._docker_network(req.docker_id)
        ip = req.address.split("/")[0]
        for _ in range(ATTEMPTS):
            address = self.view.network(net).addresses.get(ip)
            if address is None or address.host != self.host or address.kind != "container":
                raise Refusal(f"address {ip} was not allocated to this host by networkd's IPAM")
            if address.endpoint == req.endpoint_id:
                return m.Reply()
            if address.endpoint:
                raise Refusal(f"address {ip} is held by endpoint {address.endpoint[:12]}")
            key = keys.network_address_key(net, ip)
            bound = replace(address, endpoint=req.endpoint_id)
            if self.commit([self.store.expect(key)], [Put(bound)]):
                return m.Reply()
        raise Refusal("too many concurrent changes, try again")

    def _link_request(self, net: str, endpoint: AddressRecord, docker_id: str) -> m.CreateLink:
        state = self._known(net)
        record = state.record
        assert record is not None
        member = state.hosts.get(self.host)
        parent = ""
        if member is not None and docker_id in member.docker:
            parent = member.docker[docker_id].parent
        return m.CreateLink(endpoint.endpoint, record.mode, endpoint.ip, parent, record.ipvlan_mode)

    def join(self, req: m.Join) -> m.Reply:
        net = self._docker_network(req.docker_id)
        endpoint = self._endpoint(req.endpoint_id)
        link = self._link_request(net, endpoint, req.docker_id)
        reply = self.links(link)
        if reply.error:
            raise Refusal(reply.error)
        record = self._known(net).record
        assert record is not None
        if record.mode == "routed" or record.ipvlan_mode == "l3":
            return m.Reply(ifname=reply.ifname, gateway=LINK_GATEWAY, gateway_on_link=True)
        return m.Reply(ifname=reply.ifname, gateway=record.gateway)

    def leave(self, req: m.Leave) -> m.Reply:
        reply = self.links(m.DeleteLink(req.endpoint_id))
        if reply.error:
            raise Refusal(reply.error)
        return m.Reply()

    def delete_endpoint(self, req: m.DeleteEndpoint) -> m.Reply:
        # The address goes with Docker's ReleaseAddress that follows.
        return self.leave(m.Leave(req.docker_id, req.endpoint_id))

    def endpoint_info(self, req: m.EndpointInfo) -> m.Reply:
        endpoint = self._endpoint(req.endpoint_id)
        record = self._known(endpoint.net).record
        assert record is not None
        return m.Reply(info={"address": endpoint.ip, "mode": record.mode, "host": self.host})

    # -- route keys (lease-bound) ------------------------------------------------------

    def sync_routes(self, lease_id: int) -> int:
        """Make this host's route keys match its routed blocks; returns keys written."""
        if not lease_id or not self.node_address:
            return 0
        written = 0
        for net, state in list(self.view.networks.items()):
            record = state.record
            on_link = record is not None and (record.mode == "routed" or record.ipvlan_mode == "l3")
            owns = any(b.host == self.host for b in state.blocks.values())
            key = keys.network_route_key(net, self.host)
            entry = self.store.mirror.get(key)
            want = RouteRecord(net, self.host, self.node_address)
            if on_link and owns:
                current = state.routes.get(self.host)
                if current == want and entry is not None and entry.lease == lease_id:
                    continue
                if self.commit([self.store.expect(key)], [Put(want, lease=lease_id)]):
                    written += 1
            elif entry is not None and self.commit([self.store.expect(key)], deletes=[key]):
                written += 1
        return written

    # -- reconciliation ------------------------------------------------------------------

    def apply_reclaim(self, plan: ReclaimPlan) -> None:
        state = self.view.network(plan.net)
        if plan.leave:
            log.info(
                "network reclaimed net=%s reason=Docker has no network on it here",
                keys.cidr_of_name(plan.net),
            )
            self.counters.reclaimed += len(
                [
                    a
                    for a in state.addresses.values()
                    if a.host == self.host and a.kind == "container"
                ]
            )
            self.leave_network(plan.net)
            return
        for ip in plan.addresses:
            key = keys.network_address_key(plan.net, ip)
            if self.commit([self.store.expect(key)], deletes=[key]):
                self.counters.reclaimed += 1
                log.info(
                    "address reclaimed net=%s ip=%s reason=Docker knows no endpoint for it",
                    keys.cidr_of_name(plan.net),
                    ip,
                )
        member = self.view.network(plan.net).hosts.get(self.host)
        if member is not None and (plan.refs is not None or plan.docker is not None):
            docker = member.docker
            if plan.docker is not None:
                docker = {
                    k: DockerNetwork(
                        parent=member.docker[k].parent if k in member.docker else "", name=v
                    )
                    for k, v in plan.docker.items()
                }
            refs = member.refs if plan.refs is None else plan.refs
            key = keys.network_host_key(plan.net, self.host)
            self.commit([self.store.expect(key)], [Put(replace(member, refs=refs, docker=docker))])

    def release_empty_blocks(self) -> int:
        """Give back blocks of ours that hold no address, keeping each network's first."""
        released = 0
        for net, state in list(self.view.networks.items()):
            mine = sorted(
                (
                    ipaddress.IPv4Network(b.block)
                    for b in state.blocks.values()
                    if b.host == self.host
                ),
                key=lambda b: int(b.network_address),
            )
            used = {ipaddress.IPv4Address(ip) for ip in state.addresses}
            for block in mine[1:]:
                if any(ip in block for ip in used):
                    continue
                key = keys.network_block_key(net, str(block))
                if self.commit([self.store.expect(key)], deletes=[key]):
                    released += 1
                    self.counters.blocks_released += 1
        return released
