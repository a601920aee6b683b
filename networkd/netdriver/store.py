"""Compare-and-swap writes under ``/lain/networkd/networks/``: one etcd transaction each.

Every change is guarded: a key is created only if absent, replaced or deleted only at the
revision it was read at, and a network is removed only when no host uses it any more.
Two hosts racing for one address or block therefore cannot both win; the loser reads
again and plans anew. Successful writes are echoed into the mirror at once, so the next
request sees them without waiting for the watch.
"""

import logging
from dataclasses import dataclass
from typing import Any, List, Sequence, Union

from networkd import keys
from networkd.election.mirror import KeyMirror
from networkd.election.store import TxnResult, _header_revision
from networkd.etcd.channel import ClientHolder
from networkd.netdriver.records import Record, render

log = logging.getLogger("networkd.netstore")


@dataclass(frozen=True)
class Absent:
    key: str


@dataclass(frozen=True)
class AtRevision:
    key: str
    revision: int


@dataclass(frozen=True)
class RangeEmpty:
    """No key under ``prefix``."""

    prefix: str


@dataclass(frozen=True)
class UnchangedSince:
    """No key under ``prefix`` was written after ``revision``."""

    prefix: str
    revision: int


Condition = Union[Absent, AtRevision, RangeEmpty, UnchangedSince]


@dataclass(frozen=True)
class Put:
    record: Record
    lease: int = 0


class NetStore:
    def __init__(self, holder: ClientHolder, mirror: KeyMirror) -> None:
        self.holder = holder
        self.mirror = mirror
        self.writes = 0
        self.conflicts = 0

    def expect(self, key: str) -> Condition:
        """The condition "``key`` is as the mirror has it now"."""
        entry = self.mirror.get(key)
        return Absent(key) if entry is None else AtRevision(key, entry.mod_revision)

    def unchanged_since(self, prefix: str) -> Condition:
        """The condition "nothing under ``prefix`` changed since the mirror's revision"."""
        return UnchangedSince(prefix, self.mirror.revision)

    def commit(
        self,
        conditions: Sequence[Condition],
        puts: Sequence[Put] = (),
        deletes: Sequence[str] = (),
        delete_prefixes: Sequence[str] = (),
    ) -> TxnResult:
        """One transaction: succeeded when every condition held and the writes were made."""
        from etcd3 import transactions as t

        compare: List[Any] = []
        for cond in conditions:
            if isinstance(cond, Absent):
                compare.append(t.Create(cond.key) == 0)
            elif isinstance(cond, AtRevision):
                compare.append(t.Mod(cond.key) == cond.revision)
            elif isinstance(cond, UnchangedSince):
                end = keys.prefix_range_end(cond.prefix)
                compare.append(t.Mod(cond.prefix, range_end=end) < cond.revision + 1)
            else:
                compare.append(
                    t.Create(cond.prefix, range_end=keys.prefix_range_end(cond.prefix)) == 0
                )
        ops: List[Any] = []
        rendered = []
        for put in puts:
            key, value = render(put.record)
            rendered.append((key, value, put.lease))
            ops.append(t.Put(key, value, lease=put.lease or None))
        for key in deletes:
            ops.append(t.Delete(key))
        for prefix in delete_prefixes:
            ops.append(t.Delete(prefix, range_end=keys.prefix_range_end(prefix)))
        try:
            result: TxnResult = _header_revision(self.holder.get(), compare, ops, [])
        except Exception as exc:
            self.holder.failed(exc)  # a dead connection: the next call opens a new one
            raise
        if not result.succeeded:
            self.conflicts += 1
            log.debug("netstore txn conflict conditions=%s", conditions)
            return result
        self.writes += 1
        for key, value, lease in rendered:
            self.mirror.note_put(key, value, lease, result.revision)
        for key in deletes:
            self.mirror.note_delete(key, result.revision)
        for prefix in delete_prefixes:
            for key in self.mirror.snapshot(prefix):
                self.mirror.note_delete(key, result.revision)
        return result
