"""The keepalived harness bench/failover.py measures networkd against: it must keep working.

Debian's keepalived in two lab nodes (``tests/lab/keepalived.py``), with keepalived's
default timers and with sub-second ones, each with the bench's ``track_script``: keepalived
accepts every line of the configuration, exactly one node holds the VIP and answers the
client through it, a link cut of the holder moves the VIP to the other node, which then
answers, and a holder whose container refuses the checked port gives the VIP away.
"""

from typing import Callable

import pytest

from tests.lab.keepalived import KeepalivedCluster, TrackScript, VrrpSetup, defaults, tuned
from tests.lab.lab import Lab

pytestmark = pytest.mark.lab

VIP = "10.77.0.201"
CHECK = TrackScript(port=80, interval=1, timeout=1, fall=3, rise=2)


@pytest.mark.parametrize("setup", [defaults, tuned], ids=["defaults", "advert_int-0.1"])
def test_one_holder_moved_by_a_link_cut_and_by_its_check(
    setup: Callable[..., VrrpSetup],
) -> None:
    with Lab(nodes=2, clients=1, etcd=False) as lab:
        cluster = KeepalivedCluster(lab.nodes, setup(VIP, check=CHECK), ports=[80])
        with cluster:
            holders = lab.wait(lambda: lab.owners(VIP), 15, "a keepalived master")
            assert len(holders) == 1, holders
            holder = holders[0]
            lab.wait(lambda: lab.client.who(VIP, 80, timeout=0.5) == holder, 5, "answers")
            assert lab.owners(VIP) == [holder], "a second master appeared"
            for member in cluster.members:
                assert "Unknown keyword" not in member.log(), member.log()

            lab.node(holder).cut_link()
            other = lab.wait(
                lambda: [n for n in lab.owners(VIP) if n != holder], 10, "the backup takes over"
            )[0]
            lab.wait(lambda: lab.client.who(VIP, 80, timeout=0.5) == other, 5, "new holder")
            lab.node(holder).restore_link()
            lab.wait(lambda: lab.owners(VIP) == [other], 10, "one holder after the heal")

            # the check fails on the holder: fall x interval, then the other node
            lab.node(other).refuse_service(80)
            lab.wait(lambda: lab.owners(VIP) == [holder], 10, "the healthy node takes over")
            lab.wait(lambda: lab.client.who(VIP, 80, timeout=0.5) == holder, 5, "it answers")
            assert all(member.running() for member in cluster.members), [
                member.log()[-2000:] for member in cluster.members
            ]
        assert not lab.owners(VIP), "keepalived left the address after its stop"
