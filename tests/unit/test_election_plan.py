"""Pure VIP logic: eligibility, fair spreading, the per-step plan."""

import math
import random
from typing import Any, Dict

import pytest

from networkd.bus.messages import LocalContainer, PortSpec, VipConfig
from networkd.election import spread
from networkd.election.eligibility import (
    ELIGIBLE,
    EXCLUDED,
    INELIGIBLE,
    OWNER,
    STANDBY,
    local_eligibility,
)
from networkd.election.plan import Holder, PlanInput, plan_vips


def vip(ip, app="web", proc="worker", excluded=()):
    return VipConfig(
        ip=ip, app=app, proc=proc, ports=[PortSpec(80, "tcp", 8080)], excluded_nodes=list(excluded)
    )


def container(app="web", proc="worker", cid="abc123", cip="172.20.0.5", node="n1"):
    return LocalContainer(app, proc, 1, cid, cip, 8080, node, "10.0.0.11")


CONTAINERS = {"web/worker": container()}


def test_eligibility_states():
    assert local_eligibility(vip("10.0.0.1"), "n1", CONTAINERS) == (
        ELIGIBLE,
        CONTAINERS["web/worker"],
    )
    assert local_eligibility(vip("10.0.0.1", excluded=["n1"]), "n1", CONTAINERS) == (EXCLUDED, None)
    assert local_eligibility(vip("10.0.0.1", app="other"), "n1", CONTAINERS) == (INELIGIBLE, None)
    # Docker says not running -> ineligible; unknown (None) does not block.
    assert local_eligibility(vip("10.0.0.1"), "n1", CONTAINERS, lambda cid: False)[0] == INELIGIBLE
    assert local_eligibility(vip("10.0.0.1"), "n1", CONTAINERS, lambda cid: None)[0] == ELIGIBLE
    assert local_eligibility(vip("10.0.0.1"), "n1", CONTAINERS, lambda cid: True)[0] == ELIGIBLE


def test_fair_share_and_rendezvous():
    assert spread.fair_share(10, 3) == 4
    assert spread.fair_share(3, 3) == 1
    assert spread.fair_share(0, 3) == 0
    assert spread.fair_share(5, 0) == 5
    nodes = ["n1", "n2", "n3"]
    ranks = sorted(spread.rendezvous_rank("10.0.0.1", n, nodes) for n in nodes)
    assert ranks == [0, 1, 2]
    # Stable: the same inputs give the same order on every node.
    assert spread.rendezvous_order("10.0.0.1", nodes) == spread.rendezvous_order(
        "10.0.0.1", reversed(nodes)
    )
    # Over share: long fallback delay; under share: small.
    assert spread.compete_delay(held=4, share=4, rank=0, over_share_delay=4.0) >= 4.0
    assert spread.compete_delay(held=0, share=4, rank=0, over_share_delay=4.0) == 0.0
    assert spread.compete_delay(held=1, share=4, rank=2, over_share_delay=4.0) < 0.5


# (held, least held by an eligible node, rank) -> delay in steps of 50 ms (share 30)
DELAY_TABLE = [
    (0, 0, 0, 0),
    (0, 0, 2, 2),
    (25, 25, 0, 0),  # every node holds 25: the best ranked takes over at once
    (25, 25, 1, 1),
    (26, 25, 0, 1),  # one more than the least loaded: after it
    (25, 0, 0, 25),  # far above an idle node: the idle node goes first
]


def test_compete_delay_counts_from_the_least_loaded_node():
    for held, least, rank, steps in DELAY_TABLE:
        delay = spread.compete_delay(held, 30, rank, over_share_delay=4.0, least=least)
        assert delay == pytest.approx(steps * spread.STEP_S), (held, least, rank)


