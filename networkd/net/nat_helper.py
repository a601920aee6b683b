"""IPv6 nat rules in a process of their own: python-iptables finds DNAT for one family per process.

iptables 1.8 ships IPv4 and IPv6 DNAT in one library (``libxt_DNAT.so``, a link to
``libxt_NAT.so``). libxtables loads it once per process, and once the target has been
found for one family the other family's DNAT cannot be found (python-iptables says
``can't find target DNAT``; reloading the library makes libxtables exit with ``target
"DNAT" already registered``). A node with IPv4 and IPv6 VIPs needs both, so the applier
keeps IPv4 in its own process and hands IPv6 to this helper:

- ``FamilyNat`` (used by the applier): IPv4 through ``NatRules`` in process, IPv6 through
  ``NatProcess``, which starts ``python -m networkd.net.nat_helper`` on first need (a node
  without IPv6 VIPs and without our ip6tables chains never starts it);
- the helper reads requests from stdin and answers on stdout, one msgpack message each,
  length-prefixed; it runs ``NatRules(families=(6,))`` and takes the xtables lock itself;
  it ends when its stdin closes (the applier stopped) or its parent dies.

The messages carry only our own ``NatRule`` values (validated by the watcher long before):
no shell, no outside text is interpreted by the helper.
"""

import logging
import struct
import subprocess
import sys
import threading
from dataclasses import asdict, fields
from typing import IO, Any, Dict, Iterable, List, Optional, Tuple

import msgpack

from networkd.net.nat_rules import NatResult, NatRule, NatRules, v6_chains_exist
from networkd.net.xtables import XtablesLockTimeout

log = logging.getLogger("networkd.applier")

FRAME = struct.Struct(">I")
MESSAGE_MAX = 64 << 20  # 2,000 rules are about 200 KiB
RULE_FIELDS = [f.name for f in fields(NatRule)]


class HelperError(RuntimeError):
    """The IPv6 nat helper failed or answered something unexpected."""


# -- the messages (pure) ---------------------------------------------------------------


def encode_rules(rules: Iterable[NatRule]) -> List[List[Any]]:
    return [[getattr(rule, name) for name in RULE_FIELDS] for rule in rules]


def decode_rules(items: Any) -> List[NatRule]:
    if not isinstance(items, list):
        raise HelperError(f"rules: expected a list, got {type(items).__name__}")
    out = []
    for item in items:
        if not isinstance(item, list) or len(item) != len(RULE_FIELDS):
            raise HelperError(f"rule: expected {len(RULE_FIELDS)} fields, got {item!r:.80}")
        out.append(NatRule(*item))
    return out


def encode_result(result: NatResult) -> Dict[str, Any]:
    data = asdict(result)
    data["actual"] = encode_rules(result.actual)
    data["failed"] = {str(k): v for k, v in result.failed.items()}
    return data


def decode_result(data: Any) -> NatResult:
    if not isinstance(data, dict):
        raise HelperError(f"result: expected a map, got {type(data).__name__}")
    counts = {k: int(data.get(k, 0)) for k in ("added", "removed", "jumps_fixed", "chains_created")}
    failed = {int(k): str(v) for k, v in dict(data.get("failed", {})).items()}
    return NatResult(actual=decode_rules(data.get("actual", [])), failed=failed, **counts)


def write_message(stream: IO[bytes], message: Any) -> None:
    body = msgpack.packb(message, use_bin_type=True)
    stream.write(FRAME.pack(len(body)) + body)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    head = stream.read(FRAME.size)
    if not head:
        return None
    if len(head) != FRAME.size:
        raise HelperError("stream ended inside a message")
    (size,) = FRAME.unpack(head)
    if size > MESSAGE_MAX:
        raise HelperError(f"message of {size} bytes (at most {MESSAGE_MAX})")
    body = stream.read(size)
    if len(body) != size:
        raise HelperError("stream ended inside a message")
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


# -- the helper process ----------------------------------------------------------------


def serve(requests: IO[bytes], replies: IO[bytes], nat: NatRules) -> None:
    """Answer requests until the stream ends: ``apply`` and ``remove_all``."""
    while True:
        request = read_message(requests)
        if request is None:
            return
        try:
            op = request.get("op") if isinstance(request, dict) else None
            if op == "apply":
                rules = decode_rules(request.get("rules"))
                result = nat.apply(rules, verify=bool(request.get("verify")))
                write_message(replies, {"result": encode_result(result)})
            elif op == "remove_all":
                write_message(replies, {"removed": nat.remove_all()})
            else:
                write_message(replies, {"error": f"unknown request {op!r}"})
        except XtablesLockTimeout as exc:
            write_message(replies, {"lock_timeout": str(exc)})
        except Exception as exc:  # answered, so the applier logs it; the helper goes on
            write_message(replies, {"error": f"{type(exc).__name__}: {exc}"})


