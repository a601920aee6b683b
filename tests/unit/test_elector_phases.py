"""The elector controller's phases, without etcd: a key mirror, a store and a lease keeper
in memory, a clock the test moves. Each test drives ``ElectorCore.step`` the way the
controller thread does and checks what it would write and publish."""

import json
from typing import Any, Dict, List, Optional, Set, Tuple

from networkd import keys
from networkd.bus.messages import (
    AppliedVip,
    HealthCheck,
    LocalContainer,
    PortSpec,
    ProcNodes,
    VipCommand,
    VipConfig,
)
from networkd.config import Config
from networkd.election.commands import CommandRunner
from networkd.election.core import ElectorCore, Inputs, node_key
from networkd.election.mirror import Entry
from networkd.election.store import TxnResult
from networkd.jobs.runner import JobRunner
from tests.support.clock import FakeClock

VIP = "10.0.0.1"
LOCK = keys.vip_lock(VIP)


class FakeMirror:
    def __init__(self) -> None:
        self.data: Dict[str, Entry] = {}
        self.revision = 1
        self.synced = True
        self.connected = True
        self.disconnects = 0

    def snapshot(self, prefix: str = "") -> Dict[str, Entry]:
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def get(self, key: str) -> Optional[Entry]:
        return self.data.get(key)

    def put(self, key: str, value: str, lease: int) -> int:
        self.revision += 1
        self.data[key] = Entry(value, lease, self.revision)
        return self.revision

    def delete(self, key: str) -> int:
        self.revision += 1
        self.data.pop(key, None)
        return self.revision


class FakeStore:
    """The transactions of ``OwnedKeys`` against the fake mirror, recording each write."""

    def __init__(self, mirror: FakeMirror, hostname: str) -> None:
        self.mirror = mirror
        self.hostname = hostname
        self.writes: List[Tuple[str, str]] = []
        self.config: Dict[str, str] = {}
        self.revoked: Set[int] = set()  # leases etcd no longer has: writes with them fail

    def _done(self, op: str, key: str, ok: bool) -> TxnResult:
        if ok:
            self.writes.append((op, key))
        return TxnResult(ok, self.mirror.revision)

    def claim(self, key: str, lease_id: int, value: Optional[str] = None) -> TxnResult:
        ok = key not in self.mirror.data and lease_id not in self.revoked
        if ok:
            self.mirror.put(key, value or self.hostname, lease_id)
        return self._done("claim", key, ok)

    def claim_all(self, lock_keys: List[str], lease_id: int) -> TxnResult:
        ok = all(k not in self.mirror.data for k in lock_keys) and lease_id not in self.revoked
        for key in lock_keys if ok else []:
            self.mirror.put(key, self.hostname, lease_id)
        return self._done("claim_all", ",".join(lock_keys), ok)

    def rebind(self, key: str, old: int, lease_id: int, value: Optional[str] = None) -> TxnResult:
        entry = self.mirror.data.get(key)
        ok = entry is not None and entry.value == (value or self.hostname) and entry.lease == old
        if ok:
            self.mirror.put(key, value or self.hostname, lease_id)
        return self._done("rebind", key, ok)

    def release(self, key: str, lease_id: int, value: Optional[str] = None) -> TxnResult:
        entry = self.mirror.data.get(key)
        ok = (
            entry is not None
            and entry.value == (value or self.hostname)
            and entry.lease == lease_id
        )
        if ok:
            self.mirror.delete(key)
        return self._done("release", key, ok)

    def put_own(self, key: str, value: str, lease_id: int) -> TxnResult:
        self.mirror.put(key, value, lease_id)
        return self._done("put_own", key, True)

    def create(self, key: str, value: str, lease_id: int) -> TxnResult:
        return self.claim(key, lease_id, value)

    def delete_if(self, key: str, expected: str) -> TxnResult:
        entry = self.mirror.data.get(key)
        ok = entry is not None and entry.value == expected
        if ok:
            self.mirror.delete(key)
        return self._done("delete_if", key, ok)

    def put_config(self, key: str, value: str) -> None:
        self.config[key] = value
        self.writes.append(("put_config", key))

    def delete_config(self, key: str) -> bool:
        self.writes.append(("delete_config", key))
        return self.config.pop(key, None) is not None

    def fenced_put(self, *args: Any) -> TxnResult:
        return TxnResult(True, self.mirror.revision)

    def fenced_delete(self, *args: Any) -> TxnResult:
        return TxnResult(True, self.mirror.revision)

    def read(self, key: str) -> Optional[bytes]:
        return None


