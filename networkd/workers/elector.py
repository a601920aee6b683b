"""The ``elector`` worker (unprivileged): node lease, VIP locks, leader and leader jobs.

Main thread: bus only (ZeroMQ sockets belong to the thread that made them). It mirrors
the watcher's cluster state and the applier's ``state.applied``, hands them to the
controller thread (``networkd.election.core``), and publishes what the controller
decided: ``state.desired``, ``state.vip_status``, ``state.leader``, ``state.lease``,
``state.config_errors``. ``state.desired`` is created only once the controller knows
which locks are ours, so the applier never sees an empty set from a restarted elector.

Fencing ``strict`` is enforced here, not in the controller: whenever the lease is not
alive the bound VIPs leave the published desired set, even while the controller thread
is stuck in a slow etcd call.

Stops: a plain restart (TERM/HUP) touches nothing and keeps the lease (the next elector
resumes it). A final stop (INT) releases every VIP in order (desired empty, applier
shows them gone, locks deleted), resigns leadership and revokes the lease.
"""

import dataclasses
import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from networkd.bus.messages import (
    AppliedRevision,
    DesiredRevision,
    DuplicateClaim,
    LeaseHealth,
    VipCommand,
)
from networkd.election.core import ElectorCore, Inputs, Outputs
from networkd.election.etcdconn import connect
from networkd.wakeup import Wakeup, sleep_ms
from networkd.workers.base import WorkerContext

WATCHER_TOPICS = [
    "state.vips",
    "state.containers",
    "state.proc_nodes",
    "state.leaders",
    "state.apps",
    "state.streamrouter",
    "state.sync",
]
APPLIER_TOPICS = ["state.applied", "vip.duplicate"]
CHECKER_TOPICS = ["state.health"]
API_TOPICS = ["command."]
LEASE_REPUBLISH_S = 5.0
BUSY_POLL_MS = 50  # during the final stop, and while operators' commands run
IDLE_POLL_MS = 1000  # longest sleep of the main loop (see poll_ms)


def lease_path(ctx: WorkerContext) -> str:
    return os.path.join(ctx.state_dir, "lease")


def applier_runs(workers: Sequence[str]) -> bool:
    """Whether an applier confirms releases (``-workers`` may leave it out in tests)."""
    return not workers or "applier" in workers


def checker_runs(workers: Sequence[str]) -> bool:
    return not workers or "checker" in workers


def confirmed_revision(sub: Any, epoch: float) -> int:
    """The desired revision the applier confirmed for this elector (0: none)."""
    items = sub.state("applier", "state.applied_rev") or {}
    item = items.get("rev")
    if isinstance(item, AppliedRevision) and item.epoch == epoch:
        return int(item.rev)
    return 0


def read_inputs(sub: Any, epoch: float = 0.0, applier_expected: bool = True) -> Inputs:
    def copy(sender: str, topic: str) -> Optional[Dict[str, Any]]:
        items = sub.state(sender, topic)
        return dict(items) if items is not None else None

    vips = copy("watcher", "state.vips")
    containers = copy("watcher", "state.containers")
    sync = copy("watcher", "state.sync") or {}
    in_sync = any(getattr(item, "in_sync", False) for item in sync.values())
    pool = (copy("watcher", "state.streamrouter") or {}).get("pool")
    return Inputs(
        vips=vips or {},
        containers=containers or {},
        proc_nodes=copy("watcher", "state.proc_nodes") or {},
        leaders=copy("watcher", "state.leaders") or {},
        apps=copy("watcher", "state.apps") or {},
        streamrouter=pool,
        watcher_synced=in_sync and vips is not None and containers is not None,
        applied=copy("applier", "state.applied"),
        applied_rev=confirmed_revision(sub, epoch),
        applier_expected=applier_expected,
    )


