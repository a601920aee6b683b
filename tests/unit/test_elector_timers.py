"""When the elector's controller wakes without any change: only for what time alone changes.

Every change (bus inputs, the mirror, the lease) wakes it by itself. A step costs
O(VIPs + nodes); a step every second on every node was most of an idle node's elector
CPU at 1,000 nodes (docs/SCALE.md), so an idle controller sleeps IDLE_STEP_S unless a
deadline comes first.
"""

from networkd.config import Config
from networkd.election.core import (
    CLUSTER_VIEW_S,
    IDLE_STEP_S,
    RUNNING_RECHECK_S,
    ElectorCore,
    Inputs,
    StepContext,
)
from networkd.election.eligibility import DockerCheck

NOW = 1000.0


def core(running=None, docker_endpoint=""):
    config = Config(docker_endpoint=docker_endpoint, vip_ttl=2.0)
    c = ElectorCore(
        config, "n1", "", "/nonexistent/lease", connect=lambda t: None, running=running,
        clock=lambda: NOW,
    )  # fmt: skip
    c._presence_changed = {}  # presence settled long ago
    return c


def wake(c: ElectorCore) -> float:
    ctx = StepContext(now=NOW, inp=Inputs(), final=False, yielded=set(), lease_id=7, alive=True)
    c._timers(ctx)
    return ctx.wake


def docker_check(answering: bool) -> DockerCheck:
    check = DockerCheck("unix:///nonexistent/docker.sock")
    check.answering = answering
    return check


# (what is pending, expected wake in seconds)
CASES = [
    ("nothing", IDLE_STEP_S),
    ("settling for 2 more seconds", 2.0),
    ("presence changed 1 s ago (rebalancing after settle_s)", 2.0),
    ("a transaction retry in 0.5 s", 0.5),
    ("a give-away back-off ending in 4 s", 4.0),
    ("a settling period that already ended", IDLE_STEP_S),
    ("a container-running check", RUNNING_RECHECK_S),
    ("a Docker socket that answers", RUNNING_RECHECK_S),
    ("a Docker socket that does not answer", IDLE_STEP_S),
]


def test_idle_controller_wakes_only_for_deadlines():
    for what, expected in CASES:
        c = core()
        if what.startswith("settling"):
            c._settle_until = NOW + 2.0
        elif what.startswith("presence"):
            c._presence_changed = {"n2": NOW - 1.0}  # settle_s is 3 s at TTL 2
        elif what.startswith("a transaction"):
            c._retry_at["/lain/networkd/vips/10.0.0.1.lock"] = NOW + 0.5
        elif what.startswith("a give-away"):
            c._giveaway_blocked["10.0.0.1"] = NOW + 4.0
        elif what.startswith("a settling period"):
            c._settle_until = NOW - 1.0
        elif what == "a container-running check":
            c = core(running=lambda cid: True)
        elif what == "a Docker socket that answers":
            c = core(running=docker_check(True))
        elif what == "a Docker socket that does not answer":
            c = core(running=docker_check(False))
        assert abs(wake(c) - expected) < 1e-9, what


def test_the_cluster_view_is_rebuilt_at_most_every_half_second_unless_a_command_waits(
    monkeypatch,
):
    """Every event wakes the controller; under churn that is many steps a second on every
    node. The operator's view (``vip list``) is rebuilt at most every CLUSTER_VIEW_S, the
    next time shows what the skipped steps saw, and a command gets a fresh one."""
    from networkd.bus.messages import VipCommand
    from networkd.election import core as core_module
    from networkd.election.commands import CommandRunner

    built = []

    def counted_view(*args):
        built.append(args)
        return {}

    monkeypatch.setattr(core_module, "cluster_view", counted_view)
    c = core()
    c.commands = CommandRunner(store=None, clock=lambda: NOW)

    def step(at: float) -> StepContext:
        ctx = StepContext(now=at, inp=Inputs(), final=False, yielded=set(), lease_id=7,
                          alive=True)  # fmt: skip
        c._cluster_and_commands(ctx)
        return ctx

    assert step(NOW).wake == IDLE_STEP_S and len(built) == 1
    ctx = step(NOW + 0.1)  # an event 0.1 s later: the last view, and a wake when it is due
    assert len(built) == 1 and abs(ctx.wake - (CLUSTER_VIEW_S - 0.1)) < 1e-9
    assert len(built) == 1 and step(NOW + 0.2).wake < CLUSTER_VIEW_S
    assert step(NOW + CLUSTER_VIEW_S).wake == IDLE_STEP_S and len(built) == 2
    c.commands.submit(VipCommand(id="1", action="rm", key="10.0.0.9"))
    step(NOW + CLUSTER_VIEW_S + 0.1)  # a command waits: built at once
    assert len(built) == 3
