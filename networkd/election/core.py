"""The elector's controller: one thread that owns every etcd interaction but the lease.

The worker's main thread (bus I/O, never blocked by etcd) hands the latest bus state in
with ``set_inputs`` and takes ``outputs()`` out; this thread wakes on any change (bus
input, lease, mirror event) or timer, and runs ``step``, a sequence of named phases over
one ``StepContext``:

1. ``_presence``: the presence key ``/lain/networkd/nodes/<hostname>`` (bound to the
   lease; how other nodes know this one is alive when they count eligible nodes);
2. ``_floating``: the floating VIP plan (``plan.plan_vips``): keep, compete after a
   delay, rebind, release in order: out of the desired set, then the lock is deleted once
   the applier has confirmed (``state.applied_rev``) a desired revision without it and
   shows the address gone — never on "not reported yet";
3. ``_port_only``: desired entries without address, and the apps keys;
4. ``_leadership``: leader election on ``/lain/networkd/leader`` and the leader jobs;
5. ``_final_stop`` and ``_retire_lease``: the final stop's revoke, and moving keys off a
   retiring lease (after a TTL change);
6. ``_publish``: the outputs the worker publishes.

Nothing is published until the mirror of ``/lain/networkd/`` and the watcher's state are
both loaded: a restarted elector first learns which locks are its own, then publishes
them, so a restart never makes the applier drop an address.

After a disturbance of etcd (the lease expired under us, the mirror lost its connection)
the controller *settles* for ``settle_seconds``: free locks go back to their last holder
first, and nobody rebalances (``plan`` module, "Settling").
"""

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from networkd import keys
from networkd.bus.messages import (
    AppliedVip,
    AppsKey,
    ConfigError,
    DesiredVip,
    ElectorCounters,
    LeaderAddress,
    LeaderInfo,
    LocalContainer,
    ProcNodes,
    StreamrouterPool,
    VipClusterView,
    VipConfig,
    VipStatus,
)
from networkd.config import Config
from networkd.election.cluster_view import cluster_view
from networkd.election.commands import CommandRunner
from networkd.election.eligibility import OWNER, DockerCheck, RunningCheck, local_eligibility
from networkd.election.lease import LeaseKeeper
from networkd.election.mirror import Entry, KeyMirror
from networkd.election.plan import Holder, PlanInput, VipPlan, plan_vips
from networkd.election.store import OwnedKeys
from networkd.etcd.channel import ClientHolder
from networkd.jobs.runner import JobRunner, compute_jobs

log = logging.getLogger("networkd.elector")

NODES_PREFIX = keys.NODES_PREFIX
RELEASE_WARN_S = 5.0
GIVEAWAY_BACKOFF_S = 60.0
TXN_RETRY_S = 0.5
CLAIM_BATCH = 64  # etcd's default --max-txn-ops is 128 (compares and puts count apart)
JOB_RETRY_S = 1.0
# Every input, mirror and lease change wakes the controller; what only time changes has
# its own timer (``_timers``). Without either, a step every IDLE_STEP_S is the safety net:
# a step is O(VIPs + nodes), and one per second on every node of a 1,000-node cluster
# was ~1% of a core per node for nothing (docs/SCALE.md).
IDLE_STEP_S = 5.0
# The cluster view (``vip list``) is an operator's view: rebuilt at most this often, and
# at once while an operator's command waits for it. A step happens on every event, and
# under churn (a node restarting, a lease re-granted) every node took one per event:
# building the view each time was a third of a step at 100 simulated nodes
# (docs/SCALE.md).
CLUSTER_VIEW_S = 0.5
RUNNING_RECHECK_S = 1.0  # a container-running check is asked again this often


def node_key(hostname: str) -> str:
    return NODES_PREFIX + hostname


def settle_seconds(ttl: float) -> float:
    """How long after an etcd disturbance free locks wait for their last holder: long
    enough for a holder to notice its lost lease, grant a new one and claim again."""
    return max(3.0, 1.5 * ttl)


@dataclasses.dataclass
class Inputs:
    """The bus state the controller works from (copies; set by the main thread)."""

    vips: Dict[str, VipConfig] = dataclasses.field(default_factory=dict)
    containers: Dict[str, LocalContainer] = dataclasses.field(default_factory=dict)
    proc_nodes: Dict[str, ProcNodes] = dataclasses.field(default_factory=dict)
    leaders: Dict[str, LeaderAddress] = dataclasses.field(default_factory=dict)
    apps: Dict[str, AppsKey] = dataclasses.field(default_factory=dict)
    streamrouter: Optional[StreamrouterPool] = None
    watcher_synced: bool = False
    applied: Optional[Dict[str, AppliedVip]] = None
    # The desired revision the applier confirmed (0: none yet from this elector), and
    # whether an applier runs at all (``-workers`` without it: nobody to wait for).
    applied_rev: int = 0
    applier_expected: bool = True
    # VIP -> (verdict, source, detail) of the checker; a checker restart keeps the last
    # verdicts (the worker's InputPump). ``checks_enabled`` false: no checker runs.
    health: Dict[str, Tuple[str, str, str]] = dataclasses.field(default_factory=dict)
    checks_enabled: bool = True


