"""One decision step for the floating VIPs (pure logic, no etcd, no clock).

Given the configured VIPs, this node's eligibility, every lock holder and what is in the
desired set now, it says per VIP: keep (publish as desired), compete (after a delay),
release (remove from desired, then delete our lock), rebind (our hostname under an old
lease of ours: move it to the current lease without touching the address), and the
status shown to operators.

Fencing ``hold``: a VIP this node has in its desired set stays there while its lock is
merely *absent* (etcd unreachable, or our lease expired and the lock went with it) and
we are still eligible: it is re-contended at once, and dropped only when another node
demonstrably holds the lock (or the applier yielded to another node's announcement).
Fencing ``strict``: a VIP is kept only while the lock is ours; the worker additionally
drops every bound VIP when the lease is not alive.

Settling (holder affinity): after a disturbance of etcd (this node's lease expired under
it, or its connection to etcd was lost), locks that vanished with many leases at once
belong to nodes that may well still be fine. While ``settling`` a free lock is contended
at once by its last holder only (this node, if it still has the address or held it last);
other nodes leave it alone until the settling period ends, and nobody gives VIPs away to
rebalance. So an etcd stall moves no VIP whose holder stayed healthy, and a VIP never
gets a second announcer from the reshuffle. A last holder whose presence key went while
this node watched (``departed``: it stopped or died after this node's own disturbance)
takes nothing back: its free locks are contended as usual (a planned stop just after a
healed link cut of both standbys waited out the whole settling period, 1.6 s).
"""

import dataclasses
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from networkd.bus.messages import LocalContainer, VipConfig
from networkd.election import spread
from networkd.election.eligibility import ELIGIBLE, OWNER, STANDBY, proc_key
from networkd.keys import Move


class Holder(NamedTuple):
    """A lock's value (the holder's hostname) and the lease it is bound to."""

    hostname: str
    lease: int


@dataclasses.dataclass
class VipPlan:
    status: Dict[str, Tuple[str, str]] = dataclasses.field(
        default_factory=dict
    )  # ip -> (state, owner)
    keep: Dict[str, LocalContainer] = dataclasses.field(default_factory=dict)
    compete: Dict[str, float] = dataclasses.field(default_factory=dict)  # ip -> delay
    release: Dict[str, int] = dataclasses.field(
        default_factory=dict
    )  # ip -> lease of our lock (0: none)
    rebind: Dict[str, int] = dataclasses.field(default_factory=dict)  # ip -> old lease
    giveaway: Set[str] = dataclasses.field(default_factory=set)
    moving: Set[str] = dataclasses.field(default_factory=set)  # released for a planned move


@dataclasses.dataclass
class PlanInput:
    hostname: str
    lease_id: int
    alive: bool
    fencing: str
    configs: Dict[str, VipConfig]  # floating VIPs by ip
    local: Dict[str, Tuple[str, Optional[LocalContainer]]]  # ip -> (eligibility, container)
    locks: Dict[str, Holder]  # every VIP lock by ip
    live_nodes: Set[str]
    proc_nodes: Dict[str, List[str]]  # "<app>/<proc>" -> node names running it
    desired_now: Set[str] = dataclasses.field(default_factory=set)
    releasing: Set[str] = dataclasses.field(default_factory=set)
    yielded: Set[str] = dataclasses.field(default_factory=set)
    giveaway_blocked: Set[str] = dataclasses.field(default_factory=set)
    over_share_delay: float = 4.0
    settling: bool = False
    last_holder: Dict[str, str] = dataclasses.field(default_factory=dict)  # ip -> hostname
    # last holders that went away (stopped or died) while this node watched: settling
    # does not wait for them to take their locks back
    departed: Set[str] = dataclasses.field(default_factory=set)
    # Nodes whose presence key came or went within the settling time: a proc that runs on
    # one of them, or whose VIPs one of them holds, is not rebalanced yet. Only those: one
    # flapping node of a 1,000-node cluster must not hold every other proc's spreading.
    unsettled: Set[str] = dataclasses.field(default_factory=set)
    moves: Dict[str, Move] = dataclasses.field(default_factory=dict)  # planned moves by VIP


