"""The node's own check files: ``<dir>/*.json``, one check per file, for one VIP.

    {"vip": "10.0.0.1", "type": "exec", "command": ["/usr/local/bin/check-web", "-q"],
     "interval": 1, "timeout": 1, "fall": 3, "rise": 2}

Only these may run a command (``exec``): a check from etcd that ran commands would let
anyone who can write one value run code on every node. A check file of a VIP replaces
that VIP's ``health`` object from etcd on this node. Files are validated with the same
code as etcd values (``networkd.etcd.validate.parse_health``); a bad file is reported
alone and the others apply.
"""

import os
from typing import Dict, List, Tuple

from networkd import keys
from networkd.bus.messages import HealthCheck
from networkd.etcd.validate import Problems, parse_health
from networkd.json_object import load_object

MAX_FILE = 64 * 1024


def load_checks(directory: str) -> Tuple[Dict[str, HealthCheck], List[Tuple[str, str]]]:
    """(VIP -> check, [(file, reason)] for the files that were rejected)."""
    checks: Dict[str, HealthCheck] = {}
    errors: List[Tuple[str, str]] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return checks, errors
    except OSError as exc:
        return checks, [(directory, f"cannot list: {exc.strerror}")]
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            ip, check = parse_check_file(path)
        except ValueError as exc:
            errors.append((path, str(exc)))
            continue
        if ip in checks:
            errors.append((path, f"a second check for {ip} (the first file in name order wins)"))
            continue
        checks[ip] = check
    return checks, errors


def parse_check_file(path: str) -> Tuple[str, HealthCheck]:
    """The VIP and check of one file; ValueError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    obj = load_object(data, MAX_FILE)
    try:
        ip = str(keys.parse_ip(str(obj.get("vip", "")).strip()))
    except keys.KeyLayoutError:
        raise ValueError(f"vip: not an IP address: {obj.get('vip')!r}") from None
    problems = Problems()
    check = parse_health(obj, problems, local=True, where="")
    if problems or check is None:
        raise ValueError(problems.reason or "no check")
    return ip, check
