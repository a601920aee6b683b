"""The cluster-wide VIP view (``networkdctl vip list``) and the planned-move check: a table
of nodes and what the view says about each, without root or etcd."""

from typing import Dict, List, Optional, Set, Tuple

import pytest

from networkd.bus.messages import PortSpec, VipConfig
from networkd.election.cluster_view import cluster_view, eligible_for_move
from networkd.election.plan import Holder
from networkd.keys import Move

IP = "10.0.0.1"
CFG = VipConfig(
    ip=IP, app="web", proc="worker", ports=[PortSpec(80, "tcp", 8080)], excluded_nodes=["n3"]
)
# n1..n4 run web/worker; n5 is alive and runs other things; n6 runs the proc but is gone
RUNNING = ["n1", "n2", "n3", "n4", "n6"]
LIVE = {"n1", "n2", "n3", "n4", "n5", "me"}
REPORTS = {"n4": {IP: ("FAILING", "status 500")}, "n2": {IP: ("PASSING", "")}}


def view(
    live: Set[str] = LIVE, mine: Optional[Dict[str, Tuple[str, str]]] = None
) -> Dict[str, str]:
    out = cluster_view(
        {IP: CFG},
        {IP: Holder("n1", 7)},
        live,
        {"web/worker": RUNNING, "db/main": ["n5"]},
        REPORTS,
        {},
        "me",
        mine or {},
    )
    return {s.node: s.state for s in out[IP].nodes}


@pytest.mark.parametrize(
    "node, state",
    [
        ("n1", "OWNER"),
        ("n2", "STANDBY"),  # its check passes
        ("n3", "EXCLUDED"),
        ("n4", "FAILING"),
        ("n6", "INELIGIBLE"),  # runs the proc but has no presence key
        ("me", "INELIGIBLE"),  # this node is always listed; it does not run the proc
        ("n5", None),  # alive, does not run the proc: not listed
    ],
)
def test_each_node_state(node: str, state: str) -> None:
    assert view().get(node) == state


def test_this_nodes_state_comes_from_its_own_plan() -> None:
    assert view(mine={IP: ("STANDBY", "n1")})["me"] == "STANDBY"


def test_the_view_grows_with_the_nodes_running_the_proc_not_with_the_cluster() -> None:
    crowd = LIVE | {f"x{i}" for i in range(1000)}
    assert view(live=crowd) == view()
    assert len(view(live=crowd)) == 6


def test_the_holder_is_listed_even_when_it_no_longer_runs_the_proc() -> None:
    out = cluster_view({IP: CFG}, {IP: Holder("n9", 7)}, LIVE, {"web/worker": RUNNING}, {}, {},
                       "me", {})  # fmt: skip
    assert {s.node: s.state for s in out[IP].nodes}["n9"] == "OWNER"
    assert out[IP].owner == "n9"


def test_a_move_in_progress_names_its_target() -> None:
    out = cluster_view({IP: CFG}, {IP: Holder("n1", 7)}, LIVE, {"web/worker": RUNNING}, {},
                       {IP: Move("n1", "")}, "me", {})  # fmt: skip
    assert out[IP].moving_to == "(any)"


MOVES: List[Tuple[str, bool, str]] = [
    ("", True, ""),
    ("n2", True, ""),
    ("n1", False, "n1 already owns 10.0.0.1"),
    ("n3", False, "n3 cannot take 10.0.0.1: it is EXCLUDED"),
    ("n4", False, "n4 cannot take 10.0.0.1: it is FAILING"),
    ("n5", False, "n5 cannot take 10.0.0.1: it is INELIGIBLE (it does not run web/worker)"),
]


@pytest.mark.parametrize("target, ok, reason", MOVES)
def test_planned_move_targets(target: str, ok: bool, reason: str) -> None:
    out = cluster_view({IP: CFG}, {IP: Holder("n1", 7)}, LIVE, {"web/worker": RUNNING}, REPORTS,
                       {}, "me", {})  # fmt: skip
    assert eligible_for_move(out[IP], target) == (ok, reason)


def test_no_move_without_an_owner_or_a_standby() -> None:
    lonely = cluster_view({IP: CFG}, {}, LIVE, {"web/worker": ["n1"]}, {}, {}, "me", {})
    assert eligible_for_move(lonely[IP]) == (False, "10.0.0.1 has no owner to move it from")
    alone = cluster_view({IP: CFG}, {IP: Holder("n1", 7)}, LIVE, {"web/worker": ["n1"]}, {}, {},
                         "me", {})  # fmt: skip
    assert eligible_for_move(alone[IP]) == (False, "no other node is eligible for 10.0.0.1")