@dataclasses.dataclass
class Outputs:
    """What the worker publishes. ``ready`` false: do not publish desired/status yet."""

    version: int = 0
    ready: bool = False
    desired: Dict[str, DesiredVip] = dataclasses.field(default_factory=dict)
    vip_status: Dict[str, VipStatus] = dataclasses.field(default_factory=dict)
    leader: Dict[str, LeaderInfo] = dataclasses.field(default_factory=dict)
    config_errors: Dict[str, ConfigError] = dataclasses.field(default_factory=dict)
    counters: ElectorCounters = dataclasses.field(default_factory=ElectorCounters)
    final_done: bool = False
    cluster: Dict[str, VipClusterView] = dataclasses.field(default_factory=dict)
    # The lease generation these outputs were computed under: after a new lease (the old
    # one expired, its locks gone) they say nothing until the controller stepped with it.
    generation: int = 0


@dataclasses.dataclass
class _Release:
    started: float
    lease: int
    rev: int = 0  # the desired revision without the VIP (set once published)
    warned: bool = False


@dataclasses.dataclass
class StepContext:
    """What one step works from and what it produces, passed from phase to phase."""

    now: float
    inp: Inputs
    final: bool
    yielded: Set[str]
    lease_id: int
    alive: bool
    generation: int = 0  # the lease generation read before lease_id and alive
    snap: Dict[str, Entry] = dataclasses.field(default_factory=dict)
    locks: Dict[str, Holder] = dataclasses.field(default_factory=dict)
    live: Set[str] = dataclasses.field(default_factory=set)
    wake: float = IDLE_STEP_S
    errors: Dict[str, ConfigError] = dataclasses.field(default_factory=dict)
    configs: Dict[str, VipConfig] = dataclasses.field(default_factory=dict)
    plan: VipPlan = dataclasses.field(default_factory=VipPlan)
    desired: Dict[str, DesiredVip] = dataclasses.field(default_factory=dict)
    port_desired: Dict[str, DesiredVip] = dataclasses.field(default_factory=dict)
    new_releases: List[str] = dataclasses.field(default_factory=list)
    leader: Dict[str, LeaderInfo] = dataclasses.field(default_factory=dict)
    moves: Dict[str, keys.Move] = dataclasses.field(default_factory=dict)
    cluster: Dict[str, VipClusterView] = dataclasses.field(default_factory=dict)

    def wake_in(self, seconds: float) -> None:
        self.wake = min(self.wake, seconds)


