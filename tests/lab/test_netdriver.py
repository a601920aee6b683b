"""Container networks end to end: two lab nodes, each with a real dockerd and networkd as
its network and IPAM plugin (``-d networkd --ipam-driver networkd``), etcd in the hub.

One lab for the module (dockerd and networkd take seconds to start); each test leaves
no container and no network behind.
"""

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Set

import pytest

from tests.lab.lab import LabNode
from tests.lab.netlab import NetLab, ping_all
from tests.support.daemon import wait_for

pytestmark = pytest.mark.lab

ROUTED = "10.50.0.0/16"
ROUTED_NET = "10.50.0.0-16"


@pytest.fixture(scope="module")
def netlab() -> Iterator[NetLab]:
    with NetLab() as lab:
        yield lab


@pytest.fixture(autouse=True)
def clean(netlab: NetLab) -> Iterator[None]:
    yield
    netlab.clear_all()


def exchange(netlab: NetLab, index: int, container: str, server_ip: str) -> str:
    """A TCP line from ``container`` on node ``index`` to the reply server at ``server_ip``."""
    script = f"echo hello | nc -w 3 {server_ip} 7000"
    return netlab.docker(index, "exec", container, "sh", "-c", script)


def cross_host(netlab: NetLab) -> None:
    """A container on each node: they ping each other and exchange TCP data."""
    servers = []
    for index in (0, 1):
        cid, address = netlab.run(index, "n1", "nc", "-ll", "-p", "7000", "-e", "/bin/reply")
        servers.append((cid, address))
    (a_id, a_ip), (b_id, b_ip) = servers
    assert a_ip and b_ip and a_ip != b_ip
    assert "0% packet loss" in netlab.docker(0, "exec", a_id, "ping", "-c", "2", "-W", "2", b_ip)
    assert "0% packet loss" in netlab.docker(1, "exec", b_id, "ping", "-c", "2", "-W", "2", a_ip)
    assert exchange(netlab, 0, a_id, b_ip) == f"{b_id[:12]} got hello"
    assert exchange(netlab, 1, b_id, a_ip) == f"{a_id[:12]} got hello"


def test_routed_network_spans_both_hosts(netlab: NetLab) -> None:
    netlab.create_network("n1", ROUTED, "routed")
    cross_host(netlab)
    for node in netlab.nodes:
        routes = netlab.our_routes(node)
        assert any("via" in r for r in routes), routes  # the other host's block
        assert any("unreachable" in r for r in routes), routes  # its own block


def test_macvlan_network_spans_both_hosts(netlab: NetLab) -> None:
    netlab.create_network("n1", "10.51.0.0/16", "macvlan", parent="eth0")
    cross_host(netlab)


def start_fifty_each(netlab: NetLab, network: str) -> List[List[str]]:
    """50 containers per node, all 100 started at once; their IDs per node."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = list(
            pool.map(
                lambda i: netlab.apis[i].run_many(50, "bb:local", ["sleep", "100000"], network),
                (0, 1),
            )
        )
    ids = []
    for batch in batches:
        errors = [error for cid, error in batch if cid is None]
        assert not errors, errors[:3]
        ids.append([cid for cid, _ in batch if cid])
    return ids


def addresses_on(netlab: NetLab, ids: List[List[str]], network: str) -> List[List[str]]:
    return [[netlab.apis[i].address(cid, network) for cid in ids[i]] for i in (0, 1)]


def side_by_side(title: str, per_node: List[List[str]]) -> Set[str]:
    """Print both nodes' addresses in two columns; the addresses both nodes handed out."""
    print(f"\n{title}\n{'node1':<18}{'node2':<18}")
    for a, b in zip(sorted(per_node[0], key=_ip_order), sorted(per_node[1], key=_ip_order)):
        print(f"{a:<18}{b:<18}")
    shared = set(per_node[0]) & set(per_node[1])
    print(f"addresses on both nodes: {len(shared)}")
    return shared


def _ip_order(address: str) -> int:
    parts = [int(p) for p in address.split(".")]
    return (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]


