"""The node lease: one etcd lease per node, renewed twice per TTL (faster after a failure).

Every key this node owns (VIP locks, the leader key, apps keys, the presence key) is bound
to this one lease, so a dead node loses them all at once when the lease expires.

``alive()`` is true while the last successful renewal is younger than the TTL minus a
safety margin, counted from the moment the renewal was *sent*: the server's expiry is
at least that send time plus the TTL, so an owner that stops announcing when ``alive()``
turns false does so before the lease can expire on the server. ``valid_until()`` is that
instant on CLOCK_MONOTONIC, which every process of the host reads alike: the elector
publishes it and the applier stops announcing past it, whatever it heard last.

The lease ID is kept in a file so a restarted elector resumes the same lease (if the
server still has it) instead of granting a new one: a restart moves no VIP.

A resumed lease keeps the TTL it was granted with, and is renewed at that pace. When the
configured TTL differs (``-vip.ttl`` changed by a reload), a new lease with the new TTL is
granted and the old one is kept alive as *retiring* until the elector has rebound every
key to the new one (``retire()``), then revoked: no key ever lapses, no VIP moves.

After ``revoke()`` (the final stop) the keeper neither renews nor grants again.
"""

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from networkd.bus.messages import LeaseHealth
from networkd.etcd.channel import ClientHolder
from networkd.etcd.client import describe_error
from networkd.etcd.keepalive import KeepAliveStreams, KeepAliveTimeout

log = logging.getLogger("networkd.elector")


def lease_ttl_seconds(ttl: float) -> int:
    """etcd grants whole seconds; never less than requested."""
    return max(1, math.ceil(ttl))


def read_lease_file(path: str) -> int:
    """The lease ID stored by a previous run, 0 when absent or unreadable."""
    return read_lease_ids(path)[0]


def read_lease_record(path: str) -> Tuple[int, int, int]:
    """(lease ID, retiring lease ID, the ``-vip.ttl`` the lease is held for) stored by a
    previous run; 0 for what is absent (an older file has no TTL)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        lease_id = int(data["id"])
        retiring = int(data.get("retiring", 0) or 0)
        ttl = int(data.get("ttl_asked", 0) or 0)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0, 0, 0
    return max(0, lease_id), max(0, retiring), max(0, ttl)


def read_lease_ids(path: str) -> Tuple[int, int]:
    """(lease ID, retiring lease ID) stored by a previous run; 0 for what is absent."""
    lease_id, retiring, _ttl = read_lease_record(path)
    return lease_id, retiring


def write_lease_file(
    path: str, lease_id: int, hostname: str, retiring: int = 0, ttl_asked: int = 0
) -> None:
    """Atomically store the lease ID (temp file + rename), and the ``-vip.ttl`` the lease
    serves: etcd may grant more (its minimum), and a restart must not take that for a
    changed ``-vip.ttl`` and replace the lease each time."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    data: dict = {"id": lease_id, "hostname": hostname}
    if retiring:
        data["retiring"] = retiring
    if ttl_asked:
        data["ttl_asked"] = ttl_asked
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.write("\n")
    os.replace(tmp, path)


# Consecutive failed renewals before the channel is replaced (another endpoint is tried):
# after errors (a refused or broken connection) always; after timeouts only when the
# channel has also answered nothing for a renewal interval (a stuck connection) or the
# lease is no longer alive: late answers while the lease lives mean etcd is slow, not gone.
FAILOVER_AFTER = 2


def default_margin(ttl: float) -> float:
    """How long before its earliest possible expiry on the server a lease counts as dead:
    an eighth of the TTL, at least 0.3 s. The owner stops announcing then; no other node
    can hold its VIPs before etcd expires the lease and the watch, the contention and the
    binding of a standby have run after that."""
    return max(0.3, ttl / 8.0)


def default_interval(ttl: float) -> float:
    """How often a healthy lease is renewed: twice per TTL.

    A dead node's lease expires on the server TTL after the last renewal it received, so
    a hard failover takes TTL minus the time since that renewal (uniform over the
    interval) plus etcd's expiry check (every 0.5 s in etcd 3.4): renewing every TTL/2
    instead of TTL/4 takes a quarter of the TTL off the mean (0.25 s at 2 s; issue 12's
    failover ratio) and halves the keep-alives etcd serves. What it costs is how long
    etcd may not answer before an owner lets go: TTL - margin - up to one interval
    (0.7 to 1.7 s at 2 s, 1.0 to 1.5 s before; the mean, 1.2 s against 1.25 s, barely moves),
    and a failed renewal is retried at ``retry_interval`` instead of waiting a whole
    interval."""
    return ttl / 2.0


