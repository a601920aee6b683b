"""The netstore's IPAM against a real etcd: two hosts racing for blocks and addresses.

``NetService`` of two hosts share one etcd; each runs in its own thread, as two nodes'
netstores would. Link requests (the root worker's job) are answered by a stand-in.
"""

import ipaddress
import threading
from typing import Any, Iterator, List, Tuple

import pytest

from networkd import keys
from networkd.election.mirror import KeyMirror
from networkd.etcd.channel import ClientHolder
from networkd.netdriver import messages as m
from networkd.netdriver.cluster import ClusterView
from networkd.netdriver.service import NetService
from networkd.netdriver.store import NetStore
from tests.support.etcd import EtcdServer

NID_A, NID_B = "a" * 64, "b" * 64


class Host:
    def __init__(self, etcd: EtcdServer, name: str, address: str) -> None:
        self.holder = ClientHolder(etcd.client, name)
        self.mirror = KeyMirror(self.holder, keys.NETWORKS_PREFIX)
        self.mirror.start()
        assert self.mirror.wait_synced(5)
        self.links: List[Any] = []
        self.service = NetService(
            NetStore(self.holder, self.mirror), ClusterView(), name, address, self.link
        )

    def link(self, request: Any) -> m.Reply:
        self.links.append(request)
        return m.Reply(ifname="nc" + getattr(request, "endpoint_id", "")[:12])

    def ok(self, request: Any) -> m.Reply:
        reply = self.service.handle(request)
        assert not reply.error, reply.error
        return reply

    def close(self) -> None:
        self.mirror.stop()
        self.holder.close()


@pytest.fixture
def hosts(etcd: EtcdServer) -> Iterator[Tuple[Host, Host]]:
    a, b = Host(etcd, "a", "10.77.0.11"), Host(etcd, "b", "10.77.0.12")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def create(host: Host, docker_id: str, mode: str = "routed", pool: str = "10.50.0.0/16") -> str:
    pool_id = host.ok(m.RequestPool(pool)).pool_id
    gateway = host.ok(m.RequestAddress(pool_id, gateway=True)).address
    host.ok(m.CreateNetwork(docker_id, pool, gateway.split("/")[0], mode))
    return pool_id


def test_two_hosts_racing_never_share_an_address(hosts: Tuple[Host, Host]) -> None:
    a, b = hosts
    pool_a, pool_b = create(a, NID_A), create(b, NID_B)
    assert pool_a == pool_b == "10.50.0.0-16"
    got = {"a": [], "b": []}  # type: ignore[var-annotated]

    def allocate(host: Host, name: str) -> None:
        for _ in range(150):  # more than two /26 blocks each
            got[name].append(host.ok(m.RequestAddress(pool_a)).address.split("/")[0])

    threads = [threading.Thread(target=allocate, args=(h, n)) for h, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = got["a"] + got["b"]
    assert len(everything) == 300 and len(set(everything)) == 300
    assert "10.50.0.1" not in everything and "10.50.0.0" not in everything
    # routed: every address lies in a block of the host that handed it out
    a.service.refresh()
    owners = a.service.view.network(pool_a).block_owners()
    for name, ips in got.items():
        for ip in ips:
            block = ipaddress.IPv4Network(f"{ip}/26", strict=False)
            assert owners[block] == name, (ip, owners.get(block))


def test_gateway_mode_overlap_and_cleanup(hosts: Tuple[Host, Host], etcd: EtcdServer) -> None:
    a, b = hosts
    pool = create(a, NID_A, mode="macvlan")
    assert b.ok(m.RequestPool("10.50.0.0/16")).pool_id == pool
    assert b.ok(m.RequestAddress(pool, gateway=True)).address == "10.50.0.1/16"
    refused = b.service.handle(m.CreateNetwork(NID_B, "10.50.0.0/16", "10.50.0.1", "routed"))
    assert "exists in the cluster with mode macvlan" in refused.error
    overlap = b.service.handle(m.RequestPool("10.50.64.0/18"))
    assert "overlaps network 10.50.0.0/16" in overlap.error
    other_gateway = b.service.handle(m.RequestAddress(pool, address="10.50.0.254", gateway=True))
    assert "differs from the network's gateway 10.50.0.1" in other_gateway.error

    ip = a.ok(m.RequestAddress(pool)).address
    a.ok(m.CreateEndpoint(NID_A, "e" * 64, ip))
    join = a.ok(m.Join(NID_A, "e" * 64))
    assert join.gateway == "10.50.0.1" and not join.gateway_on_link  # L2: the real gateway
    assert a.links[-1] == m.CreateLink("e" * 64, "macvlan", ip.split("/")[0], "", "")
    foreign = b.service.handle(m.CreateEndpoint(NID_A, "f" * 64, ip))
    assert "is not a networkd network on this host" in foreign.error

    # Docker's network rm on b (failed create), then on a: nothing stays in etcd.
    b.ok(m.ReleaseAddress(pool, "10.50.0.1"))
    b.ok(m.ReleasePool(pool))
    a.ok(m.Leave(NID_A, "e" * 64))
    a.ok(m.DeleteEndpoint(NID_A, "e" * 64))
    a.ok(m.ReleaseAddress(pool, ip.split("/")[0]))
    a.ok(m.ReleaseAddress(pool, "10.50.0.1"))
    assert etcd.client().get_prefix(keys.NETWORKS_PREFIX)
    a.ok(m.ReleasePool(pool))
    a.ok(m.DeleteNetwork(NID_A))
    assert list(etcd.client().get_prefix(keys.NETWORKS_PREFIX)) == []


def test_route_keys_are_bound_to_the_lease(hosts: Tuple[Host, Host], etcd: EtcdServer) -> None:
    a, _ = hosts
    pool = create(a, NID_A)
    a.ok(m.RequestAddress(pool))
    client = etcd.client()
    lease = client.lease(5)
    a.service.refresh()
    assert a.service.sync_routes(lease.id) == 1
    a.service.refresh()
    assert a.service.sync_routes(lease.id) == 0  # writes only on change
    value, meta = client.get(keys.network_route_key(pool, "a"))
    assert value == b'{"address":"10.77.0.11"}' and meta.lease_id == lease.id
    lease.revoke()
    assert client.get(keys.network_route_key(pool, "a"))[0] is None
