"""One lazily opened pyroute2 netlink socket, reopened after an error closes it.

The socket is opened on first use, not at construction: adapters are built before a
worker forks or drops privileges in some tests, and a netlink socket must belong to the
process (and network namespace) that uses it.
"""

from typing import Any


class NetlinkSocket:
    """Base of the thin netlink adapters (VIP addresses, container links and routes)."""

    def __init__(self) -> None:
        self._ipr: Any = None

    def _route(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        """Close the socket; the next call opens a new one."""
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:  # closing a broken netlink socket: nothing left to do
                pass
            self._ipr = None
