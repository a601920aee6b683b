"""The bus codec: round trips and garbage."""

import random

import msgpack
import pytest

from networkd.bus import codec
from networkd.bus.messages import STATE_TOPICS, PortSpec, VipConfig, WorkerExited


def test_event_round_trip_keeps_types() -> None:
    frames = codec.encode(
        "worker.api.exit",
        "supervisor",
        1.5,
        7,
        codec.KIND_EVENT,
        "WorkerExited",
        WorkerExited("api", 42, None, "SIGKILL"),
    )
    env = codec.decode(frames)
    assert env.topic == "worker.api.exit" and env.sender == "supervisor" and env.seq == 7
    assert env.body == WorkerExited("api", 42, None, "SIGKILL")


def test_snapshot_and_delta_round_trip_nested_items() -> None:
    vip = VipConfig(
        ip="10.0.0.1", app="a", proc="p", ports=[PortSpec(80, "tcp", 8080)], excluded_nodes=["n4"]
    )
    env = codec.decode(
        codec.encode(
            "state.vips", "watcher", 1.0, 3, codec.KIND_SNAPSHOT, "VipConfig", {"10.0.0.1": vip}
        )
    )
    assert env.body == {"10.0.0.1": vip}
    assert isinstance(env.body["10.0.0.1"].ports[0], PortSpec)
    env = codec.decode(
        codec.encode(
            "state.vips",
            "watcher",
            1.0,
            4,
            codec.KIND_DELTA,
            "VipConfig",
            {"set": {}, "deleted": ["10.0.0.1"]},
        )
    )
    assert env.body == {"set": {}, "deleted": ["10.0.0.1"]}


def test_every_state_topic_has_a_registered_item_type() -> None:
    for topic, item_type in STATE_TOPICS.items():
        assert topic.startswith("state.")
        assert codec.message_type(item_type.__name__) is item_type
        assert item_type.__doc__ and "sender" in item_type.__doc__.lower(), (
            f"{item_type.__name__} says who sends it"
        )


@pytest.mark.parametrize(
    "frames",
    [
        [b"t"],
        [b"t", b""],
        [b"t", b"\xc1"],
        [b"\xff\xfe", msgpack.packb({"v": 1})],
        [b"t", msgpack.packb([1, 2, 3])],
        [b"t", msgpack.packb({"v": 2, "sender": "x"})],
        [
            b"t",
            msgpack.packb(
                {
                    "v": 1,
                    "sender": "x",
                    "epoch": 1,
                    "seq": 1,
                    "ts": 1,
                    "kind": "event",
                    "type": "Nope",
                    "body": {},
                }
            ),
        ],
        [
            b"t",
            msgpack.packb(
                {
                    "v": 1,
                    "sender": "x",
                    "epoch": 1,
                    "seq": 1,
                    "ts": 1,
                    "kind": "event",
                    "type": "WorkerExited",
                    "body": {"name": 1},
                }
            ),
        ],
        [
            b"t",
            msgpack.packb(
                {
                    "v": 1,
                    "sender": "x",
                    "epoch": 1,
                    "seq": 1,
                    "ts": 1,
                    "kind": "snapshot",
                    "type": "VipConfig",
                    "body": {"k": {"ip": "1", "app": "a", "proc": "p", "ports": "no"}},
                }
            ),
        ],
    ],
)
def test_malformed_frames_raise_codec_error(frames: list) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(frames)


def test_random_bytes_never_raise_anything_but_codec_error() -> None:
    rng = random.Random(7)
    good = codec.encode(
        "state.vips",
        "w",
        1.0,
        1,
        codec.KIND_SNAPSHOT,
        "VipConfig",
        {"k": VipConfig("1.2.3.4", "a", "p", [PortSpec(1)])},
    )[1]
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        blob = bytes(data[: rng.randint(0, len(data))]) if rng.random() < 0.3 else bytes(data)
        try:
            codec.decode([b"state.vips", blob])
        except codec.CodecError:
            pass
