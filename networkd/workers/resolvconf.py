"""The resolvconf worker (root): keeps resolv.conf pointing at our DNS server (SPEC 7)
and serves the hosts file to the DNS replicas.

Every 200 ms it reads both files (small, so reading beats trusting mtimes): when
resolv.conf is not what ``resolvconf.render`` makes of it, it writes the rendered
content atomically (temp file + rename in the same directory). ``render`` is idempotent,
so the next read finds nothing to do: no loop on its own write. It publishes
``state.upstreams`` (item ``upstreams``) and ``state.hosts`` (one HostsEntry per name).
On the final stop it writes the upstream-only form back.

A symlinked resolv.conf (systemd-resolved: ``-> ../run/systemd/resolve/stub-resolv.conf``;
NetworkManager ``rc-manager=symlink``) stays a symlink: the keeper reads and writes the
link's target (the temp file and rename happen in the target's directory), so the link
survives start, outside edits, stop, and also a SIGKILL of the whole daemon. Replacing the
link and putting it back on stop would leave a plain file behind after a crash.
"""

import errno
import logging
import os
import tempfile
import time
from typing import Any, Dict, Optional

from networkd import hosts as hostsfile
from networkd import resolvconf
from networkd.bus.messages import HostsEntry, Upstreams
from networkd.wakeup import sleep_ms
from networkd.workers.base import EXIT_OK, WorkerContext

log = logging.getLogger("networkd.resolvconf")

POLL_SECONDS = 0.2
MAX_FILE = 4 << 20


def read_text(path: str) -> Optional[str]:
    """The file's text (undecodable bytes replaced), None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("file unreadable path=%s reason=%s", path, exc.strerror)
        return None
    if len(data) > MAX_FILE:
        log.warning("file too large path=%s limit=%d", path, MAX_FILE)
        data = data[:MAX_FILE]
    return data.decode("utf-8", "replace")


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: temp file in the same directory, then rename.

    Keeps the old file's mode. A symlink is followed: its target is replaced and the link
    stays. A bind-mounted file (rename gives EBUSY, as with Docker's /etc/resolv.conf) is
    rewritten in place instead."""
    path = os.path.realpath(path)
    directory = os.path.dirname(path) or "."
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".networkd-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ResolvConfKeeper:
    """Keeps one resolv.conf; pure decisions in ``networkd.resolvconf``."""

    def __init__(self, path: str, ours: str) -> None:
        self.path = path
        self.ours = ours
        self.writes = 0
        self.last_text: Optional[str] = None
        self.last_failure = ""

    def where(self) -> str:
        """``path=...`` and, for a symlink, the ``target=`` written instead."""
        target = os.path.realpath(self.path)
        if os.path.islink(self.path):
            return f"path={self.path} target={target}"
        return f"path={self.path}"

    def check(self) -> Optional[str]:
        """Read, fix if needed; returns the current content (None when unreadable)."""
        text = read_text(self.path)
        if text is None:
            text = ""
        if text == self.last_text:
            return text
        wanted = resolvconf.render(text, self.ours)
        if wanted != text:
            try:
                write_atomic(self.path, wanted)
            except OSError as exc:
                if str(exc) != self.last_failure:  # retried every pass: say it once
                    self.last_failure = str(exc)
                    log.warning("resolv.conf write failed %s reason=%s", self.where(), exc)
                return text
            self.writes += 1
            self.last_failure = ""
            log.info("resolv.conf written %s upstreams=%s", self.where(), self.upstreams(wanted))
            text = wanted
        self.last_text = text
        return text

    def upstreams(self, text: str) -> list:
        return resolvconf.upstreams(text, self.ours)

    def restore(self) -> None:
        text = read_text(self.path) or ""
        restored = resolvconf.restore(text, self.ours)
        if restored != text:
            try:
                write_atomic(self.path, restored)
                log.info("resolv.conf restored %s", self.where())
            except OSError as exc:
                log.warning("resolv.conf restore failed path=%s reason=%s", self.path, exc)


def main(ctx: WorkerContext) -> int:
    config = ctx.config
    host, _port = config.dns_host_port
    keeper = ResolvConfKeeper(config.resolv_conf, resolvconf.dns_ip(host))
    pub = ctx.publisher()
    upstream_topic = pub.state("state.upstreams")
    hosts_topic = pub.state("state.hosts")
    last_hosts: Optional[str] = None
    next_check = 0.0
    while not ctx.stopping:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + POLL_SECONDS
            text = keeper.check()
            if text is not None:
                upstream_topic.replace({"upstreams": Upstreams(servers=keeper.upstreams(text))})
            hosts_text = read_text(config.hosts_file) or ""
            if hosts_text != last_hosts:
                last_hosts = hosts_text
                table = hostsfile.parse(hosts_text)
                items: Dict[str, Any] = {
                    name: HostsEntry(name=name, ips=ips) for name, ips in table.items()
                }
                hosts_topic.replace(items)
                log.info("hosts read path=%s names=%d", config.hosts_file, len(items))
        pub.poll(sleep_ms(time.monotonic(), [next_check], 1, int(POLL_SECONDS * 1000) + 1))
    if ctx.final:
        keeper.restore()
    pub.close()
    return EXIT_OK
