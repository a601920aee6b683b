"""Pure NAT plans: one rule per VIP port, exact matching, duplicates and stale rules removed."""

import pytest

from networkd.net.nat_rules import (
    OUTPUT_CHAIN,
    PREROUTING_CHAIN,
    dnat_rules,
    parse_nat_rule,
    plan_chain,
    unique_by_port,
)
from networkd.net.xtables import mask_to_prefix


def pre(ip, port=80, cip="172.17.0.2", dest=8080, proto="tcp"):
    return dnat_rules(ip, proto, port, cip, dest, "app.proc")[0]


def test_dnat_rules_both_chains():
    a, b = dnat_rules("10.0.0.1", "TCP", 80, "172.17.0.2", 8080, "app.proc")
    assert a.chain == PREROUTING_CHAIN and b.chain == OUTPUT_CHAIN
    assert b.out_iface == "lo" and a.out_iface == ""
    assert a.to_destination == "172.17.0.2:8080" and a.proto == "tcp"


@pytest.mark.parametrize(
    "args,message",
    [
        (("10.0.0.1", "sctp", 80, "172.17.0.2", 80), "proto"),
        (("10.0.0.1", "tcp", 0, "172.17.0.2", 80), "src"),
        (("10.0.0.1", "tcp", 80, "172.17.0.2", 70000), "dest"),
        (("10.0.0.1", "tcp", 80, "fd00::2", 80), "famil"),
        (("10.0.0.x", "tcp", 80, "172.17.0.2", 80), r"10\.0\.0\.x"),
    ],
)
def test_dnat_rules_rejects(args, message):
    ip, proto, src, cip, dest = args
    with pytest.raises(ValueError, match=message):
        dnat_rules(ip, proto, src, cip, dest, "a.p")


def test_plan_keeps_existing_adds_missing():
    have = [pre("10.0.0.1")]
    plan = plan_chain([pre("10.0.0.1"), pre("10.0.0.2")], have)
    assert plan.delete == () and plan.add == (pre("10.0.0.2"),)


def test_plan_dest_change_replaces():
    plan = plan_chain([pre("10.0.0.1", dest=9090)], [pre("10.0.0.1", dest=8080)])
    assert plan.delete == (pre("10.0.0.1", dest=8080),)
    assert plan.add == (pre("10.0.0.1", dest=9090),)


def test_plan_duplicates_collapse():
    rule = pre("10.0.0.1")
    plan = plan_chain([rule], [rule, rule, rule])
    assert plan.delete == (rule, rule) and plan.add == ()


def test_plan_other_vip_untouched():
    plan = plan_chain(
        [pre("10.0.0.1", dest=9000), pre("110.0.0.1")], [pre("110.0.0.1"), pre("10.0.0.1")]
    )
    assert pre("110.0.0.1") not in plan.delete
    assert plan.delete == (pre("10.0.0.1"),)


def test_plan_foreign_rule_rebuilds():
    plan = plan_chain([pre("10.0.0.1")], [pre("10.0.0.1"), None])
    assert plan.rebuild and plan.add == (pre("10.0.0.1"),)


def test_unique_by_port_first_wins():
    kept, conflicts = unique_by_port(
        [pre("10.0.0.1", dest=1), pre("10.0.0.1", dest=2), pre("10.0.0.1", dest=1)]
    )
    assert kept == [pre("10.0.0.1", dest=1)] and conflicts == [pre("10.0.0.1", dest=2)]


def fields(**over):
    base = {
        "src": "",
        "dst": "10.0.0.1/32",
        "in": "",
        "out": "",
        "proto": "tcp",
        "matches": [{"name": "tcp", "dport": "80"}, {"name": "comment", "comment": "app.proc"}],
        "target": "DNAT",
        "target_params": {"to-destination": "172.17.0.2:8080"},
    }
    base.update(over)
    return base


def test_parse_roundtrip():
    assert parse_nat_rule(PREROUTING_CHAIN, fields()) == pre("10.0.0.1")
    assert (
        parse_nat_rule(OUTPUT_CHAIN, fields(out="lo"))
        == dnat_rules("10.0.0.1", "tcp", 80, "172.17.0.2", 8080, "app.proc")[1]
    )


@pytest.mark.parametrize(
    "over",
    [
        {"dst": "10.0.0.0/24"},
        {"target": "ACCEPT"},
        {"src": "1.2.3.4/32"},
        {"matches": [{"name": "tcp", "dport": "80:90"}]},
        {"matches": [{"name": "tcp", "dport": "80"}, {"name": "mark", "mark": "1"}]},
        {"target_params": {"to-destination": "172.17.0.2"}},
    ],
)
def test_parse_foreign(over):
    assert parse_nat_rule(PREROUTING_CHAIN, fields(**over)) is None


def test_mask_to_prefix():
    assert mask_to_prefix("10.0.0.1/255.255.255.255") == "10.0.0.1/32"
    assert mask_to_prefix("110.0.0.1/255.255.255.255") == "110.0.0.1/32"
    assert mask_to_prefix("0.0.0.0/0.0.0.0") == ""
    assert mask_to_prefix("10.1.0.0/255.255.0.0") == "10.1.0.0/16"