def test_dead_owner_vips_go_at_once_on_a_proc_with_many_vips_per_node():
    """4 webrouter nodes with 25 VIPs each; n4 dies: its VIPs are free. The best ranked of
    the three others competes for each without the 25 x 50 ms the held count used to add."""
    nodes = ["n1", "n2", "n3", "n4"]
    ips = [f"10.2.{i // 250}.{i % 250}" for i in range(100)]
    configs = {ip: vip(ip) for ip in ips}
    locks = {ip: Holder(nodes[i % 4], i % 4 + 1) for i, ip in enumerate(ips)}
    freed = [ip for ip, h in locks.items() if h.hostname == "n4"]
    for ip in freed:
        del locks[ip]
    best: Dict[str, float] = {}
    for i, me in enumerate(nodes[:3]):
        plan = plan_vips(
            PlanInput(
                hostname=me,
                lease_id=i + 1,
                alive=True,
                fencing="hold",
                configs=configs,
                local={ip: (ELIGIBLE, container(node=me)) for ip in ips},
                locks=locks,
                live_nodes=set(nodes[:3]),
                proc_nodes={"web/worker": nodes[:3]},
            )
        )
        for ip in freed:
            best[ip] = min(best.get(ip, 99.0), plan.compete[ip])
    assert max(best.values()) == 0.0


def test_giveaway_only_to_an_underloaded_eligible_node():
    held = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    eligible = {ip: ["n2"] for ip in held}
    assert spread.pick_giveaway(held, "n1", 2, {"n2": 1}, eligible) in held
    assert spread.pick_giveaway(held, "n1", 2, {"n2": 2}, eligible) is None
    assert spread.pick_giveaway(held, "n1", 3, {"n2": 0}, eligible) is None
    assert spread.pick_giveaway(held, "n1", 2, {"n2": 0}, {ip: [] for ip in held}) is None
    assert spread.pick_giveaway(held, "n1", 2, {"n2": 0}, eligible, blocked=held) is None


def base_input(**kw: Any) -> PlanInput:
    values: Dict[str, Any] = dict(
        hostname="n1",
        lease_id=7,
        alive=True,
        fencing="hold",
        configs={"10.0.0.1": vip("10.0.0.1")},
        local={"10.0.0.1": (ELIGIBLE, container())},
        locks={},
        live_nodes={"n1", "n2"},
        proc_nodes={"web/worker": ["n1", "n2"]},
    )
    values.update(kw)
    return PlanInput(**values)


def test_plan_free_lock_competes_and_owned_lock_is_kept():
    plan = plan_vips(base_input())
    assert "10.0.0.1" in plan.compete and not plan.keep
    assert plan.status["10.0.0.1"] == (STANDBY, "")
    plan = plan_vips(base_input(locks={"10.0.0.1": Holder("n1", 7)}))
    assert list(plan.keep) == ["10.0.0.1"] and not plan.compete and not plan.release
    assert plan.status["10.0.0.1"] == (OWNER, "n1")


def test_plan_held_by_other_is_standby_and_dropped_from_desired():
    plan = plan_vips(base_input(locks={"10.0.0.1": Holder("n2", 9)}, desired_now={"10.0.0.1"}))
    assert plan.status["10.0.0.1"] == (STANDBY, "n2")
    assert not plan.keep and plan.release == {"10.0.0.1": 0}


def test_plan_ineligible_or_excluded_owner_releases_its_lock():
    locks = {"10.0.0.1": Holder("n1", 7)}
    plan = plan_vips(base_input(locks=locks, local={"10.0.0.1": (INELIGIBLE, None)}))
    assert plan.release == {"10.0.0.1": 7} and not plan.keep
    assert plan.status["10.0.0.1"] == (INELIGIBLE, "n1")
    plan = plan_vips(base_input(locks=locks, local={"10.0.0.1": (EXCLUDED, None)}))
    assert plan.release == {"10.0.0.1": 7}
    assert plan.status["10.0.0.1"][0] == EXCLUDED


def test_plan_config_deleted_releases_lock():
    plan = plan_vips(base_input(configs={}, local={}, locks={"10.0.0.1": Holder("n1", 7)}))
    assert plan.release == {"10.0.0.1": 7}


def test_plan_rebinds_own_lock_under_previous_lease_without_dropping_it():
    plan = plan_vips(base_input(locks={"10.0.0.1": Holder("n1", 3)}))
    assert plan.rebind == {"10.0.0.1": 3}
    assert "10.0.0.1" in plan.keep and plan.status["10.0.0.1"] == (OWNER, "n1")


