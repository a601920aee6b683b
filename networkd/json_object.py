"""Decode one JSON object from untrusted bytes (a check file, a Docker request, an etcd
record of container networks), with one set of messages.

The watcher's validation of LAIN's keys (``etcd/validate.py``) keeps its own decoder: it
collects every problem of a value with its place instead of stopping at the first.
"""

import json
from typing import Any, Dict


def load_object(data: bytes, limit: int) -> Dict[str, Any]:
    """The object ``data`` holds; ValueError naming what is wrong (size, UTF-8, JSON, type)."""
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value
