"""``make demo``: networkd for real on a 3-node lab, narrated in the terminal.

Builds three node namespaces and a client on a bridge with a real etcd, starts the full
networkd daemon on every node, seeds a VIP and some domains, then shows live who owns the
VIP, what DNS answers and what crosses the bus. It cuts the owner's link (node death),
measures the failover as the client sees it, stops the new owner gracefully (planned
handover) and cleans everything up. It finishes by itself in about a minute.
"""

import json
import os
import shutil
import socket
import struct
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from networkd.bus.codec import Envelope
from tests.lab.lab import Lab, LabNode
from tests.lab.netns import in_netns

VIP = "10.77.0.200"
TTY = sys.stdout.isatty()
BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if TTY else ("", "", "", "", "")
)
START = time.monotonic()


def say(text: str) -> None:
    print(f"{DIM}[{time.monotonic() - START:6.1f}s]{RESET} {text}", flush=True)


def step(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def dns_a(node: LabNode, name: str) -> str:
    """Ask node's networkd (inside its namespace) for the A records of ``name``."""
    host, port = node.daemon.dns_addr
    with in_netns(node.ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    try:
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        sock.sendto(
            struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01",
            (host, port),
        )
        data = sock.recv(4096)
    except OSError as exc:
        return f"error: {exc}"
    finally:
        sock.close()
    rcode = data[3] & 0x0F
    answers = struct.unpack("!H", data[6:8])[0]
    ips = []
    pos = 12 + len(qname) + 4
    for _ in range(answers):
        pos += 2  # compressed name pointer
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            ips.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += length
    return ", ".join(ips) if ips else ("NXDOMAIN" if rcode == 3 else f"rcode {rcode}, no address")


def vip_states(lab: Lab) -> Dict[str, str]:
    states = {}
    for node in lab.nodes:
        if node.daemon is None or node.daemon.proc is None or node.daemon.proc.poll() is not None:
            states[node.name] = "stopped"
            continue
        doc = node.daemon.status(0.05)
        found = [v["state"] for v in doc["vips"] if v["ip"] == VIP]
        states[node.name] = found[0] if found else "-"
    return states


def event_line(env: Envelope) -> str:
    body: Any = env.body
    if env.kind == "event":
        text = (
            " ".join(f"{k}={v}" for k, v in vars(body).items())
            if hasattr(body, "__dict__")
            else str(body)
        )
    elif env.kind == "delta":
        text = " ".join([f"+{k}" for k in body["set"]] + [f"-{k}" for k in body["deleted"]])
    else:
        text = f"snapshot of {len(body)}"
    return f"{env.sender}: {env.topic} {text}"[:110]


def frame(lab: Lab, taps: Dict[str, Any], title: str, seen: List[str]) -> None:
    """One screen of the live view."""
    states = vip_states(lab)
    who = lab.client.who(VIP, 80, timeout=0.5) or "no answer"
    lines = [f"{BOLD}{title}{RESET}", ""]
    lines.append(f"  {'node':<8} {'VIP ' + VIP:<22} {'address on eth0':<16} leader")
    for node in lab.nodes:
        holds = node.has_address(VIP)
        doc_leader = ""
        if states[node.name] != "stopped":
            doc_leader = node.daemon.status(0.02)["leader"]
        colour = GREEN if states[node.name] == "OWNER" else ""
        lines.append(
            f"  {node.name:<8} {colour}{states[node.name]:<22}{RESET} {('yes' if holds else 'no'):<16} {doc_leader}"
        )
    lines.append("")
    lines.append(f"  client -> {VIP}:80 answered by: {GREEN}{who}{RESET}")
    node1 = lab.nodes[0]
    if states[node1.name] != "stopped":
        for name in ("web.lain", "anything.lain", "node.lain"):
            lines.append(f"  dig @node1 {name:<14} -> {dns_a(node1, name)}")
    lines.append("")
    lines.append("  bus events (all nodes, newest last):")
    for name, tap in taps.items():
        for env in tap.envelopes[len([s for s in seen if s.startswith(name + "|")]) :]:
            if env.topic.startswith(
                ("worker.", "vip.", "state.vip_status", "state.leader", "state.applied")
            ):
                seen.append(f"{name}|{event_line(env)}")
            else:
                seen.append(f"{name}|")
    recent = [s.split("|", 1) for s in seen if not s.endswith("|")][-8:]
    for name, text in recent:
        lines.append(f"    {DIM}{name}{RESET} {text}")
    if TTY:
        sys.stdout.write("\033[2J\033[H" + "\n".join(lines) + "\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()


def live(lab: Lab, taps: Dict[str, Any], title: str, seconds: float, seen: List[str]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame(lab, taps, title, seen)
        time.sleep(1.0 if TTY else 2.5)


def owner(lab: Lab) -> Optional[LabNode]:
    holders = [n for n in lab.nodes if n.has_address(VIP)]
    return holders[0] if len(holders) == 1 else None


def measure_failover(lab: Lab, old: LabNode) -> Tuple[float, float, str]:
    """Cut the owner's link; seconds until the client sees a new GARP and a new answer."""
    sniffer = lab.client.sniffer()
    try:
        cut = time.monotonic()
        old.cut_link()
        garp = sniffer.wait_garp(VIP, since=cut, timeout=15, mac=None)
        while garp.mac == old.mac:
            garp = sniffer.wait_garp(VIP, since=garp.at + 0.001, timeout=15)
        lab.client.arp_flush()
        deadline = time.monotonic() + 15
        who = None
        while time.monotonic() < deadline:
            who = lab.client.who(VIP, 80, timeout=0.3)
            if who and who != old.name:
                break
        return garp.at - cut, time.monotonic() - cut, who or "nobody"
    finally:
        sniffer.close()


def measure_handover(lab: Lab, old: LabNode) -> Tuple[float, str]:
    """SIGTERM the owner's networkd; the longest gap in answers while it hands over."""
    last_ok = time.monotonic()
    worst = 0.0
    stopper = __import__("threading").Thread(target=old.stop_networkd)
    stopper.start()
    who = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        who = lab.client.who(VIP, 80, timeout=0.2)
        now = time.monotonic()
        if who:
            worst = max(worst, now - last_ok)
            last_ok = now
            if who != old.name:
                break
        else:
            lab.client.arp_flush()
    stopper.join(30)
    return worst, who or "nobody"


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root (network namespaces, iptables)", file=sys.stderr)
        return 1
    if shutil.which("etcd") is None:
        print("etcd is missing: run scripts/setup.sh", file=sys.stderr)
        return 1
    step("Building the lab: 3 node namespaces and a client on a bridge, a real etcd")
    with Lab(nodes=3, clients=1) as lab:
        say(
            f"nodes {', '.join(f'{n.name}={n.ip}' for n in lab.nodes)}; client {lab.client.ip}; etcd {lab.etcd.endpoint}"
        )
        etcd = lab.etcd.client()
        step("Seeding etcd the way LAIN does")
        etcd.put("/lain/deployd/pod_groups/web/web.web.worker", lab.pod_group(lab.nodes))
        say("pod_groups: web.web.worker runs one container on every node")
        ports = [{"src": "80", "proto": "tcp", "dest": "80"}]
        etcd.put(
            f"/lain/config/vips/{VIP}", json.dumps({"app": "web", "proc": "worker", "ports": ports})
        )
        say(f"/lain/config/vips/{VIP}: app web, proc worker, port 80 -> container 80")
        etcd.put("/lain/config/domains/web.lain", json.dumps({"ips": [VIP], "type": ""}))
        etcd.put("/lain/config/domains/*.lain", json.dumps({"ips": ["10.77.0.201"], "type": ""}))
        etcd.put("/lain/config/domains/node.lain", json.dumps({"ips": [], "type": "node"}))
        etcd.put("/lain/config/vips/not-an-ip", "{broken json")
        say("domains web.lain, *.lain, node.lain (type node); and one broken VIP key")

        step(
            "Starting networkd (supervisor + watcher, elector, applier, dns x2, resolvconf, api) on each node"
        )
        for node in lab.nodes:
            node.start_networkd(docker_endpoint="", tinydns=True)
        for node in lab.nodes:
            workers = node.daemon.wait_running(timeout=30)
            say(f"{node.name}: {len(workers)} workers RUNNING ({', '.join(sorted(workers))})")
        lab.wait(lambda: owner(lab) is not None, 15, "one VIP owner")
        first = owner(lab)
        assert first is not None
        say(f"{GREEN}{first.name} owns {VIP}{RESET}; the others are STANDBY")
        errors = lab.nodes[0].daemon.status(0.3)["config_errors"]
        for err in errors:
            say(f"rejected alone, everything else applied: {err['key']}: {err['reason']}")

        taps = {
            node.name: node.daemon.tap(["worker.", "vip.", "state.vip_status", "state.leader"])
            for node in lab.nodes
        }
        seen: List[str] = []
        try:
            step("Live view")
            live(lab, taps, f"networkd lab: {first.name} owns {VIP}", 6, seen)

            step(f"Node death: cutting {first.name}'s link")
            garp_s, answer_s, new_owner = measure_failover(lab, first)
            say(
                f"{GREEN}failover: {new_owner} announced {VIP} {garp_s:.2f}s after the cut{RESET} "
                f"(first answer through it after {answer_s:.2f}s; lease TTL 2 s; the Go daemon took 25-35 s)"
            )
            live(lab, taps, f"after the failover: {new_owner} owns {VIP}", 4, seen)

            second = lab.node(new_owner)
            step(f"Planned handover: SIGTERM to networkd on {second.name}")
            gap, third = measure_handover(lab, second)
            say(
                f"{GREEN}handover to {third}: longest gap in answers {gap * 1000:.0f} ms{RESET}; "
                f"{second.name} released the address and its lock before exiting"
            )
            live(lab, taps, f"after the handover: {third} owns {VIP}", 4, seen)

            step(f"{first.name} comes back: its link is restored")
            say(f"{first.name} kept {VIP} while cut off (fencing policy hold); it must yield now")
            back = time.monotonic()
            first.restore_link()
            lab.wait(lambda: not first.has_address(VIP), 15, f"{first.name} yields")
            say(
                f"{GREEN}{first.name} gave up {VIP} {time.monotonic() - back:.2f}s after its link came back{RESET}; "
                f"owner: {', '.join(lab.owners(VIP))}"
            )
            live(lab, taps, f"{first.name} is back as a standby", 3, seen)
        finally:
            for tap in taps.values():
                tap.close()
        step("Cleaning up: stopping networkd everywhere, removing the namespaces")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