def grant_timeout(ttl: float) -> float:
    """How long a lease grant may take: half the TTL, at most 1 s, at least 0.4 s. Not
    longer: while a new lease is granted, a retiring one (a -vip.ttl change) must still
    be renewed, and it counts as dead TTL - margin after its last renewal."""
    return max(0.4, min(1.0, ttl / 2.0))


def retry_interval(ttl: float) -> float:
    """The pace of renewals after one failed: an eighth of the TTL, at least 0.1 s."""
    return max(0.1, ttl / 8.0)


@dataclass
class _Held:
    """One lease this keeper renews: its ID, granted TTL and last successful renewal."""

    lease_id: int
    ttl: float
    last_ok: float  # send time of the last successful renewal (or grant)
    margin: float

    def valid_until(self) -> float:
        return self.last_ok + self.ttl - self.margin


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
        on_renewed: Optional[Callable[[], None]] = None,
    ) -> None:
        self.ttl = float(lease_ttl_seconds(ttl))
        self.interval = interval if interval is not None else default_interval(self.ttl)
        self.margin = margin if margin is not None else default_margin(self.ttl)
        self.grant_timeout = grant_timeout(self.ttl)
        self.path = path
        self.hostname = hostname
        self._holder = ClientHolder(client_factory, "lease", min_interval=0.0, clock=clock)
        # Renewals share one keep-alive stream per channel (networkd.etcd.keepalive).
        self._streams = KeepAliveStreams()
        self._on_change = on_change
        self._on_renewed = on_renewed  # each renewal moves valid_until: publish it
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._revoked = False
        self._thread: Optional[threading.Thread] = None
        self._current: Optional[_Held] = None
        self._retiring: Optional[_Held] = None
        self._generation = 0
        self._lost = 0
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
            return self._current.lease_id if self._current else 0

    @property
    def retiring_id(self) -> int:
        """A previous lease of ours still renewed until its keys moved (0: none)."""
        with self._lock:
            return self._retiring.lease_id if self._retiring else 0

    @property
    def generation(self) -> int:
        """Increments every time a new lease replaces the previous one."""
        with self._lock:
            return self._generation

    @property
    def lost(self) -> int:
        """How many times the server said our lease was gone (expired while we lived)."""
        with self._lock:
            return self._lost

    @property
    def resumed(self) -> bool:
        """True when the lease of a previous run was still alive and was resumed."""
        return self._resumed

    def valid_until(self) -> float:
        """CLOCK_MONOTONIC instant until which every key of ours is sure to live (0: none).

        Past it the lease may expire on the server any moment: owners stop announcing."""
        with self._lock:
            return self._valid_until_locked()

    def _valid_until_locked(self) -> float:
        if self._current is None or self._revoked:
            return 0.0
        until = self._current.valid_until()
        if self._retiring is not None:
            until = min(until, self._retiring.valid_until())
        return until

    def alive(self) -> bool:
        with self._lock:
            return self._clock() < self._valid_until_locked()

    def remaining(self) -> float:
        """Seconds the lease is known to live on the server (lower bound), 0 if unknown."""
        with self._lock:
            if self._current is None:
                return 0.0
            return max(0.0, self._current.ttl - (self._clock() - self._current.last_ok))

    def health(self) -> LeaseHealth:
        with self._lock:
            until = self._valid_until_locked()
            return LeaseHealth(
                lease_id=self._current.lease_id if self._current else 0,
                alive=self._clock() < until,
                ttl_s=self._current.ttl if self._current else self.ttl,
                keepalive_ms=round(self._latency_ms, 1),
                keepalive_failures=self._failures,
                valid_until=until,
            )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Resume or grant the lease (one attempt, now), then keep it alive in a thread."""
        self._holder.get()
        self._establish()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self, renew_first: bool = False) -> None:
        """Stop renewing (the lease stays on the server until its TTL runs out).

        ``renew_first`` (a plain restart): one last renewal on the way out, so the next
        elector has a whole TTL to resume the lease, however slow its start. Only the first
        call counts: a keeper stopped without that renewal (a node that went away) does not
        renew on a later stop."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if renew_first and not self._revoked:
            with self._lock:
                held = [h for h in (self._current, self._retiring) if h is not None]
            for item in held:
                self._renew(item)
        self._streams.close()
        self._holder.close()

    def revoke(self) -> bool:
        """Revoke the lease (final stop): every key bound to it goes at once.

        Renewals stop first, and no lease is granted afterwards, even if revoking fails
        (the lease then runs out on its own)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._streams.close()
        with self._lock:
            self._revoked = True
            held = [h for h in (self._current, self._retiring) if h is not None]
        ok = True
        for item in held:
            ok = self._revoke_one(item.lease_id) and ok
        with self._lock:
            self._current = self._retiring = None
        try:
            os.unlink(self.path)
        except OSError:
            pass
        return ok

    def retire(self) -> bool:
        """The elector moved every key off the retiring lease: revoke it now."""
        with self._lock:
            item = self._retiring
        if item is None:
            return True
        if not self._revoke_one(item.lease_id):
            return False
        with self._lock:
            if self._retiring is item:
                self._retiring = None
            current = self._current
        if current is not None:
            self._write_file(current.lease_id, 0)
        self._notify_if_changed()
        return True

    def _revoke_one(self, lease_id: int) -> bool:
        try:
            self._holder.get().revoke_lease(lease_id)
        except Exception as exc:
            log.warning("lease revoke failed id=%x reason=%s", lease_id, exc)
            return False
        log.info("lease revoked id=%x", lease_id)
        return True

    # -- the keeper thread -------------------------------------------------------------

    def _held(self, lease_id: int, ttl: float, last_ok: float) -> _Held:
        margin = self.margin if ttl == self.ttl else default_margin(ttl)
        return _Held(lease_id, ttl, last_ok, margin)

    def _pace(self) -> float:
        """Renew twice per shortest TTL held (a resumed lease keeps its own), at the
        retry pace while the last renewal failed."""
        with self._lock:
            ttls = [h.ttl for h in (self._current, self._retiring) if h is not None]
            failing = self._consecutive_failures > 0
        shortest = min(ttls) if ttls else self.ttl
        if failing:
            return min(self.interval, retry_interval(shortest))
        return min(self.interval, default_interval(shortest))

    def _run(self) -> None:
        next_at = self._clock() + self._pace()
        while not self._stop.is_set():
            delay = next_at - self._clock()
            if delay > 0 and self._stop.wait(delay):
                break
            started = self._clock()
            self._tick()
            self._notify_if_changed()
            # paced from the start of this round, by its outcome (a failure retries sooner);
            # a round that took longer than the pace is followed at once
            next_at = started + self._pace()

    def _tick(self) -> None:
        with self._lock:
            current, retiring, revoked = self._current, self._retiring, self._revoked
        if revoked:
            return
        if current is None:
            self._grant()
        else:
            self._renew(current)
        if retiring is not None:
            self._renew(retiring)

    def _establish(self) -> None:
        stored, stored_retiring, asked = read_lease_record(self.path)
        client = self._holder.get()
        for lease_id, is_retiring in ((stored_retiring, True), (stored, False)):
            if not lease_id:
                continue
            try:
                info = client.get_lease_info(lease_id)
                remaining, granted = int(info.TTL), int(info.grantedTTL)
            except Exception as exc:
                log.warning("lease resume check failed id=%x reason=%s", lease_id, exc)
                if is_retiring:
                    continue
                # Unknown: keep the ID; the first renewal tells whether it is still alive.
                with self._lock:
                    self._current = self._held(lease_id, self.ttl, -1e18)
                return
            # TTL is whole seconds remaining (0: under a second), -1 when not found.
            if remaining < 0:
                log.info("lease expired while stopped id=%x", lease_id)
                continue
            held = self._held(lease_id, float(granted or self.ttl), -1e18)
            if is_retiring:
                with self._lock:
                    self._retiring = held
                self._renew(held)
                continue
            self._resumed = True
            log.info("lease resumed id=%x remaining_s=%d ttl_s=%d", lease_id, remaining, granted)
            with self._lock:
                self._current = held
            self._renew(held)
            if held.ttl != self.ttl and asked != int(self.ttl):
                # -vip.ttl changed since the lease was granted (or unknown: an older file);
                # a lease etcd raised to its minimum for the same flag is kept
                self._replace_for_ttl(held)
            self._notify_if_changed()
            return
        self._grant()
        self._notify_if_changed()

    def _replace_for_ttl(self, held: _Held) -> None:
        """The resumed lease has another TTL than configured: grant one with the new TTL and
        keep the old one alive until every key has been rebound (``retire``)."""
        log.info("lease ttl change id=%x ttl_s=%d new_ttl_s=%d", held.lease_id, held.ttl, self.ttl)
        with self._lock:
            if self._retiring is None:
                self._retiring = held
                self._current = None
        self._grant()
        with self._lock:
            if self._current is None:  # the grant failed: keep the old lease as it was
                self._current, self._retiring = held, None

    def _grant(self) -> None:
        sent = self._clock()
        try:
            lease = self._grant_request(self._holder.get())
        except Exception as exc:
            self._failed(f"grant: {describe_error(exc)}", exc)
            return
        with self._lock:
            if self._revoked:  # the final stop won the race: give it back at once
                revoked_meanwhile = True
            else:
                revoked_meanwhile = False
                self._current = self._held(int(lease.ID), float(lease.TTL), sent)
                self._generation += 1
                self._latency_ms = (self._clock() - sent) * 1000.0
                self._consecutive_failures = 0
            retiring = self._retiring.lease_id if self._retiring else 0
        if revoked_meanwhile:
            self._revoke_one(int(lease.ID))
            return
        log.info("lease granted id=%x ttl_s=%d", lease.ID, lease.TTL)
        if int(lease.TTL) != int(self.ttl):
            # etcd raises a lease below its minimum (1.5 x its election timeout, rounded up)
            log.warning("lease ttl differs from -vip.ttl requested_s=%d granted_s=%d: renewed"
                        " at the granted ttl (etcd's minimum is 1.5 x its election timeout)",
                        int(self.ttl), int(lease.TTL))  # fmt: skip
        self._write_file(int(lease.ID), retiring)

    def _grant_request(self, client: Any) -> Any:
        """LeaseGrant with its own deadline (``grant_timeout``), not the channel's 0.4 s
        keep-alive one: a grant is a raft write, which a loaded cluster commits in more
        than that, and a grant that timed out is retried (another write) after the
        deadline. The answer has ``ID`` and ``TTL``."""
        from etcd3.etcdrpc import rpc_pb2

        request = rpc_pb2.LeaseGrantRequest(TTL=int(self.ttl))
        return client.leasestub.LeaseGrant(
            request,
            self.grant_timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )

    def _write_file(self, lease_id: int, retiring: int) -> None:
        try:
            write_lease_file(self.path, lease_id, self.hostname, retiring, int(self.ttl))
        except OSError as exc:
            log.warning("lease file not written path=%s reason=%s", self.path, exc)

    def _renew(self, held: _Held) -> None:
        sent = self._clock()
        try:
            # ``answered``: when the request etcd answered was sent, this one's or, when it
            # was late, an earlier one's (keepalive.py); the lease counts from then
            ttl, answered = self._streams.renew(self._holder.get(), held.lease_id, sent)
        except Exception as exc:
            self._failed(f"keepalive: {describe_error(exc)}", exc)
            return
        if ttl <= 0:
            self._expired(held)
            return
        with self._lock:
            held.last_ok = max(held.last_ok, answered)
            self._latency_ms = (self._clock() - answered) * 1000.0
            if self._consecutive_failures:
                log.info(
                    "lease renewed again id=%x after_failures=%d",
                    held.lease_id,
                    self._consecutive_failures,
                )
            self._consecutive_failures = 0
        if self._on_renewed is not None:
            self._on_renewed()

    def _expired(self, held: _Held) -> None:
        """The server no longer has the lease: everything bound to it is gone."""
        log.warning("lease lost id=%x reason=expired on the server", held.lease_id)
        with self._lock:
            if self._retiring is held:
                self._retiring = None
                return
            if self._current is held:
                self._current = None
                self._lost += 1
        self._grant()

    def _failed(self, reason: str, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            self._consecutive_failures += 1
            failures = self._consecutive_failures
        if failures == 1:
            log.warning("lease renewal failed id=%x reason=%s", self.lease_id, reason)
        if failures % FAILOVER_AFTER == 0:
            if (
                isinstance(exc, KeepAliveTimeout)
                and self.alive()
                and not self._streams.silent_for(self.interval)
            ):
                # Late, not dead, and the lease not yet in danger: its late answers still
                # count on this stream (keepalive.py), and a new channel on a loaded etcd
                # only adds a connection, a probe of every endpoint and, on another
                # endpoint, an elector restart to the load. Once the lease is no longer
                # alive, another member is tried (one slow member: a bad disk).
                log.debug("lease channel slow, not silent: kept failures=%d", failures)
                return
            self._reconnect()

    def _reconnect(self) -> None:
        """Renewals keep failing: renew through a new channel (a new TCP connection, and
        another endpoint when the first one does not answer) from the next try on."""
        old = self._holder.peek()
        old_endpoint = getattr(old, "endpoint", None)
        try:
            client = self._holder.make()
        except Exception as exc:
            log.debug("lease reconnect failed reason=%s", exc)
            return
        previous = self._holder.replace(client)
        if previous is not None:
            try:
                previous.close()
            except Exception:
                pass
        new_endpoint = getattr(client, "endpoint", None)
        if old_endpoint is not None and new_endpoint is not None and new_endpoint != old_endpoint:
            self.switched_endpoint = getattr(new_endpoint, "url", str(new_endpoint))
            log.warning(
                "etcd endpoint switched for the lease from=%s to=%s",
                getattr(old_endpoint, "url", old_endpoint),
                self.switched_endpoint,
            )

    def _notify_if_changed(self) -> None:
        alive = self.alive()
        if alive != self._was_alive:
            self._was_alive = alive
            if not alive:
                log.warning("lease not alive id=%x: owner stops announcing", self.lease_id)
        seen = (self.lease_id, self.generation, alive, self.retiring_id)
        if seen != self._notified:
            self._notified = seen
            if self._on_change is not None:
                self._on_change()
