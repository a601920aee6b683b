"""The cluster state as a pure function of the etcd keys networkd reads.

``ClusterState`` holds the validated entry of every key and the item dicts of every state
topic the watcher publishes. ``apply`` (watch events), and ``replace_all`` (a full read,
after a start, a reconnect or a compaction) return a ``Delta``: the items that changed
per topic (``None`` = deleted), and the config errors that are new or gone. Nothing here
touches etcd, the bus or the clock, so every rule is unit-tested.

Rules:
- Several keys may map to one item (``/domains/Foo.lain`` and ``/domains/foo.lain``): the
  key that is already in canonical lower case wins, then the smallest key.
- A key whose value is rejected contributes nothing; its error stays until the key is
  fixed or deleted. The same bad value read again (a resync) is not a new error.
- ``state.containers`` holds, per ``<app>/<proc>``, the placed container on this node with
  the lowest InstanceNo; ``state.proc_nodes`` every node running a container of the proc.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from networkd import keys
from networkd.bus.messages import ConfigError, LocalContainer, ProcNodes
from networkd.etcd.validate import Parsed, PodGroupInfo, validate

T_VIPS = "state.vips"
T_DOMAINS = "state.domains"
T_DOMAIN_SERVERS = "state.domain_servers"
T_CONTAINERS = "state.containers"
T_PROC_NODES = "state.proc_nodes"
T_LEADERS = "state.leaders"
T_ACL = "state.acl"
T_STREAMROUTER = "state.streamrouter"
T_APPS = "state.apps"
T_CONFIG_ERRORS = "state.config_errors"

# Every topic whose items come from etcd keys, in publishing order.
TOPICS: Tuple[str, ...] = (
    T_VIPS,
    T_DOMAINS,
    T_DOMAIN_SERVERS,
    T_CONTAINERS,
    T_PROC_NODES,
    T_LEADERS,
    T_ACL,
    T_STREAMROUTER,
    T_APPS,
    T_CONFIG_ERRORS,
)

# kind -> topic, for the kinds that map one key to one item.
DIRECT_TOPICS: Dict[str, str] = {
    keys.KIND_VIP: T_VIPS,
    keys.KIND_DOMAIN: T_DOMAINS,
    keys.KIND_DOMAIN_SERVERS: T_DOMAIN_SERVERS,
    keys.KIND_LEADER: T_LEADERS,
    keys.KIND_STREAMROUTER: T_STREAMROUTER,
    keys.KIND_WHITELIST_IPS: T_ACL,
    keys.KIND_WHITELIST_EX_PORTS: T_ACL,
    keys.KIND_WHITELIST_IN_PORTS: T_ACL,
    keys.KIND_APPS: T_APPS,
}
_POD_GROUPS = "pod_groups"  # owner table of the derived proc topics

KeyType = Union[str, bytes]


def decode_key(raw: KeyType) -> Tuple[str, bool]:
    """A key as text, and whether it was valid UTF-8 (else bytes are escaped as ``\\xNN``)."""
    if isinstance(raw, str):
        return raw, True
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def _preference(key: str) -> Tuple[bool, str]:
    return (key.lower() != key, key)


@dataclass
class Delta:
    """What one batch changed: per topic, item key -> new item or None (deleted)."""

    changes: Dict[str, Dict[str, Optional[Any]]] = field(default_factory=dict)
    new_errors: List[ConfigError] = field(default_factory=list)
    cleared_errors: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def sets(self, topic: str) -> Dict[str, Any]:
        return {k: v for k, v in self.changes.get(topic, {}).items() if v is not None}

    def deleted(self, topic: str) -> List[str]:
        return [k for k, v in self.changes.get(topic, {}).items() if v is None]


class _Batch:
    """Remembers the value of every item a batch touches, to report only real changes."""

    def __init__(self, state: "ClusterState") -> None:
        self.state = state
        self.before: Dict[Tuple[str, str], Optional[Any]] = {}

    def touch(self, topic: str, item_key: str) -> None:
        ident = (topic, item_key)
        if ident not in self.before:
            self.before[ident] = self.state.items[topic].get(item_key)

    def finish(self) -> Delta:
        delta = Delta()
        for (topic, item_key), old in self.before.items():
            new = self.state.items[topic].get(item_key)
            if new == old:
                continue
            delta.changes.setdefault(topic, {})[item_key] = new
            if topic == T_CONFIG_ERRORS:
                if new is not None:
                    delta.new_errors.append(new)
                else:
                    delta.cleared_errors.append(item_key)
        return delta


class ClusterState:
    """Validated entries of every key read, and the derived per-topic items."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.items: Dict[str, Dict[str, Any]] = {topic: {} for topic in TOPICS}
        self._raw: Dict[str, bytes] = {}
        self._entries: Dict[str, Parsed] = {}
        # table -> item key -> etcd keys contributing to it
        self._owners: Dict[str, Dict[str, Set[str]]] = {}

    # --- public API ---------------------------------------------------------------------

    def apply(self, changes: Iterable[Tuple[KeyType, Optional[bytes]]]) -> Delta:
        """Apply watch events in order: ``(key, value)`` puts, ``(key, None)`` deletes."""
        batch = _Batch(self)
        for key, value in changes:
            text, _ok = decode_key(key)
            if value is None:
                self._delete(text, batch)
            else:
                self._put(key, value, batch)
        return batch.finish()

    def put(self, key: KeyType, value: bytes) -> Delta:
        return self.apply([(key, value)])

    def delete(self, key: KeyType) -> Delta:
        return self.apply([(key, None)])

    def replace_all(self, pairs: Iterable[Tuple[KeyType, bytes]]) -> Delta:
        """Make the state that of exactly these keys (a full read); returns the diff."""
        batch = _Batch(self)
        wanted: Dict[str, Tuple[KeyType, bytes]] = {}
        for key, value in pairs:
            wanted[decode_key(key)[0]] = (key, value)
        for text in [k for k in self._raw if k not in wanted]:
            self._delete(text, batch)
        for raw_key, value in wanted.values():
            self._put(raw_key, value, batch)
        return batch.finish()

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """Every topic's items (copies of the dicts, the items themselves shared)."""
        return {topic: dict(items) for topic, items in self.items.items()}

    @property
    def errors(self) -> Dict[str, ConfigError]:
        return self.items[T_CONFIG_ERRORS]

    def keys_read(self) -> int:
        return len(self._raw)

    # --- internals ----------------------------------------------------------------------

    def _put(self, raw_key: KeyType, value: bytes, batch: _Batch) -> None:
        text, ok = decode_key(raw_key)
        if self._raw.get(text) == value:
            return  # unchanged (a resync): nothing to validate, no new error
        if ok:
            parsed = validate(text, value)
        else:
            found = keys.classify(text)
            parsed = Parsed(found[0], error="key: not valid UTF-8") if found else None
        if parsed is None:
            return  # not a key networkd reads
        self._remove(text, batch)
        self._raw[text] = value
        self._entries[text] = parsed
        if parsed.error:
            batch.touch(T_CONFIG_ERRORS, text)
            self.items[T_CONFIG_ERRORS][text] = ConfigError(key=text, reason=parsed.error)
            return
        if parsed.warning:  # accepted, with a part rejected alone
            batch.touch(T_CONFIG_ERRORS, text)
            self.items[T_CONFIG_ERRORS][text] = ConfigError(key=text, reason=parsed.warning)
        table = _POD_GROUPS if parsed.kind == keys.KIND_POD_GROUP else DIRECT_TOPICS[parsed.kind]
        self._owners.setdefault(table, {}).setdefault(parsed.item_key, set()).add(text)
        self._recompute(table, parsed.item_key, batch)

    def _delete(self, text: str, batch: _Batch) -> None:
        self._remove(text, batch)

    def _remove(self, text: str, batch: _Batch) -> None:
        old = self._entries.pop(text, None)
        self._raw.pop(text, None)
        if old is None:
            return
        if old.error or old.warning:
            batch.touch(T_CONFIG_ERRORS, text)
            self.items[T_CONFIG_ERRORS].pop(text, None)
        if old.error:
            return
        table = _POD_GROUPS if old.kind == keys.KIND_POD_GROUP else DIRECT_TOPICS[old.kind]
        owners = self._owners.get(table, {})
        members = owners.get(old.item_key)
        if members is not None:
            members.discard(text)
            if not members:
                del owners[old.item_key]
        self._recompute(table, old.item_key, batch)

    def _recompute(self, table: str, item_key: str, batch: _Batch) -> None:
        members = self._owners.get(table, {}).get(item_key)
        if table == _POD_GROUPS:
            self._recompute_proc(item_key, members or set(), batch)
            return
        batch.touch(table, item_key)
        item = None
        if members:
            winner = min(members, key=_preference)
            item = self._entries[winner].item
        if item is None:
            self.items[table].pop(item_key, None)
        else:
            self.items[table][item_key] = item

    def _recompute_proc(self, proc_key: str, members: Set[str], batch: _Batch) -> None:
        batch.touch(T_CONTAINERS, proc_key)
        batch.touch(T_PROC_NODES, proc_key)
        containers: List[LocalContainer] = []
        app = proc = ""
        for etcd_key in sorted(members):
            info = self._entries[etcd_key].item
            assert isinstance(info, PodGroupInfo)
            app, proc = info.app, info.proc
            containers.extend(info.containers)
        nodes = sorted({c.node_name for c in containers})
        if nodes:
            self.items[T_PROC_NODES][proc_key] = ProcNodes(app=app, proc=proc, nodes=nodes)
        else:
            self.items[T_PROC_NODES].pop(proc_key, None)
        local = [c for c in containers if c.node_name == self.hostname and c.container_ip]
        if local:
            self.items[T_CONTAINERS][proc_key] = min(
                local, key=lambda c: (c.instance_no, c.container_id)
            )
        else:
            self.items[T_CONTAINERS].pop(proc_key, None)
