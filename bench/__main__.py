"""``python -m bench [NAME ...]``: run the benchmarks and print their figures.

Each benchmark module has ``main() -> None`` and prints its own table, with ratios
against real peers (dnsmasq, keepalived) run side by side where the issue asks for them.
"""

import importlib
import sys
import time
from typing import List

ORDER = ["bus", "respawn", "idle", "etcd_state", "dns", "failover", "chaos", "scale", "netdriver"]


def main(argv: List[str]) -> int:
    names = argv or ORDER
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as exc:
            print(f"== {name}: not available ({exc})")
            failed.append(name)
            continue
        print(f"== {name}")
        start = time.monotonic()
        try:
            module.main()
        except Exception as exc:  # one benchmark failing must not hide the others
            print(f"!! {name} failed: {exc!r}")
            failed.append(name)
        print(f"-- {name} took {time.monotonic() - start:.1f}s\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
