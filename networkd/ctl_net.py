"""``networkdctl net list|show NAME [--json]``: container networks (-libnetwork), from the
netstore's and netlinks' bus state (``networkd.netdriver.view``)."""

import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    net = sub.add_parser("net", help="container networks (Docker plugin, -libnetwork)")
    actions = net.add_subparsers(dest="net_command", required=True)
    p_list = actions.add_parser("list", help="networks, hosts and allocated addresses")
    p_show = actions.add_parser("show", help="one network: blocks per host, endpoints, routes")
    p_show.add_argument("name", help="Docker network name, subnet or etcd name")
    for p in (p_list, p_show):
        p.add_argument("--json", action="store_true", help="JSON")
        p.add_argument("--wait", type=float, default=2.0, help="seconds to gather state")


def cmd_net(run_dir: str, args: Any) -> int:
    from networkd.ctl import gather_state
    from networkd.netdriver import view as netview

    gathered = gather_state(run_dir, args.wait)
    if gathered is None:
        return 1
    context, view = gathered
    doc = netview.networks_document(view.mirror)
    view.close()
    context.destroy(0)
    if args.net_command == "list":
        text = json.dumps(doc, indent=1, sort_keys=True) + "\n" if args.json else None
        sys.stdout.write(text or netview.render_list(doc))
        return 0
    network = netview.find(doc, args.name)
    if network is None:
        print(f"networkdctl: no container network named {args.name!r}", file=sys.stderr)
        return 1
    text = json.dumps(network, indent=1, sort_keys=True) + "\n" if args.json else None
    sys.stdout.write(text or netview.render_show(network))
    return 0
