"""Every configured floating VIP as the whole cluster sees it (pure logic).

What ``networkdctl vip list`` and ``GET /v1/vips`` show: per VIP its owner and each node's
state. This node's own states come from its plan; other nodes' are derived from etcd:

| state      | when                                                                     |
|------------|--------------------------------------------------------------------------|
| OWNER      | the node holds the VIP's lock                                            |
| EXCLUDED   | the node is in the VIP's ``excluded_nodes``                               |
| INELIGIBLE | the node does not run the VIP's proc, or is not alive (no presence key)   |
| FAILING    | the node reports the VIP's check as not passing (its health report)      |
| STANDBY    | otherwise: it would take the VIP over                                    |

A VIP lists the nodes that run its proc, its holder and this node. Every other node is
INELIGIBLE (it does not run the proc) and is left out: listing each live node for each VIP
made the view, built on every elector step, O(VIPs x nodes) per node (at 75 simulated
nodes it was half of every node's CPU; at 1,000 nodes and 400 VIPs it would be 400,000
entries per step). A move to a node that is not listed is refused as INELIGIBLE.
"""

from typing import Dict, List, Mapping, Set, Tuple

from networkd.bus.messages import VipClusterView, VipConfig, VipNodeState
from networkd.election.eligibility import (
    EXCLUDED,
    FAILING,
    INELIGIBLE,
    OWNER,
    STANDBY,
    proc_key,
)
from networkd.election.plan import Holder
from networkd.keys import Move

Report = Dict[str, Tuple[str, str]]  # ip -> (verdict, detail)


def check_text(entry: Tuple[str, str]) -> str:
    state, detail = entry
    return state if state == "PASSING" or not detail else f"{state}: {detail}"


def node_state(
    node: str,
    cfg: VipConfig,
    holder: str,
    live: Set[str],
    running: Set[str],
    report: Report,
) -> str:
    if node == holder:
        return OWNER
    if node in cfg.excluded_nodes:
        return EXCLUDED
    if node not in running or node not in live:
        return INELIGIBLE
    verdict = report.get(cfg.ip)
    if verdict is not None and verdict[0] != "PASSING":
        return FAILING
    return STANDBY


def cluster_view(
    configs: Mapping[str, VipConfig],
    locks: Mapping[str, Holder],
    live: Set[str],
    proc_nodes: Mapping[str, List[str]],
    reports: Mapping[str, Report],
    moves: Mapping[str, Move],
    me: str,
    mine: Mapping[str, Tuple[str, str]],
) -> Dict[str, VipClusterView]:
    """``mine``: this node's plan status per VIP (state, owner)."""
    out: Dict[str, VipClusterView] = {}
    for ip in sorted(configs):
        cfg = configs[ip]
        holder = locks[ip].hostname if ip in locks else ""
        running = set(proc_nodes.get(proc_key(cfg.app, cfg.proc), []))
        nodes = sorted(running | ({holder} if holder else set()) | {me})
        states: List[VipNodeState] = []
        for node in nodes:
            report = reports.get(node, {})
            if node == me and ip in mine:
                state = mine[ip][0]
            else:
                state = node_state(node, cfg, holder, live, running, report)
            check = check_text(report[ip]) if ip in report else ""
            states.append(VipNodeState(node=node, state=state, check=check))
        move = moves.get(ip)
        out[ip] = VipClusterView(
            ip=ip,
            app=cfg.app,
            proc=cfg.proc,
            owner=holder,
            nodes=states,
            moving_to=(move.target or "(any)") if move is not None else "",
            check=cfg.health.type if cfg.health is not None else "",
        )
    return out


def eligible_for_move(view: VipClusterView, target: str = "") -> Tuple[bool, str]:
    """Whether a planned move can happen: (ok, the reason when not)."""
    if not view.owner:
        return False, f"{view.ip} has no owner to move it from"
    standby = [s.node for s in view.nodes if s.state == STANDBY]
    if target:
        if target == view.owner:
            return False, f"{target} already owns {view.ip}"
        found = [s for s in view.nodes if s.node == target]
        if not found:
            return False, (
                f"{target} cannot take {view.ip}: it is {INELIGIBLE}"
                f" (it does not run {view.app}/{view.proc})"
            )
        if found[0].state != STANDBY:
            return False, f"{target} cannot take {view.ip}: it is {found[0].state}"
        return True, ""
    if not standby:
        return False, f"no other node is eligible for {view.ip}"
    return True, ""
