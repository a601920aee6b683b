"""Docker's plugin requests: validation into typed requests, and the answers (no root)."""

import json
from typing import Any, Dict

import pytest

from networkd.netdriver import messages as m
from networkd.netdriver import protocol
from networkd.netdriver.httpd import handle

NID = "a" * 64
EID = "b" * 64


def body(data: Dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def create_network(generic: Dict[str, Any], **extra: Any) -> bytes:
    data = {
        "NetworkID": NID,
        "Options": {"com.docker.network.enable_ipv6": False, protocol.GENERIC_OPTIONS: generic},
        "IPv4Data": [
            {"AddressSpace": "networkd", "Pool": "10.50.0.0/16", "Gateway": "10.50.0.1/16"}
        ],
        "IPv6Data": [],
    }
    data.update(extra)
    return body(data)


@pytest.mark.parametrize(
    "path, raw, expected",
    [
        ("/IpamDriver.RequestPool",
         body({"AddressSpace": "x", "Pool": "10.50.0.0/16", "SubPool": "", "Options": {}, "V6": False}),
         m.RequestPool("10.50.0.0/16")),
        ("/IpamDriver.RequestPool",
         body({"AddressSpace": "x", "Pool": "10.50.0.0/16", "Options": {"block": "28"}}),
         m.RequestPool("10.50.0.0/16", options={"block": "28"})),
        ("/IpamDriver.RequestAddress", body({"PoolID": "10.50.0.0-16", "Address": "", "Options": None}),
         m.RequestAddress("10.50.0.0-16")),
        ("/IpamDriver.RequestAddress",
         body({"PoolID": "p", "Address": "", "Options": {"RequestAddressType": protocol.GATEWAY_TYPE}}),
         m.RequestAddress("p", gateway=True)),
        ("/IpamDriver.RequestAddress", body({"PoolID": "p", "Address": "10.50.0.9"}),
         m.RequestAddress("p", address="10.50.0.9")),
        ("/IpamDriver.ReleaseAddress", body({"PoolID": "p", "Address": "10.50.0.9"}),
         m.ReleaseAddress("p", "10.50.0.9")),
        ("/IpamDriver.ReleasePool", body({"PoolID": "p"}), m.ReleasePool("p")),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "routed"}),
         m.CreateNetwork(NID, "10.50.0.0/16", "10.50.0.1", "routed")),
        ("/NetworkDriver.CreateNetwork", create_network({}),
         m.CreateNetwork(NID, "10.50.0.0/16", "10.50.0.1", "routed")),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "macvlan", "parent": "eth0"}),
         m.CreateNetwork(NID, "10.50.0.0/16", "10.50.0.1", "macvlan", "eth0")),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "ipvlan", "parent": "bond0.7"}),
         m.CreateNetwork(NID, "10.50.0.0/16", "10.50.0.1", "ipvlan", "bond0.7", "l2")),
        ("/NetworkDriver.CreateNetwork",
         create_network({"mode": "ipvlan", "parent": "eth1", "ipvlan_mode": "l3"}),
         m.CreateNetwork(NID, "10.50.0.0/16", "10.50.0.1", "ipvlan", "eth1", "l3")),
        ("/NetworkDriver.DeleteNetwork", body({"NetworkID": NID}), m.DeleteNetwork(NID)),
        ("/NetworkDriver.CreateEndpoint",
         body({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.50.0.5/16", "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
         m.CreateEndpoint(NID, EID, "10.50.0.5/16")),
        ("/NetworkDriver.Join",
         body({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x", "Options": {}}),
         m.Join(NID, EID)),
        ("/NetworkDriver.Leave", body({"NetworkID": NID, "EndpointID": EID}), m.Leave(NID, EID)),
        ("/NetworkDriver.DeleteEndpoint", body({"NetworkID": NID, "EndpointID": EID}),
         m.DeleteEndpoint(NID, EID)),
        ("/NetworkDriver.EndpointOperInfo", body({"NetworkID": NID, "EndpointID": EID}),
         m.EndpointInfo(NID, EID)),
    ],
)  # fmt: skip
def test_requests_become_typed_requests(path: str, raw: bytes, expected: Any) -> None:
    assert protocol.parse(path, raw) == expected


@pytest.mark.parametrize(
    "path, raw, answer",
    [
        ("/Plugin.Activate", b"", {"Implements": ["NetworkDriver", "IpamDriver"]}),
        ("/NetworkDriver.GetCapabilities", b"", {"Scope": "local", "ConnectivityScope": "global"}),
        ("/IpamDriver.GetCapabilities", b"",
         {"RequiresMACAddress": False, "RequiresRequestReplay": False}),
        ("/IpamDriver.GetDefaultAddressSpaces", b"",
         {"LocalDefaultAddressSpace": "networkd", "GlobalDefaultAddressSpace": "networkd"}),
        ("/NetworkDriver.DiscoverNew", body({"DiscoveryType": 1, "DiscoveryData": {}}), {}),
        ("/NetworkDriver.DiscoverDelete", body({"DiscoveryType": 1, "DiscoveryData": {}}), {}),
        ("/NetworkDriver.ProgramExternalConnectivity",
         body({"NetworkID": NID, "EndpointID": EID, "Options": {}}), {}),
        ("/NetworkDriver.RevokeExternalConnectivity", body({"NetworkID": NID, "EndpointID": EID}), {}),
    ],
)  # fmt: skip
def test_local_methods_are_answered_by_the_plugin_itself(
    path: str, raw: bytes, answer: Dict[str, Any]
) -> None:
    assert protocol.parse(path, raw) == answer


def test_every_method_docker_calls_is_served() -> None:
    for method in (
        "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
        "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
        "NetworkDriver.DeleteEndpoint", "NetworkDriver.EndpointOperInfo", "NetworkDriver.Join",
        "NetworkDriver.Leave", "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
        "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
        "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces",
        "IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress",
        "IpamDriver.ReleaseAddress",
    ):  # fmt: skip
        assert f"/{method}" in protocol.METHODS


@pytest.mark.parametrize(
    "path, raw, error, message",
    [
        ("/NetworkDriver.AllocateNetwork", b"{}", protocol.NotFound, "no plugin method"),
        ("/NetworkDriver.CreateNetwork", b'{"NetworkID": ', protocol.BadRequest, "not valid JSON"),
        ("/NetworkDriver.CreateNetwork", b"[1, 2]", protocol.BadRequest, "expected a JSON object"),
        ("/NetworkDriver.CreateNetwork", b"\xff\xfe", protocol.BadRequest, "not valid JSON"),
        ("/NetworkDriver.Join", body({"NetworkID": 7, "EndpointID": EID}), protocol.BadRequest,
         "NetworkID: expected str"),
        ("/NetworkDriver.Join", body({"NetworkID": "../../x", "EndpointID": EID}),
         protocol.BadRequest, "NetworkID: expected a Docker ID"),
        ("/NetworkDriver.Leave", body({"NetworkID": NID}), protocol.BadRequest, "EndpointID: missing"),
        ("/IpamDriver.ReleaseAddress", body({"PoolID": "p", "Address": "10.50.0.300"}),
         protocol.BadRequest, "Address: not an IPv4 address"),
        ("/IpamDriver.RequestAddress", body({"PoolID": "p", "Options": {"x": [1]}}),
         protocol.BadRequest, "Options.x: expected a string"),
        ("/IpamDriver.RequestPool", body({"AddressSpace": "x", "Pool": ""}), protocol.Refused,
         "needs the network's subnet"),
        ("/IpamDriver.RequestPool", body({"AddressSpace": "x", "Pool": "10.50.0.1/16"}),
         protocol.Refused, "not a subnet"),
        ("/IpamDriver.RequestPool", body({"AddressSpace": "x", "Pool": "fd00::/64", "V6": True}),
         protocol.Refused, "IPv6"),
        ("/IpamDriver.RequestPool",
         body({"AddressSpace": "x", "Pool": "10.50.0.0/16", "SubPool": "10.50.1.0/24"}),
         protocol.Refused, "--ip-range is not supported"),
        ("/IpamDriver.RequestPool",
         body({"AddressSpace": "x", "Pool": "10.50.0.0/16", "Options": {"blok": "24"}}),
         protocol.Refused, "unknown --ipam-opt blok"),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "bogus"}), protocol.Refused,
         "unknown mode 'bogus'"),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "macvlan"}), protocol.Refused,
         "needs the parent interface"),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "routed", "parent": "eth0"}),
         protocol.Refused, "takes no parent"),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "macvlan", "parent": "a b"}),
         protocol.Refused, "not an interface name"),
        ("/NetworkDriver.CreateNetwork", create_network({"mdoe": "routed"}), protocol.Refused,
         "unknown option 'mdoe'"),
        ("/NetworkDriver.CreateNetwork",
         create_network({"mode": "ipvlan", "parent": "eth0", "ipvlan_mode": "l4"}),
         protocol.Refused, "unknown ipvlan_mode"),
        ("/NetworkDriver.CreateNetwork", create_network({"mode": "routed"}, IPv4Data=[]),
         protocol.Refused, "exactly one IPv4 subnet"),
        ("/NetworkDriver.CreateEndpoint",
         body({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": ""}}),
         protocol.Refused, "--ipam-driver networkd"),
        ("/NetworkDriver.CreateEndpoint",
         body({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.50.0.5/16", "AddressIPv6": "fd00::5/64"}}),
         protocol.Refused, "IPv6"),
    ],
)  # fmt: skip
def test_bad_requests_are_rejected_naming_what_is_wrong(
    path: str, raw: bytes, error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        protocol.parse(path, raw)
    assert message in str(caught.value)


def test_http_status_and_error_body_per_kind_of_problem() -> None:
    def forward(request: Any) -> m.Reply:
        raise AssertionError("nothing may be forwarded")

    assert handle("/Nope.Method", b"{}", forward)[0] == 404
    status, answer = handle("/NetworkDriver.Join", b"{", forward)
    assert status == 400 and "not valid JSON" in answer["Err"]
    status, answer = handle("/NetworkDriver.CreateNetwork", create_network({"mode": "x"}), forward)
    # Docker's driver client reads Err, its IPAM client Error: both carry the message.
    assert status == 200 and answer["Err"] == answer["Error"] and "unknown mode" in answer["Err"]


def test_answers_render_the_netstore_reply() -> None:
    join = m.Join(NID, EID)
    routed = protocol.answer(
        join, m.Reply(ifname="ncbbbbbbbbbbbb", gateway="169.254.1.1", gateway_on_link=True)
    )
    assert routed == {
        "InterfaceName": {"SrcName": "ncbbbbbbbbbbbb", "DstPrefix": "eth"},
        "Gateway": "169.254.1.1",
        "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}],
    }
    l2 = protocol.answer(join, m.Reply(ifname="nmbbbbbbbbbbbb", gateway="10.50.0.1"))
    assert l2["Gateway"] == "10.50.0.1" and l2["StaticRoutes"] == []
    pool = protocol.answer(
        m.RequestPool("10.50.0.0/16"), m.Reply(pool_id="10.50.0.0-16", pool="10.50.0.0/16")
    )
    assert pool == {"PoolID": "10.50.0.0-16", "Pool": "10.50.0.0/16", "Data": {}}
    address = protocol.answer(m.RequestAddress("p"), m.Reply(address="10.50.0.2/16"))
    assert address == {"Address": "10.50.0.2/16", "Data": {}}
    refused = protocol.answer(m.RequestAddress("p"), m.Reply(error="pool exhausted"))
    assert refused == {"Err": "pool exhausted", "Error": "pool exhausted"}
    assert protocol.answer(m.Leave(NID, EID), m.Reply()) == {}
    info = protocol.answer(m.EndpointInfo(NID, EID), m.Reply(info={"address": "10.50.0.2"}))
    assert info == {"Value": {"address": "10.50.0.2"}}
