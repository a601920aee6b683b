"""The etcd key layout: classification, parsers and builders (SPEC sections 1 and 2)."""

import pytest

from networkd import keys
from tests.support.lain import one_key_of_each_kind


@pytest.mark.parametrize(
    "key, kind, suffix",
    [
        ("/lain/config/vips/10.0.0.1", keys.KIND_VIP, "10.0.0.1"),
        ("/lain/config/vips/0.0.0.0:8080", keys.KIND_VIP, "0.0.0.0:8080"),
        ("/lain/config/domains/*.lain", keys.KIND_DOMAIN, "*.lain"),
        ("/lain/config/domain_servers/lain", keys.KIND_DOMAIN_SERVERS, "lain"),
        ("/lain/deployd/pod_groups/app/app.web.web", keys.KIND_POD_GROUP, "app/app.web.web"),
        ("/lain/deployd/leader", keys.KIND_LEADER, "/lain/deployd/leader"),
        ("/lain/swarm/docker/swarm/leader", keys.KIND_LEADER, "/lain/swarm/docker/swarm/leader"),
        (
            "/lain/config/streamrouter/vippool",
            keys.KIND_STREAMROUTER,
            "/lain/config/streamrouter/vippool",
        ),
        ("/lain/config/whitelist_ips", keys.KIND_WHITELIST_IPS, "/lain/config/whitelist_ips"),
        ("/lain/config/whitelist_ex_ports/tcp", keys.KIND_WHITELIST_EX_PORTS, "tcp"),
        ("/lain/config/whitelist_in_ports/10.0.0.0/8", keys.KIND_WHITELIST_IN_PORTS, "10.0.0.0/8"),
        (
            "/lain/networkd/apps/tinydns/worker/10.0.0.3:53",
            keys.KIND_APPS,
            "tinydns/worker/10.0.0.3:53",
        ),
    ],
)
def test_classify_input_keys(key: str, kind: str, suffix: str) -> None:
    assert keys.classify(key) == (kind, suffix)


@pytest.mark.parametrize(
    "key",
    [
        "/lain/config/tinydns_fqdns/webrouter.lain",
        "/lain/config/super_apps",
        "/lain/networkd/vips/10.0.0.1.lock",
        "/lain/networkd/leader",
        "/lain/deployd/engine/config",
        "/other",
        "",
    ],
)
def test_classify_ignores_other_keys(key: str) -> None:
    assert keys.classify(key) is None


def test_every_input_kind_is_inside_a_watch_range() -> None:
    samples = one_key_of_each_kind()
    for key in samples:
        assert keys.classify(key) is not None, key
        assert any(
            key.startswith(r.key) if r.prefix else key == r.key for r in keys.WATCH_RANGES
        ), key


def test_vip_suffix_floating_and_port_only() -> None:
    assert keys.parse_vip_suffix("10.0.0.1") == keys.VipKey("10.0.0.1", 0)
    assert keys.parse_vip_suffix("10.0.0.1").floating
    assert keys.parse_vip_suffix("0.0.0.0:8080") == keys.VipKey("0.0.0.0", 8080)
    assert keys.parse_vip_suffix("2001:db8::1") == keys.VipKey("2001:db8::1", 0)
    assert keys.parse_vip_suffix("[2001:db8::1]:53") == keys.VipKey("2001:db8::1", 53)
    for bad in [
        "0.0.0.0",
        "224.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:70000",
        "x",
        "10.0.0.256",
        "",
        "10.0.0.1:",
    ]:
        with pytest.raises(keys.KeyLayoutError):
            keys.parse_vip_suffix(bad)


def test_vip_lock_round_trip() -> None:
    assert keys.vip_lock("10.0.0.1") == "/lain/networkd/vips/10.0.0.1.lock"
    assert keys.parse_vip_lock(keys.vip_lock("10.0.0.1")) == "10.0.0.1"
    assert keys.parse_vip_lock(keys.vip_lock("2001:db8::1")) == "2001:db8::1"
    assert keys.parse_vip_lock("/lain/networkd/vips/10.0.0.1") is None
    assert keys.parse_vip_lock("/lain/networkd/vips/bad.lock") is None


def test_vip_key_builders() -> None:
    assert keys.vip_key("10.0.0.1") == "/lain/config/vips/10.0.0.1"
    assert keys.vip_key("0.0.0.0", 8080) == "/lain/config/vips/0.0.0.0:8080"
    assert keys.vip_key("2001:db8::1", 53) == "/lain/config/vips/[2001:db8::1]:53"
    assert keys.vip_item_key("10.0.0.1", 80) == "10.0.0.1:80"


def test_apps_key_round_trip() -> None:
    key = keys.apps_key("tinydns", "worker", "10.0.0.3", 53)
    assert key == "/lain/networkd/apps/tinydns/worker/10.0.0.3:53"
    assert keys.parse_apps_key(key) == keys.AppsKeyParts("tinydns", "worker", "10.0.0.3", 53)
    assert keys.apps_prefix("tinydns", "worker") == "/lain/networkd/apps/tinydns/worker/"
    assert keys.parse_apps_key("/lain/networkd/apps/tinydns/worker") is None
    assert keys.parse_apps_key("/lain/networkd/apps/a/b/notanip:1") is None
    assert keys.parse_apps_key("/lain/networkd/apps/a/b/10.0.0.1:99999") is None


def test_domain_normalisation() -> None:
    assert keys.normalize_domain("WWW.Example.COM.") == "www.example.com"
    assert keys.normalize_domain("*.LAIN", allow_wildcard=True) == "*.lain"
    assert keys.normalize_domain("_srv.x-y.lain") == "_srv.x-y.lain"
    for bad in ["", ".", "a..b", "-a.lain", "a b", "*.lain", "a/b", "x" * 64 + ".lain", "é.lain"]:
        with pytest.raises(keys.KeyLayoutError):
            keys.normalize_domain(bad)
    for bad in ["*", "*.", "*.*.lain", "a.*.lain"]:
        with pytest.raises(keys.KeyLayoutError):
            keys.normalize_domain(bad, allow_wildcard=True)


def test_split_ip_port() -> None:
    assert keys.split_ip_port("10.0.0.1:9003") == ("10.0.0.1", 9003)
    assert keys.split_ip_port("[::1]:2379") == ("::1", 2379)
    for bad in ["10.0.0.1", ":80", "::1:80", "host:80", "10.0.0.1:x", "10.0.0.1:-1"]:
        with pytest.raises(keys.KeyLayoutError):
            keys.split_ip_port(bad)


def test_pod_group_suffix() -> None:
    assert keys.parse_pod_group_suffix("app/app.web.web") == keys.PodGroupKey("app", "app.web.web")
    for bad in ["app", "app/", "/x", "a/b/c"]:
        with pytest.raises(keys.KeyLayoutError):
            keys.parse_pod_group_suffix(bad)


def test_prefix_range_end() -> None:
    assert keys.prefix_range_end("/lain/config/") == b"/lain/config0"
    assert keys.prefix_range_end("a\xff") == b"a\xc3\xc0"  # UTF-8 bytes: last byte + 1


def test_leader_names() -> None:
    assert keys.leader_name(keys.DEPLOYD_LEADER) == "deployd"
    assert keys.leader_name(keys.SWARM_LEADER) == "swarm"
    assert keys.leader_name(keys.LEADER) is None
