"""The run directory: root's ``bus/`` and ``state/``, one directory per worker in each.

``bus/<worker>/`` (0755) and ``state/<worker>/`` (0700) belong to the worker's uid, inside
root-owned parents: only that worker (or root) can create, replace or remove its endpoint
or its state files, so no worker can impersonate another on the bus.

A worker-writable directory may hold entries left by an earlier run (a bus socket, the
elector's lease file) or planted by the worker itself. The supervisor, as root, never
``chown``s them: a hard link planted there to a root file (``/etc/shadow``) would become
the worker's. Entries the worker's uid owns stay (the lease file must survive restarts,
or VIPs move); entries of any other owner are unlinked without following links (after
``-user`` changes, the old lease file goes with them: that node's VIPs move once).
"""

import logging
import os
import shutil
from typing import Dict, Tuple

log = logging.getLogger("networkd.supervisor")


class RunDirError(OSError):
    """The run dir cannot be prepared; the message names the path."""


def prepare(run_dir: str, owners: Dict[str, Tuple[int, int]]) -> None:
    """Create the run dir's layout; ``owners`` maps a worker name to its (uid, gid)."""
    warn_unreachable(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        os.chmod(run_dir, 0o755)
        for sub in ("bus", "state"):
            path = os.path.join(run_dir, sub)
            os.makedirs(path, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o755)
    except OSError as exc:
        raise RunDirError(exc.errno, f"cannot prepare {run_dir}: {exc.strerror}") from None
    for name, (uid, gid) in owners.items():
        own_dir(os.path.join(run_dir, "bus", name), uid, gid, 0o755)
        own_dir(os.path.join(run_dir, "state", name.split(".")[0]), uid, gid, 0o700)


def warn_unreachable(run_dir: str) -> None:
    """Unprivileged workers reach the bus only if every parent directory is searchable."""
    path = os.path.dirname(os.path.abspath(run_dir))
    while path and path != "/":
        try:
            mode = os.stat(path).st_mode
        except OSError:
            break
        if not mode & 0o001:
            log.warning(
                "run dir unreachable path=%s reason=%s is not searchable by other users",
                run_dir,
                path,
            )
            return
        path = os.path.dirname(path)


def own_dir(path: str, uid: int, gid: int, mode: int) -> None:
    """``path`` (inside a root-owned directory) becomes ``uid``'s, without stale entries."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
        if uid != 0:
            remove_foreign_entries(path, uid)
    os.chmod(path, mode)


def remove_foreign_entries(path: str, uid: int) -> None:
    """Unlink every entry of ``path`` that ``uid`` does not own (links are not followed)."""
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                owner = entry.stat(follow_symlinks=False).st_uid
                if owner == uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)  # fd-based on Linux: never follows a link
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue
            log.info("stale entry removed path=%s owner=%d expected=%d", entry.path, owner, uid)
