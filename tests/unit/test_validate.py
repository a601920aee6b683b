"""Validation of every value kind of SPEC section 1: typed items, or every problem named."""

import json
from typing import Any

import pytest

from networkd import keys
from networkd.bus.messages import (
    AclList,
    AppsKey,
    DomainEntry,
    DomainServers,
    LeaderAddress,
    PortSpec,
    StreamrouterPool,
    VipConfig,
)
from networkd.etcd.validate import (
    MAX_POD_GROUP_BYTES,
    MAX_VALUE_BYTES,
    Parsed,
    PodGroupInfo,
    validate,
)


def v(key: str, value: Any) -> Parsed:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    parsed = validate(key, raw)
    assert parsed is not None
    return parsed


def error(key: str, value: Any) -> str:
    parsed = v(key, value)
    assert parsed.error, f"expected {key} = {value!r} to be rejected"
    assert parsed.item is None
    return parsed.error


VIP = keys.VIPS_PREFIX + "10.0.0.1"
GOOD_VIP = {
    "app": "webrouter",
    "proc": "worker",
    "ports": [{"src": "80", "proto": "tcp", "dest": "8080"}],
}


# --- VIPs ------------------------------------------------------------------------------


def test_vip_go_daemon_shape() -> None:
    parsed = v(VIP, {**GOOD_VIP, "excluded_nodes": ["n4"]})
    assert parsed.ok and parsed.item_key == "10.0.0.1"
    assert parsed.item == VipConfig(
        ip="10.0.0.1",
        app="webrouter",
        proc="worker",
        ports=[PortSpec(80, "tcp", 8080)],
        excluded_nodes=["n4"],
    )


def test_vip_defaults_proto_tcp_and_dest_src() -> None:
    parsed = v(
        VIP, {"app": "a", "proc": "p", "ports": [{"src": 53, "proto": "UDP"}, {"src": "53"}]}
    )
    assert parsed.item.ports == [PortSpec(53, "udp", 53), PortSpec(53, "tcp", 53)]
    assert parsed.item.excluded_nodes == []


def test_vip_empty_ports_list_is_a_vip_without_rules() -> None:
    assert v(VIP, {"app": "a", "proc": "p", "ports": []}).item.ports == []


def test_port_only_key_src_defaults_to_key_port() -> None:
    parsed = v(
        keys.VIPS_PREFIX + "0.0.0.0:9000", {"app": "a", "proc": "p", "ports": [{"dest": "9001"}]}
    )
    assert parsed.ok, parsed.error
    assert parsed.item_key == "0.0.0.0:9000"
    assert parsed.item == VipConfig(
        ip="0.0.0.0", app="a", proc="p", ports=[PortSpec(9000, "tcp", 9001)], port=9000
    )


def test_vip_collects_every_problem_naming_fields() -> None:
    reason = error(
        VIP,
        {
            "app": 3,
            "ports": [
                {"src": "70000", "proto": "sctp", "dest": "x"},
                "80",
                {"proto": "udp"},
                {"src": True},
            ],
            "excluded_nodes": "n1",
        },
    )
    for part in [
        "app: expected a string, got number",
        "proc: missing",
        "ports[0].src: port 70000 out of range 1..65535",
        "ports[0].proto: unknown protocol 'sctp'",
        "ports[0].dest: not a port number: 'x'",
        "ports[1]: expected a JSON object, got string",
        "ports[2].src: missing",
        "ports[3].src: expected a port number, got boolean",
        "excluded_nodes: expected a list, got string",
    ]:
        assert part in reason, (part, reason)


@pytest.mark.parametrize(
    "value, field",
    [
        ({"app": "a", "proc": "p"}, "ports: missing"),
        ({"app": "a", "proc": "p", "ports": {"src": 1}}, "ports: expected a list"),
        ({"app": "", "proc": "p", "ports": []}, "app: empty"),
        ({"app": "a", "proc": "p", "ports": [{"src": 0}]}, "ports[0].src: port 0 out of range"),
        ({"app": "a", "proc": "p", "ports": [{"src": -1}]}, "ports[0].src: port -1 out of range"),
        (
            {"app": "a", "proc": "p", "ports": [{"src": 1.5}]},
            "ports[0].src: expected a port number, got number",
        ),
        (
            {"app": "a", "proc": "p", "ports": [{"src": 80}, {"src": "80"}]},
            "ports[1]: duplicate port 80/tcp",
        ),
        ({"app": "a", "proc": "p", "ports": [], "excluded_nodes": [1]}, "excluded_nodes[0]"),
        ([1, 2], "value: expected a JSON object, got list"),
        (None, "value: expected a JSON object, got null"),
    ],
)
def test_vip_single_problem(value: Any, field: str) -> None:
    assert field in error(VIP, value)


