"""``networkdctl``: status, tap, restart, vip and net for a running networkd."""

import argparse
import datetime
import json
import signal
import sys
import time
from typing import Any, List, Optional, Tuple

from networkd import ctl_net, ctl_vip
from networkd.bus.codec import Envelope, to_plain
from networkd.config import Config

DEFAULT_RUN_DIR = Config().run_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="networkdctl", description="control a running networkd", allow_abbrev=False
    )
    parser.add_argument(
        "-run.dir",
        "--run.dir",
        dest="run_dir",
        default=DEFAULT_RUN_DIR,
        help="the daemon's -run.dir",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_status = sub.add_parser("status", help="workers, VIPs, leader, etcd, DNS and config errors")
    p_status.add_argument("--json", action="store_true", help="one JSON object")
    p_status.add_argument(
        "--wait", type=float, default=2.0, help="seconds to gather state (default 2)"
    )
    p_tap = sub.add_parser("tap", help="print live bus messages, one per line")
    p_tap.add_argument(
        "prefixes", nargs="*", default=[""], help="topic prefixes (default: everything)"
    )
    p_tap.add_argument("--json", action="store_true", help="one JSON object per line")
    p_tap.add_argument("--count", type=int, default=0, help="stop after this many messages")
    p_tap.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds")
    p_restart = sub.add_parser("restart", help="restart one worker (dns restarts every replica)")
    p_restart.add_argument("worker")
    ctl_vip.add_parser(sub)
    ctl_net.add_parser(sub)
    return parser


def gather_state(run_dir: str, wait: float) -> Optional[Tuple[Any, Any]]:
    """(context, BusView) with every live publisher's state, or None when none runs."""
    import zmq

    from networkd.bus.view import BusView

    context = zmq.Context()
    view = BusView(context, run_dir, ["state."])
    if not view.live_sources():
        print(f"networkdctl: no networkd running with run dir {run_dir}", file=sys.stderr)
        view.close()
        context.destroy(0)
        return None
    deadline = time.monotonic() + wait
    settled_at: Optional[float] = None
    while time.monotonic() < deadline:
        view.poll(50)
        live = view.live_sources()
        if all(view.subscriber.sender_synced(n) for n in live) and view.mirror(
            "supervisor", "state.workers"
        ):
            settled_at = settled_at or time.monotonic()
            if time.monotonic() - settled_at > 0.15:
                break
    return context, view


def cmd_status(run_dir: str, as_json: bool, wait: float) -> int:
    from networkd import status

    gathered = gather_state(run_dir, wait)
    if gathered is None:
        return 1
    context, view = gathered
    doc = status.assemble(view.mirror, view.sources)
    view.close()
    context.destroy(0)
    if as_json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        sys.stdout.write(status.render_text(doc))
    return 0


def format_line(env: Envelope) -> str:
    stamp = datetime.datetime.fromtimestamp(env.ts).strftime("%H:%M:%S.%f")[:-3]
    body: Any = to_plain(env.body)
    if env.kind == "delta":
        parts = [f"+{k}={json.dumps(v, sort_keys=True)}" for k, v in body["set"].items()]
        parts += [f"-{k}" for k in body["deleted"]]
        text = " ".join(parts)
    elif env.kind == "snapshot":
        text = f"{len(body)} items: " + " ".join(sorted(body))[:300]
    else:
        text = " ".join(f"{k}={v}" for k, v in body.items())
    return f"{stamp} {env.sender:<10} {env.topic} {env.kind}#{env.seq} {text}"


def cmd_tap(run_dir: str, prefixes: List[str], as_json: bool, count: int, timeout: float) -> int:
    import zmq

    from networkd.bus.view import BusView

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    context = zmq.Context()
    view = BusView(context, run_dir, prefixes)
    seen = 0
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for env in view.poll(100):
                line = json.dumps(env.describe(), sort_keys=True) if as_json else format_line(env)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return 0
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
        context.destroy(0)
    return 0


def cmd_restart(run_dir: str, worker: str) -> int:
    from networkd import control

    try:
        answer = control.request(run_dir, {"cmd": "restart", "worker": worker})
    except OSError as exc:
        print(
            f"networkdctl: cannot reach networkd at {control.socket_path(run_dir)}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    if not answer.get("ok"):
        print(f"networkdctl: {answer.get('error')}", file=sys.stderr)
        return 1
    print("restarting " + ", ".join(answer.get("restarted", [])))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        return cmd_status(args.run_dir, args.json, args.wait)
    if args.command == "tap":
        return cmd_tap(args.run_dir, args.prefixes, args.json, args.count, args.timeout)
    if args.command == "vip":
        return ctl_vip.cmd_vip(args.run_dir, args)
    if args.command == "net":
        return ctl_net.cmd_net(args.run_dir, args)
    return cmd_restart(args.run_dir, args.worker)


if __name__ == "__main__":
    sys.exit(main())
