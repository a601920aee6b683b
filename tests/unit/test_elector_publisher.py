"""The elector publishes its lease only together with outputs computed under it.

Found in the failover lab: a cut owner yields its VIP after the heal; its old lease then
expires on the server and a new one is granted. Published at once beside outputs still
computed under the old lease (desired: bind), the new lease made the applier take the
yielded VIP back: two holders until the controller's next step, a few ms later."""

import logging
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

from networkd.bus.messages import DesiredVip, LeaseHealth
from networkd.election.core import Outputs
from networkd.workers.elector import ElectorPublisher

VIP = DesiredVip(
    ip="10.0.0.10", app="web", proc="web.web.worker", container_ip="172.20.0.2", ports=[]
)


class Topic:
    def __init__(self, name: str, sent: List[Tuple[str, Any]]) -> None:
        self.name = name
        self.sent = sent

    def set(self, key: str, value: Any) -> None:
        self.sent.append((self.name, value))

    def replace(self, items: Dict[str, Any]) -> None:
        self.sent.append((self.name, dict(items)))

    def send_snapshot(self) -> None:
        pass


class Pub:
    def __init__(self) -> None:
        self.sent: List[Tuple[str, Any]] = []

    def state(self, name: str) -> Topic:
        return Topic(name, self.sent)

    def event(self, topic: str, body: Any) -> None:
        self.sent.append((topic, body))


class Keeper:
    def __init__(self) -> None:
        self.generation = 1
        self.lease_id = 0xA

    def alive(self) -> bool:
        return True

    def health(self) -> LeaseHealth:
        return LeaseHealth(self.lease_id, True, 1.0, valid_until=100.0)


class Core:
    def __init__(self, out: Outputs) -> None:
        self.keeper = Keeper()
        self.commands = None
        self.out = out

    def outputs(self) -> Outputs:
        return self.out


def publisher(strict: bool) -> Tuple[ElectorPublisher, Pub, Core]:
    config = SimpleNamespace(vip_fencing="strict" if strict else "hold")
    ctx = SimpleNamespace(config=config, log=logging.getLogger("test"))
    pub = Pub()
    out = Outputs(version=1, ready=True, desired={"10.0.0.10": VIP}, generation=1)
    core = Core(out)
    return ElectorPublisher(ctx, pub, core), pub, core  # type: ignore[arg-type]


def leases(pub: Pub) -> List[int]:
    return [value.lease_id for name, value in pub.sent if name == "state.lease"]


def test_a_new_lease_waits_for_outputs_computed_under_it() -> None:
    elector, pub, core = publisher(strict=False)
    elector.publish()
    assert leases(pub) == [0xA]
    # The old lease expired on the server, a new one is granted; the controller has not
    # stepped with it: the outputs still bind the VIP the old lease's lock stood for.
    core.keeper.generation, core.keeper.lease_id = 2, 0xB
    pub.sent.clear()
    elector.publish()
    assert leases(pub) == []  # the applier keeps the old lease, which runs out: dead
    core.out = Outputs(version=2, ready=True, desired={}, generation=2)
    elector.publish()
    assert leases(pub) == [0xB]
    assert ("state.desired", {}) in pub.sent


def test_strict_fencing_binds_nothing_with_outputs_of_an_earlier_lease() -> None:
    elector, pub, core = publisher(strict=True)
    elector.publish()
    assert ("state.desired", {"10.0.0.10": VIP}) in pub.sent
    core.keeper.generation = 2
    core.out = Outputs(version=2, ready=True, desired={"10.0.0.10": VIP}, generation=1)
    pub.sent.clear()
    elector.publish()
    assert ("state.desired", {}) in pub.sent  # the lease backing these binds is gone