class ElectorPublisher:
    """Publishes the controller's outputs; creates ``state.desired`` only when ready."""

    def __init__(self, ctx: WorkerContext, pub: Any, core: ElectorCore) -> None:
        self.ctx = ctx
        self.pub = pub
        self.core = core
        self.strict = ctx.config.vip_fencing == "strict"
        self.lease_topic = pub.state("state.lease")
        self.counters_topic = pub.state("state.elector")
        self.desired_topic: Any = None
        self.desired_rev_topic: Any = None
        self.status_topic: Any = None
        self.cluster_topic: Any = None
        self.leader_topic: Any = None
        self.errors_topic: Any = None
        self._version = -1
        self._alive: Optional[bool] = None
        self._lease_at = 0.0
        self._lease_seen: Optional[LeaseHealth] = None
        self._errors_seen: Dict[str, Any] = {}

    def publish(self) -> Outputs:
        if self.core.commands is not None:
            for result in self.core.commands.results():
                self.pub.event("command.done", result)
        out = self.core.outputs()
        # Outputs computed under an earlier lease (it expired: its locks are gone) must not
        # be published as if the new lease backed them: the applier would take back the
        # VIPs it yielded. Until the controller has stepped with the new lease, the lease
        # stays unpublished (the applier's copy of the old one runs out) and counts as dead.
        current = out.generation == self.core.keeper.generation
        alive = current and self.core.keeper.alive()
        if current:
            self._publish_lease()
        if not out.ready:
            return out
        if out.version == self._version and alive == self._alive:
            return out
        self._version = out.version
        self._alive = alive
        first = self.desired_topic is None
        if first:
            self.desired_topic = self.pub.state("state.desired")
            self.desired_rev_topic = self.pub.state("state.desired_rev")
            self.status_topic = self.pub.state("state.vip_status")
            self.cluster_topic = self.pub.state("state.vip_cluster")
            self.leader_topic = self.pub.state("state.leader")
            self.errors_topic = self.pub.state("state.config_errors")
        desired = out.desired
        if self.strict and not alive:
            desired = {k: v for k, v in desired.items() if not v.bind}
        self.desired_topic.replace(desired)
        # After the desired set, on the same socket: whoever sees this revision has seen
        # the set it stands for.
        self.desired_rev_topic.set("rev", DesiredRevision(rev=out.version))
        self.status_topic.replace(out.vip_status)
        self.cluster_topic.replace(out.cluster)
        self.leader_topic.replace(out.leader)
        for key, err in out.config_errors.items():
            if self._errors_seen.get(key) != err:
                self.ctx.log.warning("config rejected key=%s reason=%s", key, err.reason)
                self.pub.event("config.error", err)
        self._errors_seen = dict(out.config_errors)
        self.errors_topic.replace(out.config_errors)
        self.counters_topic.set("counters", out.counters)
        if first:
            # Subscribers that joined before these topics existed have no snapshot and
            # ignore deltas: send the full first state as a snapshot right away.
            for topic in (
                self.desired_topic,
                self.desired_rev_topic,
                self.status_topic,
                self.cluster_topic,
                self.leader_topic,
                self.errors_topic,
            ):
                topic.send_snapshot()
        return out

    def _publish_lease(self) -> None:
        health = self.core.keeper.health()
        now = time.monotonic()
        seen = self._lease_seen
        changed = (
            seen is None
            or seen.alive != health.alive
            or seen.lease_id != health.lease_id
            or seen.keepalive_failures != health.keepalive_failures
            or seen.valid_until != health.valid_until  # each renewal moves the deadline
        )
        if changed or now - self._lease_at >= LEASE_REPUBLISH_S:
            self._lease_seen = health
            self._lease_at = now
            self.lease_topic.set("lease", health)


def main(ctx: WorkerContext) -> int:
    config = ctx.config
    pub = ctx.publisher()
    sub = ctx.subscriber(
        {
            "watcher": WATCHER_TOPICS,
            "applier": APPLIER_TOPICS,
            "checker": CHECKER_TOPICS,
            "api": API_TOPICS,
        }
    )
    wakeup = Wakeup()
    core = ElectorCore(
        config,
        ctx.hostname,
        ctx.node_address,
        lease_path(ctx),
        connect=lambda timeout: connect(config, timeout),
        on_output=wakeup.poke,
    )
    core.start()
    out_pub = ElectorPublisher(ctx, pub, core)
    inputs = InputPump(
        sub, core, wakeup, pub.epoch, applier_runs(config.workers), checker_runs(config.workers)
    )
    ctx.log.info(
        "elector started hostname=%s ttl_s=%s fencing=%s lease=%x resumed=%s",
        ctx.hostname,
        config.vip_ttl,
        config.vip_fencing,
        core.keeper.lease_id,
        core.keeper.resumed,
    )
    try:
        wake = [pub.socket, ctx.stop_wakeup.rfd]  # new subscribers, a stop
        while not ctx.stopping:
            inputs.pump(poll_ms(core), wake)
            out_pub.publish()
            pub.poll()
            if core.keeper.switched_endpoint:
                # The lease lives on through another endpoint; restart (resuming it) so
                # that the mirror and the controller reconnect too. Crash-only: the
                # supervisor starts us again at once and no VIP moves.
                ctx.log.warning(
                    "elector restarting to reconnect endpoint=%s", core.keeper.switched_endpoint
                )
                return 0
        if ctx.final:
            ctx.log.info("elector final stop: releasing VIPs, resigning, revoking the lease")
            core.begin_final()
            deadline = time.monotonic() + max(2.0, min(config.stop_timeout - 1.0, 8.0))
            while time.monotonic() < deadline:
                inputs.pump()
                out = out_pub.publish()
                pub.poll()
                if out.final_done:
                    break
            else:
                ctx.log.warning("elector final stop timed out: lease left to expire")
            # Let the last deltas reach the subscribers.
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                pub.poll(20)
    finally:
        core.stop()
        pub.close()
        sub.close()
        wakeup.close()
    return 0


