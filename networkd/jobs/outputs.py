"""What a job wants in etcd: values to put, keys to delete (if they still hold what we
expect), and the input errors it found (published as ``state.config_errors``)."""

import dataclasses
import json
from typing import Any, Callable, Dict


@dataclasses.dataclass
class JobResult:
    puts: Dict[str, str] = dataclasses.field(default_factory=dict)
    # key -> predicate over the current value: delete only when it returns True
    deletes: Dict[str, Callable[[str], bool]] = dataclasses.field(default_factory=dict)
    errors: Dict[str, str] = dataclasses.field(default_factory=dict)

    def merge(self, other: "JobResult") -> "JobResult":
        self.puts.update(other.puts)
        self.deletes.update(other.deletes)
        self.errors.update(other.errors)
        return self


def compact_json(value: Any) -> str:
    """JSON as the Go daemon's ``json.Marshal`` wrote it: no spaces, fields in order."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def same_json(current: str, wanted: str) -> bool:
    """Equal as JSON values (an operator's spacing does not cause a rewrite)."""
    if current == wanted:
        return True
    try:
        return bool(json.loads(current) == json.loads(wanted))
    except ValueError:
        return False
