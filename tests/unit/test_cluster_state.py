"""ClusterState: the pure mapping from etcd keys to the watcher's topics and its deltas."""

import json
from typing import Any

from networkd import keys
from networkd.bus.messages import ConfigError, LocalContainer, ProcNodes
from networkd.etcd.state import (
    T_CONFIG_ERRORS,
    T_CONTAINERS,
    T_DOMAINS,
    T_PROC_NODES,
    T_VIPS,
    TOPICS,
    ClusterState,
)
from tests.support.lain import pod
from tests.support.lain import pod_group as pod_group_text


def j(value: Any) -> bytes:
    return json.dumps(value).encode()


def pod_group(app: str, proc: str, pods: Any) -> bytes:
    return pod_group_text(app, proc, pods).encode()


VIP_A = j({"app": "a", "proc": "p", "ports": [{"src": "80"}]})
VIP_B = j({"app": "b", "proc": "p", "ports": [{"src": "81"}]})
BAD_VIP = j({"app": "a", "ports": [{"src": "99999"}]})


def test_put_change_delete_deltas() -> None:
    state = ClusterState("n1")
    delta = state.put(keys.vip_key("10.0.0.1"), VIP_A)
    assert list(delta.changes) == [T_VIPS]
    assert delta.sets(T_VIPS)["10.0.0.1"].app == "a"
    assert not state.put(keys.vip_key("10.0.0.1"), VIP_A)  # same value: no delta
    assert state.put(keys.vip_key("10.0.0.1"), VIP_B).sets(T_VIPS)["10.0.0.1"].app == "b"
    delta = state.delete(keys.vip_key("10.0.0.1"))
    assert delta.deleted(T_VIPS) == ["10.0.0.1"]
    assert state.items[T_VIPS] == {}
    assert not state.delete(keys.vip_key("10.0.0.1"))


def test_put_then_delete_in_one_batch_is_no_change() -> None:
    state = ClusterState("n1")
    delta = state.apply([(keys.vip_key("10.0.0.1"), VIP_A), (keys.vip_key("10.0.0.1"), None)])
    assert not delta


def test_equivalent_rewrite_is_no_change() -> None:
    state = ClusterState("n1")
    state.put(keys.vip_key("10.0.0.1"), VIP_A)
    same = j({"proc": "p", "app": "a", "ports": [{"src": 80, "proto": "tcp", "dest": "80"}]})
    assert not state.put(keys.vip_key("10.0.0.1"), same)


def test_unknown_keys_ignored() -> None:
    state = ClusterState("n1")
    assert not state.put("/lain/config/tinydns_fqdns/x", b"junk")
    assert state.keys_read() == 0


def test_bad_value_becomes_error_and_fix_clears_it() -> None:
    state = ClusterState("n1")
    key = keys.vip_key("10.0.0.2")
    state.put(keys.vip_key("10.0.0.1"), VIP_A)
    delta = state.put(key, BAD_VIP)
    assert delta.new_errors == [state.errors[key]]
    assert "proc: missing" in state.errors[key].reason
    assert "ports[0].src: port 99999 out of range" in state.errors[key].reason
    assert "10.0.0.2" not in state.items[T_VIPS]
    assert "10.0.0.1" in state.items[T_VIPS]
    # the same bad value again (a resync) is not a new error
    assert not state.put(key, BAD_VIP).new_errors
    # another bad value with the same problems: still the same error, not new
    assert not state.put(key, BAD_VIP + b" ").new_errors
    delta = state.put(key, VIP_B)
    assert delta.cleared_errors == [key]
    assert delta.deleted(T_CONFIG_ERRORS) == [key]
    assert delta.sets(T_VIPS)["10.0.0.2"].app == "b"
    assert state.errors == {}


def test_good_value_turning_bad_removes_the_item() -> None:
    state = ClusterState("n1")
    key = keys.vip_key("10.0.0.1")
    state.put(key, VIP_A)
    delta = state.put(key, BAD_VIP)
    assert delta.deleted(T_VIPS) == ["10.0.0.1"]
    assert key in state.errors


def test_deleting_a_bad_key_clears_its_error() -> None:
    state = ClusterState("n1")
    key = keys.domain_key("x.lain")
    state.put(key, b"{bad")
    assert key in state.errors
    delta = state.delete(key)
    assert delta.cleared_errors == [key]
    assert state.errors == {}


def test_non_utf8_key_under_our_prefix_is_an_error() -> None:
    state = ClusterState("n1")
    raw = keys.VIPS_PREFIX.encode() + b"\xff\xfe"
    delta = state.put(raw, VIP_A)
    (error,) = delta.new_errors
    assert error.reason == "key: not valid UTF-8"
    assert error.key == keys.VIPS_PREFIX + "\\xff\\xfe"
    assert state.delete(raw).cleared_errors == [error.key]
    assert not state.put(b"/other/\xff", b"x")


