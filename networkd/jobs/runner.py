"""Runs the enabled leader jobs: computes their outputs and writes what differs.

Writes are read-compare-write: a key is read first and written only when its value
differs (as JSON), and every write is a transaction fenced by the leader key, so a job
stops the moment leadership is lost (the fence fails and the runner stops). Values
confirmed in etcd are remembered, so steady state makes no requests at all; the memory
is dropped on every leadership change and every ``verify_s`` (reads only, then).
"""

import logging
import time
from typing import Any, Callable, Collection, Dict, Optional

from networkd import keys
from networkd.bus.messages import AppsKey, LeaderAddress, StreamrouterPool
from networkd.config import Config
from networkd.jobs.leaders import leader_domain_outputs
from networkd.jobs.outputs import JobResult, same_json
from networkd.jobs.streamrouter import streamrouter_outputs
from networkd.jobs.tinydns import tinydns_outputs
from networkd.jobs.webrouter import webrouter_outputs

log = logging.getLogger("networkd.elector")

_DELETED = object()


def compute_jobs(
    config: Config,
    leaders: Dict[str, LeaderAddress],
    apps: Dict[str, AppsKey],
    pool: Optional[StreamrouterPool],
    pool_departed: Collection[str],
) -> JobResult:
    """Outputs of every job enabled in ``config`` (pure)."""
    result = JobResult()
    if config.deployd:
        result.merge(leader_domain_outputs("deployd", leaders))
    if config.swarm:
        result.merge(leader_domain_outputs("swarm", leaders))
    if config.tinydns:
        result.merge(tinydns_outputs(apps, config.domain))
    if config.webrouter:
        result.merge(webrouter_outputs(apps, config.domain))
    if config.streamrouter:
        result.merge(streamrouter_outputs(pool, pool_departed))
    return result


class JobRunner:
    def __init__(
        self, store: Any, verify_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.verify_s = verify_s
        self._clock = clock
        self._confirmed: Dict[str, object] = {}
        self._verified_at = clock()
        self.writes = 0
        self.deletes = 0

    def reset(self) -> None:
        """Forget what was confirmed (leadership changed hands)."""
        self._confirmed.clear()
        self._verified_at = self._clock()

    def pending(self, result: JobResult) -> bool:
        """True when some output is not confirmed yet (or a verification is due)."""
        if self._clock() - self._verified_at >= self.verify_s:
            return True
        if any(self._confirmed.get(k) != v for k, v in result.puts.items()):
            return True
        return any(self._confirmed.get(k) is not _DELETED for k in result.deletes)

    def run(self, result: JobResult, fence_lease: int) -> bool:
        """Bring etcd to ``result``. False when leadership was lost or etcd failed."""
        if self._clock() - self._verified_at >= self.verify_s:
            self._confirmed.clear()
            self._verified_at = self._clock()
        for key, value in sorted(result.puts.items()):
            if self._confirmed.get(key) == value:
                continue
            raw = self.store.read(key)
            current = raw.decode("utf-8", errors="replace") if raw is not None else None
            if current is not None and same_json(current, value):
                self._confirmed[key] = value
                continue
            outcome = self.store.fenced_put(key, value, keys.LEADER, fence_lease)
            if not outcome.succeeded:
                log.warning("leader job write refused key=%s reason=leadership lost", key)
                return False
            self.writes += 1
            self._confirmed[key] = value
            log.info("leader job wrote key=%s value=%s", key, value)
        for key, deletable in sorted(result.deletes.items()):
            if self._confirmed.get(key) is _DELETED:
                continue
            raw = self.store.read(key)
            if raw is None:
                self._confirmed[key] = _DELETED
                continue
            current = raw.decode("utf-8", errors="replace")
            if not deletable(current):
                self._confirmed[key] = _DELETED  # not ours to delete any more
                continue
            outcome = self.store.fenced_delete(key, current, keys.LEADER, fence_lease)
            if not outcome.succeeded:
                log.warning(
                    "leader job delete refused key=%s reason=leadership lost or value changed", key
                )
                return False
            self.deletes += 1
            self._confirmed[key] = _DELETED
            log.info("leader job deleted key=%s", key)
        return True
