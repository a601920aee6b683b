"""Pure ACL plans (SPEC section 6): rules per family, chain diffs, the INPUT jump and the
policy record, and the contract with the watcher's validation."""

import json
import random
from typing import Any, Dict, List, Optional, Sequence

import pytest

from networkd import keys
from networkd.etcd.state import T_ACL, T_CONFIG_ERRORS, ClusterState
from networkd.net.acl_rules import (
    ACL_CHAIN,
    BASE_RULES,
    BASE_RULES_V6,
    ENTRY_CHAIN,
    INPUT_CHAIN,
    ChainPlan,
    FilterRule,
    InputPlan,
    InputRule,
    desired_acl,
    jump_rule,
    parse_filter_rule,
    plan_chain,
    plan_input,
    policy_before,
    policy_to_restore,
    port_chunks,
    recorded_policy,
)
from tests.support.acl import acl_items as acl


def entry(**kw: str) -> FilterRule:
    return FilterRule(ACL_CHAIN, ENTRY_CHAIN, **kw)


def fields(**kw: Any) -> Dict[str, Any]:
    """What xtables.rule_fields reads from the kernel."""
    base: Dict[str, Any] = {"src": "", "dst": "", "in": "", "out": "", "proto": "",
                            "matches": [], "target": "ACCEPT", "target_params": {}}  # fmt: skip
    base.update(kw)
    return base


def test_base_only_in_both_families():
    plan = desired_acl({})
    assert plan[4] == {ACL_CHAIN: list(BASE_RULES), ENTRY_CHAIN: [FilterRule(ENTRY_CHAIN, "ACCEPT")],
                       INPUT_CHAIN: []}  # fmt: skip
    assert plan[6][ACL_CHAIN] == list(BASE_RULES_V6)
    assert FilterRule(ACL_CHAIN, "ACCEPT", proto="icmpv6") in plan[6][ACL_CHAIN]  # neighbour disc.


def test_each_source_lands_in_its_family_only():
    plan = desired_acl(
        acl(
            ["10.1.0.0/16", "2001:db8::/32", "10.2.3.4", "2001:db8::1-2001:db8::9"],
            {"tcp": ["443", "80"]},
            {"10.3.0.0/24": {"tcp": ["8080"], "udp": ["53"]}, "fd00::5": {"tcp": ["22"]}},
        )
    )
    ports = entry(proto="tcp", dports="80,443")
    assert plan[4][ACL_CHAIN][len(BASE_RULES) :] == [
        entry(src="10.1.0.0/16"),
        entry(src="10.2.3.4/32"),
        ports,
        FilterRule(ACL_CHAIN, INPUT_CHAIN, src="10.3.0.0/24"),
    ]
    assert plan[4][INPUT_CHAIN] == [
        FilterRule(INPUT_CHAIN, "ACCEPT", src="10.3.0.0/24", proto="tcp", dports="8080"),
        FilterRule(INPUT_CHAIN, "ACCEPT", src="10.3.0.0/24", proto="udp", dports="53"),
    ]
    assert plan[6][ACL_CHAIN][len(BASE_RULES_V6) :] == [
        entry(src="2001:db8::/32"),
        entry(src_range="2001:db8::1-2001:db8::9"),
        ports,  # ports open to everyone: both families
        FilterRule(ACL_CHAIN, INPUT_CHAIN, src="fd00::5/128"),
    ]
    assert plan[6][INPUT_CHAIN] == [
        FilterRule(INPUT_CHAIN, "ACCEPT", src="fd00::5/128", proto="tcp", dports="22")
    ]


def test_zero_prefix_is_any_source_as_the_kernel_reads_it_back():
    """A 0.0.0.0/0 entry used to be deleted and re-added every second."""
    plan = desired_acl(acl(["0.0.0.0/0", "::/0"], inp={"0.0.0.0/0": {"tcp": ["80"]}}))
    assert entry() in plan[4][ACL_CHAIN] and entry() in plan[6][ACL_CHAIN]
    assert FilterRule(ACL_CHAIN, INPUT_CHAIN) in plan[4][ACL_CHAIN]
    # the kernel's /0 as rule_fields reads it (mask_to_prefix gives "")
    read_back = [parse_filter_rule(ACL_CHAIN, fields(**r)) for r in (
        {"target": ENTRY_CHAIN}, {"target": INPUT_CHAIN})]  # fmt: skip
    actual: List[Optional[FilterRule]] = list(plan[4][ACL_CHAIN])
    assert read_back == [entry(), FilterRule(ACL_CHAIN, INPUT_CHAIN)]
    assert plan_chain(plan[4][ACL_CHAIN], actual).empty


def test_junk_that_validation_never_passes_is_skipped_not_judged():
    plan = desired_acl(acl(["nope", "10.0.0.1"], {"tcp": ["x", "80"]}, {"garbage": {"tcp": ["1"]}}))
    assert plan[4][ACL_CHAIN][len(BASE_RULES) :] == [
        entry(src="10.0.0.1/32"),
        entry(proto="tcp", dports="80"),
    ]
    assert not hasattr(plan, "errors")