def test_plan_hold_keeps_vip_while_lock_absent_strict_does_not():
    held = base_input(desired_now={"10.0.0.1"}, alive=False)
    plan = plan_vips(held)
    assert "10.0.0.1" in plan.keep and not plan.compete  # no lease: cannot contend now
    plan = plan_vips(base_input(desired_now={"10.0.0.1"}))
    assert "10.0.0.1" in plan.keep and plan.compete == {"10.0.0.1": 0.0}  # re-contend at once
    strict = base_input(desired_now={"10.0.0.1"}, fencing="strict")
    plan = plan_vips(strict)
    assert "10.0.0.1" not in plan.keep and plan.release == {"10.0.0.1": 0}
    # The applier yielded to another node's announcement: no longer held.
    plan = plan_vips(base_input(desired_now={"10.0.0.1"}, yielded={"10.0.0.1"}))
    assert "10.0.0.1" not in plan.keep


def test_plan_no_contention_without_live_lease():
    plan = plan_vips(base_input(alive=False))
    assert not plan.compete


def test_plan_releasing_vip_is_neither_kept_nor_contended():
    plan = plan_vips(base_input(releasing={"10.0.0.1"}, locks={"10.0.0.1": Holder("n1", 7)}))
    assert not plan.keep and not plan.compete and not plan.release


def test_plan_over_share_node_waits_and_gives_one_away():
    ips = [f"10.0.1.{i}" for i in range(1, 5)]
    configs = {ip: vip(ip) for ip in ips}
    local = {ip: (ELIGIBLE, container()) for ip in ips}
    locks = {ip: Holder("n1", 7) for ip in ips[:3]}
    plan = plan_vips(base_input(configs=configs, local=local, locks=locks))
    # share = ceil(4 / 2) = 2: n1 holds 3, n2 holds 0 -> give exactly one away.
    assert len(plan.giveaway) == 1 and set(plan.release) == plan.giveaway
    assert len(plan.keep) == 2
    assert plan.compete[ips[3]] >= 4.0  # over share: only the fallback delay
    # When n2 is not live, nobody can take it: keep all three.
    plan = plan_vips(base_input(configs=configs, local=local, locks=locks, live_nodes={"n1"}))
    assert not plan.giveaway and len(plan.keep) == 3


def test_spreading_simulation_settles_within_ceil():
    """Simulate nodes taking free locks in delay order with giveaways: settles <= ceil."""
    rng = random.Random(4)
    for vips_n, nodes_n in [(10, 3), (7, 2), (3, 3), (5, 4), (1, 3)]:
        nodes = [f"n{i}" for i in range(nodes_n)]
        ips = [f"10.1.0.{i}" for i in range(vips_n)]
        configs = {ip: vip(ip) for ip in ips}
        local = {ip: (ELIGIBLE, container()) for ip in ips}
        locks: Dict[str, Holder] = {}
        leases = {n: i + 1 for i, n in enumerate(nodes)}
        for _round in range(200):
            moves = []
            for n in nodes:
                plan = plan_vips(
                    PlanInput(
                        hostname=n,
                        lease_id=leases[n],
                        alive=True,
                        fencing="hold",
                        configs=configs,
                        local=local,
                        locks=dict(locks),
                        live_nodes=set(nodes),
                        proc_nodes={"web/worker": nodes},
                    )
                )
                for ip in plan.release:
                    if locks.get(ip, Holder("", 0)).hostname == n:
                        moves.append(("release", ip, n, 0.0))
                for ip, delay in plan.compete.items():
                    moves.append(("claim", ip, n, delay + rng.random() * 0.01))
            if not moves:
                break
            moves.sort(key=lambda m: (m[0] != "release", m[3]))
            kind, ip, n, _ = moves[0]
            if kind == "release":
                del locks[ip]
            elif ip not in locks:
                locks[ip] = Holder(n, leases[n])
        counts = {n: sum(1 for h in locks.values() if h.hostname == n) for n in nodes}
        assert len(locks) == vips_n, (vips_n, nodes_n, counts)
        assert max(counts.values()) <= math.ceil(vips_n / nodes_n), (vips_n, nodes_n, counts)


# settling after an etcd disturbance: (last holder, in our desired set) -> what we do
SETTLING_TABLE = [
    ("n1", True, "keep, compete at once"),
    ("n1", False, "compete at once"),
    ("n2", False, "leave it to n2"),
    ("", False, "normal spreading delay"),
]


