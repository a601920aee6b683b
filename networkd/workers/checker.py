"""The ``checker`` worker (unprivileged): VIP health checks and ``-vip.notify`` hooks.

Inputs: watcher ``state.vips`` (each VIP's etcd ``health``) and ``state.containers`` (the
local container to probe), this node's check files (``-vip.checks.dir``, re-read every
2 s), and the elector's ``state.vip_status`` (for the hooks).

Each check runs on its own schedule (``interval``) on a small thread pool (a slow probe
never delays another); results become verdicts with rise and fall
(``networkd.health.verdict``) and go out on ``state.health``, one item per checked VIP,
only when a verdict changes. A restarted checker starts UNKNOWN: the elector keeps the
last verdict it had until a new one comes, so a checker restart moves no VIP.

Hooks: every change of a VIP's local state (OWNER, STANDBY, FAILING, INELIGIBLE,
EXCLUDED) runs ``-vip.notify`` with ``IP OLD NEW``. The states already notified are kept
in the worker's state dir, so a restart of the checker does not notify them again.
"""

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from networkd.bus.messages import HealthStatus
from networkd.health import probes
from networkd.health.hooks import HookRunner
from networkd.health.local_checks import load_checks
from networkd.health.targets import CheckTarget, plan_checks
from networkd.health.verdict import UNKNOWN, Verdict, judge
from networkd.workers.base import WorkerContext

SOURCES = {
    "watcher": ["state.vips", "state.containers"],
    "elector": ["state.vip_status"],
}
RESCAN_S = 2.0
PROBE_THREADS = 8
NOTIFIED_FILE = "notified.json"


def run_probe(target: CheckTarget) -> Tuple[bool, str]:
    check = target.check
    if check.type == "tcp":
        return probes.tcp_probe(target.host, target.port, check.timeout)
    if check.type == "http":
        return probes.http_probe(target.host, target.port, check.path, check.expect, check.timeout)
    env = {
        "NETWORKD_VIP": target.ip,
        "NETWORKD_TARGET": target.host,
        "NETWORKD_PORT": str(target.port),
    }
    return probes.exec_probe(check.command, check.timeout, env)


@dataclass
class Running:
    """One check's schedule and verdict."""

    target: CheckTarget
    next_at: float
    verdict: Verdict = field(default_factory=Verdict)
    detail: str = ""
    checked_at: float = 0.0
    pending: Optional["Future[Tuple[bool, str]]"] = None