def main() -> int:
    import setproctitle

    from networkd.workers.base import set_parent_death_signal

    set_parent_death_signal()  # the applier killed: nothing left to serve
    setproctitle.setproctitle("networkd: applier ipv6 nat")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s nat-helper[%(process)d] %(levelname)s %(message)s"
    )
    serve(sys.stdin.buffer, sys.stdout.buffer, NatRules(lock_timeout=None, families=(6,)))
    return 0


# -- the applier's side ----------------------------------------------------------------


class NatProcess:
    """IPv6 nat rules through the helper, started on first use and again after it died."""

    def __init__(self, argv: Optional[List[str]] = None) -> None:
        self.argv = argv or [sys.executable, "-m", "networkd.net.nat_helper"]
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._lock = threading.Lock()

    def apply(self, desired: List[NatRule], verify: bool) -> NatResult:
        reply = self._call({"op": "apply", "rules": encode_rules(desired), "verify": verify})
        return decode_result(reply.get("result"))

    def remove_all(self) -> int:
        return int(self._call({"op": "remove_all"}).get("removed", 0))

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()

    def _call(self, request: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            for attempt in (1, 2):  # a helper that died is started again, once per call
                proc = self._running()
                error: Optional[Exception] = None
                try:
                    assert proc.stdin is not None and proc.stdout is not None
                    write_message(proc.stdin, request)
                    reply = read_message(proc.stdout)
                except (OSError, HelperError) as exc:
                    reply, error = None, exc
                if isinstance(reply, dict):
                    if "lock_timeout" in reply:
                        raise XtablesLockTimeout(str(reply["lock_timeout"]))
                    if "error" in reply:
                        raise HelperError(f"ipv6 nat helper: {reply['error']}")
                    return reply
                self._reap(proc)
                if attempt == 2:
                    raise HelperError(f"ipv6 nat helper gave no answer ({error or reply!r})")
                log.warning("ipv6 nat helper restarted reason=%s", error or "no answer")
        raise AssertionError("unreachable")

    def _running(self) -> "subprocess.Popen[bytes]":
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
            log.info("ipv6 nat helper started pid=%d", self._proc.pid)
        return self._proc

    def _reap(self, proc: "subprocess.Popen[bytes]") -> None:
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._proc = None


class FamilyNat:
    """The applier's nat rules: IPv4 in this process, IPv6 through ``NatProcess``."""

    def __init__(self, lock_timeout: Optional[float] = 5.0, v6: Optional[NatProcess] = None):
        self.v4 = NatRules(lock_timeout=lock_timeout, families=(4,))
        self.v6 = v6 or NatProcess()

    def load(self) -> None:
        self.v4.load()

    def apply(self, desired: Iterable[NatRule], verify: bool = True) -> NatResult:
        mine, theirs = split_families(desired)
        result = self.v4.apply(mine, verify=verify)
        if theirs or v6_chains_exist():
            try:
                other = self.v6.apply(theirs, verify)
            except XtablesLockTimeout:
                raise
            except Exception as exc:  # IPv4 stays applied; the IPv6 VIPs wait for rules
                result.failed[6] = f"{type(exc).__name__}: {exc}"
            else:
                merge(result, other)
        return result

    def remove_all(self) -> int:
        removed = self.v4.remove_all()
        if v6_chains_exist():
            try:
                removed += self.v6.remove_all()
            except Exception as exc:
                log.warning("nat ipv6 cleanup failed reason=%s", exc)
        self.v6.close()
        return removed

    def close(self) -> None:
        self.v6.close()


def split_families(rules: Iterable[NatRule]) -> Tuple[List[NatRule], List[NatRule]]:
    v4: List[NatRule] = []
    v6: List[NatRule] = []
    for rule in rules:
        (v6 if rule.family == 6 else v4).append(rule)
    return v4, v6


def merge(into: NatResult, other: NatResult) -> None:
    into.added += other.added
    into.removed += other.removed
    into.jumps_fixed += other.jumps_fixed
    into.chains_created += other.chains_created
    into.actual.extend(other.actual)
    into.failed.update(other.failed)


if __name__ == "__main__":
    sys.exit(main())
