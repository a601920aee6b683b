"""The node lease: one etcd lease per node, kept alive several times per TTL.

Every key this node owns (VIP locks, the leader key, apps keys, the presence key) is bound
to this one lease, so a dead node loses them all at once when the lease expires.

``alive()`` is true while the last successful renewal is younger than the TTL minus a
safety margin, counted from the moment the renewal was *sent*: the server's expiry is
at least that send time plus the TTL, so an owner that stops announcing when ``alive()``
turns false does so before the lease can expire on the server.

The lease ID is kept in a file so a restarted elector resumes the same lease (if the
server still has it) instead of granting a new one: a restart moves no VIP.
"""

import json
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Optional

from networkd.bus.messages import LeaseHealth

log = logging.getLogger("networkd.elector")


def lease_ttl_seconds(ttl: float) -> int:
    """etcd grants whole seconds; never less than requested."""
    return max(1, math.ceil(ttl))


def read_lease_file(path: str) -> int:
    """The lease ID stored by a previous run, 0 when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        lease_id = int(data["id"])
        return lease_id if lease_id > 0 else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write_lease_file(path: str, lease_id: int, hostname: str) -> None:
    """Atomically store the lease ID (temp file + rename)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"id": lease_id, "hostname": hostname}, f)
        f.write("\n")
    os.replace(tmp, path)


# Consecutive failed renewals (one per TTL/4) before another etcd endpoint is tried.
FAILOVER_AFTER = 2