def test_hundred_containers_get_distinct_reachable_addresses(netlab: NetLab) -> None:
    netlab.create_network("n1", ROUTED, "routed")
    started = time.monotonic()
    ids = start_fifty_each(netlab, "n1")
    elapsed = time.monotonic() - started
    ours = addresses_on(netlab, ids, "n1")
    everyone = ours[0] + ours[1]
    assert len(everyone) == 100 and len(set(everyone)) == 100
    assert not side_by_side(f"networkd routed, 100 containers started in {elapsed:.1f}s", ours)
    # Every container answers from the other node (routed through its host's block).
    for here, there in ((0, 1), (1, 0)):
        answered = ping_all(netlab.nodes[here].ns, ours[there], timeout=15)
        assert answered == set(ours[there]), sorted(set(ours[there]) - answered)
    allocated = netlab.allocations(ROUTED_NET)
    assert {ip for ip, v in allocated.items() if v["kind"] == "container"} == set(everyone)

    # The same 100 containers, 50 per node, attached at once to Docker's own macvlan
    # driver with its default IPAM on one subnet: each host hands out the same addresses.
    for index in (0, 1):
        netlab.docker(index, "network", "create", "-d", "macvlan", "--subnet", "10.52.0.0/16",
                      "-o", "parent=eth0", "dmv")  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = list(pool.map(lambda i: netlab.apis[i].connect_many("dmv", ids[i]), (0, 1)))
    assert errors == [[], []], errors
    shared = side_by_side("Docker macvlan + default IPAM", addresses_on(netlab, ids, "dmv"))
    assert shared, "Docker's per-host IPAM handed out no address twice?"


def host_route(netlab: NetLab, index: int, address: str) -> bool:
    return any(r.startswith(f"{address} dev nr") for r in netlab.our_routes(netlab.nodes[index]))


def test_a_stopped_container_and_a_removed_network_leave_nothing(netlab: NetLab) -> None:
    netlab.create_network("n1", ROUTED, "routed")
    a_id, a_ip = netlab.run(0, "n1")
    _b_id, b_ip = netlab.run(1, "n1")
    node_b = netlab.nodes[1]
    assert host_route(netlab, 0, a_ip) and host_route(netlab, 1, b_ip)
    assert ping_all(node_b.ns, [a_ip]) == {a_ip}
    links_before = netlab.our_links(netlab.nodes[0])
    assert len(links_before) == 1, links_before  # the host side of the veth

    netlab.docker(0, "stop", "-t", "0", a_id)
    assert a_ip not in netlab.allocations(ROUTED_NET)
    wait_for(lambda: not host_route(netlab, 0, a_ip), 5, what="host route gone")
    assert not netlab.our_links(netlab.nodes[0])
    assert not any(a_ip in r for r in netlab.our_routes(node_b))
    assert not ping_all(node_b.ns, [a_ip], timeout=1.5)

    netlab.clear_containers()
    netlab.remove_network("n1")
    assert netlab.etcd_keys() == {}
    for node in netlab.nodes:
        wait_for(partial(no_routes, netlab, node), 5, what=f"no routes on {node.name}")
        assert not netlab.our_links(node)


def no_routes(netlab: NetLab, node: LabNode) -> bool:
    return not netlab.our_routes(node)


