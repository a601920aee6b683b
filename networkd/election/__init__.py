"""VIP ownership and leader election: the node lease, lock keys, eligibility, spreading.

Everything here runs inside the ``elector`` worker. ``lease``, ``store`` and ``mirror``
talk to etcd; ``eligibility``, ``spread`` and ``plan`` are pure logic; ``core`` ties
them together in one controller thread that the worker's main thread feeds from the bus.
"""
