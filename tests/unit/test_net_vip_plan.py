"""What the applier wants on the host and what it reports, and what the lease allows
(pure logic: no root, no netlink)."""

from networkd.bus.messages import AppliedVip, DesiredVip, LeaseHealth, PortSpec, VipConfig
from networkd.net import fencing
from networkd.net.nat_rules import dnat_rules
from networkd.net.vip_plan import applied_items, floating_addresses, plan_host, ready_to_bind


def desired(ip="10.0.0.1", cip="172.20.0.5", bind=True, ports=((80, "tcp", 8080),)):
    return DesiredVip(
        ip=ip,
        app="web",
        proc="worker",
        container_ip=cip,
        ports=[PortSpec(src, proto, dest) for src, proto, dest in ports],
        bind=bind,
    )


def test_plan_host_addresses_rules_and_held_back():
    want = plan_host(
        {
            "10.0.0.1": desired(),
            "10.0.0.2": desired("10.0.0.2"),
            "0.0.0.0:9000": desired("0.0.0.0", bind=False, ports=((9000, "tcp", 9000),)),
        },
        node_address="10.0.0.11",
        held_back={"10.0.0.2"},
    )
    assert want.addresses == {"10.0.0.1"}  # held back: neither address nor rules
    assert {r.dst for r in want.rules} == {"10.0.0.1", "10.0.0.11"}
    assert len(want.rules) == 4  # PREROUTING + OUTPUT per port
    assert want.resolved["0.0.0.0:9000"] == "10.0.0.11"
    assert want.problems == []


def test_plan_host_names_what_it_cannot_use():
    want = plan_host(
        {
            "0.0.0.0:9000": desired("0.0.0.0", bind=False),
            "10.0.0.3": desired("10.0.0.3", cip="fd00::5"),
            "10.0.0.4": desired("10.0.0.4", ports=((80, "sctp", 80),)),
        },
        node_address="",
    )
    reasons = dict(want.problems)
    assert "node address" in reasons["0.0.0.0:9000"]
    assert "different families" in reasons["10.0.0.3"]
    assert "proto" in reasons["10.0.0.4"]
    assert want.addresses == {"10.0.0.3", "10.0.0.4"}  # an address without usable rules


def test_two_mappings_for_one_port_first_wins():
    want = plan_host(
        {"10.0.0.1": desired(), "10.0.0.1:80": desired(bind=False, cip="172.20.0.9")}, ""
    )
    assert [r.to_ip for r in want.rules if r.chain == "lain-PREROUTING"] == ["172.20.0.5"]
    assert any("two mappings" in reason for _, reason in want.problems)


def test_ready_to_bind_only_once_every_rule_is_in():
    rules = dnat_rules("10.0.0.1", "tcp", 80, "172.20.0.5", 8080, "web.worker")
    assert ready_to_bind({"10.0.0.1"}, rules, rules) == {"10.0.0.1"}
    assert ready_to_bind({"10.0.0.1"}, rules, rules[:1]) == set()
    assert ready_to_bind({"10.0.0.1"}, rules, None) == set()  # unknown: wait
    assert ready_to_bind({"10.0.0.9"}, rules, None) == {"10.0.0.9"}  # no rules to wait for


def test_applied_items_track_keys_until_gone_from_the_host():
    d = {"10.0.0.1": desired()}
    want = plan_host(d, "")
    items = applied_items(d, want.resolved, {"10.0.0.1"}, want.rules, {}, {"10.0.0.1": True})
    assert items == {"10.0.0.1": AppliedVip(ip="10.0.0.1", bound=True, rules=2)}
    # released: the address went first, the rules are still there -> still reported
    later = applied_items({}, {}, set(), want.rules, items, {"10.0.0.1": True})
    assert later == {"10.0.0.1": AppliedVip(ip="10.0.0.1", bound=False, rules=2)}
    # rules unknown this pass: the count is kept from the last publication
    assert applied_items({}, {}, set(), None, later, {"10.0.0.1": True}) == later
    # everything gone: the key disappears
    assert applied_items({}, {}, set(), [], later, {"10.0.0.1": True}) == {}


def test_floating_addresses_skip_port_only_keys_of_both_families():
    def cfg(ip, port=0):
        return VipConfig(ip=ip, app="a", proc="p", ports=[], port=port)

    vips = {
        "10.0.0.1": cfg("10.0.0.1"),
        "10.0.0.2:80": cfg("10.0.0.2", 80),
        "fd00::1": cfg("fd00::1"),
        "[fd00::2]:80": cfg("fd00::2", 80),
        "fd00:0:0:0::3": cfg("fd00:0:0:0::3"),
    }
    assert floating_addresses(vips) == {"10.0.0.1", "fd00::1", "fd00::3"}


# fencing: (what the elector said, is the deadline past) -> lease state
FENCING_TABLE = [
    (None, False, fencing.Lease.UNKNOWN),
    (True, False, fencing.Lease.ALIVE),
    (True, True, fencing.Lease.DEAD),  # an old "alive" past its deadline
    (False, False, fencing.Lease.DEAD),
]


def test_lease_state_believes_alive_only_until_the_deadline():
    now = 1000.0
    for alive, past, expected in FENCING_TABLE:
        health = None
        if alive is not None:
            health = LeaseHealth(
                lease_id=7, alive=alive, ttl_s=2.0, valid_until=now - 0.1 if past else now + 1
            )
        assert fencing.lease_state(health, now) is expected, (alive, past)


# (policy, lease) -> (announce, yield to a claim, fenced, probe)
ACTIONS_TABLE = [
    ("hold", fencing.Lease.ALIVE, (True, False, False, False)),
    ("hold", fencing.Lease.DEAD, (False, True, False, True)),
    ("hold", fencing.Lease.UNKNOWN, (False, True, False, True)),
    ("strict", fencing.Lease.ALIVE, (True, False, False, False)),
    ("strict", fencing.Lease.DEAD, (False, True, True, False)),
    ("strict", fencing.Lease.UNKNOWN, (False, True, False, False)),
]


def test_what_each_lease_state_allows():
    for policy, state, expected in ACTIONS_TABLE:
        got = (
            fencing.may_announce(state),
            fencing.yields_to_claims(state),
            fencing.fenced(policy, state),
            fencing.should_probe(policy, state),
        )
        assert got == expected, (policy, state)
