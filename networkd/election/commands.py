"""Operators' VIP commands, carried out by the elector (it holds the etcd credentials).

They arrive from the api worker (``networkdctl vip ...`` through its local socket, or
HTTP with the token) as ``VipCommand`` events, are run on the controller thread, and each
ends with one ``CommandResult``:

- ``add KEY VALUE``: the value is validated with the watcher's own code
  (``networkd.etcd.validate``) before anything is written; a rejected value, or one with a
  part rejected (a bad ``health`` object), is refused with the reason.
- ``rm KEY``: the value is deleted.
- ``move IP [TO]``: refused unless the VIP has an owner and another node is eligible (or
  ``TO`` is: STANDBY in the cluster view). A move key ``/lain/networkd/moves/<ip>`` (bound
  to our lease, so it goes with us) makes the owner release in order and only the target
  (or any node but the owner) contend; the command ends when another node holds the lock,
  or fails after ``MOVE_TIMEOUT``. The handover is the ordinary release: the address goes
  first, the lock after the applier confirmed, so there is never a second holder.
"""

import queue
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from networkd import keys
from networkd.bus.messages import CommandResult, VipClusterView, VipCommand, VipConfig
from networkd.election.cluster_view import eligible_for_move
from networkd.election.plan import Holder
from networkd.etcd.validate import validate

MOVE_TIMEOUT = 10.0
ANSWERS_KEPT = 256
ACTIONS = ("add", "rm", "move")


@dataclass
class PendingMove:
    command: VipCommand
    started: float
    move: keys.Move
    value: str


class CommandRunner:
    def __init__(
        self,
        store: Any,
        clock: Callable[[], float] = time.monotonic,
        on_result: Optional[Callable[[], None]] = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._on_result = on_result  # wakes the thread that publishes the results
        self._inbox: queue.Queue[VipCommand] = queue.Queue()
        self._outbox: queue.Queue[CommandResult] = queue.Queue()
        self.pending: Dict[str, PendingMove] = {}
        # Answers by command id: the api sends a command again until it hears back
        # (pub/sub loses what a restarting subscriber missed); a repeat is answered from
        # here, never carried out twice.
        self._answered: OrderedDict[str, Optional[CommandResult]] = OrderedDict()

    # -- main thread ---------------------------------------------------------------------

    def submit(self, command: VipCommand) -> None:
        self._inbox.put(command)

    def results(self) -> List[CommandResult]:
        out: List[CommandResult] = []
        while True:
            try:
                out.append(self._outbox.get_nowait())
            except queue.Empty:
                return out

    def waiting(self) -> bool:
        return not self._inbox.empty() or bool(self.pending)

    # -- controller thread ---------------------------------------------------------------

    def step(
        self,
        configs: Mapping[str, VipConfig],
        cluster: Mapping[str, VipClusterView],
        locks: Mapping[str, Holder],
        lease_id: int,
        alive: bool,
    ) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
            if command.id in self._answered:
                earlier = self._answered[command.id]
                if earlier is not None:
                    self._answer(earlier)
                continue  # a repeat: answered (or still running) already
            try:
                result = self._run(command, configs, cluster, lease_id, alive)
            except Exception as exc:  # etcd failed: the operator hears why
                result = CommandResult(command.id, False, f"etcd request failed: {exc}", 503)
            self._remember(command.id, result)
            if result is not None:
                self._answer(result)
        self._advance_moves(locks)

    def _answer(self, result: CommandResult) -> None:
        self._outbox.put(result)
        if self._on_result is not None:
            self._on_result()

    def _remember(self, ident: str, result: Optional[CommandResult]) -> None:
        self._answered[ident] = result
        while len(self._answered) > ANSWERS_KEPT:
            self._answered.popitem(last=False)

    def _finish(self, result: CommandResult) -> None:
        self._remember(result.id, result)
        self._answer(result)

    def _run(
        self,
        command: VipCommand,
        configs: Mapping[str, VipConfig],
        cluster: Mapping[str, VipClusterView],
        lease_id: int,
        alive: bool,
    ) -> Optional[CommandResult]:
        if command.action not in ACTIONS:
            return CommandResult(command.id, False, f"unknown action {command.action!r}", 400)
        try:
            vip = keys.parse_vip_suffix(command.key)
        except keys.KeyLayoutError as exc:
            return CommandResult(command.id, False, f"bad VIP key {command.key!r}: {exc}", 400)
        key = keys.vip_key(vip.ip, vip.port)
        if command.action == "add":
            return self._add(command, key)
        if command.action == "rm":
            if self.store.delete_config(key):
                return CommandResult(command.id, True, f"deleted {key}")
            return CommandResult(command.id, False, f"no such VIP: {key}", 404)
        if vip.port or vip.ip not in configs:
            return CommandResult(
                command.id, False, f"no floating VIP {command.key} configured", 404
            )
        return self._move(command, vip.ip, cluster.get(vip.ip), lease_id, alive)

    def _add(self, command: VipCommand, key: str) -> CommandResult:
        parsed = validate(key, command.value.encode("utf-8", errors="replace"))
        if parsed is None:
            return CommandResult(command.id, False, f"not a VIP key: {key}", 400)
        problem = parsed.error or parsed.warning
        if problem:
            return CommandResult(command.id, False, f"refused {key}: {problem}", 400)
        self.store.put_config(key, command.value)
        return CommandResult(command.id, True, f"wrote {key}")

    def _move(
        self,
        command: VipCommand,
        ip: str,
        view: Optional[VipClusterView],
        lease_id: int,
        alive: bool,
    ) -> Optional[CommandResult]:
        if view is None:
            return CommandResult(command.id, False, f"{ip} is not known yet", 503)
        ok, reason = eligible_for_move(view, command.to)
        if not ok:
            return CommandResult(command.id, False, f"refused: {reason}", 409)
        if not (alive and lease_id):
            return CommandResult(command.id, False, "refused: etcd is not reachable", 503)
        if ip in self.pending:
            return CommandResult(command.id, False, f"refused: {ip} is being moved", 409)
        move = keys.Move(view.owner, command.to)
        value = keys.encode_move(move)
        if not self.store.create(keys.move_key(ip), value, lease_id).succeeded:
            return CommandResult(command.id, False, f"refused: {ip} is being moved", 409)
        self.pending[ip] = PendingMove(command, self._clock(), move, value)
        return None  # answered once the lock moved

    def _advance_moves(self, locks: Mapping[str, Holder]) -> None:
        now = self._clock()
        for ip, pending in list(self.pending.items()):
            holder = locks[ip].hostname if ip in locks else ""
            target = pending.move.target
            done = holder not in ("", pending.move.source) and (not target or holder == target)
            late = now - pending.started > MOVE_TIMEOUT
            if not (done or late):
                continue
            del self.pending[ip]
            try:
                self.store.delete_if(keys.move_key(ip), pending.value)
            except Exception:
                pass  # bound to our lease: it goes with it at the latest
            took = now - pending.started
            if done:
                message = f"moved {ip} from {pending.move.source} to {holder} in {took:.3f}s"
                self._finish(CommandResult(pending.command.id, True, message))
            else:
                message = (
                    f"{ip} did not move within {MOVE_TIMEOUT:.0f}s; it is with {holder or 'nobody'}"
                )
                self._finish(CommandResult(pending.command.id, False, message, 504))