def test_settling_gives_free_locks_back_to_their_last_holder():
    for last, desired_now, expected in SETTLING_TABLE:
        plan = plan_vips(
            base_input(
                settling=True,
                last_holder={"10.0.0.1": last} if last else {},
                desired_now={"10.0.0.1"} if desired_now else set(),
            )
        )
        if expected == "leave it to n2":
            assert "10.0.0.1" not in plan.compete, (last, desired_now, plan)
            assert "10.0.0.1" not in plan.keep
        elif expected == "normal spreading delay":
            assert "10.0.0.1" in plan.compete
        else:
            assert plan.compete.get("10.0.0.1") == 0.0, (last, desired_now, plan)
            assert ("10.0.0.1" in plan.keep) == desired_now
    # once settled, another node's last VIP is contended as usual
    plan = plan_vips(base_input(settling=False, last_holder={"10.0.0.1": "n2"}))
    assert "10.0.0.1" in plan.compete
    # while settling too when n2 went away while we watched (stopped or died): it takes
    # nothing back
    plan = plan_vips(base_input(settling=True, last_holder={"10.0.0.1": "n2"}, departed={"n2"}))
    assert "10.0.0.1" in plan.compete


def test_no_rebalancing_while_settling_or_while_presence_moves():
    configs = {f"10.0.0.{i}": vip(f"10.0.0.{i}") for i in range(1, 5)}
    local = {ip: (ELIGIBLE, container()) for ip in configs}
    locks = {ip: Holder("n1", 7) for ip in configs}  # all four here, one other live node
    common = dict(configs=configs, local=local, locks=locks, desired_now=set(configs))
    assert plan_vips(base_input(**common)).giveaway  # settled: one is given away
    assert not plan_vips(base_input(settling=True, **common)).giveaway
    # the presence of the proc's other node just came or went
    assert not plan_vips(base_input(unsettled={"n2"}, **common)).giveaway


# (nodes whose presence just came or went, whether n1 gives one of its four VIPs of
# web/worker, run on n1 and n2, away)
UNSETTLED_CASES = [
    (set(), True),
    ({"n7"}, True),  # a node of another proc: nothing to wait for here
    ({"n9", "n7"}, True),
    ({"n2"}, False),  # the proc's other node
    ({"n1"}, False),  # this node itself
    ({"n3"}, False),  # a node that holds one of the proc's VIPs
    ({"n4"}, False),  # a node that ran the proc (its pod group still says so), now gone
]


def test_rebalancing_waits_only_for_the_nodes_of_the_proc():
    configs = {f"10.0.0.{i}": vip(f"10.0.0.{i}") for i in range(1, 6)}
    local = {ip: (ELIGIBLE, container()) for ip in configs}
    locks = {ip: Holder("n1", 7) for ip in list(configs)[:4]}
    locks["10.0.0.5"] = Holder("n3", 9)
    common = dict(
        configs=configs,
        local=local,
        locks=locks,
        desired_now=set(list(configs)[:4]),
        live_nodes={"n1", "n2", "n3", "n7", "n9"},
        proc_nodes={"web/worker": ["n1", "n2", "n4"], "other/worker": ["n7", "n9"]},
    )
    for unsettled, gives in UNSETTLED_CASES:
        plan = plan_vips(base_input(unsettled=unsettled, **common))
        assert bool(plan.giveaway) == gives, (unsettled, plan.giveaway)


def test_the_last_holder_is_no_candidate_when_its_lock_goes():
    """n2 ranks above n1 for this VIP; when n2 lets the lock go (its check failed, a
    give-away, a stop) or dies, n1 claims at once instead of one ranking step later."""
    nodes = ["n1", "n2", "n3"]
    ip = next(
        f"10.0.0.{i}"
        for i in range(1, 200)
        if spread.rendezvous_order(f"10.0.0.{i}", nodes)[:2] == ["n2", "n1"]
    )
    common = dict(
        configs={ip: vip(ip)},
        local={ip: (ELIGIBLE, container())},
        live_nodes=set(nodes),
        proc_nodes={"web/worker": nodes},
    )
    assert plan_vips(base_input(**common)).compete[ip] == spread.STEP_S  # behind n2
    plan = plan_vips(base_input(last_holder={ip: "n2"}, **common))
    assert plan.compete[ip] == 0.0
    plan = plan_vips(base_input(last_holder={ip: "n1"}, **common))  # our own: ranked as ever
    assert plan.compete[ip] == spread.STEP_S