def test_multiport_split_over_15():
    chunks = port_chunks([str(p) for p in range(1000, 1040)])
    assert [len(c.split(",")) for c in chunks] == [15, 15, 10]
    ranged = port_chunks(["1:10"] + [str(p) for p in range(20, 34)])
    assert sum(2 if ":" in p else 1 for p in ranged[0].split(",")) <= 15


# --- the contract with networkd/etcd/validate.py -----------------------------------------

GOOD_VALUES = [
    (keys.WHITELIST_IPS, ["10.0.0.7/8", " 10.0.0.1 ", "0.0.0.0/0", "::/0", "2001:DB8::1",
                          "::ffff:10.0.0.1", "10.0.0.1-10.0.0.1", "fe80::1-fe80::2"]),
    (keys.whitelist_ex_ports_key("UDP"), ["53", 80, "1000:1010", "65535"]),
    (keys.whitelist_in_ports_key("2001:db8::/48"), {"ports": {"TCP": ["443"], "udp": [53]}}),
    (keys.whitelist_in_ports_key("10.9.0.1-10.9.0.5"), {"ports": {"tcp": ["8080:8090"]}}),
]  # fmt: skip
BAD_VALUES = [
    (keys.WHITELIST_IPS, ["fe80::%eth0/64"]),  # a zone means nothing to ip6tables
    (keys.WHITELIST_IPS, ["fe80::1%eth0"]),
    (keys.WHITELIST_IPS, ["10.0.0.1-fe80::1"]),
    (keys.whitelist_ex_ports_key("icmp"), ["1"]),
    (keys.whitelist_ex_ports_key("tcp"), ["80-90"]),
    (keys.whitelist_in_ports_key("fe80::%eth0/64"), {"ports": {"tcp": ["1"]}}),
]


def test_rejected_acl_values_are_config_errors_under_their_etcd_key():
    """ACL validation lives in the watcher: no made-up keys like /lain/config/ex_ports/tcp."""
    for key, value in BAD_VALUES:
        state = ClusterState("n1")
        state.apply([(key, json.dumps(value).encode())])
        assert list(state.items[T_CONFIG_ERRORS]) == [key], value
        assert state.items[T_CONFIG_ERRORS][key].key == key
        assert state.items[T_ACL] == {}


def test_every_entry_the_watcher_accepts_becomes_a_rule():
    """What validation accepts, the plan builds: nothing is dropped quietly in the applier."""
    state = ClusterState("n1")
    state.apply([(key, json.dumps(value).encode()) for key, value in GOOD_VALUES])
    assert state.items[T_CONFIG_ERRORS] == {}
    items = state.items[T_ACL]
    plan = desired_acl(items)
    sources = [rule for family in (4, 6) for rule in plan[family][ACL_CHAIN]
               if rule.target == ENTRY_CHAIN and not rule.proto]  # fmt: skip
    assert len(sources) == len(items["whitelist_ips"].items)
    for family in (4, 6):
        assert entry(proto="udp", dports="53,80,1000:1010,65535") in plan[family][ACL_CHAIN]
    assert plan[6][INPUT_CHAIN] == [
        FilterRule(INPUT_CHAIN, "ACCEPT", src="2001:db8::/48", proto="tcp", dports="443"),
        FilterRule(INPUT_CHAIN, "ACCEPT", src="2001:db8::/48", proto="udp", dports="53"),
    ]
    assert plan[4][INPUT_CHAIN] == [
        FilterRule(INPUT_CHAIN, "ACCEPT", src_range="10.9.0.1-10.9.0.5", proto="tcp",
                   dports="8080:8090"),
    ]  # fmt: skip


# --- chain plans ---------------------------------------------------------------------------


def run_plan(plan: ChainPlan, chain: Sequence[Optional[FilterRule]]) -> List[Optional[FilterRule]]:
    """What libiptc does with a plan: deletes by content (first match), inserts by position."""
    out = [] if plan.flush else list(chain)
    for rule in plan.delete:
        out.remove(rule)
    for position, rule in plan.insert:
        out.insert(position, rule)
    return out


A, B, C, D = (entry(src=f"10.0.0.{i}/32") for i in range(1, 5))


@pytest.mark.parametrize(
    "actual, flush, deleted, inserted",
    [
        ([A, B, C], False, [], []),  # unchanged: nothing touched
        ([A, C], False, [], [(1, B)]),  # a missing rule goes to its place
        ([A, D, B, C], False, [D], []),
        ([], False, [], [(0, A), (1, B), (2, C)]),
        ([A, B, B, C], True, [], None),  # duplicate: rebuilt in the same commit
        ([C, A, B], True, [], None),  # out of order (INVALID DROP must precede accepts)
        ([A, None, B, C], True, [], None),  # a rule of a shape we do not write
    ],
)
def test_plan_chain(actual, flush, deleted, inserted):
    desired = [A, B, C]
    plan = plan_chain(desired, actual)
    assert plan.flush == flush and list(plan.delete) == deleted
    if inserted is not None:
        assert list(plan.insert) == inserted
    assert run_plan(plan, actual) == desired