class FakeKeeper:
    def __init__(self, lease_id: int = 7) -> None:
        self.lease_id = lease_id
        self.generation = 1
        self.lost = 0
        self.retiring_id = 0
        self.ttl = 2.0
        self.resumed = False
        self.is_alive = True
        self.revoked = False

    def alive(self) -> bool:
        return self.is_alive

    def revoke(self) -> bool:
        self.revoked = True
        return True

    def retire(self) -> bool:
        self.retiring_id = 0
        return True

    def stop(self, renew_first: bool = False) -> None:
        pass


def make(hostname: str = "n1") -> Tuple[ElectorCore, FakeMirror, FakeStore, FakeKeeper, FakeClock]:
    clock = FakeClock()
    core = ElectorCore(
        Config(vip_ttl=2.0, docker_endpoint=""),
        hostname,
        "10.0.0.11",
        "/nonexistent/lease",
        connect=lambda timeout: None,
        clock=clock,
    )
    mirror, keeper = FakeMirror(), FakeKeeper()
    store = FakeStore(mirror, hostname)
    core.mirror = mirror  # type: ignore[assignment]
    core.store = store  # type: ignore[assignment]
    core.keeper = keeper  # type: ignore[assignment]
    core.jobs = JobRunner(store)  # type: ignore[arg-type]
    core.commands = CommandRunner(store, clock)
    core._started_at = clock.now - 100  # past the start-up grace
    return core, mirror, store, keeper, clock


def vip(health: Optional[HealthCheck] = None, excluded: Tuple[str, ...] = ()) -> VipConfig:
    return VipConfig(
        VIP, "web", "worker", [PortSpec(80, "tcp", 8080)], list(excluded), health=health
    )


def inputs(**overrides: Any) -> Inputs:
    values: Dict[str, Any] = dict(
        vips={VIP: vip()},
        containers={
            "web/worker": LocalContainer("web", "worker", 1, "c1", "172.20.0.5", 8080, "n1", "")
        },
        proc_nodes={"web/worker": ProcNodes("web", "worker", ["n1", "n2"])},
        watcher_synced=True,
        applier_expected=True,
    )
    values.update(overrides)
    return Inputs(**values)


def run(core: ElectorCore, clock: FakeClock, inp: Inputs, seconds: float = 0.0) -> None:
    """Steps as the controller thread runs them, for ``seconds`` of the fake clock."""
    core.set_inputs(inp)
    end = clock.now + seconds
    while True:
        core.step()
        if clock.now >= end:
            return
        clock.now += 0.05


def test_presence_then_a_free_vip_is_claimed_and_desired() -> None:
    core, mirror, store, _, clock = make()
    run(core, clock, inputs(), seconds=1.0)
    assert ("claim", node_key("n1")) in store.writes
    assert mirror.data[LOCK] == Entry("n1", 7, mirror.data[LOCK].mod_revision)
    out = core.outputs()
    assert out.ready and set(out.desired) == {VIP} and out.desired[VIP].container_ip == "172.20.0.5"
    assert out.vip_status[VIP].state == "OWNER"
    writes = len(store.writes)
    run(core, clock, inputs(), seconds=2.0)
    assert len(store.writes) == writes  # steady state: no etcd writes


