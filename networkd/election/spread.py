"""Fair spreading of the VIPs of one proc over its eligible nodes (pure logic).

Settled state: no node holds more than ``ceil(VIPs of the proc / eligible live nodes)``.

- Every free lock is contended after a small delay that grows with how many more VIPs of
  the proc this node holds than the least loaded eligible node, plus its rendezvous rank
  for that VIP among the eligible live nodes: the least loaded, best ranked node wins
  without a race, and a lock that goes on node death is taken at once by the best
  standby. (Counting from the least loaded node, not from zero: on a proc with many VIPs
  per node, e.g. 25 webrouter VIPs on each of 4 nodes, an absolute count added 25 x 50 ms
  to every failover, docs/SCALE.md.)
- A node at or over its share does not compete, except after a long fallback delay (in
  case no other node can take the VIP, e.g. its Docker check fails there).
- A node over its share while another eligible live node is under it gives one VIP away
  (released in order: address and rules, then the key); the VIP is then not given away
  again for a back-off period, so a VIP nobody else takes does not flap.
"""

import hashlib
import math
from typing import Collection, Dict, Iterable, List, Mapping, Optional, Sequence

STEP_S = 0.05


def fair_share(vip_count: int, node_count: int) -> int:
    """``ceil(vips / nodes)``: the most any node holds once ownership settles."""
    if vip_count <= 0:
        return 0
    return math.ceil(vip_count / max(1, node_count))


def _score(vip: str, node: str) -> bytes:
    return hashlib.sha1(f"{vip}|{node}".encode()).digest()


def rendezvous_order(vip: str, nodes: Iterable[str]) -> List[str]:
    """The nodes in preference order for ``vip`` (highest random weight first)."""
    return sorted(set(nodes), key=lambda n: (_score(vip, n), n), reverse=True)


def rendezvous_rank(vip: str, node: str, nodes: Iterable[str]) -> int:
    """0 when ``node`` is the preferred holder of ``vip`` among ``nodes`` (plus itself)."""
    order = rendezvous_order(vip, set(nodes) | {node})
    return order.index(node)


def compete_delay(
    held: int, share: int, rank: int, over_share_delay: float, step: float = STEP_S, least: int = 0
) -> float:
    """Seconds to wait after a lock is seen free before contending for it. ``least``: the
    fewest VIPs of the proc any eligible live node holds (every node counts alike, so the
    order of the contenders is that of ``held + rank``)."""
    base = (max(0, held - least) + rank) * step
    if share and held >= share:
        return over_share_delay + base
    return base


def pick_giveaway(
    held_vips: Sequence[str],
    hostname: str,
    share: int,
    others_held: Dict[str, int],
    eligible_for: Mapping[str, Collection[str]],
    blocked: Collection[str] = (),
) -> Optional[str]:
    """A VIP this node should give away to rebalance, or None.

    ``held_vips``: VIPs of one proc this node holds; ``others_held``: per other eligible
    live node, how many VIPs of the proc it holds; ``eligible_for``: per VIP, the other
    nodes eligible for it. One VIP at a time: the one where this node ranks worst.
    """
    if share <= 0 or len(held_vips) <= share:
        return None
    candidates = []
    for vip in held_vips:
        if vip in blocked:
            continue
        takers = [
            n for n in eligible_for.get(vip, ()) if n != hostname and others_held.get(n, 0) < share
        ]
        if not takers:
            continue
        rank = rendezvous_rank(vip, hostname, list(eligible_for.get(vip, ())) + [hostname])
        candidates.append((rank, vip))
    if not candidates:
        return None
    candidates.sort(key=lambda item: (-item[0], item[1]))
    return candidates[0][1]
