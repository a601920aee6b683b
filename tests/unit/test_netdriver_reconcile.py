"""Reconciliation against Docker's view: what is reclaimed, and what never is."""

from typing import Dict, List

from networkd.netdriver.cluster import NetworkState
from networkd.netdriver.reconcile import DockerNetwork, ReclaimPlan, plan_reclaim
from networkd.netdriver.records import AddressRecord, HostRecord
from networkd.netdriver.records import DockerNetwork as Member

NET = "10.50.0.0-16"
SUBNET = "10.50.0.0/16"
NOW = 1000.0
GRACE = 60.0
DOCKER_ID = "d" * 64
E1, E2, E3 = "1" * 64, "2" * 64, "3" * 64


def state(addresses: List[AddressRecord], member: HostRecord = None) -> NetworkState:  # type: ignore[assignment]
    s = NetworkState()
    s.addresses = {a.ip: a for a in addresses}
    if member is not None:
        s.hosts = {member.host: member}
    return s


def docker(
    endpoints: Dict[str, str], name: str = "n1", ipam: str = "networkd"
) -> Dict[str, DockerNetwork]:
    return {DOCKER_ID: DockerNetwork(DOCKER_ID, name, "networkd", ipam, [SUBNET], endpoints)}


def address(
    ip: str, endpoint: str = "", host: str = "a", since: float = 0.0, kind: str = "container"
) -> AddressRecord:
    return AddressRecord(NET, ip, kind, host, endpoint, since)


MEMBER = HostRecord(NET, "a", 1, {DOCKER_ID: Member(name="n1")}, since=0.0)


def test_live_endpoints_young_allocations_and_other_hosts_are_kept() -> None:
    addresses = [
        address("10.50.0.2", E1),  # Docker lists its endpoint (another address? no: same IP)
        address("10.50.0.3", E2),  # Docker lists the endpoint ID (with any address)
        address("10.50.0.4", "", since=NOW - 5),  # allocated 5 s ago: a container starting
        address("10.50.0.5", E3),  # old, Docker knows nothing of it: reclaimed
        address("10.50.0.6", ""),  # old, never bound (a retried request): reclaimed
        address("10.50.0.7", host="b"),  # another host's: never ours to reclaim
        address("10.50.0.1", host="", kind="gateway"),  # the network's
    ]
    view = docker({E1: "10.50.0.2", E2: "10.50.0.9", "4" * 64: "10.50.0.8"})
    plan = plan_reclaim(NET, SUBNET, state(addresses, MEMBER), "a", view, NOW, GRACE)
    assert plan == ReclaimPlan(NET, addresses=["10.50.0.5", "10.50.0.6"])


def test_networks_of_another_ipam_or_subnet_do_not_count_as_live() -> None:
    addresses = [address("10.50.0.2", E1)]
    view = docker({E1: "10.50.0.2"}, ipam="default")
    plan = plan_reclaim(NET, SUBNET, state(addresses), "a", view, NOW, GRACE)
    assert plan.addresses == ["10.50.0.2"]


def test_a_host_whose_docker_has_no_network_on_the_pool_leaves_it_once_settled() -> None:
    plan = plan_reclaim(NET, SUBNET, state([], MEMBER), "a", {}, NOW, GRACE)
    assert plan.leave
    young = HostRecord(NET, "a", 1, {}, since=NOW - 1)  # a network being created right now
    assert plan_reclaim(NET, SUBNET, state([], young), "a", {}, NOW, GRACE).empty


def test_pool_references_are_raised_to_dockers_count_never_lowered() -> None:
    two = {DOCKER_ID: DockerNetwork(DOCKER_ID, "n1", "networkd", "networkd", [SUBNET])}
    two["e" * 64] = DockerNetwork("e" * 64, "n2", "networkd", "networkd", [SUBNET])
    plan = plan_reclaim(NET, SUBNET, state([], MEMBER), "a", two, NOW, GRACE)
    assert plan.refs == 2 and plan.docker == {DOCKER_ID: "n1", "e" * 64: "n2"}
    extra = HostRecord(NET, "a", 3, {DOCKER_ID: Member(name="n1")}, since=0.0)
    assert plan_reclaim(NET, SUBNET, state([], extra), "a", docker({}), NOW, GRACE).empty


def test_names_come_from_docker_and_vanished_docker_networks_go_once_settled() -> None:
    unnamed = HostRecord(NET, "a", 1, {DOCKER_ID: Member(), "f" * 64: Member()}, since=0.0)
    plan = plan_reclaim(NET, SUBNET, state([], unnamed), "a", docker({}), NOW, GRACE)
    assert plan.docker == {DOCKER_ID: "n1"}
    fresh = HostRecord(NET, "a", 1, {DOCKER_ID: Member(), "f" * 64: Member()}, since=NOW)
    plan = plan_reclaim(NET, SUBNET, state([], fresh), "a", docker({}), NOW, GRACE)
    assert plan.docker == {DOCKER_ID: "n1", "f" * 64: ""}