def test_a_lock_is_deleted_only_after_the_applier_confirmed() -> None:
    core, mirror, store, _, clock = make()
    run(core, clock, inputs(), seconds=1.0)
    applied = {VIP: AppliedVip(VIP, True, 2)}
    bound = inputs(applied=applied, applied_rev=core.outputs().version)
    run(core, clock, bound, seconds=0.2)
    # excluded: out of the desired set at once, the lock stays until the echo comes
    excluded = inputs(vips={VIP: vip(excluded=("n1",))}, applied=applied, applied_rev=0)
    run(core, clock, excluded, seconds=3.0)
    assert VIP not in core.outputs().desired and LOCK in mirror.data
    # an echo of an older revision, or of the new one with the address still bound: no
    release_rev = core.outputs().version
    run(core, clock, inputs(vips=excluded.vips, applied=applied, applied_rev=release_rev - 1), 0.5)
    run(core, clock, inputs(vips=excluded.vips, applied=applied, applied_rev=release_rev), 0.5)
    assert LOCK in mirror.data
    gone = {VIP: AppliedVip(VIP, False, 2)}  # address gone, rules still there: enough
    run(core, clock, inputs(vips=excluded.vips, applied=gone, applied_rev=release_rev), 0.2)
    assert LOCK not in mirror.data and ("release", LOCK) in store.writes


def test_settling_after_a_lost_lease_leaves_another_holders_vip_alone() -> None:
    core, mirror, _store, keeper, clock = make()
    mirror.put(LOCK, "n2", 99)  # n2 holds it
    mirror.put(node_key("n2"), "n2", 99)
    run(core, clock, inputs(), seconds=0.5)
    # etcd stalled: every lease expired, n2's lock went with it; our lease is new
    mirror.delete(LOCK)
    mirror.delete(node_key("n2"))
    keeper.lost, keeper.lease_id, keeper.generation = 1, 8, 2
    run(core, clock, inputs(), seconds=2.0)
    assert LOCK not in mirror.data  # n2 gets its chance to take it back
    run(core, clock, inputs(), seconds=core.settle_s)
    assert mirror.data[LOCK].value == "n1"  # n2 never came back: taken once settled


def test_settling_does_not_wait_for_a_holder_that_stopped_while_we_watched() -> None:
    """Our lease was lost and re-granted (settling); then n2, the holder, stops: its lock
    and presence key go while we watch. Nobody takes it back: we claim it at once rather
    than after the settling period (both standbys of a planned stop were settling after a
    healed link cut, and the VIP had no holder for 1.6 s)."""
    core, mirror, _store, keeper, clock = make()
    mirror.put(LOCK, "n2", 99)
    mirror.put(node_key("n2"), "n2", 99)
    run(core, clock, inputs(), seconds=0.5)
    keeper.lost, keeper.lease_id, keeper.generation = 1, 8, 2  # our own disturbance
    run(core, clock, inputs(), seconds=0.5)
    assert core.settling(clock.now)
    mirror.delete(LOCK)  # n2's planned stop: lock released, then its lease revoked
    mirror.delete(node_key("n2"))
    run(core, clock, inputs(), seconds=0.2)
    assert core.settling(clock.now)
    assert mirror.data[LOCK].value == "n1"


def test_a_mass_expiry_seen_before_our_own_loss_is_no_departure() -> None:
    """etcd resumed after a stall and revoked every lease at once; the watch delivers the
    deletions (n2's lock and presence, and our own presence) before our keeper learns
    that our lease went too. n2 may well be fine: we still leave its lock to it while
    settling."""
    core, mirror, store, keeper, clock = make()
    mirror.put(LOCK, "n2", 99)
    mirror.put(node_key("n2"), "n2", 99)
    run(core, clock, inputs(), seconds=0.5)
    store.revoked.add(7)  # our lease went in the same burst
    mirror.delete(LOCK)
    mirror.delete(node_key("n2"))
    mirror.delete(node_key("n1"))
    run(core, clock, inputs(), seconds=0.01)
    keeper.lost, keeper.lease_id, keeper.generation = 1, 8, 2
    run(core, clock, inputs(), seconds=2.0)
    assert core.settling(clock.now)
    assert LOCK not in mirror.data