def test_bad_requests_show_the_plugins_error_and_create_nothing(netlab: NetLab) -> None:
    create = ["network", "create", "-d", "networkd", "--ipam-driver", "networkd"]
    err = netlab.docker_error(0, *create, "--subnet", "10.53.0.0/16", "-o", "mode=bogus", "bad1")
    assert "unknown mode 'bogus'" in err, err
    err = netlab.docker_error(
        0, *create, "--subnet", "10.53.0.0/16", "-o", "mode=macvlan", "-o", "parent=nope0", "bad2"
    )
    assert "parent interface 'nope0' does not exist" in err, err
    err = netlab.docker_error(
        0, *create, "--subnet", "10.53.0.0/16", "-o", "mode=ipvlan", "-o", "parent=eth0", "bad3"
    )
    assert "no ipvlan link type" in err and "kernel module ipvlan" in err, err
    assert netlab.etcd_keys() == {}

    netlab.create_network("n1", ROUTED, "routed", nodes=(0,))
    err = netlab.docker_error(1, *create, "--subnet", "10.50.128.0/17", "bad4")
    assert "overlaps network 10.50.0.0/16" in err, err

    netlab.create_network("tiny", "10.59.0.0/30", "routed", nodes=(0,))
    _first, first_ip = netlab.run(0, "tiny")
    assert first_ip == "10.59.0.2"
    err = netlab.docker_error(0, "run", "-d", "--network", "tiny", "bb:local", "sleep", "100")
    assert "pool 10.59.0.0/30 exhausted" in err, err
    assert set(netlab.allocations("10.59.0.0-30")) == {"10.59.0.1", first_ip}
    assert len(netlab.our_links(netlab.nodes[0])) == 1

    node = netlab.nodes[0]
    status, body = netlab.plugin_post(node, "/NetworkDriver.CreateNetwork", b'{"NetworkID": ')
    assert status == 400 and "not valid JSON" in body["Err"], (status, body)
    status, body = netlab.plugin_post(node, "/NetworkDriver.CreateEndpoint", b'{"NetworkID": 7}')
    assert status == 400 and "NetworkID" in body["Err"], (status, body)
    status, body = netlab.plugin_post(node, "/NetworkDriver.Unheard", b"{}")
    assert status == 404, (status, body)

    names = netlab.docker(0, "network", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in names if n.startswith("bad")], names
    netlab.clear_containers()
    netlab.remove_network("tiny", nodes=(0,))
    netlab.remove_network("n1", nodes=(0,))
    assert netlab.etcd_keys() == {}


def start_while(netlab: NetLab, count: int, action: Callable[[], None], delay: float) -> None:
    """Start ``count`` containers on node 1 at once and run ``action`` ``delay`` s in."""

    results: List[Any] = []
    starter = threading.Thread(
        target=lambda: results.extend(
            netlab.apis[0].run_many(count, "bb:local", ["sleep", "100000"], "n1", workers=count)
        )
    )
    starter.start()
    time.sleep(delay)
    action()
    starter.join(180)
    failed = [error for cid, error in results if cid is None]
    print(f"{count - len(failed)} of {count} started, failures: {failed[:2]}")


def test_kills_during_container_starts_lose_and_leak_nothing(netlab: NetLab) -> None:
    node, other = netlab.nodes
    netlab.create_network("n1", ROUTED, "routed")

    def kill_plugin_worker() -> None:
        os.kill(node.daemon.pid("netplugin"), signal.SIGKILL)

    def kill_networkd() -> None:
        node.kill_networkd()  # the supervisor: every worker dies with it
        time.sleep(0.5)
        netlab.restart_networkd(node)

    start_while(netlab, 12, kill_plugin_worker, 0.5)
    start_while(netlab, 12, kill_networkd, 0.5)
    # Docker keeps an endpoint whose removal failed while the plugin was down; say so.
    print(f"stale Docker endpoints: {netlab.stale_endpoints(0, 'n1')}")

    api = netlab.apis[0]
    running = api.running()
    assert running
    addresses = {cid: api.address(cid, "n1") for cid in running}
    assert all(addresses.values()), addresses
    assert len(set(addresses.values())) == len(running)  # no address shared
    assert ping_all(other.ns, addresses.values(), timeout=15) == set(addresses.values())

    def node_allocations() -> Set[str]:
        values = netlab.allocations(ROUTED_NET).items()
        return {ip for ip, v in values if v["host"] == node.name and v["kind"] == "container"}

    # Addresses of starts that failed are reclaimed once Docker shows no endpoint for them.
    wait_for(lambda: node_allocations() == set(addresses.values()), 30, interval=0.5,
             what="allocations equal to the running containers' addresses")  # fmt: skip
    links = netlab.our_links(node)
    assert sorted(links) == sorted(f"nr{e['EndpointID'][:12]}" for e in endpoints(netlab, 0))
    assert len([r for r in netlab.our_routes(node) if " dev nr" in r]) == len(running)


def endpoints(netlab: NetLab, index: int) -> List[Dict[str, Any]]:
    detail = netlab.apis[index].request("GET", "/networks/n1")
    return list((detail.get("Containers") or {}).values())