def test_domain_keys_lower_cased_and_collisions_resolved() -> None:
    state = ClusterState("n1")
    state.put(keys.domain_key("WWW.Lain"), j({"ips": ["10.0.0.1"]}))
    assert state.items[T_DOMAINS]["www.lain"].ips == ["10.0.0.1"]
    state.put(keys.domain_key("www.lain"), j({"ips": ["10.0.0.2"]}))
    assert state.items[T_DOMAINS]["www.lain"].ips == ["10.0.0.2"]  # the canonical key wins
    delta = state.delete(keys.domain_key("www.lain"))
    assert delta.sets(T_DOMAINS)["www.lain"].ips == ["10.0.0.1"]  # the other one again
    delta = state.delete(keys.domain_key("WWW.Lain"))
    assert delta.deleted(T_DOMAINS) == ["www.lain"]


def test_wildcard_domains() -> None:
    state = ClusterState("n1")
    state.put(keys.domain_key("*.lain"), j({"ips": ["10.0.0.1"]}))
    state.put(keys.domain_key("*.Web.Lain"), j({"type": "webrouter"}))
    assert set(state.items[T_DOMAINS]) == {"*.lain", "*.web.lain"}


def test_local_container_lowest_instance_wins() -> None:
    state = ClusterState("n1")
    key = keys.pod_group_key("app", "app.worker.web")
    delta = state.put(
        key,
        pod_group(
            "app",
            "web",
            [pod(3, "n1", "172.20.0.3"), pod(2, "n1", "172.20.0.2"), pod(1, "n2", "172.20.0.1")],
        ),
    )
    local = delta.sets(T_CONTAINERS)["app/web"]
    assert isinstance(local, LocalContainer)
    assert (local.instance_no, local.container_ip, local.node_name) == (2, "172.20.0.2", "n1")
    assert delta.sets(T_PROC_NODES)["app/web"] == ProcNodes(
        app="app", proc="web", nodes=["n1", "n2"]
    )
    # the container moves away from this node
    delta = state.put(key, pod_group("app", "web", [pod(1, "n2", "172.20.0.1")]))
    assert delta.deleted(T_CONTAINERS) == ["app/web"]
    assert delta.sets(T_PROC_NODES)["app/web"].nodes == ["n2"]
    delta = state.delete(key)
    assert delta.deleted(T_PROC_NODES) == ["app/web"]


def test_container_without_ip_is_not_local() -> None:
    state = ClusterState("n1")
    state.put(
        keys.pod_group_key("app", "app.worker.web"), pod_group("app", "web", [pod(1, "n1", "")])
    )
    assert state.items[T_CONTAINERS] == {}
    assert state.items[T_PROC_NODES]["app/web"].nodes == ["n1"]


def test_two_pod_groups_of_one_proc_merge() -> None:
    state = ClusterState("n1")
    state.put(
        keys.pod_group_key("app", "pg1"), pod_group("app", "web", [pod(5, "n1", "172.20.0.5")])
    )
    state.put(
        keys.pod_group_key("app", "pg2"), pod_group("app", "web", [pod(4, "n1", "172.20.0.4")])
    )
    assert state.items[T_CONTAINERS]["app/web"].instance_no == 4
    state.delete(keys.pod_group_key("app", "pg2"))
    assert state.items[T_CONTAINERS]["app/web"].instance_no == 5


def test_replace_all_diffs_against_current_state() -> None:
    state = ClusterState("n1")
    state.apply(
        [
            (keys.vip_key("10.0.0.1"), VIP_A),
            (keys.vip_key("10.0.0.2"), VIP_A),
            (keys.domain_key("bad.lain"), b"{"),
        ]
    )
    delta = state.replace_all(
        [
            (keys.vip_key("10.0.0.1"), VIP_A),  # unchanged
            (keys.vip_key("10.0.0.3"), VIP_B),  # new
            (keys.domain_key("bad.lain"), b"{"),  # still bad: no new error
        ]
    )
    assert delta.deleted(T_VIPS) == ["10.0.0.2"]
    assert list(delta.sets(T_VIPS)) == ["10.0.0.3"]
    assert not delta.new_errors and T_CONFIG_ERRORS not in delta.changes
    assert set(state.items[T_VIPS]) == {"10.0.0.1", "10.0.0.3"}


def test_replace_all_equals_fresh_state() -> None:
    pairs = [
        (keys.vip_key("10.0.0.1"), VIP_A),
        (keys.domain_key("a.lain"), j({"ips": ["10.0.0.9"]})),
        (keys.DEPLOYD_LEADER, b"10.0.0.1:9003"),
        (keys.pod_group_key("app", "pg"), pod_group("app", "web", [pod(1, "n1", "172.20.0.1")])),
        (keys.vip_key("10.0.0.9"), BAD_VIP),
    ]
    incremental = ClusterState("n1")
    incremental.apply([(keys.vip_key("10.0.0.7"), VIP_B), (keys.domain_key("gone.lain"), j({}))])
    incremental.replace_all(pairs)
    fresh = ClusterState("n1")
    fresh.apply(pairs)
    assert incremental.snapshot() == fresh.snapshot()
    assert set(fresh.snapshot()) == set(TOPICS)
    assert fresh.errors[keys.vip_key("10.0.0.9")] == ConfigError(
        key=keys.vip_key("10.0.0.9"), reason=fresh.errors[keys.vip_key("10.0.0.9")].reason
    )
