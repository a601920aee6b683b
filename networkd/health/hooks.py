"""``-vip.notify PATH``: an executable run on every local state change of a VIP.

argv is exactly ``PATH IP OLD NEW`` (no shell; OLD is ``NONE`` the first time a VIP is
seen), run as the checker's unprivileged user, in its own session, killed after the
timeout; its output is logged. Each run has a thread of its own, so a slow or failing
hook delays nothing: not ownership (the elector never waits for it), not the next hook.
"""

import logging
import subprocess
import threading
from typing import List

from networkd.health.probes import OUTPUT_MAX, kill_group

log = logging.getLogger("networkd.checker")

MAX_RUNNING = 32


class HookRunner:
    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._running = threading.BoundedSemaphore(MAX_RUNNING)
        self.started = 0
        self.dropped = 0

    def fire(self, ip: str, old: str, new: str) -> bool:
        """Start the hook for one change; False when too many are still running."""
        if not self.path:
            return False
        if not self._running.acquire(blocking=False):
            self.dropped += 1
            log.warning("vip notify dropped ip=%s old=%s new=%s reason=%d hooks still running",
                        ip, old, new, MAX_RUNNING)  # fmt: skip
            return False
        self.started += 1
        argv = [self.path, ip, old, new]
        thread = threading.Thread(target=self._run, args=(argv,), name="vip-notify", daemon=True)
        thread.start()
        return True

    def _run(self, argv: List[str]) -> None:
        try:
            run_hook(argv, self.timeout)
        finally:
            self._running.release()


def run_hook(argv: List[str], timeout: float) -> None:
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("vip notify failed argv=%s reason=%s", argv, exc.strerror or exc)
        return
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        log.warning("vip notify killed argv=%s reason=timeout after %gs", argv, timeout)
        return
    text = (output or b"")[:OUTPUT_MAX].decode("utf-8", errors="replace").strip()
    level = logging.INFO if proc.returncode == 0 else logging.WARNING
    log.log(level, "vip notify done argv=%s exit=%d output=%r", argv, proc.returncode, text)