def test_dockerd_restart_loses_and_leaks_nothing(netlab: NetLab) -> None:
    node = netlab.nodes[0]
    netlab.create_network("n1", ROUTED, "routed")
    gone, gone_ip = netlab.run(0, "n1")
    kept = netlab.docker(0, "run", "-d", "--restart", "always", "--network", "n1", "bb:local",
                         "sleep", "100000")  # fmt: skip
    netlab.dockerds[0].kill()
    netlab.dockerds[0].start()
    api = netlab.apis[0]
    wait_for(lambda: kept in api.running(), 30, what="the restart-always container back")
    kept_ip = api.address(kept, "n1")
    assert gone not in api.running()
    wait_for(lambda: gone_ip not in netlab.allocations(ROUTED_NET), 30, what="address released")
    assert ping_all(netlab.nodes[1].ns, [kept_ip], timeout=10) == {kept_ip}
    wait_for(lambda: len(netlab.our_links(node)) == 1, 10, what="only the kept container's link")
    assert not host_route(netlab, 0, gone_ip) or gone_ip == kept_ip


def test_a_node_that_leaves_has_its_routes_withdrawn(netlab: NetLab) -> None:
    node_a, node_b = netlab.nodes
    netlab.create_network("n1", ROUTED, "routed")
    _a_id, a_ip = netlab.run(0, "n1")
    b_id, b_ip = netlab.run(1, "n1")

    def via_b() -> List[str]:
        return [r for r in netlab.our_routes(node_a) if f"via {node_b.ip}" in r]

    wait_for(via_b, 5, what="node1's route to node2's block")
    node_b.stop_networkd()
    left = time.monotonic()
    wait_for(lambda: not via_b(), 15, what="route to node2's block withdrawn")
    print(f"route withdrawn {time.monotonic() - left:.1f}s after node2's networkd stopped")
    keys = netlab.etcd_keys()
    assert not [k for k in keys if k.endswith("/routes/node2")]
    assert [k for k in keys if "/blocks/" in k and json.loads(keys[k])["host"] == "node2"]
    assert not ping_all(node_a.ns, [b_ip], timeout=1.5)

    netlab.restart_networkd(node_b)
    wait_for(via_b, 15, what="route to node2's block restored")
    assert ping_all(node_a.ns, [b_ip], timeout=10) == {b_ip}
    assert "0% packet loss" in netlab.docker(1, "exec", b_id, "ping", "-c", "1", "-W", "2", a_ip)


def test_operator_view(netlab: NetLab) -> None:
    node = netlab.nodes[0]
    netlab.create_network("n1", ROUTED, "routed")
    _, a_ip = netlab.run(0, "n1")
    _, b_ip = netlab.run(1, "n1")

    def listed() -> List[Dict[str, Any]]:
        result = node.daemon.ctl("net", "list", "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        hosts = {h["host"]: h for n in doc for h in n["hosts"]}
        named = all(n["names"] for n in doc)  # Docker's names, from its API
        ready = named and len(hosts) == 2 and all(h["endpoints"] for h in hosts.values())
        return doc if ready else []

    doc = wait_for(listed, 10, what="both hosts' endpoints in networkdctl net list")
    (network,) = doc
    assert (
        network["names"] == ["n1"] and network["subnet"] == ROUTED and network["mode"] == "routed"
    )
    ips = {e["ip"] for h in network["hosts"] for e in h["endpoints"]}
    assert ips == {a_ip, b_ip}
    assert {r["kind"] for r in network["routes"]} == {"local", "remote", "unreachable"}

    shown = node.daemon.ctl("net", "show", "n1")
    assert shown.returncode == 0 and a_ip in shown.stdout and "host node2" in shown.stdout
    text = node.daemon.ctl("net", "list").stdout
    assert "n1" in text and ROUTED in text
    missing = node.daemon.ctl("net", "show", "nope")
    assert missing.returncode == 1 and "no container network named 'nope'" in missing.stderr

    api_doc = json.loads(netlab.api_get(node, "/v1/networks"))
    assert [n["subnet"] for n in api_doc] == [ROUTED]
    metrics = netlab.api_get(node, "/metrics")
    assert f'networkd_net_addresses{{host="node1",network="{ROUTED}"}} 1' in metrics
    assert (
        "networkd_net_allocations_total" in metrics
        and 'networkd_net_routes{kind="remote"} 1' in metrics
    )