def test_a_failing_check_releases_and_never_contends() -> None:
    core, mirror, _, _, clock = make()
    check = HealthCheck("tcp", port=8080)
    passing = {VIP: ("PASSING", "etcd", "connected")}
    run(core, clock, inputs(vips={VIP: vip(check)}, health=passing), seconds=1.0)
    assert mirror.data[LOCK].value == "n1"
    failing = {VIP: ("FAILING", "etcd", "connect refused")}
    run(core, clock, inputs(vips={VIP: vip(check)}, health=failing), seconds=0.5)
    assert core.outputs().vip_status[VIP].state == "FAILING"
    assert VIP not in core.outputs().desired
    report = json.loads(mirror.data[keys.health_key("n1")].value)
    assert report == {VIP: ["FAILING", "connect refused"]}
    # released (echo with the address gone), then never contended while failing
    gone = {VIP: AppliedVip(VIP, False, 0)}
    rev = core.outputs().version
    run(
        core,
        clock,
        inputs(vips={VIP: vip(check)}, health=failing, applied=gone, applied_rev=rev),
        5,
    )
    assert LOCK not in mirror.data
    # no check verdict at all (UNKNOWN): not eligible either
    unknown = {VIP: ("UNKNOWN", "etcd", "")}
    run(core, clock, inputs(vips={VIP: vip(check)}, health=unknown, applied=gone), 5)
    assert LOCK not in mirror.data


def test_a_planned_move_releases_the_owner_and_answers_when_the_lock_moved() -> None:
    core, mirror, _store, _, clock = make()
    mirror.put(node_key("n2"), "n2", 99)
    run(core, clock, inputs(), seconds=1.0)
    assert mirror.data[LOCK].value == "n1"
    # no other node reported FAILING: n2 is STANDBY in the cluster view
    view = core.outputs().cluster[VIP]
    assert {s.node: s.state for s in view.nodes} == {"n1": "OWNER", "n2": "STANDBY"}
    assert core.commands is not None
    core.commands.submit(VipCommand("c1", "move", VIP, to="n3"))
    core.commands.submit(VipCommand("c2", "move", VIP))
    run(core, clock, inputs(applied={VIP: AppliedVip(VIP, True, 2)}), seconds=0.1)
    first = core.commands.results()
    assert [(r.id, r.ok, r.status) for r in first] == [("c1", False, 409)]
    assert keys.move_key(VIP) in mirror.data and VIP not in core.outputs().desired
    rev = core.outputs().version
    run(core, clock, inputs(applied={VIP: AppliedVip(VIP, False, 0)}, applied_rev=rev), 0.2)
    assert LOCK not in mirror.data  # released in order; n1 does not take it back
    mirror.put(LOCK, "n2", 99)  # n2 took it
    run(core, clock, inputs(applied={}, applied_rev=rev), seconds=0.1)
    done = core.commands.results()
    assert [(r.id, r.ok) for r in done] == [("c2", True)] and "to n2" in done[0].message
    assert keys.move_key(VIP) not in mirror.data
    # the same command id again (the api resends until it hears back): answered, not redone
    core.commands.submit(VipCommand("c2", "move", VIP))
    run(core, clock, inputs(), seconds=0.1)
    assert [(r.id, r.ok) for r in core.commands.results()] == [("c2", True)]


def test_add_is_validated_before_anything_is_written() -> None:
    core, _, store, _, clock = make()
    assert core.commands is not None
    good = json.dumps({"app": "web", "proc": "worker", "ports": [{"src": "80"}]})
    bad = json.dumps({"app": "web", "proc": "worker", "ports": [{"src": "99999"}]})
    core.commands.submit(VipCommand("a", "add", "10.0.0.9", value=bad))
    core.commands.submit(VipCommand("b", "add", "10.0.0.9", value=good))
    core.commands.submit(VipCommand("c", "rm", "10.0.0.8"))
    run(core, clock, inputs(), seconds=0.1)
    results = {r.id: r for r in core.commands.results()}
    assert not results["a"].ok and "ports[0].src" in results["a"].message
    assert results["b"].ok and store.config == {"/lain/config/vips/10.0.0.9": good}
    assert results["c"].status == 404
