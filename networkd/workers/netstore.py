"""The ``netstore`` worker (user networkd, holds the etcd credentials): container
networks' IPAM and bookkeeping under ``/lain/networkd/networks/``.

It answers the typed requests of the plugin worker (and only of its user), asks the root
netlinks worker for links, keeps this host's lease-bound route keys, reclaims what Docker
no longer knows and publishes ``state.net_*``. See ``networkd.netdriver.storeloop``.
"""

from networkd.netdriver.storeloop import StoreLoop
from networkd.workers.base import WorkerContext


def main(ctx: WorkerContext) -> int:
    return StoreLoop(ctx).run()
