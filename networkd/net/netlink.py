"""One lazily opened pyroute2 netlink socket, reopened after an error closes it.

The socket is opened on first use, not at construction: adapters are built before a
worker forks or drops privileges in some tests, and a netlink socket must belong to the
process (and network namespace) that uses it.
"""

from typing import Any, Optional


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


def netlink_errno(exc: BaseException) -> Optional[int]:
    """The errno of a failed netlink call (pyroute2's NetlinkError carries it as ``code``)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, OSError):
        return exc.errno
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return int(args[0])
    return None
