"""The IPv6 nat helper's messages, its request loop and the applier's client (no root:
the helper process here serves a stand-in for NatRules)."""

import io
import sys
import textwrap
from typing import Any, Iterable, List

import pytest

from networkd.net import nat_helper as nh
from networkd.net.nat_rules import NatResult, NatRule, dnat_rules
from networkd.net.xtables import XtablesLockTimeout

V6 = dnat_rules("fd00::1", "tcp", 80, "fd01::2", 8080, "app.web")
V4 = dnat_rules("10.0.0.1", "udp", 53, "172.30.1.2", 5353, "app.dns")


def test_rules_and_results_survive_the_wire() -> None:
    assert nh.decode_rules(nh.encode_rules(V6 + V4)) == V6 + V4
    result = NatResult(added=2, removed=1, chains_created=2, actual=list(V6), failed={6: "x"})
    assert nh.decode_result(nh.encode_result(result)) == result


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"a": 1}, "rules: expected a list, got dict"),
        ([["lain-OUTPUT", "fd00::1"]], "rule: expected 8 fields"),
        (["not a rule"], "rule: expected 8 fields"),
    ],
)
def test_bad_rule_lists_are_named(bad: Any, message: str) -> None:
    with pytest.raises(nh.HelperError, match=message):
        nh.decode_rules(bad)


def test_frames_and_their_limits() -> None:
    stream = io.BytesIO()
    nh.write_message(stream, {"op": "apply"})
    nh.write_message(stream, [1, 2])
    stream.seek(0)
    assert nh.read_message(stream) == {"op": "apply"}
    assert nh.read_message(stream) == [1, 2]
    assert nh.read_message(stream) is None  # the end: the helper stops
    with pytest.raises(nh.HelperError, match="inside a message"):
        nh.read_message(io.BytesIO(nh.FRAME.pack(10) + b"abc"))
    with pytest.raises(nh.HelperError, match="at most"):
        nh.read_message(io.BytesIO(nh.FRAME.pack(nh.MESSAGE_MAX + 1)))


class FakeNat:
    def __init__(self) -> None:
        self.applied: List[List[NatRule]] = []

    def apply(self, desired: Iterable[NatRule], verify: bool = True) -> NatResult:
        rules = list(desired)
        if any(rule.dport == 1 for rule in rules):
            raise XtablesLockTimeout("xtables lock busy for 5s")
        if any(rule.dport == 2 for rule in rules):
            raise RuntimeError("can't find target DNAT")
        self.applied.append(rules)
        return NatResult(added=len(rules), actual=rules)

    def remove_all(self) -> int:
        return 7


def _serve(*requests: Any) -> List[Any]:
    inp, out = io.BytesIO(), io.BytesIO()
    for request in requests:
        nh.write_message(inp, request)
    inp.seek(0)
    nh.serve(inp, out, FakeNat())  # type: ignore[arg-type]
    out.seek(0)
    replies = []
    while (reply := nh.read_message(out)) is not None:
        replies.append(reply)
    return replies


def test_the_helper_answers_every_request_and_goes_on_after_errors() -> None:
    lock = dnat_rules("fd00::9", "tcp", 1, "fd01::2", 1, "x")
    broken = dnat_rules("fd00::9", "tcp", 2, "fd01::2", 2, "x")
    replies = _serve(
        {"op": "apply", "rules": nh.encode_rules(V6), "verify": True},
        {"op": "apply", "rules": nh.encode_rules(lock)},
        {"op": "apply", "rules": nh.encode_rules(broken)},
        {"op": "apply", "rules": "nonsense"},
        {"op": "format disk"},
        {"op": "remove_all"},
    )
    assert nh.decode_result(replies[0]["result"]).actual == V6
    assert replies[1] == {"lock_timeout": "xtables lock busy for 5s"}
    assert replies[2] == {"error": "RuntimeError: can't find target DNAT"}
    assert replies[3] == {"error": "HelperError: rules: expected a list, got str"}
    assert replies[4] == {"error": "unknown request 'format disk'"}
    assert replies[5] == {"removed": 7}


FAKE_HELPER = textwrap.dedent(
    """
    import sys
    sys.path[:0] = {paths!r}
    from networkd.net import nat_helper
    from tests.unit.test_nat_helper import FakeNat
    nat_helper.serve(sys.stdin.buffer, sys.stdout.buffer, FakeNat())
    """
)


def test_the_client_starts_the_helper_once_and_again_after_it_died() -> None:
    argv = [sys.executable, "-c", FAKE_HELPER.format(paths=sys.path)]
    proc = nh.NatProcess(argv)
    try:
        assert proc.apply(V6, verify=False).actual == V6
        first = proc._proc
        assert first is not None
        assert proc.apply(V6, verify=False).added == 2 and proc._proc is first  # the same one
        first.kill()
        first.wait()
        assert proc.apply(V6, verify=False).actual == V6  # started again, answered
        assert proc._proc is not None and proc._proc.pid != first.pid
        with pytest.raises(XtablesLockTimeout):
            proc.apply(dnat_rules("fd00::9", "tcp", 1, "fd01::2", 1, "x"), verify=False)
        with pytest.raises(nh.HelperError, match="can't find target DNAT"):
            proc.apply(dnat_rules("fd00::9", "tcp", 2, "fd01::2", 2, "x"), verify=False)
        assert proc.remove_all() == 7
    finally:
        proc.close()
    assert proc._proc is None


def test_split_and_merge_keep_each_familys_rules() -> None:
    v4, v6 = nh.split_families(V6 + V4)
    assert v4 == V4 and v6 == V6
    into = NatResult(added=1, actual=list(V4))
    nh.merge(into, NatResult(added=2, removed=1, actual=list(V6), failed={6: "x"}))
    assert into.added == 3 and into.removed == 1 and into.actual == V4 + V6
    assert into.failed == {6: "x"}
