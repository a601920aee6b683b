"""Network namespace helpers for tests: create/delete, run commands, enter one per thread.

``in_netns(name)`` moves only the calling thread into the namespace (setns(2) is
per-thread for network namespaces) and back, so the test process can create sockets that
live in a lab namespace: a socket keeps the namespace it was created in.
"""

import contextlib
import ctypes
import os
import subprocess
from typing import Iterator, List, Optional, Sequence

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace ``name``."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def run(
    cmd: Sequence[str], check: bool = True, timeout: float = 30.0
) -> "subprocess.CompletedProcess[str]":
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr.strip()}"
        )
    return result


def ip(*args: str, netns: Optional[str] = None, check: bool = True) -> str:
    cmd: List[str] = ["ip"]
    if netns:
        cmd += ["-n", netns]
    return run(cmd + list(args), check=check).stdout


def ns_exec(netns: str, *cmd: str, check: bool = True, timeout: float = 30.0) -> str:
    return run(["ip", "netns", "exec", netns, *cmd], check=check, timeout=timeout).stdout


def add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def del_netns(name: str) -> None:
    ip("netns", "del", name, check=False)


def list_netns() -> List[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def sysctl(netns: str, key: str, value: str) -> None:
    ns_exec(netns, "sysctl", "-qw", f"{key}={value}")
