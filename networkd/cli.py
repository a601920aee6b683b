"""``networkd``: parse the Go daemon's flags and run the supervisor in the foreground."""

import sys
from typing import List, Optional

from networkd.config import Config, ConfigError, parse_args, version_line
from networkd.lockfile import AlreadyRunning

EXIT_USAGE = 2
EXIT_LOCKED = 1  # another daemon holds the lock, or a start-up resource is missing


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config, want_version = parse_args(args)
    except ConfigError as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if want_version:
        print(version_line())
        return 0
    assert config is not None

    def reload_config() -> Config:
        new, _ = parse_args(args)
        assert new is not None
        return new

    # Imported late: -version must not need anything but the standard library.
    from networkd import log as logsetup
    from networkd.supervisor import StartupError, Supervisor

    logsetup.setup(config, "supervisor")
    try:
        return Supervisor(config, reload_config).run()
    except (AlreadyRunning, StartupError) as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ConfigError as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