@pytest.mark.parametrize(
    "suffix", ["10.0.0.256", "vip", "0.0.0.0", "10.0.0.1:99999", "10.0.0.1:", "::1:x"]
)
def test_vip_bad_keys(suffix: str) -> None:
    assert error(keys.VIPS_PREFIX + suffix, GOOD_VIP).startswith("key: ")


# --- raw value problems (every kind) ----------------------------------------------------


ALL_KINDS = [
    VIP,
    keys.domain_key("a.lain"),
    keys.domain_servers_key("lain"),
    keys.pod_group_key("app", "app.web.web"),
    keys.STREAMROUTER_VIPPOOL,
    keys.WHITELIST_IPS,
    keys.whitelist_ex_ports_key("tcp"),
    keys.whitelist_in_ports_key("10.0.0.0/8"),
]


@pytest.mark.parametrize("key", ALL_KINDS)
def test_bad_bytes_rejected_cleanly(key: str) -> None:
    assert "not valid UTF-8" in error(key, b"\xff\xfe{}")
    assert "not valid JSON" in error(key, b"{not json")
    assert "not valid JSON" in error(key, b"NaN")
    assert "not valid JSON" in error(key, b"")
    limit = MAX_POD_GROUP_BYTES if "pod_groups" in key else MAX_VALUE_BYTES
    assert "too large" in error(key, b" " * (limit + 1))
    deep = error(key, b"[" * 30000 + b"]" * 30000)
    assert "nested too deeply" in deep or "expected" in deep


@pytest.mark.parametrize("key", [keys.DEPLOYD_LEADER, keys.apps_key("a", "p", "10.0.0.1", 80)])
def test_text_values_bad_bytes(key: str) -> None:
    assert "not valid UTF-8" in error(key, b"\xc3\x28")
    assert "too large" in error(key, b"a" * (MAX_VALUE_BYTES + 1))


def test_unknown_keys_are_not_validated() -> None:
    assert validate("/lain/config/tinydns_fqdns/x", b"garbage") is None
    assert validate("/lain/networkd/leader", b"node1") is None


# --- domains ---------------------------------------------------------------------------


def test_domain_exact_lowercased_and_bad_ips_dropped() -> None:
    parsed = v(
        keys.domain_key("WWW.Lain"),
        {"ips": ["10.0.0.5", "nope", 3, "2001:db8::1", "10.0.0.5"], "type": ""},
    )
    assert parsed.ok and parsed.item_key == "www.lain"
    assert parsed.item == DomainEntry(name="www.lain", ips=["10.0.0.5", "2001:db8::1"], type="")


def test_domain_one_label_wildcard() -> None:
    parsed = v(keys.domain_key("*.lain"), {"ips": ["10.0.0.5"]})
    assert parsed.item == DomainEntry(name="*.lain", ips=["10.0.0.5"], type="")


@pytest.mark.parametrize("kind", ["node", "webrouter", "NODE"])
def test_domain_types(kind: str) -> None:
    assert v(keys.domain_key("x.lain"), {"type": kind}).item.type == kind.lower()


@pytest.mark.parametrize(
    "value, field",
    [
        ({"ips": "10.0.0.1"}, "ips: expected a list, got string"),
        ({"type": "cname"}, "type: unknown type 'cname'"),
        ({"type": 1}, "type: expected a string, got number"),
        ("10.0.0.1", "value: expected a JSON object, got string"),
    ],
)
def test_domain_problems(value: Any, field: str) -> None:
    assert field in error(keys.domain_key("x.lain"), value)


def test_domain_bad_name() -> None:
    assert error(keys.domain_key("a..b"), {"ips": []}).startswith("key: not a DNS name")