class Checker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.log = ctx.log
        self.pub = ctx.publisher()
        self.topic = self.pub.state("state.health")
        self.sub = ctx.subscriber(SOURCES)
        self.pool = ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="probe")
        self.running: Dict[str, Running] = {}
        self.local: Dict[str, Any] = {}
        self.local_errors: Dict[str, str] = {}
        self.next_scan = 0.0
        self.hooks = HookRunner(self.config.vip_notify, self.config.vip_notify_timeout)
        self.notified_path = os.path.join(ctx.state_dir, NOTIFIED_FILE)
        self.notified = self._read_notified()

    # -- checks --------------------------------------------------------------------------

    def rescan(self, now: float) -> None:
        if now < self.next_scan:
            return
        self.next_scan = now + RESCAN_S
        checks, errors = load_checks(self.config.vip_checks_dir)
        for path, reason in errors:
            if self.local_errors.get(path) != reason:
                self.log.warning("check file rejected path=%s reason=%s", path, reason)
        self.local_errors = dict(errors)
        self.local = checks

    def sync_targets(self, now: float) -> None:
        vips = self.sub.state("watcher", "state.vips")
        containers = self.sub.state("watcher", "state.containers")
        if vips is None or containers is None:
            return  # nothing known yet: keep what runs
        targets = plan_checks(vips, containers, self.local)
        for ip in [ip for ip in self.running if ip not in targets]:
            del self.running[ip]
            self.log.info("vip check stopped ip=%s", ip)
        for ip, target in targets.items():
            current = self.running.get(ip)
            if current is not None and current.target == target:
                continue
            self.running[ip] = Running(target, next_at=now)
            self.log.info("vip check started ip=%s type=%s source=%s target=%s:%d",
                          ip, target.check.type, target.source, target.host, target.port)  # fmt: skip
        self.publish()

    def tick(self, now: float) -> None:
        changed = False
        for item in self.running.values():
            if item.pending is not None and item.pending.done():
                try:
                    ok, detail = item.pending.result()
                except Exception as exc:  # a probe bug must not stop the checks
                    ok, detail = False, f"probe failed: {exc}"
                item.pending = None
                check = item.target.check
                before = item.verdict.state
                item.verdict = judge(item.verdict, ok, check.rise, check.fall)
                item.detail, item.checked_at = detail, time.time()
                if item.verdict.state != before:
                    changed = True
                    self.log.info("vip check verdict ip=%s old=%s new=%s detail=%s",
                                  item.target.ip, before, item.verdict.state, detail)  # fmt: skip
            if item.pending is None and now >= item.next_at:
                item.next_at = now + item.target.check.interval
                item.pending = self.pool.submit(run_probe, item.target)
        if changed:
            self.publish()

    def publish(self) -> None:
        items = {
            ip: HealthStatus(
                ip=ip,
                state=item.verdict.state,
                source=item.target.source,
                detail=item.detail if item.verdict.state != UNKNOWN else "",
            )
            for ip, item in self.running.items()
        }
        self.topic.replace(items)

    def next_due(self, now: float) -> float:
        times = [item.next_at for item in self.running.values() if item.pending is None]
        soonest = min(times, default=now + 0.5)
        return max(0.0, min(soonest - now, 0.05 if self._probing() else 0.5))

    def _probing(self) -> bool:
        return any(item.pending is not None for item in self.running.values())

    # -- hooks ---------------------------------------------------------------------------

    def notify_changes(self) -> None:
        statuses = self.sub.state("elector", "state.vip_status")
        if statuses is None:
            return
        now: Dict[str, str] = {ip: getattr(s, "state", "") for ip, s in statuses.items()}
        changed = False
        for ip, state in sorted(now.items()):
            old = self.notified.get(ip, "NONE")
            if state and state != old:
                self.hooks.fire(ip, old, state)
                self.notified[ip] = state
                changed = True
        for ip in [ip for ip in self.notified if ip not in now]:
            self.hooks.fire(ip, self.notified.pop(ip), "NONE")
            changed = True
        if changed:
            self._write_notified()

    def _read_notified(self) -> Dict[str, str]:
        try:
            with open(self.notified_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def _write_notified(self) -> None:
        if not self.config.vip_notify:
            return
        tmp = f"{self.notified_path}.tmp"
        try:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.notified, f, sort_keys=True)
            os.replace(tmp, self.notified_path)
        except OSError as exc:
            self.log.warning("notify state not written path=%s reason=%s", tmp, exc.strerror)

    # -- loop ----------------------------------------------------------------------------

    def run(self) -> int:
        self.log.info("checker started checks_dir=%s notify=%s", self.config.vip_checks_dir,
                      self.config.vip_notify or "-")  # fmt: skip
        wait = 0.0
        try:
            while not self.ctx.stopping:
                envelopes = self.sub.poll(timeout_ms=max(1, int(wait * 1000)))
                now = time.monotonic()
                self.rescan(now)
                if envelopes or not self.topic.published:
                    self.sync_targets(now)
                    if self.config.vip_notify:
                        self.notify_changes()
                self.tick(now)
                self.pub.poll()
                wait = self.next_due(time.monotonic())
        finally:
            self.pool.shutdown(wait=False)
            self.sub.close()
            self.pub.close()
        return 0


def main(ctx: WorkerContext) -> int:
    return Checker(ctx).run()
