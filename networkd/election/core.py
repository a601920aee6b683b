"""The elector's controller: one thread that owns every etcd interaction but the lease.

The worker's main thread (bus I/O, never blocked by etcd) hands the latest bus state in
with ``set_inputs`` and takes ``outputs()`` out; this thread wakes on any change (bus
input, lease, mirror event) or timer, and runs ``step``:

1. the presence key ``/lain/networkd/nodes/<hostname>`` (bound to the lease; how other
   nodes know this one is alive when they count eligible nodes for fair spreading);
2. the floating VIP plan (``plan.plan_vips``): keep, compete after a delay, rebind,
   release in order (out of the desired set, wait until the applier's ``state.applied``
   shows it gone or ~1 s passed, then delete the lock if it is still ours);
3. port-only mappings: desired entries without address, and the apps keys;
4. leader election on ``/lain/networkd/leader`` and, while leader, the leader jobs.

Nothing is published until the mirror of ``/lain/networkd/`` and the watcher's state are
both loaded: a restarted elector first learns which locks are its own, then publishes
them, so a restart never makes the applier drop an address.
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
    VipConfig,
    VipStatus,
)
from networkd.config import Config
from networkd.election.eligibility import OWNER, DockerCheck, RunningCheck, local_eligibility
from networkd.election.lease import LeaseKeeper
from networkd.election.mirror import Entry, KeyMirror
from networkd.election.plan import Holder, PlanInput, plan_vips
from networkd.election.store import OwnedKeys
from networkd.jobs.runner import JobRunner, compute_jobs

log = logging.getLogger("networkd.elector")

NODES_PREFIX = keys.NODES_PREFIX
RELEASE_WAIT_S = 1.0
GIVEAWAY_BACKOFF_S = 60.0
TXN_RETRY_S = 0.5
CLAIM_BATCH = 64  # etcd's default --max-txn-ops is 128 (compares and puts count apart)
JOB_RETRY_S = 1.0


def node_key(hostname: str) -> str:
    return NODES_PREFIX + hostname


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


@dataclasses.dataclass
class _Release:
    deadline: float
    lease: int


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
            on_change=self._wake.set,
            clock=clock,
        )
        self.client: Any = None
        self.mirror: Optional[KeyMirror] = None
        self.store: Optional[OwnedKeys] = None
        self.jobs: Optional[JobRunner] = None
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
        self.counters = ElectorCounters()
        self.steps = 0

    # -- main-thread API ---------------------------------------------------------------

    def start(self) -> None:
        self.client = self._connect(1.0)
        self.mirror = KeyMirror(self.client, keys.NETWORKD_PREFIX, on_change=self._wake.set)
        self.store = OwnedKeys(self.client, self.hostname, self.mirror)
        self.jobs = JobRunner(self.store)
        self.mirror.start()
        self.keeper.start()
        self._thread = threading.Thread(target=self._run, name="elector-core", daemon=True)
        self._thread.start()

    def set_inputs(self, inputs: Inputs) -> None:
        with self._lock:
            self._inputs = inputs
            self._inputs_version += 1
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
        """Stop the threads. The lease is left alone (a restart resumes it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.keeper.stop()
        if self.mirror is not None:
            self.mirror.stop()
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass

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
            self._retry_at[key] = now + TXN_RETRY_S
            if key not in self._warned:
                self._warned.add(key)
                log.warning("etcd transaction failed key=%s reason=%s", key, exc)
            return None
        self._warned.discard(key)
        self._retry_at.pop(key, None)
        if result.succeeded:
            self._wait_rev.pop(key, None)
        else:
            self._wait_rev[key] = result.revision
        return bool(result.succeeded)

    def _claim(self, ips: List[str], lease_id: int, now: float) -> List[str]:
        """Claim several free locks in one transaction; [] when any was taken meanwhile."""
        assert self.store is not None
        lock_keys = [keys.vip_lock(ip) for ip in ips]
        try:
            result = self.store.claim_all(lock_keys, lease_id)
        except Exception as exc:
            for key in lock_keys:
                self._retry_at[key] = now + TXN_RETRY_S
            log.warning("etcd transaction failed keys=%d reason=%s", len(lock_keys), exc)
            return []
        return list(ips) if result.succeeded else []

    def step(self) -> None:
        assert self.mirror is not None and self.store is not None and self.jobs is not None
        store = self.store
        now = self._clock()
        self.steps += 1
        with self._lock:
            inp = self._inputs
            final = self._final
            yielded = set(self._yielded)
        lease_id = self.keeper.lease_id
        alive = self.keeper.alive()
        generation = self.keeper.generation
        if generation != self._generation:
            self._generation = generation
            self._wait_rev.clear()
            self._retry_at.clear()
        wake = 1.0
        errors: Dict[str, ConfigError] = {}

        if not self.mirror.synced:
            self._publish_not_ready(inp, alive)
            self._next_wake = 0.2
            return
        snap = self.mirror.snapshot()
        me = self.hostname

        # 1. presence
        if alive and lease_id and not final:
            pkey = node_key(me)
            entry = snap.get(pkey)
            if entry is None and self._can_txn(pkey, now):
                self._txn(pkey, now, store.claim, lease_id)
            elif (
                entry is not None
                and entry.value == me
                and entry.lease != lease_id
                and self._can_txn(pkey, now)
            ):
                self._txn(pkey, now, store.rebind, entry.lease, lease_id)

        if not self._ready:
            if not inp.watcher_synced:
                self._publish_not_ready(inp, alive)
                self._next_wake = 0.2
                return
            self._ready = True
            log.info(
                "elector ready hostname=%s lease=%x resumed=%s owned=%s",
                me,
                lease_id,
                self.keeper.resumed,
                sorted(ip for ip, h in _locks(snap).items() if h.hostname == me),
            )

        locks = _locks(snap)
        for ip, holder in locks.items():
            self._last_holder[ip] = holder.hostname
        live = {k[len(NODES_PREFIX) :] for k in snap if k.startswith(NODES_PREFIX)}

        # 2. floating VIPs
        configs: Dict[str, VipConfig] = {}
        for cfg in inp.vips.values():
            if cfg.port == 0:
                configs[cfg.ip] = cfg
        local = {
            ip: local_eligibility(cfg, me, inp.containers, self.running)
            for ip, cfg in configs.items()
        }
        for ip in list(self._giveaway_blocked):
            if self._giveaway_blocked[ip] <= now:
                del self._giveaway_blocked[ip]
        for ip in list(yielded):
            h = locks.get(ip)
            if h is not None and h.hostname != me:
                continue  # stays yielded until we own it again
            if h is not None and h.lease == lease_id and alive:
                with self._lock:
                    self._yielded.discard(ip)
                yielded.discard(ip)
        plan = plan_vips(
            PlanInput(
                hostname=me,
                lease_id=lease_id,
                alive=alive and not final,
                fencing=self.config.vip_fencing,
                configs=configs,
                local=local,
                locks=locks,
                live_nodes=live,
                proc_nodes={k: list(v.nodes) for k, v in inp.proc_nodes.items()},
                desired_now=set(self._desired_bind),
                releasing=set(self._releasing),
                yielded=yielded,
                giveaway_blocked=set(self._giveaway_blocked),
                over_share_delay=max(2.0, 2 * self.config.vip_ttl),
            )
        )
        if final:
            plan.keep.clear()
            plan.compete.clear()
            plan.rebind.clear()
            for ip, h in locks.items():
                if h.hostname == me and ip not in self._releasing:
                    plan.release[ip] = h.lease
            for ip in self._desired_bind:
                plan.release.setdefault(ip, 0)

        desired: Dict[str, DesiredVip] = {}
        for ip, container in plan.keep.items():
            cfg = configs[ip]
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
            reason = (
                "rebalance"
                if ip in plan.giveaway
                else ("stop" if final else "not eligible or not ours")
            )
            log.info("vip release ip=%s reason=%s", ip, reason)
            self._releasing[ip] = _Release(deadline=now + RELEASE_WAIT_S, lease=lease)
            if ip in plan.giveaway:
                self._giveaway_blocked[ip] = now + GIVEAWAY_BACKOFF_S
        for ip in desired:
            if ip not in self._desired_bind:
                log.info("vip owned ip=%s lease=%x", ip, lease_id)
        self._desired_bind = desired

        # compete for free locks (after the spreading delay)
        for ip in list(self._free_since):
            if ip not in plan.compete:
                del self._free_since[ip]
        due: List[str] = []
        for ip, delay in plan.compete.items():
            first = self._free_since.setdefault(ip, now)
            if now < first + delay:
                wake = min(wake, first + delay - now)
            elif lease_id and self._can_txn(keys.vip_lock(ip), now):
                due.append(ip)
        for start in range(0, len(due), CLAIM_BATCH):
            chunk = due[start : start + CLAIM_BATCH]
            won = self._claim(chunk, lease_id, now) if len(chunk) > 1 else []
            if len(chunk) == 1 or (
                not won and self._retry_at.get(keys.vip_lock(chunk[0]), 0) <= now
            ):
                won = [
                    ip for ip in chunk if self._txn(keys.vip_lock(ip), now, store.claim, lease_id)
                ]
            for ip in won:
                previous = self._last_holder.get(ip, "")
                self.counters.acquisitions += 1
                if previous and previous != me:
                    self.counters.failovers += 1
                log.info(
                    "vip lock acquired ip=%s waited_s=%.3f previous=%s",
                    ip,
                    now - self._free_since.get(ip, now),
                    previous or "-",
                )
                wake = 0.0
        for ip, old in plan.rebind.items():
            key = keys.vip_lock(ip)
            if (
                lease_id
                and alive
                and self._can_txn(key, now)
                and self._txn(key, now, store.rebind, old, lease_id)
            ):
                log.info("vip lock rebound ip=%s old_lease=%x lease=%x", ip, old, lease_id)

        # releases: delete the lock once the applier shows the VIP gone (or timeout)
        for ip, rel in list(self._releasing.items()):
            gone = inp.applied is None or ip not in inp.applied
            if not gone and now < rel.deadline:
                wake = min(wake, rel.deadline - now)
                continue
            key = keys.vip_lock(ip)
            h = locks.get(ip)
            if h is None or h.hostname != me:
                del self._releasing[ip]
                continue
            if not self._can_txn(key, now):
                wake = min(wake, TXN_RETRY_S)
                continue
            done = self._txn(key, now, store.release, h.lease)
            if done is not None:
                self.counters.releases += 1 if done else 0
                log.info("vip lock released ip=%s applied_gone=%s", ip, gone)
                del self._releasing[ip]
            else:
                wake = min(wake, TXN_RETRY_S)

        # 3. port-only mappings
        port_desired, served = self._port_only(inp, errors)
        if not final:
            for akey in served:
                entry = snap.get(akey)
                if not (alive and lease_id) or not self._can_txn(akey, now):
                    continue
                if entry is None:
                    self._txn(akey, now, store.claim, lease_id)
                elif entry.value == me and entry.lease != lease_id:
                    self._txn(akey, now, store.rebind, entry.lease, lease_id)
            for akey, entry in snap.items():
                mine = (
                    akey.startswith(keys.APPS_PREFIX) and entry.value == me and akey not in served
                )
                if (
                    mine
                    and self._can_txn(akey, now)
                    and self._txn(akey, now, store.release, entry.lease)
                ):
                    log.info("apps key removed key=%s", akey)
        else:
            port_desired = {}

        # 4. leader election and jobs
        leader = snap.get(keys.LEADER)
        lkey = keys.LEADER
        if final:
            ours = leader is not None and leader.value == me and self._can_txn(lkey, now)
            if ours and leader is not None and self._txn(lkey, now, store.release, leader.lease):
                log.info("leadership resigned hostname=%s", me)
        elif alive and lease_id and self._can_txn(lkey, now):
            if leader is None:
                if self._txn(lkey, now, store.claim, lease_id):
                    log.info("leadership acquired hostname=%s", me)
            elif leader.value == me and leader.lease != lease_id:
                self._txn(lkey, now, store.rebind, leader.lease, lease_id)
        leader = self.mirror.get(lkey)
        is_leader = bool(
            leader is not None
            and leader.value == me
            and leader.lease == lease_id
            and alive
            and not final
        )
        if is_leader != self._was_leader:
            log.info("leadership %s hostname=%s", "gained" if is_leader else "lost", me)
            self._was_leader = is_leader
            self.jobs.reset()
            self._job_retry_at = 0.0
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
            errors[key] = ConfigError(key=key, reason=reason)
        if is_leader and now >= self._job_retry_at and self.jobs.pending(job_result):
            try:
                ok = self.jobs.run(job_result, lease_id)
            except Exception as exc:
                log.warning("leader job failed reason=%s", exc)
                ok = False
            if not ok:
                self._job_retry_at = now + JOB_RETRY_S
                wake = min(wake, JOB_RETRY_S)

        # final stop: once every lock is released, resign and revoke
        if final and not self._final_done:
            mine_left = [ip for ip, h in _locks(self.mirror.snapshot()).items() if h.hostname == me]
            if not self._releasing or not mine_left:
                self.keeper.revoke()
                self._final_done = True
            else:
                wake = min(wake, 0.05)

        # status
        status: Dict[str, VipStatus] = {}
        remaining = float(self.keeper.ttl) if alive else 0.0
        for ip, (state, owner) in plan.status.items():
            cfg = configs[ip]
            status[ip] = VipStatus(
                ip=ip,
                owner=owner,
                state=state,
                ports=list(cfg.ports),
                lease_ttl_s=remaining if state == OWNER else 0.0,
            )
        leader_info = {
            "leader": LeaderInfo(
                hostname=leader.value if leader is not None else "", is_self=is_leader
            )
        }
        all_desired: Dict[str, DesiredVip] = dict(desired)
        all_desired.update(port_desired)
        self._set_outputs(
            Outputs(
                ready=True,
                desired=all_desired,
                vip_status=status,
                leader=leader_info,
                config_errors=errors,
                counters=dataclasses.replace(self.counters),
                final_done=self._final_done,
            )
        )
        self._next_wake = max(0.005, wake)

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

    def _publish_not_ready(self, inp: Inputs, alive: bool) -> None:
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
            self._set_outputs(Outputs(ready=True, desired=port_desired, config_errors=errors))

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
            )
            if same:
                return
            out.version = prev.version + 1
            self._outputs = out
        if self._on_output is not None:
            self._on_output()


def _locks(snap: Dict[str, Entry]) -> Dict[str, Holder]:
    locks: Dict[str, Holder] = {}
    for key, entry in snap.items():
        if key.startswith(keys.VIP_LOCKS_PREFIX):
            ip = keys.parse_vip_lock(key)
            if ip is not None:
                locks[ip] = Holder(entry.value, entry.lease)
    return locks
