"""The values under /lain/networkd/networks/: parsed alone, rejected with a reason."""

import json

import pytest

from networkd import keys
from networkd.netdriver import records
from networkd.netdriver.cluster import ClusterView
from networkd.netdriver.records import (
    AddressRecord,
    BlockRecord,
    DockerNetwork,
    HostRecord,
    NetworkRecord,
    RecordError,
    RouteRecord,
)

NET = "10.50.0.0-16"
DOCKER_ID = "d" * 64


@pytest.mark.parametrize(
    "record",
    [
        NetworkRecord(NET, "10.50.0.0/16", 26),
        NetworkRecord(NET, "10.50.0.0/16", 26, "ipvlan", "l3", "10.50.0.1"),
        HostRecord(NET, "node1", 2, {DOCKER_ID: DockerNetwork("eth0", "n1")}, 17.5),
        BlockRecord(NET, "10.50.0.64/26", "node-2.example"),
        AddressRecord(NET, "10.50.0.2", "container", "node1", "e" * 64, 3.0),
        AddressRecord(NET, "10.50.0.1", "gateway", "", "", 1.0),
        RouteRecord(NET, "node1", "10.77.0.11"),
    ],
)
def test_records_round_trip(record: records.Record) -> None:
    key, value = records.render(record)
    assert key.startswith(keys.NETWORKS_PREFIX + NET)
    assert records.parse(key, value.encode()) == record


@pytest.mark.parametrize(
    "key, value, reason",
    [
        (f"{keys.NETWORKS_PREFIX}10.50.0.1-16", {}, "not a CIDR key segment"),
        (f"{keys.NETWORKS_PREFIX}{NET}/pools/x", {}, "expected"),
        (f"{keys.NETWORKS_PREFIX}{NET}", {"subnet": "10.51.0.0/16", "block": 26}, "does not match the key"),
        (f"{keys.NETWORKS_PREFIX}{NET}", {"subnet": "10.50.0.0/16", "block": 8}, "block: /8 does not fit"),
        (f"{keys.NETWORKS_PREFIX}{NET}", {"subnet": "10.50.0.0/16", "block": 26, "mode": "bridge"}, "mode: unknown"),
        (f"{keys.NETWORKS_PREFIX}{NET}", {"subnet": "10.50.0.0/16", "block": 26, "gateway": "10.9.0.1"}, "gateway: 10.9.0.1 is not in"),
        (f"{keys.NETWORKS_PREFIX}{NET}/hosts/node1", {"refs": -1}, "refs: expected a count"),
        (f"{keys.NETWORKS_PREFIX}{NET}/hosts/node1", {"refs": 1, "docker": {"short": {}}}, "expected a Docker ID"),
        (f"{keys.NETWORKS_PREFIX}{NET}/hosts/node1", {"refs": 1, "docker": {DOCKER_ID: {"parent": "a/b"}}}, "not an interface name"),
        (f"{keys.NETWORKS_PREFIX}{NET}/hosts/bad host", {"refs": 1}, "not a host name"),
        (f"{keys.NETWORKS_PREFIX}{NET}/blocks/10.60.0.0-26", {"host": "a"}, "not in the network's subnet"),
        (f"{keys.NETWORKS_PREFIX}{NET}/addresses/10.60.0.2", {"host": "a"}, "not in the network's subnet"),
        (f"{keys.NETWORKS_PREFIX}{NET}/addresses/10.50.0.2", {"kind": "container"}, "host: missing"),
        (f"{keys.NETWORKS_PREFIX}{NET}/addresses/10.50.0.2", {"host": "a", "since": "x"}, "since: expected a number"),
        (f"{keys.NETWORKS_PREFIX}{NET}/routes/node1", {"address": "node2"}, "not an IPv4 address"),
    ],
)  # fmt: skip
def test_bad_values_are_rejected_naming_the_field(key: str, value: object, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        records.parse(key, json.dumps(value).encode())


def test_undecodable_values_are_rejected() -> None:
    key = keys.network_key(NET)
    for raw in (b"\xff", b"[1]", b"{", b"x" * (records.MAX_VALUE_BYTES + 1)):
        with pytest.raises(RecordError):
            records.parse(key, raw)


class Entry:
    def __init__(self, value: str, mod_revision: int, lease: int = 0) -> None:
        self.value = value
        self.mod_revision = mod_revision
        self.lease = lease


def test_the_cluster_view_keeps_good_keys_and_lists_bad_ones() -> None:
    net_key, net_value = records.render(NetworkRecord(NET, "10.50.0.0/16", 26, "routed"))
    addr_key, addr_value = records.render(
        AddressRecord(NET, "10.50.0.2", "container", "a", "e" * 64)
    )
    bad_key = f"{keys.NETWORKS_PREFIX}{NET}/blocks/10.50.0.0-26"
    view = ClusterView()
    entries = {net_key: Entry(net_value, 5), addr_key: Entry(addr_value, 6), bad_key: Entry("{", 7)}
    assert view.update(entries)
    state = view.network(NET)
    assert state.record is not None and state.record.mode == "routed"
    assert list(state.addresses) == ["10.50.0.2"]
    assert view.endpoint("a", "e" * 64) == state.addresses["10.50.0.2"]
    assert list(view.errors) == [bad_key]
    version = view.version
    assert not view.update(dict(entries))  # same revisions: nothing re-parsed
    assert view.version == version and list(view.errors) == [bad_key]
    del entries[addr_key]
    assert view.update(entries) and not view.network(NET).addresses
