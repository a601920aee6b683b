"""Host network state owned by the applier: pure desired-vs-actual diffs plus thin adapters.

Each module has a pure part (plan functions on frozen dataclasses, unit-tested without root)
and an adapter that reads and changes the host (pyroute2 netlink, python-iptables, raw
sockets). Adapters are idempotent: applying the same desired state twice changes nothing.
"""
