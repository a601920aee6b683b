"""``networkdctl vip list|move|add|rm``: the VIP operations of the api worker, through its
local socket ``<run dir>/state/api/ctl.sock`` (root and the api's user only; no token).

``add`` builds the VIP's JSON value from flags (or takes ``--value``); the elector
validates it with the watcher's own code before anything is written, so a bad value is
refused with the same reason the watcher would log.
"""

import argparse
import http.client
import json
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

CTL_SOCKET = os.path.join("state", "api", "ctl.sock")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def call(
    run_dir: str, method: str, path: str, body: Optional[bytes] = None, timeout: float = 20.0
) -> Tuple[int, Dict[str, Any]]:
    conn = UnixHTTPConnection(os.path.join(run_dir, CTL_SOCKET), timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        doc = json.loads(data.decode() or "{}")
    except ValueError:
        doc = {"error": data.decode(errors="replace").strip()}
    return response.status, doc if isinstance(doc, dict) else {"error": str(doc)}


def add_parser(sub: Any) -> None:
    vip = sub.add_parser("vip", help="VIPs cluster-wide: list, move, add, rm")
    actions = vip.add_subparsers(dest="vip_command", required=True)
    p_list = actions.add_parser("list", help="every VIP, its owner and each node's state")
    p_list.add_argument("--json", action="store_true", help="one JSON object")
    p_move = actions.add_parser("move", help="a planned move (no overlap, a short gap)")
    p_move.add_argument("ip")
    p_move.add_argument("--to", default="", help="the node to move it to (default: any)")
    p_add = actions.add_parser("add", help="write /lain/config/vips/<IP> (validated first)")
    p_add.add_argument("ip", help="IP, or IP:PORT ([v6]:PORT) for a port-only mapping")
    p_add.add_argument("--value", help="the whole JSON value (instead of the flags below)")
    p_add.add_argument("--app")
    p_add.add_argument("--proc")
    p_add.add_argument("--port", action="append", default=[], help="SRC[:DEST][/PROTO], repeatable")
    p_add.add_argument("--exclude", action="append", default=[], help="node, repeatable")
    p_add.add_argument("--health", help="the health object as JSON")
    p_rm = actions.add_parser("rm", help="delete /lain/config/vips/<IP>")
    p_rm.add_argument("ip")


def value_from_flags(args: argparse.Namespace) -> str:
    """The JSON value ``add`` writes; ValueError naming the flag that is wrong."""
    if args.value is not None:
        return str(args.value)
    if not args.app or not args.proc:
        raise ValueError("--app and --proc are needed (or --value)")
    ports: List[Dict[str, str]] = []
    for spec in args.port:
        text, _, proto = spec.partition("/")
        src, _, dest = text.partition(":")
        port = {"src": src}
        if dest:
            port["dest"] = dest
        if proto:
            port["proto"] = proto
        ports.append(port)
    value: Dict[str, Any] = {"app": args.app, "proc": args.proc, "ports": ports}
    if args.exclude:
        value["excluded_nodes"] = list(args.exclude)
    if args.health:
        try:
            value["health"] = json.loads(args.health)
        except ValueError as exc:
            raise ValueError(f"--health: not valid JSON: {exc}") from None
    return json.dumps(value)


def render_list(doc: Dict[str, Any]) -> str:
    lines = []
    for vip in doc.get("vips", []):
        states = " ".join(
            f"{n['node']}={n['state']}" + (f"({n['check']})" if n.get("check") else "")
            for n in vip.get("nodes", [])
        )
        moving = f" moving-to={vip['moving_to']}" if vip.get("moving_to") else ""
        check = f" check={vip['check']}" if vip.get("check") else ""
        lines.append(
            f"{vip['ip']:<16} {vip['app']}.{vip['proc']:<20} owner={vip['owner'] or '-'}"
            f"{check}{moving}  {states}"
        )
    return "\n".join(lines) + ("\n" if lines else "no VIPs configured\n")


def cmd_vip(run_dir: str, args: argparse.Namespace) -> int:
    try:
        if args.vip_command == "list":
            code, doc = call(run_dir, "GET", "/v1/vips")
            if code == 200:
                out = json.dumps(doc, indent=1, sort_keys=True) + "\n" if args.json else None
                sys.stdout.write(out if out is not None else render_list(doc))
                return 0
        elif args.vip_command == "move":
            body = json.dumps({"to": args.to}).encode()
            code, doc = call(run_dir, "POST", f"/v1/vips/{args.ip}/move", body)
        elif args.vip_command == "add":
            try:
                value = value_from_flags(args)
            except ValueError as exc:
                print(f"networkdctl: {exc}", file=sys.stderr)
                return 2
            code, doc = call(run_dir, "PUT", f"/v1/vips/{args.ip}", value.encode())
        else:
            code, doc = call(run_dir, "DELETE", f"/v1/vips/{args.ip}")
    except OSError as exc:
        path = os.path.join(run_dir, CTL_SOCKET)
        print(f"networkdctl: cannot reach the api at {path}: {exc}", file=sys.stderr)
        return 1
    if code == 200 and doc.get("ok", True):
        if doc.get("message"):
            print(doc["message"])
        return 0
    print(f"networkdctl: {doc.get('error') or doc}", file=sys.stderr)
    return 1
