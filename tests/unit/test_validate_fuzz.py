"""Fuzzing the validator and the state: random bytes and JSON shapes over every key kind.

Nothing may raise; every outcome is an item or an error; good keys applied alongside the
garbage are all in the state afterwards.
"""

import json
import random
from typing import Any, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from networkd import keys
from networkd.etcd.state import T_CONFIG_ERRORS, ClusterState
from networkd.etcd.validate import Parsed, validate
from tests.support.lain import one_key_of_each_kind

KEYS = one_key_of_each_kind()

FIELDS = [
    "app", "proc", "ports", "src", "proto", "dest", "excluded_nodes", "ips", "type", "servers",
    "Spec", "Name", "Namespace", "Pods", "InstanceNo", "Containers", "Id", "NodeName", "NodeIp",
    "ContainerIp", "ContainerPort",
]  # fmt: skip

ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["", "80", "tcp", "udp", "sctp", "10.0.0.1", "::1", "node", "webrouter", "a.b.c", "1#53"]
    ),
    st.text(max_size=12),
)
JSON = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), inner, max_size=6),
    ),
    max_leaves=25,
)


def check(parsed: Any) -> None:
    assert parsed is not None
    assert isinstance(parsed, Parsed)
    assert parsed.error or parsed.item is not None or parsed.kind == keys.KIND_DOMAIN_SERVERS


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS), value=JSON)
def test_json_shapes_never_raise(key: str, value: Any) -> None:
    check(validate(key, json.dumps(value).encode()))


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS), value=st.binary(max_size=200))
def test_random_bytes_never_raise(key: str, value: bytes) -> None:
    check(validate(key, value))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(suffix=st.text(max_size=30), value=st.binary(max_size=40))
def test_random_key_suffixes_never_raise(suffix: str, value: bytes) -> None:
    for prefix in (keys.VIPS_PREFIX, keys.DOMAINS_PREFIX, keys.POD_GROUPS_PREFIX, keys.APPS_PREFIX,
                   keys.WHITELIST_IN_PORTS_PREFIX, keys.DOMAIN_SERVERS_PREFIX):  # fmt: skip
        parsed = validate(prefix + suffix, value)
        assert parsed is not None


GOOD: List[Tuple[str, bytes]] = [
    (keys.vip_key("10.9.0.1"), b'{"app":"a","proc":"p","ports":[{"src":"80"}]}'),
    (keys.domain_key("good.lain"), b'{"ips":["10.9.0.2"]}'),
    (keys.domain_servers_key("good"), b'{"servers":["10.9.0.3#53"]}'),
    (keys.SWARM_LEADER, b"10.9.0.4:2376"),
    (keys.apps_key("webrouter", "worker", "10.9.0.5", 80), b"n1"),
]


def test_state_survives_garbage_and_keeps_good_keys() -> None:
    rng = random.Random(1234)
    state = ClusterState("n1")
    state.apply(GOOD)
    changes: List[Tuple[Any, Any]] = []
    garbage_keys = [k for k in KEYS if k not in dict(GOOD)]
    for i in range(3000):
        key = rng.choice(garbage_keys)
        if rng.random() < 0.2:
            key = key + "x" * rng.randint(0, 3)
        if rng.random() < 0.05:
            changes.append((key.encode() + b"\xff", b"{}"))  # not UTF-8
        elif rng.random() < 0.1:
            changes.append((key, None))
        elif i % 2:
            changes.append((key, bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 60)))))
        else:
            shape: Any = rng.choice(
                [[], {}, None, 1, "x", [{"src": rng.randint(-5, 70000)}], {"ports": [1]}]
            )
            changes.append((key, json.dumps(shape).encode()))
        if len(changes) >= 100:
            state.apply(changes)
            changes = []
    state.apply(changes)
    assert state.items["state.vips"]["10.9.0.1"].app == "a"
    assert state.items["state.domains"]["good.lain"].ips == ["10.9.0.2"]
    assert state.items["state.domain_servers"]["good"].servers == ["10.9.0.3#53"]
    assert state.items["state.leaders"]["swarm"].port == 2376
    assert state.items["state.apps"]["webrouter/worker/10.9.0.5:80"].node == "n1"
    for key, err in state.items[T_CONFIG_ERRORS].items():
        assert err.key == key and err.reason
