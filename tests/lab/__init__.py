"""The netns lab: N networkd nodes, clients and a real etcd on a private bridge.

See ``tests.lab.lab.Lab``. Used by the lab tests, ``make demo`` and the benchmarks.
"""

from tests.lab.lab import AddressMonitor, Lab, LabClient, LabNode, Sniffer

__all__ = ["AddressMonitor", "Lab", "LabClient", "LabNode", "Sniffer"]