# --- domain servers --------------------------------------------------------------------


def test_domain_servers() -> None:
    parsed = v(
        keys.domain_servers_key("Lain"), {"servers": ["10.0.0.9#53", "10.0.0.10", "::1#5353"]}
    )
    assert parsed.item == DomainServers(
        domain="lain", servers=["10.0.0.9#53", "10.0.0.10#53", "::1#5353"]
    )


@pytest.mark.parametrize("value", [{"servers": None}, {"servers": []}, None, {}])
def test_domain_servers_empty_means_no_override(value: Any) -> None:
    parsed = v(keys.domain_servers_key("lain"), value)
    assert parsed.ok and parsed.item is None and parsed.item_key == "lain"


def test_domain_servers_problems() -> None:
    reason = error(
        keys.domain_servers_key("lain"), {"servers": ["10.0.0.9#x", "host#53", 5, "10.0.0.1#0"]}
    )
    assert "servers[0]: not a port number" in reason
    assert "servers[1]: not an IP address" in reason
    assert "servers[2]: expected 'ip#port', got number" in reason
    assert "servers[3]: port 0 out of range" in reason


# --- pod groups ------------------------------------------------------------------------


def pod_group(pods: Any, name: str = "app.web.web", namespace: str = "app") -> Any:
    return {"Spec": {"Name": name, "Namespace": namespace, "Pod": {"Containers": []}}, "Pods": pods}


def container(node: str, ip: str = "172.20.0.5", port: int = 8080, cid: str = "abc") -> Any:
    return {
        "Id": cid,
        "NodeName": node,
        "NodeIp": "10.0.0.11",
        "ContainerIp": ip,
        "ContainerPort": port,
        "Runtime": {},
    }


def test_pod_group_containers() -> None:
    parsed = v(
        keys.pod_group_key("app", "app.web.web"),
        pod_group(
            [
                {"InstanceNo": 2, "Containers": [container("n1", "172.20.0.6", cid="c2")]},
                {"InstanceNo": 1, "Containers": [container("n2", cid="c1")]},
                {"InstanceNo": 3, "Containers": [container("", "")]},  # not placed yet: skipped
                {"InstanceNo": 4, "Containers": None},
            ]
        ),
    )
    assert parsed.ok, parsed.error
    info = parsed.item
    assert isinstance(info, PodGroupInfo)
    assert (info.app, info.proc, parsed.item_key) == ("app", "web", "app/web")
    assert [(c.node_name, c.instance_no, c.container_ip) for c in info.containers] == [
        ("n1", 2, "172.20.0.6"),
        ("n2", 1, "172.20.0.5"),
    ]


def test_pod_group_problems() -> None:
    reason = error(
        keys.pod_group_key("app", "app.web.web"),
        {
            "Spec": {"Name": 5},
            "Pods": [
                {
                    "InstanceNo": "1",
                    "Containers": [
                        {"NodeName": "n1", "ContainerIp": "300.1.1.1", "ContainerPort": "80"}
                    ],
                },
                7,
            ],
        },
    )
    for part in [
        "Spec.Namespace: missing",
        "Spec.Name: expected a string, got number",
        "Pods[0].InstanceNo: expected an integer, got string",
        "Pods[0].Containers[0].ContainerIp: not an IP address",
        "Pods[0].Containers[0].ContainerPort: expected an integer, got string",
        "Pods[1]: expected a JSON object, got number",
    ]:
        assert part in reason, (part, reason)


def test_pod_group_missing_spec_and_bad_key() -> None:
    assert "Spec: expected a JSON object, got null" in error(
        keys.pod_group_key("app", "pg"), {"Pods": []}
    )
    assert error(keys.POD_GROUPS_PREFIX + "app", pod_group([])).startswith("key: ")


def test_pod_group_may_exceed_64k() -> None:
    big = pod_group([{"InstanceNo": 1, "Containers": [container("n1")], "Blob": "x" * 100_000}])
    assert v(keys.pod_group_key("app", "app.web.web"), big).ok


# --- leaders ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"10.0.0.1:9003", b'"10.0.0.1:9003"', b" 10.0.0.1:9003\n"])
def test_leader_values(raw: bytes) -> None:
    parsed = v(keys.DEPLOYD_LEADER, raw)
    assert parsed.item == LeaderAddress(name="deployd", ip="10.0.0.1", port=9003)