def test_plan_chain_reaches_the_desired_chain_from_anything():
    rules = [entry(src=f"10.0.1.{i}/32") for i in range(8)]
    rng = random.Random(7)
    for _ in range(300):
        desired = rng.sample(rules, rng.randint(0, 6))
        actual: List[Optional[FilterRule]] = [rng.choice(rules) for _ in range(rng.randint(0, 7))]
        if rng.random() < 0.1:
            actual.insert(0, None)
        assert run_plan(plan_chain(desired, actual), actual) == desired


# --- the INPUT jump and the policy record ------------------------------------------------

JUMP = jump_rule("ACCEPT")
GO_ENTRY = FilterRule("INPUT", ENTRY_CHAIN, src="10.0.0.1/32")  # the Go daemon's, unmarked
GO_INPUT = FilterRule("INPUT", INPUT_CHAIN, src_range="10.0.0.1-10.0.0.5")


def found(index: int, rule: Optional[FilterRule], target: str = ACL_CHAIN) -> InputRule:
    return InputRule(index, rule.target if rule else target, rule)


@pytest.mark.parametrize(
    "ours, plan",
    [
        ([], InputPlan(replace=True, position=0)),  # none yet: the top, ahead of a REJECT
        ([found(3, JUMP)], InputPlan()),  # ours where it is: adopted, never moved
        ([found(2, jump_rule("DROP"))], InputPlan(replace=True, position=2)),  # other record
        ([found(0, JUMP), found(4, JUMP)], InputPlan(replace=True, position=0)),  # duplicate
        # the Go daemon's jumps after its base rules: no place for ours, the top
        ([found(6, GO_ENTRY), found(7, GO_INPUT)], InputPlan(replace=True, position=0)),
        ([found(1, GO_ENTRY), found(5, JUMP)], InputPlan(replace=True, position=4)),
        ([found(2, None)], InputPlan(replace=True, position=2)),  # unreadable jump to lain-ACL
        ([found(2, None, ENTRY_CHAIN)], InputPlan(replace=True, position=0)),
    ],
)
def test_plan_input(ours, plan):
    assert plan_input(JUMP, ours) == plan


def test_jump_comment_is_mark_and_record():
    assert JUMP.describe() == (
        'INPUT -m comment --comment "networkd acl, input policy before: ACCEPT" -j lain-ACL'
    )
    read = parse_filter_rule(
        "INPUT",
        fields(matches=[{"name": "comment", "comment": JUMP.comment}], target=ACL_CHAIN),
    )
    assert read == JUMP
    assert recorded_policy([read]) == "ACCEPT"
    assert recorded_policy([None, GO_ENTRY, jump_rule("DROP"), JUMP]) == "DROP"
    assert (
        recorded_policy([GO_ENTRY, FilterRule("INPUT", ACL_CHAIN, comment="networkd acl")]) is None
    )


@pytest.mark.parametrize(
    "current, leftovers, before",
    [
        ("ACCEPT", False, "ACCEPT"),
        ("DROP", False, "DROP"),  # the operator's DROP: the stop leaves it
        ("DROP", True, "ACCEPT"),  # Go daemon's chains, no record: its DROP, SPEC restores ACCEPT
    ],
)
def test_policy_before(current, leftovers, before):
    assert policy_before(current, leftovers) == before


@pytest.mark.parametrize(
    "before, current, restore",
    [
        ("ACCEPT", "DROP", "ACCEPT"),  # we turned it DROP: back
        ("DROP", "DROP", None),  # it was DROP before us: left
        ("ACCEPT", "ACCEPT", None),  # someone restored it already
        (None, "DROP", None),  # we never touched it
    ],
)
def test_policy_to_restore(before, current, restore):
    assert policy_to_restore(before, current) == restore


def test_parse_filter_rule_shapes():
    assert parse_filter_rule(ACL_CHAIN, fields(**{"in": "lo"})) == BASE_RULES[0]
    invalid = fields(matches=[{"name": "state", "state": "INVALID"}], target="DROP")
    assert parse_filter_rule(ACL_CHAIN, invalid) == BASE_RULES[3]
    ssh = fields(proto="tcp", matches=[{"name": "tcp", "dport": "22"}])
    assert parse_filter_rule(ACL_CHAIN, ssh) == BASE_RULES[5]
    v6_range = fields(matches=[{"name": "iprange", "src-range": "2001:DB8:0::1-2001:db8::9"}])
    assert parse_filter_rule(ACL_CHAIN, v6_range) == FilterRule(
        ACL_CHAIN, "ACCEPT", src_range="2001:db8::1-2001:db8::9"
    )
    assert parse_filter_rule(ACL_CHAIN, fields(matches=[{"name": "recent", "x": "1"}])) is None
    assert parse_filter_rule(ACL_CHAIN, fields(dst="10.0.0.1/32")) is None
