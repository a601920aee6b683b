"""Pure ACL plans (SPEC section 6): rule shapes, multiport splitting, diff without duplicates."""

from typing import Any, Dict

import pytest

from networkd.bus.messages import AclList
from networkd.net.acl_rules import (
    BASE_RULES,
    ENTRY_CHAIN,
    INPUT_CHAIN,
    FilterRule,
    desired_acl,
    parse_filter_rule,
    parse_source,
    plan_rules,
    port_chunks,
)


def test_base_only():
    acl = desired_acl({})
    assert acl.input == list(BASE_RULES)
    assert acl.entry == [FilterRule(ENTRY_CHAIN, "ACCEPT")]
    assert acl.lain_input == [] and acl.errors == []


def test_whitelists():
    acl = desired_acl(
        {
            "whitelist_ips": AclList(
                "whitelist_ips", items=["10.1.0.0/16", "10.2.3.4", "10.9.0.1-10.9.0.5"]
            ),
            "ex_ports/tcp": AclList("ex_ports/tcp", items=["443", "80"]),
            "in_ports/10.3.0.0/24": AclList(
                "in_ports/10.3.0.0/24", ports={"tcp": ["8080"], "udp": ["53"]}
            ),
        }
    )
    extra = acl.input[len(BASE_RULES) :]
    assert extra == [
        FilterRule("INPUT", ENTRY_CHAIN, src="10.1.0.0/16"),
        FilterRule("INPUT", ENTRY_CHAIN, src="10.2.3.4/32"),
        FilterRule("INPUT", ENTRY_CHAIN, src_range="10.9.0.1-10.9.0.5"),
        FilterRule("INPUT", ENTRY_CHAIN, proto="tcp", dports="80,443"),
        FilterRule("INPUT", INPUT_CHAIN, src="10.3.0.0/24"),
    ]
    assert acl.lain_input == [
        FilterRule(INPUT_CHAIN, "ACCEPT", src="10.3.0.0/24", proto="tcp", dports="8080"),
        FilterRule(INPUT_CHAIN, "ACCEPT", src="10.3.0.0/24", proto="udp", dports="53"),
    ]


def test_bad_entries_rejected_alone():
    acl = desired_acl(
        {
            "whitelist_ips": AclList("whitelist_ips", items=["nope", "10.2.3.4"]),
            "ex_ports/tcp": AclList("ex_ports/tcp", items=["99999", "22a", "80"]),
            "ex_ports/icmp": AclList("ex_ports/icmp", items=["1"]),
            "in_ports/garbage": AclList("in_ports/garbage", ports={"tcp": ["1"]}),
        }
    )
    assert FilterRule("INPUT", ENTRY_CHAIN, src="10.2.3.4/32") in acl.input
    assert FilterRule("INPUT", ENTRY_CHAIN, proto="tcp", dports="80") in acl.input
    keys = sorted(k for k, _ in acl.errors)
    assert keys == [
        "ex_ports/icmp",
        "ex_ports/tcp",
        "ex_ports/tcp",
        "in_ports/garbage",
        "whitelist_ips",
    ]


def test_multiport_split_over_15():
    chunks = port_chunks([str(p) for p in range(1000, 1040)])
    assert [len(c.split(",")) for c in chunks] == [15, 15, 10]
    ranged = port_chunks(["1:10"] + [str(p) for p in range(20, 34)])
    assert sum(2 if ":" in p else 1 for p in ranged[0].split(",")) <= 15


def test_parse_source():
    assert parse_source("10.0.0.1") == ("10.0.0.1/32", "")
    assert parse_source("10.0.0.7/8") == ("10.0.0.0/8", "")
    assert parse_source("10.0.0.1-10.0.0.9") == ("", "10.0.0.1-10.0.0.9")
    with pytest.raises(ValueError):
        parse_source("10.0.0.9-10.0.0.1")


def test_plan_rules_replace_and_dedupe():
    a = FilterRule("INPUT", ENTRY_CHAIN, src="10.0.0.1/32")
    b = FilterRule("INPUT", ENTRY_CHAIN, src="10.0.0.2/32")
    plan = plan_rules([*BASE_RULES, b], [*BASE_RULES, BASE_RULES[0], a])
    assert plan.delete == (BASE_RULES[0], a)
    assert plan.add == (b,)
    assert plan_rules(list(BASE_RULES), list(BASE_RULES)).empty


def test_parse_filter_rule_shapes():
    def f(**kw):
        base: Dict[str, Any] = {
            "src": "",
            "dst": "",
            "in": "",
            "out": "",
            "proto": "",
            "matches": [],
            "target": "ACCEPT",
        }
        base["target_params"] = {}
        base.update(kw)
        return base

    assert parse_filter_rule("INPUT", f(**{"in": "lo"})) == BASE_RULES[0]
    assert (
        parse_filter_rule(
            "INPUT", f(matches=[{"name": "state", "state": "INVALID"}], target="DROP")
        )
        == BASE_RULES[3]
    )
    assert (
        parse_filter_rule("INPUT", f(proto="tcp", matches=[{"name": "tcp", "dport": "22"}]))
        == BASE_RULES[5]
    )
    assert parse_filter_rule("INPUT", f(matches=[{"name": "recent", "x": "1"}])) is None