def test_swarm_leader_ipv6() -> None:
    assert v(keys.SWARM_LEADER, b"[2001:db8::2]:2376").item == LeaderAddress(
        "swarm", "2001:db8::2", 2376
    )


@pytest.mark.parametrize(
    "raw", [b"10.0.0.1", b"", b"host:80", b"10.0.0.1:0", b'"unterminated', b"[1,2]", b'"a:b"']
)
def test_malformed_leader_rejected(raw: bytes) -> None:
    assert error(keys.DEPLOYD_LEADER, raw).startswith("value: ")


# --- streamrouter, ACL, apps -----------------------------------------------------------


def test_streamrouter_pool() -> None:
    parsed = v(keys.STREAMROUTER_VIPPOOL, ["10.0.0.20", "10.0.0.21", "10.0.0.20"])
    assert parsed.item_key == "pool" and parsed.item == StreamrouterPool(
        ips=["10.0.0.20", "10.0.0.21"]
    )
    assert "value[1]: not an IP address" in error(keys.STREAMROUTER_VIPPOOL, ["10.0.0.20", "x"])
    assert "value: expected a list, got object" in error(keys.STREAMROUTER_VIPPOOL, {"ips": []})


def test_whitelist_ips() -> None:
    parsed = v(keys.WHITELIST_IPS, ["10.0.0.1", "192.168.1.7/16", "10.0.0.1-10.0.0.9"])
    assert parsed.item == AclList(
        key="whitelist_ips", items=["10.0.0.1", "192.168.0.0/16", "10.0.0.1-10.0.0.9"]
    )
    reason = error(keys.WHITELIST_IPS, ["10.0.0.9-10.0.0.1", "bad/8", 5])
    assert "value[0]: not an address range" in reason
    assert "value[1]: not an IP, CIDR or range" in reason
    assert "value[2]" in reason
    reason = error(keys.WHITELIST_IPS, ["fe80::%eth0/64", "fe80::1%eth0"])  # zones
    assert "value[0]: not an IP, CIDR or range" in reason and "value[1]" in reason


def test_whitelist_ex_ports() -> None:
    parsed = v(keys.whitelist_ex_ports_key("TCP"), ["80", 443, "8000:8100"])
    assert parsed.item == AclList(key="ex_ports/tcp", items=["80", "443", "8000:8100"])
    assert error(keys.whitelist_ex_ports_key("icmp"), ["80"]).startswith("key: unknown protocol")
    assert "value[0]: port 0 out of range" in error(keys.whitelist_ex_ports_key("udp"), ["0"])
    assert "value[0]: empty port range" in error(keys.whitelist_ex_ports_key("udp"), ["90:80"])


def test_whitelist_in_ports() -> None:
    parsed = v(
        keys.whitelist_in_ports_key("10.1.0.0/16"), {"ports": {"tcp": ["8080"], "udp": ["53"]}}
    )
    assert parsed.item == AclList(
        key="in_ports/10.1.0.0/16", ports={"tcp": ["8080"], "udp": ["53"]}
    )
    reason = error(keys.whitelist_in_ports_key("nope"), {"ports": {"gre": ["1"], "tcp": ["x"]}})
    assert "key: not an IP, CIDR or range" in reason
    assert "ports.gre: unknown protocol" in reason
    assert "ports.tcp[0]: not a port number" in reason


def test_apps_keys() -> None:
    parsed = v(keys.apps_key("webrouter", "worker", "10.0.0.1", 80), b"node1")
    assert parsed.item_key == "webrouter/worker/10.0.0.1:80"
    assert parsed.item == AppsKey(
        app="webrouter", proc="worker", ip="10.0.0.1", port=80, node="node1"
    )
    assert error(keys.APPS_PREFIX + "webrouter/worker/x:80", b"node1").startswith("key: ")
    assert error(keys.apps_key("a", "p", "10.0.0.1", 1), b"").startswith("value: empty")
    assert error(keys.apps_key("a", "p", "10.0.0.1", 1), b"two words").startswith(
        "value: not a node name"
    )