def plan_vips(p: PlanInput) -> VipPlan:
    step = _Step(p)
    for ip in sorted(p.configs):
        step.decide(ip)
    step.release_unconfigured()
    if p.alive and not p.settling:
        for pk, ips in step.by_proc.items():
            step.rebalance(pk, ips)
    return step.out


class _Step:
    """One plan_vips call: the tallies per proc, then one small method per decision."""

    def __init__(self, p: PlanInput) -> None:
        self.p = p
        self.me = p.hostname
        self.out = VipPlan()
        live = set(p.live_nodes) | {h.hostname for h in p.locks.values()} | {self.me}
        # Per proc: its VIPs, the eligible live nodes and how many VIPs each holds.
        self.by_proc: Dict[str, List[str]] = {}
        for ip, cfg in p.configs.items():
            self.by_proc.setdefault(proc_key(cfg.app, cfg.proc), []).append(ip)
        self.nodes_of: Dict[str, Set[str]] = {}
        self.held_of: Dict[str, Dict[str, int]] = {}
        for pk, ips in self.by_proc.items():
            nodes = {n for n in p.proc_nodes.get(pk, []) if n in live}
            if any(p.local.get(ip, ("", None))[0] == ELIGIBLE for ip in ips):
                nodes.add(self.me)
            self.nodes_of[pk] = nodes
            counts: Dict[str, int] = {}
            for ip in ips:
                h = p.locks.get(ip)
                if h is not None:
                    counts[h.hostname] = counts.get(h.hostname, 0) + 1
            self.held_of[pk] = counts

    def is_ours(self, h: Optional[Holder]) -> bool:
        p = self.p
        return h is not None and h.hostname == self.me and p.lease_id != 0 and h.lease == p.lease_id

    def is_mine(self, h: Optional[Holder]) -> bool:  # ours under any lease
        return h is not None and h.hostname == self.me

    # -- one VIP ------------------------------------------------------------------------

    def decide(self, ip: str) -> None:
        p, out, me = self.p, self.out, self.me
        state, container = p.local.get(ip, (ELIGIBLE, None))
        h = p.locks.get(ip)
        owner = h.hostname if h is not None else ""
        if ip in p.releasing:
            out.status[ip] = (STANDBY if state == ELIGIBLE else state, owner)
            return
        if state != ELIGIBLE or container is None:
            out.status[ip] = (state, owner)
            if h is not None and self.is_mine(h):
                out.release[ip] = h.lease
            elif ip in p.desired_now:
                out.release[ip] = 0
            return
        move = p.moves.get(ip)
        if h is not None and self.is_ours(h):
            if move is not None and move.source == me and move.target != me:
                # a planned move away from us: released in order like a giveaway
                out.release[ip] = h.lease
                out.moving.add(ip)
                out.status[ip] = (STANDBY, me)
                return
            out.keep[ip] = container
            out.status[ip] = (OWNER, me)
            return
        if h is not None and self.is_mine(h):
            # Our hostname under a previous lease (restart with a lost lease file, or a
            # re-granted lease): take it over without releasing the address.
            out.rebind[ip] = h.lease
            if ip not in p.yielded:  # yielded to another node's announcement: not until ours
                out.keep[ip] = container
                out.status[ip] = (OWNER, me)
            else:
                out.status[ip] = (STANDBY, owner)
            return
        if h is not None:
            # Another node holds it.
            out.status[ip] = (STANDBY, owner)
            if ip in p.desired_now:
                out.release[ip] = 0  # drop from desired; the lock is not ours to delete
            return
        self.free_lock(ip, container, move)

    def free_lock(self, ip: str, container: LocalContainer, move: Optional[Move]) -> None:
        """A VIP this node may hold whose lock nobody holds: keep, contend or leave it."""
        p, out, me = self.p, self.out, self.me
        out.status[ip] = (STANDBY, "")
        if move is not None and (move.source == me or move.target not in ("", me)):
            if ip in p.desired_now:
                out.release[ip] = 0
            return  # moving away from us, or to a named other node
        if move is not None and move.target == me and p.alive:
            out.compete[ip] = 0.0  # the node the move is for takes it at once
            return
        if ip in p.desired_now and p.fencing == "hold" and ip not in p.yielded:
            out.keep[ip] = container
            out.status[ip] = (OWNER, me)
            if p.alive:
                out.compete[ip] = 0.0
            return
        if ip in p.desired_now:
            out.release[ip] = 0
        if not p.alive:
            return
        if p.settling:
            last = p.last_holder.get(ip, "")
            if last == me:
                out.compete[ip] = 0.0  # ours before the disturbance: take it back first
                return
            if last and last not in p.departed:
                return  # another node's: its holder takes it back, or we do once settled
            # its holder stopped or died while we watched: nobody takes it back, contend
        out.compete[ip] = self.compete_delay(ip, move)

    def compete_delay(self, ip: str, move: Optional[Move]) -> float:
        """How long this node waits before it claims a free lock (spread.compete_delay)."""
        p, me = self.p, self.me
        cfg = p.configs[ip]
        pk = proc_key(cfg.app, cfg.proc)
        held = self.held_of[pk].get(me, 0)
        nodes = self.nodes_of[pk]
        share = spread.fair_share(len(self.by_proc[pk]), len(nodes))
        eligible_nodes = [n for n in nodes if n not in cfg.excluded_nodes]
        if move is not None:  # the node it moves away from is no candidate: rank without it
            eligible_nodes = [n for n in eligible_nodes if n != move.source]
        last = p.last_holder.get(ip, "")
        if last and last != me:
            # The last holder let the lock go (its check failed, it gave the VIP away or
            # stopped) or died: no candidate either, so the best of the others claims at
            # once instead of waiting a ranking step behind it.
            eligible_nodes = [n for n in eligible_nodes if n != last]
        rank = spread.rendezvous_rank(ip, me, eligible_nodes)
        least = min([self.held_of[pk].get(n, 0) for n in eligible_nodes] + [held])
        return spread.compete_delay(held, share, rank, p.over_share_delay, least=least)

    # -- after every VIP ----------------------------------------------------------------

    def release_unconfigured(self) -> None:
        """Locks of ours, and desired VIPs, that are no longer configured."""
        p, out = self.p, self.out
        for ip, h in p.locks.items():
            if ip not in p.configs and self.is_mine(h) and ip not in p.releasing:
                out.release[ip] = h.lease
        for ip in p.desired_now:
            if ip not in p.configs and ip not in out.release and ip not in p.releasing:
                out.release[ip] = 0

    def rebalance(self, pk: str, ips: List[str]) -> None:
        """Give one VIP of the proc away when this node holds more than its share: one at a
        time, only with a live lease, once settled and once the proc's nodes are."""
        p, out, me = self.p, self.out, self.me
        if any(ip in p.releasing for ip in ips):
            return
        nodes = self.nodes_of[pk]
        holders = {h.hostname for h in (p.locks.get(ip) for ip in ips) if h is not None}
        if (nodes | set(p.proc_nodes.get(pk, [])) | holders) & p.unsettled:
            return
        share = spread.fair_share(len(ips), len(nodes))
        mine = sorted(ip for ip in ips if ip in out.keep and self.is_ours(p.locks.get(ip)))
        others_held = {n: c for n, c in self.held_of[pk].items() if n != me and n in nodes}
        for n in nodes:
            others_held.setdefault(n, 0)
        eligible_for = {
            ip: [n for n in nodes if n not in p.configs[ip].excluded_nodes] for ip in ips
        }
        vip = spread.pick_giveaway(mine, me, share, others_held, eligible_for, p.giveaway_blocked)
        if vip is not None:
            h = p.locks[vip]
            del out.keep[vip]
            out.release[vip] = h.lease
            out.giveaway.add(vip)
            out.status[vip] = (STANDBY, me)
