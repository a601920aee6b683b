"""Wire format of the bus: a multipart ``[topic, body]`` whose body is a msgpack envelope.

The envelope carries a format version, the sender, its epoch (the sender process's start
time), a per-sender per-topic sequence number, a timestamp, the kind of message
(``event``, ``snapshot`` or ``delta``), the payload type name and the payload. Payloads are
dataclasses from ``networkd.bus.messages``, converted to and from plain msgpack values here.

Decoding never trusts the bytes: anything malformed raises ``CodecError``.
"""

import dataclasses
import sys
import time
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

import msgpack

FORMAT_VERSION = 1

KIND_EVENT = "event"
KIND_SNAPSHOT = "snapshot"
KIND_DELTA = "delta"
KINDS = (KIND_EVENT, KIND_SNAPSHOT, KIND_DELTA)

T = TypeVar("T")


class CodecError(ValueError):
    """A bus frame that cannot be decoded; the message says what was wrong."""


_REGISTRY: Dict[str, type] = {}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")


def register(cls: Type[T]) -> Type[T]:
    """Class decorator: make a dataclass known to the codec under its class name."""
    if not _is_dataclass_type(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    _REGISTRY[cls.__name__] = cls
    return cls


def message_type(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CodecError(f"unknown message type {name!r}") from None


def to_plain(value: Any) -> Any:
    """Dataclasses, tuples and lists to msgpack-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def _type_hints(cls: type) -> Dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        import typing

        module = sys.modules[cls.__module__]
        cached = typing.get_type_hints(cls, vars(module))
        _HINTS[cls] = cached
    return cached


_HINTS: Dict[type, Dict[str, Any]] = {}


def from_plain(tp: Any, value: Any, where: str = "payload") -> Any:
    """Rebuild a value of type ``tp`` from msgpack values, checking shapes as it goes."""
    import typing

    origin = (
        typing.get_origin(tp) if hasattr(typing, "get_origin") else getattr(tp, "__origin__", None)
    )
    args = typing.get_args(tp) if hasattr(typing, "get_args") else getattr(tp, "__args__", ())
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return from_plain(inner[0], value, where)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise CodecError(f"{where}: expected a map for {tp.__name__}")
        hints = _type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = from_plain(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CodecError(f"{where}: missing field {f.name!r}")
        return tp(**kwargs)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise CodecError(f"{where}: expected a list")
        return [from_plain(args[0] if args else Any, v, where) for v in value]
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise CodecError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v, where) for v in value)
        if args and len(args) != len(value):
            raise CodecError(f"{where}: expected {len(args)} items")
        return tuple(from_plain(a, v, where) for a, v in zip(args, value)) if args else tuple(value)
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise CodecError(f"{where}: expected a map")
        vt = args[1] if args else Any
        return {k: from_plain(vt, v, where) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise CodecError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value


@dataclasses.dataclass
class Envelope:
    """One decoded bus message."""

    topic: str
    sender: str
    epoch: float
    seq: int
    ts: float
    kind: str
    type: str
    # event: a message dataclass; snapshot: {key: item}; delta: {"set": {key: item}, "deleted": [key]}
    body: Any

    def describe(self) -> Dict[str, Any]:
        """A JSON-ready view for the tap and the API."""
        return {
            "topic": self.topic,
            "sender": self.sender,
            "epoch": self.epoch,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "type": self.type,
            "body": to_plain(self.body),
        }


def encode(
    topic: str,
    sender: str,
    epoch: float,
    seq: int,
    kind: str,
    type_name: str,
    body: Any,
    ts: Optional[float] = None,
) -> List[bytes]:
    envelope = {
        "v": FORMAT_VERSION,
        "sender": sender,
        "epoch": epoch,
        "seq": seq,
        "ts": time.time() if ts is None else ts,
        "kind": kind,
        "type": type_name,
        "body": to_plain(body),
    }
    return [topic.encode(), msgpack.packb(envelope, use_bin_type=True)]


def decode(frames: List[bytes]) -> Envelope:
    if len(frames) != 2:
        raise CodecError(f"expected 2 frames, got {len(frames)}")
    try:
        topic = frames[0].decode()
        raw = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
    except (
        UnicodeDecodeError,
        ValueError,
        TypeError,  # a map key msgpack cannot hash (a list used as a key)
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise CodecError(f"undecodable frame: {exc}") from None
    if not isinstance(raw, dict):
        raise CodecError("envelope is not a map")
    if raw.get("v") != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {raw.get('v')!r}")
    try:
        sender = str(raw["sender"])
        epoch = float(raw["epoch"])
        seq = int(raw["seq"])
        ts = float(raw["ts"])
        kind = str(raw["kind"])
        type_name = str(raw["type"])
        plain = raw["body"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"envelope field missing or wrong: {exc}") from None
    if kind not in KINDS:
        raise CodecError(f"unknown kind {kind!r}")
    cls = message_type(type_name)
    try:
        body = _decode_body(cls, kind, type_name, plain)
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"{type_name}: malformed body: {exc}") from None
    return Envelope(topic, sender, epoch, seq, ts, kind, type_name, body)


def _decode_body(cls: type, kind: str, type_name: str, plain: Any) -> Any:
    if kind == KIND_EVENT:
        body: Any = from_plain(cls, plain, type_name)
    elif kind == KIND_SNAPSHOT:
        if not isinstance(plain, dict):
            raise CodecError("snapshot body is not a map")
        body = {str(k): from_plain(cls, v, f"{type_name}[{k}]") for k, v in plain.items()}
    else:
        if not isinstance(plain, dict):
            raise CodecError("delta body is not a map")
        sets = plain.get("set") or {}
        deleted = plain.get("deleted") or []
        if not isinstance(sets, dict) or not isinstance(deleted, list):
            raise CodecError("delta body has wrong shapes")
        body = {
            "set": {str(k): from_plain(cls, v, f"{type_name}[{k}]") for k, v in sets.items()},
            "deleted": [str(k) for k in deleted],
        }
    return body