class LeaseKeeper:
    """Grants or resumes the node lease and renews it from its own thread.

    ``client_factory`` returns an etcd3 client whose timeout is shorter than the renewal
    interval; the keeper owns that client (one gRPC channel, separate from the one that
    does the elector's other work, so a slow transaction never delays a renewal).
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        ttl: float,
        path: str,
        hostname: str = "",
        interval: Optional[float] = None,
        margin: Optional[float] = None,
        on_change: Optional[Callable[[], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = float(lease_ttl_seconds(ttl))
        self.interval = interval if interval is not None else self.ttl / 4.0
        self.margin = margin if margin is not None else max(0.3, self.ttl / 4.0)
        self.path = path
        self.hostname = hostname
        self._client_factory = client_factory
        self._client: Any = None
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lease_id = 0
        self._generation = 0
        self._last_ok = -1e18  # send time of the last successful renewal (or grant)
        self._server_ttl = 0.0
        self._latency_ms = 0.0
        self._failures = 0
        self._consecutive_failures = 0
        self._resumed = False
        self._was_alive = False
        self._notified: Any = None
        # Set once renewals had to move to another etcd endpoint (the elector then
        # restarts so that its other channels reconnect too; the lease is resumed).
        self.switched_endpoint = ""

    # -- public view (any thread) ------------------------------------------------------

    @property
    def lease_id(self) -> int:
        with self._lock:
            return self._lease_id

    @property
    def generation(self) -> int:
        """Increments every time a new lease replaces the previous one."""
        with self._lock:
            return self._generation

    @property
    def resumed(self) -> bool:
        """True when the lease of a previous run was still alive and was resumed."""
        return self._resumed

    def alive(self) -> bool:
        with self._lock:
            return self._lease_id != 0 and self._clock() - self._last_ok < self.ttl - self.margin

    def remaining(self) -> float:
        """Seconds the lease is known to live on the server (lower bound), 0 if unknown."""
        with self._lock:
            if not self._lease_id:
                return 0.0
            return max(0.0, self.ttl - (self._clock() - self._last_ok))

    def health(self) -> LeaseHealth:
        alive = self.alive()
        with self._lock:
            return LeaseHealth(
                lease_id=self._lease_id,
                alive=alive,
                ttl_s=self.ttl,
                keepalive_ms=round(self._latency_ms, 1),
                keepalive_failures=self._failures,
            )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Resume or grant the lease (one attempt, now), then keep it alive in a thread."""
        self._client = self._client_factory()
        self._establish()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the lease stays on the server until its TTL runs out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken channel
                pass

    def revoke(self) -> bool:
        """Revoke the lease (final stop): every key bound to it goes at once."""
        lease_id = self.lease_id
        if not lease_id:
            return True
        client = self._client or self._client_factory()
        try:
            client.revoke_lease(lease_id)
        except Exception as exc:
            log.warning("lease revoke failed id=%x reason=%s", lease_id, exc)
            return False
        log.info("lease revoked id=%x", lease_id)
        with self._lock:
            self._lease_id = 0
        try:
            os.unlink(self.path)
        except OSError:
            pass
        return True

    # -- the keeper thread -------------------------------------------------------------

    def _run(self) -> None:
        next_at = self._clock() + self.interval
        while not self._stop.is_set():
            delay = next_at - self._clock()
            if delay > 0 and self._stop.wait(delay):
                break
            started = self._clock()
            next_at = started + self.interval
            if self.lease_id:
                self._renew()
            else:
                self._grant()
            self._notify_if_changed()
            if self._clock() > next_at:
                next_at = self._clock()

    def _establish(self) -> None:
        stored = read_lease_file(self.path)
        if stored:
            try:
                info = self._client.get_lease_info(stored)
                remaining = int(info.TTL)
            except Exception as exc:
                log.warning("lease resume check failed id=%x reason=%s", stored, exc)
                # Unknown: keep the ID; the first renewal tells whether it is still alive.
                with self._lock:
                    self._lease_id = stored
                return
            # TTL is whole seconds remaining (0: under a second), -1 when not found.
            if remaining >= 0:
                with self._lock:
                    self._lease_id = stored
                self._resumed = True
                log.info("lease resumed id=%x remaining_s=%d", stored, remaining)
                self._renew()
                self._notify_if_changed()
                return
            log.info("lease expired while stopped id=%x", stored)
        self._grant()
        self._notify_if_changed()

    def _grant(self) -> None:
        sent = self._clock()
        try:
            lease = self._client.lease(int(self.ttl))
        except Exception as exc:
            self._failed(f"grant: {exc}")
            return
        with self._lock:
            self._lease_id = int(lease.id)
            self._generation += 1
            self._last_ok = sent
            self._server_ttl = float(lease.ttl)
            self._latency_ms = (self._clock() - sent) * 1000.0
            self._consecutive_failures = 0
        log.info("lease granted id=%x ttl_s=%d", lease.id, lease.ttl)
        try:
            write_lease_file(self.path, int(lease.id), self.hostname)
        except OSError as exc:
            log.warning("lease file not written path=%s reason=%s", self.path, exc)

    def _renew(self) -> None:
        lease_id = self.lease_id
        sent = self._clock()
        try:
            responses = list(self._client.refresh_lease(lease_id))
        except Exception as exc:
            self._failed(f"keepalive: {exc}")
            return
        ttl = int(responses[0].TTL) if responses else 0
        if ttl <= 0:
            # The server no longer has the lease: everything bound to it is gone.
            log.warning("lease lost id=%x reason=expired on the server", lease_id)
            with self._lock:
                if self._lease_id == lease_id:
                    self._lease_id = 0
            self._grant()
            return
        with self._lock:
            self._last_ok = sent
            self._server_ttl = float(ttl)
            self._latency_ms = (self._clock() - sent) * 1000.0
            if self._consecutive_failures:
                log.info(
                    "lease renewed again id=%x after_failures=%d",
                    lease_id,
                    self._consecutive_failures,
                )
            self._consecutive_failures = 0

    def _failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self._consecutive_failures += 1
            failures = self._consecutive_failures
        if failures == 1:
            log.warning("lease renewal failed id=%x reason=%s", self.lease_id, reason)
        if failures % FAILOVER_AFTER == 0:
            self._try_other_endpoint()

    def _try_other_endpoint(self) -> None:
        """Renewals keep failing: if another etcd endpoint answers, renew through it now.

        The factory returns a client for the first endpoint that answers a read; with a
        single endpoint it returns the same one and nothing changes (gRPC reconnects).
        """
        old = getattr(self._client, "endpoint", None)
        try:
            client = self._client_factory()
        except Exception as exc:
            log.debug("lease failover probe failed reason=%s", exc)
            return
        new = getattr(client, "endpoint", None)
        if new is None or new == old:
            try:
                client.close()
            except Exception:
                pass
            return
        previous, self._client = self._client, client
        try:
            previous.close()
        except Exception:
            pass
        self.switched_endpoint = getattr(new, "url", str(new))
        log.warning(
            "etcd endpoint switched for the lease from=%s to=%s",
            getattr(old, "url", old),
            self.switched_endpoint,
        )
        if self.lease_id:
            self._renew()
        else:
            self._grant()

    def _notify_if_changed(self) -> None:
        alive = self.alive()
        if alive != self._was_alive:
            self._was_alive = alive
            if not alive:
                log.warning("lease not alive id=%x: owner stops announcing", self.lease_id)
        seen = (self.lease_id, self.generation, alive)
        if seen != self._notified:
            self._notified = seen
            if self._on_change is not None:
                self._on_change()
