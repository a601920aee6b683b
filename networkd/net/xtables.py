"""Shared python-iptables plumbing: the xtables lock and reading rules into plain values.

libiptc commits replace a whole table, so a change made by someone else between our read
and our commit would be lost. Like the iptables command, we hold ``/run/xtables.lock``
(flock) from the refresh to the commit, so Docker or an operator's iptables never races us.
"""

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional

log = logging.getLogger("networkd.applier")

XTABLES_LOCK = "/run/xtables.lock"


class XtablesLockTimeout(RuntimeError):
    """Another program held the xtables lock for too long."""


@contextlib.contextmanager
def xtables_lock(path: str = XTABLES_LOCK, timeout: Optional[float] = 5.0) -> Iterator[None]:
    """Hold the iptables lock (the same flock the iptables command takes).

    ``timeout`` None waits in the kernel like ``iptables -w`` (Docker's iptables calls wait
    that way: a waiter that polls would rarely get the lock while Docker is busy)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        # Without a lock file (read-only /run) we still work, as iptables -w would not.
        log.warning("xtables lock unavailable path=%s reason=%s", path, exc.strerror)
        yield
        return
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise XtablesLockTimeout(f"xtables lock {path} busy for {timeout:.0f}s")
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def mask_to_prefix(text: str) -> str:
    """``10.0.0.1/255.255.255.255`` -> ``10.0.0.1/32``; ``0.0.0.0/0.0.0.0`` -> ``""``."""
    if not text:
        return ""
    address, _, mask = text.partition("/")
    try:
        if mask and not mask.isdigit():
            plen = ipaddress.ip_network(
                f"0.0.0.0/{mask}" if "." in mask else f"::/{mask}"
            ).prefixlen
        else:
            plen = int(mask) if mask else (32 if ":" not in address else 128)
        network = ipaddress.ip_network(f"{address}/{plen}", strict=False)
    except ValueError:
        return text
    if network.prefixlen == 0:
        return ""
    return network.with_prefixlen


def first_param(params: Dict[str, Any], name: str) -> str:
    value = params.get(name)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def rule_fields(rule: Any) -> Dict[str, Any]:
    """A python-iptables Rule as plain values (read once: handles go stale on refresh)."""
    matches: List[Dict[str, Any]] = []
    for match in rule.matches:
        params = match.get_all_parameters()
        matches.append({"name": match.name, **{k: first_param(params, k) for k in params}})
    target = rule.target
    target_params: Dict[str, Any] = {}
    target_name = ""
    if target is not None:
        target_name = target.name
        target_params = {
            k: first_param(target.get_all_parameters(), k) for k in target.get_all_parameters()
        }
    protocol = rule.protocol or ""
    return {
        "src": mask_to_prefix(rule.src or ""),
        "dst": mask_to_prefix(rule.dst or ""),
        "in": rule.in_interface or "",
        "out": rule.out_interface or "",
        "proto": "" if protocol in ("ip", "all", "0") else protocol,
        "matches": matches,
        "target": target_name,
        "target_params": target_params,
    }


def strip_comment_quotes(text: Optional[str]) -> str:
    if not text:
        return ""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text
