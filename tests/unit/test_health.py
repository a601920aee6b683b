"""VIP health checks: validation of check objects, verdicts with rise and fall, what is
checked against what, the node's check files, probes of a local server."""

import json
import os
import socket
import threading
from typing import Any, Dict

from networkd.bus.messages import HealthCheck, LocalContainer, PortSpec, VipConfig
from networkd.etcd.validate import Problems, parse_health
from networkd.health import probes
from networkd.health.local_checks import load_checks
from networkd.health.targets import plan_checks
from networkd.health.verdict import FAILING, PASSING, UNKNOWN, Verdict, judge


def health(raw: Any, local: bool = False):
    problems = Problems()
    return parse_health(raw, problems, local=local), problems.reason


def test_health_objects_from_etcd_and_from_check_files():
    check, reason = health({"type": "tcp", "port": "8080", "interval": 1, "fall": 3, "rise": 2})
    assert reason == "" and check == HealthCheck("tcp", port=8080, interval=1.0, fall=3, rise=2)
    check, _ = health({"type": "HTTP", "path": "/health", "expect": [200, 204]})
    assert check is not None and check.type == "http" and check.expect == [200, 204]
    # exec: only from the node's own files, and only an absolute program path
    assert "only from check files" in health({"type": "exec", "command": ["/bin/true"]})[1]
    assert health({"type": "exec", "command": ["/bin/true"]}, local=True)[0] is not None
    assert "absolute path" in health({"type": "exec", "command": ["true"]}, local=True)[1]
    for bad, where in (
        ({"type": "tcp", "port": 0}, "health.port"),
        ({"type": "tcp", "interval": "1"}, "health.interval"),
        ({"type": "tcp", "fall": 0}, "health.fall"),
        ({"type": "http", "path": "health"}, "health.path"),
        ({"type": "http", "expect": [700]}, "health.expect[0]"),
        ({"type": "udp"}, "health.type"),
        ("tcp", "health"),
    ):
        check, reason = health(bad)
        assert check is None and reason.startswith(where), (bad, reason)


# (verdict before, probe ok, rise, fall) -> verdict state after
VERDICTS = [
    (Verdict(UNKNOWN), True, 2, 3, PASSING),  # a first success passes at once
    (Verdict(UNKNOWN), False, 2, 3, UNKNOWN),
    (Verdict(UNKNOWN, fail_streak=2), False, 2, 3, FAILING),
    (Verdict(PASSING, ok_streak=5), False, 2, 3, PASSING),
    (Verdict(PASSING, fail_streak=2), False, 2, 3, FAILING),
    (Verdict(PASSING, fail_streak=2), True, 2, 3, PASSING),
    (Verdict(FAILING, fail_streak=4), True, 2, 3, FAILING),  # rise: not yet
    (Verdict(FAILING, ok_streak=1), True, 2, 3, PASSING),
    (Verdict(FAILING, ok_streak=1), False, 2, 3, FAILING),
    (Verdict(PASSING), False, 1, 1, FAILING),
]


def test_verdicts_rise_and_fall():
    for before, ok, rise, fall, after in VERDICTS:
        assert judge(before, ok, rise, fall).state == after, (before, ok)


def test_checks_planned_for_the_local_container():
    tcp = HealthCheck("tcp")
    local_exec = HealthCheck("exec", command=["/bin/true"])
    vips: Dict[str, VipConfig] = {
        "10.0.0.1": VipConfig("10.0.0.1", "web", "w", [PortSpec(80, "tcp", 8080)], health=tcp),
        "10.0.0.2": VipConfig("10.0.0.2", "web", "w", [PortSpec(81, "tcp", 0)], health=tcp),
        "10.0.0.3": VipConfig("10.0.0.3", "db", "d", [PortSpec(5432, "tcp", 5432)], health=tcp),
        "10.0.0.4": VipConfig("10.0.0.4", "web", "w", [PortSpec(80, "tcp", 80)]),
        "10.0.0.5:80": VipConfig("10.0.0.5", "web", "w", [], port=80, health=tcp),
    }
    containers = {"web/w": LocalContainer("web", "w", 1, "c1", "172.20.0.5", 8080, "n1", "")}
    targets = plan_checks(vips, containers, {"10.0.0.4": local_exec})
    assert targets["10.0.0.1"].host == "172.20.0.5" and targets["10.0.0.1"].port == 8080
    assert targets["10.0.0.2"].port == 81  # no dest: the src port
    assert "10.0.0.3" not in targets  # not running here
    assert targets["10.0.0.4"].source == "local" and targets["10.0.0.4"].check == local_exec
    assert "10.0.0.5" not in targets  # port-only keys have no owner


def test_check_files(tmp_path):
    good = {"vip": "10.0.0.1", "type": "exec", "command": ["/bin/true"], "fall": 2}
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps({**good, "command": ["/bin/false"]}))
    (tmp_path / "c.json").write_text("{nope")
    (tmp_path / "d.json").write_text(json.dumps({"vip": "nope", "type": "tcp"}))
    (tmp_path / "notes.txt").write_text("ignored")
    checks, errors = load_checks(str(tmp_path))
    assert list(checks) == ["10.0.0.1"] and checks["10.0.0.1"].command == ["/bin/true"]
    reasons = {os.path.basename(path): reason for path, reason in errors}
    assert "second check" in reasons["b.json"]
    assert "not valid JSON" in reasons["c.json"] and "vip" in reasons["d.json"]
    assert load_checks(str(tmp_path / "absent")) == ({}, [])


def test_probes_against_a_local_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            conn.recv(1024)
            conn.sendall(b"HTTP/1.0 503 Busy\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert probes.tcp_probe("127.0.0.1", port, 1.0) == (True, "connected")
    assert probes.http_probe("127.0.0.1", port, "/", [200], 1.0) == (False, "status 503")
    thread.join(2)
    server.close()
    ok, detail = probes.tcp_probe("127.0.0.1", port, 1.0)
    assert not ok and "refused" in detail.lower()
    assert probes.exec_probe(["/bin/true"], 1.0) == (True, "exit 0")
    ok, detail = probes.exec_probe(["/bin/sh", "-c", "echo broken; exit 3"], 1.0)
    assert not ok and detail == "exit 3: broken"
    ok, detail = probes.exec_probe(["/bin/sleep", "5"], 0.2)
    assert not ok and "timed out" in detail
    assert probes.parse_status(b"garbage") == 0
