"""What the applier may do with the VIPs it holds, given what it knows of the lease.

The elector publishes the lease's health with ``valid_until``, a CLOCK_MONOTONIC instant
(the same clock in every process of the host). The applier believes a lease only until
then: an elector that was killed, is stuck, or restarts while etcd is unreachable cannot
leave the applier announcing on the strength of an old "alive".

| lease    | announce | claim by another MAC      | hold: address | strict: address |
|----------|----------|---------------------------|---------------|-----------------|
| ALIVE    | yes      | re-announce at once       | kept          | kept            |
| DEAD     | no       | yield (address removed)   | kept, probed  | removed         |
| UNKNOWN  | no       | yield                     | kept, probed  | kept (just started: the elector's snapshot is on its way) |

Probing (``hold``, lease not ALIVE): an ARP probe / neighbour solicitation for each held
VIP every ``PROBE_INTERVAL`` seconds; any answer from another MAC is a claim, so a node
that comes back from a partition gives up a VIP that moved within one interval.
"""

import enum
from typing import Optional

from networkd.bus.messages import LeaseHealth

PROBE_INTERVAL = 0.2


class Lease(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNKNOWN = "unknown"


def lease_state(health: Optional[LeaseHealth], now: float) -> Lease:
    """ALIVE only while the elector said so and its deadline has not passed."""
    if health is None:
        return Lease.UNKNOWN
    if health.alive and now < health.valid_until:
        return Lease.ALIVE
    return Lease.DEAD


def may_announce(state: Lease) -> bool:
    return state is Lease.ALIVE


def yields_to_claims(state: Lease) -> bool:
    """A claim from another MAC: give the VIP up (True) or re-announce ours (False)."""
    return state is not Lease.ALIVE


def fenced(policy: str, state: Lease) -> bool:
    """Whether every bound VIP must go now (``strict`` without a live lease)."""
    return policy == "strict" and state is Lease.DEAD


def should_probe(policy: str, state: Lease) -> bool:
    """Held VIPs are probed for other owners while the lease is not known to be alive."""
    return policy == "hold" and state is not Lease.ALIVE