def poll_ms(core: ElectorCore) -> int:
    """How long the main loop may sleep. Outputs, command results, lease renewals and
    changes poke its wakeup; what time alone changes is when a live lease stops being
    valid (``alive`` turns false, strict fencing then withdraws the binds)."""
    if core.commands is not None and core.commands.waiting():
        return BUSY_POLL_MS
    health = core.keeper.health()
    due = health.valid_until if health.alive else None
    return sleep_ms(time.monotonic(), [due], 1, IDLE_POLL_MS)


class HealthVerdicts:
    """The checker's verdicts as the elector uses them: a verdict stays until a newer
    definite one (PASSING or FAILING) replaces it, so a restarting checker (whose items
    are UNKNOWN, or absent while its mirror resyncs) moves no VIP."""

    def __init__(self) -> None:
        self.known: Dict[str, Tuple[str, str, str]] = {}  # ip -> (verdict, source, detail)

    def update(self, items: Optional[Dict[str, Any]]) -> Dict[str, Tuple[str, str, str]]:
        if items is None:
            return dict(self.known)  # the checker restarts: keep what we had
        fresh: Dict[str, Tuple[str, str, str]] = {}
        for ip, item in items.items():
            state = getattr(item, "state", "UNKNOWN")
            source = getattr(item, "source", "")
            detail = getattr(item, "detail", "")
            previous = self.known.get(ip)
            if state == "UNKNOWN" and previous is not None and previous[1] == source:
                state, detail = previous[0], previous[2]
            fresh[ip] = (state, source, detail)
        self.known = fresh
        return dict(fresh)


class InputFeed:
    """Feeds the controller. While the watcher is not in sync (restarting, resyncing after
    an etcd outage) the last synced cluster state is kept: a restarting watcher must not
    look like "every VIP was deleted"."""

    def __init__(
        self,
        sub: Any,
        core: ElectorCore,
        epoch: float,
        applier_expected: bool,
        checks_enabled: bool = True,
    ) -> None:
        self.checks_enabled = checks_enabled
        self.sub = sub
        self.core = core
        self.epoch = epoch
        self.applier_expected = applier_expected
        self.last_synced: Optional[Inputs] = None
        self.verdicts = HealthVerdicts()

    def feed(self) -> None:
        """Hand the controller the bus state as ``sub`` holds it now."""
        inputs = read_inputs(self.sub, self.epoch, self.applier_expected)
        if inputs.watcher_synced:
            self.last_synced = inputs
        elif self.last_synced is not None:
            inputs = dataclasses.replace(
                self.last_synced, applied=inputs.applied, applied_rev=inputs.applied_rev
            )
        inputs.health = self.verdicts.update(self.sub.state("checker", "state.health"))
        inputs.checks_enabled = self.checks_enabled
        self.core.set_inputs(inputs)


class InputPump(InputFeed):
    """Polls the bus; feeds the controller when a state topic changed."""

    def __init__(
        self,
        sub: Any,
        core: ElectorCore,
        wakeup: Wakeup,
        epoch: float,
        applier_expected: bool,
        checks_enabled: bool = True,
    ) -> None:
        super().__init__(sub, core, epoch, applier_expected, checks_enabled)
        self.wakeup = wakeup

    def pump(self, timeout_ms: int = BUSY_POLL_MS, extra: Sequence[Any] = ()) -> None:
        envelopes = self.sub.poll(timeout_ms=timeout_ms, extra=[self.wakeup.rfd, *extra])
        self.wakeup.drain()
        if not envelopes:
            return
        changed = False
        for env in envelopes:
            if env.topic == "vip.duplicate" and isinstance(env.body, DuplicateClaim):
                self.core.note_duplicate(env.body.ip, env.body.yielded)
            elif env.topic == "command.vip" and isinstance(env.body, VipCommand):
                if self.core.commands is not None:
                    self.core.commands.submit(env.body)
                    self.core.poke()
            elif env.topic.startswith("state."):
                changed = True
        if changed:
            self.feed()