class ElectorCore:
    def __init__(
        self,
        config: Config,
        hostname: str,
        node_address: str,
        lease_path: str,
        connect: Callable[[float], Any],
        running: Optional[RunningCheck] = None,
        clock: Callable[[], float] = time.monotonic,
        on_output: Optional[Callable[[], None]] = None,
    ) -> None:
        self.config = config
        self._on_output = on_output
        self.hostname = hostname
        self.node_address = node_address
        self._connect = connect
        self._clock = clock
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._inputs = Inputs()
        self._inputs_version = 0
        self._outputs = Outputs()
        self.running: Optional[RunningCheck] = running
        if running is None and config.docker_endpoint:
            self.running = DockerCheck(config.docker_endpoint)
        self.keeper = LeaseKeeper(
            lambda: connect(max(0.2, min(1.0, config.vip_ttl / 5.0))),
            config.vip_ttl,
            lease_path,
            hostname=hostname,
            on_change=self._lease_changed,
            clock=clock,
            on_renewed=self._notify_output,
        )
        # Separate channels for the mirror's watch and for transactions: each is replaced
        # on its own when its connection stops answering (networkd.etcd.channel).
        self.txn_channel = ClientHolder(lambda: connect(1.0), "elector")
        self.watch_channel = ClientHolder(lambda: connect(0.4), "mirror")
        self.mirror: Optional[KeyMirror] = None
        self.store: Optional[OwnedKeys] = None
        self.jobs: Optional[JobRunner] = None
        self.commands: Optional[CommandRunner] = None
        self._health_written: Optional[str] = None
        self.settle_s = settle_seconds(self.keeper.ttl)
        # controller state (controller thread only)
        self._desired_bind: Dict[str, DesiredVip] = {}
        self._releasing: Dict[str, _Release] = {}
        self._free_since: Dict[str, float] = {}
        self._giveaway_blocked: Dict[str, float] = {}
        self._yielded: Set[str] = set()
        self._wait_rev: Dict[str, int] = {}
        self._retry_at: Dict[str, float] = {}
        self._generation = -1
        self._ready = False
        self._started_at = clock()
        self._final = False
        self._final_done = False
        self._was_leader = False
        self._job_retry_at = 0.0
        self._pool_seen: Set[str] = set()
        self._warned: Set[str] = set()
        self._next_wake = 1.0
        self._last_holder: Dict[str, str] = {}
        self._settle_until = 0.0
        self._disturbances: Tuple[int, int] = (0, 0)
        self._presence: Set[str] = set()
        self._departed: Set[str] = set()  # last holders whose presence went while we watched
        self._cluster: Dict[str, VipClusterView] = {}
        self._cluster_due = 0.0  # when the cluster view may be rebuilt
        self._watched_steadily = False
        # node -> when its presence key last came or went, for the settling time
        self._presence_changed: Dict[str, float] = {}
        self.counters = ElectorCounters()
        self.steps = 0

    # -- main-thread API ---------------------------------------------------------------

    @property
    def client(self) -> Any:
        return self.txn_channel.get()

    def start(self) -> None:
        self.txn_channel.get()
        self.mirror = KeyMirror(self.watch_channel, keys.NETWORKD_PREFIX, on_change=self._wake.set)
        self.store = OwnedKeys(self.txn_channel, self.hostname, self.mirror)
        self.jobs = JobRunner(self.store)
        self.commands = CommandRunner(self.store, self._clock, on_result=self._notify_output)
        self.mirror.start()
        self.keeper.start()
        self._thread = threading.Thread(target=self._run, name="elector-core", daemon=True)
        self._thread.start()

    def set_inputs(self, inputs: Inputs) -> None:
        with self._lock:
            self._inputs = inputs
            self._inputs_version += 1
        self._wake.set()

    def poke(self) -> None:
        """Run a step soon (a command arrived)."""
        self._wake.set()

    def note_duplicate(self, ip: str, yielded: bool) -> None:
        if yielded:
            with self._lock:
                self._yielded.add(ip)
            self._wake.set()

    def outputs(self) -> Outputs:
        with self._lock:
            return self._outputs

    def begin_final(self) -> None:
        """Final stop: release every VIP in order, resign, then revoke the lease."""
        with self._lock:
            self._final = True
        self._wake.set()

    def stop(self) -> None:
        """Stop the threads. The lease is left alone (a restart resumes it), renewed one last
        time first so the next elector has the whole TTL to take it over."""
        self._stop.set()
        self._wake.set()
        self.keeper.stop(renew_first=not self._final)
        if self._thread is not None:
            self._thread.join(5.0)
        if self.mirror is not None:
            self.mirror.stop()
        self.watch_channel.close()
        self.txn_channel.close()

    # -- controller thread -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_wake)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.step()
            except Exception:
                log.exception("elector step failed")
                self._next_wake = 0.5

    def _can_txn(self, key: str, now: float) -> bool:
        assert self.mirror is not None
        if self._retry_at.get(key, 0.0) > now:
            return False
        rev = self._wait_rev.get(key)
        return rev is None or self.mirror.revision >= rev

    def _txn(self, key: str, now: float, fn: Callable[..., Any], *args: Any) -> Optional[bool]:
        """Run ``fn(key, *args)``, one transaction; None when etcd failed (retried later)."""
        try:
            result = fn(key, *args)
        except Exception as exc:
            self._txn_failed([key], now, exc)
            return None
        self._warned.discard(key)
        self._retry_at.pop(key, None)
        if result.succeeded:
            self._wait_rev.pop(key, None)
        else:
            self._wait_rev[key] = result.revision
        return bool(result.succeeded)

    def _txn_failed(self, failed_keys: List[str], now: float, exc: BaseException) -> None:
        self.txn_channel.failed(exc)
        for key in failed_keys:
            self._retry_at[key] = now + TXN_RETRY_S
        first = failed_keys[0]
        if first not in self._warned:
            self._warned.add(first)
            log.warning("etcd transaction failed key=%s keys=%d reason=%s",
                        first, len(failed_keys), exc)  # fmt: skip

    def _claim(self, ips: List[str], lease_id: int, now: float) -> List[str]:
        """Claim several free locks in one transaction; [] when any was taken meanwhile."""
        assert self.store is not None
        lock_keys = [keys.vip_lock(ip) for ip in ips]
        try:
            result = self.store.claim_all(lock_keys, lease_id)
        except Exception as exc:
            self._txn_failed(lock_keys, now, exc)
            return []
        return list(ips) if result.succeeded else []

    def step(self) -> None:
        assert self.mirror is not None
        now = self._clock()
        self.steps += 1
        with self._lock:
            inp = self._inputs
            final = self._final
            yielded = set(self._yielded)
        # Read before the lease: a grant in between tags these outputs with the older
        # generation, which holds them back until the next step (never the reverse).
        generation = self.keeper.generation
        ctx = StepContext(
            now=now,
            inp=inp,
            final=final,
            yielded=yielded,
            lease_id=self.keeper.lease_id,
            alive=self.keeper.alive(),
            generation=generation,
        )
        if generation != self._generation:
            self._generation = generation
            self._wait_rev.clear()
            self._retry_at.clear()
        if not self.mirror.synced:
            self._publish_not_ready(inp, ctx.alive, generation)
            self._next_wake = 0.2
            return
        ctx.snap = self.mirror.snapshot()
        self._presence_phase(ctx)
        if not self._ready:
            if not inp.watcher_synced:
                self._publish_not_ready(inp, ctx.alive, generation)
                self._next_wake = 0.2
                return
            self._ready = True
            log.info(
                "elector ready hostname=%s lease=%x resumed=%s owned=%s",
                self.hostname,
                ctx.lease_id,
                self.keeper.resumed,
                sorted(ip for ip, h in _locks(ctx.snap).items() if h.hostname == self.hostname),
            )
        self._observe(ctx)
        self._health_report(ctx)
        self._floating(ctx)
        self._port_only_phase(ctx)
        self._leadership(ctx)
        self._cluster_and_commands(ctx)
        self._final_stop(ctx)
        self._retire_lease(ctx)
        self._publish(ctx)
        self._timers(ctx)
        self._next_wake = max(0.005, ctx.wake)

    def _timers(self, ctx: StepContext) -> None:
        """Wake when time alone changes the plan: settling ends, rebalancing may start, a
        failed transaction may be retried, a give-away back-off ends, a container-running
        check may answer otherwise."""
        now = ctx.now
        deadlines = [self._settle_until] + [
            t + self.settle_s for t in self._presence_changed.values()
        ]
        deadlines += self._retry_at.values()
        deadlines += self._giveaway_blocked.values()
        for at in deadlines:
            if at > now:
                ctx.wake_in(at - now)
        if self.running is not None and getattr(self.running, "answering", True):
            ctx.wake_in(RUNNING_RECHECK_S)

    # -- 1. presence -------------------------------------------------------------------

    def _presence_phase(self, ctx: StepContext) -> None:
        if not (ctx.alive and ctx.lease_id) or ctx.final:
            return
        assert self.store is not None
        pkey = node_key(self.hostname)
        entry = ctx.snap.get(pkey)
        if entry is None and self._can_txn(pkey, ctx.now):
            self._txn(pkey, ctx.now, self.store.claim, ctx.lease_id)
        elif (
            entry is not None
            and entry.value == self.hostname
            and entry.lease != ctx.lease_id
            and self._can_txn(pkey, ctx.now)
        ):
            self._txn(pkey, ctx.now, self.store.rebind, entry.lease, ctx.lease_id)

    def _observe(self, ctx: StepContext) -> None:
        """Locks, live nodes, last holders, and whether etcd was just disturbed."""
        assert self.mirror is not None
        ctx.locks = _locks(ctx.snap)
        for ip, holder in ctx.locks.items():
            self._last_holder[ip] = holder.hostname
        ctx.live = {k[len(NODES_PREFIX) :] for k in ctx.snap if k.startswith(NODES_PREFIX)}
        for key, entry in ctx.snap.items():
            if key.startswith(keys.MOVES_PREFIX):
                move = keys.parse_move(entry.value)
                if move is not None:
                    ctx.moves[key[len(keys.MOVES_PREFIX) :]] = move
        seen = (self.keeper.lost, self.mirror.disconnects)
        disturbed = seen != self._disturbances or not ctx.alive or not self.mirror.connected
        # Nodes whose presence key went while this node watched, connected and alive with
        # its own presence key under its current lease, through this step and the one
        # before: they stopped or died, and will not take their free locks back. Keys that
        # went with a mass expiry are no departure: this node's lease went with them (or
        # was not alive), so the step that sees them is never a steady one.
        own = ctx.snap.get(node_key(self.hostname))
        steady = not disturbed and own is not None and own.lease == ctx.lease_id
        if steady and self._watched_steadily:
            self._departed |= self._presence - ctx.live
        self._departed &= set(self._last_holder.values()) - ctx.live
        self._watched_steadily = steady
        for node in ctx.live ^ self._presence:
            self._presence_changed[node] = ctx.now
        self._presence_changed = {
            n: t for n, t in self._presence_changed.items() if ctx.now - t < self.settle_s
        }
        self._presence = set(ctx.live)
        if seen != self._disturbances:
            log.info(
                "elector settling after etcd disturbance lease_lost=%d watch_lost=%d seconds=%.1f",
                seen[0],
                seen[1],
                self.settle_s,
            )
            self._disturbances = seen
        if disturbed and self._started_at + self.settle_s < ctx.now:
            self._settle_until = ctx.now + self.settle_s

    def settling(self, now: float) -> bool:
        return now < self._settle_until

    # -- 2. floating VIPs --------------------------------------------------------------

    def _floating(self, ctx: StepContext) -> None:
        ctx.configs = {cfg.ip: cfg for cfg in ctx.inp.vips.values() if cfg.port == 0}
        ctx.plan = self._plan(ctx)
        self._take_desired(ctx)
        self._compete(ctx)
        self._rebind(ctx)
        self._finish_releases(ctx)

    def _plan(self, ctx: StepContext) -> VipPlan:
        me = self.hostname
        local = {
            ip: local_eligibility(
                cfg, me, ctx.inp.containers, self.running, health_verdict(cfg, ctx.inp)
            )
            for ip, cfg in ctx.configs.items()
        }
        for ip in list(self._giveaway_blocked):
            if self._giveaway_blocked[ip] <= ctx.now:
                del self._giveaway_blocked[ip]
        for ip in list(ctx.yielded):
            h = ctx.locks.get(ip)
            if h is not None and h.hostname != me:
                continue  # stays yielded until we own it again
            if h is not None and h.lease == ctx.lease_id and ctx.alive:
                with self._lock:
                    self._yielded.discard(ip)
                ctx.yielded.discard(ip)
        plan = plan_vips(
            PlanInput(
                hostname=me,
                lease_id=ctx.lease_id,
                alive=ctx.alive and not ctx.final,
                fencing=self.config.vip_fencing,
                configs=ctx.configs,
                local=local,
                locks=ctx.locks,
                live_nodes=ctx.live,
                proc_nodes={k: list(v.nodes) for k, v in ctx.inp.proc_nodes.items()},
                desired_now=set(self._desired_bind),
                releasing=set(self._releasing),
                yielded=ctx.yielded,
                giveaway_blocked=set(self._giveaway_blocked),
                over_share_delay=max(2.0, 2 * self.config.vip_ttl),
                settling=self.settling(ctx.now),
                last_holder=dict(self._last_holder),
                departed=set(self._departed),
                unsettled=set(self._presence_changed),
                moves=ctx.moves,
            )
        )
        if ctx.final:
            plan.keep.clear()
            plan.compete.clear()
            plan.rebind.clear()
            for ip, h in ctx.locks.items():
                if h.hostname == me and ip not in self._releasing:
                    plan.release[ip] = h.lease
            for ip in self._desired_bind:
                plan.release.setdefault(ip, 0)
        return plan

    def _take_desired(self, ctx: StepContext) -> None:
        """The desired set from the plan; VIPs leaving it start their release."""
        plan = ctx.plan
        desired: Dict[str, DesiredVip] = {}
        for ip, container in plan.keep.items():
            cfg = ctx.configs[ip]
            desired[ip] = DesiredVip(
                ip=ip,
                app=cfg.app,
                proc=cfg.proc,
                container_ip=container.container_ip,
                ports=list(cfg.ports),
            )
        for ip, lease in plan.release.items():
            desired.pop(ip, None)
            if ip in self._releasing:
                continue
            if ip in plan.moving:
                reason = "planned move"
            elif ip in plan.giveaway:
                reason = "rebalance"
                self._giveaway_blocked[ip] = ctx.now + GIVEAWAY_BACKOFF_S
            else:
                reason = "stop" if ctx.final else "not eligible or not ours"
            log.info("vip release ip=%s reason=%s", ip, reason)
            self._releasing[ip] = _Release(started=ctx.now, lease=lease)
            ctx.new_releases.append(ip)
        for ip in desired:
            if ip not in self._desired_bind:
                log.info("vip owned ip=%s lease=%x", ip, ctx.lease_id)
        self._desired_bind = desired
        ctx.desired = desired

    def _compete(self, ctx: StepContext) -> None:
        """Claim the free locks whose spreading delay has passed (batched)."""
        assert self.store is not None
        for ip in list(self._free_since):
            if ip not in ctx.plan.compete:
                del self._free_since[ip]
        due: List[str] = []
        for ip, delay in ctx.plan.compete.items():
            first = self._free_since.setdefault(ip, ctx.now)
            if ctx.now < first + delay:
                ctx.wake_in(first + delay - ctx.now)
            elif ctx.lease_id and self._can_txn(keys.vip_lock(ip), ctx.now):
                due.append(ip)
        for start in range(0, len(due), CLAIM_BATCH):
            chunk = due[start : start + CLAIM_BATCH]
            won = self._claim(chunk, ctx.lease_id, ctx.now) if len(chunk) > 1 else []
            if len(chunk) == 1 or (
                not won and self._retry_at.get(keys.vip_lock(chunk[0]), 0) <= ctx.now
            ):
                won = [
                    ip
                    for ip in chunk
                    if self._txn(keys.vip_lock(ip), ctx.now, self.store.claim, ctx.lease_id)
                ]
            for ip in won:
                self._acquired(ip, ctx.now)
                ctx.wake = 0.0

    def _acquired(self, ip: str, now: float) -> None:
        previous = self._last_holder.get(ip, "")
        self.counters.acquisitions += 1
        if previous and previous != self.hostname:
            self.counters.failovers += 1
        log.info(
            "vip lock acquired ip=%s waited_s=%.3f previous=%s",
            ip,
            now - self._free_since.get(ip, now),
            previous or "-",
        )
        self._last_holder[ip] = self.hostname

    def _rebind(self, ctx: StepContext) -> None:
        assert self.store is not None
        for ip, old in ctx.plan.rebind.items():
            key = keys.vip_lock(ip)
            if (
                ctx.lease_id
                and ctx.alive
                and self._can_txn(key, ctx.now)
                and self._txn(key, ctx.now, self.store.rebind, old, ctx.lease_id)
            ):
                log.info("vip lock rebound ip=%s old_lease=%x lease=%x", ip, old, ctx.lease_id)

    def _release_confirmed(self, ctx: StepContext, ip: str, rel: _Release) -> bool:
        """The applier has matched a desired set without ``ip`` and shows it unbound."""
        inp = ctx.inp
        if not inp.applier_expected:
            return True
        if not rel.rev or inp.applied_rev < rel.rev or inp.applied is None:
            return False
        item = inp.applied.get(ip)
        return item is None or not item.bound

    def _finish_releases(self, ctx: StepContext) -> None:
        """Delete the lock of a released VIP once the applier confirmed it is gone."""
        assert self.store is not None
        for ip, rel in list(self._releasing.items()):
            h = ctx.locks.get(ip)
            if h is None or (h.hostname != self.hostname and self._release_confirmed(ctx, ip, rel)):
                del self._releasing[ip]  # gone with our lease, or another's and ours is off
                continue
            if not self._release_confirmed(ctx, ip, rel):
                waited = ctx.now - rel.started
                if waited >= RELEASE_WARN_S and not rel.warned:
                    rel.warned = True
                    log.warning("vip release waits for the applier ip=%s waited_s=%.1f",
                                ip, waited)  # fmt: skip
                ctx.wake_in(0.5)
                continue
            key = keys.vip_lock(ip)
            if h is None or not self._can_txn(key, ctx.now):
                ctx.wake_in(TXN_RETRY_S)
                continue
            done = self._txn(key, ctx.now, self.store.release, h.lease)
            if done is not None:
                self.counters.releases += 1 if done else 0
                log.info("vip lock released ip=%s after_s=%.3f", ip, ctx.now - rel.started)
                del self._releasing[ip]
            else:
                ctx.wake_in(TXN_RETRY_S)

    def _health_report(self, ctx: StepContext) -> None:
        """This node's check verdicts in etcd (``/lain/networkd/health/<node>``), written
        when a verdict changes, so every node and ``vip list`` see FAILING."""
        assert self.store is not None
        report = {
            ip: (state, detail)
            for ip, (state, _source, detail) in ctx.inp.health.items()
            if state != "UNKNOWN"
        }
        text = keys.encode_health_report(report)
        key = keys.health_key(self.hostname)
        entry = ctx.snap.get(key)
        current = entry.value if entry is not None and entry.lease == ctx.lease_id else None
        if text == current or (not report and entry is None):
            return
        if not (ctx.alive and ctx.lease_id) or ctx.final or not self._can_txn(key, ctx.now):
            return
        if not report and entry is not None:
            done = self._txn(key, ctx.now, self.store.delete_if, entry.value)
        else:
            done = self._txn(key, ctx.now, self.store.put_own, text, ctx.lease_id)
        if done:
            log.info("vip health report written verdicts=%d", len(report))

    # -- 3. port-only mappings ---------------------------------------------------------

    def _port_only_phase(self, ctx: StepContext) -> None:
        assert self.store is not None
        port_desired, served = self._port_only(ctx.inp, ctx.errors)
        if ctx.final:
            return
        ctx.port_desired = port_desired
        store, now = self.store, ctx.now
        for akey in served:
            entry = ctx.snap.get(akey)
            if not (ctx.alive and ctx.lease_id) or not self._can_txn(akey, now):
                continue
            if entry is None:
                self._txn(akey, now, store.claim, ctx.lease_id)
            elif entry.value == self.hostname and entry.lease != ctx.lease_id:
                self._txn(akey, now, store.rebind, entry.lease, ctx.lease_id)
        for akey, entry in ctx.snap.items():
            mine = (
                akey.startswith(keys.APPS_PREFIX)
                and entry.value == self.hostname
                and akey not in served
            )
            if (
                mine
                and self._can_txn(akey, now)
                and self._txn(akey, now, store.release, entry.lease)
            ):
                log.info("apps key removed key=%s", akey)

    def _port_only(
        self, inp: Inputs, errors: Dict[str, ConfigError]
    ) -> Tuple[Dict[str, DesiredVip], Dict[str, DesiredVip]]:
        """Desired DNAT-only entries for port-only keys of procs running here, and the
        apps keys that announce them."""
        desired: Dict[str, DesiredVip] = {}
        served: Dict[str, DesiredVip] = {}
        for item_key, cfg in inp.vips.items():
            if cfg.port == 0:
                continue
            container = inp.containers.get(f"{cfg.app}/{cfg.proc}")
            if container is None or self.hostname in cfg.excluded_nodes:
                continue
            ip = cfg.ip
            if ip in ("0.0.0.0", "::"):
                ip = self.node_address
                if not ip:
                    key = keys.VIPS_PREFIX + item_key
                    errors[key] = ConfigError(
                        key=key, reason="port-only key for 0.0.0.0 but the node address is unknown"
                    )
                    continue
            entry = DesiredVip(
                ip=ip,
                app=cfg.app,
                proc=cfg.proc,
                container_ip=container.container_ip,
                ports=list(cfg.ports),
                bind=False,
            )
            desired[keys.join_ip_port(ip, cfg.port)] = entry
            served[keys.apps_key(cfg.app, cfg.proc, ip, cfg.port)] = entry
        return desired, served

    # -- 4. leadership and jobs --------------------------------------------------------

    def _leadership(self, ctx: StepContext) -> None:
        assert self.mirror is not None and self.store is not None
        store, now, me = self.store, ctx.now, self.hostname
        lkey = keys.LEADER
        leader = ctx.snap.get(lkey)
        if ctx.final:
            ours = leader is not None and leader.value == me and self._can_txn(lkey, now)
            if ours and leader is not None and self._txn(lkey, now, store.release, leader.lease):
                log.info("leadership resigned hostname=%s", me)
        elif ctx.alive and ctx.lease_id and self._can_txn(lkey, now):
            if leader is None:
                if self._txn(lkey, now, store.claim, ctx.lease_id):
                    log.info("leadership acquired hostname=%s", me)
            elif leader.value == me and leader.lease != ctx.lease_id:
                self._txn(lkey, now, store.rebind, leader.lease, ctx.lease_id)
        leader = self.mirror.get(lkey)
        is_leader = bool(
            leader is not None
            and leader.value == me
            and leader.lease == ctx.lease_id
            and ctx.alive
            and not ctx.final
        )
        if is_leader != self._was_leader:
            log.info("leadership %s hostname=%s", "gained" if is_leader else "lost", me)
            self._was_leader = is_leader
            assert self.jobs is not None
            self.jobs.reset()
            self._job_retry_at = 0.0
        ctx.leader = {
            "leader": LeaderInfo(
                hostname=leader.value if leader is not None else "", is_self=is_leader
            )
        }
        self._run_jobs(ctx, is_leader)

    def _run_jobs(self, ctx: StepContext, is_leader: bool) -> None:
        assert self.jobs is not None
        inp = ctx.inp
        if inp.streamrouter is not None:
            self._pool_seen.update(inp.streamrouter.ips)
        current_pool = set(inp.streamrouter.ips) if inp.streamrouter is not None else set()
        job_result = compute_jobs(
            self.config,
            inp.leaders,
            inp.apps,
            inp.streamrouter,
            sorted(self._pool_seen - current_pool),
        )
        for key, reason in job_result.errors.items():
            ctx.errors[key] = ConfigError(key=key, reason=reason)
        if is_leader and ctx.now >= self._job_retry_at and self.jobs.pending(job_result):
            try:
                ok = self.jobs.run(job_result, ctx.lease_id)
            except Exception as exc:
                self.txn_channel.failed(exc)
                log.warning("leader job failed reason=%s", exc)
                ok = False
            if not ok:
                self._job_retry_at = ctx.now + JOB_RETRY_S
                ctx.wake_in(JOB_RETRY_S)

    def _cluster_and_commands(self, ctx: StepContext) -> None:
        """The cluster-wide view of the VIPs, and the operators' commands that need it."""
        assert self.commands is not None
        if ctx.now >= self._cluster_due or self.commands.waiting():
            reports = {
                key[len(keys.HEALTH_PREFIX) :]: keys.parse_health_report(entry.value)
                for key, entry in ctx.snap.items()
                if key.startswith(keys.HEALTH_PREFIX)
            }
            self._cluster = cluster_view(
                ctx.configs,
                ctx.locks,
                ctx.live,
                {k: list(v.nodes) for k, v in ctx.inp.proc_nodes.items()},
                reports,
                ctx.moves,
                self.hostname,
                ctx.plan.status,
            )
            self._cluster_due = ctx.now + CLUSTER_VIEW_S
        else:  # this step's inputs are shown once the interval ends
            ctx.wake_in(self._cluster_due - ctx.now)
        ctx.cluster = self._cluster
        self.commands.step(ctx.configs, ctx.cluster, ctx.locks, ctx.lease_id, ctx.alive)
        if self.commands.pending:
            ctx.wake_in(0.05)

    # -- 5. final stop and lease retirement --------------------------------------------

    def _final_stop(self, ctx: StepContext) -> None:
        """Final stop: once every lock is released, revoke the lease."""
        if not ctx.final or self._final_done:
            return
        assert self.mirror is not None
        mine_left = [
            ip for ip, h in _locks(self.mirror.snapshot()).items() if h.hostname == self.hostname
        ]
        if not mine_left:
            self.keeper.revoke()
            self._final_done = True
        else:
            ctx.wake_in(0.05)

    def _retire_lease(self, ctx: StepContext) -> None:
        """After a TTL change: revoke the old lease once no key of ours is bound to it."""
        old = self.keeper.retiring_id
        if not old or ctx.final or not ctx.alive:
            return
        assert self.mirror is not None
        left = [k for k, e in self.mirror.snapshot().items() if e.lease == old]
        if left:
            ctx.wake_in(0.2)
            return
        if self.keeper.retire():
            log.info("lease retired id=%x keys moved to lease=%x", old, ctx.lease_id)

    # -- 6. outputs --------------------------------------------------------------------

    def _publish(self, ctx: StepContext) -> None:
        status: Dict[str, VipStatus] = {}
        remaining = float(self.keeper.ttl) if ctx.alive else 0.0
        for ip, (state, owner) in ctx.plan.status.items():
            cfg = ctx.configs[ip]
            status[ip] = VipStatus(
                ip=ip,
                owner=owner,
                state=state,
                ports=list(cfg.ports),
                lease_ttl_s=remaining if state == OWNER else 0.0,
            )
        all_desired: Dict[str, DesiredVip] = dict(ctx.desired)
        all_desired.update(ctx.port_desired)
        self._set_outputs(
            Outputs(
                ready=True,
                desired=all_desired,
                vip_status=status,
                leader=ctx.leader,
                config_errors=ctx.errors,
                counters=dataclasses.replace(self.counters),
                final_done=self._final_done,
                cluster=ctx.cluster,
                generation=ctx.generation,
            )
        )
        # A release waits for the applier to confirm the first revision without the VIP.
        version = self.outputs().version
        for ip in ctx.new_releases:
            rel = self._releasing.get(ip)
            if rel is not None and not rel.rev:
                rel.rev = version

    def _publish_not_ready(self, inp: Inputs, alive: bool, generation: int) -> None:
        # Fencing strict with no etcd: there is nothing to own; publish port-only entries
        # once the lease could have expired, so the applier is not left waiting.
        if (
            self.config.vip_fencing == "strict"
            and not alive
            and inp.watcher_synced
            and self._clock() - self._started_at > self.keeper.ttl
        ):
            errors: Dict[str, ConfigError] = {}
            port_desired, _ = self._port_only(inp, errors)
            self._set_outputs(
                Outputs(
                    ready=True, desired=port_desired, config_errors=errors, generation=generation
                )
            )

    def _set_outputs(self, out: Outputs) -> None:
        with self._lock:
            prev = self._outputs
            same = (
                prev.ready == out.ready
                and prev.desired == out.desired
                and prev.vip_status == out.vip_status
                and prev.leader == out.leader
                and prev.config_errors == out.config_errors
                and prev.counters == out.counters
                and prev.final_done == out.final_done
                and prev.cluster == out.cluster
                and prev.generation == out.generation
            )
            if same:
                return
            out.version = prev.version + 1
            self._outputs = out
        self._notify_output()

    def _lease_changed(self) -> None:
        self._wake.set()
        self._notify_output()  # the lease's state is published as it is

    def _notify_output(self) -> None:
        """Wake the thread that publishes: new outputs, a command's result, a renewal."""
        if self._on_output is not None:
            self._on_output()


def health_verdict(cfg: VipConfig, inp: Inputs) -> Optional[str]:
    """The verdict of ``cfg``'s health check on this node, None when it has none (a check
    from etcd, or a check file of this node that the checker reports)."""
    if not inp.checks_enabled:
        return None
    state, source, _detail = inp.health.get(cfg.ip, ("UNKNOWN", "", ""))
    if cfg.health is None and source != "local":
        return None
    return state


def _locks(snap: Dict[str, Entry]) -> Dict[str, Holder]:
    locks: Dict[str, Holder] = {}
    for key, entry in snap.items():
        if key.startswith(keys.VIP_LOCKS_PREFIX):
            ip = keys.parse_vip_lock(key)
            if ip is not None:
                locks[ip] = Holder(entry.value, entry.lease)
    return locks
