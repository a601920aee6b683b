"""The ``netlinks`` worker (root): container links (veth, macvlan, ipvlan), host routes
and FORWARD rules of container networks.

It never reads Docker's JSON or etcd: it acts on typed requests of the netstore process
only (checked by the kernel's peer credentials) and on the netstore's state topics. See
``networkd.netdriver.linkloop`` and docs/NETWORKS.md.
"""

from networkd.netdriver.linkloop import LinkLoop
from networkd.workers.base import WorkerContext


def main(ctx: WorkerContext) -> int:
    return LinkLoop(ctx).run()
